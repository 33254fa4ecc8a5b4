//! Upgrade and rollback times from the rig's `upgrade-rollback` suite on the arm64 QEMU board
//! (UEFI and U-Boot boot chains): request → API answering on the new version, and request of
//! a broken upgrade → API answering on the old version again after the automatic fallback.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use talos_hil::strategy::StepRecord;
use talos_machinery::Arch;
use talos_oci::LocalRegistry;

use crate::bench::median;
use crate::paths;

const BOARD: &str = "qemu-virt-arm64";
const GOOD: &str = "v2.0.0";
const BROKEN: &str = "v3.0.0";

pub struct UpgradeRow {
    pub chain: &'static str,
    pub upgrade: Duration,
    pub rollback: Duration,
}

/// From the start of the step that sends the upgrade to the end of the version step after it.
fn span(steps: &[StepRecord], image: &str, until: &str) -> anyhow::Result<Duration> {
    let start = steps
        .iter()
        .position(|s| s.name == format!("upgrade to {image}"))
        .with_context(|| format!("no step upgrading to {image}"))?;
    let end = steps[start..]
        .iter()
        .find(|s| s.name == until)
        .with_context(|| format!("no step {until:?} after upgrading to {image}"))?;
    Ok(end.started + end.duration - steps[start].started)
}

async fn publish(registry: &LocalRegistry, version: &str) -> anyhow::Result<String> {
    let dir = paths::root()
        .join("out/installers")
        .join(Arch::Arm64.as_str())
        .join(version);
    let name = format!("talos/installer:{version}");
    registry
        .push_layout(&dir, &name)
        .await
        .with_context(|| format!("{}: run `cargo xtask test-inputs`", dir.display()))?;
    Ok(registry.guest_reference(&name))
}

fn one_run(chain: &'static str, dir: &std::path::Path) -> anyhow::Result<(Duration, Duration)> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let registry = LocalRegistry::start(&dir.join("registry"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (good, broken) = runtime.block_on(async {
        anyhow::Ok((
            publish(&registry, GOOD).await?,
            publish(&registry, BROKEN).await?,
        ))
    })?;
    let bootloader = if chain == "uefi" { "efi" } else { "u-boot" };
    let rig = format!(
        "lock_dir: locks\nboards_dir: {}\nplaces:\n  - name: bench\n    boards:\n      - name: board\n        board: {BOARD}\n        bootloader: {bootloader}\n        power:\n          qemu: {{ firmware: {chain} }}\n        console: qemu\n        storage:\n          qemu-disk: {{ path: disk.raw }}\n        network: qemu\n        boot_timeout_s: 300\n",
        paths::boards().display()
    );
    std::fs::write(dir.join("rig.yaml"), rig)?;
    let options = talos_hil::runner::RunOptions {
        rig: dir.join("rig.yaml"),
        board: "board".into(),
        suite: "upgrade-rollback"
            .parse()
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        image: paths::root()
            .join("out/images")
            .join(format!("{BOARD}-{chain}"))
            .join("metal-arm64.raw"),
        artifacts: dir.join("artifacts"),
        junit: None,
        report: None,
    };
    let upgrades = talos_hil::suites::Upgrades {
        image: Some(good.clone()),
        broken: Some(broken.clone()),
        ..Default::default()
    };
    let result = talos_hil::runner::run_with_upgrades(
        &options,
        &upgrades,
        Arc::new(talos_hil::strategy::NoProgress),
    )?;
    anyhow::ensure!(
        result.passed(),
        "upgrade-rollback failed on {chain}; see {}",
        dir.join("artifacts").display()
    );
    let steps = &result.cases.first().context("no case")?.steps;
    Ok((
        span(steps, &good, "upgraded")?,
        span(steps, &broken, "rolled back")?,
    ))
}

pub fn rows(runs: usize) -> anyhow::Result<Vec<UpgradeRow>> {
    let mut rows = Vec::new();
    for chain in ["uefi", "u-boot"] {
        let dir = paths::out(Arch::Arm64).join(format!("bench-upgrade-{chain}"));
        let (mut ups, mut backs) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let (up, back) = one_run(chain, &dir)?;
            ups.push(up);
            backs.push(back);
        }
        rows.push(UpgradeRow {
            chain,
            upgrade: median(ups),
            rollback: median(backs),
        });
    }
    Ok(rows)
}

pub fn print(rows: &[UpgradeRow], runs: usize) {
    println!(
        "\nA/B upgrades on the arm64 QEMU board (median of {runs} runs of the rig's upgrade-rollback suite)\n"
    );
    println!(
        "| boot chain | upgrade: request → API on the new version | broken upgrade: request → API back on the old version |"
    );
    println!("|---|---|---|");
    for r in rows {
        println!(
            "| {} | {:.1} s | {:.1} s |",
            r.chain,
            r.upgrade.as_secs_f64(),
            r.rollback.as_secs_f64()
        );
    }
}
