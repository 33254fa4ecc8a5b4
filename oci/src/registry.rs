//! A registry client for the OCI distribution API over plain HTTP/1.1 (hyper, one TCP
//! connection per request): push an [`Image`], pull chosen files out of an image.
//!
//! Plain `http://` only, because the node has no CA bundle yet. No authentication yet: a 401
//! is reported as such. Every blob is checked against its digest while it streams in, and a
//! manifest against the digest the reference pins (or the registry announces).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use http::header::{
    ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HOST, LOCATION, USER_AGENT, WWW_AUTHENTICATE,
};
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::image::{Blob, Image};
use crate::layer::{LayerError, LayerFormat, Overlay};
use crate::manifest::{Descriptor, ImageConfig, Index, Manifest, ManifestOrIndex};
use crate::media_type;
use crate::reference::Reference;

/// Manifests, indexes and image configs larger than this are refused.
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// From sending a request (of a small body) to the response's status line.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Uploads get [`RESPONSE_TIMEOUT`] plus one second per this many bytes.
const MIN_UPLOAD_BYTES_PER_SECOND: u64 = 1024 * 1024;
/// The longest wait for the next chunk of a response body.
const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of an error response's body is read for its message.
const MAX_ERROR_BODY_BYTES: usize = 16 * 1024;
const ACCEPTED_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";
const NO_TLS: &str = "only plain HTTP is supported: the node has no CA bundle yet";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{reference}: {reason}")]
    Endpoint {
        reference: String,
        reason: &'static str,
    },
    #[error("{reference}: connecting to {addr}")]
    Connect {
        reference: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{reference}: {method} {url}: HTTP exchange failed")]
    Http {
        reference: String,
        method: Method,
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{reference}: {method} {url}: no answer within {timeout:?}")]
    Timeout {
        reference: String,
        method: Method,
        url: String,
        timeout: Duration,
    },
    #[error("{reference}: {method} {url}: the registry answered {status}{detail}")]
    Status {
        reference: String,
        method: Method,
        url: String,
        status: StatusCode,
        /// The registry's own error codes and messages, if it sent any, as `: CODE: message`.
        detail: String,
    },
    #[error("{reference}: not found: GET {url} answered {status}{detail}")]
    NotFound {
        reference: String,
        url: String,
        status: StatusCode,
        detail: String,
    },
    #[error(
        "{reference}: {method} {url}: the registry asks for authentication ({challenge}), which is not supported yet"
    )]
    Unauthorized {
        reference: String,
        method: Method,
        url: String,
        challenge: String,
    },
    #[error("{reference}: {method} {url}: redirected to {location}: {reason}")]
    Redirect {
        reference: String,
        method: Method,
        url: String,
        location: String,
        reason: &'static str,
    },
    #[error("{reference}: {url}: {what} is larger than the limit of {limit} bytes")]
    TooLarge {
        reference: String,
        url: String,
        what: String,
        limit: u64,
    },
    #[error("{reference}: {url}: {what} has digest {actual}, expected {expected}")]
    DigestMismatch {
        reference: String,
        url: String,
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error(
        "{reference}: {url}: {what}: its descriptor says {expected} bytes, the registry sent {sent}"
    )]
    SizeMismatch {
        reference: String,
        url: String,
        what: String,
        expected: u64,
        /// A byte count, or "more" when the body ran past `expected`.
        sent: String,
    },
    #[error("{reference}: {url}: {reason}")]
    Invalid {
        reference: String,
        url: String,
        reason: String,
    },
    #[error("{reference}: the index at {url} has no linux/{arch} image (it has: {available})")]
    NoPlatform {
        reference: String,
        url: String,
        arch: String,
        available: String,
    },
    #[error("{reference}: {url}: the image is for {found}, not linux/{arch}")]
    WrongPlatform {
        reference: String,
        url: String,
        arch: String,
        found: String,
    },
    #[error("{reference}: {url}: unpacking the layer")]
    Layer {
        reference: String,
        url: String,
        #[source]
        source: LayerError,
    },
    #[error("{reference}: not in the image: {}", missing.join(", "))]
    MissingFiles {
        reference: String,
        missing: Vec<String>,
    },
}

/// What [`Registry::push`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// The reference pinned to the pushed manifest's digest.
    pub reference: Reference,
    pub blobs_uploaded: usize,
    /// Blobs the registry already had.
    pub blobs_skipped: usize,
}

