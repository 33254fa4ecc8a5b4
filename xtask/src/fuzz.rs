//! `cargo xtask fuzz --seconds N`: runs each cargo-fuzz target (fuzz/: `decode_validate` for
//! machine configs, `fdt_overlay` for device trees) for N seconds on the nightly toolchain,
//! installing cargo-fuzz and nightly when missing, and reports executions and crashes. Fails when
//! libFuzzer found a crash, leak, timeout or OOM.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// Each target and the directories it starts from besides its corpus (libFuzzer only reads
/// directories after the first): for configs the seeds and the golden configs, which cover
/// every section and the upstream v1.14 kinds; for device trees our compiled overlays.
fn targets() -> [(&'static str, Vec<PathBuf>); 2] {
    let root = crate::paths::root();
    [
        (
            "decode_validate",
            vec![
                root.join("fuzz/seeds"),
                root.join("machinery/src/config/testdata"),
            ],
        ),
        ("fdt_overlay", vec![root.join("out/dtb")]),
    ]
}

/// Installs what `cargo +nightly fuzz` needs, unless present.
fn ensure_tools() -> anyhow::Result<()> {
    if crate::cmd::output(Command::new("rustup").args(["run", "nightly", "rustc", "--version"]))
        .is_err()
    {
        crate::cmd::run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    if crate::cmd::output(Command::new("cargo").args(["fuzz", "--version"])).is_err() {
        crate::cmd::run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}

/// What libFuzzer reported.
#[derive(Debug, Default, PartialEq, Eq)]
struct Stats {
    executions: Option<u64>,
    crashes: Vec<String>,
}

/// Picks executions (`stat::number_of_executed_units`, else the last `#N` status line) and the
/// artifact files written for crashes, leaks, timeouts and OOMs.
fn scan_line(line: &str, stats: &mut Stats) {
    if let Some(rest) = line.strip_prefix("stat::number_of_executed_units:") {
        stats.executions = rest.trim().parse().ok().or(stats.executions);
    } else if let Some(rest) = line.strip_prefix('#') {
        let count = rest.split_whitespace().next().unwrap_or_default();
        if let Ok(n) = count.parse() {
            stats.executions = Some(n);
        }
    }
    if let Some((_, path)) = line.split_once("Test unit written to ") {
        stats.crashes.push(path.trim().to_owned());
    }
}

/// Runs every target for `seconds` and prints executions and crashes.
pub fn run(seconds: u64) -> anyhow::Result<()> {
    ensure_tools()?;
    crate::dtb::build()?;
    for (target, seeds) in targets() {
        run_target(target, &seeds, seconds)?;
    }
    Ok(())
}

fn run_target(target: &str, seeds: &[PathBuf], seconds: u64) -> anyhow::Result<()> {
    let fuzz_dir = crate::paths::root().join("fuzz");
    let corpus = fuzz_dir.join("corpus").join(target);
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let mut child = Command::new("cargo")
        .current_dir(&fuzz_dir)
        .args(["+nightly", "fuzz", "run", target])
        .arg(&corpus)
        .args(seeds)
        .args([
            "--",
            &format!("-max_total_time={seconds}"),
            "-rss_limit_mb=2048",
            "-timeout=10",
            "-print_final_stats=1",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .context("starting cargo +nightly fuzz run")?;
    let mut stats = Stats::default();
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines() {
            let line = line.context("reading libFuzzer output")?;
            eprintln!("{line}");
            scan_line(&line, &mut stats);
        }
    }
    let status = child.wait().context("waiting for cargo fuzz")?;
    let executions = stats
        .executions
        .map_or_else(|| "unknown".to_owned(), |n| n.to_string());
    println!(
        "fuzz {target}: {seconds} s, {executions} executions, {} crashes",
        stats.crashes.len()
    );
    for crash in &stats.crashes {
        println!("  crash input: {crash}");
    }
    if !stats.crashes.is_empty() || !status.success() {
        bail!(
            "fuzzing {target} failed ({status}); reproduce with `cargo +nightly fuzz run {target} <input>` in fuzz/"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_libfuzzer_output() {
        let mut stats = Stats::default();
        for line in [
            "#2\tINITED cov: 10 ft: 11 corp: 1/1b exec/s: 0 rss: 30Mb",
            "#65536\tpulse  cov: 900 ft: 2000 corp: 80/3Kb exec/s: 21845 rss: 60Mb",
            "==1234== ERROR: libFuzzer: deadly signal",
            "artifact_prefix='/w/fuzz/artifacts/decode_validate/'; Test unit written to /w/fuzz/artifacts/decode_validate/crash-abc",
            "stat::number_of_executed_units: 70000",
        ] {
            scan_line(line, &mut stats);
        }
        assert_eq!(
            stats,
            Stats {
                executions: Some(70000),
                crashes: vec!["/w/fuzz/artifacts/decode_validate/crash-abc".into()],
            }
        );
    }
}
