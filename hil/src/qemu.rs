//! Boots a board under QEMU (TCG) and watches its serial console.
//!
//! QEMU's serial ports (usually one) write to its stdout; a reader thread appends every byte to
//! the serial log file and splits the stream into lines stamped with the time since launch. The
//! node's API port 50000 is forwarded from a host port on 127.0.0.1 through user-mode
//! networking. A board may have its NIC plugged in through the QEMU monitor once a console line
//! appears (`[qemu] plug_nic_after`).

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use talos_boards::{Board, DiskDevice, QemuMachine};
use talos_machinery::Arch;

use crate::HilError;

/// The guest port the node's API listens on.
pub const GUEST_API_PORT: u16 = 50000;

/// How many console lines a timeout error quotes.
const TAIL_LINES: usize = 100;
/// How much of QEMU's stderr is kept for error messages.
const STDERR_LIMIT: usize = 16 * 1024;
/// How long a QEMU monitor command may take.
const MONITOR_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an unterminated console line must stay unchanged to count as a prompt.
const PROMPT_SETTLE: Duration = Duration::from_millis(500);

/// The QEMU accelerator. Only TCG: this machine's /dev/kvm (PVM) runs stock kernels too slowly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Accel {
    #[default]
    Tcg,
}

impl Accel {
    fn as_str(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
        }
    }
}

/// What QEMU starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootSource {
    /// The kernel directly (`-kernel`, `-initrd`, `-append`): the board's kernel arguments
    /// plus `append_extra`, e.g. `talos.config=...`.
    Kernel {
        kernel: PathBuf,
        initrd: PathBuf,
        append_extra: Vec<String>,
    },
    /// Firmware (`-bios`: U-Boot, QEMU_EFI.fd or OVMF) that boots from the disk. On a board
    /// whose `[qemu]` names a `firmware_dtb`, `-kernel` with that device tree from the same
    /// directory instead, as the Raspberry Pi's VideoCore firmware (which QEMU cannot run)
    /// starts U-Boot.
    Firmware { bios: PathBuf },
}

/// Everything needed to boot one emulated board.
#[derive(Debug, Clone)]
pub struct QemuSpec {
    /// Must have a `[qemu]` table.
    pub board: Board,
    pub boot: BootSource,
    /// A raw disk image attached as the board's disk device.
    pub disk: Option<PathBuf>,
    /// Host port forwarded to the guest's port 50000; `None` picks a free port.
    pub api_port: Option<u16>,
    /// Receives every byte of the serial console; truncated at launch.
    pub serial_log: PathBuf,
    pub accel: Accel,
    /// When set, a guest reboot makes QEMU exit instead of restarting the guest.
    pub no_reboot: bool,
}

/// One complete line of serial output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialLine {
    /// Time since launch when the line's newline arrived.
    pub at: Duration,
    /// The line without its `\r\n`; invalid UTF-8 is replaced.
    pub text: String,
}

#[derive(Debug, Default)]
struct Console {
    lines: Vec<SerialLine>,
    partial: Vec<u8>,
    /// Index of the first line `wait_for_line` has not consumed yet. It may be
    /// `lines.len() + 1` when the match was in the partial line.
    cursor: usize,
    stdout_closed: bool,
    /// QEMU's stderr, capped at `STDERR_LIMIT`.
    stderr: String,
    stderr_closed: bool,
}

impl Console {
    /// Both of QEMU's output pipes reached end of file.
    fn drained(&self) -> bool {
        self.stdout_closed && self.stderr_closed
    }
}

#[derive(Debug, Default)]
struct Shared {
    console: Mutex<Console>,
    changed: Condvar,
}

/// Why `Shared::wait_for_line` found no line.
#[derive(Debug)]
enum Missed {
    Closed { tail: String, stderr: String },
    Timeout { tail: String },
}

