//! Test suites, written against [`Strategy`] only, so they run on QEMU and real boards alike.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use talos_client::TlsMode;

use crate::api::version_tag;
use crate::console::PANIC_MARKERS;
use crate::strategy::{BoardState, Evidence, StepRecord, Strategy, StrategyError};

/// Longest delay between sending ApplyConfiguration and cutting power in `power-cut`; a QEMU
/// node answers ApplyConfiguration in roughly 100-300 ms, so cuts land before, during and after.
const MAX_CUT_OFFSET_MS: u64 = 500;
/// Default longest delay between sending Upgrade and cutting power in `power-cut`: a QEMU
/// node answers Upgrade (pull and slot write) within seconds and the new slot answers about
/// 15 s after the request, so cuts land during the write, the reboot and the first boot.
pub const UPGRADE_CUT_WINDOW: Duration = Duration::from_secs(20);
/// The node's console lines about its A/B boot slots, kept as evidence.
const SLOT_LINES: [&str; 4] = [
    "upgrade written to slot",
    "booted from slot",
    "committed",
    "fell back",
];
/// API calls per second during `soak`, at most.
const SOAK_RATE: u32 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    Smoke,
    ApplyConfig,
    RebootLoop(u32),
    UpgradeRollback,
    PowerCut(u32),
    Soak { minutes: u32 },
}

#[derive(Debug, thiserror::Error)]
#[error(
    "Unknown suite {0:?}: use smoke, apply-config, reboot-loop N, upgrade-rollback, power-cut N or soak MINUTES"
)]
pub struct UnknownSuite(pub String);

impl FromStr for Suite {
    type Err = UnknownSuite;

    /// `reboot-loop 3`, `reboot-loop:3` and `reboot-loop=3` are the same suite.
    fn from_str(text: &str) -> Result<Suite, UnknownSuite> {
        let unknown = || UnknownSuite(text.to_owned());
        let mut parts = text.trim().splitn(2, [' ', ':', '=']);
        let name = parts.next().unwrap_or_default();
        let count = parts.next().map(|n| n.trim().parse::<u32>());
        let positive = |count: Option<Result<u32, _>>| match count {
            Some(Ok(n)) if n > 0 => Ok(n),
            _ => Err(unknown()),
        };
        match name {
            "smoke" if count.is_none() => Ok(Suite::Smoke),
            "apply-config" if count.is_none() => Ok(Suite::ApplyConfig),
            "upgrade-rollback" if count.is_none() => Ok(Suite::UpgradeRollback),
            "reboot-loop" => positive(count).map(Suite::RebootLoop),
            "power-cut" => positive(count).map(Suite::PowerCut),
            "soak" => positive(count).map(|minutes| Suite::Soak { minutes }),
            _ => Err(unknown()),
        }
    }
}

impl std::fmt::Display for Suite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Suite::Smoke => write!(f, "smoke"),
            Suite::ApplyConfig => write!(f, "apply-config"),
            Suite::RebootLoop(n) => write!(f, "reboot-loop {n}"),
            Suite::UpgradeRollback => write!(f, "upgrade-rollback"),
            Suite::PowerCut(n) => write!(f, "power-cut {n}"),
            Suite::Soak { minutes } => write!(f, "soak {minutes}"),
        }
    }
}

/// Installer images for the upgrade suites: OCI references as the node pulls them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrades {
    /// A good installer (`--upgrade-image`).
    pub image: Option<String>,
    /// An installer whose system fails to boot (`--broken-image`).
    pub broken: Option<String>,
    /// `power-cut` cuts at a random offset up to this long after sending Upgrade.
    pub cut_window: Duration,
}

