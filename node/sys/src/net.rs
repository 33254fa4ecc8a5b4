//! IPv4 link and address configuration through the classic socket ioctls.

use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::error::{SysError, cstring};

pub trait NetConfig {
    fn link_up(&self, link: &str) -> Result<(), SysError>;
    /// Sets the link's primary IPv4 address and prefix length.
    fn set_ipv4(&self, link: &str, addr: Ipv4Addr, prefix: u8) -> Result<(), SysError>;
    /// Adds a route to `destination/prefix` via `gateway` (0.0.0.0/0 is the default route).
    fn add_route(
        &self,
        link: &str,
        destination: Ipv4Addr,
        prefix: u8,
        gateway: Ipv4Addr,
    ) -> Result<(), SysError>;
    fn set_mtu(&self, link: &str, mtu: u32) -> Result<(), SysError>;
}

/// Restricts a socket to one link, so DHCP works before the link has an address.
pub fn bind_to_device(socket: &UdpSocket, link: &str) -> Result<(), SysError> {
    let name = cstring("SO_BINDTODEVICE", link)?;
    let bytes = name.as_bytes_with_nul();
    let len = libc::socklen_t::try_from(bytes.len()).map_err(|_| {
        SysError::new(
            "SO_BINDTODEVICE",
            link,
            std::io::Error::other("name too long"),
        )
    })?;
    // SAFETY: the option value is a valid buffer of `len` bytes for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            bytes.as_ptr().cast(),
            len,
        )
    };
    if rc != 0 {
        return Err(SysError::last("SO_BINDTODEVICE", link));
    }
    Ok(())
}

fn control_socket() -> Result<OwnedFd, SysError> {
    // SAFETY: socket(2) with constant arguments; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(SysError::last("socket", "AF_INET control socket"));
    }
    // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifreq_for(link: &str) -> Result<libc::ifreq, SysError> {
    if link.is_empty() || link.len() >= libc::IFNAMSIZ {
        return Err(SysError::new(
            "ifreq",
            link,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "bad interface name"),
        ));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(link.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn sockaddr_in(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size on Linux; the kernel reads the
    // family field to interpret the rest.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ioctl(
    fd: &OwnedFd,
    request: libc::Ioctl,
    arg: *mut libc::c_void,
    op: &'static str,
    link: &str,
) -> Result<(), SysError> {
    // SAFETY: callers pass a pointer to a live, correctly typed request structure for `request`.
    if unsafe { libc::ioctl(fd.as_raw_fd(), request, arg) } != 0 {
        return Err(SysError::last(op, link));
    }
    Ok(())
}

pub fn prefix_to_netmask(prefix: u8) -> Ipv4Addr {
    let bits = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    Ipv4Addr::from(bits)
}

impl NetConfig for crate::fs::Linux {
    fn link_up(&self, link: &str) -> Result<(), SysError> {
        let fd = control_socket()?;
        let mut req = ifreq_for(link)?;
        ioctl(
            &fd,
            libc::SIOCGIFFLAGS,
            (&raw mut req).cast(),
            "SIOCGIFFLAGS",
            link,
        )?;
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
        ioctl(
            &fd,
            libc::SIOCSIFFLAGS,
            (&raw mut req).cast(),
            "SIOCSIFFLAGS",
            link,
        )
    }

    fn set_ipv4(&self, link: &str, addr: Ipv4Addr, prefix: u8) -> Result<(), SysError> {
        let fd = control_socket()?;
        let mut req = ifreq_for(link)?;
        req.ifr_ifru.ifru_addr = sockaddr_in(addr);
        ioctl(
            &fd,
            libc::SIOCSIFADDR,
            (&raw mut req).cast(),
            "SIOCSIFADDR",
            link,
        )?;
        let mut req = ifreq_for(link)?;
        req.ifr_ifru.ifru_netmask = sockaddr_in(prefix_to_netmask(prefix));
        ioctl(
            &fd,
            libc::SIOCSIFNETMASK,
            (&raw mut req).cast(),
            "SIOCSIFNETMASK",
            link,
        )
    }

    fn add_route(
        &self,
        link: &str,
        destination: Ipv4Addr,
        prefix: u8,
        gateway: Ipv4Addr,
    ) -> Result<(), SysError> {
        let fd = control_socket()?;
        let dev = cstring("SIOCADDRT", link)?;
        // SAFETY: rtentry is plain old data; all-zero is a valid value.
        let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
        rt.rt_dst = sockaddr_in(destination);
        rt.rt_genmask = sockaddr_in(prefix_to_netmask(prefix));
        rt.rt_gateway = sockaddr_in(gateway);
        rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
        rt.rt_dev = dev.as_ptr().cast_mut();
        match ioctl(
            &fd,
            libc::SIOCADDRT,
            (&raw mut rt).cast(),
            "SIOCADDRT",
            link,
        ) {
            Err(e) if e.errno() == Some(libc::EEXIST) => Ok(()),
            other => other,
        }
    }

    fn set_mtu(&self, link: &str, mtu: u32) -> Result<(), SysError> {
        let fd = control_socket()?;
        let mut req = ifreq_for(link)?;
        req.ifr_ifru.ifru_mtu = libc::c_int::try_from(mtu).map_err(|_| {
            SysError::new(
                "SIOCSIFMTU",
                link,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "MTU too large"),
            )
        })?;
        ioctl(
            &fd,
            libc::SIOCSIFMTU,
            (&raw mut req).cast(),
            "SIOCSIFMTU",
            link,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmask_from_prefix() {
        assert_eq!(prefix_to_netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(prefix_to_netmask(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(prefix_to_netmask(32), Ipv4Addr::BROADCAST);
        assert_eq!(prefix_to_netmask(20), Ipv4Addr::new(255, 255, 240, 0));
    }

    #[test]
    fn interface_names_are_checked() {
        assert!(ifreq_for("").is_err());
        assert!(ifreq_for("a-very-long-interface-name").is_err());
        assert!(ifreq_for("eth0").is_ok());
    }
}
