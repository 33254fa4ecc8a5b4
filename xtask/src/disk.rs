//! `cargo xtask image --disk`: raw GPT disk images per board and boot chain, and the
//! installer payload an upgrade pulls.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use talos_boards::{Board, BootKind, DtbLayout, Firmware, Placement};
use talos_disk::slots::SlotBoot;
use talos_disk::uimage::UbootArch;
use talos_dtb::PRISTINE_DTB_DIR;
use talos_dtb::fdt::Fdt;
use talos_images::disk_image::{self, DiskImageSpec, SlotContents};
use talos_machinery::Arch;

use crate::{artifacts, cmd, deps, dtb, image, node_build, paths};

/// Kernel panics reboot after this long, so a bad slot falls back to the good one.
const PANIC_ARG: &str = "panic=10";

/// A built disk image.
#[derive(Debug, Clone)]
pub struct DiskImage {
    pub path: PathBuf,
}

/// A kernel and initramfs for one slot.
#[derive(Debug, Clone)]
pub struct System {
    pub kernel: Vec<u8>,
    pub initramfs: Vec<u8>,
    pub version: String,
}

/// What an image build or an upgrade writes into a slot.
pub fn system(board: &Board, version: &str) -> anyhow::Result<System> {
    let machined = node_build::build(board.arch, "machined")?;
    let name = format!("initramfs-{version}.zst");
    let built = image::pack_version(board, &machined, &name, version)?;
    Ok(System {
        kernel: std::fs::read(&built.kernel)?,
        initramfs: std::fs::read(&built.initramfs)?,
        version: version.to_owned(),
    })
}

fn uboot_arch(arch: Arch) -> UbootArch {
    match arch {
        Arch::Arm64 => UbootArch::Arm64,
        Arch::Amd64 => UbootArch::X86_64,
    }
}

/// The command line every slot boots with.
pub fn cmdline(board: &Board) -> String {
    format!("{} {PANIC_ARG}", board.kernel_cmdline())
}

pub fn output_dir(board: &Board, firmware: &Firmware) -> PathBuf {
    paths::root()
        .join("out")
        .join("images")
        .join(format!("{}-{}", board.name, firmware.name))
}

fn progress_bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len).with_message(what.to_owned());
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

