//! Schemas of the k8s kinds.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{KindDocument, Schema, schema};
use crate::config::raw::RawValue;
use crate::secret::Secret;

pub(super) const SCHEMAS: &[Schema] = &[
    schema::<KubeClusterConfig>(),
    schema::<KubeNodeConfig>(),
    schema::<KubeletConfig>(),
    schema::<KubeNetworkConfig>(),
    schema::<KubeAPIServerCAConfig>(),
    schema::<KubeAggregatorCAConfig>(),
    schema::<KubeServiceAccountConfig>(),
    schema::<KubeAPIServerConfig>(),
    schema::<KubeControllerManagerConfig>(),
    schema::<KubeSchedulerConfig>(),
    schema::<KubeProxyConfig>(),
    schema::<KubeFlannelCNIConfig>(),
    schema::<KubeCoreDNSConfig>(),
    schema::<KubePrismConfig>(),
    schema::<KubeAdmissionControlConfig>(),
    schema::<KubeAuditPolicyConfig>(),
    schema::<KubeAuthenticationConfig>(),
    schema::<KubeAuthorizerConfig>(),
    schema::<KubeEtcdEncryptionConfig>(),
    schema::<KubeStaticPodConfig>(),
    schema::<KubeInlineManifestConfig>(),
    schema::<KubeExternalManifestConfig>(),
    schema::<KubeCredentialProviderConfig>(),
    schema::<KubeTalosAPIAccessConfig>(),
];

/// Extra command-line flags of a Kubernetes component, by flag name without dashes.
pub type KubeArgs = BTreeMap<String, KubeArgValue>;

/// The value of one extra flag: a single value, or a list for a flag given several times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeArgValue {
    One(String),
    Many(Vec<String>),
}

impl Serialize for KubeArgValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            KubeArgValue::One(value) => serializer.serialize_str(value),
            KubeArgValue::Many(values) => {
                let mut seq = serializer.serialize_seq(Some(values.len()))?;
                for value in values {
                    seq.serialize_element(value)?;
                }
                seq.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for KubeArgValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ArgValueVisitor)
    }
}

/// Takes any scalar as its text (null as empty) and a list of scalars as a list.
struct ArgValueVisitor;

impl<'de> Visitor<'de> for ArgValueVisitor {
    type Value = KubeArgValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or a list of strings")
    }

    fn visit_unit<E: de::Error>(self) -> Result<KubeArgValue, E> {
        Ok(KubeArgValue::One(String::new()))
    }

    fn visit_none<E: de::Error>(self) -> Result<KubeArgValue, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<KubeArgValue, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<KubeArgValue, E> {
        Ok(KubeArgValue::One(v.to_string()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<KubeArgValue, E> {
        Ok(KubeArgValue::One(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<KubeArgValue, E> {
        Ok(KubeArgValue::One(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<KubeArgValue, E> {
        Ok(KubeArgValue::One(v.to_string()))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<KubeArgValue, E> {
        Ok(KubeArgValue::One(v.to_owned()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KubeArgValue, A::Error> {
        let mut values = Vec::new();
        while let Some(value) = seq.next_element::<Option<String>>()? {
            values.push(value.unwrap_or_default());
        }
        Ok(KubeArgValue::Many(values))
    }
}

/// A string-to-string map whose values may be any scalar; a null value reads as empty.
fn string_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    let map = Option::<BTreeMap<String, Option<String>>>::deserialize(deserializer)?;
    Ok(map.map(|map| {
        map.into_iter()
            .map(|(key, value)| (key, value.unwrap_or_default()))
            .collect()
    }))
}

/// A free-form Kubernetes object: a mapping of any content, or nothing.
fn object<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<RawValue>, D::Error> {
    deserializer.deserialize_option(OptionalObjectVisitor)
}

struct OptionalObjectVisitor;

impl<'de> Visitor<'de> for OptionalObjectVisitor {
    type Value = Option<RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping")
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<RawValue>, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<RawValue>, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Option<RawValue>, D::Error> {
        deserializer.deserialize_map(ObjectVisitor).map(Some)
    }
}

struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = RawValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawValue, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(RawValue::Map(entries))
    }
}

/// Resource requests and limits of a control-plane pod.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeResources {
    /// Kubernetes resource quantities by resource name, e.g. `cpu: 500m`.
    #[serde(
        default,
        deserialize_with = "object",
        skip_serializing_if = "Option::is_none"
    )]
    pub requests: Option<RawValue>,
    #[serde(
        default,
        deserialize_with = "object",
        skip_serializing_if = "Option::is_none"
    )]
    pub limits: Option<RawValue>,
}

/// A PEM certificate and its PEM private key.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeCertificateAndKey {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Secret>,
}

/// `kind: KubeClusterConfig`: the cluster's name and control-plane endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeClusterConfig {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    /// The URL of the Kubernetes API, e.g. `https://10.0.0.1:6443`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

impl KindDocument for KubeClusterConfig {
    const KIND: &'static str = "KubeClusterConfig";
}

/// `kind: KubeNodeConfig`: how this machine registers as a Kubernetes node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeNodeConfig {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_node_registration: Option<bool>,
    #[serde(
        rename = "registerWithFQDN",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub register_with_fqdn: Option<bool>,
    #[serde(rename = "nodeIP", default, skip_serializing_if = "Option::is_none")]
    pub node_ip: Option<KubeNodeIp>,
    #[serde(
        default,
        deserialize_with = "string_map",
        skip_serializing_if = "Option::is_none"
    )]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(
        default,
        deserialize_with = "string_map",
        skip_serializing_if = "Option::is_none"
    )]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Taints by key; each value is `value:Effect` or `:Effect`.
    #[serde(
        default,
        deserialize_with = "string_map",
        skip_serializing_if = "Option::is_none"
    )]
    pub taints: Option<BTreeMap<String, String>>,
}

