//! The node's shared state: its mode (maintenance or configured), its config, names and TLS.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use talos_machinery::config::{Config, ValidationMode};
use talos_machinery::pki::CertAndKey;
use talos_node_sys::power::{Power, RebootAction};
use talos_node_sys::process::Hostname;
use talos_proto::machine::apply_configuration_request::Mode as ApplyMode;
use tokio::sync::watch;

use crate::api::tls;
use crate::cmdline::Cmdline;
use crate::diff;
use crate::logging::LogRing;
use crate::network::NetworkStatus;
use crate::services::ServiceRegistry;
use crate::storage::ConfigStore;

/// The side effects the node core needs.
pub trait System: Hostname + Power + Send + Sync {}
impl<T: Hostname + Power + Send + Sync> System for T {}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{0}")]
    Invalid(String),
    #[error("Another configuration is being applied")]
    Busy,
    #[error("{0}")]
    Unsupported(String),
    #[error("Storing the config at {path}")]
    Store {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What an apply did, for the API's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub mode: ApplyMode,
    pub details: String,
    pub warnings: Vec<String>,
}

#[derive(Debug)]
struct Mode {
    config: Option<(Arc<Config>, Vec<u8>)>,
    hostname: String,
}

pub struct Node {
    pub cmdline: Cmdline,
    pub kernel_release: String,
    pub services: ServiceRegistry,
    pub logs: LogRing,
    network: watch::Receiver<NetworkStatus>,
    mode: RwLock<Mode>,
    store: Option<ConfigStore>,
    apply_lock: tokio::sync::Mutex<()>,
    tls: watch::Sender<Arc<ServerConfig>>,
    system: Arc<dyn System>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("configured", &self.is_configured())
            .field("hostname", &self.hostname())
            .finish_non_exhaustive()
    }
}

/// Everything a node is built from.
pub struct NodeParts {
    pub cmdline: Cmdline,
    pub kernel_release: String,
    pub services: ServiceRegistry,
    pub logs: LogRing,
    pub network: watch::Receiver<NetworkStatus>,
    pub store: Option<ConfigStore>,
    pub system: Arc<dyn System>,
    pub default_hostname: String,
}

impl Node {
    /// A node in maintenance mode.
    pub fn new(parts: NodeParts) -> Result<Arc<Node>, tls::TlsError> {
        let hostname = parts
            .cmdline
            .hostname()
            .map(str::to_owned)
            .unwrap_or(parts.default_hostname);
        let sans = tls::node_sans(&[], &hostname, &[]);
        let tls = watch::Sender::new(tls::maintenance(&sans, &hostname)?);
        let node = Arc::new(Node {
            cmdline: parts.cmdline,
            kernel_release: parts.kernel_release,
            services: parts.services,
            logs: parts.logs,
            network: parts.network,
            mode: RwLock::new(Mode {
                config: None,
                hostname,
            }),
            store: parts.store,
            apply_lock: tokio::sync::Mutex::new(()),
            tls,
            system: parts.system,
        });
        node.set_system_hostname();
        Ok(node)
    }

    fn mode(&self) -> std::sync::RwLockReadGuard<'_, Mode> {
        self.mode.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_configured(&self) -> bool {
        self.mode().config.is_some()
    }

    pub fn hostname(&self) -> String {
        self.mode().hostname.clone()
    }

    pub fn addresses(&self) -> Vec<IpAddr> {
        self.network
            .borrow()
            .addresses
            .iter()
            .copied()
            .map(IpAddr::V4)
            .collect()
    }

    /// The TLS settings for the next connection.
    pub fn tls_config(&self) -> Arc<ServerConfig> {
        self.tls.borrow().clone()
    }

    /// True when a `node` metadata value names this node, so no proxying is needed.
    pub fn is_local_target(&self, target: &str) -> bool {
        let host = target
            .strip_prefix('[')
            .and_then(|t| t.split_once(']'))
            .map_or_else(
                || {
                    target
                        .rsplit_once(':')
                        .filter(|(h, _)| !h.contains(':'))
                        .map_or(target, |(h, _)| h)
                },
                |(h, _)| h,
            );
        if host == "localhost" || host == self.hostname() {
            return true;
        }
        match host.parse::<IpAddr>() {
            Ok(ip) => ip.is_loopback() || ip.is_unspecified() || self.addresses().contains(&ip),
            Err(_) => false,
        }
    }

    fn set_system_hostname(&self) {
        let name = self.hostname();
        if let Err(e) = self.system.set_hostname(&name) {
            tracing::warn!("{e}");
        }
    }

    /// Rebuilds the server certificate for the current mode, names and addresses.
    pub fn refresh_tls(&self) -> Result<(), tls::TlsError> {
        let config = self.mode().config.as_ref().map(|(c, _)| c.clone());
        let tls = self.tls_for(config.as_deref())?;
        self.tls.send_replace(tls);
        Ok(())
    }

    fn tls_for(&self, config: Option<&Config>) -> Result<Arc<ServerConfig>, tls::TlsError> {
        let hostname = config
            .and_then(|c| c.hostname())
            .map_or_else(|| self.hostname(), str::to_owned);
        let addresses = self.addresses();
        match config {
            None => tls::maintenance(&tls::node_sans(&addresses, &hostname, &[]), &hostname),
            Some(config) => {
                let ca = os_ca(config).ok_or(tls::TlsError::NoCaKey)?;
                let sans = tls::node_sans(&addresses, &hostname, config.cert_sans());
                tls::configured(&ca, &config.accepted_cas(), &sans, &hostname)
            }
        }
    }

