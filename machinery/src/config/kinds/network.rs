//! Schemas of the network kinds. `HostnameConfig`, `ResolverConfig` and `TimeSyncConfig` are
//! typed in `documents.rs` instead.
//!
//! Values Talos parses from text (addresses, prefixes, hardware addresses, enum names) are kept
//! as strings: the YAML decoder reads any scalar, quoted or not, into a string, as Talos does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{KindDocument, Schema, schema};
use crate::secret::Secret;

pub(super) const SCHEMAS: &[Schema] = &[
    schema::<LinkConfig>(),
    schema::<LinkAliasConfig>(),
    schema::<DummyLinkConfig>(),
    schema::<BondConfig>(),
    schema::<BridgeConfig>(),
    schema::<VLANConfig>(),
    schema::<DHCPv4Config>(),
    schema::<DHCPv6Config>(),
    schema::<StaticHostConfig>(),
    schema::<Layer2VIPConfig>(),
    schema::<EthernetConfig>(),
    schema::<VRFConfig>(),
    schema::<VethConfig>(),
    schema::<WireguardConfig>(),
    schema::<HCloudVIPConfig>(),
    schema::<BlackholeRouteConfig>(),
    schema::<RoutingRuleConfig>(),
    schema::<KubeSpanConfig>(),
    schema::<KubeSpanEndpointsConfig>(),
    schema::<NetworkRuleConfig>(),
    schema::<NetworkDefaultActionConfig>(),
    schema::<BGPInstanceConfig>(),
    schema::<TCPProbeConfig>(),
    schema::<HTTPProbeConfig>(),
];

/// Defines a struct of the fields given, then the settings every configurable link shares
/// (upstream inlines them from one struct).
macro_rules! link_settings {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $($fields:tt)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, rename_all = "camelCase")]
        pub struct $name {
            $($fields)*
            /// Bring the link up; absent means up.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub up: Option<bool>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub mtu: Option<u32>,
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub addresses: Vec<LinkAddress>,
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub routes: Vec<LinkRoute>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub multicast: Option<bool>,
        }
    };
}

/// Defines a link document named as its kind: the fields given, then the shared link settings.
macro_rules! link_document {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $($fields:tt)*
        }
    ) => {
        link_settings! {
            $(#[$meta])*
            pub struct $name {
                $($fields)*
            }
        }

        impl KindDocument for $name {
            const KIND: &'static str = stringify!($name);
        }
    };
}

link_document! {
    /// `kind: LinkConfig`: settings of an existing (physical) link.
    pub struct LinkConfig {
        pub api_version: String,
        pub kind: String,
        /// The link name or alias.
        pub name: String,
    }
}

/// A static address of a link.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LinkAddress {
    /// An address with prefix length, e.g. `192.168.1.10/24`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Metric of the prefix route created for the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_priority: Option<u32>,
}

/// A static route through a link.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LinkRoute {
    /// A prefix; absent means the default route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// The preferred source address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// A routing table: `main`, `local`, `default` or a number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
}

/// `kind: LinkAliasConfig`: an alias name for the link a selector matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LinkAliasConfig {
    pub api_version: String,
    pub kind: String,
    /// The alias.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LinkAliasSelector>,
}

impl KindDocument for LinkAliasConfig {
    const KIND: &'static str = "LinkAliasConfig";
}

/// Links matched by a CEL expression over the link's properties.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkAliasSelector {
    /// A CEL expression, e.g. `link.driver == "e1000"`.
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
}

link_document! {
    /// `kind: DummyLinkConfig`: a dummy link to create.
    pub struct DummyLinkConfig {
        pub api_version: String,
        pub kind: String,
        pub name: String,
        /// A MAC address, e.g. `2e:3c:4d:5e:6f:70`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub hardware_addr: Option<String>,
    }
}

