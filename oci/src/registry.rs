//! A registry client for the OCI distribution API over HTTP/1.1, with or without TLS (hyper,
//! one connection per request): push an [`Image`], pull chosen files out of an image.
//!
//! Scheme: plain HTTP only for an IP address or `localhost` with a port other than 443 and no
//! TLS settings; HTTPS otherwise (see [`Registry::with_options`]), or what a mirror endpoint
//! says (see [`Registry::mirror`]). On a 401, a `Bearer` challenge gets a token (the Docker
//! token flow: anonymous, with Basic credentials, or for an identity token) and a `Basic`
//! challenge gets the configured user and password; credentials go to no host but the
//! registry's and its token service's.
//! GET redirects are followed. Every blob is checked against its digest while it streams in,
//! and a manifest against the digest the reference pins (or the registry announces).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST, LOCATION, USER_AGENT,
    WWW_AUTHENTICATE,
};
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use sha2::{Digest as _, Sha256};

use crate::auth::{
    Credentials, basic_authorization, is_basic_challenge, may_send_credentials, query_escape,
    refresh_token_form,
};
use crate::digest::Digest;
use crate::image::{Blob, Image};
use crate::layer::{LayerError, LayerFormat, Overlay};
use crate::manifest::{Descriptor, ImageConfig, Index, Manifest, ManifestOrIndex};
use crate::media_type;
use crate::reference::Reference;
use crate::transport::{
    self, RegistryTls, Resolve, SystemResolver, Target, TlsConfigError, literal_ip,
};

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
/// Redirects followed for one GET or HEAD.
const MAX_REDIRECTS: usize = 5;
const MAX_TOKEN_BYTES: usize = 64 * 1024;
/// Where the distribution API lives on a registry.
const API_ROOT: &str = "/v2";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{reference}: machine.registries.config.\"{authority}\".tls: {source}")]
    TlsConfig {
        reference: String,
        authority: String,
        #[source]
        source: TlsConfigError,
    },
    #[error(
        "{reference}: cannot resolve the registry host {host}: {reason} (map it with machine.network.extraHostEntries or give the node a nameserver)"
    )]
    Resolve {
        reference: String,
        host: String,
        reason: String,
    },
    #[error("{reference}: connecting to {authority} ({addrs})")]
    Connect {
        reference: String,
        authority: String,
        addrs: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{reference}: TLS with {authority} failed: {source} (for a registry with its own CA, put the CA as base64 PEM in machine.registries.config.\"{authority}\".tls.ca)"
    )]
    Tls {
        reference: String,
        authority: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{reference}: getting a bearer token from {url}: {reason}")]
    Token {
        reference: String,
        url: String,
        reason: String,
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
    #[error("{reference}: {method} {url}: authentication is required ({challenge}); {hint}")]
    Unauthorized {
        reference: String,
        method: Method,
        url: String,
        challenge: String,
        /// What is missing, such as credentials for the registry.
        hint: String,
    },
    #[error(
        "{reference}: {method} {url}: the credentials for {registry} were refused (check machine.registries.config.\"{registry}\".auth)"
    )]
    CredentialsRefused {
        reference: String,
        method: Method,
        url: String,
        registry: String,
    },
    #[error("mirror endpoint {endpoint}: {reason}")]
    Endpoint { endpoint: String, reason: String },
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

/// How to reach a registry beyond what its reference says.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// `machine.registries.config.<host:port>.tls` for the reference's registry, if any.
    pub tls: Option<RegistryTls>,
    /// Resolves registry host names; the system resolver if `None`.
    pub resolver: Option<Arc<dyn Resolve>>,
    /// `machine.registries.config.<host:port>.auth` for the registry, if any.
    pub credentials: Option<Credentials>,
}

/// A registry: where it is, which scheme it speaks, whom it trusts and who we are to it.
#[derive(Debug, Clone)]
pub struct Registry {
    /// Scheme, host and port; its path is the API root that `/<repository>/…` follows
    /// (`/v2`, or a mirror's).
    target: Target,
    tls: Arc<ClientConfig>,
    resolver: Arc<dyn Resolve>,
    credentials: Option<Credentials>,
}

