//! `talosctl gen config`: control-plane and worker configs plus an admin talosconfig, from a
//! secrets bundle, in the Talos v1.13 classic layout or the v1.14 multi-document layout.

use std::time::SystemTime;

use super::raw::RawValue;
use super::v1alpha1::{
    AdmissionPlugin, ApiServer, ClusterConfig, ClusterNetwork, Component, ControlPlane, Discovery,
    DiscoveryRegistries, Etcd, Features, HostDns, Install, KubePrism, Kubelet, KubernetesRegistry,
    MachineConfig, MachineType, Network, PemKey, PemPair, Proxy, Scheduler, ServiceRegistry,
    V1Alpha1,
};
use super::{
    Config, ConfigError, Document, EndpointUrl, HostnameConfig, RawDocument, ResolverConfig,
};
use crate::b64::Base64Text;
use crate::codec::{self, CodecError};
use crate::pki::{self, PkiError};
use crate::role::Role;
use crate::secrets::{self, SecretsBundle};
use crate::talosconfig::{Context, Talosconfig};

/// The default `--talos-version`: the Talos release whose generation contract we follow.
pub const DEFAULT_TALOS_VERSION: &str = "v1.13.9";
/// Kubernetes version `gen config` defaults to (upstream v1.13.9 default).
pub const DEFAULT_KUBERNETES_VERSION: &str = "1.36.3";
pub const DEFAULT_INSTALL_DISK: &str = "/dev/sda";
/// The Image Factory installer for the vanilla (no extensions) schematic.
pub const DEFAULT_INSTALL_IMAGE: &str = "factory.talos.dev/metal-installer/376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba:v1.13.9";

const DISCOVERY_SERVICE_ENDPOINT: &str = "https://discovery.talos.dev/";
const FILESYSTEM_TRIM_INTERVAL: &str = "168h0m0s";
const DNS_DOMAIN: &str = "cluster.local";
const POD_SUBNET: &str = "10.244.0.0/16";
const SERVICE_SUBNET: &str = "10.96.0.0/12";
const KUBE_PRISM_PORT: u16 = 7445;

/// Pod Security admission defaults: enforce baseline, audit and warn restricted, kube-system
/// exempt.
const POD_SECURITY_CONFIGURATION: &str = r#"
apiVersion: pod-security.admission.config.k8s.io/v1alpha1
kind: PodSecurityConfiguration
defaults:
  audit: restricted
  audit-version: latest
  enforce: baseline
  enforce-version: latest
  warn: restricted
  warn-version: latest
exemptions:
  namespaces:
    - kube-system
  runtimeClasses: []
  usernames: []
"#;

/// Anonymous requests only for the health endpoints.
const AUTHENTICATION_CONFIGURATION: &str = r#"
anonymous:
  conditions:
    - path: /livez
    - path: /readyz
    - path: /healthz
  enabled: true
jwt: []
"#;

const AUDIT_POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
  - level: Metadata
"#;

const CONTROL_PLANE_NODE_LABELS: &str = r#"
node.kubernetes.io/exclude-from-external-load-balancers: ""
"#;

const CONTROL_PLANE_ROLE_LABEL: &str = "node-role.kubernetes.io/control-plane";

/// The Talos release whose config layout `generate` writes (`gen config --talos-version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VersionContract {
    /// Everything in the v1alpha1 document.
    #[default]
    V1_13,
    /// Kubernetes, install, discovery and host DNS settings in their own documents.
    V1_14,
}

