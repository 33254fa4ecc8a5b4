//! `talosctl kubeconfig [LOCAL_PATH]`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{ArgAction, Args};
use talos_machinery::codec::MAX_CONFIG_BYTES;
use talos_machinery::kubeconfig::{Kubeconfig, MergeNote};

use crate::files;
use crate::global::{self, GlobalArgs};
use crate::tarball;

pub const KUBECONFIG_EXAMPLES: &str = "\
Examples:
  # Merge a fresh admin kubeconfig into ~/.kube/config and switch to it
  talosctl -n 10.5.0.2 kubeconfig

  # Write it to ./kubeconfig
  talosctl -n 10.5.0.2 kubeconfig .

  # Print it
  talosctl -n 10.5.0.2 kubeconfig -

Every call mints a new client certificate (CN=admin, O=system:masters), valid for
cluster.adminKubeconfig.certLifetime (default 8760h). When merging, an entry whose name is taken
by a different one is added as NAME-1, NAME-2, ... unless --force replaces it.";

#[derive(Debug, Args)]
pub struct KubeconfigArgs {
    /// File to write or merge into (default ~/.kube/config); a directory gets a file named
    /// kubeconfig; - prints to stdout.
    #[arg(value_name = "LOCAL_PATH")]
    pub path: Option<PathBuf>,
    /// Replace entries with the same names when merging, or the whole file with --merge=false.
    #[arg(short, long)]
    pub force: bool,
    /// Merge into an existing file instead of refusing to touch it.
    #[arg(short, long, default_value_t = true, action = ArgAction::Set, value_name = "BOOL")]
    pub merge: bool,
}

pub async fn run(global: &GlobalArgs, args: KubeconfigArgs) -> anyhow::Result<()> {
    let path = match &args.path {
        Some(path) => path.clone(),
        None => default_path()?,
    };
    let targets = global::targets(global, false).await?;
    let [target] = targets.as_slice() else {
        bail!(
            "command \"kubeconfig\" requires exactly one node (got {})",
            targets.len()
        );
    };
    let stream = target
        .client
        .kubeconfig()
        .await
        .context("error fetching the kubeconfig")?;
    let content = tarball::file_content(stream, "kubeconfig", MAX_CONFIG_BYTES as u64)
        .await
        .context("error fetching the kubeconfig")?;
    if path == Path::new("-") {
        return std::io::stdout()
            .write_all(&content)
            .context("writing to stdout");
    }
    let path = if path.is_dir() {
        path.join("kubeconfig")
    } else {
        path
    };
    let text =
        String::from_utf8(content).context("the node sent a kubeconfig that is not UTF-8")?;
    let (written, message) = place(&path, &text, args.merge, args.force)?;
    files::write_atomic(&path, written.as_bytes(), 0o600)?;
    eprintln!("{message}");
    Ok(())
}

fn default_path() -> anyhow::Result<PathBuf> {
    let home =
        std::env::var_os("HOME").context("HOME is not set: name the file to write (LOCAL_PATH)")?;
    Ok(Path::new(&home).join(".kube").join("config"))
}

/// What to write at `path` and what to tell the user.
fn place(path: &Path, fresh: &str, merge: bool, force: bool) -> anyhow::Result<(String, String)> {
    let incoming = Kubeconfig::from_yaml(fresh).context("the node sent an invalid kubeconfig")?;
    let context = incoming.current_context.clone();
    if !path.exists() || (!merge && force) {
        return Ok((
            fresh.to_owned(),
            format!("wrote {} (context {context})", path.display()),
        ));
    }
    if !merge {
        bail!(
            "{} exists: merge into it (--merge=true) or replace it (--force)",
            path.display()
        );
    }
    let existing = files::read_text(path)?;
    let mut file = Kubeconfig::from_yaml(&existing)
        .with_context(|| format!("{} is not a kubeconfig", path.display()))?;
    let mut lines = Vec::new();
    for note in file.merge(incoming, force) {
        lines.push(match note {
            MergeNote::Renamed { kind, from, to } => {
                format!("{kind} {from:?} exists and differs: added as {to:?}")
            }
            MergeNote::Replaced { kind, name } => format!("replaced {kind} {name:?}"),
        });
    }
    lines.push(format!(
        "merged into {} (context {})",
        path.display(),
        file.current_context
    ));
    Ok((file.to_yaml()?, lines.join("\n")))
}
