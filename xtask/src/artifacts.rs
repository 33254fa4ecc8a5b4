//! Files from Debian packages for a board's architecture: taken from the host when the
//! host has them, else downloaded as `<package>:<arch>` and unpacked into the cache; or
//! whole packages, always for the wanted architecture.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use talos_boards::{package_file, unpacked_package_dir};
use talos_machinery::Arch;

use crate::{cmd, paths};

/// The path of `file` (absolute, as inside the package) for `arch`.
pub fn resolve(package: &str, file: &str, arch: Arch) -> anyhow::Result<PathBuf> {
    if let Some(found) = package_file(package, file, arch) {
        return Ok(found);
    }
    let root = unpacked_package_dir(package, arch);
    let deb = download(package, arch).with_context(|| format!("fetching {package} for {file}"))?;
    unpack_into(&deb, &root)?;
    package_file(package, file, arch)
        .with_context(|| format!("{} does not contain {file}", deb.display()))
}

/// The whole of `package` for `arch`, unpacked (never the host's copy).
pub fn unpack(package: &str, arch: Arch) -> anyhow::Result<PathBuf> {
    let root = unpacked_package_dir(package, arch);
    if !root.is_dir() {
        let deb = download(package, arch)?;
        unpack_into(&deb, &root)?;
    }
    Ok(root)
}

/// `apt-get download`s `<package>:<arch>` (or `:all`) into the cache; returns the `.deb`.
fn download(package: &str, arch: Arch) -> anyhow::Result<PathBuf> {
    let qualified = format!("{package}:{}", arch.as_str());
    let debs = paths::cache().join("debs");
    std::fs::create_dir_all(&debs)?;
    let download = |name: &str| {
        cmd::run(
            Command::new("apt-get")
                .args(["download", name])
                .current_dir(&debs),
        )
    };
    // A package built for all architectures (raspi-firmware) has no `:<arch>` name.
    download(&qualified)
        .or_else(|_| download(&format!("{package}:all")))
        .with_context(|| format!("downloading {qualified} or {package}:all"))?;
    let prefix = format!("{package}_");
    let suffix = format!("_{}.deb", arch.as_str());
    std::fs::read_dir(&debs)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with(&prefix) && (n.ends_with(&suffix) || n.ends_with("_all.deb"))
            })
        })
        .max()
        .with_context(|| {
            format!(
                "apt-get download {qualified} left no .deb in {}",
                debs.display()
            )
        })
}

/// `dpkg -x` into a scratch directory renamed to `root`, so `root` is whole or absent.
fn unpack_into(deb: &Path, root: &Path) -> anyhow::Result<()> {
    let tmp = root.with_extension("partial");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    cmd::run(Command::new("dpkg").arg("-x").arg(deb).arg(&tmp))?;
    let _ = std::fs::remove_dir_all(root);
    std::fs::rename(&tmp, root)?;
    Ok(())
}