impl VersionContract {
    /// Reads `v1.14`, `1.14` or `v1.14.2`: only the major and minor version count.
    pub fn parse(version: &str) -> Result<VersionContract, GenerateError> {
        let unsupported = || GenerateError::TalosVersion(version.to_owned());
        let mut parts = version.strip_prefix('v').unwrap_or(version).split('.');
        let (Some(major), Some(minor)) = (parts.next(), parts.next()) else {
            return Err(unsupported());
        };
        match (major, minor) {
            ("1", "13") => Ok(VersionContract::V1_13),
            ("1", "14") => Ok(VersionContract::V1_14),
            _ => Err(unsupported()),
        }
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateInput {
    pub cluster_name: String,
    /// `https://host:port` of the Kubernetes API.
    pub endpoint: String,
    /// Without a leading `v`, e.g. `1.36.3`.
    pub kubernetes_version: String,
    pub install_disk: String,
    pub install_image: String,
    /// Extra SANs for the apid and kube-apiserver certificates.
    pub additional_sans: Vec<String>,
    pub contract: VersionContract,
    pub secrets: SecretsBundle,
    pub now: SystemTime,
}

impl GenerateInput {
    /// Input with upstream's defaults for everything but the name, endpoint and secrets.
    pub fn new(
        cluster_name: &str,
        endpoint: &str,
        secrets: SecretsBundle,
        now: SystemTime,
    ) -> GenerateInput {
        GenerateInput {
            cluster_name: cluster_name.to_owned(),
            endpoint: endpoint.to_owned(),
            kubernetes_version: DEFAULT_KUBERNETES_VERSION.to_owned(),
            install_disk: DEFAULT_INSTALL_DISK.to_owned(),
            install_image: DEFAULT_INSTALL_IMAGE.to_owned(),
            additional_sans: Vec::new(),
            contract: VersionContract::default(),
            secrets,
            now,
        }
    }
}

/// The generated files.
#[derive(Debug, Clone)]
pub struct Generated {
    /// `controlplane.yaml`.
    pub controlplane: String,
    /// `worker.yaml`.
    pub worker: String,
    /// `talosconfig`, with an `os:admin` client certificate.
    pub talosconfig: Talosconfig,
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("Invalid endpoint: {0}")]
    Endpoint(String),
    #[error("Invalid cluster name {0:?}: must be non-empty and contain no whitespace")]
    ClusterName(String),
    #[error("Invalid Kubernetes version {0:?}: expected e.g. 1.36.3")]
    KubernetesVersion(String),
    #[error("Unsupported Talos version {0:?}: configs can be generated for v1.13 and v1.14")]
    TalosVersion(String),
    #[error("Cannot issue the admin client certificate")]
    Pki(#[from] PkiError),
    #[error("Cannot encode generated config")]
    Codec(#[from] CodecError),
    #[error("Cannot encode generated config")]
    Config(#[from] ConfigError),
    #[error("Cannot generate secrets")]
    Secrets(#[from] secrets::SecretsError),
}

/// Builds `controlplane.yaml`, `worker.yaml` and the admin talosconfig.
pub fn generate(input: &GenerateInput) -> Result<Generated, GenerateError> {
    let endpoint = EndpointUrl::parse(&input.endpoint).map_err(GenerateError::Endpoint)?;
    if input.cluster_name.is_empty() || input.cluster_name.chars().any(char::is_whitespace) {
        return Err(GenerateError::ClusterName(input.cluster_name.clone()));
    }
    let version = input
        .kubernetes_version
        .strip_prefix('v')
        .unwrap_or(&input.kubernetes_version);
    if version.is_empty()
        || !version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))
    {
        return Err(GenerateError::KubernetesVersion(
            input.kubernetes_version.clone(),
        ));
    }

    let build = |machine_type| match input.contract {
        VersionContract::V1_13 => Ok(with_stable_hostname(document(
            input,
            version,
            &endpoint,
            machine_type,
        )?)),
        VersionContract::V1_14 => multidoc_config(input, version, machine_type),
    };
    let controlplane = build(MachineType::ControlPlane)?;
    let worker = build(MachineType::Worker)?;

    let os_ca = input.secrets.os_ca();
    let admin =
        pki::issue_client_cert(&os_ca, &[Role::Admin], pki::CLIENT_CERT_VALIDITY, input.now)?;
    let context = Context::new(
        vec![endpoint.host.clone()],
        &os_ca.cert_pem,
        &admin.cert_pem,
        &admin.key_pem,
    );
    Ok(Generated {
        controlplane: controlplane.to_yaml()?,
        worker: worker.to_yaml()?,
        talosconfig: Talosconfig::with_context(&input.cluster_name, context),
    })
}

fn document(
    input: &GenerateInput,
    version: &str,
    endpoint: &EndpointUrl,
    machine_type: MachineType,
) -> Result<V1Alpha1, GenerateError> {
    let secrets = &input.secrets;
    let control_plane = machine_type == MachineType::ControlPlane;

    let machine = MachineConfig {
        machine_type,
        token: Some(secrets.trustdinfo.token.clone()),
        ca: Some(bundle_pair(&secrets.certs.os, control_plane)),
        cert_sans: input.additional_sans.clone(),
        kubelet: Some(Kubelet {
            image: Some(format!("ghcr.io/siderolabs/kubelet:v{version}")),
            default_runtime_seccomp_profile_enabled: Some(true),
            disable_manifests_directory: Some(true),
            ..Kubelet::default()
        }),
        network: Some(Network::default()),
        install: Some(Install {
            disk: Some(input.install_disk.clone()),
            image: Some(input.install_image.clone()),
            wipe: Some(false),
            grub_use_uki_cmdline: Some(true),
            ..Install::default()
        }),
        features: Some(Features {
            rbac: Some(true),
            apid_check_ext_key_usage: Some(true),
            disk_quota_support: Some(true),
            kube_prism: Some(KubePrism {
                enabled: Some(true),
                port: Some(KUBE_PRISM_PORT),
            }),
            host_dns: Some(HostDns {
                enabled: Some(true),
                forward_kube_dns_to_host: Some(true),
                resolve_member_names: None,
            }),
            ..Features::default()
        }),
        node_labels: if control_plane {
            Some(raw(CONTROL_PLANE_NODE_LABELS)?)
        } else {
            None
        },
        ..MachineConfig::default()
    };

    let mut cluster = ClusterConfig {
        id: Some(secrets.cluster.id.clone()),
        secret: Some(secrets.cluster.secret.clone()),
        control_plane: Some(ControlPlane {
            endpoint: Some(input.endpoint.clone()),
            local_api_server_port: None,
        }),
        cluster_name: Some(input.cluster_name.clone()),
        network: Some(ClusterNetwork {
            dns_domain: Some(DNS_DOMAIN.to_owned()),
            pod_subnets: vec![POD_SUBNET.to_owned()],
            service_subnets: vec![SERVICE_SUBNET.to_owned()],
            cni: None,
        }),
        token: Some(secrets.secrets.bootstraptoken.clone()),
        ca: Some(bundle_pair(&secrets.certs.k8s, control_plane)),
        discovery: Some(Discovery {
            enabled: Some(true),
            registries: Some(DiscoveryRegistries {
                kubernetes: Some(KubernetesRegistry {
                    disabled: Some(true),
                }),
                service: Some(ServiceRegistry::default()),
            }),
        }),
        ..ClusterConfig::default()
    };

    if control_plane {
        let mut api_sans = vec![endpoint.host.clone()];
        for san in &input.additional_sans {
            if !api_sans.contains(san) {
                api_sans.push(san.clone());
            }
        }
        cluster.secretbox_encryption_secret =
            Some(secrets.secrets.secretboxencryptionsecret.clone());
        cluster.aescbc_encryption_secret = secrets.secrets.aescbcencryptionsecret.clone();
        cluster.aggregator_ca = Some(bundle_pair(&secrets.certs.k8saggregator, true));
        cluster.service_account = Some(PemKey {
            key: Base64Text(secrets.certs.k8sserviceaccount.key.0.clone()),
        });
        cluster.api_server = Some(ApiServer {
            image: Some(format!("registry.k8s.io/kube-apiserver:v{version}")),
            cert_sans: api_sans,
            disable_pod_security_policy: Some(true),
            admission_control: Some(vec![AdmissionPlugin {
                name: "PodSecurity".to_owned(),
                configuration: Some(raw(POD_SECURITY_CONFIGURATION)?),
            }]),
            audit_policy: Some(raw(AUDIT_POLICY)?),
            ..ApiServer::default()
        });
        cluster.controller_manager = Some(Component {
            image: Some(format!(
                "registry.k8s.io/kube-controller-manager:v{version}"
            )),
            ..Component::default()
        });
        cluster.proxy = Some(Proxy {
            image: Some(format!("registry.k8s.io/kube-proxy:v{version}")),
            ..Proxy::default()
        });
        cluster.scheduler = Some(Scheduler {
            image: Some(format!("registry.k8s.io/kube-scheduler:v{version}")),
            ..Scheduler::default()
        });
        cluster.etcd = Some(Etcd {
            ca: Some(bundle_pair(&secrets.certs.etcd, true)),
            ..Etcd::default()
        });
    }

    Ok(V1Alpha1 {
        version: "v1alpha1".to_owned(),
        debug: Some(false),
        persist: Some(true),
        machine,
        cluster: Some(cluster),
    })
}

/// Upstream (since 1.12) asks for a stable generated hostname with a `HostnameConfig` document
/// instead of `machine.features.stableHostname`.
fn with_stable_hostname(v1alpha1: V1Alpha1) -> Config {
    Config {
        v1alpha1,
        documents: vec![Document::Hostname(HostnameConfig::stable())],
    }
}

/// The v1.14 layout: the v1alpha1 document keeps only the machine identity, the bootstrap token
/// and the etcd CA; everything else is in its own document, in upstream's order.
fn multidoc_config(
    input: &GenerateInput,
    version: &str,
    machine_type: MachineType,
) -> Result<Config, GenerateError> {
    let secrets = &input.secrets;
    let control_plane = machine_type == MachineType::ControlPlane;
    let v1alpha1 = V1Alpha1 {
        version: "v1alpha1".to_owned(),
        debug: Some(false),
        persist: Some(true),
        machine: MachineConfig {
            machine_type,
            token: Some(secrets.trustdinfo.token.clone()),
            ca: Some(bundle_pair(&secrets.certs.os, control_plane)),
            cert_sans: input.additional_sans.clone(),
            features: Some(Features {
                disk_quota_support: Some(true),
                ..Features::default()
            }),
            ..MachineConfig::default()
        },
        cluster: Some(ClusterConfig {
            token: Some(secrets.secrets.bootstraptoken.clone()),
            etcd: control_plane.then(|| Etcd {
                ca: Some(bundle_pair(&secrets.certs.etcd, true)),
                ..Etcd::default()
            }),
            ..ClusterConfig::default()
        }),
    };

    let k8s_ca = &secrets.certs.k8s;
    let mut documents = vec![
        raw_document(
            "DiscoveryServiceConfig",
            Some("default"),
            vec![("endpoint", RawValue::string(DISCOVERY_SERVICE_ENDPOINT))],
        )?,
        raw_document(
            "DiscoveryIdentityConfig",
            None,
            vec![
                ("clusterID", RawValue::string(&secrets.cluster.id)),
                (
                    "clusterSecret",
                    RawValue::string(secrets.cluster.secret.expose()),
                ),
            ],
        )?,
    ];
    if !input.install_disk.is_empty() {
        documents.push(raw_document(
            "UnattendedInstallConfig",
            None,
            vec![
                (
                    "installer",
                    map(vec![("image", RawValue::string(&input.install_image))]),
                ),
                (
                    "provisioning",
                    map(vec![
                        (
                            "diskSelector",
                            map(vec![(
                                "match",
                                RawValue::String(format!(
                                    "disk.dev_path == {:?}",
                                    input.install_disk
                                )),
                            )]),
                        ),
                        ("wipe", RawValue::Bool(false)),
                    ]),
                ),
            ],
        )?);
    }
    documents.extend([
        Document::Resolver(ResolverConfig {
            api_version: "v1alpha1".to_owned(),
            kind: ResolverConfig::KIND.to_owned(),
            nameservers: Vec::new(),
            search_domains: None,
            host_dns: Some(HostDns {
                enabled: Some(true),
                forward_kube_dns_to_host: Some(true),
                resolve_member_names: None,
            }),
        }),
        raw_document(
            "VolumeConfig",
            Some("EPHEMERAL"),
            vec![("mount", map(vec![("secure", RawValue::Bool(true))]))],
        )?,
        raw_document(
            "FilesystemTrimConfig",
            None,
            vec![("interval", RawValue::string(FILESYSTEM_TRIM_INTERVAL))],
        )?,
        raw_document(
            "SecurityProfileConfig",
            None,
            vec![("workloadIsolation", RawValue::Bool(true))],
        )?,
        Document::Hostname(HostnameConfig::stable()),
        raw_document(
            "KubeClusterConfig",
            None,
            vec![
                ("clusterName", RawValue::string(&input.cluster_name)),
                ("endpoint", RawValue::string(&input.endpoint)),
            ],
        )?,
    ]);
    let mut node = vec![("nodeIP", map(Vec::new()))];
    if control_plane {
        node.push((
            "labels",
            map(vec![
                (CONTROL_PLANE_ROLE_LABEL, RawValue::string("")),
                (
                    "node.kubernetes.io/exclude-from-external-load-balancers",
                    RawValue::string(""),
                ),
            ]),
        ));
        node.push((
            "taints",
            map(vec![(
                CONTROL_PLANE_ROLE_LABEL,
                RawValue::string("NoSchedule"),
            )]),
        ));
    }
    let api_server_ca = if control_plane {
        ("issuingCA", literal_pem_pair(k8s_ca))
    } else {
        (
            "acceptedCAs",
            RawValue::Seq(vec![RawValue::string(k8s_ca.crt.as_str())]),
        )
    };
    documents.extend([
        raw_document("KubeNodeConfig", None, node)?,
        raw_document(
            "KubeletConfig",
            None,
            vec![
                (
                    "image",
                    RawValue::String(format!("ghcr.io/siderolabs/kubelet:v{version}")),
                ),
                ("config", map(Vec::new())),
                ("defaultRuntimeSeccompProfileEnabled", RawValue::Bool(true)),
            ],
        )?,
        raw_document(
            "KubeNetworkConfig",
            None,
            vec![
                ("dnsDomain", RawValue::string(DNS_DOMAIN)),
                (
                    "podSubnets",
                    RawValue::Seq(vec![RawValue::string(POD_SUBNET)]),
                ),
                (
                    "serviceSubnets",
                    RawValue::Seq(vec![RawValue::string(SERVICE_SUBNET)]),
                ),
            ],
        )?,
        raw_document("KubeAPIServerCAConfig", None, vec![api_server_ca])?,
        raw_document(
            "KubePrismConfig",
            None,
            vec![("port", RawValue::UInt(KUBE_PRISM_PORT.into()))],
        )?,
    ]);
    if control_plane {
        documents.extend(control_plane_documents(input, version)?);
    }
    Ok(Config {
        v1alpha1,
        documents,
    })
}

/// The v1.14 documents only control-plane nodes carry.
fn control_plane_documents(
    input: &GenerateInput,
    version: &str,
) -> Result<Vec<Document>, GenerateError> {
    let secrets = &input.secrets;
    let image =
        |component: &str| RawValue::String(format!("registry.k8s.io/{component}:v{version}"));
    // Provider names and order as Talos 1.13 rendered them, so existing secrets still decrypt.
    let mut providers = vec![map(vec![(
        "secretbox",
        encryption_keys("key2", &secrets.secrets.secretboxencryptionsecret),
    )])];
    if let Some(aescbc) = &secrets.secrets.aescbcencryptionsecret {
        providers.push(map(vec![("aescbc", encryption_keys("key1", aescbc))]));
    }
    let mut api_server = vec![("image", image("kube-apiserver"))];
    if !input.additional_sans.is_empty() {
        api_server.push(("certExtraSANs", strings(&input.additional_sans)));
    }
    Ok(vec![
        raw_document(
            "KubeAggregatorCAConfig",
            None,
            vec![("issuingCA", literal_pem_pair(&secrets.certs.k8saggregator))],
        )?,
        raw_document(
            "KubeAdmissionControlConfig",
            Some("PodSecurity"),
            vec![("configuration", raw(POD_SECURITY_CONFIGURATION)?)],
        )?,
        raw_document(
            "KubeAuditPolicyConfig",
            None,
            vec![("configuration", raw(AUDIT_POLICY)?)],
        )?,
        raw_document(
            "KubeAuthenticationConfig",
            None,
            vec![("configuration", raw(AUTHENTICATION_CONFIGURATION)?)],
        )?,
        raw_document(
            "KubeAuthorizerConfig",
            Some("node"),
            vec![("type", RawValue::string("Node"))],
        )?,
        raw_document(
            "KubeAuthorizerConfig",
            Some("rbac"),
            vec![("type", RawValue::string("RBAC"))],
        )?,
        raw_document(
            "KubeEtcdEncryptionConfig",
            None,
            vec![(
                "config",
                map(vec![(
                    "resources",
                    RawValue::Seq(vec![map(vec![
                        ("providers", RawValue::Seq(providers)),
                        (
                            "resources",
                            RawValue::Seq(vec![RawValue::string("secrets")]),
                        ),
                    ])]),
                )]),
            )],
        )?,
        raw_document(
            "KubeServiceAccountConfig",
            None,
            vec![(
                "issuer",
                map(vec![
                    (
                        "privateKey",
                        RawValue::string(secrets.certs.k8sserviceaccount.key.as_str()),
                    ),
                    ("issuerURL", RawValue::string(&input.endpoint)),
                ]),
            )],
        )?,
        raw_document("KubeAPIServerConfig", None, api_server)?,
        raw_document(
            "KubeControllerManagerConfig",
            None,
            vec![("image", image("kube-controller-manager"))],
        )?,
        raw_document(
            "KubeSchedulerConfig",
            None,
            vec![
                ("image", image("kube-scheduler")),
                ("config", map(Vec::new())),
            ],
        )?,
        raw_document(
            "KubeProxyConfig",
            None,
            vec![("image", image("kube-proxy")), ("config", map(Vec::new()))],
        )?,
        raw_document(
            "KubeFlannelCNIConfig",
            None,
            vec![
                ("backendType", RawValue::string("vxlan")),
                ("backendPort", RawValue::UInt(4789)),
            ],
        )?,
        raw_document(
            "KubeCoreDNSConfig",
            None,
            vec![("enabled", RawValue::Bool(true))],
        )?,
    ])
}

/// A document kept as a [`RawDocument`]: `apiVersion`, `kind`, `name` if any, then `fields`.
fn raw_document(
    kind: &str,
    name: Option<&str>,
    fields: Vec<(&str, RawValue)>,
) -> Result<Document, CodecError> {
    let mut header = vec![
        ("apiVersion", RawValue::string("v1alpha1")),
        ("kind", RawValue::string(kind)),
    ];
    header.extend(name.map(|name| ("name", RawValue::string(name))));
    header.extend(fields);
    Ok(Document::Other(RawDocument {
        kind: kind.to_owned(),
        name: name.map(str::to_owned),
        text: codec::to_yaml(&map(header))?.trim_end().to_owned(),
    }))
}

/// A bundle CA as the v1alpha1 document holds it (base64 PEM); the key only `with_key`.
fn bundle_pair(pair: &secrets::PemPair, with_key: bool) -> PemPair {
    PemPair {
        crt: pair.crt.clone(),
        key: with_key.then(|| pair.key.clone()),
    }
}

/// `{cert, key}` with literal PEM text, as the v1.14 documents hold CA material.
fn literal_pem_pair(pair: &secrets::PemPair) -> RawValue {
    map(vec![
        ("cert", RawValue::string(pair.crt.as_str())),
        ("key", RawValue::string(pair.key.as_str())),
    ])
}

fn encryption_keys(name: &str, secret: &str) -> RawValue {
    map(vec![(
        "keys",
        RawValue::Seq(vec![map(vec![
            ("name", RawValue::string(name)),
            ("secret", RawValue::string(secret)),
        ])]),
    )])
}

fn map(entries: Vec<(&str, RawValue)>) -> RawValue {
    RawValue::Map(
        entries
            .into_iter()
            .map(|(key, value)| (RawValue::string(key), value))
            .collect(),
    )
}

fn strings(values: &[String]) -> RawValue {
    RawValue::Seq(values.iter().map(RawValue::string).collect())
}

fn raw(yaml: &str) -> Result<RawValue, CodecError> {
    codec::from_yaml(yaml)
}
