//! Machine configs from the kernel command line: fetched from the `talos.config=` URL (with
//! upstream's `${uuid}`, `${serial}`, `${mac}`, `${hostname}` and `${code}` in query values), or
//! carried inline by `talos.config.early=` / `talos.config.inline=`.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use talos_machinery::codec::MAX_CONFIG_BYTES;

use crate::dns::DnsError;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("talos.config={url:?}: {reason}")]
    Url { url: String, reason: &'static str },
    #[error("talos.config={url}: ${{{name}}} has no value on this node yet ({reason})")]
    Variable {
        url: String,
        name: &'static str,
        reason: &'static str,
    },
    #[error("talos.config={url}: resolving the host")]
    Resolve {
        url: String,
        #[source]
        source: DnsError,
    },
    #[error("talos.config={url}: connecting to {addr}")]
    Connect {
        url: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("talos.config={url}: TLS handshake with {addr} failed")]
    Tls {
        url: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("talos.config={url}: HTTP exchange failed")]
    Http {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("talos.config={url}: server answered {status}")]
    Status {
        url: String,
        status: http::StatusCode,
    },
    #[error("talos.config={url}: timed out after {0:?}", FETCH_TIMEOUT)]
    Timeout { url: String },
}

const FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// Where a config URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    /// Resolved with the nameservers the network handed out.
    Name(String),
}

/// An `http://` or `https://` URL, split for the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigUrl {
    pub https: bool,
    pub host: Host,
    pub port: u16,
    pub authority: String,
    pub path: String,
}

impl ConfigUrl {
    pub fn parse(url: &str) -> Result<Self, FetchError> {
        let err = |reason| FetchError::Url {
            url: url.to_owned(),
            reason,
        };
        let (https, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(rest), _) => (true, rest),
            (None, Some(rest)) => (false, rest),
            (None, None) => return Err(err("only http:// and https:// URLs are supported")),
        };
        let (authority, path) = rest
            .find(['/', '?'])
            .map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        let (host, port) = match authority.strip_prefix('[').and_then(|a| a.split_once(']')) {
            Some((host, rest)) => (host, rest.strip_prefix(':')),
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        let port = port
            .map_or(Ok(if https { 443 } else { 80 }), str::parse::<u16>)
            .map_err(|_| err("the port is not a number"))?;
        let host = match host.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) if is_dns_name(host) => Host::Name(host.to_owned()),
            Err(_) => return Err(err("the host is neither an IP address nor a DNS name")),
        };
        Ok(Self {
            https,
            host,
            port,
            authority: authority.to_owned(),
            path,
        })
    }
}

fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.trim_end_matches('.').split('.').all(|label| {
            (1..64).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// What `${name}` in a `talos.config=` query value stands for; `None` while unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UrlVariables {
    /// SMBIOS system UUID.
    pub uuid: Option<String>,
    /// SMBIOS system serial number.
    pub serial: Option<String>,
    /// The first network interface's hardware address.
    pub mac: Option<String>,
    pub hostname: Option<String>,
    /// META key 0x0b (DownloadURLCode).
    pub code: Option<String>,
}

impl UrlVariables {
    /// The SMBIOS values from `sys` (`/sys`), the first NIC's address, and the rest as given.
    pub fn read(sys: &Path, hostname: String, code: Option<String>) -> UrlVariables {
        let dmi = |file: &str| {
            std::fs::read_to_string(sys.join("class/dmi/id").join(file))
                .ok()
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let class_net = sys.join("class/net");
        let mac = crate::network::first_nic(&class_net)
            .and_then(|link| crate::network::mac_address(&class_net, &link))
            .map(|m| {
                m.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":")
            });
        UrlVariables {
            uuid: dmi("product_uuid").map(|u| u.to_lowercase()),
            serial: dmi("product_serial"),
            mac,
            hostname: Some(hostname).filter(|h| !h.is_empty()),
            code,
        }
    }

    /// The variable `name`, with why it may be missing; `None` for a name that is not one.
    fn lookup(&self, name: &str) -> Option<(&'static str, Option<&str>, &'static str)> {
        let (name, value, missing) = match name {
            "uuid" => ("uuid", &self.uuid, "no SMBIOS system UUID"),
            "serial" => ("serial", &self.serial, "no SMBIOS serial number"),
            "mac" => ("mac", &self.mac, "no network interface"),
            "hostname" => ("hostname", &self.hostname, "no hostname"),
            "code" => ("code", &self.code, "META has no key 0x0b"),
            _ => return None,
        };
        Some((name, value.as_deref(), missing))
    }
}

/// `url` with every `${name}` in its query values replaced by the variable's value,
/// percent-encoded; other text, and unknown names, stay as they are.
pub fn expand(url: &str, vars: &UrlVariables) -> Result<String, FetchError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok(url.to_owned());
    };
    let mut pairs = Vec::new();
    for pair in query.split('&') {
        let Some((key, value)) = pair.split_once('=') else {
            pairs.push(pair.to_owned());
            continue;
        };
        let mut out = String::with_capacity(value.len());
        let mut rest = value;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[start..]);
                rest = "";
                break;
            };
            match vars.lookup(&after[..end]) {
                Some((name, None, reason)) => {
                    return Err(FetchError::Variable {
                        url: url.to_owned(),
                        name,
                        reason,
                    });
                }
                Some((_, Some(v), _)) => out.push_str(&percent_encode(v)),
                None => out.push_str(&rest[start..start + 3 + end]),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        pairs.push(format!("{key}={out}"));
    }
    Ok(format!("{base}?{}", pairs.join("&")))
}

fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Why a config carried on the command line cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum InlineError {
    #[error("{param}: not base64")]
    Base64 {
        param: &'static str,
        #[source]
        source: base64::DecodeError,
    },
    #[error("{param}: not zstd-compressed")]
    Zstd {
        param: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{param}: the config is larger than {MAX_CONFIG_BYTES} bytes")]
    TooLarge { param: &'static str },
}

/// The config in `encoded`, the value of `param`: base64 of its zstd compression.
pub fn decode_inline(param: &'static str, encoded: &str) -> Result<Vec<u8>, InlineError> {
    let compressed = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|source| InlineError::Base64 { param, source })?;
    let zstd = |source| InlineError::Zstd { param, source };
    let decoder = ruzstd::decoding::StreamingDecoder::new(compressed.as_slice())
        .map_err(|e| zstd(std::io::Error::other(e.to_string())))?;
    let mut config = Vec::new();
    decoder
        .take(MAX_CONFIG_BYTES as u64 + 1)
        .read_to_end(&mut config)
        .map_err(zstd)?;
    if config.len() > MAX_CONFIG_BYTES {
        return Err(InlineError::TooLarge { param });
    }
    Ok(config)
}

/// GETs the config at `url`; `https://` servers are verified against `tls`'s roots.
pub async fn fetch(url: &str, tls: &Arc<ClientConfig>) -> Result<Vec<u8>, FetchError> {
    let parsed = ConfigUrl::parse(url)?;
    tokio::time::timeout(FETCH_TIMEOUT, fetch_parsed(url, &parsed, tls))
        .await
        .map_err(|_| FetchError::Timeout {
            url: url.to_owned(),
        })?
}

async fn fetch_parsed(
    url: &str,
    parsed: &ConfigUrl,
    tls: &Arc<ClientConfig>,
) -> Result<Vec<u8>, FetchError> {
    let ip = match &parsed.host {
        Host::Ip(ip) => *ip,
        Host::Name(name) => IpAddr::V4(
            crate::dns::resolve(name)
                .await
                .map_err(|source| FetchError::Resolve {
                    url: url.to_owned(),
                    source,
                })?[0],
        ),
    };
    let addr = SocketAddr::new(ip, parsed.port);
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| FetchError::Connect {
            url: url.to_owned(),
            addr,
            source,
        })?;
    if !parsed.https {
        return get(url, parsed, stream).await;
    }
    let server_name = match &parsed.host {
        Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
        Host::Name(name) => ServerName::try_from(name.clone()).map_err(|_| FetchError::Url {
            url: url.to_owned(),
            reason: "the host is not a valid TLS server name",
        })?,
    };
    let stream = tokio_rustls::TlsConnector::from(Arc::clone(tls))
        .connect(server_name, stream)
        .await
        .map_err(|source| FetchError::Tls {
            url: url.to_owned(),
            addr,
            source,
        })?;
    get(url, parsed, stream).await
}

