//! Kernel device events (uevents), as udev receives them, without udev.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::error::SysError;

/// The kernel's multicast group for uevents.
const KERNEL_GROUP: u32 = 1;
const MAX_EVENT: usize = 8 * 1024;

/// A socket subscribed to the kernel's uevents.
#[derive(Debug)]
pub struct UeventSocket {
    fd: OwnedFd,
}

impl UeventSocket {
    pub fn open() -> Result<UeventSocket, SysError> {
        // SAFETY: socket(2) with constant arguments; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::NETLINK_KOBJECT_UEVENT,
            )
        };
        if fd < 0 {
            return Err(SysError::last("socket", "NETLINK_KOBJECT_UEVENT"));
        }
        // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: a zeroed sockaddr_nl with family and groups set is a valid address; its size
        // is passed with it.
        let rc = unsafe {
            let mut address: libc::sockaddr_nl = std::mem::zeroed();
            address.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            address.nl_groups = KERNEL_GROUP;
            libc::bind(
                fd.as_raw_fd(),
                (&raw const address).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(SysError::last("bind", "uevent group"));
        }
        Ok(UeventSocket { fd })
    }

    /// Blocks until the next event; its `KEY=value` fields (the `action@devpath` line is
    /// dropped, as ACTION and DEVPATH repeat it).
    pub fn next(&self) -> Result<Vec<(String, String)>, SysError> {
        let mut buf = vec![0u8; MAX_EVENT];
        // SAFETY: recv writes at most `buf.len()` bytes into the live buffer.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let n = usize::try_from(n).map_err(|_| SysError::last("recv", "uevent"))?;
        Ok(parse(&buf[..n]))
    }
}

/// The fields of one uevent datagram.
pub fn parse(datagram: &[u8]) -> Vec<(String, String)> {
    datagram
        .split(|b| *b == 0)
        .filter_map(|field| {
            let text = std::str::from_utf8(field).ok()?;
            let (key, value) = text.split_once('=')?;
            Some((key.to_owned(), value.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_and_skips_the_summary_line() {
        let datagram = b"add@/devices/platform/usb1/1-1\0ACTION=add\0DEVPATH=/devices/platform/usb1/1-1\0SUBSYSTEM=usb\0MODALIAS=usb:v0525pA4A2d0000dc02dsc00dp00ic02isc06ip00in00\0SEQNUM=1234\0";
        let fields = parse(datagram);
        assert_eq!(fields[0], ("ACTION".into(), "add".into()));
        assert_eq!(
            fields.iter().find(|(k, _)| k == "MODALIAS").unwrap().1,
            "usb:v0525pA4A2d0000dc02dsc00dp00ic02isc06ip00in00"
        );
        assert_eq!(fields.len(), 5);
    }

    #[test]
    fn opens_a_uevent_socket() {
        UeventSocket::open().unwrap();
    }
}
