//! The day-2 commands (logs, read, list, processes, mounts, time, reset) against an in-process
//! mTLS node.

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::{
    command, echoed_node, maintenance_tls, node_tls, serve, serve_routes, talosctl, text,
    write_talosconfig,
};
use flate2::Compression;
use flate2::write::GzEncoder;
use talos_machinery::kubeconfig::Kubeconfig;
use talos_machinery::pki;
use talos_machinery::role::Role;
use talos_machinery::talosconfig::{Context, Talosconfig};
use talos_proto::common::Data;
use talos_proto::machine::machine_service_server::{MachineService, MachineServiceServer};
use talos_proto::machine::{
    CopyRequest, EtcdForfeitLeadership, EtcdForfeitLeadershipRequest,
    EtcdForfeitLeadershipResponse, EtcdLeaveClusterRequest, EtcdLeaveClusterResponse, EtcdMember,
    EtcdMemberListRequest, EtcdMemberListResponse, EtcdMemberStatus, EtcdMembers,
    EtcdRemoveMemberById, EtcdRemoveMemberByIdRequest, EtcdRemoveMemberByIdResponse,
    EtcdSnapshotRequest, EtcdStatus, EtcdStatusResponse, Event, EventsRequest, FileInfo,
    GenerateClientConfiguration, GenerateClientConfigurationRequest,
    GenerateClientConfigurationResponse, ListRequest, LogsRequest, MetaDeleteRequest,
    MetaDeleteResponse, MetaWrite, MetaWriteRequest, MetaWriteResponse, MountStat, Mounts,
    MountsResponse, Process, ProcessInfo, ProcessesResponse, ReadRequest, Reset,
    ResetPartitionSpec, ResetRequest, ResetResponse, SequenceEvent, Version, VersionInfo,
    VersionResponse, sequence_event,
};
use talos_proto::prost_types::Timestamp;
use talos_proto::time::time_service_server::{TimeService, TimeServiceServer};
use talos_proto::time::{Time, TimeRequest, TimeResponse};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tonic::codegen::BoxStream;
use tonic::service::Routes;
use tonic::{Request, Response, Status};

/// Every request the node saw, in order.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Logs(LogsRequest),
    List(ListRequest),
    Reset(ResetRequest),
    RemoveMember(u64),
    LeaveEtcd,
    MetaWrite(u32, Vec<u8>),
    MetaDelete(u32),
    Kubeconfig,
    ClientConfig(Vec<String>, Duration),
}

/// What the fake node's Kubeconfig sends; SERIAL counts the calls, so each certificate differs.
const KUBECONFIG: &str = "\
apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: https://10.0.0.7:6443
    certificate-authority-data: Q0E=
users:
- name: admin@lab
  user:
    client-certificate-data: SERIAL
    client-key-data: S0VZ
contexts:
- name: admin@lab
  context:
    cluster: lab
    namespace: default
    user: admin@lab
current-context: admin@lab
";

#[derive(Clone, Default)]
struct DayTwo {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Resolved 300 ms after a Reset: the server stops then.
    down: Arc<Notify>,
    /// Set: the reset fails with this error, as its stop event says, and the node stays up.
    reset_fails: Option<&'static str>,
    /// What EtcdSnapshot streams, in 1000-byte chunks.
    snapshot: Arc<Mutex<Vec<u8>>>,
}

/// A snapshot as etcd streams it: a (tiny) bbolt database, then its SHA-256.
fn etcd_snapshot_bytes() -> Vec<u8> {
    let mut db: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    db[16..20].copy_from_slice(&0xED0C_DAEDu32.to_le_bytes());
    let sum = ring::digest::digest(&ring::digest::SHA256, &db);
    db.extend_from_slice(sum.as_ref());
    db
}

fn data(bytes: &[u8]) -> Result<Data, Status> {
    Ok(Data {
        metadata: None,
        bytes: bytes.to_vec(),
    })
}

fn file(relative: &str, mode: u32, size: i64, link: &str) -> FileInfo {
    FileInfo {
        metadata: None,
        name: format!("/etc/{relative}").replace("/.", ""),
        size,
        mode,
        // 2020-09-13 12:26:40 UTC: older than six months, so LASTMOD shows the year.
        modified: 1_600_000_000,
        is_dir: mode & 0o170_000 == 0o040_000,
        error: String::new(),
        link: link.into(),
        relative_name: relative.into(),
        uid: 0,
        gid: 0,
        xattrs: vec![],
    }
}

#[tonic::async_trait]
impl MachineService for DayTwo {
    async fn version(&self, request: Request<()>) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            messages: vec![Version {
                metadata: echoed_node(&request),
                version: Some(VersionInfo {
                    tag: "v-test".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
        }))
    }

