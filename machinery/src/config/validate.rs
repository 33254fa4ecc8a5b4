//! Semantic checks of a parsed config, per runtime mode. Errors make a config unusable; warnings
//! point at deprecated or ignored settings. Every finding names its YAML path.

use std::fmt;
use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::kinds::{KubeClusterConfig, LinkConfig};
use super::v1alpha1::{HostDns, Interface, PemPair};
use super::{AutoHostname, Config, ConfigError, Document, EndpointUrl, MachineType};
use crate::duration::parse_go_duration;
use crate::pki;

/// The runtime mode a config is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValidationMode {
    /// Bare metal or SBC: an install disk is required.
    Metal,
    /// Inside a container: install and disk settings are ignored.
    Container,
    /// A cloud VM: the platform provides the disk.
    Cloud,
}

/// One finding, tied to a YAML path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted YAML path, e.g. `machine.ca.crt`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Errors make the config unusable; warnings do not.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ValidationReport {
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

impl ValidationReport {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }

    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    fn warning(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }
}

const TOKEN_FORMAT: &str = "must have the form [a-z0-9]{6}.[a-z0-9]{16}";

impl Config {
    /// Checks the config for `mode`.
    pub fn validate(&self, mode: ValidationMode) -> ValidationReport {
        let mut report = ValidationReport::default();
        let control_plane = self.machine_type() == MachineType::ControlPlane;
        check_machine_pki(self, &mut report);
        check_cluster(self, control_plane, &mut report);
        check_network(self, &mut report);
        check_install(self, mode, &mut report);
        check_features(self, &mut report);
        check_logging(self, &mut report);
        check_documents(self, &mut report);
        report
    }
}

fn check_machine_pki(config: &Config, report: &mut ValidationReport) {
    let machine = &config.v1alpha1.machine;
    match config.os_ca() {
        Ok(Some(ca)) => match ca.key_pem.as_deref() {
            Some(key) => check_key_matches(&ca.cert_pem, key, "machine.ca", report),
            None if config.machine_type() == MachineType::ControlPlane => report.error(
                "machine.ca.key",
                "is required on a control plane node (it signs client and worker certificates)",
            ),
            None => {}
        },
        Ok(None) => report.error("machine.ca.crt", "is required"),
        Err(ConfigError::Pem { source, .. }) => report.error("machine.ca.crt", source.to_string()),
        Err(e) => report.error("machine.ca.crt", e.to_string()),
    }
    for (i, ca) in machine.accepted_cas.iter().enumerate() {
        if let Err(e) = pki::pem_to_der_certs(ca.crt.as_str()) {
            report.error(format!("machine.acceptedCAs[{i}].crt"), e.to_string());
        }
    }
    check_token(machine.token.as_deref(), "machine.token", report);
}

fn check_token(token: Option<&str>, path: &str, report: &mut ValidationReport) {
    match token {
        None | Some("") => report.error(path, "is required"),
        Some(token) if !pki::is_valid_token(token) => report.error(path, TOKEN_FORMAT),
        Some(_) => {}
    }
}

fn check_key_matches(cert_pem: &str, key_pem: &str, path: &str, report: &mut ValidationReport) {
    match pki::key_matches_cert(cert_pem, key_pem) {
        Ok(true) => {}
        Ok(false) => report.error(format!("{path}.key"), format!("does not match {path}.crt")),
        Err(e) => report.error(format!("{path}.key"), e.to_string()),
    }
}

/// A CA pair: the certificate must parse; the key, when present (or `key_required`), must match.
fn check_ca(pair: Option<&PemPair>, path: &str, key_required: bool, report: &mut ValidationReport) {
    let Some(pair) = pair.filter(|p| !p.crt.is_empty()) else {
        report.error(format!("{path}.crt"), "is required");
        return;
    };
    if let Err(e) = pki::pem_to_der_certs(pair.crt.as_str()) {
        report.error(format!("{path}.crt"), e.to_string());
        return;
    }
    match pair.key() {
        Some(key) => check_key_matches(pair.crt.as_str(), key, path, report),
        None if key_required => {
            report.error(format!("{path}.key"), "is required on a control plane node")
        }
        None => {}
    }
}

