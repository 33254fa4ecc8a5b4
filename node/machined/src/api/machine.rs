//! `machine.MachineService`: the RPCs this node answers. Every unary reply carries one
//! element whose `metadata` (field 1) is left empty, as upstream's node does.

use std::io::{ErrorKind, Read, Seek, SeekFrom, Write as _};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use talos_disk::adv::AdvError;
use talos_machinery::config::Config;
use talos_machinery::config::v1alpha1::MachineType;
use talos_machinery::kubeconfig;
use talos_machinery::pki;
use talos_machinery::role::Role;
use talos_machinery::talosconfig::{Context, Talosconfig};
use talos_proto::common::Data;
use talos_proto::machine::machine_service_server::MachineService;
use talos_proto::machine::{
    self as pb, ApplyConfiguration, ApplyConfigurationRequest, ApplyConfigurationResponse,
    Bootstrap, BootstrapRequest, BootstrapResponse, CpUsInfo, CpuInfoResponse, DmesgRequest,
    EventsRequest, FileInfo, Hostname, HostnameResponse, ListRequest, LoadAvgResponse, LogsRequest,
    Memory, MemoryResponse, Mounts, MountsResponse, Process, ProcessesResponse, ReadRequest,
    Reboot, RebootRequest, RebootResponse, Reset, ResetRequest, ResetResponse, Rollback,
    RollbackRequest, RollbackResponse, ServiceList, ServiceListResponse, ServiceRestart,
    ServiceRestartRequest, ServiceRestartResponse, ServiceStart, ServiceStartRequest,
    ServiceStartResponse, ServiceStop, ServiceStopRequest, ServiceStopResponse, Shutdown,
    ShutdownRequest, ShutdownResponse, Upgrade, UpgradeRequest, UpgradeResponse, Version,
    VersionResponse,
};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::boot::{BootError, BootSlots};
use crate::etcd_member::{self, EtcdClient, EtcdError};
use crate::files;
use crate::kmsg;
use crate::node::{ApplyError, Node, error_chain};
use crate::sequencer::Sequence;
use crate::services::ServiceState;
use crate::supervisor::{ControlError, stack};
use crate::sysinfo;
use crate::{actions, archive, upgrade};

const ETCD_ONLY_ON_CONTROL_PLANES: &str = "etcd runs only on control-plane nodes";

/// Upstream's default try-mode timeout.
const DEFAULT_TRY_TIMEOUT: Duration = Duration::from_secs(60);

type ListStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<FileInfo, Status>> + Send + 'static>>;

fn file_status(e: files::FileAccessError) -> Status {
    match e {
        files::FileAccessError::NotFound(_) => Status::not_found(e.to_string()),
        files::FileAccessError::Secret { .. } => Status::permission_denied(e.to_string()),
        files::FileAccessError::Io { .. } => Status::internal(e.to_string()),
        _ => Status::invalid_argument(e.to_string()),
    }
}

type EventStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::Event, Status>> + Send>>;
type DataStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<Data, Status>> + Send + 'static>>;

#[derive(Debug, Clone)]
pub struct MachineApi {
    pub node: Arc<Node>,
}

impl MachineApi {
    /// The config, once the node has left maintenance mode.
    fn configured(&self) -> Result<Arc<Config>, Status> {
        self.node.config().ok_or_else(|| {
            Status::failed_precondition("the node is in maintenance mode: apply a config first")
        })
    }

    /// The config of a control-plane node; `refusal` tells the caller of any other kind why.
    fn control_plane_config(&self, refusal: &str) -> Result<Arc<Config>, Status> {
        let config = self.configured()?;
        if config.machine_type() != MachineType::ControlPlane {
            return Err(Status::failed_precondition(refusal));
        }
        Ok(config)
    }

    /// The A/B state of the system disk, which holds META.
    fn meta(&self) -> Result<Arc<BootSlots>, Status> {
        self.node.slots.clone().ok_or_else(|| {
            Status::failed_precondition(
                "this node has no META partition: it did not boot from a Talos system disk",
            )
        })
    }

