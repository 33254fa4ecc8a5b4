//! machined: PID 1 of a talos-rs node.
//!
//! Boot: mount the pseudo-filesystems, log to the console and a ring buffer, read the kernel
//! command line, load the initramfs's kernel modules, mount STATE if there is one, bring up the
//! network, then serve the Talos API on :50000: in maintenance mode until a config arrives
//! (stored, `talos.config=`, or ApplyConfiguration), with mutual TLS after.

mod actions;
mod api;
mod archive;
mod boot;
mod cmdline;
mod config_fetch;
mod dhcp;
mod diff;
mod dns;
mod early;
mod etcd_member;
mod events;
mod files;
mod firmware;
mod install;
mod io_error;
mod kmsg;
mod logging;
mod modalias;
mod modules;
mod network;
mod node;
mod power;
mod reaper;
mod rootfs;
mod sequencer;
mod services;
mod storage;
mod supervisor;
mod sysctl;
mod sysinfo;
mod system_disk;
mod timesync;
mod upgrade;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use talos_disk::slots::BootKind;
use talos_machinery::platform_network::PlatformNetworkConfig;
use talos_node_sys::fs::Linux;
use tokio::sync::watch;

use crate::cmdline::{Cmdline, InlineConfig};
use crate::config_fetch::UrlVariables;
use crate::logging::LogRing;
use crate::network::NetworkStatus;
use crate::node::{Node, NodeParts};
use crate::reaper::Reaper;
use crate::sequencer::{Sequence, Sequencer, Task, Tasks};
use crate::services::{ServiceRegistry, ServiceState};
use crate::storage::ConfigStore;
use crate::supervisor::Supervisor;
use crate::supervisor::cgroups::Cgroups;

/// The list of modules to load at boot, written into the initramfs by the image builder.
const MODULE_LIST: &str = "/etc/talos/modules";
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

fn main() {
    std::panic::set_hook(Box::new(|info| {
        let message = format!("machined panicked: {info}");
        if let Ok(mut console) = std::fs::OpenOptions::new().write(true).open("/dev/console") {
            let _ = writeln!(console, "{message}");
        }
        power::fatal(&Linux, &message);
    }));
    if !talos_node_sys::process::is_pid1() {
        eprintln!(
            "machined is the init process of a talos-rs node and must run as PID 1; it was started as PID {}",
            std::process::id()
        );
        std::process::exit(2);
    }
    match boot() {
        Ok(()) => power::fatal(&Linux, "the API server stopped"),
        Err(e) => power::fatal(&Linux, &format!("{e:#}")),
    }
}

fn boot() -> anyhow::Result<()> {
    early::mount_pseudo_filesystems(&Linux).context("mounting pseudo-filesystems")?;
    if let Err(e) = talos_node_sys::process::attach_console() {
        eprintln!("{e}");
    }
    let ring = LogRing::new(logging::RING_CAPACITY);
    logging::init(ring.clone());
    tracing::info!("machined v{} starting", env!("CARGO_PKG_VERSION"));

    let cmdline =
        Cmdline::parse(&std::fs::read_to_string("/proc/cmdline").context("reading /proc/cmdline")?);
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .context("reading the kernel release")?
        .trim()
        .to_owned();
    tracing::info!(
        kernel = release,
        "kernel command line: {:?}",
        std::fs::read_to_string("/proc/cmdline")
            .unwrap_or_default()
            .trim()
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let reaper = Arc::new(Reaper::new(true));
        tokio::spawn(reaper.clone().run());
        let sequencer = Arc::new(Sequencer::new(Default::default()));
        let mut tasks = BootTasks::new(cmdline, release, ring, sequencer.clone(), reaper);
        sequencer.run(Sequence::Boot, "", &mut tasks).await?;
        match tasks.api.take() {
            Some(api) => api.await.context("the API server task")?,
            None => anyhow::bail!("the boot sequence did not start the API"),
        }
        Ok(())
    })
}

