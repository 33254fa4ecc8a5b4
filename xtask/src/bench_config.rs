//! Config benchmarks for `cargo xtask bench`: decode+validate of a control-plane config, `gen
//! config` wall time, and the peak memory of decoding 1 MiB hostile documents.
//!
//! Peak memory is measured in this process: the kernel's high-water mark (`VmHWM`) is reset
//! through `/proc/self/clear_refs` before each decode and compared with the resident size
//! (`VmRSS`) just before it, so the figure is what that one decode added at its peak.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use talos_machinery::codec::MAX_CONFIG_BYTES;
use talos_machinery::config::{Config, GenerateInput, ValidationMode, generate};
use talos_machinery::secrets::SecretsBundle;

const DECODE_RUNS: usize = 300;
const GEN_RUNS: usize = 7;
/// A hostile document may not make one decode grow the process by more than this.
const HOSTILE_PEAK_BOUND_KIB: u64 = 64 * 1024;

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn status_kib(field: &str) -> anyhow::Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("{field} missing from /proc/self/status"))
}

/// Peak KiB that `work` adds to the resident set.
fn peak_added_kib(work: impl FnOnce()) -> anyhow::Result<u64> {
    std::fs::write("/proc/self/clear_refs", "5")
        .context("resetting VmHWM via /proc/self/clear_refs")?;
    let before = status_kib("VmRSS:")?;
    work();
    Ok(status_kib("VmHWM:")?.saturating_sub(before))
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
        format!("{:.1} ms", median(gen_times).as_secs_f64() * 1e3),
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
        format!("{} µs", median(decode_times).as_micros()),
    ));

    let mut worst = 0;
    for (name, document) in hostile_documents() {
        let mut outcome = String::new();
        let peak = peak_added_kib(|| {
            outcome = match Config::from_bytes(document.as_bytes()) {
                Ok(_) => "accepted".to_owned(),
                Err(_) => "refused".to_owned(),
            };
        })?;
        worst = worst.max(peak);
        rows.push((
            format!("peak memory decoding 1 MiB {name} ({outcome})"),
            format!("{} KiB", peak),
        ));
    }
    if worst > HOSTILE_PEAK_BOUND_KIB {
        bail!("a hostile document took {worst} KiB, above the {HOSTILE_PEAK_BOUND_KIB} KiB bound");
    }
    rows.push((
        "hostile document peak bound".to_owned(),
        format!("{} KiB (max seen {worst} KiB)", HOSTILE_PEAK_BOUND_KIB),
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
