//! QEMU as a rig target: power is the QEMU process, the console is its first serial port, and
//! storage is the raw disk file it attaches. QEMU boots a kernel directly or starts firmware
//! that boots the disk.
//!
//! Each power-on launches a new [`QemuBoard`] with its own serial log (`serial-N.log`); the
//! console presents the lines of every boot as one stream, so expectations and tails span
//! power cycles as they do on a real serial line.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use talos_boards::Board;
use talos_images::flash::{self, FlashProgress, FlashReport};

use crate::console::{Console, ConsoleLine};
use crate::power::PowerSwitch;
use crate::qemu::{Accel, BootSource, QemuBoard, QemuSpec};
use crate::storage::Storage;
use crate::{DriverError, HilError};

/// How long an orderly power-off (SIGTERM) may take before the plug is pulled.
const OFF_GRACE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);

/// What a QEMU target boots.
#[derive(Debug, Clone)]
pub struct QemuTargetSpec {
    pub board: Board,
    pub boot: BootSource,
    /// The disk file (STATE, or the whole system disk for a firmware boot); flashed while the
    /// target is off.
    pub disk: PathBuf,
    /// For a firmware boot: the bytes of the disk the image is written onto, which leaves the
    /// node room for the STATE and EPHEMERAL it adds on first boot.
    pub disk_size: Option<u64>,
    /// Serial logs go here as `serial-N.log`.
    pub log_dir: PathBuf,
}

#[derive(Debug, Default)]
struct Inner {
    running: Option<QemuBoard>,
    /// Lines of earlier boots.
    history: Vec<ConsoleLine>,
    logs: Vec<PathBuf>,
}

/// One emulated board, shared by its power, console and storage drivers.
#[derive(Debug)]
pub struct QemuTarget {
    spec: QemuTargetSpec,
    api_port: u16,
    opened: Instant,
    inner: Mutex<Inner>,
}

impl QemuTarget {
    /// Reserves the API port that every boot of this target forwards.
    pub fn new(spec: QemuTargetSpec) -> Result<Arc<QemuTarget>, HilError> {
        let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
            .map_err(HilError::NoFreePort)?;
        let api_port = listener.local_addr().map_err(HilError::NoFreePort)?.port();
        Ok(Arc::new(QemuTarget {
            spec,
            api_port,
            opened: Instant::now(),
            inner: Mutex::new(Inner::default()),
        }))
    }

    /// The host port on 127.0.0.1 forwarded to the guest's API.
    pub fn api_port(&self) -> u16 {
        self.api_port
    }

    pub fn disk(&self) -> &Path {
        &self.spec.disk
    }

    /// Whether QEMU is running now.
    pub fn is_running(&self) -> Result<bool, HilError> {
        let mut inner = self.lock();
        self.reap(&mut inner)?;
        Ok(inner.running.is_some())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("QEMU target lock is not poisoned")
    }

    /// Retires a QEMU that has exited: its lines join the history.
    fn reap(&self, inner: &mut Inner) -> Result<(), HilError> {
        let exited = match &inner.running {
            Some(board) => board.try_exit_status()?.is_some(),
            None => false,
        };
        if exited {
            self.retire(inner);
        }
        Ok(())
    }

    fn retire(&self, inner: &mut Inner) {
        if let Some(board) = inner.running.take() {
            let lines = self.convert(&board);
            drop(board);
            inner.history.extend(lines);
        }
    }

    fn convert(&self, board: &QemuBoard) -> Vec<ConsoleLine> {
        let offset = board.launched_at().saturating_duration_since(self.opened);
        board
            .serial_lines_timed()
            .into_iter()
            .map(|line| ConsoleLine {
                at: offset + line.at,
                text: line.text,
            })
            .collect()
    }

    fn launch(&self, inner: &mut Inner) -> Result<(), HilError> {
        let log = self
            .spec
            .log_dir
            .join(format!("serial-{}.log", inner.logs.len() + 1));
        let board = QemuBoard::launch(QemuSpec {
            board: self.spec.board.clone(),
            boot: self.spec.boot.clone(),
            disk: Some(self.spec.disk.clone()),
            api_port: Some(self.api_port),
            serial_log: log.clone(),
            accel: Accel::Tcg,
            no_reboot: false,
        })?;
        inner.logs.push(log);
        inner.running = Some(board);
        Ok(())
    }
}

/// QEMU's process as the power switch.
#[derive(Debug, Clone)]
pub struct QemuPower(pub Arc<QemuTarget>);

impl PowerSwitch for QemuPower {
    fn on(&self) -> Result<(), DriverError> {
        let mut inner = self.0.lock();
        self.0.reap(&mut inner)?;
        if inner.running.is_none() {
            self.0.launch(&mut inner)?;
        }
        Ok(())
    }