link_document! {
    /// `kind: BondConfig`: a bond link to create; the options follow the kernel's bonding
    /// driver.
    pub struct BondConfig {
        pub api_version: String,
        pub kind: String,
        pub name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub hardware_addr: Option<String>,
        /// The member links.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub links: Vec<String>,
        /// `balance-rr`, `active-backup`, `balance-xor`, `broadcast`, `802.3ad`, `balance-tlb`
        /// or `balance-alb`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub bond_mode: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub miimon: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub updelay: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub downdelay: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub use_carrier: Option<bool>,
        /// `layer2`, `layer2+3`, `layer3+4`, `encap2+3` or `encap3+4`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub xmit_hash_policy: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub arp_interval: Option<u32>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub arp_ip_targets: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub ns_ip6_targets: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub arp_validate: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub arp_all_targets: Option<String>,
        /// `slow` or `fast`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub lacp_rate: Option<String>,
        /// `none`, `active` or `follow` (or their numbers 0 to 2).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub fail_over_mac: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub ad_select: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub ad_actor_sys_prio: Option<u16>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub ad_user_port_key: Option<u16>,
        /// `on` or `off`.
        #[serde(rename = "adLACPActive", default, skip_serializing_if = "Option::is_none")]
        pub ad_lacp_active: Option<String>,
        /// The primary member link.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub primary: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub primary_reselect: Option<String>,
        #[serde(rename = "resendIGMP", default, skip_serializing_if = "Option::is_none")]
        pub resend_igmp: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub min_links: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub lp_interval: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub packets_per_slave: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub num_peer_notif: Option<u8>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub tlb_logical_lb: Option<u8>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub all_slaves_active: Option<u8>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub peer_notif_delay: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub missed_max: Option<u8>,
    }
}

link_document! {
    /// `kind: BridgeConfig`: a bridge link to create.
    pub struct BridgeConfig {
        pub api_version: String,
        pub kind: String,
        pub name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub hardware_addr: Option<String>,
        /// The member links.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub links: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub stp: Option<BridgeStp>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub vlan: Option<BridgeVlan>,
    }
}

/// Spanning tree protocol settings of a bridge.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeStp {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// VLAN settings of a bridge.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeVlan {
    /// Filter frames by VLAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filtering: Option<bool>,
}

link_document! {
    /// `kind: VLANConfig`: a VLAN link to create on a parent link.
    pub struct VLANConfig {
        pub api_version: String,
        pub kind: String,
        pub name: String,
        #[serde(rename = "vlanID", default, skip_serializing_if = "Option::is_none")]
        pub vlan_id: Option<u16>,
        /// `802.1q` or `802.1ad`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub vlan_mode: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub parent: Option<String>,
    }
}

/// `kind: DHCPv4Config`: run a DHCPv4 client on the link `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DHCPv4Config {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// Metric of the routes the lease installs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_metric: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_hostname: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_routes: Option<bool>,
    /// `none`, `mac` or `duid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_identifier: Option<String>,
    /// A raw DUID in hex, colon-separated or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duid_raw: Option<String>,
}

impl KindDocument for DHCPv4Config {
    const KIND: &'static str = "DHCPv4Config";
}

/// `kind: DHCPv6Config`: run a DHCPv6 client on the link `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DHCPv6Config {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_metric: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_hostname: Option<bool>,
    /// `none`, `mac` or `duid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_identifier: Option<String>,
    /// A raw DUID in hex, colon-separated or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duid_raw: Option<String>,
}

impl KindDocument for DHCPv6Config {
    const KIND: &'static str = "DHCPv6Config";
}

/// `kind: StaticHostConfig`: host names for the IP address `name` in `/etc/hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StaticHostConfig {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
}

impl KindDocument for StaticHostConfig {
    const KIND: &'static str = "StaticHostConfig";
}

/// `kind: Layer2VIPConfig`: the shared IP address `name`, announced over ARP/NDP on a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Layer2VIPConfig {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

impl KindDocument for Layer2VIPConfig {
    const KIND: &'static str = "Layer2VIPConfig";
}

/// `kind: EthernetConfig`: ethtool-style settings of the Ethernet link `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EthernetConfig {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// Offload features by their ethtool name, e.g. `tx-checksumming: false`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub features: BTreeMap<String, bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rings: Option<EthernetRings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<EthernetChannels>,
    /// Wake-on-LAN modes: `phy`, `unicast`, `multicast`, `broadcast`, `magic`, `magicsecure`,
    /// `filter`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wake_on_lan: Vec<String>,
}

