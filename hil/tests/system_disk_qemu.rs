//! STATE and EPHEMERAL made on first boot, on QEMU (arm64, TCG, U-Boot): the v1.0.0 disk
//! image (EFI and META only) written onto a 600 MiB disk as `dd` would (the backup GPT stays
//! at the image's end). The node adds STATE and EPHEMERAL, formats them and mounts
//! EPHEMERAL at /var; a reboot keeps both (the config on STATE survives, EPHEMERAL is not
//! formatted again); a reset of EPHEMERAL makes the next boot format it afresh.
//!
//! Input: `$TALOS_RS_OUT/images/qemu-virt-arm64-u-boot/metal-arm64.raw`.

mod common;
mod fixtures;

use common::Node;

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use talos_client::{Client, Endpoint, TlsMode};
use talos_disk::gpt::{SECTOR, Table};
use talos_disk::layout;
use talos_hil::BootSource;
use talos_machinery::config::{GenerateInput, generate};
use talos_machinery::secrets::SecretsBundle;
use talos_proto::machine::apply_configuration_request::Mode as ApplyMode;
use talos_proto::machine::reboot_request::Mode as RebootMode;
use talos_proto::machine::{ListRequest, LogsRequest, MountStat, ResetPartitionSpec, ResetRequest};

const BOARD: &str = "qemu-virt-arm64";
const CHAIN: &str = "u-boot";
const DISK_SIZE: u64 = 600 << 20;
const STEP_TIMEOUT: Duration = Duration::from_secs(300);
const MOUNTED: &str = "mounted EPHEMERAL at /var";
const FORMATTED_STATE: &str = "formatted STATE (ext4)";
const FORMATTED_EPHEMERAL: &str = "formatted EPHEMERAL (ext4)";

/// `image` written onto a `DISK_SIZE` disk at `disk`.
fn flash(image: &Path, disk: &Path) {
    fixtures::write_image(image, disk, DISK_SIZE);
    let table = Table::read_from(&mut File::open(disk).unwrap()).unwrap();
    assert!(
        table.find(layout::STATE).is_none(),
        "images leave STATE to the node"
    );
}

