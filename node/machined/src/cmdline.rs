//! The kernel command line, and the parameters machined reads from it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// `key=value` pairs and bare flags from /proc/cmdline; [`Cmdline::get`] gives a key's last
/// occurrence, [`Cmdline::all`] every one in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmdline {
    params: BTreeMap<String, Vec<String>>,
}

impl Cmdline {
    pub fn parse(text: &str) -> Self {
        let mut params: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for token in split_respecting_quotes(text) {
            let (key, value) = token.split_once('=').unwrap_or((token.as_str(), ""));
            params
                .entry(key.to_owned())
                .or_default()
                .push(value.trim_matches('"').to_owned());
        }
        Self { params }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .get(key)
            .and_then(|values| values.last())
            .map(String::as_str)
    }

    /// Every value of `key`, in order.
    pub fn all(&self, key: &str) -> &[String] {
        self.params.get(key).map_or(&[], Vec::as_slice)
    }

    /// `talos.config=`: where to fetch the machine config from.
    pub fn config_url(&self) -> Option<&str> {
        self.get("talos.config").filter(|v| !v.is_empty())
    }

    /// `talos.config.early=` (tried right after STATE) or `talos.config.inline=` (tried when
    /// no URL is given): a config as base64 of its zstd compression, split over as many
    /// occurrences as the command line needs. `None` when absent.
    pub fn inline_config(&self, key: InlineConfig) -> Option<String> {
        let parts = self.all(key.param());
        (!parts.is_empty()).then(|| parts.concat())
    }

    pub fn hostname(&self) -> Option<&str> {
        self.get("talos.hostname").filter(|v| !v.is_empty())
    }

    /// `talos.qemu.isa_debug_exit=PORT` (ours, not upstream's): power off by writing to
    /// QEMU's isa-debug-exit port, because ACPI power-off can hang under TCG on x86.
    pub fn isa_debug_exit_port(&self) -> Option<u16> {
        let v = self.get("talos.qemu.isa_debug_exit")?;
        let hex = v.strip_prefix("0x").unwrap_or(v);
        u16::from_str_radix(hex, 16).ok()
    }

    /// The `ip=` parameter, if it asks for a static address.
    pub fn static_ip(&self) -> Result<Option<StaticIp>, CmdlineError> {
        match self.get("ip") {
            None | Some("" | "dhcp" | "on" | "any") => Ok(None),
            Some(v) => StaticIp::parse(v).map(Some),
        }
    }
}

/// The two kernel parameters that carry a whole config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InlineConfig {
    Early,
    Inline,
}

impl InlineConfig {
    pub fn param(self) -> &'static str {
        match self {
            InlineConfig::Early => "talos.config.early",
            InlineConfig::Inline => "talos.config.inline",
        }
    }
}

fn split_respecting_quotes(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    tokens.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}

/// `ip=<client>:<server>:<gateway>:<netmask>:<hostname>:<device>:<autoconf>` (the kernel's
/// and dracut's format), restricted to what a static IPv4 setup needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticIp {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub hostname: Option<String>,
    pub device: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Kernel parameter ip={value:?}: {reason}")]
pub struct CmdlineError {
    pub value: String,
    pub reason: String,
}