/// A registry reached over plain HTTP at `endpoint`, addressed as `authority` in `Host`.
#[derive(Debug, Clone)]
pub struct Registry {
    endpoint: SocketAddr,
    authority: String,
}

impl Registry {
    pub fn new(endpoint: SocketAddr, authority: String) -> Self {
        Self {
            endpoint,
            authority,
        }
    }

    /// The registry a reference names, if its host is an IP address or `localhost` (no DNS
    /// here) and it gives a port: without one, registries mean HTTPS on 443.
    pub fn for_reference(reference: &Reference) -> Result<Self, RegistryError> {
        let err = |reason| RegistryError::Endpoint {
            reference: reference.to_string(),
            reason,
        };
        let ip = match reference.host() {
            "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
            host => host.parse().map_err(|_| {
                err("the registry host must be an IP address or localhost: no DNS resolver here")
            })?,
        };
        let port = match reference.port() {
            None | Some(443) => {
                return Err(err(
                    "no plain-HTTP port: a registry without a port (or on 443) speaks HTTPS, and \
                     the node has no CA bundle yet; give the HTTP port, e.g. 10.0.2.2:5000/talos/installer",
                ));
            }
            Some(port) => port,
        };
        Ok(Self::new(
            SocketAddr::new(ip, port),
            reference.registry().to_owned(),
        ))
    }

    /// Pushes `image` under the reference's tag (else its digest, else `latest`): blobs first,
    /// skipping those the registry has, then the manifest.
    pub async fn push(
        &self,
        reference: &Reference,
        image: &Image,
    ) -> Result<Pushed, RegistryError> {
        let op = Op::new(self, reference);
        if let Some(pinned) = reference.digest()
            && pinned != image.manifest_digest()
        {
            let url = op.url(&op.manifest_path(reference.push_target()));
            return Err(RegistryError::DigestMismatch {
                reference: op.reference,
                url,
                what: "the image's manifest".into(),
                expected: pinned.clone(),
                actual: image.manifest_digest().clone(),
            });
        }
        let (mut blobs_uploaded, mut blobs_skipped) = (0, 0);
        for blob in std::iter::once(image.config()).chain(image.layers()) {
            if op.push_blob(blob).await? {
                blobs_uploaded += 1;
            } else {
                blobs_skipped += 1;
            }
        }
        let path = op.manifest_path(reference.push_target());
        let response = op
            .send(
                Method::PUT,
                &path,
                &[(CONTENT_TYPE, media_type::OCI_MANIFEST)],
                Bytes::copy_from_slice(image.manifest()),
            )
            .await?;
        op.expect_status(Method::PUT, &path, response, StatusCode::CREATED)
            .await?;
        Ok(Pushed {
            reference: reference.with_digest(image.manifest_digest().clone()),
            blobs_uploaded,
            blobs_skipped,
        })
    }

