//! rtnetlink: links, IPv4 addresses and routes, as `ip` sets them. Messages are encoded here
//! (headers and attributes are a few fixed layouts) and acknowledged one by one.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::error::{SysError, cstring};

const HEADER_LEN: usize = 16;
const RECEIVE_BUFFER: usize = 32 * 1024;

fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// One request: header, fixed body, then attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    kind: u16,
    flags: u16,
    body: Vec<u8>,
    attributes: Vec<(u16, Vec<u8>)>,
}

impl Message {
    fn new(kind: u16, flags: u16, body: Vec<u8>) -> Message {
        Message {
            kind,
            flags: flags | libc::NLM_F_REQUEST as u16,
            body,
            attributes: Vec::new(),
        }
    }

    fn attribute(mut self, kind: u16, value: impl Into<Vec<u8>>) -> Message {
        self.attributes.push((kind, value.into()));
        self
    }

    /// The bytes sent with sequence number `seq`.
    pub fn encode(&self, seq: u32) -> Vec<u8> {
        let mut out = vec![0u8; HEADER_LEN];
        out.extend_from_slice(&self.body);
        out.resize(align(out.len()), 0);
        for (kind, value) in &self.attributes {
            let len = 4 + value.len();
            out.extend_from_slice(&(len as u16).to_ne_bytes());
            out.extend_from_slice(&kind.to_ne_bytes());
            out.extend_from_slice(value);
            out.resize(align(out.len()), 0);
        }
        let total = out.len() as u32;
        out[0..4].copy_from_slice(&total.to_ne_bytes());
        out[4..6].copy_from_slice(&self.kind.to_ne_bytes());
        out[6..8].copy_from_slice(&self.flags.to_ne_bytes());
        out[8..12].copy_from_slice(&seq.to_ne_bytes());
        out
    }
}

/// `struct ifinfomsg`.
fn link_body(index: u32, flags: u32, change: u32) -> Vec<u8> {
    let mut body = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
    body.extend_from_slice(&(index as i32).to_ne_bytes());
    body.extend_from_slice(&flags.to_ne_bytes());
    body.extend_from_slice(&change.to_ne_bytes());
    body
}

/// `struct ifaddrmsg` for IPv4.
fn address_body(index: u32, prefix: u8) -> Vec<u8> {
    let mut body = vec![libc::AF_INET as u8, prefix, 0, libc::RT_SCOPE_UNIVERSE];
    body.extend_from_slice(&index.to_ne_bytes());
    body
}

pub fn link_up(index: u32) -> Message {
    let up = libc::IFF_UP as u32;
    Message::new(
        libc::RTM_NEWLINK,
        libc::NLM_F_ACK as u16,
        link_body(index, up, up),
    )
}

pub fn set_mtu(index: u32, mtu: u32) -> Message {
    Message::new(
        libc::RTM_NEWLINK,
        libc::NLM_F_ACK as u16,
        link_body(index, 0, 0),
    )
    .attribute(libc::IFLA_MTU, mtu.to_ne_bytes())
}

pub fn add_ipv4(index: u32, addr: Ipv4Addr, prefix: u8) -> Message {
    let flags = libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_REPLACE;
    let mut message = Message::new(libc::RTM_NEWADDR, flags as u16, address_body(index, prefix))
        .attribute(libc::IFA_LOCAL, addr.octets())
        .attribute(libc::IFA_ADDRESS, addr.octets());
    if prefix < 31 {
        let host_bits = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
        let broadcast = Ipv4Addr::from(u32::from(addr) | host_bits);
        message = message.attribute(libc::IFA_BROADCAST, broadcast.octets());
    }
    message
}

pub fn delete_ipv4(index: u32, addr: Ipv4Addr, prefix: u8) -> Message {
    Message::new(
        libc::RTM_DELADDR,
        libc::NLM_F_ACK as u16,
        address_body(index, prefix),
    )
    .attribute(libc::IFA_LOCAL, addr.octets())
}

fn dump_ipv4_addresses() -> Message {
    Message::new(
        libc::RTM_GETADDR,
        libc::NLM_F_DUMP as u16,
        address_body(0, 0),
    )
}

