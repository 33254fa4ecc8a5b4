//! End to end on QEMU (TCG), arm64 and amd64: boot the image `cargo xtask image` built, use the
//! API in maintenance mode, apply a generated config, then mutual TLS with roles, reboot onto
//! the stored config, and shutdown.
//!
//! Inputs come from `$TALOS_RS_OUT/<arch>/` (vmlinuz, initramfs.zst, kernel-release). `cargo
//! xtask test` builds them and sets `TALOS_RS_E2E_REQUIRED=1`, which turns their absence into a
//! failure; a plain `cargo test` without them skips with a message.

mod common;

use common::Node;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use talos_boards::Board;
use talos_client::{Client, ClientError, DataStream, Endpoint, TlsMode};
use talos_hil::BootSource;
use talos_machinery::Arch;
use talos_machinery::config::Config;
use talos_machinery::config::{GenerateInput, Generated, generate};
use talos_machinery::etcd_snapshot::SnapshotCheck;
use talos_machinery::kubeconfig::Kubeconfig;
use talos_machinery::pki::{self, CaSubject, CertAndKey, SubjectAltName};
use talos_machinery::role::Role;
use talos_machinery::secrets::SecretsBundle;
use talos_machinery::talosconfig::Talosconfig;
use talos_oci::{LocalRegistry, RegistryTlsFiles};
use talos_proto::machine::apply_configuration_request::Mode as ApplyMode;
use talos_proto::machine::reboot_request::Mode as RebootMode;

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

struct Artifacts {
    kernel: PathBuf,
    initramfs: PathBuf,
    release: String,
}

fn artifacts(arch: Arch) -> Option<Artifacts> {
    let Some(out) = std::env::var_os("TALOS_RS_OUT") else {
        assert!(
            std::env::var_os("TALOS_RS_E2E_REQUIRED").is_none(),
            "TALOS_RS_OUT is not set"
        );
        eprintln!(
            "skipped: TALOS_RS_OUT is not set; run `cargo xtask test` to build images and run the QEMU tests"
        );
        return None;
    };
    let dir = Path::new(&out).join(arch.as_str());
    let found = Artifacts {
        kernel: dir.join("vmlinuz"),
        initramfs: dir.join("initramfs.zst"),
        release: std::fs::read_to_string(dir.join("kernel-release"))
            .unwrap_or_default()
            .trim()
            .to_owned(),
    };
    if found.kernel.exists() && found.initramfs.exists() && !found.release.is_empty() {
        return Some(found);
    }
    assert!(
        std::env::var_os("TALOS_RS_E2E_REQUIRED").is_none(),
        "no {arch} image in {}",
        dir.display()
    );
    eprintln!("skipped: no {arch} image in {}", dir.display());
    None
}

fn board(arch: Arch) -> Board {
    let name = match arch {
        Arch::Arm64 => "qemu-virt-arm64",
        Arch::Amd64 => "qemu-amd64",
    };
    talos_boards::find(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../boards"),
        name,
    )
    .expect("the QEMU board file loads")
}

fn state_disk(dir: &Path) -> PathBuf {
    let path = dir.join("state.img");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let status = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "STATE"])
        .arg(&path)
        .status()
        .expect("mkfs.ext4 runs");
    assert!(status.success());
    path
}

fn boot(arch: Arch, art: &Artifacts, dir: &Path, append: Vec<String>) -> Node {
    Node::launch(
        board(arch),
        BootSource::Kernel {
            kernel: art.kernel.clone(),
            initrd: art.initramfs.clone(),
            append_extra: append,
        },
        state_disk(dir),
        dir.join("console.log"),
    )
}

async fn connect(node: &Node, tls: TlsMode) -> Result<Client, ClientError> {
    let endpoint = Endpoint::new("127.0.0.1", node.qemu.api_port());
    Client::connect_with_retry(&endpoint, tls, Instant::now() + BOOT_TIMEOUT).await
}

