//! `cargo xtask kernel check [--config FILE]`: our fragments against a kernel's .config.

use std::path::PathBuf;

use anyhow::bail;
use talos_kernel::{KernelConfig, check as check_config, fragments};
use talos_machinery::Arch;

/// Checks `config`, or else both Debian kernels' configs in the cache; fails only when a
/// required option is missing (hardening gaps are printed, not fatal).
pub fn check(config: Option<PathBuf>) -> anyhow::Result<()> {
    let configs = match config {
        Some(path) => vec![path],
        None => Arch::ALL
            .into_iter()
            .map(debian_config)
            .collect::<anyhow::Result<_>>()?,
    };
    let mut missing = Vec::new();
    for path in configs {
        let config = KernelConfig::read(&path)?;
        let report = check_config(&config, &fragments());
        let arch = report
            .arch
            .map_or_else(|| "unknown arch".to_owned(), |a| a.to_string());
        println!("== {} ({arch})", path.display());
        print!("{}", report.table());
        missing.extend(
            report
                .missing_required()
                .map(|r| format!("{} in {}", r.option, path.display())),
        );
    }
    if !missing.is_empty() {
        bail!("required kernel options missing: {}", missing.join(", "));
    }
    Ok(())
}

fn debian_config(arch: Arch) -> anyhow::Result<PathBuf> {
    Ok(crate::deps::kernel(arch)?.config())
}