    /// A client of this control-plane node's etcd.
    async fn local_etcd(&self) -> Result<EtcdClient, Status> {
        let config = self.control_plane_config(ETCD_ONLY_ON_CONTROL_PLANES)?;
        etcd_member::connect_local(&config)
            .await
            .map_err(etcd_status)
    }
}

/// META keys are 8 bits wide, though the API carries 32.
fn meta_tag(key: u32) -> Result<u8, Status> {
    u8::try_from(key).map_err(|_| {
        Status::invalid_argument(format!(
            "META key {key:#x} does not fit in 8 bits (0x00-0xff)"
        ))
    })
}

fn meta_status(e: BootError) -> Status {
    match e {
        BootError::Meta(AdvError::ReservedTag(_)) => Status::invalid_argument(e.to_string()),
        BootError::Meta(AdvError::Full { .. }) => Status::resource_exhausted(e.to_string()),
        _ => Status::internal(e.to_string()),
    }
}

fn etcd_status(e: EtcdError) -> Status {
    match &e {
        EtcdError::Connect { .. } => Status::unavailable(format!("{e} (is etcd running?)")),
        EtcdError::Rpc { status, .. } => Status::new(status.code(), e.to_string()),
        EtcdError::LastMember { .. } | EtcdError::NotAMember { .. } => {
            Status::failed_precondition(e.to_string())
        }
        _ => Status::internal(e.to_string()),
    }
}

/// Roles by name; an unknown name is refused with the list of known ones.
fn parse_roles(names: &[String]) -> Result<Vec<Role>, Status> {
    if names.is_empty() {
        return Err(Status::invalid_argument("at least one role is required"));
    }
    names
        .iter()
        .map(|name| {
            Role::parse(name).ok_or_else(|| {
                let known: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
                Status::invalid_argument(format!(
                    "unknown role {name:?}: known roles are {}",
                    known.join(", ")
                ))
            })
        })
        .collect()
}

fn actor_id() -> String {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("the kernel's random source is available");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl From<ControlError> for Status {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::NotFound(_) => Status::not_found(e.to_string()),
            ControlError::NotSupervised(_) => Status::failed_precondition(e.to_string()),
        }
    }
}

impl From<ApplyError> for Status {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::Invalid(msg) => Status::invalid_argument(msg),
            ApplyError::Busy => Status::failed_precondition(e.to_string()),
            ApplyError::NotAllowed(msg) => Status::failed_precondition(msg),
            ApplyError::Store { .. } => Status::internal(format!(
                "{e}: {}",
                std::error::Error::source(&e)
                    .map(ToString::to_string)
                    .unwrap_or_default()
            )),
        }
    }
}

/// Streams /dev/kmsg: what is buffered, then (with `follow`) new records as they come.
fn kmsg_stream(follow: bool, tail: bool) -> Result<DataStream, Status> {
    let mut file = talos_node_sys::fs::open_nonblocking(Path::new("/dev/kmsg"))
        .map_err(|e| Status::unavailable(format!("opening /dev/kmsg: {e}")))?;
    if tail {
        file.seek(SeekFrom::End(0))
            .map_err(|e| Status::internal(format!("seeking /dev/kmsg: {e}")))?;
    }
    let (tx, rx) = mpsc::channel::<Result<Data, Status>>(64);
    std::thread::Builder::new()
        .name("dmesg".into())
        .spawn(move || {
            let boot = kmsg::boot_time();
            let mut buf = vec![0u8; 8192];
            loop {
                match file.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        let Some(record) = kmsg::Record::parse(&String::from_utf8_lossy(&buf[..n]))
                        else {
                            continue;
                        };
                        let data = Data {
                            metadata: None,
                            bytes: record.format(boot).into_bytes(),
                        };
                        if tx.blocking_send(Ok(data)).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        if !follow || tx.is_closed() {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    Err(e) if e.raw_os_error() == Some(32) => continue, // EPIPE: records were overwritten
                    Err(e) => {
                        let _ = tx.blocking_send(Err(Status::internal(format!(
                            "reading /dev/kmsg: {e}"
                        ))));
                        return;
                    }
                }
            }
        })
        .map_err(|e| Status::internal(format!("starting the dmesg reader: {e}")))?;
    Ok(Box::pin(ReceiverStream::new(rx)))
}