impl KindDocument for KubeNodeConfig {
    const KIND: &'static str = "KubeNodeConfig";
}

/// How the node IP is chosen.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeNodeIp {
    /// CIDRs the node IP may come from; a leading `!` excludes a CIDR.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub valid_subnets: Vec<String>,
}

/// `kind: KubeletConfig`: the kubelet image, configuration and flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeletConfig {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Fields merged into the generated `KubeletConfiguration`.
    #[serde(
        default,
        deserialize_with = "object",
        skip_serializing_if = "Option::is_none"
    )]
    pub config: Option<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_args: Option<KubeArgs>,
    #[serde(rename = "clusterDNS", default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_dns: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_runtime_seccomp_profile_enabled: Option<bool>,
}

impl KindDocument for KubeletConfig {
    const KIND: &'static str = "KubeletConfig";
}

/// `kind: KubeNetworkConfig`: the cluster's DNS domain and pod and service subnets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeNetworkConfig {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pod_subnets: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_subnets: Vec<String>,
    /// Prefix length of each node's IPv4 pod CIDR.
    #[serde(
        rename = "nodeCIDRMaskSizeIPv4",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub node_cidr_mask_size_ipv4: Option<u8>,
    /// Prefix length of each node's IPv6 pod CIDR.
    #[serde(
        rename = "nodeCIDRMaskSizeIPv6",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub node_cidr_mask_size_ipv6: Option<u8>,
}

impl KindDocument for KubeNetworkConfig {
    const KIND: &'static str = "KubeNetworkConfig";
}

/// `kind: KubeAPIServerCAConfig`: the Kubernetes API CA that issues and the CAs accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeAPIServerCAConfig {
    pub api_version: String,
    pub kind: String,
    #[serde(rename = "issuingCA", default, skip_serializing_if = "Option::is_none")]
    pub issuing_ca: Option<KubeCertificateAndKey>,
    /// PEM certificates.
    #[serde(rename = "acceptedCAs", default, skip_serializing_if = "Vec::is_empty")]
    pub accepted_cas: Vec<String>,
}

impl KindDocument for KubeAPIServerCAConfig {
    const KIND: &'static str = "KubeAPIServerCAConfig";
}

/// `kind: KubeAggregatorCAConfig`: the front-proxy CA that issues and the CAs accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeAggregatorCAConfig {
    pub api_version: String,
    pub kind: String,
    #[serde(rename = "issuingCA", default, skip_serializing_if = "Option::is_none")]
    pub issuing_ca: Option<KubeCertificateAndKey>,
    /// PEM certificates.
    #[serde(rename = "acceptedCAs", default, skip_serializing_if = "Vec::is_empty")]
    pub accepted_cas: Vec<String>,
}

impl KindDocument for KubeAggregatorCAConfig {
    const KIND: &'static str = "KubeAggregatorCAConfig";
}

/// `kind: KubeServiceAccountConfig`: service account token signing and verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeServiceAccountConfig {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<KubeServiceAccountIssuer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<KubeServiceAccountAccepted>,
}

impl KindDocument for KubeServiceAccountConfig {
    const KIND: &'static str = "KubeServiceAccountConfig";
}

/// The key that signs service account tokens and the issuer it names.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeServiceAccountIssuer {
    /// PEM private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<Secret>,
    #[serde(rename = "issuerURL", default, skip_serializing_if = "Option::is_none")]
    pub issuer_url: Option<String>,
}

