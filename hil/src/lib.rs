//! Hardware-in-the-loop rig: QEMU board backend and suites.
//!
//! For now the rig has one backend, [`qemu::QemuBoard`], which boots a kernel and initramfs
//! on an emulated board described by `talos_boards`, captures its serial console and
//! forwards a host port to the node's API.

use std::path::PathBuf;
use std::time::Duration;

pub mod qemu;

pub use qemu::{Accel, QemuBoard, QemuSpec, SerialLine};

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