/// Base64 (standard alphabet) of exactly 32 bytes.
fn check_secret32(value: Option<&str>, path: &str, report: &mut ValidationReport) {
    let Some(value) = value else { return };
    match STANDARD.decode(value) {
        Ok(bytes) if bytes.len() == 32 => {}
        Ok(bytes) => report.error(
            path,
            format!(
                "must be 32 bytes, base64-encoded; it decodes to {} bytes",
                bytes.len()
            ),
        ),
        Err(e) => report.error(path, format!("is not valid base64: {e}")),
    }
}

/// The control-plane endpoint, set once: in v1alpha1 or in `KubeClusterConfig`.
fn check_endpoint(config: &Config, report: &mut ValidationReport) {
    const V1ALPHA1: &str = "cluster.controlPlane.endpoint";
    const DOCUMENT: &str = "KubeClusterConfig.endpoint";
    let in_v1alpha1 = config
        .v1alpha1
        .cluster
        .as_ref()
        .and_then(|c| c.control_plane.as_ref())
        .and_then(|cp| cp.endpoint.clone())
        .filter(|e| !e.is_empty());
    let in_document = config
        .document::<KubeClusterConfig>()
        .ok()
        .flatten()
        .map(|k| k.endpoint.unwrap_or_default());
    let (path, url) = match (in_v1alpha1, in_document) {
        (Some(_), Some(e)) if !e.is_empty() => {
            return report.error(
                V1ALPHA1,
                format!("conflicts with {DOCUMENT}; set it in one place"),
            );
        }
        (Some(url), _) => (V1ALPHA1, url),
        (None, Some(url)) => (DOCUMENT, url),
        (None, None) => return report.error(V1ALPHA1, "is required"),
    };
    if url.is_empty() {
        report.error(path, "is required");
    } else if let Err(message) = EndpointUrl::parse(&url) {
        report.error(path, message);
    }
}

