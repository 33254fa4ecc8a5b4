//! The gpio-sim test image. Debian's kernels lack gpio-sim, so the module is built out of tree
//! from Debian's own linux-source against the kernel's own headers, and cached per kernel
//! release in `<cache>/gpio-sim/<release>/gpio-sim.ko`. The image boots that kernel with
//! `gpio-sim-check` as /init, which tests the rig's GPIO relay driver on real GPIO lines.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};
use talos_images::{InitramfsSpec, ModulesSpec};
use talos_machinery::Arch;

use crate::{cmd, deps, node_build, paths};

/// The one source line that calls a function 6.1 does not export to modules.
const IRQ_SIM_UNEXPORTED: &str = "handle_simple_irq(irq_to_desc(irqnum));";
const IRQ_SIM_EXPORTED: &str = "generic_handle_irq(irqnum);";

/// Sources of the module, as paths in linux-source's tarball below its top directory.
const SOURCES: [&str; 3] = [
    "drivers/gpio/gpio-sim.c",
    "drivers/gpio/gpiolib.h",
    "kernel/irq/irq_sim.c",
];

/// gpio-sim plus the IRQ simulator it needs (not built into Debian's kernels). The C file is
/// renamed because a composite module cannot contain an object of its own name.
const KBUILD: &str = "obj-m := gpio-sim.o\ngpio-sim-y := gpio-sim-main.o irq_sim.o\n";

/// Where the image carries the module; `gpio-sim-check` loads it from there.
fn module_path_in_image(release: &str) -> String {
    format!("/lib/modules/{release}/extra/gpio-sim.ko")
}

/// Builds gpio-sim.ko for the kernel `cargo xtask deps` unpacked for `arch`, or returns the
/// cached one, and returns its path.
pub fn build(arch: Arch) -> anyhow::Result<PathBuf> {
    let kernel = deps::kernel(arch)?;
    let release = kernel.release;
    let dir = paths::cache().join("gpio-sim").join(&release);
    let module = dir.join("gpio-sim.ko");
    if module.is_file() {
        return Ok(module);
    }
    let version = kernel_package_version(&release)?;
    let abi = release
        .strip_suffix(&format!("-{}", arch.debian()))
        .with_context(|| format!("kernel release {release} does not end in -{arch}"))?;
    let series = release.splitn(3, '.').take(2).collect::<Vec<_>>().join(".");
    let kbuild = format!("linux-kbuild-{series}");
    let kbuild_version = same_release_version(&kbuild, &version)?;
    let debs = download(&[
        (format!("linux-source-{series}"), version.clone()),
        (kbuild, kbuild_version),
        (format!("linux-headers-{abi}-common"), version.clone()),
        (
            format!("linux-headers-{release}:{}", arch.debian()),
            version.clone(),
        ),
    ])?;
    let [source, kbuild, common, headers] = &debs[..] else {
        bail!("expected four packages, got {}", debs.len());
    };

    let work = paths::cache()
        .join("gpio-sim")
        .join(format!("{release}.partial"));
    let _ = std::fs::remove_dir_all(&work);
    let root = work.join("root");
    std::fs::create_dir_all(&root)?;
    for deb in [kbuild, common, headers] {
        cmd::run(Command::new("dpkg").arg("-x").arg(deb).arg(&root))?;
    }
    let headers_dir = root
        .join("usr/src")
        .join(format!("linux-headers-{release}"));
    point_makefile_at(&headers_dir, &root)?;

    let src = work.join("src");
    extract_sources(source, &series, &src)?;
    let build_dir = work.join("module");
    std::fs::create_dir_all(&build_dir)?;
    let top = src.join(format!("linux-source-{series}"));
    std::fs::copy(top.join(SOURCES[0]), build_dir.join("gpio-sim-main.c"))?;
    std::fs::copy(top.join(SOURCES[1]), build_dir.join("gpiolib.h"))?;
    let irq_sim = std::fs::read_to_string(top.join(SOURCES[2]))?;
    ensure!(
        irq_sim.matches(IRQ_SIM_UNEXPORTED).count() == 1,
        "{} no longer has exactly one `{IRQ_SIM_UNEXPORTED}` to patch",
        SOURCES[2]
    );
    std::fs::write(
        build_dir.join("irq_sim.c"),
        irq_sim.replace(IRQ_SIM_UNEXPORTED, IRQ_SIM_EXPORTED),
    )?;
    std::fs::write(build_dir.join("Kbuild"), KBUILD)?;

    let mut make = Command::new("make");
    make.arg("-C")
        .arg(&headers_dir)
        .arg(format!("M={}", build_dir.display()));
    if Arch::host() != Some(arch) {
        let (kernel_arch, prefix) = match arch {
            Arch::Arm64 => ("arm64", "aarch64-linux-gnu-"),
            Arch::Amd64 => ("x86", "x86_64-linux-gnu-"),
        };
        make.arg(format!("ARCH={kernel_arch}"))
            .arg(format!("CROSS_COMPILE={prefix}"));
    }
    cmd::run(make.arg("modules"))?;

    let built = build_dir.join("gpio-sim.ko");
    let vermagic = cmd::output(Command::new("modinfo").args(["-F", "vermagic"]).arg(&built))?;
    ensure!(
        vermagic.starts_with(&format!("{release} ")),
        "{} has vermagic {:?}, not for kernel {release}",
        built.display(),
        vermagic.trim()
    );
    std::fs::create_dir_all(&dir)?;
    let staged = dir.join("gpio-sim.ko.partial");
    std::fs::copy(&built, &staged)?;
    std::fs::rename(&staged, &module)?;
    std::fs::remove_dir_all(&work)?;
    eprintln!("gpio-sim for {release}: {}", module.display());
    Ok(module)
}