/// The node's API once it answers Version.
async fn connect(node: &Node, tls: &TlsMode) -> Client {
    let endpoint = Endpoint::new("127.0.0.1", node.qemu.api_port());
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let attempt = Client::connect_with_retry(
            &endpoint,
            tls.clone(),
            Instant::now() + Duration::from_secs(10),
        )
        .await;
        let last = match attempt {
            Ok(client) => match client.version().await {
                Ok(_) => return client,
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "no API within {STEP_TIMEOUT:?}: {last}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn machined_log(client: &Client) -> String {
    let mut stream = client
        .logs(LogsRequest {
            namespace: "system".into(),
            id: "machined".into(),
            driver: 0,
            follow: false,
            tail_lines: -1,
        })
        .await
        .expect("Logs");
    let mut text = String::new();
    while let Some(chunk) = stream.next_chunk().await.expect("log stream") {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text
}

async fn read_file(client: &Client, path: &str) -> String {
    let mut stream = client.read(path).await.expect("Read");
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next_chunk().await.expect("file stream") {
        bytes.extend(chunk);
    }
    String::from_utf8(bytes).unwrap()
}

/// The link of the default route.
async fn default_link(client: &Client) -> String {
    let routes = read_file(client, "/proc/net/route").await;
    routes
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|fields| fields.get(1) == Some(&"00000000"))
        .map(|fields| fields[0].to_owned())
        .unwrap_or_else(|| panic!("no default route: {routes}"))
}

/// A platform network config as Image Factory writes it: user networking's own address,
/// made static, with a hostname, a nameserver, an NTP server and a smaller MTU.
fn platform_network(link: &str) -> String {
    format!(
        "addresses:\n  - address: 10.0.2.15/24\n    linkName: {link}\n    family: inet4\n    layer: platform\n\
links:\n  - name: {link}\n    up: true\n    mtu: 1400\n\
routes:\n  - dst: \"\"\n    gateway: 10.0.2.2\n    outLinkName: {link}\n\
hostnames:\n  - hostname: meta-edge-1\n\
resolvers:\n  - dnsServers: [10.0.2.3]\n\
timeServers:\n  - timeServers: [10.0.2.2]\n"
    )
}

async fn mount(client: &Client, at: &str) -> MountStat {
    let mounts = client.mounts().await.expect("Mounts");
    mounts
        .stats
        .iter()
        .find(|m| m.mounted_on == at)
        .cloned()
        .unwrap_or_else(|| panic!("nothing mounted at {at}: {:#?}", mounts.stats))
}

/// When /var's filesystem was made: mke2fs stamps lost+found with that time.
async fn formatted_at(client: &Client) -> i64 {
    let mut entries = client
        .list(ListRequest {
            root: "/var".into(),
            ..Default::default()
        })
        .await
        .expect("List /var");
    while let Some(entry) = entries.next_entry().await.expect("List stream") {
        if entry.name == "/var/lost+found" {
            return entry.modified;
        }
    }
    panic!("no /var/lost+found: /var is not a fresh ext4 filesystem");
}

#[tokio::test]
async fn arm64_uboot_first_boot_makes_state_and_ephemeral() {
    let Some(fixtures::DiskImage {
        board,
        disk: image,
        bios,
        ..
    }) = fixtures::disk_image(BOARD, CHAIN, &[])
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.raw");
    flash(&image, &disk);
    let node = Node::launch(
        board,
        BootSource::Firmware { bios },
        disk.clone(),
        dir.path().join("console.log"),
    );

    // First boot: both partitions made, formatted and mounted.
    node.qemu
        .wait_for_line(MOUNTED, STEP_TIMEOUT)
        .expect("EPHEMERAL is mounted on first boot");
    let insecure = connect(&node, &TlsMode::Insecure).await;
    eprintln!(
        "first boot: API up {:.1?} after QEMU start",
        node.qemu.launched_at().elapsed()
    );
    let log = machined_log(&insecure).await;
    assert!(log.contains("GPT stretched to 600 MiB"), "{log}");
    assert!(log.contains(FORMATTED_STATE), "{log}");
    assert!(log.contains(FORMATTED_EPHEMERAL), "{log}");
    let table = Table::read_from(&mut File::open(&disk).unwrap()).unwrap();
    assert_eq!(table.total_sectors * SECTOR, DISK_SIZE);
    let state = table.find(layout::STATE).expect("STATE in the GPT").clone();
    let ephemeral = table
        .find(layout::EPHEMERAL)
        .expect("EPHEMERAL in the GPT")
        .clone();
    assert_eq!(state.len(), layout::STATE_SIZE);
    assert_eq!(ephemeral.offset() + ephemeral.len(), DISK_SIZE - (1 << 20));
    // ext4 reports its size without its metadata: a little less than the partition.
    let sized = |m: &MountStat, partition: u64| {
        assert!(
            m.size <= partition && m.size > partition / 10 * 8,
            "{} is {} bytes on a {partition}-byte partition",
            m.mounted_on,
            m.size
        )
    };
    let var = mount(&insecure, "/var").await;
    assert_eq!(var.filesystem, "/dev/vda4");
    sized(&var, ephemeral.len());
    let state_mount = mount(&insecure, "/system/state").await;
    assert_eq!(state_mount.filesystem, "/dev/vda3");
    sized(&state_mount, state.len());
    let made = formatted_at(&insecure).await;

    // Configured, then rebooted: the config comes back from the STATE made above, and
    // EPHEMERAL is mounted as it was, not formatted again.
    let secrets = SecretsBundle::generate(SystemTime::now()).unwrap();
    let mut input = GenerateInput::new(
        "system-disk",
        "https://10.0.2.15:6443",
        secrets,
        SystemTime::now(),
    );
    input.install_disk = "/dev/vda".into();
    let generated = generate(&input).unwrap();
    assert_eq!(
        insecure
            .meta_write(0x0b, b"x".to_vec())
            .await
            .unwrap_err()
            .code(),
        Some(tonic::Code::PermissionDenied),
        "maintenance mode's anonymous callers are readers"
    );
    insecure
        .apply_configuration(generated.controlplane.into_bytes(), ApplyMode::Auto, false)
        .await
        .expect("apply-config --insecure");
    let (_, ctx) = generated.talosconfig.current(None).unwrap();
    let tls = TlsMode::Mutual {
        ca_pem: ctx.ca_pem().unwrap(),
        cert_pem: ctx.crt_pem().unwrap(),
        key_pem: ctx.key_pem().unwrap(),
    };
    let admin = connect(&node, &tls).await;
    // `talosctl meta write 0xb rack-7`: kept on the META partition across the reboot below.
    admin
        .meta_write(0x0b, b"rack-7".to_vec())
        .await
        .expect("MetaWrite");
    assert_eq!(
        admin
            .meta_write(0x100, b"x".to_vec())
            .await
            .unwrap_err()
            .code(),
        Some(tonic::Code::InvalidArgument)
    );
    // `talosctl meta write 0xa "$(cat network.yaml)"`: the next boot's network comes from it.
    let link = default_link(&admin).await;
    admin
        .meta_write(0x0a, platform_network(&link).into_bytes())
        .await
        .expect("MetaWrite 0x0a");
    let rebooted = Instant::now();
    admin.reboot(RebootMode::Default).await.expect("Reboot");
    node.qemu
        .wait_for_line(MOUNTED, STEP_TIMEOUT)
        .expect("EPHEMERAL is mounted after the reboot");
    let admin = connect(&node, &tls).await;
    eprintln!(
        "reboot: API back {:.1?} after the request",
        rebooted.elapsed()
    );
    let log = machined_log(&admin).await;
    assert!(
        log.contains("configured source=\"the STATE partition\""),
        "{log}"
    );
    assert!(!log.contains("formatted"), "{log}");
    assert!(
        log.contains("using the platform network config in META 0x0a")
            && log.contains("static address from META 0x0a"),
        "{log}"
    );
    assert_eq!(admin.hostname().await.unwrap(), "meta-edge-1");
    assert_eq!(
        read_file(&admin, &format!("/sys/class/net/{link}/mtu")).await,
        "1400\n"
    );
    assert!(
        read_file(&admin, "/etc/resolv.conf")
            .await
            .contains("nameserver 10.0.2.3"),
        "the platform's nameserver is used"
    );
    assert_eq!(default_link(&admin).await, link);
    admin
        .meta_delete(0x0b)
        .await
        .expect("the META key survived the reboot");
    assert_eq!(
        admin.meta_delete(0x0b).await.unwrap_err().code(),
        Some(tonic::Code::NotFound)
    );
    assert_eq!(
        formatted_at(&admin).await,
        made,
        "EPHEMERAL kept its filesystem"
    );

    // Reset of EPHEMERAL alone: the next boot formats it afresh and keeps STATE.
    let reset = Instant::now();
    admin
        .reset(ResetRequest {
            graceful: false,
            reboot: true,
            system_partitions_to_wipe: vec![ResetPartitionSpec {
                label: layout::EPHEMERAL.into(),
                wipe: true,
            }],
            user_disks_to_wipe: Vec::new(),
            mode: 0,
        })
        .await
        .expect("Reset");
    node.qemu
        .wait_for_line(MOUNTED, STEP_TIMEOUT)
        .expect("EPHEMERAL is mounted after the reset");
    let admin = connect(&node, &tls).await;
    eprintln!("reset: API back {:.1?} after the request", reset.elapsed());
    let log = machined_log(&admin).await;
    assert!(log.contains(FORMATTED_EPHEMERAL), "{log}");
    assert!(!log.contains(FORMATTED_STATE), "{log}");
    let var = mount(&admin, "/var").await;
    sized(&var, ephemeral.len());
    let remade = formatted_at(&admin).await;
    assert!(
        remade >= made,
        "lost+found {remade} predates the first format {made}"
    );
    node.qemu.power_off_hard().unwrap();
}