    /// Pulls the `linux/<arch>` image `reference` names (from an index if it is one) and
    /// returns the `wanted` files of its layers, keyed by relative path (a leading `/` in
    /// `wanted` is ignored). Every manifest and blob is checked against its digest; a wanted
    /// file that is missing is an error. `max_total_bytes` bounds both what is downloaded
    /// (config and layers) and what is unpacked from the layers.
    pub async fn pull_files(
        &self,
        reference: &Reference,
        arch: &str,
        wanted: &[&str],
        max_total_bytes: u64,
    ) -> Result<BTreeMap<String, Vec<u8>>, RegistryError> {
        let op = Op::new(self, reference);
        let (manifest, manifest_url) = op.manifest_for(arch).await?;
        let total = std::iter::once(&manifest.config)
            .chain(&manifest.layers)
            .fold(0u64, |sum, d| sum.saturating_add(d.size));
        if total > max_total_bytes {
            return Err(RegistryError::TooLarge {
                reference: op.reference,
                url: manifest_url,
                what: format!("the image ({total} bytes of config and layers)"),
                limit: max_total_bytes,
            });
        }
        let config_url = op.url(&op.blob_path(&manifest.config.digest));
        let config = op
            .get_blob(&manifest.config, "the image config", MAX_MANIFEST_BYTES)
            .await?;
        let config: ImageConfig = serde_json::from_slice(&config).map_err(|e| {
            op.invalid(
                &config_url,
                format!("the image config is not valid JSON: {e}"),
            )
        })?;
        if config.os != "linux" || config.architecture != arch {
            return Err(RegistryError::WrongPlatform {
                reference: op.reference,
                url: config_url,
                arch: arch.to_owned(),
                found: format!("{}/{}", config.os, config.architecture),
            });
        }
        let mut overlay = Overlay::only(wanted, max_total_bytes);
        for (i, layer) in manifest.layers.iter().enumerate() {
            let url = op.url(&op.blob_path(&layer.digest));
            let layer_err = |source| RegistryError::Layer {
                reference: op.reference.clone(),
                url: url.clone(),
                source,
            };
            let format = LayerFormat::of(&layer.media_type).map_err(layer_err)?;
            let data = op
                .get_blob(layer, &format!("layer {i}"), max_total_bytes)
                .await?;
            // Unpacking is CPU work: keep it off the runtime's threads.
            overlay =
                tokio::task::spawn_blocking(move || overlay.apply(&data, format).map(|()| overlay))
                    .await
                    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
                    .map_err(layer_err)?;
        }
        let missing = overlay.missing();
        if !missing.is_empty() {
            return Err(RegistryError::MissingFiles {
                reference: op.reference,
                missing,
            });
        }
        Ok(overlay.into_files())
    }
}

/// One push or pull: the registry, and the reference every error names.
struct Op<'a> {
    registry: &'a Registry,
    repository: &'a str,
    pinned: Option<&'a Digest>,
    pull_target: &'a str,
    reference: String,
}

