//! `hil run --rig rig.yaml --board NAME --suite S --image FILE [--upgrade-image REF]
//! [--broken-image REF] [--junit out.xml] [--report out.md]`
//!
//! Exit codes: 0 passed (skips included), 1 failed, 2 rig error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use talos_hil::runner::{RunOptions, run_with_upgrades};
use talos_hil::strategy::Progress;
use talos_hil::suites::{Outcome, Suite, Upgrades};
use talos_images::flash::{FlashPhase, FlashProgress};

#[derive(Debug, Parser)]
#[command(
    name = "hil",
    about = "Hardware-in-the-loop runner for talos-rs boards"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a suite on one board of the rig.
    Run {
        #[arg(long)]
        rig: PathBuf,
        #[arg(long)]
        board: String,
        /// smoke, apply-config, "reboot-loop N", upgrade-rollback, "power-cut N", "soak MINUTES".
        #[arg(long)]
        suite: Suite,
        /// The disk image to flash (metal-<arch>.raw); for QEMU boards that boot a kernel
        /// directly, the initramfs.
        #[arg(long)]
        image: PathBuf,
        /// A good installer image the node pulls, e.g. 10.0.2.2:5000/talos/installer:v2.0.0.
        /// upgrade-rollback upgrades to it; with it, every second cut of power-cut lands during
        /// an upgrade to it.
        #[arg(long, value_name = "REF")]
        upgrade_image: Option<String>,
        /// An installer image whose system cannot boot (its kernel fails): upgrade-rollback
        /// upgrades to it and expects the node back on the good image by itself.
        #[arg(long, value_name = "REF")]
        broken_image: Option<String>,
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Markdown summary, or HTML when the name ends in .html.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Per-test serial logs and API transcripts; default hil-artifacts/<board>.
        #[arg(long)]
        artifacts: Option<PathBuf>,
    },
}

/// A spinner with the step's elapsed time, and a byte bar while flashing.
#[derive(Debug)]
struct Line {
    bar: ProgressBar,
}

impl Line {
    fn new() -> Line {
        let bar = ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(200));
        Line { bar }
    }
}

impl Progress for Line {
    fn begin(&self, step: &str) {
        self.bar.reset();
        self.bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                .expect("a valid template"),
        );
        self.bar.set_message(step.to_owned());
    }

    fn flash(&self, progress: FlashProgress) {
        if self.bar.length() != Some(progress.total) {
            self.bar.set_length(progress.total);
            self.bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {msg} {bytes}/{total_bytes} {bytes_per_sec}",
                )
                .expect("a valid template"),
            );
        }
        let phase = match progress.phase {
            FlashPhase::Write => "writing",
            FlashPhase::Verify => "verifying",
        };
        self.bar.set_message(phase);
        self.bar.set_position(progress.done);
    }

    fn end(&self, step: &str, duration: Duration, ok: bool) {
        let mark = if ok { "ok  " } else { "FAIL" };
        self.bar
            .println(format!("{mark} {:>8.3}s  {step}", duration.as_secs_f64()));
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let Cli {
        command:
            Command::Run {
                rig,
                board,
                suite,
                image,
                upgrade_image,
                broken_image,
                junit,
                report,
                artifacts,
            },
    } = Cli::parse();
    let artifacts = artifacts.unwrap_or_else(|| PathBuf::from("hil-artifacts").join(&board));
    let options = RunOptions {
        rig,
        board,
        suite,
        image,
        artifacts,
        junit,
        report,
    };
    let upgrades = Upgrades {
        image: upgrade_image,
        broken: broken_image,
        ..Upgrades::default()
    };
    let line = Arc::new(Line::new());
    let result = run_with_upgrades(&options, &upgrades, line.clone());
    line.bar.finish_and_clear();
    match result {
        Err(err) => {
            eprintln!("rig error: {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::from(2)
        }
        Ok(result) => {
            for case in &result.cases {
                let total = case.duration.as_secs_f64();
                match &case.outcome {
                    Outcome::Passed => {
                        println!("PASS {} on {} in {total:.1}s", case.name, result.board)
                    }
                    Outcome::Skipped(why) => {
                        println!("SKIP {} on {}: {why}", case.name, result.board)
                    }
                    Outcome::Failed(why) => {
                        println!(
                            "FAIL {} on {} in {total:.1}s\n{why}",
                            case.name, result.board
                        )
                    }
                }
                for artifact in &case.artifacts {
                    println!("  artifact {}", artifact.display());
                }
            }
            if result.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}
