//! Schemas of the runtime, block, storage, CRI, security, cluster, container, hardware and
//! SideroLink kinds.
//!
//! Values Talos parses from text (durations, byte sizes, URLs, CEL expressions) are kept as
//! strings: the YAML decoder reads any scalar, quoted or not, into a string, as Talos does.

use std::collections::BTreeMap;

use serde::de;
use serde::{Deserialize, Deserializer, Serialize};

use super::{KindDocument, Schema, schema};
use crate::config::raw::RawValue;
use crate::secret::Secret;

pub(super) const SCHEMAS: &[Schema] = &[
    schema::<UnattendedInstallConfig>(),
    schema::<DiscoveryServiceConfig>(),
    schema::<DiscoveryIdentityConfig>(),
    schema::<SysctlConfig>(),
    schema::<KernelModuleConfig>(),
    schema::<EnvironmentConfig>(),
    schema::<SecurityProfileConfig>(),
    schema::<VolumeConfig>(),
    schema::<UserVolumeConfig>(),
    schema::<FilesystemTrimConfig>(),
    schema::<RegistryMirrorConfig>(),
    schema::<RegistryAuthConfig>(),
    schema::<RegistryTLSConfig>(),
    schema::<TrustedRootsConfig>(),
    schema::<FilesystemScrubConfig>(),
    schema::<RawVolumeConfig>(),
    schema::<SwapVolumeConfig>(),
    schema::<ZswapConfig>(),
    schema::<ExistingVolumeConfig>(),
    schema::<ExternalVolumeConfig>(),
    schema::<LVMVolumeGroupConfig>(),
    schema::<LVMLogicalVolumeConfig>(),
    schema::<RAIDArrayConfig>(),
    schema::<EventSinkConfig>(),
    schema::<KmsgLogConfig>(),
    schema::<WatchdogTimerConfig>(),
    schema::<SysfsConfig>(),
    schema::<UdevRulesConfig>(),
    schema::<OOMConfig>(),
    schema::<EtcFileConfig>(),
    schema::<ExtensionServiceConfig>(),
    schema::<CRIBaseRuntimeSpecConfig>(),
    schema::<CRICustomizationConfig>(),
    schema::<ImageCacheConfig>(),
    schema::<ImageVerificationConfig>(),
    schema::<ContainerConfig>(),
    schema::<PCIDriverRebindConfig>(),
    schema::<SideroLinkConfig>(),
];

/// `kind: UnattendedInstallConfig`: install onto a disk chosen by a CEL selector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UnattendedInstallConfig {
    pub api_version: String,
    pub kind: String,
    /// Reboot after installing; absent means only when `installer.image` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installer: Option<InstallerSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning: Option<ProvisioningSpec>,
}

impl KindDocument for UnattendedInstallConfig {
    const KIND: &'static str = "UnattendedInstallConfig";
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallerSpec {
    /// The installer image reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProvisioningSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_selector: Option<DiskSelector>,
    /// Wipe the disk before installing; absent means yes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wipe: Option<bool>,
}

/// Disks matched by a CEL expression over the disk's properties.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSelector {
    /// A CEL expression, e.g. `disk.dev_path == "/dev/sda"`.
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
}

/// `kind: DiscoveryServiceConfig`: a discovery service the node registers with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DiscoveryServiceConfig {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// The service URL, e.g. `https://discovery.talos.dev/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

impl KindDocument for DiscoveryServiceConfig {
    const KIND: &'static str = "DiscoveryServiceConfig";
}

/// `kind: DiscoveryIdentityConfig`: the cluster identity used for discovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DiscoveryIdentityConfig {
    pub api_version: String,
    pub kind: String,
    /// Base64 of 32 random bytes.
    #[serde(rename = "clusterID", default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// Base64 of 32 random bytes; encrypts what the node publishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_secret: Option<Secret>,
}

impl KindDocument for DiscoveryIdentityConfig {
    const KIND: &'static str = "DiscoveryIdentityConfig";
}

/// `kind: SysctlConfig`: kernel parameters to set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SysctlConfig {
    pub api_version: String,
    pub kind: String,
    /// Values by name, e.g. `net.core.somaxconn: "65535"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
}

impl KindDocument for SysctlConfig {
    const KIND: &'static str = "SysctlConfig";
}

/// `kind: KernelModuleConfig`: a kernel module `name` to load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KernelModuleConfig {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// Module parameters, each `key=value`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<String>,
}

impl KindDocument for KernelModuleConfig {
    const KIND: &'static str = "KernelModuleConfig";
}

/// `kind: EnvironmentConfig`: environment variables for Talos services.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvironmentConfig {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
}

impl KindDocument for EnvironmentConfig {
    const KIND: &'static str = "EnvironmentConfig";
}

/// `kind: SecurityProfileConfig`: host-wide security hardening switches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecurityProfileConfig {
    pub api_version: String,
    pub kind: String,
    /// Run the container runtime inside a sandbox namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_isolation: Option<bool>,
}

impl KindDocument for SecurityProfileConfig {
    const KIND: &'static str = "SecurityProfileConfig";
}

/// `kind: VolumeConfig`: settings of the system volume `name` (`EPHEMERAL`, `STATE`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeConfig {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning: Option<VolumeProvisioning>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<VolumeFilesystem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<VolumeEncryption>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<VolumeMount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trim: Option<VolumePeriodicTask>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrub: Option<VolumePeriodicTask>,
}

impl KindDocument for VolumeConfig {
    const KIND: &'static str = "VolumeConfig";
}

/// `kind: UserVolumeConfig`: a user volume `name`, mounted under `/var/mnt/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UserVolumeConfig {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// `partition` (the default), `disk` or `directory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning: Option<VolumeProvisioning>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<UserVolumeFilesystem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<VolumeEncryption>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<VolumeMount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trim: Option<VolumePeriodicTask>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrub: Option<VolumePeriodicTask>,
}

impl KindDocument for UserVolumeConfig {
    const KIND: &'static str = "UserVolumeConfig";
}

/// Where and how large a volume's partition is created.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeProvisioning {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_selector: Option<DiskSelector>,
    /// Grow the partition into free space after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grow: Option<bool>,
    /// A byte size: bytes as a number, or a string like `10GiB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size: Option<String>,
    /// A byte size as for `minSize` or a percentage of the disk like `80%`; a negative size
    /// leaves that much of the disk free.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<String>,
}

