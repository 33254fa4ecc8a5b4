use std::sync::OnceLock;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::*;
use crate::config::{Patch, testing};

struct Base {
    controlplane: Config,
    worker: Config,
    /// A key belonging to no certificate of the base configs, base64 PEM.
    foreign_key: String,
}

fn base() -> &'static Base {
    static BASE: OnceLock<Base> = OnceLock::new();
    BASE.get_or_init(|| {
        let (controlplane, worker) = testing::lab();
        let other = pki::new_os_ca(SystemTime::now()).unwrap();
        Base {
            controlplane: controlplane.clone(),
            worker: worker.clone(),
            foreign_key: STANDARD.encode(other.key_pem),
        }
    })
}

fn lines(problems: &[Problem]) -> Vec<String> {
    problems.iter().map(ToString::to_string).collect()
}

/// Patches `config` and returns its errors and warnings in `mode`.
fn check_with(config: &Config, patch: &str, mode: ValidationMode) -> (Vec<String>, Vec<String>) {
    let patched = config.patch(&[Patch::parse(patch).unwrap()]).unwrap();
    let report = patched.validate(mode);
    (lines(&report.errors), lines(&report.warnings))
}

fn cp_errors(patch: &str) -> Vec<String> {
    check_with(&base().controlplane, patch, ValidationMode::Metal).0
}

fn worker_errors(patch: &str) -> Vec<String> {
    check_with(&base().worker, patch, ValidationMode::Metal).0
}

const JUNK_PEM: &str = "anVuaw=="; // base64("junk")

#[test]
fn generated_configs_are_clean_in_every_mode() {
    for config in [&base().controlplane, &base().worker] {
        for mode in [ValidationMode::Metal, ValidationMode::Cloud] {
            let report = config.validate(mode);
            assert_eq!(report, ValidationReport::default(), "{mode:?}");
        }
        let report = config.validate(ValidationMode::Container);
        assert!(report.errors.is_empty());
        assert_eq!(
            lines(&report.warnings),
            ["machine.install: ignored in container mode"]
        );
    }
}

#[test]
fn an_install_selector_the_node_cannot_follow_is_a_warning() {
    let patch = "machine:\n  install:\n    $patch: delete\n---\napiVersion: v1alpha1\nkind: UnattendedInstallConfig\nprovisioning:\n  diskSelector:\n    match: disk.size > 10u * GB\n";
    let (errors, warnings) = check_with(&base().worker, patch, ValidationMode::Metal);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        warnings,
        [
            r#"UnattendedInstallConfig.provisioning.diskSelector.match: "disk.size > 10u * GB" is not disk.dev_path == "/dev/...", the only selector talos-rs follows: the node will not install itself"#
        ]
    );
}

#[test]
fn board_config_overlay_names_are_plain_and_unique() {
    let patch =
        "apiVersion: v1alpha1\nkind: BoardConfig\noverlays: [disable-bt, ../x, disable-bt, \"\"]\n";
    assert_eq!(
        cp_errors(patch),
        [
            r#"BoardConfig.overlays[1]: "../x" is not an overlay name (letters, digits, - and _)"#,
            r#"BoardConfig.overlays[2]: "disable-bt" is listed twice"#,
            r#"BoardConfig.overlays[3]: "" is not an overlay name (letters, digits, - and _)"#,
        ]
    );
    assert!(
        cp_errors("apiVersion: v1alpha1\nkind: BoardConfig\noverlays: [i2c1-enable]\n").is_empty()
    );
}

#[test]
fn os_ca_errors() {
    assert_eq!(
        cp_errors("machine:\n  ca:\n    $patch: delete\n"),
        ["machine.ca.crt: is required"]
    );
    assert_eq!(
        cp_errors(&format!("machine:\n  ca:\n    crt: {JUNK_PEM}\n")),
        ["machine.ca.crt: No PEM block labelled CERTIFICATE found"]
    );
    assert_eq!(
        cp_errors(&format!(
            "machine:\n  ca:\n    key: {}\n",
            base().foreign_key
        )),
        ["machine.ca.key: does not match machine.ca.crt"]
    );
    assert_eq!(
        cp_errors(&format!("machine:\n  ca:\n    key: {JUNK_PEM}\n")),
        ["machine.ca.key: No PEM block labelled PRIVATE KEY found"]
    );
    assert_eq!(
        cp_errors("machine:\n  ca:\n    key:\n      $patch: delete\n"),
        [
            "machine.ca.key: is required on a control plane node (it signs client and worker certificates)"
        ]
    );
    assert_eq!(
        cp_errors(&format!(
            "machine:\n  acceptedCAs:\n    - crt: {JUNK_PEM}\n"
        )),
        ["machine.acceptedCAs[0].crt: No PEM block labelled CERTIFICATE found"]
    );
}

