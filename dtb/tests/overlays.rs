//! Every overlay compiles cleanly, applies to the Debian kernel's device trees of its boards, and every
//! overlay a board names exists.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use talos_dtb::fdt::Fdt;
use talos_dtb::{DtbError, compile, parse_overlay, sources};

use common::kernel_dtb_dir;

fn overlay_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("overlays")
}

fn have_dtc() -> bool {
    Command::new("dtc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn every_overlay_compiles_into_a_valid_dtbo() {
    if !have_dtc() {
        println!("skipped: no dtc (Debian package device-tree-compiler)");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let found = sources(&overlay_dir()).expect("overlay dir");
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "disable-bt",
            "disable-wifi",
            "gpio-line-enable",
            "i2c1-enable",
            "pine64-uart2-enable",
            "rockpi4-i2c7-enable",
            "uart-console"
        ]
    );
    for (name, source) in &found {
        let overlay = compile(source, &tmp.path().join(format!("{name}.dtbo"))).expect(name);
        assert!(
            overlay.fragments.iter().any(|f| f.starts_with("fragment@")),
            "{overlay:?}"
        );
        assert!(overlay.version >= 17);
    }
}

/// Every DTB of every board that applies overlays takes each overlay written for its SoC
/// (fdtoverlay agrees), and at least one overlay fits each such board.
#[test]
fn overlays_apply_to_the_debian_device_trees_of_their_boards() {
    let Some(dtb_dir) = kernel_dtb_dir() else {
        return;
    };
    if !have_dtc() {
        println!("skipped: no dtc/fdtoverlay (Debian package device-tree-compiler)");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let compiled: Vec<(PathBuf, Fdt)> = sources(&overlay_dir())
        .expect("sources")
        .iter()
        .map(|(name, source)| {
            let out = tmp.path().join(format!("{name}.dtbo"));
            compile(source, &out).expect(name);
            let tree = Fdt::parse(&std::fs::read(&out).expect("dtbo")).expect(name);
            (out, tree)
        })
        .collect();
    let boards = talos_boards::load_all(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../boards"))
        .expect("boards");
    let mut checked = 0;
    for board in boards.iter().filter(|b| b.applies_overlays()) {
        for file in &board.dtb.as_ref().expect("DTBs").files {
            let base_path = dtb_dir.join(file);
            let base = Fdt::parse(&std::fs::read(&base_path).expect("DTB")).expect(file);
            let fitting: Vec<&(PathBuf, Fdt)> =
                compiled.iter().filter(|(_, o)| base.fits(o)).collect();
            assert!(
                !fitting.is_empty(),
                "{}: no overlay fits {file}",
                board.name
            );
            let merged_path = tmp.path().join("merged.dtb");
            let status = Command::new("fdtoverlay")
                .arg("-i")
                .arg(&base_path)
                .arg("-o")
                .arg(&merged_path)
                .args(fitting.iter().map(|(path, _)| path))
                .status()
                .expect("fdtoverlay runs");
            assert!(status.success(), "overlays do not apply to {file}");
            let merged = Fdt::parse(&std::fs::read(&merged_path).expect("merged")).expect(file);
            // Each status an overlay sets is in the merged tree.
            for (path, overlay) in &fitting {
                for fragment in &overlay.root.children {
                    let (Some(target), Some(wanted)) = (
                        fragment.property_str("target-path"),
                        fragment
                            .child("__overlay__")
                            .and_then(|o| o.property_str("status")),
                    ) else {
                        continue;
                    };
                    let got = merged.node(target).and_then(|n| n.property_str("status"));
                    assert_eq!(got, Some(wanted), "{file} + {}", path.display());
                }
            }
            if file.starts_with("broadcom/") {
                let chosen = merged.node("/chosen").expect("chosen");
                assert_eq!(chosen.property_str("stdout-path"), Some("serial0:115200n8"));
            }
            checked += 1;
        }
    }
    assert!(checked >= 11, "only {checked} device trees checked");
}

#[test]
fn every_overlay_a_board_names_exists() {
    let boards = talos_boards::load_all(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../boards"))
        .expect("boards");
    let names: Vec<String> = sources(&overlay_dir())
        .expect("sources")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for board in &boards {
        for overlay in &board.overlays {
            assert!(
                names.contains(overlay),
                "{}: no dtb/overlays/{overlay}.dts",
                board.name
            );
        }
    }
    assert!(boards.iter().any(|b| !b.overlays.is_empty()));
}

#[test]
fn broken_blobs_are_refused_with_the_reason() {
    let path = Path::new("x.dtbo");
    let reason = |bytes: &[u8]| match parse_overlay(path, bytes) {
        Err(DtbError::Invalid { reason, .. }) => reason,
        other => panic!("expected Invalid, got {other:?}"),
    };
    assert!(reason(&[0u8; 64]).contains("magic 0x00000000"));
    let mut header = vec![0u8; 40];
    header[..4].copy_from_slice(&0xd00d_feedu32.to_be_bytes());
    header[4..8].copy_from_slice(&41u32.to_be_bytes());
    header[20..24].copy_from_slice(&17u32.to_be_bytes());
    header[24..28].copy_from_slice(&16u32.to_be_bytes());
    let truncated = reason(&header);
    assert!(truncated.contains("41"), "{truncated}");
    let short = reason(&[0xd0, 0x0d]);
    assert!(short.contains("short"), "{short}");
}

#[test]
fn a_plain_device_tree_is_not_an_overlay_and_bad_sources_fail() {
    if !have_dtc() {
        println!("skipped: no dtc");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let plain = tmp.path().join("plain.dts");
    std::fs::write(&plain, "/dts-v1/;\n/ { model = \"x\"; };\n").expect("write");
    match compile(&plain, &tmp.path().join("plain.dtb")) {
        Err(DtbError::Invalid { reason, .. }) => {
            assert!(reason.contains("__overlay__"), "{reason}")
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    let broken = tmp.path().join("broken.dts");
    std::fs::write(&broken, "/dts-v1/;\n/plugin/;\n/ { fragment@0 { ").expect("write");
    assert!(matches!(
        compile(&broken, &tmp.path().join("b.dtbo")),
        Err(DtbError::Compile { .. })
    ));
}
