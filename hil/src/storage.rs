//! Storage drivers: SD muxes that hand a board's card to the rig host for flashing.
//!
//! Flashing itself is `talos_images::flash` (sparse-aware, read-back verified). A mux first
//! switches the card to the host, waits for its block device, flashes, then switches it back.
//!
//! The USB-SD-Mux is a Microchip USB2642 card reader whose auxiliary I2C bus carries a PCA9536
//! GPIO expander driving the mux. The reader's vendor SCSI command 0xCF with action 0x23 writes
//! bytes on that bus (Microchip, "I2C over USB" user guide 50002283A, p. 20); the expander's
//! register map is in NXP's PCA9536 data sheet. The commands go out through `sg_raw` (sg3-utils),
//! so no ioctl code lives here.

use std::fmt::Debug;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use embedded_hal::digital::OutputPin;
use talos_images::flash::{self, FlashProgress, FlashReport};

use crate::DriverError;

/// A board's boot medium (labgrid's storage drivers).
pub trait Storage: Send + Sync + Debug {
    /// Writes `image` to the medium and verifies it; the board must be off.
    fn flash(
        &self,
        image: &Path,
        progress: &mut dyn FnMut(FlashProgress),
    ) -> Result<FlashReport, DriverError>;
}

/// Which side an SD mux connects the card to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MuxSide {
    Host,
    Board,
}

/// Something that switches a card between the rig host and the board.
pub trait Mux: Send + Sync + Debug {
    fn select(&self, side: MuxSide) -> Result<(), DriverError>;
}

/// A card behind a mux, seen by the host as `block_device` while switched to it.
#[derive(Debug)]
pub struct MuxStorage<M> {
    mux: M,
    block_device: PathBuf,
    appear_timeout: Duration,
}

impl<M: Mux> MuxStorage<M> {
    pub fn new(mux: M, block_device: PathBuf) -> MuxStorage<M> {
        MuxStorage {
            mux,
            block_device,
            appear_timeout: Duration::from_secs(20),
        }
    }
}