#[test]
fn token_errors() {
    assert_eq!(
        worker_errors("machine:\n  token: ABCDEF.0123456789abcdef\n"),
        ["machine.token: must have the form [a-z0-9]{6}.[a-z0-9]{16}"]
    );
    assert_eq!(
        worker_errors("machine:\n  token: ''\n"),
        ["machine.token: is required"]
    );
    assert_eq!(
        worker_errors("cluster:\n  token: abcdef0123456789abcdef\n"),
        ["cluster.token: must have the form [a-z0-9]{6}.[a-z0-9]{16}"]
    );
    assert_eq!(
        worker_errors("cluster:\n  token:\n    $patch: delete\n"),
        ["cluster.token: is required"]
    );
}

#[test]
fn endpoint_errors() {
    let cases = [
        (
            "http://10.0.0.2:6443",
            "\"http://10.0.0.2:6443\" must start with https://",
        ),
        (
            "https://10.0.0.2",
            "\"https://10.0.0.2\" has no port (e.g. https://10.0.0.2:6443)",
        ),
        (
            "https://10.0.0.2:http",
            "\"https://10.0.0.2:http\" has an invalid port \"http\"",
        ),
        ("''", "is required"),
    ];
    for (endpoint, message) in cases {
        assert_eq!(
            worker_errors(&format!(
                "cluster:\n  controlPlane:\n    endpoint: {endpoint}\n"
            )),
            [format!("cluster.controlPlane.endpoint: {message}")]
        );
    }
    assert_eq!(
        worker_errors("cluster:\n  $patch: delete\n"),
        [
            "cluster.controlPlane.endpoint: is required",
            "cluster.token: is required",
            "cluster.ca.crt: is required"
        ]
    );
}

#[test]
fn cluster_pki_errors() {
    let foreign = &base().foreign_key;
    assert_eq!(
        cp_errors(&format!("cluster:\n  ca:\n    key: {foreign}\n")),
        ["cluster.ca.key: does not match cluster.ca.crt"]
    );
    assert_eq!(
        cp_errors("cluster:\n  ca:\n    key:\n      $patch: delete\n"),
        ["cluster.ca.key: is required on a control plane node"]
    );
    assert_eq!(
        worker_errors("cluster:\n  ca:\n    $patch: delete\n"),
        ["cluster.ca.crt: is required"]
    );
    assert_eq!(
        cp_errors(&format!(
            "cluster:\n  acceptedCAs:\n    - crt: {JUNK_PEM}\n"
        )),
        ["cluster.acceptedCAs[0].crt: No PEM block labelled CERTIFICATE found"]
    );
    assert_eq!(
        cp_errors(&format!("cluster:\n  aggregatorCA:\n    key: {foreign}\n")),
        ["cluster.aggregatorCA.key: does not match cluster.aggregatorCA.crt"]
    );
    assert_eq!(
        cp_errors(&format!("cluster:\n  aggregatorCA:\n    crt: {JUNK_PEM}\n")),
        ["cluster.aggregatorCA.crt: No PEM block labelled CERTIFICATE found"]
    );
    assert_eq!(
        cp_errors("cluster:\n  etcd:\n    ca:\n      $patch: delete\n"),
        ["cluster.etcd.ca.crt: is required"]
    );
    assert_eq!(
        cp_errors(&format!(
            "cluster:\n  etcd:\n    ca:\n      key: {foreign}\n"
        )),
        ["cluster.etcd.ca.key: does not match cluster.etcd.ca.crt"]
    );
    assert_eq!(
        cp_errors("cluster:\n  serviceAccount:\n    $patch: delete\n"),
        ["cluster.serviceAccount.key: is required on a control plane node"]
    );
    assert_eq!(
        cp_errors(&format!(
            "cluster:\n  serviceAccount:\n    key: {JUNK_PEM}\n"
        )),
        ["cluster.serviceAccount.key: No PEM block labelled PRIVATE KEY found"]
    );
}

