//! Brings up lo and the first NIC, with a static `ip=` address or DHCPv4, and keeps the lease.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use talos_machinery::config::kinds::{DHCPv4Config, LinkConfig};
use talos_machinery::config::{Config, HostEntry};
use talos_machinery::platform_network::PlatformNetworkConfig;
use talos_node_sys::SysError;
use talos_node_sys::net::NetConfig;
use tokio::sync::watch;

use crate::cmdline::StaticIp;
use crate::dhcp::{self, Lease};
use crate::services::{ServiceRegistry, ServiceState};

/// What the network gave this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkStatus {
    pub link: Option<String>,
    pub addresses: Vec<Ipv4Addr>,
    /// A hostname handed out by `ip=` or DHCP.
    pub hostname: Option<String>,
    /// Nameservers DHCP or META's platform network config handed out.
    pub dns: Vec<Ipv4Addr>,
    /// NTP servers from META's platform network config.
    pub time_servers: Vec<String>,
}

/// What META's platform network config (key 0x0a) asks of links, and the names it gives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlatformPlan {
    pub links: Vec<LinkSettings>,
    pub hostname: Option<String>,
    pub dns: Vec<Ipv4Addr>,
    pub time_servers: Vec<String>,
}

impl PlatformPlan {
    /// The status of `link` with `addresses`, naming the node as given, else as META does.
    fn status(
        &self,
        link: &str,
        addresses: Vec<Ipv4Addr>,
        hostname: Option<String>,
        dns: &[Ipv4Addr],
    ) -> NetworkStatus {
        NetworkStatus {
            link: Some(link.to_owned()),
            addresses,
            hostname: hostname.or_else(|| self.hostname.clone()),
            dns: if dns.is_empty() {
                self.dns.clone()
            } else {
                dns.to_vec()
            },
            time_servers: self.time_servers.clone(),
        }
    }
}

/// The links, hostname, nameservers and NTP servers of a platform network config, and what
/// this node cannot apply yet (warnings). Links without an address keep DHCP.
pub fn platform_plan(platform: &PlatformNetworkConfig) -> (PlatformPlan, Vec<String>) {
    let mut warnings = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    let named = platform
        .links
        .iter()
        .map(|l| l.name.as_str())
        .chain(platform.addresses.iter().map(|a| a.link_name.as_str()))
        .chain(platform.routes.iter().map(|r| r.out_link_name.as_str()));
    for name in named {
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
    }
    if platform.routes.iter().any(|r| r.out_link_name.is_empty()) {
        warnings.push("META 0x0a: routes without outLinkName are not applied".to_owned());
    }
    let links = names
        .into_iter()
        .map(|name| {
            let path = format!("META 0x0a link {name}");
            let addresses = platform
                .addresses
                .iter()
                .filter(|a| a.link_name == name)
                .map(|a| &a.address);
            let routes = platform
                .routes
                .iter()
                .filter(|r| r.out_link_name == name)
                .map(|r| (Some(r.dst.as_str()), Some(r.gateway.as_str())));
            let mut settings =
                link_settings(&path, name.to_owned(), addresses, routes, &mut warnings);
            settings.mtu = platform
                .links
                .iter()
                .find(|l| l.name == name)
                .and_then(|l| l.mtu)
                .filter(|mtu| *mtu > 0);
            settings.dhcp = settings.address.is_none();
            settings
        })
        .collect();
    let dns = platform
        .dns_servers()
        .filter_map(|server| match server.parse::<Ipv4Addr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                warnings.push(format!(
                    "META 0x0a: nameserver {server} is not IPv4; only IPv4 nameservers are used yet"
                ));
                None
            }
        })
        .collect();
    let plan = PlatformPlan {
        links,
        hostname: platform.hostname().map(str::to_owned),
        dns,
        time_servers: platform.time_servers().map(str::to_owned).collect(),
    };
    (plan, warnings)
}

/// The first network interface that is not loopback, by name.
pub fn first_nic(class_net: &Path) -> Option<String> {
    let mut links: Vec<String> = std::fs::read_dir(class_net)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name != "lo" && class_net.join(name).join("device").exists())
        .collect();
    links.sort();
    links.into_iter().next()
}

pub fn mac_address(class_net: &Path, link: &str) -> Option<[u8; 6]> {
    let text = std::fs::read_to_string(class_net.join(link).join("address")).ok()?;
    let bytes: Vec<u8> = text
        .trim()
        .split(':')
        .filter_map(|b| u8::from_str_radix(b, 16).ok())
        .collect();
    bytes.try_into().ok()
}