/// Further keys, issuers and audiences accepted on service account tokens.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeServiceAccountAccepted {
    /// PEM public keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public_keys: Vec<String>,
    /// Issuer URLs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issuers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
}

/// `kind: KubeAPIServerConfig`: the kube-apiserver static pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeAPIServerConfig {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_args: Option<KubeArgs>,
    #[serde(
        default,
        deserialize_with = "string_map",
        skip_serializing_if = "Option::is_none"
    )]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<KubeResources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_port: Option<u16>,
    /// Extra names and addresses in the serving certificate.
    #[serde(
        rename = "certExtraSANs",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cert_extra_sans: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probes: Option<bool>,
}

impl KindDocument for KubeAPIServerConfig {
    const KIND: &'static str = "KubeAPIServerConfig";
}

/// `kind: KubeControllerManagerConfig`: the kube-controller-manager static pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeControllerManagerConfig {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_args: Option<KubeArgs>,
    #[serde(
        default,
        deserialize_with = "string_map",
        skip_serializing_if = "Option::is_none"
    )]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<KubeResources>,
}

impl KindDocument for KubeControllerManagerConfig {
    const KIND: &'static str = "KubeControllerManagerConfig";
}

/// `kind: KubeSchedulerConfig`: the kube-scheduler static pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeSchedulerConfig {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Fields of the `KubeSchedulerConfiguration`.
    #[serde(
        default,
        deserialize_with = "object",
        skip_serializing_if = "Option::is_none"
    )]
    pub config: Option<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_args: Option<KubeArgs>,
    #[serde(
        default,
        deserialize_with = "string_map",
        skip_serializing_if = "Option::is_none"
    )]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<KubeResources>,
}

impl KindDocument for KubeSchedulerConfig {
    const KIND: &'static str = "KubeSchedulerConfig";
}

/// `kind: KubeProxyConfig`: the kube-proxy daemon set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeProxyConfig {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The proxy mode, e.g. `iptables`, `ipvs` or `nftables`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Fields of the `KubeProxyConfiguration`.
    #[serde(
        default,
        deserialize_with = "object",
        skip_serializing_if = "Option::is_none"
    )]
    pub config: Option<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_args: Option<KubeArgs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<KubeResources>,
}

impl KindDocument for KubeProxyConfig {
    const KIND: &'static str = "KubeProxyConfig";
}

/// `kind: KubeFlannelCNIConfig`: the bundled Flannel CNI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeFlannelCNIConfig {
    pub api_version: String,
    pub kind: String,
    /// The Flannel backend, e.g. `vxlan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_port: Option<u16>,
    #[serde(
        rename = "backendMTU",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub backend_mtu: Option<u32>,
    /// Further backend settings, merged into Flannel's backend configuration.
    #[serde(
        default,
        deserialize_with = "object",
        skip_serializing_if = "Option::is_none"
    )]
    pub backend_extra_config: Option<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<KubeResources>,
    /// Extra command-line arguments, each a whole flag.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_network_policies_enabled: Option<bool>,
}

impl KindDocument for KubeFlannelCNIConfig {
    const KIND: &'static str = "KubeFlannelCNIConfig";
}

/// `kind: KubeCoreDNSConfig`: the bundled CoreDNS deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeCoreDNSConfig {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

impl KindDocument for KubeCoreDNSConfig {
    const KIND: &'static str = "KubeCoreDNSConfig";
}

/// `kind: KubePrismConfig`: the local load balancer in front of the Kubernetes API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubePrismConfig {
    pub api_version: String,
    pub kind: String,
    /// The port it listens on at `127.0.0.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The TLS server name to dial the Kubernetes API with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
}

impl KindDocument for KubePrismConfig {
    const KIND: &'static str = "KubePrismConfig";
}

/// `kind: KubeAdmissionControlConfig`: the configuration of one admission plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeAdmissionControlConfig {
    pub api_version: String,
    pub kind: String,
    /// The plugin name, e.g. `PodSecurity`.
    pub name: String,
    #[serde(
        default,
        deserialize_with = "object",
        skip_serializing_if = "Option::is_none"
    )]
    pub configuration: Option<RawValue>,
}

impl KindDocument for KubeAdmissionControlConfig {
    const KIND: &'static str = "KubeAdmissionControlConfig";
}

/// `kind: KubeAuditPolicyConfig`: the kube-apiserver audit `Policy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeAuditPolicyConfig {
    pub api_version: String,
    pub kind: String,
    #[serde(
        default,
        deserialize_with = "object",
        skip_serializing_if = "Option::is_none"
    )]
    pub configuration: Option<RawValue>,
}