/// Filesystem settings of a system volume.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeFilesystem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xfs: Option<VolumeXfs>,
}

/// Filesystem settings of a user volume.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UserVolumeFilesystem {
    /// `xfs` (the default), `ext4`, ...
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub fs_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_quota_support: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xfs: Option<VolumeXfs>,
}

/// XFS creation options.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeXfs {
    /// A byte size: bytes as a number, or a string like `256MiB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_allocation_group_size: Option<String>,
}

/// Mount options of a volume.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeMount {
    /// Mount with `nosuid` and `nodev` (and `noexec` for some volumes); absent means yes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure: Option<bool>,
    /// Mount with `noatime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_access_time: Option<bool>,
}

/// A periodic filesystem task of a volume (trim or scrub).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumePeriodicTask {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// A Go duration, e.g. `24h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
}

/// Encryption of a volume.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeEncryption {
    /// `luks2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<VolumeEncryptionKey>,
    /// A cryptsetup cipher, e.g. `aes-xts-plain64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cipher: Option<String>,
    /// Key size in bits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_size: Option<u32>,
    /// Sector size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u64>,
    /// cryptsetup performance options, e.g. `no_read_workqueue`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_discards: Option<bool>,
}

/// One key slot of an encrypted volume; exactly one key source is set.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeEncryptionKey {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<u32>,
    #[serde(rename = "static", default, skip_serializing_if = "Option::is_none")]
    pub static_key: Option<VolumeEncryptionStaticKey>,
    /// A key derived from the node ID: `nodeID: {}`.
    #[serde(rename = "nodeID", default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<VolumeEncryptionNodeIdKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms: Option<VolumeEncryptionKmsKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<VolumeEncryptionTpmKey>,
    /// Also bind the key to a random salt kept on the STATE volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_to_state: Option<bool>,
}

/// A fixed passphrase.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeEncryptionStaticKey {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase: Option<Secret>,
}

/// A key derived from the node ID; has no settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeEncryptionNodeIdKey {}

/// A key sealed by a KMS server.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeEncryptionKmsKey {
    /// The KMS server address, e.g. `https://192.0.2.10:4443`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// A key sealed by the TPM.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeEncryptionTpmKey {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<VolumeEncryptionTpmOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_secureboot_status_on_enroll: Option<bool>,
}

/// TPM sealing options.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeEncryptionTpmOptions {
    /// PCRs the key is bound to: absent means PCR 7, `[]` none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcrs: Option<Vec<u32>>,
}

/// `kind: FilesystemTrimConfig`: how often mounted filesystems are trimmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FilesystemTrimConfig {
    pub api_version: String,
    pub kind: String,
    /// A Go duration, e.g. `24h0m0s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
}

impl KindDocument for FilesystemTrimConfig {
    const KIND: &'static str = "FilesystemTrimConfig";
}

/// `kind: FilesystemScrubConfig`: how often mounted XFS filesystems are scrubbed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FilesystemScrubConfig {
    pub api_version: String,
    pub kind: String,
    /// A Go duration, e.g. `168h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
}

impl KindDocument for FilesystemScrubConfig {
    const KIND: &'static str = "FilesystemScrubConfig";
}

/// `kind: RawVolumeConfig`: an unformatted partition `name` for workloads to use as a block device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawVolumeConfig {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning: Option<VolumeProvisioning>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<VolumeEncryption>,
}

impl KindDocument for RawVolumeConfig {
    const KIND: &'static str = "RawVolumeConfig";
}

/// `kind: SwapVolumeConfig`: a swap partition `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SwapVolumeConfig {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning: Option<VolumeProvisioning>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<VolumeEncryption>,
}

impl KindDocument for SwapVolumeConfig {
    const KIND: &'static str = "SwapVolumeConfig";
}

/// `kind: ZswapConfig`: compressed in-memory cache for swapped pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ZswapConfig {
    pub api_version: String,
    pub kind: String,
    /// Share of RAM the pool may take, 0 to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pool_percent: Option<i64>,
    /// Let the kernel write cold pages on to the swap device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shrinker_enabled: Option<bool>,
}

impl KindDocument for ZswapConfig {
    const KIND: &'static str = "ZswapConfig";
}

/// `kind: ExistingVolumeConfig`: an existing partition or disk mounted as `/var/mnt/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExistingVolumeConfig {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<ExistingVolumeDiscovery>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<ExistingVolumeMount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trim: Option<VolumePeriodicTask>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrub: Option<VolumePeriodicTask>,
}

impl KindDocument for ExistingVolumeConfig {
    const KIND: &'static str = "ExistingVolumeConfig";
}

/// How an existing volume is found.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExistingVolumeDiscovery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_selector: Option<VolumeSelector>,
}

/// Volumes (partitions, disks, arrays) matched by a CEL expression over their properties.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeSelector {
    /// A CEL expression, e.g. `volume.partition_label == "DATA"`.
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
}

/// Mount options of an existing volume.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExistingVolumeMount {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// Mount with `noatime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_access_time: Option<bool>,
    /// Mount with `nosuid` and `nodev`; absent means yes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure: Option<bool>,
}

/// `kind: ExternalVolumeConfig`: a filesystem from outside the node (e.g. virtiofs) mounted as
/// `/var/mnt/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExternalVolumeConfig {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// E.g. `virtiofs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<ExternalVolumeMount>,
}

impl KindDocument for ExternalVolumeConfig {
    const KIND: &'static str = "ExternalVolumeConfig";
}

/// Mount options of an external volume.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExternalVolumeMount {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// Mount with `noatime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_access_time: Option<bool>,
    /// Mount with `nosuid` and `nodev`; absent means yes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtiofs: Option<ExternalVolumeVirtiofs>,
}

/// A virtiofs share exported by the hypervisor.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalVolumeVirtiofs {
    /// The share's tag as the hypervisor exports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// `kind: LVMVolumeGroupConfig`: an LVM volume group `name` over the matched volumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LVMVolumeGroupConfig {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning: Option<LvmVolumeGroupProvisioning>,
}

impl KindDocument for LVMVolumeGroupConfig {
    const KIND: &'static str = "LVMVolumeGroupConfig";
}

