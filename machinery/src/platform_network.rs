//! The metal platform's network config: what Image Factory or `talosctl meta write 0xa` leaves
//! in META key 0x0a for a node to use before (and beside) its machine config. YAML or JSON.
//! Keys the node does not use (scopes, flags, layers, operators, probes) are ignored, as
//! upstream's decoder ignores unknown keys.

use serde::Deserialize;

use crate::codec::{self, CodecError};

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlatformNetworkConfig {
    #[serde(default)]
    pub addresses: Vec<PlatformAddress>,
    #[serde(default)]
    pub links: Vec<PlatformLink>,
    #[serde(default)]
    pub routes: Vec<PlatformRoute>,
    #[serde(default)]
    pub hostnames: Vec<PlatformHostname>,
    #[serde(default)]
    pub resolvers: Vec<PlatformResolver>,
    #[serde(default)]
    pub time_servers: Vec<PlatformTimeServers>,
}

/// An address in CIDR notation on a link.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlatformAddress {
    pub address: String,
    pub link_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlatformLink {
    pub name: String,
    #[serde(default)]
    pub up: Option<bool>,
    /// 0 leaves the MTU as it is.
    #[serde(default)]
    pub mtu: Option<u32>,
}

/// A route; an empty `dst` is the default route.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlatformRoute {
    #[serde(default)]
    pub dst: String,
    #[serde(default)]
    pub gateway: String,
    #[serde(default)]
    pub out_link_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlatformHostname {
    pub hostname: String,
    #[serde(default)]
    pub domainname: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlatformResolver {
    #[serde(default)]
    pub dns_servers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlatformTimeServers {
    #[serde(default)]
    pub time_servers: Vec<String>,
}

impl PlatformNetworkConfig {
    /// Parses the META value; JSON is read as the YAML it also is.
    pub fn from_yaml(text: &str) -> Result<PlatformNetworkConfig, CodecError> {
        codec::from_yaml(text)
    }

    /// The first hostname, without its domain.
    pub fn hostname(&self) -> Option<&str> {
        self.hostnames
            .iter()
            .map(|h| h.hostname.split('.').next().unwrap_or(&h.hostname))
            .find(|h| !h.is_empty())
    }

    pub fn dns_servers(&self) -> impl Iterator<Item = &str> {
        self.resolvers
            .iter()
            .flat_map(|r| r.dns_servers.iter().map(String::as_str))
    }

    pub fn time_servers(&self) -> impl Iterator<Item = &str> {
        self.time_servers
            .iter()
            .flat_map(|t| t.time_servers.iter().map(String::as_str))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shaped as Image Factory and operators write it, with the keys the node ignores.
    const YAML: &str = "\
addresses:
  - address: 192.168.10.20/24
    linkName: eth0
    family: inet4
    scope: global
    flags: permanent
    layer: platform
links:
  - name: eth0
    logical: false
    up: true
    mtu: 1400
    kind: \"\"
    type: ether
    layer: platform
routes:
  - family: inet4
    dst: \"\"
    src: \"\"
    gateway: 192.168.10.1
    outLinkName: eth0
    table: main
    protocol: static
    layer: platform
hostnames:
  - hostname: edge-7.example.org
    layer: platform
resolvers:
  - dnsServers: [192.168.10.1, 9.9.9.9]
    layer: platform
timeServers:
  - timeServers: [ntp.example.org]
operators: []
externalIPs: []
";

    #[test]
    fn reads_what_the_node_uses_and_ignores_the_rest() {
        let config = PlatformNetworkConfig::from_yaml(YAML).unwrap();
        assert_eq!(
            config.addresses,
            [PlatformAddress {
                address: "192.168.10.20/24".into(),
                link_name: "eth0".into()
            }]
        );
        assert_eq!(config.links[0].mtu, Some(1400));
        assert_eq!(config.routes[0].gateway, "192.168.10.1");
        assert_eq!(config.routes[0].dst, "");
        assert_eq!(config.hostname(), Some("edge-7"));
        assert_eq!(
            config.dns_servers().collect::<Vec<_>>(),
            ["192.168.10.1", "9.9.9.9"]
        );
        assert_eq!(
            config.time_servers().collect::<Vec<_>>(),
            ["ntp.example.org"]
        );
    }

    #[test]
    fn json_works_and_a_bad_value_names_its_path() {
        let json = r#"{"addresses":[{"address":"10.0.0.5/8","linkName":"end0"}],"hostnames":[]}"#;
        let config = PlatformNetworkConfig::from_yaml(json).unwrap();
        assert_eq!(config.addresses[0].link_name, "end0");
        assert_eq!(config.hostname(), None);
        let err =
            PlatformNetworkConfig::from_yaml("links:\n  - name: eth0\n    mtu: big\n").unwrap_err();
        assert_eq!(err.path(), Some("links[0].mtu"), "{err}");
    }
}
