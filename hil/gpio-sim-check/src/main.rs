//! PID 1 of the gpio-sim test image. Loads configfs and the out-of-tree gpio-sim module, makes
//! a simulated chip with four lines, drives them through the rig's relay driver
//! (`talos_hil::power::GpioRelay`: linux-embedded-hal on the GPIO character device) and reads
//! each line's level back from gpio-sim's sysfs `value`. Prints `GPIOSIM PASS` or
//! `GPIOSIM FAIL: <reason>` on the console, then powers off.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use nix::errno::Errno;
use nix::kmod::{ModuleInitFlags, finit_module};
use nix::mount::{MsFlags, mount};
use nix::sys::reboot::{RebootMode, reboot};
use talos_hil::power::{CdevLine, GpioRelay, PowerSwitch};

const CONFIGFS: &str = "/sys/kernel/config";
const SIM_DEVICE: &str = "/sys/kernel/config/gpio-sim/rig";
/// Where the image carries the module, relative to `/lib/modules/<release>`.
const GPIO_SIM_MODULE: &str = "extra/gpio-sim.ko";
const LINES: u32 = 4;
/// Short enough for quick on/off checks, long enough that a missed wait is visible.
const SHORT_OFF_TIME: Duration = Duration::from_millis(200);
const CYCLE_OFF_TIME: Duration = Duration::from_millis(1500);
/// How much longer than its off-time a cycle may keep the line low under TCG.
const CYCLE_SLACK: Duration = Duration::from_millis(1000);
/// The sampler must see the line at least this often for the off-time bound to mean anything.
const MAX_SAMPLE_GAP: Duration = Duration::from_millis(50);

fn main() {
    let mounted = mount_fs("proc", "/proc", "proc")
        .and_then(|()| mount_fs("sysfs", "/sys", "sysfs"))
        .and_then(|()| mount_fs("devtmpfs", "/dev", "devtmpfs"));
    let console = OpenOptions::new().write(true).open("/dev/console");
    if let (Ok(mut console), Ok(())) = (console, mounted) {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&mut console)));
        let verdict = match outcome {
            Ok(Ok(())) => "GPIOSIM PASS".to_owned(),
            Ok(Err(e)) => format!("GPIOSIM FAIL: {e:#}"),
            Err(panic) => format!("GPIOSIM FAIL: panic: {}", panic_text(panic.as_ref())),
        };
        let _ = writeln!(console, "{verdict}");
    }
    // PID 1 must not return; power-off makes QEMU exit.
    let _ = reboot(RebootMode::RB_POWER_OFF);
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text payload".to_owned())
}

fn mount_fs(source: &str, target: &str, fstype: &str) -> anyhow::Result<()> {
    mount(
        Some(source),
        target,
        Some(fstype),
        MsFlags::empty(),
        None::<&str>,
    )
    .with_context(|| format!("mounting {fstype} on {target}"))
}

fn run(console: &mut File) -> anyhow::Result<()> {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease")?;
    load_modules(&Path::new("/lib/modules").join(release.trim()))?;
    mount_fs("configfs", CONFIGFS, "configfs")?;
    let chip = SimChip::create()?;
    say(
        console,
        &format!(
            "chip {} with {LINES} lines, levels in {}",
            chip.dev.display(),
            chip.sysfs.display()
        ),
    );

    let plain = open(&chip, 0, false, SHORT_OFF_TIME)?;
    chip.expect(0, false, "active-high relay just opened (off)")?;
    plain.on()?;
    chip.expect(0, true, "active-high relay on")?;
    plain.off()?;
    chip.expect(0, false, "active-high relay off")?;
    say(console, "line 0 active-high: off 0, on 1, off 0");

    let inverted = open(&chip, 1, true, SHORT_OFF_TIME)?;
    chip.expect(1, true, "active-low relay just opened (off)")?;
    inverted.on()?;
    chip.expect(1, false, "active-low relay on")?;
    inverted.off()?;
    chip.expect(1, true, "active-low relay off")?;
    say(console, "line 1 active-low: off 1, on 0, off 1");

    let cycled = open(&chip, 2, false, CYCLE_OFF_TIME)?;
    let (low_min, low_max) = check_cycle(&chip, 2, &cycled)?;
    say(
        console,
        &format!(
            "line 2 cycle: low for {}..{} ms, off-time {} ms",
            low_min.as_millis(),
            low_max.as_millis(),
            CYCLE_OFF_TIME.as_millis()
        ),
    );

    let levels = (0..LINES)
        .map(|line| chip.level(line))
        .collect::<anyhow::Result<Vec<bool>>>()?;
    ensure!(
        levels == [false, true, true, false],
        "levels of lines 0..4 are {levels:?}, expected [off high-active, off low-active, on, undriven]"
    );
    say(console, "all lines: 0 1 1 0 (line 3 undriven)");
    Ok(())
}

fn say(console: &mut File, text: &str) {
    let _ = writeln!(console, "GPIOSIM: {text}");
}

/// Loads the modules of the image's trimmed `modules.dep` in its order, then gpio-sim.
fn load_modules(dir: &Path) -> anyhow::Result<()> {
    let dep_path = dir.join("modules.dep");
    let deps =
        fs::read_to_string(&dep_path).with_context(|| format!("reading {}", dep_path.display()))?;
    let modules = deps
        .lines()
        .filter_map(|line| line.split(':').next())
        .filter(|path| !path.is_empty())
        .chain([GPIO_SIM_MODULE]);
    for module in modules {
        let path = dir.join(module);
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        match finit_module(&file, c"", ModuleInitFlags::empty()) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => bail!("loading {}: {e}", path.display()),
        }
    }
    Ok(())
}

