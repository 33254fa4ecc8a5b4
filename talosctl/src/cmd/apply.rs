//! `talosctl apply-config`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use talos_proto::machine::ApplyConfigurationRequest;
use talos_proto::machine::apply_configuration_request::Mode;

use crate::global::{self, GlobalArgs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ApplyMode {
    /// Apply live when possible, else stage for the next boot (the node decides).
    Auto,
    /// Apply live without rebooting; fail if that is impossible.
    NoReboot,
    /// Apply and reboot.
    Reboot,
    /// Store the config and apply it at the next boot.
    Staged,
    /// Apply live and roll back after --timeout unless confirmed by another apply.
    Try,
}

impl From<ApplyMode> for Mode {
    fn from(mode: ApplyMode) -> Mode {
        match mode {
            ApplyMode::Auto => Mode::Auto,
            ApplyMode::NoReboot => Mode::NoReboot,
            ApplyMode::Reboot => Mode::Reboot,
            ApplyMode::Staged => Mode::Staged,
            ApplyMode::Try => Mode::Try,
        }
    }
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Machine configuration file (multi-document YAML) to send.
    #[arg(short, long, value_name = "PATH")]
    pub file: PathBuf,

    /// Connect without a client certificate and without verifying the server (maintenance mode,
    /// for a node that has no config yet).
    #[arg(short, long)]
    pub insecure: bool,

    /// How the node applies the configuration.
    #[arg(short, long, value_enum, default_value = "auto")]
    pub mode: ApplyMode,

    /// Only report what would change; the node keeps its current configuration.
    #[arg(long)]
    pub dry_run: bool,

    /// With --mode=try: how long the trial configuration lives before the node reverts it
    /// (e.g. 90s, 2m, 1h30m).
    #[arg(long, value_parser = parse_duration, default_value = "1m", value_name = "DURATION")]
    pub timeout: Duration,
}

/// Parses Go-style durations made of `<n>h`, `<n>m`, `<n>s` and `<n>ms` parts.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?} (use e.g. 30s, 2m, 1h30m)");
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let value: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "h" => Duration::from_secs(value.checked_mul(3600).ok_or_else(bad)?),
            "m" => Duration::from_secs(value.checked_mul(60).ok_or_else(bad)?),
            "s" => Duration::from_secs(value),
            "ms" => Duration::from_millis(value),
            _ => return Err(bad()),
        };
        total = total.checked_add(part).ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

pub async fn run(global: &GlobalArgs, args: ApplyArgs) -> anyhow::Result<()> {
    let data = std::fs::read(&args.file)
        .with_context(|| format!("reading --file {}", args.file.display()))?;
    let targets = global::targets(global, args.insecure).await?;
    let mode = Mode::from(args.mode);
    let try_mode_timeout =
        (args.mode == ApplyMode::Try).then(|| talos_proto::prost_types::Duration {
            seconds: i64::try_from(args.timeout.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(args.timeout.subsec_nanos()).unwrap_or(0),
        });
    let (ok, failed) = global::each(&targets, |t| {
        let request = ApplyConfigurationRequest {
            data: data.clone(),
            mode: mode.into(),
            dry_run: args.dry_run,
            try_mode_timeout,
        };
        async move {
            let resp = t
                .client
                .machine()
                .apply_configuration(t.client.request(request))
                .await
                .map_err(|status| talos_client::ClientError::Rpc {
                    method: "ApplyConfiguration",
                    status,
                })?;
            Ok(resp.into_inner().messages)
        }
    })
    .await;
    for (label, messages) in ok {
        for message in messages {
            let node = global::node_label(&label, message.metadata.as_ref());
            for warning in &message.warnings {
                eprintln!("{node}: WARNING: {warning}");
            }
            if args.dry_run {
                println!("{node}: Dry run summary:");
            }
            if !message.mode_details.is_empty() {
                println!("{node}: {}", message.mode_details);
            }
        }
    }
    global::check_failures(failed, targets.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "5", "m", "1d", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn modes_map_to_wire_values() {
        assert_eq!(Mode::from(ApplyMode::Reboot) as i32, 0);
        assert_eq!(Mode::from(ApplyMode::Auto) as i32, 1);
        assert_eq!(Mode::from(ApplyMode::NoReboot) as i32, 2);
        assert_eq!(Mode::from(ApplyMode::Staged) as i32, 3);
        assert_eq!(Mode::from(ApplyMode::Try) as i32, 4);
    }
}