impl KindDocument for KubeAuditPolicyConfig {
    const KIND: &'static str = "KubeAuditPolicyConfig";
}

/// `kind: KubeAuthenticationConfig`: the kube-apiserver `AuthenticationConfiguration`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeAuthenticationConfig {
    pub api_version: String,
    pub kind: String,
    #[serde(
        default,
        deserialize_with = "object",
        skip_serializing_if = "Option::is_none"
    )]
    pub configuration: Option<RawValue>,
}

impl KindDocument for KubeAuthenticationConfig {
    const KIND: &'static str = "KubeAuthenticationConfig";
}

/// `kind: KubeAuthorizerConfig`: one authorizer in the kube-apiserver's chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeAuthorizerConfig {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// The authorizer type, e.g. `Node`, `RBAC` or `Webhook`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub authorizer_type: Option<String>,
    /// The webhook settings of a `Webhook` authorizer.
    #[serde(
        default,
        deserialize_with = "object",
        skip_serializing_if = "Option::is_none"
    )]
    pub webhook: Option<RawValue>,
}

impl KindDocument for KubeAuthorizerConfig {
    const KIND: &'static str = "KubeAuthorizerConfig";
}

/// `kind: KubeEtcdEncryptionConfig`: the kube-apiserver `EncryptionConfiguration`. `Debug`
/// never prints it: it holds the encryption keys.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeEtcdEncryptionConfig {
    pub api_version: String,
    pub kind: String,
    #[serde(
        default,
        deserialize_with = "object",
        skip_serializing_if = "Option::is_none"
    )]
    pub config: Option<RawValue>,
}

impl KindDocument for KubeEtcdEncryptionConfig {
    const KIND: &'static str = "KubeEtcdEncryptionConfig";
}

impl fmt::Debug for KubeEtcdEncryptionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeEtcdEncryptionConfig")
            .field("api_version", &self.api_version)
            .field("kind", &self.kind)
            .field("config", &self.config.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `kind: KubeStaticPodConfig`: a static pod the kubelet runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeStaticPodConfig {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// The `Pod` manifest.
    #[serde(
        default,
        deserialize_with = "object",
        skip_serializing_if = "Option::is_none"
    )]
    pub pod: Option<RawValue>,
}

impl KindDocument for KubeStaticPodConfig {
    const KIND: &'static str = "KubeStaticPodConfig";
}

/// `kind: KubeInlineManifestConfig`: Kubernetes manifests applied at bootstrap, inline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeInlineManifestConfig {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// Multi-document YAML text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
}

impl KindDocument for KubeInlineManifestConfig {
    const KIND: &'static str = "KubeInlineManifestConfig";
}

/// `kind: KubeExternalManifestConfig`: Kubernetes manifests applied at bootstrap, fetched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeExternalManifestConfig {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// HTTP headers sent with the request.
    #[serde(
        default,
        deserialize_with = "string_map",
        skip_serializing_if = "Option::is_none"
    )]
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl KindDocument for KubeExternalManifestConfig {
    const KIND: &'static str = "KubeExternalManifestConfig";
}

/// `kind: KubeCredentialProviderConfig`: the kubelet `CredentialProviderConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeCredentialProviderConfig {
    pub api_version: String,
    pub kind: String,
    #[serde(
        default,
        deserialize_with = "object",
        skip_serializing_if = "Option::is_none"
    )]
    pub configuration: Option<RawValue>,
}

impl KindDocument for KubeCredentialProviderConfig {
    const KIND: &'static str = "KubeCredentialProviderConfig";
}

/// `kind: KubeTalosAPIAccessConfig`: which pods may reach the Talos API, with which roles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeTalosAPIAccessConfig {
    pub api_version: String,
    pub kind: String,
    /// Talos roles, e.g. `os:reader`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_kubernetes_namespaces: Vec<String>,
}

impl KindDocument for KubeTalosAPIAccessConfig {
    const KIND: &'static str = "KubeTalosAPIAccessConfig";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ConfigError};

    const V1ALPHA1: &str =
        "version: v1alpha1\nmachine:\n  type: worker\n  token: abcdef.0123456789abcdef\n";