impl Console {
    /// Appends serial output received at `at` (since launch).
    fn push(&mut self, chunk: &[u8], at: Duration) {
        for &byte in chunk {
            if byte == b'\n' {
                let mut raw = std::mem::take(&mut self.partial);
                while raw.last() == Some(&b'\r') {
                    raw.pop();
                }
                let text = String::from_utf8_lossy(&raw).into_owned();
                self.lines.push(SerialLine { at, text });
            } else {
                self.partial.push(byte);
            }
        }
    }
}

impl Shared {
    fn console(&self) -> MutexGuard<'_, Console> {
        self.console.lock().expect("console lock is not poisoned")
    }

    fn wait_for_line(&self, pattern: &str, timeout: Duration) -> Result<String, Missed> {
        let deadline = Instant::now() + timeout;
        let mut console = self.console();
        // When the unterminated line first matched, and its length then.
        let mut partial_match: Option<(Instant, usize)> = None;
        loop {
            let start = console.cursor.min(console.lines.len());
            if let Some(offset) = console.lines[start..]
                .iter()
                .position(|line| line.text.contains(pattern))
            {
                console.cursor = start + offset + 1;
                return Ok(console.lines[start + offset].text.clone());
            }
            let partial = (console.cursor <= console.lines.len())
                .then(|| String::from_utf8_lossy(&console.partial).into_owned())
                .filter(|partial| partial.contains(pattern));
            let now = Instant::now();
            partial_match = match (partial_match, &partial) {
                (Some((since, len)), Some(p)) if len == p.len() => Some((since, len)),
                (_, Some(p)) => Some((now, p.len())),
                (_, None) => None,
            };
            if let (Some(partial), Some((since, _))) = (partial, partial_match)
                && (now >= since + PROMPT_SETTLE || now >= deadline || console.drained())
            {
                console.cursor = console.lines.len() + 1;
                return Ok(partial);
            }
            if console.drained() {
                return Err(Missed::Closed {
                    tail: tail(&console),
                    stderr: console.stderr.clone(),
                });
            }
            if now >= deadline {
                return Err(Missed::Timeout {
                    tail: tail(&console),
                });
            }
            let wake =
                partial_match.map_or(deadline, |(since, _)| deadline.min(since + PROMPT_SETTLE));
            console = self
                .changed
                .wait_timeout(console, wake.saturating_duration_since(now))
                .expect("console lock is not poisoned")
                .0;
        }
    }
}

/// A running QEMU guest. Dropping it kills QEMU.
#[derive(Debug)]
pub struct QemuBoard {
    child: Mutex<Child>,
    shared: Arc<Shared>,
    readers: Vec<JoinHandle<()>>,
    api_port: u16,
    launched_at: Instant,
    serial_log: PathBuf,
}

/// The QEMU system emulator for an architecture.
pub fn qemu_binary(arch: Arch) -> &'static str {
    match arch {
        Arch::Arm64 => "qemu-system-aarch64",
        Arch::Amd64 => "qemu-system-x86_64",
    }
}

impl QemuBoard {
    /// Starts QEMU. Returns once the process runs; the guest boots in the background.
    pub fn launch(spec: QemuSpec) -> Result<QemuBoard, HilError> {
        let machine = spec
            .board
            .qemu
            .as_ref()
            .ok_or_else(|| HilError::NotEmulated {
                board: spec.board.name.clone(),
            })?;
        let inputs = match &spec.boot {
            BootSource::Kernel { kernel, initrd, .. } => {
                vec![("kernel", Some(kernel)), ("initrd", Some(initrd))]
            }
            BootSource::Firmware { bios } => vec![("firmware", Some(bios))],
        };
        let dtb = firmware_dtb(&spec.boot, machine);
        let more = [("disk", spec.disk.as_ref()), ("device tree", dtb.as_ref())];
        for (what, path) in inputs.into_iter().chain(more) {
            if let Some(path) = path.filter(|p| !p.is_file()) {
                return Err(HilError::MissingInput {
                    what,
                    path: path.clone(),
                });
            }
        }
        let api_port = match spec.api_port {
            Some(port) => port,
            None => free_port()?,
        };
        let log = File::create(&spec.serial_log).map_err(|source| HilError::SerialLog {
            path: spec.serial_log.clone(),
            source,
        })?;

        let binary = qemu_binary(spec.board.arch);
        let launched_at = Instant::now();
        let mut child = Command::new(binary)
            .args(qemu_args(&spec, machine, api_port))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| HilError::Spawn {
                binary: binary.to_owned(),
                source,
            })?;

