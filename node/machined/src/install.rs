//! Installing onto `machine.install.disk`: the layout of the disk the node booted from,
//! its EFI partition (bootloaders and slots) and its STATE (the config), copied over; the
//! installed node adds EPHEMERAL on its first boot.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use talos_disk::adv::Meta;
use talos_disk::gpt::{GptError, Partition, SECTOR, Table};
use talos_disk::layout::{self, LayoutError, SystemDisk};
use talos_node_sys::fs::Freezer;

use crate::boot;
use crate::io_error::{PathError, io};

const COPY_CHUNK: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Io(#[from] PathError),
    #[error("the system disk {path}: {source}")]
    SystemDisk {
        path: PathBuf,
        #[source]
        source: GptError,
    },
    #[error("machine.install.disk {path} holds {size} bytes; the system needs at least {needed}")]
    TooSmall {
        path: PathBuf,
        size: u64,
        needed: u64,
    },
    #[error("laying out machine.install.disk {path}: {source}")]
    Layout {
        path: PathBuf,
        #[source]
        source: LayoutError,
    },
    #[error("writing the partition table of {path}: {source}")]
    Table {
        path: PathBuf,
        #[source]
        source: GptError,
    },
    #[error("STATE on {device} is {size} bytes; an installed STATE is {expected}")]
    StateSize {
        device: PathBuf,
        size: u64,
        expected: u64,
    },
    #[error("freezing STATE for the copy: {0}")]
    Freeze(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Installed,
    /// The node runs from the install disk already (an SD card or a written image).
    RunningFromIt,
    /// The target has a system already; it is left alone.
    AlreadyInstalled,
}

/// Copies `len` bytes from `source` at `source_offset` to `target` at `offset`.
fn copy_into(
    source: &Path,
    source_offset: u64,
    target: &mut File,
    target_path: &Path,
    offset: u64,
    len: u64,
) -> Result<(), InstallError> {
    let mut input = File::open(source).map_err(io("opening", source))?;
    input
        .seek(SeekFrom::Start(source_offset))
        .map_err(io("seeking in", source))?;
    target
        .seek(SeekFrom::Start(offset))
        .map_err(io("seeking in", target_path))?;
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut left = len;
    while left > 0 {
        let n = left.min(COPY_CHUNK as u64) as usize;
        input
            .read_exact(&mut buf[..n])
            .map_err(io("reading", source))?;
        target
            .write_all(&buf[..n])
            .map_err(io("writing", target_path))?;
        left -= n as u64;
    }
    Ok(())
}

/// Whether sector 0 of `disk` is a hybrid MBR (a FAT32 entry besides the GPT's 0xEE one).
fn has_hybrid_mbr(disk: &Path) -> std::io::Result<bool> {
    let mut mbr = [0u8; 512];
    File::open(disk)?.read_exact(&mut mbr)?;
    Ok(mbr[446 + 4] == 0x0c)
}

/// The STATE filesystem to copy: its device and where it is mounted.
#[derive(Debug, Clone)]
pub struct LiveState {
    pub device: PathBuf,
    pub mount_point: PathBuf,
}

/// Installs the running system onto `target` unless it is the boot disk or has a system.
pub fn install(
    freezer: &dyn Freezer,
    system: &boot::SystemDisk,
    target: &Path,
    state: Option<&LiveState>,
    seed: &str,
) -> Result<Outcome, InstallError> {
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
    if canonical(target) == canonical(&system.disk) {
        return Ok(Outcome::RunningFromIt);
    }
    let mut out = OpenOptions::new()
        .read(true)
        .write(true)
        .open(target)
        .map_err(io("opening", target))?;
    if Table::read_from(&mut out)
        .is_ok_and(|t| t.find(layout::EFI).is_some() && t.find(layout::META).is_some())
    {
        return Ok(Outcome::AlreadyInstalled);
    }
    let boot_table =
        Table::read_from(&mut File::open(&system.disk).map_err(io("opening", &system.disk))?)
            .map_err(|source| InstallError::SystemDisk {
                path: system.disk.clone(),
                source,
            })?;
    let part = |name: &str| -> Result<Partition, InstallError> {
        boot_table
            .find(name)
            .cloned()
            .ok_or_else(|| InstallError::SystemDisk {
                path: system.disk.clone(),
                source: GptError::Malformed("a system partition is missing"),
            })
    };
    let efi = part(layout::EFI)?;
    let size = out.seek(SeekFrom::End(0)).map_err(io("sizing", target))?;
    let image =
        SystemDisk::new(seed, efi.offset(), efi.len()).with_gpt_entries(boot_table.entry_count);
    let needed = image.size() + layout::STATE_SIZE;
    if size < needed {
        return Err(InstallError::TooSmall {
            path: target.to_owned(),
            size,
            needed,
        });
    }
    let table =
        layout::with_state(&image.table, size / SECTOR).map_err(|source| InstallError::Layout {
            path: target.to_owned(),
            source,
        })?;
    let find = |name: &str| {
        table
            .find(name)
            .cloned()
            .ok_or_else(|| InstallError::Table {
                path: target.to_owned(),
                source: GptError::Malformed("the new table lacks a system partition"),
            })
    };
    let table_error = |source| InstallError::Table {
        path: target.to_owned(),
        source,
    };
    if has_hybrid_mbr(&system.disk).map_err(io("reading", &system.disk))? {
        table.write_hybrid_to(&mut out, layout::EFI)
    } else {
        table.write_to(&mut out)
    }
    .map_err(table_error)?;
    // Raw bootloaders (Rockchip, Allwinner) live between the GPT and the first partition.
    let raw_start = boot_table.first_usable_lba() * SECTOR;
    copy_into(
        &system.disk,
        raw_start,
        &mut out,
        target,
        raw_start,
        efi.offset() - raw_start,
    )?;
    let new_efi = find(layout::EFI)?;
    copy_into(
        &system.efi,
        0,
        &mut out,
        target,
        new_efi.offset(),
        new_efi.len(),
    )?;
    let meta = find(layout::META)?;
    out.seek(SeekFrom::Start(meta.offset()))
        .and_then(|_| out.write_all(&Meta::default().encode().unwrap_or_default()))
        .map_err(io("writing META on", target))?;
    if let Some(state) = state {
        let new_state = find(layout::STATE)?;
        let source_len = File::open(&state.device)
            .and_then(|mut f| f.seek(SeekFrom::End(0)))
            .map_err(io("sizing", &state.device))?;
        if source_len != new_state.len() {
            return Err(InstallError::StateSize {
                device: state.device.clone(),
                size: source_len,
                expected: new_state.len(),
            });
        }
        freezer
            .freeze(&state.mount_point)
            .map_err(|e| InstallError::Freeze(e.to_string()))?;
        let copied = copy_into(
            &state.device,
            0,
            &mut out,
            target,
            new_state.offset(),
            new_state.len(),
        );
        if let Err(e) = freezer.thaw(&state.mount_point) {
            tracing::error!("thawing STATE: {e}");
        }
        copied?;
    }
    out.sync_all().map_err(io("syncing", target))?;
    Ok(Outcome::Installed)
}

#[cfg(test)]
mod tests;
