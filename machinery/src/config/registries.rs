//! Read-only views of keys kept as raw values that the node needs for pulling images:
//! `machine.registries.config.<host>.tls` and `machine.network.extraHostEntries`.

use std::net::IpAddr;

use super::raw::RawValue;
use super::v1alpha1::{MachineConfig, Network};
use crate::b64;

/// `machine.registries.config.<host>.tls`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryTlsConfig {
    /// The decoded PEM of `tls.ca` (base64 in the config, as upstream's).
    pub ca_pem: Option<String>,
    pub insecure_skip_verify: bool,
}

/// One `machine.network.extraHostEntries` entry: `ip` and the names that map to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    pub ip: IpAddr,
    pub aliases: Vec<String>,
}

impl MachineConfig {
    /// The TLS settings for registry `host` (`name[:port]`, as the image reference writes
    /// it), if the config has any. Errors name the malformed field.
    pub fn registry_tls(&self, host: &str) -> Result<Option<RegistryTlsConfig>, String> {
        let Some(tls) = self
            .registries
            .as_ref()
            .and_then(|r| r.get("config"))
            .and_then(|c| c.get(host))
            .and_then(|h| h.get("tls"))
            .filter(|t| !t.is_null())
        else {
            return Ok(None);
        };
        let field = |key: &str| format!("machine.registries.config.\"{host}\".tls.{key}");
        let ca_pem = match tls.get("ca") {
            None | Some(RawValue::Null) => None,
            Some(RawValue::String(encoded)) => {
                Some(b64::decode_text(encoded).map_err(|e| format!("{}: {e}", field("ca")))?)
            }
            Some(_) => return Err(format!("{}: expected base64 PEM text", field("ca"))),
        };
        let insecure_skip_verify = match tls.get("insecureSkipVerify") {
            None | Some(RawValue::Null) => false,
            Some(RawValue::Bool(b)) => *b,
            Some(_) => {
                return Err(format!(
                    "{}: expected true or false",
                    field("insecureSkipVerify")
                ));
            }
        };
        Ok(Some(RegistryTlsConfig {
            ca_pem,
            insecure_skip_verify,
        }))
    }
}

impl Network {
    /// `extraHostEntries`; errors name the malformed entry.
    pub fn extra_host_entries(&self) -> Result<Vec<HostEntry>, String> {
        let entries = match &self.extra_host_entries {
            None | Some(RawValue::Null) => return Ok(Vec::new()),
            Some(RawValue::Seq(entries)) => entries,
            Some(_) => return Err("machine.network.extraHostEntries: expected a list".into()),
        };
        entries
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                let bad = |what: &str| format!("machine.network.extraHostEntries[{i}]: {what}");
                let ip = entry
                    .get("ip")
                    .and_then(RawValue::as_str)
                    .ok_or_else(|| bad("no ip"))?;
                let ip = ip
                    .parse()
                    .map_err(|_| bad(&format!("ip {ip:?} is not an IP address")))?;
                let aliases = match entry.get("aliases") {
                    None | Some(RawValue::Null) => Vec::new(),
                    Some(RawValue::Seq(aliases)) => aliases
                        .iter()
                        .map(|a| a.as_str().map(str::to_owned))
                        .collect::<Option<_>>()
                        .ok_or_else(|| bad("aliases must be strings"))?,
                    Some(_) => return Err(bad("aliases must be a list")),
                };
                Ok(HostEntry { ip, aliases })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::config::V1Alpha1;

    fn parse(machine: &str) -> V1Alpha1 {
        crate::codec::from_yaml(&format!("version: v1alpha1\nmachine:\n{machine}")).unwrap()
    }

    #[test]
    fn reads_registry_tls_by_host_and_port() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let config = parse(&format!(
            "  registries:\n    config:\n      \"registry.test:5443\":\n        tls:\n          ca: {}\n      \
             insecure.test:\n        tls:\n          insecureSkipVerify: true\n      bad.test:\n        tls:\n          ca: \"%%\"\n",
            crate::b64::encode(pem)
        ));
        let machine = &config.machine;
        let tls = machine.registry_tls("registry.test:5443").unwrap().unwrap();
        assert_eq!(tls.ca_pem.as_deref(), Some(pem));
        assert!(!tls.insecure_skip_verify);
        assert_eq!(machine.registry_tls("registry.test").unwrap(), None);
        let tls = machine.registry_tls("insecure.test").unwrap().unwrap();
        assert_eq!((tls.ca_pem, tls.insecure_skip_verify), (None, true));
        let e = machine.registry_tls("bad.test").unwrap_err();
        assert!(
            e.starts_with("machine.registries.config.\"bad.test\".tls.ca: invalid base64"),
            "{e}"
        );
        assert_eq!(
            parse("  type: worker\n").machine.registry_tls("x").unwrap(),
            None
        );
    }

    #[test]
    fn reads_extra_host_entries() {
        let config = parse(
            "  network:\n    extraHostEntries:\n      - ip: 10.0.2.2\n        aliases: [registry.test, r]\n      - ip: fd00::1\n",
        );
        let network = config.machine.network.as_ref().unwrap();
        let entries = network.extra_host_entries().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[0].ip,
            "10.0.2.2".parse::<std::net::IpAddr>().unwrap()
        );
        assert_eq!(entries[0].aliases, ["registry.test", "r"]);
        assert!(entries[1].aliases.is_empty());
        let config = parse("  network:\n    extraHostEntries:\n      - ip: nope\n");
        let e = config
            .machine
            .network
            .unwrap()
            .extra_host_entries()
            .unwrap_err();
        assert_eq!(
            e,
            "machine.network.extraHostEntries[0]: ip \"nope\" is not an IP address"
        );
    }
}
