//! The Kubernetes stack as supervised services: the system containerd and the CRI containerd on
//! every node, etcd on control-plane nodes. Both run as processes from the read-only /usr; kubelet and the control
//! plane are not in the image (no Kubernetes binaries could be fetched where it was built).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use talos_machinery::config::Config;
use talos_machinery::config::v1alpha1::MachineType;
use talos_machinery::pki::{self, CertAndKey, SubjectAltName};
use tokio::sync::watch;

use super::cgroups::MemoryLimits;
use super::health::HealthCheck;
use super::{Backoff, Gate, GeneratedFile, ServiceSpec};

/// The image's memory profile: `<service> <min MiB> [<max MiB>]` per line, `#` comments.
pub const MEMORY_FILE: &str = "/etc/talos/memory";

pub const CONTAINERD_SOCKET: &str = "/system/run/containerd/containerd.sock";
const CONTAINERD_CONFIG: &str = "/system/etc/containerd/config.toml";
/// The CRI instance, where kubelet looks for it.
pub const CRI_SOCKET: &str = "/run/containerd/containerd.sock";
const CRI_CONFIG: &str = "/etc/cri/containerd.toml";
/// Snapshotters neither containerd instance can use on this node.
const UNUSABLE_SNAPSHOTTERS: &str = "\"io.containerd.snapshotter.v1.aufs\", \
    \"io.containerd.snapshotter.v1.btrfs\", \"io.containerd.snapshotter.v1.devmapper\", \
    \"io.containerd.snapshotter.v1.zfs\"";
pub const ETCD_DATA: &str = "/var/lib/etcd";
const ETCD_SECRETS: &str = "/system/secrets/etcd";
const ETCD_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// etcd serves `/health` without TLS here, on loopback only.
const ETCD_METRICS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 2381);
const KUBELET: &str = "/usr/bin/kubelet";

/// Memory limits per service id, from the board's profile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryTable(BTreeMap<String, MemoryLimits>);

impl MemoryTable {
    pub fn parse(text: &str) -> Result<MemoryTable, String> {
        let mut table = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let bad = |why: &str| format!("{MEMORY_FILE} line {}: {why}: {line:?}", n + 1);
            let fields: Vec<&str> = line.split_whitespace().collect();
            let mib = |s: &str| {
                s.parse::<u64>()
                    .map(|m| m << 20)
                    .map_err(|_| bad("not a number of MiB"))
            };
            let (id, min, max) = match fields.as_slice() {
                [id, min] => (*id, mib(min)?, None),
                [id, min, max] => (*id, mib(min)?, Some(mib(max)?)),
                _ => return Err(bad("expected <service> <min MiB> [<max MiB>]")),
            };
            table.insert(id.to_owned(), MemoryLimits { min, max });
        }
        Ok(MemoryTable(table))
    }

    /// The limits for `id`; a service the profile does not name gets no reservation or cap.
    pub fn limits(&self, id: &str) -> MemoryLimits {
        self.0.get(id).copied().unwrap_or_default()
    }
}

/// Facts about the node that the specs depend on.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    pub hostname: String,
    pub addresses: Vec<IpAddr>,
    /// `std::env::consts::ARCH` of the node.
    pub arch: &'static str,
}

pub fn containerd(memory: &MemoryTable) -> ServiceSpec {
    let config = format!(
        "version = 2\n\
         root = \"/system/var/lib/containerd\"\n\
         state = \"/system/run/containerd\"\n\
         # The system instance: no CRI.\n\
         disabled_plugins = [\"io.containerd.grpc.v1.cri\", {UNUSABLE_SNAPSHOTTERS}]\n\
         \n\
         [grpc]\n  address = \"{CONTAINERD_SOCKET}\"\n"
    );
    ServiceSpec {
        id: "containerd".into(),
        program: "/usr/bin/containerd".into(),
        args: vec!["--config".into(), CONTAINERD_CONFIG.into()],
        env: vec![("PATH".into(), "/usr/bin:/usr/sbin".into())],
        depends_on: vec![],
        gate: None,
        health: Some(HealthCheck::UnixSocket(CONTAINERD_SOCKET.into())),
        health_interval: Duration::from_secs(2),
        cgroup: "system/runtime".into(),
        memory: memory.limits("containerd"),
        oom_score_adj: -999,
        directories: vec![],
        files: vec![GeneratedFile {
            path: CONTAINERD_CONFIG.into(),
            contents: config.into_bytes(),
            mode: 0o644,
        }],
        stop_timeout: Duration::from_secs(10),
        backoff: Backoff::default(),
    }
}

