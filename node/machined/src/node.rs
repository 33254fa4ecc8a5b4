//! The node's shared state: its mode (maintenance or configured), its config, names and TLS.

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use talos_disk::slots::BootKind;
use talos_machinery::config::{Config, ValidationMode};
use talos_machinery::pki::CertAndKey;
use talos_node_sys::fs::{Freezer, Mounter};
use talos_node_sys::net::NetConfig;
use talos_node_sys::power::{Power, RebootAction};
use talos_node_sys::process::Hostname;
use talos_proto::machine::apply_configuration_request::Mode as ApplyMode;
use tokio::sync::watch;

use crate::api::tls;
use crate::boot::BootSlots;
use crate::cmdline::{Cmdline, InlineConfig};
use crate::config_fetch;
use crate::diff;
use crate::firmware::{DEFAULT_OVERLAYS, Firmware, FirmwareError};
use crate::logging::LogRing;
use crate::network::{self, NetworkStatus};
use crate::sequencer::Sequencer;
use crate::services::ServiceRegistry;
use crate::storage::ConfigStore;
use crate::supervisor::{Supervisor, stack};

/// The side effects the node core needs.
pub trait System: Hostname + Power + NetConfig + Freezer + Mounter + Send + Sync {}
impl<T: Hostname + Power + NetConfig + Freezer + Mounter + Send + Sync> System for T {}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{0}")]
    Invalid(String),
    #[error("Another configuration is being applied")]
    Busy,
    #[error("{0}")]
    NotAllowed(String),
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
    /// A config applied in try mode, reverted when this timer fires unless another apply
    /// confirms or replaces it first.
    pending_revert: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    default_hostname: String,
    /// The image's version, from /etc/os-release.
    pub os_version: String,
    /// The A/B slots of the system disk, when the node booted from one.
    pub slots: Option<Arc<BootSlots>>,
    boot_kind: Option<BootKind>,
    pub sequencer: Arc<Sequencer>,
    pub supervisor: Arc<Supervisor>,
    /// Opened by Bootstrap (or found open, when etcd has data): etcd may start.
    pub etcd_bootstrap: watch::Sender<bool>,
    /// Bumped whenever the config changes.
    config_changes: watch::Sender<u64>,
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
    pub os_version: String,
    pub slots: Option<Arc<BootSlots>>,
    pub boot_kind: Option<BootKind>,
    pub sequencer: Arc<Sequencer>,
    pub supervisor: Arc<Supervisor>,
}

impl Node {
    /// A node in maintenance mode.
    pub fn new(parts: NodeParts) -> Result<Arc<Node>, tls::TlsError> {
        let hostname = parts
            .cmdline
            .hostname()
            .map_or_else(|| parts.default_hostname.clone(), str::to_owned);
        let sans = tls::node_sans(&[], &hostname, &[]);
        let tls = watch::Sender::new(tls::maintenance(&sans, &hostname)?);
        let node = Arc::new(Node {
            cmdline: parts.cmdline,
            kernel_release: parts.kernel_release,
            services: parts.services,
            logs: parts.logs,
            network: parts.network,
            mode: RwLock::new(Mode { config: None }),
            default_hostname: parts.default_hostname,
            store: parts.store,
            apply_lock: tokio::sync::Mutex::new(()),
            tls,
            system: parts.system,
            pending_revert: std::sync::Mutex::new(None),
            os_version: parts.os_version,
            slots: parts.slots,
            boot_kind: parts.boot_kind,
            sequencer: parts.sequencer,
            supervisor: parts.supervisor,
            etcd_bootstrap: watch::Sender::new(stack::etcd_has_data(Path::new(stack::ETCD_DATA))),
            config_changes: watch::Sender::new(0),
        });
        node.set_system_hostname();
        Ok(node)
    }

    /// Changes whenever a new config takes effect.
    pub fn config_changes(&self) -> watch::Receiver<u64> {
        self.config_changes.subscribe()
    }

    fn mode(&self) -> std::sync::RwLockReadGuard<'_, Mode> {
        self.mode.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The node is running: a trial boot of a new slot becomes permanent.
    pub fn on_running(&self) {
        if let (Some(slots), Some(BootKind::Trial)) = (&self.slots, self.boot_kind)
            && let Err(e) = slots.commit()
        {
            tracing::error!("committing slot {}: {e}", slots.booted);
        }
    }

