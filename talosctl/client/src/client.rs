//! A connected Talos API client.

use std::error::Error as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use talos_machinery::talosconfig::{Talosconfig, TalosconfigError};
use talos_proto::common;
use talos_proto::machine::{
    self, ApplyConfigurationRequest, BootstrapRequest, DmesgRequest, FileInfo, ListRequest,
    LogsRequest, ReadRequest, RebootRequest, ResetRequest, RollbackRequest, ServiceRestartRequest,
    ServiceStartRequest, ServiceStopRequest, ShutdownRequest, UpgradeRequest,
    apply_configuration_request, machine_service_client::MachineServiceClient, reboot_request,
};
use talos_proto::time::{self as time_api, TimeRequest, time_service_client::TimeServiceClient};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

use crate::{ClientError, Endpoint, TlsMode, tls};

/// Largest gRPC message sent or accepted (upstream `GRPCMaxMessageSize`).
pub const MAX_MESSAGE_SIZE: usize = 32 * 1024 * 1024;

/// How long one connection attempt (TCP + TLS + HTTP/2) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// How often `connect_with_retry` starts another attempt while earlier ones are pending.
const ATTEMPT_INTERVAL: Duration = Duration::from_millis(500);
/// How many attempts `connect_with_retry` keeps pending at once.
const MAX_PENDING_ATTEMPTS: usize = 8;

/// gRPC metadata key that makes apid forward a call to one node.
pub const NODE_METADATA_KEY: &str = "node";

/// A channel to one apid endpoint, optionally targeting another node through it.
///
/// Cloning is cheap; clones share the connection.
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    endpoint: Endpoint,
    tls: TlsMode,
    node: Option<(String, AsciiMetadataValue)>,
}

impl Client {
    /// Connects to `endpoint` (TCP, TLS with ALPN h2, HTTP/2) within [`CONNECT_TIMEOUT`].
    pub async fn connect(endpoint: &Endpoint, tls: TlsMode) -> Result<Client, ClientError> {
        Client::connect_within(endpoint, &tls, CONNECT_TIMEOUT).await
    }