/// The second containerd, with the CRI plugin, for kubelet's pods (namespace `k8s.io`); its
/// images and snapshots live on /var (EPHEMERAL).
pub fn cri(memory: &MemoryTable) -> ServiceSpec {
    let config = format!(
        "version = 2\n\
         root = \"/var/lib/containerd\"\n\
         state = \"/run/containerd\"\n\
         disabled_plugins = [{UNUSABLE_SNAPSHOTTERS}]\n\
         \n\
         [grpc]\n  address = \"{CRI_SOCKET}\"\n\
         \n\
         [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  snapshotter = \"overlayfs\"\n\
         \n\
         [plugins.\"io.containerd.grpc.v1.cri\".cni]\n  bin_dir = \"/opt/cni/bin\"\n  conf_dir = \"/etc/cni/net.d\"\n"
    );
    ServiceSpec {
        id: "cri".into(),
        args: vec!["--config".into(), CRI_CONFIG.into()],
        health: Some(HealthCheck::UnixSocket(CRI_SOCKET.into())),
        cgroup: "podruntime/runtime".into(),
        memory: memory.limits("cri"),
        // Less protected than the system instance (-999), our choice: under memory pressure the
        // pods' runtime goes before the node's own.
        oom_score_adj: -500,
        files: vec![GeneratedFile {
            path: CRI_CONFIG.into(),
            contents: config.into_bytes(),
            mode: 0o644,
        }],
        ..containerd(memory)
    }
}

/// True when etcd has data from an earlier run, so it needs no bootstrap.
pub fn etcd_has_data(data_dir: &Path) -> bool {
    data_dir.join("member").is_dir()
}