impl KindDocument for EthernetConfig {
    const KIND: &'static str = "EthernetConfig";
}

/// Ring buffer sizes of an Ethernet link; keys are ethtool's.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EthernetRings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_mini: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_jumbo: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_buf_len: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cqe_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_push: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_push: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_push_buf_len: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_data_split: Option<bool>,
}

/// Queue channel counts of an Ethernet link.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EthernetChannels {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub combined: Option<u32>,
}

link_document! {
    /// `kind: VRFConfig`: a VRF link to create, enslaving links to a routing table.
    pub struct VRFConfig {
        pub api_version: String,
        pub kind: String,
        pub name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub hardware_addr: Option<String>,
        /// The member links.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub links: Vec<String>,
        /// The routing table of the VRF: a name or a number.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub table: Option<String>,
    }
}

link_document! {
    /// `kind: VethConfig`: a veth pair to create; `name` is this end.
    pub struct VethConfig {
        pub api_version: String,
        pub kind: String,
        pub name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub peer: Option<VethPeer>,
    }
}

link_settings! {
    /// The other end of a veth pair.
    pub struct VethPeer {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub name: Option<String>,
    }
}

link_document! {
    /// `kind: WireguardConfig`: a WireGuard link to create.
    pub struct WireguardConfig {
        pub api_version: String,
        pub kind: String,
        pub name: String,
        /// A base64 private key.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub private_key: Option<Secret>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub listen_port: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub firewall_mark: Option<i64>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub peers: Vec<WireguardPeer>,
    }
}

/// A peer of a WireGuard link.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WireguardPeer {
    /// A base64 public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preshared_key: Option<Secret>,
    /// An `address:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// A duration, e.g. `25s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_keepalive_interval: Option<String>,
    /// Prefixes routed to the peer.
    #[serde(rename = "allowedIPs", default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_ips: Vec<String>,
}

/// `kind: HCloudVIPConfig`: the shared IP address `name`, moved between nodes through the
/// Hetzner Cloud API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HCloudVIPConfig {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token: Option<Secret>,
}

impl KindDocument for HCloudVIPConfig {
    const KIND: &'static str = "HCloudVIPConfig";
}

/// `kind: BlackholeRouteConfig`: a blackhole route to the prefix `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BlackholeRouteConfig {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
}

impl KindDocument for BlackholeRouteConfig {
    const KIND: &'static str = "BlackholeRouteConfig";
}

/// `kind: RoutingRuleConfig`: a policy routing rule; `name` is its priority.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RoutingRuleConfig {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// Source prefix to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    /// Destination prefix to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    /// A routing table: a name or a number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// A rule type, e.g. `unicast` or `blackhole`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Input interface to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iif_name: Option<String>,
    /// Output interface to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oif_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fw_mark: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fw_mask: Option<u32>,
}

impl KindDocument for RoutingRuleConfig {
    const KIND: &'static str = "RoutingRuleConfig";
}

/// `kind: KubeSpanConfig`: the KubeSpan WireGuard mesh between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeSpanConfig {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Route pod networks over the mesh too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise_kubernetes_networks: Option<bool>,
    /// Reach peers directly while their mesh link is down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_down_peer_bypass: Option<bool>,
    /// Collect and publish extra peer endpoints seen by WireGuard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub harvest_extra_endpoints: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<KubeSpanFilters>,
}

impl KindDocument for KubeSpanConfig {
    const KIND: &'static str = "KubeSpanConfig";
}

/// What KubeSpan uses and advertises.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeSpanFilters {
    /// Filters on the node addresses announced as endpoints; a leading `!` excludes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    /// Prefixes not to advertise to peers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_advertised_networks: Vec<String>,
}

/// `kind: KubeSpanEndpointsConfig`: extra endpoints KubeSpan announces for this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeSpanEndpointsConfig {
    pub api_version: String,
    pub kind: String,
    /// `address:port` pairs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_announced_endpoints: Vec<String>,
}

impl KindDocument for KubeSpanEndpointsConfig {
    const KIND: &'static str = "KubeSpanEndpointsConfig";
}

/// `kind: NetworkRuleConfig`: the host firewall rule `name`, allowing ingress to some ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetworkRuleConfig {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_selector: Option<NetworkRulePortSelector>,
    /// Subnets allowed in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<NetworkRuleIngress>,
}

