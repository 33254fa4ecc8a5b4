//! Loop devices: a file attached read-only to a free `/dev/loopN`.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::SysError;
use crate::fs::Linux;

const LOOP_CONTROL: &str = "/dev/loop-control";

/// From linux/loop.h.
const LOOP_CONFIGURE: libc::Ioctl = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::Ioctl = 0x4C82;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;
/// Another process may take the free device between the two ioctls; then ask again.
const ATTEMPTS: usize = 3;

/// `struct loop_info64`.
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; LO_NAME_SIZE],
    crypt_name: [u8; LO_NAME_SIZE],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

/// `struct loop_config`, for LOOP_CONFIGURE (Linux 5.8+): fd and status in one call.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

/// An attached loop device. Keep it until the device is mounted: the kernel detaches the
/// file when the last open handle closes and no mount holds the device (autoclear).
#[derive(Debug)]
pub struct LoopDevice {
    pub path: PathBuf,
    _open: Option<File>,
}

impl LoopDevice {
    pub(crate) fn new(path: PathBuf, open: Option<File>) -> Self {
        Self { path, _open: open }
    }
}

/// Attaches files to loop devices.
pub trait LoopDevices {
    /// Attaches `file` read-only to a free loop device, which detaches itself once its last
    /// user (the returned handle, then a mount) lets go of it.
    fn attach_read_only(&self, file: &Path) -> Result<LoopDevice, SysError>;
}

impl LoopDevices for Linux {
    fn attach_read_only(&self, file: &Path) -> Result<LoopDevice, SysError> {
        let display = file.display().to_string();
        let backing = File::open(file).map_err(|e| SysError::new("open", &display, e))?;
        let control = OpenOptions::new()
            .read(true)
            .write(true)
            .open(LOOP_CONTROL)
            .map_err(|e| SysError::new("open", LOOP_CONTROL, e))?;
        let config = config(&backing, &display);
        let mut busy = None;
        for _ in 0..ATTEMPTS {
            // SAFETY: the fd is open for the call; LOOP_CTL_GET_FREE takes no argument.
            let number = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
            if number < 0 {
                return Err(SysError::last("LOOP_CTL_GET_FREE", LOOP_CONTROL));
            }
            let device = PathBuf::from(format!("/dev/loop{number}"));
            let device_name = device.display().to_string();
            let loop_file =
                File::open(&device).map_err(|e| SysError::new("open", &device_name, e))?;
            // SAFETY: both fds are open for the call and `config` is a valid, initialised
            // loop_config that the kernel only reads.
            let rc = unsafe {
                libc::ioctl(
                    loop_file.as_raw_fd(),
                    LOOP_CONFIGURE,
                    std::ptr::from_ref(&config),
                )
            };
            if rc == 0 {
                return Ok(LoopDevice::new(device, Some(loop_file)));
            }
            let err = SysError::last("LOOP_CONFIGURE", format!("{display} on {device_name}"));
            if err.errno() != Some(libc::EBUSY) {
                return Err(err);
            }
            busy = Some(err);
        }
        Err(busy.expect("at least one attempt was made"))
    }
}

fn config(backing: &File, name: &str) -> LoopConfig {
    let mut file_name = [0u8; LO_NAME_SIZE];
    // The kernel keeps this for display only; it must stay NUL-terminated.
    let shown = &name.as_bytes()[..name.len().min(LO_NAME_SIZE - 1)];
    file_name[..shown.len()].copy_from_slice(shown);
    LoopConfig {
        fd: u32::try_from(backing.as_raw_fd()).expect("open fds are not negative"),
        block_size: 0,
        info: LoopInfo64 {
            device: 0,
            inode: 0,
            rdevice: 0,
            offset: 0,
            sizelimit: 0,
            number: 0,
            encrypt_type: 0,
            encrypt_key_size: 0,
            flags: LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR,
            file_name,
            crypt_name: [0; LO_NAME_SIZE],
            encrypt_key: [0; 32],
            init: [0; 2],
        },
        reserved: [0; 8],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_the_file_read_only_and_autoclear() {
        let file = File::open("/proc/self/cmdline").unwrap();
        let config = config(&file, &"x".repeat(100));
        assert_eq!(config.fd, u32::try_from(file.as_raw_fd()).unwrap());
        assert_eq!(config.info.flags, LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR);
        assert_eq!(config.info.file_name[..63], [b'x'; 63]);
        assert_eq!(config.info.file_name[63], 0);
    }
}
