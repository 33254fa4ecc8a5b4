//! `cargo xtask deps`: Debian packages and kernels, installed idempotently.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use talos_machinery::Arch;

use crate::cmd;
use crate::paths;

/// Host packages: the Debian Rust toolchain and std for aarch64, the cross linker, QEMU,
/// firmware for QEMU boots, and the tools the image builder and tests call.
pub const PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "libstd-rust-web-dev:arm64",
    "gcc-aarch64-linux-gnu",
    "libc6-dev-arm64-cross",
    "qemu-system-arm",
    "qemu-system-x86",
    "qemu-user-static",
    "u-boot-qemu",
    "qemu-efi-aarch64",
    "ovmf",
    "cpio",
    "zstd",
    "xz-utils",
    "dosfstools",
    "mtools",
    "gdisk",
    "fdisk",
    "e2fsprogs",
    "file",
    "u-boot-tools",
    "protobuf-compiler",
    "kmod",
    "device-tree-compiler",
    "make",
    "docker-registry",
];

fn installed(package: &str) -> bool {
    cmd::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_ok_and(|s| s.contains("install ok installed"))
}

fn has_arm64_architecture() -> bool {
    cmd::output(Command::new("dpkg").arg("--print-foreign-architectures"))
        .is_ok_and(|s| s.lines().any(|l| l.trim() == "arm64"))
}

/// What is missing, without changing anything.
pub fn missing() -> Vec<String> {
    let mut missing: Vec<String> = PACKAGES
        .iter()
        .filter(|p| !installed(p))
        .map(|p| (*p).to_owned())
        .collect();
    for arch in Arch::ALL {
        if kernel(arch).is_err() {
            missing.push(format!("kernel for {arch}"));
        }
    }
    missing
}

/// Installs what is missing; does nothing (and no network traffic) when all is there.
pub fn ensure() -> anyhow::Result<()> {
    let missing_packages: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    let missing_kernels: Vec<Arch> = Arch::ALL
        .into_iter()
        .filter(|a| kernel(*a).is_err())
        .collect();
    if !missing_packages.is_empty() || !missing_kernels.is_empty() {
        if !has_arm64_architecture() {
            cmd::run(Command::new("dpkg").args(["--add-architecture", "arm64"]))?;
        }
        cmd::run(Command::new("apt-get").args(["update", "-q"]))?;
    }
    if !missing_packages.is_empty() {
        cmd::run(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&missing_packages)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    for arch in missing_kernels {
        fetch_kernel(arch)?;
    }
    for arch in Arch::ALL {
        let k = kernel(arch)?;
        eprintln!("kernel {arch}: {} ({})", k.release, k.vmlinuz.display());
    }
    eprintln!("dependencies: all present");
    Ok(())
}

/// An unpacked Debian kernel: its image and its module tree (with modules.dep).
#[derive(Debug, Clone)]
pub struct Kernel {
    pub release: String,
    pub vmlinuz: PathBuf,
    pub modules_dir: PathBuf,
}

impl Kernel {
    /// The package's device trees, e.g. `broadcom/bcm2837-rpi-3-b.dtb` below it.
    pub fn dtb_dir(&self) -> PathBuf {
        let root = self
            .modules_dir
            .ancestors()
            .nth(3)
            .unwrap_or(Path::new("/"));
        root.join("usr/lib")
            .join(format!("linux-image-{}", self.release))
    }
}

fn kernel_root(arch: Arch) -> PathBuf {
    paths::cache().join("kernels").join(arch.as_str())
}

/// The unpacked kernel for `arch`, if `deps` has fetched it.
pub fn kernel(arch: Arch) -> anyhow::Result<Kernel> {
    let root = kernel_root(arch);
    let release = std::fs::read_to_string(root.join("release")).with_context(|| {
        format!(
            "no kernel for {arch} in {}: run `cargo xtask deps`",
            root.display()
        )
    })?;
    let release = release.trim().to_owned();
    let vmlinuz = root.join("boot").join(format!("vmlinuz-{release}"));
    let modules_dir = root.join("lib/modules").join(&release);
    if !vmlinuz.exists() || !modules_dir.join("modules.dep").exists() {
        bail!(
            "the kernel in {} is incomplete: run `cargo xtask deps`",
            root.display()
        );
    }
    Ok(Kernel {
        release,
        vmlinuz,
        modules_dir,
    })
}

/// The versioned package the `linux-image-<arch>` meta-package points at.
fn kernel_package(arch: Arch) -> anyhow::Result<String> {
    let meta = match arch {
        Arch::Arm64 => "linux-image-arm64:arm64",
        Arch::Amd64 => "linux-image-amd64",
    };
    let text = cmd::output(Command::new("apt-cache").args(["depends", meta]))?;
    let package = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .with_context(|| format!("`apt-cache depends {meta}` names no kernel package"))?;
    Ok(package
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned())
}

fn fetch_kernel(arch: Arch) -> anyhow::Result<()> {
    let package = kernel_package(arch)?;
    let debs = paths::cache().join("debs");
    std::fs::create_dir_all(&debs)?;
    let name = package.split(':').next().unwrap_or(&package).to_owned();
    let find_deb = || -> Option<PathBuf> {
        std::fs::read_dir(&debs)
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{name}_")))
            })
    };
    if find_deb().is_none() {
        cmd::run(
            Command::new("apt-get")
                .arg("download")
                .arg(&package)
                .current_dir(&debs),
        )?;
    }
    let deb = find_deb().with_context(|| {
        format!(
            "apt-get download {package} left no .deb in {}",
            debs.display()
        )
    })?;
    let root = kernel_root(arch);
    let tmp = root.with_extension("partial");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    cmd::run(Command::new("dpkg").arg("-x").arg(&deb).arg(&tmp))?;
    let release = std::fs::read_dir(tmp.join("lib/modules"))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .with_context(|| format!("{} has no lib/modules", deb.display()))?;
    cmd::run(Command::new("depmod").arg("-b").arg(&tmp).arg(&release))?;
    std::fs::write(tmp.join("release"), format!("{release}\n"))?;
    let _ = std::fs::remove_dir_all(&root);
    std::fs::rename(&tmp, &root)?;
    Ok(())
}

/// Runs `deps` when `missing()` reports anything, so `demo` and `test` work on a fresh machine.
pub fn ensure_if_missing() -> anyhow::Result<()> {
    let missing = missing();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("missing: {}; installing", missing.join(", "));
    ensure()
}

pub fn require_tool(path: &Path) -> anyhow::Result<()> {
    if !path.exists() {
        bail!("{} is missing: run `cargo xtask deps`", path.display());
    }
    Ok(())
}
