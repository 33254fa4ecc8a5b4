//! Hardware-in-the-loop rig: the same suites on QEMU boards and real boards.
//!
//! Layered as labgrid is: [`rig`] holds passive resource descriptions read from a YAML rig
//! file; drivers implement small traits ([`power::PowerSwitch`], [`console::Console`],
//! [`storage::Storage`], [`api::NodeApi`]) for GPIO relays, serial consoles, SD muxes and QEMU
//! ([`qemu_target`], over [`qemu::QemuBoard`]); [`strategy::Strategy`] walks a board through
//! its states with timeouts and evidence; [`suites`] are the tests; [`runner`] ties them to a
//! rig file, board locks ([`lock`]) and reports ([`report`]).

use std::path::PathBuf;
use std::time::Duration;

pub mod api;
pub mod console;
pub mod lock;
pub mod power;
pub mod qemu;
pub mod qemu_target;
pub mod report;
pub mod rig;
pub mod runner;
pub mod storage;
pub mod strategy;
pub mod suites;

pub use qemu::{Accel, BootSource, QemuBoard, QemuSpec, SerialLine};

#[derive(Debug, thiserror::Error)]
pub enum HilError {
    #[error("Board {board} has no [qemu] table, so QEMU cannot emulate it")]
    NotEmulated { board: String },
    #[error("The {what} {path} does not exist")]
    MissingInput { what: &'static str, path: PathBuf },
    #[error("Cannot reserve a free TCP port on 127.0.0.1")]
    NoFreePort(#[source] std::io::Error),
    #[error("Cannot create the serial log {path}")]
    SerialLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot start {binary}")]
    Spawn {
        binary: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot query or signal the QEMU process")]
    Process(#[source] std::io::Error),
    #[error(
        "Timed out after {timeout:?} waiting for {pattern:?} on the serial console; last lines:\n{tail}"
    )]
    Timeout {
        pattern: String,
        timeout: Duration,
        tail: String,
    },
    #[error(
        "QEMU closed the serial console ({status}) before printing {pattern:?}; QEMU stderr: {stderr:?}; last lines:\n{tail}"
    )]
    ConsoleClosed {
        pattern: String,
        status: String,
        stderr: String,
        tail: String,
    },
    #[error("QEMU is still running after {timeout:?}")]
    StillRunning { timeout: Duration },
}

/// A driver failed: power, console, storage or mux.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("GPIO line {line}: {reason}")]
    Gpio { line: String, reason: String },
    #[error("Manual power of board {board}: {reason}")]
    Manual { board: String, reason: String },
    #[error("Serial device {device}: {reason}")]
    Serial { device: PathBuf, reason: String },
    #[error("Cannot write the console log {path}")]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "Timed out after {timeout:?} waiting for {patterns:?} on the console; last lines:\n{tail}"
    )]
    ExpectTimeout {
        patterns: Vec<String>,
        timeout: Duration,
        tail: String,
    },
    #[error("SD mux {device}: {reason}")]
    Mux { device: PathBuf, reason: String },
    #[error("The card {path} did not appear on the host within {waited:?}")]
    NoBlockDevice { path: PathBuf, waited: Duration },
    #[error(transparent)]
    Flash(#[from] talos_images::flash::FlashError),
    #[error(transparent)]
    Qemu(#[from] HilError),
    #[error("Cannot {action} while the board is powered")]
    Powered { action: &'static str },
    #[error("Cannot prepare the STATE disk {path}: {reason}")]
    StateDisk { path: PathBuf, reason: String },
    #[error(
        "The QEMU disk {path} holds {size} bytes: the image ({image} bytes) fits, but not the {state}-byte STATE the node adds after it; raise storage.qemu-disk.size_mib"
    )]
    DiskTooSmall {
        path: PathBuf,
        size: u64,
        image: u64,
        state: u64,
    },
}
