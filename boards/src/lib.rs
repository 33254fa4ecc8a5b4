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

mod firmware;
mod memory;
mod pi;

pub use firmware::{
    Artifact, BootKind, DiskLayout, DtbLayout, DtbSource, Dtbs, Firmware, Placement, SECTOR_BYTES,
};
pub use memory::{MEMORY_DIR, MemoryProfile, Service, ServiceMemory};
pub use pi::{PI_OVERLAY_DIR, PiConfig};

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
    /// Drivers the initramfs carries, with their `modules.alias` lines, for the node to load
    /// when a matching device is present or plugged in (USB NICs, for example).
    #[serde(default)]
    pub modules_on_demand: Vec<String>,
    /// Present when the board can be emulated by QEMU.
    #[serde(default)]
    pub qemu: Option<QemuMachine>,
    /// Boot chains (variants); the first is the default. Empty: the kernel is started
    /// directly (QEMU `-kernel`).
    #[serde(default)]
    pub firmware: Vec<Firmware>,
    #[serde(default)]
    pub dtb: Option<Dtbs>,
    #[serde(default)]
    pub disk: DiskLayout,
    /// Raspberry Pi firmware settings, rendered by [`Board::config_txt`].
    #[serde(default)]
    pub config_txt: Option<PiConfig>,
    /// Our device-tree overlays (`dtb/overlays/<name>.dts`) applied by default, on boards
    /// that apply overlays (see [`Board::applies_overlays`]).
    #[serde(default)]
    pub overlays: Vec<String>,
    /// Name of a profile in `boards/memory/`.
    #[serde(default)]
    pub memory_profile: Option<String>,
    /// The profile `memory_profile` names, read by [`Board::load`].
    #[serde(skip)]
    pub memory: Option<MemoryProfile>,
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
    /// Serial ports, all on the console stream (raspi3b: the PL011, then the mini-UART,
    /// where U-Boot prints unless the device tree moves its console).
    #[serde(default = "one_serial_port")]
    pub serial_ports: u32,
    /// Set where QEMU cannot run the board's boot firmware (the Pi's VideoCore): QEMU then
    /// starts the bootloader with `-kernel`, as that firmware does, with this device tree,
    /// a file next to the bootloader.
    #[serde(default)]
    pub firmware_dtb: Option<String>,
    /// Plug the NIC in (QEMU monitor `device_add`) only once a console line contains this
    /// text. QEMU's dwc2 USB model lacks a core soft reset, so Linux never sees a USB
    /// device that U-Boot has already enumerated.
    #[serde(default)]
    pub plug_nic_after: Option<String>,
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
    /// A USB CDC Ethernet adapter, for machines whose only bus is USB (raspi3b).
    UsbNet,
}

/// The emulated disk controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiskDevice {
    /// virtio-blk on the virtio-mmio transport.
    VirtioBlkDevice,
    VirtioBlkPci,
    /// The machine's SD card slot (`-drive if=sd`); the image size must be a power of two.
    SdCard,
}

impl NicDevice {
    /// The QEMU `-device` driver name.
    pub fn as_str(self) -> &'static str {
        match self {
            NicDevice::VirtioNetDevice => "virtio-net-device",
            NicDevice::VirtioNetPci => "virtio-net-pci",
            NicDevice::UsbNet => "usb-net",
        }
    }

    fn needs_mmio(self) -> bool {
        self == NicDevice::VirtioNetDevice
    }
}

