//! Talos API endpoints: `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use crate::ClientError;

/// The apid port used when an endpoint names none.
pub const DEFAULT_PORT: u16 = 50000;

/// Where to dial the Talos API.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    host: String,
    port: u16,
}

impl Endpoint {
    /// An endpoint from its parts; `host` is a DNS name or an IP address without brackets.
    pub fn new(host: impl Into<String>, port: u16) -> Endpoint {
        Endpoint {
            host: host.into(),
            port,
        }
    }

    /// Parses `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address; the port defaults to 50000.
    pub fn parse(text: &str) -> Result<Endpoint, ClientError> {
        let invalid = |reason: &'static str| ClientError::InvalidEndpoint {
            endpoint: text.to_owned(),
            reason,
        };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(invalid("empty"));
        }
        if trimmed.contains("://") || trimmed.contains('/') {
            return Err(invalid("expected host or host:port, not a URL"));
        }

        if let Some(rest) = trimmed.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| invalid("missing closing ']'"))?;
            host.parse::<Ipv6Addr>()
                .map_err(|_| invalid("not an IPv6 address inside brackets"))?;
            let port = match after {
                "" => DEFAULT_PORT,
                _ => {
                    let port = after
                        .strip_prefix(':')
                        .ok_or_else(|| invalid("unexpected text after ']'"))?;
                    parse_port(port).ok_or_else(|| invalid("bad port"))?
                }
            };
            return Ok(Endpoint::new(host, port));
        }

        if trimmed.parse::<Ipv6Addr>().is_ok() {
            return Ok(Endpoint::new(trimmed, DEFAULT_PORT));
        }

        match trimmed.split_once(':') {
            None => Ok(Endpoint::new(trimmed, DEFAULT_PORT)),
            Some((host, port)) => {
                if host.is_empty() {
                    return Err(invalid("empty host"));
                }
                if port.contains(':') {
                    return Err(invalid(
                        "IPv6 addresses with a port need brackets: [addr]:port",
                    ));
                }
                let port = parse_port(port).ok_or_else(|| invalid("bad port"))?;
                Ok(Endpoint::new(host, port))
            }
        }
    }

    /// The host: a DNS name or an IP address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host as an IP address, when it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

fn parse_port(text: &str) -> Option<u16> {
    text.parse::<u16>().ok().filter(|&port| port != 0)
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for Endpoint {
    type Err = ClientError;

    fn from_str(text: &str) -> Result<Endpoint, ClientError> {
        Endpoint::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> (String, u16) {
        let endpoint = Endpoint::parse(text).unwrap();
        (endpoint.host().to_owned(), endpoint.port())
    }

    #[test]
    fn parses_host_forms() {
        assert_eq!(ok("10.0.0.2"), ("10.0.0.2".into(), 50000));
        assert_eq!(ok("10.0.0.2:50010"), ("10.0.0.2".into(), 50010));
        assert_eq!(ok("node-1.example"), ("node-1.example".into(), 50000));
        assert_eq!(ok("node-1.example:443"), ("node-1.example".into(), 443));
        assert_eq!(ok("[fd00::1]:50001"), ("fd00::1".into(), 50001));
        assert_eq!(ok("[fd00::1]"), ("fd00::1".into(), 50000));
        assert_eq!(ok("fd00::1"), ("fd00::1".into(), 50000));
        assert_eq!(ok(" 127.0.0.1:1 "), ("127.0.0.1".into(), 1));
    }

    #[test]
    fn rejects_bad_forms() {
        for bad in [
            "",
            "host:",
            "host:0",
            "host:70000",
            ":50000",
            "[fd00::1",
            "[fd00::1]x",
            "[not-v6]:1",
            "https://host:1",
            "fd00::1:bad:port:zz",
        ] {
            let err = Endpoint::parse(bad).unwrap_err();
            assert!(
                matches!(err, ClientError::InvalidEndpoint { ref endpoint, .. } if endpoint == bad),
                "{bad:?} gave {err}"
            );
        }
    }

    #[test]
    fn displays_round_trip() {
        for text in ["10.0.0.2:50000", "[fd00::1]:50000", "node:1"] {
            assert_eq!(Endpoint::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(
            Endpoint::parse("fd00::1").unwrap().to_string(),
            "[fd00::1]:50000"
        );
    }
}
