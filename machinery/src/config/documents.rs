//! Typed multi-document kinds: `HostnameConfig`, `TimeSyncConfig`, `ResolverConfig` and our own
//! `BoardConfig`. Decoded strictly like the v1alpha1 document; other known kinds stay
//! [`RawDocument`]s.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::v1alpha1::HostDns;

/// One document of the config stream besides the v1alpha1 one.
#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    Hostname(HostnameConfig),
    TimeSync(TimeSyncConfig),
    Resolver(ResolverConfig),
    Board(BoardConfig),
    /// A known kind not modelled yet, kept as its source text.
    Other(RawDocument),
}

/// A document of a known kind that is not modelled yet, kept as its source text. `Debug` never
/// prints the text: it may hold secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct RawDocument {
    pub kind: String,
    pub name: Option<String>,
    /// The document's YAML, without a leading `---` line or trailing `...`.
    pub text: String,
}

impl fmt::Debug for RawDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawDocument")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("text", &"<redacted>")
            .finish()
    }
}

impl Document {
    pub fn kind(&self) -> &str {
        match self {
            Document::Hostname(_) => HostnameConfig::KIND,
            Document::TimeSync(_) => TimeSyncConfig::KIND,
            Document::Resolver(_) => ResolverConfig::KIND,
            Document::Board(_) => BoardConfig::KIND,
            Document::Other(raw) => &raw.kind,
        }
    }

    /// The `name` of named kinds.
    pub fn name(&self) -> Option<&str> {
        match self {
            Document::Other(raw) => raw.name.as_deref(),
            _ => None,
        }
    }

    /// How validation paths refer to this document: `HostnameConfig`, `UserVolumeConfig[data]`.
    pub fn label(&self) -> String {
        match self.name() {
            Some(name) => format!("{}[{name}]", self.kind()),
            None => self.kind().to_owned(),
        }
    }
}

/// How the hostname is chosen when none is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AutoHostname {
    /// A stable name derived from the machine identity.
    Stable,
    /// No generated name.
    Off,
}

/// `kind: HostnameConfig`: a static hostname or how to generate one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HostnameConfig {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto: Option<AutoHostname>,
}

impl HostnameConfig {
    pub const KIND: &'static str = "HostnameConfig";

    /// A document asking for a stable generated hostname (what `gen config` emits).
    pub fn stable() -> HostnameConfig {
        HostnameConfig {
            api_version: "v1alpha1".to_owned(),
            kind: Self::KIND.to_owned(),
            hostname: None,
            auto: Some(AutoHostname::Stable),
        }
    }
}

/// `kind: BoardConfig` (talos-rs; upstream bakes these into the image): the board's firmware
/// settings, changed without re-imaging. They take effect at the next boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BoardConfig {
    pub api_version: String,
    pub kind: String,
    /// Device-tree overlays, by name (`overlays/<name>.dtbo` on the boot partition), applied in
    /// order by the Pi firmware or, on U-Boot boards, by the node into the DTB U-Boot loads.
    /// Replaces the board's default list; `[]` applies none.
    pub overlays: Vec<String>,
}

impl BoardConfig {
    pub const KIND: &'static str = "BoardConfig";
}

/// `kind: TimeSyncConfig`: NTP or PTP time synchronisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TimeSyncConfig {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// A Go duration, e.g. `2m30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ntp: Option<NtpConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ptp: Option<PtpConfig>,
}

impl TimeSyncConfig {
    pub const KIND: &'static str = "TimeSyncConfig";
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NtpConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    #[serde(rename = "useNTS", default, skip_serializing_if = "Option::is_none")]
    pub use_nts: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PtpConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
}

/// `kind: ResolverConfig`: DNS servers and search domains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResolverConfig {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<Nameserver>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_domains: Option<SearchDomains>,
    #[serde(rename = "hostDNS", default, skip_serializing_if = "Option::is_none")]
    pub host_dns: Option<HostDns>,
}

impl ResolverConfig {
    pub const KIND: &'static str = "ResolverConfig";
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Nameserver {
    /// An IP address.
    pub address: String,
    /// `Do53` (default), `DoT` or `DoH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SearchDomains {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_default: Option<bool>,
}