    /// SIGTERM, which QEMU handles by shutting the emulator down; SIGKILL after a grace period.
    fn off(&self) -> Result<(), DriverError> {
        let mut inner = self.0.lock();
        self.0.reap(&mut inner)?;
        if let Some(board) = &inner.running {
            let pid = Pid::from_raw(board.pid() as i32);
            // ESRCH means QEMU is already gone, which is the goal.
            let _ = kill(pid, Signal::SIGTERM);
            if board.wait_exit(OFF_GRACE).is_err() {
                board.power_off_hard()?;
                board.wait_exit(OFF_GRACE)?;
            }
        }
        self.0.retire(&mut inner);
        Ok(())
    }

    /// SIGKILL: the guest gets no chance to sync.
    fn cut(&self) -> Result<(), DriverError> {
        let mut inner = self.0.lock();
        if let Some(board) = &inner.running {
            board.power_off_hard()?;
            board.wait_exit(OFF_GRACE)?;
        }
        self.0.retire(&mut inner);
        Ok(())
    }
}

/// QEMU's first serial port as the console (read-only: QEMU's stdin is not connected).
#[derive(Debug, Clone)]
pub struct QemuConsole(pub Arc<QemuTarget>);

impl Console for QemuConsole {
    fn lines_from(&self, from: usize) -> Vec<ConsoleLine> {
        let inner = self.0.lock();
        let mut lines: Vec<ConsoleLine> = inner.history.get(from..).unwrap_or_default().to_vec();
        if let Some(board) = &inner.running {
            let skip = from.saturating_sub(inner.history.len());
            lines.extend(self.0.convert(board).into_iter().skip(skip));
        }
        lines
    }

    fn line_count(&self) -> usize {
        let inner = self.0.lock();
        inner.history.len() + inner.running.as_ref().map_or(0, |b| b.serial_lines().len())
    }

    fn wait_for_more(&self, seen: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.line_count() <= seen && Instant::now() < deadline {
            std::thread::sleep(POLL.min(deadline.saturating_duration_since(Instant::now())));
        }
    }

    fn write(&self, _bytes: &[u8]) -> Result<(), DriverError> {
        Err(DriverError::Serial {
            device: PathBuf::from("qemu:serial0"),
            reason: "the QEMU console is read-only (stdin is not connected)".to_owned(),
        })
    }

    fn log_paths(&self) -> Vec<PathBuf> {
        self.0.lock().logs.clone()
    }
}

/// QEMU's disk file as storage.
#[derive(Debug, Clone)]
pub struct QemuDisk(pub Arc<QemuTarget>);

impl Storage for QemuDisk {
    fn flash(
        &self,
        image: &Path,
        progress: &mut dyn FnMut(FlashProgress),
    ) -> Result<FlashReport, DriverError> {
        if self.0.is_running()? {
            return Err(DriverError::Powered {
                action: "write the QEMU disk",
            });
        }
        let report = flash::flash(image, &self.0.spec.disk, progress)?;
        if let Some(size) = self.0.spec.disk_size {
            grow_disk(&self.0.spec.disk, size)?;
        }
        Ok(report)
    }
}

/// Extends the flashed disk file at `path` to `size` bytes, which must leave room for STATE.
fn grow_disk(path: &Path, size: u64) -> Result<(), DriverError> {
    let io = |e: std::io::Error| DriverError::StateDisk {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io)?;
    let image = file.metadata().map_err(io)?.len();
    if size < image + talos_disk::layout::STATE_SIZE {
        return Err(DriverError::DiskTooSmall {
            path: path.to_owned(),
            size,
            image,
            state: talos_disk::layout::STATE_SIZE,
        });
    }
    file.set_len(size).map_err(io)
}

/// Makes an empty ext4 filesystem labelled STATE in a new sparse file of `size_mib`.
pub fn make_state_image(path: &Path, size_mib: u64) -> Result<(), DriverError> {
    let failed = |reason: String| DriverError::StateDisk {
        path: path.to_owned(),
        reason,
    };
    std::fs::File::create(path)
        .and_then(|file| file.set_len(size_mib << 20))
        .map_err(|e| failed(e.to_string()))?;
    let output = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "STATE"])
        .arg(path)
        .output()
        .map_err(|e| failed(format!("cannot run mkfs.ext4: {e}")))?;
    if !output.status.success() {
        return Err(failed(format!(
            "mkfs.ext4 {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_image_is_a_sparse_ext4_labelled_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.img");
        make_state_image(&path, 32).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 32 << 20);
        // ext4 superblock at 1024: magic 0xEF53 at offset 56, volume name at 120.
        assert_eq!(&bytes[1024 + 56..1024 + 58], &[0x53, 0xEF]);
        assert_eq!(&bytes[1024 + 120..1024 + 125], b"STATE");
    }
}
