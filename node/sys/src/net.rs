//! IPv4 link, address and route configuration, through rtnetlink.

use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;

use crate::error::{SysError, cstring};
use crate::netlink::{self, RouteSocket};

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

impl NetConfig for crate::fs::Linux {
    fn link_up(&self, link: &str) -> Result<(), SysError> {
        let index = netlink::link_index(link)?;
        RouteSocket::open()?.request(&netlink::link_up(index), &format!("{link} up"))
    }

    /// Adds the address, then removes the link's other IPv4 addresses (a new lease or a new
    /// static address replaces the old one).
    fn set_ipv4(&self, link: &str, addr: Ipv4Addr, prefix: u8) -> Result<(), SysError> {
        let index = netlink::link_index(link)?;
        let mut socket = RouteSocket::open()?;
        socket.request(
            &netlink::add_ipv4(index, addr, prefix),
            &format!("{link} address {addr}/{prefix}"),
        )?;
        for (old, old_prefix) in socket.ipv4_addresses(index)? {
            if (old, old_prefix) != (addr, prefix) {
                socket.request(
                    &netlink::delete_ipv4(index, old, old_prefix),
                    &format!("{link} address {old}/{old_prefix}"),
                )?;
            }
        }
        Ok(())
    }

    fn add_route(
        &self,
        link: &str,
        destination: Ipv4Addr,
        prefix: u8,
        gateway: Ipv4Addr,
    ) -> Result<(), SysError> {
        let index = netlink::link_index(link)?;
        RouteSocket::open()?.request(
            &netlink::add_route(index, destination, prefix, gateway),
            &format!("{link} route {destination}/{prefix} via {gateway}"),
        )
    }

    fn set_mtu(&self, link: &str, mtu: u32) -> Result<(), SysError> {
        let index = netlink::link_index(link)?;
        RouteSocket::open()?.request(&netlink::set_mtu(index, mtu), &format!("{link} MTU {mtu}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::Linux;

    fn in_new_network_namespace<T: Send + 'static>(
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        // SAFETY: geteuid has no arguments and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: creating a network namespace needs root");
            return None;
        }
        let thread = std::thread::spawn(move || {
            // SAFETY: unshare with a constant flag; it moves only this thread to a new,
            // empty network namespace.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "unshare(CLONE_NEWNET)");
            f()
        });
        Some(thread.join().unwrap())
    }

    fn proc_net(file: &str) -> String {
        std::fs::read_to_string(format!("/proc/thread-self/net/{file}")).unwrap()
    }

    #[test]
    fn configures_a_link_through_netlink() {
        let Some(mtu) = in_new_network_namespace(|| {
            let sys = Linux;
            sys.link_up("lo").unwrap();
            sys.set_mtu("lo", 1400).unwrap();
            sys.set_ipv4("lo", Ipv4Addr::new(10, 77, 0, 1), 24).unwrap();
            sys.set_ipv4("lo", Ipv4Addr::new(10, 78, 0, 1), 16).unwrap();
            sys.add_route(
                "lo",
                Ipv4Addr::new(192, 168, 50, 0),
                24,
                Ipv4Addr::UNSPECIFIED,
            )
            .unwrap();
            sys.add_route(
                "lo",
                Ipv4Addr::new(172, 16, 0, 0),
                12,
                Ipv4Addr::new(10, 78, 0, 9),
            )
            .unwrap();
            sys.add_route("lo", Ipv4Addr::UNSPECIFIED, 0, Ipv4Addr::new(10, 78, 0, 9))
                .unwrap();
            let index = netlink::link_index("lo").unwrap();
            let addresses = RouteSocket::open().unwrap().ipv4_addresses(index).unwrap();
            let routes = proc_net("route");
            let err = sys.set_mtu("nope0", 1500).unwrap_err();
            (addresses, routes, err.to_string(), mtu_of("lo"))
        }) else {
            return;
        };
        let (addresses, routes, err, lo_mtu) = mtu;
        // 127.0.0.1 went away with the others: set_ipv4 leaves exactly one IPv4 address.
        assert_eq!(addresses, [(Ipv4Addr::new(10, 78, 0, 1), 16)]);
        // /proc/net/route: destination and gateway in little-endian hex.
        assert!(routes.contains("lo\t0032A8C0\t00000000"), "{routes}");
        assert!(routes.contains("lo\t000010AC\t09004E0A"), "{routes}");
        assert!(routes.contains("lo\t00000000\t09004E0A"), "{routes}");
        assert_eq!(err, "if_nametoindex nope0");
        assert_eq!(lo_mtu, 1400);
    }

    fn mtu_of(link: &str) -> i32 {
        // SAFETY: ifreq is plain old data; all-zero is valid. The socket and the request are
        // live for the ioctl, which fills ifru_mtu.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
            let mut req: libc::ifreq = std::mem::zeroed();
            for (dst, src) in req.ifr_name.iter_mut().zip(link.bytes()) {
                *dst = src as libc::c_char;
            }
            assert_eq!(libc::ioctl(fd, libc::SIOCGIFMTU, &raw mut req), 0);
            libc::close(fd);
            req.ifr_ifru.ifru_mtu
        }
    }
}
