//! `talosctl copy SRC DEST|-`.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Args;

use crate::global::{self, GlobalArgs};
use crate::tarball;

pub const COPY_EXAMPLES: &str = "\
Examples:
  # Fetch the node's /var/log into ./logs/log
  talosctl -n 10.5.0.2 copy /var/log ./logs

  # Keep the archive as the node sent it
  talosctl -n 10.5.0.2 cp /etc - > etc.tar.gz

The node refuses device files (InvalidArgument) and anything under /system/state or
/system/secrets (PermissionDenied); inside a copied tree those are left out, as are sockets
and pipes. Links are copied as links.";

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Absolute path of a file or directory on the node.
    #[arg(value_name = "SRC")]
    pub source: String,
    /// Local directory to unpack into (created if missing), or - to write the .tar.gz to stdout.
    #[arg(value_name = "DEST")]
    pub dest: String,
}

pub async fn run(global: &GlobalArgs, args: CopyArgs) -> anyhow::Result<()> {
    let targets = global::targets(global, false).await?;
    let [target] = targets.as_slice() else {
        bail!(
            "command \"copy\" requires exactly one node (got {})",
            targets.len()
        );
    };
    let mut stream = target
        .client
        .copy(&args.source)
        .await
        .context("error copying")?;
    if args.dest == "-" {
        let mut out = std::io::stdout().lock();
        while let Some(chunk) = stream.next_chunk().await.context("error copying")? {
            out.write_all(&chunk).context("writing to stdout")?;
        }
        return out.flush().context("writing to stdout");
    }
    let dest = PathBuf::from(&args.dest);
    std::fs::create_dir_all(&dest).with_context(|| format!("creating {}", dest.display()))?;
    tarball::unpack(stream, &dest)
        .await
        .context("error copying")
}
