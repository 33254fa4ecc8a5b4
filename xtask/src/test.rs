//! `cargo xtask test`: what CI runs.

use std::process::Command;

use talos_machinery::Arch;

use crate::{cmd, deps, disk, fuzz, gpiosim, image, paths};

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
    inputs()?;
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

/// Everything the QEMU tests boot.
pub fn inputs() -> anyhow::Result<()> {
    for arch in Arch::ALL {
        image::build(arch, None)?;
    }
    gpiosim::image(Arch::Arm64)?;
    upgrade_fixtures()?;
    sbc_fixtures()
}

/// The SBC disk images at the default version: rpi_generic for hil/tests/rpi_qemu.rs, and the
/// boards QEMU cannot boot for hil/tests/sbc_images.rs.
fn sbc_fixtures() -> anyhow::Result<()> {
    for name in ["rpi_generic", "rockpi4", "pine64"] {
        let board = talos_boards::find(&paths::boards(), name)?;
        let system = disk::system(&board, image::DEFAULT_VERSION)?;
        disk::build(&board, None, &system)?;
    }
    Ok(())
}

/// Disk images at v1.0.0 and installers v2.0.0 and (broken) v3.0.0, for the A/B tests in
/// hil/tests/upgrade_qemu.rs; hil/tests/system_disk_qemu.rs boots the arm64 U-Boot image too.
fn upgrade_fixtures() -> anyhow::Result<()> {
    for (board_name, chains, broken) in [
        ("qemu-virt-arm64", &["u-boot", "uefi"][..], true),
        ("qemu-amd64", &["uefi"][..], false),
    ] {
        let board = talos_boards::find(&paths::boards(), board_name)?;
        let v1 = disk::system(&board, UPGRADE_VERSIONS[0])?;
        for chain in chains {
            disk::build(&board, Some(chain), &v1)?;
        }
        disk::installer(
            board.arch,
            &disk::system(&board, UPGRADE_VERSIONS[1])?,
            false,
        )?;
        if broken {
            disk::installer(
                board.arch,
                &disk::system(&board, UPGRADE_VERSIONS[2])?,
                true,
            )?;
        }
    }
    Ok(())
}

/// The versions the upgrade tests see: the image, a good upgrade, a broken one.
const UPGRADE_VERSIONS: [&str; 3] = ["v1.0.0", "v2.0.0", "v3.0.0"];

/// A short fuzzing run on every CI pass; longer runs with `cargo xtask fuzz --seconds N`.
const FUZZ_SECONDS: u64 = 30;
