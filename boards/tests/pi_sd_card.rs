//! The Raspberry Pi SD-card settings: a hybrid MBR for the Pi 3's boot ROM, QEMU's raspi3b
//! with its SD slot, USB NIC and second serial port, and the firmware's device-tree names.

use std::fs;
use std::path::PathBuf;

use talos_boards::{Board, BoardError, DiskDevice, NicDevice, find};

fn boards_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rpi_text() -> String {
    fs::read_to_string(boards_dir().join("rpi_generic/board.toml")).expect("rpi_generic")
}

fn load_text(text: &str) -> Result<Board, BoardError> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("rpi_generic");
    fs::create_dir_all(&dir).expect("mkdir");
    fs::write(dir.join("board.toml"), text).expect("write");
    // The memory profile is looked up next to the board directory.
    fs::create_dir_all(tmp.path().join("memory")).expect("mkdir");
    fs::copy(
        boards_dir().join("memory/small.toml"),
        tmp.path().join("memory/small.toml"),
    )
    .expect("copy the memory profile");
    Board::load(&dir.join("board.toml"))
}

fn invalid_field(text: &str) -> String {
    match load_text(text) {
        Err(BoardError::Invalid { field, .. }) => field,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

fn replaced(from: &str, to: &str) -> String {
    let text = rpi_text();
    assert!(
        text.contains(from),
        "rpi_generic/board.toml has no {from:?}"
    );
    text.replace(from, to)
}

#[test]
fn rpi_generic_is_an_sd_card_for_the_pi_3_and_4_and_for_raspi3b() {
    let board = find(&boards_dir(), "rpi_generic").expect("rpi_generic");
    assert!(board.disk.hybrid_mbr);
    let qemu = board.qemu.as_ref().expect("[qemu]");
    assert_eq!(
        (qemu.machine.as_str(), qemu.memory_mib, qemu.smp),
        ("raspi3b", 1024, 4)
    );
    assert_eq!(qemu.disk_device, DiskDevice::SdCard);
    assert_eq!(qemu.nic_device, NicDevice::UsbNet);
    assert_eq!(qemu.serial_ports, 2);
    assert_eq!(qemu.firmware_dtb.as_deref(), Some("bcm2837-rpi-3-b.dtb"));
    assert!(qemu.plug_nic_after.is_some());
    assert!(!qemu.exit_on_poweroff, "raspi3b has no PSCI");
    for module in ["dwc2", "phy_generic", "bcm2835", "sdhci_iproc"] {
        assert!(board.modules.iter().any(|m| m == module), "{module}");
    }
    for module in ["genet", "lan78xx", "smsc95xx", "cdc_ether"] {
        assert!(
            board.modules_on_demand.iter().any(|m| m == module),
            "{module} loads by modalias"
        );
    }
    assert!(
        board
            .config_txt()
            .expect("config.txt")
            .contains("\nupstream_kernel=1\n")
    );
    // Boards without the setting keep a plain protective MBR.
    let rock = find(&boards_dir(), "rockpi4").expect("rockpi4");
    assert!(!rock.disk.hybrid_mbr);
    assert_eq!(rock.qemu, None);
}

#[test]
fn sd_card_settings_are_validated() {
    assert!(load_text(&rpi_text()).is_ok());
    // An MBR entry helps only firmware that loads files from the partition.
    let text = rpi_text();
    let no_boot_files: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("install = \"boot-file\""))
        .collect();
    assert_eq!(invalid_field(&no_boot_files.join("\n")), "disk.hybrid_mbr");
    assert_eq!(
        invalid_field(&replaced(
            "hybrid_mbr = true",
            "hybrid_mbr = true\npartition_start_lba = 4294967296"
        )),
        "disk.partition_start_lba"
    );
    assert_eq!(
        invalid_field(&replaced("machine = \"raspi3b\"", "machine = \"virt\"")),
        "qemu.disk_device"
    );
    assert_eq!(
        invalid_field(&replaced("serial_ports = 2", "serial_ports = 0")),
        "qemu.serial_ports"
    );
    assert_eq!(
        invalid_field(&replaced(
            "firmware_dtb = \"bcm2837-rpi-3-b.dtb\"",
            "firmware_dtb = \"broadcom/bcm2837-rpi-3-b.dtb\""
        )),
        "qemu.firmware_dtb"
    );
    assert_eq!(
        invalid_field(&replaced(
            "firmware_dtb = \"bcm2837-rpi-3-b.dtb\"",
            "firmware_dtb = \"bcm2835-rpi-b.dtb\""
        )),
        "qemu.firmware_dtb"
    );
    assert_eq!(
        invalid_field(&replaced(
            "plug_nic_after = \"DWC OTG Controller\"",
            "plug_nic_after = \" \""
        )),
        "qemu.plug_nic_after"
    );
    assert_eq!(
        invalid_field(&replaced(
            "upstream_kernel = true",
            "upstream_kernel = false"
        )),
        "config_txt.upstream_kernel"
    );
}