impl<'a> Op<'a> {
    fn new(registry: &'a Registry, reference: &'a Reference) -> Self {
        Self {
            registry,
            repository: reference.repository(),
            pinned: reference.digest(),
            pull_target: reference.pull_target(),
            reference: reference.to_string(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.registry.authority)
    }

    fn manifest_path(&self, target: &str) -> String {
        format!("/v2/{}/manifests/{target}", self.repository)
    }

    fn blob_path(&self, digest: &Digest) -> String {
        format!("/v2/{}/blobs/{digest}", self.repository)
    }

    fn invalid(&self, url: &str, reason: String) -> RegistryError {
        RegistryError::Invalid {
            reference: self.reference.clone(),
            url: url.to_owned(),
            reason,
        }
    }

    /// Sends one request on a fresh connection and returns the response once its head is in.
    /// 401 and redirects are errors here; other statuses are the caller's to judge.
    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(http::HeaderName, &str)],
        body: Bytes,
    ) -> Result<http::Response<Incoming>, RegistryError> {
        let url = self.url(path);
        let timeout =
            RESPONSE_TIMEOUT + Duration::from_secs(body.len() as u64 / MIN_UPLOAD_BYTES_PER_SECOND);
        let timed_out = |timeout| RegistryError::Timeout {
            reference: self.reference.clone(),
            method: method.clone(),
            url: url.clone(),
            timeout,
        };
        let http_err = |source: Box<dyn std::error::Error + Send + Sync>| RegistryError::Http {
            reference: self.reference.clone(),
            method: method.clone(),
            url: url.clone(),
            source,
        };
        let addr = self.registry.endpoint;
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| timed_out(CONNECT_TIMEOUT))?
            .map_err(|source| RegistryError::Connect {
                reference: self.reference.clone(),
                addr,
                source,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| http_err(e.into()))?;
        tokio::spawn(async move {
            // The connection ends with the exchange; its errors surface through the response.
            let _ = conn.await;
        });
        let mut request = http::Request::builder()
            .method(method.clone())
            .uri(path)
            .header(HOST, &self.registry.authority)
            .header(USER_AGENT, concat!("talos-rs/", env!("CARGO_PKG_VERSION")));
        if method == Method::POST || method == Method::PUT {
            request = request.header(CONTENT_LENGTH, body.len());
        }
        for (name, value) in headers {
            request = request.header(name, *value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| http_err(e.into()))?;
        let response = tokio::time::timeout(timeout, sender.send_request(request))
            .await
            .map_err(|_| timed_out(timeout))?
            .map_err(|e| http_err(e.into()))?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED {
            return Err(RegistryError::Unauthorized {
                reference: self.reference.clone(),
                method,
                url,
                challenge: header(response.headers(), WWW_AUTHENTICATE)
                    .unwrap_or("no WWW-Authenticate header")
                    .to_owned(),
            });
        }
        if status.is_redirection() {
            let location = header(response.headers(), LOCATION).unwrap_or_default();
            return Err(RegistryError::Redirect {
                reference: self.reference.clone(),
                method,
                url,
                location: location.to_owned(),
                reason: if location.starts_with("https:") {
                    NO_TLS
                } else {
                    "following redirects is not supported yet"
                },
            });
        }
        Ok(response)
    }

    /// Turns any status but `expected` into an error carrying the registry's message.
    async fn expect_status(
        &self,
        method: Method,
        path: &str,
        response: http::Response<Incoming>,
        expected: StatusCode,
    ) -> Result<http::Response<Incoming>, RegistryError> {
        if response.status() == expected {
            return Ok(response);
        }
        let status = response.status();
        let detail = error_detail(response.into_body()).await;
        let url = self.url(path);
        Err(
            if status == StatusCode::NOT_FOUND && method == Method::GET {
                RegistryError::NotFound {
                    reference: self.reference.clone(),
                    url,
                    status,
                    detail,
                }
            } else {
                RegistryError::Status {
                    reference: self.reference.clone(),
                    method,
                    url,
                    status,
                    detail,
                }
            },
        )
    }

    /// Uploads `blob` unless the registry has it; says whether it uploaded.
    async fn push_blob(&self, blob: &Blob) -> Result<bool, RegistryError> {
        let path = self.blob_path(blob.digest());
        let response = self.send(Method::HEAD, &path, &[], Bytes::new()).await?;
        match response.status() {
            StatusCode::OK => return Ok(false),
            StatusCode::NOT_FOUND => {}
            _ => {
                self.expect_status(Method::HEAD, &path, response, StatusCode::OK)
                    .await?;
            }
        }
        let uploads = format!("/v2/{}/blobs/uploads/", self.repository);
        let response = self.send(Method::POST, &uploads, &[], Bytes::new()).await?;
        let response = self
            .expect_status(Method::POST, &uploads, response, StatusCode::ACCEPTED)
            .await?;
        let location = header(response.headers(), LOCATION).ok_or_else(|| {
            self.invalid(
                &self.url(&uploads),
                "the upload was accepted without a Location header".into(),
            )
        })?;
        let upload = self.upload_path(&uploads, location)?;
        let separator = if upload.contains('?') { '&' } else { '?' };
        let put = format!("{upload}{separator}digest={}", blob.digest());
        let response = self
            .send(
                Method::PUT,
                &put,
                &[(CONTENT_TYPE, "application/octet-stream")],
                Bytes::copy_from_slice(blob.data()),
            )
            .await?;
        self.expect_status(Method::PUT, &put, response, StatusCode::CREATED)
            .await?;
        Ok(true)
    }

    /// The path (and query) of an upload `Location`, which may be absolute or relative.
    fn upload_path(&self, uploads: &str, location: &str) -> Result<String, RegistryError> {
        let invalid = |reason: String| self.invalid(&self.url(uploads), reason);
        if location.starts_with('/') {
            return Ok(location.to_owned());
        }
        if location.starts_with("https://") {
            return Err(invalid(format!(
                "the upload location {location} is HTTPS; {NO_TLS}"
            )));
        }
        let rest = location.strip_prefix("http://").ok_or_else(|| {
            invalid(format!(
                "the upload location {location:?} is neither a path nor an http:// URL"
            ))
        })?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if !authority.eq_ignore_ascii_case(&self.registry.authority) {
            return Err(invalid(format!(
                "the upload location {location} is on another host, which is not supported"
            )));
        }
        Ok(if path.is_empty() {
            "/".into()
        } else {
            path.to_owned()
        })
    }

    /// The image manifest for `linux/<arch>`, through an index if the reference names one,
    /// with the URL it came from.
    async fn manifest_for(&self, arch: &str) -> Result<(Manifest, String), RegistryError> {
        let (parsed, url) = self.get_manifest(self.pull_target, self.pinned).await?;
        let index: Index = match parsed {
            ManifestOrIndex::Manifest(manifest) => return Ok((manifest, url)),
            ManifestOrIndex::Index(index) => index,
        };
        let chosen: &Descriptor = index
            .manifests
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| p.is_linux(arch)))
            .ok_or_else(|| RegistryError::NoPlatform {
                reference: self.reference.clone(),
                url: url.clone(),
                arch: arch.to_owned(),
                available: index
                    .manifests
                    .iter()
                    .map(|d| {
                        d.platform
                            .as_ref()
                            .map_or("unknown".into(), |p| p.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let (parsed, url) = self
            .get_manifest(chosen.digest.as_str(), Some(&chosen.digest))
            .await?;
        match parsed {
            ManifestOrIndex::Manifest(manifest) => Ok((manifest, url)),
            ManifestOrIndex::Index(_) => Err(self.invalid(
                &url,
                "the index points at another index; nested indexes are not supported".into(),
            )),
        }
    }

    async fn get_manifest(
        &self,
        target: &str,
        expected: Option<&Digest>,
    ) -> Result<(ManifestOrIndex, String), RegistryError> {
        let path = self.manifest_path(target);
        let url = self.url(&path);
        let response = self
            .send(
                Method::GET,
                &path,
                &[(ACCEPT, ACCEPTED_MANIFESTS)],
                Bytes::new(),
            )
            .await?;
        let response = self
            .expect_status(Method::GET, &path, response, StatusCode::OK)
            .await?;
        let content_type = header(response.headers(), CONTENT_TYPE).map(str::to_owned);
        let announced =
            header(response.headers(), "docker-content-digest").and_then(|d| Digest::parse(d).ok());
        let (bytes, actual) = self
            .read_body(
                &url,
                response.into_body(),
                MAX_MANIFEST_BYTES,
                "the manifest",
            )
            .await?;
        // A pinned digest must match; else the one the registry announces, if any.
        if let Some(expected) = expected.or(announced.as_ref())
            && *expected != actual
        {
            return Err(RegistryError::DigestMismatch {
                reference: self.reference.clone(),
                url,
                what: "the manifest".into(),
                expected: expected.clone(),
                actual,
            });
        }
        let parsed = ManifestOrIndex::parse(&bytes, content_type.as_deref())
            .map_err(|reason| self.invalid(&url, reason))?;
        Ok((parsed, url))
    }

    /// Downloads a blob, checking its size and digest as it streams in.
    async fn get_blob(
        &self,
        descriptor: &Descriptor,
        what: &str,
        limit: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        let path = self.blob_path(&descriptor.digest);
        let url = self.url(&path);
        if descriptor.size > limit {
            return Err(RegistryError::TooLarge {
                reference: self.reference.clone(),
                url,
                what: format!("{what} ({} bytes)", descriptor.size),
                limit,
            });
        }
        let response = self.send(Method::GET, &path, &[], Bytes::new()).await?;
        let response = self
            .expect_status(Method::GET, &path, response, StatusCode::OK)
            .await?;
        let size_mismatch = |sent: String| RegistryError::SizeMismatch {
            reference: self.reference.clone(),
            url: url.clone(),
            what: what.to_owned(),
            expected: descriptor.size,
            sent,
        };
        let (data, actual) = self
            .read_body(&url, response.into_body(), descriptor.size, what)
            .await
            .map_err(|e| match e {
                RegistryError::TooLarge { .. } => size_mismatch("more".into()),
                e => e,
            })?;
        if data.len() as u64 != descriptor.size {
            return Err(size_mismatch(data.len().to_string()));
        }
        if actual != descriptor.digest {
            return Err(RegistryError::DigestMismatch {
                reference: self.reference.clone(),
                url,
                what: what.to_owned(),
                expected: descriptor.digest.clone(),
                actual,
            });
        }
        Ok(data)
    }

    /// Reads a body of at most `limit` bytes, hashing it on the way; each chunk must arrive
    /// within [`BODY_IDLE_TIMEOUT`].
    async fn read_body(
        &self,
        url: &str,
        mut body: Incoming,
        limit: u64,
        what: &str,
    ) -> Result<(Vec<u8>, Digest), RegistryError> {
        let mut data = Vec::new();
        let mut hasher = Sha256::new();
        loop {
            let frame = tokio::time::timeout(BODY_IDLE_TIMEOUT, body.frame())
                .await
                .map_err(|_| RegistryError::Timeout {
                    reference: self.reference.clone(),
                    method: Method::GET,
                    url: url.to_owned(),
                    timeout: BODY_IDLE_TIMEOUT,
                })?;
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|e| RegistryError::Http {
                reference: self.reference.clone(),
                method: Method::GET,
                url: url.to_owned(),
                source: e.into(),
            })?;
            let Ok(chunk) = frame.into_data() else {
                continue;
            };
            if (data.len() + chunk.len()) as u64 > limit {
                return Err(RegistryError::TooLarge {
                    reference: self.reference.clone(),
                    url: url.to_owned(),
                    what: what.to_owned(),
                    limit,
                });
            }
            hasher.update(&chunk);
            data.extend_from_slice(&chunk);
        }
        Ok((data, Digest::from_hasher(hasher)))
    }
}

fn header(headers: &HeaderMap, name: impl http::header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `: CODE: message; …` from a registry's JSON error body, else its first line of text.
async fn error_detail(body: Incoming) -> String {
    let read = http_body_util::Limited::new(body, MAX_ERROR_BODY_BYTES).collect();
    let Ok(Ok(collected)) = tokio::time::timeout(BODY_IDLE_TIMEOUT, read).await else {
        return String::new();
    };
    let bytes = collected.to_bytes();
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        code: String,
        #[serde(default)]
        message: String,
    }
    let text = match serde_json::from_slice::<Errors>(&bytes) {
        Ok(errors) => errors
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.code, e.message))
            .collect::<Vec<_>>()
            .join("; "),
        Err(_) => String::from_utf8_lossy(&bytes)
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect(),
    };
    if text.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", text.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry_for(reference: &str) -> Result<Registry, String> {
        Registry::for_reference(&Reference::parse(reference).unwrap()).map_err(|e| e.to_string())
    }

    #[test]
    fn a_reference_names_a_plain_http_endpoint_or_says_why_not() {
        let r = registry_for("10.0.2.2:5000/talos/installer:v1").unwrap();
        assert_eq!(r.endpoint, "10.0.2.2:5000".parse().unwrap());
        assert_eq!(r.authority, "10.0.2.2:5000");
        let r = registry_for("localhost:5000/x").unwrap();
        assert_eq!(r.endpoint, "127.0.0.1:5000".parse().unwrap());
        let r = registry_for("[fd00::1]:5000/x").unwrap();
        assert_eq!(r.endpoint, "[fd00::1]:5000".parse().unwrap());
        assert_eq!(r.authority, "[fd00::1]:5000");

        let e = registry_for("ghcr.io/siderolabs/installer:v1.9.0").unwrap_err();
        assert!(
            e.starts_with("ghcr.io/siderolabs/installer:v1.9.0: "),
            "{e}"
        );
        assert!(e.contains("must be an IP address"), "{e}");
        for https in ["10.0.2.2/x", "10.0.2.2:443/x"] {
            let e = registry_for(https).unwrap_err();
            assert!(
                e.contains("speaks HTTPS") && e.contains("no CA bundle"),
                "{e}"
            );
        }
    }

    #[test]
    fn upload_locations_may_be_relative_or_absolute_but_not_elsewhere() {
        let registry = registry_for("127.0.0.1:5000/x").unwrap();
        let reference = Reference::parse("127.0.0.1:5000/x").unwrap();
        let op = Op::new(&registry, &reference);
        let uploads = "/v2/x/blobs/uploads/";
        assert_eq!(
            op.upload_path(uploads, "/v2/x/blobs/uploads/u?_state=s")
                .unwrap(),
            "/v2/x/blobs/uploads/u?_state=s"
        );
        assert_eq!(
            op.upload_path(uploads, "http://127.0.0.1:5000/v2/x/blobs/uploads/u")
                .unwrap(),
            "/v2/x/blobs/uploads/u"
        );
        for (location, reason) in [
            ("https://127.0.0.1:5000/v2/x", "no CA bundle"),
            ("http://10.0.0.9:5000/v2/x", "another host"),
            ("v2/x/blobs/uploads/u", "neither a path nor an http:// URL"),
        ] {
            let e = op.upload_path(uploads, location).unwrap_err().to_string();
            assert!(e.contains(reason), "{location}: {e}");
        }
    }
}