/// A live gpio-sim device with one bank.
struct SimChip {
    dev: PathBuf,
    /// The gpiochip's sysfs directory, which holds `sim_gpioN/value`.
    sysfs: PathBuf,
}

impl SimChip {
    fn create() -> anyhow::Result<SimChip> {
        let bank = format!("{SIM_DEVICE}/bank0");
        for dir in [SIM_DEVICE, bank.as_str()] {
            fs::create_dir(dir).with_context(|| format!("creating {dir}"))?;
        }
        write(&format!("{bank}/num_lines"), &LINES.to_string())?;
        write(&format!("{SIM_DEVICE}/live"), "1")?;
        let device = read(&format!("{SIM_DEVICE}/dev_name"))?;
        let chip = read(&format!("{bank}/chip_name"))?;
        let sysfs = Path::new("/sys/devices/platform").join(&device).join(&chip);
        ensure!(sysfs.is_dir(), "{} does not exist", sysfs.display());
        Ok(SimChip {
            dev: Path::new("/dev").join(chip),
            sysfs,
        })
    }

    fn value_path(&self, line: u32) -> PathBuf {
        self.sysfs.join(format!("sim_gpio{line}/value"))
    }

    /// The line's level as gpio-sim sees it: what its consumer drives.
    fn level(&self, line: u32) -> anyhow::Result<bool> {
        let path = self.value_path(line);
        match read(&path.to_string_lossy())?.as_str() {
            "0" => Ok(false),
            "1" => Ok(true),
            other => bail!("{} reads {other:?}, not 0 or 1", path.display()),
        }
    }

    fn expect(&self, line: u32, high: bool, what: &str) -> anyhow::Result<()> {
        let level = self.level(line)?;
        ensure!(
            level == high,
            "{what}: line {line} is {}, expected {}",
            u8::from(level),
            u8::from(high)
        );
        Ok(())
    }
}

fn open(
    chip: &SimChip,
    line: u32,
    active_low: bool,
    off_time: Duration,
) -> anyhow::Result<GpioRelay<CdevLine>> {
    GpioRelay::open(&chip.dev, line, active_low, off_time)
        .with_context(|| format!("opening line {line} of {}", chip.dev.display()))
}

/// Powers `relay` (on line `line`) on, cycles it while a thread samples its sysfs level, and checks the
/// line stayed low at least the off-time (and not much longer). Returns the bounds of how
/// long it was low.
fn check_cycle(
    chip: &SimChip,
    line: u32,
    relay: &GpioRelay<CdevLine>,
) -> anyhow::Result<(Duration, Duration)> {
    let off_time = relay.off_time();
    relay.on()?;
    chip.expect(line, true, "relay on before the cycle")?;

    let stop = Arc::new(AtomicBool::new(false));
    let value = chip.value_path(line);
    let sampler = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || sample(&value, &stop))
    };
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let cycled = relay.cycle();
    let took = started.elapsed();
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let samples = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("the sampler thread panicked"))??;
    cycled?;
    chip.expect(line, true, "relay on after the cycle")?;

    let gap = samples
        .windows(2)
        .map(|w| w[1].end - w[0].end)
        .max()
        .unwrap_or_default();
    ensure!(
        gap <= MAX_SAMPLE_GAP,
        "sysfs sampling stalled for {gap:?} (over {MAX_SAMPLE_GAP:?}), too coarse to time the cycle"
    );
    ensure!(
        samples.first().is_some_and(|s| s.high) && samples.last().is_some_and(|s| s.high),
        "line {line} was not high before and after the cycle"
    );
    let edges: Vec<usize> = (1..samples.len())
        .filter(|&i| samples[i - 1].high != samples[i].high)
        .collect();
    let [fall, rise] = edges[..] else {
        bail!(
            "line {line} changed level {} times during one cycle, expected 2",
            edges.len()
        );
    };
    // Each read fetched the level somewhere between its start and end.
    let low_at_most = samples[rise]
        .end
        .saturating_duration_since(samples[fall - 1].start);
    let low_at_least = samples[rise - 1]
        .start
        .saturating_duration_since(samples[fall].end);
    ensure!(
        low_at_most >= off_time,
        "line {line} was low for at most {low_at_most:?}, shorter than the off-time {off_time:?}"
    );
    ensure!(
        low_at_least <= off_time + CYCLE_SLACK,
        "line {line} was low for at least {low_at_least:?}, far over the off-time {off_time:?}"
    );
    ensure!(
        took >= off_time,
        "cycle returned after {took:?}, before the off-time {off_time:?}"
    );
    Ok((low_at_least, low_at_most))
}

/// One read of the line's level, with when the read started and ended.
#[derive(Debug, Clone, Copy)]
struct Sample {
    start: Instant,
    end: Instant,
    high: bool,
}

/// Reads `value` in a tight loop until `stop`.
fn sample(value: &Path, stop: &AtomicBool) -> anyhow::Result<Vec<Sample>> {
    let mut samples = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        let text = fs::read(value).with_context(|| format!("reading {}", value.display()))?;
        samples.push(Sample {
            start,
            end: Instant::now(),
            high: text.first() == Some(&b'1'),
        });
    }
    Ok(samples)
}

fn write(path: &str, text: &str) -> anyhow::Result<()> {
    fs::write(path, text).with_context(|| format!("writing {text:?} to {path}"))
}

fn read(path: &str) -> anyhow::Result<String> {
    Ok(fs::read_to_string(path)
        .with_context(|| format!("reading {path}"))?
        .trim()
        .to_owned())
}