impl Registry {
    /// A registry over plain HTTP at `endpoint`.
    pub fn plain_http(endpoint: SocketAddr) -> Self {
        Self {
            target: Target {
                https: false,
                host: endpoint.ip().to_string(),
                port: endpoint.port(),
                authority: endpoint.to_string(),
                path: API_ROOT.into(),
            },
            tls: Self::public_roots(),
            resolver: Arc::new(SystemResolver),
            credentials: None,
        }
    }

    /// [`with_options`](Self::with_options) without TLS settings, using the system resolver.
    pub fn for_reference(reference: &Reference) -> Result<Self, RegistryError> {
        Self::with_options(reference, &RegistryOptions::default())
    }

    /// The registry a reference names. It speaks plain HTTP when its host is an IP address or
    /// `localhost` with a port other than 443 and `options.tls` is `None`, as before HTTPS was
    /// supported; else HTTPS (port 443 by default), trusting `options.tls`'s CA if it gives
    /// one, else Mozilla's public roots. `options.credentials` answer its challenges.
    pub fn with_options(
        reference: &Reference,
        options: &RegistryOptions,
    ) -> Result<Self, RegistryError> {
        let plain = options.tls.is_none()
            && literal_ip(reference.host()).is_some()
            && reference.port().is_some_and(|p| p != 443);
        let tls = match &options.tls {
            Some(tls) => {
                transport::client_config(tls).map_err(|source| RegistryError::TlsConfig {
                    reference: reference.to_string(),
                    authority: reference.registry().to_owned(),
                    source,
                })?
            }
            None => Self::public_roots(),
        };
        Ok(Self {
            target: Target {
                https: !plain,
                host: reference.host().to_owned(),
                port: reference.port().unwrap_or(if plain { 80 } else { 443 }),
                authority: reference.registry().to_owned(),
                path: API_ROOT.into(),
            },
            tls,
            resolver: options
                .resolver
                .clone()
                .unwrap_or_else(|| Arc::new(SystemResolver)),
            credentials: options.credentials.clone(),
        })
    }

    /// A mirror at `endpoint` (upstream's `machine.registries.mirrors.<host>.endpoints`):
    /// `http://` or `https://`, `host[:port]` (IPv6 in brackets), and an optional path.
    /// Requests go to `<path>/v2/<repository>/…` (`/v2` is not doubled if the path ends in
    /// it) or, with `override_path`, to `<path>/<repository>/…`; the repository, tag and
    /// digest are the reference's given to [`push`](Self::push) or
    /// [`pull_files`](Self::pull_files). HTTPS trusts `options.tls`'s CA if it gives one,
    /// else Mozilla's public roots; TLS settings for a plain-HTTP endpoint are refused.
    pub fn mirror(
        endpoint: &str,
        override_path: bool,
        options: &RegistryOptions,
    ) -> Result<Self, RegistryError> {
        let shown = without_userinfo(endpoint);
        let endpoint_err = |reason: String| RegistryError::Endpoint {
            endpoint: shown.clone(),
            reason,
        };
        let target = mirror_target(endpoint, override_path).map_err(endpoint_err)?;
        let tls = match &options.tls {
            Some(_) if !target.https => {
                return Err(endpoint_err(format!(
                    "TLS settings are given for the plain-HTTP endpoint {}",
                    target.authority
                )));
            }
            Some(tls) => {
                transport::client_config(tls).map_err(|source| RegistryError::TlsConfig {
                    reference: shown.clone(),
                    authority: target.authority.clone(),
                    source,
                })?
            }
            None => Self::public_roots(),
        };
        Ok(Self {
            target,
            tls,
            resolver: options
                .resolver
                .clone()
                .unwrap_or_else(|| Arc::new(SystemResolver)),
            credentials: options.credentials.clone(),
        })
    }

    /// Whether requests go over HTTPS.
    pub fn is_https(&self) -> bool {
        self.target.https
    }