impl Default for Upgrades {
    fn default() -> Upgrades {
        Upgrades {
            image: None,
            broken: None,
            cut_window: UPGRADE_CUT_WINDOW,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed(String),
    Skipped(String),
}

/// One test case: a suite run on one board.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub name: String,
    pub outcome: Outcome,
    pub duration: Duration,
    pub steps: Vec<StepRecord>,
    /// The serial log and API transcript of this case.
    pub artifacts: Vec<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct SuiteResult {
    pub suite: String,
    pub board: String,
    pub cases: Vec<CaseResult>,
}

impl SuiteResult {
    pub fn passed(&self) -> bool {
        self.cases
            .iter()
            .all(|c| !matches!(c.outcome, Outcome::Failed(_)))
    }
}

/// Runs `suite` on the board behind `strategy`; artifacts go under `artifacts/<case>/`.
pub fn run_suite(
    strategy: &mut Strategy,
    suite: Suite,
    upgrades: &Upgrades,
    artifacts: &Path,
) -> SuiteResult {
    let name = suite.to_string();
    let case_name = name.replace(' ', "-");
    let started = Instant::now();
    let first_step = strategy.records().len();
    let first_line = strategy.console().line_count();
    let first_call = strategy.api().transcript().len();
    let outcome = match suite {
        Suite::Smoke => smoke(strategy).map(|()| Outcome::Passed),
        Suite::ApplyConfig => apply_config(strategy).map(|()| Outcome::Passed),
        Suite::RebootLoop(n) => reboot_loop(strategy, n).map(|()| Outcome::Passed),
        Suite::PowerCut(n) => power_cut(strategy, n, upgrades).map(|()| Outcome::Passed),
        Suite::Soak { minutes } => {
            soak(strategy, Duration::from_secs(u64::from(minutes) * 60)).map(|()| Outcome::Passed)
        }
        Suite::UpgradeRollback => match (&upgrades.image, &upgrades.broken) {
            (Some(good), Some(broken)) => {
                upgrade_rollback(strategy, good, broken).map(|()| Outcome::Passed)
            }
            (good, broken) => {
                let missing: Vec<&str> = [
                    (good.is_none(), "--upgrade-image REF"),
                    (broken.is_none(), "--broken-image REF"),
                ]
                .into_iter()
                .filter_map(|(absent, option)| absent.then_some(option))
                .collect();
                Ok(Outcome::Skipped(format!(
                    "needs {} (installer images the node pulls)",
                    missing.join(" and ")
                )))
            }
        },
    }
    .unwrap_or_else(|err| Outcome::Failed(err.to_string()));
    let case_dir = artifacts.join(&case_name);
    let written = write_artifacts(strategy, &case_dir, first_line, first_call);
    let (artifacts, outcome) = match written {
        Ok(paths) => (paths, outcome),
        Err(err) => (
            Vec::new(),
            match outcome {
                Outcome::Passed => Outcome::Failed(format!(
                    "cannot write artifacts to {}: {err}",
                    case_dir.display()
                )),
                other => other,
            },
        ),
    };
    SuiteResult {
        suite: name.clone(),
        board: strategy.board().to_owned(),
        cases: vec![CaseResult {
            name: case_name,
            outcome,
            duration: started.elapsed(),
            steps: strategy.records()[first_step..].to_vec(),
            artifacts,
        }],
    }
}

fn write_artifacts(
    strategy: &mut Strategy,
    dir: &Path,
    first_line: usize,
    first_call: usize,
) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let serial = dir.join("serial.log");
    let lines: String = strategy
        .console()
        .lines_from(first_line)
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&serial, lines)?;
    let api = dir.join("api.log");
    let calls: String = strategy
        .api()
        .transcript()
        .get(first_call..)
        .unwrap_or_default()
        .iter()
        .map(|r| format!("{r}\n"))
        .collect();
    std::fs::write(&api, calls)?;
    Ok(vec![serial, api])
}

/// Fails on kernel trouble in this boot's console lines.
fn check_console(strategy: &mut Strategy, what: &str) -> Result<(), StrategyError> {
    strategy.step(what, |s, evidence| {
        let lines = s.console().lines_from(s.boot_start());
        let bad: Vec<String> = lines
            .iter()
            .filter(|l| {
                PANIC_MARKERS.iter().any(|m| l.text.contains(m)) || l.text.contains("EXT4-fs error")
            })
            .map(ToString::to_string)
            .collect();
        evidence.push(Evidence::Note(format!(
            "{} console lines checked",
            lines.len()
        )));
        if bad.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "kernel trouble on the console:\n{}",
                bad.join("\n")
            ))
        }
    })
}