/// etcd as a single-member cluster of this node, with mutual TLS on its client and peer ports
/// from certificates issued by the cluster's etcd CA; it waits behind `bootstrapped`.
pub fn etcd(
    config: &Config,
    facts: &NodeFacts,
    memory: &MemoryTable,
    bootstrapped: watch::Receiver<bool>,
    now: SystemTime,
) -> Result<ServiceSpec, String> {
    let ca = config
        .v1alpha1()
        .cluster
        .as_ref()
        .and_then(|c| c.etcd.as_ref())
        .and_then(|e| e.ca.as_ref())
        .filter(|ca| !ca.crt.is_empty())
        .ok_or("cluster.etcd.ca is missing from the machine config")?;
    let ca = CertAndKey {
        cert_pem: ca.crt.as_str().to_owned(),
        key_pem: ca
            .key()
            .ok_or("cluster.etcd.ca.key is missing: etcd cannot get certificates")?
            .to_owned(),
    };
    let address = facts
        .addresses
        .iter()
        .find(|a| !a.is_loopback())
        .copied()
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut sans = vec![
        SubjectAltName::Dns(facts.hostname.clone()),
        SubjectAltName::Dns("localhost".into()),
        SubjectAltName::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        SubjectAltName::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
    ];
    sans.extend(facts.addresses.iter().map(|a| SubjectAltName::Ip(*a)));
    sans.dedup();
    let issue = |what: &str| {
        pki::issue_peer_cert(&ca, &facts.hostname, &sans, ETCD_CERT_VALIDITY, now)
            .map_err(|e| format!("issuing the etcd {what} certificate: {e}"))
    };
    let (server, peer) = (issue("server")?, issue("peer")?);
    let secret = |name: &str| format!("{ETCD_SECRETS}/{name}");
    let url = |port: u16| match address {
        IpAddr::V4(a) => format!("https://{a}:{port}"),
        IpAddr::V6(a) => format!("https://[{a}]:{port}"),
    };
    let name = &facts.hostname;
    let args = [
        format!("--name={name}"),
        format!("--data-dir={ETCD_DATA}"),
        "--listen-client-urls=https://0.0.0.0:2379".into(),
        format!("--advertise-client-urls={}", url(2379)),
        "--listen-peer-urls=https://0.0.0.0:2380".into(),
        format!("--initial-advertise-peer-urls={}", url(2380)),
        format!("--initial-cluster={name}={}", url(2380)),
        "--initial-cluster-state=new".into(),
        format!("--listen-metrics-urls=http://{ETCD_METRICS}"),
        format!("--trusted-ca-file={}", secret("ca.crt")),
        format!("--cert-file={}", secret("server.crt")),
        format!("--key-file={}", secret("server.key")),
        "--client-cert-auth=true".into(),
        format!("--peer-trusted-ca-file={}", secret("ca.crt")),
        format!("--peer-cert-file={}", secret("peer.crt")),
        format!("--peer-key-file={}", secret("peer.key")),
        "--peer-client-cert-auth=true".into(),
    ];
    let file = |name: &str, contents: &str, mode: u32| GeneratedFile {
        path: PathBuf::from(secret(name)),
        contents: contents.as_bytes().to_vec(),
        mode,
    };
    let mut env = vec![("PATH".into(), "/usr/bin".into())];
    if facts.arch == "aarch64" {
        // etcd 3.4 refuses to start on arm64 unless told that it is meant to.
        env.push(("ETCD_UNSUPPORTED_ARCH".into(), "arm64".into()));
    }
    Ok(ServiceSpec {
        id: "etcd".into(),
        program: "/usr/bin/etcd".into(),
        args: args.into(),
        env,
        depends_on: vec!["network".into()],
        gate: Some(Gate {
            waiting_for: format!("talosctl bootstrap, or etcd data in {ETCD_DATA}"),
            open: bootstrapped,
        }),
        health: Some(HealthCheck::Http {
            address: ETCD_METRICS,
            path: "/health".into(),
            expect: r#""health":"true""#.into(),
        }),
        health_interval: Duration::from_secs(2),
        cgroup: "podruntime/etcd".into(),
        memory: memory.limits("etcd"),
        oom_score_adj: -998,
        directories: vec![ETCD_DATA.into()],
        files: vec![
            file("ca.crt", &ca.cert_pem, 0o644),
            file("server.crt", &server.cert_pem, 0o644),
            file("server.key", &server.key_pem, 0o600),
            file("peer.crt", &peer.cert_pem, 0o644),
            file("peer.key", &peer.key_pem, 0o600),
        ],
        stop_timeout: Duration::from_secs(15),
        backoff: Backoff::default(),
    })
}

