//! The GPIO relay driver on real kernel GPIO lines: boots the arm64 gpio-sim image (`cargo
//! xtask` builds gpio-sim out of tree and packs it with `gpio-sim-check` as /init), whose init
//! drives gpio-sim lines through `GpioRelay` and checks their sysfs levels: on, off, active-low
//! and a power cycle's off-time.
//!
//! Inputs come from `$TALOS_RS_OUT/arm64/` (vmlinuz, gpiosim-initramfs.zst). Without them the
//! test skips with a message, unless `TALOS_RS_E2E_REQUIRED` is set, as `cargo xtask test`
//! does; then their absence is a failure.

use std::path::{Path, PathBuf};
use std::time::Duration;

use talos_hil::{Accel, BootSource, QemuBoard, QemuSpec};

const RUN_TIMEOUT: Duration = Duration::from_secs(180);

fn artifacts() -> Option<(PathBuf, PathBuf)> {
    let required = std::env::var_os("TALOS_RS_E2E_REQUIRED").is_some();
    let Some(out) = std::env::var_os("TALOS_RS_OUT") else {
        assert!(!required, "TALOS_RS_OUT is not set");
        eprintln!("skipped: TALOS_RS_OUT is not set; run `cargo xtask test`");
        return None;
    };
    let dir = Path::new(&out).join("arm64");
    let kernel = dir.join("vmlinuz");
    let initramfs = dir.join("gpiosim-initramfs.zst");
    if kernel.is_file() && initramfs.is_file() {
        return Some((kernel, initramfs));
    }
    assert!(
        !required,
        "no gpio-sim image in {}: vmlinuz and gpiosim-initramfs.zst",
        dir.display()
    );
    eprintln!("skipped: no gpio-sim image in {}", dir.display());
    None
}

#[test]
fn relay_drives_gpio_sim_lines_on_off_active_low_and_off_time() {
    let Some((kernel, initrd)) = artifacts() else {
        return;
    };
    let board = talos_boards::find(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../boards"),
        "qemu-virt-arm64",
    )
    .expect("the QEMU board file loads");
    let dir = tempfile::tempdir().unwrap();
    let qemu = QemuBoard::launch(QemuSpec {
        board,
        boot: BootSource::Kernel {
            kernel,
            initrd,
            append_extra: vec![],
        },
        disk: None,
        api_port: None,
        serial_log: dir.path().join("console.log"),
        accel: Accel::Tcg,
        no_reboot: true,
    })
    .expect("QEMU starts");

    let verdict = qemu.wait_for_line("GPIOSIM PASS", RUN_TIMEOUT);
    let console = qemu.serial_lines().join("\n");
    let failure = console.lines().find(|l| l.contains("GPIOSIM FAIL"));
    assert!(
        verdict.is_ok() && failure.is_none(),
        "gpio-sim check failed: {}\n---- serial console ----\n{console}",
        failure.map_or_else(|| format!("{:?}", verdict.err()), str::to_owned)
    );
    for check in ["line 0 active-high", "line 1 active-low", "line 2 cycle"] {
        assert!(
            console.contains(&format!("GPIOSIM: {check}")),
            "no {check:?} report on the console:\n{console}"
        );
    }
    let status = qemu
        .wait_exit(Duration::from_secs(30))
        .expect("the guest powers off");
    assert!(status.success(), "QEMU exited with {status}");
}