/// `talos-` and the last three bytes of the MAC: stable across reboots, unique on a LAN.
pub fn default_hostname(mac: Option<[u8; 6]>) -> String {
    match mac {
        Some(m) => format!("talos-{:02x}{:02x}{:02x}", m[3], m[4], m[5]),
        None => "talos".to_owned(),
    }
}

pub fn apply_lease(net: &dyn NetConfig, link: &str, lease: &Lease) -> Result<(), SysError> {
    net.set_ipv4(link, lease.address, lease.prefix)?;
    if let Some(gw) = lease.router {
        net.add_route(link, Ipv4Addr::UNSPECIFIED, 0, gw)?;
    }
    Ok(())
}

/// One link's settings from `machine.network.interfaces`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSettings {
    pub link: String,
    pub address: Option<(Ipv4Addr, u8)>,
    pub routes: Vec<(Ipv4Addr, u8, Ipv4Addr)>,
    pub mtu: Option<u32>,
    /// DHCP stays on for this link (no static address, or `dhcp: true`).
    pub dhcp: bool,
}

fn cidr(text: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, prefix) = text.split_once('/')?;
    Some((
        addr.parse().ok()?,
        prefix.parse().ok().filter(|p| *p <= 32)?,
    ))
}

impl LinkSettings {
    /// The settings a static `ip=` kernel argument asks of `link`.
    pub fn from_kernel_arg(link: &str, ip: &StaticIp) -> Self {
        Self {
            link: link.to_owned(),
            address: Some((ip.address, ip.prefix)),
            routes: ip
                .gateway
                .map(|gw| (Ipv4Addr::UNSPECIFIED, 0, gw))
                .into_iter()
                .collect(),
            mtu: None,
            dhcp: false,
        }
    }
}

/// What the config asks of each named link, and what this node cannot do yet (warnings): the
/// v1alpha1 `machine.network.interfaces`, then `LinkConfig` and `DHCPv4Config` documents.
/// Validation has already refused malformed addresses, unsupported link kinds and links
/// configured in both forms.
pub fn plan(config: &Config) -> (Vec<LinkSettings>, Vec<String>) {
    let mut links = Vec::new();
    let mut warnings = Vec::new();
    for (i, iface) in config.interfaces().iter().enumerate() {
        let path = format!("machine.network.interfaces[{i}]");
        let Some(link) = iface.interface.clone() else {
            warnings.push(format!(
                "{path}: deviceSelector is not applied by talos-rs yet"
            ));
            continue;
        };
        if iface.ignore == Some(true) {
            continue;
        }
        let addresses = iface.addresses.iter().chain(iface.cidr.as_ref());
        let routes = iface
            .routes
            .iter()
            .flatten()
            .map(|r| (r.network.as_deref(), r.gateway.as_deref()));
        let mut settings = link_settings(&path, link, addresses, routes, &mut warnings);
        settings.mtu = iface.mtu;
        settings.dhcp = iface.dhcp == Some(true) || settings.address.is_none();
        links.push(settings);
    }
    let (link_configs, dhcp_configs) = match (
        config.documents_of::<LinkConfig>(),
        config.documents_of::<DHCPv4Config>(),
    ) {
        (Ok(l), Ok(d)) => (l, d),
        (Err(e), _) | (_, Err(e)) => {
            warnings.push(format!("reading the network documents: {e}"));
            return (links, warnings);
        }
    };
    for doc in &link_configs {
        let path = format!("LinkConfig[{}]", doc.name);
        let addresses = doc.addresses.iter().filter_map(|a| a.address.as_ref());
        let routes = doc
            .routes
            .iter()
            .map(|r| (r.destination.as_deref(), r.gateway.as_deref()));
        let mut settings = link_settings(&path, doc.name.clone(), addresses, routes, &mut warnings);
        settings.mtu = doc.mtu;
        settings.dhcp = dhcp_configs.iter().any(|d| d.name == doc.name);
        if doc.up == Some(false) {
            warnings.push(format!(
                "{path}: up: false is not applied by talos-rs yet; the link is brought up"
            ));
        }
        links.push(settings);
    }
    for doc in dhcp_configs
        .iter()
        .filter(|d| !link_configs.iter().any(|l| l.name == d.name))
    {
        links.push(LinkSettings {
            link: doc.name.clone(),
            address: None,
            routes: Vec::new(),
            mtu: None,
            dhcp: true,
        });
    }
    (links, warnings)
}

