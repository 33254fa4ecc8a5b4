//! The board state machine (labgrid's strategy):
//! off → flashed → powered → bootloader → kernel → maintenance → configured → ready.
//!
//! [`Strategy::transition`] walks forward one state at a time; each step is idempotent (a
//! state already reached is not redone), bounded by a timeout, timed, and leaves evidence:
//! console lines and API answers. Going back to an earlier state powers the board off and walks
//! forward again. A step that fails reports the last [`TAIL_LINES`] console lines.

use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use talos_client::{Endpoint, TlsMode};
use talos_images::flash::FlashProgress;

use crate::api::{ApiError, NodeApi};
use crate::console::{Console, ConsoleLine, Expect, PANIC_MARKERS, TAIL_LINES, tail};
use crate::power::PowerSwitch;
use crate::rig::Bootloader;
use crate::storage::Storage;

/// The node's API port.
pub const API_PORT: u16 = 50000;
/// How long a configured node may take to answer over mutual TLS after ApplyConfiguration.
const CONFIGURE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long each mode is tried in turn when probing an unknown node.
const PROBE_SLICE: Duration = Duration::from_secs(3);
/// Services a ready node runs.
pub const READY_SERVICES: [&str; 2] = ["apid", "machined"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BoardState {
    Off,
    Flashed,
    Powered,
    /// The bootloader's banner was seen (for direct kernel boots, the kernel's banner).
    Bootloader,
    /// The kernel is running (its command line was printed).
    Kernel,
    /// The API answers: in maintenance mode on a fresh node, over mutual TLS on a configured one.
    Maintenance,
    Configured,
    Ready,
}

impl BoardState {
    pub const ALL: [BoardState; 8] = [
        BoardState::Off,
        BoardState::Flashed,
        BoardState::Powered,
        BoardState::Bootloader,
        BoardState::Kernel,
        BoardState::Maintenance,
        BoardState::Configured,
        BoardState::Ready,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BoardState::Off => "off",
            BoardState::Flashed => "flashed",
            BoardState::Powered => "powered",
            BoardState::Bootloader => "bootloader",
            BoardState::Kernel => "kernel",
            BoardState::Maintenance => "maintenance",
            BoardState::Configured => "configured",
            BoardState::Ready => "ready",
        }
    }

    fn next(self) -> Option<BoardState> {
        let index = BoardState::ALL.iter().position(|&s| s == self)?;
        BoardState::ALL.get(index + 1).copied()
    }
}

/// What a step saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    Console(ConsoleLine),
    Api(String),
    Note(String),
}

impl std::fmt::Display for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Evidence::Console(line) => write!(f, "console {line}"),
            Evidence::Api(answer) => write!(f, "api {answer}"),
            Evidence::Note(note) => write!(f, "{note}"),
        }
    }
}

/// One timed step: a state transition or a suite action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRecord {
    pub name: String,
    /// Since the strategy was created.
    pub started: Duration,
    pub duration: Duration,
    pub ok: bool,
    pub evidence: Vec<Evidence>,
}

#[derive(Debug, thiserror::Error)]
#[error("Board {board} failed at step {step}: {reason}\n---- last console lines ----\n{tail}")]
pub struct StrategyError {
    pub board: String,
    pub step: String,
    pub reason: String,
    /// The last [`TAIL_LINES`] console lines.
    pub tail: String,
}

/// Where the node's API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    Static(Endpoint),
    /// The address the node prints on its console.
    Learned,
}

/// The machine config a suite applies and the admin credentials it yields.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub machine_config: String,
    pub admin: TlsMode,
}

/// Reports long steps as they happen (the runner draws a progress line).
pub trait Progress: Send + Sync + Debug {
    fn begin(&self, step: &str);
    fn flash(&self, progress: FlashProgress);
    fn end(&self, step: &str, duration: Duration, ok: bool);
}

#[derive(Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&self, _step: &str) {}
    fn flash(&self, _progress: FlashProgress) {}
    fn end(&self, _step: &str, _duration: Duration, _ok: bool) {}
}

/// A board's drivers.
#[derive(Debug)]
pub struct Drivers {
    pub power: Arc<dyn PowerSwitch>,
    pub console: Arc<dyn Console>,
    pub storage: Option<Arc<dyn Storage>>,
    pub api: Box<dyn NodeApi>,
}