    /// Connects and calls Version until a real gRPC answer arrives or `deadline` passes.
    ///
    /// A forwarded port (QEMU user networking) accepts TCP before the guest listens, and such a
    /// connection may then hang, so an open port proves nothing and one attempt must not hold
    /// up the next: a new attempt starts every [`ATTEMPT_INTERVAL`] while earlier ones are
    /// pending (each may take [`CONNECT_TIMEOUT`]), and the first real answer wins. Any gRPC
    /// answer other than a transient code counts as "up", so a PermissionDenied Version still
    /// returns the client. TLS and certificate errors are not retried.
    pub async fn connect_with_retry(
        endpoint: &Endpoint,
        tls: TlsMode,
        deadline: Instant,
    ) -> Result<Client, ClientError> {
        use futures_util::StreamExt;
        let started = Instant::now();
        let attempt = |limit: Duration| {
            let tls = &tls;
            async move {
                let connected = async {
                    let client = Client::connect_within(endpoint, tls, limit).await?;
                    match client.version().await {
                        Ok(_) => Ok(client),
                        Err(err) if err.status().is_some() && !err.is_transient() => Ok(client),
                        Err(err) => Err(err),
                    }
                };
                tokio::time::timeout(limit, connected)
                    .await
                    .unwrap_or_else(|_| {
                        Err(ClientError::Timeout {
                            endpoint: endpoint.to_string(),
                            waited: limit,
                            last: None,
                        })
                    })
            }
        };
        let mut pending = futures_util::stream::FuturesUnordered::new();
        let mut last = None;
        let mut next_start = tokio::time::Instant::now();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ClientError::Timeout {
                    endpoint: endpoint.to_string(),
                    waited: started.elapsed(),
                    last: last.map(Box::new),
                });
            }
            let now = tokio::time::Instant::now();
            if now >= next_start && pending.len() < MAX_PENDING_ATTEMPTS {
                pending.push(attempt(remaining.min(CONNECT_TIMEOUT)));
                next_start = now + ATTEMPT_INTERVAL;
            }
            let wake = next_start.min(tokio::time::Instant::now() + remaining);
            tokio::select! {
                Some(result) = pending.next() => match result {
                    Ok(client) => return Ok(client),
                    Err(err) if err.is_transient() => last = Some(err),
                    Err(err) => return Err(err),
                },
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// Connects with mutual TLS using a talosconfig context (`context`, else the current one).
    ///
    /// Endpoints come from `endpoints_override` when it is not empty, else from the context; they
    /// are tried in order and the first that connects is used.
    pub async fn from_talosconfig(
        cfg: &Talosconfig,
        context: Option<&str>,
        endpoints_override: &[String],
    ) -> Result<Client, ClientError> {
        let (name, ctx) = cfg.current(context).map_err(ClientError::Context)?;
        let read = |what: &'static str, result: Result<String, TalosconfigError>| {
            result.map_err(|source| ClientError::Talosconfig {
                what,
                context: name.to_owned(),
                source,
            })
        };
        let tls = TlsMode::Mutual {
            ca_pem: read("ca", ctx.ca_pem())?,
            cert_pem: read("crt", ctx.crt_pem())?,
            key_pem: read("key", ctx.key_pem())?,
        };
        let endpoints = if endpoints_override.is_empty() {
            ctx.effective_endpoints()
        } else {
            endpoints_override.to_vec()
        };
        let endpoints = endpoints
            .iter()
            .map(|text| Endpoint::parse(text))
            .collect::<Result<Vec<_>, _>>()?;
        let mut last = ClientError::NoEndpoints {
            context: name.to_owned(),
        };
        for endpoint in &endpoints {
            match Client::connect(endpoint, tls.clone()).await {
                Ok(client) => return Ok(client),
                Err(err) => last = err,
            }
        }
        Err(last)
    }

    async fn connect_within(
        endpoint: &Endpoint,
        tls: &TlsMode,
        timeout: Duration,
    ) -> Result<Client, ClientError> {
        let config = Arc::new(tls::client_config(tls)?);
        let server_name = ServerName::try_from(endpoint.host().to_owned()).map_err(|_| {
            ClientError::InvalidEndpoint {
                endpoint: endpoint.to_string(),
                reason: "host is neither a DNS name nor an IP address",
            }
        })?;
        let not_a_uri = |_| ClientError::InvalidEndpoint {
            endpoint: endpoint.to_string(),
            reason: "not usable in a URI",
        };
        // The tonic endpoint is plain http so tonic never adds TLS of its own; the origin makes
        // requests carry the https scheme that matches what the connector really does.
        let channel_endpoint = Channel::from_shared(format!("http://{endpoint}"))
            .map_err(not_a_uri)?
            .origin(format!("https://{endpoint}").parse().map_err(not_a_uri)?)
            .connect_timeout(timeout);

        let address = (endpoint.host().to_owned(), endpoint.port());
        let connector = tower::service_fn(move |_uri| {
            let connector = TlsConnector::from(config.clone());
            let server_name = server_name.clone();
            let address = address.clone();
            async move {
                let tcp = TcpStream::connect(address).await?;
                tcp.set_nodelay(true)?;
                let tls = connector.connect(server_name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        });
        let channel = channel_endpoint
            .connect_with_connector(connector)
            .await
            .map_err(|source| classify_connect_error(endpoint, source))?;
        Ok(Client {
            channel,
            endpoint: endpoint.clone(),
            tls: tls.clone(),
            node: None,
        })
    }

    /// A new connection to the same endpoint with the same TLS settings and node targeting,
    /// through [`Client::connect_with_retry`] (for a node that is rebooting).
    pub async fn reconnect_with_retry(&self, deadline: Instant) -> Result<Client, ClientError> {
        let fresh = Client::connect_with_retry(&self.endpoint, self.tls.clone(), deadline).await?;
        Ok(Client {
            node: self.node.clone(),
            ..fresh
        })
    }

    /// The endpoint this client is connected to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// A client sharing this connection whose calls carry `node: <node>` metadata, so apid
    /// forwards them to that node.
    pub fn with_node(&self, node: &str) -> Result<Client, ClientError> {
        let value = AsciiMetadataValue::try_from(node).map_err(|_| ClientError::InvalidNode {
            node: node.to_owned(),
        })?;
        Ok(Client {
            node: Some((node.to_owned(), value)),
            ..self.clone()
        })
    }

    /// The targeted node, if any.
    pub fn node(&self) -> Option<&str> {
        self.node.as_ref().map(|(node, _)| node.as_str())
    }

    /// What to show in a NODE column: the targeted node, else the endpoint host.
    pub fn node_label(&self) -> &str {
        self.node().unwrap_or(self.endpoint.host())
    }

    /// The generated MachineService client on this connection (32 MiB message limits).
    /// Build requests with [`Client::request`] so node targeting applies.
    pub fn machine(&self) -> MachineServiceClient<Channel> {
        MachineServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    }

    /// The generated TimeService client on this connection.
    pub fn time(&self) -> TimeServiceClient<Channel> {
        TimeServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    }

    /// Wraps `message` in a request carrying this client's `node` metadata.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some((_, value)) = &self.node {
            request
                .metadata_mut()
                .insert(NODE_METADATA_KEY, value.clone());
        }
        request
    }

    /// MachineService/Version.
    pub async fn version(&self) -> Result<machine::Version, ClientError> {
        let resp = self.machine().version(self.request(())).await;
        first("Version", resp.map(|r| r.into_inner().messages))
    }

    /// MachineService/Hostname.
    pub async fn hostname(&self) -> Result<String, ClientError> {
        let resp = self.machine().hostname(self.request(())).await;
        first("Hostname", resp.map(|r| r.into_inner().messages)).map(|h| h.hostname)
    }

    /// MachineService/ApplyConfiguration with a full multi-document config.
    pub async fn apply_configuration(
        &self,
        data: Vec<u8>,
        mode: apply_configuration_request::Mode,
        dry_run: bool,
    ) -> Result<machine::ApplyConfiguration, ClientError> {
        let request = ApplyConfigurationRequest {
            data,
            mode: mode.into(),
            dry_run,
            try_mode_timeout: None,
        };
        let resp = self
            .machine()
            .apply_configuration(self.request(request))
            .await;
        first("ApplyConfiguration", resp.map(|r| r.into_inner().messages))
    }

    /// MachineService/Reboot.
    pub async fn reboot(&self, mode: reboot_request::Mode) -> Result<machine::Reboot, ClientError> {
        let request = RebootRequest { mode: mode.into() };
        let resp = self.machine().reboot(self.request(request)).await;
        first("Reboot", resp.map(|r| r.into_inner().messages))
    }

    /// MachineService/Shutdown.
    pub async fn shutdown(&self, force: bool) -> Result<machine::Shutdown, ClientError> {
        let resp = self
            .machine()
            .shutdown(self.request(ShutdownRequest { force }))
            .await;
        first("Shutdown", resp.map(|r| r.into_inner().messages))
    }

    /// MachineService/Upgrade: the node installs `request.image` and reboots into it.
    pub async fn upgrade(&self, request: UpgradeRequest) -> Result<machine::Upgrade, ClientError> {
        let resp = self.machine().upgrade(self.request(request)).await;
        first("Upgrade", resp.map(|r| r.into_inner().messages))
    }

    /// MachineService/Rollback: the node reboots into its previous version.
    pub async fn rollback(&self) -> Result<machine::Rollback, ClientError> {
        let resp = self
            .machine()
            .rollback(self.request(RollbackRequest {}))
            .await;
        first("Rollback", resp.map(|r| r.into_inner().messages))
    }

    /// MachineService/Bootstrap.
    pub async fn bootstrap(&self) -> Result<machine::Bootstrap, ClientError> {
        let resp = self
            .machine()
            .bootstrap(self.request(BootstrapRequest::default()))
            .await;
        first("Bootstrap", resp.map(|r| r.into_inner().messages))
    }

    /// MachineService/Memory.
    pub async fn memory(&self) -> Result<machine::Memory, ClientError> {
        let resp = self.machine().memory(self.request(())).await;
        first("Memory", resp.map(|r| r.into_inner().messages))
    }

    /// MachineService/ServiceList.
    pub async fn service_list(&self) -> Result<machine::ServiceList, ClientError> {
        let resp = self.machine().service_list(self.request(())).await;
        first("ServiceList", resp.map(|r| r.into_inner().messages))
    }

    /// MachineService/EtcdMemberList: the members of the node's etcd cluster.
    pub async fn etcd_member_list(&self) -> Result<machine::EtcdMembers, ClientError> {
        let request = machine::EtcdMemberListRequest { query_local: false };
        let resp = self.machine().etcd_member_list(self.request(request)).await;
        first("EtcdMemberList", resp.map(|r| r.into_inner().messages))
    }

    /// MachineService/EtcdStatus: the node's etcd member, its database and raft state.
    pub async fn etcd_status(&self) -> Result<machine::EtcdStatus, ClientError> {
        let resp = self.machine().etcd_status(self.request(())).await;
        first("EtcdStatus", resp.map(|r| r.into_inner().messages))
    }

    /// MachineService/EtcdRemoveMemberByID: removes member `member_id` from the node's cluster.
    pub async fn etcd_remove_member_by_id(&self, member_id: u64) -> Result<(), ClientError> {
        let request = machine::EtcdRemoveMemberByIdRequest { member_id };
        let resp = self
            .machine()
            .etcd_remove_member_by_id(self.request(request))
            .await;
        first(
            "EtcdRemoveMemberByID",
            resp.map(|r| r.into_inner().messages),
        )
        .map(|_| ())
    }

    /// MachineService/EtcdLeaveCluster: the node removes its own member, then stops etcd and
    /// empties its data.
    pub async fn etcd_leave_cluster(&self) -> Result<(), ClientError> {
        let request = machine::EtcdLeaveClusterRequest {};
        let resp = self
            .machine()
            .etcd_leave_cluster(self.request(request))
            .await;
        first("EtcdLeaveCluster", resp.map(|r| r.into_inner().messages)).map(|_| ())
    }

    /// MachineService/EtcdForfeitLeadership: a leading member hands leadership to another
    /// member; the new leader's name, empty when the node did not lead or had no one to give
    /// it to.
    pub async fn etcd_forfeit_leadership(&self) -> Result<String, ClientError> {
        let request = machine::EtcdForfeitLeadershipRequest {};
        let resp = self
            .machine()
            .etcd_forfeit_leadership(self.request(request))
            .await;
        first(
            "EtcdForfeitLeadership",
            resp.map(|r| r.into_inner().messages),
        )
        .map(|m| m.member)
    }

    /// MachineService/MetaWrite: sets META key `key` on the node's system disk.
    pub async fn meta_write(&self, key: u32, value: Vec<u8>) -> Result<(), ClientError> {
        let request = machine::MetaWriteRequest { key, value };
        let resp = self.machine().meta_write(self.request(request)).await;
        first("MetaWrite", resp.map(|r| r.into_inner().messages)).map(|_| ())
    }

    /// MachineService/MetaDelete: deletes META key `key`; NotFound when it is not set.
    pub async fn meta_delete(&self, key: u32) -> Result<(), ClientError> {
        let request = machine::MetaDeleteRequest { key };
        let resp = self.machine().meta_delete(self.request(request)).await;
        first("MetaDelete", resp.map(|r| r.into_inner().messages)).map(|_| ())
    }

    /// MachineService/EtcdSnapshot: the node's etcd database as a stream of byte chunks, ending
    /// with etcd's SHA-256 of what precedes it.
    pub async fn etcd_snapshot(&self) -> Result<DataStream, ClientError> {
        let resp = self
            .machine()
            .etcd_snapshot(self.request(machine::EtcdSnapshotRequest {}))
            .await
            .map_err(|status| ClientError::Rpc {
                method: "EtcdSnapshot",
                status,
            })?;
        Ok(DataStream::new("EtcdSnapshot", resp.into_inner()))
    }

    /// MachineService/Dmesg: the kernel log as a stream of byte chunks.
    pub async fn dmesg(&self, follow: bool, tail: bool) -> Result<DataStream, ClientError> {
        let resp = self
            .machine()
            .dmesg(self.request(DmesgRequest { follow, tail }))
            .await
            .map_err(|status| ClientError::Rpc {
                method: "Dmesg",
                status,
            })?;
        Ok(DataStream {
            method: "Dmesg",
            inner: resp.into_inner(),
        })
    }

    /// MachineService/Reset: the node wipes what the request names, then reboots or powers off.
    pub async fn reset(&self, request: ResetRequest) -> Result<machine::Reset, ClientError> {
        let resp = self.machine().reset(self.request(request)).await;
        first("Reset", resp.map(|r| r.into_inner().messages))
    }

    /// MachineService/ServiceStart; the reply's `resp` is the node's message.
    pub async fn service_start(&self, id: &str) -> Result<machine::ServiceStart, ClientError> {
        let request = ServiceStartRequest { id: id.to_owned() };
        let resp = self.machine().service_start(self.request(request)).await;
        first("ServiceStart", resp.map(|r| r.into_inner().messages))
    }

    /// MachineService/ServiceStop; the reply's `resp` is the node's message.
    pub async fn service_stop(&self, id: &str) -> Result<machine::ServiceStop, ClientError> {
        let request = ServiceStopRequest { id: id.to_owned() };
        let resp = self.machine().service_stop(self.request(request)).await;
        first("ServiceStop", resp.map(|r| r.into_inner().messages))
    }

    /// MachineService/ServiceRestart; the reply's `resp` is the node's message.
    pub async fn service_restart(&self, id: &str) -> Result<machine::ServiceRestart, ClientError> {
        let request = ServiceRestartRequest { id: id.to_owned() };
        let resp = self.machine().service_restart(self.request(request)).await;
        first("ServiceRestart", resp.map(|r| r.into_inner().messages))
    }

    /// MachineService/Processes.
    pub async fn processes(&self) -> Result<machine::Process, ClientError> {
        let resp = self.machine().processes(self.request(())).await;
        first("Processes", resp.map(|r| r.into_inner().messages))
    }

    /// MachineService/Mounts: every mount with its size and free space in bytes.
    pub async fn mounts(&self) -> Result<machine::Mounts, ClientError> {
        let resp = self.machine().mounts(self.request(())).await;
        first("Mounts", resp.map(|r| r.into_inner().messages))
    }

    /// MachineService/CPUInfo: /proc/cpuinfo, one entry per processor.
    pub async fn cpu_info(&self) -> Result<machine::CpUsInfo, ClientError> {
        let resp = self.machine().cpu_info(self.request(())).await;
        first("CPUInfo", resp.map(|r| r.into_inner().messages))
    }

    /// MachineService/LoadAvg.
    pub async fn load_avg(&self) -> Result<machine::LoadAvg, ClientError> {
        let resp = self.machine().load_avg(self.request(())).await;
        first("LoadAvg", resp.map(|r| r.into_inner().messages))
    }

    /// TimeService/Time: the node's clock next to its configured time server's.
    pub async fn node_time(&self) -> Result<time_api::Time, ClientError> {
        let resp = self.time().time(self.request(())).await;
        first("Time", resp.map(|r| r.into_inner().messages))
    }

    /// TimeService/TimeCheck: the node's clock next to `server`'s (an NTP server name or address).
    pub async fn time_check(&self, server: &str) -> Result<time_api::Time, ClientError> {
        let request = TimeRequest {
            server: server.to_owned(),
        };
        let resp = self.time().time_check(self.request(request)).await;
        first("TimeCheck", resp.map(|r| r.into_inner().messages))
    }

    /// MachineService/Logs: a service's log as a stream of byte chunks (upstream: namespace
    /// `system` and driver CONTAINERD for Talos services).
    pub async fn logs(&self, request: LogsRequest) -> Result<DataStream, ClientError> {
        let resp = self
            .machine()
            .logs(self.request(request))
            .await
            .map_err(|status| ClientError::Rpc {
                method: "Logs",
                status,
            })?;
        Ok(DataStream::new("Logs", resp.into_inner()))
    }

    /// MachineService/Read: one regular file's content as a stream of byte chunks.
    pub async fn read(&self, path: &str) -> Result<DataStream, ClientError> {
        let request = ReadRequest {
            path: path.to_owned(),
        };
        let resp = self
            .machine()
            .read(self.request(request))
            .await
            .map_err(|status| ClientError::Rpc {
                method: "Read",
                status,
            })?;
        Ok(DataStream::new("Read", resp.into_inner()))
    }

    /// MachineService/Copy: `path` (a file or a directory tree) as a .tar.gz byte stream.
    pub async fn copy(&self, path: &str) -> Result<DataStream, ClientError> {
        let request = machine::CopyRequest {
            root_path: path.to_owned(),
        };
        let resp = self
            .machine()
            .copy(self.request(request))
            .await
            .map_err(|status| ClientError::Rpc {
                method: "Copy",
                status,
            })?;
        Ok(DataStream::new("Copy", resp.into_inner()))
    }

    /// MachineService/Kubeconfig: a newly minted admin kubeconfig, as a .tar.gz holding one
    /// file named `kubeconfig`.
    pub async fn kubeconfig(&self) -> Result<DataStream, ClientError> {
        let resp = self
            .machine()
            .kubeconfig(self.request(()))
            .await
            .map_err(|status| ClientError::Rpc {
                method: "Kubeconfig",
                status,
            })?;
        Ok(DataStream::new("Kubeconfig", resp.into_inner()))
    }

    /// MachineService/GenerateClientConfiguration: a new client certificate for `roles`, valid
    /// for `ttl`, signed by the node's OS CA.
    pub async fn generate_client_configuration(
        &self,
        roles: Vec<String>,
        ttl: std::time::Duration,
    ) -> Result<machine::GenerateClientConfiguration, ClientError> {
        let request = machine::GenerateClientConfigurationRequest {
            roles,
            crt_ttl: Some(
                ttl.try_into()
                    .unwrap_or(talos_proto::prost_types::Duration {
                        seconds: i64::MAX,
                        nanos: 0,
                    }),
            ),
        };
        let resp = self
            .machine()
            .generate_client_configuration(self.request(request))
            .await;
        first(
            "GenerateClientConfiguration",
            resp.map(|r| r.into_inner().messages),
        )
    }

    /// MachineService/List: directory entries, the root itself first.
    pub async fn list(&self, request: ListRequest) -> Result<FileInfoStream, ClientError> {
        let resp = self
            .machine()
            .list(self.request(request))
            .await
            .map_err(|status| ClientError::Rpc {
                method: "List",
                status,
            })?;
        Ok(FileInfoStream {
            inner: resp.into_inner(),
        })
    }
}