/// The address and routes of `link`: the first IPv4 address, and IPv4 routes with a gateway
/// (`destination` absent or empty is the default route). What is left out is a warning.
fn link_settings<'a>(
    path: &str,
    link: String,
    addresses: impl Iterator<Item = &'a String>,
    routes: impl Iterator<Item = (Option<&'a str>, Option<&'a str>)>,
    warnings: &mut Vec<String>,
) -> LinkSettings {
    let mut ipv4 = addresses.filter_map(|a| {
        let parsed = cidr(a);
        if parsed.is_none() {
            warnings.push(format!(
                "{path}: {a} is not IPv4; only IPv4 addresses are applied yet"
            ));
        }
        parsed
    });
    let address = ipv4.next();
    if ipv4.next().is_some() {
        warnings.push(format!(
            "{path}: only the first IPv4 address is applied yet"
        ));
    }
    let mut applied = Vec::new();
    for (j, (destination, gateway)) in routes.enumerate() {
        let destination = destination.filter(|d| !d.is_empty()).unwrap_or("0.0.0.0/0");
        match (cidr(destination), gateway.and_then(|g| g.parse().ok())) {
            (Some((dest, prefix)), Some(gateway)) => applied.push((dest, prefix, gateway)),
            _ => warnings.push(format!(
                "{path}.routes[{j}]: only IPv4 routes with a gateway are applied yet"
            )),
        }
    }
    LinkSettings {
        link,
        address,
        routes: applied,
        mtu: None,
        dhcp: false,
    }
}

/// Applies one link's settings: up, MTU, address, routes.
pub fn apply_settings(net: &dyn NetConfig, settings: &LinkSettings) -> Result<(), SysError> {
    net.link_up(&settings.link)?;
    if let Some(mtu) = settings.mtu {
        net.set_mtu(&settings.link, mtu)?;
    }
    if let Some((addr, prefix)) = settings.address {
        net.set_ipv4(&settings.link, addr, prefix)?;
    }
    for (dest, prefix, gateway) in &settings.routes {
        net.add_route(&settings.link, *dest, *prefix, *gateway)?;
    }
    Ok(())
}

/// Upstream's nameservers when neither the config nor DHCP names any.
pub const DEFAULT_NAMESERVERS: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(1, 1, 1, 1)),
    IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)),
];

/// `/etc/resolv.conf` naming `nameservers`.
pub fn resolv_conf(nameservers: &[IpAddr]) -> String {
    nameservers
        .iter()
        .map(|n| format!("nameserver {n}\n"))
        .collect()
}

/// `/etc/hosts`: loopback, the node's addresses under its hostname (and its first label), and
/// the config's extra entries.
pub fn hosts_file(hostname: &str, addresses: &[IpAddr], extra: &[HostEntry]) -> String {
    let mut text = String::from("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n");
    let short = hostname.split('.').next().unwrap_or(hostname);
    let names = if short == hostname {
        hostname.to_owned()
    } else {
        format!("{hostname} {short}")
    };
    for address in addresses {
        text.push_str(&format!("{address} {names}\n"));
    }
    for entry in extra {
        text.push_str(&format!("{} {}\n", entry.ip, entry.aliases.join(" ")));
    }
    text
}

const CLASS_NET: &str = "/sys/class/net";

