//! A/B boot slots on the system disk: commit a trial boot once the node runs, notice a
//! rollback the firmware made, write an upgrade into the other slot, switch back on request.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use talos_disk::adv::{self, Meta};
use talos_disk::gpt::Table;
use talos_disk::layout;
use talos_disk::slots::{
    self, AbEnv, BootFiles, BootKind, EntryName, FileOp, SLOT_ARG, Slot, SlotBoot,
};
use talos_node_sys::fs::{MountFlags, MountSpec, Mounter};

use crate::cmdline::Cmdline;
use crate::io_error::{PathError, io};

pub const BOOT_MOUNT: &str = "/system/boot";

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error(transparent)]
    Io(#[from] PathError),
    #[error("mounting the EFI partition: {0}")]
    Mount(String),
    #[error("META: {0}")]
    Meta(#[from] adv::AdvError),
    #[error("slot {0} holds no system to switch to")]
    EmptySlot(Slot),
}

/// The partitions of the disk the node booted from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemDisk {
    pub disk: PathBuf,
    pub efi: PathBuf,
    pub meta: PathBuf,
}

/// The `/dev` node of the partition of `disk` that starts at `first_lba`.
pub(crate) fn partition_device(
    sys_block: &Path,
    dev: &Path,
    disk: &str,
    first_lba: u64,
) -> Option<PathBuf> {
    std::fs::read_dir(sys_block.join(disk))
        .ok()?
        .filter_map(|e| e.ok())
        .find(|e| {
            std::fs::read_to_string(e.path().join("start"))
                .is_ok_and(|s| s.trim().parse() == Ok(first_lba))
        })
        .map(|e| dev.join(e.file_name()))
}

/// The first disk whose GPT has both an EFI and a META partition.
pub fn find_system_disk(sys_block: &Path, dev: &Path) -> Option<SystemDisk> {
    let mut disks: Vec<String> = std::fs::read_dir(sys_block)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    disks.sort();
    disks.into_iter().find_map(|name| {
        let disk = dev.join(&name);
        let table = Table::read_from(&mut File::open(&disk).ok()?).ok()?;
        let efi = table.find(layout::EFI)?;
        let meta = table.find(layout::META)?;
        Some(SystemDisk {
            efi: partition_device(sys_block, dev, &name, efi.first_lba)?,
            meta: partition_device(sys_block, dev, &name, meta.first_lba)?,
            disk,
        })
    })
}

