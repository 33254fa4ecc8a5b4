//! The board's firmware settings from the `BoardConfig` document: the device-tree overlays.
//! On a Raspberry Pi they are the `dtoverlay=` lines of `config.txt` on the boot partition,
//! which the firmware applies when it next starts. On boards whose U-Boot loads the DTB from
//! the EFI partition's `dtb/`, machined writes those DTBs from the pristine ones in `dtb-base/`
//! with the overlays applied. Either way a change needs a reboot but no new image.

use std::path::{Path, PathBuf};

use talos_dtb::PRISTINE_DTB_DIR;
use talos_dtb::fdt::{Fdt, FdtError};
use talos_machinery::config::Config;

use crate::io_error::{PathError, io};

/// The board's default overlays, one per line; the image carries it only for boards that
/// apply overlays.
pub const DEFAULT_OVERLAYS: &str = "/etc/talos/overlays";
const CONFIG_TXT: &str = "config.txt";
const OVERLAY_DIR: &str = "overlays";
const OVERLAY_KEY: &str = "dtoverlay=";
/// Where U-Boot's EFI loader looks for the board's DTB.
const APPLIED_DTB_DIR: &str = "dtb";

#[derive(Debug, thiserror::Error)]
pub enum FirmwareError {
    #[error("BoardConfig: this board's firmware applies no device-tree overlays")]
    Unsupported,
    #[error(
        "BoardConfig.overlays: {name:?} is not on the boot partition (no {OVERLAY_DIR}/{name}.dtbo); available: {available}"
    )]
    UnknownOverlay { name: String, available: String },
    #[error("BoardConfig.overlays: {name:?} ({OVERLAY_DIR}/{name}.dtbo) is not a valid overlay")]
    BadOverlay {
        name: String,
        #[source]
        source: FdtError,
    },
    #[error(
        "BoardConfig.overlays: {name:?} is written for [{written_for}], not for {dtb} ([{board}])"
    )]
    NotForBoard {
        name: String,
        written_for: String,
        dtb: String,
        board: String,
    },
    #[error("BoardConfig.overlays: {name:?} does not apply to {dtb}")]
    Apply {
        name: String,
        dtb: String,
        #[source]
        source: FdtError,
    },
    #[error("The board's device tree {PRISTINE_DTB_DIR}/{dtb} is not valid")]
    BadDeviceTree {
        dtb: String,
        #[source]
        source: FdtError,
    },
    #[error(transparent)]
    Io(#[from] PathError),
}

/// Who applies the overlays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applier {
    /// The Raspberry Pi firmware, from the `dtoverlay=` lines of `config.txt`.
    ConfigTxt,
    /// machined, into `dtb/`, which U-Boot loads.
    DtbDir,
}

/// The overlays on a mounted boot partition and where they are applied.
#[derive(Debug, Clone)]
pub struct Firmware {
    boot_root: PathBuf,
    defaults: Vec<String>,
    applier: Applier,
}

impl Firmware {
    /// `None` unless the image names default overlays in `defaults_file` and the boot
    /// partition at `boot_root` has a `config.txt` or pristine DTBs in `dtb-base/`.
    pub fn open(boot_root: &Path, defaults_file: &Path) -> Option<Firmware> {
        let defaults = std::fs::read_to_string(defaults_file).ok()?;
        let applier = if boot_root.join(CONFIG_TXT).is_file() {
            Applier::ConfigTxt
        } else if boot_root.join(PRISTINE_DTB_DIR).is_dir() {
            Applier::DtbDir
        } else {
            return None;
        };
        Some(Firmware {
            boot_root: boot_root.to_owned(),
            defaults: defaults
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
            applier,
        })
    }

    /// The overlays `config` asks for: its `BoardConfig`'s, else the board's defaults.
    pub fn wanted(&self, config: &Config) -> Vec<String> {
        config
            .board_config()
            .map_or_else(|| self.defaults.clone(), |b| b.overlays.clone())
    }

    /// Every overlay in `overlays` is on the boot partition and, where machined applies them,
    /// applies to every DTB of the board.
    pub fn check(&self, overlays: &[String]) -> Result<(), FirmwareError> {
        self.check_present(overlays)?;
        if self.applier == Applier::DtbDir {
            self.merged_dtbs(overlays)?;
        }
        Ok(())
    }