    fn public_roots() -> Arc<ClientConfig> {
        transport::client_config(&RegistryTls::default())
            .unwrap_or_else(|e| panic!("Mozilla's roots make a TLS config: {e}"))
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

/// One push or pull: the registry, the reference every error names, and what it learnt on the
/// way (an `Authorization` value, resolved addresses).
struct Op<'a> {
    registry: &'a Registry,
    repository: &'a str,
    pinned: Option<&'a Digest>,
    pull_target: &'a str,
    reference: String,
    /// `Bearer <token>` or `Basic <credentials>`, sent to the registry's own host only.
    authorization: Mutex<Option<String>>,
    resolved: Mutex<BTreeMap<String, Vec<SocketAddr>>>,
}

/// One request's method, headers and body, sent again after a token or a redirect.
struct Exchange<'h> {
    method: Method,
    headers: &'h [(http::HeaderName, &'h str)],
    body: Bytes,
    /// Whether the op's `Authorization` goes along (to the registry's own host only); token
    /// requests carry their own.
    authorize: bool,
}

impl<'a> Op<'a> {
    fn new(registry: &'a Registry, reference: &'a Reference) -> Self {
        Self {
            registry,
            repository: reference.repository(),
            pinned: reference.digest(),
            pull_target: reference.pull_target(),
            reference: reference.to_string(),
            authorization: Mutex::new(None),
            resolved: Mutex::new(BTreeMap::new()),
        }
    }

    fn target(&self, path: &str) -> Target {
        Target {
            path: path.to_owned(),
            ..self.registry.target.clone()
        }
    }

    fn url(&self, path: &str) -> String {
        self.target(path).url()
    }

    fn manifest_path(&self, target: &str) -> String {
        format!("{}/{}/manifests/{target}", self.root(), self.repository)
    }

    fn blob_path(&self, digest: &Digest) -> String {
        format!("{}/{}/blobs/{digest}", self.root(), self.repository)
    }

    fn uploads_path(&self) -> String {
        format!("{}/{}/blobs/uploads/", self.root(), self.repository)
    }

    /// The API root: `/v2`, or a mirror's.
    fn root(&self) -> &str {
        &self.registry.target.path
    }

    fn invalid(&self, url: &str, reason: String) -> RegistryError {
        RegistryError::Invalid {
            reference: self.reference.clone(),
            url: url.to_owned(),
            reason,
        }
    }

    fn is_registry(&self, target: &Target) -> bool {
        target.https == self.registry.target.https
            && target
                .authority
                .eq_ignore_ascii_case(&self.registry.target.authority)
    }

