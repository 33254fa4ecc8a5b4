//! `hil run`: loads the rig file, locks the board, builds its drivers, runs a suite and writes
//! the reports. A rig problem (bad rig file, held lock, missing device) is a [`RunError`];
//! a failing board is a failed [`SuiteResult`].

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use talos_client::{Endpoint, TlsMode};
use talos_machinery::config::{GenerateInput, generate};
use talos_machinery::secrets::SecretsBundle;

use crate::api::TalosApi;
use crate::console::{Console, SerialConsole};
use crate::lock::{BoardLock, LockError};
use crate::power::{GpioRelay, ManualPower, PowerSwitch, request_output};
use crate::qemu::BootSource;
use crate::qemu_target::{
    QemuConsole, QemuDisk, QemuPower, QemuTarget, QemuTargetSpec, make_state_image,
};
use crate::rig::{
    BoardSpec, Bootloader, ConsoleSpec, DEFAULT_QEMU_DISK_MIB, NetworkSpec, PowerSpec, QemuBoot,
    Rig, RigError, StorageSpec,
};
use crate::storage::{GpioMux, MuxStorage, SdWire, Storage, UsbSdMux};
use crate::strategy::{BoardSetup, Drivers, Network, NodeConfig, Progress, Strategy};
use crate::suites::{Suite, SuiteResult, Upgrades, run_suite};
use crate::{DriverError, HilError, report};

/// The baud rate assumed for a pty console, where it has no effect.
const PTY_BAUD: u32 = 115_200;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Rig(#[from] RigError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("Board {board}: cannot set up its drivers")]
    Driver {
        board: String,
        #[source]
        source: DriverError,
    },
    #[error("Board {board}: cannot load its definition {name:?} from {dir}: {reason}")]
    BoardDefinition {
        board: String,
        name: String,
        dir: PathBuf,
        reason: String,
    },
    #[error("The image {0} does not exist")]
    MissingImage(PathBuf),
    #[error(
        "Board {board} boots a disk image through firmware, but the image {image} has no GPT (give a metal-<arch>.raw)"
    )]
    NotADiskImage { board: String, image: PathBuf },
    #[error("Cannot generate the machine config for board {board}: {reason}")]
    Config { board: String, reason: String },
    #[error("Cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What `hil run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub rig: PathBuf,
    pub board: String,
    pub suite: Suite,
    /// The disk image to flash; for QEMU boards booting a kernel directly, the initramfs.
    pub image: PathBuf,
    /// Per-test artifacts go here.
    pub artifacts: PathBuf,
    pub junit: Option<PathBuf>,
    /// Markdown, or HTML when the name ends in `.html`.
    pub report: Option<PathBuf>,
}

/// Runs one suite on one board and writes the reports.
pub fn run(options: &RunOptions, progress: Arc<dyn Progress>) -> Result<SuiteResult, RunError> {
    run_with_upgrades(options, &Upgrades::default(), progress)
}

/// [`run`], with installer images for `upgrade-rollback` and `power-cut`.
pub fn run_with_upgrades(
    options: &RunOptions,
    upgrades: &Upgrades,
    progress: Arc<dyn Progress>,
) -> Result<SuiteResult, RunError> {
    let rig = Rig::load(&options.rig)?;
    let spec = rig.board(&options.board)?.clone();
    if !options.image.is_file() {
        return Err(RunError::MissingImage(options.image.clone()));
    }
    let _lock = BoardLock::acquire(&rig.lock_dir(), &spec.name)?;
    std::fs::create_dir_all(&options.artifacts).map_err(|source| RunError::Write {
        path: options.artifacts.clone(),
        source,
    })?;
    let mut strategy = build_strategy(&rig, &spec, options, progress)?;
    let result = run_suite(&mut strategy, options.suite, upgrades, &options.artifacts);
    // Leave the board off: a QEMU process must not outlive the run, nor a real board run on.
    if let Err(err) = strategy.transition(crate::strategy::BoardState::Off) {
        tracing::warn!(board = %spec.name, %err, "could not power the board off after the run");
    }
    write_reports(options, &result)?;
    Ok(result)
}

pub fn write_reports(options: &RunOptions, result: &SuiteResult) -> Result<(), RunError> {
    let write = |path: &Path, text: String| {
        std::fs::write(path, text).map_err(|source| RunError::Write {
            path: path.to_owned(),
            source,
        })
    };
    if let Some(path) = &options.junit {
        write(path, report::junit(result))?;
    }
    if let Some(path) = &options.report {
        let html = path.extension().is_some_and(|e| e == "html" || e == "htm");
        write(
            path,
            if html {
                report::html(result)
            } else {
                report::markdown(result)
            },
        )?;
    }
    Ok(())
}

