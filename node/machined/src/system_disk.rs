//! STATE and EPHEMERAL on the system disk. On first boot the GPT is stretched to the disk
//! the image was written onto and STATE (when the image has none) and EPHEMERAL (the rest of
//! the disk) are added after the last partition; the kernel learns of them through BLKPG
//! (other partitions of the disk may be in use), and each is formatted with mkfs.ext4 unless
//! it already holds an ext4 filesystem with its label. Every step is checked again on each
//! boot, so a power cut anywhere is finished on the next one, and a filesystem is never
//! formatted twice. EPHEMERAL is mounted at /var; a reset zeroes its start, so the next boot
//! formats it afresh.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use talos_disk::gpt::{GptError, SECTOR, Table};
use talos_disk::layout::{self, LayoutError};
use talos_node_sys::SysError;
use talos_node_sys::block::Partitions;
use talos_node_sys::fs::{Linux, Mounter};

use tokio::io::AsyncReadExt;

use crate::io_error::{PathError, io};
use crate::reaper::Reaper;

/// Debian's mke2fs, from the read-only /usr image.
pub const MKFS_EXT4: &str = "/usr/sbin/mkfs.ext4";
pub const EPHEMERAL_MOUNT: &str = "/var";
/// How long a partition the kernel was told about may take to show up in /dev.
const DEVICE_TIMEOUT: Duration = Duration::from_secs(5);
/// What a reset zeroes: the superblock (at 1 KiB) and the group descriptors after it.
const WIPE_LEN: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SystemDiskError {
    #[error(transparent)]
    Io(#[from] PathError),
    #[error("the GPT of {path}: {source}")]
    Table {
        path: PathBuf,
        #[source]
        source: GptError,
    },
    #[error("the system disk {path}: {source}")]
    Layout {
        path: PathBuf,
        #[source]
        source: LayoutError,
    },
    #[error("telling the kernel about {label}: {source}")]
    Kernel {
        label: &'static str,
        #[source]
        source: SysError,
    },
    #[error("{label} on {disk} has no device in {dev} after {DEVICE_TIMEOUT:?}")]
    NoDevice {
        label: &'static str,
        disk: PathBuf,
        dev: PathBuf,
    },
    #[error("formatting {label} on {device}: {detail}")]
    Mkfs {
        label: &'static str,
        device: PathBuf,
        detail: String,
    },
    #[error("unmounting {EPHEMERAL_MOUNT} before wiping EPHEMERAL: {0}")]
    Unmount(#[source] SysError),
}

/// Where the kernel shows disks and partitions, and the mkfs.ext4 to run.
#[derive(Debug, Clone)]
pub struct Host {
    pub sys_block: PathBuf,
    pub dev: PathBuf,
    pub mkfs: PathBuf,
}

impl Host {
    pub fn linux() -> Host {
        Host {
            sys_block: PathBuf::from("/sys/block"),
            dev: PathBuf::from("/dev"),
            mkfs: PathBuf::from(MKFS_EXT4),
        }
    }

    /// The `/dev` node of the partition of `disk` that starts at `first_lba`, once the
    /// kernel has one.
    fn partition(&self, disk: &str, first_lba: u64) -> Option<PathBuf> {
        crate::boot::partition_device(&self.sys_block, &self.dev, disk, first_lba)
            .filter(|d| d.exists())
    }

    fn wait_for_partition(&self, disk: &str, first_lba: u64) -> Option<PathBuf> {
        let deadline = Instant::now() + DEVICE_TIMEOUT;
        loop {
            let found = self.partition(disk, first_lba);
            if found.is_some() || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    async fn format(
        &self,
        reaper: &Reaper,
        label: &'static str,
        device: &Path,
    ) -> Result<(), SystemDiskError> {
        let failed = |detail: String| SystemDiskError::Mkfs {
            label,
            device: device.to_owned(),
            detail,
        };
        let started = Instant::now();
        let (reader, writer) = std::io::pipe().map_err(|e| failed(format!("a pipe: {e}")))?;
        let mut command = Command::new(&self.mkfs);
        // -F: a new partition may hold leftovers that mke2fs would otherwise ask about.
        command
            .args(["-q", "-F", "-L", label])
            .arg(device)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(writer);
        let (_, exited) = reaper
            .spawn(&mut command)
            .map_err(|e| failed(format!("running {}: {e}", self.mkfs.display())))?;
        // Closes our copy of the pipe's write end, so the read below ends when mkfs does.
        drop(command);
        let mut stderr = Vec::new();
        tokio::net::unix::pipe::Receiver::from_owned_fd(reader.into())
            .map_err(|e| failed(format!("reading its output: {e}")))?
            .read_to_end(&mut stderr)
            .await
            .map_err(|e| failed(format!("reading its output: {e}")))?;
        let status = exited
            .await
            .map_err(|_| failed("the reaper stopped".to_owned()))?;
        if !status.success() {
            return Err(failed(format!(
                "{} {status}: {}",
                self.mkfs.display(),
                String::from_utf8_lossy(&stderr).trim()
            )));
        }
        tracing::info!(
            device = %device.display(),
            "formatted {label} (ext4) in {:.1?}",
            started.elapsed()
        );
        Ok(())
    }
}

fn disk_name(disk: &Path) -> String {
    disk.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// Completes the system disk `disk` (see the module comment); returns EPHEMERAL's device,
/// or `None` when the disk has no room for one.
pub async fn prepare(
    host: &Host,
    kernel: &dyn Partitions,
    reaper: &Reaper,
    disk: &Path,
) -> Result<Option<PathBuf>, SystemDiskError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .map_err(io("opening", disk))?;
    let sectors = file.seek(SeekFrom::End(0)).map_err(io("sizing", disk))? / SECTOR;
    let table_error = |source| SystemDiskError::Table {
        path: disk.to_owned(),
        source,
    };
    let table = Table::read_from(&mut file).map_err(table_error)?;
    let wanted = layout::complete(&table, sectors).map_err(|source| SystemDiskError::Layout {
        path: disk.to_owned(),
        source,
    })?;
    if wanted != table {
        // Backup first, then the primary: see `Table::write_backup_to`.
        wanted.write_backup_to(&mut file).map_err(table_error)?;
        file.sync_all().map_err(io("syncing", disk))?;
        wanted.write_primary_to(&mut file).map_err(table_error)?;
        file.sync_all().map_err(io("syncing", disk))?;
        let names: Vec<&str> = wanted.partitions.iter().map(|p| p.name.as_str()).collect();
        tracing::info!(
            disk = %disk.display(),
            "GPT stretched to {} MiB; partitions {}",
            (sectors * SECTOR) >> 20,
            names.join(", ")
        );
    }
    drop(file);
    let name = disk_name(disk);
    let mut ephemeral = None;
    for label in [layout::STATE, layout::EPHEMERAL] {
        let Some((index, part)) = wanted
            .partitions
            .iter()
            .enumerate()
            .find(|(_, p)| p.name == label)
        else {
            continue;
        };
        if host.partition(&name, part.first_lba).is_none() {
            // Linux numbers GPT partitions by their entry, from 1.
            kernel
                .add_partition(disk, index as u32 + 1, part.offset(), part.len())
                .map_err(|source| SystemDiskError::Kernel { label, source })?;
        }
        let device = host
            .wait_for_partition(&name, part.first_lba)
            .ok_or_else(|| SystemDiskError::NoDevice {
                label,
                disk: disk.to_owned(),
                dev: host.dev.clone(),
            })?;
        if crate::storage::read_label(&device).as_deref() != Some(label) {
            host.format(reaper, label, &device).await?;
        }
        if label == layout::EPHEMERAL {
            ephemeral = Some(device);
        }
    }
    Ok(ephemeral)
}

/// The boot task: on a node started from a slot of system disk `disk`, completes that disk and
/// returns EPHEMERAL's device. Failures are logged: the node boots on, /var in memory.
pub async fn on_boot(disk: Option<&crate::boot::SystemDisk>, reaper: &Reaper) -> Option<PathBuf> {
    let disk = disk?;
    match prepare(&Host::linux(), &Linux, reaper, &disk.disk).await {
        Ok(Some(device)) => Some(device),
        Ok(None) => {
            tracing::warn!(
                disk = %disk.disk.display(),
                "less than {} MiB free after the last partition: no EPHEMERAL, {EPHEMERAL_MOUNT} stays in memory",
                layout::EPHEMERAL_MIN_SIZE >> 20
            );
            None
        }
        Err(e) => {
            tracing::error!("{e}; {EPHEMERAL_MOUNT} stays in memory");
            None
        }
    }
}

/// /var allows programs: container images unpack below it.
pub fn mount_ephemeral(mounter: &dyn Mounter, device: &Path) -> Result<(), SysError> {
    crate::storage::mount_ext4(mounter, device, EPHEMERAL_MOUNT, true)
}

/// The boot task after STATE is mounted: EPHEMERAL at /var, when `on_boot` found one.
pub fn mount_on_boot(device: Option<&Path>) {
    let Some(device) = device else {
        return;
    };
    match mount_ephemeral(&Linux, device) {
        Ok(()) => tracing::info!(
            device = %device.display(),
            "mounted {} at {EPHEMERAL_MOUNT}",
            layout::EPHEMERAL
        ),
        Err(e) => tracing::error!("{e}; {EPHEMERAL_MOUNT} stays in memory"),
    }
}

/// Unmounts /var and zeroes the start of EPHEMERAL on `disk`; returns its device, or
/// `None` when the disk has no EPHEMERAL.
pub fn wipe_ephemeral(
    mounter: &dyn Mounter,
    host: &Host,
    disk: &Path,
) -> Result<Option<PathBuf>, SystemDiskError> {
    let table = Table::read_from(&mut File::open(disk).map_err(io("opening", disk))?).map_err(
        |source| SystemDiskError::Table {
            path: disk.to_owned(),
            source,
        },
    )?;
    let Some(part) = table.find(layout::EPHEMERAL) else {
        return Ok(None);
    };
    let device = host
        .partition(&disk_name(disk), part.first_lba)
        .ok_or_else(|| SystemDiskError::NoDevice {
            label: layout::EPHEMERAL,
            disk: disk.to_owned(),
            dev: host.dev.clone(),
        })?;
    match mounter.unmount(Path::new(EPHEMERAL_MOUNT)) {
        // EINVAL: nothing mounted there.
        Err(e) if e.source.kind() != std::io::ErrorKind::InvalidInput => {
            return Err(SystemDiskError::Unmount(e));
        }
        _ => {}
    }
    let mut out = OpenOptions::new()
        .write(true)
        .open(&device)
        .map_err(io("opening", &device))?;
    out.write_all(&vec![0u8; WIPE_LEN.min(part.len()) as usize])
        .and_then(|_| out.sync_all())
        .map_err(io("wiping", &device))?;
    Ok(Some(device))
}

/// The reset task: wipes EPHEMERAL on the system disk the node booted from, if any.
pub fn wipe_on_reset(disk: Option<&Path>) -> Result<(), SystemDiskError> {
    let Some(disk) = disk else {
        tracing::info!("no system disk, so no EPHEMERAL to wipe");
        return Ok(());
    };
    match wipe_ephemeral(&Linux, &Host::linux(), disk)? {
        Some(device) => tracing::info!(
            device = %device.display(),
            "EPHEMERAL wiped: the next boot formats it afresh"
        ),
        None => tracing::info!(disk = %disk.display(), "no EPHEMERAL partition to wipe"),
    }
    Ok(())
}

#[cfg(test)]
mod tests;
