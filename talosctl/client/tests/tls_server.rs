//! End-to-end checks against an in-process tonic server over rustls.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use talos_client::{Client, ClientError, Endpoint, TlsMode};
use talos_machinery::talosconfig::{Context, Talosconfig};
use talos_proto::common::Metadata;
use talos_proto::machine::machine_service_server::{MachineService, MachineServiceServer};
use talos_proto::machine::{
    RebootRequest, RebootResponse, Version, VersionInfo, VersionResponse, reboot_request,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tonic::{Request, Response, Status};

#[derive(Clone)]
struct Pki {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    server_cert: CertificateDer<'static>,
    server_key: Vec<u8>,
    client_cert_pem: String,
    client_key_pem: String,
}

fn ed25519() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap()
}

/// An Ed25519 CA like Talos's OS CA, a server cert with `server_sans`, an os:admin client cert.
fn pki(server_sans: &[&str]) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::OrganizationName, "talos");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, ed25519()).unwrap();

    let server_key = ed25519();
    let sans: Vec<String> = server_sans.iter().map(|s| s.to_string()).collect();
    let mut server_params = CertificateParams::new(sans).unwrap();
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server_params.signed_by(&server_key, &ca).unwrap();

    let client_key = ed25519();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params
        .distinguished_name
        .push(DnType::OrganizationName, "os:admin");
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client_params.signed_by(&client_key, &ca).unwrap();

    Pki {
        ca_pem: ca.pem(),
        ca_der: ca.der().clone(),
        server_cert: server_cert.der().clone(),
        server_key: server_key.serialize_der(),
        client_cert_pem: client_cert.pem(),
        // Upstream talosconfigs label Ed25519 keys this way.
        client_key_pem: client_key
            .serialize_pem()
            .replace("PRIVATE KEY", "ED25519 PRIVATE KEY"),
    }
}

fn mutual(pki: &Pki) -> TlsMode {
    TlsMode::Mutual {
        ca_pem: pki.ca_pem.clone(),
        cert_pem: pki.client_cert_pem.clone(),
        key_pem: pki.client_key_pem.clone(),
    }
}

/// Version answers (echoing the `node` metadata as hostname); Reboot is always refused;
/// everything else falls through to the generated Unimplemented stubs.
struct TestMachine;

#[tonic::async_trait]
impl MachineService for TestMachine {
    async fn version(&self, request: Request<()>) -> Result<Response<VersionResponse>, Status> {
        let node = request
            .metadata()
            .get("node")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok(Response::new(VersionResponse {
            messages: vec![Version {
                metadata: Some(Metadata {
                    hostname: node,
                    ..Default::default()
                }),
                version: Some(VersionInfo {
                    tag: "v-test".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
        }))
    }

    async fn reboot(
        &self,
        _request: Request<RebootRequest>,
    ) -> Result<Response<RebootResponse>, Status> {
        Err(Status::permission_denied("not authorized"))
    }
}

/// Serves [`TestMachine`] on `listener` with TLS; `client_auth` demands a client cert from the CA.
fn serve(listener: TcpListener, pki: &Pki, client_auth: bool) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if client_auth {
        let mut roots = RootCertStore::empty();
        roots.add(pki.ca_der.clone()).unwrap();
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server_key.clone()));
    let mut config = builder
        .with_single_cert(vec![pki.server_cert.clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));

    // Failed handshakes are skipped so one bad client does not end the stream.
    let incoming = stream::unfold((listener, acceptor), |(listener, acceptor)| async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return None;
            };
            if let Ok(tls) = acceptor.accept(tcp).await {
                return Some((Ok::<_, std::io::Error>(tls), (listener, acceptor)));
            }
        }
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(MachineServiceServer::new(TestMachine))
            .serve_with_incoming(incoming),
    );
}

async fn start(pki: &Pki, client_auth: bool) -> Endpoint {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    serve(listener, pki, client_auth);
    endpoint(addr)
}

fn endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint::new(addr.ip().to_string(), addr.port())
}

