//! The Kubernetes stack as supervised services: the system containerd and the CRI containerd on
//! every node, etcd on control-plane nodes. Both run as processes from the read-only /usr; kubelet and the control
//! plane are not in the image (no Kubernetes binaries could be fetched where it was built).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use talos_machinery::config::Config;
use talos_machinery::config::raw::RawValue;
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
pub const ETCD_CLIENT_PORT: u16 = 2379;
pub const ETCD_PEER_PORT: u16 = 2380;
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

/// The cluster's etcd CA with its key, from `cluster.etcd.ca`.
pub fn etcd_ca(config: &Config) -> Result<CertAndKey, String> {
    let ca = config
        .v1alpha1()
        .cluster
        .as_ref()
        .and_then(|c| c.etcd.as_ref())
        .and_then(|e| e.ca.as_ref())
        .filter(|ca| !ca.crt.is_empty())
        .ok_or("cluster.etcd.ca is missing from the machine config")?;
    Ok(CertAndKey {
        cert_pem: ca.crt.as_str().to_owned(),
        key_pem: ca
            .key()
            .ok_or("cluster.etcd.ca.key is missing: etcd cannot get certificates")?
            .to_owned(),
    })
}

/// etcd's URL for `port` on `address`.
pub fn etcd_url(address: IpAddr, port: u16) -> String {
    match address {
        IpAddr::V4(a) => format!("https://{a}:{port}"),
        IpAddr::V6(a) => format!("https://[{a}]:{port}"),
    }
}

/// Flags `cluster.etcd.extraArgs` may not override: upstream's deny list, and the metrics
/// listener the health check uses.
const ETCD_FIXED_FLAGS: &[&str] = &[
    "name",
    "auto-tls",
    "peer-auto-tls",
    "data-dir",
    "listen-peer-urls",
    "listen-client-urls",
    "listen-client-http-urls",
    "listen-metrics-urls",
    "client-cert-auth",
    "cert-file",
    "key-file",
    "trusted-ca-file",
    "peer-client-cert-auth",
    "peer-cert-file",
    "peer-key-file",
    "peer-trusted-ca-file",
    "feature-gates",
    "watch-progress-notify-interval",
    "tls-min-version",
];

/// `cluster.etcd.extraArgs`: flag names with one value or a list (one flag each).
fn etcd_extra_args(config: &Config) -> Result<Vec<(String, Vec<String>)>, String> {
    let Some(raw) = config
        .v1alpha1()
        .cluster
        .as_ref()
        .and_then(|c| c.etcd.as_ref())
        .and_then(|e| e.extra_args.as_ref())
    else {
        return Ok(Vec::new());
    };
    let RawValue::Map(entries) = raw else {
        return Err("cluster.etcd.extraArgs must map flag names to values".into());
    };
    let scalar = |flag: &str, value: &RawValue| match value {
        RawValue::String(_)
        | RawValue::Bool(_)
        | RawValue::Int(_)
        | RawValue::UInt(_)
        | RawValue::Float(_) => Ok(value.key_text()),
        _ => Err(format!(
            "cluster.etcd.extraArgs.{flag}: expected a string or a list of strings"
        )),
    };
    entries
        .iter()
        .map(|(key, value)| {
            let flag = key.key_text();
            if ETCD_FIXED_FLAGS.contains(&flag.as_str()) {
                return Err(format!(
                    "cluster.etcd.extraArgs.{flag}: talos-rs sets --{flag} itself; it cannot be overridden"
                ));
            }
            let values = match value {
                RawValue::Seq(items) => items
                    .iter()
                    .map(|v| scalar(&flag, v))
                    .collect::<Result<_, _>>()?,
                other => vec![scalar(&flag, other)?],
            };
            Ok((flag, values))
        })
        .collect()
}

/// etcd's server and peer certificates, kept while the CA, name and addresses they were issued
/// for stay the same, so a config change that touches none of them does not restart etcd.
#[derive(Debug, Default)]
pub struct EtcdCerts {
    issued: Option<IssuedEtcdCerts>,
}

#[derive(Debug)]
struct IssuedEtcdCerts {
    ca_pem: String,
    name: String,
    sans: Vec<SubjectAltName>,
    server: CertAndKey,
    peer: CertAndKey,
}