/// Builds `out/<arch>/gpiosim-initramfs.zst`: `gpio-sim-check` as /init, configfs from the
/// kernel's modules, and gpio-sim. Also writes the kernel beside it, as `cargo xtask image` does.
pub fn image(arch: Arch) -> anyhow::Result<PathBuf> {
    let module = build(arch)?;
    let init = node_build::build(arch, "gpio-sim-check")?;
    let kernel = deps::kernel(arch)?;
    let spec = InitramfsSpec {
        init,
        kernel_modules: Some(ModulesSpec {
            modules_dir: kernel.modules_dir(),
            kernel_release: kernel.release.clone(),
            wanted: vec!["configfs".to_owned()],
            on_demand: Vec::new(),
        }),
        extra_files: vec![(
            module_path_in_image(&kernel.release),
            std::fs::read(&module).with_context(|| format!("reading {}", module.display()))?,
            0o644,
        )],
        // A test image: a fixed time keeps it reproducible without asking git.
        mtime: 0,
    };
    let initramfs = talos_images::build(&spec).context("building the gpio-sim initramfs")?;
    let out = paths::out(arch);
    std::fs::create_dir_all(&out)?;
    let path = out.join("gpiosim-initramfs.zst");
    write_if_changed(&path, &initramfs.bytes)?;
    write_if_changed(&out.join("vmlinuz"), &std::fs::read(kernel.vmlinuz())?)?;
    write_if_changed(
        &out.join("kernel-release"),
        format!("{}\n", kernel.release).as_bytes(),
    )?;
    eprintln!(
        "gpio-sim image {arch}: {} ({} bytes)",
        path.display(),
        initramfs.bytes.len()
    );
    Ok(path)
}

fn write_if_changed(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == data) {
        return Ok(());
    }
    std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))
}

/// The Debian version of the kernel package `deps` fetched, so sources and headers match it.
fn kernel_package_version(release: &str) -> anyhow::Result<String> {
    let deb = find_deb(&format!("linux-image-{release}"), None)?.with_context(|| {
        format!(
            "no linux-image-{release} package in {}: run `cargo xtask deps`",
            debs_dir().display()
        )
    })?;
    Ok(
        cmd::output(Command::new("dpkg-deb").arg("-f").arg(&deb).arg("Version"))?
            .trim()
            .to_owned(),
    )
}