#[tonic::async_trait]
impl MachineService for MachineApi {
    async fn version(&self, _: Request<()>) -> Result<Response<VersionResponse>, Status> {
        let arch = if cfg!(target_arch = "aarch64") {
            "arm64"
        } else {
            "amd64"
        };
        let version = Version {
            metadata: None,
            version: Some(pb::VersionInfo {
                tag: self.node.os_version.clone(),
                sha: option_env!("TALOS_GIT_SHA").unwrap_or("unknown").to_owned(),
                built: option_env!("TALOS_BUILD_DATE").unwrap_or("").to_owned(),
                go_version: option_env!("TALOS_RUSTC_VERSION")
                    .unwrap_or("rustc")
                    .to_owned(),
                os: format!("Linux {}", self.node.kernel_release),
                arch: arch.to_owned(),
            }),
            platform: Some(pb::PlatformInfo {
                name: "metal".into(),
                mode: "metal".into(),
            }),
            features: Some(pb::FeaturesInfo { rbac: true }),
        };
        Ok(Response::new(VersionResponse {
            messages: vec![version],
        }))
    }

    async fn hostname(&self, _: Request<()>) -> Result<Response<HostnameResponse>, Status> {
        Ok(Response::new(HostnameResponse {
            messages: vec![Hostname {
                metadata: None,
                hostname: self.node.hostname(),
            }],
        }))
    }

    async fn memory(&self, _: Request<()>) -> Result<Response<MemoryResponse>, Status> {
        let text = tokio::fs::read_to_string("/proc/meminfo")
            .await
            .map_err(|e| Status::internal(format!("reading /proc/meminfo: {e}")))?;
        Ok(Response::new(MemoryResponse {
            messages: vec![Memory {
                metadata: None,
                meminfo: Some(sysinfo::meminfo(&text)),
            }],
        }))
    }

    async fn service_list(&self, _: Request<()>) -> Result<Response<ServiceListResponse>, Status> {
        Ok(Response::new(ServiceListResponse {
            messages: vec![ServiceList {
                metadata: None,
                services: self.node.services.list(),
            }],
        }))
    }

    async fn load_avg(&self, _: Request<()>) -> Result<Response<LoadAvgResponse>, Status> {
        let text = tokio::fs::read_to_string("/proc/loadavg")
            .await
            .map_err(|e| Status::internal(format!("reading /proc/loadavg: {e}")))?;
        Ok(Response::new(LoadAvgResponse {
            messages: vec![sysinfo::loadavg(&text)],
        }))
    }

    async fn cpu_info(&self, _: Request<()>) -> Result<Response<CpuInfoResponse>, Status> {
        let text = tokio::fs::read_to_string("/proc/cpuinfo")
            .await
            .map_err(|e| Status::internal(format!("reading /proc/cpuinfo: {e}")))?;
        Ok(Response::new(CpuInfoResponse {
            messages: vec![CpUsInfo {
                metadata: None,
                cpu_info: sysinfo::cpuinfo(&text),
            }],
        }))
    }

