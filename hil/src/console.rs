//! Console drivers and expect-style matching.
//!
//! A [`Console`] exposes the lines it has captured since it was opened, numbered from 0, and a
//! way to wait for more. [`Expect`] keeps a cursor into those lines, so successive matches
//! follow the console in order; it works the same on a serial port, a pty or QEMU.
//! [`SerialConsole`] reads a tty (USB serial adapter or pty) on a thread and writes every line
//! to a log file stamped with the time since the console was opened.

use std::fmt::Debug;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::DriverError;

/// How many lines a failure report quotes.
pub const TAIL_LINES: usize = 100;
/// Console lines that mean the kernel is in trouble.
pub const PANIC_MARKERS: [&str; 3] = ["Kernel panic", "Oops", "BUG:"];

/// One line read from a console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleLine {
    /// Time since the console was opened when the line ended.
    pub at: Duration,
    /// Without its line ending; invalid UTF-8 replaced.
    pub text: String,
}

impl std::fmt::Display for ConsoleLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{:10.3}] {}", self.at.as_secs_f64(), self.text)
    }
}

/// A board's console (labgrid's ConsoleProtocol).
pub trait Console: Send + Sync + Debug {
    /// Complete lines numbered `from` and later.
    fn lines_from(&self, from: usize) -> Vec<ConsoleLine>;
    /// How many complete lines there are.
    fn line_count(&self) -> usize;
    /// Returns when there are more than `seen` lines, or after `timeout`.
    fn wait_for_more(&self, seen: usize, timeout: Duration);
    fn write(&self, bytes: &[u8]) -> Result<(), DriverError>;
    /// Files holding the captured output.
    fn log_paths(&self) -> Vec<PathBuf>;
}

/// The last `n` lines of a console, formatted for a report.
pub fn tail(console: &dyn Console, n: usize) -> String {
    let from = console.line_count().saturating_sub(n);
    console
        .lines_from(from)
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Expect-style matching over a console, from a cursor.
#[derive(Debug)]
pub struct Expect<'a> {
    console: &'a dyn Console,
    cursor: usize,
}

/// The result of [`Expect::expect_any`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    /// Index of the pattern that matched.
    pub pattern: usize,
    /// Line number on the console.
    pub number: usize,
    pub line: ConsoleLine,
}

impl<'a> Expect<'a> {
    /// Starts matching at line `cursor`.
    pub fn new(console: &'a dyn Console, cursor: usize) -> Expect<'a> {
        Expect { console, cursor }
    }

    /// Starts matching at the next line to arrive.
    pub fn from_now(console: &'a dyn Console) -> Expect<'a> {
        Expect::new(console, console.line_count())
    }

    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// Waits for a line containing `pattern`.
    pub fn expect(&mut self, pattern: &str, timeout: Duration) -> Result<ConsoleLine, DriverError> {
        self.expect_any(&[pattern], timeout).map(|m| m.line)
    }

    /// Waits for a line containing any of `patterns`; the cursor moves past it.
    pub fn expect_any(
        &mut self,
        patterns: &[&str],
        timeout: Duration,
    ) -> Result<Matched, DriverError> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.console.lines_from(self.cursor);
            for (offset, line) in lines.iter().enumerate() {
                if let Some(pattern) = patterns.iter().position(|p| line.text.contains(p)) {
                    let number = self.cursor + offset;
                    self.cursor = number + 1;
                    return Ok(Matched {
                        pattern,
                        number,
                        line: line.clone(),
                    });
                }
            }
            self.cursor += lines.len();
            let now = Instant::now();
            if now >= deadline {
                return Err(DriverError::ExpectTimeout {
                    patterns: patterns.iter().map(|p| (*p).to_owned()).collect(),
                    timeout,
                    tail: tail(self.console, TAIL_LINES),
                });
            }
            self.console.wait_for_more(self.cursor, deadline - now);
        }
    }