    async fn logs(
        &self,
        request: Request<LogsRequest>,
    ) -> Result<Response<BoxStream<Data>>, Status> {
        let request = request.into_inner();
        self.seen.lock().unwrap().push(Seen::Logs(request.clone()));
        if request.id != "machined" {
            return Err(Status::not_found(format!(
                "no logs for service {:?}: this node keeps logs for \"machined\" only",
                request.id
            )));
        }
        let head = futures_util::stream::iter([
            data(b"line one\nline t"),
            data(b"wo\nlast line without newline"),
        ]);
        if !request.follow {
            return Ok(Response::new(Box::pin(head)));
        }
        // Following: the head ends in a newline, then nothing more comes until the client leaves.
        let head = futures_util::stream::iter([data(b"line one\n")]);
        let stream = futures_util::StreamExt::chain(head, futures_util::stream::pending());
        Ok(Response::new(Box::pin(stream)))
    }

    async fn etcd_member_list(
        &self,
        request: Request<EtcdMemberListRequest>,
    ) -> Result<Response<EtcdMemberListResponse>, Status> {
        Ok(Response::new(EtcdMemberListResponse {
            messages: vec![EtcdMembers {
                metadata: echoed_node(&request),
                legacy_members: vec![],
                members: vec![EtcdMember {
                    id: 0x0123_4567_89ab_cdef,
                    hostname: "cp-1".into(),
                    peer_urls: vec!["https://10.0.0.7:2380".into()],
                    client_urls: vec!["https://10.0.0.7:2379".into()],
                    is_learner: false,
                }],
            }],
        }))
    }

    async fn etcd_status(
        &self,
        request: Request<()>,
    ) -> Result<Response<EtcdStatusResponse>, Status> {
        Ok(Response::new(EtcdStatusResponse {
            messages: vec![EtcdStatus {
                metadata: echoed_node(&request),
                member_status: Some(EtcdMemberStatus {
                    member_id: 0x0123_4567_89ab_cdef,
                    leader: 0x0123_4567_89ab_cdef,
                    db_size: 2_000_000,
                    db_size_in_use: 500_000,
                    raft_index: 1234,
                    raft_term: 3,
                    raft_applied_index: 1234,
                    errors: vec!["NOSPACE".into()],
                    ..Default::default()
                }),
            }],
        }))
    }

    async fn meta_write(
        &self,
        request: Request<MetaWriteRequest>,
    ) -> Result<Response<MetaWriteResponse>, Status> {
        let request = request.into_inner();
        self.seen
            .lock()
            .unwrap()
            .push(Seen::MetaWrite(request.key, request.value));
        Ok(Response::new(MetaWriteResponse {
            messages: vec![MetaWrite { metadata: None }],
        }))
    }

    async fn meta_delete(
        &self,
        request: Request<MetaDeleteRequest>,
    ) -> Result<Response<MetaDeleteResponse>, Status> {
        let key = request.into_inner().key;
        self.seen.lock().unwrap().push(Seen::MetaDelete(key));
        Err(Status::not_found(format!("META key {key:#04x} is not set")))
    }

    async fn etcd_leave_cluster(
        &self,
        _: Request<EtcdLeaveClusterRequest>,
    ) -> Result<Response<EtcdLeaveClusterResponse>, Status> {
        self.seen.lock().unwrap().push(Seen::LeaveEtcd);
        Err(Status::failed_precondition(
            "etcd member \"cp-1\" (0123456789abcdef) is the only member of its cluster",
        ))
    }

    async fn etcd_forfeit_leadership(
        &self,
        _: Request<EtcdForfeitLeadershipRequest>,
    ) -> Result<Response<EtcdForfeitLeadershipResponse>, Status> {
        Ok(Response::new(EtcdForfeitLeadershipResponse {
            messages: vec![EtcdForfeitLeadership {
                metadata: None,
                member: "cp-2".into(),
            }],
        }))
    }

    async fn etcd_remove_member_by_id(
        &self,
        request: Request<EtcdRemoveMemberByIdRequest>,
    ) -> Result<Response<EtcdRemoveMemberByIdResponse>, Status> {
        let id = request.into_inner().member_id;
        self.seen.lock().unwrap().push(Seen::RemoveMember(id));
        if id != 0x0123_4567_89ab_cdef {
            return Err(Status::not_found("etcdserver: member not found"));
        }
        Ok(Response::new(EtcdRemoveMemberByIdResponse {
            messages: vec![EtcdRemoveMemberById { metadata: None }],
        }))
    }