/// Mutual TLS once the node has switched to its config: until then it presents its
/// self-signed maintenance certificate, which the client rightly refuses.
async fn connect_when_configured(node: &Node, tls: TlsMode) -> Client {
    let deadline = Instant::now() + BOOT_TIMEOUT;
    loop {
        match connect(node, tls.clone()).await {
            Ok(client) => return client,
            Err(e) if Instant::now() < deadline => {
                eprintln!("not configured yet: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => panic!("the node did not serve mutual TLS within {BOOT_TIMEOUT:?}: {e}"),
        }
    }
}

/// New secrets and the configs `gen config NAME https://10.0.2.15:6443` makes from them, with
/// the OS CA that signs client certificates.
fn cluster(name: &str) -> (CertAndKey, Generated) {
    let secrets = SecretsBundle::generate(SystemTime::now()).unwrap();
    let os_ca = secrets.os_ca();
    let generated = generate(&GenerateInput::new(
        name,
        "https://10.0.2.15:6443",
        secrets,
        SystemTime::now(),
    ))
    .unwrap();
    (os_ca, generated)
}

fn client_cert(ca: &CertAndKey, role: Role) -> CertAndKey {
    pki::issue_client_cert(ca, &[role], pki::CLIENT_CERT_VALIDITY, SystemTime::now()).unwrap()
}

/// Mutual TLS with the current context of a talosconfig.
fn talosconfig_tls(talosconfig: &talos_machinery::talosconfig::Talosconfig) -> TlsMode {
    let (_, ctx) = talosconfig.current(None).unwrap();
    TlsMode::Mutual {
        ca_pem: ctx.ca_pem().unwrap(),
        cert_pem: ctx.crt_pem().unwrap(),
        key_pem: ctx.key_pem().unwrap(),
    }
}

fn mutual(ca: &CertAndKey, client: &CertAndKey) -> TlsMode {
    TlsMode::Mutual {
        ca_pem: ca.cert_pem.clone(),
        cert_pem: client.cert_pem.clone(),
        key_pem: client.key_pem.clone(),
    }
}

fn code(result: Result<impl std::fmt::Debug, ClientError>) -> Option<tonic::Code> {
    match result {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.code(),
    }
}

/// /usr is the initramfs's squashfs on a loop device, read-only, with the Kubernetes stack.
async fn assert_usr_is_the_squashfs(admin: &Client) {
    let mounts = admin.mounts().await.expect("Mounts").stats;
    let usr = mounts
        .iter()
        .find(|m| m.mounted_on == "/usr")
        .unwrap_or_else(|| panic!("nothing is mounted at /usr: {mounts:?}"));
    assert!(usr.filesystem.starts_with("/dev/loop"), "{usr:?}");
    assert_eq!(usr.available, 0, "a squashfs has no free space: {usr:?}");
    let proc_mounts = read_file(admin, "/proc/mounts").await;
    let fields: Vec<&str> = proc_mounts
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.get(1) == Some(&"/usr"))
        .expect("/usr in /proc/mounts");
    assert_eq!(fields[2], "squashfs", "{fields:?}");
    let options: Vec<&str> = fields[3].split(',').collect();
    for option in ["ro", "nosuid", "nodev"] {
        assert!(options.contains(&option), "{option} missing: {fields:?}");
    }
    let mut found = Vec::new();
    for dir in ["/usr/bin", "/usr/sbin"] {
        let mut list = admin
            .list(talos_proto::machine::ListRequest {
                root: dir.into(),
                ..Default::default()
            })
            .await
            .expect("List");
        while let Some(entry) = list.next_entry().await.expect("List stream") {
            assert!(entry.error.is_empty(), "{entry:?}");
            if !entry.is_dir {
                assert!(entry.size > 100_000, "{entry:?}");
                found.push(entry.name);
            }
        }
    }
    found.sort();
    assert_eq!(
        found,
        [
            "/usr/bin/containerd",
            "/usr/bin/containerd-shim-runc-v2",
            "/usr/bin/etcd",
            "/usr/bin/runc",
            "/usr/sbin/mkfs.ext4",
        ]
    );
}

async fn walking_skeleton(arch: Arch, append: Vec<String>) {
    let Some(art) = artifacts(arch) else { return };
    let dir = tempfile::tempdir().unwrap();
    let node = boot(arch, &art, dir.path(), append);

    // Maintenance mode: anyone gets the reader role over TLS without a client certificate.
    let insecure = connect(&node, TlsMode::Insecure)
        .await
        .expect("the maintenance API answers");
    eprintln!(
        "{arch}: maintenance API answered {:.1?} after QEMU start",
        node.qemu.launched_at().elapsed()
    );
    let version = insecure.version().await.unwrap().version.unwrap();
    assert_eq!(version.arch, arch.as_str());
    assert_eq!(
        version.os,
        format!("Linux {}", art.release),
        "the node reports the guest's kernel"
    );
    assert_eq!(
        code(insecure.reboot(RebootMode::Default).await),
        Some(tonic::Code::PermissionDenied),
        "readers may not reboot"
    );

    // A malformed config is refused and changes nothing.
    let bad = insecure
        .apply_configuration(
            b"version: v1alpha1\nmachine: [unclosed\n".to_vec(),
            ApplyMode::Auto,
            false,
        )
        .await;
    assert_eq!(code(bad), Some(tonic::Code::InvalidArgument));
    insecure
        .version()
        .await
        .expect("still in maintenance mode after a bad config");

    // A generated config switches the node to mutual TLS.
    let (os_ca, generated) = cluster("e2e");
    let applied = insecure
        .apply_configuration(generated.controlplane.into_bytes(), ApplyMode::Auto, false)
        .await
        .expect("apply-config --insecure");
    assert_eq!(applied.mode, ApplyMode::NoReboot as i32);

    let admin_tls = talosconfig_tls(&generated.talosconfig);
    let admin = connect(&node, admin_tls.clone())
        .await
        .expect("mutual TLS with the admin certificate");
    let version = admin.version().await.expect("Version over mutual TLS");
    assert_eq!(version.version.unwrap().arch, arch.as_str());
    let services: Vec<String> = admin
        .service_list()
        .await
        .unwrap()
        .services
        .into_iter()
        .map(|s| s.id)
        .collect();
    for id in ["apid", "machined", "network"] {
        assert!(
            services.contains(&id.to_owned()),
            "{id} missing from {services:?}"
        );
    }
    assert!(admin.memory().await.unwrap().meminfo.unwrap().memtotal > 100_000);
    assert_usr_is_the_squashfs(&admin).await;
    let mut dmesg = admin.dmesg(false, false).await.unwrap();
    let mut kernel_log = Vec::new();
    while let Some(chunk) = dmesg.next_chunk().await.unwrap() {
        kernel_log.extend(chunk);
    }
    assert!(
        String::from_utf8_lossy(&kernel_log).contains("Linux version"),
        "dmesg has the kernel banner"
    );

    // The old anonymous connection and new anonymous clients are refused now.
    assert!(
        insecure.version().await.is_err(),
        "a maintenance-mode connection loses access once configured"
    );
    // Without a client certificate the TLS handshake itself is refused.
    let anonymous = Client::connect(
        &Endpoint::new("127.0.0.1", node.qemu.api_port()),
        TlsMode::Insecure,
    )
    .await;
    let refused = match anonymous {
        Err(_) => true,
        Ok(c) => c.version().await.is_err(),
    };
    assert!(
        refused,
        "a client without a certificate must be refused once configured"
    );

    // Roles come from the certificate's Organization.
    let reader_cert = client_cert(&os_ca, Role::Reader);
    let reader = connect(&node, mutual(&os_ca, &reader_cert))
        .await
        .expect("a reader connects");
    reader.version().await.expect("readers may read");
    assert_eq!(
        code(reader.reboot(RebootMode::Default).await),
        Some(tonic::Code::PermissionDenied)
    );

    // A certificate from another CA is refused.
    let other_ca = pki::new_os_ca(SystemTime::now()).unwrap();
    let stranger_cert = client_cert(&other_ca, Role::Admin);
    let stranger = Client::connect(
        &Endpoint::new("127.0.0.1", node.qemu.api_port()),
        mutual(&os_ca, &stranger_cert),
    )
    .await;
    let refused = match stranger {
        Err(_) => true,
        Ok(c) => c.version().await.is_err(),
    };
    assert!(
        refused,
        "a client certificate from another CA must be refused"
    );

    // The config survives a reboot: the node comes back configured from STATE.
    admin
        .reboot(RebootMode::Default)
        .await
        .expect("admin may reboot");
    node.qemu
        .wait_for_line("configured source=\"the STATE partition\"", BOOT_TIMEOUT)
        .expect("the node comes back and adopts the stored config");
    let after = connect(&node, admin_tls)
        .await
        .expect("mutual TLS after reboot, without re-applying");
    after.version().await.unwrap();

    // Shutdown ends QEMU.
    after.shutdown(false).await.expect("admin may shut down");
    let status = node
        .qemu
        .wait_exit(Duration::from_secs(60))
        .expect("QEMU exits after Shutdown");
    eprintln!("{arch}: QEMU exited with {status}");
}

#[tokio::test]
async fn arm64_walking_skeleton_over_dhcp() {
    walking_skeleton(Arch::Arm64, Vec::new()).await;
}

#[tokio::test]
async fn amd64_walking_skeleton_with_static_ip() {
    walking_skeleton(
        Arch::Amd64,
        vec!["ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off".into()],
    )
    .await;
}

/// `talos.config=` on the kernel command line: fetched over HTTP from the host (10.0.2.2 under
/// QEMU user networking), retried while the server fails, with maintenance mode up meanwhile.
#[tokio::test]
async fn arm64_config_from_kernel_command_line_url() {
    let Some(art) = artifacts(Arch::Arm64) else {
        return;
    };
    let (_, generated) = cluster("url");
    let config = generated.controlplane.clone();
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = requests.clone();
    std::thread::spawn(move || {
        for stream in server.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 2048];
            let _ = stream.read(&mut buf);
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let reply = if n < 2 {
                "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_owned()
            } else {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{config}",
                    config.len()
                )
            };
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let node = boot(
        Arch::Arm64,
        &art,
        dir.path(),
        vec![format!("talos.config=http://10.0.2.2:{port}/node.yaml")],
    );
    node.qemu
        .wait_for_line("503", BOOT_TIMEOUT)
        .expect("the first failed fetch is logged");
    let admin_tls = talosconfig_tls(&generated.talosconfig);
    let admin = connect_when_configured(&node, admin_tls).await;
    admin.version().await.unwrap();
    assert!(
        requests.load(std::sync::atomic::Ordering::SeqCst) >= 3,
        "failed fetches were retried"
    );
    node.qemu.power_off_hard().unwrap();
}

/// `talos.config=` with upstream's variables in the query: the node fills in its SMBIOS UUID
/// and serial (QEMU's `-uuid` and `-smbios`), its MAC and its hostname, percent-encoded.
#[tokio::test]
async fn amd64_config_url_variables_come_from_the_node() {
    let Some(art) = artifacts(Arch::Amd64) else {
        return;
    };
    const UUID: &str = "6b7a3f5e-1d2c-4b5a-8e9f-0a1b2c3d4e5f";
    let (_, generated) = cluster("vars");
    let config = generated.controlplane.clone();
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let (requested, requests) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in server.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 2048];
            let n = stream.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
            let _ = requested.send(path);
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{config}",
                config.len()
            );
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let mut board = board(Arch::Amd64);
    board
        .qemu
        .as_mut()
        .expect("[qemu]")
        .extra_args
        .extend(["-uuid", UUID, "-smbios", "type=1,serial=SN/E2E 42"].map(str::to_owned));
    let node = Node::launch(
        board,
        BootSource::Kernel {
            kernel: art.kernel.clone(),
            initrd: art.initramfs.clone(),
            append_extra: vec![format!(
                "talos.config=http://10.0.2.2:{port}/node.yaml?uuid=${{uuid}}&serial=${{serial}}&mac=${{mac}}&host=${{hostname}}&keep=${{other}}"
            )],
        },
        state_disk(dir.path()),
        dir.path().join("console.log"),
    );
    let admin = connect_when_configured(&node, talosconfig_tls(&generated.talosconfig)).await;
    admin.version().await.unwrap();
    let path = requests
        .recv_timeout(Duration::from_secs(5))
        .expect("the node fetched its config");
    // QEMU's first NIC is 52:54:00:12:34:56, so the default hostname is talos-123456.
    assert_eq!(
        path,
        format!(
            "/node.yaml?uuid={UUID}&serial=SN%2FE2E%2042&mac=52%3A54%3A00%3A12%3A34%3A56&host=talos-123456&keep=${{other}}"
        )
    );
    node.qemu.power_off_hard().unwrap();
}