    const ALL_KINDS: &str = r#"
apiVersion: v1alpha1
kind: KubeClusterConfig
clusterName: lab
endpoint: https://lab.internal:6443
---
apiVersion: v1alpha1
kind: KubeNodeConfig
skipNodeRegistration: false
registerWithFQDN: true
nodeIP:
  validSubnets:
    - 192.168.10.0/24
    - '!192.168.10.1/32'
labels:
  topology.kubernetes.io/zone: rack-2
  tier: 3
annotations:
  owner: platform
taints:
  dedicated: storage:NoSchedule
---
apiVersion: v1alpha1
kind: KubeletConfig
image: ghcr.io/siderolabs/kubelet:v1.34.1
config:
  maxPods: 150
  serializeImagePulls: false
extraArgs:
  rotate-server-certificates: "true"
  v: 2
  node-labels:
    - a=b
    - c=d
clusterDNS:
  - 10.96.0.10
defaultRuntimeSeccompProfileEnabled: true
---
apiVersion: v1alpha1
kind: KubeNetworkConfig
dnsDomain: lab.local
podSubnets:
  - 10.240.0.0/16
serviceSubnets:
  - 10.100.0.0/16
nodeCIDRMaskSizeIPv4: 25
nodeCIDRMaskSizeIPv6: 80
---
apiVersion: v1alpha1
kind: KubeAPIServerCAConfig
issuingCA:
  cert: |
    -----BEGIN CERTIFICATE-----
    QUJD
    -----END CERTIFICATE-----
  key: |
    -----BEGIN EC PRIVATE KEY-----
    REVG
    -----END EC PRIVATE KEY-----
acceptedCAs:
  - |
    -----BEGIN CERTIFICATE-----
    R0hJ
    -----END CERTIFICATE-----
---
apiVersion: v1alpha1
kind: KubeAggregatorCAConfig
issuingCA:
  cert: |
    -----BEGIN CERTIFICATE-----
    SktM
    -----END CERTIFICATE-----
acceptedCAs:
  - |
    -----BEGIN CERTIFICATE-----
    TU5P
    -----END CERTIFICATE-----
---
apiVersion: v1alpha1
kind: KubeServiceAccountConfig
issuer:
  privateKey: |
    -----BEGIN RSA PRIVATE KEY-----
    UFFS
    -----END RSA PRIVATE KEY-----
  issuerURL: https://lab.internal:6443
accepted:
  publicKeys:
    - |
      -----BEGIN PUBLIC KEY-----
      U1RV
      -----END PUBLIC KEY-----
  issuers:
    - https://old.lab.internal:6443
  audiences:
    - https://lab.internal:6443
---
apiVersion: v1alpha1
kind: KubeAPIServerConfig
image: registry.k8s.io/kube-apiserver:v1.34.1
extraArgs:
  audit-log-maxage: 7
  tls-cipher-suites: TLS_AES_128_GCM_SHA256
env:
  NO_PROXY: 10.0.0.0/8
resources:
  requests:
    cpu: 500m
    memory: 1Gi
  limits:
    memory: 4Gi
apiPort: 7443
certExtraSANs:
  - api.lab.internal
  - 192.168.10.5
startupProbes: true
---
apiVersion: v1alpha1
kind: KubeControllerManagerConfig
enabled: true
image: registry.k8s.io/kube-controller-manager:v1.34.1
extraArgs:
  node-monitor-grace-period: 20s
env:
  GODEBUG: x509sha1=1
resources:
  requests:
    cpu: 100m
---
apiVersion: v1alpha1
kind: KubeSchedulerConfig
enabled: true
image: registry.k8s.io/kube-scheduler:v1.34.1
config:
  profiles:
    - schedulerName: default-scheduler
      plugins:
        score:
          disabled:
            - name: ImageLocality
extraArgs:
  leader-elect-lease-duration: 30s
env:
  TZ: UTC
resources:
  limits:
    cpu: "1"
---
apiVersion: v1alpha1
kind: KubeProxyConfig
enabled: true
image: registry.k8s.io/kube-proxy:v1.34.1
mode: ipvs
config:
  ipvs:
    strictARP: true
extraArgs:
  metrics-bind-address: 0.0.0.0:10249
resources:
  requests:
    memory: 64Mi
---
apiVersion: v1alpha1
kind: KubeFlannelCNIConfig
backendType: vxlan
backendPort: 8472
backendMTU: 1450
backendExtraConfig:
  DirectRouting: true
resources:
  requests:
    cpu: 50m
extraArgs:
  - --iface=eth1
kubeNetworkPoliciesEnabled: false
---
apiVersion: v1alpha1
kind: KubeCoreDNSConfig
enabled: true
image: registry.k8s.io/coredns/coredns:v1.12.3
---
apiVersion: v1alpha1
kind: KubePrismConfig
port: 7445
tlsServerName: lab.internal
---
apiVersion: v1alpha1
kind: KubeAdmissionControlConfig
name: PodSecurity
configuration:
  apiVersion: pod-security.admission.config.k8s.io/v1
  kind: PodSecurityConfiguration
  defaults:
    enforce: restricted
  exemptions:
    namespaces:
      - kube-system
---
apiVersion: v1alpha1
kind: KubeAuditPolicyConfig
configuration:
  apiVersion: audit.k8s.io/v1
  kind: Policy
  rules:
    - level: RequestResponse
      resources:
        - group: ""
          resources: ["secrets"]
---
apiVersion: v1alpha1
kind: KubeAuthenticationConfig
configuration:
  apiVersion: apiserver.config.k8s.io/v1
  kind: AuthenticationConfiguration
  jwt:
    - issuer:
        url: https://sso.lab.internal
        audiences: [kubernetes]
      claimMappings:
        username:
          claim: email
          prefix: ""
---
apiVersion: v1alpha1
kind: KubeAuthorizerConfig
name: lab-webhook
type: Webhook
webhook:
  timeout: 5s
  subjectAccessReviewVersion: v1
  failurePolicy: Deny
  connectionInfo:
    type: KubeConfigFile
    kubeConfigFile: /etc/kubernetes/authz.yaml
---
apiVersion: v1alpha1
kind: KubeEtcdEncryptionConfig
config:
  apiVersion: apiserver.config.k8s.io/v1
  kind: EncryptionConfiguration
  resources:
    - resources: [secrets]
      providers:
        - secretbox:
            keys:
              - name: k1
                secret: c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=
        - identity: {}
---
apiVersion: v1alpha1
kind: KubeStaticPodConfig
name: echo
pod:
  apiVersion: v1
  kind: Pod
  metadata:
    name: echo
  spec:
    hostNetwork: true
    containers:
      - name: echo
        image: docker.io/library/busybox:1.37
        args: [sleep, infinity]
---
apiVersion: v1alpha1
kind: KubeInlineManifestConfig
name: lab-namespace
manifest: |
  apiVersion: v1
  kind: Namespace
  metadata:
    name: lab
---
apiVersion: v1alpha1
kind: KubeExternalManifestConfig
name: gateway-crds
headers:
  Accept: application/yaml
url: https://manifests.lab.internal/gateway.yaml
---
apiVersion: v1alpha1
kind: KubeCredentialProviderConfig
configuration:
  apiVersion: kubelet.config.k8s.io/v1
  kind: CredentialProviderConfig
  providers:
    - name: lab-registry-helper
      apiVersion: credentialprovider.kubelet.k8s.io/v1
      matchImages: ["registry.lab.internal"]
      defaultCacheDuration: 10m
---
apiVersion: v1alpha1
kind: KubeTalosAPIAccessConfig
allowedRoles:
  - os:reader
  - os:etcd:backup
allowedKubernetesNamespaces:
  - backup
"#;