    async fn copy(
        &self,
        request: Request<CopyRequest>,
    ) -> Result<Response<BoxStream<Data>>, Status> {
        if request.into_inner().root_path != "/etc" {
            return Err(Status::permission_denied(
                "path \"/system/state\" resolves into /system/state, which holds secrets",
            ));
        }
        let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o755);
        dir.set_size(0);
        tar.append_data(&mut dir, "etc", std::io::empty()).unwrap();
        let mut file = tar::Header::new_gnu();
        file.set_mode(0o644);
        file.set_size(20);
        tar.append_data(&mut file, "etc/hosts", &b"127.0.0.1 localhost\n"[..])
            .unwrap();
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        tar.append_link(&mut link, "etc/localtime", "/usr/share/zoneinfo/UTC")
            .unwrap();
        let bytes = tar.into_inner().unwrap().finish().unwrap();
        // Small chunks, so the archive spans many messages.
        let chunks: Vec<_> = bytes.chunks(7).map(data).collect();
        Ok(Response::new(Box::pin(futures_util::stream::iter(chunks))))
    }

    async fn kubeconfig(&self, _: Request<()>) -> Result<Response<BoxStream<Data>>, Status> {
        let serial = {
            let mut seen = self.seen.lock().unwrap();
            seen.push(Seen::Kubeconfig);
            seen.iter().filter(|s| **s == Seen::Kubeconfig).count()
        };
        let yaml = KUBECONFIG.replace("SERIAL", &serial.to_string());
        let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
        let mut file = tar::Header::new_gnu();
        file.set_mode(0o600);
        file.set_size(yaml.len() as u64);
        tar.append_data(&mut file, "kubeconfig", yaml.as_bytes())
            .unwrap();
        let bytes = tar.into_inner().unwrap().finish().unwrap();
        Ok(Response::new(Box::pin(futures_util::stream::iter([data(
            &bytes,
        )]))))
    }

    async fn generate_client_configuration(
        &self,
        request: Request<GenerateClientConfigurationRequest>,
    ) -> Result<Response<GenerateClientConfigurationResponse>, Status> {
        let req = request.into_inner();
        let ttl = Duration::try_from(req.crt_ttl.unwrap()).unwrap();
        self.seen
            .lock()
            .unwrap()
            .push(Seen::ClientConfig(req.roles.clone(), ttl));
        let roles: Vec<Role> = req.roles.iter().filter_map(|r| Role::parse(r)).collect();
        let now = SystemTime::now();
        let ca = pki::new_os_ca(now).unwrap();
        let crt = pki::issue_client_cert(&ca, &roles, ttl, now).unwrap();
        let context = Context::new(Vec::new(), &ca.cert_pem, &crt.cert_pem, &crt.key_pem);
        let talosconfig = Talosconfig::with_context("lab", context).to_yaml().unwrap();
        Ok(Response::new(GenerateClientConfigurationResponse {
            messages: vec![GenerateClientConfiguration {
                metadata: None,
                ca: ca.cert_pem.into_bytes(),
                crt: crt.cert_pem.into_bytes(),
                key: crt.key_pem.into_bytes(),
                talosconfig: talosconfig.into_bytes(),
            }],
        }))
    }

    async fn etcd_snapshot(
        &self,
        _: Request<EtcdSnapshotRequest>,
    ) -> Result<Response<BoxStream<Data>>, Status> {
        let bytes = self.snapshot.lock().unwrap().clone();
        let chunks: Vec<_> = bytes.chunks(1000).map(data).collect();
        Ok(Response::new(Box::pin(futures_util::stream::iter(chunks))))
    }

    async fn read(
        &self,
        request: Request<ReadRequest>,
    ) -> Result<Response<BoxStream<Data>>, Status> {
        let path = request.into_inner().path;
        match path.as_str() {
            "/etc/hostname" => Ok(Response::new(Box::pin(futures_util::stream::iter([
                data(b"node-"),
                data(b"1\n\x00\xff"),
            ])))),
            "/system/state/config.yaml" => Err(Status::permission_denied(
                "path \"/system/state/config.yaml\" resolves into /system/state, which holds secrets",
            )),
            _ => Err(Status::not_found(format!("path {path:?} does not exist"))),
        }
    }

    async fn list(
        &self,
        request: Request<ListRequest>,
    ) -> Result<Response<BoxStream<FileInfo>>, Status> {
        let node = echoed_node(&request);
        let request = request.into_inner();
        self.seen.lock().unwrap().push(Seen::List(request.clone()));
        let mut entries = match request.root.as_str() {
            "/etc" => vec![
                file(".", 0o040_755, 4096, ""),
                file("hosts", 0o100_644, 1234, ""),
                file("mtab", 0o120_777, 12, "/proc/mounts"),
            ],
            "/broken" => vec![FileInfo {
                name: "/broken/secret".into(),
                error: "permission denied".into(),
                ..FileInfo::default()
            }],
            root => return Err(Status::not_found(format!("path {root:?} does not exist"))),
        };
        for entry in &mut entries {
            entry.metadata.clone_from(&node);
        }
        Ok(Response::new(Box::pin(futures_util::stream::iter(
            entries.into_iter().map(Ok),
        ))))
    }

    async fn processes(&self, request: Request<()>) -> Result<Response<ProcessesResponse>, Status> {
        let process =
            |pid: i32, rss: u64, cpu: f64, command: &str, exe: &str, args: &str| ProcessInfo {
                pid,
                ppid: 1,
                state: "S".into(),
                threads: 1,
                cpu_time: cpu,
                virtual_memory: 12_345_678,
                resident_memory: rss,
                command: command.into(),
                executable: exe.into(),
                args: args.into(),
                label: String::new(),
            };
        Ok(Response::new(ProcessesResponse {
            messages: vec![Process {
                metadata: echoed_node(&request),
                processes: vec![
                    process(1, 4_000_000, 12.5, "init", "/init", "/init"),
                    process(2, 0, 0.0, "kthreadd", "", ""),
                    process(77, 9_500_000, 1.0, "sh", "/bin/sh", "sh -c true"),
                ],
            }],
        }))
    }

    async fn mounts(&self, request: Request<()>) -> Result<Response<MountsResponse>, Status> {
        let mount = |filesystem: &str, size: u64, available: u64, mounted_on: &str| MountStat {
            filesystem: filesystem.into(),
            size,
            available,
            mounted_on: mounted_on.into(),
        };
        Ok(Response::new(MountsResponse {
            messages: vec![Mounts {
                metadata: echoed_node(&request),
                stats: vec![
                    mount("proc", 0, 0, "/proc"),
                    mount("/dev/vda4", 104_857_600, 94_371_840, "/system/state"),
                    mount("tmpfs", 2_000_000_000, 1_500_000_000, "/run"),
                ],
            }],
        }))
    }

    async fn events(
        &self,
        request: Request<EventsRequest>,
    ) -> Result<Response<BoxStream<Event>>, Status> {
        let request = request.into_inner();
        let Some(error) = self.reset_fails else {
            return Err(Status::unimplemented("no events"));
        };
        assert_eq!(
            (request.tail_events, &*request.with_actor_id),
            (-1, "actor-2")
        );
        let event = |action: sequence_event::Action, error: Option<&str>| {
            let payload = SequenceEvent {
                sequence: "reset".into(),
                action: action as i32,
                error: error.map(|message| talos_proto::common::Error {
                    message: message.into(),
                    ..Default::default()
                }),
            };
            Ok(Event {
                data: Some(talos_proto::prost_types::Any {
                    type_url: "talos/runtime/machine.SequenceEvent".into(),
                    value: prost::Message::encode_to_vec(&payload),
                }),
                actor_id: "actor-2".into(),
                ..Default::default()
            })
        };
        let events = [
            event(sequence_event::Action::Start, None),
            event(sequence_event::Action::Stop, Some(error)),
        ];
        let stream = futures_util::StreamExt::chain(
            futures_util::stream::iter(events),
            futures_util::stream::pending(),
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn reset(
        &self,
        request: Request<ResetRequest>,
    ) -> Result<Response<ResetResponse>, Status> {
        let metadata = echoed_node(&request);
        self.seen
            .lock()
            .unwrap()
            .push(Seen::Reset(request.into_inner()));
        let down = self.down.clone();
        if self.reset_fails.is_none() {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                down.notify_one();
            });
        }
        Ok(Response::new(ResetResponse {
            messages: vec![Reset {
                metadata,
                actor_id: "actor-2".into(),
            }],
        }))
    }
}

