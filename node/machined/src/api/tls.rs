//! TLS for the API: a self-signed certificate in maintenance mode, mutual TLS against the
//! OS CA once configured.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::DistinguishedName;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{RootCertStore, ServerConfig, SignatureScheme};
use talos_machinery::pki::{self, CertAndKey, ExtKeyUsage, SubjectAltName};

/// Upstream issues API server certificates for 24 hours.
pub const SERVER_CERT_VALIDITY: Duration = Duration::from_secs(24 * 3600);
/// A certificate is reissued this long after it was issued, well before it expires.
pub const SERVER_CERT_RENEWAL: Duration = Duration::from_secs(12 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("Building the API certificate")]
    Pki(#[from] pki::PkiError),
    #[error("Configuring TLS")]
    Rustls(#[from] rustls::Error),
    #[error("The OS CA in machine.ca cannot verify clients")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error(
        "machine.ca has no key: worker nodes get their API certificate from trustd, which talos-rs does not implement yet"
    )]
    NoCaKey,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The names a node answers to: its addresses, loopback, its hostname and `machine.certSANs`.
pub fn node_sans(addresses: &[IpAddr], hostname: &str, extra: &[String]) -> Vec<SubjectAltName> {
    let mut sans: Vec<SubjectAltName> = addresses.iter().copied().map(SubjectAltName::Ip).collect();
    sans.push(SubjectAltName::Ip(IpAddr::from([127, 0, 0, 1])));
    sans.push(SubjectAltName::Ip(IpAddr::from([
        0u16, 0, 0, 0, 0, 0, 0, 1,
    ])));
    sans.push(SubjectAltName::Dns("localhost".into()));
    if !hostname.is_empty() {
        sans.push(SubjectAltName::Dns(hostname.to_owned()));
    }
    sans.extend(extra.iter().map(|s| SubjectAltName::parse(s)));
    let mut unique = Vec::new();
    for san in sans {
        if !unique.contains(&san) {
            unique.push(san);
        }
    }
    unique
}

fn key_pair(
    cert: &CertAndKey,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = vec![CertificateDer::from(cert.cert_der()?)];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_der()?));
    Ok((chain, key))
}

fn finish(mut config: ServerConfig) -> Arc<ServerConfig> {
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// Maintenance mode: any client, no client certificate, a throw-away self-signed server cert.
pub fn maintenance(sans: &[SubjectAltName], hostname: &str) -> Result<Arc<ServerConfig>, TlsError> {
    let cert =
        pki::self_signed_server_cert(hostname, sans, SERVER_CERT_VALIDITY, SystemTime::now())?;
    let (chain, key) = key_pair(&cert)?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(finish(config))
}

/// Configured mode: the server cert is issued by the OS CA; clients must present a cert that
/// chains to the OS CA (or an accepted CA) and is for client authentication only.
pub fn configured(
    os_ca: &CertAndKey,
    accepted_cas: &[String],
    sans: &[SubjectAltName],
    hostname: &str,
) -> Result<Arc<ServerConfig>, TlsError> {
    if os_ca.key_pem.trim().is_empty() {
        return Err(TlsError::NoCaKey);
    }
    let cert = pki::issue_server_cert(
        os_ca,
        hostname,
        sans,
        SERVER_CERT_VALIDITY,
        SystemTime::now(),
    )?;
    let (chain, key) = key_pair(&cert)?;
    let mut roots = RootCertStore::empty();
    for pem in std::iter::once(&os_ca.cert_pem).chain(accepted_cas) {
        for der in pki::pem_to_der_certs(pem)? {
            roots.add(CertificateDer::from(der))?;
        }
    }
    let webpki =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider()).build()?;
    let verifier = Arc::new(ClientAuthOnly {
        inner: webpki,
        clock_synced: crate::timesync::clock_synced,
    });
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    Ok(finish(config))
}

