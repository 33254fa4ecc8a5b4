//! Static node binaries for each architecture: aarch64 with Debian's rustc-web (rustup has no
//! aarch64 std here), x86_64 with the rustup toolchain.

use std::path::{Path, PathBuf};
use std::process::Command;

use talos_machinery::Arch;

use crate::cmd;
use crate::deps;
use crate::paths;

/// Version facts compiled into machined (read with `option_env!`).
fn stamp(command: &mut Command, rustc: &str) {
    let git = |args: &[&str]| {
        cmd::output(Command::new("git").arg("-C").arg(paths::root()).args(args))
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let rustc_version = cmd::output(Command::new(rustc).arg("--version")).unwrap_or_default();
    command
        .env("TALOS_GIT_SHA", git(&["rev-parse", "--short=12", "HEAD"]))
        .env("TALOS_BUILD_DATE", git(&["log", "-1", "--format=%cI"]))
        .env("TALOS_BUILD_EPOCH", git(&["log", "-1", "--format=%ct"]))
        .env("TALOS_RUSTC_VERSION", rustc_version.trim());
}

fn target_dir(arch: Arch) -> PathBuf {
    paths::target().join(format!("node-{arch}"))
}

/// Builds the release, statically linked `package` binary for `arch` and returns its path.
pub fn build(arch: Arch, package: &str) -> anyhow::Result<PathBuf> {
    let triple = arch.rust_target();
    let env_triple = triple.to_uppercase().replace('-', "_");
    let mut command = match arch {
        Arch::Arm64 => {
            deps::require_tool(Path::new("/usr/bin/cargo"))?;
            let mut c = Command::new("/usr/bin/cargo");
            c.env("RUSTC", "/usr/bin/rustc")
                .env("RUSTDOC", "/usr/bin/rustdoc")
                .env(
                    format!("CARGO_TARGET_{env_triple}_LINKER"),
                    "aarch64-linux-gnu-gcc",
                )
                .env(
                    format!("CC_{}", triple.replace('-', "_")),
                    "aarch64-linux-gnu-gcc",
                )
                .env(
                    format!("AR_{}", triple.replace('-', "_")),
                    "aarch64-linux-gnu-ar",
                )
                .env(
                    format!("CARGO_TARGET_{env_triple}_RUNNER"),
                    "qemu-aarch64-static",
                );
            stamp(&mut c, "/usr/bin/rustc");
            c
        }
        Arch::Amd64 => {
            let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            c.env_remove("RUSTC").env_remove("RUSTDOC");
            stamp(&mut c, "rustc");
            c
        }
    };
    command
        .current_dir(paths::root())
        .env(
            format!("CARGO_TARGET_{env_triple}_RUSTFLAGS"),
            "-C target-feature=+crt-static -D warnings",
        )
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            package,
            "--target",
            triple,
            "--target-dir",
        ])
        .arg(target_dir(arch));
    cmd::run(&mut command)?;
    Ok(target_dir(arch).join(triple).join("release").join(package))
}
