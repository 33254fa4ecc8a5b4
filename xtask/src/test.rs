//! `cargo xtask test`: what CI runs.

use std::process::Command;

use talos_machinery::Arch;

use crate::{cmd, deps, image, paths};

pub fn run() -> anyhow::Result<()> {
    deps::ensure_if_missing()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = paths::root();
    cmd::run(
        Command::new(&cargo)
            .current_dir(&root)
            .args(["fmt", "--all", "--", "--check"]),
    )?;
    cmd::run(Command::new(&cargo).current_dir(&root).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ]))?;
    for arch in Arch::ALL {
        image::build(arch, None)?;
    }
    cmd::run(
        Command::new(&cargo)
            .current_dir(&root)
            .args(["test", "--workspace", "--locked"])
            .env("TALOS_RS_OUT", root.join("out"))
            .env("TALOS_RS_E2E_REQUIRED", "1"),
    )
}