#[derive(Clone)]
struct Clock;

fn time_reply(request: &Request<impl Sized>, server: &str) -> Response<TimeResponse> {
    Response::new(TimeResponse {
        messages: vec![Time {
            metadata: echoed_node(request),
            server: server.into(),
            localtime: Some(Timestamp {
                seconds: 1_715_000_000,
                nanos: 250_000_000,
            }),
            remotetime: Some(Timestamp {
                seconds: 1_715_000_000,
                nanos: 0,
            }),
        }],
    })
}

#[tonic::async_trait]
impl TimeService for Clock {
    async fn time(&self, request: Request<()>) -> Result<Response<TimeResponse>, Status> {
        Ok(time_reply(&request, "time.cloudflare.com"))
    }

    async fn time_check(
        &self,
        request: Request<TimeRequest>,
    ) -> Result<Response<TimeResponse>, Status> {
        let server = request.get_ref().server.clone();
        Ok(time_reply(&request, &server))
    }
}

/// Starts a [`DayTwo`] node with the time service; it stays up.
async fn start() -> (String, DayTwo) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (acceptor, yaml) = node_tls(port);
    let node = DayTwo::default();
    let routes = Routes::new(MachineServiceServer::new(node.clone()))
        .add_service(TimeServiceServer::new(Clock));
    serve_routes(listener, acceptor, routes, std::future::pending());
    (yaml, node)
}