fn smoke(s: &mut Strategy) -> Result<(), StrategyError> {
    s.transition(BoardState::Maintenance)?;
    s.step("version", |s, evidence| {
        let (endpoint, tls) = (s.endpoint().cloned().ok_or("no endpoint")?, s.tls());
        let answer = s
            .api()
            .version(&endpoint, &tls)
            .map_err(|e| e.to_string())?;
        evidence.push(Evidence::Api(format!("Version: {answer}")));
        Ok(())
    })?;
    s.step("dmesg", |s, evidence| {
        let (endpoint, tls) = (s.endpoint().cloned().ok_or("no endpoint")?, s.tls());
        let log = s.api().dmesg(&endpoint, &tls).map_err(|e| e.to_string())?;
        evidence.push(Evidence::Api(format!(
            "Dmesg: {} lines",
            log.lines().count()
        )));
        if !log.contains("Linux version") {
            return Err("dmesg lacks the kernel banner".to_owned());
        }
        let bad: Vec<&str> = log
            .lines()
            .filter(|l| PANIC_MARKERS.iter().any(|m| l.contains(m)))
            .collect();
        if !bad.is_empty() {
            return Err(format!("dmesg shows kernel trouble:\n{}", bad.join("\n")));
        }
        Ok(())
    })?;
    check_console(s, "console clean")
}

fn apply_config(s: &mut Strategy) -> Result<(), StrategyError> {
    s.transition(BoardState::Maintenance)?;
    if s.stored_config() == Some(true) {
        // A configured node must start from a fresh image to test applying.
        s.invalidate_flash();
        s.transition(BoardState::Maintenance)?;
    }
    s.step("refuse a malformed config", |s, evidence| {
        let endpoint = s.endpoint().cloned().ok_or("no endpoint")?;
        match s.api().apply_config(
            &endpoint,
            &TlsMode::Insecure,
            b"version: v1alpha1\nmachine: [unclosed\n",
        ) {
            Err(e) if e.code.as_deref() == Some("InvalidArgument") => {
                evidence.push(Evidence::Api(format!("refused: {}", e.message)));
                Ok(())
            }
            Err(e) => Err(format!("expected InvalidArgument, got {e}")),
            Ok(answer) => Err(format!("a malformed config was accepted: {answer}")),
        }
    })?;
    s.transition(BoardState::Configured)?;
    s.step("maintenance access is gone", |s, evidence| {
        let endpoint = s.endpoint().cloned().ok_or("no endpoint")?;
        match s.api().version(&endpoint, &TlsMode::Insecure) {
            Ok(answer) => Err(format!("an anonymous Version still answers: {answer}")),
            Err(e) => {
                evidence.push(Evidence::Api(format!("anonymous Version refused: {e}")));
                Ok(())
            }
        }
    })?;
    s.reboot_via_api()?;
    s.transition(BoardState::Ready)?;
    check_console(s, "console clean")
}

fn reboot_loop(s: &mut Strategy, count: u32) -> Result<(), StrategyError> {
    s.transition(BoardState::Ready)?;
    for round in 1..=count {
        s.step(&format!("round {round}/{count}"), |_, evidence| {
            evidence.push(Evidence::Note(format!("reboot {round} of {count}")));
            Ok(())
        })?;
        s.reboot_via_api()?;
        s.transition(BoardState::Ready)?;
        check_console(s, "console clean")?;
    }
    Ok(())
}

/// One Version call over the node's current TLS: `judge` turns its tag into a note or a
/// failure. Returns the tag.
fn version_step(
    s: &mut Strategy,
    name: &str,
    judge: impl FnOnce(&str) -> Result<String, String>,
) -> Result<String, StrategyError> {
    s.step(name, |s, evidence| {
        let (endpoint, tls) = (s.endpoint().cloned().ok_or("no endpoint")?, s.tls());
        let answer = s
            .api()
            .version(&endpoint, &tls)
            .map_err(|e| e.to_string())?;
        evidence.push(Evidence::Api(format!("Version: {answer}")));
        let tag = version_tag(&answer)
            .ok_or_else(|| format!("no version tag in {answer:?}"))?
            .to_owned();
        evidence.push(Evidence::Note(judge(&tag)?));
        evidence.extend(slot_lines(s, s.boot_start()));
        Ok(tag)
    })
}

