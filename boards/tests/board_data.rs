//! The boot data of the repository's boards: checked against the Debian packages and kernel
//! tree on this machine where they are present, and against golden files.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use talos_boards::{
    Board, BoardError, BootKind, DebianKernel, Placement, Service, cache_dir, find, load_all,
};
use talos_machinery::Arch;

fn boards_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn rpi_config_txt_matches_the_golden_file() {
    let board = find(&boards_dir(), "rpi_generic").expect("rpi_generic");
    let golden = fs::read_to_string(boards_dir().join("tests/golden/rpi_generic.config.txt"))
        .expect("golden file");
    assert_eq!(board.config_txt().expect("a config.txt"), golden);
    assert_eq!(
        find(&boards_dir(), "rockpi4")
            .expect("rockpi4")
            .config_txt(),
        None
    );
}

#[test]
fn qemu_virt_arm64_has_u_boot_and_uefi_variants() {
    let board = find(&boards_dir(), "qemu-virt-arm64").expect("board");
    let default = board.default_firmware().expect("firmware");
    assert_eq!(
        (default.name.as_str(), default.kind),
        ("u-boot", BootKind::UBoot)
    );
    assert_eq!(
        default.artifacts[0].path,
        "/usr/lib/u-boot/qemu_arm64/u-boot.bin"
    );
    let uefi = board.firmware_variant("uefi").expect("uefi variant");
    assert_eq!(uefi.kind, BootKind::Uefi);
    assert!(
        uefi.artifacts
            .iter()
            .any(|a| a.path.ends_with("/QEMU_EFI.fd") && a.placement == Placement::QemuBios)
    );
}

#[test]
fn raw_bootloaders_sit_where_the_boot_roms_read() {
    let raw = |name: &str| -> Vec<(String, u64)> {
        let board = find(&boards_dir(), name).expect("board");
        board.firmware[0]
            .artifacts
            .iter()
            .filter_map(|a| match a.placement {
                Placement::Raw { offset, .. } => Some((
                    a.path.rsplit('/').next().unwrap_or_default().to_owned(),
                    offset,
                )),
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        raw("rockpi4"),
        [
            ("idbloader.img".to_owned(), 32 * 1024),
            ("u-boot.itb".to_owned(), 8 << 20)
        ]
    );
    assert_eq!(raw("pine64")[0], ("sunxi-spl.bin".to_owned(), 8 * 1024));
    let rock = find(&boards_dir(), "rockpi4").expect("rockpi4");
    assert_eq!(rock.disk.partition_start_bytes(), 10 << 20);
    let pine = find(&boards_dir(), "pine64").expect("pine64");
    assert_eq!(pine.disk.gpt_end_bytes(), 8 * 1024);
}

#[test]
fn memory_profiles_carry_the_reservations() {
    let pi = find(&boards_dir(), "rpi_generic").expect("rpi");
    let small = pi.memory.as_ref().expect("profile");
    assert_eq!(small.services[&Service::Machined].min_mib, 48);
    assert_eq!(small.services[&Service::Apid].max_mib, Some(64));
    assert_eq!(small.sysctls["vm.overcommit_memory"], 1);
    let generic = find(&boards_dir(), "generic-arm64").expect("generic");
    let standard = generic.memory.as_ref().expect("profile");
    assert_eq!(standard.services[&Service::Etcd].min_mib, 256);
    assert_eq!(standard.reserved_mib(), 756);
    let table = standard.node_table();
    assert!(table.lines().any(|l| l == "apid 16 128"), "{table}");
    assert!(table.lines().any(|l| l == "etcd 256"), "{table}");
    assert_eq!(table.lines().count(), standard.services.len());
    assert!(
        small
            .sysctl_conf()
            .lines()
            .any(|l| l == "vm.min_free_kbytes = 8192")
    );
}

#[test]
fn dtbs_exist_in_the_debian_kernel_tree() {
    let Some(kernel) = DebianKernel::unpacked(Arch::Arm64) else {
        println!(
            "skipped: no arm64 kernel in {} (run `cargo xtask deps`)",
            DebianKernel::root(Arch::Arm64).display()
        );
        return;
    };
    let dtb_dir = kernel.dtb_dir();
    let mut checked = 0;
    for board in load_all(&boards_dir()).expect("boards") {
        for file in board.dtb.iter().flat_map(|d| &d.files) {
            assert!(
                dtb_dir.join(file).is_file(),
                "{}: {file} not in {}",
                board.name,
                dtb_dir.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 11, "only {checked} DTBs checked");
}

/// Module names in a modules.dep, `-` folded to `_`.
fn module_names(modules_dep: &Path) -> BTreeSet<String> {
    fs::read_to_string(modules_dep)
        .expect("modules.dep")
        .lines()
        .filter_map(|l| l.split(':').next())
        .filter_map(|p| p.rsplit('/').next())
        .map(|f| f.split(".ko").next().unwrap_or(f).replace('-', "_"))
        .collect()
}

#[test]
fn board_modules_exist_in_the_debian_kernels() {
    for arch in [Arch::Arm64, Arch::Amd64] {
        let Some(kernel) = DebianKernel::unpacked(arch) else {
            println!(
                "skipped {arch}: no kernel in {}",
                DebianKernel::root(arch).display()
            );
            continue;
        };
        let names = module_names(&kernel.modules_dir().join("modules.dep"));
        for board in load_all(&boards_dir()).expect("boards") {
            if board.arch != arch {
                continue;
            }
            for module in board.modules.iter().chain(&board.modules_on_demand) {
                assert!(
                    names.contains(&module.replace('-', "_")),
                    "{}: no module {module}",
                    board.name
                );
            }
        }
    }
}

/// The files of a package, from dpkg's database or a cached .deb; None when neither is here.
fn package_files(package: &str, arch: &str) -> Option<BTreeSet<String>> {
    let host_list = if arch == "amd64" {
        format!("{package}.list")
    } else {
        format!("{package}:{arch}.list")
    };
    for list in [host_list, format!("{package}:{arch}.list")] {
        if let Ok(text) = fs::read_to_string(Path::new("/var/lib/dpkg/info").join(list)) {
            return Some(text.lines().map(str::to_owned).collect());
        }
    }
    let debs = cache_dir().join("debs");
    let deb = fs::read_dir(debs)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with(&format!("{package}_"))
                    && (n.ends_with(&format!("_{arch}.deb")) || n.ends_with("_all.deb"))
            })
        })?;
    let out = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(&deb)
        .output()
        .ok()?;
    let listing = Command::new("tar")
        .arg("-t")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .ok()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take()?.write_all(&out.stdout).ok()?;
            child.wait_with_output().ok()
        })?;
    Some(
        String::from_utf8_lossy(&listing.stdout)
            .lines()
            .map(|l| l.trim_start_matches('.').to_owned())
            .collect(),
    )
}