/// The physical volumes of a volume group.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LvmVolumeGroupProvisioning {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_selector: Option<VolumeSelector>,
}

/// `kind: LVMLogicalVolumeConfig`: an LVM logical volume `name` in a volume group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LVMLogicalVolumeConfig {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// `linear`, `raid0`, `raid1` or `raid10`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub lv_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirrors: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning: Option<LvmLogicalVolumeProvisioning>,
}

impl KindDocument for LVMLogicalVolumeConfig {
    const KIND: &'static str = "LVMLogicalVolumeConfig";
}

/// Where and how large a logical volume is created.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LvmLogicalVolumeProvisioning {
    /// The name of an `LVMVolumeGroupConfig`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_group: Option<String>,
    /// A byte size, as for volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size: Option<String>,
    /// A byte size or a percentage, as for volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<String>,
}

/// `kind: RAIDArrayConfig`: a Linux software RAID (md) array `name` over the matched volumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RAIDArrayConfig {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// E.g. `raid1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// The md superblock format, `1.0` (the default) or `1.2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning: Option<RaidArrayProvisioning>,
}

impl KindDocument for RAIDArrayConfig {
    const KIND: &'static str = "RAIDArrayConfig";
}

/// The member volumes of an array.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RaidArrayProvisioning {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_selector: Option<VolumeSelector>,
}

/// `kind: RegistryMirrorConfig`: mirrors of the image registry `name` (`*` for all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegistryMirrorConfig {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// Tried in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<RegistryMirrorEndpoint>,
    /// Do not fall back to the registry itself when every mirror fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_fallback: Option<bool>,
}

impl KindDocument for RegistryMirrorConfig {
    const KIND: &'static str = "RegistryMirrorConfig";
}

/// One mirror of a registry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegistryMirrorEndpoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Use the URL's path as given, without appending `/v2/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_path: Option<bool>,
}

/// `kind: RegistryAuthConfig`: credentials for the registry host `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegistryAuthConfig {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Base64 of `username:password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_token: Option<Secret>,
}

impl KindDocument for RegistryAuthConfig {
    const KIND: &'static str = "RegistryAuthConfig";
}

/// `kind: RegistryTLSConfig`: TLS settings for the registry host `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegistryTLSConfig {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_identity: Option<RegistryTlsClientIdentity>,
    /// PEM certificates trusted for the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
}

impl KindDocument for RegistryTLSConfig {
    const KIND: &'static str = "RegistryTLSConfig";
}

/// A client certificate and key, both PEM, presented to a registry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryTlsClientIdentity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Secret>,
}

/// `kind: TrustedRootsConfig`: extra CA certificates the system trusts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrustedRootsConfig {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// PEM certificates, concatenated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates: Option<String>,
}

impl KindDocument for TrustedRootsConfig {
    const KIND: &'static str = "TrustedRootsConfig";
}

/// `kind: EventSinkConfig`: stream machine events to a gRPC sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EventSinkConfig {
    pub api_version: String,
    pub kind: String,
    /// `host:port` of the sink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

impl KindDocument for EventSinkConfig {
    const KIND: &'static str = "EventSinkConfig";
}

/// `kind: KmsgLogConfig`: stream kernel log messages to the destination `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KmsgLogConfig {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// `tcp://` or `udp://` with a port and no path, e.g. `udp://192.0.2.5:3785`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl KindDocument for KmsgLogConfig {
    const KIND: &'static str = "KmsgLogConfig";
}

/// `kind: WatchdogTimerConfig`: a hardware watchdog Talos keeps feeding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WatchdogTimerConfig {
    pub api_version: String,
    pub kind: String,
    /// E.g. `/dev/watchdog0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// A Go duration, e.g. `2m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

impl KindDocument for WatchdogTimerConfig {
    const KIND: &'static str = "WatchdogTimerConfig";
}

/// `kind: SysfsConfig`: values to write under `/sys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SysfsConfig {
    pub api_version: String,
    pub kind: String,
    /// Values by dotted path below `/sys`, e.g. `devices.system.cpu.cpu0.cpufreq.scaling_governor`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
}

impl KindDocument for SysfsConfig {
    const KIND: &'static str = "SysfsConfig";
}

/// `kind: UdevRulesConfig`: extra udev rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UdevRulesConfig {
    pub api_version: String,
    pub kind: String,
    /// One udev rule per entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
}

impl KindDocument for UdevRulesConfig {
    const KIND: &'static str = "UdevRulesConfig";
}

/// `kind: OOMConfig`: the userspace out-of-memory handler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OOMConfig {
    pub api_version: String,
    pub kind: String,
    /// A boolean CEL expression over memory pressure stall figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_expression: Option<String>,
    /// A CEL expression scoring a cgroup; the highest score is killed first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_ranking_expression: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict_cgroup_class_ordering: Option<bool>,
    /// A Go duration, e.g. `100ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_interval: Option<String>,
}

impl KindDocument for OOMConfig {
    const KIND: &'static str = "OOMConfig";
}

/// `kind: EtcFileConfig`: a file `name` under `/etc` managed by the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EtcFileConfig {
    pub api_version: String,
    pub kind: String,
    /// The path relative to `/etc`.
    pub name: String,
    /// An integer mode, usually octal like `0o644` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contents: Option<String>,
}

impl KindDocument for EtcFileConfig {
    const KIND: &'static str = "EtcFileConfig";
}

/// `kind: ExtensionServiceConfig`: files and environment of the extension service `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExtensionServiceConfig {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_files: Vec<ExtensionServiceConfigFile>,
    /// Variables, each `KEY=value`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment: Vec<String>,
}

impl KindDocument for ExtensionServiceConfig {
    const KIND: &'static str = "ExtensionServiceConfig";
}

/// A file mounted into an extension service's container.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExtensionServiceConfigFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_path: Option<String>,
}

/// `kind: CRIBaseRuntimeSpecConfig`: changes to containerd's base OCI runtime spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CRIBaseRuntimeSpecConfig {
    pub api_version: String,
    pub kind: String,
    /// A fragment of an OCI runtime spec merged over the default one, taken as-is.
    #[serde(
        default,
        deserialize_with = "mapping",
        skip_serializing_if = "Option::is_none"
    )]
    pub overrides: Option<RawValue>,
}