    fn with_v1alpha1(documents: &str) -> String {
        format!("{V1ALPHA1}---\n{}", documents.trim_start())
    }

    fn typed<T: KindDocument>(config: &Config) -> T {
        config
            .document::<T>()
            .unwrap_or_else(|e| panic!("{}: {e}", T::KIND))
            .unwrap_or_else(|| panic!("{} missing", T::KIND))
    }

    #[test]
    fn every_kind_decodes_round_trips_and_reads_typed() {
        let input = with_v1alpha1(ALL_KINDS);
        let config = Config::from_bytes(input.as_bytes()).expect("decode");
        assert_eq!(config.documents().len(), SCHEMAS.len());
        let written = config.to_yaml().expect("encode");
        let again = Config::from_bytes(written.as_bytes()).expect("decode again");
        assert_eq!(config, again);

        let cluster: KubeClusterConfig = typed(&config);
        assert_eq!(cluster.cluster_name.as_deref(), Some("lab"));
        let node: KubeNodeConfig = typed(&config);
        assert_eq!(node.labels.unwrap()["tier"], "3");
        assert_eq!(node.node_ip.unwrap().valid_subnets.len(), 2);
        let kubelet: KubeletConfig = typed(&config);
        let args = kubelet.extra_args.unwrap();
        assert_eq!(args["v"], KubeArgValue::One("2".into()));
        assert_eq!(
            args["node-labels"],
            KubeArgValue::Many(vec!["a=b".into(), "c=d".into()])
        );
        assert_eq!(
            kubelet.config.unwrap().get("maxPods"),
            Some(&RawValue::UInt(150))
        );
        let network: KubeNetworkConfig = typed(&config);
        assert_eq!(network.node_cidr_mask_size_ipv6, Some(80));
        let api_ca: KubeAPIServerCAConfig = typed(&config);
        assert!(
            api_ca
                .issuing_ca
                .unwrap()
                .key
                .unwrap()
                .contains("EC PRIVATE KEY")
        );
        let aggregator_ca: KubeAggregatorCAConfig = typed(&config);
        assert_eq!(aggregator_ca.issuing_ca.unwrap().key, None);
        let service_account: KubeServiceAccountConfig = typed(&config);
        assert_eq!(
            service_account.issuer.unwrap().issuer_url.as_deref(),
            Some("https://lab.internal:6443")
        );
        let api_server: KubeAPIServerConfig = typed(&config);
        assert_eq!(api_server.api_port, Some(7443));
        assert_eq!(api_server.cert_extra_sans[1], "192.168.10.5");
        let controller_manager: KubeControllerManagerConfig = typed(&config);
        assert_eq!(controller_manager.env.unwrap()["GODEBUG"], "x509sha1=1");
        let scheduler: KubeSchedulerConfig = typed(&config);
        assert!(scheduler.resources.unwrap().limits.is_some());
        let proxy: KubeProxyConfig = typed(&config);
        assert_eq!(proxy.mode.as_deref(), Some("ipvs"));
        let flannel: KubeFlannelCNIConfig = typed(&config);
        assert_eq!(flannel.backend_mtu, Some(1450));
        let coredns: KubeCoreDNSConfig = typed(&config);
        assert_eq!(coredns.enabled, Some(true));
        let kubeprism: KubePrismConfig = typed(&config);
        assert_eq!(kubeprism.port, Some(7445));
        let admission: KubeAdmissionControlConfig = typed(&config);
        assert_eq!(admission.name, "PodSecurity");
        let audit: KubeAuditPolicyConfig = typed(&config);
        assert_eq!(
            audit.configuration.unwrap().get("kind"),
            Some(&RawValue::string("Policy"))
        );
        let authentication: KubeAuthenticationConfig = typed(&config);
        assert!(authentication.configuration.unwrap().get("jwt").is_some());
        let authorizer: KubeAuthorizerConfig = typed(&config);
        assert_eq!(authorizer.authorizer_type.as_deref(), Some("Webhook"));
        let encryption: KubeEtcdEncryptionConfig = typed(&config);
        assert!(encryption.config.unwrap().get("resources").is_some());
        let static_pod: KubeStaticPodConfig = typed(&config);
        assert_eq!(static_pod.name, "echo");
        let inline: KubeInlineManifestConfig = typed(&config);
        assert!(inline.manifest.unwrap().contains("kind: Namespace"));
        let external: KubeExternalManifestConfig = typed(&config);
        assert_eq!(external.headers.unwrap()["Accept"], "application/yaml");
        let credential_provider: KubeCredentialProviderConfig = typed(&config);
        assert!(credential_provider.configuration.is_some());
        let api_access: KubeTalosAPIAccessConfig = typed(&config);
        assert_eq!(api_access.allowed_roles, ["os:reader", "os:etcd:backup"]);
    }