#[test]
fn secret_errors() {
    assert_eq!(
        cp_errors("cluster:\n  secretboxEncryptionSecret: c2hvcnQ=\n"),
        [
            "cluster.secretboxEncryptionSecret: must be 32 bytes, base64-encoded; it decodes to 5 bytes"
        ]
    );
    // cluster.id is only an identifier; Talos before 1.14 generated it in URL-safe base64.
    assert!(cp_errors("cluster:\n  id: Zm9v-YmFy_YmF6\n").is_empty());
    assert_eq!(
        cp_errors("cluster:\n  secret: c2hvcnQ=\n"),
        ["cluster.secret: must be 32 bytes, base64-encoded; it decodes to 5 bytes"]
    );
    assert_eq!(
        cp_errors("cluster:\n  aescbcEncryptionSecret: c2hvcnQ=\n"),
        ["cluster.aescbcEncryptionSecret: must be 32 bytes, base64-encoded; it decodes to 5 bytes"]
    );
    assert_eq!(
        cp_errors("cluster:\n  secretboxEncryptionSecret:\n    $patch: delete\n"),
        [
            "cluster.secretboxEncryptionSecret: is required on a control plane node (or cluster.aescbcEncryptionSecret)"
        ]
    );
}

#[test]
fn cluster_network_errors() {
    assert_eq!(
        worker_errors(
            "cluster:\n  network:\n    podSubnets: [10.244.0.0/33, 10.244.0.1/16, nope]\n"
        ),
        [
            "cluster.network.podSubnets[0]: \"10.244.0.0/33\" is not a subnet in CIDR notation",
            "cluster.network.podSubnets[1]: \"10.244.0.1/16\" has host bits set; write the network address",
            "cluster.network.podSubnets[2]: \"nope\" is not a subnet in CIDR notation",
        ]
    );
    assert_eq!(
        worker_errors(
            "cluster:\n  network:\n    serviceSubnets: [10.244.128.0/24, 'fd00::/108']\n"
        ),
        [
            "cluster.network.serviceSubnets[0]: 10.244.128.0/24 overlaps cluster.network.podSubnets[0] (10.244.0.0/16)"
        ]
    );
    assert_eq!(
        worker_errors("cluster:\n  network:\n    dnsDomain: -bad.\n"),
        ["cluster.network.dnsDomain: \"-bad.\" is not a valid domain name"]
    );
    assert_eq!(
        cp_errors(
            "cluster:\n  etcd:\n    advertisedSubnets: ['!10.0.0.0/8', 10.0.0.0]\n    listenSubnets: [x]\n"
        ),
        [
            "cluster.etcd.advertisedSubnets[1]: \"10.0.0.0\" is not a subnet in CIDR notation (optionally prefixed with !)",
            "cluster.etcd.listenSubnets[0]: \"x\" is not a subnet in CIDR notation (optionally prefixed with !)",
        ]
    );
}

#[test]
fn discovery_endpoint_errors() {
    let cases = [
        (
            "ftp://d.example/",
            "\"ftp://d.example/\" must use https or http",
        ),
        ("https:///x", "\"https:///x\" has no host"),
        (
            "https://d.example:0/",
            "\"https://d.example:0/\" has an invalid port \"0\"",
        ),
        ("d.example", "\"d.example\" is not a URL"),
        (
            "https://[::1/",
            "\"https://[::1/\" has an unclosed IPv6 bracket",
        ),
    ];
    for (endpoint, message) in cases {
        assert_eq!(
            worker_errors(&format!(
                "cluster:\n  discovery:\n    registries:\n      service:\n        endpoint: '{endpoint}'\n"
            )),
            [format!(
                "cluster.discovery.registries.service.endpoint: {message}"
            )],
        );
    }
    assert!(worker_errors("cluster:\n  discovery:\n    registries:\n      service:\n        endpoint: 'https://[fd00::1]:8443/'\n").is_empty());
}