    /// Sends a request to the registry and returns the response once its head is in. A 401
    /// the op can answer (see [`answer`](Self::answer)) is sent again with the answer; GET
    /// and HEAD follow redirects. A remaining 401 or redirect is an error; other statuses are
    /// the caller's.
    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(http::HeaderName, &str)],
        body: Bytes,
    ) -> Result<http::Response<Incoming>, RegistryError> {
        let exchange = Exchange {
            method,
            headers,
            body,
            authorize: true,
        };
        let mut target = self.target(path);
        let mut response = self.exchange(&target, &exchange).await?;
        let mut credentials_sent = false;
        if response.status() == StatusCode::UNAUTHORIZED
            && let Some(authorization) = self
                .answer(header(response.headers(), WWW_AUTHENTICATE))
                .await?
        {
            credentials_sent = self.registry.credentials.is_some();
            *self.authorization.lock().unwrap_or_else(|e| e.into_inner()) = Some(authorization);
            response = self.exchange(&target, &exchange).await?;
        }
        let method = &exchange.method;
        for _ in 0..=MAX_REDIRECTS {
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED {
                return Err(self.unauthorized(
                    method,
                    &target,
                    header(response.headers(), WWW_AUTHENTICATE),
                    credentials_sent,
                ));
            }
            if !status.is_redirection() || status == StatusCode::NOT_MODIFIED {
                return Ok(response);
            }
            let location = header(response.headers(), LOCATION).unwrap_or_default();
            let redirect = |reason: &'static str| RegistryError::Redirect {
                reference: self.reference.clone(),
                method: method.clone(),
                url: target.url(),
                location: location.to_owned(),
                reason,
            };
            if *method != Method::GET && *method != Method::HEAD {
                return Err(redirect("only GET and HEAD redirects are followed"));
            }
            let next = if location.starts_with('/') {
                Target {
                    path: location.to_owned(),
                    ..target.clone()
                }
            } else {
                Target::parse(location).ok_or_else(|| redirect("not a path or an http(s) URL"))?
            };
            if target.https && !next.https {
                return Err(redirect("a redirect from HTTPS to plain HTTP is refused"));
            }
            target = next;
            response = self.exchange(&target, &exchange).await?;
        }
        Err(RegistryError::Redirect {
            reference: self.reference.clone(),
            method: method.clone(),
            url: target.url(),
            location: header(response.headers(), LOCATION)
                .unwrap_or_default()
                .to_owned(),
            reason: "too many redirects",
        })
    }

    /// The `Authorization` value answering a 401's challenge: a bearer token (fetched with
    /// the credentials, if any) or the Basic credentials; `None` if the op has no answer.
    async fn answer(&self, challenge: Option<&str>) -> Result<Option<String>, RegistryError> {
        let Some(challenge) = challenge else {
            return Ok(None);
        };
        if let Some(bearer) = BearerChallenge::parse(challenge) {
            return Ok(Some(format!("Bearer {}", self.fetch_token(&bearer).await?)));
        }
        Ok(match &self.registry.credentials {
            Some(Credentials::Basic { username, password }) if is_basic_challenge(challenge) => {
                Some(basic_authorization(username, password))
            }
            _ => None,
        })
    }

    /// The error for a 401 from `target`: the credentials were refused if they were sent,
    /// else authentication is required and what is missing.
    fn unauthorized(
        &self,
        method: &Method,
        target: &Target,
        challenge: Option<&str>,
        credentials_sent: bool,
    ) -> RegistryError {
        let registry = target.authority.clone();
        if credentials_sent && self.is_registry(target) {
            return RegistryError::CredentialsRefused {
                reference: self.reference.clone(),
                method: method.clone(),
                url: target.url(),
                registry,
            };
        }
        let hint = match (&self.registry.credentials, challenge) {
            (None, _) => format!(
                "no credentials are configured for {registry} (machine.registries.config.\"{registry}\".auth)"
            ),
            _ if !self.is_registry(target) => {
                "credentials go to the registry only, not to hosts it redirects to".into()
            }
            (Some(Credentials::IdentityToken(_)), Some(c)) if is_basic_challenge(c) => {
                "an identity token answers bearer challenges only; configure a username and password"
                    .into()
            }
            (Some(_), _) => "its challenge's scheme is not supported".into(),
        };
        RegistryError::Unauthorized {
            reference: self.reference.clone(),
            method: method.clone(),
            url: target.url(),
            challenge: challenge.unwrap_or("no WWW-Authenticate header").to_owned(),
            hint,
        }
    }

    /// One request on a fresh connection. The registry gets its own trust and, if the
    /// exchange allows, the op's `Authorization`; any other host gets the public roots and
    /// no `Authorization` but what the exchange's headers carry.
    async fn exchange(
        &self,
        target: &Target,
        exchange: &Exchange<'_>,
    ) -> Result<http::Response<Incoming>, RegistryError> {
        let Exchange {
            method,
            headers,
            body,
            authorize,
        } = exchange;
        let url = target.url();
        // Uploads may take longer: one more second per MIN_UPLOAD_BYTES_PER_SECOND.
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
        let own = self.is_registry(target);
        let mut sender = tokio::time::timeout(CONNECT_TIMEOUT, self.connect(target, own))
            .await
            .map_err(|_| timed_out(CONNECT_TIMEOUT))??;
        let mut request = http::Request::builder()
            .method(method.clone())
            .uri(&target.path)
            .header(HOST, &target.authority)
            .header(USER_AGENT, concat!("talos-rs/", env!("CARGO_PKG_VERSION")));
        if *method == Method::POST || *method == Method::PUT {
            request = request.header(CONTENT_LENGTH, body.len());
        }
        if own
            && *authorize
            && let Some(authorization) =
                &*self.authorization.lock().unwrap_or_else(|e| e.into_inner())
        {
            request = request.header(AUTHORIZATION, authorization);
        }
        for (name, value) in *headers {
            request = request.header(name, *value);
        }
        let request = request
            .body(Full::new(body.clone()))
            .map_err(|e| http_err(e.into()))?;
        tokio::time::timeout(timeout, sender.send_request(request))
            .await
            .map_err(|_| timed_out(timeout))?
            .map_err(|e| http_err(e.into()))
    }

    /// Opens a connection to `target` (with TLS for https) and hands it to hyper.
    async fn connect(
        &self,
        target: &Target,
        own: bool,
    ) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, RegistryError> {
        let addrs = self.addresses(target).await?;
        let stream = tokio::net::TcpStream::connect(addrs.as_slice())
            .await
            .map_err(|source| RegistryError::Connect {
                reference: self.reference.clone(),
                authority: target.authority.clone(),
                addrs: addrs
                    .iter()
                    .map(SocketAddr::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                source,
            })?;
        let http_err = |e: hyper::Error| RegistryError::Http {
            reference: self.reference.clone(),
            method: Method::CONNECT,
            url: target.url(),
            source: e.into(),
        };
        if !target.https {
            return handshake(stream).await.map_err(http_err);
        }
        let tls_err = |source| RegistryError::Tls {
            reference: self.reference.clone(),
            authority: target.authority.clone(),
            source,
        };
        let name = ServerName::try_from(target.host.clone())
            .map_err(|e| tls_err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
        let config = if own {
            self.registry.tls.clone()
        } else {
            Registry::public_roots()
        };
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, stream)
            .await
            .map_err(tls_err)?;
        handshake(stream).await.map_err(http_err)
    }

    /// The socket addresses of `target`, resolved once per host and operation.
    async fn addresses(&self, target: &Target) -> Result<Vec<SocketAddr>, RegistryError> {
        let key = format!("{}:{}", target.host, target.port);
        if let Some(addrs) = self
            .resolved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(addrs.clone());
        }
        let addrs = transport::addresses(target, self.registry.resolver.as_ref())
            .await
            .map_err(|reason| RegistryError::Resolve {
                reference: self.reference.clone(),
                host: target.host.clone(),
                reason,
            })?;
        self.resolved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, addrs.clone());
        Ok(addrs)
    }

    /// The Docker token flow: GET the realm with service and scope, anonymously or with the
    /// Basic credentials, or POST an identity token to it as an OAuth2 refresh token; take
    /// `token` (or `access_token`) from its JSON. Credentials go to a realm over HTTPS only,
    /// unless it is on the registry's host.
    async fn fetch_token(&self, challenge: &BearerChallenge) -> Result<String, RegistryError> {
        let token_err = |url: &str, reason: String| RegistryError::Token {
            reference: self.reference.clone(),
            url: url.to_owned(),
            reason,
        };
        let credentials = self.registry.credentials.as_ref();
        let refresh_token = match credentials {
            Some(Credentials::IdentityToken(token)) => Some(token),
            _ => None,
        };
        let mut url = challenge.realm.clone();
        // A refresh token's request carries service and scope in its form instead.
        if refresh_token.is_none() {
            let mut separator = if url.contains('?') { '&' } else { '?' };
            for (key, value) in [("service", &challenge.service), ("scope", &challenge.scope)] {
                if let Some(value) = value {
                    url.push_str(&format!("{separator}{key}={}", query_escape(value)));
                    separator = '&';
                }
            }
        }
        let target = Target::parse(&url)
            .ok_or_else(|| token_err(&url, "the realm is not an http(s) URL".into()))?;
        if self.registry.target.https && !target.https {
            return Err(token_err(
                &url,
                "the registry speaks HTTPS but its realm is plain HTTP".into(),
            ));
        }
        if credentials.is_some() && !may_send_credentials(&self.registry.target, &target) {
            return Err(token_err(
                &url,
                format!(
                    "the credentials for {} are not sent to another host over plain HTTP",
                    self.registry.target.authority
                ),
            ));
        }
        let basic = match credentials {
            Some(Credentials::Basic { username, password }) => {
                Some(basic_authorization(username, password))
            }
            _ => None,
        };
        let (method, headers, body) = match (refresh_token, &basic) {
            (Some(token), _) => (
                Method::POST,
                vec![(CONTENT_TYPE, "application/x-www-form-urlencoded")],
                Bytes::from(refresh_token_form(
                    token,
                    challenge.service.as_deref(),
                    challenge.scope.as_deref(),
                )),
            ),
            (None, Some(basic)) => (
                Method::GET,
                vec![(AUTHORIZATION, basic.as_str())],
                Bytes::new(),
            ),
            (None, None) => (Method::GET, vec![], Bytes::new()),
        };
        let exchange = Exchange {
            method: method.clone(),
            headers: &headers,
            body,
            authorize: false,
        };
        let response = self.exchange(&target, &exchange).await?;
        let status = response.status();
        // OAuth2 answers 400 (invalid_grant) to a bad refresh token.
        let refused = [StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&status)
            || (refresh_token.is_some() && status == StatusCode::BAD_REQUEST);
        if credentials.is_some() && refused {
            return Err(RegistryError::CredentialsRefused {
                reference: self.reference.clone(),
                method,
                url,
                registry: self.registry.target.authority.clone(),
            });
        }
        let status = response.status();
        if status != StatusCode::OK {
            let detail = error_detail(response.into_body()).await;
            return Err(token_err(&url, format!("answered {status}{detail}")));
        }
        let read = http_body_util::Limited::new(response.into_body(), MAX_TOKEN_BYTES).collect();
        let body = tokio::time::timeout(BODY_IDLE_TIMEOUT, read)
            .await
            .map_err(|_| token_err(&url, format!("no answer within {BODY_IDLE_TIMEOUT:?}")))?
            .map_err(|e| token_err(&url, format!("reading the answer: {e}")))?
            .to_bytes();
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
        }
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| token_err(&url, format!("the answer is not token JSON: {e}")))?;
        parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| token_err(&url, "the answer has no token or access_token".into()))
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
        let uploads = self.uploads_path();
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
        if location.starts_with('/') {
            return Ok(location.to_owned());
        }
        let invalid = |reason: String| self.invalid(&self.url(uploads), reason);
        let target = Target::parse(location).ok_or_else(|| {
            invalid(format!(
                "the upload location {location:?} is neither a path nor an http(s) URL"
            ))
        })?;
        if !self.is_registry(&target) {
            return Err(invalid(format!(
                "the upload location {location} is on another host or scheme, which is not supported"
            )));
        }
        Ok(target.path)
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

