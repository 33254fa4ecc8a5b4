//! The Talos API on port 50000: TLS per connection from the node's current mode, role checks,
//! then the MachineService handlers.

pub mod authz;
pub mod machine;
pub mod time;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use talos_proto::machine::machine_service_server::MachineServiceServer;
use talos_proto::time::time_service_server::TimeServiceServer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use crate::node::Node;
use crate::services::ServiceState;

pub const API_PORT: u16 = 50000;
/// Upstream's gRPC message size limit.
pub const MAX_MESSAGE_BYTES: usize = 32 << 20;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn bind() -> std::io::Result<TcpListener> {
    match TcpListener::bind(SocketAddr::from(([0u16; 8], API_PORT))).await {
        Ok(l) => Ok(l),
        Err(_) => TcpListener::bind(SocketAddr::from(([0u8; 4], API_PORT))).await,
    }
}

/// Accepts TCP, handshakes with whatever TLS settings the node has at that moment, and hands
/// finished TLS streams to the gRPC server.
async fn accept_loop(
    listener: TcpListener,
    node: Arc<Node>,
    tx: mpsc::Sender<Result<TlsStream<TcpStream>, std::io::Error>>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!("accept on :{API_PORT}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(node.tls_config());
        let tx = tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send(Ok(tls)).await;
                }
                Ok(Err(e)) => tracing::info!(%peer, "TLS handshake refused: {e}"),
                Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// Serves the API until the process ends.
pub async fn serve(node: Arc<Node>) {
    const SERVICE: &str = "apid";
    let listener = match bind().await {
        Ok(l) => l,
        Err(e) => {
            node.services.set(
                SERVICE,
                ServiceState::Failed,
                &format!("binding :{API_PORT}: {e}"),
            );
            tracing::error!("binding :{API_PORT}: {e}");
            return;
        }
    };
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(accept_loop(listener, node.clone(), tx));
    let machine = MachineServiceServer::new(machine::MachineApi { node: node.clone() })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let mode = if node.is_configured() {
        "mutual TLS"
    } else {
        "maintenance mode, no client certificate"
    };
    node.services.set(
        SERVICE,
        ServiceState::Running,
        &format!("listening on :{API_PORT} ({mode})"),
    );
    tracing::info!("API listening on :{API_PORT} ({mode})");
    node.on_running();
    if let Some(uptime) = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| crate::sysinfo::uptime(&t))
    {
        tracing::info!("API ready {uptime:.2} s after kernel start");
    }
    let result = tonic::transport::Server::builder()
        .layer(authz::AuthzLayer { node: node.clone() })
        .add_service(machine)
        .add_service(TimeServiceServer::new(time::TimeApi { node: node.clone() }))
        .serve_with_incoming(ReceiverStream::new(rx))
        .await;
    if let Err(e) = result {
        node.services
            .set(SERVICE, ServiceState::Failed, &e.to_string());
        tracing::error!("API server stopped: {e}");
    }
}
