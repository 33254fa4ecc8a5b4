//! A real registry on loopback for tests and xtask: Debian's `docker-registry` (the CNCF
//! distribution registry, 2.8), run with filesystem storage in a directory of the caller's and
//! deletes enabled, over plain HTTP or (with [`RegistryTlsFiles`]) HTTPS, without auth or (with
//! [`RegistryHtpasswd`]) with htpasswd Basic auth. It is killed when the [`LocalRegistry`] is
//! dropped.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's `docker-registry` package installs the registry.
pub const BINARY: &str = "/usr/bin/docker-registry";
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Another process may take the free port we picked before the registry binds it.
const START_ATTEMPTS: usize = 3;
const LOG_TAIL_LINES: usize = 20;
/// The realm of the registry's Basic challenge when it runs with [`RegistryHtpasswd`].
pub const HTPASSWD_REALM: &str = "talos-rs local registry";

#[derive(Debug, thiserror::Error)]
pub enum PushLayoutError {
    #[error(transparent)]
    Layout(#[from] crate::LayoutError),
    #[error(transparent)]
    Reference(#[from] crate::ReferenceError),
    #[error(transparent)]
    Registry(#[from] crate::RegistryError),
}

/// HTTPS for a [`LocalRegistry`]: a server certificate for 127.0.0.1 and `guest_host`, its
/// key, and the CA that issued it.
#[derive(Debug, Clone)]
pub struct RegistryTlsFiles {
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
    /// The name guests use for the host (they map it to 10.0.2.2 themselves).
    pub guest_host: String,
    /// Require client certificates (distribution's `tls.clientcas`).
    pub client_auth: Option<RegistryClientAuth>,
}

/// Client-certificate auth for a [`LocalRegistry`]: the CA clients must chain to, and the
/// identity [`LocalRegistry::push_layout`] presents.
#[derive(Debug, Clone)]
pub struct RegistryClientAuth {
    pub ca_pem: String,
    pub identity: crate::ClientIdentity,
}

/// htpasswd auth for a [`LocalRegistry`]: distribution's `auth.htpasswd`.
#[derive(Debug, Clone)]
pub struct RegistryHtpasswd {
    /// The htpasswd file: `user:hash` lines, the hashes bcrypt (the only kind distribution
    /// accepts).
    pub htpasswd: String,
    /// What [`LocalRegistry::push_layout`] authenticates with.
    pub credentials: crate::Credentials,
}

/// A running `docker-registry serve`, answering on [`addr`](Self::addr).
#[derive(Debug)]
pub struct LocalRegistry {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    tls: Option<RegistryTlsFiles>,
    htpasswd: Option<RegistryHtpasswd>,
}

impl LocalRegistry {
    pub fn is_installed() -> bool {
        Path::new(BINARY).is_file()
    }

    /// Starts a registry storing into `dir/storage`, configured by `dir/registry.yml` and
    /// logging to `dir/registry.log`, and waits until `GET /v2/` answers 200.
    pub fn start(dir: &Path) -> io::Result<Self> {
        Self::start_with(dir, None)
    }

    /// [`start`](Self::start), serving HTTPS with `tls` when given.
    pub fn start_with(dir: &Path, tls: Option<RegistryTlsFiles>) -> io::Result<Self> {
        Self::start_inner(dir, tls, None)
    }

    /// [`start_with`](Self::start_with), requiring Basic auth by `htpasswd` (its file is
    /// written to `dir/htpasswd`).
    pub fn start_with_htpasswd(
        dir: &Path,
        tls: Option<RegistryTlsFiles>,
        htpasswd: RegistryHtpasswd,
    ) -> io::Result<Self> {
        Self::start_inner(dir, tls, Some(htpasswd))
    }

    fn start_inner(
        dir: &Path,
        tls: Option<RegistryTlsFiles>,
        htpasswd: Option<RegistryHtpasswd>,
    ) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut attempt = 1;
        loop {
            let mut registry = Self::spawn(dir, tls.clone(), htpasswd.clone())?;
            match registry.wait_until_ready() {
                // Dropping this one kills it before the next try.
                Err(_) if attempt < START_ATTEMPTS && registry.lost_the_port() => attempt += 1,
                ready => return ready.map(|()| registry),
            }
        }
    }

    fn spawn(
        dir: &Path,
        tls: Option<RegistryTlsFiles>,
        htpasswd: Option<RegistryHtpasswd>,
    ) -> io::Result<Self> {
        // A JSON string is a valid YAML scalar, whatever the path holds.
        let yaml_path = |path: &Path| {
            let text = path.to_str().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("registry directory {} is not UTF-8", dir.display()),
                )
            })?;
            serde_json::to_string(text).map_err(io::Error::other)
        };
        let storage = yaml_path(&dir.join("storage"))?;
        let addr = free_loopback_port()?;
        let mut http = format!("http:\n  addr: {addr}\n");
        if let Some(tls) = &tls {
            let (cert, key) = (dir.join("registry.crt"), dir.join("registry.key"));
            std::fs::write(&cert, &tls.cert_pem)?;
            std::fs::write(&key, &tls.key_pem)?;
            http.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                yaml_path(&cert)?,
                yaml_path(&key)?
            ));
            if let Some(client_auth) = &tls.client_auth {
                let client_ca = dir.join("client-ca.crt");
                std::fs::write(&client_ca, &client_auth.ca_pem)?;
                http.push_str(&format!(
                    "    clientcas:\n      - {}\n",
                    yaml_path(&client_ca)?
                ));
            }
        }
        let mut auth = String::new();
        if let Some(htpasswd) = &htpasswd {
            let file = dir.join("htpasswd");
            std::fs::write(&file, &htpasswd.htpasswd)?;
            auth = format!(
                "auth:\n  htpasswd:\n    realm: {}\n    path: {}\n",
                serde_json::to_string(HTPASSWD_REALM).map_err(io::Error::other)?,
                yaml_path(&file)?
            );
        }
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\n\
                 log:\n  level: info\n\
                 storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
                 {http}{auth}"
            ),
        )?;
        let log = dir.join("registry.log");
        let log_file = File::options().create(true).append(true).open(&log)?;
        let child = Command::new(BINARY)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "starting {BINARY}: {e} (Debian's docker-registry package has it: cargo xtask deps)"
                    ),
                )
            })?;
        Ok(Self {
            child,
            addr,
            log,
            tls,
            htpasswd,
        })
    }

    /// Where the registry listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Pushes the OCI image layout in `dir` as `name` (`repository:tag`), with the
    /// htpasswd credentials if the registry requires them.
    pub async fn push_layout(&self, dir: &Path, name: &str) -> Result<(), PushLayoutError> {
        let image = crate::read_layout_dir(dir)?;
        let reference = crate::Reference::parse(&format!("{}/{name}", self.addr))?;
        let options = crate::RegistryOptions {
            tls: self.tls.as_ref().map(|tls| crate::RegistryTls {
                ca_pem: Some(tls.ca_pem.clone()),
                insecure_skip_verify: false,
                client_identity: tls.client_auth.as_ref().map(|c| c.identity.clone()),
            }),
            resolver: None,
            credentials: self.htpasswd.as_ref().map(|h| h.credentials.clone()),
        };
        crate::Registry::with_options(&reference, &options)?
            .push(&reference, &image)
            .await?;
        Ok(())
    }

    /// How a QEMU guest on user networking names `name` here: the host is 10.0.2.2 to it,
    /// or the TLS settings' `guest_host`.
    pub fn guest_reference(&self, name: &str) -> String {
        let host = self.tls.as_ref().map_or("10.0.2.2", |t| &t.guest_host);
        format!("{host}:{}/{name}", self.addr.port())
    }

    /// The registry's own log (stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    fn wait_until_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(self.failure(&format!("exited with {status} before it was ready")));
            }
            if answers(self.addr, self.tls.is_some() || self.htpasswd.is_some()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(
                    self.failure(&format!("did not answer GET /v2/ within {READY_TIMEOUT:?}"))
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn lost_the_port(&self) -> bool {
        std::fs::read_to_string(&self.log).is_ok_and(|l| l.contains("address already in use"))
    }

    fn failure(&self, what: &str) -> io::Error {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
        io::Error::other(format!(
            "{BINARY} on {} {what}; last lines of {}:\n{tail}",
            self.addr,
            self.log.display()
        ))
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        // It may have exited already; then there is nothing to kill.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_loopback_port() -> io::Result<SocketAddr> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()
}

/// Whether `GET /v2/` on `addr` answers 200 (the API version check, without auth); with
/// `any_status`, any HTTP answer will do (Go answers 400 to plain HTTP on a TLS port, and
/// htpasswd auth answers 401).
fn answers(addr: SocketAddr, any_status: bool) -> bool {
    let exchange = || -> io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        write!(stream, "GET /v2/ HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head)?;
        Ok(head.starts_with(b"HTTP/1.") && (any_status || &head[8..12] == b" 200"))
    };
    exchange().unwrap_or(false)
}