impl KindDocument for NetworkRuleConfig {
    const KIND: &'static str = "NetworkRuleConfig";
}

/// The ports a firewall rule covers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkRulePortSelector {
    /// Ports or `low-high` ranges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    /// `tcp`, `udp`, `icmp` or `icmpv6`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// A subnet a firewall rule allows in, minus an optional prefix.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkRuleIngress {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub except: Option<String>,
}

/// `kind: NetworkDefaultActionConfig`: what the host firewall does with unmatched traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetworkDefaultActionConfig {
    pub api_version: String,
    pub kind: String,
    /// `accept` or `block`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<String>,
}

impl KindDocument for NetworkDefaultActionConfig {
    const KIND: &'static str = "NetworkDefaultActionConfig";
}

/// `kind: BGPInstanceConfig`: a BGP speaker named `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BGPInstanceConfig {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// The VRF link the instance runs in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrf: Option<String>,
    #[serde(rename = "localASN", default, skip_serializing_if = "Option::is_none")]
    pub local_asn: Option<u32>,
    #[serde(rename = "routerID", default, skip_serializing_if = "Option::is_none")]
    pub router_id: Option<String>,
    /// Source address of routes the instance installs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_source: Option<String>,
    /// Links whose addresses are advertised.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub advertise: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multipath: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_paths: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_routes: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub import_routes: Vec<BGPInstanceImportRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub neighbors: Vec<BGPInstanceNeighbor>,
}

impl KindDocument for BGPInstanceConfig {
    const KIND: &'static str = "BGPInstanceConfig";
}

/// Prefixes taken over from another BGP instance.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BGPInstanceImportRoute {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp_instance: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefixes: Vec<String>,
}

/// A BGP peer, by address or (unnumbered) by link.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BGPInstanceNeighbor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    #[serde(rename = "peerASN", default, skip_serializing_if = "Option::is_none")]
    pub peer_asn: Option<u32>,
    /// Overrides the instance's ASN towards this peer.
    #[serde(rename = "localASN", default, skip_serializing_if = "Option::is_none")]
    pub local_asn: Option<u32>,
    /// Wait for the peer to connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive: Option<bool>,
    /// A duration, e.g. `9s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<BGPInstanceBfd>,
}

/// BFD liveness detection towards a BGP peer; intervals are durations.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BGPInstanceBfd {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transmit_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detect_multiplier: Option<u8>,
}

/// `kind: TCPProbeConfig`: a probe that connects to a TCP endpoint; durations are text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TCPProbeConfig {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Failed probes in a row before the target counts as down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<i64>,
    /// A `host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

impl KindDocument for TCPProbeConfig {
    const KIND: &'static str = "TCPProbeConfig";
}

/// `kind: HTTPProbeConfig`: a probe that fetches a URL; durations are text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HTTPProbeConfig {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Failed probes in a row before the target counts as down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

impl KindDocument for HTTPProbeConfig {
    const KIND: &'static str = "HTTPProbeConfig";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use crate::config::{Config, ConfigError};

    const V1ALPHA1: &str =
        "version: v1alpha1\nmachine:\n  type: worker\n  token: abcdef.0123456789abcdef\n";

