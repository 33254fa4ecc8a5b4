//! `machine.*` settings below the top level that the node does not act on yet; modelled so
//! that a misspelt key is refused like anywhere else.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::b64::Base64Text;
use crate::config::raw::RawValue;
use crate::secret::Secret;

use super::PemPair;

/// `machine.controlPlane`: control-plane components this node does not run.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MachineControlPlane {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_manager: Option<ComponentSwitch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<ComponentSwitch>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentSwitch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
}

/// A mount added to the kubelet container.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExtraMount {
    #[serde(default)]
    pub destination: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub mount_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uid_mappings: Vec<IdMapping>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gid_mappings: Vec<IdMapping>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdMapping {
    #[serde(rename = "containerID", default)]
    pub container_id: u32,
    #[serde(rename = "hostID", default)]
    pub host_id: u32,
    #[serde(default)]
    pub size: u32,
}

/// `machine.kubelet.nodeIP`: the subnets the kubelet picks its node IP from.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeletNodeIp {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub valid_subnets: Vec<String>,
}

/// A legacy user disk (`machine.disks`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineDisk {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<DiskPartition>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskPartition {
    /// Bytes, or a size such as `100 GB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mountpoint: Option<String>,
}

/// A file written at boot (`machine.files`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineFile {
    #[serde(default)]
    pub content: String,
    /// An octal mode such as `0o644`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<RawValue>,
    #[serde(default)]
    pub path: String,
    /// `create`, `append` or `overwrite`.
    #[serde(default)]
    pub op: String,
}

/// `machine.install.diskSelector`: the install disk by its properties.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InstallDiskSelector {
    /// A size with an optional comparison, e.g. `>= 1TB`, or bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modalias: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwid: Option<String>,
    /// `ssd`, `hdd`, `nvme` or `sd`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub disk_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus_path: Option<String>,
}

/// A system extension installed with the OS (deprecated upstream).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallExtension {
    #[serde(default)]
    pub image: String,
}

/// `machine.registries`: mirrors and per-registry TLS and credentials, by registry host.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registries {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mirrors: BTreeMap<String, RegistryMirror>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, RegistryHostConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegistryMirror {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_path: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_fallback: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryHostConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RegistryTls>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<RegistryAuth>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegistryTls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_identity: Option<PemPair>,
    /// The registry's CA, base64 PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<Base64Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegistryAuth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_token: Option<Secret>,
}

/// `machine.systemDiskEncryption` (deprecated upstream in favour of `VolumeConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemDiskEncryption {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<PartitionEncryption>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral: Option<PartitionEncryption>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PartitionEncryption {
    #[serde(default)]
    pub provider: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<EncryptionKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cipher: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// One key slot: exactly one of `static`, `nodeID`, `kms` or `tpm`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionKey {
    #[serde(rename = "static", default, skip_serializing_if = "Option::is_none")]
    pub static_key: Option<StaticKey>,
    #[serde(rename = "nodeID", default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<NodeIdKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms: Option<KmsKey>,
    #[serde(default)]
    pub slot: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<TpmKey>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticKey {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase: Option<Secret>,
}

/// A key derived from the node's identity; it has no settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeIdKey {}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsKey {
    #[serde(default)]
    pub endpoint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TpmKey {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_secureboot_status_on_enroll: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Udev {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
}

/// `machine.logging`: where service logs are sent.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logging {
    #[serde(default)]
    pub destinations: Vec<LoggingDestination>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LoggingDestination {
    /// `tcp://host:port` or `udp://host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `json_lines`.
    #[serde(default)]
    pub format: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_tags: Option<RawValue>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modules: Vec<KernelModule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelModule {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeccompProfile {
    #[serde(default)]
    pub name: String,
    /// The profile, as a seccomp JSON object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<RawValue>,
}

/// `machine.features.kubernetesTalosAPIAccess`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubernetesTalosApiAccess {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_kubernetes_namespaces: Vec<String>,
}

/// `machine.features.imageCache`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImageCache {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_enabled: Option<bool>,
}