    /// Parses, validates and, unless `dry_run`, stores and applies a machine config.
    pub async fn apply(
        &self,
        data: &[u8],
        requested: ApplyMode,
        dry_run: bool,
    ) -> Result<Applied, ApplyError> {
        let _guard = self.apply_lock.try_lock().map_err(|_| ApplyError::Busy)?;
        let config = Config::from_bytes(data)
            .map_err(|e| ApplyError::Invalid(format!("config is not valid: {e}")))?;
        let report = config.validate(ValidationMode::Metal);
        if !report.errors.is_empty() {
            let problems: Vec<String> = report
                .errors
                .iter()
                .map(|p| format!("{}: {}", p.path, p.message))
                .collect();
            return Err(ApplyError::Invalid(format!(
                "{} validation error(s):\n{}",
                problems.len(),
                problems.join("\n")
            )));
        }
        let warnings: Vec<String> = report
            .warnings
            .iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect();
        let tls = self
            .tls_for(Some(&config))
            .map_err(|e| ApplyError::Invalid(error_chain(&e)))?;
        let configured = self.is_configured();
        let mode = match (configured, requested) {
            (_, ApplyMode::Try) => {
                return Err(ApplyError::Unsupported(
                    "try mode is not supported by talos-rs yet".into(),
                ));
            }
            (false, _) | (true, ApplyMode::Auto | ApplyMode::NoReboot) => ApplyMode::NoReboot,
            (true, other) => other,
        };
        if dry_run {
            let old = self
                .mode()
                .config
                .as_ref()
                .map(|(_, raw)| String::from_utf8_lossy(raw).into_owned())
                .unwrap_or_default();
            let details = format!(
                "Dry run summary:\nApplied configuration in {} mode would change:\n{}",
                mode_name(mode),
                diff::lines(&old, &String::from_utf8_lossy(data))
            );
            return Ok(Applied {
                mode,
                details,
                warnings,
            });
        }
        let mut warnings = warnings;
        match &self.store {
            Some(store) => store.save(data).map_err(|source| ApplyError::Store {
                path: store.path().display().to_string(),
                source,
            })?,
            None => warnings.push("this node has no STATE partition: the config is kept in memory only and is lost on reboot".into()),
        }
        let details = match mode {
            ApplyMode::Staged => {
                "Staged configuration to be applied after the next reboot".to_owned()
            }
            ApplyMode::Reboot => {
                self.schedule_power(RebootAction::Restart);
                "Applied configuration, rebooting".to_owned()
            }
            _ => {
                self.switch_to(Arc::new(config), data.to_vec(), tls);
                "Applied configuration without a reboot".to_owned()
            }
        };
        Ok(Applied {
            mode,
            details,
            warnings,
        })
    }

    /// Takes a config found at boot (stored on STATE or fetched) without storing it again.
    pub fn adopt(&self, data: &[u8], source: &str) -> Result<(), ApplyError> {
        let config = Config::from_bytes(data)
            .map_err(|e| ApplyError::Invalid(format!("config from {source} is not valid: {e}")))?;
        let report = config.validate(ValidationMode::Metal);
        if let Some(p) = report.errors.first() {
            return Err(ApplyError::Invalid(format!(
                "config from {source}: {}: {}",
                p.path, p.message
            )));
        }
        let tls = self
            .tls_for(Some(&config))
            .map_err(|e| ApplyError::Invalid(error_chain(&e)))?;
        self.switch_to(Arc::new(config), data.to_vec(), tls);
        tracing::info!(source, "configured");
        Ok(())
    }

    /// Persists a config that arrived from a boot-time source, then adopts it.
    pub fn adopt_and_store(&self, data: &[u8], source: &str) -> Result<(), ApplyError> {
        self.adopt(data, source)?;
        if let Some(store) = &self.store {
            store.save(data).map_err(|source| ApplyError::Store {
                path: store.path().display().to_string(),
                source,
            })?;
        }
        Ok(())
    }

    fn switch_to(&self, config: Arc<Config>, raw: Vec<u8>, tls: Arc<ServerConfig>) {
        {
            let mut mode = self.mode.write().unwrap_or_else(|p| p.into_inner());
            if let Some(name) = config.hostname() {
                mode.hostname = name.to_owned();
            }
            mode.config = Some((config, raw));
        }
        self.set_system_hostname();
        self.tls.send_replace(tls);
        self.services.set(
            "apid",
            crate::services::ServiceState::Running,
            "serving mutual TLS with the OS CA from the machine config",
        );
    }

    /// Runs a reboot or power-off shortly after the current reply has been sent.
    pub fn schedule_power(&self, action: RebootAction) {
        let system = self.system.clone();
        let debug_exit = self.cmdline.isa_debug_exit_port();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            tokio::task::spawn_blocking(move || {
                crate::power::power_down(system.as_ref(), action, debug_exit)
            });
        });
    }
}

fn mode_name(mode: ApplyMode) -> &'static str {
    match mode {
        ApplyMode::Reboot => "REBOOT",
        ApplyMode::Auto => "AUTO",
        ApplyMode::NoReboot => "NO_REBOOT",
        ApplyMode::Staged => "STAGED",
        ApplyMode::Try => "TRY",
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The OS CA with its key; `None` on worker configs, whose CA has no key.
fn os_ca(config: &Config) -> Option<CertAndKey> {
    config
        .os_ca()
        .ok()
        .flatten()
        .and_then(|ca| ca.to_cert_and_key())
}
