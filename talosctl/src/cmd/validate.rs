//! `talosctl validate`: offline checks of a machine config for a runtime mode.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, ValueEnum};
use talos_machinery::ValidationMode;
use talos_machinery::config::ValidationReport;

use crate::cmd::machineconfig::read_config;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Bare metal and boards: an install disk is required.
    Metal,
    /// Talos in a container: install settings are ignored.
    Container,
    /// A cloud VM: the platform provides the disk.
    Cloud,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Metal => "metal",
            Mode::Container => "container",
            Mode::Cloud => "cloud",
        }
    }
}

impl From<Mode> for ValidationMode {
    fn from(mode: Mode) -> ValidationMode {
        match mode {
            Mode::Metal => ValidationMode::Metal,
            Mode::Container => ValidationMode::Container,
            Mode::Cloud => ValidationMode::Cloud,
        }
    }
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Machine config file to check.
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,

    /// Runtime mode the config is meant for.
    #[arg(short, long, value_enum)]
    pub mode: Mode,

    /// Treat warnings as errors.
    #[arg(long)]
    pub strict: bool,
}

pub fn run(args: ValidateArgs) -> anyhow::Result<()> {
    let config = read_config(&args.config)?;
    let report = config.validate(args.mode.into());
    print!("{}", render(&report, args.strict));
    let failures = report.errors.len()
        + if args.strict {
            report.warnings.len()
        } else {
            0
        };
    if failures > 0 {
        bail!(
            "{} is not valid for {} mode: {}",
            args.config.display(),
            args.mode.as_str(),
            summary(&report, args.strict)
        );
    }
    println!(
        "{} is valid for {} mode",
        args.config.display(),
        args.mode.as_str()
    );
    Ok(())
}

/// One line per problem, `error: path: reason` or `warning: path: reason`; with `strict`,
/// warnings are listed as errors.
fn render(report: &ValidationReport, strict: bool) -> String {
    let warning_label = if strict { "error" } else { "warning" };
    let mut out = String::new();
    for problem in &report.errors {
        out.push_str(&format!("error: {problem}\n"));
    }
    for problem in &report.warnings {
        out.push_str(&format!("{warning_label}: {problem}\n"));
    }
    out
}

fn summary(report: &ValidationReport, strict: bool) -> String {
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    if strict {
        plural(report.errors.len() + report.warnings.len(), "error")
    } else {
        format!(
            "{}, {}",
            plural(report.errors.len(), "error"),
            plural(report.warnings.len(), "warning")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use talos_machinery::config::Problem;

    fn problem(path: &str, message: &str) -> Problem {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }

    #[test]
    fn render_lists_errors_then_warnings() {
        let report = ValidationReport {
            errors: vec![problem("machine.token", "is required")],
            warnings: vec![problem("machine.install", "ignored in container mode")],
        };
        assert_eq!(
            render(&report, false),
            "error: machine.token: is required\nwarning: machine.install: ignored in container mode\n"
        );
        assert_eq!(
            render(&report, true),
            "error: machine.token: is required\nerror: machine.install: ignored in container mode\n"
        );
        assert_eq!(summary(&report, false), "1 error, 1 warning");
        assert_eq!(summary(&report, true), "2 errors");
    }
}