/// Runs `talosctl --talosconfig CONFIG -n 10.0.0.7 ARGS...`.
fn on_node(config: &str, args: &[&str]) -> impl Future<Output = std::process::Output> + use<> {
    let mut all = vec!["--talosconfig", config, "-n", "10.0.0.7"];
    all.extend_from_slice(args);
    let all: Vec<String> = all.into_iter().map(str::to_owned).collect();
    async move {
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        talosctl(&args, &[]).await
    }
}

fn seen(node: &DayTwo) -> Vec<Seen> {
    std::mem::take(&mut *node.seen.lock().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_read_and_list() {
    let (yaml, node) = start().await;
    let (_dir, path) = write_talosconfig(&yaml);
    let config = path.to_str().unwrap();
    let run = |args: &[&str]| on_node(config, args);

    // logs: every line prefixed, the unterminated last line printed too
    let out = run(&["logs", "machined", "--tail", "5"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "10.0.0.7: line one\n10.0.0.7: line two\n10.0.0.7: last line without newline\n"
    );
    assert_eq!(
        seen(&node),
        [Seen::Logs(LogsRequest {
            namespace: "system".into(),
            id: "machined".into(),
            driver: 0,
            follow: false,
            tail_lines: 5,
        })]
    );

    let out = run(&["logs", "kubelet"]).await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "error on node 10.0.0.7: Logs: rpc error: code = NotFound desc = no logs for service \
             \"kubelet\": this node keeps logs for \"machined\" only"
        ),
        "{stderr}"
    );
    let _ = seen(&node);

    let out = run(&["logs", "machined", "-k"]).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).starts_with("error: logs -k/--kubernetes is not supported"),
        "{}",
        text(&out.stderr)
    );
    assert!(seen(&node).is_empty());

    // read: raw bytes, and the node's refusal verbatim
    let out = run(&["read", "/etc/hostname"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout, b"node-1\n\x00\xff");
    let out = run(&["cat", "/system/state/config.yaml"]).await;
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr),
        "error: error reading file: Read: rpc error: code = PermissionDenied desc = path \
         \"/system/state/config.yaml\" resolves into /system/state, which holds secrets\n"
    );
    let out = talosctl(
        &[
            "--talosconfig",
            config,
            "-n",
            "a,b",
            "read",
            "/etc/hostname",
        ],
        &[],
    )
    .await;
    assert_eq!(
        text(&out.stderr),
        "error: command \"read\" requires exactly one node (got 2)\n"
    );

    // list: names for one node, the long table with -l
    let out = run(&["ls", "/etc"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), ".\nhosts\nmtab\n");
    let out = run(&["list", "/etc", "-l"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "NODE       MODE         UID   GID   SIZE(B)   LASTMOD             LABEL   NAME\n\
         10.0.0.7   drwxr-xr-x   0     0     4096      Sep 13 2020 12:26           .\n\
         10.0.0.7   -rw-r--r--   0     0     1234      Sep 13 2020 12:26           hosts\n\
         10.0.0.7   Lrwxrwxrwx   0     0     12        Sep 13 2020 12:26           mtab -> /proc/mounts\n"
    );
    let out = run(&["list", "/etc", "-d", "2", "-t", "f,l", "-o", "json"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[1]["path"], "/etc/hosts");
    assert_eq!(json[2]["link"], "/proc/mounts");
    assert_eq!(
        seen(&node),
        [
            Seen::List(ListRequest {
                root: "/etc".into(),
                recurse: false,
                recursion_depth: 1,
                types: vec![],
                report_xattrs: false,
            }),
            Seen::List(ListRequest {
                root: "/etc".into(),
                recurse: false,
                recursion_depth: 1,
                types: vec![],
                report_xattrs: true,
            }),
            Seen::List(ListRequest {
                root: "/etc".into(),
                recurse: true,
                recursion_depth: 2,
                types: vec![0, 2],
                report_xattrs: false,
            }),
        ]
    );
    let out = run(&["ls", "/broken"]).await;
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr),
        "10.0.0.7: error reading file /broken/secret: permission denied\n\
         error: 1 entries could not be read\n"
    );
    let out = run(&["ls", "-r", "-d", "3"]).await;
    assert_eq!(
        text(&out.stderr),
        "error: only one of flags --recurse and --depth can be specified at the same time\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_members_status_removal_leave_and_a_checked_snapshot() {
    let (yaml, node) = start().await;
    let (dir, path) = write_talosconfig(&yaml);
    let config = path.to_str().unwrap();
    let saved = dir.path().join("db.snapshot");
    let saved_arg = saved.to_str().unwrap();
    let run = |args: &[&str]| on_node(config, args);

    let out = run(&["etcd", "members"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "NODE       ID                 HOSTNAME   PEER URLS               CLIENT URLS             LEARNER\n\
         10.0.0.7   0123456789abcdef   cp-1       https://10.0.0.7:2380   https://10.0.0.7:2379   false\n"
    );

    let out = run(&["etcd", "status"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "NODE       MEMBER             DB SIZE   IN USE            LEADER             RAFT INDEX   RAFT TERM   RAFT APPLIED INDEX   LEARNER   ERRORS\n\
         10.0.0.7   0123456789abcdef   2.0 MB    500 kB (25.00%)   0123456789abcdef   1234         3           1234                 false     NOSPACE\n"
    );

    let out = run(&["etcd", "remove-member", "0x123456789abcdef"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "10.0.0.7: removed etcd member 0123456789abcdef\n"
    );
    let out = run(&["etcd", "remove-member", "ffff"]).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("error removing etcd member 000000000000ffff"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["etcd", "forfeit-leadership"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "10.0.0.7: etcd leadership moved to cp-2\n"
    );
    let out = run(&["etcd", "leave"]).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("error on node 10.0.0.7: EtcdLeaveCluster: rpc error: code = FailedPrecondition desc = etcd member \"cp-1\""),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        seen(&node),
        [
            Seen::RemoveMember(0x0123_4567_89ab_cdef),
            Seen::RemoveMember(0xffff),
            Seen::LeaveEtcd
        ]
    );

    let good = etcd_snapshot_bytes();
    *node.snapshot.lock().unwrap() = good.clone();
    let out = run(&["etcd", "snapshot", saved_arg]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!(
            "etcd snapshot saved to {saved_arg:?} (4128 bytes: a 4.00 KiB database and its SHA-256, verified)\n"
        )
    );
    assert_eq!(std::fs::read(&saved).unwrap(), good);

    // A damaged stream leaves the saved snapshot as it was, and no partial file.
    let mut damaged = good.clone();
    damaged[2000] ^= 0xff;
    *node.snapshot.lock().unwrap() = damaged;
    let out = run(&["etcd", "snapshot", saved_arg]).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(
            "the snapshot failed its check: the snapshot's SHA-256 does not match its database"
        ),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read(&saved).unwrap(), good);
    assert!(!dir.path().join("db.snapshot.part").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_write_and_delete() {
    let (yaml, node) = start().await;
    let (_dir, path) = write_talosconfig(&yaml);
    let config = path.to_str().unwrap();
    let out = on_node(config, &["meta", "write", "0xb", "rack 7"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "10.0.0.7: META key 0x0b written\n");
    let out = on_node(config, &["meta", "delete", "11"]).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("code = NotFound desc = META key 0x0b is not set"),
        "{}",
        text(&out.stderr)
    );
    let out = on_node(config, &["meta", "write", "0x100", "x"]).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("\"0x100\" is not a META key from 0x00 to 0xff"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        seen(&node),
        [
            Seen::MetaWrite(0x0b, b"rack 7".to_vec()),
            Seen::MetaDelete(0x0b)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_mounts_and_time() {
    let (yaml, _node) = start().await;
    let (_dir, path) = write_talosconfig(&yaml);
    let config = path.to_str().unwrap();

    let out = talosctl(&["--talosconfig", config, "-n", "10.0.0.7", "ps"], &[]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "NODE       PID   STATE   THREADS   CPU-TIME   VIRTMEM   RESMEM   LABEL   COMMAND\n\
         10.0.0.7   77    S       1         1.00       12 MB     9.5 MB           /bin/sh -c true\n\
         10.0.0.7   1     S       1         12.50      12 MB     4.0 MB           /init\n\
         10.0.0.7   2     S       1         0.00       12 MB     0 B              kthreadd\n"
    );
    let out = talosctl(
        &[
            "--talosconfig",
            config,
            "-n",
            "10.0.0.7",
            "processes",
            "-s",
            "cpu",
        ],
        &[],
    )
    .await;
    let pids: Vec<String> = text(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().nth(1).unwrap().to_owned())
        .collect();
    assert_eq!(pids, ["1", "77", "2"]);

    let out = talosctl(
        &["--talosconfig", config, "-n", "10.0.0.7,10.0.0.8", "mounts"],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "NODE       FILESYSTEM   SIZE(GB)   USED(GB)   AVAILABLE(GB)   PERCENT USED   MOUNTED ON\n\
         10.0.0.7   /dev/vda4    0.10       0.01       0.09            10.00%         /system/state\n\
         10.0.0.7   tmpfs        2.00       0.50       1.50            25.00%         /run\n\
         10.0.0.8   /dev/vda4    0.10       0.01       0.09            10.00%         /system/state\n\
         10.0.0.8   tmpfs        2.00       0.50       1.50            25.00%         /run\n"
    );
    let out = talosctl(
        &[
            "--talosconfig",
            config,
            "-n",
            "10.0.0.7",
            "mount",
            "-o",
            "yaml",
        ],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("used: 10485760\n"),
        "{}",
        text(&out.stdout)
    );

    let out = talosctl(&["--talosconfig", config, "-n", "10.0.0.7", "time"], &[]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "NODE       NTP-SERVER            NODE-TIME                          NTP-SERVER-TIME\n\
         10.0.0.7   time.cloudflare.com   2024-05-06 12:53:20.25 +0000 UTC   2024-05-06 12:53:20 +0000 UTC\n"
    );
    let out = talosctl(
        &[
            "--talosconfig",
            config,
            "-n",
            "10.0.0.7",
            "time",
            "--check",
            "pool.ntp.org",
            "-o",
            "json",
        ],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["server"], "pool.ntp.org");
    assert_eq!(json[0]["offset_ms"], -250);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_ends_cleanly_on_interrupt() {
    let (yaml, node) = start().await;
    let (_dir, path) = write_talosconfig(&yaml);
    let mut command = command(
        &[
            "--talosconfig",
            path.to_str().unwrap(),
            "-n",
            "10.0.0.7",
            "logs",
            "machined",
            "-f",
        ],
        &[],
    );
    let output = tokio::task::spawn_blocking(move || {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        let status = std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let output = child.wait_with_output().unwrap();
        (first, output)
    })
    .await
    .unwrap();
    let (first, out) = output;
    assert_eq!(first, "10.0.0.7: line one\n");
    assert!(
        out.status.success(),
        "{:?} {}",
        out.status,
        text(&out.stderr)
    );
    assert!(matches!(&seen(&node)[..], [Seen::Logs(r)] if r.follow && r.tail_lines == -1));
}

/// A node that acknowledges Reset, goes down 300 ms later and, if `comes_back`, answers again
/// one second after that in maintenance mode on the same port. Returns the talosconfig and node.
async fn start_resetting(comes_back: bool) -> (String, DayTwo) {
    start_node(DayTwo::default(), comes_back).await
}

async fn start_node(node: DayTwo, comes_back: bool) -> (String, DayTwo) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (acceptor, yaml) = node_tls(port);
    let down = node.down.clone();
    let server = serve(listener, acceptor, node.clone(), async move {
        down.notified().await;
    });
    tokio::spawn(async move {
        server.await.unwrap();
        if !comes_back {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        serve(
            listener,
            maintenance_tls(),
            DayTwo::default(),
            std::future::pending(),
        );
    });
    (yaml, node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_sends_the_flags_and_waits_for_maintenance_mode() {
    let (yaml, node) = start_resetting(true).await;
    let (_dir, path) = write_talosconfig(&yaml);
    let out = talosctl(
        &[
            "--talosconfig",
            path.to_str().unwrap(),
            "reset",
            "--graceful=false",
            "--reboot",
            "--system-labels-to-wipe",
            "STATE,EPHEMERAL",
            "--wipe-mode",
            "system-disk",
            "--wait",
            "--timeout",
            "60s",
        ],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "127.0.0.1: reset requested (actor ID actor-2)\n127.0.0.1: back in maintenance mode\n"
    );
    let label = |label: &str| ResetPartitionSpec {
        label: label.into(),
        wipe: true,
    };
    assert_eq!(
        seen(&node),
        [Seen::Reset(ResetRequest {
            graceful: false,
            reboot: true,
            system_partitions_to_wipe: vec![label("STATE"), label("EPHEMERAL")],
            user_disks_to_wipe: vec![],
            mode: 1,
        })]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_wait_reports_a_reset_that_fails_on_the_node() {
    const REFUSED: &str = "task LeaveEtcd failed: this node is the last etcd member";
    let node = DayTwo {
        reset_fails: Some(REFUSED),
        ..Default::default()
    };
    let (yaml, _node) = start_node(node, false).await;
    let (_dir, path) = write_talosconfig(&yaml);
    let out = talosctl(
        &[
            "--talosconfig",
            path.to_str().unwrap(),
            "reset",
            "--wait",
            "--timeout",
            "30s",
        ],
        &[],
    )
    .await;
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stdout),
        "127.0.0.1: reset requested (actor ID actor-2)\n"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "error on node 127.0.0.1: the reset failed, and the node stays up: reset: {REFUSED}"
        )),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_defaults_and_power_off() {
    let (yaml, node) = start_resetting(false).await;
    let (_dir, path) = write_talosconfig(&yaml);
    let out = talosctl(
        &[
            "--talosconfig",
            path.to_str().unwrap(),
            "-n",
            "127.0.0.1",
            "reset",
            "--wait",
            "--timeout",
            "30s",
        ],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "127.0.0.1: reset requested (actor ID actor-2)\n127.0.0.1: powered off\n"
    );
    assert_eq!(
        seen(&node),
        [Seen::Reset(ResetRequest {
            graceful: true,
            reboot: false,
            system_partitions_to_wipe: vec![],
            user_disks_to_wipe: vec![],
            mode: 0,
        })]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_unpacks_or_streams_the_archive() {
    let (yaml, _node) = start().await;
    let (dir, path) = write_talosconfig(&yaml);
    let config = path.to_str().unwrap();
    let dest = dir.path().join("copied");
    let out = on_node(config, &["copy", "/etc", dest.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(dest.join("etc/hosts")).unwrap(),
        "127.0.0.1 localhost\n"
    );
    assert_eq!(
        std::fs::read_link(dest.join("etc/localtime")).unwrap(),
        std::path::Path::new("/usr/share/zoneinfo/UTC")
    );

    let out = on_node(config, &["cp", "/etc", "-"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout[..2], [0x1f, 0x8b], "a gzip stream");

    let refused = dir.path().join("refused");
    let out = on_node(config, &["cp", "/system/state", refused.to_str().unwrap()]).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("error copying")
            && text(&out.stderr).contains("code = PermissionDenied"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeconfig_writes_merges_and_refuses_to_clobber() {
    let (yaml, node) = start().await;
    let (dir, path) = write_talosconfig(&yaml);
    let home = dir.path().join("home");
    let run = |args: &[&str]| {
        let mut all = vec![
            "--talosconfig",
            path.to_str().unwrap(),
            "-n",
            "10.0.0.7",
            "kubeconfig",
        ];
        all.extend_from_slice(args);
        let all: Vec<String> = all.into_iter().map(str::to_owned).collect();
        let home = home.clone();
        async move {
            let args: Vec<&str> = all.iter().map(String::as_str).collect();
            talosctl(&args, &[("HOME", &home)]).await
        }
    };
    // First call: ~/.kube/config is created, private.
    let out = run(&[]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let default = home.join(".kube/config");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&default).unwrap().permissions()
        ) & 0o777,
        0o600
    );
    let first = Kubeconfig::from_yaml(&std::fs::read_to_string(&default).unwrap()).unwrap();
    assert_eq!(first.current_context, "admin@lab");

    // Second call: a new certificate, so the user and its context are added beside the first.
    let out = run(&[]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr)
            .contains("user \"admin@lab\" exists and differs: added as \"admin@lab-1\""),
        "{}",
        text(&out.stderr)
    );
    let merged = Kubeconfig::from_yaml(&std::fs::read_to_string(&default).unwrap()).unwrap();
    assert_eq!(merged.current_context, "admin@lab-1");
    assert_eq!(merged.context("admin@lab-1"), Some(("lab", "admin@lab-1")));
    assert_eq!(merged.users.len(), 2);

    // --force replaces them instead.
    let out = run(&["--force"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let forced = Kubeconfig::from_yaml(&std::fs::read_to_string(&default).unwrap()).unwrap();
    assert_eq!(forced.users.len(), 2);
    assert_eq!(forced.current_context, "admin@lab");

    // Without merging, an existing file is left alone unless forced.
    let before = std::fs::read(&default).unwrap();
    let out = run(&["--merge=false", default.to_str().unwrap()]).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--force"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read(&default).unwrap(), before);

    // A directory gets a file named kubeconfig; - prints.
    let out = run(&[dir.path().to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(dir.path().join("kubeconfig").is_file());
    let out = run(&["-"]).await;
    assert!(text(&out.stdout).contains("current-context: admin@lab"));
    assert_eq!(seen(&node).len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_new_writes_a_talosconfig_for_the_current_endpoints() {
    let (yaml, node) = start().await;
    let (dir, path) = write_talosconfig(&yaml);
    let config = path.to_str().unwrap();
    let target = dir.path().join("reader-talosconfig");
    let target_arg = target.to_str().unwrap();
    let out = on_node(
        config,
        &[
            "config",
            "new",
            target_arg,
            "--roles",
            "os:reader,os:etcd:backup",
            "--crt-ttl",
            "720h",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("os:reader"),
        "{}",
        text(&out.stdout)
    );
    let written = Talosconfig::from_yaml(&std::fs::read_to_string(&target).unwrap()).unwrap();
    let original = Talosconfig::from_yaml(&yaml).unwrap();
    let (name, context) = written.current(None).unwrap();
    assert_eq!(name, "lab");
    assert_eq!(
        context.endpoints,
        original.current(None).unwrap().1.endpoints
    );
    assert_eq!(
        seen(&node),
        [Seen::ClientConfig(
            vec!["os:reader".into(), "os:etcd:backup".into()],
            Duration::from_secs(720 * 3600)
        )]
    );

    let out = on_node(config, &["config", "new", target_arg]).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("pass --force"),
        "{}",
        text(&out.stderr)
    );
    let out = on_node(
        config,
        &["config", "new", target_arg, "--force", "--crt-ttl", "1y"],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--crt-ttl \"1y\" is not a positive duration"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(seen(&node), []);
}