/// What a strategy needs besides drivers.
#[derive(Debug, Clone)]
pub struct BoardSetup {
    pub board: String,
    pub bootloader: Bootloader,
    pub network: Network,
    pub boot_timeout: Duration,
    /// What `flashed` writes to storage; `None` flashes nothing.
    pub image: Option<PathBuf>,
    pub config: NodeConfig,
}

#[derive(Debug)]
pub struct Strategy {
    setup: BoardSetup,
    drivers: Drivers,
    progress: Arc<dyn Progress>,
    state: BoardState,
    /// Whether storage holds `setup.image` as flashed by this strategy.
    flashed: bool,
    /// Whether the node has a stored config; `None` when unknown (after a power cut).
    stored_config: Option<bool>,
    /// First console line of the current boot.
    boot_start: usize,
    /// Where the next boot expectation starts matching.
    boot_cursor: usize,
    endpoint: Option<Endpoint>,
    started: Instant,
    records: Vec<StepRecord>,
}

type StepResult<T> = Result<T, String>;

impl Strategy {
    /// A board in an unknown power state is taken as `off` with unknown storage contents.
    pub fn new(setup: BoardSetup, drivers: Drivers, progress: Arc<dyn Progress>) -> Strategy {
        Strategy {
            setup,
            drivers,
            progress,
            state: BoardState::Off,
            flashed: false,
            stored_config: None,
            boot_start: 0,
            boot_cursor: 0,
            endpoint: None,
            started: Instant::now(),
            records: Vec::new(),
        }
    }

    pub fn state(&self) -> BoardState {
        self.state
    }

    pub fn board(&self) -> &str {
        &self.setup.board
    }

    pub fn records(&self) -> &[StepRecord] {
        &self.records
    }

    pub fn console(&self) -> &Arc<dyn Console> {
        &self.drivers.console
    }

    pub fn power(&self) -> &Arc<dyn PowerSwitch> {
        &self.drivers.power
    }

    pub fn api(&mut self) -> &mut dyn NodeApi {
        self.drivers.api.as_mut()
    }

    pub fn config(&self) -> &NodeConfig {
        &self.setup.config
    }

    /// Whether the node boots into its stored config, if known.
    pub fn stored_config(&self) -> Option<bool> {
        self.stored_config
    }

    /// First console line of the current boot.
    pub fn boot_start(&self) -> usize {
        self.boot_start
    }

    /// The API endpoint of the current boot, once known.
    pub fn endpoint(&self) -> Option<&Endpoint> {
        self.endpoint.as_ref()
    }

    /// TLS for the node's current mode.
    pub fn tls(&self) -> TlsMode {
        if self.stored_config == Some(true) {
            self.setup.config.admin.clone()
        } else {
            TlsMode::Insecure
        }
    }

    /// Asserts a state without acting (labgrid's `force`).
    pub fn force(&mut self, state: BoardState) {
        self.state = state;
        if state == BoardState::Off {
            self.endpoint = None;
        }
    }

    /// The next `flashed` writes the image again.
    pub fn invalidate_flash(&mut self) {
        self.flashed = false;
    }

    /// The node's stored config is unknown (e.g. after a power cut); the next API step probes.
    pub fn forget_config(&mut self) {
        self.stored_config = None;
    }

    /// Walks to `target`, or back to off and forward again if `target` is behind.
    pub fn transition(&mut self, target: BoardState) -> Result<(), StrategyError> {
        if target < self.state || target == BoardState::Off {
            if self.state != BoardState::Off {
                self.step("off", |s, evidence| {
                    s.drivers.power.off().map_err(|e| e.to_string())?;
                    evidence.push(Evidence::Note("power off".to_owned()));
                    Ok(())
                })?;
            }
            self.force(BoardState::Off);
        }
        while self.state < target {
            let next = self
                .state
                .next()
                .expect("a state before the target has a successor");
            self.step(next.name(), |s, evidence| s.enter(next, evidence))?;
            self.state = next;
        }
        Ok(())
    }

    /// Reboots through the API; the board is `powered` afterwards and walks forward again.
    pub fn reboot_via_api(&mut self) -> Result<(), StrategyError> {
        self.rebooting_call("reboot", "Reboot", |api, endpoint, tls| {
            api.reboot(endpoint, tls)
        })
    }

    /// Upgrades the node from the installer `image`; the node reboots into the new slot, so
    /// the board is `powered` afterwards and walks forward again.
    pub fn upgrade(&mut self, image: &str) -> Result<(), StrategyError> {
        self.rebooting_call(
            &format!("upgrade to {image}"),
            "Upgrade",
            |api, endpoint, tls| api.upgrade(endpoint, tls, image),
        )
    }