impl StaticIp {
    pub fn parse(value: &str) -> Result<Self, CmdlineError> {
        let err = |reason: &str| CmdlineError {
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        let fields: Vec<&str> = value.split(':').collect();
        let field = |i: usize| fields.get(i).copied().filter(|f| !f.is_empty());
        let address: Ipv4Addr = field(0)
            .ok_or_else(|| err("the client address (first field) is missing"))?
            .parse()
            .map_err(|_| err("the client address (first field) is not an IPv4 address"))?;
        let gateway = field(2)
            .map(|g| {
                g.parse()
                    .map_err(|_| err("the gateway (third field) is not an IPv4 address"))
            })
            .transpose()?;
        let prefix = match field(3) {
            None => 24,
            Some(mask) => parse_netmask(mask).ok_or_else(|| {
                err("the netmask (fourth field) is neither a dotted mask nor a prefix length")
            })?,
        };
        if let Some(autoconf) = field(6)
            && !matches!(autoconf, "off" | "none" | "static")
        {
            return Err(err(
                "only static configuration (autoconf off) is supported in ip=; use plain DHCP by leaving ip= out",
            ));
        }
        Ok(Self {
            address,
            prefix,
            gateway,
            hostname: field(4).map(str::to_owned),
            device: field(5).map(str::to_owned),
        })
    }
}

fn parse_netmask(mask: &str) -> Option<u8> {
    if let Ok(prefix) = mask.parse::<u8>() {
        return (prefix <= 32).then_some(prefix);
    }
    let bits = u32::from(mask.parse::<Ipv4Addr>().ok()?);
    let prefix = bits.leading_ones();
    (bits.checked_shl(prefix).unwrap_or(0) == 0).then(|| u8::try_from(prefix).unwrap_or(32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_flags_and_quotes() {
        let c = Cmdline::parse(
            "console=ttyAMA0 quiet talos.config=http://10.0.2.2:8080/c.yaml x=\"a b\" console=ttyS0\n",
        );
        assert_eq!(c.get("console"), Some("ttyS0"));
        assert_eq!(c.get("quiet"), Some(""));
        assert_eq!(c.get("x"), Some("a b"));
        assert_eq!(c.config_url(), Some("http://10.0.2.2:8080/c.yaml"));
        assert_eq!(c.get("missing"), None);
        assert_eq!(c.all("console"), ["ttyAMA0", "ttyS0"]);
    }

    #[test]
    fn inline_configs_join_their_occurrences() {
        let c = Cmdline::parse(
            "talos.config.inline=KLUv talos.config.early=AAAA talos.config.inline=/QBY",
        );
        assert_eq!(
            c.inline_config(InlineConfig::Inline).as_deref(),
            Some("KLUv/QBY")
        );
        assert_eq!(
            c.inline_config(InlineConfig::Early).as_deref(),
            Some("AAAA")
        );
        assert_eq!(
            Cmdline::parse("quiet").inline_config(InlineConfig::Inline),
            None
        );
    }

    #[test]
    fn static_ip_full_form() {
        let c = Cmdline::parse("ip=10.0.2.15::10.0.2.2:255.255.255.0:node1:eth0:off");
        let ip = c.static_ip().unwrap().unwrap();
        assert_eq!(ip.address, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(ip.prefix, 24);
        assert_eq!(ip.gateway, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(ip.hostname.as_deref(), Some("node1"));
        assert_eq!(ip.device.as_deref(), Some("eth0"));
    }

    #[test]
    fn static_ip_prefix_length_and_defaults() {
        let ip = StaticIp::parse("192.168.1.9:::20").unwrap();
        assert_eq!(ip.prefix, 20);
        assert_eq!(ip.gateway, None);
        assert_eq!(StaticIp::parse("192.168.1.9").unwrap().prefix, 24);
    }

    #[test]
    fn dhcp_means_no_static_ip() {
        assert_eq!(Cmdline::parse("ip=dhcp").static_ip().unwrap(), None);
        assert_eq!(Cmdline::parse("").static_ip().unwrap(), None);
    }

    #[test]
    fn bad_ip_values_name_the_field() {
        let e = StaticIp::parse("10.0.2.x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Kernel parameter ip=\"10.0.2.x\": the client address (first field) is not an IPv4 address"
        );
        let e = StaticIp::parse("10.0.2.15:::255.0.255.0").unwrap_err();
        assert!(e.reason.contains("netmask"), "{e}");
        let e = StaticIp::parse("10.0.2.15::::::dhcp").unwrap_err();
        assert!(e.reason.contains("autoconf"), "{e}");
    }

    #[test]
    fn debug_exit_port() {
        assert_eq!(
            Cmdline::parse("talos.qemu.isa_debug_exit=0xf4").isa_debug_exit_port(),
            Some(0xf4)
        );
        assert_eq!(Cmdline::parse("").isa_debug_exit_port(), None);
    }
}