/// The server stream of MachineService/List.
#[derive(Debug)]
pub struct FileInfoStream {
    inner: tonic::Streaming<FileInfo>,
}

impl FileInfoStream {
    /// The next entry, or `None` at the end of the listing. An entry the node could not read
    /// arrives with its `error` set, not as an error here.
    pub async fn next_entry(&mut self) -> Result<Option<FileInfo>, ClientError> {
        self.inner
            .message()
            .await
            .map_err(|status| ClientError::Rpc {
                method: "List",
                status,
            })
    }
}

/// A server stream of `common.Data` chunks (Dmesg, Logs, Read, Copy, Kubeconfig...).
#[derive(Debug)]
pub struct DataStream {
    method: &'static str,
    inner: tonic::Streaming<common::Data>,
}

impl DataStream {
    /// Wraps a raw stream returned by a [`Client::machine`] call.
    pub fn new(method: &'static str, inner: tonic::Streaming<common::Data>) -> DataStream {
        DataStream { method, inner }
    }

    /// The next chunk, or `None` at the end of the stream.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, ClientError> {
        match self.inner.message().await {
            Ok(chunk) => Ok(chunk.map(|data| data.bytes)),
            Err(status) => Err(ClientError::Rpc {
                method: self.method,
                status,
            }),
        }
    }
}