#[test]
fn interface_errors() {
    let errors = worker_errors(
        "machine:
  network:
    nameservers: [1.1.1.1, dns.example]
    interfaces:
      - interface: eth0
        addresses: [10.0.0.2/24, 10.0.0.3]
        dhcp: true
        mtu: 10
        routes:
          - network: 0.0.0.0/0
            gateway: 10.0.0.1
          - network: 10.1.0.0/40
            gateway: gw
      - interface: eth0
        vlans:
          - vlanId: 5
        bond:
          interfaces: [eth1, eth2]
      - dhcp: true
      - interface: eth3
        deviceSelector:
          hardwareAddr: 'aa:*'
      - deviceSelector:
          hardwareAddr: 'bb:*'
        bridge:
          interfaces: [eth4]
      - deviceSelector:
          hardwareAddr: 'bb:*'
        wireguard: {}
        vip:
          ip: 10.0.0.100
        bridgePort:
          master: br0
",
    );
    assert_eq!(
        errors,
        [
            "machine.network.interfaces[0].addresses[1]: \"10.0.0.3\" is not an address in CIDR notation",
            "machine.network.interfaces[0].mtu: 10 is outside 68..65535",
            "machine.network.interfaces[0].routes[1].network: \"10.1.0.0/40\" is not a subnet in CIDR notation",
            "machine.network.interfaces[0].routes[1].gateway: \"gw\" is not an IP address",
            "machine.network.interfaces[1]: interface \"eth0\" is already configured at machine.network.interfaces[0]; merge the two entries",
            "machine.network.interfaces[1].bond: bond is not supported yet by talos-rs",
            "machine.network.interfaces[1].vlans: vlans is not supported yet by talos-rs",
            "machine.network.interfaces[2]: one of interface or deviceSelector is required",
            "machine.network.interfaces[3]: interface and deviceSelector are mutually exclusive",
            "machine.network.interfaces[4].bridge: bridge is not supported yet by talos-rs",
            "machine.network.interfaces[5]: this deviceSelector is already configured at machine.network.interfaces[4]; merge the two entries",
            "machine.network.interfaces[5].bridgePort: bridgePort is not supported yet by talos-rs",
            "machine.network.interfaces[5].wireguard: wireguard is not supported yet by talos-rs",
            "machine.network.interfaces[5].vip: vip is not supported yet by talos-rs",
            "machine.network.nameservers[1]: \"dns.example\" is not an IP address",
        ]
    );
    // The deprecated single address still works, with a warning; DHCP plus static is allowed.
    let (errors, warnings) = check_with(
        &base().worker,
        "machine:\n  network:\n    hostname: -x\n    interfaces:\n      - interface: eth0\n        cidr: 10.0.0.2/24\n        dhcp: true\n      - interface: eth1\n        cidr: bad\n",
        ValidationMode::Metal,
    );
    assert_eq!(
        errors,
        [
            "machine.network.hostname: \"-x\" is not a valid host name",
            "machine.network.interfaces[1].cidr: \"bad\" is not an address in CIDR notation",
            "machine.network.hostname: conflicts with the HostnameConfig document; set the hostname in one place",
        ]
    );
    assert_eq!(
        warnings,
        [
            "machine.network.interfaces[0].cidr: deprecated: use addresses",
            "machine.network.interfaces[1].cidr: deprecated: use addresses",
        ]
    );
}

#[test]
fn install_checks_depend_on_mode() {
    let no_disk = "machine:\n  install:\n    disk:\n      $patch: delete\n";
    assert_eq!(
        worker_errors(no_disk),
        ["machine.install.disk: an install disk or disk selector is required in metal mode"]
    );
    assert!(
        check_with(&base().worker, no_disk, ValidationMode::Cloud)
            .0
            .is_empty()
    );
    let (errors, warnings) = check_with(&base().worker, no_disk, ValidationMode::Container);
    assert!(errors.is_empty());
    assert_eq!(warnings, ["machine.install: ignored in container mode"]);
    // Without machine.install nothing is installed (UnattendedInstallConfig may do it instead).
    assert!(worker_errors("machine:\n  install:\n    $patch: delete\n").is_empty());
    let selector = "machine:\n  install:\n    disk:\n      $patch: delete\n    diskSelector:\n      size: '> 10GB'\n";
    assert!(worker_errors(selector).is_empty());
    let (_, warnings) = check_with(
        &base().worker,
        "machine:\n  install:\n    extensions:\n      - image: ghcr.io/siderolabs/gvisor:1\n",
        ValidationMode::Metal,
    );
    assert_eq!(
        warnings,
        [
            "machine.install.extensions: deprecated: build the installer image with the extensions instead"
        ]
    );
}

