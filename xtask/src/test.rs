//! `cargo xtask test`: what CI runs.

use std::process::Command;

use talos_machinery::Arch;

use crate::{cmd, deps, fuzz, gpiosim, image, paths};

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
    gpiosim::image(Arch::Arm64)?;
    cmd::run(
        Command::new(&cargo)
            .current_dir(&root)
            .args(["test", "--workspace", "--locked"])
            .env("TALOS_RS_OUT", root.join("out"))
            .env("TALOS_RS_E2E_REQUIRED", "1"),
    )?;
    if cmd::output(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])).is_ok() {
        fuzz::run(FUZZ_SECONDS)
    } else {
        eprintln!("fuzzing skipped: no nightly toolchain (cargo-fuzz needs one)");
        Ok(())
    }
}

/// A short fuzzing run on every CI pass; longer runs with `cargo xtask fuzz --seconds N`.
const FUZZ_SECONDS: u64 = 30;
