//! Every overlay compiles cleanly, applies to the Debian kernel's Pi device trees, and every
//! overlay a board names exists.

use std::path::{Path, PathBuf};
use std::process::Command;

use talos_dtb::{DtbError, compile, parse_overlay, sources};

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

#[test]
fn overlays_apply_to_the_debian_pi_device_trees() {
    let cache = std::env::var_os("TALOS_RS_CACHE").map_or_else(
        || {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                .join(".cache/talos-rs")
        },
        PathBuf::from,
    );
    let root = cache.join("kernels/arm64");
    let Ok(release) = std::fs::read_to_string(root.join("release")) else {
        println!("skipped: no arm64 kernel in {}", root.display());
        return;
    };
    if !have_dtc() {
        println!("skipped: no dtc/fdtoverlay (Debian package device-tree-compiler)");
        return;
    }
    let broadcom = root
        .join("usr/lib")
        .join(format!("linux-image-{}", release.trim()))
        .join("broadcom");
    let tmp = tempfile::tempdir().expect("tempdir");
    let compiled: Vec<PathBuf> = sources(&overlay_dir())
        .expect("sources")
        .iter()
        .map(|(name, source)| {
            let out = tmp.path().join(format!("{name}.dtbo"));
            compile(source, &out).expect(name);
            out
        })
        .collect();
    for base in [
        "bcm2837-rpi-3-b",
        "bcm2837-rpi-3-b-plus",
        "bcm2837-rpi-zero-2-w",
        "bcm2711-rpi-4-b",
        "bcm2711-rpi-400",
        "bcm2711-rpi-cm4-io",
    ] {
        let merged = tmp.path().join(format!("{base}.dtb"));
        let status = Command::new("fdtoverlay")
            .arg("-i")
            .arg(broadcom.join(format!("{base}.dtb")))
            .arg("-o")
            .arg(&merged)
            .args(&compiled)
            .status()
            .expect("fdtoverlay runs");
        assert!(status.success(), "overlays do not apply to {base}");
        let get = |node: &str, prop: &str| {
            let out = Command::new("fdtget")
                .arg(&merged)
                .args([node, prop])
                .output()
                .expect("fdtget");
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        assert_eq!(
            get("/soc/serial@7e201000/bluetooth", "status"),
            "disabled",
            "{base}"
        );
        assert_eq!(get("/soc/mmc@7e300000", "status"), "disabled", "{base}");
        assert_eq!(get("/soc/i2c@7e804000", "status"), "okay", "{base}");
        assert_eq!(get("/chosen", "stdout-path"), "serial0:115200n8", "{base}");
    }
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
    assert!(reason(&header).contains("totalsize 41"));
    assert!(reason(&[0xd0, 0x0d]).contains("too short"));
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