impl KindDocument for CRIBaseRuntimeSpecConfig {
    const KIND: &'static str = "CRIBaseRuntimeSpecConfig";
}

/// A free-form mapping of any content; null reads as absent.
fn mapping<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<RawValue>, D::Error> {
    match Option::<RawValue>::deserialize(deserializer)? {
        None | Some(RawValue::Null) => Ok(None),
        Some(value @ RawValue::Map(_)) => Ok(Some(value)),
        Some(_) => Err(de::Error::custom("expected a mapping")),
    }
}

/// `kind: CRICustomizationConfig`: a containerd config fragment `name`, in TOML.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CRICustomizationConfig {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

impl KindDocument for CRICustomizationConfig {
    const KIND: &'static str = "CRICustomizationConfig";
}

/// `kind: ImageCacheConfig`: the node-local container image cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImageCacheConfig {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<ImageCacheLocal>,
}

impl KindDocument for ImageCacheConfig {
    const KIND: &'static str = "ImageCacheConfig";
}

/// The cache kept on the machine itself.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageCacheLocal {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// `kind: ImageVerificationConfig`: signature checks of pulled images.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImageVerificationConfig {
    pub api_version: String,
    pub kind: String,
    /// The first rule whose pattern matches an image decides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<ImageVerificationRule>,
}

impl KindDocument for ImageVerificationConfig {
    const KIND: &'static str = "ImageVerificationConfig";
}

/// What is required of images matching a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImageVerificationRule {
    /// A glob over registry and repository, e.g. `registry.k8s.io/*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Accept matching images unchecked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip: Option<bool>,
    /// Refuse matching images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyless: Option<ImageVerificationKeyless>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<ImageVerificationPublicKey>,
}

/// A Sigstore keyless signer identity.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImageVerificationKeyless {
    /// The OIDC issuer URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// A regular expression the subject must match, instead of `subject`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_regex: Option<String>,
}

/// A fixed signing key.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageVerificationPublicKey {
    /// PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
}

/// `kind: ContainerConfig`: a container `name` Talos runs itself, outside Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerConfig {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// An image reference, best pinned by digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as: Option<ContainerRunAs>,
    /// Variables, each `KEY=value`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<ContainerMount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<ContainerSecurity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<ContainerNetwork>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ContainerResources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<ContainerDependsOn>,
}

impl KindDocument for ContainerConfig {
    const KIND: &'static str = "ContainerConfig";
}

/// The user and group a container runs as.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerRunAs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<i32>,
}

/// One mount of a container; exactly one source is set.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerMount {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_volume: Option<ContainerUserVolumeMount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs: Option<ContainerTmpfsMount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<ContainerHostPathMount>,
}

/// A user volume mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerUserVolumeMount {
    /// The name of a `UserVolumeConfig`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// Mount options, e.g. `ro`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// A tmpfs mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerTmpfsMount {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// A byte size, e.g. `64MiB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// A host path bind-mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerHostPathMount {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// Security settings of a container.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSecurity {
    /// `restricted` or `privileged`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<ContainerCapabilities>,
}

/// Linux capabilities added to and dropped from a container's default set.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerCapabilities {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop: Vec<String>,
}

/// The network namespace of a container.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerNetwork {
    /// `none` (the default) or `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// cgroup resource settings of a container.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerResources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ContainerResourceLimits>,
}

/// Hard limits of a container.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerResourceLimits {
    /// Millicores, e.g. `1500m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// A byte size, e.g. `512MiB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

/// What must be ready before a container starts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerDependsOn {
    /// Paths that must exist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Network conditions: `addresses`, `connectivity`, `hostname`, `etcfiles`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
    /// Wait for time to be synchronised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<bool>,
    /// Names of other `ContainerConfig` containers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<String>,
}

/// `kind: PCIDriverRebindConfig`: bind the PCI device `name` (e.g. `0000:04:00.0`) to another
/// driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PCIDriverRebindConfig {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// E.g. `vfio-pci`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_driver: Option<String>,
}

impl KindDocument for PCIDriverRebindConfig {
    const KIND: &'static str = "PCIDriverRebindConfig";
}

/// `kind: SideroLinkConfig`: the SideroLink (Omni) management tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SideroLinkConfig {
    pub api_version: String,
    pub kind: String,
    /// `https://` or `grpc://`, with the join token as the `jointoken` query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_token: Option<Secret>,
}

impl KindDocument for SideroLinkConfig {
    const KIND: &'static str = "SideroLinkConfig";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use crate::config::{Config, ConfigError};

    const V1ALPHA1: &str =
        "version: v1alpha1\nmachine:\n  type: worker\n  token: abcdef.0123456789abcdef\n";

