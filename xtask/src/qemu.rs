//! `cargo xtask qemu`: boot a node and hand it to the user.

use std::time::Duration;

use talos_client::TlsMode;
use talos_machinery::Arch;

use crate::{boot, deps, image, paths};

pub fn run(
    arch: Arch,
    board: Option<&str>,
    append: Vec<String>,
    keep_state: bool,
) -> anyhow::Result<()> {
    deps::ensure_if_missing()?;
    let image = image::build(arch, board)?;
    let out = paths::out(arch);
    let disk = out.join("state.img");
    if !keep_state || !disk.exists() {
        boot::fresh_state_disk(&disk)?;
    }
    let serial = out.join("console.log");
    let board = boot::launch(&image, Some(disk), append, serial.clone(), false)?;
    let port = board.api_port();
    eprintln!(
        "QEMU started ({}); console: {}",
        image.board.name,
        serial.display()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match runtime.block_on(boot::wait_for_api(
        &board,
        TlsMode::Insecure,
        Duration::from_secs(180),
    )) {
        Ok((_, took)) => {
            eprintln!("\nThe node's API answered after {took:.1?}. Reach it with:");
            eprintln!("  talosctl --insecure -e 127.0.0.1:{port} -n 127.0.0.1 version");
            eprintln!(
                "  talosctl apply-config --insecure -e 127.0.0.1:{port} -n 127.0.0.1 -f controlplane.yaml"
            );
            eprintln!(
                "  talosctl --talosconfig ./talosconfig -e 127.0.0.1:{port} -n 127.0.0.1 version"
            );
            eprintln!("Stop it with `talosctl ... shutdown` or Ctrl-C.\n");
        }
        Err(e) => eprintln!("{e:#}"),
    }
    let mut printed = 0;
    loop {
        let exited = board.wait_exit(Duration::from_millis(500));
        let lines = board.serial_lines();
        for line in &lines[printed.min(lines.len())..] {
            println!("{line}");
        }
        printed = lines.len();
        match exited {
            Ok(status) => {
                eprintln!("QEMU exited: {status}");
                return Ok(());
            }
            Err(talos_hil::HilError::StillRunning { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
}
