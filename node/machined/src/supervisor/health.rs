//! Health checks a supervised service declares.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How to tell that a running service works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheck {
    /// A Unix socket accepts connections (containerd).
    UnixSocket(PathBuf),
    /// `GET path` over plain HTTP answers 200 with a body containing `expect` (etcd's
    /// metrics listener on loopback).
    Http {
        address: SocketAddr,
        path: String,
        expect: String,
    },
}

const TIMEOUT: Duration = Duration::from_secs(5);
const MAX_RESPONSE: usize = 16 * 1024;

impl HealthCheck {
    /// Runs the check once: Ok when healthy, else why not.
    pub async fn check(&self) -> Result<(), String> {
        match tokio::time::timeout(TIMEOUT, self.probe()).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {TIMEOUT:?}")),
        }
    }

    async fn probe(&self) -> Result<(), String> {
        match self {
            HealthCheck::UnixSocket(path) => tokio::net::UnixStream::connect(path)
                .await
                .map(drop)
                .map_err(|e| format!("connecting to {}: {e}", path.display())),
            HealthCheck::Http {
                address,
                path,
                expect,
            } => {
                let mut stream = tokio::net::TcpStream::connect(address)
                    .await
                    .map_err(|e| format!("connecting to {address}: {e}"))?;
                let request =
                    format!("GET {path} HTTP/1.0\r\nHost: {address}\r\nConnection: close\r\n\r\n");
                stream
                    .write_all(request.as_bytes())
                    .await
                    .map_err(|e| format!("sending to {address}: {e}"))?;
                let mut response = Vec::new();
                stream
                    .take(MAX_RESPONSE as u64)
                    .read_to_end(&mut response)
                    .await
                    .map_err(|e| format!("reading from {address}: {e}"))?;
                let text = String::from_utf8_lossy(&response);
                let status = text.lines().next().unwrap_or_default();
                if status.split_whitespace().nth(1) != Some("200") {
                    return Err(format!("GET http://{address}{path}: {status}"));
                }
                let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
                if !body.contains(expect.as_str()) {
                    return Err(format!(
                        "GET http://{address}{path}: {:?} does not contain {expect:?}",
                        body.trim()
                    ));
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn serve_once(listener: TcpListener, response: &'static str) {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = conn.read(&mut buf).await.unwrap();
        conn.write_all(response.as_bytes()).await.unwrap();
    }

    async fn http(response: &'static str) -> Result<(), String> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(serve_once(listener, response));
        HealthCheck::Http {
            address,
            path: "/health".into(),
            expect: r#""health":"true""#.into(),
        }
        .check()
        .await
    }

    #[tokio::test]
    async fn http_needs_200_and_the_expected_body() {
        http("HTTP/1.1 200 OK\r\n\r\n{\"health\":\"true\",\"reason\":\"\"}")
            .await
            .unwrap();
        let err = http("HTTP/1.1 503 Service Unavailable\r\n\r\n{\"health\":\"false\"}")
            .await
            .unwrap_err();
        assert!(err.ends_with("HTTP/1.1 503 Service Unavailable"), "{err}");
        let err = http("HTTP/1.1 200 OK\r\n\r\n{\"health\":\"false\"}")
            .await
            .unwrap_err();
        assert!(
            err.contains(r#"does not contain "\"health\":\"true\"""#),
            "{err}"
        );
    }

    #[tokio::test]
    async fn unix_socket_must_accept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("containerd.sock");
        let check = HealthCheck::UnixSocket(path.clone());
        let err = check.check().await.unwrap_err();
        assert!(err.starts_with(&format!("connecting to {}", path.display())));
        let _listener = tokio::net::UnixListener::bind(&path).unwrap();
        check.check().await.unwrap();
    }
}
