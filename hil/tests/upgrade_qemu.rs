//! A/B upgrades on QEMU (TCG), booted from the disk images `cargo xtask test` builds: the
//! firmware (U-Boot, QEMU_EFI or OVMF) starts the slot, the node upgrades from an installer
//! image served by a real registry on 127.0.0.1 (the guest reaches it as 10.0.2.2; one test
//! pulls `ghcr.io/...` through that registry as its only mirror, over HTTPS under a name the
//! guest maps with `machine.network.extraHostEntries`, trusting its CA, presenting a client
//! certificate and logging in with htpasswd credentials through `machine.registries`),
//! commits the new slot once it runs, and comes back to the old one by itself when the new one
//! cannot boot.
//!
//! Inputs: `$TALOS_RS_OUT/images/<board>-<boot chain>/metal-<arch>.raw` (v1.0.0) and
//! `$TALOS_RS_OUT/installers/<arch>/<version>/` (OCI layouts; v3.0.0 is deliberately broken).

mod common;
mod fixtures;

use common::Node;
use fixtures::DiskImage;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use talos_boards::Board;
use talos_client::{Client, Endpoint, TlsMode};
use talos_hil::BootSource;
use talos_machinery::Base64Text;
use talos_machinery::config::{Config, GenerateInput, Patch, VersionContract, generate};
use talos_machinery::pki::{self, CaSubject, SubjectAltName};
use talos_machinery::secrets::SecretsBundle;
use talos_oci::{
    ClientIdentity, Credentials, LocalRegistry, RegistryClientAuth, RegistryHtpasswd,
    RegistryTlsFiles,
};
use talos_proto::machine::UpgradeRequest;
use talos_proto::machine::apply_configuration_request::Mode as ApplyMode;

const STEP_TIMEOUT: Duration = Duration::from_secs(300);
const V1: &str = "v1.0.0";
const V2: &str = "v2.0.0";
const BROKEN_V3: &str = "v3.0.0";
/// The HTTPS registry's name in the guest.
const REGISTRY_NAME: &str = "registry.talos-rs.test";
/// The registry the HTTPS test's references name; the node reaches it only through its mirror.
const MIRRORED_REGISTRY: &str = "ghcr.io";
/// The HTTPS registry's htpasswd login.
const REGISTRY_USER: &str = "edge";
const REGISTRY_PASSWORD: &str = "fleet-pull-secret";

impl Node {
    /// Boots the fixture's disk image written onto a fresh disk.
    fn boot(fixture: &DiskImage, dir: &Path) -> Node {
        let disk = dir.join("disk.raw");
        fixture.write_to(&disk);
        Node::from_disk(
            fixture.board.clone(),
            fixture,
            &disk,
            &dir.join("console.log"),
        )
    }

    fn from_disk(board: Board, fixture: &DiskImage, disk: &Path, serial_log: &Path) -> Node {
        let bios = fixture.bios.clone();
        Node::launch(
            board,
            BootSource::Firmware { bios },
            disk.to_owned(),
            serial_log.to_owned(),
        )
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::new("127.0.0.1", self.qemu.api_port())
    }

