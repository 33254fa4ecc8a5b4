//! Boards described as data and validated.
//!
//! Each board is `boards/<name>/board.toml`. This crate parses the file strictly (unknown
//! fields are errors) and validates it; a loaded [`Board`] is always valid. Errors name the
//! file and the field.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use talos_machinery::Arch;

/// The file name of a board description inside its directory.
pub const BOARD_FILE: &str = "board.toml";

/// One board: what the image builder and the HIL rig need to know about it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Board {
    /// Equal to the board's directory name.
    pub name: String,
    pub arch: Arch,
    pub description: String,
    /// The kernel's console device, e.g. `ttyAMA0`.
    pub console: String,
    /// Kernel command line words; one of them is `console=<console>`.
    pub kernel_args: Vec<String>,
    /// Kernel modules the initramfs carries and the node loads, e.g. `virtio_net`.
    pub modules: Vec<String>,
    /// Present when the board can be emulated by QEMU.
    #[serde(default)]
    pub qemu: Option<QemuMachine>,
}

/// How to emulate the board in QEMU.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct QemuMachine {
    /// `-M` value, e.g. `virt`, `q35`.
    pub machine: String,
    /// `-cpu` value, e.g. `cortex-a72`, `max`.
    pub cpu: String,
    pub memory_mib: u32,
    pub smp: u32,
    pub nic_device: NicDevice,
    pub disk_device: DiskDevice,
    /// Further QEMU arguments, e.g. an `isa-debug-exit` device.
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// Whether a guest power-off makes QEMU exit (PSCI on arm64 `virt`).
    pub exit_on_poweroff: bool,
}

/// The emulated network card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NicDevice {
    /// virtio-net on the virtio-mmio transport.
    VirtioNetDevice,
    VirtioNetPci,
}

/// The emulated disk controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiskDevice {
    /// virtio-blk on the virtio-mmio transport.
    VirtioBlkDevice,
    VirtioBlkPci,
}

impl NicDevice {
    /// The QEMU `-device` driver name.
    pub fn as_str(self) -> &'static str {
        match self {
            NicDevice::VirtioNetDevice => "virtio-net-device",
            NicDevice::VirtioNetPci => "virtio-net-pci",
        }
    }

    fn needs_mmio(self) -> bool {
        self == NicDevice::VirtioNetDevice
    }
}

impl DiskDevice {
    /// The QEMU `-device` driver name.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskDevice::VirtioBlkDevice => "virtio-blk-device",
            DiskDevice::VirtioBlkPci => "virtio-blk-pci",
        }
    }

    fn needs_mmio(self) -> bool {
        self == DiskDevice::VirtioBlkDevice
    }
}

impl fmt::Display for NicDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for DiskDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    #[error("Cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, a missing or unknown field, or a value of the wrong type.
    #[error("Board file {path}, line {line}: {detail}")]
    Parse {
        path: PathBuf,
        line: usize,
        detail: String,
    },
    #[error("Board file {path}: field `{field}` {reason}")]
    Invalid {
        path: PathBuf,
        field: String,
        reason: String,
    },
    #[error("No board named {name:?} in {dir} (available: {available})")]
    NotFound {
        name: String,
        dir: PathBuf,
        available: String,
    },
}

impl Board {
    /// Reads, parses and validates one board file.
    pub fn load(path: &Path) -> Result<Board, BoardError> {
        let text = fs::read_to_string(path).map_err(|source| BoardError::Read {
            path: path.to_owned(),
            source,
        })?;
        let board: Board = toml::from_str(&text).map_err(|e| parse_error(path, &text, &e))?;
        board.validate(path)?;
        Ok(board)
    }

    /// The kernel command line: `kernel_args` joined by spaces.
    pub fn kernel_cmdline(&self) -> String {
        self.kernel_args.join(" ")
    }

    fn validate(&self, path: &Path) -> Result<(), BoardError> {
        let invalid = |field: &str, reason: String| BoardError::Invalid {
            path: path.to_owned(),
            field: field.to_owned(),
            reason,
        };

        if !is_board_name(&self.name) {
            return Err(invalid(
                "name",
                format!(
                    "{:?} must be lowercase letters, digits and '-', starting with a letter",
                    self.name
                ),
            ));
        }
        if path.file_name().is_some_and(|f| f == BOARD_FILE) {
            let dir = path
                .parent()
                .and_then(Path::file_name)
                .and_then(|d| d.to_str());
            if let Some(dir) = dir.filter(|d| *d != self.name) {
                return Err(invalid(
                    "name",
                    format!(
                        "{:?} differs from the board's directory name {dir:?}",
                        self.name
                    ),
                ));
            }
        }
        if self.description.trim().is_empty() {
            return Err(invalid("description", "is empty".into()));
        }
        if !is_word(&self.console) || self.console.contains('/') || self.console.contains('=') {
            return Err(invalid(
                "console",
                format!(
                    "{:?} must be a device name such as ttyAMA0 (no /dev/, no spaces)",
                    self.console
                ),
            ));
        }

        let mut seen = BTreeSet::new();
        for arg in &self.kernel_args {
            if !is_word(arg) {
                return Err(invalid(
                    "kernel_args",
                    format!("entry {arg:?} must be one non-empty word without whitespace"),
                ));
            }
            if !seen.insert(arg.as_str()) {
                return Err(invalid("kernel_args", format!("lists {arg:?} twice")));
            }
        }
        let console_arg = format!("console={}", self.console);
        let has_console = self
            .kernel_args
            .iter()
            .any(|a| *a == console_arg || a.starts_with(&format!("{console_arg},")));
        if !has_console {
            return Err(invalid(
                "kernel_args",
                format!("must contain {console_arg:?} to match `console`"),
            ));
        }

        let mut modules = BTreeSet::new();
        for module in &self.modules {
            if module.is_empty()
                || !module
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
            {
                return Err(invalid(
                    "modules",
                    format!(
                        "entry {module:?} must be a module name such as virtio_net (no path, no .ko)"
                    ),
                ));
            }
            if !modules.insert(module.replace('-', "_")) {
                return Err(invalid("modules", format!("lists {module:?} twice")));
            }
        }

        if let Some(qemu) = &self.qemu {
            qemu.validate(&invalid)?;
        }
        Ok(())
    }
}

