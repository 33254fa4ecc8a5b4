//! The rig file: passive descriptions of places and the boards in them (labgrid's resources).
//!
//! A rig file is YAML decoded strictly through `talos_machinery::codec` (unknown keys are errors
//! with their path and line), then validated; every validation error names the board and the
//! field. Relative paths are resolved against the rig file's directory.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use talos_machinery::codec::{self, CodecError};

/// The lock directory when the rig file names none.
pub const DEFAULT_LOCK_DIR: &str = "/run/lock/talos-hil";
/// Off-time of a relay when the rig file names none.
pub const DEFAULT_OFF_TIME_MS: u64 = 2000;
/// Boot timeout when the rig file names none.
pub const DEFAULT_BOOT_TIMEOUT_S: u64 = 240;

#[derive(Debug, thiserror::Error)]
pub enum RigError {
    #[error("Cannot read the rig file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Rig file {path}: {source}")]
    Decode {
        path: PathBuf,
        #[source]
        source: CodecError,
    },
    #[error("Board {board}: {field}: {reason}")]
    Invalid {
        board: String,
        field: &'static str,
        reason: String,
    },
    #[error("Board {board} is not in the rig file; it has: {known}")]
    UnknownBoard { board: String, known: String },
}

/// A whole rig file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rig {
    /// Where board lock files live; default [`DEFAULT_LOCK_DIR`].
    #[serde(default)]
    pub lock_dir: Option<PathBuf>,
    /// The `boards/` directory holding board definitions (needed by QEMU boards).
    #[serde(default)]
    pub boards_dir: Option<PathBuf>,
    pub places: Vec<Place>,
}

/// A place: a bench position with its boards.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Place {
    pub name: String,
    pub boards: Vec<BoardSpec>,
}

/// One board on the rig and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardSpec {
    /// Unique within the rig; lock files and reports use it.
    pub name: String,
    /// The board definition in `boards/` (its `board.toml` directory name).
    pub board: String,
    pub bootloader: Bootloader,
    pub power: PowerSpec,
    pub console: ConsoleSpec,
    #[serde(default)]
    pub storage: Option<StorageSpec>,
    pub network: NetworkSpec,
    #[serde(default)]
    pub boot_timeout_s: Option<u64>,
}

/// What the console shows first after power-on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bootloader {
    UBoot,
    Efi,
    /// QEMU `-kernel`: the kernel banner is the first thing seen.
    DirectKernel,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum PowerSpec {
    GpioRelay(GpioLine),
    Qemu(QemuPowerSpec),
    /// An operator switches power when asked on the terminal.
    Manual,
}

/// A GPIO output line driving a relay or a mux.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioLine {
    /// The character device, e.g. `/dev/gpiochip0`.
    pub chip: PathBuf,
    pub line: u32,
    /// The relay closes (power on) when the line is driven low.
    #[serde(default)]
    pub active_low: bool,
    /// Minimum time power stays off before it comes back; default [`DEFAULT_OFF_TIME_MS`].
    #[serde(default)]
    pub off_time_ms: Option<u64>,
}

impl GpioLine {
    pub fn off_time_ms(&self) -> u64 {
        self.off_time_ms.unwrap_or(DEFAULT_OFF_TIME_MS)
    }
}

/// How a QEMU board boots: exactly one of `kernel` and `firmware`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QemuPowerSpec {
    /// The kernel QEMU boots directly (`-kernel`); `--image` is then the initramfs.
    #[serde(default)]
    pub kernel: Option<PathBuf>,
    /// The `-bios` firmware, which boots the disk; `--image` is then a disk image. A bare name
    /// (no `/`) is a boot chain of the board file (`u-boot`, `uefi`), anything else a file.
    #[serde(default)]
    pub firmware: Option<PathBuf>,
    /// Extra kernel arguments after the board's own (direct kernel boots only).
    #[serde(default)]
    pub append: Vec<String>,
}