    /// Waits until the node answers Version with `tag`, across reboots.
    async fn wait_for_version(&self, tls: &TlsMode, tag: &str) -> Client {
        let deadline = Instant::now() + STEP_TIMEOUT;
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Ok(client) = Client::connect_with_retry(
                &self.endpoint(),
                tls.clone(),
                Instant::now() + Duration::from_secs(10),
            )
            .await
            {
                match client.version().await {
                    Ok(v) => {
                        let got = v.version.map(|v| v.tag).unwrap_or_default();
                        if got == tag {
                            return client;
                        }
                        last = format!("answered {got}");
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        panic!("the node did not answer on {tag} within {STEP_TIMEOUT:?}; last: {last}");
    }
}

/// Pushes the installer of `version`; returns the reference the guest pulls from `source`.
async fn publish(
    registry: &LocalRegistry,
    source: Source,
    fixture: &DiskImage,
    version: &str,
) -> String {
    let name = format!("talos/installer:{version}");
    registry
        .push_layout(&fixture.installers.join(version), &name)
        .await
        .expect("push the installer layout xtask wrote");
    if source == Source::HttpsRegistry {
        format!("{MIRRORED_REGISTRY}/{name}")
    } else {
        registry.guest_reference(&name)
    }
}

async fn upgrade(client: &Client, image: &str, stage: bool) {
    let ack = client
        .upgrade(UpgradeRequest {
            image: image.to_owned(),
            stage,
            ..Default::default()
        })
        .await
        .expect("Upgrade is accepted");
    eprintln!("upgrade {image}: {}", ack.ack);
}

/// Applies a generated control-plane config in maintenance mode; returns the admin TLS.
async fn configure(node: &Node, install_disk: &str, patch: Option<Patch>) -> TlsMode {
    configure_with(node, install_disk, VersionContract::V1_13, patch).await
}

/// [`configure`] with a config in the layout of `contract`, patched with `patch`.
async fn configure_with(
    node: &Node,
    install_disk: &str,
    contract: VersionContract,
    patch: Option<Patch>,
) -> TlsMode {
    let insecure = node.wait_for_version(&TlsMode::Insecure, V1).await;
    eprintln!(
        "{V1} up {:.1?} after QEMU start",
        node.qemu.launched_at().elapsed()
    );
    let secrets = SecretsBundle::generate(SystemTime::now()).unwrap();
    let mut input = GenerateInput::new(
        "upgrade",
        "https://10.0.2.15:6443",
        secrets,
        SystemTime::now(),
    );
    input.install_disk = install_disk.to_owned();
    input.contract = contract;
    let generated = generate(&input).unwrap();
    let config = match patch {
        Some(patch) => Config::from_bytes(generated.controlplane.as_bytes())
            .unwrap()
            .patch(&[patch])
            .expect("patch the config")
            .to_yaml()
            .unwrap(),
        None => generated.controlplane,
    };
    insecure
        .apply_configuration(config.into_bytes(), ApplyMode::Auto, false)
        .await
        .expect("apply-config --insecure");
    let (_, ctx) = generated.talosconfig.current(None).unwrap();
    TlsMode::Mutual {
        ca_pem: ctx.ca_pem().unwrap(),
        cert_pem: ctx.crt_pem().unwrap(),
        key_pem: ctx.key_pem().unwrap(),
    }
}

/// Boots v1 from disk, configures it, then upgrades to v2 and checks it sticks.
/// Where the node pulls v2 from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The local registry (Debian's docker-registry).
    Registry,
    /// The local registry over HTTPS with htpasswd auth, named [`REGISTRY_NAME`] in the guest,
    /// as the mirror of [`MIRRORED_REGISTRY`].
    HttpsRegistry,
    /// The OCI layout served as `talosctl upgrade --image DIR --serve-address` serves it.
    LocalLayout,
}

/// A CA and a certificate it issued for 127.0.0.1 (the push) and [`REGISTRY_NAME`] (the guest),
/// and a client CA with the client certificate the registry requires.
fn registry_tls() -> RegistryTlsFiles {
    let now = SystemTime::now();
    let ca = pki::new_ecdsa_ca(CaSubject::CommonName("registry CA".into()), now).unwrap();
    let sans = [
        SubjectAltName::Dns(REGISTRY_NAME.into()),
        SubjectAltName::Ip([127, 0, 0, 1].into()),
    ];
    let cert =
        pki::issue_peer_cert(&ca, REGISTRY_NAME, &sans, Duration::from_secs(86400), now).unwrap();
    // A client certificate as talosctl writes them: Ed25519, Talos's PEM labels.
    let client_ca =
        pki::new_ecdsa_ca(CaSubject::CommonName("fleet client CA".into()), now).unwrap();
    let client = pki::issue_client_cert(&client_ca, &[], Duration::from_secs(86400), now).unwrap();
    RegistryTlsFiles {
        cert_pem: cert.cert_pem,
        key_pem: cert.key_pem,
        ca_pem: ca.cert_pem,
        guest_host: REGISTRY_NAME.into(),
        client_auth: Some(RegistryClientAuth {
            ca_pem: client_ca.cert_pem,
            identity: ClientIdentity {
                cert_pem: client.cert_pem,
                key_pem: client.key_pem,
            },
        }),
    }
}

/// htpasswd auth for the HTTPS registry.
fn registry_htpasswd() -> RegistryHtpasswd {
    RegistryHtpasswd {
        htpasswd: format!(
            "{REGISTRY_USER}:{}\n",
            bcrypt::hash(REGISTRY_PASSWORD, 4).unwrap()
        ),
        credentials: Credentials::Basic {
            username: REGISTRY_USER.into(),
            password: REGISTRY_PASSWORD.into(),
        },
    }
}

/// Maps [`REGISTRY_NAME`] to the host, trusts `registry`'s CA, presents its client certificate
/// and logs in to it, and makes it the only mirror of [`MIRRORED_REGISTRY`].
fn registry_patch(registry: &LocalRegistry, tls: &RegistryTlsFiles) -> Patch {
    let base64 = |pem: &str| {
        let text = talos_machinery::codec::to_yaml(&Base64Text(pem.to_owned())).unwrap();
        text.trim().to_owned()
    };
    let ca = base64(&tls.ca_pem);
    let identity = &tls.client_auth.as_ref().expect("client auth").identity;
    let (crt, key) = (base64(&identity.cert_pem), base64(&identity.key_pem));
    let host = format!("{REGISTRY_NAME}:{}", registry.addr().port());
    Patch::parse(&format!(
        "machine:\n  network:\n    extraHostEntries:\n      - ip: 10.0.2.2\n        aliases: [{REGISTRY_NAME}]\n  \
         registries:\n    mirrors:\n      {MIRRORED_REGISTRY}:\n        endpoints: [\"https://{host}\"]\n        skipFallback: true\n    \
         config:\n      \"{host}\":\n        tls:\n          ca: {ca}\n          clientIdentity:\n            crt: {crt}\n            key: {key}\n        \
         auth:\n          username: {REGISTRY_USER}\n          password: {REGISTRY_PASSWORD}\n"
    ))
    .unwrap()
}

/// Serves the layout of `version` from this machine; returns the reference the guest pulls.
async fn serve_layout(fixture: &DiskImage, version: &str) -> (String, tokio::task::JoinHandle<()>) {
    let image = talos_oci::read_layout_dir(&fixture.installers.join(version)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let reference = format!(
        "10.0.2.2:{port}/{}@{}",
        talos_oci::serve::REPOSITORY,
        image.manifest_digest()
    );
    let server = tokio::spawn(talos_oci::serve::serve(
        std::sync::Arc::new(image),
        listener,
    ));
    (reference, server)
}

/// With `stage`, the upgrade is staged and the node rebooted after checking it still runs v1.
async fn configure_and_upgrade(
    fixture: &DiskImage,
    dir: &Path,
    source: Source,
    stage: bool,
) -> (Node, TlsMode, LocalRegistry) {
    let registry_tls = (source == Source::HttpsRegistry).then(registry_tls);
    let registry_dir = dir.join("registry");
    let registry = match &registry_tls {
        Some(tls) => LocalRegistry::start_with_htpasswd(
            &registry_dir,
            Some(tls.clone()),
            registry_htpasswd(),
        ),
        None => LocalRegistry::start(&registry_dir),
    }
    .expect("docker-registry starts");
    let node = Node::boot(fixture, dir);
    // The system disk itself: nothing to install.
    let system_disk = booted_disk(&node);
    let patch = registry_tls.map(|tls| registry_patch(&registry, &tls));
    let tls = configure(&node, &system_disk, patch).await;
    let admin = node.wait_for_version(&tls, V1).await;

    let (v2, server) = match source {
        Source::Registry | Source::HttpsRegistry => {
            (publish(&registry, source, fixture, V2).await, None)
        }
        Source::LocalLayout => {
            let (reference, server) = serve_layout(fixture, V2).await;
            (reference, Some(server))
        }
    };
    let requested = Instant::now();
    upgrade(&admin, &v2, stage).await;
    if let Some(server) = server {
        server.abort();
    }
    if stage {
        let version = admin.version().await.expect("Version after staging");
        assert_eq!(version.version.unwrap().tag, V1, "staging does not reboot");
        admin
            .reboot(talos_proto::machine::reboot_request::Mode::Default)
            .await
            .expect("Reboot into the staged version");
    }
    let admin = node.wait_for_version(&tls, V2).await;
    assert_boot_sequence_reported(&admin).await;
    eprintln!(
        "upgrade to {V2}: API back {:.1?} after the request",
        requested.elapsed()
    );
    node.qemu
        .wait_for_line("slot B committed", STEP_TIMEOUT)
        .expect("the new slot commits once it runs");
    (node, tls, registry)
}

/// v1 → v2 from `source`, then a v3 that cannot boot: the firmware falls back to v2 by itself.
async fn upgrade_then_automatic_rollback(board: &str, chain: &str, source: Source) {
    let Some(fixture) = fixtures::disk_image(board, chain, &[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (node, tls, registry) = configure_and_upgrade(&fixture, dir.path(), source, false).await;

    let admin = node.wait_for_version(&tls, V2).await;
    let v3 = publish(&registry, source, &fixture, BROKEN_V3).await;
    let requested = Instant::now();
    upgrade(&admin, &v3, false).await;
    node.qemu
        .wait_for_line("Kernel panic", STEP_TIMEOUT)
        .expect("the broken slot fails to boot");
    node.qemu
        .wait_for_line("the firmware fell back to slot B", STEP_TIMEOUT)
        .expect("the node notices the rollback");
    let admin = node.wait_for_version(&tls, V2).await;
    eprintln!(
        "broken {BROKEN_V3}: back on {V2} {:.1?} after the request",
        requested.elapsed()
    );

    // The broken slot was discarded, so there is nothing to roll back to.
    let refused = admin.rollback().await.expect_err("no previous system");
    assert_eq!(
        refused.code(),
        Some(tonic::Code::FailedPrecondition),
        "{refused}"
    );
}

/// v1 → v2 from a local OCI layout served by this machine, staged (`talosctl upgrade --stage`:
/// written now, booted at the next reboot), then `talosctl rollback` returns to v1.
async fn upgrade_then_manual_rollback(board: &str, chain: &str) {
    let Some(fixture) = fixtures::disk_image(board, chain, &[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (node, tls, _registry) =
        configure_and_upgrade(&fixture, dir.path(), Source::LocalLayout, true).await;
    let admin = node.wait_for_version(&tls, V2).await;
    admin.rollback().await.expect("Rollback is accepted");
    node.wait_for_version(&tls, V1).await;
}

/// The boot sequence's start and stop, and its phases, are in the node's event ring.
async fn assert_boot_sequence_reported(client: &Client) {
    use prost::Message;
    use talos_proto::machine::{EventsRequest, PhaseEvent, SequenceEvent};
    let mut stream = client
        .machine()
        .events(client.request(EventsRequest {
            tail_events: -1,
            ..Default::default()
        }))
        .await
        .expect("Events")
        .into_inner();
    let mut seen = Vec::new();
    while let Ok(Ok(Some(event))) =
        tokio::time::timeout(Duration::from_secs(2), stream.message()).await
    {
        let any = event.data.expect("events carry data");
        let name = match any.type_url.as_str() {
            "talos/runtime/machine.SequenceEvent" => {
                let e = SequenceEvent::decode(any.value.as_slice()).unwrap();
                format!("sequence {} {}", e.sequence, e.action)
            }
            "talos/runtime/machine.PhaseEvent" => {
                let e = PhaseEvent::decode(any.value.as_slice()).unwrap();
                format!("phase {} {}", e.phase, e.action)
            }
            _ => continue,
        };
        seen.push(name);
    }
    for expected in [
        "sequence boot 1",
        "phase storage 0",
        "phase api 1",
        "sequence boot 2",
    ] {
        assert!(
            seen.iter().any(|s| s == expected),
            "{expected} missing from {seen:?}"
        );
    }
}

/// The disk the node booted from, as its console names it.
fn booted_disk(node: &Node) -> String {
    let line = node
        .qemu
        .wait_for_line("booted from slot", STEP_TIMEOUT)
        .expect("the node reports its system disk");
    let disk = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("disk="))
        .expect("the line names the disk");
    disk.trim_matches('"').to_owned()
}

/// Boots the image with a blank second disk, installs onto it through the config's install
/// disk (`machine.install.disk`, or in the v1.14 layout an `UnattendedInstallConfig`), then
/// boots the installed disk alone: same version, same config.
async fn install_to_second_disk(board: &str, chain: &str, contract: VersionContract) {
    let Some(fixture) = fixtures::disk_image(board, chain, &[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target.raw");
    std::fs::File::create(&target)
        .unwrap()
        .set_len(512 << 20)
        .unwrap();
    let mut with_target = fixture.board.clone();
    let qemu = with_target.qemu.as_mut().expect("a QEMU board");
    let mut drive = std::ffi::OsString::from("if=none,id=target,format=raw,file=");
    drive.push(&target);
    qemu.extra_args.extend([
        "-drive".to_owned(),
        drive.to_string_lossy().into_owned(),
        "-device".to_owned(),
        format!("{},drive=target", qemu.disk_device.as_str()),
    ]);
    let image = dir.path().join("disk.raw");
    fixture.write_to(&image);
    let node = Node::from_disk(
        with_target,
        &fixture,
        &image,
        &dir.path().join("console.log"),
    );
    let system_disk = booted_disk(&node);
    let install_disk = if system_disk == "/dev/vda" {
        "/dev/vdb"
    } else {
        "/dev/vda"
    };
    let tls = configure_with(&node, install_disk, contract, None).await;
    let started = Instant::now();
    node.qemu
        .wait_for_line(&format!("installed to {install_disk}"), STEP_TIMEOUT)
        .expect("the node installs onto the second disk");
    eprintln!("install to {install_disk}: {:.1?}", started.elapsed());
    drop(node);

    // The installation media is gone: the installed disk boots on its own.
    let installed = Node::from_disk(
        fixture.board.clone(),
        &fixture,
        &target,
        &dir.path().join("installed-console.log"),
    );
    installed.wait_for_version(&tls, V1).await;
}

#[tokio::test]
async fn arm64_uefi_install_to_second_disk() {
    install_to_second_disk("qemu-virt-arm64", "uefi", VersionContract::V1_13).await;
}

#[tokio::test]
async fn arm64_uboot_install_to_second_disk() {
    install_to_second_disk("qemu-virt-arm64", "u-boot", VersionContract::V1_13).await;
}

#[tokio::test]
async fn amd64_ovmf_install_to_second_disk_from_a_v1_14_layout_config() {
    install_to_second_disk("qemu-amd64", "uefi", VersionContract::V1_14).await;
}

#[tokio::test]
async fn arm64_uboot_upgrade_and_automatic_rollback() {
    upgrade_then_automatic_rollback("qemu-virt-arm64", "u-boot", Source::HttpsRegistry).await;
}

#[tokio::test]
async fn arm64_uefi_upgrade_and_automatic_rollback() {
    upgrade_then_automatic_rollback("qemu-virt-arm64", "uefi", Source::Registry).await;
}

#[tokio::test]
async fn amd64_ovmf_upgrade_and_manual_rollback() {
    upgrade_then_manual_rollback("qemu-amd64", "uefi").await;
}