/// Where a mirror endpoint's requests go; its path is the API root (see [`Registry::mirror`]).
fn mirror_target(endpoint: &str, override_path: bool) -> Result<Target, String> {
    let Some(rest) = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
    else {
        return Err("it must start with http:// or https://".into());
    };
    if endpoint.contains(['?', '#']) {
        return Err("a query or fragment is not allowed".into());
    }
    if rest.split('/').next().is_some_and(|a| a.contains('@')) {
        return Err(
            "user info is not allowed; credentials belong in machine.registries.config.<host>.auth"
                .into(),
        );
    }
    let mut target = Target::parse(endpoint).ok_or("it has no valid host[:port]")?;
    if target.host.contains(':') && !target.authority.starts_with('[') {
        return Err("an IPv6 address must be in brackets".into());
    }
    let mut segments = Vec::new();
    for segment in target.path.split('/') {
        match segment {
            "" | "." => {}
            ".." => return Err("its path may not contain ..".into()),
            segment => segments.push(segment),
        }
    }
    if !override_path && segments.last() != Some(&"v2") {
        segments.push("v2");
    }
    target.path = segments.iter().map(|s| format!("/{s}")).collect();
    Ok(target)
}

/// `endpoint` with any `user:password@` masked, for messages.
fn without_userinfo(endpoint: &str) -> String {
    let (scheme, rest) = match endpoint.find("://") {
        Some(i) => endpoint.split_at(i + 3),
        None => ("", endpoint),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}***@{}", &rest[at + 1..]),
        None => endpoint.to_owned(),
    }
}