    /// One API call after which the node reboots: the next boot's console starts here.
    fn rebooting_call(
        &mut self,
        name: &str,
        method: &str,
        call: impl FnOnce(&mut dyn NodeApi, &Endpoint, &TlsMode) -> Result<String, ApiError>,
    ) -> Result<(), StrategyError> {
        self.step(name, |s, evidence| {
            let endpoint = s.endpoint.clone().ok_or("no API endpoint known")?;
            let tls = s.tls();
            let cursor = s.drivers.console.line_count();
            let answer =
                call(s.drivers.api.as_mut(), &endpoint, &tls).map_err(|e| e.to_string())?;
            evidence.push(Evidence::Api(format!("{method}: {answer}")));
            s.boot_start = cursor;
            s.boot_cursor = cursor;
            Ok(())
        })?;
        self.state = BoardState::Powered;
        self.endpoint = None;
        Ok(())
    }

    /// Waits for the current boot to fail (a kernel panic) and the bootloader to start again;
    /// the board is `powered` in that new boot afterwards.
    pub fn await_failed_boot(&mut self, name: &str) -> Result<(), StrategyError> {
        self.step(name, |s, evidence| {
            let timeout = s.setup.boot_timeout;
            let mut expect = Expect::new(s.drivers.console.as_ref(), s.boot_cursor);
            let failed = expect
                .expect_any(&PANIC_MARKERS, timeout)
                .map_err(|_| format!("no kernel failure on the console within {timeout:?}"))?;
            evidence.push(Evidence::Console(failed.line));
            let banners = s.banners();
            let restarted = expect.expect_any(banners, timeout).map_err(|_| {
                format!("the board did not restart ({banners:?}) within {timeout:?}")
            })?;
            evidence.push(Evidence::Console(restarted.line));
            // The bootloader step matches this banner again.
            s.boot_start = restarted.number;
            s.boot_cursor = restarted.number;
            Ok(())
        })?;
        self.state = BoardState::Powered;
        self.endpoint = None;
        Ok(())
    }

