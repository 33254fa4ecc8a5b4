//! `cargo xtask bench`: boot, memory, API and size figures as medians over several boots, and
//! the config benchmarks, in tables.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use talos_client::{Client, TlsMode};
use talos_machinery::Arch;
use talos_machinery::config::{GenerateInput, generate};
use talos_machinery::secrets::SecretsBundle;
use talos_proto::machine::LogsRequest;
use talos_proto::machine::apply_configuration_request::Mode as ApplyMode;

use crate::{boot, deps, image, node_build, paths};

pub fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn median_u64(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values[values.len() / 2]
}

struct Row {
    arch: Arch,
    api: Duration,
    kernel_to_api: Duration,
    floor: Duration,
    apply: Duration,
    rss_idle_kib: u64,
    rss_loaded_kib: u64,
    initramfs: u64,
    machined: u64,
}

async fn pid1_rss_kib(client: &Client) -> anyhow::Result<u64> {
    let reply = client
        .machine()
        .processes(client.request(()))
        .await
        .context("Processes")?
        .into_inner();
    let pid1 = reply
        .messages
        .first()
        .and_then(|m| m.processes.iter().find(|p| p.pid == 1))
        .context("PID 1 missing from Processes")?;
    Ok(pid1.resident_memory / 1024)
}

/// 1,000 Version calls, then 10 `logs -f` streams held open; returns the RSS with the streams open.
async fn rss_under_load(client: &Client) -> anyhow::Result<u64> {
    for _ in 0..1000 {
        client.version().await.context("Version")?;
    }
    let mut streams = Vec::new();
    for _ in 0..10 {
        let request = LogsRequest {
            namespace: "system".into(),
            id: "machined".into(),
            driver: 0,
            follow: true,
            tail_lines: 10,
        };
        let mut stream = client
            .machine()
            .logs(client.request(request))
            .await
            .context("Logs")?
            .into_inner();
        stream.message().await.context("Logs stream")?;
        streams.push(stream);
    }
    let rss = pid1_rss_kib(client).await?;
    drop(streams);
    Ok(rss)
}

/// `API ready N s after kernel start`, as machined logs it.
fn kernel_to_api(board: &talos_hil::QemuBoard) -> anyhow::Result<Duration> {
    let line = board.wait_for_line("API ready", Duration::from_secs(10))?;
    let seconds: f64 = line
        .split("API ready ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("unexpected line: {line}"))?;
    Ok(Duration::from_secs_f64(seconds))
}

fn measure(arch: Arch, runs: usize) -> anyhow::Result<Row> {
    let node = image::build(arch, None)?;
    let floor_init = node_build::build(arch, "floor-init")?;
    let floor = image::pack(&node.board, &floor_init, "floor-initramfs.zst")?;
    let out = paths::out(arch);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut api, mut kernel, mut floors, mut applies, mut idle, mut loaded) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
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
        api.push(took);
        kernel.push(kernel_to_api(&board)?);
        idle.push(runtime.block_on(pid1_rss_kib(&client))?);
        loaded.push(runtime.block_on(rss_under_load(&client))?);
        let secrets = SecretsBundle::generate(SystemTime::now())?;
        let config = generate(&GenerateInput::new(
            "bench",
            "https://10.0.2.15:6443",
            secrets,
            SystemTime::now(),
        ))?
        .controlplane;
        let started = Instant::now();
        runtime
            .block_on(client.apply_configuration(config.into_bytes(), ApplyMode::Auto, false))
            .context("ApplyConfiguration")?;
        applies.push(started.elapsed());
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
        floors.push(started.elapsed());
        eprintln!(
            "{arch} run {}: API after {took:.2?}, floor {:.2?}",
            run + 1,
            started.elapsed()
        );
    }
    Ok(Row {
        arch,
        api: median(api),
        kernel_to_api: median(kernel),
        floor: median(floors),
        apply: median(applies),
        rss_idle_kib: median_u64(idle),
        rss_loaded_kib: median_u64(loaded),
        initramfs: std::fs::metadata(&node.initramfs)?.len(),
        machined: std::fs::metadata(&node.init_binary)?.len(),
    })
}