/// How long a new slot may take to come up before the node reboots into the old one.
const TRIAL_TIMEOUT: Duration = Duration::from_secs(300);

/// The A/B slots the node booted from, and what kind of boot this is.
struct BootState {
    slots: Option<Arc<boot::BootSlots>>,
    boot_kind: Option<BootKind>,
}

fn open_slots(
    cmdline: &Cmdline,
    disk: Option<boot::SystemDisk>,
) -> (Option<Arc<boot::BootSlots>>, Option<BootKind>) {
    let slots = match boot::BootSlots::open(&Linux, cmdline, disk) {
        Ok(Some(slots)) => Arc::new(slots),
        Ok(None) => return (None, None),
        Err(e) => {
            tracing::error!("A/B slots unavailable (upgrades are disabled): {e}");
            return (None, None);
        }
    };
    let kind = match slots.on_boot() {
        Ok(kind) => kind,
        Err(e) => {
            tracing::error!("reading the boot state: {e}");
            return (Some(slots), None);
        }
    };
    tracing::info!(
        disk = %slots.disk.disk.display(),
        "booted from slot {} ({kind:?})",
        slots.booted
    );
    if kind == BootKind::Trial {
        let watched = slots.clone();
        std::thread::spawn(move || {
            std::thread::sleep(TRIAL_TIMEOUT);
            if watched.on_boot().is_ok_and(|k| k == BootKind::Trial) {
                power::fatal(
                    &Linux,
                    &format!(
                        "slot {} did not come up within {TRIAL_TIMEOUT:?}",
                        watched.booted
                    ),
                );
            }
        });
    }
    (Some(slots), Some(kind))
}

/// The version of the image, as the image builder wrote it.
fn os_version() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("VERSION="))
                .map(|v| v.trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| concat!("v", env!("CARGO_PKG_VERSION")).to_owned())
}

/// The board's kernel parameters, once the modules that own some of them are loaded.
fn apply_sysctls() {
    let Ok(text) = std::fs::read_to_string(sysctl::SYSCTL_FILE) else {
        return;
    };
    match sysctl::parse(&text) {
        Ok(settings) => {
            for failure in sysctl::apply(Path::new("/proc/sys"), &settings) {
                tracing::warn!("sysctl not set: {failure}");
            }
            tracing::info!("applied {} kernel parameters", settings.len());
        }
        Err(e) => tracing::error!("{e}"),
    }
}

fn mount_state() -> Option<ConfigStore> {
    let device = storage::find_state_device().or_else(|| {
        std::thread::sleep(Duration::from_millis(500));
        storage::find_state_device()
    });
    let Some(device) = device else {
        tracing::warn!(
            "no {} filesystem found: the config will not survive a reboot",
            storage::STATE_LABEL
        );
        return None;
    };
    match storage::mount_state(&Linux, &device) {
        Ok(()) => {
            tracing::info!(device = %device.display(), "mounted {} at {}", storage::STATE_LABEL, storage::STATE_MOUNT);
            Some(ConfigStore::new(storage::STATE_MOUNT))
        }
        Err(e) => {
            tracing::error!("{e}");
            None
        }
    }
}