    #[test]
    fn typed_documents_write_back_equal() {
        let config = Config::from_bytes(with_v1alpha1(ALL_KINDS).as_bytes()).expect("decode");
        let kubelet: KubeletConfig = typed(&config);
        let text = crate::codec::to_yaml(&kubelet).expect("encode");
        assert_eq!(
            crate::codec::from_yaml::<KubeletConfig>(&text).unwrap(),
            kubelet
        );
        let node: KubeNodeConfig = typed(&config);
        let text = crate::codec::to_yaml(&node).expect("encode");
        assert_eq!(
            crate::codec::from_yaml::<KubeNodeConfig>(&text).unwrap(),
            node
        );
    }

    #[test]
    fn misspelt_keys_are_reported_with_their_path() {
        let cases = [
            ("KubeClusterConfig", "clustername: lab\n", "clustername"),
            (
                "KubeNodeConfig",
                "nodeIP:\n  validSubnet: [10.0.0.0/8]\n",
                "nodeIP.validSubnet",
            ),
            ("KubeletConfig", "clusterDns: [10.96.0.10]\n", "clusterDns"),
            (
                "KubeNetworkConfig",
                "nodeCidrMaskSizeIPv4: 24\n",
                "nodeCidrMaskSizeIPv4",
            ),
            (
                "KubeAPIServerCAConfig",
                "issuingCA:\n  crt: x\n",
                "issuingCA.crt",
            ),
            (
                "KubeAggregatorCAConfig",
                "issuingCa:\n  cert: x\n",
                "issuingCa",
            ),
            (
                "KubeServiceAccountConfig",
                "issuer:\n  issuerUrl: https://a\n",
                "issuer.issuerUrl",
            ),
            (
                "KubeAPIServerConfig",
                "resources:\n  request:\n    cpu: 1\n",
                "resources.request",
            ),
            (
                "KubeControllerManagerConfig",
                "resources:\n  limit: {}\n",
                "resources.limit",
            ),
            ("KubeSchedulerConfig", "extraArg: {}\n", "extraArg"),
            (
                "KubeProxyConfig",
                "resources:\n  requests: {}\n  limts: {}\n",
                "resources.limts",
            ),
            ("KubeFlannelCNIConfig", "backendMtu: 1450\n", "backendMtu"),
            ("KubeCoreDNSConfig", "disabled: true\n", "disabled"),
            ("KubePrismConfig", "tlsServername: x\n", "tlsServername"),
            (
                "KubeAdmissionControlConfig",
                "name: X\nconfig: {}\n",
                "config",
            ),
            ("KubeAuditPolicyConfig", "policy: {}\n", "policy"),
            (
                "KubeAuthenticationConfig",
                "configurations: {}\n",
                "configurations",
            ),
            ("KubeAuthorizerConfig", "name: x\nkind_: Webhook\n", "kind_"),
            (
                "KubeEtcdEncryptionConfig",
                "configuration: {}\n",
                "configuration",
            ),
            ("KubeStaticPodConfig", "name: x\npodSpec: {}\n", "podSpec"),
            (
                "KubeInlineManifestConfig",
                "name: x\nmanifests: ''\n",
                "manifests",
            ),
            (
                "KubeExternalManifestConfig",
                "name: x\nheader: {}\n",
                "header",
            ),
            ("KubeCredentialProviderConfig", "config: {}\n", "config"),
            (
                "KubeTalosAPIAccessConfig",
                "allowedNamespaces: [a]\n",
                "allowedNamespaces",
            ),
        ];
        assert_eq!(cases.len(), SCHEMAS.len());
        for (kind, body, path) in cases {
            let input = with_v1alpha1(&format!("apiVersion: v1alpha1\nkind: {kind}\n{body}"));
            match Config::from_bytes(input.as_bytes()) {
                Err(ConfigError::Codec(e)) => assert_eq!(e.path(), Some(path), "{kind}: {e}"),
                other => panic!("{kind}: expected a codec error, got {other:?}"),
            }
        }
    }

