//! Power drivers: a relay on a GPIO line, and an operator at the terminal.
//!
//! The relay drives any embedded-hal `OutputPin`; on a rig host that is linux-embedded-hal's
//! `CdevPin` on a GPIO character device. Power-off always lasts at least the relay's off-time,
//! however quickly `on` follows `off`, so board supplies fully drain between cycles.

use std::fmt::Debug;
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use embedded_hal::digital::OutputPin;
use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};
use linux_embedded_hal::{CdevPin, CdevPinError};

use crate::DriverError;

/// Switches a board's power (labgrid's PowerProtocol).
pub trait PowerSwitch: Send + Sync + Debug {
    fn on(&self) -> Result<(), DriverError>;
    /// Orderly power-off where the backend has one.
    fn off(&self) -> Result<(), DriverError>;
    /// Cuts power at once, with no chance for the board to react.
    fn cut(&self) -> Result<(), DriverError> {
        self.off()
    }
    /// Off, the off-time, then on.
    fn cycle(&self) -> Result<(), DriverError> {
        self.cut()?;
        self.on()
    }
}

/// Time as the relay sees it; tests substitute a fake.
pub trait Clock: Send + Sync + Debug {
    fn now(&self) -> Instant;
    fn sleep(&self, duration: Duration);
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

#[derive(Debug)]
struct RelayState<P> {
    pin: P,
    /// When power last went off; `on` waits until the off-time has passed since.
    off_since: Option<Instant>,
    on: bool,
}

/// A relay on one output line.
#[derive(Debug)]
pub struct GpioRelay<P, C = SystemClock> {
    name: String,
    state: Mutex<RelayState<P>>,
    active_low: bool,
    off_time: Duration,
    clock: C,
}

/// linux-embedded-hal's `CdevPin`, labelled with its chip and line.
pub struct CdevLine {
    pin: CdevPin,
    label: String,
}

impl Debug for CdevLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CdevLine")
            .field("line", &self.label)
            .finish()
    }
}

impl embedded_hal::digital::ErrorType for CdevLine {
    type Error = CdevPinError;
}

impl OutputPin for CdevLine {
    fn set_low(&mut self) -> Result<(), CdevPinError> {
        self.pin.set_low()
    }
    fn set_high(&mut self) -> Result<(), CdevPinError> {
        self.pin.set_high()
    }
}

impl GpioRelay<CdevLine> {
    /// Requests `line` of `chip` as an output, initially off, and returns the relay.
    pub fn open(
        chip: &Path,
        line: u32,
        active_low: bool,
        off_time: Duration,
    ) -> Result<GpioRelay<CdevLine>, DriverError> {
        let name = format!("{}:{line}", chip.display());
        let pin = request_output(chip, line, u8::from(active_low))?;
        Ok(GpioRelay::new(name, pin, active_low, off_time, SystemClock))
    }
}

/// Requests `line` as an output driving the physical `level`, through linux-embedded-hal.
pub fn request_output(chip: &Path, line: u32, level: u8) -> Result<CdevLine, DriverError> {
    let label = format!("{}:{line}", chip.display());
    let gpio = |source: &dyn std::fmt::Display| DriverError::Gpio {
        line: label.clone(),
        reason: source.to_string(),
    };
    let handle = Chip::new(chip)
        .and_then(|mut chip| chip.get_line(line))
        .and_then(|line| line.request(LineRequestFlags::OUTPUT, level, "talos-hil"))
        .map_err(|e| gpio(&e))?;
    let pin = CdevPin::new(handle).map_err(|e| gpio(&e))?;
    Ok(CdevLine { pin, label })
}

impl<P: OutputPin + Send + Debug, C: Clock> GpioRelay<P, C> {
    /// Wraps a pin that is already driving "off"; the off-time counts from now.
    pub fn new(
        name: String,
        pin: P,
        active_low: bool,
        off_time: Duration,
        clock: C,
    ) -> GpioRelay<P, C> {
        let off_since = Some(clock.now());
        GpioRelay {
            name,
            state: Mutex::new(RelayState {
                pin,
                off_since,
                on: false,
            }),
            active_low,
            off_time,
            clock,
        }
    }

    pub fn off_time(&self) -> Duration {
        self.off_time
    }

    fn drive(&self, state: &mut RelayState<P>, on: bool) -> Result<(), DriverError> {
        let high = on != self.active_low;
        let result = if high {
            state.pin.set_high()
        } else {
            state.pin.set_low()
        };
        result.map_err(|e| DriverError::Gpio {
            line: self.name.clone(),
            reason: format!("{e:?}"),
        })?;
        state.on = on;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RelayState<P>> {
        self.state.lock().expect("relay lock is not poisoned")
    }
}

impl<P: OutputPin + Send + Debug, C: Clock> PowerSwitch for GpioRelay<P, C> {
    fn on(&self) -> Result<(), DriverError> {
        let mut state = self.lock();
        if state.on {
            return Ok(());
        }
        if let Some(since) = state.off_since {
            let waited = self.clock.now().saturating_duration_since(since);
            if waited < self.off_time {
                self.clock.sleep(self.off_time - waited);
            }
        }
        self.drive(&mut state, true)
    }

    fn off(&self) -> Result<(), DriverError> {
        let mut state = self.lock();
        if !state.on {
            return Ok(());
        }
        self.drive(&mut state, false)?;
        state.off_since = Some(self.clock.now());
        Ok(())
    }
}

/// Power switched by a person: asks on `prompt` and waits for Enter on `answers`.
#[derive(Debug)]
pub struct ManualPower<R, W> {
    board: String,
    io: Mutex<(R, W)>,
}

impl<R: BufRead + Send + Debug, W: Write + Send + Debug> ManualPower<R, W> {
    pub fn new(board: &str, answers: R, prompt: W) -> ManualPower<R, W> {
        ManualPower {
            board: board.to_owned(),
            io: Mutex::new((answers, prompt)),
        }
    }