fn driver_error(board: &str) -> impl Fn(DriverError) -> RunError + '_ {
    move |source| RunError::Driver {
        board: board.to_owned(),
        source,
    }
}

/// A board's drivers and what its strategy flashes and connects to.
struct BoardParts {
    power: Arc<dyn PowerSwitch>,
    console: Arc<dyn Console>,
    storage: Option<Arc<dyn Storage>>,
    image: PathBuf,
    network: Network,
}

fn build_strategy(
    rig: &Rig,
    spec: &BoardSpec,
    options: &RunOptions,
    progress: Arc<dyn Progress>,
) -> Result<Strategy, RunError> {
    let name = spec.name.as_str();
    let failed = driver_error(name);
    let BoardParts {
        power,
        console,
        storage,
        image,
        network,
    } = match &spec.power {
        PowerSpec::Qemu(qemu) => {
            let dir = rig
                .boards_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("boards"));
            let board =
                talos_boards::find(&dir, &spec.board).map_err(|e| RunError::BoardDefinition {
                    board: name.to_owned(),
                    name: spec.board.clone(),
                    dir: dir.clone(),
                    reason: e.to_string(),
                })?;
            let Some(StorageSpec::QemuDisk { path, size_mib }) = &spec.storage else {
                unreachable!("validation requires a qemu-disk on QEMU boards")
            };
            let require = |what: &'static str, path: &Path| {
                if path.is_file() {
                    Ok(())
                } else {
                    Err(failed(DriverError::Qemu(HilError::MissingInput {
                        what,
                        path: path.to_owned(),
                    })))
                }
            };
            // The disk becomes a copy of the image, which the firmware boots.
            let firmware_boot = |bios: PathBuf| {
                require("firmware", &bios)?;
                check_disk_image(name, &options.image)?;
                let disk_mib = size_mib.unwrap_or(DEFAULT_QEMU_DISK_MIB);
                Ok::<_, RunError>((
                    BootSource::Firmware { bios },
                    options.image.clone(),
                    Some(disk_mib << 20),
                ))
            };
            let boot = qemu.boot().expect("validation requires kernel or firmware");
            let (boot, image, disk_size) = match boot {
                QemuBoot::Kernel(kernel) => {
                    require("kernel", kernel)?;
                    // The disk is flashed with a fresh STATE filesystem; the initramfs is the image.
                    let fresh = options.artifacts.join("state-fresh.img");
                    let size = size_mib.expect("validation requires size_mib for a kernel boot");
                    make_state_image(&fresh, size).map_err(&failed)?;
                    let boot = BootSource::Kernel {
                        kernel: kernel.to_owned(),
                        initrd: options.image.clone(),
                        append_extra: qemu.append.clone(),
                    };
                    (boot, fresh, None)
                }
                QemuBoot::Chain(chain) => firmware_boot(chain_bios(spec, &board, chain)?)?,
                QemuBoot::Bios(bios) => firmware_boot(bios.to_owned())?,
            };
            let target = QemuTarget::new(QemuTargetSpec {
                board,
                boot,
                disk: path.clone(),
                disk_size,
                log_dir: options.artifacts.clone(),
            })
            .map_err(|e| failed(DriverError::from(e)))?;
            let endpoint = Endpoint::new("127.0.0.1", target.api_port());
            BoardParts {
                power: Arc::new(QemuPower(target.clone())),
                console: Arc::new(QemuConsole(target.clone())),
                storage: Some(Arc::new(QemuDisk(target))),
                image,
                network: Network::Static(endpoint),
            }
        }
        real => {
            let power: Arc<dyn PowerSwitch> = match real {
                PowerSpec::GpioRelay(line) => Arc::new(
                    GpioRelay::open(
                        &line.chip,
                        line.line,
                        line.active_low,
                        Duration::from_millis(line.off_time_ms()),
                    )
                    .map_err(&failed)?,
                ),
                PowerSpec::Manual => Arc::new(ManualPower::new(
                    name,
                    BufReader::new(std::io::stdin()),
                    std::io::stderr(),
                )),
                PowerSpec::Qemu(_) => unreachable!("handled above"),
            };
            let log = options.artifacts.join("serial.log");
            let console: Arc<dyn Console> = match &spec.console {
                ConsoleSpec::Serial { device, baud } => {
                    Arc::new(SerialConsole::open(device, *baud, &log).map_err(&failed)?)
                }
                ConsoleSpec::Pty { device } => {
                    Arc::new(SerialConsole::open(device, PTY_BAUD, &log).map_err(&failed)?)
                }
                ConsoleSpec::Qemu => {
                    unreachable!("validation pairs the QEMU console with QEMU power")
                }
            };
            let storage: Option<Arc<dyn Storage>> = match &spec.storage {
                Some(StorageSpec::UsbSdMux {
                    device,
                    block_device,
                }) => Some(Arc::new(MuxStorage::new(
                    UsbSdMux::new(device.clone()),
                    block_device.clone(),
                ))),
                Some(StorageSpec::Sdwire {
                    serial,
                    block_device,
                }) => Some(Arc::new(MuxStorage::new(
                    SdWire::new(serial.clone()),
                    block_device.clone(),
                ))),
                Some(StorageSpec::GpioMux {
                    select,
                    block_device,
                }) => {
                    // Start on the board's side: the card stays where a powered board expects it.
                    let pin =
                        request_output(&select.chip, select.line, u8::from(!select.active_low))
                            .map_err(&failed)?;
                    let label = format!("{}:{}", select.chip.display(), select.line);
                    Some(Arc::new(MuxStorage::new(
                        GpioMux::new(label, pin, select.active_low),
                        block_device.clone(),
                    )))
                }
                Some(StorageSpec::QemuDisk { .. }) | None => None,
            };
            let network = match &spec.network {
                NetworkSpec::Static(text) => {
                    Network::Static(Endpoint::parse(text).expect("validation parsed the endpoint"))
                }
                NetworkSpec::Learned | NetworkSpec::Qemu => Network::Learned,
            };
            BoardParts {
                power,
                console,
                storage,
                image: options.image.clone(),
                network,
            }
        }
    };
    let config = node_config(spec, &network)?;
    let api = TalosApi::new().map_err(|e| RunError::Config {
        board: name.to_owned(),
        reason: format!("cannot start the API runtime: {e}"),
    })?;
    Ok(Strategy::new(
        BoardSetup {
            board: name.to_owned(),
            bootloader: spec.bootloader,
            network,
            boot_timeout: spec.boot_timeout(),
            image: Some(image),
            config,
        },
        Drivers {
            power,
            console,
            storage,
            api: Box::new(api),
        },
        progress,
    ))
}