impl<M: Mux> Storage for MuxStorage<M> {
    fn flash(
        &self,
        image: &Path,
        progress: &mut dyn FnMut(FlashProgress),
    ) -> Result<FlashReport, DriverError> {
        self.mux.select(MuxSide::Host)?;
        let deadline = Instant::now() + self.appear_timeout;
        while !self.block_device.exists() {
            if Instant::now() >= deadline {
                return Err(DriverError::NoBlockDevice {
                    path: self.block_device.clone(),
                    waited: self.appear_timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let report = flash::flash(image, &self.block_device, progress)?;
        self.mux.select(MuxSide::Board)?;
        Ok(report)
    }
}

/// The PCA9536's 7-bit I2C address on the USB-SD-Mux.
const PCA9536_ADDRESS: u8 = 0x41;
const PCA9536_OUTPUT_PORT: u8 = 0x01;
const PCA9536_CONFIGURATION: u8 = 0x03;
/// Expander pins: data lines off, card power off, select the board, card-detect "removed".
const PIN_DATA_OFF: u8 = 0x01;
const PIN_POWER_OFF: u8 = 0x02;
const PIN_SELECT_BOARD: u8 = 0x04;
const PIN_CARD_REMOVED: u8 = 0x08;
/// The USB2642's vendor SCSI opcode and its "I2C write" action.
const USB2642_VENDOR_OPCODE: u8 = 0xCF;
const USB2642_I2C_WRITE: u8 = 0x23;
/// The data phase of a USB2642 I2C command is one 512-byte block.
const USB2642_BLOCK: usize = 512;
/// How long the card stays unpowered between sides, so its supply drains.
const USB_SD_MUX_SETTLE: Duration = Duration::from_secs(1);

/// One SCSI command with its data-out block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiWrite {
    pub cdb: [u8; 16],
    pub data: Vec<u8>,
}

/// A step of a mux switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MuxStep {
    Write(ScsiWrite),
    Pause(Duration),
}

/// The command that writes `payload` to I2C device `address` (7-bit) behind a USB2642.
pub fn usb2642_i2c_write(address: u8, payload: &[u8]) -> ScsiWrite {
    let len = payload.len().min(USB2642_BLOCK);
    let mut cdb = [0u8; 16];
    cdb[0] = USB2642_VENDOR_OPCODE;
    cdb[1] = USB2642_I2C_WRITE;
    cdb[2] = address << 1;
    cdb[4] = (len >> 8) as u8;
    cdb[5] = len as u8;
    let mut data = vec![0u8; USB2642_BLOCK];
    data[..len].copy_from_slice(&payload[..len]);
    ScsiWrite { cdb, data }
}

fn pca9536_write(register: u8, value: u8) -> MuxStep {
    MuxStep::Write(usb2642_i2c_write(PCA9536_ADDRESS, &[register, value]))
}

/// The USB-SD-Mux's switch sequence: disconnect the card from both sides with its power off,
/// wait, then connect it to `side` (selecting the side before enabling power and data).
pub fn usb_sd_mux_sequence(side: MuxSide) -> Vec<MuxStep> {
    let disconnected = PIN_DATA_OFF | PIN_POWER_OFF | PIN_CARD_REMOVED;
    let mut steps = vec![
        pca9536_write(PCA9536_OUTPUT_PORT, disconnected),
        // Pins 0-3 become outputs; 4-7 do not exist on the PCA9536 and stay inputs.
        pca9536_write(PCA9536_CONFIGURATION, 0xF0),
        MuxStep::Pause(USB_SD_MUX_SETTLE),
    ];
    match side {
        MuxSide::Host => steps.push(pca9536_write(PCA9536_OUTPUT_PORT, 0x00)),
        MuxSide::Board => {
            steps.push(pca9536_write(
                PCA9536_OUTPUT_PORT,
                disconnected | PIN_SELECT_BOARD,
            ));
            steps.push(pca9536_write(
                PCA9536_OUTPUT_PORT,
                PIN_SELECT_BOARD | PIN_CARD_REMOVED,
            ));
        }
    }
    steps
}

/// `sg_raw` arguments sending `command` to `device`; the data block goes on stdin.
pub fn sg_raw_args(device: &Path, command: &ScsiWrite) -> Vec<String> {
    let mut args = vec![
        "--send".to_owned(),
        command.data.len().to_string(),
        device.display().to_string(),
    ];
    args.extend(command.cdb.iter().map(|b| format!("{b:02x}")));
    args
}

/// A USB-SD-Mux on its SCSI generic device (`/dev/sgN`).
#[derive(Debug)]
pub struct UsbSdMux {
    device: PathBuf,
}

impl UsbSdMux {
    pub fn new(device: PathBuf) -> UsbSdMux {
        UsbSdMux { device }
    }

    fn send(&self, command: &ScsiWrite) -> Result<(), DriverError> {
        let failed = |reason: String| DriverError::Mux {
            device: self.device.clone(),
            reason,
        };
        let mut child = Command::new("sg_raw")
            .args(sg_raw_args(&self.device, command))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| failed(format!("cannot run sg_raw (install sg3-utils): {e}")))?;
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(&command.data)
            .map_err(|e| failed(format!("writing to sg_raw: {e}")))?;
        let output = child
            .wait_with_output()
            .map_err(|e| failed(format!("waiting for sg_raw: {e}")))?;
        if !output.status.success() {
            return Err(failed(format!(
                "sg_raw {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(())
    }
}

impl Mux for UsbSdMux {
    fn select(&self, side: MuxSide) -> Result<(), DriverError> {
        for step in usb_sd_mux_sequence(side) {
            match step {
                MuxStep::Write(command) => self.send(&command)?,
                MuxStep::Pause(duration) => std::thread::sleep(duration),
            }
        }
        Ok(())
    }
}

/// An SDWire, switched by `sd-mux-ctrl` (from the Tizen sd-mux tools) by serial number.
#[derive(Debug)]
pub struct SdWire {
    serial: String,
}

impl SdWire {
    pub fn new(serial: String) -> SdWire {
        SdWire { serial }
    }

    /// `sd-mux-ctrl` arguments for `side`.
    pub fn args(&self, side: MuxSide) -> Vec<String> {
        let flag = match side {
            MuxSide::Host => "--ts",
            MuxSide::Board => "--dut",
        };
        vec![format!("--device-serial={}", self.serial), flag.to_owned()]
    }
}

impl Mux for SdWire {
    fn select(&self, side: MuxSide) -> Result<(), DriverError> {
        let failed = |reason: String| DriverError::Mux {
            device: PathBuf::from(format!("sdwire:{}", self.serial)),
            reason,
        };
        let output = Command::new("sd-mux-ctrl")
            .args(self.args(side))
            .output()
            .map_err(|e| failed(format!("cannot run sd-mux-ctrl: {e}")))?;
        if !output.status.success() {
            return Err(failed(format!(
                "sd-mux-ctrl {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(())
    }
}

/// A mux selected by one GPIO line: active = board side.
#[derive(Debug)]
pub struct GpioMux<P> {
    name: String,
    pin: Mutex<P>,
    active_low: bool,
}

impl<P: OutputPin + Send + Debug> GpioMux<P> {
    pub fn new(name: String, pin: P, active_low: bool) -> GpioMux<P> {
        GpioMux {
            name,
            pin: Mutex::new(pin),
            active_low,
        }
    }
}

impl<P: OutputPin + Send + Debug> Mux for GpioMux<P> {
    fn select(&self, side: MuxSide) -> Result<(), DriverError> {
        let high = (side == MuxSide::Board) != self.active_low;
        let mut pin = self.pin.lock().expect("mux lock is not poisoned");
        let result = if high { pin.set_high() } else { pin.set_low() };
        result.map_err(|e| DriverError::Gpio {
            line: self.name.clone(),
            reason: format!("{e:?}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::sync::Arc;

    fn hex(bytes: &[u8]) -> String {
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn writes(steps: &[MuxStep]) -> Vec<(String, String)> {
        steps
            .iter()
            .filter_map(|s| match s {
                MuxStep::Write(w) => {
                    assert_eq!(w.data.len(), 512);
                    assert!(w.data[2..].iter().all(|&b| b == 0));
                    Some((hex(&w.cdb), hex(&w.data[..2])))
                }
                MuxStep::Pause(_) => None,
            })
            .collect()
    }

    const CDB_2_BYTES_TO_0X41: &str = "cf 23 82 00 00 02 00 00 00 00 00 00 00 00 00 00";

    #[test]
    fn usb_sd_mux_to_board_golden_bytes() {
        let steps = usb_sd_mux_sequence(MuxSide::Board);
        assert_eq!(steps[2], MuxStep::Pause(Duration::from_secs(1)));
        let expected = [
            (CDB_2_BYTES_TO_0X41, "01 0b"),
            (CDB_2_BYTES_TO_0X41, "03 f0"),
            (CDB_2_BYTES_TO_0X41, "01 0f"),
            (CDB_2_BYTES_TO_0X41, "01 0c"),
        ];
        let got = writes(&steps);
        let got: Vec<(&str, &str)> = got.iter().map(|(c, d)| (c.as_str(), d.as_str())).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn usb_sd_mux_to_host_golden_bytes() {
        let got = writes(&usb_sd_mux_sequence(MuxSide::Host));
        let got: Vec<(&str, &str)> = got.iter().map(|(c, d)| (c.as_str(), d.as_str())).collect();
        assert_eq!(
            got,
            [
                (CDB_2_BYTES_TO_0X41, "01 0b"),
                (CDB_2_BYTES_TO_0X41, "03 f0"),
                (CDB_2_BYTES_TO_0X41, "01 00"),
            ]
        );
    }

    #[test]
    fn sg_raw_command_line() {
        let command = usb2642_i2c_write(0x41, &[0x01, 0x00]);
        assert_eq!(
            sg_raw_args(Path::new("/dev/sg3"), &command).join(" "),
            format!("--send 512 /dev/sg3 {CDB_2_BYTES_TO_0X41}")
        );
    }

    #[test]
    fn sdwire_arguments() {
        let wire = SdWire::new("sdw-42".into());
        assert_eq!(wire.args(MuxSide::Host), ["--device-serial=sdw-42", "--ts"]);
        assert_eq!(
            wire.args(MuxSide::Board),
            ["--device-serial=sdw-42", "--dut"]
        );
    }

    #[derive(Debug, Default, Clone)]
    struct Levels(Arc<Mutex<Vec<bool>>>);

    impl embedded_hal::digital::ErrorType for Levels {
        type Error = Infallible;
    }
    impl OutputPin for Levels {
        fn set_low(&mut self) -> Result<(), Infallible> {
            self.0.lock().unwrap().push(false);
            Ok(())
        }
        fn set_high(&mut self) -> Result<(), Infallible> {
            self.0.lock().unwrap().push(true);
            Ok(())
        }
    }

    /// A mux that records its switches and makes the "card" appear while on the host side.
    #[derive(Debug)]
    struct FileMux {
        inner: GpioMux<Levels>,
        card: PathBuf,
    }

    impl Mux for FileMux {
        fn select(&self, side: MuxSide) -> Result<(), DriverError> {
            if side == MuxSide::Host {
                std::fs::write(&self.card, b"").unwrap();
            }
            self.inner.select(side)
        }
    }

    #[test]
    fn mux_storage_switches_to_host_flashes_verifies_and_switches_back() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("img");
        std::fs::write(&image, vec![7u8; 10_000]).unwrap();
        let card = dir.path().join("card");
        let levels = Levels::default();
        let storage = MuxStorage::new(
            FileMux {
                inner: GpioMux::new("fake".into(), levels.clone(), true),
                card: card.clone(),
            },
            card.clone(),
        );
        let report = storage.flash(&image, &mut |_| {}).unwrap();
        assert_eq!(report.data_bytes, 10_000);
        assert_eq!(std::fs::read(&card).unwrap(), vec![7u8; 10_000]);
        // Active-low select: host = high, board = low.
        assert_eq!(*levels.0.lock().unwrap(), [true, false]);
    }

    #[test]
    fn mux_storage_times_out_when_the_card_never_appears() {
        let levels = Levels::default();
        let mut storage = MuxStorage::new(
            GpioMux::new("fake".into(), levels, false),
            PathBuf::from("/dev/nonexistent-card"),
        );
        storage.appear_timeout = Duration::from_millis(300);
        let err = storage
            .flash(Path::new("/dev/null"), &mut |_| {})
            .unwrap_err();
        assert!(err.to_string().contains("/dev/nonexistent-card"), "{err}");
    }
}