/// Fetches the config from `template` (with its `${...}` variables filled in afresh on each
/// attempt: the hostname and links may change) until one is adopted.
async fn fetch_config(node: Arc<Node>, template: String) {
    // https:// servers are checked against Mozilla's roots, built into machined.
    let tls = match talos_oci::client_config(&talos_oci::RegistryTls::default()) {
        Ok(tls) => tls,
        Err(e) => {
            tracing::error!("talos.config: {e}");
            return;
        }
    };
    let mut backoff = Duration::from_secs(1);
    while !node.is_configured() {
        let code = node
            .slots
            .as_ref()
            .and_then(|s| s.meta_text(talos_disk::adv::tag::DOWNLOAD_URL_CODE));
        let variables = UrlVariables::read(Path::new("/sys"), node.hostname(), code);
        let attempt = match config_fetch::expand(&template, &variables) {
            Ok(url) => match config_fetch::fetch(&url, &tls).await {
                Ok(data) => node
                    .adopt_and_store(&data, &format!("talos.config={url}"))
                    .map_err(|e| e.to_string()),
                Err(e) => Err(crate::node::error_chain(&e)),
            },
            Err(e) => Err(crate::node::error_chain(&e)),
        };
        match attempt {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!("{e}; retrying in {backoff:?} (maintenance mode stays up)");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// What the boot sequence's tasks build up, in table order (`sequencer::Sequence::Boot`).
struct BootTasks {
    cmdline: Cmdline,
    release: String,
    ring: LogRing,
    sequencer: Arc<Sequencer>,
    reaper: Arc<Reaper>,
    store: Option<ConfigStore>,
    state_mounted: bool,
    /// The disk the node booted a slot from, looked up once for the tasks that need it.
    system_disk: std::cell::OnceCell<Option<boot::SystemDisk>>,
    /// EPHEMERAL's device, when the system disk has one.
    ephemeral: Option<std::path::PathBuf>,
    boot: BootState,
    static_ip: Option<cmdline::StaticIp>,
    status: (watch::Sender<NetworkStatus>, watch::Receiver<NetworkStatus>),
    node: Option<Arc<Node>>,
    api: Option<tokio::task::JoinHandle<()>>,
}

impl BootTasks {
    fn new(
        cmdline: Cmdline,
        release: String,
        ring: LogRing,
        sequencer: Arc<Sequencer>,
        reaper: Arc<Reaper>,
    ) -> Self {
        let static_ip = cmdline.static_ip().unwrap_or_else(|e| {
            tracing::error!("{e}; falling back to DHCP");
            None
        });
        BootTasks {
            cmdline,
            release,
            ring,
            sequencer,
            reaper,
            store: None,
            state_mounted: false,
            system_disk: std::cell::OnceCell::new(),
            ephemeral: None,
            boot: BootState {
                slots: None,
                boot_kind: None,
            },
            static_ip,
            status: watch::channel(NetworkStatus::default()),
            node: None,
            api: None,
        }
    }

    fn system_disk(&self) -> Option<&boot::SystemDisk> {
        self.system_disk
            .get_or_init(|| boot::wait_for_system_disk(&self.cmdline))
            .as_ref()
    }

    fn node(&self) -> Result<Arc<Node>, String> {
        self.node
            .clone()
            .ok_or_else(|| "the config phase has not run".to_owned())
    }

    /// META's platform network config (key 0x0a), planned; nothing when absent or malformed.
    fn platform_network(&self) -> network::PlatformPlan {
        let Some(text) = self
            .boot
            .slots
            .as_ref()
            .and_then(|s| s.meta_text(talos_disk::adv::tag::METAL_NETWORK_CONFIG))
        else {
            return network::PlatformPlan::default();
        };
        match PlatformNetworkConfig::from_yaml(&text) {
            Ok(platform) => {
                let (plan, warnings) = network::platform_plan(&platform);
                for w in warnings {
                    tracing::warn!("{w}");
                }
                tracing::info!(
                    links = plan.links.len(),
                    hostname = plan.hostname.as_deref().unwrap_or(""),
                    "using the platform network config in META 0x0a"
                );
                plan
            }
            Err(e) => {
                tracing::error!("META 0x0a is not a platform network config, ignored: {e}");
                network::PlatformPlan::default()
            }
        }
    }
}

impl Tasks for BootTasks {
    async fn run(&mut self, task: Task) -> Result<(), String> {
        match task {
            Task::LoadModules => {
                let report = modules::load_from_initramfs(
                    &Linux,
                    &Path::new("/lib/modules").join(&self.release),
                    Path::new(MODULE_LIST),
                );
                tracing::info!("loaded kernel modules: {}", report.loaded.join(" "));
                for (module, error) in &report.failed {
                    tracing::warn!(module, "module not loaded: {error}");
                }
                modalias::coldplug_and_watch(&Path::new("/lib/modules").join(&self.release));
                apply_sysctls();
            }
            Task::CreateSystemPartitions => {
                self.ephemeral = system_disk::on_boot(self.system_disk(), &self.reaper).await
            }
            Task::MountEphemeral => system_disk::mount_on_boot(self.ephemeral.as_deref()),
            Task::MountRootfs => rootfs::mount_at_boot(&Linux, &Linux),
            Task::MountState => {
                self.store = mount_state();
                self.state_mounted = self.store.is_some();
            }
            Task::OpenBootSlots => {
                let (slots, boot_kind) = open_slots(&self.cmdline, self.system_disk().cloned());
                self.boot = BootState { slots, boot_kind };
            }
            Task::ApplyTimeFloor => {
                let floor = timesync::floor(
                    option_env!("TALOS_BUILD_EPOCH").and_then(|e| e.parse().ok()),
                    std::fs::read_to_string(
                        Path::new(storage::STATE_MOUNT).join(timesync::FLOOR_FILE),
                    )
                    .ok()
                    .as_deref(),
                );
                match timesync::apply_floor(&Linux, floor) {
                    Ok(Some(t)) => tracing::warn!(
                        "the clock was behind the last known time; moved it forward to {}",
                        kmsg::rfc3339(t)
                    ),
                    Ok(None) => {}
                    Err(e) => tracing::error!("applying the time floor: {e}"),
                }
            }
            Task::LoadConfig => self.load_config()?,
            Task::StartNetwork => {
                let node = self.node()?;
                let configured_links = node.config().map(|c| {
                    let (links, warnings) = network::plan(&c);
                    for w in warnings {
                        tracing::warn!("{w}");
                    }
                    links
                });
                let platform = self.platform_network();
                tokio::spawn(network::run(
                    Arc::new(Linux),
                    self.static_ip.clone(),
                    configured_links.unwrap_or_default(),
                    platform,
                    self.status.0.clone(),
                    node.services.clone(),
                ));
            }
            Task::WaitForAddress => self.wait_for_address().await?,
            Task::StartTimeSync => {
                let node = self.node()?;
                let time_node = node.clone();
                tokio::spawn(timesync::run(
                    Arc::new(Linux),
                    move || time_node.time_servers(),
                    self.state_mounted
                        .then(|| std::path::PathBuf::from(storage::STATE_MOUNT)),
                    node.services.clone(),
                    move || node.reissue_api_certificate(),
                ));
            }
            Task::FetchConfig => {
                let node = self.node()?;
                match (node.is_configured(), self.cmdline.config_url()) {
                    (false, Some(url)) => {
                        tracing::info!(url, "fetching the machine config");
                        tokio::spawn(fetch_config(node, url.to_owned()));
                    }
                    (false, None) => {
                        if !node.adopt_inline(&self.cmdline, InlineConfig::Inline) {
                            tracing::info!(
                                "no machine config: maintenance mode, waiting for ApplyConfiguration"
                            );
                        }
                    }
                    (true, _) => {}
                }
            }
            Task::StartInstaller => {
                tokio::spawn(install_when_configured(self.node()?));
            }
            Task::StartApi => self.api = Some(tokio::spawn(api::serve(self.node()?))),
            Task::StartServices => {
                tokio::spawn(supervisor::run(self.node()?));
            }
            other => return Err(format!("{other:?} is not a boot task")),
        }
        Ok(())
    }
}

impl BootTasks {
    fn load_config(&mut self) -> Result<(), String> {
        let services = ServiceRegistry::new(Some(self.sequencer.bus().clone()));
        services.set("machined", ServiceState::Running, "PID 1");
        let supervisor = Arc::new(Supervisor::new(
            services.clone(),
            self.reaper.clone(),
            Cgroups::new(CGROUP_ROOT),
        ));
        let link = self
            .static_ip
            .as_ref()
            .and_then(|s| s.device.clone())
            .or_else(|| network::first_nic(Path::new("/sys/class/net")));
        let mac = link
            .as_deref()
            .and_then(|l| network::mac_address(Path::new("/sys/class/net"), l));
        let store = self.store.take();
        let stored = store.as_ref().and_then(|s| match s.load() {
            Ok(data) => data,
            Err(e) => {
                tracing::error!("reading {}: {e}", s.path().display());
                None
            }
        });
        let node = Node::new(NodeParts {
            cmdline: self.cmdline.clone(),
            kernel_release: self.release.clone(),
            services,
            logs: self.ring.clone(),
            network: self.status.1.clone(),
            store,
            system: Arc::new(Linux),
            default_hostname: network::default_hostname(mac),
            os_version: os_version(),
            slots: self.boot.slots.clone(),
            boot_kind: self.boot.boot_kind,
            sequencer: self.sequencer.clone(),
            supervisor,
        })
        .map_err(|e| format!("building the maintenance-mode certificate: {e}"))?;
        if let Some(data) = stored
            && let Err(e) = node.adopt(&data, "the STATE partition")
        {
            tracing::error!("{e}; staying in maintenance mode");
        }
        if !node.is_configured() {
            node.adopt_inline(&self.cmdline, InlineConfig::Early);
        }
        self.node = Some(node);
        Ok(())
    }

    async fn wait_for_address(&mut self) -> Result<(), String> {
        let node = self.node()?;
        let mut status_rx = self.status.1.clone();
        let got_address = tokio::time::timeout(
            Duration::from_secs(20),
            status_rx.wait_for(|s| !s.addresses.is_empty()),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        if !got_address {
            tracing::warn!("no address after 20 s; serving the API anyway");
        }
        // The status seen here is not a change to the watcher below: name the node for it now.
        node.set_system_hostname();
        node.reissue_api_certificate();
        tokio::spawn(node.keep_api_certificate(status_rx));
        Ok(())
    }
}

/// Once the node has a config naming an install disk (`machine.install.disk`, or a
/// `UnattendedInstallConfig` selecting one by path), installs the running system
/// there (when the node booted from another disk) and reboots into it.
async fn install_when_configured(node: Arc<Node>) {
    let Some(system) = node.slots.as_ref().map(|s| s.disk.clone()) else {
        return;
    };
    let target = loop {
        if let Some(config) = node.config() {
            match config.install_disk() {
                Ok(Some(disk)) => break disk,
                Ok(None) => return,
                Err(e) => {
                    tracing::error!("{e}; not installing");
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let state = storage::find_state_device().map(|device| install::LiveState {
        device,
        mount_point: storage::STATE_MOUNT.into(),
    });
    let seed = format!(
        "talos-installed/{target}/{:?}",
        std::time::SystemTime::now()
    );
    let target_path = std::path::PathBuf::from(&target);
    let outcome = tokio::task::spawn_blocking(move || {
        install::install(&Linux, &system, &target_path, state.as_ref(), &seed)
    })
    .await;
    match outcome {
        Ok(Ok(install::Outcome::Installed)) => {
            tracing::info!(
                "installed to {target}; rebooting (remove the installation media to boot from it)"
            );
            node.schedule_power(talos_node_sys::power::RebootAction::Restart);
        }
        Ok(Ok(outcome)) => {
            tracing::info!("machine.install.disk {target}: {outcome:?}, nothing to install")
        }
        Ok(Err(e)) => tracing::error!("installing to {target}: {e}"),
        Err(e) => tracing::error!("the installer stopped: {e}"),
    }
}
