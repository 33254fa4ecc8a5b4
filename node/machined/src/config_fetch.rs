//! Fetching the machine config named by `talos.config=`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use talos_machinery::codec::MAX_CONFIG_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("talos.config={url:?}: {reason}")]
    Url { url: String, reason: &'static str },
    #[error("talos.config={url}: connecting to {addr}")]
    Connect {
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

/// An `http://` URL whose host is an IP address (the node has no DNS resolver yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigUrl {
    pub addr: SocketAddr,
    pub authority: String,
    pub path: String,
}

impl ConfigUrl {
    pub fn parse(url: &str) -> Result<Self, FetchError> {
        let err = |reason| FetchError::Url {
            url: url.to_owned(),
            reason,
        };
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            err(if url.starts_with("https://") {
                "https is not supported yet (no CA bundle on the node); serve the config over http"
            } else {
                "only http:// URLs are supported"
            })
        })?;
        let (authority, path) = rest
            .find('/')
            .map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
        let (host, port) = match authority.strip_prefix('[').and_then(|a| a.split_once(']')) {
            Some((host, rest)) => (host, rest.strip_prefix(':')),
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        let port = port
            .map_or(Ok(80), str::parse::<u16>)
            .map_err(|_| err("the port is not a number"))?;
        let ip: IpAddr = host.parse().map_err(|_| {
            err("the host must be an IP address: the node resolves no DNS names yet")
        })?;
        Ok(Self {
            addr: SocketAddr::new(ip, port),
            authority: authority.to_owned(),
            path: path.to_owned(),
        })
    }
}

pub async fn fetch(url: &str) -> Result<Vec<u8>, FetchError> {
    let parsed = ConfigUrl::parse(url)?;
    tokio::time::timeout(FETCH_TIMEOUT, fetch_parsed(url, &parsed))
        .await
        .map_err(|_| FetchError::Timeout {
            url: url.to_owned(),
        })?
}

async fn fetch_parsed(url: &str, parsed: &ConfigUrl) -> Result<Vec<u8>, FetchError> {
    let http = |source: Box<dyn std::error::Error + Send + Sync>| FetchError::Http {
        url: url.to_owned(),
        source,
    };
    let stream = tokio::net::TcpStream::connect(parsed.addr)
        .await
        .map_err(|source| FetchError::Connect {
            url: url.to_owned(),
            addr: parsed.addr,
            source,
        })?;
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
    fn parses_http_urls_with_ip_hosts() {
        let u = ConfigUrl::parse("http://10.0.2.2:8080/configs/node.yaml").unwrap();
        assert_eq!(u.addr, "10.0.2.2:8080".parse().unwrap());
        assert_eq!(u.path, "/configs/node.yaml");
        let u = ConfigUrl::parse("http://[fd00::1]/c").unwrap();
        assert_eq!(u.addr, "[fd00::1]:80".parse().unwrap());
        assert_eq!(ConfigUrl::parse("http://10.0.0.1").unwrap().path, "/");
    }

    #[test]
    fn refuses_what_it_cannot_fetch_and_says_why() {
        let e = ConfigUrl::parse("https://10.0.2.2/c")
            .unwrap_err()
            .to_string();
        assert!(e.contains("https is not supported"), "{e}");
        let e = ConfigUrl::parse("http://config.example/c")
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be an IP address"), "{e}");
        let e = ConfigUrl::parse("http://10.0.2.2:http/c")
            .unwrap_err()
            .to_string();
        assert!(e.contains("port"), "{e}");
    }

    #[tokio::test]
    async fn fetches_from_a_real_http_server_and_reports_status() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            for _ in 0..2 {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap();
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let reply = if req.starts_with("GET /ok ") {
                    "HTTP/1.1 200 OK\r\nContent-Length: 19\r\nConnection: close\r\n\r\nversion: v1alpha1\r\n"
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                };
                s.write_all(reply.as_bytes()).await.unwrap();
            }
        });
        let body = fetch(&format!("http://{addr}/ok")).await.unwrap();
        assert_eq!(body, b"version: v1alpha1\r\n");
        let e = fetch(&format!("http://{addr}/missing")).await.unwrap_err();
        assert!(
            matches!(e, FetchError::Status { status, .. } if status == http::StatusCode::NOT_FOUND)
        );
    }
}