fn check_cluster(config: &Config, control_plane: bool, report: &mut ValidationReport) {
    // In the v1.14 layout these settings live in their own documents.
    let split_ca = config.has_kind("KubeAPIServerCAConfig");
    let split_service_account = config.has_kind("KubeServiceAccountConfig");
    let split_encryption = config.has_kind("KubeEtcdEncryptionConfig");
    check_endpoint(config, report);
    let Some(cluster) = config.v1alpha1.cluster.as_ref() else {
        report.error("cluster.token", "is required");
        if !split_ca {
            report.error("cluster.ca.crt", "is required");
        }
        return;
    };
    check_token(cluster.token.as_deref(), "cluster.token", report);
    if !(split_ca && cluster.ca.is_none()) {
        check_ca(cluster.ca.as_ref(), "cluster.ca", control_plane, report);
    }
    for (i, ca) in cluster.accepted_cas.iter().enumerate() {
        if let Err(e) = pki::pem_to_der_certs(ca.crt.as_str()) {
            report.error(format!("cluster.acceptedCAs[{i}].crt"), e.to_string());
        }
    }
    if let Some(aggregator) = cluster.aggregator_ca.as_ref() {
        check_ca(
            Some(aggregator),
            "cluster.aggregatorCA",
            control_plane,
            report,
        );
    }
    if let Some(lifetime) = cluster
        .admin_kubeconfig
        .as_ref()
        .and_then(|a| a.cert_lifetime.as_deref())
    {
        match parse_go_duration(lifetime) {
            None => report.error(
                "cluster.adminKubeconfig.certLifetime",
                format!("{lifetime:?} is not a duration (e.g. 8760h)"),
            ),
            Some(d) if d.is_zero() => {
                report.error("cluster.adminKubeconfig.certLifetime", "must be positive")
            }
            Some(_) => {}
        }
    }
    // cluster.id is an opaque identifier: generators before Talos 1.14 wrote URL-safe base64.
    check_secret32(cluster.secret.as_deref(), "cluster.secret", report);
    check_secret32(
        cluster.secretbox_encryption_secret.as_deref(),
        "cluster.secretboxEncryptionSecret",
        report,
    );
    check_secret32(
        cluster.aescbc_encryption_secret.as_deref(),
        "cluster.aescbcEncryptionSecret",
        report,
    );
    if control_plane {
        match cluster
            .service_account
            .as_ref()
            .filter(|k| !k.key.is_empty())
        {
            None if split_service_account => {}
            None => report.error(
                "cluster.serviceAccount.key",
                "is required on a control plane node",
            ),
            Some(key) => {
                if let Err(e) = pki::parse_private_key(key.key.as_str()) {
                    report.error("cluster.serviceAccount.key", e.to_string());
                }
            }
        }
        check_ca(
            cluster.etcd.as_ref().and_then(|e| e.ca.as_ref()),
            "cluster.etcd.ca",
            true,
            report,
        );
        if cluster.secretbox_encryption_secret.is_none()
            && cluster.aescbc_encryption_secret.is_none()
            && !split_encryption
        {
            report.error(
                "cluster.secretboxEncryptionSecret",
                "is required on a control plane node (or cluster.aescbcEncryptionSecret)",
            );
        }
    }

    if let Some(network) = cluster.network.as_ref() {
        let pods = check_cidrs(&network.pod_subnets, "cluster.network.podSubnets", report);
        let services = check_cidrs(
            &network.service_subnets,
            "cluster.network.serviceSubnets",
            report,
        );
        for (i, service) in &services {
            for (j, pod) in &pods {
                if service.overlaps(pod) {
                    report.error(
                        format!("cluster.network.serviceSubnets[{i}]"),
                        format!("{service} overlaps cluster.network.podSubnets[{j}] ({pod})"),
                    );
                }
            }
        }
        if let Some(domain) = network.dns_domain.as_deref()
            && !is_valid_hostname(domain)
        {
            report.error(
                "cluster.network.dnsDomain",
                format!("{domain:?} is not a valid domain name"),
            );
        }
    }
    if let Some(etcd) = cluster.etcd.as_ref() {
        for (field, subnets) in [
            ("advertisedSubnets", &etcd.advertised_subnets),
            ("listenSubnets", &etcd.listen_subnets),
        ] {
            for (i, subnet) in subnets.iter().enumerate() {
                let bare = subnet.strip_prefix('!').unwrap_or(subnet);
                if Cidr::parse(bare).is_none() {
                    report.error(
                        format!("cluster.etcd.{field}[{i}]"),
                        format!("{subnet:?} is not a subnet in CIDR notation (optionally prefixed with !)"),
                    );
                }
            }
        }
        if etcd.subnet.is_some() {
            report.warning(
                "cluster.etcd.subnet",
                "deprecated: use cluster.etcd.advertisedSubnets",
            );
        }
    }
    if let Some(endpoint) = cluster
        .discovery
        .as_ref()
        .and_then(|d| d.registries.as_ref())
        .and_then(|r| r.service.as_ref())
        .and_then(|s| s.endpoint.as_deref())
        && let Err(message) = check_url(endpoint, &["https", "http"])
    {
        report.error("cluster.discovery.registries.service.endpoint", message);
    }
    if cluster.allow_scheduling_on_masters.is_some() {
        report.warning(
            "cluster.allowSchedulingOnMasters",
            "deprecated: use cluster.allowSchedulingOnControlPlanes",
        );
    }
}