/// What a QEMU board starts, from its validated [`QemuPowerSpec`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QemuBoot<'a> {
    Kernel(&'a Path),
    /// A `[[firmware]]` boot chain of the board file, by name.
    Chain(&'a str),
    /// A firmware file.
    Bios(&'a Path),
}

impl QemuPowerSpec {
    /// How the board boots; `None` only before validation.
    pub fn boot(&self) -> Option<QemuBoot<'_>> {
        match (&self.kernel, &self.firmware) {
            (Some(kernel), None) => Some(QemuBoot::Kernel(kernel)),
            (None, Some(firmware)) => {
                Some(match firmware.to_str().filter(|name| !name.contains('/')) {
                    Some(name) => QemuBoot::Chain(name),
                    None => QemuBoot::Bios(firmware),
                })
            }
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum ConsoleSpec {
    Serial {
        device: PathBuf,
        baud: u32,
    },
    /// A pseudo-terminal someone else serves (ser2net, a console server); no baud rate.
    Pty {
        device: PathBuf,
    },
    /// QEMU's first serial port.
    Qemu,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum StorageSpec {
    /// Pengutronix/Linux Automation USB-SD-Mux: `device` is its SCSI generic node (`/dev/sgN`),
    /// `block_device` the card as the host sees it.
    UsbSdMux {
        device: PathBuf,
        block_device: PathBuf,
    },
    /// Tizen SDWire, switched with `sd-mux-ctrl` by serial number.
    Sdwire {
        serial: String,
        block_device: PathBuf,
    },
    /// A mux whose side is selected by a GPIO line: active = the board (DUT) side.
    GpioMux {
        select: GpioLine,
        block_device: PathBuf,
    },
    /// The raw disk file QEMU attaches. A direct kernel boot gets a fresh STATE filesystem of
    /// `size_mib`; a firmware boot gets `--image` written onto a disk of `size_mib` (default
    /// [`DEFAULT_QEMU_DISK_MIB`]), where the node adds STATE and EPHEMERAL on first boot.
    QemuDisk {
        path: PathBuf,
        #[serde(default)]
        size_mib: Option<u64>,
    },
}

/// The disk a firmware-booted QEMU board gets when its rig names no size.
pub const DEFAULT_QEMU_DISK_MIB: u64 = 1024;
const MIN_FIRMWARE_DISK_MIB: u64 = 512;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum NetworkSpec {
    /// A fixed `host:port` (port 50000 when omitted).
    Static(String),
    /// The address the node logs on its console (DHCP lease or static `ip=`), port 50000.
    Learned,
    /// QEMU's forwarded host port.
    Qemu,
}

impl Rig {
    /// Reads, decodes and validates a rig file.
    pub fn load(path: &Path) -> Result<Rig, RigError> {
        let text = std::fs::read_to_string(path).map_err(|source| RigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Rig::parse(&text, base).map_err(|err| match err {
            RigError::Decode { source, .. } => RigError::Decode {
                path: path.to_owned(),
                source,
            },
            other => other,
        })
    }

    /// Decodes and validates rig YAML; relative paths resolve against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Rig, RigError> {
        let mut rig: Rig = codec::from_yaml(text).map_err(|source| RigError::Decode {
            path: PathBuf::from("<input>"),
            source,
        })?;
        rig.validate()?;
        rig.resolve(base);
        Ok(rig)
    }

    pub fn boards(&self) -> impl Iterator<Item = (&Place, &BoardSpec)> {
        self.places
            .iter()
            .flat_map(|place| place.boards.iter().map(move |board| (place, board)))
    }

    pub fn board(&self, name: &str) -> Result<&BoardSpec, RigError> {
        self.boards()
            .map(|(_, board)| board)
            .find(|board| board.name == name)
            .ok_or_else(|| RigError::UnknownBoard {
                board: name.to_owned(),
                known: self
                    .boards()
                    .map(|(_, b)| b.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    pub fn lock_dir(&self) -> PathBuf {
        self.lock_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_LOCK_DIR))
    }

    fn validate(&self) -> Result<(), RigError> {
        let mut places = BTreeSet::new();
        let mut names = BTreeSet::new();
        for place in &self.places {
            if place.name.is_empty() || !places.insert(place.name.as_str()) {
                return Err(invalid(
                    &format!("(place {:?})", place.name),
                    "places[].name",
                    "place names must be non-empty and unique",
                ));
            }
            for board in &place.boards {
                if !is_name(&board.name) {
                    return Err(invalid(
                        &board.name,
                        "name",
                        "use letters, digits, '-' and '_' only",
                    ));
                }
                if !names.insert(board.name.as_str()) {
                    return Err(invalid(&board.name, "name", "another board has this name"));
                }
                board.validate()?;
            }
        }
        Ok(())
    }

    fn resolve(&mut self, base: &Path) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        self.lock_dir.as_mut().map(join);
        self.boards_dir.as_mut().map(join);
        for board in self.places.iter_mut().flat_map(|p| p.boards.iter_mut()) {
            if let PowerSpec::Qemu(qemu) = &mut board.power {
                qemu.kernel.as_mut().map(join);
                if matches!(qemu.boot(), Some(QemuBoot::Bios(_))) {
                    qemu.firmware.as_mut().map(join);
                }
            }
            if let Some(StorageSpec::QemuDisk { path, .. }) = &mut board.storage {
                join(path);
            }
        }
    }
}

impl BoardSpec {
    pub fn boot_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.boot_timeout_s.unwrap_or(DEFAULT_BOOT_TIMEOUT_S))
    }

    pub fn is_qemu(&self) -> bool {
        matches!(self.power, PowerSpec::Qemu(_))
    }

    fn validate(&self) -> Result<(), RigError> {
        let name = self.name.as_str();
        if self.board.is_empty() {
            return Err(invalid(name, "board", "name a board definition in boards/"));
        }
        let qemu_boot = match &self.power {
            PowerSpec::GpioRelay(line) => {
                check_gpio(name, "power.gpio-relay", line)?;
                None
            }
            PowerSpec::Qemu(qemu) => Some(self.validate_qemu_boot(qemu)?),
            PowerSpec::Manual => None,
        };
        let qemu = self.is_qemu();
        match &self.console {
            ConsoleSpec::Serial { device, baud } => {
                check_device(name, "console.serial.device", device)?;
                if *baud == 0 {
                    return Err(invalid(name, "console.serial.baud", "must be positive"));
                }
            }
            ConsoleSpec::Pty { device } => check_device(name, "console.pty.device", device)?,
            ConsoleSpec::Qemu => {}
        }
        if qemu != matches!(self.console, ConsoleSpec::Qemu) {
            return Err(invalid(
                name,
                "console",
                "a QEMU console needs QEMU power, and QEMU power needs the QEMU console",
            ));
        }
        match &self.storage {
            Some(StorageSpec::UsbSdMux {
                device,
                block_device,
            }) => {
                check_device(name, "storage.usb-sd-mux.device", device)?;
                check_device(name, "storage.usb-sd-mux.block_device", block_device)?;
            }
            Some(StorageSpec::Sdwire {
                serial,
                block_device,
            }) => {
                if serial.is_empty() {
                    return Err(invalid(name, "storage.sdwire.serial", "must not be empty"));
                }
                check_device(name, "storage.sdwire.block_device", block_device)?;
            }
            Some(StorageSpec::GpioMux {
                select,
                block_device,
            }) => {
                check_gpio(name, "storage.gpio-mux.select", select)?;
                check_device(name, "storage.gpio-mux.block_device", block_device)?;
            }
            Some(StorageSpec::QemuDisk { size_mib, .. }) => match (qemu_boot, size_mib) {
                (None, _) => {
                    return Err(invalid(name, "storage.qemu-disk", "needs QEMU power"));
                }
                (Some(QemuBoot::Kernel(_)), None) => {
                    return Err(invalid(
                        name,
                        "storage.qemu-disk.size_mib",
                        "a direct kernel boot needs the size of its STATE filesystem",
                    ));
                }
                (Some(QemuBoot::Kernel(_)), Some(size)) if *size < 16 => {
                    return Err(invalid(
                        name,
                        "storage.qemu-disk.size_mib",
                        "must be at least 16 (an ext4 STATE filesystem)",
                    ));
                }
                (Some(QemuBoot::Chain(_) | QemuBoot::Bios(_)), Some(size))
                    if *size < MIN_FIRMWARE_DISK_MIB =>
                {
                    return Err(invalid(
                        name,
                        "storage.qemu-disk.size_mib",
                        "must be at least 512 (the image, then the STATE and EPHEMERAL the node adds)",
                    ));
                }
                (Some(_), _) => {}
            },
            None => {}
        }
        if qemu && !matches!(self.storage, Some(StorageSpec::QemuDisk { .. })) {
            return Err(invalid(
                name,
                "storage",
                "a QEMU board needs a qemu-disk (its STATE partition or its system disk)",
            ));
        }
        match &self.network {
            NetworkSpec::Static(endpoint) => {
                talos_client::Endpoint::parse(endpoint)
                    .map_err(|e| invalid(name, "network.static", &e.to_string()))?;
            }
            NetworkSpec::Qemu if !qemu => {
                return Err(invalid(name, "network.qemu", "needs QEMU power"));
            }
            NetworkSpec::Learned if qemu => {
                return Err(invalid(
                    name,
                    "network.learned",
                    "a QEMU guest's address is not reachable; use `qemu`",
                ));
            }
            NetworkSpec::Qemu | NetworkSpec::Learned => {}
        }
        if self.boot_timeout_s == Some(0) {
            return Err(invalid(name, "boot_timeout_s", "must be positive"));
        }
        Ok(())
    }
}

impl BoardSpec {
    fn validate_qemu_boot<'a>(&self, qemu: &'a QemuPowerSpec) -> Result<QemuBoot<'a>, RigError> {
        let name = self.name.as_str();
        let boot = qemu.boot().ok_or_else(|| {
            invalid(
                name,
                "power.qemu",
                "give exactly one of kernel (boot it directly) and firmware (boot a disk image)",
            )
        })?;
        let bootloader_ok = match boot {
            QemuBoot::Kernel(kernel) if kernel.as_os_str().is_empty() => {
                return Err(invalid(
                    name,
                    "power.qemu.kernel",
                    "must name a kernel file",
                ));
            }
            QemuBoot::Kernel(_) => self.bootloader == Bootloader::DirectKernel,
            QemuBoot::Chain("") => {
                return Err(invalid(
                    name,
                    "power.qemu.firmware",
                    "must name a boot chain of the board file or a firmware file",
                ));
            }
            QemuBoot::Chain(_) | QemuBoot::Bios(_) => {
                if !qemu.append.is_empty() {
                    return Err(invalid(
                        name,
                        "power.qemu.append",
                        "a firmware boot takes its kernel arguments from the disk image",
                    ));
                }
                self.bootloader != Bootloader::DirectKernel
            }
        };
        if !bootloader_ok {
            return Err(invalid(
                name,
                "bootloader",
                "use direct-kernel with power.qemu.kernel, and u-boot or efi with power.qemu.firmware",
            ));
        }
        Ok(boot)
    }
}

fn invalid(board: &str, field: &'static str, reason: &str) -> RigError {
    RigError::Invalid {
        board: board.to_owned(),
        field,
        reason: reason.to_owned(),
    }
}

fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn check_device(board: &str, field: &'static str, path: &Path) -> Result<(), RigError> {
    if !path.starts_with("/dev/") {
        return Err(invalid(
            board,
            field,
            &format!("{} is not a /dev path", path.display()),
        ));
    }
    Ok(())
}

fn check_gpio(board: &str, field: &'static str, line: &GpioLine) -> Result<(), RigError> {
    check_device(board, field, &line.chip)?;
    if line.off_time_ms() == 0 {
        return Err(invalid(board, field, "off_time_ms must be positive"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
lock_dir: locks
boards_dir: ../boards
places:
  - name: bench-1
    boards:
      - name: rpi4-a
        board: rpi4
        bootloader: u-boot
        power:
          gpio-relay: { chip: /dev/gpiochip0, line: 17, active_low: true, off_time_ms: 3000 }
        console:
          serial: { device: /dev/ttyUSB0, baud: 115200 }
        storage:
          usb-sd-mux: { device: /dev/sg1, block_device: /dev/disk/by-id/usb-sdmux }
        network: learned
      - name: rpi4-b
        board: rpi4
        bootloader: efi
        power: manual
        console:
          pty: { device: /dev/pts/7 }
        storage:
          gpio-mux:
            select: { chip: /dev/gpiochip0, line: 22 }
            block_device: /dev/sdb
        network:
          static: 192.168.1.20
  - name: ci
    boards:
      - name: qemu-arm64
        board: qemu-virt-arm64
        bootloader: direct-kernel
        power:
          qemu: { kernel: ../out/arm64/vmlinuz }
        console: qemu
        storage:
          qemu-disk: { path: state.img, size_mib: 64 }
        network: qemu
        boot_timeout_s: 120
      - name: qemu-uefi
        board: qemu-virt-arm64
        bootloader: efi
        power:
          qemu: { firmware: uefi }
        console: qemu
        storage:
          qemu-disk: { path: disk.raw }
        network: qemu
      - name: qemu-bios
        board: qemu-virt-arm64
        bootloader: u-boot
        power:
          qemu: { firmware: fw/u-boot.bin }
        console: qemu
        storage:
          qemu-disk: { path: /var/tmp/disk.raw }
        network: qemu
"#;

    fn parse(text: &str) -> Result<Rig, RigError> {
        Rig::parse(text, Path::new("/rigs"))
    }

    #[test]
    fn sample_decodes_with_every_resource_kind_and_resolves_paths() {
        let rig = parse(SAMPLE).unwrap();
        assert_eq!(rig.lock_dir(), PathBuf::from("/rigs/locks"));
        let a = rig.board("rpi4-a").unwrap();
        assert_eq!(
            a.power,
            PowerSpec::GpioRelay(GpioLine {
                chip: "/dev/gpiochip0".into(),
                line: 17,
                active_low: true,
                off_time_ms: Some(3000)
            })
        );
        assert_eq!(a.bootloader, Bootloader::UBoot);
        assert_eq!(a.network, NetworkSpec::Learned);
        let b = rig.board("rpi4-b").unwrap();
        assert_eq!(b.power, PowerSpec::Manual);
        let Some(StorageSpec::GpioMux { select, .. }) = &b.storage else {
            panic!("gpio mux expected: {:?}", b.storage)
        };
        assert_eq!(select.off_time_ms(), DEFAULT_OFF_TIME_MS);
        let q = rig.board("qemu-arm64").unwrap();
        let PowerSpec::Qemu(power) = &q.power else {
            panic!()
        };
        assert_eq!(
            power.boot(),
            Some(QemuBoot::Kernel(Path::new("/rigs/../out/arm64/vmlinuz")))
        );
        assert_eq!(
            q.storage,
            Some(StorageSpec::QemuDisk {
                path: "/rigs/state.img".into(),
                size_mib: Some(64)
            })
        );
        assert_eq!(q.boot_timeout().as_secs(), 120);
        assert!(q.is_qemu());
    }

    #[test]
    fn firmware_boards_name_a_boot_chain_or_a_file() {
        let rig = parse(SAMPLE).unwrap();
        let power = |board: &str| match &rig.board(board).unwrap().power {
            PowerSpec::Qemu(qemu) => qemu.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(power("qemu-uefi").boot(), Some(QemuBoot::Chain("uefi")));
        assert_eq!(
            power("qemu-bios").boot(),
            Some(QemuBoot::Bios(Path::new("/rigs/fw/u-boot.bin")))
        );
        assert_eq!(
            rig.board("qemu-uefi").unwrap().storage,
            Some(StorageSpec::QemuDisk {
                path: "/rigs/disk.raw".into(),
                size_mib: None
            })
        );
    }

    #[test]
    fn unknown_keys_are_refused_with_their_path() {
        let text = SAMPLE.replace("line: 17,", "line: 17, pin: 3,");
        let err = parse(&text).unwrap_err();
        let RigError::Decode { source, .. } = &err else {
            panic!("{err}")
        };
        assert!(source.to_string().contains("pin"), "{err}");
        assert!(
            source.path().is_some_and(|p| p.contains("power")),
            "{:?}",
            source.path()
        );
    }

    fn invalid_field(text: &str) -> (String, &'static str, String) {
        match parse(text).unwrap_err() {
            RigError::Invalid {
                board,
                field,
                reason,
            } => (board, field, reason),
            other => panic!("expected a validation error, got {other}"),
        }
    }

    #[test]
    fn validation_names_board_and_field() {
        let cases = [
            (
                SAMPLE.replace("/dev/ttyUSB0", "ttyUSB0"),
                "rpi4-a",
                "console.serial.device",
            ),
            (
                SAMPLE.replace("baud: 115200", "baud: 0"),
                "rpi4-a",
                "console.serial.baud",
            ),
            (
                SAMPLE.replace("off_time_ms: 3000", "off_time_ms: 0"),
                "rpi4-a",
                "power.gpio-relay",
            ),
            (
                SAMPLE.replace("static: 192.168.1.20", "static: \"host:notaport\""),
                "rpi4-b",
                "network.static",
            ),
            (
                SAMPLE.replace("network: qemu", "network: learned"),
                "qemu-arm64",
                "network.learned",
            ),
            (
                SAMPLE.replace("size_mib: 64", "size_mib: 1"),
                "qemu-arm64",
                "storage.qemu-disk.size_mib",
            ),
            (
                SAMPLE.replace("console: qemu", "console: { pty: { device: /dev/pts/1 } }"),
                "qemu-arm64",
                "console",
            ),
            (
                SAMPLE.replace("name: rpi4-b", "name: rpi4-a"),
                "rpi4-a",
                "name",
            ),
            (
                SAMPLE.replace("boot_timeout_s: 120", "boot_timeout_s: 0"),
                "qemu-arm64",
                "boot_timeout_s",
            ),
            (
                SAMPLE.replace("{ firmware: uefi }", "{ firmware: uefi, kernel: /k }"),
                "qemu-uefi",
                "power.qemu",
            ),
            (
                SAMPLE.replace("{ firmware: uefi }", "{ append: [quiet] }"),
                "qemu-uefi",
                "power.qemu",
            ),
            (
                SAMPLE.replace("{ firmware: uefi }", "{ firmware: \"\" }"),
                "qemu-uefi",
                "power.qemu.firmware",
            ),
            (
                SAMPLE.replace("{ firmware: uefi }", "{ firmware: uefi, append: [quiet] }"),
                "qemu-uefi",
                "power.qemu.append",
            ),
            (
                SAMPLE.replace("bootloader: efi", "bootloader: direct-kernel"),
                "qemu-uefi",
                "bootloader",
            ),
            (
                SAMPLE.replace("bootloader: direct-kernel", "bootloader: efi"),
                "qemu-arm64",
                "bootloader",
            ),
            (
                SAMPLE.replace("path: disk.raw", "path: disk.raw, size_mib: 64"),
                "qemu-uefi",
                "storage.qemu-disk.size_mib",
            ),
            (
                SAMPLE.replace(", size_mib: 64", ""),
                "qemu-arm64",
                "storage.qemu-disk.size_mib",
            ),
        ];
        for (text, board, field) in cases {
            let (got_board, got_field, reason) = invalid_field(&text);
            assert_eq!((got_board.as_str(), got_field), (board, field), "{reason}");
        }
        let err = parse(&SAMPLE.replace("name: rpi4-b", "name: rpi4-a")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Board rpi4-a: name: another board has this name"
        );
    }

    #[test]
    fn unknown_board_lists_the_known_ones() {
        let rig = parse(SAMPLE).unwrap();
        let err = rig.board("nope").unwrap_err().to_string();
        assert!(
            err.contains("rpi4-a, rpi4-b, qemu-arm64, qemu-uefi, qemu-bios"),
            "{err}"
        );
    }
}