/// The services a node with `config` runs, and those it reports as skipped with the reason.
pub fn plan(
    config: &Config,
    facts: &NodeFacts,
    memory: &MemoryTable,
    bootstrapped: watch::Receiver<bool>,
    now: SystemTime,
) -> (Vec<ServiceSpec>, Vec<(&'static str, String)>) {
    let mut run = vec![containerd(memory), cri(memory)];
    let mut skipped = Vec::new();
    if config.machine_type() == MachineType::ControlPlane {
        match etcd(config, facts, memory, bootstrapped, now) {
            Ok(spec) => run.push(spec),
            Err(reason) => skipped.push(("etcd", reason)),
        }
    }
    if !Path::new(KUBELET).is_file() {
        skipped.push((
            "kubelet",
            format!("{KUBELET} is not in this image (it carries no Kubernetes binaries yet)"),
        ));
    }
    (run, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use talos_machinery::config::{GenerateInput, generate};
    use talos_machinery::secrets::SecretsBundle;

    fn facts() -> NodeFacts {
        NodeFacts {
            hostname: "cp-1".into(),
            addresses: vec!["10.0.2.15".parse().unwrap()],
            arch: "aarch64",
        }
    }

    fn configs() -> (Config, Config) {
        let now = SystemTime::now();
        let secrets = SecretsBundle::generate(now).unwrap();
        let generated = generate(&GenerateInput::new(
            "edge",
            "https://10.0.2.15:6443",
            secrets,
            now,
        ))
        .unwrap();
        let parse = |yaml: &str| Config::from_bytes(yaml.as_bytes()).unwrap();
        (parse(&generated.controlplane), parse(&generated.worker))
    }

    #[test]
    fn memory_profile_lines_become_limits() {
        let table = MemoryTable::parse("# standard\netcd 256\napid 16 128  # capped\n\n").unwrap();
        assert_eq!(
            table.limits("etcd"),
            MemoryLimits {
                min: 256 << 20,
                max: None
            }
        );
        assert_eq!(table.limits("apid").max, Some(128 << 20));
        assert_eq!(table.limits("unknown"), MemoryLimits::default());
        assert_eq!(
            MemoryTable::parse("etcd lots\n").unwrap_err(),
            "/etc/talos/memory line 1: not a number of MiB: \"etcd lots\""
        );
    }

    #[test]
    fn control_planes_run_etcd_with_mutual_tls_and_workers_do_not() {
        let (cp, worker) = configs();
        let memory = MemoryTable::parse("etcd 256\ncontainerd 48\n").unwrap();
        let gate = watch::channel(false).1;
        let now = SystemTime::now();
        let (run, skipped) = plan(&cp, &facts(), &memory, gate.clone(), now);
        let ids: Vec<_> = run.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["containerd", "cri", "etcd"]);
        assert_eq!(skipped[0].0, "kubelet");
        let etcd = &run[2];
        let cri = &run[1];
        assert_eq!(cri.memory.min, 0, "the profile given here has no cri line");
        assert_eq!(cri.args, ["--config", "/etc/cri/containerd.toml"]);
        let cri_config = String::from_utf8(cri.files[0].contents.clone()).unwrap();
        assert!(cri_config.contains("address = \"/run/containerd/containerd.sock\""));
        assert!(!cri_config.contains("io.containerd.grpc.v1.cri\", "));
        assert_eq!(etcd.memory.min, 256 << 20);
        assert!(etcd.args.contains(&"--client-cert-auth=true".to_owned()));
        assert!(
            etcd.args
                .contains(&"--initial-cluster=cp-1=https://10.0.2.15:2380".to_owned())
        );
        assert!(
            etcd.env
                .contains(&("ETCD_UNSUPPORTED_ARCH".into(), "arm64".into()))
        );
        let server = etcd
            .files
            .iter()
            .find(|f| f.path.ends_with("server.crt"))
            .unwrap();
        let der = pki::pem_to_der_certs(std::str::from_utf8(&server.contents).unwrap()).unwrap();
        let ca = etcd
            .files
            .iter()
            .find(|f| f.path.ends_with("ca.crt"))
            .unwrap();
        let ca_der = pki::pem_to_der_certs(std::str::from_utf8(&ca.contents).unwrap()).unwrap();
        pki::verify_issued_by(&der[0], &ca_der[0]).unwrap();
        assert!(
            pki::subject_alt_names(&der[0])
                .unwrap()
                .contains(&SubjectAltName::Ip("10.0.2.15".parse().unwrap()))
        );
        let key = etcd
            .files
            .iter()
            .find(|f| f.path.ends_with("server.key"))
            .unwrap();
        assert_eq!(key.mode, 0o600);

        let (run, _) = plan(&worker, &facts(), &memory, gate, now);
        let ids: Vec<_> = run.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["containerd", "cri"]);
        assert_eq!(run[0].memory.min, 48 << 20);
    }
}
