//! `cargo xtask image`: the initramfs for a board, next to its kernel, under out/<arch>/.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use talos_boards::Board;
use talos_images::initramfs::rootfs::{self, Rootfs, RootfsSpec};
use talos_images::{InitramfsSpec, ModulesSpec};
use talos_machinery::Arch;

use crate::{artifacts, cmd, deps, node_build, paths};

/// What a boot needs: kernel, initramfs, and the kernel's release.
#[derive(Debug, Clone)]
pub struct Image {
    pub board: Board,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub kernel_release: String,
    pub init_binary: PathBuf,
}

/// Where the list of modules machined loads at boot lives in the initramfs.
pub const MODULE_LIST_PATH: &str = "/etc/talos/modules";

/// Seconds since the epoch of the last commit: reproducible across clones of one commit.
fn source_date_epoch() -> u64 {
    if let Some(v) = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return v;
    }
    cmd::output(Command::new("git").arg("-C").arg(paths::root()).args([
        "log",
        "-1",
        "--format=%ct",
    ]))
    .ok()
    .and_then(|s| s.trim().parse().ok())
    .unwrap_or(0)
}

fn write_if_changed(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == data) {
        return Ok(());
    }
    std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))
}

/// The OS version images report unless told otherwise.
pub const DEFAULT_VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"));

/// Where machined reads the version of the image it booted from.
const OS_RELEASE_PATH: &str = "/etc/os-release";
/// The board's memory profile for the node's supervisor (`<service> <min MiB> [<max MiB>]`).
const MEMORY_PATH: &str = "/etc/talos/memory";
/// The board's kernel parameters for the node (`name = value`).
const SYSCTL_PATH: &str = "/etc/talos/sysctl.conf";
/// The board's default device-tree overlays, for boards that apply overlays (the node's
/// `BoardConfig` replaces them).
const OVERLAYS_PATH: &str = "/etc/talos/overlays";

fn os_release(version: &str) -> Vec<u8> {
    format!("NAME=\"talos-rs\"\nID=talos\nVERSION={version}\nVERSION_ID={version}\n").into_bytes()
}

/// `(package, file in it, path below /usr)`: the executables of the node's /usr.
const USR_EXECUTABLES: [(&str, &str, &str); 5] = [
    ("containerd", "usr/bin/containerd", "bin/containerd"),
    (
        "containerd",
        "usr/bin/containerd-shim-runc-v2",
        "bin/containerd-shim-runc-v2",
    ),
    ("runc", "usr/sbin/runc", "bin/runc"),
    ("etcd-server", "usr/bin/etcd", "bin/etcd"),
    ("e2fsprogs", "sbin/mke2fs", "sbin/mkfs.ext4"),
];

/// Packages searched for the shared libraries those executables need (glibc, libseccomp
/// for runc, and e2fsprogs' libraries; libe2p is in libext2fs2).
const USR_LIBRARY_PACKAGES: [&str; 6] = [
    "libc6",
    "libseccomp2",
    "libext2fs2",
    "libcom-err2",
    "libblkid1",
    "libuuid1",
];

/// The node's /usr for `arch`, built once per run (every image of a run shares it).
fn usr(arch: Arch) -> anyhow::Result<Arc<Rootfs>> {
    static BUILT: Mutex<Vec<(Arch, Arc<Rootfs>)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, rootfs)) = built.iter().find(|(a, _)| *a == arch) {
        return Ok(rootfs.clone());
    }
    let mut executables = Vec::new();
    for (package, file, dest) in USR_EXECUTABLES {
        executables.push((
            dest.to_owned(),
            artifacts::unpack(package, arch)?.join(file),
        ));
    }
    let packages = USR_LIBRARY_PACKAGES
        .iter()
        .map(|package| artifacts::unpack(package, arch))
        .collect::<anyhow::Result<_>>()?;
    let started = Instant::now();
    let rootfs = rootfs::build(&RootfsSpec {
        packages,
        executables,
        mtime: source_date_epoch(),
    })
    .with_context(|| format!("building /usr for {arch}"))?;
    eprintln!(
        "{arch}: /usr squashfs {} bytes, {} files, built in {:.1?}",
        rootfs.squashfs.len(),
        rootfs.files.len(),
        started.elapsed()
    );
    let rootfs = Arc::new(rootfs);
    built.push((arch, rootfs.clone()));
    Ok(rootfs)
}