/// What the node said about its boot slots from console line `from` on.
fn slot_lines(s: &Strategy, from: usize) -> impl Iterator<Item = Evidence> {
    s.console()
        .lines_from(from)
        .into_iter()
        .filter(|l| SLOT_LINES.iter().any(|m| l.text.contains(m)))
        .map(Evidence::Console)
}

fn upgrade_rollback(s: &mut Strategy, good: &str, broken: &str) -> Result<(), StrategyError> {
    s.transition(BoardState::Configured)?;
    let old = version_step(s, "version before the upgrade", |tag| {
        Ok(format!("the node runs {tag}"))
    })?;
    s.upgrade(good)?;
    s.transition(BoardState::Ready)?;
    let new = version_step(s, "upgraded", |tag| {
        if tag == old {
            Err(format!("still on {old} after upgrading to {good}"))
        } else {
            Ok(format!("upgraded from {old} to {tag}; mutual TLS answers"))
        }
    })?;
    check_console(s, "console clean")?;
    s.upgrade(broken)?;
    s.await_failed_boot("the broken system fails")?;
    s.transition(BoardState::Ready)?;
    version_step(s, "rolled back", |tag| {
        if tag == new {
            Ok(format!("back on {new} by itself; mutual TLS answers"))
        } else {
            Err(format!("expected a rollback to {new}, the node runs {tag}"))
        }
    })?;
    check_console(s, "console clean")
}

/// The tag of an image reference (`host:port/repo:tag[@digest]`), if it has one.
fn reference_tag(image: &str) -> Option<&str> {
    let name = image.split('@').next()?.rsplit('/').next()?;
    name.split_once(':')
        .map(|(_, tag)| tag)
        .filter(|tag| !tag.is_empty())
}

/// Odd rounds cut during apply-config; with an upgrade image, even rounds cut during it.
fn power_cut(s: &mut Strategy, count: u32, upgrades: &Upgrades) -> Result<(), StrategyError> {
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    // [came back unconfigured, configured] and [came back on the old version, the new one].
    let mut applied = [0u32; 2];
    let mut upgraded = [0u32; 2];
    for round in 1..=count {
        let cut = Cut { round, count, seed };
        match &upgrades.image {
            Some(image) if round % 2 == 0 => {
                let window = u64::try_from(upgrades.cut_window.as_millis()).unwrap_or(u64::MAX);
                let offset = Duration::from_millis(rng.u64(0..=window));
                let new = cut_during_upgrade(s, &cut, image, offset)?;
                upgraded[usize::from(new)] += 1;
            }
            _ => {
                let offset = Duration::from_millis(rng.u64(0..=MAX_CUT_OFFSET_MS));
                let configured = cut_during_apply_config(s, &cut, offset)?;
                applied[usize::from(configured)] += 1;
            }
        }
        check_console(s, "console clean")?;
    }
    s.step("summary", |_, evidence| {
        let during_upgrade = if upgrades.image.is_some() {
            format!(
                "; {} during upgrade: {} came back on the old version, {} on the new",
                upgraded[0] + upgraded[1],
                upgraded[0],
                upgraded[1]
            )
        } else {
            String::new()
        };
        evidence.push(Evidence::Note(format!(
            "{} cuts during apply-config: {} came back unconfigured, {} configured{during_upgrade}; none corrupt",
            applied[0] + applied[1],
            applied[0],
            applied[1]
        )));
        Ok(())
    })
}

/// Which cut of a `power-cut` run this is.
struct Cut {
    round: u32,
    count: u32,
    /// Reproduces the run's offsets.
    seed: u64,
}