/// The `-bios` file of the board file's boot chain `name`, which must match the rig's
/// `bootloader`.
fn chain_bios(
    spec: &BoardSpec,
    board: &talos_boards::Board,
    name: &str,
) -> Result<PathBuf, RunError> {
    let invalid = |field: &'static str, reason: String| {
        RunError::Rig(RigError::Invalid {
            board: spec.name.clone(),
            field,
            reason,
        })
    };
    let Some(chain) = board.firmware_variant(name) else {
        let known: Vec<&str> = board.firmware.iter().map(|f| f.name.as_str()).collect();
        return Err(invalid(
            "power.qemu.firmware",
            format!(
                "board {} has no boot chain {name:?} (it has: {}); a firmware file path contains '/'",
                board.name,
                known.join(", ")
            ),
        ));
    };
    let (expected, spelled) = match chain.kind {
        talos_boards::BootKind::UBoot => (Bootloader::UBoot, "u-boot"),
        talos_boards::BootKind::Uefi => (Bootloader::Efi, "efi"),
    };
    if spec.bootloader != expected {
        return Err(invalid(
            "bootloader",
            format!("the boot chain {name} needs bootloader: {spelled}"),
        ));
    }
    chain.qemu_bios().map(PathBuf::from).ok_or_else(|| {
        invalid(
            "power.qemu.firmware",
            format!(
                "boot chain {name} of board {} has no qemu-bios artifact",
                board.name
            ),
        )
    })
}

/// A firmware boots a GPT disk: refuse an initramfs or a kernel given as `--image`.
fn check_disk_image(board: &str, image: &Path) -> Result<(), RunError> {
    use std::io::{Read, Seek, SeekFrom};
    let mut signature = [0u8; 8];
    let gpt = std::fs::File::open(image)
        .and_then(|mut file| {
            file.seek(SeekFrom::Start(512))?;
            file.read_exact(&mut signature)
        })
        .is_ok_and(|()| &signature == b"EFI PART");
    if gpt {
        Ok(())
    } else {
        Err(RunError::NotADiskImage {
            board: board.to_owned(),
            image: image.to_owned(),
        })
    }
}

