//! `cargo xtask demo`: the walking skeleton end to end on arm64, with the real talosctl.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use talos_client::TlsMode;
use talos_machinery::Arch;

use crate::{boot, cmd, deps, image, paths};

fn talosctl() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    cmd::run(
        Command::new(cargo)
            .current_dir(paths::root())
            .args(["build", "--quiet", "-p", "talosctl"]),
    )?;
    Ok(paths::target().join("debug/talosctl"))
}

fn talosctl_run(bin: &Path, args: &[&str]) -> anyhow::Result<()> {
    cmd::run(Command::new(bin).args(args))
}

pub fn run() -> anyhow::Result<()> {
    deps::ensure_if_missing()?;
    let arch = Arch::Arm64;
    let image = image::build(arch, None)?;
    let talosctl = talosctl()?;
    let out = paths::out(arch);
    let demo_dir = out.join("demo");
    let disk = out.join("demo-state.img");
    boot::fresh_state_disk(&disk)?;
    let serial = out.join("demo-console.log");
    let board = boot::launch(&image, Some(disk), Vec::new(), serial.clone(), true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (_, took) = runtime.block_on(boot::wait_for_api(
        &board,
        TlsMode::Insecure,
        Duration::from_secs(180),
    ))?;
    eprintln!(
        "\nnode is up in maintenance mode after {took:.1?} (console: {})\n",
        serial.display()
    );

    let endpoint = format!("127.0.0.1:{}", board.api_port());
    let dir = demo_dir.to_str().context("the output path is not UTF-8")?;
    talosctl_run(
        &talosctl,
        &[
            "gen",
            "config",
            "demo",
            "https://10.0.2.15:6443",
            "-o",
            dir,
            "--force",
        ],
    )?;
    let controlplane = demo_dir.join("controlplane.yaml");
    let talosconfig = demo_dir.join("talosconfig");
    let controlplane = controlplane.to_str().context("path is not UTF-8")?;
    let talosconfig = talosconfig.to_str().context("path is not UTF-8")?;
    talosctl_run(
        &talosctl,
        &["version", "--insecure", "-e", &endpoint, "-n", "127.0.0.1"],
    )?;
    talosctl_run(
        &talosctl,
        &[
            "apply-config",
            "--insecure",
            "-e",
            &endpoint,
            "-n",
            "127.0.0.1",
            "-f",
            controlplane,
        ],
    )?;
    for command in ["version", "services", "shutdown"] {
        talosctl_run(
            &talosctl,
            &[
                "--talosconfig",
                talosconfig,
                "-e",
                &endpoint,
                "-n",
                "127.0.0.1",
                command,
            ],
        )?;
    }
    let status = board
        .wait_exit(Duration::from_secs(60))
        .context("QEMU did not exit after shutdown")?;
    eprintln!(
        "\nQEMU exited ({status}). The demo worked: maintenance mode → apply-config → mutual TLS → shutdown."
    );
    Ok(())
}
