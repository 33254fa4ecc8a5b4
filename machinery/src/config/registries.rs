//! The views of `machine.registries.config.<host>.tls` and `machine.network.extraHostEntries`
//! the node needs for pulling images.

use std::net::IpAddr;

use super::v1alpha1::{MachineConfig, Network};

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
    /// it), if the config has any.
    pub fn registry_tls(&self, host: &str) -> Option<RegistryTlsConfig> {
        let tls = self.registries.as_ref()?.config.get(host)?.tls.as_ref()?;
        Some(RegistryTlsConfig {
            ca_pem: tls.ca.as_ref().map(|ca| ca.as_str().to_owned()),
            insecure_skip_verify: tls.insecure_skip_verify.unwrap_or(false),
        })
    }
}

impl Network {
    /// `extraHostEntries`; errors name the malformed entry.
    pub fn extra_host_entries(&self) -> Result<Vec<HostEntry>, String> {
        self.extra_host_entries
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, entry)| {
                let ip = entry.ip.parse().map_err(|_| {
                    format!(
                        "machine.network.extraHostEntries[{i}].ip: {:?} is not an IP address",
                        entry.ip
                    )
                })?;
                Ok(HostEntry {
                    ip,
                    aliases: entry.aliases.clone(),
                })
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
             insecure.test:\n        tls:\n          insecureSkipVerify: true\n",
            crate::b64::encode(pem)
        ));
        let machine = &config.machine;
        let tls = machine.registry_tls("registry.test:5443").unwrap();
        assert_eq!(tls.ca_pem.as_deref(), Some(pem));
        assert!(!tls.insecure_skip_verify);
        assert_eq!(machine.registry_tls("registry.test"), None);
        let tls = machine.registry_tls("insecure.test").unwrap();
        assert_eq!((tls.ca_pem, tls.insecure_skip_verify), (None, true));
        assert_eq!(parse("  type: worker\n").machine.registry_tls("x"), None);
    }

    #[test]
    fn a_registry_ca_that_is_not_base64_is_refused_at_its_path() {
        let input = "version: v1alpha1\nmachine:\n  registries:\n    config:\n      bad.test:\n        tls:\n          ca: \"%%\"\n";
        let e = crate::codec::from_yaml::<V1Alpha1>(input).unwrap_err();
        assert!(e.to_string().contains("invalid base64"), "{e}");
        assert_eq!(e.path(), Some("machine.registries.config.bad.test.tls.ca"));
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
            "machine.network.extraHostEntries[0].ip: \"nope\" is not an IP address"
        );
    }
}