impl EtcdCerts {
    /// The server and peer certificates for `name` and `sans`, issued anew only when these or
    /// the CA changed.
    fn get(
        &mut self,
        ca: &CertAndKey,
        name: &str,
        sans: &[SubjectAltName],
        now: SystemTime,
    ) -> Result<(CertAndKey, CertAndKey), String> {
        if let Some(issued) = &self.issued
            && issued.ca_pem == ca.cert_pem
            && issued.name == name
            && issued.sans == sans
        {
            return Ok((issued.server.clone(), issued.peer.clone()));
        }
        let issue = |what: &str| {
            pki::issue_peer_cert(ca, name, sans, ETCD_CERT_VALIDITY, now)
                .map_err(|e| format!("issuing the etcd {what} certificate: {e}"))
        };
        let (server, peer) = (issue("server")?, issue("peer")?);
        self.issued = Some(IssuedEtcdCerts {
            ca_pem: ca.cert_pem.clone(),
            name: name.to_owned(),
            sans: sans.to_vec(),
            server: server.clone(),
            peer: peer.clone(),
        });
        Ok((server, peer))
    }
}

/// etcd as a single-member cluster of this node, with mutual TLS on its client and peer ports
/// from certificates issued by the cluster's etcd CA, plus `cluster.etcd.extraArgs`; it waits
/// behind `bootstrapped`.
pub fn etcd(
    config: &Config,
    facts: &NodeFacts,
    memory: &MemoryTable,
    bootstrapped: watch::Receiver<bool>,
    certs: &mut EtcdCerts,
    now: SystemTime,
) -> Result<ServiceSpec, String> {
    let ca = etcd_ca(config)?;
    let extra_args = etcd_extra_args(config)?;
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
    let (server, peer) = certs.get(&ca, &facts.hostname, &sans, now)?;
    let secret = |name: &str| format!("{ETCD_SECRETS}/{name}");
    let url = |port: u16| etcd_url(address, port);
    let name = &facts.hostname;
    let mut flags: Vec<(String, Vec<String>)> = [
        ("name", name.clone()),
        ("data-dir", ETCD_DATA.into()),
        (
            "listen-client-urls",
            format!("https://0.0.0.0:{ETCD_CLIENT_PORT}"),
        ),
        ("advertise-client-urls", url(ETCD_CLIENT_PORT)),
        (
            "listen-peer-urls",
            format!("https://0.0.0.0:{ETCD_PEER_PORT}"),
        ),
        ("initial-advertise-peer-urls", url(ETCD_PEER_PORT)),
        ("initial-cluster", format!("{name}={}", url(ETCD_PEER_PORT))),
        ("initial-cluster-state", "new".into()),
        ("listen-metrics-urls", format!("http://{ETCD_METRICS}")),
        ("trusted-ca-file", secret("ca.crt")),
        ("cert-file", secret("server.crt")),
        ("key-file", secret("server.key")),
        ("client-cert-auth", "true".into()),
        ("peer-trusted-ca-file", secret("ca.crt")),
        ("peer-cert-file", secret("peer.crt")),
        ("peer-key-file", secret("peer.key")),
        ("peer-client-cert-auth", "true".into()),
    ]
    .into_iter()
    .map(|(flag, value)| (flag.to_owned(), vec![value]))
    .collect();
    for (flag, values) in extra_args {
        match flags.iter_mut().find(|(f, _)| *f == flag) {
            Some((_, current)) => *current = values,
            None => flags.push((flag, values)),
        }
    }
    let args: Vec<String> = flags
        .iter()
        .flat_map(|(flag, values)| values.iter().map(move |v| format!("--{flag}={v}")))
        .collect();
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
        args,
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
    etcd_certs: &mut EtcdCerts,
    now: SystemTime,
) -> (Vec<ServiceSpec>, Vec<(&'static str, String)>) {
    let mut run = vec![containerd(memory), cri(memory)];
    let mut skipped = Vec::new();
    if config.machine_type() == MachineType::ControlPlane {
        match etcd(config, facts, memory, bootstrapped, etcd_certs, now) {
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
        let mut certs = EtcdCerts::default();
        let (run, skipped) = plan(&cp, &facts(), &memory, gate.clone(), &mut certs, now);
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

        let (run, _) = plan(&worker, &facts(), &memory, gate, &mut certs, now);
        let ids: Vec<_> = run.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["containerd", "cri"]);
        assert_eq!(run[0].memory.min, 48 << 20);
    }

    fn with_etcd_extra_args(config: &Config, args: RawValue) -> Config {
        let mut v1alpha1 = config.v1alpha1().clone();
        let etcd = v1alpha1
            .cluster
            .as_mut()
            .and_then(|c| c.etcd.as_mut())
            .unwrap();
        etcd.extra_args = Some(args);
        Config::new(v1alpha1)
    }

    fn map(entries: &[(&str, RawValue)]) -> RawValue {
        RawValue::Map(
            entries
                .iter()
                .map(|(k, v)| (RawValue::string(*k), v.clone()))
                .collect(),
        )
    }

    fn etcd_spec(config: &Config, facts: &NodeFacts, certs: &mut EtcdCerts) -> ServiceSpec {
        let gate = watch::channel(false).1;
        etcd(
            config,
            facts,
            &MemoryTable::default(),
            gate,
            certs,
            SystemTime::now(),
        )
        .unwrap()
    }

    #[test]
    fn etcd_extra_args_override_defaults_and_add_flags_but_not_fixed_ones() {
        let (cp, _) = configs();
        let config = with_etcd_extra_args(
            &cp,
            map(&[
                ("initial-cluster-state", RawValue::string("existing")),
                ("quota-backend-bytes", RawValue::UInt(8 << 30)),
                (
                    "experimental-peer-skip-client-san-verification",
                    RawValue::Bool(true),
                ),
                (
                    "cipher-suites",
                    RawValue::Seq(vec![
                        RawValue::string("TLS_AES_128_GCM_SHA256"),
                        RawValue::string("TLS_AES_256_GCM_SHA384"),
                    ]),
                ),
            ]),
        );
        let spec = etcd_spec(&config, &facts(), &mut EtcdCerts::default());
        let flag = |f: &str| spec.args.iter().filter(|a| a.starts_with(f)).count();
        assert!(
            spec.args
                .contains(&"--initial-cluster-state=existing".to_owned())
        );
        assert_eq!(flag("--initial-cluster-state="), 1);
        assert!(
            spec.args
                .contains(&"--quota-backend-bytes=8589934592".to_owned())
        );
        assert!(
            spec.args
                .contains(&"--experimental-peer-skip-client-san-verification=true".to_owned())
        );
        assert_eq!(flag("--cipher-suites="), 2);

        let fixed = with_etcd_extra_args(&cp, map(&[("data-dir", RawValue::string("/tmp"))]));
        let gate = watch::channel(false).1;
        let (run, skipped) = plan(
            &fixed,
            &facts(),
            &MemoryTable::default(),
            gate,
            &mut EtcdCerts::default(),
            SystemTime::now(),
        );
        assert!(run.iter().all(|s| s.id != "etcd"));
        assert_eq!(
            skipped[0],
            (
                "etcd",
                "cluster.etcd.extraArgs.data-dir: talos-rs sets --data-dir itself; it cannot be overridden"
                    .to_owned()
            )
        );
        let nested = with_etcd_extra_args(&cp, map(&[("log-level", map(&[]))]));
        let gate = watch::channel(false).1;
        assert_eq!(
            etcd(
                &nested,
                &facts(),
                &MemoryTable::default(),
                gate,
                &mut EtcdCerts::default(),
                SystemTime::now()
            )
            .unwrap_err(),
            "cluster.etcd.extraArgs.log-level: expected a string or a list of strings"
        );
    }

    #[test]
    fn replanning_keeps_etcd_certificates_until_the_name_or_addresses_change() {
        let (cp, _) = configs();
        let gate = watch::channel(false).1;
        let mut certs = EtcdCerts::default();
        let plan_etcd = |config: &Config, facts: &NodeFacts, certs: &mut EtcdCerts| {
            etcd(
                config,
                facts,
                &MemoryTable::default(),
                gate.clone(),
                certs,
                SystemTime::now(),
            )
            .unwrap()
        };
        let first = plan_etcd(&cp, &facts(), &mut certs);
        assert_eq!(plan_etcd(&cp, &facts(), &mut certs), first);

        let tuned = with_etcd_extra_args(&cp, map(&[("log-level", RawValue::string("debug"))]));
        let retuned = plan_etcd(&tuned, &facts(), &mut certs);
        assert_ne!(retuned, first);
        assert_eq!(retuned.files, first.files, "same certificates");
        assert!(retuned.args.contains(&"--log-level=debug".to_owned()));

        let moved = NodeFacts {
            addresses: vec!["10.0.2.16".parse().unwrap()],
            ..facts()
        };
        let readdressed = plan_etcd(&cp, &moved, &mut certs);
        assert_ne!(readdressed.files, first.files, "new certificates");
    }
}
