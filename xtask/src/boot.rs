//! Booting built images under QEMU for `qemu`, `demo` and `bench`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use talos_client::{Client, Endpoint, TlsMode};
use talos_hil::{Accel, BootSource, QemuBoard, QemuSpec};

use crate::cmd;
use crate::image::Image;

/// A fresh ext4 filesystem labelled STATE, as machined expects on its system disk.
pub fn fresh_state_disk(path: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    std::fs::File::create(path)?.set_len(64 << 20)?;
    cmd::output(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "STATE"])
            .arg(path),
    )?;
    Ok(())
}

pub fn launch(
    image: &Image,
    disk: Option<PathBuf>,
    extra_args: Vec<String>,
    serial_log: PathBuf,
    no_reboot: bool,
) -> anyhow::Result<QemuBoard> {
    let spec = QemuSpec {
        board: image.board.clone(),
        boot: BootSource::Kernel {
            kernel: image.kernel.clone(),
            initrd: image.initramfs.clone(),
            append_extra: extra_args,
        },
        disk,
        api_port: None,
        serial_log,
        accel: Accel::Tcg,
        no_reboot,
    };
    QemuBoard::launch(spec).context("starting QEMU")
}

/// Waits for the node's API to give a real answer; returns the client and the time since
/// QEMU started.
pub async fn wait_for_api(
    board: &QemuBoard,
    tls: TlsMode,
    within: Duration,
) -> anyhow::Result<(Client, Duration)> {
    let endpoint = Endpoint::new("127.0.0.1", board.api_port());
    let deadline = Instant::now() + within;
    let client = Client::connect_with_retry(&endpoint, tls, deadline)
        .await
        .with_context(|| {
            let tail = board.serial_lines();
            let tail = tail[tail.len().saturating_sub(40)..].join("\n");
            format!("the API at {endpoint} did not answer within {within:?}; console tail:\n{tail}")
        })?;
    let since_start = Instant::now().duration_since(board.launched_at());
    Ok((client, since_start))
}