    /// What the console shows first in a boot.
    fn banners(&self) -> &'static [&'static str] {
        match self.setup.bootloader {
            Bootloader::UBoot => &["U-Boot "],
            Bootloader::Efi => &["EFI stub:", "UEFI firmware", "BdsDxe:"],
            Bootloader::DirectKernel => &["Linux version"],
        }
    }

    /// Runs `action` as a recorded, timed step; failures carry the console tail.
    pub fn step<T>(
        &mut self,
        name: &str,
        action: impl FnOnce(&mut Strategy, &mut Vec<Evidence>) -> StepResult<T>,
    ) -> Result<T, StrategyError> {
        self.progress
            .begin(&format!("{}: {name}", self.setup.board));
        let started = Instant::now();
        let mut evidence = Vec::new();
        let result = action(self, &mut evidence);
        let duration = started.elapsed();
        self.progress.end(name, duration, result.is_ok());
        if let Err(reason) = &result {
            evidence.push(Evidence::Note(format!("failed: {reason}")));
        }
        self.records.push(StepRecord {
            name: name.to_owned(),
            started: started.duration_since(self.started),
            duration,
            ok: result.is_ok(),
            evidence,
        });
        result.map_err(|reason| StrategyError {
            board: self.setup.board.clone(),
            step: name.to_owned(),
            reason,
            tail: tail(self.drivers.console.as_ref(), TAIL_LINES),
        })
    }

    fn enter(&mut self, state: BoardState, evidence: &mut Vec<Evidence>) -> StepResult<()> {
        match state {
            BoardState::Off => Ok(()),
            BoardState::Flashed => self.enter_flashed(evidence),
            BoardState::Powered => {
                self.boot_start = self.drivers.console.line_count();
                self.boot_cursor = self.boot_start;
                self.endpoint = None;
                self.drivers.power.on().map_err(|e| e.to_string())?;
                evidence.push(Evidence::Note("power on".to_owned()));
                Ok(())
            }
            BoardState::Bootloader => self.expect_boot(self.banners(), evidence),
            BoardState::Kernel => self.expect_boot(&["Kernel command line:"], evidence),
            BoardState::Maintenance => self.enter_api(evidence),
            BoardState::Configured => self.enter_configured(evidence),
            BoardState::Ready => {
                let endpoint = self.endpoint.clone().ok_or("no API endpoint known")?;
                let tls = self.tls();
                let services = self
                    .drivers
                    .api
                    .services(&endpoint, &tls)
                    .map_err(|e| e.to_string())?;
                evidence.push(Evidence::Api(format!(
                    "ServiceList: {}",
                    services.join(",")
                )));
                let missing: Vec<&str> = READY_SERVICES
                    .into_iter()
                    .filter(|id| !services.iter().any(|s| s == id))
                    .collect();
                if !missing.is_empty() {
                    return Err(format!("services missing: {}", missing.join(", ")));
                }
                Ok(())
            }
        }
    }

    fn enter_flashed(&mut self, evidence: &mut Vec<Evidence>) -> StepResult<()> {
        let (Some(image), Some(storage)) = (&self.setup.image, &self.drivers.storage) else {
            evidence.push(Evidence::Note("nothing to flash".to_owned()));
            return Ok(());
        };
        if self.flashed {
            evidence.push(Evidence::Note(format!(
                "{} already flashed",
                image.display()
            )));
            return Ok(());
        }
        let progress = Arc::clone(&self.progress);
        let report = storage
            .flash(image, &mut |p| progress.flash(p))
            .map_err(|e| e.to_string())?;
        evidence.push(Evidence::Note(format!(
            "flashed {}: {} of {} bytes are data, {} written, all verified",
            image.display(),
            report.data_bytes,
            report.image_len,
            report.written_bytes
        )));
        self.flashed = true;
        self.stored_config = Some(false);
        Ok(())
    }

    /// Waits for one of `patterns` in the current boot, failing fast on a kernel panic.
    fn expect_boot(&mut self, patterns: &[&str], evidence: &mut Vec<Evidence>) -> StepResult<()> {
        let mut all: Vec<&str> = patterns.to_vec();
        all.extend(PANIC_MARKERS);
        let mut expect = Expect::new(self.drivers.console.as_ref(), self.boot_cursor);
        let matched = expect
            .expect_any(&all, self.setup.boot_timeout)
            .map_err(|e| match e {
                crate::DriverError::ExpectTimeout { timeout, .. } => {
                    format!("none of {patterns:?} on the console within {timeout:?}")
                }
                other => other.to_string(),
            })?;
        evidence.push(Evidence::Console(matched.line.clone()));
        if matched.pattern >= patterns.len() {
            return Err(format!("the kernel failed: {}", matched.line.text));
        }
        // Later steps of this boot look after this line.
        self.boot_cursor = matched.number + 1;
        Ok(())
    }

    fn resolve_endpoint(&mut self, evidence: &mut Vec<Evidence>) -> StepResult<Endpoint> {
        if let Some(endpoint) = &self.endpoint {
            return Ok(endpoint.clone());
        }
        let endpoint = match &self.setup.network {
            Network::Static(endpoint) => endpoint.clone(),
            Network::Learned => {
                let mut expect = Expect::new(self.drivers.console.as_ref(), self.boot_cursor);
                let line = expect
                    .expect("address=", self.setup.boot_timeout)
                    .map_err(|_| "the node printed no address= on its console".to_owned())?;
                evidence.push(Evidence::Console(line.clone()));
                let address = learned_address(&line.text)
                    .ok_or_else(|| format!("no address in {:?}", line.text))?;
                Endpoint::new(address, API_PORT)
            }
        };
        evidence.push(Evidence::Note(format!("API endpoint {endpoint}")));
        self.endpoint = Some(endpoint.clone());
        Ok(endpoint)
    }

    fn enter_api(&mut self, evidence: &mut Vec<Evidence>) -> StepResult<()> {
        let endpoint = self.resolve_endpoint(evidence)?;
        let timeout = self.setup.boot_timeout;
        let admin = self.setup.config.admin.clone();
        let api = self.drivers.api.as_mut();
        match self.stored_config {
            Some(false) => {
                let answer = api
                    .wait_version(&endpoint, &TlsMode::Insecure, timeout)
                    .map_err(|e| e.to_string())?;
                evidence.push(Evidence::Api(format!("Version (maintenance): {answer}")));
            }
            Some(true) => {
                let answer = api
                    .wait_version(&endpoint, &admin, timeout)
                    .map_err(|e| e.to_string())?;
                evidence.push(Evidence::Api(format!("Version (mutual TLS): {answer}")));
                evidence.push(Evidence::Note(
                    "the node booted its stored config; no maintenance mode".to_owned(),
                ));
            }
            None => {
                let configured = probe_mode(api, &endpoint, &admin, timeout, evidence)?;
                self.stored_config = Some(configured);
            }
        }
        Ok(())
    }

    fn enter_configured(&mut self, evidence: &mut Vec<Evidence>) -> StepResult<()> {
        let endpoint = self.resolve_endpoint(evidence)?;
        let admin = self.setup.config.admin.clone();
        if self.stored_config == Some(true) {
            let answer = self
                .drivers
                .api
                .version(&endpoint, &admin)
                .map_err(|e| e.to_string())?;
            evidence.push(Evidence::Api(format!("Version (mutual TLS): {answer}")));
            evidence.push(Evidence::Note("already configured".to_owned()));
            return Ok(());
        }
        let config = self.setup.config.machine_config.clone().into_bytes();
        let answer = self
            .drivers
            .api
            .apply_config(&endpoint, &TlsMode::Insecure, &config)
            .map_err(|e| e.to_string())?;
        evidence.push(Evidence::Api(format!("ApplyConfiguration: {answer}")));
        self.stored_config = Some(true);
        let answer = self
            .drivers
            .api
            .wait_version(&endpoint, &admin, CONFIGURE_TIMEOUT)
            .map_err(|e| e.to_string())?;
        evidence.push(Evidence::Api(format!("Version (mutual TLS): {answer}")));
        Ok(())
    }
}