#[test]
fn feature_logging_and_deprecation_findings() {
    let (errors, warnings) = check_with(
        &base().controlplane,
        "machine:
  features:
    rbac: false
    kubePrism:
      port: 0
  logging:
    destinations:
      - endpoint: udp://10.0.0.1:514
        format: json_lines
      - endpoint: http://10.0.0.1:80
      - endpoint: tcp://10.0.0.1
      - format: json_lines
cluster:
  allowSchedulingOnMasters: true
  etcd:
    subnet: 10.0.0.0/8
",
        ValidationMode::Metal,
    );
    assert_eq!(
        errors,
        [
            "machine.features.kubePrism.port: must not be 0 when KubePrism is enabled",
            "machine.logging.destinations[1].endpoint: \"http://10.0.0.1:80\" must use tcp or udp",
            "machine.logging.destinations[2].endpoint: \"tcp://10.0.0.1\" has no port",
            "machine.logging.destinations[3].endpoint: is required",
        ]
    );
    assert_eq!(
        warnings,
        [
            "cluster.etcd.subnet: deprecated: use cluster.etcd.advertisedSubnets",
            "cluster.allowSchedulingOnMasters: deprecated: use cluster.allowSchedulingOnControlPlanes",
            "machine.features.rbac: RBAC is off: every client certificate signed by the OS CA acts as os:admin",
        ]
    );
}

#[test]
fn multi_document_checks() {
    // The generated config already carries `HostnameConfig {auto: stable}`.
    assert_eq!(
        worker_errors("apiVersion: v1alpha1\nkind: HostnameConfig\nhostname: -h\n"),
        [
            "HostnameConfig: hostname and auto: stable are mutually exclusive",
            "HostnameConfig.hostname: \"-h\" is not a valid host name",
        ]
    );
    // `auto: off` goes with a static name, and `stableHostname: false` asks for nothing.
    assert!(
        worker_errors(
            "machine:\n  features:\n    stableHostname: false\n---\napiVersion: v1alpha1\nkind: HostnameConfig\nhostname: node-7\nauto: 'off'\n"
        )
        .is_empty()
    );
    assert_eq!(
        worker_errors("apiVersion: v1alpha1\nkind: HostnameConfig\nauto:\n  $patch: delete\n"),
        ["HostnameConfig: one of hostname or auto is required"]
    );
    assert_eq!(
        worker_errors(
            "machine:\n  network:\n    hostname: n1\n  features:\n    stableHostname: true\n"
        ),
        [
            "machine.network.hostname: conflicts with the HostnameConfig document; set the hostname in one place",
            "machine.features.stableHostname: conflicts with the HostnameConfig document; use its auto field",
        ]
    );
    assert_eq!(
        worker_errors(
            "machine:\n  time:\n    servers: [pool.ntp.org]\n---\napiVersion: v1alpha1\nkind: TimeSyncConfig\nbootTimeout: 2 minutes\nntp:\n  servers: [time.cloudflare.com]\nptp:\n  devices: [/dev/ptp0]\n"
        ),
        [
            "TimeSyncConfig: ntp and ptp are mutually exclusive",
            "TimeSyncConfig.bootTimeout: \"2 minutes\" is not a duration (e.g. 2m30s)",
            "machine.time.servers: conflicts with the TimeSyncConfig document; configure time sync in one place",
        ]
    );
    assert!(
        worker_errors(
            "machine:\n  time:\n    disabled: false\n---\napiVersion: v1alpha1\nkind: TimeSyncConfig\nenabled: true\n"
        )
        .is_empty()
    );
    assert_eq!(
        worker_errors(
            "machine:\n  network:\n    nameservers: [1.1.1.1]\n---\napiVersion: v1alpha1\nkind: ResolverConfig\nnameservers:\n  - address: 9.9.9.9\n  - address: dns.quad9.net\n"
        ),
        [
            "ResolverConfig.nameservers[1].address: \"dns.quad9.net\" is not an IP address",
            "machine.network.nameservers: conflicts with the ResolverConfig document; configure DNS in one place",
        ]
    );
    // The generated worker has machine.features.hostDNS.
    assert_eq!(
        worker_errors(
            "machine:\n  network:\n    searchDomains: [lab.example]\n    disableSearchDomain: true\n---\napiVersion: v1alpha1\nkind: ResolverConfig\nhostDNS:\n  resolveMemberNames: true\n"
        ),
        [
            "machine.network.searchDomains: conflicts with the ResolverConfig document; configure DNS in one place",
            "machine.network.disableSearchDomain: conflicts with the ResolverConfig document; configure DNS in one place",
            "machine.features.hostDNS: conflicts with ResolverConfig.hostDNS; configure host DNS in one place",
        ]
    );
    // Duplicates cannot be decoded; a config assembled in code is still checked.
    let mut config = base().worker.clone();
    config.documents.push(config.documents[0].clone());
    assert_eq!(
        lines(&config.validate(ValidationMode::Metal).errors),
        ["HostnameConfig: duplicate document"]
    );
}

