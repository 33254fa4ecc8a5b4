//! The `upgrade-rollback` suite through the `hil` binary, on a QEMU arm64 board whose rig entry
//! boots the UEFI disk image through QEMU_EFI: v1.0.0 from the disk, an upgrade to v2.0.0, then
//! to a v3.0.0 that cannot boot, served by a real registry (the guest reaches it as 10.0.2.2).
//!
//! Inputs: `$TALOS_RS_OUT/images/qemu-virt-arm64-uefi/metal-arm64.raw` and
//! `$TALOS_RS_OUT/installers/arm64/{v2.0.0,v3.0.0}/`. Without `TALOS_RS_OUT` the test skips;
//! with `TALOS_RS_E2E_REQUIRED` set, missing inputs fail it.
//!
//! `power-cut 2` with `--upgrade-image` runs the same way (about 70 s): one cut during
//! apply-config, one during the upgrade. The two runs take turns, one QEMU guest at a time.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use talos_oci::LocalRegistry;

mod fixtures;

use fixtures::{DiskImage, boards_dir};

/// Held while a guest runs.
static ONE_GUEST: Mutex<()> = Mutex::new(());

const BOARD: &str = "qemu-virt-arm64";
const CHAIN: &str = "uefi";
const INSTALLERS: [&str; 2] = ["v2.0.0/index.json", "v3.0.0/index.json"];

fn rig_yaml() -> String {
    format!(
        r#"
lock_dir: locks
boards_dir: {boards}
places:
  - name: ci
    boards:
      - name: qemu-arm64-uefi
        board: {BOARD}
        bootloader: efi
        power:
          qemu: {{ firmware: {CHAIN} }}
        console: qemu
        storage:
          qemu-disk: {{ path: disk.raw }}
        network: qemu
        boot_timeout_s: 180
"#,
        boards = boards_dir().display(),
    )
}

/// Pushes the installer for `version`; returns the reference the guest pulls.
async fn publish(registry: &LocalRegistry, installers: &Path, version: &str) -> String {
    let name = format!("talos/installer:{version}");
    registry
        .push_layout(&installers.join(version), &name)
        .await
        .expect("push the installer layout xtask wrote");
    registry.guest_reference(&name)
}

/// Runs `hil run` with `args` after the common ones; returns its exit code, JUnit and report.
fn hil_run(dir: &Path, inputs: &DiskImage, suite: &str, args: &[&str]) -> (i32, String, String) {
    let rig = dir.join("rig.yaml");
    std::fs::write(&rig, rig_yaml()).unwrap();
    let (junit, report) = (dir.join("junit.xml"), dir.join("report.md"));
    let _guest = ONE_GUEST.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_hil"))
        .arg("run")
        .args(["--rig".as_ref(), rig.as_os_str()])
        .args(["--board", "qemu-arm64-uefi", "--suite", suite])
        .args(["--image".as_ref(), inputs.disk.as_os_str()])
        .args(["--junit".as_ref(), junit.as_os_str()])
        .args(["--report".as_ref(), report.as_os_str()])
        .args(["--artifacts".as_ref(), dir.join("artifacts").as_os_str()])
        .args(args)
        .output()
        .expect("the hil binary runs");
    let report = std::fs::read_to_string(&report).unwrap_or_default();
    eprintln!(
        "hil run --suite {suite:?} took {:.1?}\n{}{}\n{report}",
        started.elapsed(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    let junit = std::fs::read_to_string(&junit).unwrap_or_default();
    (output.status.code().unwrap_or(-1), junit, report)
}

#[tokio::test]
async fn upgrade_rollback_on_qemu_arm64_uefi() {
    let Some(inputs) = fixtures::disk_image(BOARD, CHAIN, &INSTALLERS) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let registry = LocalRegistry::start(&dir.path().join("registry")).expect("registry starts");
    let good = publish(&registry, &inputs.installers, "v2.0.0").await;
    let broken = publish(&registry, &inputs.installers, "v3.0.0").await;

    let (code, junit, report) = hil_run(
        dir.path(),
        &inputs,
        "upgrade-rollback",
        &["--upgrade-image", &good, "--broken-image", &broken],
    );
    assert_eq!(code, 0, "hil run failed");
    assert!(
        junit.contains("tests=\"1\" failures=\"0\" errors=\"0\" skipped=\"0\""),
        "{junit}"
    );
    assert!(junit.contains("name=\"upgrade-rollback\""), "{junit}");
    for step in [
        "flashed",
        "configured",
        "version before the upgrade",
        "upgrade to 10.0.2.2:",
        "upgraded",
        "the broken system fails",
        "rolled back",
    ] {
        assert!(
            junit.contains(step),
            "{step} missing from the JUnit steps:\n{junit}"
        );
    }
    assert!(
        report.contains("upgraded from v1.0.0 to v2.0.0"),
        "{report}"
    );
    assert!(report.contains("Kernel panic"), "{report}");
    assert!(report.contains("back on v2.0.0 by itself"), "{report}");
    assert!(
        !dir.path().join("locks/qemu-arm64-uefi.lock").exists(),
        "the board lock is released"
    );
}

#[tokio::test]
async fn power_cut_during_upgrade_on_qemu_arm64_uefi() {
    let Some(inputs) = fixtures::disk_image(BOARD, CHAIN, &INSTALLERS) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let registry = LocalRegistry::start(&dir.path().join("registry")).expect("registry starts");
    let good = publish(&registry, &inputs.installers, "v2.0.0").await;

    let (code, junit, report) = hil_run(
        dir.path(),
        &inputs,
        "power-cut 2",
        &["--upgrade-image", &good],
    );
    assert_eq!(code, 0, "hil run failed");
    assert!(
        junit.contains("tests=\"1\" failures=\"0\" errors=\"0\" skipped=\"0\""),
        "{junit}"
    );
    assert!(junit.contains("cut 1/2 during apply-config"), "{junit}");
    assert!(junit.contains("cut 2/2 during upgrade"), "{junit}");
    assert!(report.contains("1 during upgrade:"), "{report}");
}
