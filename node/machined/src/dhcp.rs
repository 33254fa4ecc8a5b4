//! A DHCPv4 client: DISCOVER, OFFER, REQUEST, ACK, and renewal, over a UDP socket bound to the link.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable};
use tokio::time::{Instant, timeout_at};

const CLIENT_PORT: u16 = 68;
const SERVER_PORT: u16 = 67;

/// What the server granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub hostname: Option<String>,
    pub lease_time: Duration,
    pub server: Ipv4Addr,
}

#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("DHCP socket on {link}")]
    Socket {
        link: String,
        #[source]
        source: std::io::Error,
    },
    #[error("DHCP socket on {link}")]
    Bind {
        link: String,
        #[source]
        source: talos_node_sys::SysError,
    },
    #[error("No DHCP {expected} on {link} within {waited:?}")]
    Timeout {
        link: String,
        expected: &'static str,
        waited: Duration,
    },
    #[error("DHCP server {server} refused the lease on {link} (NAK)")]
    Refused { link: String, server: Ipv4Addr },
}

fn request_list() -> DhcpOption {
    DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::Hostname,
        OptionCode::AddressLeaseTime,
    ])
}

pub fn discover(xid: u32, mac: &[u8; 6]) -> Message {
    let mut msg = Message::new_with_id(
        xid,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        mac,
    );
    msg.set_flags(Flags::default().set_broadcast());
    msg.opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Discover));
    msg.opts_mut().insert(request_list());
    msg
}

/// A REQUEST for `address`: selecting an offer (with `server`) or renewing (`ciaddr` set).
pub fn request(xid: u32, mac: &[u8; 6], address: Ipv4Addr, server: Option<Ipv4Addr>) -> Message {
    let ciaddr = if server.is_none() {
        address
    } else {
        Ipv4Addr::UNSPECIFIED
    };
    let mut msg = Message::new_with_id(
        xid,
        ciaddr,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        mac,
    );
    msg.set_flags(Flags::default().set_broadcast());
    msg.opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Request));
    if let Some(server) = server {
        msg.opts_mut()
            .insert(DhcpOption::RequestedIpAddress(address));
        msg.opts_mut().insert(DhcpOption::ServerIdentifier(server));
    }
    msg.opts_mut().insert(request_list());
    msg
}

/// Reads a reply to our `xid` into a lease, if it is the `wanted` kind.
pub fn parse_reply(bytes: &[u8], xid: u32, wanted: MessageType) -> Option<Result<Lease, Ipv4Addr>> {
    let msg = Message::decode(&mut Decoder::new(bytes)).ok()?;
    if msg.opcode() != Opcode::BootReply || msg.xid() != xid {
        return None;
    }
    let opts = msg.opts();
    let server = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) => *s,
        _ => msg.siaddr(),
    };
    let kind = opts.msg_type()?;
    if kind == MessageType::Nak {
        return Some(Err(server));
    }
    if kind != wanted {
        return None;
    }
    let prefix = match opts.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(mask)) => {
            u8::try_from(u32::from(*mask).leading_ones()).unwrap_or(32)
        }
        _ => 24,
    };
    let router = match opts.get(OptionCode::Router) {
        Some(DhcpOption::Router(r)) => r.first().copied(),
        _ => None,
    };
    let dns = match opts.get(OptionCode::DomainNameServer) {
        Some(DhcpOption::DomainNameServer(d)) => d.clone(),
        _ => Vec::new(),
    };
    let hostname = match opts.get(OptionCode::Hostname) {
        Some(DhcpOption::Hostname(h)) if !h.is_empty() => Some(h.clone()),
        _ => None,
    };
    let lease_time = match opts.get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(secs)) => Duration::from_secs(u64::from(*secs)),
        _ => Duration::from_secs(3600),
    };
    Some(Ok(Lease {
        address: msg.yiaddr(),
        prefix,
        router,
        dns,
        hostname,
        lease_time,
        server,
    }))
}

/// A DHCP conversation on one link.
#[derive(Debug)]
pub struct Client {
    link: String,
    mac: [u8; 6],
    socket: tokio::net::UdpSocket,
}