    async fn mounts(&self, _: Request<()>) -> Result<Response<MountsResponse>, Status> {
        let text = tokio::fs::read_to_string("/proc/mounts")
            .await
            .map_err(|e| Status::internal(format!("reading /proc/mounts: {e}")))?;
        let stats = tokio::task::spawn_blocking(move || {
            sysinfo::mounts(&text, |p| talos_node_sys::fs::filesystem_space(p).ok())
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(MountsResponse {
            messages: vec![Mounts {
                metadata: None,
                stats,
            }],
        }))
    }

    async fn read(&self, request: Request<ReadRequest>) -> Result<Response<DataStream>, Status> {
        let path = request.into_inner().path;
        let resolved = files::readable_file(Path::new("/"), &path).map_err(file_status)?;
        let data = tokio::fs::read(&resolved)
            .await
            .map_err(|e| Status::internal(format!("reading {path}: {e}")))?;
        let chunks: Vec<Result<Data, Status>> = data
            .chunks(64 * 1024)
            .map(|c| {
                Ok(Data {
                    metadata: None,
                    bytes: c.to_vec(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListStream>, Status> {
        let req = request.into_inner();
        let depth = match (req.recurse, req.recursion_depth) {
            (false, _) => Some(1),
            (true, d) if d > 0 => u32::try_from(d).ok(),
            (true, _) => None,
        };
        let types: Vec<pb::list_request::Type> = req
            .types
            .iter()
            .filter_map(|t| pb::list_request::Type::try_from(*t).ok())
            .collect();
        let root = if req.root.is_empty() {
            "/".to_owned()
        } else {
            req.root
        };
        let entries =
            tokio::task::spawn_blocking(move || files::list(Path::new("/"), &root, depth, &types))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(file_status)?;
        Ok(Response::new(Box::pin(tokio_stream::iter(
            entries.into_iter().map(Ok),
        ))))
    }

    async fn processes(&self, _: Request<()>) -> Result<Response<ProcessesResponse>, Status> {
        let processes = tokio::task::spawn_blocking(|| sysinfo::processes(Path::new("/proc")))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(ProcessesResponse {
            messages: vec![Process {
                metadata: None,
                processes,
            }],
        }))
    }

    async fn dmesg(&self, request: Request<DmesgRequest>) -> Result<Response<DataStream>, Status> {
        let req = request.into_inner();
        Ok(Response::new(kmsg_stream(req.follow, req.tail)?))
    }

    async fn logs(&self, request: Request<LogsRequest>) -> Result<Response<DataStream>, Status> {
        let req = request.into_inner();
        let ring = match req.id.as_str() {
            "machined" => self.node.logs.clone(),
            id => self.node.supervisor.logs(id).ok_or_else(|| {
                Status::not_found(format!(
                    "no logs for service {id:?}: logs are kept for machined and the services it runs as processes (see `talosctl services`)"
                ))
            })?,
        };
        let tail = usize::try_from(req.tail_lines).ok();
        let snapshot = Data {
            metadata: None,
            bytes: ring.snapshot(tail),
        };
        let head = tokio_stream::once(Ok(snapshot));
        if !req.follow {
            return Ok(Response::new(Box::pin(head)));
        }
        let live =
            tokio_stream::wrappers::BroadcastStream::new(ring.subscribe()).filter_map(|chunk| {
                chunk.ok().map(|bytes| {
                    Ok(Data {
                        metadata: None,
                        bytes: bytes.to_vec(),
                    })
                })
            });
        Ok(Response::new(Box::pin(head.chain(live))))
    }

    async fn service_start(
        &self,
        request: Request<ServiceStartRequest>,
    ) -> Result<Response<ServiceStartResponse>, Status> {
        let id = request.into_inner().id;
        self.node.supervisor.start(&id).await?;
        Ok(Response::new(ServiceStartResponse {
            messages: vec![ServiceStart {
                metadata: None,
                resp: format!("Service {id:?} started"),
            }],
        }))
    }

    async fn service_stop(
        &self,
        request: Request<ServiceStopRequest>,
    ) -> Result<Response<ServiceStopResponse>, Status> {
        let id = request.into_inner().id;
        self.node.supervisor.stop(&id).await?;
        Ok(Response::new(ServiceStopResponse {
            messages: vec![ServiceStop {
                metadata: None,
                resp: format!("Service {id:?} stopped"),
            }],
        }))
    }

    async fn service_restart(
        &self,
        request: Request<ServiceRestartRequest>,
    ) -> Result<Response<ServiceRestartResponse>, Status> {
        let id = request.into_inner().id;
        self.node.supervisor.restart(&id).await?;
        Ok(Response::new(ServiceRestartResponse {
            messages: vec![ServiceRestart {
                metadata: None,
                resp: format!("Service {id:?} restarted"),
            }],
        }))
    }

    async fn etcd_member_list(
        &self,
        _: Request<pb::EtcdMemberListRequest>,
    ) -> Result<Response<pb::EtcdMemberListResponse>, Status> {
        let mut etcd = self.local_etcd().await?;
        let members = etcd.member_list().await.map_err(etcd_status)?.members;
        Ok(Response::new(pb::EtcdMemberListResponse {
            messages: vec![pb::EtcdMembers {
                metadata: None,
                legacy_members: Vec::new(),
                members: members
                    .into_iter()
                    .map(|m| pb::EtcdMember {
                        id: m.id,
                        hostname: m.name,
                        peer_urls: m.peer_urls,
                        client_urls: m.client_urls,
                        is_learner: m.is_learner,
                    })
                    .collect(),
            }],
        }))
    }

    async fn etcd_status(
        &self,
        _: Request<()>,
    ) -> Result<Response<pb::EtcdStatusResponse>, Status> {
        let mut etcd = self.local_etcd().await?;
        let status = etcd.status().await.map_err(etcd_status)?;
        Ok(Response::new(pb::EtcdStatusResponse {
            messages: vec![pb::EtcdStatus {
                metadata: None,
                member_status: Some(pb::EtcdMemberStatus {
                    storage_version: status.storage_version,
                    member_id: status.header.map_or(0, |h| h.member_id),
                    protocol_version: status.version,
                    db_size: status.db_size,
                    db_size_in_use: status.db_size_in_use,
                    leader: status.leader,
                    raft_index: status.raft_index,
                    raft_term: status.raft_term,
                    raft_applied_index: status.raft_applied_index,
                    errors: status.errors,
                    is_learner: status.is_learner,
                }),
            }],
        }))
    }

    async fn etcd_remove_member_by_id(
        &self,
        request: Request<pb::EtcdRemoveMemberByIdRequest>,
    ) -> Result<Response<pb::EtcdRemoveMemberByIdResponse>, Status> {
        let id = request.into_inner().member_id;
        let mut etcd = self.local_etcd().await?;
        etcd.member_remove(id).await.map_err(etcd_status)?;
        tracing::info!("removed etcd member {id:016x}");
        Ok(Response::new(pb::EtcdRemoveMemberByIdResponse {
            messages: vec![pb::EtcdRemoveMemberById { metadata: None }],
        }))
    }

    async fn meta_write(
        &self,
        request: Request<pb::MetaWriteRequest>,
    ) -> Result<Response<pb::MetaWriteResponse>, Status> {
        let request = request.into_inner();
        let tag = meta_tag(request.key)?;
        let slots = self.meta()?;
        let value = request.value;
        let length = value.len();
        tokio::task::spawn_blocking(move || slots.meta_write(tag, &value))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(meta_status)?;
        tracing::info!("META key {tag:#04x} written ({length} bytes)");
        Ok(Response::new(pb::MetaWriteResponse {
            messages: vec![pb::MetaWrite { metadata: None }],
        }))
    }

    async fn meta_delete(
        &self,
        request: Request<pb::MetaDeleteRequest>,
    ) -> Result<Response<pb::MetaDeleteResponse>, Status> {
        let tag = meta_tag(request.into_inner().key)?;
        let slots = self.meta()?;
        let deleted = tokio::task::spawn_blocking(move || slots.meta_delete(tag))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(meta_status)?;
        if !deleted {
            return Err(Status::not_found(format!("META key {tag:#04x} is not set")));
        }
        tracing::info!("META key {tag:#04x} deleted");
        Ok(Response::new(pb::MetaDeleteResponse {
            messages: vec![pb::MetaDelete { metadata: None }],
        }))
    }

    async fn etcd_forfeit_leadership(
        &self,
        _: Request<pb::EtcdForfeitLeadershipRequest>,
    ) -> Result<Response<pb::EtcdForfeitLeadershipResponse>, Status> {
        let mut etcd = self.local_etcd().await?;
        let member = etcd_member::forfeit_leadership(&mut etcd)
            .await
            .map_err(etcd_status)?;
        if let Some(member) = &member {
            tracing::info!(member, "etcd leadership handed over");
        }
        Ok(Response::new(pb::EtcdForfeitLeadershipResponse {
            messages: vec![pb::EtcdForfeitLeadership {
                metadata: None,
                member: member.unwrap_or_default(),
            }],
        }))
    }

    async fn etcd_leave_cluster(
        &self,
        _: Request<pb::EtcdLeaveClusterRequest>,
    ) -> Result<Response<pb::EtcdLeaveClusterResponse>, Status> {
        self.control_plane_config(ETCD_ONLY_ON_CONTROL_PLANES)?;
        actions::leave_etcd(&self.node).await.map_err(etcd_status)?;
        Ok(Response::new(pb::EtcdLeaveClusterResponse {
            messages: vec![pb::EtcdLeaveCluster { metadata: None }],
        }))
    }

    async fn etcd_snapshot(
        &self,
        _: Request<pb::EtcdSnapshotRequest>,
    ) -> Result<Response<DataStream>, Status> {
        let mut etcd = self.local_etcd().await?;
        let chunks = etcd.snapshot().await.map_err(etcd_status)?;
        tracing::info!("streaming an etcd snapshot");
        // The client moves into the stream so its connection lives as long as the stream.
        let data = chunks.map(move |chunk| {
            let _connection = &etcd;
            chunk
                .map(|c| Data {
                    metadata: None,
                    bytes: c.blob,
                })
                .map_err(|status| {
                    Status::new(
                        status.code(),
                        format!("etcd snapshot: {}", status.message()),
                    )
                })
        });
        Ok(Response::new(Box::pin(data)))
    }

    async fn copy(
        &self,
        request: Request<pb::CopyRequest>,
    ) -> Result<Response<DataStream>, Status> {
        let path = request.into_inner().root_path;
        // Refusals arrive as the call's status, before any bytes.
        files::archive_root(Path::new("/"), &path).map_err(file_status)?;
        tracing::info!(path, "streaming a copy");
        let (tx, rx) = mpsc::channel(4);
        let errors = tx.clone();
        tokio::task::spawn_blocking(move || {
            let mut gz = archive::gzip(archive::ChunkSender::new(tx));
            let written = files::archive(Path::new("/"), &path, &mut gz).and_then(|()| {
                gz.finish()
                    .and_then(|mut sender| sender.flush())
                    .map_err(|e| files::FileAccessError::Io {
                        path: path.clone(),
                        reason: e.to_string(),
                    })
            });
            if let Err(e) = written {
                // Fails too when the client has gone; then nobody is told.
                let _ = errors.blocking_send(Err(file_status(e)));
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn kubeconfig(&self, _: Request<()>) -> Result<Response<DataStream>, Status> {
        let config = self.control_plane_config(
            "kubeconfigs are minted by control-plane nodes: target one with -n",
        )?;
        let now = SystemTime::now();
        let yaml = kubeconfig::admin(&config, now)
            .and_then(|k| k.to_yaml())
            .map_err(|e| Status::failed_precondition(error_chain(&e)))?;
        let mtime = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let archive = archive::single_file("kubeconfig", 0o600, mtime, yaml.as_bytes())
            .map_err(|e| Status::internal(format!("packing the kubeconfig: {e}")))?;
        tracing::info!("minted an admin kubeconfig");
        Ok(Response::new(Box::pin(tokio_stream::once(Ok(Data {
            metadata: None,
            bytes: archive,
        })))))
    }

    async fn generate_client_configuration(
        &self,
        request: Request<pb::GenerateClientConfigurationRequest>,
    ) -> Result<Response<pb::GenerateClientConfigurationResponse>, Status> {
        let req = request.into_inner();
        let config = self.configured()?;
        let ca = config
            .os_ca()
            .map_err(|e| Status::internal(e.to_string()))?
            .and_then(|ca| ca.to_cert_and_key())
            .ok_or_else(|| {
                Status::failed_precondition(
                    "this node's machine.ca has no key (workers hold none): ask a control-plane node",
                )
            })?;
        let roles = parse_roles(&req.roles)?;
        let ttl = req
            .crt_ttl
            .and_then(|d| Duration::try_from(d).ok())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| Status::invalid_argument("crt_ttl must be a positive duration"))?;
        let cert = pki::issue_client_cert(&ca, &roles, ttl, SystemTime::now())
            .map_err(|e| Status::internal(format!("issuing the client certificate: {e}")))?;
        let name = config.cluster_name().unwrap_or_else(|| "talos".to_owned());
        let context = Context::new(Vec::new(), &ca.cert_pem, &cert.cert_pem, &cert.key_pem);
        let talosconfig = Talosconfig::with_context(&name, context)
            .to_yaml()
            .map_err(|e| Status::internal(e.to_string()))?;
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        tracing::info!(
            roles = names.join(","),
            ttl_s = ttl.as_secs(),
            "issued a client certificate"
        );
        Ok(Response::new(pb::GenerateClientConfigurationResponse {
            messages: vec![pb::GenerateClientConfiguration {
                metadata: None,
                ca: ca.cert_pem.into_bytes(),
                crt: cert.cert_pem.into_bytes(),
                key: cert.key_pem.into_bytes(),
                talosconfig: talosconfig.into_bytes(),
            }],
        }))
    }

    async fn bootstrap(
        &self,
        request: Request<BootstrapRequest>,
    ) -> Result<Response<BootstrapResponse>, Status> {
        if request.get_ref().recover_etcd {
            return Err(Status::unimplemented(
                "recovering etcd from a snapshot is not supported by talos-rs yet",
            ));
        }
        self.control_plane_config("bootstrap is only possible on a control-plane node")?;
        if !self
            .node
            .etcd_bootstrap
            .send_if_modified(|open| !std::mem::replace(open, true))
        {
            return Err(Status::already_exists(format!(
                "etcd data directory is not empty ({}), or the node was already bootstrapped",
                stack::ETCD_DATA
            )));
        }
        tracing::info!("bootstrap requested: etcd starts a new single-member cluster");
        Ok(Response::new(BootstrapResponse {
            messages: vec![Bootstrap { metadata: None }],
        }))
    }

    async fn events(
        &self,
        request: Request<EventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let request = request.into_inner();
        let actor = request.with_actor_id.clone();
        let (tail, live) = self.node.sequencer.bus().tail(&request);
        let head = tokio_stream::iter(tail.into_iter().map(|r| Ok(r.event)));
        let live = tokio_stream::wrappers::BroadcastStream::new(live).filter_map(move |r| {
            r.ok()
                .filter(|r| actor.is_empty() || r.event.actor_id == actor)
                .map(|r| Ok(r.event))
        });
        Ok(Response::new(Box::pin(head.chain(live))))
    }

    async fn upgrade(
        &self,
        request: Request<UpgradeRequest>,
    ) -> Result<Response<UpgradeResponse>, Status> {
        let request = request.into_inner();
        if self.node.slots.is_none() {
            return Err(Status::failed_precondition(
                "this node did not boot from an A/B system disk (no talos.slot= on its kernel command line), so it cannot upgrade in place",
            ));
        }
        upgrade::check(&request.image, self.node.config().as_deref())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let actor_id = actor_id();
        let (sequence, when) = if request.stage {
            (Sequence::StageUpgrade, "at the next reboot")
        } else {
            (Sequence::Upgrade, "next")
        };
        let request = actions::Request {
            image: request.image,
            ..Default::default()
        };
        let done = actions::run(&self.node, sequence, &actor_id, request).await?;
        let version = done.staged_version.unwrap_or_default();
        Ok(Response::new(UpgradeResponse {
            messages: vec![Upgrade {
                metadata: None,
                ack: format!("Upgrade request received: {version} boots {when}, once"),
                actor_id,
            }],
        }))
    }

    async fn rollback(
        &self,
        _: Request<RollbackRequest>,
    ) -> Result<Response<RollbackResponse>, Status> {
        if self.node.slots.is_none() {
            return Err(Status::failed_precondition(
                "this node did not boot from an A/B system disk, so there is nothing to roll back to",
            ));
        }
        actions::run(
            &self.node,
            Sequence::Rollback,
            &actor_id(),
            Default::default(),
        )
        .await?;
        Ok(Response::new(RollbackResponse {
            messages: vec![Rollback { metadata: None }],
        }))
    }

    async fn reboot(
        &self,
        request: Request<RebootRequest>,
    ) -> Result<Response<RebootResponse>, Status> {
        let mode = request.get_ref().mode;
        tracing::info!(mode, "reboot requested");
        let actor_id = actor_id();
        let request = actions::Request {
            force: mode == pb::reboot_request::Mode::Force as i32,
            ..Default::default()
        };
        actions::start(&self.node, Sequence::Reboot, &actor_id, request)?;
        Ok(Response::new(RebootResponse {
            messages: vec![Reboot {
                metadata: None,
                actor_id,
            }],
        }))
    }

    async fn reset(
        &self,
        request: Request<ResetRequest>,
    ) -> Result<Response<ResetResponse>, Status> {
        let req = request.into_inner();
        let labels: Vec<String> = req
            .system_partitions_to_wipe
            .iter()
            .filter(|p| p.wipe)
            .map(|p| p.label.clone())
            .collect();
        if let Some(unknown) = labels
            .iter()
            .find(|l| !matches!(l.as_str(), "STATE" | "EPHEMERAL" | "META"))
        {
            return Err(Status::invalid_argument(format!(
                "unknown system partition label {unknown:?}: expected STATE, EPHEMERAL or META"
            )));
        }
        let user_disks_only = req.mode == pb::reset_request::WipeMode::UserDisks as i32;
        if !req.user_disks_to_wipe.is_empty() || user_disks_only {
            return Err(Status::unimplemented(
                "wiping user disks is not supported by talos-rs yet",
            ));
        }
        let wipes = |label: &str| labels.is_empty() || labels.iter().any(|l| l == label);
        tracing::info!(
            graceful = req.graceful,
            reboot = req.reboot,
            ?labels,
            "reset requested"
        );
        let control_plane = self
            .node
            .config()
            .is_some_and(|c| c.machine_type() == MachineType::ControlPlane);
        let etcd_running = self.node.services.state("etcd") == Some(ServiceState::Running);
        if req.graceful {
            tracing::warn!(
                "graceful reset: draining Kubernetes is skipped: no kubelet runs on this node"
            );
            if control_plane && !etcd_running {
                tracing::info!(
                    "graceful reset: etcd is not running, so there is no member to remove"
                );
            }
        }
        let sequence = Sequence::reset(req.graceful, control_plane, etcd_running);
        let actor_id = actor_id();
        let request = actions::Request {
            wipe_state: wipes("STATE"),
            wipe_ephemeral: wipes("EPHEMERAL"),
            // META only when named: it holds the A/B state, not node data.
            wipe_meta: labels.iter().any(|l| l == "META"),
            reboot_after_reset: req.reboot,
            ..Default::default()
        };
        actions::start(&self.node, sequence, &actor_id, request)?;
        Ok(Response::new(ResetResponse {
            messages: vec![Reset {
                metadata: None,
                actor_id,
            }],
        }))
    }

    async fn shutdown(
        &self,
        request: Request<ShutdownRequest>,
    ) -> Result<Response<ShutdownResponse>, Status> {
        let force = request.get_ref().force;
        tracing::info!(force, "shutdown requested");
        let actor_id = actor_id();
        let request = actions::Request {
            force,
            ..Default::default()
        };
        actions::start(&self.node, Sequence::Shutdown, &actor_id, request)?;
        Ok(Response::new(ShutdownResponse {
            messages: vec![Shutdown {
                metadata: None,
                actor_id,
            }],
        }))
    }

    async fn apply_configuration(
        &self,
        request: Request<ApplyConfigurationRequest>,
    ) -> Result<Response<ApplyConfigurationResponse>, Status> {
        let req = request.into_inner();
        let mode = pb::apply_configuration_request::Mode::try_from(req.mode)
            .map_err(|_| Status::invalid_argument(format!("unknown apply mode {}", req.mode)))?;
        let try_for = req
            .try_mode_timeout
            .and_then(|d| Duration::try_from(d).ok())
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_TRY_TIMEOUT);
        let applied = self
            .node
            .apply(&req.data, mode, req.dry_run, try_for)
            .await?;
        tracing::info!(mode = ?applied.mode, dry_run = req.dry_run, "ApplyConfiguration: {}", applied.details.lines().next().unwrap_or(""));
        Ok(Response::new(ApplyConfigurationResponse {
            messages: vec![ApplyConfiguration {
                metadata: None,
                warnings: applied.warnings,
                mode: applied.mode as i32,
                mode_details: applied.details,
            }],
        }))
    }
}
