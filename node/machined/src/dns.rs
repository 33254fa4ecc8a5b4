//! Just enough DNS to resolve time-server names: one A query over UDP to the nameservers the
//! network handed out.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DnsError {
    #[error("Name {0:?} is not a valid DNS name")]
    BadName(String),
    #[error("No nameserver is configured to resolve {0:?}")]
    NoNameserver(String),
    #[error("No A record for {0:?}")]
    NotFound(String),
    #[error("Malformed DNS answer for {0:?}")]
    Malformed(String),
}

/// A recursive query for the A records of `name`.
pub fn query(id: u16, name: &str) -> Result<Vec<u8>, DnsError> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|l| (1..64).contains(l))
            .ok_or_else(|| DnsError::BadName(name.to_owned()))?;
        q.push(len);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    Ok(q)
}

fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return Some(at + 2),
            l => at += 1 + usize::from(l),
        }
    }
}

/// The IPv4 addresses in an answer to query `id`.
pub fn parse_answer(msg: &[u8], id: u16, name: &str) -> Result<Vec<Ipv4Addr>, DnsError> {
    let bad = || DnsError::Malformed(name.to_owned());
    let header = msg.get(..12).ok_or_else(bad)?;
    if u16::from_be_bytes([header[0], header[1]]) != id || header[2] & 0x80 == 0 {
        return Err(bad());
    }
    let questions = u16::from_be_bytes([header[4], header[5]]);
    let answers = u16::from_be_bytes([header[6], header[7]]);
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(msg, at).ok_or_else(bad)? + 4;
    }
    let mut found = Vec::new();
    for _ in 0..answers {
        at = skip_name(msg, at).ok_or_else(bad)?;
        let fixed = msg.get(at..at + 10).ok_or_else(bad)?;
        let (kind, class) = (
            u16::from_be_bytes([fixed[0], fixed[1]]),
            u16::from_be_bytes([fixed[2], fixed[3]]),
        );
        let len = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let data = msg.get(at + 10..at + 10 + len).ok_or_else(bad)?;
        if kind == 1 && class == 1 && len == 4 {
            found.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += 10 + len;
    }
    if found.is_empty() {
        Err(DnsError::NotFound(name.to_owned()))
    } else {
        Ok(found)
    }
}

/// Nameservers from the `nameserver` lines of a resolv.conf text.
pub fn nameservers(resolv_conf: &str) -> Vec<Ipv4Addr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver")?.trim().parse().ok())
        .collect()
}

/// Resolves `name` with the nameservers in /etc/resolv.conf.
pub async fn resolve(name: &str) -> Result<Vec<Ipv4Addr>, DnsError> {
    let servers = nameservers(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
    if servers.is_empty() {
        return Err(DnsError::NoNameserver(name.to_owned()));
    }
    let id = u16::try_from(std::process::id() & 0xffff).unwrap_or(0x1234) ^ 0x5a5a;
    let q = query(id, name)?;
    let mut last = DnsError::NotFound(name.to_owned());
    for server in servers {
        let Ok(socket) = tokio::net::UdpSocket::bind("0.0.0.0:0").await else {
            continue;
        };
        if socket
            .send_to(&q, SocketAddr::from((server, 53)))
            .await
            .is_err()
        {
            continue;
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_secs(3), socket.recv(&mut buf)).await {
            Ok(Ok(n)) => match parse_answer(&buf[..n], id, name) {
                Ok(addrs) => return Ok(addrs),
                Err(e) => last = e,
            },
            _ => continue,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_query() {
        let q = query(0xbeef, "time.cloudflare.com").unwrap();
        assert_eq!(&q[..4], &[0xbe, 0xef, 0x01, 0x00]);
        assert_eq!(&q[12..17], b"\x04time");
        assert_eq!(&q[q.len() - 5..], &[0, 0, 1, 0, 1]);
        assert!(query(1, "a..b").is_err());
    }

    #[test]
    fn parses_an_answer_with_a_compressed_name() {
        let mut msg = query(7, "ntp.example").unwrap();
        msg[2] = 0x81;
        msg[3] = 0x80;
        msg[7] = 2;
        // A CNAME (skipped), then an A record, both pointing at the question's name.
        msg.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 0xc0, 12]);
        msg.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 162, 159, 200, 1]);
        assert_eq!(
            parse_answer(&msg, 7, "ntp.example").unwrap(),
            vec![Ipv4Addr::new(162, 159, 200, 1)]
        );
        assert!(
            parse_answer(&msg, 8, "ntp.example").is_err(),
            "another query's answer"
        );
        assert!(parse_answer(&msg[..20], 7, "ntp.example").is_err());
    }

    #[test]
    fn reads_nameservers() {
        assert_eq!(
            nameservers("nameserver 10.0.2.3\n# x\nnameserver fe80::1\n"),
            vec![Ipv4Addr::new(10, 0, 2, 3)]
        );
    }
}
