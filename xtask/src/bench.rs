//! `cargo xtask bench`: boot and size figures, as medians over several boots, in one table.

use std::time::{Duration, Instant};

use anyhow::Context;
use talos_client::TlsMode;
use talos_machinery::Arch;

use crate::{boot, deps, image, node_build, paths};

pub fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

struct Row {
    arch: Arch,
    api: Duration,
    floor: Duration,
    rss_kib: u64,
    initramfs: u64,
    machined: u64,
}

fn measure(arch: Arch, runs: usize) -> anyhow::Result<Row> {
    let node = image::build(arch, None)?;
    let floor_init = node_build::build(arch, "floor-init")?;
    let floor = image::pack(&node.board, &floor_init, "floor-initramfs.zst")?;
    let out = paths::out(arch);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut api_times = Vec::new();
    let mut floor_times = Vec::new();
    let mut rss = Vec::new();
    for run in 0..runs {
        let disk = out.join("bench-state.img");
        boot::fresh_state_disk(&disk)?;
        let board = boot::launch(
            &node,
            Some(disk),
            Vec::new(),
            out.join(format!("bench-console-{run}.log")),
            true,
        )?;
        let (client, took) = runtime.block_on(boot::wait_for_api(
            &board,
            TlsMode::Insecure,
            Duration::from_secs(300),
        ))?;
        api_times.push(took);
        let processes = runtime
            .block_on(client.machine().processes(client.request(())))
            .context("Processes")?
            .into_inner();
        let pid1 = processes
            .messages
            .first()
            .and_then(|m| m.processes.iter().find(|p| p.pid == 1))
            .context("PID 1 missing from Processes")?;
        rss.push(pid1.resident_memory / 1024);
        board.power_off_hard()?;

        let started = Instant::now();
        let bare = boot::launch(
            &floor,
            None,
            Vec::new(),
            out.join(format!("bench-floor-{run}.log")),
            true,
        )?;
        bare.wait_exit(Duration::from_secs(300))
            .context("the floor init did not power off")?;
        floor_times.push(started.elapsed());
        eprintln!(
            "{arch} run {}: API after {took:.2?}, floor {:.2?}",
            run + 1,
            started.elapsed()
        );
    }
    rss.sort_unstable();
    Ok(Row {
        arch,
        api: median(api_times),
        floor: median(floor_times),
        rss_kib: rss[rss.len() / 2],
        initramfs: std::fs::metadata(&node.initramfs)?.len(),
        machined: std::fs::metadata(&node.init_binary)?.len(),
    })
}

pub fn run(runs: usize) -> anyhow::Result<()> {
    deps::ensure_if_missing()?;
    let rows: Vec<Row> = Arch::ALL
        .into_iter()
        .map(|arch| measure(arch, runs))
        .collect::<anyhow::Result<_>>()?;
    println!("\nBoot benchmark (QEMU TCG, {runs} boots each, medians)\n");
    println!(
        "| arch | QEMU start → first API answer | floor: bare init to power-off | ratio | machined RSS after boot | initramfs (zstd) | machined binary |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {:.2} s | {:.2} s | {:.2}× | {} KiB | {} KiB | {} KiB |",
            r.arch,
            r.api.as_secs_f64(),
            r.floor.as_secs_f64(),
            r.api.as_secs_f64() / r.floor.as_secs_f64(),
            r.rss_kib,
            r.initramfs / 1024,
            r.machined / 1024
        );
    }
    println!("\nConfig benchmark\n");
    println!("| metric | value |");
    println!("|---|---|");
    for (metric, value) in crate::bench_config::rows()? {
        println!("| {metric} | {value} |");
    }
    Ok(())
}