/// Builds `metal-<arch>.raw` for `board` booting through `firmware_name` (default: the
/// board's first boot chain).
pub fn build(
    board: &Board,
    firmware_name: Option<&str>,
    system: &System,
) -> anyhow::Result<DiskImage> {
    let firmware = match firmware_name {
        Some(name) => board.firmware_variant(name).with_context(|| {
            let known: Vec<&str> = board.firmware.iter().map(|f| f.name.as_str()).collect();
            format!(
                "board {} has no boot chain {name:?} (it has {known:?})",
                board.name
            )
        })?,
        None => board.default_firmware().with_context(|| {
            format!(
                "board {} boots only with QEMU -kernel; it has no disk image",
                board.name
            )
        })?,
    }
    .clone();
    let mut boot_files = Vec::new();
    let mut raw = Vec::new();
    for artifact in &firmware.artifacts {
        let path = artifacts::resolve(&artifact.package, &artifact.path, board.arch)?;
        let read = || std::fs::read(&path).with_context(|| format!("reading {}", path.display()));
        match &artifact.placement {
            Placement::BootFile { dest } => boot_files.push((dest.clone(), read()?)),
            Placement::Raw { offset, .. } => raw.push((*offset, read()?)),
            // QEMU's -bios: the tests take it from the board file.
            Placement::QemuBios => {}
        }
    }
    let mut dtb_roots = Vec::new();
    if let Some(dtbs) = &board.dtb {
        let dir = deps::kernel(board.arch)?.dtb_dir();
        for file in &dtbs.files {
            let path = dir.join(file);
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let tree = Fdt::parse(&bytes).with_context(|| format!("reading {}", path.display()))?;
            dtb_roots.push(tree);
            if dtbs.layout == DtbLayout::EfiDtbDir && board.applies_overlays() {
                boot_files.push((format!("{PRISTINE_DTB_DIR}/{file}"), bytes.clone()));
            }
            boot_files.push((dtbs.destination(file), bytes));
        }
    }
    if board.applies_overlays() {
        // Every overlay written for the board's SoCs ships, so a BoardConfig can pick any
        // without a new image; the board's defaults are applied on the node (or by config.txt).
        let mut fitting = Vec::new();
        for path in dtb::build()? {
            let bytes = std::fs::read(&path)?;
            let overlay =
                Fdt::parse(&bytes).with_context(|| format!("reading {}", path.display()))?;
            if dtb_roots.iter().any(|base| base.fits(&overlay)) {
                let name = path.file_stem().unwrap_or_default().to_string_lossy();
                fitting.push((name.into_owned(), bytes));
            }
        }
        if let Some(name) = board
            .overlays
            .iter()
            .find(|name| !fitting.iter().any(|(n, _)| n == *name))
        {
            anyhow::bail!(
                "overlay {name} of board {} was not built for its device trees",
                board.name
            );
        }
        for (name, bytes) in fitting {
            boot_files.push((format!("overlays/{name}.dtbo"), bytes));
        }
    }
    if let Some(config) = board.config_txt() {
        boot_files.push(("config.txt".into(), config.into_bytes()));
    }
    let spec = DiskImageSpec {
        seed: format!("talos-image-disk/{}", board.name),
        uboot_arch: uboot_arch(board.arch),
        first_offset: board.disk.partition_start_bytes(),
        system: SlotContents {
            kernel: system.kernel.clone(),
            initramfs: system.initramfs.clone(),
            devicetree: None,
            boot: SlotBoot {
                version: system.version.clone(),
                cmdline: cmdline(board),
                devicetree: None,
            },
        },
        boot_files,
        raw,
        hybrid_mbr: board.disk.hybrid_mbr,
        gpt_entries: board.disk.gpt_entries,
    };
    let dir = output_dir(board, &firmware);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("metal-{}.raw", board.arch));
    let bar = progress_bar(0, "EFI files");
    let report = disk_image::build(&spec, &path, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .with_context(|| format!("building {}", path.display()))?;
    bar.finish_and_clear();
    eprintln!(
        "{}: {} MiB (EFI {} MiB), boot chain {} ({})",
        path.display(),
        report.size >> 20,
        report.efi_size >> 20,
        firmware.name,
        match firmware.kind {
            BootKind::UBoot => "U-Boot boot.scr",
            BootKind::Uefi => "UEFI systemd-boot",
        }
    );
    Ok(DiskImage { path })
}

/// `FILE.xz` next to `FILE`, as users download it. xz's multi-threaded output depends on
/// the block size only, so it is the same on every machine.
pub fn compress(path: &Path) -> anyhow::Result<PathBuf> {
    let spinner = ProgressBar::new_spinner().with_message(format!("xz {}", path.display()));
    spinner.enable_steady_tick(std::time::Duration::from_millis(200));
    cmd::run(
        Command::new("xz")
            .args(["-T2", "--block-size=16MiB", "-6", "-k", "-f"])
            .arg(path),
    )?;
    spinner.finish_and_clear();
    let mut out = path.as_os_str().to_owned();
    out.push(".xz");
    Ok(PathBuf::from(out))
}

/// Writes the installer image for `system` as an OCI layout in
/// out/installers/<arch>/<version>/. `broken` truncates the initramfs, which makes a
/// kernel that cannot start its init: the rollback tests' bad upgrade.
pub fn installer(arch: Arch, system: &System, broken: bool) -> anyhow::Result<PathBuf> {
    let mut initramfs = system.initramfs.clone();
    if broken {
        initramfs.truncate(initramfs.len() / 2);
    }
    let image = talos_oci::installer_image(arch.as_str(), system.kernel.clone(), initramfs)?;
    let dir = paths::root()
        .join("out")
        .join("installers")
        .join(arch.as_str())
        .join(&system.version);
    let _ = std::fs::remove_dir_all(&dir);
    talos_oci::write_layout_dir(&image, &dir)
        .with_context(|| format!("writing {}", dir.display()))?;
    eprintln!(
        "{}: installer {}",
        dir.display(),
        image.manifest_digest().as_str()
    );
    Ok(dir)
}
