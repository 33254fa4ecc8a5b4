//! Runs the talosctl binary against an in-process mTLS server built from machinery's PKI.

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
use talos_proto::machine::{
    MemInfo, Memory, MemoryResponse, RebootRequest, RebootResponse, Version, VersionInfo,
    VersionResponse,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tonic::{Request, Response, Status};

struct Node;

fn echoed_node<T>(request: &Request<T>) -> Option<Metadata> {
    let node = request.metadata().get("node")?.to_str().ok()?;
    Some(Metadata {
        hostname: node.to_owned(),
        ..Default::default()
    })
}

#[tonic::async_trait]
impl MachineService for Node {
    async fn version(&self, request: Request<()>) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            messages: vec![Version {
                metadata: echoed_node(&request),
                version: Some(VersionInfo {
                    tag: "v-test".into(),
                    sha: "0123abc".into(),
                    built: String::new(),
                    go_version: "rustc test".into(),
                    os: "linux".into(),
                    arch: "arm64".into(),
                }),
                ..Default::default()
            }],
        }))
    }

    async fn memory(&self, request: Request<()>) -> Result<Response<MemoryResponse>, Status> {
        Ok(Response::new(MemoryResponse {
            messages: vec![Memory {
                metadata: echoed_node(&request),
                meminfo: Some(MemInfo {
                    memtotal: 4096 * 1024,
                    memfree: 2048 * 1024,
                    memavailable: 3072 * 1024,
                    buffers: 128 * 1024,
                    cached: 512 * 1024,
                    shmem: 16 * 1024,
                    ..Default::default()
                }),
            }],
        }))
    }

    async fn reboot(&self, _: Request<RebootRequest>) -> Result<Response<RebootResponse>, Status> {
        Err(Status::permission_denied("not authorized"))
    }
}

/// Starts the server; returns its port and a talosconfig (YAML) pointing at it.
async fn start() -> (u16, String) {
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);
    let ca = pki::new_os_ca(now).unwrap();
    let sans = [SubjectAltName::parse("127.0.0.1")];
    let server = pki::issue_server_cert(&ca, "node", &sans, day, now).unwrap();
    let admin = pki::issue_client_cert(&ca, &[Role::Admin], day, now).unwrap();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca.cert_der().unwrap()))
        .unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server.key_der().unwrap()));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![CertificateDer::from(server.cert_der().unwrap())], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let incoming = stream::unfold((listener, acceptor), |(listener, acceptor)| async move {
        loop {
            let (tcp, _) = listener.accept().await.ok()?;
            if let Ok(tls) = acceptor.accept(tcp).await {
                return Some((Ok::<_, std::io::Error>(tls), (listener, acceptor)));
            }
        }
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(MachineServiceServer::new(Node))
            .serve_with_incoming(incoming),
    );

    let context = Context::new(
        vec![format!("127.0.0.1:{port}")],
        &ca.cert_pem,
        &admin.cert_pem,
        &admin.key_pem,
    );
    let yaml = Talosconfig::with_context("test", context)
        .to_yaml()
        .unwrap();
    (port, yaml)
}

async fn talosctl(args: &[&str], envs: &[(&str, &std::path::Path)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_talosctl"));
    command
        .args(args)
        .env_remove("TALOSCONFIG")
        .env_remove("TALOS_HOME");
    for (key, value) in envs {
        command.env(key, value);
    }
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn talosctl_against_an_mtls_node() {
    let (_port, yaml) = start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    std::fs::write(&path, yaml).unwrap();
    let path_str = path.to_str().unwrap();

    // memory through --talosconfig, targeting a node via metadata
    let out = talosctl(
        &["--talosconfig", path_str, "-n", "10.0.0.7", "memory"],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "NODE       TOTAL   USED   FREE   SHARED   BUFFERS   CACHE   AVAILABLE\n\
         10.0.0.7   4096    1408   2048   16       128       512     3072\n"
    );

    // version, talosconfig found through $TALOSCONFIG; without -n the endpoint is the target
    let out = talosctl(&["version"], &[("TALOSCONFIG", path.as_path())]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "Server:\n\tNODE:        127.0.0.1\n\tTag:         v-test\n\tSHA:         0123abc\n"
        ),
        "{stdout}"
    );

    // $TALOS_HOME/config
    let out = talosctl(&["version", "--short"], &[("TALOS_HOME", dir.path())]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).ends_with("Server:\n\tNODE:        127.0.0.1\n\tTag:         v-test\n")
    );

    // gRPC errors reach the user with their code; the exit status is non-zero
    let out = talosctl(
        &["--talosconfig", path_str, "-n", "10.0.0.7", "reboot"],
        &[],
    )
    .await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("error on node 10.0.0.7: Reboot: rpc error: code = PermissionDenied desc = not authorized"),
        "{stderr}"
    );

    // a missing context names the file
    let out = talosctl(
        &["--talosconfig", path_str, "--context", "foo", "version"],
        &[],
    )
    .await;
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr),
        format!(
            "error: talosconfig {path_str}: Context \"foo\" is not defined in the talosconfig\n"
        )
    );
}
