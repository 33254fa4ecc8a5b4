//! Resolves virtio modules against the real Debian arm64 kernel's module tree.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use talos_images::{InitramfsSpec, ModulesSpec, build};

const DEBS_DIR: &str = "/work/cache/debs";

fn arm64_kernel_deb() -> Option<PathBuf> {
    let mut debs: Vec<PathBuf> = fs::read_dir(DEBS_DIR)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("linux-image-") && n.ends_with("_arm64.deb"))
        })
        .collect();
    debs.sort();
    debs.pop()
}

/// Unpacks the deb's module tree once under target/tmp and runs depmod on it.
fn modules_dir(deb: &Path) -> (PathBuf, String) {
    let stem = deb
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("utf-8 deb name");
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("talos-images-{stem}"));
    if !root.join(".complete").exists() {
        let staging = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("staging dir");
        let status = Command::new("dpkg")
            .arg("-x")
            .arg(deb)
            .arg(staging.path())
            .status()
            .expect("run dpkg -x");
        assert!(status.success(), "dpkg -x {} failed", deb.display());
        let kver = only_kernel_release(staging.path());
        let status = Command::new("depmod")
            .arg("-b")
            .arg(staging.path())
            .arg(&kver)
            .status()
            .expect("run depmod");
        assert!(status.success(), "depmod failed");
        fs::write(staging.path().join(".complete"), "").expect("marker");
        let staged = staging.keep();
        // A concurrent run may have won the race; its tree is as good as ours.
        if fs::rename(&staged, &root).is_err() {
            fs::remove_dir_all(&staged).expect("remove the losing staging tree");
        }
    }
    let kver = only_kernel_release(&root);
    (root.join("lib/modules").join(&kver), kver)
}

fn only_kernel_release(root: &Path) -> String {
    let mut releases: Vec<String> = fs::read_dir(root.join("lib/modules"))
        .expect("lib/modules exists")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .into_string()
                .expect("utf-8")
        })
        .collect();
    assert_eq!(releases.len(), 1, "one kernel per deb: {releases:?}");
    releases.remove(0)
}

#[test]
fn virtio_closure_on_debian_arm64() {
    let Some(deb) = arm64_kernel_deb() else {
        eprintln!("skipped: no linux-image-*_arm64.deb in {DEBS_DIR}");
        return;
    };
    let (modules_dir, kver) = modules_dir(&deb);
    let tmp = tempfile::tempdir().expect("tempdir");
    let init = tmp.path().join("init");
    fs::write(&init, b"init").expect("init");
    let wanted = [
        "virtio_net",
        "virtio_blk",
        "virtio_console",
        "virtio_pci",
        "virtio-mmio",
    ];
    let spec = InitramfsSpec {
        init,
        kernel_modules: Some(ModulesSpec {
            modules_dir: modules_dir.clone(),
            kernel_release: kver.clone(),
            wanted: wanted.iter().map(|s| s.to_string()).collect(),
            on_demand: Vec::new(),
        }),
        extra_files: vec![],
        mtime: 0,
    };
    let image = build(&spec).expect("build");
    let order = &image.manifest.module_load_order;
    let position = |name: &str| {
        order
            .iter()
            .position(|m| m == name)
            .unwrap_or_else(|| panic!("{name} not in {order:?}"))
    };
    for dep in [
        "net_failover",
        "failover",
        "virtio_pci_legacy_dev",
        "virtio_pci_modern_dev",
    ] {
        position(dep);
    }
    assert_eq!(order.len(), 9, "{order:?}");
    assert!(position("failover") < position("net_failover"));
    assert!(position("net_failover") < position("virtio_net"));
    assert!(position("virtio_pci_legacy_dev") < position("virtio_pci"));
    assert!(position("virtio_pci_modern_dev") < position("virtio_pci"));
    let ko = format!("lib/modules/{kver}/kernel/drivers/net/virtio_net.ko");
    assert!(image.manifest.paths.contains(&ko), "{ko} missing");
    assert!(image.manifest.builtin_modules.is_empty());

    // virtio and virtio_ring are built into the arm64 kernel.
    let mut with_builtin = spec.clone();
    if let Some(modules) = &mut with_builtin.kernel_modules {
        modules.wanted.push("virtio_ring".into());
    }
    let image = build(&with_builtin).expect("build with a built-in module");
    assert_eq!(image.manifest.builtin_modules, ["virtio_ring"]);
    assert_eq!(&image.manifest.module_load_order, order);
    eprintln!(
        "arm64 virtio initramfs: {} bytes compressed, load order {order:?}",
        image.bytes.len()
    );
}