    const EVERY_KIND: &str = r#"apiVersion: v1alpha1
kind: UnattendedInstallConfig
installer:
  image: ghcr.io/siderolabs/installer:v1.14.0
provisioning:
  diskSelector:
    match: disk.dev_path == "/dev/sda"
  wipe: true
---
apiVersion: v1alpha1
kind: DiscoveryServiceConfig
name: lab
endpoint: https://discovery.lab.internal:3000/
---
apiVersion: v1alpha1
kind: DiscoveryIdentityConfig
clusterID: c2V2ZW50eS10d28tYnl0ZXMtb2YtY2x1c3Rlci1pZGVudGl0eQ==
clusterSecret: c2VjcmV0LWZvci1lbmNyeXB0aW5nLWFmZmlsaWF0ZXM=
---
apiVersion: v1alpha1
kind: SysctlConfig
params:
  net.core.somaxconn: "65535"
  vm.max_map_count: 262144
---
apiVersion: v1alpha1
kind: KernelModuleConfig
name: zfs
parameters:
  - zfs_arc_max=4294967296
---
apiVersion: v1alpha1
kind: EnvironmentConfig
variables:
  HTTPS_PROXY: http://proxy.lab.internal:3128
  NO_PROXY: 10.0.0.0/8,.lab.internal
---
apiVersion: v1alpha1
kind: SecurityProfileConfig
workloadIsolation: true
---
apiVersion: v1alpha1
kind: VolumeConfig
name: EPHEMERAL
provisioning:
  diskSelector:
    match: disk.transport == "nvme" && !system_disk
  grow: false
  minSize: 20GiB
  maxSize: -5GiB
filesystem:
  xfs:
    minAllocationGroupSize: 268435456
encryption:
  provider: luks2
  keys:
    - slot: 0
      tpm:
        options:
          pcrs: []
        checkSecurebootStatusOnEnroll: true
    - slot: 1
      nodeID: {}
      lockToState: true
  cipher: aes-xts-plain64
  keySize: 512
  blockSize: 4096
  options: [no_read_workqueue, no_write_workqueue]
  allowDiscards: true
mount:
  secure: true
  disableAccessTime: true
trim:
  enabled: true
  interval: 72h
scrub:
  enabled: false
---
apiVersion: v1alpha1
kind: UserVolumeConfig
name: ceph-data
volumeType: partition
provisioning:
  diskSelector:
    match: disk.size > 500u * GB
  minSize: 100GiB
  maxSize: 80%
filesystem:
  type: ext4
  projectQuotaSupport: true
encryption:
  provider: luks2
  keys:
    - slot: 0
      kms:
        endpoint: https://kms.lab.internal:4443
    - slot: 1
      static:
        passphrase: correct-horse-battery-staple
mount:
  secure: false
scrub:
  interval: 168h
---
apiVersion: v1alpha1
kind: FilesystemTrimConfig
interval: 12h0m0s
---
apiVersion: v1alpha1
kind: RegistryMirrorConfig
name: docker.io
endpoints:
  - url: https://mirror.lab.internal/v2/docker.io
    overridePath: true
  - url: https://mirror-b.lab.internal
skipFallback: true
---
apiVersion: v1alpha1
kind: RegistryAuthConfig
name: registry.lab.internal
username: robot
password: hunter2
auth: cm9ib3Q6aHVudGVyMg==
identityToken: opaque-token
---
apiVersion: v1alpha1
kind: RegistryTLSConfig
name: registry.lab.internal:5000
clientIdentity:
  cert: |
    -----BEGIN CERTIFICATE-----
    MIIBclientcert
    -----END CERTIFICATE-----
  key: |
    -----BEGIN EC PRIVATE KEY-----
    MHcclientkey
    -----END EC PRIVATE KEY-----
ca: |
  -----BEGIN CERTIFICATE-----
  MIIBregistryca
  -----END CERTIFICATE-----
insecureSkipVerify: false
---
apiVersion: v1alpha1
kind: TrustedRootsConfig
name: corporate
certificates: |
  -----BEGIN CERTIFICATE-----
  MIIBcorporateroot
  -----END CERTIFICATE-----
---
apiVersion: v1alpha1
kind: FilesystemScrubConfig
interval: 336h
---
apiVersion: v1alpha1
kind: RawVolumeConfig
name: ceph-osd
provisioning:
  diskSelector:
    match: disk.transport == "nvme" && !system_disk
  minSize: 200GiB
  maxSize: 400GiB
encryption:
  provider: luks2
  keys:
    - slot: 0
      tpm: {}
---
apiVersion: v1alpha1
kind: SwapVolumeConfig
name: swap1
provisioning:
  diskSelector:
    match: system_disk
  minSize: 4GiB
  maxSize: 8GiB
encryption:
  provider: luks2
  keys:
    - slot: 0
      static:
        passphrase: swap-only-secret
---
apiVersion: v1alpha1
kind: ZswapConfig
maxPoolPercent: 25
shrinkerEnabled: true
---
apiVersion: v1alpha1
kind: ExistingVolumeConfig
name: legacy-data
discovery:
  volumeSelector:
    match: volume.partition_label == "LEGACY" && disk.serial == "S3Z9NB0K"
mount:
  readOnly: true
  disableAccessTime: true
trim:
  enabled: false
scrub:
  interval: 720h
---
apiVersion: v1alpha1
kind: ExternalVolumeConfig
name: shared
filesystemType: virtiofs
mount:
  readOnly: false
  secure: true
  virtiofs:
    tag: hostshare
---
apiVersion: v1alpha1
kind: LVMVolumeGroupConfig
name: vg-data
provisioning:
  volumeSelector:
    match: disk.model == "SAMSUNG MZ7LH960" && !system_disk
---
apiVersion: v1alpha1
kind: LVMLogicalVolumeConfig
name: lv-db
type: raid1
mirrors: 1
provisioning:
  volumeGroup: vg-data
  minSize: 50GiB
  maxSize: 90%
---
apiVersion: v1alpha1
kind: RAIDArrayConfig
name: md-data
level: raid1
metadata: "1.2"
provisioning:
  volumeSelector:
    match: disk.transport == "sata" && disk.rotational
---
apiVersion: v1alpha1
kind: EventSinkConfig
endpoint: "[fd00::1]:8080"
---
apiVersion: v1alpha1
kind: KmsgLogConfig
name: remote-kmsg
url: udp://192.0.2.5:3785
---
apiVersion: v1alpha1
kind: WatchdogTimerConfig
device: /dev/watchdog0
timeout: 3m
---
apiVersion: v1alpha1
kind: SysfsConfig
params:
  devices.system.cpu.cpu0.cpufreq.scaling_governor: performance
  kernel.mm.transparent_hugepage.enabled: never
---
apiVersion: v1alpha1
kind: UdevRulesConfig
rules:
  - SUBSYSTEM=="drm", KERNEL=="renderD*", GROUP="44", MODE="0660"
  - ACTION=="add", SUBSYSTEM=="net", ATTR{address}=="aa:bb:cc:dd:ee:ff", NAME="uplink0"
---
apiVersion: v1alpha1
kind: OOMConfig
triggerExpression: memory_full_avg10 > 12.0 && time_since_trigger > duration("500ms")
cgroupRankingExpression: 'memory_max.hasValue() ? double(memory_current.orValue(0u)) / double(memory_max.value()) : 0.0'
strictCgroupClassOrdering: true
sampleInterval: 250ms
---
apiVersion: v1alpha1
kind: EtcFileConfig
name: nfsmount.conf
mode: 0o640
contents: |
  [ NFSMount_Global_Options ]
  Defaultvers=4.2
---
apiVersion: v1alpha1
kind: ExtensionServiceConfig
name: nut-client
configFiles:
  - content: MONITOR ups@192.0.2.20 1 monuser secret slave
    mountPath: /usr/local/etc/nut/upsmon.conf
environment:
  - UPS_NAME=ups
---
apiVersion: v1alpha1
kind: CRIBaseRuntimeSpecConfig
overrides:
  process:
    rlimits:
      - type: RLIMIT_NOFILE
        hard: 1048576
        soft: 1048576
---
apiVersion: v1alpha1
kind: CRICustomizationConfig
name: gvisor
content: |
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runsc]
    runtime_type = "io.containerd.runsc.v1"