/// A route in the main table; without a gateway the destination is on the link.
pub fn add_route(index: u32, destination: Ipv4Addr, prefix: u8, gateway: Ipv4Addr) -> Message {
    let on_link = gateway.is_unspecified();
    let scope = if on_link {
        libc::RT_SCOPE_LINK
    } else {
        libc::RT_SCOPE_UNIVERSE
    };
    let body = vec![
        libc::AF_INET as u8,
        prefix,
        0,
        0,
        libc::RT_TABLE_MAIN,
        libc::RTPROT_STATIC,
        scope,
        libc::RTN_UNICAST,
        0,
        0,
        0,
        0,
    ];
    let flags = libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_REPLACE;
    let mut message = Message::new(libc::RTM_NEWROUTE, flags as u16, body)
        .attribute(libc::RTA_OIF, index.to_ne_bytes());
    if prefix > 0 {
        message = message.attribute(libc::RTA_DST, destination.octets());
    }
    if !on_link {
        message = message.attribute(libc::RTA_GATEWAY, gateway.octets());
    }
    message
}

/// One message of a reply: its type and payload after the header.
fn replies(buf: &[u8]) -> Vec<(u16, u32, &[u8])> {
    let mut out = Vec::new();
    let mut rest = buf;
    while rest.len() >= HEADER_LEN {
        let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap_or_default()) as usize;
        if len < HEADER_LEN || len > rest.len() {
            break;
        }
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        let seq = u32::from_ne_bytes(rest[8..12].try_into().unwrap_or_default());
        out.push((kind, seq, &rest[HEADER_LEN..len]));
        rest = &rest[align(len).min(rest.len())..];
    }
    out
}

/// IPv4 addresses of link `index` in an RTM_NEWADDR payload.
fn parse_address(payload: &[u8], index: u32) -> Option<(Ipv4Addr, u8)> {
    if payload.len() < 8 || payload[0] != libc::AF_INET as u8 {
        return None;
    }
    let prefix = payload[1];
    if u32::from_ne_bytes(payload[4..8].try_into().ok()?) != index {
        return None;
    }
    let mut rest = &payload[8..];
    while rest.len() >= 4 {
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let kind = u16::from_ne_bytes([rest[2], rest[3]]);
        if len < 4 || len > rest.len() {
            return None;
        }
        if kind == libc::IFA_LOCAL && len == 8 {
            let octets: [u8; 4] = rest[4..8].try_into().ok()?;
            return Some((Ipv4Addr::from(octets), prefix));
        }
        rest = &rest[align(len).min(rest.len())..];
    }
    None
}

/// The outcome an NLMSG_ERROR payload carries: error code 0 is an acknowledgement.
fn acknowledged(payload: &[u8], what: &str) -> Result<(), SysError> {
    let code = payload
        .get(..4)
        .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    if code == 0 {
        return Ok(());
    }
    Err(SysError::new(
        "netlink",
        what,
        std::io::Error::from_raw_os_error(-code),
    ))
}

/// A NETLINK_ROUTE socket in the calling thread's network namespace.
#[derive(Debug)]
pub struct RouteSocket {
    fd: OwnedFd,
    seq: u32,
}

impl RouteSocket {
    pub fn open() -> Result<RouteSocket, SysError> {
        // SAFETY: socket(2) with constant arguments; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(SysError::last("socket", "NETLINK_ROUTE"));
        }
        // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(RouteSocket { fd, seq: 0 })
    }

    fn send(&mut self, message: &Message, what: &str) -> Result<u32, SysError> {
        self.seq = self.seq.wrapping_add(1);
        let bytes = message.encode(self.seq);
        // SAFETY: the buffer is live for the call and its length is passed with it; a zeroed
        // sockaddr_nl addresses the kernel.
        let sent = unsafe {
            let mut kernel: libc::sockaddr_nl = std::mem::zeroed();
            kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            libc::sendto(
                self.fd.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&raw const kernel).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(SysError::last("netlink send", what));
        }
        Ok(self.seq)
    }

    fn receive(&self, buf: &mut [u8], what: &str) -> Result<usize, SysError> {
        // SAFETY: recv writes at most `buf.len()` bytes into the live buffer.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        usize::try_from(n).map_err(|_| SysError::last("netlink receive", what))
    }

    /// Sends `message` and waits for its acknowledgement; `what` names it in errors.
    pub fn request(&mut self, message: &Message, what: &str) -> Result<(), SysError> {
        let seq = self.send(message, what)?;
        let mut buf = vec![0u8; RECEIVE_BUFFER];
        loop {
            let n = self.receive(&mut buf, what)?;
            for (kind, reply_seq, payload) in replies(&buf[..n]) {
                if kind == libc::NLMSG_ERROR as u16 && reply_seq == seq {
                    return acknowledged(payload, what);
                }
            }
        }
    }

    /// The IPv4 addresses of link `index`.
    pub fn ipv4_addresses(&mut self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>, SysError> {
        let what = "listing IPv4 addresses";
        let seq = self.send(&dump_ipv4_addresses(), what)?;
        let mut found = Vec::new();
        let mut buf = vec![0u8; RECEIVE_BUFFER];
        loop {
            let n = self.receive(&mut buf, what)?;
            for (kind, reply_seq, payload) in replies(&buf[..n]) {
                if reply_seq != seq {
                    continue;
                }
                match kind {
                    k if k == libc::NLMSG_DONE as u16 => return Ok(found),
                    k if k == libc::NLMSG_ERROR as u16 => {
                        return acknowledged(payload, what).map(|()| found);
                    }
                    k if k == libc::RTM_NEWADDR => found.extend(parse_address(payload, index)),
                    _ => {}
                }
            }
        }
    }
}

