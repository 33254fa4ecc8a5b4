//! Boots real Debian kernels under QEMU through `QemuBoard`.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use talos_boards::{Board, find};
use talos_hil::qemu::qemu_binary;
use talos_hil::{Accel, BootSource, HilError, QemuBoard, QemuSpec};
use talos_images::InitramfsSpec;
use talos_machinery::Arch;

const DEBS_DIR: &str = "/work/cache/debs";
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

fn board(name: &str) -> Board {
    let boards = Path::new(env!("CARGO_MANIFEST_DIR")).join("../boards");
    find(&boards, name).expect("board in the repository")
}

/// The Debian kernel image for `arch`, unpacked once under target/tmp, or why not.
fn debian_kernel(arch: Arch) -> Result<PathBuf, String> {
    let binary = qemu_binary(arch);
    if Command::new(binary).arg("--version").output().is_err() {
        return Err(format!("{binary} is not installed"));
    }
    let suffix = format!("_{}.deb", arch.debian());
    let mut debs: Vec<PathBuf> = fs::read_dir(DEBS_DIR)
        .map_err(|e| format!("cannot read {DEBS_DIR}: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("linux-image-") && n.ends_with(&suffix))
        })
        .collect();
    debs.sort();
    let deb = debs
        .pop()
        .ok_or_else(|| format!("no linux-image-*{suffix} in {DEBS_DIR}"))?;
    let stem = deb
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("utf-8 name");
    let cached = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("talos-hil-{stem}.vmlinuz"));
    if !cached.is_file() {
        let staging = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("staging");
        let status = Command::new("sh")
            .arg("-c")
            .arg(r#"dpkg-deb --fsys-tarfile "$1" | tar -x -C "$2" --wildcards './boot/vmlinuz-*'"#)
            .arg("sh")
            .arg(&deb)
            .arg(staging.path())
            .status()
            .expect("run dpkg-deb");
        assert!(
            status.success(),
            "extracting the kernel from {}",
            deb.display()
        );
        let vmlinuz = fs::read_dir(staging.path().join("boot"))
            .expect("boot dir")
            .next()
            .expect("one vmlinuz")
            .expect("dir entry")
            .path();
        // rename is atomic, so a concurrent test sees the whole file or none.
        fs::rename(vmlinuz, &cached).expect("cache the kernel");
    }
    Ok(cached)
}

fn spec(board: Board, kernel: PathBuf, initrd: PathBuf, dir: &Path) -> QemuSpec {
    QemuSpec {
        board,
        boot: BootSource::Kernel {
            kernel,
            initrd,
            append_extra: vec!["talos.config=none".into()],
        },
        disk: None,
        api_port: None,
        serial_log: dir.join("serial.log"),
        accel: Accel::Tcg,
        no_reboot: false,
    }
}