fn first<T>(method: &'static str, result: Result<Vec<T>, tonic::Status>) -> Result<T, ClientError> {
    let messages = result.map_err(|status| ClientError::Rpc { method, status })?;
    messages
        .into_iter()
        .next()
        .ok_or(ClientError::EmptyResponse { method })
}

/// Turns a channel connect failure into the most telling error: a certificate name mismatch or
/// TLS failure when one is inside, else the transport error.
fn classify_connect_error(endpoint: &Endpoint, source: tonic::transport::Error) -> ClientError {
    if let Some(tls_err) = find_rustls_error(&source) {
        if let rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForNameContext { presented, .. },
        ) = tls_err
        {
            return ClientError::ServerNameMismatch {
                endpoint: endpoint.to_string(),
                host: endpoint.host().to_owned(),
                presented: presented.iter().map(|name| plain_name(name)).collect(),
            };
        }
        return ClientError::Tls {
            endpoint: endpoint.to_string(),
            source: tls_err.clone(),
        };
    }
    ClientError::Connect {
        endpoint: endpoint.to_string(),
        reason: root_cause(&source),
    }
}

/// The innermost error's text; tonic's transport errors repeat their sources in their own text.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// `IpAddress(10.0.0.1)` / `DnsName("node")` (webpki's debug form) to `10.0.0.1` / `node`.
fn plain_name(name: &str) -> String {
    ["IpAddress(", "DnsName("]
        .iter()
        .find_map(|prefix| name.strip_prefix(prefix)?.strip_suffix(')'))
        .map(|inner| inner.trim_matches('"').to_owned())
        .unwrap_or_else(|| name.to_owned())
}

fn find_rustls_error(err: &tonic::transport::Error) -> Option<&rustls::Error> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = err.source();
    while let Some(err) = current {
        if let Some(tls_err) = err.downcast_ref::<rustls::Error>() {
            return Some(tls_err);
        }
        // io::Error::source() skips the wrapped error itself, so look inside explicitly.
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            if let Some(tls_err) = inner.downcast_ref::<rustls::Error>() {
                return Some(tls_err);
            }
            current = Some(inner);
            continue;
        }
        current = err.source();
    }
    None
}