#[test]
fn artifacts_exist_in_their_debian_packages_where_known_here() {
    let mut checked = 0;
    let mut skipped = BTreeSet::new();
    for board in load_all(&boards_dir()).expect("boards") {
        for artifact in board.firmware.iter().flat_map(|f| &f.artifacts) {
            match package_files(&artifact.package, board.arch.as_str()) {
                Some(files) => {
                    assert!(
                        files.contains(&artifact.path),
                        "{}: {} is not in package {}",
                        board.name,
                        artifact.path,
                        artifact.package
                    );
                    checked += 1;
                }
                None => {
                    skipped.insert(artifact.package.clone());
                }
            }
        }
    }
    if !skipped.is_empty() {
        println!("skipped (package neither installed nor in the cache): {skipped:?}");
    }
    if Path::new("/var/lib/dpkg/info/u-boot-qemu.list").exists() {
        assert!(checked >= 3, "only {checked} artifacts checked");
    }
}

fn load_text(text: &str) -> Result<Board, BoardError> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("test-board");
    fs::create_dir_all(&dir).expect("mkdir");
    fs::write(dir.join("board.toml"), text).expect("write");
    Board::load(&dir.join("board.toml"))
}

const BASE: &str = r#"
name = "test-board"
arch = "arm64"
description = "A test board"
console = "ttyS2"
kernel_args = ["console=ttyS2,1500000n8"]
modules = []
"#;