/// Boots with an empty initrd: the kernel starts, finds no root and panics.
fn boot_to_panic(arch: Arch, board_name: &str) {
    let kernel = match debian_kernel(arch) {
        Ok(kernel) => kernel,
        Err(reason) => {
            eprintln!("skipped: {reason}");
            return;
        }
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let initrd = tmp.path().join("empty.initrd");
    fs::write(&initrd, b"").expect("initrd");
    let qemu = QemuBoard::launch(spec(board(board_name), kernel, initrd, tmp.path()))
        .expect("launch qemu");
    assert_ne!(qemu.api_port(), 0);

    let banner = qemu
        .wait_for_line("Linux version", BOOT_TIMEOUT)
        .expect("kernel banner");
    let to_banner = qemu.launched_at().elapsed();
    let cmdline = qemu
        .wait_for_line("talos.config=none", BOOT_TIMEOUT)
        .expect("command line");
    assert!(
        cmdline.contains("ommand line:") && cmdline.contains("talos.platform=metal"),
        "{cmdline}"
    );
    qemu.wait_for_line("Kernel panic - not syncing", BOOT_TIMEOUT)
        .expect("panic without a root filesystem");
    let to_panic = qemu.launched_at().elapsed();
    eprintln!("{board_name}: 'Linux version' after {to_banner:?}, panic after {to_panic:?}");

    let log = fs::read_to_string(qemu.serial_log()).expect("serial log");
    assert!(log.contains(&banner), "serial log lacks the banner");
    let timed = qemu.serial_lines_timed();
    assert!(timed.windows(2).all(|w| w[0].at <= w[1].at));
    // The kernel may still be printing: the untimed view is taken later, so it has no fewer lines.
    assert!(timed.len() <= qemu.serial_lines().len());

    // Consumed output does not match again.
    let err = qemu
        .wait_for_line("Linux version", Duration::from_millis(300))
        .expect_err("banner already consumed");
    match err {
        HilError::Timeout { tail, .. } => assert!(tail.contains("Kernel panic"), "{tail}"),
        other => panic!("expected a timeout, got {other:?}"),
    }

    qemu.power_off_hard().expect("kill qemu");
    let status = qemu.wait_exit(Duration::from_secs(10)).expect("qemu exits");
    assert_eq!(status.signal(), Some(9), "{status}");
    assert!(matches!(
        qemu.wait_for_line("never printed", BOOT_TIMEOUT),
        Err(HilError::ConsoleClosed { .. })
    ));
}

#[test]
fn debian_arm64_kernel_boots_to_panic_and_is_killed() {
    boot_to_panic(Arch::Arm64, "qemu-virt-arm64");
}

#[test]
fn debian_amd64_kernel_boots_to_panic_and_is_killed() {
    boot_to_panic(Arch::Amd64, "qemu-amd64");
}

/// The kernel unpacks a talos-images initramfs and runs its /init; since that /init is not
/// an executable, the kernel panics, reboots (panic=-1), and -no-reboot makes QEMU exit.
#[test]
fn arm64_kernel_unpacks_our_initramfs_and_runs_init() {
    let kernel = match debian_kernel(Arch::Arm64) {
        Ok(kernel) => kernel,
        Err(reason) => {
            eprintln!("skipped: {reason}");
            return;
        }
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let init = tmp.path().join("init");
    fs::write(&init, b"not an executable").expect("init");
    let image = talos_images::build(&InitramfsSpec {
        init,
        kernel_modules: None,
        extra_files: vec![],
        mtime: 0,
    })
    .expect("initramfs");
    let initrd = tmp.path().join("initramfs.cpio.zst");
    fs::write(&initrd, &image.bytes).expect("write initramfs");

    let mut spec = spec(board("qemu-virt-arm64"), kernel, initrd, tmp.path());
    if let BootSource::Kernel { append_extra, .. } = &mut spec.boot {
        append_extra.push("panic=-1".into());
    }
    spec.no_reboot = true;
    let qemu = QemuBoard::launch(spec).expect("launch qemu");
    qemu.wait_for_line("Run /init as init process", BOOT_TIMEOUT)
        .expect("kernel runs /init from our image");
    let to_init = qemu.launched_at().elapsed();
    qemu.wait_for_line("Failed to execute /init (error -8)", BOOT_TIMEOUT)
        .expect("/init is our non-executable file");
    let status = qemu
        .wait_exit(BOOT_TIMEOUT)
        .expect("guest reboot ends QEMU");
    assert!(status.success(), "{status}");
    assert!(
        !qemu
            .serial_lines()
            .iter()
            .any(|l| l.contains("Initramfs unpacking failed")),
        "the kernel rejected the image"
    );
    eprintln!("arm64: /init started after {to_init:?}");
}

/// QEMU refusing its command line surfaces as a closed console quoting QEMU's stderr.
#[test]
fn qemu_startup_errors_are_reported_with_stderr() {
    let binary = qemu_binary(Arch::Arm64);
    if Command::new(binary).arg("--version").output().is_err() {
        eprintln!("skipped: {binary} is not installed");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("broken-arm64");
    fs::create_dir(&dir).expect("mkdir");
    let base = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../boards/qemu-virt-arm64/board.toml"),
    )
    .expect("arm64 board");
    let broken = base
        .replace("name = \"qemu-virt-arm64\"", "name = \"broken-arm64\"")
        .replace(
            "exit_on_poweroff = true",
            "exit_on_poweroff = true\nextra_args = [\"-device\", \"no-such-device\"]",
        );
    fs::write(dir.join("board.toml"), broken).expect("write board");
    let boards = Path::new(env!("CARGO_MANIFEST_DIR")).join("../boards");
    fs::create_dir(tmp.path().join("memory")).expect("mkdir memory");
    fs::copy(
        boards.join("memory/standard.toml"),
        tmp.path().join("memory/standard.toml"),
    )
    .expect("memory profile");
    let board = Board::load(&dir.join("board.toml")).expect("valid board");
    let placeholder = tmp.path().join("placeholder");
    fs::write(&placeholder, b"").expect("placeholder");
    let qemu = QemuBoard::launch(spec(board, placeholder.clone(), placeholder, tmp.path()))
        .expect("spawn qemu");
    match qemu.wait_for_line("Linux version", BOOT_TIMEOUT) {
        Err(HilError::ConsoleClosed { stderr, .. }) => {
            assert!(stderr.contains("no-such-device"), "{stderr}")
        }
        other => panic!("expected a closed console, got {other:?}"),
    }
    assert!(!qemu.wait_exit(BOOT_TIMEOUT).expect("qemu exited").success());
}