    /// Sends `text` and a newline.
    pub fn send_line(&self, text: &str) -> Result<(), DriverError> {
        self.console.write(format!("{text}\n").as_bytes())
    }
}

/// Lines captured from a byte stream, shared between a reader thread and waiters.
#[derive(Debug, Default)]
struct Capture {
    state: Mutex<CaptureState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct CaptureState {
    lines: Vec<ConsoleLine>,
    partial: Vec<u8>,
}

impl Capture {
    /// Adds bytes; returns the lines they completed.
    fn push(&self, bytes: &[u8], at: Duration) -> Vec<ConsoleLine> {
        let mut state = self.state.lock().expect("capture lock is not poisoned");
        let mut done = Vec::new();
        for &byte in bytes {
            if byte == b'\n' {
                let mut raw = std::mem::take(&mut state.partial);
                while raw.last() == Some(&b'\r') {
                    raw.pop();
                }
                let line = ConsoleLine {
                    at,
                    text: String::from_utf8_lossy(&raw).into_owned(),
                };
                state.lines.push(line.clone());
                done.push(line);
            } else {
                state.partial.push(byte);
            }
        }
        drop(state);
        if !done.is_empty() {
            self.changed.notify_all();
        }
        done
    }

    fn lines_from(&self, from: usize) -> Vec<ConsoleLine> {
        let state = self.state.lock().expect("capture lock is not poisoned");
        state.lines.get(from..).unwrap_or_default().to_vec()
    }

    fn line_count(&self) -> usize {
        self.state
            .lock()
            .expect("capture lock is not poisoned")
            .lines
            .len()
    }

    fn wait_for_more(&self, seen: usize, timeout: Duration) {
        let state = self.state.lock().expect("capture lock is not poisoned");
        let _ = self
            .changed
            .wait_timeout_while(state, timeout, |s| s.lines.len() <= seen)
            .expect("capture lock is not poisoned");
    }
}

/// A serial console on a tty: a USB serial adapter, a UART, or a pty.
#[derive(Debug)]
pub struct SerialConsole {
    device: PathBuf,
    capture: Arc<Capture>,
    writer: Mutex<Box<dyn serialport::SerialPort>>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
    log: PathBuf,
}

impl SerialConsole {
    /// Opens `device` at `baud` (8N1, no flow control) and starts capturing into `log`.
    pub fn open(device: &Path, baud: u32, log: &Path) -> Result<SerialConsole, DriverError> {
        let serial_error = |e: serialport::Error| DriverError::Serial {
            device: device.to_owned(),
            reason: e.to_string(),
        };
        let port = serialport::new(device.to_string_lossy(), baud)
            .timeout(Duration::from_millis(100))
            .open()
            .map_err(serial_error)?;
        let reader_port = port.try_clone().map_err(serial_error)?;
        let log_file = File::create(log).map_err(|source| DriverError::Log {
            path: log.to_owned(),
            source,
        })?;
        let capture = Arc::new(Capture::default());
        let stop = Arc::new(AtomicBool::new(false));
        let reader = spawn_reader(
            reader_port,
            log_file,
            Arc::clone(&capture),
            Arc::clone(&stop),
        );
        Ok(SerialConsole {
            device: device.to_owned(),
            capture,
            writer: Mutex::new(port),
            stop,
            reader: Some(reader),
            log: log.to_owned(),
        })
    }
}

fn spawn_reader(
    mut port: Box<dyn serialport::SerialPort>,
    mut log: File,
    capture: Arc<Capture>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    let opened = Instant::now();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        let mut log_ok = true;
        while !stop.load(Ordering::Relaxed) {
            let read = match port.read(&mut buffer) {
                Ok(0) => continue,
                Ok(read) => read,
                Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                    continue;
                }
                // A pty whose other side closed, or an unplugged adapter: keep polling so a
                // reconnecting peer is seen, without spinning.
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            let lines = capture.push(&buffer[..read], opened.elapsed());
            if log_ok && !lines.is_empty() {
                let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
                // A failing log must not stop the capture that waiters rely on.
                log_ok = log.write_all(text.as_bytes()).is_ok();
            }
        }
    })
}

