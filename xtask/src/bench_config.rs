//! Config benchmarks for `cargo xtask bench`: decode+validate of a control-plane config, `gen
//! config` wall time, and the peak memory of decoding 1 MiB hostile documents.
//!
//! Peak memory is measured in a fresh process per document: machinery's `decode_peak` example
//! reads the file, decodes and validates it, and prints its own high-water mark (`VmHWM`). The
//! same run on a benign padded 1 MiB config gives the baseline the table subtracts.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Instant, SystemTime};

use anyhow::{Context, bail};
use talos_machinery::codec::MAX_CONFIG_BYTES;
use talos_machinery::config::{Config, GenerateInput, ValidationMode, generate};
use talos_machinery::secrets::SecretsBundle;

const DECODE_RUNS: usize = 300;
const GEN_RUNS: usize = 7;
/// A hostile document may not make one decode grow the process by more than this.
const HOSTILE_PEAK_BOUND_KIB: u64 = 64 * 1024;

/// Builds the `decode_peak` example and returns its path.
fn build_decode_peak(root: &std::path::Path) -> anyhow::Result<PathBuf> {
    let status = Command::new("cargo")
        .current_dir(root)
        .args([
            "build",
            "-q",
            "-p",
            "talos-machinery",
            "--example",
            "decode_peak",
        ])
        .status()
        .context("building the decode_peak example")?;
    if !status.success() {
        bail!("building the decode_peak example failed with {status}");
    }
    Ok(crate::paths::target().join("debug/examples/decode_peak"))
}

/// Runs `decode_peak` on `document`; returns the outcome and peak KiB.
fn decode_peak(
    binary: &std::path::Path,
    dir: &std::path::Path,
    name: &str,
    document: &str,
) -> anyhow::Result<(String, u64)> {
    let file = dir.join(format!("{}.yaml", name.replace(' ', "-")));
    std::fs::write(&file, document).with_context(|| format!("writing {}", file.display()))?;
    let out = Command::new(binary)
        .arg(&file)
        .output()
        .with_context(|| format!("running {}", binary.display()))?;
    let _ = std::fs::remove_file(&file);
    let text = String::from_utf8_lossy(&out.stdout);
    let parsed = text
        .split_once(' ')
        .and_then(|(outcome, kib)| Some((outcome.to_owned(), kib.trim().parse().ok()?)));
    match parsed {
        Some(result) if out.status.success() => Ok(result),
        _ => bail!(
            "decode_peak on the {name} document failed ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Documents built to exhaust a parser, each just under the 1 MiB input limit.
pub fn hostile_documents() -> Vec<(&'static str, String)> {
    let limit = MAX_CONFIG_BYTES - 64;
    let mut deep_flow = "[".repeat(limit / 2);
    deep_flow.push_str(&"]".repeat(limit / 2));

    let mut deep_block = String::from("version: v1alpha1\nmachine:\n");
    let mut depth = 1;
    while deep_block.len() + depth * 2 + 4 < limit {
        deep_block.push_str(&"  ".repeat(depth));
        deep_block.push_str("a:\n");
        depth += 1;
    }

    // Each level refers to the previous one nine times: 9^12 nodes if expanded; a comment pads
    // the document to the limit.
    let mut aliases = String::from(
        "version: v1alpha1\nmachine:\n  sysctls:\n    a0: &a0 [x, x, x, x, x, x, x, x, x]\n",
    );
    for level in 1..=12 {
        let refs = vec![format!("*a{}", level - 1); 9].join(", ");
        aliases.push_str(&format!("    a{level}: &a{level} [{refs}]\n"));
    }
    aliases.push('#');
    aliases.push_str(&"x".repeat(limit - aliases.len() - 1));
    aliases.push('\n');

    let mut scalar = String::from("version: v1alpha1\nmachine:\n  token: \"");
    scalar.push_str(&"x".repeat(limit - scalar.len() - 2));
    scalar.push_str("\"\n");

    let mut keys = String::from("version: v1alpha1\nmachine:\n  sysctls:\n");
    let mut i = 0;
    while keys.len() < limit - 32 {
        keys.push_str(&format!("    k{i}: v\n"));
        i += 1;
    }

    vec![
        ("deep flow nesting", deep_flow),
        ("deep block nesting", deep_block),
        ("alias bomb", aliases),
        ("huge scalar", scalar),
        ("many keys", keys),
    ]
}

/// `(metric, value)` rows for the bench table.
pub fn rows() -> anyhow::Result<Vec<(String, String)>> {
    let mut rows = Vec::new();
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };

    let mut gen_times = Vec::new();
    let mut controlplane = String::new();
    for _ in 0..GEN_RUNS {
        let start = Instant::now();
        let now = SystemTime::now();
        let secrets = SecretsBundle::generate(now)?;
        let generated = generate(&GenerateInput::new(
            "bench",
            "https://10.0.0.2:6443",
            secrets,
            now,
        ))?;
        gen_times.push(start.elapsed());
        controlplane = generated.controlplane;
    }
    rows.push((
        format!("gen config wall time (median of {GEN_RUNS}, {profile})"),
        format!(
            "{:.1} ms",
            crate::bench::median(gen_times).as_secs_f64() * 1e3
        ),
    ));

    let mut decode_times = Vec::new();
    for _ in 0..DECODE_RUNS {
        let start = Instant::now();
        let config = Config::from_bytes(controlplane.as_bytes())?;
        let report = config.validate(ValidationMode::Metal);
        decode_times.push(start.elapsed());
        if !report.is_ok() {
            bail!(
                "generated control-plane config does not validate: {:?}",
                report.errors
            );
        }
    }
    rows.push((
        format!("decode+validate control-plane config (median of {DECODE_RUNS}, {profile})"),
        format!("{} µs", crate::bench::median(decode_times).as_micros()),
    ));

    let root = crate::paths::root();
    let binary = build_decode_peak(&root)?;
    let dir = crate::paths::target().join("bench-config");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut benign = controlplane.clone();
    benign.push('#');
    benign.push_str(&"x".repeat(MAX_CONFIG_BYTES - benign.len() - 2));
    benign.push('\n');
    let (_, baseline) = decode_peak(&binary, &dir, "benign", &benign)?;
    rows.push((
        "peak RSS decoding a benign 1 MiB config (baseline)".to_owned(),
        format!("{baseline} KiB"),
    ));
    let mut worst = 0;
    for (name, document) in hostile_documents() {
        let (outcome, peak) = decode_peak(&binary, &dir, name, &document)?;
        let added = peak.saturating_sub(baseline);
        worst = worst.max(added);
        rows.push((
            format!("peak RSS decoding 1 MiB {name} ({outcome}), above baseline"),
            format!("{added} KiB"),
        ));
    }
    if worst > HOSTILE_PEAK_BOUND_KIB {
        bail!(
            "a hostile document took {worst} KiB above baseline, over the {HOSTILE_PEAK_BOUND_KIB} KiB bound"
        );
    }
    rows.push((
        "hostile document bound (above baseline)".to_owned(),
        format!("{HOSTILE_PEAK_BOUND_KIB} KiB; worst seen {worst} KiB"),
    ));
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_documents_fit_the_input_limit() {
        for (name, document) in hostile_documents() {
            assert!(document.len() <= MAX_CONFIG_BYTES, "{name}");
            assert!(
                document.len() > MAX_CONFIG_BYTES - 4096,
                "{name}: {}",
                document.len()
            );
        }
    }
}
