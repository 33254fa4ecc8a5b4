//! `cargo xtask deps`: Debian packages and kernels, installed idempotently.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use talos_boards::DebianKernel;
use talos_machinery::Arch;

use crate::cmd;
use crate::paths;

/// Host packages: the Debian Rust toolchain and std for aarch64, the cross linker, QEMU,
/// firmware for QEMU boots, and the tools the image builder and tests call (mksquashfs for
/// the node's /usr, etcd for the host-side etcd membership test).
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
    "squashfs-tools",
    "file",
    "u-boot-tools",
    "protobuf-compiler",
    "kmod",
    "device-tree-compiler",
    "make",
    "docker-registry",
    "etcd-server",
];

/// Debian's component with the Raspberry Pi firmware (`raspi-firmware`).
const FIRMWARE_COMPONENT: &str = "non-free-firmware";
/// Where `deps` adds that component, for the mirror and suites the host already uses.
const FIRMWARE_SOURCES: &str = "/etc/apt/sources.list.d/talos-rs-non-free-firmware.sources";

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
    if matches!(firmware_sources(), Ok(Some(_))) {
        missing.push(format!("apt component {FIRMWARE_COMPONENT}"));
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
    // Without the component only the Raspberry Pi images fail, so a host whose sources we
    // cannot read still gets everything else.
    let firmware_sources = firmware_sources().unwrap_or_else(|e| {
        eprintln!("warning: {e:#}; raspi-firmware will not download");
        None
    });
    if let Some(stanza) = &firmware_sources {
        std::fs::write(FIRMWARE_SOURCES, stanza)
            .with_context(|| format!("writing {FIRMWARE_SOURCES} (run deps as root)"))?;
        eprintln!("{FIRMWARE_SOURCES}: added {FIRMWARE_COMPONENT}");
    }
    if !missing_packages.is_empty() || !missing_kernels.is_empty() || firmware_sources.is_some() {
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
        eprintln!("kernel {arch}: {} ({})", k.release, k.vmlinuz().display());
    }
    eprintln!("dependencies: all present");
    Ok(())
}

/// One apt source, from a one-line `.list` or a deb822 `.sources` file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct AptSource {
    uris: Vec<String>,
    suites: Vec<String>,
    components: Vec<String>,
    signed_by: Option<String>,
}

impl AptSource {
    /// The Debian archive proper (not its security suites).
    fn is_debian(&self) -> bool {
        self.suites.iter().any(|s| !s.ends_with("-security"))
            && self.uris.iter().any(|u| u.contains("/debian"))
    }

    fn has(&self, component: &str) -> bool {
        self.components.iter().any(|c| c == component)
    }
}

/// `deb [options] URI SUITE COMPONENT...` lines; `deb-src` and comments are skipped.
fn parse_one_line_sources(text: &str) -> Vec<AptSource> {
    let mut sources = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let Some(rest) = line.trim().strip_prefix("deb ") else {
            continue;
        };
        let mut signed_by = None;
        let rest = match rest.trim_start().strip_prefix('[') {
            Some(options) => {
                let (options, rest) = options.split_once(']').unwrap_or(("", ""));
                signed_by = options
                    .split_whitespace()
                    .find_map(|o| o.strip_prefix("signed-by="))
                    .map(str::to_owned);
                rest
            }
            None => rest,
        };
        let mut words = rest.split_whitespace().map(str::to_owned);
        if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
            sources.push(AptSource {
                uris: vec![uri],
                suites: vec![suite],
                components: words.collect(),
                signed_by,
            });
        }
    }
    sources
}

