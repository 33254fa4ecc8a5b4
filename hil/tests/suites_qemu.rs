//! The `smoke` and `reboot-loop 3` suites on the QEMU arm64 board, through the runner's library
//! API with a rig file, as CI runs them.
//!
//! Inputs come from `$TALOS_RS_OUT/arm64/` (vmlinuz, initramfs.zst). Without `TALOS_RS_OUT` the
//! test skips with a message; with `TALOS_RS_E2E_REQUIRED` set, missing images fail it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use talos_hil::runner::{RunOptions, run};
use talos_hil::strategy::NoProgress;
use talos_hil::suites::{Outcome, Suite};

fn arm64_images() -> Option<(PathBuf, PathBuf)> {
    let Some(out) = std::env::var_os("TALOS_RS_OUT") else {
        assert!(
            std::env::var_os("TALOS_RS_E2E_REQUIRED").is_none(),
            "TALOS_RS_OUT is not set"
        );
        eprintln!("skipped: TALOS_RS_OUT is not set; run `cargo xtask test` to build images");
        return None;
    };
    let dir = Path::new(&out).join("arm64");
    let (kernel, initramfs) = (dir.join("vmlinuz"), dir.join("initramfs.zst"));
    if kernel.is_file() && initramfs.is_file() {
        return Some((kernel, initramfs));
    }
    assert!(
        std::env::var_os("TALOS_RS_E2E_REQUIRED").is_none(),
        "no arm64 image in {}",
        dir.display()
    );
    eprintln!("skipped: no arm64 image in {}", dir.display());
    None
}

fn rig_yaml(kernel: &Path) -> String {
    format!(
        r#"
lock_dir: locks
boards_dir: {boards}
places:
  - name: ci
    boards:
      - name: qemu-arm64
        board: qemu-virt-arm64
        bootloader: direct-kernel
        power:
          qemu: {{ kernel: {kernel} }}
        console: qemu
        storage:
          qemu-disk: {{ path: state.img, size_mib: 64 }}
        network: qemu
        boot_timeout_s: 120
"#,
        boards = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../boards")
            .display(),
        kernel = kernel.display(),
    )
}

#[test]
fn smoke_and_reboot_loop_on_qemu_arm64() {
    let Some((kernel, initramfs)) = arm64_images() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rig = dir.path().join("rig.yaml");
    std::fs::write(&rig, rig_yaml(&kernel)).unwrap();

    for (suite, case) in [
        (Suite::Smoke, "smoke"),
        (Suite::RebootLoop(3), "reboot-loop-3"),
    ] {
        let started = Instant::now();
        let artifacts = dir.path().join(case);
        let options = RunOptions {
            rig: rig.clone(),
            board: "qemu-arm64".into(),
            suite,
            image: initramfs.clone(),
            artifacts: artifacts.clone(),
            junit: Some(dir.path().join(format!("{case}.xml"))),
            report: Some(dir.path().join(format!("{case}.md"))),
        };
        let result = run(&options, Arc::new(NoProgress)).expect("the rig is usable");
        let report = std::fs::read_to_string(dir.path().join(format!("{case}.md"))).unwrap();
        eprintln!("{suite} took {:.1?}\n{report}", started.elapsed());
        let case_result = &result.cases[0];
        assert_eq!(case_result.outcome, Outcome::Passed, "{report}");

        let steps: Vec<&str> = case_result.steps.iter().map(|s| s.name.as_str()).collect();
        for state in ["flashed", "powered", "bootloader", "kernel", "maintenance"] {
            assert!(steps.contains(&state), "{state} missing from {steps:?}");
        }
        let junit = std::fs::read_to_string(dir.path().join(format!("{case}.xml"))).unwrap();
        assert!(junit.contains("tests=\"1\" failures=\"0\""), "{junit}");
        let serial = std::fs::read_to_string(artifacts.join(case).join("serial.log")).unwrap();
        let api = std::fs::read_to_string(artifacts.join(case).join("api.log")).unwrap();
        assert!(serial.contains("Linux version"), "serial artifact");
        assert!(api.contains("Version"), "API transcript artifact: {api}");
        assert!(
            !dir.path().join("locks/qemu-arm64.lock").exists(),
            "the board lock is released"
        );
        if let Suite::RebootLoop(n) = suite {
            let reboots = steps.iter().filter(|s| **s == "reboot").count();
            assert_eq!(reboots, n as usize, "{steps:?}");
            let boots = serial.matches("Booting Linux on physical CPU").count();
            assert_eq!(
                boots,
                n as usize + 1,
                "one boot plus {n} reboots on the console"
            );
            assert!(api.contains("Reboot"), "{api}");
            assert!(steps.contains(&"ready"));
        }
    }
}