/// `talos.config=https://…` is checked against the public roots machined carries, as upstream
/// checks its CA bundle: a real HTTPS server (docker-registry) with a private CA is refused,
/// the console says why, and maintenance mode serves meanwhile.
#[tokio::test]
async fn amd64_https_config_url_must_chain_to_public_roots() {
    let Some(art) = artifacts(Arch::Amd64) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Valid from two days back, so only the issuer can be wrong whatever the guest clock says.
    let issued = SystemTime::now() - Duration::from_secs(2 * 86400);
    let ca = pki::new_ecdsa_ca(CaSubject::CommonName("private CA".into()), issued).unwrap();
    let sans = [
        SubjectAltName::Ip([10, 0, 2, 2].into()),
        SubjectAltName::Ip([127, 0, 0, 1].into()),
    ];
    let cert = pki::issue_peer_cert(
        &ca,
        "config server",
        &sans,
        Duration::from_secs(5 * 86400),
        issued,
    )
    .unwrap();
    let server = LocalRegistry::start_with(
        &dir.path().join("server"),
        Some(RegistryTlsFiles {
            cert_pem: cert.cert_pem,
            key_pem: cert.key_pem,
            ca_pem: ca.cert_pem,
            guest_host: "10.0.2.2".into(),
            client_auth: None,
        }),
    )
    .expect("docker-registry serves HTTPS");
    let port = server.addr().port();
    let url = format!("https://10.0.2.2:{port}/v2/");
    let node = Node::launch(
        board(Arch::Amd64),
        BootSource::Kernel {
            kernel: art.kernel.clone(),
            initrd: art.initramfs.clone(),
            append_extra: vec![format!("talos.config={url}")],
        },
        state_disk(dir.path()),
        dir.path().join("console.log"),
    );
    let refused = node
        .qemu
        .wait_for_line("TLS handshake with", BOOT_TIMEOUT)
        .expect("the node tries the server");
    assert!(
        refused.contains(&format!(
            "talos.config={url}: TLS handshake with 10.0.2.2:{port} failed: invalid peer certificate: UnknownIssuer"
        )),
        "{refused}"
    );
    let maintenance = connect(&node, TlsMode::Insecure)
        .await
        .expect("maintenance mode serves while the fetch retries");
    maintenance.version().await.unwrap();
    node.qemu.power_off_hard().unwrap();
}