/// Packs `init` with the board's modules and no /usr: the benchmark floor.
pub fn pack(board: &Board, init: &Path, name: &str) -> anyhow::Result<Image> {
    pack_with(board, init, name, DEFAULT_VERSION, None)
}

/// The node image: machined with the board's modules and /usr, reporting `version`.
pub fn pack_version(
    board: &Board,
    init: &Path,
    name: &str,
    version: &str,
) -> anyhow::Result<Image> {
    let usr = usr(board.arch)?;
    pack_with(board, init, name, version, Some(&usr))
}

fn pack_with(
    board: &Board,
    init: &Path,
    name: &str,
    version: &str,
    usr: Option<&Rootfs>,
) -> anyhow::Result<Image> {
    let kernel = deps::kernel(board.arch)?;
    let modules_list = board.modules.join("\n") + "\n";
    let spec = InitramfsSpec {
        init: init.to_owned(),
        kernel_modules: Some(ModulesSpec {
            modules_dir: kernel.modules_dir(),
            kernel_release: kernel.release.clone(),
            wanted: board.modules.clone(),
            on_demand: board.modules_on_demand.clone(),
        }),
        extra_files: vec![
            (
                MODULE_LIST_PATH.to_owned(),
                modules_list.into_bytes(),
                0o644,
            ),
            (OS_RELEASE_PATH.to_owned(), os_release(version), 0o644),
        ]
        .into_iter()
        .chain(board.memory.iter().flat_map(|profile| {
            [
                (
                    MEMORY_PATH.to_owned(),
                    profile.node_table().into_bytes(),
                    0o644,
                ),
                (
                    SYSCTL_PATH.to_owned(),
                    profile.sysctl_conf().into_bytes(),
                    0o644,
                ),
            ]
        }))
        .chain(board.applies_overlays().then(|| {
            let overlays: String = board.overlays.iter().map(|o| format!("{o}\n")).collect();
            (OVERLAYS_PATH.to_owned(), overlays.into_bytes(), 0o644)
        }))
        .collect(),
        mtime: source_date_epoch(),
    };
    let initramfs = match usr {
        Some(usr) => talos_images::initramfs::build_with_rootfs(&spec, usr),
        None => talos_images::build(&spec),
    }
    .with_context(|| format!("building the initramfs for {}", board.name))?;
    let out = paths::out(board.arch);
    std::fs::create_dir_all(&out)?;
    let initramfs_path = out.join(name);
    write_if_changed(&initramfs_path, &initramfs.bytes)?;
    let kernel_path = out.join("vmlinuz");
    write_if_changed(&kernel_path, &std::fs::read(kernel.vmlinuz())?)?;
    write_if_changed(
        &out.join("kernel-release"),
        format!("{}\n", kernel.release).as_bytes(),
    )?;
    Ok(Image {
        board: board.clone(),
        kernel: kernel_path,
        initramfs: initramfs_path,
        kernel_release: kernel.release,
        init_binary: init.to_owned(),
    })
}

/// Builds machined for the board's arch and packs the node initramfs.
pub fn build(arch: Arch, board_name: Option<&str>) -> anyhow::Result<Image> {
    let board = talos_boards::find(
        &paths::boards(),
        board_name.unwrap_or(paths::default_board(arch)),
    )?;
    anyhow::ensure!(
        board.arch == arch,
        "board {} is {}, not {arch}",
        board.name,
        board.arch
    );
    let machined = node_build::build(arch, "machined")?;
    let image = pack_version(&board, &machined, "initramfs.zst", DEFAULT_VERSION)?;
    eprintln!(
        "{}: {} ({} bytes), machined {} bytes, kernel {}",
        board.name,
        image.initramfs.display(),
        std::fs::metadata(&image.initramfs)?.len(),
        std::fs::metadata(&machined)?.len(),
        image.kernel_release
    );
    Ok(image)
}