    fn check_present(&self, overlays: &[String]) -> Result<(), FirmwareError> {
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

    /// Puts `overlays` in place for the next boot (atomically, file by file) unless they are
    /// there already; true when something changed.
    pub fn apply(&self, overlays: &[String]) -> Result<bool, FirmwareError> {
        self.check_present(overlays)?;
        match self.applier {
            Applier::ConfigTxt => self.write_config_txt(overlays),
            Applier::DtbDir => self.write_dtbs(overlays),
        }
    }

    fn write_config_txt(&self, overlays: &[String]) -> Result<bool, FirmwareError> {
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

    fn write_dtbs(&self, overlays: &[String]) -> Result<bool, FirmwareError> {
        let mut changed = false;
        for (relative, bytes) in self.merged_dtbs(overlays)? {
            let path = self.boot_root.join(APPLIED_DTB_DIR).join(&relative);
            if std::fs::read(&path).is_ok_and(|old| old == bytes) {
                continue;
            }
            let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
                continue;
            };
            std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
            crate::storage::write_atomically(dir, &name.to_string_lossy(), &bytes)
                .map_err(io("writing", &path))?;
            changed = true;
        }
        Ok(changed)
    }

    /// Each DTB in `dtb-base/` (by relative path, e.g. `rockchip/rk3399-rock-pi-4b.dtb`) with
    /// `overlays` applied in order; unchanged when there are none.
    fn merged_dtbs(&self, overlays: &[String]) -> Result<Vec<(String, Vec<u8>)>, FirmwareError> {
        let mut parsed = Vec::with_capacity(overlays.len());
        for name in overlays {
            let path = self
                .boot_root
                .join(OVERLAY_DIR)
                .join(format!("{name}.dtbo"));
            let bytes = std::fs::read(&path).map_err(io("reading", &path))?;
            let tree = Fdt::parse(&bytes).map_err(|source| FirmwareError::BadOverlay {
                name: name.clone(),
                source,
            })?;
            parsed.push((name, tree));
        }
        let base_dir = self.boot_root.join(PRISTINE_DTB_DIR);
        let mut merged = Vec::new();
        for relative in dtb_files(&base_dir)? {
            let path = base_dir.join(&relative);
            let bytes = std::fs::read(&path).map_err(io("reading", &path))?;
            if parsed.is_empty() {
                merged.push((relative, bytes));
                continue;
            }
            let mut tree = Fdt::parse(&bytes).map_err(|source| FirmwareError::BadDeviceTree {
                dtb: relative.clone(),
                source,
            })?;
            for (name, overlay) in &parsed {
                if !tree.fits(overlay) {
                    return Err(FirmwareError::NotForBoard {
                        name: (*name).clone(),
                        written_for: overlay.compatible().join(", "),
                        dtb: relative,
                        board: tree.compatible().join(", "),
                    });
                }
                tree.apply_overlay(overlay)
                    .map_err(|source| FirmwareError::Apply {
                        name: (*name).clone(),
                        dtb: relative.clone(),
                        source,
                    })?;
            }
            merged.push((relative, tree.to_bytes()));
        }
        Ok(merged)
    }
}

/// The `.dtb` files under `dir`, one directory deep as the kernel package lays them out
/// (`<vendor>/<board>.dtb`), as relative paths, sorted.
fn dtb_files(dir: &Path) -> Result<Vec<String>, FirmwareError> {
    let mut found = Vec::new();
    for vendor in std::fs::read_dir(dir).map_err(io("listing", dir))? {
        let vendor = vendor.map_err(io("listing", dir))?.path();
        let Ok(entries) = std::fs::read_dir(&vendor) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".dtb") {
                let vendor_name = vendor.file_name().unwrap_or_default().to_string_lossy();
                found.push(format!("{vendor_name}/{name}"));
            }
        }
    }
    found.sort();
    Ok(found)
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
    use talos_dtb::fdt::Node;

    use super::*;
    use crate::node::error_chain;

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

    /// `strings` as a device-tree string list.
    fn strings(strings: &[&str]) -> Vec<u8> {
        strings.iter().flat_map(|s| s.bytes().chain([0])).collect()
    }

    fn tree(compatible: &[&str], children: Vec<Node>) -> Fdt {
        let mut root = Node::new("");
        root.set_property("compatible", strings(compatible));
        root.children = children;
        Fdt {
            root,
            boot_cpuid: 0,
            reservations: Vec::new(),
        }
    }

    fn node(name: &str, status: &str) -> Node {
        let mut node = Node::new(name);
        node.set_property("status", strings(&[status]));
        node
    }

    /// An overlay for `soc` setting the status of the node at `target`.
    fn overlay(soc: &str, target: &str, status: &str) -> Vec<u8> {
        let mut fragment = Node::new("fragment@0");
        fragment.set_property("target-path", strings(&[target]));
        fragment.children.push(node("__overlay__", status));
        tree(&[soc], vec![fragment]).to_bytes()
    }

    /// A U-Boot board's EFI partition: one pristine DTB in `dtb-base/`, the same in `dtb/`.
    fn efi_partition(dir: &Path) -> (Firmware, Vec<u8>) {
        let base = tree(
            &["vendor,board", "vendor,soc"],
            vec![node("serial@1000", "disabled")],
        )
        .to_bytes();
        for top in [PRISTINE_DTB_DIR, APPLIED_DTB_DIR] {
            std::fs::create_dir_all(dir.join(top).join("vendor")).unwrap();
            std::fs::write(dir.join(top).join("vendor/board.dtb"), &base).unwrap();
        }
        std::fs::create_dir(dir.join(OVERLAY_DIR)).unwrap();
        for (name, bytes) in [
            (
                "serial-enable",
                overlay("vendor,soc", "/serial@1000", "okay"),
            ),
            ("other-soc", overlay("other,soc", "/serial@1000", "okay")),
            ("wrong-path", overlay("vendor,soc", "/serial@2000", "okay")),
        ] {
            std::fs::write(dir.join(OVERLAY_DIR).join(format!("{name}.dtbo")), bytes).unwrap();
        }
        let defaults = dir.join("defaults");
        std::fs::write(&defaults, "").unwrap();
        let firmware = Firmware::open(dir, &defaults).expect("an EFI partition with dtb-base/");
        assert_eq!(firmware.applier, Applier::DtbDir);
        (firmware, base)
    }

    #[test]
    fn overlays_are_applied_into_dtb_from_the_pristine_copy() {
        let dir = tempfile::tempdir().unwrap();
        let (firmware, base) = efi_partition(dir.path());
        let applied = dir.path().join("dtb/vendor/board.dtb");
        let status = || {
            let tree = Fdt::parse(&std::fs::read(&applied).unwrap()).unwrap();
            tree.node("/serial@1000")
                .and_then(|n| n.property_str("status"))
                .map(str::to_owned)
        };
        assert!(
            !firmware.apply(&[]).unwrap(),
            "the image's DTB is the pristine one"
        );
        assert!(firmware.apply(&names(&["serial-enable"])).unwrap());
        assert_eq!(status().as_deref(), Some("okay"));
        assert!(!firmware.apply(&names(&["serial-enable"])).unwrap());
        assert_eq!(
            std::fs::read(dir.path().join("dtb-base/vendor/board.dtb")).unwrap(),
            base
        );
        assert!(
            firmware.apply(&[]).unwrap(),
            "no overlays: back to pristine"
        );
        assert_eq!(std::fs::read(&applied).unwrap(), base);
    }

    #[test]
    fn overlays_for_another_soc_or_missing_nodes_are_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let (firmware, base) = efi_partition(dir.path());
        let error = |list: &[&str]| error_chain(&firmware.check(&names(list)).unwrap_err());
        assert_eq!(
            error(&["other-soc"]),
            "BoardConfig.overlays: \"other-soc\" is written for [other,soc], not for vendor/board.dtb ([vendor,board, vendor,soc])"
        );
        assert_eq!(
            error(&["serial-enable", "wrong-path"]),
            "BoardConfig.overlays: \"wrong-path\" does not apply to vendor/board.dtb: fragment@0: target-path \"/serial@2000\" is not in the base device tree"
        );
        assert!(
            firmware
                .apply(&names(&["serial-enable", "wrong-path"]))
                .is_err()
        );
        assert_eq!(
            std::fs::read(dir.path().join("dtb/vendor/board.dtb")).unwrap(),
            base
        );
    }
}