/// Where [`with_hostname`] puts the node's network and time settings.
#[derive(Clone, Copy)]
enum Layout {
    /// `machine.network` and `machine.time` in the v1alpha1 document.
    V1Alpha1,
    /// `HostnameConfig`, `LinkConfig`, `TimeSyncConfig`, `ResolverConfig` and `StaticHostConfig`
    /// documents (Talos 1.14 style).
    Documents,
}

/// The v1alpha1 document of a generated config plus the hostname, a static eth0 (QEMU user
/// networking's address, MTU 1400), QEMU's nameserver, a static host for the gateway and a time
/// server, in `layout`.
fn with_hostname(config: &str, hostname: &str, time_server: &str, layout: Layout) -> Vec<u8> {
    let v1alpha1 = config.split("\n---\n").next().expect("a v1alpha1 document");
    assert!(
        v1alpha1.contains("\n  network: {}\n"),
        "generated config layout changed"
    );
    match layout {
        Layout::V1Alpha1 => {
            let replacement = format!(
                "\n  network:\n    hostname: {hostname}\n    nameservers: [10.0.2.3]\n    interfaces:\n      - interface: eth0\n        addresses: [10.0.2.15/24]\n        mtu: 1400\n        routes:\n          - network: 0.0.0.0/0\n            gateway: 10.0.2.2\n    extraHostEntries:\n      - ip: 10.0.2.2\n        aliases: [gateway.lab]\n  time:\n    servers:\n    - {time_server}\n"
            );
            v1alpha1.replacen("\n  network: {}\n", &replacement, 1)
        }
        Layout::Documents => format!(
            "{v1alpha1}\n---\napiVersion: v1alpha1\nkind: HostnameConfig\nhostname: {hostname}\n---\napiVersion: v1alpha1\nkind: LinkConfig\nname: eth0\nmtu: 1400\naddresses:\n  - address: 10.0.2.15/24\nroutes:\n  - gateway: 10.0.2.2\n---\napiVersion: v1alpha1\nkind: TimeSyncConfig\nntp:\n  servers: [\"{time_server}\"]\n---\napiVersion: v1alpha1\nkind: ResolverConfig\nnameservers:\n  - address: 10.0.2.3\n---\napiVersion: v1alpha1\nkind: StaticHostConfig\nname: 10.0.2.2\nhostnames: [gateway.lab]\n"
        ),
    }
    .into_bytes()
}

/// A file's contents through the Read RPC.
async fn read_file(client: &Client, path: &str) -> String {
    let mut stream = client
        .machine()
        .read(client.request(talos_proto::machine::ReadRequest { path: path.into() }))
        .await
        .expect("Read")
        .into_inner();
    let mut data = Vec::new();
    while let Some(chunk) = stream.message().await.expect("Read stream") {
        data.extend(chunk.bytes);
    }
    String::from_utf8(data).expect("UTF-8")
}

/// An SNTP server on the host whose clock runs `ahead` of the real one.
fn fake_ntp_server(ahead: Duration) -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 48];
        while let Ok((n, peer)) = socket.recv_from(&mut buf) {
            if n < 48 {
                continue;
            }
            let since = (SystemTime::now() + ahead)
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            let secs = u32::try_from((since.as_secs() + 2_208_988_800) & 0xffff_ffff).unwrap();
            let frac =
                u32::try_from((u64::from(since.subsec_nanos()) << 32) / 1_000_000_000).unwrap();
            let mut reply = [0u8; 48];
            reply[0] = 0x24;
            reply[1] = 1;
            reply[24..32].copy_from_slice(&buf[40..48]);
            for at in [32, 40] {
                reply[at..at + 4].copy_from_slice(&secs.to_be_bytes());
                reply[at + 4..at + 8].copy_from_slice(&frac.to_be_bytes());
            }
            let _ = socket.send_to(&reply, peer);
        }
    });
    port
}