/// The index of link `name`.
pub fn link_index(name: &str) -> Result<u32, SysError> {
    let c = cstring("if_nametoindex", name)?;
    // SAFETY: the pointer is to a live, NUL-terminated CString.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(SysError::last("if_nametoindex", name)),
        index => Ok(index),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_an_address_request_like_ip_addr_add() {
        let bytes = add_ipv4(2, Ipv4Addr::new(10, 0, 2, 15), 24).encode(7);
        // Header: length, RTM_NEWADDR, REQUEST|ACK|REPLACE|CREATE, seq 7, port 0.
        assert_eq!(u32::from_ne_bytes(bytes[0..4].try_into().unwrap()), 48);
        assert_eq!(u16::from_ne_bytes([bytes[4], bytes[5]]), 20);
        assert_eq!(u16::from_ne_bytes([bytes[6], bytes[7]]), 0x0505);
        assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().unwrap()), 7);
        // ifaddrmsg: AF_INET, /24, flags 0, universe scope, index 2.
        assert_eq!(&bytes[16..20], &[2, 24, 0, 0]);
        assert_eq!(u32::from_ne_bytes(bytes[20..24].try_into().unwrap()), 2);
        // IFA_LOCAL, IFA_ADDRESS, IFA_BROADCAST: 8 bytes each.
        assert_eq!(&bytes[24..32], &[8, 0, 2, 0, 10, 0, 2, 15][..]);
        assert_eq!(&bytes[32..40], &[8, 0, 1, 0, 10, 0, 2, 15][..]);
        assert_eq!(&bytes[40..48], &[8, 0, 4, 0, 10, 0, 2, 255][..]);
    }

    #[test]
    fn routes_without_a_gateway_are_on_link() {
        let via = add_route(3, Ipv4Addr::UNSPECIFIED, 0, Ipv4Addr::new(10, 0, 2, 2)).encode(1);
        // rtmsg: AF_INET, /0, main table, static, universe, unicast; then RTA_OIF, RTA_GATEWAY.
        assert_eq!(&via[16..24], &[2, 0, 0, 0, 254, 4, 0, 1]);
        assert_eq!(&via[28..36], &[8, 0, 4, 0, 3, 0, 0, 0][..]);
        assert_eq!(&via[36..44], &[8, 0, 5, 0, 10, 0, 2, 2][..]);
        assert_eq!(via.len(), 44);
        let on_link =
            add_route(3, Ipv4Addr::new(192, 168, 7, 0), 24, Ipv4Addr::UNSPECIFIED).encode(1);
        assert_eq!(&on_link[16..24], &[2, 24, 0, 0, 254, 4, 253, 1]);
        assert_eq!(&on_link[36..44], &[8, 0, 1, 0, 192, 168, 7, 0][..]);
        assert_eq!(on_link.len(), 44);
    }

    #[test]
    fn parses_replies_and_addresses() {
        let reply = add_ipv4(5, Ipv4Addr::new(192, 168, 1, 9), 16).encode(3);
        let parsed = replies(&reply);
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].0, libc::RTM_NEWADDR);
        assert_eq!(
            parse_address(parsed[0].2, 5),
            Some((Ipv4Addr::new(192, 168, 1, 9), 16))
        );
        assert_eq!(parse_address(parsed[0].2, 6), None);
        assert!(replies(&reply[..20]).is_empty());
    }
}
