//! Dependencies between our crates point one way: down to proto and machinery. Reads
//! `cargo metadata` and fails on any edge not listed here.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Which of our crates each crate may depend on (normal, dev or build dependencies).
const ALLOWED: &[(&str, &[&str])] = &[
    ("talos-proto", &[]),
    ("talos-machinery", &[]),
    ("talos-node-sys", &[]),
    (
        "machined",
        &[
            "talos-proto",
            "talos-machinery",
            "talos-node-sys",
            "talos-oci",
            "talos-disk",
            // Applies BoardConfig overlays to the DTBs of U-Boot boards.
            "talos-dtb",
        ],
    ),
    ("floor-init", &["talos-node-sys"]),
    ("talos-client", &["talos-proto", "talos-machinery"]),
    (
        "talosctl",
        &[
            "talos-client",
            "talos-proto",
            "talos-machinery",
            "talos-boards",
            "talos-oci",
            "talos-images",
        ],
    ),
    ("talos-boards", &["talos-machinery"]),
    // Its tests read the boards; the library itself depends on none of ours.
    ("talos-dtb", &["talos-machinery", "talos-boards"]),
    ("talos-kernel", &[]),
    ("talos-oci", &[]),
    // The on-disk contract (GPT, META, boot slots), shared by the image builder and the node.
    ("talos-disk", &[]),
    (
        "talos-images",
        &["talos-machinery", "talos-boards", "talos-disk"],
    ),
    (
        "talos-hil",
        &[
            "talos-client",
            "talos-proto",
            "talos-machinery",
            "talos-boards",
            "talos-images",
            "talos-oci",
            // Tests only: they edit disk images' GPT and check their device trees.
            "talos-disk",
            "talos-dtb",
        ],
    ),
    // The gpio-sim guest's /init: the relay driver under test, nothing else.
    ("gpio-sim-check", &["talos-hil"]),
    (
        "xtask",
        &[
            "talos-client",
            "talos-machinery",
            "talos-boards",
            "talos-images",
            "talos-hil",
            "talos-kernel",
            "talos-dtb",
            "talos-proto",
            "talos-oci",
            "talos-disk",
        ],
    ),
];

/// Crates under node/: only other node crates may depend on them.
const NODE_CRATES: &[&str] = &["talos-node-sys", "machined", "floor-init"];

fn workspace_edges() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let ours: BTreeSet<String> = packages
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d["name"].as_str())
                .filter(|d| ours.contains(*d))
                .map(str::to_owned)
                .collect();
            (p["name"].as_str().unwrap_or_default().to_owned(), deps)
        })
        .collect()
}

#[test]
fn every_workspace_crate_has_a_rule() {
    let edges = workspace_edges();
    for name in edges.keys() {
        assert!(
            ALLOWED.iter().any(|(n, _)| n == name),
            "crate {name} has no entry in ALLOWED: decide what it may depend on"
        );
    }
}

#[test]
fn dependencies_point_down() {
    let mut violations = Vec::new();
    for (name, deps) in workspace_edges() {
        let allowed = ALLOWED
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(&[][..], |(_, a)| *a);
        for dep in deps {
            if !allowed.contains(&dep.as_str()) {
                violations.push(format!("{name} → {dep}"));
            }
            if NODE_CRATES.contains(&dep.as_str()) && !NODE_CRATES.contains(&name.as_str()) {
                violations.push(format!(
                    "{name} → {dep} (nothing outside node/ may depend on node/)"
                ));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "forbidden dependency edges:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_contract_crates_depend_on_no_crate_of_ours() {
    let edges = workspace_edges();
    for leaf in ["talos-proto", "talos-machinery"] {
        assert_eq!(
            edges.get(leaf).map(BTreeSet::len),
            Some(0),
            "{leaf} must not depend on our crates"
        );
    }
}