        let shared = Arc::new(Shared::default());
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let readers = vec![
            spawn_console_reader(
                stdout,
                log,
                Arc::clone(&shared),
                launched_at,
                late_nic(&spec, machine),
            ),
            spawn_stderr_reader(stderr, Arc::clone(&shared)),
        ];
        Ok(QemuBoard {
            child: Mutex::new(child),
            shared,
            readers,
            api_port,
            launched_at,
            serial_log: spec.serial_log,
        })
    }

    /// The host port on 127.0.0.1 that reaches the guest's API port.
    pub fn api_port(&self) -> u16 {
        self.api_port
    }

    /// When QEMU was started; measure boot times from here.
    pub fn launched_at(&self) -> Instant {
        self.launched_at
    }

    pub fn serial_log(&self) -> &Path {
        &self.serial_log
    }

    /// Waits for a serial line containing `pattern` and returns it.
    ///
    /// Matching starts after the line of the previous successful match, so successive calls
    /// follow the console in order (a second boot's lines after a reboot, say). A partial line
    /// (no newline yet) matches once it has stayed unchanged for `PROMPT_SETTLE`, as a prompt
    /// does; a line still being printed is returned whole when its newline arrives.
    pub fn wait_for_line(&self, pattern: &str, timeout: Duration) -> Result<String, HilError> {
        self.shared
            .wait_for_line(pattern, timeout)
            .map_err(|missed| match missed {
                Missed::Closed { tail, stderr } => HilError::ConsoleClosed {
                    pattern: pattern.to_owned(),
                    status: self.status_text(),
                    stderr,
                    tail,
                },
                Missed::Timeout { tail } => HilError::Timeout {
                    pattern: pattern.to_owned(),
                    timeout,
                    tail,
                },
            })
    }

    /// All complete serial lines so far.
    pub fn serial_lines(&self) -> Vec<String> {
        self.console()
            .lines
            .iter()
            .map(|line| line.text.clone())
            .collect()
    }

    /// All complete serial lines so far, with their arrival times.
    pub fn serial_lines_timed(&self) -> Vec<SerialLine> {
        self.console().lines.clone()
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.child().id()
    }

    /// QEMU's exit status if it has exited, without waiting.
    pub fn try_exit_status(&self) -> Result<Option<ExitStatus>, HilError> {
        self.child().try_wait().map_err(HilError::Process)
    }

    /// Pulls the plug: SIGKILL to QEMU. Harmless if QEMU already exited.
    pub fn power_off_hard(&self) -> Result<(), HilError> {
        self.child().kill().map_err(HilError::Process)
    }

    /// Waits for QEMU to exit, then for the readers to drain its output.
    pub fn wait_exit(&self, timeout: Duration) -> Result<ExitStatus, HilError> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child().try_wait().map_err(HilError::Process)? {
                break status;
            }
            if Instant::now() >= deadline {
                return Err(HilError::StillRunning { timeout });
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut console = self.console();
        while !console.drained() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            console = self
                .shared
                .changed
                .wait_timeout(console, deadline - now)
                .expect("console lock is not poisoned")
                .0;
        }
        Ok(status)
    }

    fn console(&self) -> MutexGuard<'_, Console> {
        self.shared.console()
    }

    fn child(&self) -> MutexGuard<'_, Child> {
        self.child.lock().expect("child lock is not poisoned")
    }

    fn status_text(&self) -> String {
        match self.child().try_wait() {
            Ok(Some(status)) => status.to_string(),
            Ok(None) => "still running".to_owned(),
            Err(err) => format!("status unknown: {err}"),
        }
    }
}

