//! `talosctl reboot` and `talosctl shutdown`.

use clap::{Args, ValueEnum};
use talos_proto::machine::reboot_request::Mode;

use crate::global::{self, GlobalArgs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RebootMode {
    /// Stop services, then reboot. talos-rs nodes do not kexec: every reboot goes through
    /// the firmware.
    Default,
    /// Full power cycle through the firmware (on talos-rs nodes the same as default).
    Powercycle,
    /// Reboot without stopping services first.
    Force,
}

impl From<RebootMode> for Mode {
    fn from(mode: RebootMode) -> Mode {
        match mode {
            RebootMode::Default => Mode::Default,
            RebootMode::Powercycle => Mode::Powercycle,
            RebootMode::Force => Mode::Force,
        }
    }
}

#[derive(Debug, Args)]
pub struct RebootArgs {
    /// How to reboot.
    #[arg(short, long, value_enum, default_value = "default")]
    pub mode: RebootMode,
}

#[derive(Debug, Args)]
pub struct ShutdownArgs {
    /// Power off immediately, without stopping services gracefully.
    #[arg(long)]
    pub force: bool,
}

pub async fn reboot(global: &GlobalArgs, args: RebootArgs) -> anyhow::Result<()> {
    let targets = global::targets(global, false).await?;
    let mode = Mode::from(args.mode);
    let (ok, failed) = global::each(
        &targets,
        |t| async move { Ok(t.client.reboot(mode).await?) },
    )
    .await;
    for (label, reboot) in ok {
        let node = global::node_label(&label, reboot.metadata.as_ref());
        println!("{node}: reboot requested (actor ID {})", reboot.actor_id);
    }
    global::check_failures(failed, targets.len())
}

pub async fn shutdown(global: &GlobalArgs, args: ShutdownArgs) -> anyhow::Result<()> {
    let targets = global::targets(global, false).await?;
    let (ok, failed) = global::each(&targets, |t| async move {
        Ok(t.client.shutdown(args.force).await?)
    })
    .await;
    for (label, shutdown) in ok {
        let node = global::node_label(&label, shutdown.metadata.as_ref());
        println!(
            "{node}: shutdown requested (actor ID {})",
            shutdown.actor_id
        );
    }
    global::check_failures(failed, targets.len())
}