impl Client {
    pub fn new(link: &str, mac: [u8; 6]) -> Result<Self, DhcpError> {
        let io = |source| DhcpError::Socket {
            link: link.to_owned(),
            source,
        };
        let std_socket =
            UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT)).map_err(io)?;
        talos_node_sys::net::bind_to_device(&std_socket, link).map_err(|source| {
            DhcpError::Bind {
                link: link.to_owned(),
                source,
            }
        })?;
        std_socket.set_broadcast(true).map_err(io)?;
        std_socket.set_nonblocking(true).map_err(io)?;
        let socket = tokio::net::UdpSocket::from_std(std_socket).map_err(io)?;
        Ok(Self {
            link: link.to_owned(),
            mac,
            socket,
        })
    }

    async fn exchange(
        &self,
        msg: &Message,
        wanted: MessageType,
        wait: Duration,
    ) -> Result<Lease, DhcpError> {
        let bytes = msg
            .to_vec()
            .expect("a DHCP message we built always encodes");
        let broadcast = SocketAddrV4::new(Ipv4Addr::BROADCAST, SERVER_PORT);
        let io = |source| DhcpError::Socket {
            link: self.link.clone(),
            source,
        };
        self.socket.send_to(&bytes, broadcast).await.map_err(io)?;
        let deadline = Instant::now() + wait;
        let mut buf = vec![0u8; 1500];
        loop {
            let received = timeout_at(deadline, self.socket.recv_from(&mut buf)).await;
            let Ok(received) = received else {
                return Err(DhcpError::Timeout {
                    link: self.link.clone(),
                    expected: if wanted == MessageType::Offer {
                        "OFFER"
                    } else {
                        "ACK"
                    },
                    waited: wait,
                });
            };
            let (n, _) = received.map_err(io)?;
            match parse_reply(&buf[..n], msg.xid(), wanted) {
                Some(Ok(lease)) => return Ok(lease),
                Some(Err(server)) => {
                    return Err(DhcpError::Refused {
                        link: self.link.clone(),
                        server,
                    });
                }
                None => {}
            }
        }
    }

    /// Runs DISCOVER → OFFER → REQUEST → ACK once.
    pub async fn acquire(&self, xid: u32, wait: Duration) -> Result<Lease, DhcpError> {
        let offer = self
            .exchange(&discover(xid, &self.mac), MessageType::Offer, wait)
            .await?;
        self.exchange(
            &request(xid, &self.mac, offer.address, Some(offer.server)),
            MessageType::Ack,
            wait,
        )
        .await
    }

    /// Asks to extend `lease`.
    pub async fn renew(&self, xid: u32, lease: &Lease, wait: Duration) -> Result<Lease, DhcpError> {
        self.exchange(
            &request(xid, &self.mac, lease.address, None),
            MessageType::Ack,
            wait,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    fn server_reply(xid: u32, kind: MessageType) -> Vec<u8> {
        let mut msg = Message::new_with_id(
            xid,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::new(10, 0, 2, 15),
            Ipv4Addr::new(10, 0, 2, 2),
            Ipv4Addr::UNSPECIFIED,
            &MAC,
        );
        msg.set_opcode(Opcode::BootReply);
        let opts = msg.opts_mut();
        opts.insert(DhcpOption::MessageType(kind));
        opts.insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 2, 2)));
        opts.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        opts.insert(DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 2, 2)]));
        opts.insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(
            10, 0, 2, 3,
        )]));
        opts.insert(DhcpOption::AddressLeaseTime(86_400));
        msg.to_vec().unwrap()
    }

    #[test]
    fn discover_is_a_broadcast_request_with_our_mac() {
        let bytes = discover(7, &MAC).to_vec().unwrap();
        let msg = Message::decode(&mut Decoder::new(&bytes)).unwrap();
        assert_eq!(msg.opcode(), Opcode::BootRequest);
        assert_eq!(msg.opts().msg_type(), Some(MessageType::Discover));
        assert!(msg.flags().broadcast());
        assert_eq!(&msg.chaddr()[..6], &MAC);
    }

    #[test]
    fn selecting_request_names_the_server_and_address() {
        let msg = request(
            7,
            &MAC,
            Ipv4Addr::new(10, 0, 2, 15),
            Some(Ipv4Addr::new(10, 0, 2, 2)),
        );
        assert_eq!(
            msg.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 2, 15)))
        );
        assert_eq!(msg.ciaddr(), Ipv4Addr::UNSPECIFIED);
        let renewal = request(8, &MAC, Ipv4Addr::new(10, 0, 2, 15), None);
        assert_eq!(renewal.ciaddr(), Ipv4Addr::new(10, 0, 2, 15));
        assert!(renewal.opts().get(OptionCode::ServerIdentifier).is_none());
    }

    #[test]
    fn an_ack_becomes_a_lease() {
        let lease = parse_reply(&server_reply(9, MessageType::Ack), 9, MessageType::Ack)
            .unwrap()
            .unwrap();
        assert_eq!(
            lease,
            Lease {
                address: Ipv4Addr::new(10, 0, 2, 15),
                prefix: 24,
                router: Some(Ipv4Addr::new(10, 0, 2, 2)),
                dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
                hostname: None,
                lease_time: Duration::from_secs(86_400),
                server: Ipv4Addr::new(10, 0, 2, 2),
            }
        );
    }

    #[test]
    fn other_transactions_and_kinds_are_ignored_and_nak_is_refusal() {
        assert!(parse_reply(&server_reply(9, MessageType::Ack), 10, MessageType::Ack).is_none());
        assert!(parse_reply(&server_reply(9, MessageType::Offer), 9, MessageType::Ack).is_none());
        assert_eq!(
            parse_reply(&server_reply(9, MessageType::Nak), 9, MessageType::Ack),
            Some(Err(Ipv4Addr::new(10, 0, 2, 2)))
        );
        assert!(parse_reply(b"short", 9, MessageType::Ack).is_none());
    }
}