impl Drop for QemuBoard {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        // Errors here mean QEMU is already gone, which is what Drop wants.
        let _ = child.kill();
        let _ = child.wait();
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

fn qemu_args(spec: &QemuSpec, machine: &QemuMachine, api_port: u16) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let push = |args: &mut Vec<OsString>, items: &[&str]| {
        args.extend(items.iter().map(OsString::from));
    };
    push(
        &mut args,
        &["-nodefaults", "-no-user-config", "-display", "none"],
    );
    push(
        &mut args,
        &["-machine", &machine.machine, "-accel", spec.accel.as_str()],
    );
    push(&mut args, &["-cpu", &machine.cpu]);
    push(&mut args, &["-m", &machine.memory_mib.to_string()]);
    push(&mut args, &["-smp", &machine.smp.to_string()]);
    if machine.serial_ports == 1 {
        push(&mut args, &["-serial", "stdio"]);
    } else {
        // Every port writes to the one console stream.
        push(&mut args, &["-chardev", "stdio,id=serial,mux=on"]);
        for _ in 0..machine.serial_ports {
            push(&mut args, &["-serial", "chardev:serial"]);
        }
    }
    let hostfwd = format!("user,id=n0,hostfwd=tcp:127.0.0.1:{api_port}-:{GUEST_API_PORT}");
    push(&mut args, &["-netdev", &hostfwd]);
    match late_nic(spec, machine) {
        Some(late) => {
            let mut monitor = OsString::from("unix:");
            monitor.push(escape_option_value(&late.monitor));
            monitor.push(",server=on,wait=off");
            args.extend(["-monitor".into(), monitor]);
        }
        None => push(&mut args, &["-device", &nic_device(machine)]),
    }
    if spec.no_reboot {
        push(&mut args, &["-no-reboot"]);
    }
    args.extend(machine.extra_args.iter().map(OsString::from));

    match &spec.boot {
        BootSource::Kernel {
            kernel,
            initrd,
            append_extra,
        } => {
            let append = spec
                .board
                .kernel_args
                .iter()
                .chain(append_extra)
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(" ");
            args.extend(["-append".into(), append.into()]);
            args.extend(["-kernel".into(), kernel.clone().into_os_string()]);
            args.extend(["-initrd".into(), initrd.clone().into_os_string()]);
        }
        BootSource::Firmware { bios } => match firmware_dtb(&spec.boot, machine) {
            Some(dtb) => {
                args.extend(["-kernel".into(), bios.clone().into_os_string()]);
                args.extend(["-dtb".into(), dtb.into_os_string()]);
            }
            None => args.extend(["-bios".into(), bios.clone().into_os_string()]),
        },
    }
    if let Some(disk) = &spec.disk {
        let sd = machine.disk_device == DiskDevice::SdCard;
        let mut drive = OsString::from(if sd {
            "if=sd,format=raw,file="
        } else {
            "if=none,id=d0,format=raw,file="
        });
        drive.push(escape_option_value(disk));
        args.push("-drive".into());
        args.push(drive);
        if !sd {
            args.push("-device".into());
            args.push(format!("{},drive=d0", machine.disk_device).into());
        }
    }
    args
}

/// The NIC's `-device` value.
fn nic_device(machine: &QemuMachine) -> String {
    format!("{},netdev=n0", machine.nic_device)
}

/// A NIC plugged in through the QEMU monitor once the console shows `after`.
#[derive(Debug, Clone)]
struct LateNic {
    after: String,
    device: String,
    monitor: PathBuf,
}