/// The rig's `smoke` suite on the arm64 QEMU board: its total time.
fn smoke_suite() -> anyhow::Result<Duration> {
    let out = paths::out(Arch::Arm64);
    let dir = out.join("bench-rig");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let rig = format!(
        "lock_dir: locks\nboards_dir: {}\nplaces:\n  - name: bench\n    boards:\n      - name: qemu-arm64\n        board: qemu-virt-arm64\n        bootloader: direct-kernel\n        power:\n          qemu: {{ kernel: {} }}\n        console: qemu\n        storage:\n          qemu-disk: {{ path: state.img, size_mib: 64 }}\n        network: qemu\n        boot_timeout_s: 300\n",
        paths::boards().display(),
        out.join("vmlinuz").display()
    );
    std::fs::write(dir.join("rig.yaml"), rig)?;
    let options = talos_hil::runner::RunOptions {
        rig: dir.join("rig.yaml"),
        board: "qemu-arm64".into(),
        suite: "smoke".parse().map_err(|e| anyhow::anyhow!("{e}"))?,
        image: out.join("initramfs.zst"),
        artifacts: dir.join("artifacts"),
        junit: None,
        report: None,
    };
    let started = Instant::now();
    let result = talos_hil::runner::run(&options, Arc::new(talos_hil::strategy::NoProgress))?;
    anyhow::ensure!(
        result.passed(),
        "the smoke suite failed; see {}",
        dir.join("artifacts").display()
    );
    Ok(started.elapsed())
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

pub fn run(runs: usize) -> anyhow::Result<()> {
    deps::ensure_if_missing()?;
    let rows: Vec<Row> = Arch::ALL
        .into_iter()
        .map(|arch| measure(arch, runs))
        .collect::<anyhow::Result<_>>()?;
    let smoke = smoke_suite()?;
    let images = crate::bench_images::rows(runs)?;
    crate::test::inputs()?;
    let upgrades = crate::bench_upgrade::rows(runs)?;
    println!("\nBoot benchmark (QEMU TCG, {runs} boots each, medians)\n");
    println!(
        "| arch | QEMU start → first API answer | kernel start → API ready | floor: bare init to power-off | ratio | apply-config | machined RSS idle | RSS after 1,000 Version + 10 logs -f | initramfs (zstd) | machined binary |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {:.2}× | {:.0} ms | {} KiB | {} KiB | {} KiB | {} KiB |",
            r.arch,
            secs(r.api),
            secs(r.kernel_to_api),
            secs(r.floor),
            r.api.as_secs_f64() / r.floor.as_secs_f64(),
            r.apply.as_secs_f64() * 1000.0,
            r.rss_idle_kib,
            r.rss_loaded_kib,
            r.initramfs / 1024,
            r.machined / 1024
        );
    }
    let arm64 = rows
        .iter()
        .find(|r| r.arch == Arch::Arm64)
        .context("no arm64 row")?;
    println!("\nRig (hil) on the arm64 QEMU board\n");
    println!("| metric | value |");
    println!("|---|---|");
    println!(
        "| smoke suite total (boot, Version, dmesg check, power off) | {} |",
        secs(smoke)
    );
    println!(
        "| rig overhead over a bare boot to the API | {} |",
        secs(smoke.saturating_sub(arm64.api))
    );
    crate::bench_images::print(&images, runs);
    crate::bench_upgrade::print(&upgrades, runs);
    print_config()
}

/// Measures and prints the config benchmarks.
pub fn print_config() -> anyhow::Result<()> {
    let rows = crate::bench_config::rows()?;
    println!("\nConfig benchmark\n");
    println!("| metric | value |");
    println!("|---|---|");
    for (metric, value) in rows {
        println!("| {metric} | {value} |");
    }
    Ok(())
}
