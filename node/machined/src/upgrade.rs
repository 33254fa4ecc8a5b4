//! Upgrades from an installer image: pull its kernel and initramfs, write them into the
//! other boot slot, and arm a one-shot trial of it.

use std::net::IpAddr;
use std::sync::Arc;

use talos_machinery::Config;
use talos_machinery::config::{HostEntry, RegistryCredentials};
use talos_oci::{
    BoxFuture, ClientIdentity, Credentials, Reference, Registry, RegistryOptions, RegistryTls,
    Resolve,
};

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

/// Resolves registry names as the node does: the config's static hosts first, then
/// the nameservers in /etc/resolv.conf.
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
                .map_err(|e| format!("not among the static hosts, and DNS: {e}"))?;
            Ok(found.into_iter().map(IpAddr::V4).collect())
        })
    }
}

/// One place an image can come from: a mirror endpoint or the registry itself.
struct Source {
    /// The mirror URL, or the registry's `host[:port]`.
    name: String,
    registry: Registry,
}

/// The `host[:port]` of a mirror URL, as `machine.registries.config` keys it.
fn url_authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split(['/', '?', '#']).next().unwrap_or_default()
}

/// Where `reference` is pulled from, in order: the config's mirrors of its registry, then the
/// registry itself unless the mirrors say `skipFallback`. Each is reached with the config's
/// TLS settings and credentials for its host and the node's resolver.
fn sources(reference: &Reference, config: Option<&Config>) -> Result<Vec<Source>, UpgradeError> {
    let hosts = config
        .map(Config::host_entries)
        .transpose()
        .map_err(|e| UpgradeError::Config(e.to_string()))?
        .unwrap_or_default();
    let resolver: Arc<dyn Resolve> = Arc::new(NodeResolver { hosts });
    let options = |host: &str| -> Result<RegistryOptions, UpgradeError> {
        let tls = config
            .and_then(|c| c.registry_tls(host))
            .map(|tls| RegistryTls {
                ca_pem: tls.ca_pem,
                insecure_skip_verify: tls.insecure_skip_verify,
                client_identity: tls.client_identity.map(|id| ClientIdentity {
                    cert_pem: id.cert_pem,
                    key_pem: id.key_pem,
                }),
            });
        let credentials = config
            .map(|c| c.registry_credentials(host))
            .transpose()
            .map_err(UpgradeError::Config)?
            .flatten()
            .map(|credentials| match credentials {
                RegistryCredentials::Basic { username, password } => {
                    Credentials::Basic { username, password }
                }
                RegistryCredentials::IdentityToken(token) => Credentials::IdentityToken(token),
            });
        Ok(RegistryOptions {
            tls,
            credentials,
            resolver: Some(resolver.clone()),
        })
    };
    let mirrors = config
        .and_then(|c| c.registry_mirrors(reference.registry()))
        .unwrap_or_default();
    let mut sources = Vec::new();
    for endpoint in &mirrors.endpoints {
        let registry = Registry::mirror(
            &endpoint.url,
            endpoint.override_path,
            &options(url_authority(&endpoint.url))?,
        )
        .map_err(|e| UpgradeError::Registry(e.to_string()))?;
        sources.push(Source {
            name: endpoint.url.clone(),
            registry,
        });
    }
    if !mirrors.skip_fallback || mirrors.endpoints.is_empty() {
        let registry = Registry::with_options(reference, &options(reference.registry())?)
            .map_err(|e| UpgradeError::Registry(e.to_string()))?;
        sources.push(Source {
            name: reference.registry().to_owned(),
            registry,
        });
    }
    Ok(sources)
}

/// Refuses references the node cannot pull, before anything starts.
pub fn check(image: &str, config: Option<&Config>) -> Result<(), UpgradeError> {
    let reference = Reference::parse(image).map_err(|e| UpgradeError::Reference(e.to_string()))?;
    sources(&reference, config)?;
    Ok(())
}

/// Pulls `image` and stages it; returns the version label of the new slot.
pub async fn stage(
    slots: Arc<BootSlots>,
    image: &str,
    config: Option<&Config>,
) -> Result<String, UpgradeError> {
    let reference = Reference::parse(image).map_err(|e| UpgradeError::Reference(e.to_string()))?;
    let kernel_path = talos_oci::installer_kernel_path(arch());
    let initramfs_path = talos_oci::installer_initramfs_path(arch());
    let mut failures = Vec::new();
    let mut pulled = None;
    for source in sources(&reference, config)? {
        tracing::info!(%reference, from = %source.name, https = source.registry.is_https(), "pulling the installer");
        match source
            .registry
            .pull_files(
                &reference,
                arch(),
                &[&kernel_path, &initramfs_path],
                MAX_PAYLOAD_BYTES,
            )
            .await
        {
            Ok(files) => {
                pulled = Some(files);
                break;
            }
            Err(e) => {
                tracing::warn!(from = %source.name, "pulling the installer failed: {e}");
                failures.push(format!("{}: {e}", source.name));
            }
        }
    }
    let mut files = pulled.ok_or_else(|| UpgradeError::Pull(failures.join("; ")))?;
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

    #[test]
    fn mirrors_come_first_and_the_fallback_is_optional() {
        let reference = Reference::parse("ghcr.io/siderolabs/installer:v2").unwrap();
        let with = |skip: bool| {
            Config::from_bytes(format!(
                "version: v1alpha1\nmachine:\n  registries:\n    mirrors:\n      ghcr.io:\n        endpoints: [http://10.0.2.2:5000, https://m.test/v2/ghcr]\n        overridePath: true\n        skipFallback: {skip}\n"
            ).as_bytes())
            .unwrap()
        };
        let names = |c: &Config| -> Vec<String> {
            sources(&reference, Some(c))
                .unwrap()
                .into_iter()
                .map(|s| s.name)
                .collect()
        };
        assert_eq!(
            names(&with(false)),
            ["http://10.0.2.2:5000", "https://m.test/v2/ghcr", "ghcr.io"]
        );
        assert_eq!(
            names(&with(true)),
            ["http://10.0.2.2:5000", "https://m.test/v2/ghcr"]
        );
        assert_eq!(url_authority("https://[fd00::1]:5000/v2"), "[fd00::1]:5000");
    }

    #[test]
    fn malformed_credentials_are_refused_before_pulling() {
        let config = Config::from_bytes(
            b"version: v1alpha1\nmachine:\n  registries:\n    config:\n      ghcr.io:\n        auth:\n          auth: eA==\n",
        )
        .unwrap();
        let e = check("ghcr.io/siderolabs/installer:v2", Some(&config))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "machine.registries.config.\"ghcr.io\".auth.auth: expected base64 of username:password"
        );
    }
}