/// A fresh cluster identity for this run: secrets, a control-plane config, admin credentials.
fn node_config(spec: &BoardSpec, network: &Network) -> Result<NodeConfig, RunError> {
    let failed = |reason: String| RunError::Config {
        board: spec.name.clone(),
        reason,
    };
    let now = SystemTime::now();
    let host = match network {
        // QEMU user networking gives the guest 10.0.2.15.
        Network::Static(_) if spec.is_qemu() => "10.0.2.15".to_owned(),
        Network::Static(endpoint) => endpoint.host().to_owned(),
        Network::Learned => format!("{}.local", spec.name),
    };
    let secrets = SecretsBundle::generate(now).map_err(|e| failed(e.to_string()))?;
    let generated = generate(&GenerateInput::new(
        &format!("hil-{}", spec.name),
        &format!("https://{host}:6443"),
        secrets,
        now,
    ))
    .map_err(|e| failed(e.to_string()))?;
    let (_, context) = generated
        .talosconfig
        .current(None)
        .map_err(|e| failed(e.to_string()))?;
    let admin = TlsMode::Mutual {
        ca_pem: context.ca_pem().map_err(|e| failed(e.to_string()))?,
        cert_pem: context.crt_pem().map_err(|e| failed(e.to_string()))?,
        key_pem: context.key_pem().map_err(|e| failed(e.to_string()))?,
    };
    Ok(NodeConfig {
        machine_config: generated.controlplane,
        admin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::NoProgress;

    fn options(dir: &Path, rig: &str, board: &str) -> RunOptions {
        let rig_path = dir.join("rig.yaml");
        std::fs::write(&rig_path, rig).unwrap();
        let image = dir.join("image.raw");
        std::fs::write(&image, b"img").unwrap();
        RunOptions {
            rig: rig_path,
            board: board.into(),
            suite: Suite::Smoke,
            image,
            artifacts: dir.join("artifacts"),
            junit: None,
            report: None,
        }
    }

    const RIG: &str = r#"
lock_dir: locks
places:
  - name: bench
    boards:
      - name: pi
        board: rpi4
        bootloader: u-boot
        power:
          gpio-relay: { chip: /dev/gpiochip-missing, line: 3 }
        console:
          serial: { device: /dev/ttyUSB-missing, baud: 115200 }
        network: learned
"#;

    #[test]
    fn rig_problems_are_run_errors() {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(dir.path(), RIG, "nope");
        assert!(matches!(
            run(&opts, Arc::new(NoProgress)),
            Err(RunError::Rig(RigError::UnknownBoard { .. }))
        ));

        let opts = options(dir.path(), RIG, "pi");
        let err = run(&opts, Arc::new(NoProgress)).unwrap_err();
        assert!(
            err.to_string()
                .contains("Board pi: cannot set up its drivers"),
            "{err}"
        );
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert!(source.contains("/dev/gpiochip-missing:3"), "{source}");
        assert!(
            !dir.path().join("locks/pi.lock").exists(),
            "the lock is released"
        );
    }

    fn qemu_rig(firmware: &str, bootloader: &str) -> String {
        format!(
            r#"
lock_dir: locks
boards_dir: {}
places:
  - name: ci
    boards:
      - name: q
        board: qemu-virt-arm64
        bootloader: {bootloader}
        power:
          qemu: {{ firmware: {firmware} }}
        console: qemu
        storage:
          qemu-disk: {{ path: disk.raw }}
        network: qemu
"#,
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../boards")
                .display()
        )
    }

    fn rig_invalid(err: RunError) -> (String, &'static str, String) {
        match err {
            RunError::Rig(RigError::Invalid {
                board,
                field,
                reason,
            }) => (board, field, reason),
            other => panic!("expected a rig error, got {other}"),
        }
    }

    #[test]
    fn firmware_boards_resolve_their_boot_chain_and_need_a_disk_image() {
        let dir = tempfile::tempdir().unwrap();
        let run_rig = |rig: &str| run(&options(dir.path(), rig, "q"), Arc::new(NoProgress));

        let (board, field, reason) = rig_invalid(run_rig(&qemu_rig("nope", "efi")).unwrap_err());
        assert_eq!((board.as_str(), field), ("q", "power.qemu.firmware"));
        assert!(
            reason.contains("no boot chain \"nope\" (it has: u-boot, uefi)"),
            "{reason}"
        );

        let (_, field, reason) = rig_invalid(run_rig(&qemu_rig("uefi", "u-boot")).unwrap_err());
        assert_eq!(field, "bootloader");
        assert_eq!(reason, "the boot chain uefi needs bootloader: efi");

        std::fs::write(dir.path().join("fw.bin"), b"firmware").unwrap();
        let err = run_rig(&qemu_rig("./fw.bin", "u-boot")).unwrap_err();
        assert!(
            matches!(&err, RunError::NotADiskImage { board, .. } if board == "q"),
            "{err}"
        );
        assert!(!dir.path().join("locks/q.lock").exists());
    }

    #[test]
    fn a_locked_board_is_a_run_error() {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(dir.path(), RIG, "pi");
        let _held = BoardLock::acquire(&dir.path().join("locks"), "pi").unwrap();
        let err = run(&opts, Arc::new(NoProgress)).unwrap_err();
        assert!(
            matches!(err, RunError::Lock(LockError::Held { .. })),
            "{err}"
        );
    }
}
