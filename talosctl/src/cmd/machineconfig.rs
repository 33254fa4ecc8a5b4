//! `talosctl machineconfig patch`, and the `--patch`/`--config-patch` argument loader.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use talos_machinery::Config;
use talos_machinery::config::Patch;

use crate::files;

/// Machine config operations that need no node.
#[derive(Debug, Args)]
pub struct MachineConfigArgs {
    #[command(subcommand)]
    pub command: MachineConfigCommand,
}

#[derive(Debug, Subcommand)]
pub enum MachineConfigCommand {
    /// Apply patches to a machine config file and print or write the result.
    ///
    /// Each --patch is a strategic merge patch (a partial config, several documents allowed) or
    /// an RFC 6902 JSON patch (a list of {op, path, value}); `@FILE` reads it from a file.
    /// Patches apply in order.
    ///
    /// Example: talosctl machineconfig patch worker.yaml --patch @eth0.yaml -o worker-eth0.yaml
    Patch(PatchArgs),
}

#[derive(Debug, Args)]
pub struct PatchArgs {
    /// Machine config file to patch.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// A patch, inline or `@FILE`; repeatable.
    #[arg(short, long = "patch", value_name = "PATCH", required = true)]
    pub patches: Vec<String>,

    /// Write the result here (atomically, mode 0600) instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

pub fn run(args: MachineConfigArgs) -> anyhow::Result<()> {
    match args.command {
        MachineConfigCommand::Patch(args) => patch(args),
    }
}

fn patch(args: PatchArgs) -> anyhow::Result<()> {
    let config = read_config(&args.file)?;
    let patches = load_patches(&args.patches)?;
    let patched = config
        .patch(&patches)
        .with_context(|| format!("patching {}", args.file.display()))?;
    let yaml = patched.to_yaml()?;
    match &args.output {
        Some(path) => {
            files::write_atomic(path, yaml.as_bytes(), 0o600)?;
            eprintln!("patched {} -> {}", args.file.display(), path.display());
        }
        None => print!("{yaml}"),
    }
    Ok(())
}

/// Reads and strictly decodes a machine config file.
pub fn read_config(path: &Path) -> anyhow::Result<Config> {
    let bytes = files::read_bounded(path)?;
    Config::from_bytes(&bytes).with_context(|| format!("decoding {}", path.display()))
}

/// Loads patch arguments: `@FILE` reads a file, anything else is the patch itself.
pub fn load_patches(args: &[String]) -> anyhow::Result<Vec<Patch>> {
    args.iter()
        .map(|arg| match arg.strip_prefix('@') {
            Some(file) => {
                let text = files::read_text(Path::new(file))?;
                Patch::parse(&text).with_context(|| format!("patch {file}"))
            }
            None => Patch::parse(arg).with_context(|| format!("patch {arg:?}")),
        })
        .collect()
}
