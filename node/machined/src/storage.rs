//! The STATE filesystem: found by label, mounted at /system/state, written atomically.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use talos_node_sys::SysError;
use talos_node_sys::fs::{MountFlags, MountSpec, Mounter};

pub const STATE_LABEL: &str = "STATE";
pub const STATE_MOUNT: &str = "/system/state";
pub const CONFIG_FILE: &str = "config.yaml";

pub(crate) const EXT4_SUPERBLOCK: u64 = 1024;
const EXT4_MAGIC: u16 = 0xEF53;

/// The volume label of an ext2/3/4 superblock, if `sb` is one.
pub fn ext4_label(sb: &[u8]) -> Option<String> {
    let magic = u16::from_le_bytes([*sb.get(0x38)?, *sb.get(0x39)?]);
    if magic != EXT4_MAGIC {
        return None;
    }
    let raw = sb.get(0x78..0x88)?;
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    Some(String::from_utf8_lossy(&raw[..end]).into_owned())
}

/// The label of the ext4 filesystem on `device`, if it holds one.
pub(crate) fn read_label(device: &Path) -> Option<String> {
    let mut f = File::open(device).ok()?;
    f.seek(SeekFrom::Start(EXT4_SUPERBLOCK)).ok()?;
    let mut sb = [0u8; 0x100];
    f.read_exact(&mut sb).ok()?;
    ext4_label(&sb)
}

/// Block devices (disks and partitions) as /dev paths, from /sys/class/block.
fn block_devices() -> Vec<PathBuf> {
    let mut devices: Vec<PathBuf> = std::fs::read_dir("/sys/class/block")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| Path::new("/dev").join(e.file_name()))
        .collect();
    devices.sort();
    devices
}

/// The device holding an ext4 filesystem labelled STATE, if any.
pub fn find_state_device() -> Option<PathBuf> {
    block_devices()
        .into_iter()
        .find(|d| read_label(d).as_deref() == Some(STATE_LABEL))
}

pub fn mount_state(mounter: &dyn Mounter, device: &Path) -> Result<(), SysError> {
    mount_ext4(mounter, device, STATE_MOUNT, false)
}

/// Mounts the ext4 filesystem on `device` at `target` (made if missing), never with devices or
/// setuid, and with programs only when `exec`.
pub fn mount_ext4(
    mounter: &dyn Mounter,
    device: &Path,
    target: &str,
    exec: bool,
) -> Result<(), SysError> {
    std::fs::create_dir_all(target).map_err(|e| SysError::new("mkdir", target, e))?;
    mounter.mount(&MountSpec {
        source: device.display().to_string(),
        target: PathBuf::from(target),
        fstype: "ext4".into(),
        flags: MountFlags {
            nosuid: true,
            nodev: true,
            noexec: !exec,
            relatime: true,
        },
        data: String::new(),
    })
}

/// Replaces `dir/name` with `data` so that a crash leaves either the old or the new file:
/// write a temporary file, fsync it, rename it over, fsync it under its new name, fsync the
/// directory. The second file fsync is for vfat (the EFI partition): its rename frees the old
/// file's clusters at once but moves the directory entry only when the inode is written.
pub fn write_atomically(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    let target = dir.join(name);
    std::fs::rename(&tmp, &target)?;
    File::open(&target)?.sync_all()?;
    File::open(dir)?.sync_all()
}

/// Where the machine config is kept across reboots.
#[derive(Debug, Clone)]
pub struct ConfigStore {
    dir: PathBuf,
}

impl ConfigStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn load(&self) -> std::io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.dir.join(CONFIG_FILE)) {
            Ok(data) => Ok(Some(data)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn save(&self, data: &[u8]) -> std::io::Result<()> {
        write_atomically(&self.dir, CONFIG_FILE, data)
    }

    /// Removes everything on the STATE filesystem and flushes it.
    pub fn wipe(&self) -> std::io::Result<()> {
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.file_name().is_some_and(|n| n == "lost+found") {
                continue;
            }
            if path.is_dir() {
                std::fs::remove_dir_all(&path)?
            } else {
                std::fs::remove_file(&path)?
            }
        }
        File::open(&self.dir)?.sync_all()
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(CONFIG_FILE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_labels_of_real_ext4_images() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("state.img");
        File::create(&img).unwrap().set_len(8 << 20).unwrap();
        let status = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", STATE_LABEL])
            .arg(&img)
            .status();
        let Ok(status) = status else {
            panic!("mkfs.ext4 (e2fsprogs) is needed for this test");
        };
        assert!(status.success());
        assert_eq!(read_label(&img).as_deref(), Some(STATE_LABEL));
        let zeros = dir.path().join("zeros.img");
        File::create(&zeros).unwrap().set_len(1 << 20).unwrap();
        assert_eq!(read_label(&zeros), None);
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = ConfigStore::new(dir.path());
        assert_eq!(store.load().unwrap(), None);
        store.save(b"version: v1alpha1\n").unwrap();
        store.save(b"version: v1alpha1\ndebug: true\n").unwrap();
        assert_eq!(
            store.load().unwrap().unwrap(),
            b"version: v1alpha1\ndebug: true\n"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(CONFIG_FILE)]);
        std::fs::create_dir(dir.path().join("lost+found")).unwrap();
        store.wipe().unwrap();
        assert_eq!(store.load().unwrap(), None);
        assert!(dir.path().join("lost+found").exists());
    }
}
