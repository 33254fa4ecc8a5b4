//! Runs the talosctl binary against an in-process mTLS server built from machinery's PKI.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{echoed_node, node_tls, serve, talosctl, text};
use talos_proto::machine::machine_service_server::MachineService;
use talos_proto::machine::{
    MemInfo, Memory, MemoryResponse, RebootRequest, RebootResponse, Rollback, RollbackRequest,
    RollbackResponse, Upgrade, UpgradeRequest, UpgradeResponse, Version, VersionInfo,
    VersionResponse,
};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

struct Node;

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
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (acceptor, yaml) = node_tls(port);
    serve(listener, acceptor, Node, std::future::pending());
    (port, yaml)
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

/// A node on `tag` that acknowledges Upgrade, records the request and goes down 300 ms later
/// (`down`), and acknowledges Rollback.
#[derive(Clone)]
struct Upgrading {
    tag: &'static str,
    requests: Arc<Mutex<Vec<UpgradeRequest>>>,
    down: Arc<Notify>,
}

#[tonic::async_trait]
impl MachineService for Upgrading {
    async fn version(&self, request: Request<()>) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            messages: vec![Version {
                metadata: echoed_node(&request),
                version: Some(VersionInfo {
                    tag: self.tag.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
        }))
    }

    async fn upgrade(
        &self,
        request: Request<UpgradeRequest>,
    ) -> Result<Response<UpgradeResponse>, Status> {
        let metadata = echoed_node(&request);
        self.requests.lock().unwrap().push(request.into_inner());
        let down = self.down.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            down.notify_one();
        });
        Ok(Response::new(UpgradeResponse {
            messages: vec![Upgrade {
                metadata,
                ack: "Upgrade request received".into(),
                actor_id: "actor-1".into(),
            }],
        }))
    }

    async fn rollback(
        &self,
        request: Request<RollbackRequest>,
    ) -> Result<Response<RollbackResponse>, Status> {
        Ok(Response::new(RollbackResponse {
            messages: vec![Rollback {
                metadata: echoed_node(&request),
            }],
        }))
    }
}

/// Starts an [`Upgrading`] node on v-old; after an upgrade it is down for 2 s and then, if
/// `comes_back`, serves v-new on the same port. Returns the talosconfig and the requests seen.
async fn start_upgrading(comes_back: bool) -> (String, Arc<Mutex<Vec<UpgradeRequest>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (acceptor, yaml) = node_tls(port);
    let node = Upgrading {
        tag: "v-old",
        requests: Arc::default(),
        down: Arc::new(Notify::new()),
    };
    let requests = node.requests.clone();
    let down = node.down.clone();
    let server = serve(listener, acceptor.clone(), node.clone(), async move {
        down.notified().await;
    });
    tokio::spawn(async move {
        server.await.unwrap();
        if !comes_back {
            return;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let node = Upgrading {
            tag: "v-new",
            ..node
        };
        serve(listener, acceptor, node, std::future::pending());
    });
    (yaml, requests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_waits_for_the_node_to_come_back() {
    let (yaml, requests) = start_upgrading(true).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    std::fs::write(&path, yaml).unwrap();
    let config = path.to_str().unwrap();

    let out = talosctl(
        &["--talosconfig", config, "-n", "10.0.0.7", "rollback"],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "10.0.0.7: rollback requested, rebooting into the previous version\n"
    );
    let out = talosctl(
        &[
            "--talosconfig",
            config,
            "-n",
            "10.0.0.7",
            "rollback",
            "-o",
            "json",
        ],
        &[],
    )
    .await;
    assert_eq!(
        text(&out.stdout),
        "[\n  {\n    \"node\": \"10.0.0.7\"\n  }\n]\n"
    );

    let out = talosctl(
        &[
            "--talosconfig",
            config,
            "-n",
            "10.0.0.7",
            "upgrade",
            "-i",
            "installer:v-new",
            "--force",
            "--preserve",
            "-m",
            "powercycle",
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
        "10.0.0.7: upgrade requested: Upgrade request received (actor ID actor-1)\n\
         10.0.0.7: back on v-new\n"
    );
    assert_eq!(
        *requests.lock().unwrap(),
        [UpgradeRequest {
            image: "installer:v-new".into(),
            preserve: true,
            stage: false,
            force: true,
            reboot_mode: 1,
        }]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_wait_times_out_with_the_last_error() {
    let (yaml, _) = start_upgrading(false).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    std::fs::write(&path, yaml).unwrap();
    let config = path.to_str().unwrap();

    let out = talosctl(
        &[
            "--talosconfig",
            config,
            "-n",
            "10.0.0.7",
            "upgrade",
            "-i",
            "img",
            "--wait",
            "--timeout",
            "3s",
            "-o",
            "json",
        ],
        &[],
    )
    .await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "error on node 10.0.0.7: did not answer again within 3s (--timeout); \
             last error: Connecting to 127.0.0.1:"
        ),
        "{stderr}"
    );
    assert!(
        stderr.ends_with("error: 1 of 1 node(s) failed\n"),
        "{stderr}"
    );
    let stdout = text(&out.stdout);
    assert!(stdout.contains("\"tag_before\": \"v-old\""), "{stdout}");
    assert!(!stdout.contains("tag_after"), "{stdout}");
}