    const EVERY_KIND: &str = r#"apiVersion: v1alpha1
kind: LinkConfig
name: enp1s0
up: true
mtu: 9000
addresses:
  - address: 10.20.0.5/24
  - address: fd00:20::5/64
    routePriority: 1024
routes:
  - gateway: 10.20.0.1
    metric: 100
  - destination: 172.16.0.0/12
    gateway: 10.20.0.254
    source: 10.20.0.5
    mtu: 1400
    table: 100
multicast: false
---
apiVersion: v1alpha1
kind: LinkAliasConfig
name: uplink
selector:
  match: link.permanent_addr == "52:54:00:12:34:56"
---
apiVersion: v1alpha1
kind: DummyLinkConfig
name: dummy0
hardwareAddr: 2e:aa:bb:cc:dd:01
addresses:
  - address: 169.254.100.1/32
---
apiVersion: v1alpha1
kind: BondConfig
name: bond0
hardwareAddr: 2e:aa:bb:cc:dd:02
links: [enp2s0, enp3s0]
bondMode: 802.3ad
miimon: 100
updelay: 200
downdelay: 200
useCarrier: true
xmitHashPolicy: layer3+4
arpInterval: 0
arpIpTargets: [10.30.0.1]
nsIp6Targets: ["fd00:30::1"]
arpValidate: none
arpAllTargets: any
lacpRate: fast
failOverMac: 0
adSelect: bandwidth
adActorSysPrio: 65535
adUserPortKey: 7
adLACPActive: on
primaryReselect: always
resendIGMP: 1
minLinks: 1
lpInterval: 1
packetsPerSlave: 1
numPeerNotif: 1
tlbLogicalLb: 1
allSlavesActive: 0
peerNotifDelay: 0
missedMax: 2
mtu: 1500
routes:
  - destination: 10.40.0.0/16
    gateway: 10.30.0.1
---
apiVersion: v1alpha1
kind: BridgeConfig
name: br0
links: [enp4s0]
stp:
  enabled: true
vlan:
  filtering: false
up: true
---
apiVersion: v1alpha1
kind: VLANConfig
name: bond0.42
vlanID: 42
vlanMode: 802.1q
parent: bond0
addresses:
  - address: 10.42.0.5/24
---
apiVersion: v1alpha1
kind: DHCPv4Config
name: br0
routeMetric: 1024
ignoreHostname: true
ignoreRoutes: false
clientIdentifier: mac
duidRaw: 00:04:12:34:56:78
---
apiVersion: v1alpha1
kind: DHCPv6Config
name: br0
routeMetric: 1024
ignoreHostname: true
clientIdentifier: duid
duidRaw: "000412345678"
---
apiVersion: v1alpha1
kind: StaticHostConfig
name: 10.20.0.10
hostnames:
  - registry.lab.internal
  - registry
---
apiVersion: v1alpha1
kind: Layer2VIPConfig
name: 10.20.0.100
link: enp1s0
---
apiVersion: v1alpha1
kind: EthernetConfig
name: enp2s0
features:
  rx-gro-hw: false
  tx-checksumming: true
rings:
  rx: 4096
  tx: 4096
  rx-mini: 0
  rx-jumbo: 0
  rx-buf-len: 2048
  cqe-size: 64
  tx-push: false
  rx-push: false
  tx-push-buf-len: 0
  tcp-data-split: true
channels:
  rx: 0
  tx: 0
  other: 1
  combined: 8
wakeOnLan: [magic, unicast]
---
apiVersion: v1alpha1
kind: VRFConfig
name: vrf-tenant
hardwareAddr: 2e:aa:bb:cc:dd:03
links: [enp5s0, enp6s0]
table: "1001"
up: true
addresses:
  - address: 10.60.0.1/32
routes:
  - destination: 10.61.0.0/16
    gateway: 10.60.0.254
    table: "1001"
---
apiVersion: v1alpha1
kind: VethConfig
name: veth-lb
peer:
  name: veth-lb-peer
  mtu: 1400
  addresses:
    - address: fd00:70::2/127
  multicast: true
mtu: 1400
addresses:
  - address: fd00:70::1/127
---
apiVersion: v1alpha1
kind: WireguardConfig
name: wg0
privateKey: cGxhY2Vob2xkZXItcHJpdmF0ZS1rZXktMzItYnl0ZXM=
listenPort: 51820
firewallMark: 4242
peers:
  - publicKey: cGxhY2Vob2xkZXItcHVibGljLWtleS0zMi1ieXRlcyE=
    presharedKey: cGxhY2Vob2xkZXItcHJlc2hhcmVkLWtleS0zMi1ieXQ=
    endpoint: 203.0.113.7:51820
    persistentKeepaliveInterval: 25s
    allowedIPs: [10.80.0.0/16, "fd00:80::/64"]
  - publicKey: c2Vjb25kLXBsYWNlaG9sZGVyLXB1YmxpYy1rZXktMzI=
    allowedIPs: [10.81.0.2/32]
addresses:
  - address: 10.80.0.5/16
---
apiVersion: v1alpha1
kind: HCloudVIPConfig
name: 198.51.100.10
link: enp1s0
apiToken: hcloud-token-placeholder
---
apiVersion: v1alpha1
kind: BlackholeRouteConfig
name: 192.0.2.0/24
metric: 50
---
apiVersion: v1alpha1
kind: RoutingRuleConfig
name: "2000"
src: 10.60.0.0/16
dst: 10.61.0.0/16
table: "1001"
action: unicast
iifName: enp5s0
oifName: vrf-tenant
fwMark: 16
fwMask: 255
---
apiVersion: v1alpha1
kind: KubeSpanConfig
enabled: true
advertiseKubernetesNetworks: true
allowDownPeerBypass: false
harvestExtraEndpoints: false
mtu: 1380
filters:
  endpoints: ["0.0.0.0/0", "!10.0.0.0/8"]
  excludeAdvertisedNetworks: [10.96.0.0/12]
---
apiVersion: v1alpha1
kind: KubeSpanEndpointsConfig
extraAnnouncedEndpoints:
  - 203.0.113.20:51820
  - "[2001:db8::20]:51820"
---
apiVersion: v1alpha1
kind: NetworkRuleConfig
name: kubelet-ingress
portSelector:
  ports: [10250, 30000-32767]
  protocol: tcp
ingress:
  - subnet: 10.20.0.0/16
    except: 10.20.99.0/24
  - subnet: "fd00:20::/48"
---
apiVersion: v1alpha1
kind: NetworkDefaultActionConfig
ingress: block
---
apiVersion: v1alpha1
kind: BGPInstanceConfig
name: underlay
vrf: vrf-tenant
localASN: 4200000001
routerID: 10.60.0.1
routeSource: 10.60.0.1
advertise: [dummy0]
multipath: true
maxPaths: 4
installRoutes: true
importRoutes:
  - bgpInstance: overlay
    prefixes: [203.0.113.0/24]
neighbors:
  - address: 10.60.0.254
    peerASN: 65100
    localASN: 65001
    holdTime: 30s
  - link: enp6s0
    passive: true
    bfd:
      transmitInterval: 200ms
      receiveInterval: 250ms
      detectMultiplier: 5
---
apiVersion: v1alpha1
kind: TCPProbeConfig
name: registry-reachable
interval: 5s
failureThreshold: 2
endpoint: registry.lab.internal:443
timeout: 3s
---
apiVersion: v1alpha1
kind: HTTPProbeConfig
name: gateway-health
interval: 10s
failureThreshold: 4
url: http://10.20.0.1:8080/healthz
timeout: 2s
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