impl LateNic {
    fn plug(&self) -> std::io::Result<()> {
        let mut monitor = UnixStream::connect(&self.monitor)?;
        monitor.set_read_timeout(Some(MONITOR_TIMEOUT))?;
        read_to_prompt(&mut monitor)?;
        monitor.write_all(format!("device_add {}\n", self.device).as_bytes())?;
        let reply = read_to_prompt(&mut monitor)?;
        match reply.find("Error") {
            Some(at) => {
                let line = reply[at..].lines().next().unwrap_or_default();
                Err(std::io::Error::other(line.trim().to_owned()))
            }
            None => Ok(()),
        }
    }

    /// Plugs the NIC in and notes the outcome as a console line, so a failure shows in the
    /// lines a timeout quotes. The note is not in the serial log file.
    fn plug_and_note(&self, shared: &Shared, launched_at: Instant) {
        let text = match self.plug() {
            Ok(()) => format!("hil: plugged in {}", self.device),
            Err(e) => format!("hil: cannot plug in {}: {e}", self.device),
        };
        let at = launched_at.elapsed();
        shared
            .console
            .lock()
            .expect("console lock is not poisoned")
            .lines
            .push(SerialLine { at, text });
        shared.changed.notify_all();
    }
}

/// The board's `plug_nic_after`, with the monitor socket next to the serial log.
fn late_nic(spec: &QemuSpec, machine: &QemuMachine) -> Option<LateNic> {
    Some(LateNic {
        after: machine.plug_nic_after.clone()?,
        device: nic_device(machine),
        monitor: spec.serial_log.with_extension("monitor"),
    })
}

/// Reads QEMU's human monitor up to its prompt.
fn read_to_prompt(monitor: &mut UnixStream) -> std::io::Result<String> {
    let mut reply = Vec::new();
    let mut buffer = [0u8; 1024];
    while !reply.ends_with(b"(qemu) ") {
        match monitor.read(&mut buffer)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            read => reply.extend_from_slice(&buffer[..read]),
        }
    }
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// The device tree a firmware boot passes with `-dtb`: the board's `firmware_dtb`, next to
/// the firmware file.
fn firmware_dtb(boot: &BootSource, machine: &QemuMachine) -> Option<PathBuf> {
    match boot {
        BootSource::Firmware { bios } => Some(bios.with_file_name(machine.firmware_dtb.as_ref()?)),
        BootSource::Kernel { .. } => None,
    }
}

/// QEMU option values escape a comma by doubling it.
fn escape_option_value(path: &Path) -> OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut escaped = Vec::new();
    for &byte in path.as_os_str().as_bytes() {
        escaped.push(byte);
        if byte == b',' {
            escaped.push(b',');
        }
    }
    OsString::from_vec(escaped)
}

fn free_port() -> Result<u16, HilError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(HilError::NoFreePort)?;
    Ok(listener.local_addr().map_err(HilError::NoFreePort)?.port())
}

fn tail(console: &Console) -> String {
    let start = console.lines.len().saturating_sub(TAIL_LINES);
    let mut text: Vec<String> = console.lines[start..]
        .iter()
        .map(|line| format!("[{:8.3}] {}", line.at.as_secs_f64(), line.text))
        .collect();
    if !console.partial.is_empty() {
        text.push(format!(
            "[ partial] {}",
            String::from_utf8_lossy(&console.partial)
        ));
    }
    text.join("\n")
}

fn spawn_console_reader(
    mut stdout: ChildStdout,
    mut log: File,
    shared: Arc<Shared>,
    launched_at: Instant,
    mut late_nic: Option<LateNic>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        let mut log_ok = true;
        loop {
            let read = match stdout.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            let chunk = &buffer[..read];
            // A failing log must not stop the in-memory console that tests wait on.
            log_ok = log_ok && log.write_all(chunk).and_then(|()| log.flush()).is_ok();
            let at = launched_at.elapsed();
            let mut console = shared.console();
            let first_new = console.lines.len();
            console.push(chunk, at);
            let plug = late_nic.take_if(|late| {
                console.lines[first_new..]
                    .iter()
                    .any(|line| line.text.contains(&late.after))
            });
            drop(console);
            if let Some(late) = plug {
                // On its own thread: QEMU answers the monitor only while its output drains.
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || late.plug_and_note(&shared, launched_at));
            }
            shared.changed.notify_all();
        }
        shared
            .console
            .lock()
            .expect("console lock is not poisoned")
            .stdout_closed = true;
        shared.changed.notify_all();
    })
}

