//! `talosctl gen config`: control-plane and worker configs plus an admin talosconfig, in the
//! Talos v1.13 classic layout, from a secrets bundle.

use std::time::SystemTime;

use super::raw::RawValue;
use super::v1alpha1::{
    ApiServer, ClusterConfig, ClusterNetwork, Component, ControlPlane, Discovery,
    DiscoveryRegistries, Etcd, Features, HostDns, Install, KubePrism, Kubelet, KubernetesRegistry,
    MachineConfig, MachineType, Network, PemKey, PemPair, Proxy, Scheduler, ServiceRegistry,
    V1Alpha1,
};
use super::{Config, ConfigError, Document, EndpointUrl, HostnameConfig};
use crate::b64::Base64Text;
use crate::codec::{self, CodecError};
use crate::pki::{self, PkiError};
use crate::role::Role;
use crate::secrets::{self, SecretsBundle};
use crate::talosconfig::{Context, Talosconfig};

/// The Talos release whose generation contract we follow.
pub const DEFAULT_TALOS_VERSION: &str = "v1.13.9";
/// Kubernetes version `gen config` defaults to (upstream v1.13.9 default).
pub const DEFAULT_KUBERNETES_VERSION: &str = "1.36.3";
pub const DEFAULT_INSTALL_DISK: &str = "/dev/sda";
/// The Image Factory installer for the vanilla (no extensions) schematic.
pub const DEFAULT_INSTALL_IMAGE: &str = "factory.talos.dev/metal-installer/376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba:v1.13.9";

const DNS_DOMAIN: &str = "cluster.local";
const POD_SUBNET: &str = "10.244.0.0/16";
const SERVICE_SUBNET: &str = "10.96.0.0/12";
const KUBE_PRISM_PORT: u16 = 7445;

/// Pod Security admission defaults: enforce baseline, audit and warn restricted, kube-system
/// exempt.
const ADMISSION_CONTROL: &str = r#"
- name: PodSecurity
  configuration:
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

const AUDIT_POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
  - level: Metadata
"#;

const CONTROL_PLANE_NODE_LABELS: &str = r#"
node.kubernetes.io/exclude-from-external-load-balancers: ""
"#;

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

    let controlplane = with_stable_hostname(document(
        input,
        version,
        &endpoint,
        MachineType::ControlPlane,
    )?);
    let worker = with_stable_hostname(document(input, version, &endpoint, MachineType::Worker)?);

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
    let pair = |p: &crate::secrets::PemPair, with_key: bool| PemPair {
        crt: p.crt.clone(),
        key: with_key.then(|| p.key.clone()),
    };

    let machine = MachineConfig {
        machine_type,
        token: Some(secrets.trustdinfo.token.clone()),
        ca: Some(pair(&secrets.certs.os, control_plane)),
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
        ca: Some(pair(&secrets.certs.k8s, control_plane)),
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
        cluster.aggregator_ca = Some(pair(&secrets.certs.k8saggregator, true));
        cluster.service_account = Some(PemKey {
            key: Base64Text(secrets.certs.k8sserviceaccount.key.0.clone()),
        });
        cluster.api_server = Some(ApiServer {
            image: Some(format!("registry.k8s.io/kube-apiserver:v{version}")),
            cert_sans: api_sans,
            disable_pod_security_policy: Some(true),
            admission_control: Some(raw(ADMISSION_CONTROL)?),
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
            ca: Some(pair(&secrets.certs.etcd, true)),
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

fn raw(yaml: &str) -> Result<RawValue, CodecError> {
    codec::from_yaml(yaml)
}