---
apiVersion: v1alpha1
kind: ImageCacheConfig
local:
  enabled: true
---
apiVersion: v1alpha1
kind: ImageVerificationConfig
rules:
  - image: registry.lab.internal/*
    publicKey:
      certificate: |
        -----BEGIN CERTIFICATE-----
        MIIBsigningkey
        -----END CERTIFICATE-----
  - image: ghcr.io/siderolabs/*
    keyless:
      issuer: https://token.actions.githubusercontent.com
      subjectRegex: ^https://github\.com/siderolabs/.*$
  - image: docker.io/library/busybox
    skip: true
  - image: "*"
    deny: true
---
apiVersion: v1alpha1
kind: ContainerConfig
name: node-exporter
image: quay.io/prometheus/node-exporter@sha256:4032c6d5bfd752342c3e631c2f1de93ba6b86c41db6b167b9a35372c139e7706
args:
  - --path.rootfs=/host
workingDir: /
runAs:
  uid: 65534
  gid: 65534
environment:
  - TZ=UTC
mounts:
  - hostPath:
      source: /
      destination: /host
      options: [ro, rbind]
  - tmpfs:
      destination: /tmp
      size: 64MiB
  - userVolume:
      name: ceph-data
      destination: /data
security:
  profile: restricted
  capabilities:
    add: [SYS_TIME]
    drop: [ALL]
network:
  mode: host
resources:
  limits:
    cpu: 250m
    memory: 128MiB
dependsOn:
  paths: [/var/mnt/ceph-data]
  networks: [addresses, hostname]
  time: true
  containers: [log-shipper]
---
apiVersion: v1alpha1
kind: PCIDriverRebindConfig
name: 0000:04:00.0
targetDriver: vfio-pci
---
apiVersion: v1alpha1
kind: SideroLinkConfig
apiUrl: https://omni.lab.internal:8090/?jointoken=c2lkZXJvbGluaw
uniqueToken: 7f3c1e2a-node-token
"#;

    fn parse(documents: &str) -> Result<Config, ConfigError> {
        Config::from_bytes(format!("{V1ALPHA1}---\n{documents}").as_bytes())
    }

    /// The config's `T` document, after checking it survives being written and read back typed.
    fn typed<T: KindDocument + Serialize + PartialEq + std::fmt::Debug>(config: &Config) -> T {
        let document = config.document::<T>().unwrap().expect(T::KIND);
        let again: T = codec::from_yaml(&codec::to_yaml(&document).unwrap()).unwrap();
        assert_eq!(again, document, "{}", T::KIND);
        document
    }

    #[test]
    fn every_kind_decodes_round_trips_and_reads_typed() {
        let config = parse(EVERY_KIND).unwrap();
        let again = Config::from_bytes(config.to_yaml().unwrap().as_bytes()).unwrap();
        assert_eq!(again, config);

        let install: UnattendedInstallConfig = typed(&config);
        assert_eq!(install.provisioning.unwrap().wipe, Some(true));
        let discovery: DiscoveryServiceConfig = typed(&config);
        assert_eq!(
            discovery.endpoint.as_deref(),
            Some("https://discovery.lab.internal:3000/")
        );
        let identity: DiscoveryIdentityConfig = typed(&config);
        assert!(identity.cluster_id.unwrap().starts_with("c2V2"));
        let sysctl: SysctlConfig = typed(&config);
        assert_eq!(sysctl.params["vm.max_map_count"], "262144");
        let module: KernelModuleConfig = typed(&config);
        assert_eq!(module.parameters, ["zfs_arc_max=4294967296"]);
        let environment: EnvironmentConfig = typed(&config);
        assert_eq!(
            environment.variables["NO_PROXY"],
            "10.0.0.0/8,.lab.internal"
        );
        let profile: SecurityProfileConfig = typed(&config);
        assert_eq!(profile.workload_isolation, Some(true));

        let volume: VolumeConfig = typed(&config);
        let provisioning = volume.provisioning.unwrap();
        assert_eq!(provisioning.max_size.as_deref(), Some("-5GiB"));
        assert_eq!(
            volume
                .filesystem
                .unwrap()
                .xfs
                .unwrap()
                .min_allocation_group_size,
            Some("268435456".to_owned())
        );
        let encryption = volume.encryption.unwrap();
        assert_eq!(encryption.keys.len(), 2);
        let tpm = encryption.keys[0].tpm.clone().unwrap();
        assert_eq!(tpm.options.unwrap().pcrs, Some(vec![]));
        assert_eq!(
            encryption.keys[1].node_id,
            Some(VolumeEncryptionNodeIdKey {})
        );
        assert_eq!(encryption.block_size, Some(4096));
        assert_eq!(volume.trim.unwrap().interval.as_deref(), Some("72h"));

        let user: UserVolumeConfig = typed(&config);
        assert_eq!(user.name, "ceph-data");
        assert_eq!(user.provisioning.unwrap().max_size.as_deref(), Some("80%"));
        assert_eq!(user.filesystem.unwrap().fs_type.as_deref(), Some("ext4"));
        let keys = user.encryption.unwrap().keys;
        assert_eq!(
            keys[1].static_key.clone().unwrap().passphrase.as_deref(),
            Some("correct-horse-battery-staple")
        );

        let trim: FilesystemTrimConfig = typed(&config);
        assert_eq!(trim.interval.as_deref(), Some("12h0m0s"));
        let mirror: RegistryMirrorConfig = typed(&config);
        assert_eq!(mirror.endpoints[0].override_path, Some(true));
        assert_eq!(mirror.skip_fallback, Some(true));
        let auth: RegistryAuthConfig = typed(&config);
        assert_eq!(auth.identity_token.as_deref(), Some("opaque-token"));
        let tls: RegistryTLSConfig = typed(&config);
        assert!(
            tls.client_identity
                .unwrap()
                .key
                .unwrap()
                .contains("EC PRIVATE KEY")
        );
        assert_eq!(tls.insecure_skip_verify, Some(false));
        let roots: TrustedRootsConfig = typed(&config);
        assert!(roots.certificates.unwrap().contains("corporateroot"));

        let scrub: FilesystemScrubConfig = typed(&config);
        assert_eq!(scrub.interval.as_deref(), Some("336h"));
        let raw: RawVolumeConfig = typed(&config);
        assert_eq!(
            raw.provisioning.unwrap().min_size.as_deref(),
            Some("200GiB")
        );
        assert!(raw.encryption.unwrap().keys[0].tpm.is_some());
        let swap: SwapVolumeConfig = typed(&config);
        assert_eq!(swap.name, "swap1");
        assert_eq!(
            swap.provisioning.unwrap().disk_selector.unwrap().expression,
            Some("system_disk".to_owned())
        );
        let zswap: ZswapConfig = typed(&config);
        assert_eq!(zswap.max_pool_percent, Some(25));
        let existing: ExistingVolumeConfig = typed(&config);
        assert!(
            existing
                .discovery
                .unwrap()
                .volume_selector
                .unwrap()
                .expression
                .unwrap()
                .contains("LEGACY")
        );
        assert_eq!(existing.mount.unwrap().read_only, Some(true));
        assert_eq!(existing.scrub.unwrap().interval.as_deref(), Some("720h"));
        let external: ExternalVolumeConfig = typed(&config);
        assert_eq!(external.filesystem_type.as_deref(), Some("virtiofs"));
        assert_eq!(
            external.mount.unwrap().virtiofs.unwrap().tag.as_deref(),
            Some("hostshare")
        );
        let group: LVMVolumeGroupConfig = typed(&config);
        assert!(group.provisioning.unwrap().volume_selector.is_some());
        let logical: LVMLogicalVolumeConfig = typed(&config);
        assert_eq!(logical.lv_type.as_deref(), Some("raid1"));
        assert_eq!(logical.mirrors, Some(1));
        let provisioning = logical.provisioning.unwrap();
        assert_eq!(provisioning.volume_group.as_deref(), Some("vg-data"));
        assert_eq!(provisioning.max_size.as_deref(), Some("90%"));
        let raid: RAIDArrayConfig = typed(&config);
        assert_eq!(raid.metadata.as_deref(), Some("1.2"));

        let sink: EventSinkConfig = typed(&config);
        assert_eq!(sink.endpoint.as_deref(), Some("[fd00::1]:8080"));
        let kmsg: KmsgLogConfig = typed(&config);
        assert_eq!(kmsg.url.as_deref(), Some("udp://192.0.2.5:3785"));
        let watchdog: WatchdogTimerConfig = typed(&config);
        assert_eq!(watchdog.timeout.as_deref(), Some("3m"));
        let sysfs: SysfsConfig = typed(&config);
        assert_eq!(
            sysfs.params["kernel.mm.transparent_hugepage.enabled"],
            "never"
        );
        let udev: UdevRulesConfig = typed(&config);
        assert!(udev.rules[1].contains("uplink0"));
        let oom: OOMConfig = typed(&config);
        assert_eq!(oom.sample_interval.as_deref(), Some("250ms"));
        assert!(oom.cgroup_ranking_expression.unwrap().contains("?"));
        let etc: EtcFileConfig = typed(&config);
        assert_eq!(etc.mode.as_deref(), Some("0o640"));
        assert!(etc.contents.unwrap().contains("Defaultvers=4.2"));
        let extension: ExtensionServiceConfig = typed(&config);
        assert_eq!(
            extension.config_files[0].mount_path.as_deref(),
            Some("/usr/local/etc/nut/upsmon.conf")
        );

        let base: CRIBaseRuntimeSpecConfig = typed(&config);
        let rlimits = base.overrides.unwrap();
        let rlimits = rlimits.get("process").and_then(|p| p.get("rlimits"));
        assert!(matches!(rlimits, Some(RawValue::Seq(limits)) if limits.len() == 1));
        let customization: CRICustomizationConfig = typed(&config);
        assert!(customization.content.unwrap().contains("runsc"));
        let cache: ImageCacheConfig = typed(&config);
        assert_eq!(cache.local.unwrap().enabled, Some(true));
        let verification: ImageVerificationConfig = typed(&config);
        assert_eq!(verification.rules.len(), 4);
        assert_eq!(
            verification.rules[1]
                .keyless
                .clone()
                .unwrap()
                .subject_regex
                .as_deref(),
            Some(r"^https://github\.com/siderolabs/.*$")
        );
        assert_eq!(verification.rules[3].deny, Some(true));

        let container: ContainerConfig = typed(&config);
        assert_eq!(container.run_as.unwrap().uid, Some(65534));
        assert_eq!(container.mounts.len(), 3);
        assert_eq!(
            container.mounts[1].tmpfs.clone().unwrap().size.as_deref(),
            Some("64MiB")
        );
        assert_eq!(
            container.security.unwrap().capabilities.unwrap().drop,
            ["ALL"]
        );
        assert_eq!(container.depends_on.unwrap().time, Some(true));
        let rebind: PCIDriverRebindConfig = typed(&config);
        assert_eq!(rebind.name, "0000:04:00.0");
        assert_eq!(rebind.target_driver.as_deref(), Some("vfio-pci"));
        let siderolink: SideroLinkConfig = typed(&config);
        assert!(
            siderolink
                .api_url
                .unwrap()
                .ends_with("jointoken=c2lkZXJvbGluaw")
        );
    }

    #[test]
    fn runtime_spec_overrides_must_be_a_mapping() {
        let header = "apiVersion: v1alpha1\nkind: CRIBaseRuntimeSpecConfig\n";
        match parse(&format!("{header}overrides: [process]\n")) {
            Err(ConfigError::Codec(e)) => assert_eq!(e.path(), Some("overrides")),
            other => panic!("expected a type error, got {other:?}"),
        }
        let empty = parse(&format!("{header}overrides:\n")).unwrap();
        assert_eq!(typed::<CRIBaseRuntimeSpecConfig>(&empty).overrides, None);
    }

    #[test]
    fn misspelt_keys_are_refused_with_their_path() {
        let cases = [
            (
                "kind: UnattendedInstallConfig\nprovisioning:\n  diskSelector:\n    matches: 'true'\n",
                "provisioning.diskSelector.matches",
            ),
            (
                "kind: DiscoveryServiceConfig\nname: lab\nendpoints: https://d.example/\n",
                "endpoints",
            ),
            (
                "kind: DiscoveryIdentityConfig\nclusterId: abc\n",
                "clusterId",
            ),
            ("kind: SysctlConfig\nparameters: {}\n", "parameters"),
            (
                "kind: KernelModuleConfig\nname: zfs\nparams: [a=b]\n",
                "params",
            ),
            ("kind: EnvironmentConfig\nenv: {A: b}\n", "env"),
            (
                "kind: SecurityProfileConfig\nworkloadIsolated: true\n",
                "workloadIsolated",
            ),
            (
                "kind: VolumeConfig\nname: STATE\nencryption:\n  keys:\n    - tpm:\n        options:\n          pcr: [7]\n",
                "encryption.keys[0].tpm.options.pcr",
            ),
            (
                "kind: UserVolumeConfig\nname: data\nprovisioning:\n  maxsize: 10GiB\n",
                "provisioning.maxsize",
            ),
            ("kind: FilesystemTrimConfig\nperiod: 24h\n", "period"),
            (
                "kind: RegistryMirrorConfig\nname: docker.io\nendpoints:\n  - url: https://m.example\n    overridepath: true\n",
                "endpoints[0].overridepath",
            ),
            (
                "kind: RegistryAuthConfig\nname: r.example\nuser: robot\n",
                "user",
            ),
            (
                "kind: RegistryTLSConfig\nname: r.example\nclientIdentity:\n  crt: x\n",
                "clientIdentity.crt",
            ),
            (
                "kind: TrustedRootsConfig\nname: corp\ncertificate: x\n",
                "certificate",
            ),
            ("kind: FilesystemScrubConfig\nperiod: 24h\n", "period"),
            (
                "kind: RawVolumeConfig\nname: r\nprovisioning:\n  diskSelector:\n    expression: 'true'\n",
                "provisioning.diskSelector.expression",
            ),
            (
                "kind: SwapVolumeConfig\nname: s\nencryption:\n  keys:\n    - static:\n        password: x\n",
                "encryption.keys[0].static.password",
            ),
            (
                "kind: ZswapConfig\nmaxPoolPercentage: 20\n",
                "maxPoolPercentage",
            ),
            (
                "kind: ExistingVolumeConfig\nname: e\ndiscovery:\n  diskSelector:\n    match: 'true'\n",
                "discovery.diskSelector",
            ),
            (
                "kind: ExternalVolumeConfig\nname: x\nmount:\n  virtiofs:\n    tags: share\n",
                "mount.virtiofs.tags",
            ),
            (
                "kind: LVMVolumeGroupConfig\nname: vg\nprovisioning:\n  volumeSelector:\n    matches: 'true'\n",
                "provisioning.volumeSelector.matches",
            ),
            (
                "kind: LVMLogicalVolumeConfig\nname: lv\nprovisioning:\n  vg: vg-data\n",
                "provisioning.vg",
            ),
            (
                "kind: RAIDArrayConfig\nname: md\nprovisioning:\n  diskSelector:\n    match: 'true'\n",
                "provisioning.diskSelector",
            ),
            ("kind: EventSinkConfig\nendpoints: a:1\n", "endpoints"),
            (
                "kind: KmsgLogConfig\nname: k\nendpoint: udp://a:1\n",
                "endpoint",
            ),
            ("kind: WatchdogTimerConfig\ninterval: 1m\n", "interval"),
            ("kind: SysfsConfig\nparameters: {}\n", "parameters"),
            ("kind: UdevRulesConfig\nrule: []\n", "rule"),
            ("kind: OOMConfig\ntrigger: 'true'\n", "trigger"),
            ("kind: EtcFileConfig\nname: f\ncontent: x\n", "content"),
            (
                "kind: ExtensionServiceConfig\nname: s\nconfigFiles:\n  - content: x\n    mountpath: /etc/x\n",
                "configFiles[0].mountpath",
            ),
            ("kind: CRIBaseRuntimeSpecConfig\noverride: {}\n", "override"),
            (
                "kind: CRICustomizationConfig\nname: c\ncontents: x\n",
                "contents",
            ),
            (
                "kind: ImageCacheConfig\nlocal:\n  enable: true\n",
                "local.enable",
            ),
            (
                "kind: ImageVerificationConfig\nrules:\n  - image: '*'\n    keyless:\n      subjectRegexp: x\n",
                "rules[0].keyless.subjectRegexp",
            ),
            (
                "kind: ContainerConfig\nname: c\nmounts:\n  - hostPath:\n      source: /\n      target: /host\n",
                "mounts[0].hostPath.target",
            ),
            (
                "kind: PCIDriverRebindConfig\nname: 0000:04:00.0\ndriver: vfio-pci\n",
                "driver",
            ),
            (
                "kind: SideroLinkConfig\napiURL: https://o.example\n",
                "apiURL",
            ),
        ];
        for (document, path) in cases {
            match parse(&format!("apiVersion: v1alpha1\n{document}")) {
                Err(ConfigError::Codec(e)) => assert_eq!(e.path(), Some(path), "{document}"),
                other => panic!("{document}: expected an unknown-key error, got {other:?}"),
            }
        }
    }

    #[test]
    fn debug_shows_no_secret() {
        let config = parse(EVERY_KIND).unwrap();
        let debug = format!(
            "{config:?} {:?} {:?} {:?} {:?} {:?}",
            typed::<RegistryAuthConfig>(&config),
            typed::<RegistryTLSConfig>(&config),
            typed::<UserVolumeConfig>(&config),
            typed::<DiscoveryIdentityConfig>(&config),
            typed::<SideroLinkConfig>(&config),
        );
        for secret in [
            "hunter2",
            "cm9ib3Q6aHVudGVyMg==",
            "opaque-token",
            "MHcclientkey",
            "correct-horse-battery-staple",
            "c2VjcmV0LWZvci1lbmNyeXB0aW5nLWFmZmlsaWF0ZXM=",
            "c2lkZXJvbGluaw",
            "7f3c1e2a-node-token",
        ] {
            assert!(!debug.contains(secret), "{secret} leaks into Debug");
        }
        assert!(debug.contains("username: Some(\"robot\")"), "{debug}");
    }
}
