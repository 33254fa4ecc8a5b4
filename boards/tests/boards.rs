//! Every board in the repository loads, and bad files are reported precisely.

use std::fs;
use std::path::{Path, PathBuf};

use talos_boards::{Board, BoardError, DiskDevice, NicDevice, find, load_all};
use talos_machinery::Arch;

fn boards_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

const VALID: &str = r#"
name = "test-board"
arch = "arm64"
description = "A test board"
console = "ttyAMA0"
kernel_args = ["console=ttyAMA0,115200", "talos.platform=metal"]
modules = ["virtio_net"]

[qemu]
machine = "virt"
cpu = "cortex-a72"
memory_mib = 512
smp = 1
nic_device = "virtio-net-device"
disk_device = "virtio-blk-device"
exit_on_poweroff = true
"#;

fn write_board(root: &Path, text: &str) -> PathBuf {
    let dir = root.join("test-board");
    fs::create_dir_all(&dir).expect("mkdir");
    let path = dir.join("board.toml");
    fs::write(&path, text).expect("write board");
    path
}

fn load_text(text: &str) -> Result<Board, BoardError> {
    let tmp = tempfile::tempdir().expect("tempdir");
    Board::load(&write_board(tmp.path(), text))
}

#[test]
fn every_board_in_the_repository_loads() {
    let boards = load_all(&boards_dir()).expect("all boards valid");
    let names: Vec<&str> = boards.iter().map(|b| b.name.as_str()).collect();
    assert!(names.contains(&"qemu-virt-arm64"), "{names:?}");
    assert!(names.contains(&"qemu-amd64"), "{names:?}");
    for wanted in [
        "generic-amd64",
        "generic-arm64",
        "pine64",
        "rockpi4",
        "rpi_generic",
    ] {
        assert!(names.contains(&wanted), "{wanted} missing from {names:?}");
    }
    for board in &boards {
        let console = format!("console={}", board.console);
        assert!(
            board
                .kernel_args
                .iter()
                .any(|a| *a == console || a.starts_with(&format!("{console},"))),
            "{}",
            board.name
        );
        assert!(
            board.memory.is_some(),
            "{} has no memory profile",
            board.name
        );
        assert!(
            board
                .kernel_args
                .contains(&"talos.platform=metal".to_owned())
        );
    }
}

#[test]
fn qemu_boards_have_the_expected_machines() {
    let arm = find(&boards_dir(), "qemu-virt-arm64").expect("arm64 board");
    assert_eq!(arm.arch, Arch::Arm64);
    let qemu = arm.qemu.as_ref().expect("qemu table");
    assert_eq!(
        (qemu.machine.as_str(), qemu.cpu.as_str()),
        ("virt", "cortex-a72")
    );
    assert_eq!(qemu.nic_device, NicDevice::VirtioNetDevice);
    assert_eq!(qemu.disk_device, DiskDevice::VirtioBlkDevice);
    assert!(qemu.exit_on_poweroff);
    assert!(arm.kernel_cmdline().starts_with("console=ttyAMA0 "));

    let amd = find(&boards_dir(), "qemu-amd64").expect("amd64 board");
    assert_eq!(amd.arch, Arch::Amd64);
    assert!(amd.kernel_args.contains(&"pti=on".to_owned()));
    assert!(amd.modules.contains(&"virtio_ring".to_owned()));
    let qemu = amd.qemu.as_ref().expect("qemu table");
    assert_eq!(qemu.nic_device.as_str(), "virtio-net-pci");
    assert!(
        qemu.extra_args
            .iter()
            .any(|a| a.starts_with("isa-debug-exit,"))
    );
}

#[test]
fn a_valid_file_in_a_scratch_dir_loads() {
    let board = load_text(VALID).expect("valid board");
    assert_eq!(board.modules, ["virtio_net"]);
    assert_eq!(board.qemu.expect("qemu").memory_mib, 512);
}

fn parse_detail(text: &str) -> (usize, String) {
    match load_text(text) {
        Err(BoardError::Parse { line, detail, .. }) => (line, detail),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

fn invalid_field(text: &str) -> (String, String) {
    match load_text(text) {
        Err(err @ BoardError::Invalid { .. }) => {
            let message = err.to_string();
            let BoardError::Invalid { field, .. } = err else {
                unreachable!("matched above")
            };
            (field, message)
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[test]
fn unknown_and_mistyped_fields_are_named_with_file_and_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = write_board(tmp.path(), &VALID.replace("smp = 1", "smp = 1\ncores = 2"));
    let err = Board::load(&path).expect_err("unknown field");
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("unknown field `cores`"), "{message}");

    let (line, detail) = parse_detail(&VALID.replace("memory_mib = 512", "memory_mib = \"lots\""));
    assert_eq!(line, 12);
    assert!(detail.contains("memory_mib"), "{detail}");

    let (_, detail) = parse_detail(&VALID.replace("arch = \"arm64\"", "arch = \"riscv\""));
    assert!(detail.contains("arch"), "{detail}");

    let (_, detail) = parse_detail(&VALID.replace("console = \"ttyAMA0\"\n", ""));
    assert!(detail.contains("missing field `console`"), "{detail}");

    let (_, detail) = parse_detail(&VALID.replace("\"virtio-net-device\"", "\"e1000\""));
    assert!(detail.contains("nic_device"), "{detail}");
}

#[test]
fn semantic_errors_name_the_field() {
    let (field, message) = invalid_field(&VALID.replace("\"console=ttyAMA0,115200\", ", ""));
    assert_eq!(field, "kernel_args");
    assert!(message.contains("console=ttyAMA0"), "{message}");
    assert!(message.contains("board.toml"), "{message}");

    let (field, _) = invalid_field(&VALID.replace("name = \"test-board\"", "name = \"other\""));
    assert_eq!(field, "name");

    let (field, _) =
        invalid_field(&VALID.replace("[\"virtio_net\"]", "[\"virtio_net\", \"virtio-net\"]"));
    assert_eq!(field, "modules");

    let (field, _) = invalid_field(&VALID.replace("[\"virtio_net\"]", "[\"virtio_net.ko\"]"));
    assert_eq!(field, "modules");

    let (field, _) = invalid_field(&VALID.replace("memory_mib = 512", "memory_mib = 64"));
    assert_eq!(field, "qemu.memory_mib");

    let (field, message) = invalid_field(&VALID.replace("machine = \"virt\"", "machine = \"q35\""));
    assert_eq!(field, "qemu.nic_device");
    assert!(message.contains("virtio-mmio"), "{message}");

    let (field, _) = invalid_field(&VALID.replace("smp = 1", "smp = 0"));
    assert_eq!(field, "qemu.smp");
}

#[test]
fn find_reports_the_available_boards() {
    let err = find(&boards_dir(), "no-such-board").expect_err("missing board");
    let message = err.to_string();
    assert!(message.contains("\"no-such-board\""), "{message}");
    assert!(message.contains("qemu-virt-arm64"), "{message}");
    assert!(matches!(
        find(&boards_dir(), "../boards"),
        Err(BoardError::NotFound { .. })
    ));
}
