//! Block devices: telling the kernel about a partition added to a disk in use.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::SysError;

/// Adds partitions to the kernel's view of a disk. BLKRRPART re-reads the whole table and
/// fails with EBUSY while any partition of the disk is mounted; BLKPG adds just one.
pub trait Partitions {
    /// Partition `number` (its GPT entry index + 1) of `disk`: `len` bytes from `start`.
    fn add_partition(&self, disk: &Path, number: u32, start: u64, len: u64)
    -> Result<(), SysError>;
}

/// `_IO(0x12, 105)` and the ADD operation from linux/blkpg.h.
const BLKPG: libc::Ioctl = 0x1269;
const BLKPG_ADD_PARTITION: libc::c_int = 1;

/// `struct blkpg_partition`.
#[repr(C)]
struct BlkpgPartition {
    start: libc::c_longlong,
    length: libc::c_longlong,
    pno: libc::c_int,
    devname: [libc::c_char; 64],
    volname: [libc::c_char; 64],
}

/// `struct blkpg_ioctl_arg`.
#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

impl Partitions for crate::fs::Linux {
    fn add_partition(
        &self,
        disk: &Path,
        number: u32,
        start: u64,
        len: u64,
    ) -> Result<(), SysError> {
        let target = format!("partition {number} of {}", disk.display());
        let invalid = |what: &str| {
            SysError::new(
                "BLKPG_ADD_PARTITION",
                &target,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, what.to_owned()),
            )
        };
        let mut part = BlkpgPartition {
            start: i64::try_from(start).map_err(|_| invalid("start out of range"))?,
            length: i64::try_from(len).map_err(|_| invalid("length out of range"))?,
            pno: libc::c_int::try_from(number).map_err(|_| invalid("number out of range"))?,
            devname: [0; 64],
            volname: [0; 64],
        };
        let mut arg = BlkpgIoctlArg {
            op: BLKPG_ADD_PARTITION,
            flags: 0,
            datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
            data: (&raw mut part).cast(),
        };
        let file = File::open(disk).map_err(|e| SysError::new("open", &target, e))?;
        // SAFETY: the fd is open for the call; `arg` and the partition it points to are
        // valid, correctly laid out (repr(C) as in linux/blkpg.h) and outlive the call,
        // which only reads them.
        if unsafe { libc::ioctl(file.as_raw_fd(), BLKPG, &raw mut arg) } != 0 {
            return Err(SysError::last("BLKPG_ADD_PARTITION", target));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn structs_are_laid_out_as_linux_blkpg_h() {
        assert_eq!(std::mem::size_of::<BlkpgPartition>(), 152);
        assert_eq!(std::mem::size_of::<BlkpgIoctlArg>(), 24);
        assert_eq!(std::mem::offset_of!(BlkpgPartition, pno), 16);
        assert_eq!(std::mem::offset_of!(BlkpgIoctlArg, data), 16);
    }
}