/// How long the disk a slot was booted from may take to show up (driver load, partition scan;
/// slow on an emulated board under load).
const SYSTEM_DISK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// The system disk of a node booted from a slot (`talos.slot=` on the command line), which has
/// one: waits for it to show up. `None` for other boots, or when it never shows up (logged).
pub fn wait_for_system_disk(cmdline: &Cmdline) -> Option<SystemDisk> {
    let booted = cmdline.get(SLOT_ARG).and_then(Slot::parse)?;
    let deadline = std::time::Instant::now() + SYSTEM_DISK_TIMEOUT;
    loop {
        let disk = find_system_disk(Path::new("/sys/block"), Path::new("/dev"));
        if disk.is_some() {
            return disk;
        }
        if std::time::Instant::now() >= deadline {
            tracing::warn!(
                "slot {booted} was booted, but no disk with EFI and META partitions showed up within {SYSTEM_DISK_TIMEOUT:?}"
            );
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// The slots of the running system, with the EFI partition mounted at `root`.
#[derive(Debug)]
pub struct BootSlots {
    pub disk: SystemDisk,
    pub booted: Slot,
    root: PathBuf,
    /// Held while files or META change, so an upgrade and a commit never interleave.
    lock: Mutex<()>,
}

impl BootSlots {
    /// `None` when the kernel was not started from a slot of `disk` (QEMU `-kernel`, PXE).
    pub fn open(
        mounter: &dyn Mounter,
        cmdline: &Cmdline,
        disk: Option<SystemDisk>,
    ) -> Result<Option<BootSlots>, BootError> {
        let (Some(booted), Some(disk)) = (cmdline.get(SLOT_ARG).and_then(Slot::parse), disk) else {
            return Ok(None);
        };
        std::fs::create_dir_all(BOOT_MOUNT).map_err(io("creating", Path::new(BOOT_MOUNT)))?;
        mounter
            .mount(&MountSpec {
                source: disk.efi.display().to_string(),
                target: PathBuf::from(BOOT_MOUNT),
                fstype: "vfat".into(),
                flags: MountFlags {
                    nosuid: true,
                    nodev: true,
                    noexec: true,
                    relatime: true,
                },
                data: "umask=0077".into(),
            })
            .map_err(|e| BootError::Mount(e.to_string()))?;
        Ok(Some(BootSlots::new(
            disk,
            booted,
            PathBuf::from(BOOT_MOUNT),
        )))
    }

    pub fn new(disk: SystemDisk, booted: Slot, root: PathBuf) -> BootSlots {
        BootSlots {
            disk,
            booted,
            root,
            lock: Mutex::new(()),
        }
    }

    /// Where the EFI partition is mounted.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn files(&self) -> BootFiles {
        let entries = std::fs::read_dir(self.root.join(slots::ENTRIES_DIR))
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter_map(|e| EntryName::parse(&e.file_name().to_string_lossy()))
            .collect();
        let ab = std::fs::read_to_string(self.root.join(slots::AB_ENV))
            .ok()
            .and_then(|t| AbEnv::parse(&t));
        BootFiles { entries, ab }
    }

    /// The value of META key `tag` as text, when META is readable and holds it.
    pub fn meta_text(&self, tag: u8) -> Option<String> {
        let meta = self.read_meta().ok()?;
        String::from_utf8(meta.get(tag)?.to_vec()).ok()
    }

    fn read_meta(&self) -> Result<Meta, BootError> {
        let mut area = vec![0u8; adv::AREA_SIZE];
        File::open(&self.disk.meta)
            .and_then(|mut f| f.read_exact(&mut area))
            .map_err(io("reading", &self.disk.meta))?;
        Ok(Meta::decode(&area)?)
    }

    fn write_meta(&self, meta: &Meta) -> Result<(), BootError> {
        let area = meta.encode()?;
        let path = &self.disk.meta;
        let mut f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io("opening", path))?;
        f.seek(SeekFrom::Start(0))
            .and_then(|_| f.write_all(&area))
            .and_then(|_| f.sync_all())
            .map_err(io("writing", path))?;
        Ok(())
    }

    fn upgrade_tag(meta: &Meta) -> Option<Slot> {
        meta.get(adv::tag::UPGRADE)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(Slot::parse)
    }

    fn apply(&self, ops: &[FileOp]) -> Result<(), BootError> {
        for op in ops {
            match op {
                FileOp::Write { path, contents } => {
                    let target = self.root.join(path);
                    let (dir, name) = (
                        target.parent().unwrap_or(&self.root),
                        target.file_name().unwrap_or_default().to_string_lossy(),
                    );
                    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
                    crate::storage::write_atomically(dir, &name, contents)
                        .map_err(io("writing", &target))?;
                }
                FileOp::Rename { from, to } => {
                    let (from, to) = (self.root.join(from), self.root.join(to));
                    std::fs::rename(&from, &to).map_err(io("renaming", &from))?;
                }
                FileOp::Remove { path } => {
                    let path = self.root.join(path);
                    match std::fs::remove_file(&path) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(io("removing", &path)(e).into());
                        }
                        _ => {}
                    }
                }
            }
        }
        // Durable before META changes: the tag must never claim what the files do not hold.
        talos_node_sys::fs::sync_filesystem(&self.root)
            .map_err(|e| io("syncing", &self.root)(e.source))?;
        Ok(())
    }

    /// What this boot is; a failed trial of the other slot is cleaned up here.
    pub fn on_boot(&self) -> Result<BootKind, BootError> {
        let _guard = self.guard();
        let mut meta = self.read_meta()?;
        let files = self.files();
        let kind = files.classify(self.booted, Self::upgrade_tag(&meta));
        if let BootKind::RolledBack { failed } = kind {
            tracing::error!(
                "the upgrade in slot {failed} did not come up; the firmware fell back to slot {}",
                self.booted
            );
            self.apply(&files.discard(failed, self.booted))?;
            meta.remove(adv::tag::UPGRADE);
            self.write_meta(&meta)?;
        }
        Ok(kind)
    }

    /// Sets META key `tag` to `value` (`talosctl meta write`).
    pub fn meta_write(&self, tag: u8, value: &[u8]) -> Result<(), BootError> {
        let _guard = self.guard();
        let mut meta = self.read_meta()?;
        meta.set(tag, value)?;
        self.write_meta(&meta)
    }

    /// Deletes META key `tag` (`talosctl meta delete`); `false` when it was not set.
    pub fn meta_delete(&self, tag: u8) -> Result<bool, BootError> {
        let _guard = self.guard();
        let mut meta = self.read_meta()?;
        if meta.remove(tag).is_none() {
            return Ok(false);
        }
        self.write_meta(&meta)?;
        Ok(true)
    }

    /// Empties META (a reset). A pending upgrade trial is dropped with it: the running slot
    /// is committed first, so the next boot cannot take the trial for a rollback.
    pub fn wipe_meta(&self) -> Result<(), BootError> {
        let _guard = self.guard();
        self.apply(&self.files().commit(self.booted))?;
        self.write_meta(&Meta::default())
    }

    /// Makes the running slot permanent.
    pub fn commit(&self) -> Result<(), BootError> {
        let _guard = self.guard();
        self.apply(&self.files().commit(self.booted))?;
        let mut meta = self.read_meta()?;
        if meta.remove(adv::tag::UPGRADE).is_some() {
            self.write_meta(&meta)?;
        }
        tracing::info!("slot {} committed", self.booted);
        Ok(())
    }

    /// The command line this slot boots with, without the slot argument.
    fn cmdline_of(&self, slot: Slot) -> Option<String> {
        let env = std::fs::read_to_string(self.root.join(slot.file(slots::SLOT_ENV))).ok()?;
        env.lines()
            .find_map(|l| l.strip_prefix("talos_cmdline="))
            .map(str::to_owned)
    }

    /// Writes a new system into the other slot and arms a one-shot trial of it.
    pub fn stage_upgrade(
        &self,
        kernel: &[u8],
        initramfs: &[u8],
        version: &str,
    ) -> Result<Slot, BootError> {
        let _guard = self.guard();
        let target = self.booted.other();
        let cmdline = self.cmdline_of(self.booted).unwrap_or_default();
        let files = self.files();
        // Disarm first: a crash mid-write must not leave a half-written slot armed.
        self.apply(&files.discard(target, self.booted))?;
        let writes = [
            (slots::KERNEL, kernel.to_vec()),
            (slots::INITRAMFS, initramfs.to_vec()),
            (
                slots::SLOT_ENV,
                slots::slot_env(&cmdline, None).into_bytes(),
            ),
        ];
        let ops: Vec<FileOp> = writes
            .into_iter()
            .map(|(name, contents)| FileOp::Write {
                path: target.file(name),
                contents,
            })
            .collect();
        self.apply(&ops)?;
        let mut meta = self.read_meta()?;
        meta.set(adv::tag::UPGRADE, self.booted.label())?;
        self.write_meta(&meta)?;
        let boot = SlotBoot {
            version: version.to_owned(),
            cmdline,
            devicetree: None,
        };
        self.apply(&self.files().arm_trial(self.booted, target, &boot))?;
        tracing::info!(
            version,
            "upgrade written to slot {target}; it boots once on the next reboot"
        );
        Ok(target)
    }

    /// Makes the other slot the committed one, for `talosctl rollback`.
    pub fn switch_to_other(&self) -> Result<Slot, BootError> {
        let _guard = self.guard();
        let target = self.booted.other();
        let has_system = [slots::KERNEL, slots::INITRAMFS]
            .iter()
            .all(|f| self.root.join(target.file(f)).is_file());
        let Some(cmdline) = self.cmdline_of(target).filter(|_| has_system) else {
            return Err(BootError::EmptySlot(target));
        };
        let boot = SlotBoot {
            version: format!("slot {target}"),
            cmdline,
            devicetree: None,
        };
        self.apply(&self.files().switch_to(target, &boot))?;
        tracing::info!("rollback: slot {target} boots next");
        Ok(target)
    }
}

#[cfg(test)]
mod tests;