    pub fn is_configured(&self) -> bool {
        self.mode().config.is_some()
    }

    /// The machine config's hostname, else `talos.hostname=`, else one from `ip=` or DHCP,
    /// else one derived from the MAC address.
    pub fn hostname(&self) -> String {
        if let Some(name) = self.mode().config.as_ref().and_then(|(c, _)| c.hostname()) {
            return name.to_owned();
        }
        if let Some(name) = self.cmdline.hostname() {
            return name.to_owned();
        }
        self.network
            .borrow()
            .hostname
            .clone()
            .unwrap_or_else(|| self.default_hostname.clone())
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

    /// The machine config in force, if any.
    pub fn config(&self) -> Option<Arc<Config>> {
        self.mode().config.as_ref().map(|(c, _)| c.clone())
    }

    /// Applies the config's link settings now (a live apply; at boot the network task does it).
    fn apply_network(&self) {
        let Some(config) = self.config() else { return };
        let (links, warnings) = crate::network::plan(&config);
        for w in warnings {
            tracing::warn!("{w}");
        }
        for settings in links {
            if let Err(e) = crate::network::apply_settings(self.system.as_ref(), &settings) {
                tracing::error!("{e}");
            }
        }
    }

    /// NTP servers from the machine config, else from META's platform network config, else
    /// upstream's default.
    pub fn time_servers(&self) -> Vec<String> {
        let configured = self
            .mode()
            .config
            .as_ref()
            .map(|(c, _)| c.time_servers().to_vec())
            .unwrap_or_default();
        if !configured.is_empty() {
            return configured;
        }
        let from_platform = self.network.borrow().time_servers.clone();
        if from_platform.is_empty() {
            vec![crate::timesync::DEFAULT_SERVER.to_owned()]
        } else {
            from_platform
        }
    }

    /// Applies [`Node::hostname`] to the kernel, and writes `/etc/hosts` and
    /// `/etc/resolv.conf` for it, the addresses and the nameservers: the config's, else
    /// DHCP's, else upstream's defaults.
    pub fn set_system_hostname(&self) {
        let name = self.hostname();
        if let Err(e) = self.system.set_hostname(&name) {
            tracing::warn!("{e}");
        }
        let config = self.config();
        let mut nameservers: Vec<IpAddr> = config
            .as_ref()
            .map(|c| {
                c.nameservers()
                    .iter()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        if nameservers.is_empty() {
            nameservers = self
                .network
                .borrow()
                .dns
                .iter()
                .copied()
                .map(IpAddr::V4)
                .collect();
        }
        if nameservers.is_empty() {
            nameservers = network::DEFAULT_NAMESERVERS.to_vec();
        }
        let extra = config
            .as_ref()
            .map(|c| c.host_entries())
            .transpose()
            .unwrap_or_else(|e| {
                tracing::warn!("{e}");
                None
            })
            .unwrap_or_default();
        let addresses: Vec<IpAddr> = self.addresses();
        let hosts = network::hosts_file(&name, &addresses, &extra);
        if let Err(e) = self
            .system
            .write_name_files(&hosts, &network::resolv_conf(&nameservers))
        {
            tracing::warn!("{e}");
        }
    }

    /// Issues a new API certificate for the current mode, names, addresses and clock.
    pub fn reissue_api_certificate(&self) {
        let config = self.mode().config.as_ref().map(|(c, _)| c.clone());
        match self.tls_for(config.as_deref()) {
            Ok(tls) => {
                self.tls.send_replace(tls);
            }
            Err(e) => tracing::error!("reissuing the API certificate: {e}"),
        }
    }

    /// Reissues the API certificate whenever the node's addresses or hostname change, and
    /// [`tls::SERVER_CERT_RENEWAL`] after it was last issued, so it never expires.
    pub async fn keep_api_certificate(
        self: Arc<Self>,
        mut network: watch::Receiver<NetworkStatus>,
    ) {
        loop {
            tokio::select! {
                changed = network.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    self.set_system_hostname();
                }
                () = tokio::time::sleep(tls::SERVER_CERT_RENEWAL) => {}
            }
            self.reissue_api_certificate();
        }
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

    /// Parses, validates and, unless `dry_run`, stores and applies a machine config. `try_for`
    /// is the try-mode timeout.
    pub async fn apply(
        self: &Arc<Self>,
        data: &[u8],
        requested: ApplyMode,
        dry_run: bool,
        try_for: Duration,
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
        let firmware = self.firmware();
        let overlays = match &firmware {
            None if config.board_config().is_some() => {
                return Err(ApplyError::Invalid(FirmwareError::Unsupported.to_string()));
            }
            None => None,
            Some(firmware) => {
                let wanted = firmware.wanted(&config);
                firmware
                    .check(&wanted)
                    .map_err(|e| ApplyError::Invalid(error_chain(&e)))?;
                Some(wanted)
            }
        };
        let configured = self.is_configured();
        let mode = match (configured, requested) {
            (false, ApplyMode::Try) => {
                return Err(ApplyError::NotAllowed(
                    "try mode needs a configured node to fall back to; apply without --mode try in maintenance mode".into(),
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
        let confirmed_try = self.cancel_pending_revert();
        if mode == ApplyMode::Try {
            let mut warnings = warnings;
            if config.board_config().is_some() {
                warnings.push("BoardConfig is not tried: config.txt changes only when a config is applied without --mode try".into());
            }
            let previous = self.mode().config.clone();
            self.switch_to(Arc::new(config), data.to_vec(), tls);
            self.apply_network();
            self.arm_revert(previous, try_for);
            return Ok(Applied {
                mode,
                details: format!(
                    "Applied configuration in try mode: it reverts in {try_for:?} unless applied again"
                ),
                warnings,
            });
        }
        let mut warnings = warnings;
        if confirmed_try {
            warnings.push("this apply replaces the configuration that was on trial".into());
        }
        match &self.store {
            Some(store) => store.save(data).map_err(|source| ApplyError::Store {
                path: store.path().display().to_string(),
                source,
            })?,
            None => warnings.push("this node has no STATE partition: the config is kept in memory only and is lost on reboot".into()),
        }
        let firmware_note = match (&firmware, &overlays) {
            (Some(firmware), Some(overlays)) => match firmware.apply(overlays) {
                Ok(true) => format!(
                    "; device-tree overlays are now [{}], from the next boot",
                    overlays.join(", ")
                ),
                Ok(false) => String::new(),
                Err(e) => {
                    warnings.push(format!(
                        "the device-tree overlays were not changed: {}",
                        error_chain(&e)
                    ));
                    String::new()
                }
            },
            _ => String::new(),
        };
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
                self.apply_network();
                "Applied configuration without a reboot".to_owned()
            }
        };
        Ok(Applied {
            mode,
            details: details + &firmware_note,
            warnings,
        })
    }

    /// The boot partition's firmware settings, on boards whose firmware applies overlays.
    fn firmware(&self) -> Option<Firmware> {
        let slots = self.slots.as_ref()?;
        Firmware::open(slots.root(), Path::new(DEFAULT_OVERLAYS))
    }

    fn cancel_pending_revert(&self) -> bool {
        let pending = self
            .pending_revert
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        pending.map(|task| task.abort()).is_some()
    }

    fn arm_revert(self: &Arc<Self>, previous: Option<(Arc<Config>, Vec<u8>)>, after: Duration) {
        let node = Arc::downgrade(self);
        let task = tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let Some(node) = node.upgrade() else { return };
            let Some((config, raw)) = previous else {
                return;
            };
            match node.tls_for(Some(&config)) {
                Ok(tls) => {
                    node.switch_to(config, raw, tls);
                    node.apply_network();
                    tracing::warn!(
                        "try mode: the trial configuration was not confirmed within {after:?}; reverted"
                    );
                }
                Err(e) => tracing::error!("try mode: reverting failed: {}", error_chain(&e)),
            }
            node.pending_revert
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
        });
        *self
            .pending_revert
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(task);
    }

    /// Forgets the stored config (the STATE label of a Reset); the next boot is in maintenance
    /// mode.
    pub fn wipe_state(&self) -> Result<(), ApplyError> {
        match &self.store {
            Some(store) => store.wipe().map_err(|source| ApplyError::Store {
                path: store.path().display().to_string(),
                source,
            }),
            None => Ok(()),
        }
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
        if let Some(firmware) = self.firmware() {
            let overlays = firmware.wanted(&config);
            match firmware.apply(&overlays) {
                Ok(true) => tracing::warn!(
                    "device-tree overlays are now [{}]: they take effect at the next boot",
                    overlays.join(", ")
                ),
                Ok(false) => {}
                Err(e) => tracing::error!("device-tree overlays: {}", error_chain(&e)),
            }
        }
        self.switch_to(Arc::new(config), data.to_vec(), tls);
        tracing::info!(source, "configured");
        Ok(())
    }

    /// Persists a config that arrived from a boot-time source, then adopts it.
    /// Adopts and stores the config `param` carries on `cmdline`; true when it did.
    pub fn adopt_inline(&self, cmdline: &Cmdline, param: InlineConfig) -> bool {
        let Some(encoded) = cmdline.inline_config(param) else {
            return false;
        };
        let adopted = config_fetch::decode_inline(param.param(), &encoded)
            .map_err(|e| error_chain(&e))
            .and_then(|data| {
                self.adopt_and_store(&data, param.param())
                    .map_err(|e| e.to_string())
            });
        match adopted {
            Ok(()) => true,
            Err(e) => {
                tracing::error!("{e}; staying in maintenance mode");
                false
            }
        }
    }

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
            mode.config = Some((config, raw));
        }
        self.set_system_hostname();
        self.tls.send_replace(tls);
        self.config_changes
            .send_modify(|generation| *generation += 1);
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
                // Clean filesystems for the next boot; a busy one is only synced.
                for target in [
                    crate::system_disk::EPHEMERAL_MOUNT,
                    crate::storage::STATE_MOUNT,
                ] {
                    if let Err(e) = system.unmount(Path::new(target)) {
                        tracing::debug!("{e}");
                    }
                }
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

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
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

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use talos_machinery::config::{GenerateInput, generate};
    use talos_machinery::secrets::SecretsBundle;
    use talos_node_sys::fake::FakeSystem;

    use super::*;

    fn node(store: &std::path::Path) -> Arc<Node> {
        node_on(store, Arc::new(FakeSystem::default()))
    }

    fn node_on(store: &std::path::Path, system: Arc<FakeSystem>) -> Arc<Node> {
        Node::new(NodeParts {
            cmdline: Cmdline::parse("talos.hostname=test-node"),
            kernel_release: "6.1.0-test".into(),
            services: ServiceRegistry::default(),
            logs: LogRing::new(1024),
            network: watch::channel(NetworkStatus::default()).1,
            store: Some(ConfigStore::new(store)),
            system,
            default_hostname: "talos-000000".into(),
            os_version: "v0.0.0-test".into(),
            slots: None,
            boot_kind: None,
            supervisor: Arc::new(Supervisor::new(
                ServiceRegistry::default(),
                Arc::new(crate::reaper::Reaper::new(false)),
                crate::supervisor::cgroups::Cgroups::new(store.join("cgroup")),
            )),
            sequencer: Arc::new(Sequencer::new(Default::default())),
        })
        .unwrap()
    }

    fn config(name: &str) -> Vec<u8> {
        let secrets = SecretsBundle::generate(SystemTime::now()).unwrap();
        generate(&GenerateInput::new(
            name,
            "https://10.0.2.15:6443",
            secrets,
            SystemTime::now(),
        ))
        .unwrap()
        .controlplane
        .into_bytes()
    }

    fn current(node: &Node) -> Option<Vec<u8>> {
        node.mode().config.as_ref().map(|(_, raw)| raw.clone())
    }

    const TRY: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn maintenance_apply_stores_and_configures() {
        let dir = tempfile::tempdir().unwrap();
        let n = node(dir.path());
        assert_eq!(n.hostname(), "test-node");
        let first = config("one");
        let applied = n.apply(&first, ApplyMode::Auto, false, TRY).await.unwrap();
        assert_eq!(applied.mode, ApplyMode::NoReboot);
        assert_eq!(current(&n), Some(first.clone()));
        assert_eq!(ConfigStore::new(dir.path()).load().unwrap(), Some(first));
    }

    #[tokio::test(start_paused = true)]
    async fn the_api_certificate_is_reissued_before_it_expires_and_on_address_changes() {
        let dir = tempfile::tempdir().unwrap();
        let n = node(dir.path());
        let mut tls = n.tls.subscribe();
        let (network, status) = watch::channel(NetworkStatus::default());
        tokio::spawn(n.clone().keep_api_certificate(status));

        tokio::time::sleep(tls::SERVER_CERT_RENEWAL - Duration::from_secs(1)).await;
        assert!(!tls.has_changed().unwrap(), "reissued early");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            tls.has_changed().unwrap(),
            "not reissued after {:?}",
            tls::SERVER_CERT_RENEWAL
        );
        tls.mark_unchanged();

        network.send_modify(|s| s.addresses.push([10, 0, 2, 15].into()));
        tokio::task::yield_now().await;
        tokio::time::timeout(Duration::from_secs(1), tls.changed())
            .await
            .expect("not reissued when the address changed")
            .unwrap();
    }

    /// Reset returns as soon as it holds the node; a failure later is told by its events.
    #[tokio::test]
    async fn a_started_reset_holds_the_node_and_reports_its_failure_as_an_event() {
        use prost::Message;
        use talos_proto::machine::{EventsRequest, SequenceEvent, sequence_event};

        use crate::actions;
        use crate::sequencer::Sequence;

        let dir = tempfile::tempdir().unwrap();
        let n = node(dir.path());
        let (_, mut events) = n.sequencer.bus().tail(&EventsRequest::default());
        // Leaving etcd fails at once: this node has no config, so no etcd CA.
        let graceful = Sequence::reset(true, true, true);
        actions::start(&n, graceful, "reset-actor", actions::Request::default()).unwrap();
        let busy =
            actions::start(&n, Sequence::Reboot, "reboot-actor", Default::default()).unwrap_err();
        assert_eq!(busy.code(), tonic::Code::FailedPrecondition, "{busy:?}");
        let stop = loop {
            let recorded = events.recv().await.unwrap();
            let data = recorded.event.data.unwrap();
            if data.type_url.ends_with("machine.SequenceEvent")
                && let Ok(e) = SequenceEvent::decode(&data.value[..])
                && e.action == sequence_event::Action::Stop as i32
            {
                assert_eq!(recorded.event.actor_id, "reset-actor");
                break e;
            }
        };
        let error = stop
            .error
            .expect("the failure is in the stop event")
            .message;
        assert!(error.contains("LeaveEtcd"), "{error}");
        // Once failed, the reset no longer holds the node.
        actions::start(&n, Sequence::Shutdown, "shutdown-actor", Default::default()).unwrap();
    }

    #[tokio::test]
    async fn a_config_on_the_command_line_is_adopted_and_stored() {
        use base64::Engine;
        let dir = tempfile::tempdir().unwrap();
        let n = node(dir.path());
        let config = config("inline");
        let compressed = ruzstd::encoding::compress_to_vec(
            config.as_slice(),
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        let encoded = base64::engine::general_purpose::STANDARD.encode(compressed);
        let (first, second) = encoded.split_at(encoded.len() / 2);
        let cmdline = Cmdline::parse(&format!(
            "talos.config.inline={first} quiet talos.config.inline={second}"
        ));
        assert!(!n.adopt_inline(&cmdline, InlineConfig::Early), "not given");
        assert!(!n.adopt_inline(
            &Cmdline::parse("talos.config.inline=AAAA"),
            InlineConfig::Inline
        ));
        assert!(!n.is_configured());
        assert!(n.adopt_inline(&cmdline, InlineConfig::Inline));
        assert_eq!(current(&n), Some(config.clone()));
        assert_eq!(ConfigStore::new(dir.path()).load().unwrap(), Some(config));
    }

    #[tokio::test]
    async fn name_files_follow_the_config() {
        use talos_node_sys::fake::Call;
        let dir = tempfile::tempdir().unwrap();
        let system = Arc::new(FakeSystem::default());
        let n = node_on(dir.path(), system.clone());
        let name_files = || {
            system
                .calls()
                .into_iter()
                .rev()
                .find_map(|call| match call {
                    Call::NameFiles { hosts, resolv_conf } => Some((hosts, resolv_conf)),
                    _ => None,
                })
        };
        let (hosts, resolv_conf) = name_files().expect("written at start");
        assert_eq!(resolv_conf, "nameserver 1.1.1.1\nnameserver 8.8.8.8\n");
        assert!(hosts.starts_with("127.0.0.1 localhost\n"), "{hosts}");

        let config = String::from_utf8(config("names")).unwrap().replacen(
            "\n  network: {}\n",
            "\n  network:\n    nameservers: [10.0.0.53]\n    extraHostEntries:\n      - ip: 10.0.0.9\n        aliases: [registry.lab, mirror]\n",
            1,
        ) + "---\napiVersion: v1alpha1\nkind: StaticHostConfig\nname: 10.0.0.10\nhostnames: [cache.lab]\n";
        n.apply(config.as_bytes(), ApplyMode::Auto, false, TRY)
            .await
            .unwrap();
        let (hosts, resolv_conf) = name_files().unwrap();
        assert_eq!(resolv_conf, "nameserver 10.0.0.53\n");
        assert_eq!(
            hosts,
            "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n10.0.0.9 registry.lab mirror\n10.0.0.10 cache.lab\n"
        );
    }

    #[tokio::test]
    async fn board_config_needs_firmware_that_applies_overlays() {
        let dir = tempfile::tempdir().unwrap();
        let n = node(dir.path());
        let mut data = config("pi");
        data.extend_from_slice(
            b"---\napiVersion: v1alpha1\nkind: BoardConfig\noverlays: [i2c1-enable]\n",
        );
        let err = n
            .apply(&data, ApplyMode::Auto, false, TRY)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "BoardConfig: this board's firmware applies no device-tree overlays"
        );
        assert_eq!(ConfigStore::new(dir.path()).load().unwrap(), None);
    }

    #[tokio::test]
    async fn invalid_configs_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let n = node(dir.path());
        let err = n
            .apply(
                b"version: v1alpha1\nmachine: {type: nope}\n",
                ApplyMode::Auto,
                false,
                TRY,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, ApplyError::Invalid(_)), "{err:?}");
        assert!(!n.is_configured());
        assert_eq!(ConfigStore::new(dir.path()).load().unwrap(), None);
        assert!(matches!(
            n.apply(&config("x"), ApplyMode::Try, false, TRY).await,
            Err(ApplyError::NotAllowed(_))
        ));
    }

    #[tokio::test]
    async fn dry_run_reports_a_diff_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let n = node(dir.path());
        let applied = n
            .apply(&config("dry"), ApplyMode::Auto, true, TRY)
            .await
            .unwrap();
        assert!(
            applied.details.contains("+version: v1alpha1"),
            "{}",
            applied.details
        );
        assert!(!n.is_configured());
    }

    #[tokio::test]
    async fn staged_configs_are_stored_but_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        let n = node(dir.path());
        let first = config("one");
        n.apply(&first, ApplyMode::Auto, false, TRY).await.unwrap();
        let second = config("two");
        let applied = n
            .apply(&second, ApplyMode::Staged, false, TRY)
            .await
            .unwrap();
        assert_eq!(applied.mode, ApplyMode::Staged);
        assert_eq!(current(&n), Some(first));
        assert_eq!(ConfigStore::new(dir.path()).load().unwrap(), Some(second));
    }

    #[tokio::test]
    async fn try_mode_reverts_unless_confirmed() {
        let dir = tempfile::tempdir().unwrap();
        let n = node(dir.path());
        let first = config("one");
        n.apply(&first, ApplyMode::Auto, false, TRY).await.unwrap();
        let trial = config("trial");
        n.apply(&trial, ApplyMode::Try, false, TRY).await.unwrap();
        assert_eq!(current(&n), Some(trial.clone()));
        assert_eq!(
            ConfigStore::new(dir.path()).load().unwrap(),
            Some(first.clone()),
            "a trial is never stored"
        );
        tokio::time::sleep(TRY * 3).await;
        assert_eq!(
            current(&n),
            Some(first.clone()),
            "reverted after the timeout"
        );

        n.apply(&trial, ApplyMode::Try, false, TRY).await.unwrap();
        n.apply(&trial, ApplyMode::NoReboot, false, TRY)
            .await
            .unwrap();
        tokio::time::sleep(TRY * 3).await;
        assert_eq!(current(&n), Some(trial.clone()), "a second apply confirms");
        assert_eq!(ConfigStore::new(dir.path()).load().unwrap(), Some(trial));
    }

    #[test]
    fn local_targets() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let dir = tempfile::tempdir().unwrap();
        let n = node(dir.path());
        for t in [
            "127.0.0.1",
            "127.0.0.1:50000",
            "localhost",
            "test-node",
            "[::1]:50000",
            "::1",
        ] {
            assert!(n.is_local_target(t), "{t}");
        }
        for t in ["10.0.2.16", "other-node", "10.0.2.16:50000"] {
            assert!(!n.is_local_target(t), "{t}");
        }
    }
}
