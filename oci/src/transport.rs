//! Connections for the registry client: where a URL's host is (IP literal, `localhost`, or a
//! name the caller's [`Resolve`] answers), and TLS with the trust the caller configured.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// A boxed future, as [`Resolve`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Turns a registry's host name into addresses. The node gives its own (host entries from
/// the machine config, then its DNS servers); without one, the system resolver is used.
pub trait Resolve: Send + Sync + fmt::Debug {
    /// The addresses of `host`, or why there are none.
    fn resolve<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, String>>;
}

/// The system resolver (`getaddrinfo` through tokio).
#[derive(Debug)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, String>> {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host, 0))
                .await
                .map_err(|e| e.to_string())?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// TLS settings for one registry host: upstream's `machine.registries.config.<host>.tls`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryTls {
    /// PEM CA certificates; when given, the only roots trusted for this host.
    pub ca_pem: Option<String>,
    /// Accept any server certificate.
    pub insecure_skip_verify: bool,
    /// The certificate this client presents, for registries that ask for one.
    pub client_identity: Option<ClientIdentity>,
}

/// A client certificate chain and its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &format_args!("<redacted>"))
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("tls.ca holds no PEM certificate")]
    NoCertificate,
    #[error("tls.ca: {0}")]
    BadCertificate(String),
    #[error("tls.clientIdentity: {0}")]
    BadClientIdentity(String),
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client configuration for `tls`: its CA, else Mozilla's public roots, and its client
/// certificate if it has one.
pub fn client_config(tls: &RegistryTls) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert {
                algorithms: provider.signature_verification_algorithms,
            }))
    } else {
        let roots = match &tls.ca_pem {
            Some(pem) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                    let cert = cert.map_err(|e| TlsConfigError::BadCertificate(e.to_string()))?;
                    roots
                        .add(cert)
                        .map_err(|e| TlsConfigError::BadCertificate(e.to_string()))?;
                }
                if roots.is_empty() {
                    return Err(TlsConfigError::NoCertificate);
                }
                roots
            }
            None => RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
        };
        builder.with_root_certificates(roots)
    };
    let config = match &tls.client_identity {
        Some(identity) => {
            let bad = |what: &str, e: &dyn fmt::Display| {
                TlsConfigError::BadClientIdentity(format!("{what}: {e}"))
            };
            let certs = CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad("crt", &e))?;
            if certs.is_empty() {
                return Err(bad("crt", &"no PEM certificate"));
            }
            let key = match PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()) {
                Ok(key) => key,
                Err(e) => talos_ed25519_key(&identity.key_pem).ok_or_else(|| bad("key", &e))?,
            };
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| bad("the key does not match the certificate", &e))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// A key in Talos's own PEM form: PKCS#8 under the label `ED25519 PRIVATE KEY`, as
/// `talosctl` writes client keys.
fn talos_ed25519_key(pem: &str) -> Option<PrivateKeyDer<'static>> {
    use base64::Engine;
    let body = pem
        .split_once("-----BEGIN ED25519 PRIVATE KEY-----")?
        .1
        .split_once("-----END ED25519 PRIVATE KEY-----")?
        .0;
    let text: String = body.split_whitespace().collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    Some(PrivateKeyDer::Pkcs8(der.into()))
}

/// Trusts any server certificate: `tls.insecureSkipVerify: true`.
#[derive(Debug)]
struct AcceptAnyServerCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Where one request goes: scheme, host and port of a URL, and its path and query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub https: bool,
    /// Without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// `host[:port]` as written, for `Host:` and messages.
    pub authority: String,
    pub path: String,
}

impl Target {
    /// Parses an absolute `http://` or `https://` URL.
    pub fn parse(url: &str) -> Option<Target> {
        let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else {
            (false, url.strip_prefix("http://")?)
        };
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let (host, port) = split_authority(authority)?;
        let path = match path {
            "" => "/".to_owned(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_owned(),
        };
        Some(Target {
            https,
            host: host.to_owned(),
            port: port.unwrap_or(if https { 443 } else { 80 }),
            authority: authority.to_owned(),
            path,
        })
    }

    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{}", self.authority, self.path)
    }
}

/// `host` (brackets stripped) and port of `host[:port]`.
fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = port
        .map(|p| p.parse().ok())
        .map_or(Some(None), |p| p.map(Some))?;
    Some((host, port))
}

/// An IP literal or `localhost` as an address, without asking a resolver.
pub(crate) fn literal_ip(host: &str) -> Option<IpAddr> {
    if host.eq_ignore_ascii_case("localhost") {
        return Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    host.parse().ok()
}

/// The socket addresses of `target`, through `resolver` unless its host is a literal.
pub(crate) async fn addresses(
    target: &Target,
    resolver: &dyn Resolve,
) -> Result<Vec<SocketAddr>, String> {
    if let Some(ip) = literal_ip(&target.host) {
        return Ok(vec![SocketAddr::new(ip, target.port)]);
    }
    let ips = resolver.resolve(&target.host).await?;
    if ips.is_empty() {
        return Err("no addresses".into());
    }
    Ok(ips
        .into_iter()
        .map(|ip| SocketAddr::new(ip, target.port))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let t = Target::parse("https://ghcr.io/token?scope=x&service=ghcr.io").unwrap();
        assert_eq!(
            (t.https, t.host.as_str(), t.port, t.path.as_str()),
            (true, "ghcr.io", 443, "/token?scope=x&service=ghcr.io")
        );
        let t = Target::parse("http://[fd00::1]:5000").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("fd00::1", 5000, "/")
        );
        assert_eq!(t.url(), "http://[fd00::1]:5000/");
        assert_eq!(
            Target::parse("https://r.example:8443?a").unwrap().path,
            "/?a"
        );
        for bad in ["ftp://x/", "https://:5/x", "https://h:port/x", "/v2/x"] {
            assert_eq!(Target::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn talos_ed25519_client_keys_are_read() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let cert = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let talos_pem = key
            .serialize_pem()
            .replace("PRIVATE KEY", "ED25519 PRIVATE KEY");
        let tls = RegistryTls {
            client_identity: Some(ClientIdentity {
                cert_pem: cert.pem(),
                key_pem: talos_pem,
            }),
            ..Default::default()
        };
        assert!(client_config(&tls).is_ok());
        let garbage = RegistryTls {
            client_identity: Some(ClientIdentity {
                cert_pem: cert.pem(),
                key_pem:
                    "-----BEGIN ED25519 PRIVATE KEY-----\nAAAA\n-----END ED25519 PRIVATE KEY-----\n"
                        .into(),
            }),
            ..Default::default()
        };
        assert!(matches!(
            client_config(&garbage),
            Err(TlsConfigError::BadClientIdentity(_))
        ));
    }

    #[test]
    fn a_ca_without_certificates_is_refused() {
        let tls = RegistryTls {
            ca_pem: Some("not pem".into()),
            ..Default::default()
        };
        assert!(matches!(
            client_config(&tls),
            Err(TlsConfigError::NoCertificate)
        ));
        assert!(client_config(&RegistryTls::default()).is_ok());
    }
}