/// Starts HTTP/1.1 on `io`; the connection task ends with the exchange, and its errors
/// surface through the response.
async fn handshake<T>(
    io: T,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, hyper::Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// `WWW-Authenticate: Bearer realm="…",service="…",scope="…"`.
#[derive(Debug, PartialEq, Eq)]
struct BearerChallenge {
    realm: String,
    service: Option<String>,
    scope: Option<String>,
}

impl BearerChallenge {
    fn parse(header: &str) -> Option<Self> {
        let (scheme, params) = header.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let mut params = auth_params(params);
        let mut take = |key: &str| {
            params
                .iter()
                .position(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|i| params.swap_remove(i).1)
        };
        Some(Self {
            realm: take("realm")?,
            service: take("service"),
            scope: take("scope"),
        })
    }
}

/// `key=value` or `key="quoted, value"` pairs separated by commas.
fn auth_params(mut rest: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        let Some((key, after)) = rest.split_once('=') else {
            return params;
        };
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next().map(|(_, c)| c)),
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        params.push((key.trim().to_owned(), value));
        rest = after;
    }
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
    fn plain_http_only_for_ip_literals_with_a_port_and_no_tls_settings() {
        let r = registry_for("10.0.2.2:5000/talos/installer:v1").unwrap();
        assert_eq!(r.target.url(), "http://10.0.2.2:5000/v2");
        let r = registry_for("localhost:5000/x").unwrap();
        assert_eq!(r.target.url(), "http://localhost:5000/v2");
        let r = registry_for("[fd00::1]:5000/x").unwrap();
        assert_eq!((r.target.host.as_str(), r.target.port), ("fd00::1", 5000));
        assert_eq!(r.target.url(), "http://[fd00::1]:5000/v2");

        for (reference, port) in [
            ("ghcr.io/siderolabs/installer:v1.9.0", 443),
            ("registry.test:5000/x", 5000),
            ("10.0.2.2/x", 443),
            ("10.0.2.2:443/x", 443),
        ] {
            let r = registry_for(reference).unwrap();
            assert!(r.is_https(), "{reference}");
            assert_eq!(r.target.port, port, "{reference}");
        }
        let reference = Reference::parse("10.0.2.2:5000/x").unwrap();
        let options = RegistryOptions {
            tls: Some(RegistryTls {
                insecure_skip_verify: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(
            Registry::with_options(&reference, &options)
                .unwrap()
                .is_https()
        );

        let options = RegistryOptions {
            tls: Some(RegistryTls {
                ca_pem: Some("garbage".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = Registry::with_options(&reference, &options)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("machine.registries.config.\"10.0.2.2:5000\".tls: tls.ca holds no PEM"),
            "{e}"
        );
    }

    /// The manifest URL a mirror at `endpoint` asks for `x/installer:v1`.
    fn mirror_url(endpoint: &str, override_path: bool) -> Result<String, String> {
        let registry = Registry::mirror(endpoint, override_path, &RegistryOptions::default())
            .map_err(|e| e.to_string())?;
        let reference = Reference::parse("registry.example/x/installer:v1").unwrap();
        let op = Op::new(&registry, &reference);
        Ok(op.url(&op.manifest_path(reference.pull_target())))
    }

    #[test]
    fn mirror_urls_append_v2_unless_the_path_is_overridden() {
        for (endpoint, override_path, url) in [
            (
                "http://10.0.0.5:5000",
                false,
                "http://10.0.0.5:5000/v2/x/installer/manifests/v1",
            ),
            (
                "http://10.0.0.5:5000/",
                false,
                "http://10.0.0.5:5000/v2/x/installer/manifests/v1",
            ),
            (
                "https://m.test/v2",
                false,
                "https://m.test/v2/x/installer/manifests/v1",
            ),
            (
                "https://m.test/cache/",
                false,
                "https://m.test/cache/v2/x/installer/manifests/v1",
            ),
            (
                "https://harbor.test/v2/proxy-docker.io",
                true,
                "https://harbor.test/v2/proxy-docker.io/x/installer/manifests/v1",
            ),
            (
                "https://m.test",
                true,
                "https://m.test/x/installer/manifests/v1",
            ),
            (
                "http://[fd00::1]:5000",
                false,
                "http://[fd00::1]:5000/v2/x/installer/manifests/v1",
            ),
            (
                "https://[fd00::1]/v2",
                true,
                "https://[fd00::1]/v2/x/installer/manifests/v1",
            ),
        ] {
            assert_eq!(
                mirror_url(endpoint, override_path).as_deref(),
                Ok(url),
                "{endpoint} {override_path}"
            );
        }
        let r = Registry::mirror(
            "https://[fd00::1]:8443/v2",
            false,
            &RegistryOptions::default(),
        )
        .unwrap();
        assert!(r.is_https());
        assert_eq!((r.target.host.as_str(), r.target.port), ("fd00::1", 8443));
        assert!(
            !Registry::mirror("http://m.test", false, &RegistryOptions::default())
                .unwrap()
                .is_https()
        );
    }

    #[test]
    fn bad_mirror_endpoints_are_refused_naming_them() {
        for (endpoint, reason) in [
            ("ftp://x", "must start with http:// or https://"),
            ("m.test:5000", "must start with http:// or https://"),
            ("http://", "no valid host[:port]"),
            ("https://:5000/v2", "no valid host[:port]"),
            ("https://m.test:99999", "no valid host[:port]"),
            ("https://m.test/v2?x=1", "a query or fragment"),
            ("http://fd00::1/v2", "IPv6 address must be in brackets"),
            ("https://m.test/../v2", "may not contain .."),
        ] {
            let e = mirror_url(endpoint, false).unwrap_err();
            assert!(
                e.starts_with(&format!("mirror endpoint {endpoint}: ")) && e.contains(reason),
                "{endpoint}: {e}"
            );
        }
        let e = mirror_url("https://me:s3cret@m.test/v2", false).unwrap_err();
        assert_eq!(
            e,
            "mirror endpoint https://***@m.test/v2: user info is not allowed; \
             credentials belong in machine.registries.config.<host>.auth"
        );
        let options = RegistryOptions {
            tls: Some(RegistryTls::default()),
            ..Default::default()
        };
        let e = Registry::mirror("http://10.0.0.5:5000", false, &options)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("TLS settings are given for the plain-HTTP endpoint 10.0.0.5:5000"),
            "{e}"
        );
    }

    #[test]
    fn bearer_challenges_parse() {
        let c = BearerChallenge::parse(
            r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:siderolabs/installer:pull""#,
        )
        .unwrap();
        assert_eq!(
            c,
            BearerChallenge {
                realm: "https://ghcr.io/token".into(),
                service: Some("ghcr.io".into()),
                scope: Some("repository:siderolabs/installer:pull".into()),
            }
        );
        let c = BearerChallenge::parse(r#"bearer realm=https://a/t, scope="a,\"b""#).unwrap();
        assert_eq!(c.realm, "https://a/t");
        assert_eq!(c.scope.as_deref(), Some(r#"a,"b"#));
        assert_eq!(BearerChallenge::parse(r#"Basic realm="x""#), None);
        assert_eq!(BearerChallenge::parse(r#"Bearer service="x""#), None);
        assert_eq!(
            query_escape("repository:a/b:pull push"),
            "repository%3Aa%2Fb%3Apull%20push"
        );
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
            ("https://127.0.0.1:5000/v2/x", "another host or scheme"),
            ("http://10.0.0.9:5000/v2/x", "another host or scheme"),
            ("v2/x/blobs/uploads/u", "neither a path nor an http(s) URL"),
        ] {
            let e = op.upload_path(uploads, location).unwrap_err().to_string();
            assert!(e.contains(reason), "{location}: {e}");
        }
    }
}
