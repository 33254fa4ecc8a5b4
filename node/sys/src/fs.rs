//! Mounts and kernel modules.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{SysError, cstring};

/// One mount(2) call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub source: String,
    pub target: PathBuf,
    pub fstype: String,
    pub flags: MountFlags,
    pub data: String,
}

/// The mount flags the node uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MountFlags {
    pub nosuid: bool,
    pub nodev: bool,
    pub noexec: bool,
    pub relatime: bool,
}

impl MountFlags {
    fn bits(self) -> libc::c_ulong {
        let mut bits = 0;
        if self.nosuid {
            bits |= libc::MS_NOSUID;
        }
        if self.nodev {
            bits |= libc::MS_NODEV;
        }
        if self.noexec {
            bits |= libc::MS_NOEXEC;
        }
        if self.relatime {
            bits |= libc::MS_RELATIME;
        }
        bits
    }
}

pub trait Mounter {
    fn mount(&self, spec: &MountSpec) -> Result<(), SysError>;
    /// Unmounts `target`; EINVAL means nothing is mounted there.
    fn unmount(&self, target: &Path) -> Result<(), SysError>;
}

/// Stops writes to a mounted filesystem (FIFREEZE) so its device can be copied as a
/// consistent whole, and lets them resume (FITHAW).
pub trait Freezer {
    fn freeze(&self, mount_point: &Path) -> Result<(), SysError>;
    fn thaw(&self, mount_point: &Path) -> Result<(), SysError>;
}

/// Loads a kernel module from a file. A module that is already loaded is not an error.
pub trait ModuleLoader {
    fn load_module(&self, path: &Path) -> Result<(), SysError>;
}

/// The real kernel.
#[derive(Debug, Default, Clone, Copy)]
pub struct Linux;

impl Mounter for Linux {
    fn mount(&self, spec: &MountSpec) -> Result<(), SysError> {
        let target_str = spec.target.to_string_lossy();
        let source = cstring("mount", &spec.source)?;
        let target = cstring("mount", &target_str)?;
        let fstype = cstring("mount", &spec.fstype)?;
        let data = cstring("mount", &spec.data)?;
        // SAFETY: every pointer is a valid NUL-terminated C string that outlives the call;
        // mount(2) does not keep them.
        let rc = unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                spec.flags.bits(),
                data.as_ptr().cast(),
            )
        };
        if rc != 0 {
            return Err(SysError::last(
                "mount",
                format!("{} on {target_str} ({})", spec.source, spec.fstype),
            ));
        }
        Ok(())
    }

    fn unmount(&self, target: &Path) -> Result<(), SysError> {
        let display = target.display().to_string();
        let c = cstring("umount", &display)?;
        // SAFETY: `c` is a valid NUL-terminated C string for the duration of the call.
        if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
            return Err(SysError::last("umount", display));
        }
        Ok(())
    }
}

impl ModuleLoader for Linux {
    fn load_module(&self, path: &Path) -> Result<(), SysError> {
        let display = path.display().to_string();
        let file = File::open(path).map_err(|e| SysError::new("open module", &display, e))?;
        let params = c"";
        // SAFETY: the fd is open for the duration of the call and `params` is a static
        // NUL-terminated string; finit_module reads the module from the fd.
        let rc =
            unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EEXIST) {
                return Ok(());
            }
            return Err(SysError::new("finit_module", display, err));
        }
        Ok(())
    }
}

/// `_IOWR('X', 119, int)` and `_IOWR('X', 120, int)` from linux/fs.h.
const FIFREEZE: libc::Ioctl = 0xC004_5877u32 as libc::Ioctl;
const FITHAW: libc::Ioctl = 0xC004_5878u32 as libc::Ioctl;

fn freeze_ioctl(
    mount_point: &Path,
    request: libc::Ioctl,
    op: &'static str,
) -> Result<(), SysError> {
    let display = mount_point.display().to_string();
    let dir = File::open(mount_point).map_err(|e| SysError::new(op, &display, e))?;
    // SAFETY: the fd is open for the call; both requests take no argument (0 is passed as
    // the unused int).
    if unsafe { libc::ioctl(dir.as_raw_fd(), request, 0) } != 0 {
        return Err(SysError::last(op, display));
    }
    Ok(())
}

impl Freezer for Linux {
    fn freeze(&self, mount_point: &Path) -> Result<(), SysError> {
        freeze_ioctl(mount_point, FIFREEZE, "FIFREEZE")
    }

    fn thaw(&self, mount_point: &Path) -> Result<(), SysError> {
        freeze_ioctl(mount_point, FITHAW, "FITHAW")
    }
}

/// Writes every dirty buffer of the filesystem holding `path` (syncfs(2)): on FAT, fsync of
/// a file or directory does not reach the allocation table and directory entries.
pub fn sync_filesystem(path: &Path) -> Result<(), SysError> {
    let display = path.display().to_string();
    let file = File::open(path).map_err(|e| SysError::new("open", &display, e))?;
    // SAFETY: the fd is open for the duration of the call.
    if unsafe { libc::syncfs(file.as_raw_fd()) } != 0 {
        return Err(SysError::last("syncfs", display));
    }
    Ok(())
}

/// Opens a file for reading without blocking (for /dev/kmsg, whose reads block at the end).
pub fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

/// Size and available bytes of the filesystem holding `path`.
pub fn filesystem_space(path: &Path) -> Result<(u64, u64), SysError> {
    let display = path.display().to_string();
    let c = cstring("statvfs", &display)?;
    // SAFETY: statvfs is plain old data; all-zero is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `st` a valid, writable statvfs for the call.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(SysError::last("statvfs", display));
    }
    let block = st.f_frsize;
    Ok((st.f_blocks * block, st.f_bavail * block))
}
