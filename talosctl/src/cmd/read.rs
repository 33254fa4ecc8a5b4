//! `talosctl read PATH`.

use std::io::Write as _;

use anyhow::{Context as _, bail};
use clap::Args;

use crate::global::{self, GlobalArgs};

pub const READ_EXAMPLES: &str = "\
Examples:
  # The node's CPUs, as the kernel describes them
  talosctl -n 10.5.0.2 read /proc/cpuinfo

  # Save a file from the node
  talosctl -n 10.5.0.2 cat /etc/os-release > os-release

Only regular files can be read: the node refuses device files and directories
(InvalidArgument), and anything under /system/state or /system/secrets (PermissionDenied).";

#[derive(Debug, Args)]
pub struct ReadArgs {
    /// Absolute path of the file on the node.
    #[arg(value_name = "PATH")]
    pub path: String,
}

pub async fn run(global: &GlobalArgs, args: ReadArgs) -> anyhow::Result<()> {
    let targets = global::targets(global, false).await?;
    let [target] = targets.as_slice() else {
        bail!(
            "command \"read\" requires exactly one node (got {})",
            targets.len()
        );
    };
    let mut chunks = target
        .client
        .read(&args.path)
        .await
        .context("error reading file")?;
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = chunks.next_chunk().await.context("error reading file")? {
        match out.write_all(&chunk) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(err) => return Err(err).context("writing to stdout"),
        }
    }
    match out.flush() {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(err).context("writing to stdout")
        }
        _ => Ok(()),
    }
}