async fn wait_for_nic(wanted: Option<&str>, within: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let found = match wanted {
            Some(name) => Path::new(CLASS_NET)
                .join(name)
                .exists()
                .then(|| name.to_owned()),
            None => first_nic(Path::new(CLASS_NET)),
        };
        if found.is_some() || tokio::time::Instant::now() >= deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Configures the network, publishes the result, and renews DHCP leases forever. Links named
/// in the machine config (`configured`) get their settings first, then the links of META's
/// platform network config that the machine config does not name; the first NIC then takes a
/// static address from those, else from `ip=`, else from DHCP.
pub async fn run(
    net: Arc<dyn NetConfig + Send + Sync>,
    static_ip: Option<StaticIp>,
    configured: Vec<LinkSettings>,
    platform: PlatformPlan,
    status: watch::Sender<NetworkStatus>,
    services: ServiceRegistry,
) {
    const SERVICE: &str = "network";
    services.set(SERVICE, ServiceState::Preparing, "bringing up lo");
    if let Err(e) = net.link_up("lo") {
        tracing::error!("{e}");
    }
    let from_platform = platform
        .links
        .iter()
        .filter(|p| !configured.iter().any(|c| c.link == p.link))
        .map(|settings| (settings, "META 0x0a"));
    let mut static_from_config = None;
    for (settings, origin) in configured
        .iter()
        .map(|settings| (settings, "the machine config"))
        .chain(from_platform)
    {
        if wait_for_nic(Some(&settings.link), Duration::from_secs(10))
            .await
            .is_none()
        {
            tracing::warn!(
                link = settings.link,
                "the machine config names a link that does not exist"
            );
            continue;
        }
        match apply_settings(net.as_ref(), settings) {
            Ok(()) => {
                if let (false, Some(address)) = (settings.dhcp, settings.address) {
                    tracing::info!(link = settings.link, address = %address.0, prefix = address.1, "static address from {origin}");
                    static_from_config.get_or_insert((settings.link.clone(), address, origin));
                }
            }
            Err(e) => tracing::error!("{e}"),
        }
    }
    if let Some((link, (address, prefix), origin)) = static_from_config {
        services.set(
            SERVICE,
            ServiceState::Running,
            &format!("{link} {address}/{prefix} from {origin}"),
        );
        status.send_replace(platform.status(&link, vec![address], None, &[]));
        return;
    }
    let Some(link) = wait_for_nic(
        static_ip.as_ref().and_then(|s| s.device.as_deref()),
        Duration::from_secs(10),
    )
    .await
    else {
        services.set(SERVICE, ServiceState::Failed, "no network interface found");
        tracing::error!("no network interface appeared in {CLASS_NET}");
        return;
    };
    if let Some(ip) = static_ip {
        match apply_settings(net.as_ref(), &LinkSettings::from_kernel_arg(&link, &ip)) {
            Ok(()) => {
                tracing::info!(link, address = %ip.address, prefix = ip.prefix, "static address from ip=");
                services.set(
                    SERVICE,
                    ServiceState::Running,
                    &format!("{link} {}/{}", ip.address, ip.prefix),
                );
                status.send_replace(platform.status(&link, vec![ip.address], ip.hostname, &[]));
            }
            Err(e) => {
                services.set(SERVICE, ServiceState::Failed, &e.to_string());
                tracing::error!("{e}");
            }
        }
        return;
    }
    run_dhcp(net, link, platform, status, services).await;
}

async fn run_dhcp(
    net: Arc<dyn NetConfig + Send + Sync>,
    link: String,
    platform: PlatformPlan,
    status: watch::Sender<NetworkStatus>,
    services: ServiceRegistry,
) {
    const SERVICE: &str = "network";
    let mac = mac_address(Path::new(CLASS_NET), &link).unwrap_or_default();
    if let Err(e) = net.link_up(&link) {
        services.set(SERVICE, ServiceState::Failed, &e.to_string());
        tracing::error!("{e}");
        return;
    }
    let client = match dhcp::Client::new(&link, mac) {
        Ok(c) => c,
        Err(e) => {
            services.set(SERVICE, ServiceState::Failed, &e.to_string());
            tracing::error!("{e}");
            return;
        }
    };
    services.set(SERVICE, ServiceState::Waiting, &format!("DHCP on {link}"));
    let mut xid = u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]);
    let mut backoff = Duration::from_millis(500);
    let mut lease = loop {
        xid = xid.wrapping_add(1);
        match client.acquire(xid, Duration::from_secs(2)).await {
            Ok(lease) => break lease,
            Err(e) => {
                tracing::warn!("{e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    };
    loop {
        if let Err(e) = apply_lease(net.as_ref(), &link, &lease) {
            tracing::error!("{e}");
        }
        tracing::info!(link, address = %lease.address, prefix = lease.prefix, lease = ?lease.lease_time, "DHCP lease");
        services.set(
            SERVICE,
            ServiceState::Running,
            &format!("{link} {}/{} via DHCP", lease.address, lease.prefix),
        );
        status.send_replace(platform.status(
            &link,
            vec![lease.address],
            lease.hostname.clone(),
            &lease.dns,
        ));
        let mut wait = lease.lease_time / 2;
        lease = loop {
            tokio::time::sleep(wait).await;
            xid = xid.wrapping_add(1);
            match client.renew(xid, &lease, Duration::from_secs(5)).await {
                Ok(renewed) => break renewed,
                Err(e) => {
                    tracing::warn!("renewing the DHCP lease: {e}");
                    wait = (wait / 2).max(Duration::from_secs(5));
                }
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_resolv_conf_name_the_node_and_its_servers() {
        let addresses = [IpAddr::from([10, 0, 2, 15])];
        let extra = [HostEntry {
            ip: [10, 0, 0, 9].into(),
            aliases: vec!["registry.lab".into(), "mirror".into()],
        }];
        assert_eq!(
            hosts_file("node-1.lab", &addresses, &extra),
            "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n10.0.2.15 node-1.lab node-1\n10.0.0.9 registry.lab mirror\n"
        );
        assert!(hosts_file("node-1", &addresses, &[]).ends_with("\n10.0.2.15 node-1\n"));
        assert_eq!(
            resolv_conf(&DEFAULT_NAMESERVERS),
            "nameserver 1.1.1.1\nnameserver 8.8.8.8\n"
        );
    }
    use talos_node_sys::fake::{Call, FakeSystem};

    #[test]
    fn platform_config_plans_static_links_and_names() {
        let platform = PlatformNetworkConfig::from_yaml(
            "\
addresses:
  - {address: 192.168.10.20/24, linkName: eth0}
  - {address: 'fd00::20/64', linkName: eth0}
links:
  - {name: eth0, up: true, mtu: 1400}
  - {name: eth1, up: true, mtu: 0}
routes:
  - {dst: '', gateway: 192.168.10.1, outLinkName: eth0}
  - {dst: 10.9.0.0/16, gateway: 192.168.10.254, outLinkName: eth0}
  - {dst: 172.16.0.0/12, gateway: 192.168.10.1}
hostnames: [{hostname: edge-7.example.org}]
resolvers: [{dnsServers: [192.168.10.1, '2001:db8::53']}]
timeServers: [{timeServers: [ntp.example.org]}]
",
        )
        .unwrap();
        let (plan, warnings) = platform_plan(&platform);
        assert_eq!(
            plan.links,
            [
                LinkSettings {
                    link: "eth0".into(),
                    address: Some((Ipv4Addr::new(192, 168, 10, 20), 24)),
                    routes: vec![
                        (Ipv4Addr::UNSPECIFIED, 0, Ipv4Addr::new(192, 168, 10, 1)),
                        (
                            Ipv4Addr::new(10, 9, 0, 0),
                            16,
                            Ipv4Addr::new(192, 168, 10, 254)
                        ),
                    ],
                    mtu: Some(1400),
                    dhcp: false,
                },
                LinkSettings {
                    link: "eth1".into(),
                    address: None,
                    routes: Vec::new(),
                    mtu: None,
                    dhcp: true,
                },
            ]
        );
        assert_eq!(plan.hostname.as_deref(), Some("edge-7"));
        assert_eq!(plan.dns, [Ipv4Addr::new(192, 168, 10, 1)]);
        assert_eq!(plan.time_servers, ["ntp.example.org"]);
        assert_eq!(
            warnings,
            [
                "META 0x0a: routes without outLinkName are not applied",
                "META 0x0a link eth0: fd00::20/64 is not IPv4; only IPv4 addresses are applied yet",
                "META 0x0a: nameserver 2001:db8::53 is not IPv4; only IPv4 nameservers are used yet",
            ]
        );
        // A lease names the node first; META fills what the lease leaves out.
        let status = plan.status("eth0", vec![], Some("from-dhcp".into()), &[]);
        assert_eq!(
            (status.hostname.as_deref(), status.dns),
            (Some("from-dhcp"), vec![Ipv4Addr::new(192, 168, 10, 1)])
        );
    }

    #[test]
    fn static_plan_sets_link_address_and_route_in_order() {
        let fake = FakeSystem::default();
        let ip = StaticIp::parse("10.0.2.15::10.0.2.2:255.255.255.0::eth0:off").unwrap();
        apply_settings(&fake, &LinkSettings::from_kernel_arg("eth0", &ip)).unwrap();
        assert_eq!(
            fake.calls(),
            vec![
                Call::LinkUp("eth0".into()),
                Call::SetIpv4 {
                    link: "eth0".into(),
                    addr: Ipv4Addr::new(10, 0, 2, 15),
                    prefix: 24
                },
                Call::Route {
                    link: "eth0".into(),
                    destination: Ipv4Addr::UNSPECIFIED,
                    prefix: 0,
                    gateway: Ipv4Addr::new(10, 0, 2, 2)
                },
            ]
        );
    }

    #[test]
    fn config_links_become_settings() {
        let yaml = "version: v1alpha1\nmachine:\n  type: worker\n  network:\n    interfaces:\n      - interface: eth0\n        addresses: [192.168.7.9/24]\n        mtu: 1400\n        routes:\n          - network: 0.0.0.0/0\n            gateway: 192.168.7.1\n          - network: 10.10.0.0/16\n            gateway: 192.168.7.254\n      - interface: eth1\n        dhcp: true\n        mtu: 9000\n";
        let config = Config::from_bytes(yaml.as_bytes()).unwrap();
        let (links, warnings) = plan(&config);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            links[0],
            LinkSettings {
                link: "eth0".into(),
                address: Some((Ipv4Addr::new(192, 168, 7, 9), 24)),
                routes: vec![
                    (Ipv4Addr::UNSPECIFIED, 0, Ipv4Addr::new(192, 168, 7, 1)),
                    (
                        Ipv4Addr::new(10, 10, 0, 0),
                        16,
                        Ipv4Addr::new(192, 168, 7, 254)
                    )
                ],
                mtu: Some(1400),
                dhcp: false,
            }
        );
        assert!(links[1].dhcp && links[1].address.is_none());
        let fake = FakeSystem::default();
        apply_settings(&fake, &links[0]).unwrap();
        assert_eq!(
            fake.calls()[..3],
            [
                Call::LinkUp("eth0".into()),
                Call::SetMtu {
                    link: "eth0".into(),
                    mtu: 1400
                },
                Call::SetIpv4 {
                    link: "eth0".into(),
                    addr: Ipv4Addr::new(192, 168, 7, 9),
                    prefix: 24
                },
            ]
        );
        assert_eq!(fake.calls().len(), 5);
    }

    #[test]
    fn link_documents_become_settings() {
        let yaml = "version: v1alpha1\nmachine:\n  type: worker\n---\napiVersion: v1alpha1\nkind: LinkConfig\nname: eth0\nmtu: 1400\naddresses:\n  - address: 192.168.7.9/24\n  - address: fd00::9/64\nroutes:\n  - gateway: 192.168.7.1\n---\napiVersion: v1alpha1\nkind: DHCPv4Config\nname: eth0\n---\napiVersion: v1alpha1\nkind: DHCPv4Config\nname: eth1\n";
        let config = Config::from_bytes(yaml.as_bytes()).unwrap();
        let (links, warnings) = plan(&config);
        assert_eq!(
            warnings,
            ["LinkConfig[eth0]: fd00::9/64 is not IPv4; only IPv4 addresses are applied yet"]
        );
        assert_eq!(
            links,
            [
                LinkSettings {
                    link: "eth0".into(),
                    address: Some((Ipv4Addr::new(192, 168, 7, 9), 24)),
                    routes: vec![(Ipv4Addr::UNSPECIFIED, 0, Ipv4Addr::new(192, 168, 7, 1))],
                    mtu: Some(1400),
                    dhcp: true,
                },
                LinkSettings {
                    link: "eth1".into(),
                    address: None,
                    routes: Vec::new(),
                    mtu: None,
                    dhcp: true,
                },
            ]
        );
    }

    #[test]
    fn lease_without_router_adds_no_route() {
        let fake = FakeSystem::default();
        let lease = Lease {
            address: Ipv4Addr::new(192, 168, 7, 9),
            prefix: 16,
            router: None,
            dns: vec![],
            hostname: None,
            lease_time: Duration::from_secs(60),
            server: Ipv4Addr::new(192, 168, 0, 1),
        };
        apply_lease(&fake, "eth1", &lease).unwrap();
        assert_eq!(
            fake.calls(),
            vec![Call::SetIpv4 {
                link: "eth1".into(),
                addr: lease.address,
                prefix: 16
            }]
        );
    }

    #[test]
    fn first_nic_skips_loopback_and_virtual_links() {
        let dir = tempfile::tempdir().unwrap();
        for (name, physical) in [
            ("lo", false),
            ("eth1", true),
            ("eth0", true),
            ("dummy0", false),
        ] {
            std::fs::create_dir_all(dir.path().join(name)).unwrap();
            if physical {
                std::fs::create_dir_all(dir.path().join(name).join("device")).unwrap();
            }
        }
        std::fs::write(dir.path().join("eth0/address"), "52:54:00:12:34:56\n").unwrap();
        assert_eq!(first_nic(dir.path()).as_deref(), Some("eth0"));
        let mac = mac_address(dir.path(), "eth0");
        assert_eq!(mac, Some([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
        assert_eq!(default_hostname(mac), "talos-123456");
    }
}