fn invalid_field(text: &str) -> String {
    match load_text(text) {
        Err(BoardError::Invalid { field, .. }) => field,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

fn with_raw(offset: u64, max_bytes: u64, extra: &str) -> String {
    format!(
        "{BASE}{extra}\n[[firmware]]\nname = \"u-boot\"\nkind = \"u-boot\"\nartifacts = [\n  {{ package = \"u-boot-rockchip\", path = \"/usr/lib/u-boot/x/idbloader.img\", install = \"raw\", offset = {offset}, max_bytes = {max_bytes} }},\n]\n"
    )
}

#[test]
fn a_module_is_loaded_at_boot_or_on_demand_not_both() {
    let text = BASE.replace("modules = []", "modules = [\"usbnet\"]");
    assert!(load_text(&format!("{text}modules_on_demand = [\"cdc_ether\"]\n")).is_ok());
    assert_eq!(
        invalid_field(&format!("{text}modules_on_demand = [\"usbnet\"]\n")),
        "modules_on_demand"
    );
    assert_eq!(
        invalid_field(&format!("{BASE}modules_on_demand = [\"usbnet.ko\"]\n")),
        "modules_on_demand"
    );
}

#[test]
fn raw_regions_are_checked_against_gpt_partitions_and_each_other() {
    assert!(load_text(&with_raw(32768, 65536, "")).is_ok());
    // Inside the 128-entry GPT array.
    assert_eq!(
        invalid_field(&with_raw(8192, 4096, "")),
        "firmware[0].artifacts[0].offset"
    );
    // Past the first partition at 1 MiB.
    assert_eq!(
        invalid_field(&with_raw(1 << 20, 4096, "")),
        "firmware[0].artifacts[0].offset"
    );
    // A short GPT array makes 8 KiB legal.
    assert!(load_text(&with_raw(8192, 4096, "[disk]\ngpt_entries = 56\n")).is_ok());
    assert_eq!(
        invalid_field(&with_raw(32768, 512, "[disk]\ngpt_entries = 57\n")),
        "disk.gpt_entries"
    );
    assert_eq!(
        invalid_field(&with_raw(32768, 512, "[disk]\npartition_start_lba = 100\n")),
        "disk.partition_start_lba"
    );
    let overlapping = with_raw(32768, 65536, "").replace(
        "\n]\n",
        "\n  { package = \"u-boot-rockchip\", path = \"/usr/lib/u-boot/x/u-boot.itb\", install = \"raw\", offset = 65536, max_bytes = 4096 },\n]\n",
    );
    assert_eq!(
        invalid_field(&overlapping),
        "firmware[0].artifacts[1].offset"
    );
}

#[test]
fn placement_fields_must_match_the_install_kind() {
    let text = with_raw(32768, 65536, "").replace(", max_bytes = 65536", "");
    match load_text(&text) {
        Err(err @ BoardError::Parse { .. }) => {
            let message = err.to_string();
            assert!(message.contains("board.toml"), "{message}");
            assert!(
                message.contains("needs `offset` and `max_bytes`"),
                "{message}"
            );
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn pi_settings_and_overlays_are_validated() {
    let pi = format!(
        "{BASE}overlays = [\"disable-bt\"]\n[config_txt]\nkernel = \"u-boot.bin\"\narm_64bit = true\nenable_uart = true\n[[firmware]]\nname = \"u-boot\"\nkind = \"u-boot\"\nartifacts = [{{ package = \"u-boot-rpi\", path = \"/usr/lib/u-boot/rpi_arm64/u-boot.bin\", install = \"boot-file\", dest = \"u-boot.bin\" }}]\n"
    );
    let board = load_text(&pi).expect("valid pi board");
    assert!(
        board
            .config_txt()
            .expect("config")
            .ends_with("enable_uart=1\ndtoverlay=disable-bt\n")
    );
    assert_eq!(
        invalid_field(&pi.replace("kernel = \"u-boot.bin\"", "kernel = \"Image\"")),
        "config_txt.kernel"
    );
    assert_eq!(
        invalid_field(&pi.replace("arm_64bit = true", "arm_64bit = false")),
        "config_txt.arm_64bit"
    );
    assert_eq!(
        invalid_field(&pi.replace("[\"disable-bt\"]", "[\"disable-bt\", \"disable-bt\"]")),
        "overlays"
    );
    assert_eq!(
        invalid_field(&format!("{BASE}overlays = [\"disable-bt\"]\n")),
        "overlays"
    );
    let efi_dtb_dir = load_text(&format!(
        "{BASE}overlays = [\"rockpi4-i2c7-enable\"]\n[dtb]\nsource = \"linux-image\"\nlayout = \"efi-dtb-dir\"\nfiles = [\"rockchip/rk3399-rock-pi-4b.dtb\"]\n"
    ))
    .expect("DTBs in dtb/ take overlays");
    assert!(efi_dtb_dir.applies_overlays() && efi_dtb_dir.config_txt().is_none());
    assert_eq!(
        invalid_field(&pi.replace("enable_uart = true", "enable_uart = true\ngpu_mem_mib = 4")),
        "config_txt.gpu_mem_mib"
    );
}

#[test]
fn dtb_and_memory_profile_errors_name_the_field() {
    let dtb = |files: &str| {
        format!(
            "{BASE}[dtb]\nsource = \"linux-image\"\nlayout = \"efi-dtb-dir\"\nfiles = {files}\n"
        )
    };
    assert!(load_text(&dtb("[\"rockchip/rk3399-rock-pi-4b.dtb\"]")).is_ok());
    assert_eq!(
        invalid_field(&dtb("[\"rk3399-rock-pi-4b.dtb\"]")),
        "dtb.files"
    );
    assert_eq!(invalid_field(&dtb("[\"../x/y.dtb\"]")), "dtb.files");
    let missing = load_text(&format!("{BASE}memory_profile = \"huge\"\n")).expect_err("no profile");
    let message = missing.to_string();
    assert!(
        message.contains("memory_profile") && message.contains("huge"),
        "{message}"
    );
}