/// Cuts power `offset` after sending ApplyConfiguration to a fresh node; returns whether it
/// came back configured.
fn cut_during_apply_config(
    s: &mut Strategy,
    cut: &Cut,
    offset: Duration,
) -> Result<bool, StrategyError> {
    let Cut { round, count, seed } = *cut;
    s.transition(BoardState::Off)?;
    s.invalidate_flash();
    s.transition(BoardState::Maintenance)?;
    s.step(
        &format!("cut {round}/{count} during apply-config"),
        |s, evidence| {
            let endpoint = s.endpoint().cloned().ok_or("no endpoint")?;
            let power = Arc::clone(s.power());
            let cutter = std::thread::spawn(move || {
                std::thread::sleep(offset);
                power.cut()
            });
            let config = s.config().machine_config.clone().into_bytes();
            let applied = s.api().apply_config(&endpoint, &TlsMode::Insecure, &config);
            let cut = cutter.join().map_err(|_| "the power-cut thread panicked")?;
            cut.map_err(|e| e.to_string())?;
            evidence.push(Evidence::Note(format!(
                "seed {seed}: power cut {offset:?} after sending ApplyConfiguration"
            )));
            evidence.push(Evidence::Api(match applied {
                Ok(answer) => format!("ApplyConfiguration before the cut: {answer}"),
                Err(e) => format!("ApplyConfiguration interrupted: {e}"),
            }));
            Ok(())
        },
    )?;
    s.force(BoardState::Off);
    s.forget_config();
    s.transition(BoardState::Maintenance)?;
    let configured = s.stored_config() == Some(true);
    s.step(&format!("after cut {round}: consistent"), |_, evidence| {
        evidence.push(Evidence::Note(if configured {
            "booted the new config (mutual TLS answers)".to_owned()
        } else {
            "booted the old state (maintenance mode answers)".to_owned()
        }));
        Ok(())
    })?;
    Ok(configured)
}

/// Cuts power `offset` after sending Upgrade to a freshly configured node: while it pulls and
/// writes the new slot, reboots, or first boots it. Returns whether it came back on the new
/// version; the old one is as good, anything else (or no boot, or no config) fails.
fn cut_during_upgrade(
    s: &mut Strategy,
    cut: &Cut,
    image: &str,
    offset: Duration,
) -> Result<bool, StrategyError> {
    let Cut { round, count, seed } = *cut;
    s.transition(BoardState::Off)?;
    s.invalidate_flash();
    s.transition(BoardState::Configured)?;
    let old = version_step(s, "version before the upgrade", |tag| {
        Ok(format!("the node runs {tag}"))
    })?;
    s.step(
        &format!("cut {round}/{count} during upgrade"),
        |s, evidence| {
            let (endpoint, tls) = (s.endpoint().cloned().ok_or("no endpoint")?, s.tls());
            let power = Arc::clone(s.power());
            let first_line = s.console().line_count();
            let sent = Instant::now();
            let cutter = std::thread::spawn(move || {
                std::thread::sleep(offset);
                power.cut()
            });
            let answer = s.api().upgrade(&endpoint, &tls, image);
            let answered = sent.elapsed();
            let cut = cutter.join().map_err(|_| "the power-cut thread panicked")?;
            cut.map_err(|e| e.to_string())?;
            evidence.push(Evidence::Note(format!(
                "seed {seed}: power cut {offset:?} after sending Upgrade"
            )));
            let answer = match answer {
                Ok(ack) => format!("Upgrade answered after {answered:?}: {ack}"),
                Err(e) if answered < offset => {
                    return Err(format!("Upgrade failed before the cut: {e}"));
                }
                Err(e) => format!("Upgrade interrupted: {e}"),
            };
            evidence.push(Evidence::Api(answer));
            // How far the upgrade got before the cut.
            evidence.extend(slot_lines(s, first_line));
            if let Some(last) = s.console().lines_from(first_line).pop() {
                evidence.push(Evidence::Note(format!(
                    "last console line before the cut: {last}"
                )));
            }
            Ok(())
        },
    )?;
    s.force(BoardState::Off);
    s.forget_config();
    s.transition(BoardState::Maintenance)?;
    let configured = s.stored_config() == Some(true);
    let new = reference_tag(image);
    let tag = version_step(s, &format!("after cut {round}: consistent"), |tag| {
        if !configured {
            Err(format!("the node came back on {tag} without its config"))
        } else if tag == old {
            Ok(format!("came back on the old version {tag}, configured"))
        } else if new.is_none_or(|new| new == tag) {
            Ok(format!("came back on the new version {tag}, configured"))
        } else {
            Err(format!(
                "came back on {tag}: neither the old {old} nor the new {}",
                new.unwrap_or_default()
            ))
        }
    })?;
    Ok(tag != old)
}