impl QemuMachine {
    fn validate(&self, invalid: &dyn Fn(&str, String) -> BoardError) -> Result<(), BoardError> {
        if !is_word(&self.machine) {
            return Err(invalid(
                "qemu.machine",
                format!("{:?} must be one non-empty word", self.machine),
            ));
        }
        if !is_word(&self.cpu) {
            return Err(invalid(
                "qemu.cpu",
                format!("{:?} must be one non-empty word", self.cpu),
            ));
        }
        if self.memory_mib < 128 {
            return Err(invalid(
                "qemu.memory_mib",
                format!(
                    "{} is below the 128 MiB a node needs to boot",
                    self.memory_mib
                ),
            ));
        }
        if !(1..=64).contains(&self.smp) {
            return Err(invalid(
                "qemu.smp",
                format!("{} must be between 1 and 64", self.smp),
            ));
        }
        let has_mmio_bus = ["virt", "microvm"]
            .iter()
            .any(|m| self.machine == *m || self.machine.starts_with(&format!("{m}-")));
        if self.nic_device.needs_mmio() && !has_mmio_bus {
            return Err(invalid(
                "qemu.nic_device",
                format!(
                    "{} needs a virtio-mmio bus, which machine {:?} lacks",
                    self.nic_device, self.machine
                ),
            ));
        }
        if self.disk_device.needs_mmio() && !has_mmio_bus {
            return Err(invalid(
                "qemu.disk_device",
                format!(
                    "{} needs a virtio-mmio bus, which machine {:?} lacks",
                    self.disk_device, self.machine
                ),
            ));
        }
        if let Some(arg) = self.extra_args.iter().find(|a| a.is_empty()) {
            return Err(invalid(
                "qemu.extra_args",
                format!("entry {arg:?} is empty"),
            ));
        }
        Ok(())
    }
}

/// Loads every `<dir>/<name>/board.toml` under `boards_dir`, sorted by name.
///
/// Subdirectories without a board file (such as the crate's own `src/`) are not boards.
pub fn load_all(boards_dir: &Path) -> Result<Vec<Board>, BoardError> {
    board_files(boards_dir)?
        .iter()
        .map(|path| Board::load(path))
        .collect()
}

/// Loads the board called `name` from `boards_dir`.
pub fn find(boards_dir: &Path, name: &str) -> Result<Board, BoardError> {
    let path = boards_dir.join(name).join(BOARD_FILE);
    if is_board_name(name) && path.is_file() {
        return Board::load(&path);
    }
    let available: Vec<String> = board_files(boards_dir)?
        .iter()
        .filter_map(|p| p.parent()?.file_name()?.to_str().map(str::to_owned))
        .collect();
    Err(BoardError::NotFound {
        name: name.to_owned(),
        dir: boards_dir.to_owned(),
        available: if available.is_empty() {
            "none".to_owned()
        } else {
            available.join(", ")
        },
    })
}

fn board_files(boards_dir: &Path) -> Result<Vec<PathBuf>, BoardError> {
    let read_error = |source| BoardError::Read {
        path: boards_dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in fs::read_dir(boards_dir).map_err(read_error)? {
        let file = entry.map_err(read_error)?.path().join(BOARD_FILE);
        if file.is_file() {
            files.push(file);
        }
    }
    files.sort();
    Ok(files)
}

fn parse_error(path: &Path, text: &str, error: &toml::de::Error) -> BoardError {
    let start = error.span().map_or(0, |span| span.start);
    let line = text[..start.min(text.len())].matches('\n').count() + 1;
    let source_line = text.lines().nth(line - 1).unwrap_or("").trim();
    let detail = if source_line.is_empty() {
        error.message().to_owned()
    } else {
        format!("{} (at `{source_line}`)", error.message())
    };
    BoardError::Parse {
        path: path.to_owned(),
        line,
        detail,
    }
}

fn is_board_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn is_word(value: &str) -> bool {
    !value.is_empty() && !value.chars().any(char::is_whitespace)
}