/// Like upstream, a client leaf whose extended key usage is anything but exactly ClientAuth is
/// refused, so a server certificate from the same CA cannot act as a client.
///
/// Until the clock is synchronized it is only a lower bound on the real time (a board without
/// RTC starts from the time floor), so a certificate is refused when it has expired by that
/// bound but never as not yet valid: it is checked at its own notBefore when that is later.
#[derive(Debug)]
struct ClientAuthOnly {
    inner: Arc<dyn ClientCertVerifier>,
    clock_synced: fn() -> bool,
}

/// The time to check `end_entity` at: `now`, or its notBefore if the clock is not synchronized
/// and that is later.
fn verification_time(end_entity: &[u8], now: UnixTime, clock_synced: bool) -> UnixTime {
    if clock_synced {
        return now;
    }
    pki::cert_validity(end_entity)
        .ok()
        .and_then(|(not_before, _)| not_before.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(UnixTime::since_unix_epoch)
        .filter(|not_before| not_before.as_secs() > now.as_secs())
        .unwrap_or(now)
}

impl ClientCertVerifier for ClientAuthOnly {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let at = verification_time(end_entity, now, (self.clock_synced)());
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, at)?;
        let usages = pki::extended_key_usages(end_entity)
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        if usages != [ExtKeyUsage::ClientAuth] {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::InvalidPurpose,
            ));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sans_cover_addresses_loopback_hostname_and_extras_once() {
        let sans = node_sans(
            &["10.0.2.15".parse().unwrap()],
            "talos-123456",
            &["api.example".into(), "10.0.2.15".into()],
        );
        assert_eq!(
            sans.iter()
                .filter(|s| **s == SubjectAltName::Ip("10.0.2.15".parse().unwrap()))
                .count(),
            1
        );
        assert!(sans.contains(&SubjectAltName::Ip("127.0.0.1".parse().unwrap())));
        assert!(sans.contains(&SubjectAltName::Dns("talos-123456".into())));
        assert!(sans.contains(&SubjectAltName::Dns("api.example".into())));
    }

    fn verifier(clock_synced: fn() -> bool) -> (CertAndKey, ClientAuthOnly) {
        let ca = pki::new_os_ca(SystemTime::now()).unwrap();
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(ca.cert_der().unwrap()))
            .unwrap();
        let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .unwrap();
        (
            ca,
            ClientAuthOnly {
                inner,
                clock_synced,
            },
        )
    }

    fn check(verifier: &ClientAuthOnly, cert: &CertAndKey, now: SystemTime) -> Result<(), String> {
        let now = UnixTime::since_unix_epoch(now.duration_since(SystemTime::UNIX_EPOCH).unwrap());
        verifier
            .verify_client_cert(&CertificateDer::from(cert.cert_der().unwrap()), &[], now)
            .map(drop)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn an_unsynced_clock_refuses_expired_certificates_but_not_future_ones() {
        let hour = Duration::from_secs(3600);
        let now = SystemTime::now();
        for synced in [false, true] {
            let (ca, verifier) = verifier(if synced { || true } else { || false });
            let issue = |at: SystemTime| pki::issue_client_cert(&ca, &[], hour, at).unwrap();
            assert_eq!(check(&verifier, &issue(now), now), Ok(()));
            // Issued by a client whose clock is a day ahead of this board's.
            let future = check(&verifier, &issue(now + 24 * hour), now);
            if synced {
                assert!(future.unwrap_err().contains("not valid yet"));
            } else {
                assert_eq!(future, Ok(()));
            }
            let expired = check(&verifier, &issue(now - 24 * hour), now);
            assert!(expired.unwrap_err().contains("expired"), "synced {synced}");
        }
    }

    #[test]
    fn worker_configs_without_a_ca_key_are_refused() {
        let ca = pki::new_os_ca(SystemTime::now()).unwrap();
        let no_key = CertAndKey {
            cert_pem: ca.cert_pem.clone(),
            key_pem: String::new(),
        };
        assert!(matches!(
            configured(&no_key, &[], &[], "n"),
            Err(TlsError::NoCaKey)
        ));
        assert!(configured(&ca, &[], &node_sans(&[], "n", &[]), "n").is_ok());
        assert!(maintenance(&node_sans(&[], "n", &[]), "n").is_ok());
    }
}