fn soak(s: &mut Strategy, length: Duration) -> Result<(), StrategyError> {
    s.transition(BoardState::Ready)?;
    let interval = Duration::from_secs(1) / SOAK_RATE;
    let deadline = Instant::now() + length;
    let mut calls = 0u64;
    let mut minute = 0u64;
    while Instant::now() < deadline {
        minute += 1;
        let until = deadline.min(Instant::now() + Duration::from_secs(60));
        s.step(&format!("soak minute {minute}"), |s, evidence| {
            let (endpoint, tls) = (s.endpoint().cloned().ok_or("no endpoint")?, s.tls());
            let mut done = 0u64;
            while Instant::now() < until {
                let next = Instant::now() + interval;
                s.api()
                    .version(&endpoint, &tls)
                    .map_err(|e| format!("call {}: {e}", calls + done + 1))?;
                done += 1;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            calls += done;
            evidence.push(Evidence::Note(format!("{done} Version calls answered")));
            Ok(())
        })?;
        check_console(s, "console clean")?;
    }
    s.step("summary", |_, evidence| {
        evidence.push(Evidence::Note(format!(
            "{calls} calls in {length:?}, all answered"
        )));
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::Network;
    use crate::strategy::fakes::{BOOT, strategy};

    #[test]
    fn suite_names_parse_and_print() {
        for (text, suite) in [
            ("smoke", Suite::Smoke),
            ("apply-config", Suite::ApplyConfig),
            ("reboot-loop 3", Suite::RebootLoop(3)),
            ("reboot-loop:3", Suite::RebootLoop(3)),
            ("power-cut=5", Suite::PowerCut(5)),
            ("soak 2", Suite::Soak { minutes: 2 }),
            ("upgrade-rollback", Suite::UpgradeRollback),
        ] {
            assert_eq!(text.parse::<Suite>().unwrap(), suite, "{text}");
        }
        assert_eq!(Suite::RebootLoop(3).to_string(), "reboot-loop 3");
        for bad in ["reboot-loop", "reboot-loop 0", "smoke 2", "fuzz", "soak x"] {
            assert!(bad.parse::<Suite>().is_err(), "{bad}");
        }
    }

    #[test]
    fn smoke_passes_and_writes_artifacts() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _, _) = strategy(vec![BOOT.to_vec()], Network::Learned);
        let result = run_suite(&mut s, Suite::Smoke, &Upgrades::default(), dir.path());
        let case = &result.cases[0];
        assert_eq!(case.outcome, Outcome::Passed, "{case:?}");
        assert!(result.passed());
        let serial = std::fs::read_to_string(dir.path().join("smoke/serial.log")).unwrap();
        assert!(serial.contains("Linux version 6.1.0"));
        let api = std::fs::read_to_string(dir.path().join("smoke/api.log")).unwrap();
        assert!(api.contains("Dmesg fake (insecure) -> ok"), "{api}");
        let steps: Vec<&str> = case.steps.iter().map(|s| s.name.as_str()).collect();
        assert!(
            steps.ends_with(&["version", "dmesg", "console clean"]),
            "{steps:?}"
        );
    }

    #[test]
    fn smoke_fails_on_an_oops() {
        let dir = tempfile::tempdir().unwrap();
        let mut boot = BOOT.to_vec();
        boot.push("Internal error: Oops: 96000004");
        let (mut s, _, _) = strategy(vec![boot], Network::Learned);
        let result = run_suite(&mut s, Suite::Smoke, &Upgrades::default(), dir.path());
        let Outcome::Failed(reason) = &result.cases[0].outcome else {
            panic!("{result:?}")
        };
        assert!(reason.contains("Oops"), "{reason}");
        assert!(reason.contains("last console lines"), "{reason}");
        assert!(!result.passed());
    }

    #[test]
    fn reboot_loop_boots_n_plus_one_times() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _, _) = strategy(vec![BOOT.to_vec(); 4], Network::Learned);
        let result = run_suite(
            &mut s,
            Suite::RebootLoop(3),
            &Upgrades::default(),
            dir.path(),
        );
        assert_eq!(result.cases[0].outcome, Outcome::Passed, "{result:?}");
        let reboots = result.cases[0]
            .steps
            .iter()
            .filter(|s| s.name == "reboot")
            .count();
        assert_eq!(reboots, 3);
        // A fourth reboot would find no scripted boot: the loop really waits for each boot.
        let (mut short, _, _) = strategy(vec![BOOT.to_vec(); 3], Network::Learned);
        let result = run_suite(
            &mut short,
            Suite::RebootLoop(3),
            &Upgrades::default(),
            dir.path(),
        );
        assert!(matches!(result.cases[0].outcome, Outcome::Failed(_)));
    }

    #[test]
    fn apply_config_checks_refusals_and_persistence() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _, _) = strategy(vec![BOOT.to_vec(); 2], Network::Learned);
        let result = run_suite(&mut s, Suite::ApplyConfig, &Upgrades::default(), dir.path());
        assert_eq!(result.cases[0].outcome, Outcome::Passed, "{result:?}");
        let names: Vec<&str> = result.cases[0]
            .steps
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert!(names.contains(&"refuse a malformed config"));
        assert!(names.contains(&"maintenance access is gone"));
    }

    #[test]
    fn power_cut_reflashes_and_cuts_each_round() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, power, storage) = strategy(vec![BOOT.to_vec(); 4], Network::Learned);
        let result = run_suite(&mut s, Suite::PowerCut(2), &Upgrades::default(), dir.path());
        assert_eq!(result.cases[0].outcome, Outcome::Passed, "{result:?}");
        assert_eq!(storage.flashed.lock().unwrap().len(), 2);
        let events = power.events.lock().unwrap();
        assert_eq!(
            events.iter().filter(|e| **e == "cut").count(),
            2,
            "{events:?}"
        );
    }

    const GOOD: &str = "10.0.2.2:5000/talos/installer:v2.0.0";
    const BROKEN: &str = "10.0.2.2:5000/talos/installer-broken:v3.0.0";

    fn upgrades(image: Option<&str>, broken: Option<&str>) -> Upgrades {
        Upgrades {
            image: image.map(str::to_owned),
            broken: broken.map(str::to_owned),
            cut_window: Duration::from_millis(50),
        }
    }

    fn steps(result: &SuiteResult) -> Vec<&str> {
        result.cases[0]
            .steps
            .iter()
            .map(|s| s.name.as_str())
            .collect()
    }

    fn notes(result: &SuiteResult) -> String {
        result.cases[0]
            .steps
            .iter()
            .flat_map(|s| &s.evidence)
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn upgrade_rollback_without_images_is_skipped_naming_the_options() {
        let dir = tempfile::tempdir().unwrap();
        for (given, missing) in [
            (
                upgrades(None, None),
                "needs --upgrade-image REF and --broken-image REF",
            ),
            (upgrades(Some(GOOD), None), "needs --broken-image REF ("),
            (upgrades(None, Some(BROKEN)), "needs --upgrade-image REF ("),
        ] {
            let (mut s, power, _) = strategy(vec![], Network::Learned);
            let result = run_suite(&mut s, Suite::UpgradeRollback, &given, dir.path());
            let Outcome::Skipped(reason) = &result.cases[0].outcome else {
                panic!("{result:?}")
            };
            assert!(reason.starts_with(missing), "{reason}");
            assert!(result.passed());
            assert!(power.events.lock().unwrap().is_empty());
        }
    }

    /// A boot whose kernel panics, then the firmware's fallback boot.
    fn broken_then_fallback() -> Vec<&'static str> {
        let mut lines = vec![
            "Linux version 6.1.0 (v3)",
            "Kernel command line: talos.slot=A",
            "Kernel panic - not syncing: VFS: Unable to mount root fs",
            "---[ end Kernel panic - not syncing ]---",
        ];
        lines.extend(BOOT);
        lines.push("the upgrade in slot A did not come up; the firmware fell back to slot B");
        lines
    }

    #[test]
    fn upgrade_rollback_upgrades_then_rolls_back_by_itself() {
        let dir = tempfile::tempdir().unwrap();
        let boots = vec![BOOT.to_vec(), BOOT.to_vec(), broken_then_fallback()];
        let (mut s, _, storage) = strategy(boots, Network::Learned);
        let given = upgrades(Some(GOOD), Some(BROKEN));
        let result = run_suite(&mut s, Suite::UpgradeRollback, &given, dir.path());
        assert_eq!(result.cases[0].outcome, Outcome::Passed, "{result:?}");
        assert_eq!(storage.flashed.lock().unwrap().len(), 1);
        let names = steps(&result);
        for step in [
            "configured",
            "version before the upgrade",
            &format!("upgrade to {GOOD}"),
            "upgraded",
            &format!("upgrade to {BROKEN}"),
            "the broken system fails",
            "rolled back",
        ] {
            assert!(names.contains(&step), "{step} missing from {names:?}");
        }
        let notes = notes(&result);
        assert!(notes.contains("upgraded from v1.0.0 to v2.0.0"), "{notes}");
        assert!(notes.contains("Kernel panic - not syncing: VFS"), "{notes}");
        assert!(notes.contains("back on v2.0.0 by itself"), "{notes}");
        assert!(notes.contains("fell back to slot B"), "{notes}");
        // The fallback boot's console is clean: the panic belongs to the broken boot.
        assert_eq!(names.last(), Some(&"console clean"));
    }

    #[test]
    fn upgrade_rollback_fails_when_the_version_does_not_change() {
        let dir = tempfile::tempdir().unwrap();
        let boots = vec![BOOT.to_vec(), BOOT.to_vec()];
        let (mut s, _, _) = strategy(boots, Network::Learned);
        // The fake node keeps its version for a "broken" image that nonetheless boots.
        let given = upgrades(Some(BROKEN), Some(BROKEN));
        let result = run_suite(&mut s, Suite::UpgradeRollback, &given, dir.path());
        let Outcome::Failed(reason) = &result.cases[0].outcome else {
            panic!("{result:?}")
        };
        assert!(reason.contains("still on v1.0.0"), "{reason}");
    }

    #[test]
    fn power_cut_with_an_upgrade_image_cuts_every_second_round_during_the_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        // Round 1: boot, cut during apply-config, boot. Round 2: boot, configure, the upgrade's
        // reboot, cut, boot.
        let (mut s, power, storage) = strategy(vec![BOOT.to_vec(); 5], Network::Learned);
        let given = upgrades(Some(GOOD), None);
        let result = run_suite(&mut s, Suite::PowerCut(2), &given, dir.path());
        assert_eq!(result.cases[0].outcome, Outcome::Passed, "{result:?}");
        assert_eq!(
            storage.flashed.lock().unwrap().len(),
            2,
            "a fresh image per round"
        );
        let events = power.events.lock().unwrap();
        assert_eq!(events.iter().filter(|e| **e == "cut").count(), 2);
        let names = steps(&result);
        assert!(names.contains(&"cut 1/2 during apply-config"), "{names:?}");
        assert!(names.contains(&"cut 2/2 during upgrade"), "{names:?}");
        let notes = notes(&result);
        assert!(notes.contains("after sending Upgrade"), "{notes}");
        assert!(
            notes.contains("came back on the new version v2.0.0, configured"),
            "{notes}"
        );
        assert!(
            notes.contains("1 during upgrade: 0 came back on the old version, 1 on the new"),
            "{notes}"
        );
    }

    #[test]
    fn power_cut_during_upgrade_fails_on_a_third_version() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _, _) = strategy(vec![BOOT.to_vec(); 5], Network::Learned);
        let given = upgrades(Some("10.0.2.2:5000/mislabeled:v2.0.0"), None);
        let result = run_suite(&mut s, Suite::PowerCut(2), &given, dir.path());
        let Outcome::Failed(reason) = &result.cases[0].outcome else {
            panic!("{result:?}")
        };
        assert!(
            reason.contains("came back on v9.9.9: neither the old v1.0.0 nor the new v2.0.0"),
            "{reason}"
        );
    }

    #[test]
    fn reference_tags() {
        assert_eq!(reference_tag(GOOD), Some("v2.0.0"));
        assert_eq!(reference_tag("installer:v2@sha256:abc"), Some("v2"));
        assert_eq!(reference_tag("10.0.2.2:5000/talos/installer"), None);
        assert_eq!(
            reference_tag("10.0.2.2:5000/talos/installer@sha256:abc"),
            None
        );
    }
}