/// Finds out whether the node serves maintenance mode or its stored config, trying both in
/// short alternating slices until one answers or `timeout` passes.
fn probe_mode(
    api: &mut dyn NodeApi,
    endpoint: &Endpoint,
    admin: &TlsMode,
    timeout: Duration,
    evidence: &mut Vec<Evidence>,
) -> StepResult<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let insecure = match api.wait_version(endpoint, &TlsMode::Insecure, PROBE_SLICE) {
            Ok(answer) => {
                evidence.push(Evidence::Api(format!("Version (maintenance): {answer}")));
                return Ok(false);
            }
            Err(e) => e,
        };
        match api.wait_version(endpoint, admin, PROBE_SLICE) {
            Ok(answer) => {
                evidence.push(Evidence::Api(format!(
                    "Version (insecure refused, mutual TLS answered): {answer}"
                )));
                return Ok(true);
            }
            Err(mutual) if Instant::now() >= deadline => {
                return Err(format!(
                    "neither mode answered within {timeout:?}; insecure: {insecure}; mutual TLS: {mutual}"
                ));
            }
            Err(_) => {}
        }
    }
}

/// The IPv4 or IPv6 address after `address=` in a console line.
pub fn learned_address(line: &str) -> Option<String> {
    let rest = &line[line.find("address=")? + "address=".len()..];
    let value: String = rest
        .trim_start_matches('"')
        .chars()
        .take_while(|c| c.is_ascii_hexdigit() || *c == '.' || *c == ':')
        .collect();
    value
        .parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| ip.to_string())
}

#[cfg(test)]
pub(crate) mod fakes {
    //! Fake drivers for strategy and suite tests.

    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::DriverError;
    use crate::api::{ApiError, ApiRecord};
    use crate::console::ConsoleLine;

    /// A console fed by the fake power switch: each power-on "boots" a scripted line list.
    #[derive(Debug, Default)]
    pub struct FakeConsole {
        pub lines: Mutex<Vec<ConsoleLine>>,
    }

    impl FakeConsole {
        pub fn push(&self, text: &str) {
            let mut lines = self.lines.lock().unwrap();
            let at = Duration::from_millis(lines.len() as u64);
            lines.push(ConsoleLine {
                at,
                text: text.to_owned(),
            });
        }
    }

    impl Console for FakeConsole {
        fn lines_from(&self, from: usize) -> Vec<ConsoleLine> {
            self.lines
                .lock()
                .unwrap()
                .get(from..)
                .unwrap_or_default()
                .to_vec()
        }
        fn line_count(&self) -> usize {
            self.lines.lock().unwrap().len()
        }
        fn wait_for_more(&self, _seen: usize, timeout: Duration) {
            std::thread::sleep(timeout.min(Duration::from_millis(5)));
        }
        fn write(&self, _bytes: &[u8]) -> Result<(), DriverError> {
            Ok(())
        }
        fn log_paths(&self) -> Vec<PathBuf> {
            Vec::new()
        }
    }

    /// Records power events; each `on` prints the next scripted boot on the console.
    #[derive(Debug)]
    pub struct FakePower {
        pub console: Arc<FakeConsole>,
        pub boots: Mutex<VecDeque<Vec<&'static str>>>,
        pub events: Mutex<Vec<&'static str>>,
    }