/// deb822 stanzas (`Types: deb`, not `Enabled: no`); continuation lines are skipped.
fn parse_deb822_sources(text: &str) -> Vec<AptSource> {
    let mut sources = Vec::new();
    for stanza in text.split("\n\n") {
        let mut source = AptSource::default();
        let (mut is_deb, mut enabled) = (false, true);
        for line in stanza.lines() {
            if line.starts_with(['#', ' ', '\t']) {
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let words = || value.split_whitespace().map(str::to_owned).collect();
            match key.trim().to_ascii_lowercase().as_str() {
                "types" => is_deb = value.split_whitespace().any(|t| t == "deb"),
                "enabled" => enabled = value.trim() != "no",
                "uris" => source.uris = words(),
                "suites" => source.suites = words(),
                "components" => source.components = words(),
                "signed-by" => {
                    source.signed_by = Some(value.trim().to_owned()).filter(|v| !v.is_empty());
                }
                _ => {}
            }
        }
        if is_deb && enabled {
            sources.push(source);
        }
    }
    sources
}

/// Every apt source the host has configured.
fn apt_sources() -> Vec<AptSource> {
    let dir = Path::new("/etc/apt/sources.list.d");
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = std::fs::read_dir(dir) {
        files.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
    }
    let mut sources = Vec::new();
    for file in files {
        let deb822 = file.extension().is_some_and(|e| e == "sources");
        if !deb822 && file.extension().is_none_or(|e| e != "list") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        sources.extend(if deb822 {
            parse_deb822_sources(&text)
        } else {
            parse_one_line_sources(&text)
        });
    }
    sources
}

/// The stanza [`FIRMWARE_SOURCES`] needs: the host's Debian mirror and suites with
/// [`FIRMWARE_COMPONENT`]. `None` when a source has that component already.
fn firmware_stanza(sources: &[AptSource]) -> anyhow::Result<Option<String>> {
    let mut debian = sources.iter().filter(|s| s.is_debian());
    if debian.clone().any(|s| s.has(FIRMWARE_COMPONENT)) {
        return Ok(None);
    }
    let source = debian.find(|s| s.has("main")).with_context(|| {
        format!(
            "no apt source has Debian's `main` component (in /etc/apt/sources.list or \
             /etc/apt/sources.list.d/), so {FIRMWARE_SOURCES} cannot name a mirror for \
             {FIRMWARE_COMPONENT}"
        )
    })?;
    let suites: Vec<&str> = source
        .suites
        .iter()
        .map(String::as_str)
        .filter(|s| !s.ends_with("-security"))
        .collect();
    let mut stanza = format!(
        "# Added by `cargo xtask deps`: raspi-firmware for the Raspberry Pi images.\n\
         Types: deb\nURIs: {}\nSuites: {}\nComponents: {FIRMWARE_COMPONENT}\n",
        source.uris.join(" "),
        suites.join(" ")
    );
    if let Some(key) = &source.signed_by {
        stanza.push_str(&format!("Signed-By: {key}\n"));
    }
    Ok(Some(stanza))
}

fn firmware_sources() -> anyhow::Result<Option<String>> {
    firmware_stanza(&apt_sources())
}

/// The unpacked kernel for `arch`, if `deps` has fetched it completely.
pub fn kernel(arch: Arch) -> anyhow::Result<DebianKernel> {
    let root = DebianKernel::root(arch);
    let kernel = DebianKernel::unpacked(arch).with_context(|| {
        format!(
            "no kernel for {arch} in {}: run `cargo xtask deps`",
            root.display()
        )
    })?;
    if !kernel.vmlinuz().exists() || !kernel.modules_dir().join("modules.dep").exists() {
        bail!(
            "the kernel in {} is incomplete: run `cargo xtask deps`",
            root.display()
        );
    }
    Ok(kernel)
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
    let root = DebianKernel::root(arch);
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

#[cfg(test)]
mod tests {
    use super::*;

    const DEB822: &str = "Types: deb
# a comment
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main

Types: deb
Enabled: no
URIs: http://example.org/debian
Suites: bookworm
Components: main non-free-firmware
";

    #[test]
    fn adds_the_component_for_the_hosts_mirror_and_suites() {
        let stanza = firmware_stanza(&parse_deb822_sources(DEB822))
            .unwrap()
            .unwrap();
        assert!(
            stanza.contains("URIs: http://deb.debian.org/debian\n"),
            "{stanza}"
        );
        assert!(
            stanza.contains("Suites: bookworm bookworm-updates\n"),
            "{stanza}"
        );
        assert!(
            stanza.contains("Components: non-free-firmware\n"),
            "{stanza}"
        );
        assert!(stanza.contains("Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"));
        // Once written, the file itself enables the component: nothing more to add.
        let mut sources = parse_deb822_sources(DEB822);
        sources.extend(parse_deb822_sources(&stanza));
        assert_eq!(firmware_stanza(&sources).unwrap(), None);
    }

    #[test]
    fn one_line_sources_count_too() {
        let sources = parse_one_line_sources(
            "deb [arch=amd64 signed-by=/k.gpg] http://mirror/debian bookworm main non-free-firmware # x\n\
             deb-src http://mirror/debian bookworm main\n",
        );
        assert_eq!(
            sources,
            [AptSource {
                uris: vec!["http://mirror/debian".into()],
                suites: vec!["bookworm".into()],
                components: vec!["main".into(), "non-free-firmware".into()],
                signed_by: Some("/k.gpg".into()),
            }]
        );
        assert_eq!(firmware_stanza(&sources).unwrap(), None);
        let err = firmware_stanza(&[]).unwrap_err().to_string();
        assert!(
            err.contains("no apt source has Debian's `main` component"),
            "{err}"
        );
    }
}