    fn ask(&self, action: &str) -> Result<(), DriverError> {
        let mut io = self.io.lock().expect("manual power lock is not poisoned");
        let (answers, prompt) = &mut *io;
        let failed = |e: std::io::Error| DriverError::Manual {
            board: self.board.clone(),
            reason: e.to_string(),
        };
        write!(
            prompt,
            "Switch power of board {} {action}, then press Enter: ",
            self.board
        )
        .and_then(|()| prompt.flush())
        .map_err(failed)?;
        let mut line = String::new();
        match answers.read_line(&mut line).map_err(failed)? {
            0 => Err(DriverError::Manual {
                board: self.board.clone(),
                reason: "no operator: the terminal input closed".to_owned(),
            }),
            _ => Ok(()),
        }
    }
}

impl<R: BufRead + Send + Debug, W: Write + Send + Debug> PowerSwitch for ManualPower<R, W> {
    fn on(&self) -> Result<(), DriverError> {
        self.ask("ON")
    }
    fn off(&self) -> Result<(), DriverError> {
        self.ask("OFF")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::sync::Arc;

    /// Virtual time: `sleep` advances it.
    #[derive(Debug, Clone)]
    struct FakeClock(Arc<Mutex<Instant>>);

    impl Clock for FakeClock {
        fn now(&self) -> Instant {
            *self.0.lock().unwrap()
        }
        fn sleep(&self, duration: Duration) {
            *self.0.lock().unwrap() += duration;
        }
    }

    impl FakeClock {
        fn advance(&self, duration: Duration) {
            self.sleep(duration);
        }
    }

    /// Records every level it is driven to, with the virtual time.
    #[derive(Debug)]
    struct RecordingPin {
        clock: FakeClock,
        log: Arc<Mutex<Vec<(bool, Instant)>>>,
    }

    impl embedded_hal::digital::ErrorType for RecordingPin {
        type Error = Infallible;
    }

    impl OutputPin for RecordingPin {
        fn set_low(&mut self) -> Result<(), Infallible> {
            self.log.lock().unwrap().push((false, self.clock.now()));
            Ok(())
        }
        fn set_high(&mut self) -> Result<(), Infallible> {
            self.log.lock().unwrap().push((true, self.clock.now()));
            Ok(())
        }
    }

    type Log = Arc<Mutex<Vec<(bool, Instant)>>>;

    fn relay(
        active_low: bool,
        off_ms: u64,
    ) -> (GpioRelay<RecordingPin, FakeClock>, FakeClock, Log, Instant) {
        let start = Instant::now();
        let clock = FakeClock(Arc::new(Mutex::new(start)));
        let log = Log::default();
        let pin = RecordingPin {
            clock: clock.clone(),
            log: log.clone(),
        };
        let relay = GpioRelay::new(
            "fake:0".into(),
            pin,
            active_low,
            Duration::from_millis(off_ms),
            clock.clone(),
        );
        (relay, clock, log, start)
    }

    fn ms(start: Instant, at: Instant) -> u128 {
        at.duration_since(start).as_millis()
    }

    #[test]
    fn cycle_keeps_power_off_for_the_off_time() {
        let (relay, clock, log, start) = relay(false, 3000);
        clock.advance(Duration::from_secs(10));
        relay.on().unwrap();
        clock.advance(Duration::from_secs(5));
        relay.cycle().unwrap();
        let log = log.lock().unwrap();
        let events: Vec<(bool, u128)> = log.iter().map(|&(l, at)| (l, ms(start, at))).collect();
        assert_eq!(events, [(true, 10_000), (false, 15_000), (true, 18_000)]);
    }

    #[test]
    fn on_right_after_off_waits_only_the_rest_of_the_off_time() {
        let (relay, clock, log, start) = relay(false, 2000);
        // The relay counts the moment it was opened (driven off) as the start of off-time.
        clock.advance(Duration::from_millis(500));
        relay.on().unwrap();
        relay.off().unwrap();
        clock.advance(Duration::from_millis(1200));
        relay.on().unwrap();
        let events: Vec<(bool, u128)> = log
            .lock()
            .unwrap()
            .iter()
            .map(|&(l, at)| (l, ms(start, at)))
            .collect();
        assert_eq!(events, [(true, 2000), (false, 2000), (true, 4000)]);
    }

    #[test]
    fn active_low_inverts_levels_and_repeats_are_idempotent() {
        let (relay, clock, log, _) = relay(true, 100);
        clock.advance(Duration::from_secs(1));
        relay.on().unwrap();
        relay.on().unwrap();
        relay.off().unwrap();
        relay.off().unwrap();
        let levels: Vec<bool> = log.lock().unwrap().iter().map(|&(l, _)| l).collect();
        assert_eq!(levels, [false, true], "on = low, off = high, once each");
    }

    #[test]
    fn manual_power_prompts_and_waits_for_enter() {
        let power = ManualPower::new("rpi", std::io::Cursor::new(b"\n\n".to_vec()), Vec::new());
        power.on().unwrap();
        power.off().unwrap();
        let err = power.on().unwrap_err();
        assert!(err.to_string().contains("terminal input closed"), "{err}");
        let prompt = String::from_utf8(power.io.into_inner().unwrap().1).unwrap();
        assert!(prompt.contains("Switch power of board rpi ON"));
        assert!(prompt.contains("Switch power of board rpi OFF"));
    }
}