#[test]
fn go_durations_and_cidrs() {
    for ok in [
        "0",
        "1s",
        "2m30s",
        "1.5h",
        "300ms",
        "10us",
        "10µs",
        "1h2m3s4ms",
    ] {
        assert!(parse_go_duration(ok).is_some(), "{ok}");
    }
    for bad in ["", "1", "s", "1d", "-1s", "1 s", "1s "] {
        assert!(parse_go_duration(bad).is_none(), "{bad}");
    }
    let c = |s: &str| Cidr::parse(s).unwrap();
    assert!(c("10.0.0.0/8").overlaps(&c("10.1.0.0/16")));
    assert!(!c("10.0.0.0/16").overlaps(&c("10.1.0.0/16")));
    assert!(c("0.0.0.0/0").overlaps(&c("192.168.1.0/24")));
    assert!(c("fd00::/8").overlaps(&c("fd12::/16")));
    assert!(!c("fd00::/8").overlaps(&c("10.0.0.0/8")));
    assert!(c("::/0").is_network());
    assert!(!c("fd00::1/64").is_network());
    for bad in [
        "10.0.0.0/",
        "10.0.0.0/+8",
        "10.0.0.0/33",
        "::/129",
        "x/8",
        "10.0.0.0",
    ] {
        assert!(Cidr::parse(bad).is_none(), "{bad}");
    }
}

#[test]
fn link_documents_are_checked_and_unsupported_link_kinds_refused() {
    let patch = "machine:
  network:
    interfaces:
      - interface: eth0
        dhcp: true
---
apiVersion: v1alpha1
kind: LinkConfig
name: eth0
addresses:
  - address: 10.0.0.2/24
  - address: 10.0.0.3
routes:
  - gateway: 10.0.0.1
  - destination: 10.9.0.0/40
    gateway: gw
---
apiVersion: v1alpha1
kind: VLANConfig
name: eth0.5
vlanID: 5
parent: eth0
";
    let (errors, warnings) = check_with(&base().worker, patch, ValidationMode::Metal);
    assert_eq!(
        errors,
        [
            "VLANConfig[eth0.5]: VLANConfig is not supported yet by talos-rs",
            "LinkConfig[eth0].addresses[1].address: \"10.0.0.3\" is not an address in CIDR notation",
            "LinkConfig[eth0].routes[1].destination: \"10.9.0.0/40\" is not a subnet in CIDR notation",
            "LinkConfig[eth0].routes[1].gateway: \"gw\" is not an IP address",
        ]
    );
    assert_eq!(
        warnings,
        [
            "LinkConfig[eth0]: also configured at machine.network.interfaces[0]; both apply, this document last"
        ]
    );
}

#[test]
fn the_endpoint_is_set_once_in_either_layout() {
    let document = "---\napiVersion: v1alpha1\nkind: KubeClusterConfig\nendpoint: ";
    let both = format!("{document}https://10.0.0.9:6443\n");
    assert_eq!(
        worker_errors(&both),
        [
            "cluster.controlPlane.endpoint: conflicts with KubeClusterConfig.endpoint; set it in one place"
        ]
    );
    let moved =
        format!("cluster:\n  controlPlane:\n    $patch: delete\n{document}http://10.0.0.9\n");
    assert_eq!(
        worker_errors(&moved),
        ["KubeClusterConfig.endpoint: \"http://10.0.0.9\" must start with https://"]
    );
}

#[test]
fn static_hosts_must_be_ip_addresses() {
    let patch = "machine:
  network:
    extraHostEntries:
      - ip: 10.0.0.9
        aliases: [registry.lab]
---
apiVersion: v1alpha1
kind: StaticHostConfig
name: registry.lab
hostnames: [mirror]
";
    let (errors, _) = check_with(&base().worker, patch, ValidationMode::Metal);
    assert_eq!(
        errors,
        ["StaticHostConfig[registry.lab].name: \"registry.lab\" is not an IP address"]
    );
}