#[tokio::test]
async fn mutual_tls_version_and_node_metadata() {
    let pki = pki(&["127.0.0.1", "localhost"]);
    let endpoint = start(&pki, true).await;
    let client = Client::connect(&endpoint, mutual(&pki)).await.unwrap();

    let version = client.version().await.unwrap();
    assert_eq!(version.version.unwrap().tag, "v-test");
    assert_eq!(version.metadata.unwrap().hostname, "");

    let targeted = client.with_node("10.0.0.9").unwrap();
    let version = targeted.version().await.unwrap();
    assert_eq!(version.metadata.unwrap().hostname, "10.0.0.9");
    assert_eq!(targeted.node_label(), "10.0.0.9");
    assert_eq!(client.node_label(), "127.0.0.1");

    // The DNS SAN works too.
    let by_name = Endpoint::new("localhost", endpoint.port());
    let client = Client::connect(&by_name, mutual(&pki)).await.unwrap();
    assert_eq!(
        client.version().await.unwrap().version.unwrap().tag,
        "v-test"
    );
}

#[tokio::test]
async fn grpc_codes_are_visible() {
    let pki = pki(&["127.0.0.1"]);
    let endpoint = start(&pki, true).await;
    let client = Client::connect(&endpoint, mutual(&pki)).await.unwrap();

    let err = client
        .reboot(reboot_request::Mode::Default)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied));
    assert_eq!(
        err.to_string(),
        "Reboot: rpc error: code = PermissionDenied desc = not authorized"
    );

    // Not implemented by the test server: the generated default stub answers.
    let err = client.memory().await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::Unimplemented));
}

#[tokio::test]
async fn wrong_ca_fails_the_handshake() {
    let pki_server = pki(&["127.0.0.1"]);
    let other = pki(&["127.0.0.1"]);
    let endpoint = start(&pki_server, true).await;
    let wrong = TlsMode::Mutual {
        ca_pem: other.ca_pem.clone(),
        cert_pem: pki_server.client_cert_pem.clone(),
        key_pem: pki_server.client_key_pem.clone(),
    };
    let err = Client::connect(&endpoint, wrong).await.unwrap_err();
    // Both CAs are named O=talos (as every Talos OS CA is), so webpki finds the wrong issuer by
    // name and rejects its signature.
    assert!(
        matches!(
            err,
            ClientError::Tls {
                source: rustls::Error::InvalidCertificate(
                    rustls::CertificateError::BadSignature
                        | rustls::CertificateError::UnknownIssuer
                ),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("TLS handshake with {endpoint} failed")
    );
}

#[tokio::test]
async fn server_name_must_match() {
    let pki = pki(&["10.99.0.1"]);
    let endpoint = start(&pki, true).await;
    let err = Client::connect(&endpoint, mutual(&pki)).await.unwrap_err();
    let ClientError::ServerNameMismatch { presented, .. } = &err else {
        panic!("expected a name mismatch, got {err:?}");
    };
    assert_eq!(presented, &["10.99.0.1"]);
    assert_eq!(
        err.to_string(),
        format!(
            "The server certificate of {endpoint} is not valid for 127.0.0.1; it names \
             [\"10.99.0.1\"] (use an endpoint the node certificate covers)"
        )
    );
}

#[tokio::test]
async fn insecure_mode_skips_verification() {
    // Cert for another address, signed by a CA the client does not know: still accepted.
    let pki = pki(&["10.99.0.1"]);
    let endpoint = start(&pki, false).await;
    let client = Client::connect(&endpoint, TlsMode::Insecure).await.unwrap();
    assert_eq!(
        client.version().await.unwrap().version.unwrap().tag,
        "v-test"
    );
}

#[tokio::test]
async fn an_mtls_server_shows_its_certificate_before_refusing_a_client_without_one() {
    let pki = pki(&["127.0.0.1"]);
    let server = start(&pki, true).await;
    let presented = talos_client::presented_certificate(&server).await.unwrap();
    assert_eq!(presented, pki.server_cert.to_vec());
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nobody = endpoint(closed.local_addr().unwrap());
    drop(closed);
    let err = talos_client::presented_certificate(&nobody)
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with("Connecting to 127.0.0.1:"),
        "{err}"
    );
}

#[tokio::test]
async fn insecure_client_is_refused_by_an_mtls_server() {
    let pki = pki(&["127.0.0.1"]);
    let endpoint = start(&pki, true).await;
    // TLS 1.3 reports a missing client cert after the client's handshake finished, so the
    // failure may show at connect or at the first call; either way no answer arrives.
    let result = match Client::connect(&endpoint, TlsMode::Insecure).await {
        Ok(client) => client.version().await.map(|_| ()),
        Err(err) => Err(err),
    };
    let err = result.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
}

#[tokio::test]
async fn retry_waits_for_a_real_answer() {
    let pki = pki(&["127.0.0.1"]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = endpoint(listener.local_addr().unwrap());
    let serve_after = Instant::now() + Duration::from_millis(1500);

    // Like QEMU's port forward before the guest listens: accept, then hang up.
    let server_pki = pki.clone();
    tokio::spawn(async move {
        while Instant::now() < serve_after {
            if let Ok(Ok((tcp, _))) =
                tokio::time::timeout(Duration::from_millis(100), listener.accept()).await
            {
                drop(tcp);
            }
        }
        serve(listener, &server_pki, true);
    });

    let started = Instant::now();
    let client = Client::connect_with_retry(
        &endpoint,
        mutual(&pki),
        Instant::now() + Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(1000));
    assert_eq!(
        client.version().await.unwrap().version.unwrap().tag,
        "v-test"
    );
}

#[tokio::test]
async fn a_hanging_connection_does_not_hold_up_the_next_attempt() {
    let pki = pki(&["127.0.0.1"]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = endpoint(listener.local_addr().unwrap());
    // Like a port forward whose far end never answers: the first three connections are
    // accepted and held open without a byte; after that the server is up.
    let server_pki = pki.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(listener.accept().await.unwrap());
        }
        serve(listener, &server_pki, true);
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(held);
    });
    let started = Instant::now();
    let client = Client::connect_with_retry(
        &endpoint,
        mutual(&pki),
        Instant::now() + Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered {:?} after the start",
        started.elapsed()
    );
    client.version().await.unwrap();
}

