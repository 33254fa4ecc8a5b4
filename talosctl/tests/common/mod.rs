//! Shared by the integration tests: an in-process Talos API server over rustls with a PKI from
//! machinery, and a way to run the talosctl binary against it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::stream;
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use talos_machinery::pki::{self, SubjectAltName};
use talos_machinery::role::Role;
use talos_machinery::talosconfig::{Context, Talosconfig};
use talos_proto::common::Metadata;
use talos_proto::machine::machine_service_server::{MachineService, MachineServiceServer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tonic::Request;
use tonic::service::Routes;

/// Metadata naming the node the request was addressed to, as apid stamps it when proxying.
pub fn echoed_node<T>(request: &Request<T>) -> Option<Metadata> {
    let node = request.metadata().get("node")?.to_str().ok()?;
    Some(Metadata {
        hostname: node.to_owned(),
        ..Default::default()
    })
}

fn server_config(ca: &pki::CertAndKey, client_auth: bool) -> rustls::ServerConfig {
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);
    let sans = [SubjectAltName::parse("127.0.0.1")];
    let server = pki::issue_server_cert(ca, "node", &sans, day, now).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if client_auth {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(ca.cert_der().unwrap()))
            .unwrap();
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server.key_der().unwrap()));
    let mut config = builder
        .with_single_cert(vec![CertificateDer::from(server.cert_der().unwrap())], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

/// The node's TLS acceptor and an admin talosconfig (YAML) for `127.0.0.1:port`.
pub fn node_tls(port: u16) -> (TlsAcceptor, String) {
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);
    let ca = pki::new_os_ca(now).unwrap();
    let admin = pki::issue_client_cert(&ca, &[Role::Admin], day, now).unwrap();
    let config = server_config(&ca, true);
    let context = Context::new(
        vec![format!("127.0.0.1:{port}")],
        &ca.cert_pem,
        &admin.cert_pem,
        &admin.key_pem,
    );
    let yaml = Talosconfig::with_context("test", context)
        .to_yaml()
        .unwrap();
    (TlsAcceptor::from(Arc::new(config)), yaml)
}

/// A maintenance-mode acceptor: a certificate from a throw-away CA, no client certificate asked.
pub fn maintenance_tls() -> TlsAcceptor {
    let ca = pki::new_os_ca(SystemTime::now()).unwrap();
    TlsAcceptor::from(Arc::new(server_config(&ca, false)))
}

/// Serves `routes` over TLS on `listener` until `shutdown` resolves; the listener closes then.
pub fn serve_routes(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    routes: Routes,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let incoming = stream::unfold((listener, acceptor), |(listener, acceptor)| async move {
        loop {
            let (tcp, _) = listener.accept().await.ok()?;
            if let Ok(tls) = acceptor.accept(tcp).await {
                return Some((Ok::<_, std::io::Error>(tls), (listener, acceptor)));
            }
        }
    });
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
            .unwrap();
    })
}

/// Serves one MachineService, as [`serve_routes`].
pub fn serve<S: MachineService>(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    service: S,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    serve_routes(
        listener,
        acceptor,
        Routes::new(MachineServiceServer::new(service)),
        shutdown,
    )
}

/// Writes `yaml` as a talosconfig into a fresh directory; keep the directory alive.
pub fn write_talosconfig(yaml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    std::fs::write(&path, yaml).unwrap();
    (dir, path)
}

/// The talosctl binary with no talosconfig from the environment.
pub fn command(args: &[&str], envs: &[(&str, &Path)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_talosctl"));
    command
        .args(args)
        .env_remove("TALOSCONFIG")
        .env_remove("TALOS_HOME");
    for (key, value) in envs {
        command.env(key, value);
    }
    command
}

/// Runs talosctl to completion off the async runtime.
pub async fn talosctl(args: &[&str], envs: &[(&str, &Path)]) -> Output {
    let mut command = command(args, envs);
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
