//! `machine.network` settings below the interface level.

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// Picks a link by its properties instead of its name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeviceSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware_addr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permanent_addr: Option<String>,
    #[serde(rename = "pciID", default, skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical: Option<bool>,
}

/// A static route on an interface or VLAN.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Destination in CIDR notation; empty or absent means the default route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// Bonding settings; option names follow the kernel's bonding driver.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Bond {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_selectors: Vec<DeviceSelector>,
    #[serde(rename = "arpIPTarget", default, skip_serializing_if = "Vec::is_empty")]
    pub arp_ip_target: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xmit_hash_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lacp_rate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ad_actor_system: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arp_validate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arp_all_targets: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_reselect: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_over_mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ad_select: Option<String>,
    #[serde(rename = "miimon", default, skip_serializing_if = "Option::is_none")]
    pub mii_mon: Option<u32>,
    #[serde(rename = "updelay", default, skip_serializing_if = "Option::is_none")]
    pub up_delay: Option<u32>,
    #[serde(rename = "downdelay", default, skip_serializing_if = "Option::is_none")]
    pub down_delay: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arp_interval: Option<u32>,
    #[serde(
        rename = "resendIgmp",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub resend_igmp: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_links: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lp_interval: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets_per_slave: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_peer_notif: Option<u8>,
    #[serde(
        rename = "tlbDynamicLb",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub tlb_dynamic_lb: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_slaves_active: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_carrier: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ad_actor_sys_prio: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ad_user_port_key: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_notify_delay: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Bridge {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stp: Option<BridgeStp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<BridgeVlan>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeStp {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BridgeVlan {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan_filtering: Option<bool>,
}

/// Makes the interface a port of a bridge.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
}

/// A VLAN on top of an interface.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Vlan {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan_id: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<Vip>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp_options: Option<DhcpOptions>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DhcpOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_metric: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<bool>,
    #[serde(rename = "duidv6", default, skip_serializing_if = "Option::is_none")]
    pub duid_v6: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Wireguard {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall_mark: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<WireguardPeer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WireguardPeer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// A Go duration, e.g. `25s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_keepalive_interval: Option<String>,
    #[serde(rename = "allowedIPs", default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_ips: Vec<String>,
}

/// A shared virtual IP held by one node at a time.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Vip {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equinix_metal: Option<VipApiToken>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hcloud: Option<VipApiToken>,
}

/// The cloud API token a VIP is moved with.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VipApiToken {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token: Option<Secret>,
}

/// One `extraHostEntries` item: an IP and the names that resolve to it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraHost {
    #[serde(default)]
    pub ip: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeSpan {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise_kubernetes_networks: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_down_peer_bypass: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub harvest_extra_endpoints: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<KubeSpanFilters>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeSpanFilters {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_advertised_networks: Vec<String>,
}