/// One HTTP/1.1 GET of `parsed.path` over `stream`; the body is capped at the config limit.
async fn get<S>(url: &str, parsed: &ConfigUrl, stream: S) -> Result<Vec<u8>, FetchError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let http = |source: Box<dyn std::error::Error + Send + Sync>| FetchError::Http {
        url: url.to_owned(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| http(e.into()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = http::Request::get(&parsed.path)
        .header(http::header::HOST, &parsed.authority)
        .header(
            http::header::USER_AGENT,
            concat!("talos-rs-machined/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| http(e.into()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| http(e.into()))?;
    if !response.status().is_success() {
        return Err(FetchError::Status {
            url: url.to_owned(),
            status: response.status(),
        });
    }
    let body = Limited::new(response.into_body(), MAX_CONFIG_BYTES)
        .collect()
        .await
        .map_err(http)?;
    Ok(body.to_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_urls_with_ip_or_dns_hosts() {
        let u = ConfigUrl::parse("http://10.0.2.2:8080/configs/node.yaml").unwrap();
        assert_eq!((u.host, u.port), (Host::Ip([10, 0, 2, 2].into()), 8080));
        assert_eq!(u.path, "/configs/node.yaml");
        let u = ConfigUrl::parse("http://[fd00::1]/c").unwrap();
        assert_eq!(u.host, Host::Ip("fd00::1".parse().unwrap()));
        assert_eq!(u.port, 80);
        assert_eq!(ConfigUrl::parse("http://10.0.0.1").unwrap().path, "/");
        let u = ConfigUrl::parse("https://config.lab.example/n.yaml").unwrap();
        assert_eq!((u.https, u.port), (true, 443));
        assert!(!ConfigUrl::parse("http://10.0.0.1:8443").unwrap().https);
        let u = ConfigUrl::parse("http://config.lab.example?u=1").unwrap();
        assert_eq!(u.host, Host::Name("config.lab.example".into()));
        assert_eq!(
            (u.authority.as_str(), u.path.as_str()),
            ("config.lab.example", "/?u=1")
        );
    }

    #[test]
    fn refuses_what_it_cannot_fetch_and_says_why() {
        let e = ConfigUrl::parse("tftp://10.0.2.2/c")
            .unwrap_err()
            .to_string();
        assert!(e.contains("only http:// and https://"), "{e}");
        let e = ConfigUrl::parse("http://config_server!/c")
            .unwrap_err()
            .to_string();
        assert!(e.contains("neither an IP address nor a DNS name"), "{e}");
        let e = ConfigUrl::parse("http://10.0.2.2:http/c")
            .unwrap_err()
            .to_string();
        assert!(e.contains("port"), "{e}");
    }

    fn variables() -> UrlVariables {
        UrlVariables {
            uuid: Some("6b7a3f5e-0000-4000-8000-000000000001".into()),
            serial: Some("SN 42/7".into()),
            mac: Some("52:54:00:12:34:56".into()),
            hostname: Some("talos-123456".into()),
            code: None,
        }
    }

    #[test]
    fn query_values_get_the_variables_percent_encoded() {
        let url = "http://10.0.2.2/c/${uuid}?u=${uuid}&s=${serial}&m=${mac}&h=node-${hostname}&x=${other}&flag";
        assert_eq!(
            expand(url, &variables()).unwrap(),
            "http://10.0.2.2/c/${uuid}?u=6b7a3f5e-0000-4000-8000-000000000001&s=SN%2042%2F7&m=52%3A54%3A00%3A12%3A34%3A56&h=node-talos-123456&x=${other}&flag"
        );
        assert_eq!(
            expand("http://10.0.2.2/plain", &variables()).unwrap(),
            "http://10.0.2.2/plain"
        );
        let missing = expand("http://10.0.2.2/?c=${code}", &variables()).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "talos.config=http://10.0.2.2/?c=${code}: ${code} has no value on this node yet (META has no key 0x0b)"
        );
    }

    #[test]
    fn variables_come_from_smbios_and_the_first_nic() {
        let sys = tempfile::tempdir().unwrap();
        let dmi = sys.path().join("class/dmi/id");
        std::fs::create_dir_all(&dmi).unwrap();
        std::fs::write(
            dmi.join("product_uuid"),
            "6B7A3F5E-0000-4000-8000-000000000001\n",
        )
        .unwrap();
        std::fs::write(dmi.join("product_serial"), "\n").unwrap();
        for (link, mac) in [("eth1", "52:54:00:00:00:02"), ("eth0", "52:54:00:12:34:56")] {
            let dir = sys.path().join("class/net").join(link);
            std::fs::create_dir_all(dir.join("device")).unwrap();
            std::fs::write(dir.join("address"), format!("{mac}\n")).unwrap();
        }
        let vars = UrlVariables::read(sys.path(), "node-1".into(), Some("abc".into()));
        assert_eq!(
            vars,
            UrlVariables {
                uuid: Some("6b7a3f5e-0000-4000-8000-000000000001".into()),
                serial: None,
                mac: Some("52:54:00:12:34:56".into()),
                hostname: Some("node-1".into()),
                code: Some("abc".into()),
            }
        );
    }

    #[test]
    fn inline_configs_are_base64_of_zstd() {
        use base64::Engine;
        let config = b"version: v1alpha1\nmachine:\n  type: worker\n".repeat(20);
        let compressed = ruzstd::encoding::compress_to_vec(
            config.as_slice(),
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        let encoded = base64::engine::general_purpose::STANDARD.encode(compressed);
        assert_eq!(
            decode_inline("talos.config.inline", &encoded).unwrap(),
            config
        );
        let error = |value: &str| {
            decode_inline("talos.config.inline", value)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(error("not base64!"), "talos.config.inline: not base64");
        assert_eq!(
            error("dmVyc2lvbjogdjFhbHBoYTE="),
            "talos.config.inline: not zstd-compressed"
        );
        let bomb = ruzstd::encoding::compress_to_vec(
            vec![b'a'; MAX_CONFIG_BYTES + 1].as_slice(),
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        let bomb = base64::engine::general_purpose::STANDARD.encode(bomb);
        assert!(error(&bomb).contains("larger than"), "{}", error(&bomb));
    }

    /// Answers one request on `stream`: a config for `GET /ok`, else 404.
    async fn answer<S>(mut stream: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = [0u8; 1024];
        let n = stream.read(&mut buf).await.unwrap();
        let reply = if buf[..n].starts_with(b"GET /ok ") {
            "HTTP/1.1 200 OK\r\nContent-Length: 19\r\nConnection: close\r\n\r\nversion: v1alpha1\r\n"
        } else {
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        };
        stream.write_all(reply.as_bytes()).await.unwrap();
        stream.shutdown().await.unwrap();
    }

    fn public_roots() -> Arc<ClientConfig> {
        talos_oci::client_config(&talos_oci::RegistryTls::default()).unwrap()
    }

    #[tokio::test]
    async fn fetches_from_a_real_http_server_and_reports_status() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for _ in 0..2 {
                answer(listener.accept().await.unwrap().0).await;
            }
        });
        let body = fetch(&format!("http://{addr}/ok"), &public_roots())
            .await
            .unwrap();
        assert_eq!(body, b"version: v1alpha1\r\n");
        let e = fetch(&format!("http://{addr}/missing"), &public_roots())
            .await
            .unwrap_err();
        assert!(
            matches!(e, FetchError::Status { status, .. } if status == http::StatusCode::NOT_FOUND)
        );
    }

    #[tokio::test]
    async fn https_servers_must_chain_to_the_trusted_roots() {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        use talos_machinery::pki::{self, CaSubject, SubjectAltName};
        let now = std::time::SystemTime::now();
        let ca = pki::new_ecdsa_ca(CaSubject::CommonName("config server CA".into()), now).unwrap();
        let cert = pki::issue_server_cert(
            &ca,
            "config server",
            &[SubjectAltName::Ip([127, 0, 0, 1].into())],
            Duration::from_secs(3600),
            now,
        )
        .unwrap();
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.cert_der().unwrap())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_der().unwrap())),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                if let Ok(tls) = acceptor.accept(tcp).await {
                    answer(tls).await;
                }
            }
        });
        let url = format!("https://{addr}/ok");
        let trusted = talos_oci::client_config(&talos_oci::RegistryTls {
            ca_pem: Some(ca.cert_pem.clone()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            fetch(&url, &trusted).await.unwrap(),
            b"version: v1alpha1\r\n"
        );
        let refused = fetch(&url, &public_roots()).await.unwrap_err();
        let FetchError::Tls { source, .. } = &refused else {
            panic!("{refused:?}");
        };
        assert!(source.to_string().contains("UnknownIssuer"), "{source}");
        assert_eq!(
            refused.to_string(),
            format!("talos.config={url}: TLS handshake with {addr} failed")
        );
    }
}