/// Parses every entry; reports the bad ones and returns the good ones with their index.
fn check_cidrs(values: &[String], path: &str, report: &mut ValidationReport) -> Vec<(usize, Cidr)> {
    let mut good = Vec::new();
    for (i, value) in values.iter().enumerate() {
        match Cidr::parse(value) {
            Some(cidr) if cidr.is_network() => good.push((i, cidr)),
            Some(_) => report.error(
                format!("{path}[{i}]"),
                format!("{value:?} has host bits set; write the network address"),
            ),
            None => report.error(
                format!("{path}[{i}]"),
                format!("{value:?} is not a subnet in CIDR notation"),
            ),
        }
    }
    good
}

fn check_network(config: &Config, report: &mut ValidationReport) {
    if let Some(hostname) = config
        .v1alpha1
        .machine
        .network
        .as_ref()
        .and_then(|n| n.hostname.as_deref())
        && !is_valid_hostname(hostname)
    {
        report.error(
            "machine.network.hostname",
            format!("{hostname:?} is not a valid host name"),
        );
    }
    let interfaces = config
        .v1alpha1
        .machine
        .network
        .as_ref()
        .map_or(&[][..], |n| n.interfaces.as_slice());
    for (i, interface) in interfaces.iter().enumerate() {
        check_interface(interfaces, i, interface, report);
    }
    check_link_documents(config, interfaces, report);
    if let Err(bad) = config.host_entries() {
        report.error(bad.path, format!("{:?} is not an IP address", bad.value));
    }
    if let Some(network) = config.v1alpha1.machine.network.as_ref() {
        for (i, server) in network.nameservers.iter().enumerate() {
            if server.parse::<IpAddr>().is_err() {
                report.error(
                    format!("machine.network.nameservers[{i}]"),
                    format!("{server:?} is not an IP address"),
                );
            }
        }
    }
}

fn check_interface(
    all: &[Interface],
    i: usize,
    interface: &Interface,
    report: &mut ValidationReport,
) {
    let path = format!("machine.network.interfaces[{i}]");
    match (&interface.interface, &interface.device_selector) {
        (None, None) => report.error(&path, "one of interface or deviceSelector is required"),
        (Some(_), Some(_)) => {
            report.error(&path, "interface and deviceSelector are mutually exclusive")
        }
        _ => {}
    }
    let earlier = all[..i].iter().position(|other| {
        (interface.interface.is_some() && other.interface == interface.interface)
            || (interface.device_selector.is_some()
                && other.device_selector == interface.device_selector)
    });
    if let Some(j) = earlier {
        let what = match &interface.interface {
            Some(name) => format!("interface {name:?}"),
            None => "this deviceSelector".to_owned(),
        };
        report.error(
            &path,
            format!("{what} is already configured at machine.network.interfaces[{j}]; merge the two entries"),
        );
    }
    // Link kinds talos-rs cannot configure yet; upstream accepts them.
    for (field, present) in [
        ("bond", interface.bond.is_some()),
        ("bridge", interface.bridge.is_some()),
        ("bridgePort", interface.bridge_port.is_some()),
        ("vlans", interface.vlans.is_some()),
        ("wireguard", interface.wireguard.is_some()),
        ("vip", interface.vip.is_some()),
    ] {
        if present {
            report.error(
                format!("{path}.{field}"),
                format!("{field} is not supported yet by talos-rs"),
            );
        }
    }
    for (j, address) in interface.addresses.iter().enumerate() {
        if Cidr::parse(address).is_none() {
            report.error(
                format!("{path}.addresses[{j}]"),
                format!("{address:?} is not an address in CIDR notation"),
            );
        }
    }
    if let Some(cidr) = interface.cidr.as_deref() {
        report.warning(format!("{path}.cidr"), "deprecated: use addresses");
        if Cidr::parse(cidr).is_none() {
            report.error(
                format!("{path}.cidr"),
                format!("{cidr:?} is not an address in CIDR notation"),
            );
        }
    }
    if let Some(mtu) = interface.mtu
        && !(68..=65_535).contains(&mtu)
    {
        report.error(format!("{path}.mtu"), format!("{mtu} is outside 68..65535"));
    }
    for (j, route) in interface.routes.iter().flatten().enumerate() {
        let route_path = format!("{path}.routes[{j}]");
        check_route(
            &route_path,
            ("network", &route.network),
            &route.gateway,
            report,
        );
    }
}

