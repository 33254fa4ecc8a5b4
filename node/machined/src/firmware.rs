//! The board's firmware settings from the `BoardConfig` document. On a Raspberry Pi these are
//! the `dtoverlay=` lines of `config.txt` on the boot partition: the firmware applies the
//! overlays when it next starts, so a change needs a reboot but no new image.

use std::path::{Path, PathBuf};

use talos_machinery::config::Config;

use crate::io_error::{PathError, io};

/// The board's default overlays, one per line; the image carries it only for boards whose
/// firmware applies overlays.
pub const DEFAULT_OVERLAYS: &str = "/etc/talos/overlays";
const CONFIG_TXT: &str = "config.txt";
const OVERLAY_DIR: &str = "overlays";
const OVERLAY_KEY: &str = "dtoverlay=";

#[derive(Debug, thiserror::Error)]
pub enum FirmwareError {
    #[error("BoardConfig: this board's firmware applies no device-tree overlays")]
    Unsupported,
    #[error(
        "BoardConfig.overlays: {name:?} is not on the boot partition (no {OVERLAY_DIR}/{name}.dtbo); available: {available}"
    )]
    UnknownOverlay { name: String, available: String },
    #[error(transparent)]
    Io(#[from] PathError),
}

/// `config.txt` and the overlays on a mounted boot partition.
#[derive(Debug, Clone)]
pub struct Firmware {
    boot_root: PathBuf,
    defaults: Vec<String>,
}

impl Firmware {
    /// `None` unless the image names default overlays in `defaults_file` and the boot
    /// partition at `boot_root` has a `config.txt`.
    pub fn open(boot_root: &Path, defaults_file: &Path) -> Option<Firmware> {
        let defaults = std::fs::read_to_string(defaults_file).ok()?;
        boot_root.join(CONFIG_TXT).is_file().then(|| Firmware {
            boot_root: boot_root.to_owned(),
            defaults: defaults
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
        })
    }

    /// The overlays `config` asks for: its `BoardConfig`'s, else the board's defaults.
    pub fn wanted(&self, config: &Config) -> Vec<String> {
        config
            .board_config()
            .map_or_else(|| self.defaults.clone(), |b| b.overlays.clone())
    }

    /// Every overlay in `overlays` has its `.dtbo` on the boot partition.
    pub fn check(&self, overlays: &[String]) -> Result<(), FirmwareError> {
        let dir = self.boot_root.join(OVERLAY_DIR);
        let Some(missing) = overlays
            .iter()
            .find(|name| !dir.join(format!("{name}.dtbo")).is_file())
        else {
            return Ok(());
        };
        let mut available: Vec<String> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_string_lossy()
                    .strip_suffix(".dtbo")
                    .map(str::to_owned)
            })
            .collect();
        available.sort();
        Err(FirmwareError::UnknownOverlay {
            name: missing.clone(),
            available: if available.is_empty() {
                "none".to_owned()
            } else {
                available.join(", ")
            },
        })
    }

    /// Writes `overlays` into `config.txt` (atomically) unless it lists them already; true
    /// when the file changed.
    pub fn apply(&self, overlays: &[String]) -> Result<bool, FirmwareError> {
        self.check(overlays)?;
        let path = self.boot_root.join(CONFIG_TXT);
        let old = std::fs::read_to_string(&path).map_err(io("reading", &path))?;
        let new = with_overlays(&old, overlays);
        if new == old {
            return Ok(false);
        }
        crate::storage::write_atomically(&self.boot_root, CONFIG_TXT, new.as_bytes())
            .map_err(io("writing", &path))?;
        Ok(true)
    }
}

/// `config_txt` with its `dtoverlay=` lines replaced by one per overlay, where the first one
/// was (or at the end).
pub fn with_overlays(config_txt: &str, overlays: &[String]) -> String {
    let mut out = String::with_capacity(config_txt.len());
    let mut written = false;
    let write_overlays = |out: &mut String| {
        for name in overlays {
            out.push_str(OVERLAY_KEY);
            out.push_str(name);
            out.push('\n');
        }
    };
    for line in config_txt.lines() {
        if line.trim_start().starts_with(OVERLAY_KEY) {
            if !written {
                write_overlays(&mut out);
                written = true;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !written {
        write_overlays(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG_TXT_TEXT: &str = "# generated\nkernel=u-boot.bin\ndtoverlay=disable-bt\ndtoverlay=uart-console\nenable_uart=1\n";

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn overlay_lines_are_replaced_in_place() {
        assert_eq!(
            with_overlays(CONFIG_TXT_TEXT, &names(&["i2c1-enable"])),
            "# generated\nkernel=u-boot.bin\ndtoverlay=i2c1-enable\nenable_uart=1\n"
        );
        assert_eq!(
            with_overlays(CONFIG_TXT_TEXT, &[]),
            "# generated\nkernel=u-boot.bin\nenable_uart=1\n"
        );
        assert_eq!(
            with_overlays("kernel=u-boot.bin", &names(&["a", "b"])),
            "kernel=u-boot.bin\ndtoverlay=a\ndtoverlay=b\n"
        );
        let same = names(&["disable-bt", "uart-console"]);
        assert_eq!(with_overlays(CONFIG_TXT_TEXT, &same), CONFIG_TXT_TEXT);
    }

    fn boot_partition(dir: &Path) -> Firmware {
        std::fs::write(dir.join(CONFIG_TXT), CONFIG_TXT_TEXT).unwrap();
        std::fs::create_dir(dir.join(OVERLAY_DIR)).unwrap();
        for name in ["disable-bt", "uart-console", "i2c1-enable"] {
            std::fs::write(dir.join(OVERLAY_DIR).join(format!("{name}.dtbo")), b"").unwrap();
        }
        let defaults = dir.join("defaults");
        std::fs::write(&defaults, "disable-bt\nuart-console\n").unwrap();
        Firmware::open(dir, &defaults).expect("a Pi boot partition")
    }

    #[test]
    fn apply_rewrites_config_txt_only_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let firmware = boot_partition(dir.path());
        let config_txt = dir.path().join(CONFIG_TXT);
        assert!(!firmware.apply(&firmware.defaults.clone()).unwrap());
        assert!(firmware.apply(&names(&["i2c1-enable"])).unwrap());
        assert!(
            std::fs::read_to_string(&config_txt)
                .unwrap()
                .contains("\ndtoverlay=i2c1-enable\nenable_uart=1\n")
        );
        assert!(!firmware.apply(&names(&["i2c1-enable"])).unwrap());
    }

    #[test]
    fn unknown_overlays_are_refused_with_the_available_ones() {
        let dir = tempfile::tempdir().unwrap();
        let firmware = boot_partition(dir.path());
        let err = firmware.apply(&names(&["spi0"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "BoardConfig.overlays: \"spi0\" is not on the boot partition (no overlays/spi0.dtbo); available: disable-bt, i2c1-enable, uart-console"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join(CONFIG_TXT)).unwrap(),
            CONFIG_TXT_TEXT
        );
    }

    #[test]
    fn boards_without_overlay_defaults_have_no_firmware_settings() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_TXT), CONFIG_TXT_TEXT).unwrap();
        assert!(Firmware::open(dir.path(), &dir.path().join("missing")).is_none());
        let defaults = dir.path().join("defaults");
        std::fs::write(&defaults, "a\n").unwrap();
        let empty = tempfile::tempdir().unwrap();
        assert!(Firmware::open(empty.path(), &defaults).is_none());
    }
}