impl Console for SerialConsole {
    fn lines_from(&self, from: usize) -> Vec<ConsoleLine> {
        self.capture.lines_from(from)
    }
    fn line_count(&self) -> usize {
        self.capture.line_count()
    }
    fn wait_for_more(&self, seen: usize, timeout: Duration) {
        self.capture.wait_for_more(seen, timeout);
    }
    fn write(&self, bytes: &[u8]) -> Result<(), DriverError> {
        let mut port = self.writer.lock().expect("serial writer is not poisoned");
        port.write_all(bytes)
            .and_then(|()| port.flush())
            .map_err(|e| DriverError::Serial {
                device: self.device.clone(),
                reason: e.to_string(),
            })
    }
    fn log_paths(&self) -> Vec<PathBuf> {
        vec![self.log.clone()]
    }
}

impl Drop for SerialConsole {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// A real pty pair: the console opens the slave by path, the test plays the board on the master.
    fn pty() -> (File, PathBuf, std::os::fd::OwnedFd) {
        let pair = nix::pty::openpty(None, None).expect("openpty");
        let path = std::fs::read_link(format!("/proc/self/fd/{}", pair.slave.as_raw_fd()))
            .expect("pty slave path");
        (File::from(pair.master), path, pair.slave)
    }

    #[test]
    fn serial_console_on_a_pty_matches_in_order_logs_and_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (mut board, device, _slave) = pty();
        let log = dir.path().join("serial.log");
        let console = SerialConsole::open(&device, 115_200, &log).unwrap();

        board
            .write_all(
                b"U-Boot 2023.01\r\nHit any key\r\nStarting kernel ...\r\nLinux version 6.1\r\n",
            )
            .unwrap();
        let mut expect = Expect::new(&console, 0);
        let uboot = expect.expect("U-Boot", Duration::from_secs(5)).unwrap();
        assert_eq!(uboot.text, "U-Boot 2023.01");
        let m = expect
            .expect_any(&["Kernel panic", "Linux version"], Duration::from_secs(5))
            .unwrap();
        assert_eq!((m.pattern, m.number), (1, 3));
        // Already consumed lines do not match again.
        let err = expect
            .expect("U-Boot", Duration::from_millis(300))
            .unwrap_err();
        let DriverError::ExpectTimeout { tail, .. } = &err else {
            panic!("{err}")
        };
        assert!(tail.contains("Starting kernel ..."), "{tail}");

        expect.send_line("boot").unwrap();
        let mut echoed = [0u8; 5];
        board.read_exact(&mut echoed).unwrap();
        assert_eq!(&echoed, b"boot\n");

        // A line split over two writes is one line.
        board.write_all(b"machined v0.1 ").unwrap();
        std::thread::sleep(Duration::from_millis(150));
        board.write_all(b"starting\n").unwrap();
        let line = expect.expect("machined", Duration::from_secs(5)).unwrap();
        assert_eq!(line.text, "machined v0.1 starting");

        drop(console);
        let logged = std::fs::read_to_string(&log).unwrap();
        let logged: Vec<&str> = logged.lines().collect();
        assert_eq!(logged.len(), 5, "{logged:?}");
        assert!(logged[0].starts_with('[') && logged[0].ends_with("] U-Boot 2023.01"));
        assert!(logged[4].ends_with("] machined v0.1 starting"));
    }

    #[test]
    fn opening_a_missing_device_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = SerialConsole::open(Path::new("/dev/ttyNOPE9"), 115_200, &dir.path().join("l"))
            .unwrap_err();
        assert!(err.to_string().contains("/dev/ttyNOPE9"), "{err}");
    }
}