/// A route's destination (`field`) is a subnet and its gateway an IP address; absent or empty
/// values mean the default route and no gateway.
fn check_route(
    path: &str,
    (field, destination): (&str, &Option<String>),
    gateway: &Option<String>,
    report: &mut ValidationReport,
) {
    if let Some(destination) = destination.as_deref().filter(|d| !d.is_empty())
        && Cidr::parse(destination).is_none()
    {
        report.error(
            format!("{path}.{field}"),
            format!("{destination:?} is not a subnet in CIDR notation"),
        );
    }
    if let Some(gateway) = gateway.as_deref().filter(|g| !g.is_empty())
        && gateway.parse::<IpAddr>().is_err()
    {
        report.error(
            format!("{path}.gateway"),
            format!("{gateway:?} is not an IP address"),
        );
    }
}

/// Link kinds whose links talos-rs cannot create yet; upstream accepts them.
const UNSUPPORTED_LINK_KINDS: &[&str] = &[
    "BondConfig",
    "BridgeConfig",
    "VLANConfig",
    "DummyLinkConfig",
    "VRFConfig",
    "VethConfig",
    "WireguardConfig",
    "Layer2VIPConfig",
    "HCloudVIPConfig",
];

/// `LinkConfig` addresses and routes, links also set in v1alpha1, and link kinds the node
/// cannot create.
fn check_link_documents(config: &Config, interfaces: &[Interface], report: &mut ValidationReport) {
    for document in &config.documents {
        if UNSUPPORTED_LINK_KINDS.contains(&document.kind()) {
            report.error(
                document.label(),
                format!("{} is not supported yet by talos-rs", document.kind()),
            );
        }
    }
    for link in config.documents_of::<LinkConfig>().unwrap_or_default() {
        let path = format!("LinkConfig[{}]", link.name);
        if let Some(i) = interfaces
            .iter()
            .position(|i| i.interface.as_deref() == Some(link.name.as_str()))
        {
            report.warning(
                &path,
                format!("also configured at machine.network.interfaces[{i}]; both apply, this document last"),
            );
        }
        for (j, address) in link.addresses.iter().enumerate() {
            if let Some(text) = &address.address
                && Cidr::parse(text).is_none()
            {
                report.error(
                    format!("{path}.addresses[{j}].address"),
                    format!("{text:?} is not an address in CIDR notation"),
                );
            }
        }
        for (j, route) in link.routes.iter().enumerate() {
            let route_path = format!("{path}.routes[{j}]");
            check_route(
                &route_path,
                ("destination", &route.destination),
                &route.gateway,
                report,
            );
        }
    }
}

/// `machine.install` is optional (Talos 1.14 deprecates it for `UnattendedInstallConfig`); when
/// present in metal mode it must name a disk.
fn check_install(config: &Config, mode: ValidationMode, report: &mut ValidationReport) {
    let install = config.install();
    let lacks_disk = install
        .is_some_and(|i| i.disk.as_deref().is_none_or(str::is_empty) && i.disk_selector.is_none());
    match mode {
        ValidationMode::Metal if lacks_disk => report.error(
            "machine.install.disk",
            "an install disk or disk selector is required in metal mode",
        ),
        ValidationMode::Container if install.is_some() => {
            report.warning("machine.install", "ignored in container mode")
        }
        _ => {}
    }
    if mode == ValidationMode::Metal
        && let Err(ConfigError::UnsupportedDiskSelector(expression)) = config.install_disk()
    {
        report.warning(
            "UnattendedInstallConfig.provisioning.diskSelector.match",
            format!(
                "{expression:?} is not disk.dev_path == \"/dev/...\", the only selector talos-rs follows: the node will not install itself"
            ),
        );
    }
    if install.is_some_and(|i| i.extensions.is_some()) {
        report.warning(
            "machine.install.extensions",
            "deprecated: build the installer image with the extensions instead",
        );
    }
}

