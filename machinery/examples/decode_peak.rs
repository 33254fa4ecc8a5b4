//! Decodes and validates one config file, then prints `accepted|refused <peak KiB>`: this
//! process's resident high-water mark (`VmHWM`). `cargo xtask bench` runs it per hostile input.

use std::process::ExitCode;

use talos_machinery::config::{Config, ValidationMode};

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: decode_peak FILE");
        return ExitCode::FAILURE;
    };
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("reading {}: {e}", path.to_string_lossy());
            return ExitCode::FAILURE;
        }
    };
    let outcome = match Config::from_bytes(&bytes) {
        Ok(config) => {
            config.validate(ValidationMode::Metal);
            "accepted"
        }
        Err(_) => "refused",
    };
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let Some(peak) = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .map(|v| v.trim().trim_end_matches("kB").trim().to_owned())
    else {
        eprintln!("VmHWM missing from /proc/self/status");
        return ExitCode::FAILURE;
    };
    println!("{outcome} {peak}");
    ExitCode::SUCCESS
}