    #[test]
    fn arg_values_and_string_maps_take_any_scalar() {
        let config = Config::from_bytes(
            with_v1alpha1(
                "apiVersion: v1alpha1\nkind: KubeAPIServerConfig\nextraArgs:\n  a: true\n  b:\n  c: [x, 1]\nenv:\n  EMPTY:\n  ONE: 1\n",
            )
            .as_bytes(),
        )
        .expect("decode");
        let api_server: KubeAPIServerConfig = typed(&config);
        let args = api_server.extra_args.unwrap();
        assert_eq!(args["a"], KubeArgValue::One("true".into()));
        assert_eq!(args["b"], KubeArgValue::One(String::new()));
        assert_eq!(args["c"], KubeArgValue::Many(vec!["x".into(), "1".into()]));
        let env = api_server.env.unwrap();
        assert_eq!((env["EMPTY"].as_str(), env["ONE"].as_str()), ("", "1"));
    }

    #[test]
    fn nested_values_must_have_the_right_shape() {
        let cases = [
            ("KubeletConfig", "config: [a]\n", "config"),
            ("KubeletConfig", "extraArgs:\n  a: {b: c}\n", "extraArgs.a"),
            ("KubeNodeConfig", "labels:\n  a: [b]\n", "labels.a"),
            ("KubePrismConfig", "port: 70000\n", "port"),
        ];
        for (kind, body, path) in cases {
            let input = with_v1alpha1(&format!("apiVersion: v1alpha1\nkind: {kind}\n{body}"));
            match Config::from_bytes(input.as_bytes()) {
                Err(ConfigError::Codec(e)) => assert_eq!(e.path(), Some(path), "{kind}: {e}"),
                other => panic!("{kind}: expected a codec error, got {other:?}"),
            }
        }
    }

    #[test]
    fn debug_shows_no_key_material() {
        let config = Config::from_bytes(with_v1alpha1(ALL_KINDS).as_bytes()).expect("decode");
        let debug = format!(
            "{config:?} {:?} {:?} {:?}",
            typed::<KubeServiceAccountConfig>(&config),
            typed::<KubeAPIServerCAConfig>(&config),
            typed::<KubeEtcdEncryptionConfig>(&config),
        );
        for secret in [
            "UFFS",
            "REVG",
            "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=",
        ] {
            assert!(!debug.contains(secret), "{secret} leaks into Debug");
        }
        assert!(debug.contains("private_key: Some(<redacted>)"), "{debug}");
    }
}
