//! A small etcd v3 client for the Cluster service (MemberList, MemberRemove) over mutual TLS,
//! and this node leaving the etcd cluster, as a graceful reset does.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use talos_machinery::config::Config;
use talos_machinery::pki::{self, CertAndKey};
use tonic::transport::Channel;

use crate::supervisor::stack;

/// Where this node's etcd serves clients.
pub const LOCAL_ENDPOINT: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), stack::ETCD_CLIENT_PORT);
const CLIENT_CERT_VALIDITY: Duration = Duration::from_secs(3600);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a removal etcd reports as unavailable is retried (upstream's budget).
const REMOVE_RETRY_FOR: Duration = Duration::from_secs(5 * 60);
const REMOVE_RETRY_PAUSE: Duration = Duration::from_secs(1);

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseHeader {
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Member {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, repeated, tag = "3")]
    pub peer_urls: Vec<String>,
    #[prost(string, repeated, tag = "4")]
    pub client_urls: Vec<String>,
    #[prost(bool, tag = "5")]
    pub is_learner: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MemberListRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MemberListResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(message, repeated, tag = "2")]
    pub members: Vec<Member>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MemberRemoveRequest {
    #[prost(uint64, tag = "1")]
    pub id: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MemberRemoveResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(message, repeated, tag = "2")]
    pub members: Vec<Member>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusRequest {}

