//! Upgrades from an installer image: pull its kernel and initramfs, write them into the
//! other boot slot, and arm a one-shot trial of it.

use std::net::IpAddr;
use std::sync::Arc;

use talos_machinery::Config;
use talos_machinery::config::HostEntry;
use talos_oci::{BoxFuture, Reference, Registry, RegistryOptions, RegistryTls, Resolve};

use crate::boot::{BootError, BootSlots};

/// Kernel plus initramfs; anything larger is not an installer we can boot.
const MAX_PAYLOAD_BYTES: u64 = 512 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("{0}")]
    Reference(String),
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Registry(String),
    #[error("pulling the installer: {0}")]
    Pull(String),
    #[error("writing the new slot: {0}")]
    Write(#[from] BootError),
}

fn arch() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    }
}

/// Resolves registry names as the node does: `machine.network.extraHostEntries` first, then
/// the nameservers in /run/resolv.conf.
#[derive(Debug)]
struct NodeResolver {
    hosts: Vec<HostEntry>,
}

impl Resolve for NodeResolver {
    fn resolve<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, String>> {
        Box::pin(async move {
            let listed: Vec<IpAddr> = self
                .hosts
                .iter()
                .filter(|e| e.aliases.iter().any(|a| a.eq_ignore_ascii_case(host)))
                .map(|e| e.ip)
                .collect();
            if !listed.is_empty() {
                return Ok(listed);
            }
            let found = crate::dns::resolve(host)
                .await
                .map_err(|e| format!("not in machine.network.extraHostEntries, and DNS: {e}"))?;
            Ok(found.into_iter().map(IpAddr::V4).collect())
        })
    }
}

/// The registry `reference` names, reached with the config's TLS settings for it and the
/// node's resolver.
fn registry(reference: &Reference, config: Option<&Config>) -> Result<Registry, UpgradeError> {
    let machine = config.map(|c| &c.v1alpha1().machine);
    let tls = machine
        .and_then(|m| m.registry_tls(reference.registry()))
        .map(|tls| RegistryTls {
            ca_pem: tls.ca_pem,
            insecure_skip_verify: tls.insecure_skip_verify,
        });
    let hosts = machine
        .and_then(|m| m.network.as_ref())
        .map(|n| n.extra_host_entries())
        .transpose()
        .map_err(UpgradeError::Config)?
        .unwrap_or_default();
    let options = RegistryOptions {
        tls,
        resolver: Some(Arc::new(NodeResolver { hosts })),
    };
    Registry::with_options(reference, &options).map_err(|e| UpgradeError::Registry(e.to_string()))
}

/// Refuses references the node cannot pull, before anything starts.
pub fn check(image: &str, config: Option<&Config>) -> Result<(), UpgradeError> {
    let reference = Reference::parse(image).map_err(|e| UpgradeError::Reference(e.to_string()))?;
    registry(&reference, config)?;
    Ok(())
}

/// Pulls `image` and stages it; returns the version label of the new slot.
pub async fn stage(
    slots: Arc<BootSlots>,
    image: &str,
    config: Option<&Config>,
) -> Result<String, UpgradeError> {
    let reference = Reference::parse(image).map_err(|e| UpgradeError::Reference(e.to_string()))?;
    let registry = registry(&reference, config)?;
    let kernel_path = talos_oci::installer_kernel_path(arch());
    let initramfs_path = talos_oci::installer_initramfs_path(arch());
    tracing::info!(%reference, https = registry.is_https(), "pulling the installer");
    let mut files = registry
        .pull_files(
            &reference,
            arch(),
            &[&kernel_path, &initramfs_path],
            MAX_PAYLOAD_BYTES,
        )
        .await
        .map_err(|e| UpgradeError::Pull(e.to_string()))?;
    let kernel = files
        .remove(kernel_path.trim_start_matches('/'))
        .unwrap_or_default();
    let initramfs = files
        .remove(initramfs_path.trim_start_matches('/'))
        .unwrap_or_default();
    // A label for the boot entry: the tag, else the start of the digest.
    let version = match (reference.tag(), reference.digest()) {
        (Some(tag), _) => tag.to_owned(),
        (None, Some(digest)) => format!("sha256:{}", &digest.hex()[..12]),
        (None, None) => "latest".to_owned(),
    };
    let label = version.clone();
    tokio::task::spawn_blocking(move || slots.stage_upgrade(&kernel, &initramfs, &label))
        .await
        .map_err(|e| UpgradeError::Pull(format!("the writer stopped: {e}")))??;
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn host_entries_come_before_dns() {
        let resolver = NodeResolver {
            hosts: vec![HostEntry {
                ip: "10.0.2.2".parse().unwrap(),
                aliases: vec!["Registry.Test".into()],
            }],
        };
        assert_eq!(
            resolver.resolve("registry.test").await.unwrap(),
            ["10.0.2.2".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn check_names_the_bad_config_field() {
        let image = "registry.test:5443/talos/installer:v2";
        assert!(check(image, None).is_ok());
        let config = Config::from_bytes(
            b"version: v1alpha1\nmachine:\n  registries:\n    config:\n      \"registry.test:5443\":\n        tls:\n          ca: bm90IFBFTQ==\n",
        )
        .unwrap();
        let e = check(image, Some(&config)).unwrap_err().to_string();
        assert!(
            e.contains("machine.registries.config.\"registry.test:5443\".tls: tls.ca holds no PEM certificate"),
            "{e}"
        );
    }
}