    impl FakePower {
        pub fn boot(&self) {
            if let Some(lines) = self.boots.lock().unwrap().pop_front() {
                for line in lines {
                    self.console.push(line);
                }
            }
        }
    }

    impl PowerSwitch for FakePower {
        fn on(&self) -> Result<(), DriverError> {
            self.events.lock().unwrap().push("on");
            self.boot();
            Ok(())
        }
        fn off(&self) -> Result<(), DriverError> {
            self.events.lock().unwrap().push("off");
            Ok(())
        }
        fn cut(&self) -> Result<(), DriverError> {
            self.events.lock().unwrap().push("cut");
            Ok(())
        }
    }

    /// The version a fresh image runs.
    pub const FAKE_VERSION: &str = "v1.0.0";

    /// Flashing wipes the fake node's stored config and puts back [`FAKE_VERSION`].
    #[derive(Debug, Default)]
    pub struct FakeStorage {
        pub flashed: Mutex<Vec<PathBuf>>,
        pub node_configured: Arc<AtomicBool>,
        pub node_version: Arc<Mutex<String>>,
    }

    impl Storage for FakeStorage {
        fn flash(
            &self,
            image: &std::path::Path,
            progress: &mut dyn FnMut(FlashProgress),
        ) -> Result<talos_images::flash::FlashReport, DriverError> {
            self.flashed.lock().unwrap().push(image.to_owned());
            self.node_configured.store(false, Ordering::SeqCst);
            *self.node_version.lock().unwrap() = FAKE_VERSION.to_owned();
            progress(FlashProgress {
                phase: talos_images::flash::FlashPhase::Write,
                done: 10,
                total: 10,
            });
            Ok(talos_images::flash::FlashReport {
                image_len: 10,
                data_bytes: 10,
                written_bytes: 10,
            })
        }
    }

    /// A node model: maintenance until configured; a reboot or an upgrade re-runs the scripted
    /// boot. An upgrade runs the image's tag next, except that an image named `broken` leaves
    /// the version as it was and one named `mislabeled` runs `v9.9.9`.
    #[derive(Debug)]
    pub struct FakeApi {
        pub configured: Arc<AtomicBool>,
        pub version: Arc<Mutex<String>>,
        pub power: Arc<FakePower>,
        pub calls: Vec<ApiRecord>,
        pub dmesg: String,
    }

    impl FakeApi {
        fn log(&mut self, call: &'static str, tls: &TlsMode, answer: &str) {
            self.calls.push(ApiRecord {
                at: Duration::ZERO,
                call,
                endpoint: "fake".into(),
                tls: if matches!(tls, TlsMode::Insecure) {
                    "insecure"
                } else {
                    "mutual"
                },
                answer: answer.to_owned(),
            });
        }

        fn check(&mut self, call: &'static str, tls: &TlsMode) -> Result<String, ApiError> {
            let mutual = matches!(tls, TlsMode::Mutual { .. });
            if mutual != self.configured.load(Ordering::SeqCst) {
                self.log(call, tls, "refused");
                return Err(ApiError {
                    call,
                    endpoint: "fake".into(),
                    code: Some("Unauthenticated".into()),
                    message: "wrong mode".into(),
                });
            }
            self.log(call, tls, "ok");
            Ok("ok".into())
        }
    }

