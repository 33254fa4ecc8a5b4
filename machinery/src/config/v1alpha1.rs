//! The legacy `version: v1alpha1` document (classic layout, valid in Talos v1.13).
//!
//! Every key upstream documents for this document is modelled, and unknown keys are errors at
//! every level. Only free-form values hold a [`RawValue`]: Kubernetes objects (static pods,
//! kubelet and scheduler config, audit policy), argument and label maps, and scalars upstream
//! accepts in several forms (sizes, file modes).

mod cluster;
mod machine;
mod network;

pub use cluster::*;
pub use machine::*;
pub use network::*;

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::raw::RawValue;
use crate::b64::Base64Text;
use crate::secret::Secret;

/// What a machine does in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MachineType {
    ControlPlane,
    #[default]
    Worker,
}

impl MachineType {
    pub fn as_str(self) -> &'static str {
        match self {
            MachineType::ControlPlane => "controlplane",
            MachineType::Worker => "worker",
        }
    }

    /// Upstream spellings: `controlplane`, legacy `init` (a control plane), `worker`, and the
    /// legacy `join` or empty string (a worker).
    pub fn parse(value: &str) -> Option<MachineType> {
        match value {
            "controlplane" | "init" => Some(MachineType::ControlPlane),
            "worker" | "join" | "" => Some(MachineType::Worker),
            _ => None,
        }
    }
}

impl fmt::Display for MachineType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for MachineType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for MachineType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        MachineType::parse(&value).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown machine type {value:?}: expected controlplane or worker"
            ))
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct V1Alpha1 {
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persist: Option<bool>,
    #[serde(default)]
    pub machine: MachineConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterConfig>,
}

/// A certificate and optional key, base64 PEM. Workers carry `key: ""` or no key.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PemPair {
    #[serde(default)]
    pub crt: Base64Text,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Base64Text>,
}

impl PemPair {
    /// The key, unless absent or empty.
    pub fn key(&self) -> Option<&str> {
        self.key
            .as_ref()
            .filter(|k| !k.is_empty())
            .map(Base64Text::as_str)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PemCert {
    pub crt: Base64Text,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PemKey {
    pub key: Base64Text,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MachineConfig {
    #[serde(rename = "type", default)]
    pub machine_type: MachineType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PemPair>,
    #[serde(rename = "acceptedCAs", default, skip_serializing_if = "Vec::is_empty")]
    pub accepted_cas: Vec<PemCert>,
    #[serde(rename = "certSANs", default)]
    pub cert_sans: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<MachineControlPlane>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet: Option<Kubelet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disks: Option<Vec<MachineDisk>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<Install>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<MachineFile>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sysctls: Option<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sysfs: Option<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registries: Option<Registries>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_disk_encryption: Option<SystemDiskEncryption>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Features>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udev: Option<Udev>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<Kernel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp_profiles: Option<Vec<SeccompProfile>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_runtime_spec_overrides: Option<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_labels: Option<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_annotations: Option<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_taints: Option<RawValue>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Kubelet {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(
        rename = "clusterDNS",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cluster_dns: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_args: Option<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_mounts: Option<Vec<ExtraMount>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_config: Option<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_provider_config: Option<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_runtime_seccomp_profile_enabled: Option<bool>,
    #[serde(
        rename = "registerWithFQDN",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub register_with_fqdn: Option<bool>,
    #[serde(rename = "nodeIP", default, skip_serializing_if = "Option::is_none")]
    pub node_ip: Option<KubeletNodeIp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_node_registration: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_manifests_directory: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Network {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_domains: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_host_entries: Option<Vec<ExtraHost>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubespan: Option<KubeSpan>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_search_domain: Option<bool>,
}

/// One entry of `machine.network.interfaces`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Interface {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_selector: Option<DeviceSelector>,
    /// Addresses in CIDR notation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Deprecated single address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<Route>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bond: Option<Bond>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<Bridge>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge_port: Option<BridgePort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlans: Option<Vec<Vlan>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dummy: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp_options: Option<DhcpOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard: Option<Wireguard>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<Vip>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Install {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_selector: Option<InstallDiskSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_kernel_args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Vec<InstallExtension>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootloader: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wipe: Option<bool>,
    #[serde(
        rename = "legacyBIOSSupport",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub legacy_bios_support: Option<bool>,
    #[serde(
        rename = "grubUseUKICmdline",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub grub_use_uki_cmdline: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Time {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_timeout: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Features {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rbac: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_hostname: Option<bool>,
    #[serde(
        rename = "kubernetesTalosAPIAccess",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub kubernetes_talos_api_access: Option<KubernetesTalosApiAccess>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apid_check_ext_key_usage: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_quota_support: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_prism: Option<KubePrism>,
    #[serde(rename = "hostDNS", default, skip_serializing_if = "Option::is_none")]
    pub host_dns: Option<HostDns>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_cache: Option<ImageCache>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_address_sort_algorithm: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubePrism {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HostDns {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(
        rename = "forwardKubeDNSToHost",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub forward_kube_dns_to_host: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolve_member_names: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<ControlPlane>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<ClusterNetwork>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aescbc_encryption_secret: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secretbox_encryption_secret: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PemPair>,
    #[serde(rename = "acceptedCAs", default, skip_serializing_if = "Vec::is_empty")]
    pub accepted_cas: Vec<PemCert>,
    #[serde(
        rename = "aggregatorCA",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub aggregator_ca: Option<PemPair>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<PemKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server: Option<ApiServer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_manager: Option<Component>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<Proxy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<Scheduler>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<Discovery>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<Etcd>,
    #[serde(rename = "coreDNS", default, skip_serializing_if = "Option::is_none")]
    pub core_dns: Option<CoreDns>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_cloud_provider: Option<ExternalCloudProvider>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_manifests: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_manifest_headers: Option<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline_manifests: Option<Vec<InlineManifest>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_kubeconfig: Option<AdminKubeconfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_scheduling_on_control_planes: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_scheduling_on_masters: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ControlPlane {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(
        rename = "localAPIServerPort",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub local_api_server_port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterNetwork {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni: Option<Cni>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pod_subnets: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_subnets: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiServer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(rename = "certSANs", default, skip_serializing_if = "Vec::is_empty")]
    pub cert_sans: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_args: Option<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_volumes: Option<Vec<VolumeMount>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_pod_security_policy: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission_control: Option<Vec<AdmissionPlugin>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_policy: Option<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_config: Option<Vec<Authorizer>>,
}

/// `cluster.controllerManager`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Component {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_args: Option<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_volumes: Option<Vec<VolumeMount>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Scheduler {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_args: Option<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_volumes: Option<Vec<VolumeMount>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<RawValue>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Proxy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_args: Option<RawValue>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Etcd {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PemPair>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_args: Option<RawValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub advertised_subnets: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listen_subnets: Vec<String>,
    /// Deprecated predecessor of `advertisedSubnets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Discovery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registries: Option<DiscoveryRegistries>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryRegistries {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesRegistry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceRegistry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesRegistry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRegistry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}
