//! rustls client configurations (ring provider, ALPN h2) for the two ways of reaching apid.

use std::fmt;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use talos_machinery::pki;

use crate::{ClientError, Endpoint};

/// How to secure the connection to apid.
#[derive(Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// Maintenance mode (`--insecure`): TLS without a client certificate and without verifying
    /// the server certificate. Handshake signatures are still checked.
    Insecure,
    /// Mutual TLS: the server chain must lead to `ca_pem` and name the endpoint; the client
    /// presents `cert_pem`/`key_pem`.
    Mutual {
        ca_pem: String,
        cert_pem: String,
        key_pem: String,
    },
}

impl fmt::Debug for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsMode::Insecure => f.write_str("Insecure"),
            TlsMode::Mutual { .. } => f.write_str("Mutual { .. }"),
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the rustls configuration for `mode`.
pub(crate) fn client_config(mode: &TlsMode) -> Result<ClientConfig, ClientError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(ClientError::TlsConfig)?;
    let mut config = match mode {
        TlsMode::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert::new(&provider)))
            .with_no_client_auth(),
        TlsMode::Mutual {
            ca_pem,
            cert_pem,
            key_pem,
        } => {
            let mut roots = RootCertStore::empty();
            for der in pem_certs(ca_pem, "CA")? {
                roots
                    .add(der)
                    .map_err(|source| ClientError::BadCertificate { what: "CA", source })?;
            }
            let chain = pem_certs(cert_pem, "client certificate")?;
            let key = pki::pem_to_der_key(key_pem).map_err(|source| ClientError::Pem {
                what: "client key",
                source,
            })?;
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key));
            builder
                .with_root_certificates(roots)
                .with_client_auth_cert(chain, key)
                .map_err(|source| ClientError::BadCertificate {
                    what: "client certificate/key pair",
                    source,
                })?
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

fn pem_certs(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let certs = pki::pem_to_der_certs(pem).map_err(|source| ClientError::Pem { what, source })?;
    if certs.is_empty() {
        return Err(ClientError::NoCertificate { what });
    }
    Ok(certs.into_iter().map(CertificateDer::from).collect())
}

/// The certificate `endpoint` presents in a TLS handshake, unverified (what `openssl s_client`
/// shows); a node that then refuses the missing client certificate has shown its own already.
pub async fn presented_certificate(endpoint: &Endpoint) -> Result<Vec<u8>, ClientError> {
    let failed = |reason: String| ClientError::Connect {
        endpoint: endpoint.to_string(),
        reason,
    };
    let provider = provider();
    let verifier = Arc::new(AcceptAnyServerCert::new(&provider));
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ClientError::TlsConfig)?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect((endpoint.host(), endpoint.port()))
        .await
        .map_err(|e| failed(e.to_string()))?;
    let name =
        ServerName::try_from(endpoint.host().to_owned()).map_err(|e| failed(e.to_string()))?;
    let handshake = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await;
    let presented = verifier
        .presented
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    presented.ok_or_else(|| {
        failed(handshake.err().map_or_else(
            || "the server presented no certificate".to_owned(),
            |e| e.to_string(),
        ))
    })
}

/// Trusts any server certificate (maintenance mode), keeping the last one presented.
#[derive(Debug)]
struct AcceptAnyServerCert {
    algorithms: WebPkiSupportedAlgorithms,
    presented: Mutex<Option<Vec<u8>>>,
}

impl AcceptAnyServerCert {
    fn new(provider: &CryptoProvider) -> AcceptAnyServerCert {
        AcceptAnyServerCert {
            algorithms: provider.signature_verification_algorithms,
            presented: Mutex::default(),
        }
    }
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.presented.lock().unwrap_or_else(|p| p.into_inner()) = Some(end_entity.to_vec());
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