    impl NodeApi for FakeApi {
        fn wait_version(
            &mut self,
            endpoint: &Endpoint,
            tls: &TlsMode,
            _t: Duration,
        ) -> Result<String, ApiError> {
            self.version(endpoint, tls)
        }
        fn version(&mut self, _e: &Endpoint, tls: &TlsMode) -> Result<String, ApiError> {
            self.check("Version", tls)?;
            Ok(format!("tag {} arch arm64", self.version.lock().unwrap()))
        }
        fn apply_config(
            &mut self,
            _e: &Endpoint,
            tls: &TlsMode,
            config: &[u8],
        ) -> Result<String, ApiError> {
            // The fake node accepts exactly the strategy's config and refuses anything else.
            if config != b"version: v1alpha1" {
                self.log("ApplyConfiguration", tls, "invalid");
                return Err(ApiError {
                    call: "ApplyConfiguration",
                    endpoint: "fake".into(),
                    code: Some("InvalidArgument".into()),
                    message: "bad config".into(),
                });
            }
            let answer = self.check("ApplyConfiguration", tls)?;
            self.configured.store(true, Ordering::SeqCst);
            Ok(answer)
        }
        fn reboot(&mut self, _e: &Endpoint, tls: &TlsMode) -> Result<String, ApiError> {
            let answer = self.check("Reboot", tls)?;
            self.power.boot();
            Ok(answer)
        }
        fn upgrade(
            &mut self,
            _e: &Endpoint,
            tls: &TlsMode,
            image: &str,
        ) -> Result<String, ApiError> {
            let answer = self.check("Upgrade", tls)?;
            let tag = image.rsplit(':').next().unwrap_or_default();
            if image.contains("mislabeled") {
                *self.version.lock().unwrap() = "v9.9.9".into();
            } else if !image.contains("broken") {
                *self.version.lock().unwrap() = tag.into();
            }
            self.power.boot();
            Ok(answer)
        }
        fn dmesg(&mut self, _e: &Endpoint, tls: &TlsMode) -> Result<String, ApiError> {
            self.check("Dmesg", tls)?;
            Ok(self.dmesg.clone())
        }
        fn services(&mut self, _e: &Endpoint, tls: &TlsMode) -> Result<Vec<String>, ApiError> {
            self.check("ServiceList", tls)?;
            Ok(vec!["apid".into(), "machined".into()])
        }
        fn transcript(&self) -> Vec<ApiRecord> {
            self.calls.clone()
        }
    }

    pub const BOOT: [&str; 5] = [
        "Booting Linux on physical CPU 0x0",
        "Linux version 6.1.0",
        "Kernel command line: console=ttyAMA0",
        "DHCP lease link=\"eth0\" address=10.0.2.15 prefix=24",
        "API listening on :50000",
    ];

    pub fn admin_tls() -> TlsMode {
        TlsMode::Mutual {
            ca_pem: "ca".into(),
            cert_pem: "crt".into(),
            key_pem: "key".into(),
        }
    }