fn check_features(config: &Config, report: &mut ValidationReport) {
    let Some(features) = config.v1alpha1.machine.features.as_ref() else {
        return;
    };
    if features.rbac == Some(false) {
        report.warning(
            "machine.features.rbac",
            "RBAC is off: every client certificate signed by the OS CA acts as os:admin",
        );
    }
    if let Some(prism) = features.kube_prism.as_ref()
        && prism.enabled == Some(true)
        && prism.port == Some(0)
    {
        report.error(
            "machine.features.kubePrism.port",
            "must not be 0 when KubePrism is enabled",
        );
    }
}

fn check_logging(config: &Config, report: &mut ValidationReport) {
    let Some(logging) = &config.v1alpha1.machine.logging else {
        return;
    };
    for (i, destination) in logging.destinations.iter().enumerate() {
        let path = format!("machine.logging.destinations[{i}].endpoint");
        match destination.endpoint.as_deref() {
            None => report.error(path, "is required"),
            Some(url) => match check_url(url, &["tcp", "udp"]) {
                Ok(Some(_)) => {}
                Ok(None) => report.error(path, format!("{url:?} has no port")),
                Err(message) => report.error(path, message),
            },
        }
    }
}

/// A file name under `overlays/` without its `.dtbo`: no paths, no dots.
fn is_overlay_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn check_documents(config: &Config, report: &mut ValidationReport) {
    for (i, document) in config.documents.iter().enumerate() {
        let label = document.label();
        if config.documents[..i]
            .iter()
            .any(|d| d.kind() == document.kind() && d.name() == document.name())
        {
            report.error(&label, "duplicate document");
        }
        match document {
            Document::Hostname(h) => {
                match (&h.hostname, &h.auto) {
                    // `auto: off` only says no name is generated, so it may go with a hostname.
                    (Some(_), Some(AutoHostname::Stable)) => {
                        report.error(&label, "hostname and auto: stable are mutually exclusive")
                    }
                    (None, None) => report.error(&label, "one of hostname or auto is required"),
                    _ => {}
                }
                if let Some(name) = h.hostname.as_deref()
                    && !is_valid_hostname(name)
                {
                    report.error(
                        format!("{label}.hostname"),
                        format!("{name:?} is not a valid host name"),
                    );
                }
                if config
                    .v1alpha1
                    .machine
                    .network
                    .as_ref()
                    .is_some_and(|n| n.hostname.is_some())
                {
                    report.error(
                        "machine.network.hostname",
                        "conflicts with the HostnameConfig document; set the hostname in one place",
                    );
                }
                if config
                    .v1alpha1
                    .machine
                    .features
                    .as_ref()
                    .is_some_and(|f| f.stable_hostname == Some(true))
                {
                    report.error(
                        "machine.features.stableHostname",
                        "conflicts with the HostnameConfig document; use its auto field",
                    );
                }
            }
            Document::TimeSync(t) => {
                if t.ntp.is_some() && t.ptp.is_some() {
                    report.error(&label, "ntp and ptp are mutually exclusive");
                }
                if let Some(timeout) = t.boot_timeout.as_deref()
                    && parse_go_duration(timeout).is_none()
                {
                    report.error(
                        format!("{label}.bootTimeout"),
                        format!("{timeout:?} is not a duration (e.g. 2m30s)"),
                    );
                }
                if let Some(time) = config.v1alpha1.machine.time.as_ref() {
                    for (field, set) in [
                        ("disabled", time.disabled == Some(true)),
                        ("servers", !time.servers.is_empty()),
                        ("bootTimeout", time.boot_timeout.is_some()),
                    ] {
                        if set {
                            report.error(
                                format!("machine.time.{field}"),
                                "conflicts with the TimeSyncConfig document; configure time sync in one place",
                            );
                        }
                    }
                }
            }
            Document::Board(b) => {
                for (j, name) in b.overlays.iter().enumerate() {
                    let path = format!("{label}.overlays[{j}]");
                    if !is_overlay_name(name) {
                        report.error(
                            path,
                            format!("{name:?} is not an overlay name (letters, digits, - and _)"),
                        );
                    } else if b.overlays[..j].contains(name) {
                        report.error(path, format!("{name:?} is listed twice"));
                    }
                }
            }
            Document::Resolver(r) => {
                for (j, server) in r.nameservers.iter().enumerate() {
                    if server.address.parse::<IpAddr>().is_err() {
                        report.error(
                            format!("{label}.nameservers[{j}].address"),
                            format!("{:?} is not an IP address", server.address),
                        );
                    }
                }
                if let Some(network) = config.v1alpha1.machine.network.as_ref() {
                    for (field, set) in [
                        ("nameservers", !network.nameservers.is_empty()),
                        ("searchDomains", network.search_domains.is_some()),
                        (
                            "disableSearchDomain",
                            network.disable_search_domain == Some(true),
                        ),
                    ] {
                        if set {
                            report.error(
                                format!("machine.network.{field}"),
                                "conflicts with the ResolverConfig document; configure DNS in one place",
                            );
                        }
                    }
                }
                if r.host_dns
                    .as_ref()
                    .is_some_and(|h| *h != HostDns::default())
                    && config
                        .v1alpha1
                        .machine
                        .features
                        .as_ref()
                        .is_some_and(|f| f.host_dns.is_some())
                {
                    report.error(
                        "machine.features.hostDNS",
                        "conflicts with ResolverConfig.hostDNS; configure host DNS in one place",
                    );
                }
            }
            Document::Other(_) => {}
        }
    }
}