impl DiskDevice {
    /// The QEMU device: a `-device` driver name, or for [`DiskDevice::SdCard`] the card
    /// the machine plugs into its slot.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskDevice::VirtioBlkDevice => "virtio-blk-device",
            DiskDevice::VirtioBlkPci => "virtio-blk-pci",
            DiskDevice::SdCard => "sd-card",
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
        let mut board: Board = toml::from_str(&text).map_err(|e| parse_error(path, &text, &e))?;
        board.validate(path)?;
        board.memory = board.load_memory_profile(path)?;
        Ok(board)
    }

    /// The default boot chain, if the board has any.
    pub fn default_firmware(&self) -> Option<&Firmware> {
        self.firmware.first()
    }

    /// The boot chain called `name`.
    pub fn firmware_variant(&self, name: &str) -> Option<&Firmware> {
        self.firmware.iter().find(|f| f.name == name)
    }

    /// Whether device-tree overlays can be chosen on the node: the Raspberry Pi firmware applies
    /// those `config.txt` lists; on boards whose DTBs sit in the EFI partition's `dtb/`,
    /// machined writes them there with the overlays applied.
    pub fn applies_overlays(&self) -> bool {
        self.config_txt.is_some()
            || self
                .dtb
                .as_ref()
                .is_some_and(|d| d.layout == DtbLayout::EfiDtbDir)
    }

    /// The Raspberry Pi `config.txt`, for boards that have one.
    pub fn config_txt(&self) -> Option<String> {
        self.config_txt
            .as_ref()
            .map(|c| c.render(&self.name, &self.overlays))
    }

    fn load_memory_profile(&self, path: &Path) -> Result<Option<MemoryProfile>, BoardError> {
        let Some(name) = &self.memory_profile else {
            return Ok(None);
        };
        let file = path
            .parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new("."))
            .join(MEMORY_DIR)
            .join(format!("{name}.toml"));
        if !file.is_file() {
            return Err(BoardError::Invalid {
                path: path.to_owned(),
                field: "memory_profile".into(),
                reason: format!("names {name:?}, but {} does not exist", file.display()),
            });
        }
        let text = fs::read_to_string(&file).map_err(|source| BoardError::Read {
            path: file.clone(),
            source,
        })?;
        let profile: MemoryProfile =
            toml::from_str(&text).map_err(|e| parse_error(&file, &text, &e))?;
        if let Some((field, reason)) = profile.problem() {
            return Err(BoardError::Invalid {
                path: file,
                field,
                reason,
            });
        }
        Ok(Some(profile))
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
                    "{:?} must be lowercase letters, digits, '-' and '_', starting with a letter",
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
        let lists = [
            ("modules", &self.modules),
            ("modules_on_demand", &self.modules_on_demand),
        ];
        for (field, module) in lists
            .iter()
            .flat_map(|(f, list)| list.iter().map(move |m| (*f, m)))
        {
            if module.is_empty()
                || !module
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
            {
                return Err(invalid(
                    field,
                    format!(
                        "entry {module:?} must be a module name such as virtio_net (no path, no .ko)"
                    ),
                ));
            }
            if !modules.insert(module.replace('-', "_")) {
                return Err(invalid(
                    field,
                    format!("lists {module:?} twice (across modules and modules_on_demand)"),
                ));
            }
        }

        if let Some(qemu) = &self.qemu {
            qemu.validate(&invalid)?;
        }
        self.validate_boot(&invalid)
    }

    fn validate_boot(
        &self,
        invalid: &dyn Fn(&str, String) -> BoardError,
    ) -> Result<(), BoardError> {
        let disk = self.disk;
        if !(4..=128).contains(&disk.gpt_entries) || !disk.gpt_entries.is_multiple_of(4) {
            return Err(invalid(
                "disk.gpt_entries",
                format!(
                    "{} must be a multiple of 4 (one 512-byte sector) between 4 and 128",
                    disk.gpt_entries
                ),
            ));
        }
        // The first partition starts 1 MiB-aligned and after the primary GPT.
        if !disk.partition_start_lba.is_multiple_of(2048)
            || disk.partition_start_bytes() < disk.gpt_end_bytes()
        {
            return Err(invalid(
                "disk.partition_start_lba",
                format!(
                    "{} must be a non-zero multiple of 2048 (1 MiB)",
                    disk.partition_start_lba
                ),
            ));
        }

        let mut names = BTreeSet::new();
        let mut boot_files = BTreeSet::new();
        for (i, firmware) in self.firmware.iter().enumerate() {
            let field = format!("firmware[{i}]");
            if !is_board_name(&firmware.name) {
                return Err(invalid(
                    &format!("{field}.name"),
                    format!(
                        "{:?} must be lowercase letters, digits and '-'",
                        firmware.name
                    ),
                ));
            }
            if !names.insert(firmware.name.as_str()) {
                return Err(invalid(
                    &format!("{field}.name"),
                    format!("{:?} is used twice", firmware.name),
                ));
            }
            let mut raw: Vec<(u64, u64, usize)> = Vec::new();
            for (j, artifact) in firmware.artifacts.iter().enumerate() {
                let field = format!("{field}.artifacts[{j}]");
                if !is_debian_package(&artifact.package) {
                    return Err(invalid(
                        &format!("{field}.package"),
                        format!("{:?} is not a Debian package name", artifact.package),
                    ));
                }
                if !artifact.path.starts_with('/') || !is_clean_path(&artifact.path[1..]) {
                    return Err(invalid(
                        &format!("{field}.path"),
                        format!(
                            "{:?} must be an absolute path inside the package, without `..`",
                            artifact.path
                        ),
                    ));
                }
                match &artifact.placement {
                    Placement::Raw { offset, max_bytes } => {
                        let end = offset.saturating_add(*max_bytes);
                        if *offset < disk.gpt_end_bytes()
                            || end > disk.partition_start_bytes()
                            || *max_bytes == 0
                            || !offset.is_multiple_of(SECTOR_BYTES)
                        {
                            return Err(invalid(
                                &format!("{field}.offset"),
                                format!(
                                    "{offset}..{end} must be sector-aligned, non-empty, and lie between the end of the primary GPT ({}) and the first partition ({})",
                                    disk.gpt_end_bytes(),
                                    disk.partition_start_bytes()
                                ),
                            ));
                        }
                        if let Some((_, _, k)) =
                            raw.iter().find(|(s, e, _)| *offset < *e && *s < end)
                        {
                            return Err(invalid(
                                &format!("{field}.offset"),
                                format!("{offset}..{end} overlaps artifacts[{k}]"),
                            ));
                        }
                        raw.push((*offset, end, j));
                    }
                    Placement::BootFile { dest } => {
                        if !is_clean_path(dest) {
                            return Err(invalid(
                                &format!("{field}.dest"),
                                format!("{dest:?} must be a relative path without `..`"),
                            ));
                        }
                        boot_files.insert(dest.as_str());
                    }
                    Placement::QemuBios => {
                        if self.qemu.is_none() {
                            return Err(invalid(
                                &format!("{field}.install"),
                                "is \"qemu-bios\", but the board has no [qemu] table".into(),
                            ));
                        }
                    }
                }
            }
        }

        if disk.hybrid_mbr {
            if boot_files.is_empty() {
                return Err(invalid(
                    "disk.hybrid_mbr",
                    "is true, but no boot chain puts a file (install = \"boot-file\") on the EFI partition for an MBR-reading boot ROM to find".into(),
                ));
            }
            // The MBR entry's start and size are 32-bit sector counts.
            if disk.partition_start_lba >= 1 << 31 {
                return Err(invalid(
                    "disk.partition_start_lba",
                    format!(
                        "{} is beyond what a hybrid MBR entry can address (2^31 sectors)",
                        disk.partition_start_lba
                    ),
                ));
            }
        }

        if let Some(dtb) = &self.dtb {
            if dtb.files.is_empty() {
                return Err(invalid("dtb.files", "is empty".into()));
            }
            let mut seen = BTreeSet::new();
            for file in &dtb.files {
                if !is_clean_path(file) || !file.contains('/') || !file.ends_with(".dtb") {
                    return Err(invalid(
                        "dtb.files",
                        format!("entry {file:?} must look like <vendor>/<name>.dtb"),
                    ));
                }
                if !seen.insert(dtb.destination(file)) {
                    return Err(invalid(
                        "dtb.files",
                        format!("entry {file:?} lands on the same boot file as another"),
                    ));
                }
            }
        }

        let mut overlays = BTreeSet::new();
        for overlay in &self.overlays {
            if !is_board_name(overlay) || overlay.contains('_') {
                return Err(invalid(
                    "overlays",
                    format!("entry {overlay:?} must be an overlay name such as disable-bt"),
                ));
            }
            if !overlays.insert(overlay.as_str()) {
                return Err(invalid("overlays", format!("lists {overlay:?} twice")));
            }
        }
        if !self.overlays.is_empty() && !self.applies_overlays() {
            return Err(invalid(
                "overlays",
                "needs a [config_txt] table or a [dtb] with layout \"efi-dtb-dir\": nothing else applies overlays"
                    .into(),
            ));
        }

        if let Some(config) = &self.config_txt {
            if self.arch != Arch::Arm64 || !config.arm_64bit {
                return Err(invalid(
                    "config_txt.arm_64bit",
                    "must be true, on an arm64 board: we boot a 64-bit U-Boot".into(),
                ));
            }
            if !boot_files.contains(config.kernel.as_str()) {
                return Err(invalid(
                    "config_txt.kernel",
                    format!(
                        "{:?} is not the `dest` of any boot-file artifact",
                        config.kernel
                    ),
                ));
            }
            if let Some(mib) = config.gpu_mem_mib.filter(|m| !(16..=512).contains(m)) {
                return Err(invalid(
                    "config_txt.gpu_mem_mib",
                    format!("{mib} must be between 16 and 512"),
                ));
            }
            let mainline_dtbs = self
                .dtb
                .as_ref()
                .is_some_and(|d| d.source == DtbSource::LinuxImage);
            if mainline_dtbs && !config.upstream_kernel {
                return Err(invalid(
                    "config_txt.upstream_kernel",
                    "must be true: the DTBs come from Debian's kernel under mainline names, which the firmware looks for only with upstream_kernel=1".into(),
                ));
            }
            let mut ports = BTreeSet::new();
            if let Some(port) = config
                .hdmi_safe
                .iter()
                .find(|p| **p > 1 || !ports.insert(**p))
            {
                return Err(invalid(
                    "config_txt.hdmi_safe",
                    format!("port {port} must be 0 or 1, listed once"),
                ));
            }
        }

        if let Some(dtb) = self.qemu.as_ref().and_then(|q| q.firmware_dtb.as_ref()) {
            let shipped = self
                .dtb
                .as_ref()
                .is_some_and(|d| d.files.iter().any(|f| d.destination(f) == *dtb));
            if !shipped {
                return Err(invalid(
                    "qemu.firmware_dtb",
                    format!("{dtb:?} is not a DTB the board puts on its boot partition ([dtb])"),
                ));
            }
        }

        if let Some(profile) = self.memory_profile.as_ref().filter(|p| !is_board_name(p)) {
            return Err(invalid(
                "memory_profile",
                format!("{profile:?} must be a profile name such as small"),
            ));
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
        if self.disk_device == DiskDevice::SdCard && !self.machine.starts_with("raspi") {
            return Err(invalid(
                "qemu.disk_device",
                format!(
                    "sd-card needs a machine with an SD slot (raspi*), not {:?}",
                    self.machine
                ),
            ));
        }
        if let Some(dtb) = self
            .firmware_dtb
            .as_ref()
            .filter(|d| !is_clean_path(d) || d.contains('/') || !d.ends_with(".dtb"))
        {
            return Err(invalid(
                "qemu.firmware_dtb",
                format!("{dtb:?} must be a file name such as bcm2837-rpi-3-b.dtb"),
            ));
        }
        if self
            .plug_nic_after
            .as_ref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(invalid(
                "qemu.plug_nic_after",
                "is empty: it must be text of a console line".into(),
            ));
        }
        if !(1..=4).contains(&self.serial_ports) {
            return Err(invalid(
                "qemu.serial_ports",
                format!("{} must be between 1 and 4", self.serial_ports),
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

fn one_serial_port() -> u32 {
    1
}

/// Where the board artifacts (Debian packages, unpacked kernels) are cached, kept across clean
/// clones: `$TALOS_RS_CACHE`, else `~/.cache/talos-rs`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TALOS_RS_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache").join("talos-rs")
}

/// Where `cargo xtask` unpacks the Debian package `package` built for `arch`.
pub fn unpacked_package_dir(package: &str, arch: Arch) -> PathBuf {
    cache_dir()
        .join("packages")
        .join(format!("{package}_{}", arch.as_str()))
}

/// `file` (absolute, as inside `package`) as the images take it: the host's copy when the host
/// has one, else the copy unpacked in the cache; `None` when neither exists yet.
pub fn package_file(package: &str, file: &str, arch: Arch) -> Option<PathBuf> {
    let host = Path::new(file);
    if host.is_file() {
        return Some(host.to_owned());
    }
    let inside = unpacked_package_dir(package, arch).join(file.trim_start_matches('/'));
    inside.is_file().then_some(inside)
}

/// A Debian kernel package that `cargo xtask deps` unpacked into the cache, at
/// `<cache>/kernels/<arch>/` with its release named in the file `release`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebianKernel {
    pub root: PathBuf,
    pub release: String,
}

impl DebianKernel {
    /// Where `deps` unpacks the kernel for `arch`.
    pub fn root(arch: Arch) -> PathBuf {
        cache_dir().join("kernels").join(arch.as_str())
    }

    /// The kernel unpacked for `arch`; `None` until `deps` has fetched it.
    pub fn unpacked(arch: Arch) -> Option<Self> {
        let root = Self::root(arch);
        let release = fs::read_to_string(root.join("release")).ok()?;
        Some(DebianKernel {
            release: release.trim().to_owned(),
            root,
        })
    }

    pub fn vmlinuz(&self) -> PathBuf {
        self.root
            .join("boot")
            .join(format!("vmlinuz-{}", self.release))
    }

    /// The kernel's build configuration.
    pub fn config(&self) -> PathBuf {
        self.root
            .join("boot")
            .join(format!("config-{}", self.release))
    }

    /// The module tree, with `modules.dep`.
    pub fn modules_dir(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.release)
    }

    /// The package's device trees, e.g. `broadcom/bcm2837-rpi-3-b.dtb` below it.
    pub fn dtb_dir(&self) -> PathBuf {
        self.root
            .join("usr/lib")
            .join(format!("linux-image-{}", self.release))
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
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn is_debian_package(name: &str) -> bool {
    name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

/// A relative, `/`-separated path with no empty, `.` or `..` parts.
fn is_clean_path(path: &str) -> bool {
    !path.is_empty()
        && !path.chars().any(char::is_whitespace)
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

fn is_word(value: &str) -> bool {
    !value.is_empty() && !value.chars().any(char::is_whitespace)
}