fn spawn_stderr_reader(mut stderr: ChildStderr, shared: Arc<Shared>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buffer = [0u8; 1024];
        while let Ok(read @ 1..) = stderr.read(&mut buffer) {
            let mut console = shared.console.lock().expect("console lock is not poisoned");
            if console.stderr.len() < STDERR_LIMIT {
                console
                    .stderr
                    .push_str(&String::from_utf8_lossy(&buffer[..read]));
            }
        }
        shared
            .console
            .lock()
            .expect("console lock is not poisoned")
            .stderr_closed = true;
        shared.changed.notify_all();
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn board(toml_text: &str) -> Board {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("b");
        fs::create_dir(&dir).expect("mkdir");
        fs::write(dir.join("board.toml"), toml_text).expect("write");
        Board::load(&dir.join("board.toml")).expect("valid board")
    }

    const AMD64: &str = r#"
name = "b"
arch = "amd64"
description = "test"
console = "ttyS0"
kernel_args = ["console=ttyS0", "quiet"]
modules = []
[qemu]
machine = "q35"
cpu = "max"
memory_mib = 256
smp = 2
nic_device = "virtio-net-pci"
disk_device = "virtio-blk-pci"
extra_args = ["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
exit_on_poweroff = false
"#;

    fn spec(board: Board) -> QemuSpec {
        QemuSpec {
            board,
            boot: BootSource::Kernel {
                kernel: "/k/bzImage".into(),
                initrd: "/k/initrd".into(),
                append_extra: vec!["talos.config=http://10.0.2.2/c".into()],
            },
            disk: Some("/img/a,b.raw".into()),
            api_port: Some(1234),
            serial_log: "/tmp/unused".into(),
            accel: Accel::Tcg,
            no_reboot: true,
        }
    }

    fn arg_after<'a>(args: &'a [OsString], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].to_str().expect("utf-8 arg"))
            .collect()
    }

    #[test]
    fn command_line_wires_board_console_network_disk_and_extras() {
        let spec = spec(board(AMD64));
        let machine = spec.board.qemu.clone().expect("qemu");
        let args = qemu_args(&spec, &machine, 1234);
        assert_eq!(arg_after(&args, "-machine"), ["q35"]);
        assert_eq!(arg_after(&args, "-accel"), ["tcg"]);
        assert_eq!(arg_after(&args, "-cpu"), ["max"]);
        assert_eq!(arg_after(&args, "-m"), ["256"]);
        assert_eq!(arg_after(&args, "-smp"), ["2"]);
        assert_eq!(arg_after(&args, "-serial"), ["stdio"]);
        assert_eq!(
            arg_after(&args, "-append"),
            ["console=ttyS0 quiet talos.config=http://10.0.2.2/c"]
        );
        assert_eq!(
            arg_after(&args, "-netdev"),
            ["user,id=n0,hostfwd=tcp:127.0.0.1:1234-:50000"]
        );
        assert_eq!(
            arg_after(&args, "-device"),
            [
                "virtio-net-pci,netdev=n0",
                "isa-debug-exit,iobase=0xf4,iosize=0x04",
                "virtio-blk-pci,drive=d0"
            ]
        );
        assert_eq!(
            arg_after(&args, "-drive"),
            ["if=none,id=d0,format=raw,file=/img/a,,b.raw"]
        );
        assert_eq!(arg_after(&args, "-kernel"), ["/k/bzImage"]);
        assert!(args.iter().any(|a| a == "-no-reboot"));
        assert!(args.iter().any(|a| a == "-nodefaults"));

        let mut rebooting = spec.clone();
        rebooting.no_reboot = false;
        rebooting.disk = None;
        let args = qemu_args(&rebooting, &machine, 1234);
        assert!(!args.iter().any(|a| a == "-no-reboot"));
        assert!(arg_after(&args, "-drive").is_empty());
    }

    #[test]
    fn raspi_starts_u_boot_as_kernel_with_its_dtb_and_an_sd_card_on_two_serial_ports() {
        let pi = AMD64
            .replace("\"amd64\"", "\"arm64\"")
            .replace("ttyS0", "ttyAMA0")
            .replace("\"q35\"", "\"raspi3b\"")
            .replace("virtio-net-pci", "usb-net")
            .replace("virtio-blk-pci", "sd-card")
            .replace(
                "extra_args",
                "serial_ports = 2\nfirmware_dtb = \"bcm2837-rpi-3-b.dtb\"\n\
                 plug_nic_after = \"DWC OTG Controller\"\nextra_args",
            )
            + "[dtb]\nsource = \"linux-image\"\nlayout = \"firmware-root\"\n\
               files = [\"broadcom/bcm2837-rpi-3-b.dtb\"]\n";
        let mut spec = spec(board(&pi));
        spec.boot = BootSource::Firmware {
            bios: "/sd/u-boot.bin".into(),
        };
        let machine = spec.board.qemu.clone().expect("qemu");
        let args = qemu_args(&spec, &machine, 1234);
        assert_eq!(arg_after(&args, "-kernel"), ["/sd/u-boot.bin"]);
        assert_eq!(arg_after(&args, "-dtb"), ["/sd/bcm2837-rpi-3-b.dtb"]);
        assert!(arg_after(&args, "-append").is_empty());
        assert_eq!(
            arg_after(&args, "-drive"),
            ["if=sd,format=raw,file=/img/a,,b.raw"]
        );
        // The NIC comes later, through the monitor.
        assert_eq!(
            arg_after(&args, "-device"),
            ["isa-debug-exit,iobase=0xf4,iosize=0x04"]
        );
        assert_eq!(
            arg_after(&args, "-monitor"),
            ["unix:/tmp/unused.monitor,server=on,wait=off"]
        );
        let late = late_nic(&spec, &machine).expect("late NIC");
        assert_eq!(
            (late.after.as_str(), late.device.as_str()),
            ("DWC OTG Controller", "usb-net,netdev=n0")
        );
        assert_eq!(arg_after(&args, "-chardev"), ["stdio,id=serial,mux=on"]);
        assert_eq!(
            arg_after(&args, "-serial"),
            ["chardev:serial", "chardev:serial"]
        );
        assert!(arg_after(&args, "-bios").is_empty());

        let err = QemuBoard::launch(spec).expect_err("no u-boot.bin");
        assert!(
            matches!(
                err,
                HilError::MissingInput {
                    what: "firmware",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    /// A stand-in for QEMU's human monitor that answers one command with `reply`.
    fn fake_monitor(socket: &Path, reply: &'static str) -> JoinHandle<String> {
        let listener = std::os::unix::net::UnixListener::bind(socket).expect("bind");
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            stream
                .write_all(b"QEMU monitor\r\n(qemu) ")
                .expect("banner");
            let mut command = Vec::new();
            let mut byte = [0u8];
            while byte[0] != b'\n' {
                stream.read_exact(&mut byte).expect("command");
                command.push(byte[0]);
            }
            stream.write_all(reply.as_bytes()).expect("reply");
            String::from_utf8(command).expect("utf-8")
        })
    }

    #[test]
    fn a_late_nic_is_plugged_in_through_the_monitor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let late = LateNic {
            after: "x".into(),
            device: "usb-net,netdev=n0".into(),
            monitor: dir.path().join("ok.monitor"),
        };
        let monitor = fake_monitor(&late.monitor, "\r\n(qemu) ");
        late.plug().expect("plugged");
        assert_eq!(
            monitor.join().expect("monitor"),
            "device_add usb-net,netdev=n0\n"
        );

        let refused = LateNic {
            monitor: dir.path().join("refused.monitor"),
            ..late
        };
        let monitor = fake_monitor(
            &refused.monitor,
            "\r\nError: Bus 'usb-bus.0' not found\r\n(qemu) ",
        );
        let err = refused.plug().expect_err("QEMU refused");
        assert_eq!(err.to_string(), "Error: Bus 'usb-bus.0' not found");
        monitor.join().expect("monitor");
    }

    #[test]
    fn launch_rejects_boards_without_qemu_and_missing_files() {
        let no_qemu = AMD64.split("[qemu]").next().expect("head");
        let err = QemuBoard::launch(spec(board(no_qemu))).expect_err("no qemu table");
        assert!(matches!(err, HilError::NotEmulated { ref board } if board == "b"));

        let err = QemuBoard::launch(spec(board(AMD64))).expect_err("no kernel");
        assert!(
            matches!(err, HilError::MissingInput { what: "kernel", .. }),
            "{err:?}"
        );
    }

    fn console_fed_by(steps: Vec<(Duration, &'static [u8])>) -> Arc<Shared> {
        let shared = Arc::new(Shared::default());
        let feeder = Arc::clone(&shared);
        std::thread::spawn(move || {
            for (pause, bytes) in steps {
                std::thread::sleep(pause);
                feeder.console().push(bytes, Duration::ZERO);
                feeder.changed.notify_all();
            }
        });
        shared
    }

    #[test]
    fn a_line_matched_while_printing_is_returned_whole() {
        let ms = Duration::from_millis;
        let shared = console_fed_by(vec![
            (ms(0), b"INFO booted from slot A"),
            (ms(100), b" (Normal) disk=/dev/"),
            (ms(100), b"vda\r\nnext"),
        ]);
        let line = shared
            .wait_for_line("booted from slot", Duration::from_secs(5))
            .unwrap();
        assert_eq!(line, "INFO booted from slot A (Normal) disk=/dev/vda");
        assert_eq!(shared.console().cursor, 1);
    }

    #[test]
    fn a_prompt_without_newline_matches_once_settled_and_waits_follow_on() {
        let ms = Duration::from_millis;
        let shared = console_fed_by(vec![
            (ms(0), b"U-Boot 2023\nHit any key to stop autoboot: "),
            (ms(0), b"2 "),
        ]);
        let started = Instant::now();
        let prompt = shared
            .wait_for_line("stop autoboot", Duration::from_secs(5))
            .unwrap();
        assert!(prompt.starts_with("Hit any key"), "{prompt}");
        assert!(started.elapsed() >= PROMPT_SETTLE);
        // The same prompt is not matched twice, and a later timeout names the tail.
        let missed = shared.wait_for_line("stop autoboot", ms(50)).unwrap_err();
        assert!(matches!(missed, Missed::Timeout { tail } if tail.contains("U-Boot 2023")));
    }

    #[test]
    fn a_closed_console_ends_the_wait_with_its_stderr() {
        let shared = console_fed_by(vec![(Duration::ZERO, b"booting\n")]);
        {
            let mut console = shared.console();
            console.stdout_closed = true;
            console.stderr_closed = true;
            console.stderr = "qemu: could not open disk".to_owned();
        }
        let missed = shared
            .wait_for_line("API ready", Duration::from_secs(5))
            .unwrap_err();
        assert!(
            matches!(missed, Missed::Closed { stderr, .. } if stderr.contains("could not open"))
        );
    }

    #[test]
    fn free_ports_are_bindable() {
        let port = free_port().expect("free port");
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("port is free");
    }
}