/// Checks `scheme://host[:port][/path]` with one of `schemes`; returns the port if given.
fn check_url(url: &str, schemes: &[&str]) -> Result<Option<u16>, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{url:?} is not a URL"))?;
    if !schemes.contains(&scheme) {
        return Err(format!("{url:?} must use {}", schemes.join(" or ")));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| format!("{url:?} has an unclosed IPv6 bracket"))?;
            (host, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    port.map(|p| {
        p.parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("{url:?} has an invalid port {p:?}"))
    })
    .transpose()
}

fn is_valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// An address with a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    address: IpAddr,
    prefix: u8,
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

impl Cidr {
    fn parse(value: &str) -> Option<Cidr> {
        let (address, prefix) = value.split_once('/')?;
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let prefix: u8 = prefix.parse().ok()?;
        let address: IpAddr = address.parse().ok()?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Cidr { address, prefix })
    }

    /// The address left-aligned in 128 bits (IPv4 in the top 32) and the prefix length.
    fn bits(&self) -> (u128, u32) {
        match self.address {
            IpAddr::V4(a) => (u128::from(u32::from(a)) << 96, u32::from(self.prefix)),
            IpAddr::V6(a) => (u128::from(a), u32::from(self.prefix)),
        }
    }

    fn mask(prefix: u32) -> u128 {
        if prefix == 0 {
            0
        } else {
            u128::MAX << (128 - prefix)
        }
    }

    /// True when no host bits are set.
    fn is_network(&self) -> bool {
        let (bits, prefix) = self.bits();
        bits & !Self::mask(prefix) == 0
    }

    fn overlaps(&self, other: &Cidr) -> bool {
        if self.address.is_ipv4() != other.address.is_ipv4() {
            return false;
        }
        let (a, pa) = self.bits();
        let (b, pb) = other.bits();
        let mask = Self::mask(pa.min(pb));
        a & mask == b & mask
    }
}

#[cfg(test)]
mod tests;