        let link: LinkConfig = typed(&config);
        assert_eq!(link.mtu, Some(9000));
        assert_eq!(link.addresses[1].route_priority, Some(1024));
        assert_eq!(link.routes[1].table.as_deref(), Some("100"));
        let alias: LinkAliasConfig = typed(&config);
        assert!(
            alias
                .selector
                .unwrap()
                .expression
                .unwrap()
                .contains("52:54:00")
        );
        let dummy: DummyLinkConfig = typed(&config);
        assert_eq!(dummy.hardware_addr.as_deref(), Some("2e:aa:bb:cc:dd:01"));
        let bond: BondConfig = typed(&config);
        assert_eq!(bond.links, ["enp2s0", "enp3s0"]);
        assert_eq!(bond.bond_mode.as_deref(), Some("802.3ad"));
        assert_eq!(bond.fail_over_mac.as_deref(), Some("0"));
        assert_eq!(bond.ad_lacp_active.as_deref(), Some("on"));
        assert_eq!(bond.resend_igmp, Some(1));
        assert_eq!(bond.missed_max, Some(2));
        assert_eq!(bond.routes[0].gateway.as_deref(), Some("10.30.0.1"));
        let bridge: BridgeConfig = typed(&config);
        assert_eq!(bridge.stp.unwrap().enabled, Some(true));
        let vlan: VLANConfig = typed(&config);
        assert_eq!(vlan.vlan_id, Some(42));
        assert_eq!(vlan.parent.as_deref(), Some("bond0"));
        let dhcp4: DHCPv4Config = typed(&config);
        assert_eq!(dhcp4.client_identifier.as_deref(), Some("mac"));
        let dhcp6: DHCPv6Config = typed(&config);
        assert_eq!(dhcp6.duid_raw.as_deref(), Some("000412345678"));
        let hosts: StaticHostConfig = typed(&config);
        assert_eq!(hosts.hostnames, ["registry.lab.internal", "registry"]);
        let vip: Layer2VIPConfig = typed(&config);
        assert_eq!(vip.link.as_deref(), Some("enp1s0"));
        let ethernet: EthernetConfig = typed(&config);
        assert_eq!(ethernet.features.get("rx-gro-hw"), Some(&false));
        assert_eq!(ethernet.rings.unwrap().rx_buf_len, Some(2048));
        assert_eq!(ethernet.channels.unwrap().combined, Some(8));
        assert_eq!(ethernet.wake_on_lan, ["magic", "unicast"]);
        let vrf: VRFConfig = typed(&config);
        assert_eq!(vrf.table.as_deref(), Some("1001"));
        assert_eq!(vrf.links, ["enp5s0", "enp6s0"]);
        let veth: VethConfig = typed(&config);
        let peer = veth.peer.unwrap();
        assert_eq!(peer.name.as_deref(), Some("veth-lb-peer"));
        assert_eq!(peer.multicast, Some(true));
        assert_eq!(peer.addresses[0].address.as_deref(), Some("fd00:70::2/127"));
        let wireguard: WireguardConfig = typed(&config);
        assert_eq!(wireguard.listen_port, Some(51820));
        assert_eq!(wireguard.peers[0].allowed_ips[1], "fd00:80::/64");
        assert_eq!(
            wireguard.peers[0].persistent_keepalive_interval.as_deref(),
            Some("25s")
        );
        let hcloud: HCloudVIPConfig = typed(&config);
        assert_eq!(
            hcloud.api_token.as_deref(),
            Some("hcloud-token-placeholder")
        );
        let blackhole: BlackholeRouteConfig = typed(&config);
        assert_eq!(blackhole.metric, Some(50));
        let rule: RoutingRuleConfig = typed(&config);
        assert_eq!(rule.name, "2000");
        assert_eq!(rule.oif_name.as_deref(), Some("vrf-tenant"));
        assert_eq!(rule.fw_mask, Some(255));
        let kubespan: KubeSpanConfig = typed(&config);
        assert_eq!(kubespan.mtu, Some(1380));
        assert_eq!(kubespan.filters.unwrap().endpoints[1], "!10.0.0.0/8");
        let endpoints: KubeSpanEndpointsConfig = typed(&config);
        assert_eq!(
            endpoints.extra_announced_endpoints[1],
            "[2001:db8::20]:51820"
        );
        let firewall: NetworkRuleConfig = typed(&config);
        assert_eq!(
            firewall.port_selector.unwrap().ports,
            ["10250", "30000-32767"]
        );
        assert_eq!(firewall.ingress[0].except.as_deref(), Some("10.20.99.0/24"));
        let default_action: NetworkDefaultActionConfig = typed(&config);
        assert_eq!(default_action.ingress.as_deref(), Some("block"));
        let bgp: BGPInstanceConfig = typed(&config);
        assert_eq!(bgp.local_asn, Some(4_200_000_001));
        assert_eq!(
            bgp.import_routes[0].bgp_instance.as_deref(),
            Some("overlay")
        );
        assert_eq!(bgp.neighbors[0].peer_asn, Some(65100));
        assert_eq!(
            bgp.neighbors[1].bfd.as_ref().unwrap().detect_multiplier,
            Some(5)
        );
        let tcp: TCPProbeConfig = typed(&config);
        assert_eq!(tcp.endpoint.as_deref(), Some("registry.lab.internal:443"));
        assert_eq!(tcp.failure_threshold, Some(2));
        let http: HTTPProbeConfig = typed(&config);
        assert_eq!(http.url.as_deref(), Some("http://10.20.0.1:8080/healthz"));
        assert_eq!(http.timeout.as_deref(), Some("2s"));
    }

    #[test]
    fn misspelt_keys_are_refused_with_their_path() {
        let cases = [
            (
                "kind: LinkConfig\nname: eth0\nroutes:\n  - gatway: 10.0.0.1\n",
                "routes[0].gatway",
            ),
            (
                "kind: LinkAliasConfig\nname: net0\nselector:\n  matches: 'true'\n",
                "selector.matches",
            ),
            (
                "kind: DummyLinkConfig\nname: dummy0\naddresses:\n  - adress: 10.0.0.1/32\n",
                "addresses[0].adress",
            ),
            (
                "kind: BondConfig\nname: bond0\nroutes:\n  - metric: 1\n    tabel: main\n",
                "routes[0].tabel",
            ),
            (
                "kind: BridgeConfig\nname: br0\nstp:\n  enable: true\n",
                "stp.enable",
            ),
            (
                "kind: VLANConfig\nname: eth0.5\naddresses:\n  - address: 10.5.0.1/24\n    priority: 5\n",
                "addresses[0].priority",
            ),
            (
                "kind: DHCPv4Config\nname: eth0\nrouteMetrics: 5\n",
                "routeMetrics",
            ),
            ("kind: DHCPv6Config\nname: eth0\nduid: 0001\n", "duid"),
            (
                "kind: StaticHostConfig\nname: 10.0.0.1\nhostname: [a]\n",
                "hostname",
            ),
            (
                "kind: Layer2VIPConfig\nname: 10.0.0.100\ninterface: eth0\n",
                "interface",
            ),
            (
                "kind: EthernetConfig\nname: eth0\nrings:\n  rx_mini: 1\n",
                "rings.rx_mini",
            ),
            (
                "kind: VRFConfig\nname: vrf0\nroutes:\n  - gateway: 10.0.0.1\n    tables: 5\n",
                "routes[0].tables",
            ),
            (
                "kind: VethConfig\nname: veth0\npeer:\n  name: veth1\n  addresses:\n    - addres: 10.0.0.2/31\n",
                "peer.addresses[0].addres",
            ),
            (
                "kind: WireguardConfig\nname: wg0\npeers:\n  - publicKey: a\n    allowedIps: [10.0.0.0/8]\n",
                "peers[0].allowedIps",
            ),
            (
                "kind: HCloudVIPConfig\nname: 10.0.0.100\napiTokn: x\n",
                "apiTokn",
            ),
            (
                "kind: BlackholeRouteConfig\nname: 10.0.0.0/8\nmetrics: 5\n",
                "metrics",
            ),
            (
                "kind: RoutingRuleConfig\nname: \"100\"\niifname: eth0\n",
                "iifname",
            ),
            (
                "kind: KubeSpanConfig\nfilters:\n  excludeAdvertisedNetwork: [10.0.0.0/8]\n",
                "filters.excludeAdvertisedNetwork",
            ),
            (
                "kind: KubeSpanEndpointsConfig\nextraAnnouncedEndpoint: [1.2.3.4:5]\n",
                "extraAnnouncedEndpoint",
            ),
            (
                "kind: NetworkRuleConfig\nname: r\ningress:\n  - subnet: 10.0.0.0/8\n    exclude: 10.1.0.0/16\n",
                "ingress[0].exclude",
            ),
            (
                "kind: NetworkDefaultActionConfig\negress: block\n",
                "egress",
            ),
            (
                "kind: BGPInstanceConfig\nname: b\nneighbors:\n  - link: eth0\n    bfd:\n      detectMultiplyer: 3\n",
                "neighbors[0].bfd.detectMultiplyer",
            ),
            (
                "kind: TCPProbeConfig\nname: p\nfailureTreshold: 3\n",
                "failureTreshold",
            ),
            (
                "kind: HTTPProbeConfig\nname: p\nendpoint: http://x\n",
                "endpoint",
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
            "{config:?} {:?} {:?}",
            typed::<WireguardConfig>(&config),
            typed::<HCloudVIPConfig>(&config),
        );
        for secret in [
            "cGxhY2Vob2xkZXItcHJpdmF0ZS1rZXktMzItYnl0ZXM=",
            "cGxhY2Vob2xkZXItcHJlc2hhcmVkLWtleS0zMi1ieXQ=",
            "hcloud-token-placeholder",
        ] {
            assert!(!debug.contains(secret), "{secret} leaks into Debug");
        }
        // Public keys are not secret.
        assert!(debug.contains("cGxhY2Vob2xkZXItcHVibGljLWtleS0zMi1ieXRlcyE="));
    }
}