    /// A strategy over fakes; `boots` scripts the console of successive boots.
    pub fn strategy(
        boots: Vec<Vec<&'static str>>,
        network: Network,
    ) -> (Strategy, Arc<FakePower>, Arc<FakeStorage>) {
        let console = Arc::new(FakeConsole::default());
        let power = Arc::new(FakePower {
            console: console.clone(),
            boots: Mutex::new(boots.into()),
            events: Mutex::new(Vec::new()),
        });
        let storage = Arc::new(FakeStorage::default());
        let api = FakeApi {
            configured: storage.node_configured.clone(),
            version: storage.node_version.clone(),
            power: power.clone(),
            calls: Vec::new(),
            dmesg: "[0.0] Linux version 6.1.0\n".into(),
        };
        let setup = BoardSetup {
            board: "fake".into(),
            bootloader: Bootloader::DirectKernel,
            network,
            boot_timeout: Duration::from_millis(200),
            image: Some(PathBuf::from("/img")),
            config: NodeConfig {
                machine_config: "version: v1alpha1".into(),
                admin: admin_tls(),
            },
        };
        let drivers = Drivers {
            power: power.clone(),
            console,
            storage: Some(storage.clone()),
            api: Box::new(api),
        };
        (
            Strategy::new(setup, drivers, Arc::new(NoProgress)),
            power,
            storage,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::fakes::*;
    use super::*;

    fn names(strategy: &Strategy) -> Vec<String> {
        strategy.records().iter().map(|r| r.name.clone()).collect()
    }

    #[test]
    fn walks_every_state_in_order_with_evidence() {
        let (mut s, power, storage) = strategy(vec![BOOT.to_vec()], Network::Learned);
        s.transition(BoardState::Ready).unwrap();
        assert_eq!(
            names(&s),
            [
                "flashed",
                "powered",
                "bootloader",
                "kernel",
                "maintenance",
                "configured",
                "ready"
            ]
        );
        assert!(s.records().iter().all(|r| r.ok));
        assert_eq!(*storage.flashed.lock().unwrap(), [PathBuf::from("/img")]);
        assert_eq!(*power.events.lock().unwrap(), ["on"]);
        let bootloader = &s.records()[2].evidence[0];
        assert!(matches!(bootloader, Evidence::Console(l) if l.text.starts_with("Linux version")));
        assert_eq!(s.endpoint().unwrap().to_string(), "10.0.2.15:50000");
        let configured = &s.records()[5].evidence;
        assert!(
            configured
                .iter()
                .any(|e| matches!(e, Evidence::Api(a) if a.starts_with("ApplyConfiguration"))),
            "{configured:?}"
        );
        assert_eq!(s.stored_config(), Some(true));
    }

    #[test]
    fn transitions_are_idempotent() {
        let (mut s, power, storage) =
            strategy(vec![BOOT.to_vec(), BOOT.to_vec()], Network::Learned);
        s.transition(BoardState::Maintenance).unwrap();
        let steps = s.records().len();
        s.transition(BoardState::Maintenance).unwrap();
        assert_eq!(s.records().len(), steps, "nothing to do");
        s.transition(BoardState::Kernel).unwrap();
        // Going back powers off and walks forward: no second flash, a second power-on.
        assert_eq!(s.records().len(), steps + 5, "{:?}", names(&s));
        assert_eq!(storage.flashed.lock().unwrap().len(), 1);
        assert_eq!(*power.events.lock().unwrap(), ["on", "off", "on"]);
    }

    #[test]
    fn a_missing_banner_fails_with_the_console_tail() {
        let (mut s, _, _) = strategy(vec![vec!["garbage 1", "garbage 2"]], Network::Learned);
        let err = s.transition(BoardState::Kernel).unwrap_err();
        assert_eq!(err.step, "bootloader");
        assert!(err.reason.contains("Linux version"), "{}", err.reason);
        assert!(err.tail.contains("garbage 2"), "{}", err.tail);
        assert!(!s.records().last().unwrap().ok);
        assert_eq!(s.state(), BoardState::Powered);
    }

    #[test]
    fn a_kernel_panic_fails_fast() {
        let boot = vec![
            "Linux version 6.1.0",
            "Kernel panic - not syncing: VFS",
            "Kernel command line: x",
        ];
        let (mut s, _, _) = strategy(vec![boot], Network::Learned);
        let err = s.transition(BoardState::Kernel).unwrap_err();
        assert_eq!(err.step, "kernel");
        assert!(err.reason.contains("Kernel panic"), "{err}");
    }

    #[test]
    fn tail_is_limited_to_the_last_hundred_lines() {
        let mut boot = vec!["Linux version 6.1.0"];
        let filler: Vec<&'static str> = (0..150)
            .map(|i| &*Box::leak(format!("line {i}").into_boxed_str()))
            .collect();
        boot.extend(filler);
        let (mut s, _, _) = strategy(vec![boot], Network::Learned);
        let err = s.transition(BoardState::Kernel).unwrap_err();
        assert_eq!(err.tail.lines().count(), TAIL_LINES);
        assert!(err.tail.ends_with("line 149"));
        assert!(err.tail.contains("] line 50\n"));
        assert!(!err.tail.contains("] line 49\n"));
    }

    #[test]
    fn reboot_returns_to_powered_and_a_configured_node_skips_maintenance() {
        let (mut s, _, _) = strategy(
            vec![BOOT.to_vec(), BOOT.to_vec()],
            Network::Static(Endpoint::new("192.0.2.1", 50000)),
        );
        s.transition(BoardState::Ready).unwrap();
        s.reboot_via_api().unwrap();
        assert_eq!(s.state(), BoardState::Powered);
        s.transition(BoardState::Ready).unwrap();
        let maintenance = s
            .records()
            .iter()
            .rfind(|r| r.name == "maintenance")
            .unwrap();
        assert!(
            maintenance
                .evidence
                .iter()
                .any(|e| matches!(e, Evidence::Note(n) if n.contains("stored config"))),
            "{maintenance:?}"
        );
        let configured = s
            .records()
            .iter()
            .rfind(|r| r.name == "configured")
            .unwrap();
        assert!(
            configured
                .evidence
                .iter()
                .any(|e| matches!(e, Evidence::Note(n) if n == "already configured"))
        );
    }

    #[test]
    fn unknown_mode_is_probed() {
        let (mut s, _, _) = strategy(vec![BOOT.to_vec(), BOOT.to_vec()], Network::Learned);
        s.transition(BoardState::Configured).unwrap();
        s.transition(BoardState::Off).unwrap();
        s.forget_config();
        s.transition(BoardState::Maintenance).unwrap();
        assert_eq!(s.stored_config(), Some(true));
    }

    #[test]
    fn learned_addresses() {
        assert_eq!(
            learned_address("DHCP lease link=\"eth0\" address=10.0.2.15 prefix=24").as_deref(),
            Some("10.0.2.15")
        );
        assert_eq!(
            learned_address("static address from ip= address=fd00::5 prefix=64").as_deref(),
            Some("fd00::5")
        );
        assert_eq!(learned_address("address=nope"), None);
    }
}