#[tokio::test]
async fn reconnect_keeps_tls_and_node() {
    let pki = pki(&["127.0.0.1"]);
    let endpoint = start(&pki, true).await;
    let client = Client::connect(&endpoint, mutual(&pki))
        .await
        .unwrap()
        .with_node("10.0.0.9")
        .unwrap();
    let fresh = client
        .reconnect_with_retry(Instant::now() + Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(fresh.node(), Some("10.0.0.9"));
    let version = fresh.version().await.unwrap();
    assert_eq!(version.metadata.unwrap().hostname, "10.0.0.9");
}

#[tokio::test]
async fn retry_gives_up_at_the_deadline() {
    let pki = pki(&["127.0.0.1"]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = endpoint(listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            drop(tcp);
        }
    });
    let started = Instant::now();
    let err = Client::connect_with_retry(
        &endpoint,
        mutual(&pki),
        Instant::now() + Duration::from_secs(2),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn connects_from_a_talosconfig() {
    let pki = pki(&["127.0.0.1"]);
    let endpoint = start(&pki, true).await;
    let context = Context::new(
        vec!["127.0.0.1:1".to_owned()],
        &pki.ca_pem,
        &pki.client_cert_pem,
        &pki.client_key_pem,
    );
    let cfg = Talosconfig::with_context("lab", context);

    // The context endpoint refuses connections; the override is used instead.
    let client = Client::from_talosconfig(&cfg, None, &[endpoint.to_string()])
        .await
        .unwrap();
    assert_eq!(
        client.version().await.unwrap().version.unwrap().tag,
        "v-test"
    );

    let err = Client::from_talosconfig(&cfg, Some("missing"), &[])
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Context(_)), "{err:?}");

    let err = Client::from_talosconfig(&cfg, None, &[]).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Connect { endpoint, .. } if endpoint == "127.0.0.1:1"),
        "{err:?}"
    );
}