fn debs_dir() -> PathBuf {
    paths::cache().join("debs")
}

/// The downloaded `.deb` of `name` (no `:arch`), of `version` if given.
fn find_deb(name: &str, version: Option<&str>) -> anyhow::Result<Option<PathBuf>> {
    let prefix = match version {
        Some(v) => format!("{name}_{}_", v.replace(':', "%3a")),
        None => format!("{name}_"),
    };
    let dir = debs_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(None);
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .collect();
    found.sort();
    Ok(found.pop())
}

/// Downloads each `package` at `version` into the deb cache unless it is there already, and
/// returns the `.deb` paths in the same order.
/// `version` of `package` if the archive still has it, else the newest build of the same
/// upstream release: the archive sometimes drops a package's older Debian revision before the
/// kernel's. linux-kbuild carries only host tools, so another revision builds the same module.
fn same_release_version(package: &str, version: &str) -> anyhow::Result<String> {
    let listing = cmd::output(Command::new("apt-cache").arg("madison").arg(package))?;
    let available: Vec<&str> = listing
        .lines()
        .filter_map(|line| line.split('|').nth(1).map(str::trim))
        .collect();
    if available.contains(&version) {
        return Ok(version.to_owned());
    }
    let upstream = |v: &str| v.rsplit_once('-').map_or(v, |(u, _)| u).to_owned();
    let wanted = upstream(version);
    let chosen = available
        .iter()
        .find(|v| upstream(v) == wanted)
        .with_context(|| {
            format!(
                "the archive has no {package} of release {wanted} (it has {})",
                available.join(", ")
            )
        })?;
    eprintln!("{package} {version} is gone from the archive; using {chosen}");
    Ok((*chosen).to_owned())
}

fn download(packages: &[(String, String)]) -> anyhow::Result<Vec<PathBuf>> {
    let dir = debs_dir();
    std::fs::create_dir_all(&dir)?;
    let mut debs = Vec::new();
    for (package, version) in packages {
        let version = version.as_str();
        let name = package.split(':').next().unwrap_or(package);
        if find_deb(name, Some(version))?.is_none() {
            cmd::run(
                Command::new("apt-get")
                    .arg("download")
                    .arg(format!("{package}={version}"))
                    .current_dir(&dir),
            )?;
        }
        debs.push(find_deb(name, Some(version))?.with_context(|| {
            format!(
                "apt-get download {package}={version} left no .deb in {}",
                dir.display()
            )
        })?);
    }
    Ok(debs)
}

/// The headers' Makefile includes the common headers by their installed, absolute path; point
/// it at the unpacked tree instead, so nothing needs installing.
fn point_makefile_at(headers: &Path, root: &Path) -> anyhow::Result<()> {
    let makefile = headers.join("Makefile");
    let text = std::fs::read_to_string(&makefile)
        .with_context(|| format!("reading {}", makefile.display()))?;
    let installed = "include /usr/src/";
    ensure!(
        text.contains(installed),
        "{} has no `{installed}` line to redirect",
        makefile.display()
    );
    let unpacked = format!("include {}/usr/src/", root.display());
    std::fs::write(&makefile, text.replace(installed, &unpacked))?;
    Ok(())
}

/// Unpacks just the module's sources from linux-source's tarball into `dest`.
fn extract_sources(deb: &Path, series: &str, dest: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dest)?;
    let top = format!("linux-source-{series}");
    let members: Vec<String> = SOURCES.iter().map(|s| format!("{top}/{s}")).collect();
    cmd::run(
        Command::new("bash")
            .arg("-c")
            .arg(r#"set -o pipefail; dpkg-deb --fsys-tarfile "$1" | tar -xO "./usr/src/$2.tar.xz" | tar -xJ -C "$3" "${@:4}""#)
            .arg("bash")
            .arg(deb)
            .arg(&top)
            .arg(dest)
            .args(&members),
    )?;
    for member in &members {
        ensure!(
            dest.join(member).is_file(),
            "{member} is not in {}",
            deb.display()
        );
    }
    Ok(())
}