/// When the certificate the node's API presents right now starts to be valid.
async fn api_certificate_not_before(node: &Node) -> SystemTime {
    let endpoint = Endpoint::new("127.0.0.1", node.qemu.api_port());
    let der = talos_client::presented_certificate(&endpoint)
        .await
        .expect("the API presents a certificate");
    pki::cert_validity(&der).unwrap().0
}

/// Day-2 on arm64: the clock follows the configured NTP server, `logs -f` streams new lines,
/// try mode reverts by itself, a staged config takes effect on reboot, and Reset brings the
/// node back to maintenance mode.
#[tokio::test]
async fn arm64_day2_apply_modes_logs_and_reset() {
    day2_apply_modes_logs_and_reset(Arch::Arm64, Layout::V1Alpha1).await;
}

/// The same with network, hostname and time from multi-document config.
#[tokio::test]
async fn amd64_day2_apply_modes_logs_and_reset() {
    day2_apply_modes_logs_and_reset(Arch::Amd64, Layout::Documents).await;
}

async fn day2_apply_modes_logs_and_reset(arch: Arch, layout: Layout) {
    let Some(art) = artifacts(arch) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let node = boot(arch, &art, dir.path(), Vec::new());
    let (os_ca, generated) = cluster("day2");
    let base = generated.controlplane.clone();
    // Ahead by more than the step threshold, less than the certificates' clock-skew allowance.
    const AHEAD: Duration = Duration::from_secs(120);
    let ntp = format!("10.0.2.2:{}", fake_ntp_server(AHEAD));
    let insecure = connect(&node, TlsMode::Insecure)
        .await
        .expect("maintenance API");
    let applied_at = SystemTime::now();
    insecure
        .apply_configuration(
            with_hostname(&base, "base", &ntp, layout),
            ApplyMode::Auto,
            false,
        )
        .await
        .expect("apply");
    let admin_cert = client_cert(&os_ca, Role::Admin);
    let admin = connect(&node, mutual(&os_ca, &admin_cert))
        .await
        .expect("mutual TLS");
    assert_eq!(admin.hostname().await.unwrap(), "base");
    assert_eq!(
        read_file(&admin, "/sys/class/net/eth0/mtu").await,
        "1400\n",
        "the config's MTU is live"
    );
    assert_eq!(
        read_file(&admin, "/etc/resolv.conf").await,
        "nameserver 10.0.2.3\n",
        "the config's nameserver"
    );
    let hosts = read_file(&admin, "/etc/hosts").await;
    assert!(hosts.contains("\n10.0.2.15 base\n"), "{hosts}");
    assert!(
        hosts.ends_with("\n10.0.2.2 gateway.lab\n"),
        "the config's static host: {hosts}"
    );

    // The clock follows the configured time server, which runs two minutes ahead.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let time = admin
            .time()
            .time(admin.request(()))
            .await
            .expect("Time")
            .into_inner()
            .messages
            .remove(0);
        let local = SystemTime::try_from(time.localtime.expect("localtime")).unwrap();
        let expected = SystemTime::now() + AHEAD;
        let off = local
            .duration_since(expected)
            .unwrap_or_else(|e| e.duration());
        if off < Duration::from_secs(20) {
            assert_eq!(time.server, ntp);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node clock did not follow {ntp}: off by {off:?}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // The step of the clock reissued the API certificate: its validity starts from the
    // synchronized time, not from the clock the node had when the config arrived.
    let issued_after_step =
        applied_at + AHEAD - pki::CLOCK_SKEW_ALLOWANCE - Duration::from_secs(10);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let not_before = api_certificate_not_before(&node).await;
        if not_before >= issued_after_step {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the API certificate starts at {not_before:?}, before the clock step (expected at least {issued_after_step:?})"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // logs -f: a refused call shows up in machined's followed log.
    let mut logs = admin
        .machine()
        .logs(admin.request(talos_proto::machine::LogsRequest {
            namespace: "system".into(),
            id: "machined".into(),
            driver: 0,
            follow: true,
            tail_lines: 1,
        }))
        .await
        .expect("Logs")
        .into_inner();
    logs.message()
        .await
        .expect("the tail arrives")
        .expect("a first chunk");
    let reader_cert = client_cert(&os_ca, Role::Reader);
    let reader = connect(&node, mutual(&os_ca, &reader_cert)).await.unwrap();
    assert_eq!(
        code(reader.reboot(RebootMode::Default).await),
        Some(tonic::Code::PermissionDenied)
    );
    let followed = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(chunk) = logs.message().await.expect("log stream") {
            if String::from_utf8_lossy(&chunk.bytes).contains("call refused") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(followed, Ok(true), "logs -f saw the new line");

    // Try mode: applied now, reverted after its timeout.
    let mut request = talos_proto::machine::ApplyConfigurationRequest {
        data: with_hostname(&base, "trial", &ntp, layout),
        mode: ApplyMode::Try as i32,
        dry_run: false,
        try_mode_timeout: Some(talos_proto::prost_types::Duration {
            seconds: 3,
            nanos: 0,
        }),
    };
    admin
        .machine()
        .apply_configuration(admin.request(request.clone()))
        .await
        .expect("apply --mode try");
    assert_eq!(admin.hostname().await.unwrap(), "trial");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        admin.hostname().await.unwrap(),
        "base",
        "try mode reverted by itself"
    );

    // Staged: stored now, applied on the next boot.
    request.data = with_hostname(&base, "staged", &ntp, layout);
    request.mode = ApplyMode::Staged as i32;
    request.try_mode_timeout = None;
    admin
        .machine()
        .apply_configuration(admin.request(request))
        .await
        .expect("apply --mode staged");
    assert_eq!(
        admin.hostname().await.unwrap(),
        "base",
        "a staged config waits for a reboot"
    );
    admin.reboot(RebootMode::Default).await.unwrap();
    node.qemu
        .wait_for_line("configured source=\"the STATE partition\"", BOOT_TIMEOUT)
        .expect("reboot onto the staged config");
    let admin = connect(&node, mutual(&os_ca, &admin_cert))
        .await
        .expect("mutual TLS after reboot");
    assert_eq!(admin.hostname().await.unwrap(), "staged");
    node.qemu
        .wait_for_line("static address from the machine config", BOOT_TIMEOUT)
        .expect("after the reboot eth0 is configured from the machine config, not DHCP");
    assert_eq!(read_file(&admin, "/sys/class/net/eth0/mtu").await, "1400\n");

    // Reset wipes STATE; the node reboots into maintenance mode.
    admin
        .machine()
        .reset(admin.request(talos_proto::machine::ResetRequest {
            graceful: false,
            reboot: true,
            system_partitions_to_wipe: vec![talos_proto::machine::ResetPartitionSpec {
                label: "STATE".into(),
                wipe: true,
            }],
            user_disks_to_wipe: Vec::new(),
            mode: 0,
        }))
        .await
        .expect("reset");
    node.qemu
        .wait_for_line("no machine config: maintenance mode", BOOT_TIMEOUT)
        .expect("back in maintenance mode");
    let maintenance = connect(&node, TlsMode::Insecure)
        .await
        .expect("maintenance API after reset");
    maintenance.version().await.unwrap();
    node.qemu.power_off_hard().unwrap();
}

#[tokio::test]
async fn arm64_services_bootstrap_and_restart() {
    services_bootstrap_and_restart(Arch::Arm64).await;
}

#[tokio::test]
async fn amd64_services_bootstrap_and_restart() {
    services_bootstrap_and_restart(Arch::Amd64).await;
}

/// Polls ServiceList until `ready` holds for service `id`, and returns that service.
async fn wait_for_service(
    client: &Client,
    id: &str,
    what: &str,
    ready: impl Fn(&talos_proto::machine::ServiceInfo) -> bool,
) -> talos_proto::machine::ServiceInfo {
    let deadline = Instant::now() + BOOT_TIMEOUT;
    loop {
        let list = client.service_list().await.expect("ServiceList");
        let found = list.services.into_iter().find(|s| s.id == id);
        match found {
            Some(s) if ready(&s) => return s,
            other if Instant::now() >= deadline => {
                panic!("service {id} is not {what} within {BOOT_TIMEOUT:?}: {other:#?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

fn healthy(s: &talos_proto::machine::ServiceInfo) -> bool {
    s.state == "Running" && s.health.as_ref().is_some_and(|h| !h.unknown && h.healthy)
}

fn last_pid(s: &talos_proto::machine::ServiceInfo) -> Option<String> {
    s.events.as_ref()?.events.iter().rev().find_map(|e| {
        e.msg
            .strip_prefix("Started with PID ")
            .and_then(|rest| rest.split(':').next())
            .map(str::to_owned)
    })
}

async fn service_logs(client: &Client, id: &str) -> String {
    let mut stream = client
        .machine()
        .logs(client.request(talos_proto::machine::LogsRequest {
            namespace: "system".into(),
            id: id.into(),
            driver: 0,
            follow: false,
            tail_lines: -1,
        }))
        .await
        .expect("Logs")
        .into_inner();
    let mut text = String::new();
    while let Some(chunk) = stream.message().await.expect("log stream") {
        text.push_str(&String::from_utf8_lossy(&chunk.bytes));
    }
    text
}

/// containerd (system and CRI) and etcd from the image's /usr under the supervisor: cgroups
/// from the board's memory profile, etcd behind Bootstrap with mutual TLS, restart, stop and
/// start with roles, and `logs -f` following a restart. kubelet is reported as skipped: no Kubernetes binaries
/// could be fetched to build this image.
/// The entries of a .tar.gz stream: name, type and content.
async fn unpacked(mut stream: DataStream) -> Vec<(String, tar::EntryType, Vec<u8>)> {
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next_chunk().await.expect("the archive stream") {
        bytes.extend(chunk);
    }
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
    archive
        .entries()
        .expect("a tar.gz")
        .map(|entry| {
            let mut entry = entry.expect("a tar entry");
            let name = entry.path().unwrap().display().to_string();
            let kind = entry.header().entry_type();
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            (name, kind, content)
        })
        .collect()
}

/// Copy, Kubeconfig and GenerateClientConfiguration: admin only, secrets stay on the node, and
/// what they hand out works.
async fn secrets_leave_only_through_admin_rpcs(
    node: &Node,
    os_ca: &CertAndKey,
    admin: &Client,
    reader: &Client,
    generated: &Generated,
) {
    let etc = unpacked(admin.copy("/etc").await.expect("Copy /etc")).await;
    let hosts = etc
        .iter()
        .find(|(name, _, _)| name == "etc/hosts")
        .expect("etc/hosts in the copy");
    assert!(String::from_utf8_lossy(&hosts.2).contains("localhost"));
    assert_eq!(etc[0].0, "etc", "names start at the copied directory");
    let var = unpacked(admin.copy("/var").await.expect("Copy /var")).await;
    assert!(var.iter().all(|(n, _, _)| n.starts_with("var")), "{var:?}");
    for (path, expected) in [
        ("/system/state", tonic::Code::PermissionDenied),
        ("/dev/vda", tonic::Code::InvalidArgument),
        ("/no/such/path", tonic::Code::NotFound),
    ] {
        assert_eq!(
            code(admin.copy(path).await.map(|_| ())),
            Some(expected),
            "{path}"
        );
    }
    assert_eq!(
        code(reader.copy("/etc").await.map(|_| ())),
        Some(tonic::Code::PermissionDenied)
    );

    // The admin kubeconfig: a fresh cluster-admin certificate from the Kubernetes CA.
    let config = Config::from_bytes(generated.controlplane.as_bytes()).unwrap();
    let files = unpacked(admin.kubeconfig().await.expect("Kubeconfig")).await;
    let [(name, kind, content)] = files.as_slice() else {
        panic!("one file in the kubeconfig archive: {files:?}");
    };
    assert_eq!(
        (name.as_str(), *kind),
        ("kubeconfig", tar::EntryType::Regular)
    );
    let kubeconfig = Kubeconfig::from_yaml(std::str::from_utf8(content).unwrap()).unwrap();
    let (cluster, _) = kubeconfig
        .context(&kubeconfig.current_context)
        .expect("the current context");
    assert_eq!(
        kubeconfig.server(cluster),
        config.control_plane_endpoint().as_deref()
    );
    let user = kubeconfig.users[0].body["user"]
        .get("client-certificate-data")
        .and_then(|v| v.as_str())
        .expect("client-certificate-data");
    let cert_pem = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, user).unwrap(),
    )
    .unwrap();
    let cert = pki::pem_to_der_certs(&cert_pem).unwrap().remove(0);
    let kubernetes_ca = config.kubernetes_ca().unwrap().cert_der().unwrap();
    pki::verify_issued_by(&cert, &kubernetes_ca).expect("signed by the Kubernetes CA");
    assert_eq!(pki::cert_organizations(&cert).unwrap(), ["system:masters"]);
    assert_eq!(
        code(reader.kubeconfig().await.map(|_| ())),
        Some(tonic::Code::PermissionDenied)
    );

    // A reader certificate minted by the node reads versions but not files.
    assert_eq!(
        code(
            reader
                .generate_client_configuration(vec!["os:reader".into()], Duration::from_secs(3600))
                .await
        ),
        Some(tonic::Code::PermissionDenied)
    );
    assert_eq!(
        code(
            admin
                .generate_client_configuration(vec!["os:root".into()], Duration::from_secs(3600))
                .await
        ),
        Some(tonic::Code::InvalidArgument)
    );
    let minted = admin
        .generate_client_configuration(vec!["os:reader".into()], Duration::from_secs(3600))
        .await
        .expect("GenerateClientConfiguration");
    assert_eq!(minted.ca, os_ca.cert_pem.as_bytes());
    let talosconfig =
        Talosconfig::from_yaml(std::str::from_utf8(&minted.talosconfig).unwrap()).unwrap();
    let minted_reader = connect(node, talosconfig_tls(&talosconfig))
        .await
        .expect("connecting with the minted talosconfig");
    minted_reader
        .version()
        .await
        .expect("a reader reads the version");
    assert_eq!(
        code(minted_reader.read("/etc/hosts").await.map(|_| ())),
        Some(tonic::Code::PermissionDenied)
    );
}

async fn services_bootstrap_and_restart(arch: Arch) {
    let Some(art) = artifacts(arch) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let node = boot(arch, &art, dir.path(), Vec::new());
    let (os_ca, generated) = cluster("services");
    let insecure = connect(&node, TlsMode::Insecure)
        .await
        .expect("maintenance API");
    insecure
        .apply_configuration(
            generated.controlplane.clone().into_bytes(),
            ApplyMode::Auto,
            false,
        )
        .await
        .expect("apply");
    let admin_cert = client_cert(&os_ca, Role::Admin);
    let admin = connect_when_configured(&node, mutual(&os_ca, &admin_cert)).await;

    let containerd = wait_for_service(&admin, "containerd", "healthy", healthy).await;
    let cri = wait_for_service(&admin, "cri", "healthy", healthy).await;
    let cri_pid = last_pid(&cri).expect("cri's PID");
    assert_eq!(
        read_file(&admin, &format!("/proc/{cri_pid}/cgroup")).await,
        "0::/podruntime/runtime\n"
    );
    let etcd = wait_for_service(&admin, "etcd", "waiting for bootstrap", |s| {
        s.state == "Waiting"
    })
    .await;
    let waiting = &etcd.events.as_ref().unwrap().events.last().unwrap().msg;
    assert_eq!(
        waiting,
        "Waiting for talosctl bootstrap, or etcd data in /var/lib/etcd"
    );
    let kubelet = wait_for_service(&admin, "kubelet", "skipped", |s| s.state == "Skipped").await;
    eprintln!(
        "kubelet: {}",
        kubelet.events.unwrap().events.last().unwrap().msg
    );

    // The supervisor's cgroups carry the memory profile (standard: containerd 48 MiB).
    let pid = last_pid(&containerd).expect("containerd's PID");
    let procs = read_file(&admin, "/sys/fs/cgroup/system/runtime/cgroup.procs").await;
    assert!(
        procs.lines().any(|l| l == pid),
        "containerd ({pid}) runs in system/runtime: {procs:?}"
    );
    assert_eq!(
        read_file(&admin, "/sys/fs/cgroup/system/runtime/memory.min").await,
        "50331648\n"
    );
    assert_eq!(
        read_file(&admin, &format!("/proc/{pid}/oom_score_adj")).await,
        "-999\n"
    );
    // The profile's sysctls were applied at boot.
    assert_eq!(
        read_file(&admin, "/proc/sys/vm/overcommit_memory").await,
        "1\n"
    );

    // Roles: a reader may list services but not restart them.
    let reader_cert = client_cert(&os_ca, Role::Reader);
    let reader = connect(&node, mutual(&os_ca, &reader_cert)).await.unwrap();
    assert_eq!(
        code(reader.service_restart("containerd").await),
        Some(tonic::Code::PermissionDenied)
    );
    assert_eq!(
        code(reader.bootstrap().await),
        Some(tonic::Code::PermissionDenied)
    );

    secrets_leave_only_through_admin_rpcs(&node, &os_ca, &admin, &reader, &generated).await;

    // Bootstrap starts etcd once; a second bootstrap is refused.
    admin.bootstrap().await.expect("Bootstrap");
    assert_eq!(
        code(admin.bootstrap().await),
        Some(tonic::Code::AlreadyExists)
    );
    let etcd = wait_for_service(&admin, "etcd", "healthy", healthy).await;
    let etcd_pid = last_pid(&etcd).expect("etcd's PID");
    let etcd_log = service_logs(&admin, "etcd").await;
    assert!(
        etcd_log.contains("ready to serve client requests"),
        "etcd log: {etcd_log}"
    );
    assert_eq!(
        read_file(&admin, &format!("/proc/{etcd_pid}/cgroup")).await,
        "0::/podruntime/etcd\n"
    );

    // `talosctl etcd members|status|remove-member|snapshot`: one member, this node, leading;
    // no stranger to remove; a checked snapshot.
    let members = admin
        .etcd_member_list()
        .await
        .expect("EtcdMemberList")
        .members;
    assert_eq!(members.len(), 1, "{members:?}");
    assert_eq!(members[0].hostname, admin.hostname().await.unwrap());
    assert!(
        members[0].peer_urls.iter().all(|u| u.ends_with(":2380"))
            && members[0].client_urls.iter().any(|u| u.ends_with(":2379")),
        "{members:?}"
    );
    let status = reader
        .etcd_status()
        .await
        .expect("a reader may read etcd's status")
        .member_status
        .expect("a member status");
    assert_eq!(
        (status.member_id, status.leader),
        (members[0].id, members[0].id)
    );
    assert!(status.db_size > 0 && status.raft_index > 0, "{status:?}");
    assert_eq!(
        code(reader.etcd_remove_member_by_id(0xdead).await),
        Some(tonic::Code::PermissionDenied)
    );
    assert_eq!(
        code(admin.etcd_remove_member_by_id(0xdead).await),
        Some(tonic::Code::NotFound),
        "etcd knows no such member"
    );
    // The only member leads, with no one to hand leadership to.
    assert_eq!(
        admin
            .etcd_forfeit_leadership()
            .await
            .expect("EtcdForfeitLeadership"),
        ""
    );
    // The only member cannot leave; etcd keeps running.
    assert_eq!(
        code(admin.etcd_leave_cluster().await),
        Some(tonic::Code::FailedPrecondition)
    );
    reader
        .etcd_member_list()
        .await
        .expect("a reader may list members");
    assert_eq!(
        code(reader.etcd_snapshot().await.map(|_| ())),
        Some(tonic::Code::PermissionDenied)
    );
    let mut chunks = admin.etcd_snapshot().await.expect("EtcdSnapshot");
    let mut check = SnapshotCheck::default();
    while let Some(chunk) = chunks.next_chunk().await.expect("the snapshot stream") {
        check.update(&chunk);
    }
    let database = check.finish().expect("an intact snapshot");
    eprintln!("etcd snapshot: {database} bytes of database");

    // logs -f follows containerd across a restart.
    let mut followed = admin
        .machine()
        .logs(admin.request(talos_proto::machine::LogsRequest {
            namespace: "system".into(),
            id: "containerd".into(),
            driver: 0,
            follow: true,
            tail_lines: 0,
        }))
        .await
        .expect("Logs -f")
        .into_inner();
    followed
        .message()
        .await
        .expect("the tail")
        .expect("a chunk");
    admin.service_restart("containerd").await.expect("restart");
    let restarted = wait_for_service(&admin, "containerd", "healthy again", |s| {
        healthy(s) && last_pid(s).is_some_and(|p| p != pid)
    })
    .await;
    let seen = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(chunk) = followed.message().await.expect("log stream") {
            if String::from_utf8_lossy(&chunk.bytes).contains("containerd successfully booted") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(seen, Ok(true), "logs -f saw the restarted containerd boot");
    assert!(
        restarted
            .events
            .unwrap()
            .events
            .iter()
            .any(|e| e.state == "Stopping" && e.msg == "Restarting service")
    );

    // Stop and start: etcd finds its data and needs no second bootstrap.
    admin.service_stop("etcd").await.expect("stop");
    wait_for_service(&admin, "etcd", "stopped", |s| s.state == "Finished").await;
    admin.service_start("etcd").await.expect("start");
    wait_for_service(&admin, "etcd", "healthy after start", |s| {
        healthy(s) && last_pid(s).is_some_and(|p| p != etcd_pid)
    })
    .await;
    assert_eq!(
        code(admin.service_stop("machined").await),
        Some(tonic::Code::FailedPrecondition)
    );
    node.qemu.power_off_hard().unwrap();
}
