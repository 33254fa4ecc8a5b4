//! Disk image figures per board: build time (median), raw and xz sizes, next to upstream's.

use std::time::{Duration, Instant};

use crate::bench::median;
use crate::{disk, paths};

/// Upstream's raw metal image since Talos 1.11: 1246 MiB base plus 1000 MiB for the larger
/// BOOT partition (talos-facts §8); SBC profiles use the same base.
const UPSTREAM_RAW_MIB: u64 = 2246;

/// The boards and boot chains the table covers.
const IMAGES: &[(&str, &str)] = &[
    ("qemu-virt-arm64", "u-boot"),
    ("qemu-virt-arm64", "uefi"),
    ("generic-arm64", "uefi"),
    ("qemu-amd64", "uefi"),
    ("generic-amd64", "uefi"),
    ("rpi_generic", "u-boot"),
    ("rockpi4", "u-boot"),
    ("pine64", "u-boot"),
];

pub struct ImageRow {
    pub board: String,
    pub chain: String,
    pub build: Duration,
    pub xz: Duration,
    pub raw_mib: u64,
    pub xz_mib: f64,
}

pub fn rows(runs: usize) -> anyhow::Result<Vec<ImageRow>> {
    let mut rows = Vec::new();
    for (name, chain) in IMAGES {
        let board = talos_boards::find(&paths::boards(), name)?;
        let system = disk::system(&board, crate::image::DEFAULT_VERSION)?;
        let mut builds = Vec::new();
        let mut built = None;
        for _ in 0..runs {
            let started = Instant::now();
            built = Some(disk::build(&board, Some(chain), &system)?);
            builds.push(started.elapsed());
        }
        let image = built.ok_or_else(|| anyhow::anyhow!("no runs"))?;
        let started = Instant::now();
        let compressed = disk::compress(&image.path)?;
        let xz = started.elapsed();
        rows.push(ImageRow {
            board: (*name).to_owned(),
            chain: (*chain).to_owned(),
            build: median(builds),
            xz,
            raw_mib: std::fs::metadata(&image.path)?.len() >> 20,
            xz_mib: std::fs::metadata(&compressed)?.len() as f64 / f64::from(1 << 20),
        });
    }
    Ok(rows)
}

pub fn print(rows: &[ImageRow], runs: usize) {
    println!("\nDisk images (median of {runs} builds; xz once, -6, 2 threads)\n");
    println!("| board | boot chain | build | metal raw | xz | xz time | upstream metal raw |");
    println!("|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {:.2} s | {} MiB | {:.1} MiB | {:.1} s | {UPSTREAM_RAW_MIB} MiB ({:.1}× ours) |",
            r.board,
            r.chain,
            r.build.as_secs_f64(),
            r.raw_mib,
            r.xz_mib,
            r.xz.as_secs_f64(),
            UPSTREAM_RAW_MIB as f64 / r.raw_mib as f64
        );
    }
}