/// `Maintenance/Status`: the member's view of its database and of raft.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(string, tag = "2")]
    pub version: String,
    #[prost(int64, tag = "3")]
    pub db_size: i64,
    #[prost(uint64, tag = "4")]
    pub leader: u64,
    #[prost(uint64, tag = "5")]
    pub raft_index: u64,
    #[prost(uint64, tag = "6")]
    pub raft_term: u64,
    #[prost(uint64, tag = "7")]
    pub raft_applied_index: u64,
    #[prost(string, repeated, tag = "8")]
    pub errors: Vec<String>,
    #[prost(int64, tag = "9")]
    pub db_size_in_use: i64,
    #[prost(bool, tag = "10")]
    pub is_learner: bool,
    #[prost(string, tag = "11")]
    pub storage_version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MoveLeaderRequest {
    #[prost(uint64, tag = "1")]
    pub target_id: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MoveLeaderResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapshotRequest {}

/// One chunk of `Maintenance/Snapshot`: the database, then etcd's SHA-256 of it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapshotResponse {
    #[prost(bytes = "vec", tag = "3")]
    pub blob: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd client certificate: {0}")]
    Certificate(String),
    #[error("{0}")]
    Config(String),
    #[error("stopping etcd: {0}")]
    Stop(String),
    #[error("connecting to etcd at {endpoint}: {source}")]
    Connect {
        endpoint: SocketAddr,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("etcd {method} at {endpoint}: {}", .status.message())]
    Rpc {
        method: &'static str,
        endpoint: SocketAddr,
        status: Box<tonic::Status>,
    },
    #[error(
        "no etcd member is named {name:?} or has one of the peer URLs {peer_urls:?}; members: {members}"
    )]
    NotAMember {
        name: String,
        peer_urls: Vec<String>,
        members: String,
    },
    #[error(
        "etcd member {name:?} ({id:016x}) is the only member of its cluster, and etcd refuses to remove \
         the last member: reset with --graceful=false to wipe the node without leaving etcd"
    )]
    LastMember { name: String, id: u64 },
    #[error("clearing the etcd data directory {path}: {source}")]
    ClearData {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Client TLS for etcd: trusts `ca` and presents a client certificate issued from it.
pub fn client_tls(ca: &CertAndKey, now: SystemTime) -> Result<Arc<ClientConfig>, EtcdError> {
    let bad = |e: &dyn std::fmt::Display| EtcdError::Certificate(e.to_string());
    let issued = pki::issue_client_cert(ca, &[], CLIENT_CERT_VALIDITY, now).map_err(|e| bad(&e))?;
    let mut roots = rustls::RootCertStore::empty();
    for der in pki::pem_to_der_certs(&ca.cert_pem).map_err(|e| bad(&e))? {
        roots.add(CertificateDer::from(der)).map_err(|e| bad(&e))?;
    }
    let chain = vec![CertificateDer::from(
        issued.cert_der().map_err(|e| bad(&e))?,
    )];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        issued.key_der().map_err(|e| bad(&e))?,
    ));
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(&e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| bad(&e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A client of this node's etcd, authenticated with a certificate from the config's etcd CA.
pub async fn connect_local(config: &Config) -> Result<EtcdClient, EtcdError> {
    let ca = stack::etcd_ca(config).map_err(EtcdError::Config)?;
    let tls = client_tls(&ca, SystemTime::now())?;
    EtcdClient::connect(LOCAL_ENDPOINT, tls).await
}

/// A connection to one etcd member's client port.
#[derive(Debug, Clone)]
pub struct EtcdClient {
    endpoint: SocketAddr,
    grpc: tonic::client::Grpc<Channel>,
}

impl EtcdClient {
    pub async fn connect(
        endpoint: SocketAddr,
        tls: Arc<ClientConfig>,
    ) -> Result<EtcdClient, EtcdError> {
        // Plain http for tonic, so it adds no TLS of its own; the connector does TLS.
        let channel = Channel::from_shared(format!("http://{endpoint}"))
            .expect("a socket address makes a valid URI")
            .origin(
                format!("https://{endpoint}")
                    .parse()
                    .expect("a socket address makes a valid URI"),
            )
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT);
        let server_name = ServerName::IpAddress(endpoint.ip().into());
        let connector = tower::service_fn(move |_| {
            let tls = tokio_rustls::TlsConnector::from(tls.clone());
            let server_name = server_name.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(endpoint).await?;
                let stream = tls.connect(server_name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        });
        let channel = channel
            .connect_with_connector(connector)
            .await
            .map_err(|source| EtcdError::Connect { endpoint, source })?;
        Ok(EtcdClient {
            endpoint,
            grpc: tonic::client::Grpc::new(channel),
        })
    }

    /// Waits until the channel can take `method`; the error names it.
    async fn ready(&mut self, method: &'static str) -> Result<(), EtcdError> {
        self.grpc
            .ready()
            .await
            .map_err(|e| self.rpc_error(method, tonic::Status::unavailable(e.to_string())))
    }

    fn rpc_error(&self, method: &'static str, status: tonic::Status) -> EtcdError {
        EtcdError::Rpc {
            method,
            endpoint: self.endpoint,
            status: Box::new(status),
        }
    }

    async fn unary<Request, Response>(
        &mut self,
        method: &'static str,
        request: Request,
    ) -> Result<Response, EtcdError>
    where
        Request: prost::Message + Send + Sync + 'static,
        Response: prost::Message + Default + Send + Sync + 'static,
    {
        self.ready(method).await?;
        let path = http::uri::PathAndQuery::from_static(method);
        match self
            .grpc
            .unary(
                tonic::Request::new(request),
                path,
                tonic_prost::ProstCodec::default(),
            )
            .await
        {
            Ok(response) => Ok(response.into_inner()),
            Err(status) => Err(self.rpc_error(method, status)),
        }
    }

    pub async fn member_list(&mut self) -> Result<MemberListResponse, EtcdError> {
        self.unary("/etcdserverpb.Cluster/MemberList", MemberListRequest {})
            .await
    }

    pub async fn status(&mut self) -> Result<StatusResponse, EtcdError> {
        self.unary("/etcdserverpb.Maintenance/Status", StatusRequest {})
            .await
    }

    /// Streams the member's database (`Maintenance/Snapshot`).
    pub async fn snapshot(&mut self) -> Result<tonic::Streaming<SnapshotResponse>, EtcdError> {
        const METHOD: &str = "/etcdserverpb.Maintenance/Snapshot";
        self.ready(METHOD).await?;
        match self
            .grpc
            .server_streaming(
                tonic::Request::new(SnapshotRequest {}),
                http::uri::PathAndQuery::from_static(METHOD),
                tonic_prost::ProstCodec::default(),
            )
            .await
        {
            Ok(response) => Ok(response.into_inner()),
            Err(status) => Err(self.rpc_error(METHOD, status)),
        }
    }

    /// Removes member `id`; the answer lists the members left.
    pub async fn member_remove(&mut self, id: u64) -> Result<MemberRemoveResponse, EtcdError> {
        self.unary(
            "/etcdserverpb.Cluster/MemberRemove",
            MemberRemoveRequest { id },
        )
        .await
    }
}

/// Hands raft leadership to another started voting member when this one leads. Returns the
/// new leader's name, or `None` when this member does not lead or has no one to hand it to.
pub async fn forfeit_leadership(client: &mut EtcdClient) -> Result<Option<String>, EtcdError> {
    let status = client.status().await?;
    let own = status.header.map(|h| h.member_id).unwrap_or_default();
    if status.leader != own {
        return Ok(None);
    }
    let members = client.member_list().await?.members;
    let Some(target) = members
        .into_iter()
        .find(|m| m.id != own && !m.is_learner && !m.name.is_empty())
    else {
        return Ok(None);
    };
    client
        .unary::<_, MoveLeaderResponse>(
            "/etcdserverpb.Maintenance/MoveLeader",
            MoveLeaderRequest {
                target_id: target.id,
            },
        )
        .await?;
    Ok(Some(target.name))
}

/// Removes this node's member, found by `name` (the name etcd was started with) or by one of
/// its `peer_urls`, retrying while etcd reports itself unavailable. Refuses to remove the last
/// member: etcd would refuse it too, and upstream's graceful reset fails there.
pub async fn leave(
    client: &mut EtcdClient,
    name: &str,
    peer_urls: &[String],
) -> Result<Member, EtcdError> {
    let members = client.member_list().await?.members;
    let own = members
        .iter()
        .find(|m| m.name == name)
        .or_else(|| {
            members
                .iter()
                .find(|m| m.peer_urls.iter().any(|u| peer_urls.contains(u)))
        })
        .cloned()
        .ok_or_else(|| EtcdError::NotAMember {
            name: name.to_owned(),
            peer_urls: peer_urls.to_vec(),
            members: members
                .iter()
                .map(|m| format!("{:?} {:?}", m.name, m.peer_urls))
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    if members.len() == 1 {
        return Err(EtcdError::LastMember {
            name: own.name,
            id: own.id,
        });
    }
    let deadline = tokio::time::Instant::now() + REMOVE_RETRY_FOR;
    loop {
        match client.member_remove(own.id).await {
            Ok(_) => return Ok(own),
            Err(EtcdError::Rpc { status, .. }) if status.code() == tonic::Code::NotFound => {
                tracing::info!("etcd member {:?} was already removed", own.name);
                return Ok(own);
            }
            // etcd answers "unhealthy cluster" until its peers have been connected for a while.
            Err(EtcdError::Rpc { status, .. })
                if status.code() == tonic::Code::Unavailable
                    && tokio::time::Instant::now() < deadline =>
            {
                tracing::info!(
                    "etcd cannot remove member {:?} yet ({}); retrying",
                    own.name,
                    status.message()
                );
                tokio::time::sleep(REMOVE_RETRY_PAUSE).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Empties `dir` but keeps it (it may be a mount point): a removed member's data is useless.
pub fn clear_data(dir: &Path) -> Result<(), EtcdError> {
    let failed = |path: &Path, source| EtcdError::ClearData {
        path: path.display().to_string(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(failed(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| failed(dir, e))?;
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let removed = if is_dir {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|e| failed(&path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
