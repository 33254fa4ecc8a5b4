//! The node's initramfs: `/init`, the kernel modules it must load, and a few extra files,
//! as a zstd-compressed newc archive; for the node, preceded by an uncompressed newc segment
//! with the squashfs machined mounts at `/usr` ([`build_with_rootfs`]).
//!
//! The image holds nothing else: no shell and no busybox. Module dependencies come from the
//! `modules.dep` that depmod wrote for the kernel; the image carries a trimmed copy whose
//! lines are already in a valid load order (every module after its dependencies).

pub mod rootfs;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::cpio::{CpioBuilder, CpioError};
use rootfs::Rootfs;

/// zstd level used for every image; the output does not depend on the machine.
pub const ZSTD_LEVEL: i32 = 19;

/// Empty directories every image has, as mount points for the init.
pub const MOUNT_POINTS: [&str; 9] = [
    "/dev",
    "/proc",
    "/sys",
    "/run",
    "/tmp",
    "/system",
    "/system/state",
    "/etc",
    "/var",
];

/// Where the squashfs that machined mounts at `/usr` lies in the node's initramfs.
pub const ROOTFS_PATH: &str = "/rootfs.sqsh";

/// What goes into an initramfs.
#[derive(Debug, Clone)]
pub struct InitramfsSpec {
    /// The init binary (machined); it becomes `/init`, mode 0755.
    pub init: PathBuf,
    pub kernel_modules: Option<ModulesSpec>,
    /// `(path in image, contents, permission bits)`.
    pub extra_files: Vec<(String, Vec<u8>, u32)>,
    /// The mtime of every entry, e.g. `SOURCE_DATE_EPOCH`.
    pub mtime: u64,
}

/// Kernel modules to carry, taken from one kernel's module tree.
#[derive(Debug, Clone)]
pub struct ModulesSpec {
    /// `.../lib/modules/<kver>`, with the `modules.dep` depmod produced.
    pub modules_dir: PathBuf,
    pub kernel_release: String,
    /// Module names such as `virtio_net`; `-` and `_` are equivalent.
    pub wanted: Vec<String>,
    /// Drivers carried for the node to load by modalias; their lines of the kernel's
    /// `modules.alias` go into the image's.
    pub on_demand: Vec<String>,
}

/// A built image and what it contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Initramfs {
    /// The zstd-compressed archive.
    pub bytes: Vec<u8>,
    pub manifest: Manifest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Every archive path, in archive order (segment by segment), without a leading `/`.
    pub paths: Vec<String>,
    /// Normalised module names (underscores), dependencies first.
    pub module_load_order: Vec<String>,
    /// Wanted modules the kernel has built in, so nothing is carried for them.
    pub builtin_modules: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("Cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Kernel module {module:?} is neither in {modules_dep} nor built in")]
    ModuleNotFound {
        module: String,
        modules_dep: PathBuf,
    },
    #[error("Malformed line {line} in {path}: {reason}")]
    ModulesDep {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("Invalid kernel release {release:?}: {reason}")]
    KernelRelease {
        release: String,
        reason: &'static str,
    },
    #[error("Dependency cycle through kernel module {module:?} in {modules_dep}")]
    DependencyCycle {
        module: String,
        modules_dep: PathBuf,
    },
    #[error("Cannot add an entry to the archive")]
    Archive(#[from] CpioError),
    #[error("zstd compression failed")]
    Compress(#[source] std::io::Error),
}

/// Builds the compressed image. The same spec and input files always give the same bytes.
pub fn build(spec: &InitramfsSpec) -> Result<Initramfs, ImageError> {
    let mut cpio = CpioBuilder::new(spec.mtime)?;
    for dir in MOUNT_POINTS {
        cpio.dir(dir, 0o755)?;
    }
    cpio.file("/init", read(&spec.init)?, 0o755)?;

    let mut module_load_order = Vec::new();
    let mut builtin_modules = Vec::new();
    if let Some(modules) = &spec.kernel_modules {
        let selection = select_modules(modules)?;
        let image_dir = format!("/lib/modules/{}", modules.kernel_release);
        let mut trimmed_dep = String::new();
        for module in &selection.load_order {
            let data = read(&modules.modules_dir.join(&module.path))?;
            cpio.file(&format!("{image_dir}/{}", module.path), data, 0o644)?;
            trimmed_dep.push_str(&module.path);
            trimmed_dep.push(':');
            for dep in &module.deps {
                trimmed_dep.push(' ');
                trimmed_dep.push_str(dep);
            }
            trimmed_dep.push('\n');
            module_load_order.push(module.name.clone());
        }
        cpio.file(
            &format!("{image_dir}/modules.dep"),
            trimmed_dep.into_bytes(),
            0o644,
        )?;
        if !modules.on_demand.is_empty() {
            cpio.file(
                &format!("{image_dir}/modules.alias"),
                on_demand_aliases(modules)?,
                0o644,
            )?;
        }
        builtin_modules = selection.builtin;
    }

    for (path, data, mode) in &spec.extra_files {
        cpio.file(path, data.clone(), *mode)?;
    }

    let bytes = compress(&cpio.to_bytes())?;
    Ok(Initramfs {
        bytes,
        manifest: Manifest {
            paths: cpio.paths(),
            module_load_order,
            builtin_modules,
        },
    })
}

/// [`build`], preceded by an uncompressed newc segment holding [`ROOTFS_PATH`] and a link
/// from the executables' program interpreter into `/usr`. The kernel unpacks concatenated
/// archives in order, each with its own compression (as with early microcode); zstd on an
/// already compressed squashfs would only cost build time.
pub fn build_with_rootfs(spec: &InitramfsSpec, rootfs: &Rootfs) -> Result<Initramfs, ImageError> {
    let mut segment = CpioBuilder::new(spec.mtime)?;
    segment.file(ROOTFS_PATH, rootfs.squashfs.clone(), 0o400)?;
    segment.symlink(&rootfs.interpreter, &rootfs.interpreter_in_usr)?;
    let Initramfs {
        bytes: compressed,
        manifest,
    } = build(spec)?;
    let mut bytes = segment.to_bytes();
    bytes.extend_from_slice(&compressed);
    let mut paths = segment.paths();
    paths.extend(manifest.paths);
    Ok(Initramfs {
        bytes,
        manifest: Manifest { paths, ..manifest },
    })
}

/// The canonical spelling of a module name: `virtio-net`, `virtio_net` → `virtio_net`.
pub fn normalize_module_name(name: &str) -> String {
    name.replace('-', "_")
}

fn compress(data: &[u8]) -> Result<Vec<u8>, ImageError> {
    let mut compressor = zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(ImageError::Compress)?;
    compressor
        .include_checksum(true)
        .map_err(ImageError::Compress)?;
    compressor
        .include_contentsize(true)
        .map_err(ImageError::Compress)?;
    compressor.compress(data).map_err(ImageError::Compress)
}

fn read(path: &Path) -> Result<Vec<u8>, ImageError> {
    fs::read(path).map_err(|source| ImageError::Read {
        path: path.to_owned(),
        source,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct DepEntry {
    name: String,
    /// Relative to the modules directory, e.g. `kernel/drivers/net/virtio_net.ko`.
    path: String,
    deps: Vec<String>,
}

#[derive(Debug)]
struct Selection {
    load_order: Vec<DepEntry>,
    builtin: Vec<String>,
}

fn select_modules(spec: &ModulesSpec) -> Result<Selection, ImageError> {
    check_release(&spec.kernel_release)?;
    let dep_path = spec.modules_dir.join("modules.dep");
    let dep_text = String::from_utf8_lossy(&read(&dep_path)?).into_owned();
    let entries = parse_modules_dep(&dep_text, &dep_path)?;
    let builtin_path = spec.modules_dir.join("modules.builtin");
    let builtin_names: BTreeSet<String> = match fs::read_to_string(&builtin_path) {
        Ok(text) => text.lines().filter_map(module_name).collect(),
        Err(source) if source.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
        Err(source) => {
            return Err(ImageError::Read {
                path: builtin_path,
                source,
            });
        }
    };

    let by_name: BTreeMap<&str, &DepEntry> = entries.iter().map(|e| (e.name.as_str(), e)).collect();
    let by_path: BTreeMap<&str, &DepEntry> = entries.iter().map(|e| (e.path.as_str(), e)).collect();

    let mut state = Walk {
        by_path: &by_path,
        dep_path: &dep_path,
        done: BTreeSet::new(),
        in_progress: BTreeSet::new(),
        order: Vec::new(),
    };
    let mut builtin = Vec::new();
    for wanted in spec.wanted.iter().chain(&spec.on_demand) {
        let name = normalize_module_name(wanted);
        match by_name.get(name.as_str()) {
            Some(entry) => state.visit(entry)?,
            None if builtin_names.contains(&name) => {
                if !builtin.contains(&name) {
                    builtin.push(name);
                }
            }
            None => {
                return Err(ImageError::ModuleNotFound {
                    module: wanted.clone(),
                    modules_dep: dep_path,
                });
            }
        }
    }
    Ok(Selection {
        load_order: state.order,
        builtin,
    })
}

/// The kernel's `modules.alias` lines that name an on-demand module, in file order.
fn on_demand_aliases(spec: &ModulesSpec) -> Result<Vec<u8>, ImageError> {
    let path = spec.modules_dir.join("modules.alias");
    let text = String::from_utf8_lossy(&read(&path)?).into_owned();
    let wanted: BTreeSet<String> = spec
        .on_demand
        .iter()
        .map(|m| normalize_module_name(m))
        .collect();
    let mut out = String::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("alias")
            && let Some(module) = words.nth(1)
            && wanted.contains(&normalize_module_name(module))
        {
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(out.into_bytes())
}

/// Depth-first walk that emits each module after all of its dependencies.
struct Walk<'a> {
    by_path: &'a BTreeMap<&'a str, &'a DepEntry>,
    dep_path: &'a Path,
    done: BTreeSet<String>,
    in_progress: BTreeSet<String>,
    order: Vec<DepEntry>,
}

impl Walk<'_> {
    fn visit(&mut self, entry: &DepEntry) -> Result<(), ImageError> {
        if self.done.contains(&entry.path) {
            return Ok(());
        }
        if !self.in_progress.insert(entry.path.clone()) {
            return Err(ImageError::DependencyCycle {
                module: entry.name.clone(),
                modules_dep: self.dep_path.to_owned(),
            });
        }
        // depmod lists the deepest dependencies last; visiting in reverse loads them first.
        for dep in entry.deps.iter().rev() {
            let dep_entry =
                self.by_path
                    .get(dep.as_str())
                    .ok_or_else(|| ImageError::ModuleNotFound {
                        module: module_name(dep).unwrap_or_else(|| dep.clone()),
                        modules_dep: self.dep_path.to_owned(),
                    })?;
            self.visit(dep_entry)?;
        }
        self.in_progress.remove(&entry.path);
        self.done.insert(entry.path.clone());
        self.order.push(entry.clone());
        Ok(())
    }
}

fn parse_modules_dep(text: &str, path: &Path) -> Result<Vec<DepEntry>, ImageError> {
    let mut entries = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let malformed = |reason: &str| ImageError::ModulesDep {
            path: path.to_owned(),
            line: index + 1,
            reason: reason.to_owned(),
        };
        let (module, deps) = line
            .split_once(':')
            .ok_or_else(|| malformed("expected `module: deps`"))?;
        let module = module.trim();
        let name = module_name(module).ok_or_else(|| malformed("not a .ko path"))?;
        if !is_safe_relative(module) {
            return Err(malformed("module path escapes the modules directory"));
        }
        let deps: Vec<String> = deps.split_whitespace().map(str::to_owned).collect();
        if let Some(bad) = deps.iter().find(|d| !is_safe_relative(d)) {
            return Err(malformed(&format!(
                "dependency {bad:?} is not a relative path"
            )));
        }
        entries.push(DepEntry {
            name,
            path: module.to_owned(),
            deps,
        });
    }
    Ok(entries)
}

/// `kernel/drivers/net/virtio_net.ko[.xz|.zst|.gz]` → `virtio_net`.
fn module_name(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|suffix| file.strip_suffix(suffix))?;
    (!stem.is_empty()).then(|| normalize_module_name(stem))
}

fn is_safe_relative(path: &str) -> bool {
    !path.starts_with('/')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

fn check_release(release: &str) -> Result<(), ImageError> {
    let reason = if release.is_empty() {
        Some("it is empty")
    } else if release.contains('/') || release == "." || release == ".." {
        Some("it must be a single path component")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ImageError::KernelRelease {
            release: release.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpio::reader::{ReadEntry, read};

    /// A fake module tree: `c` needs `b` needs `a`; `d` is unrelated; `e-x` stands alone.
    fn module_tree(root: &Path) -> PathBuf {
        let dir = root.join("lib/modules/9.9.9-test");
        for (path, body) in [
            ("kernel/a.ko", "A"),
            ("kernel/sub/b.ko", "B"),
            ("kernel/c.ko", "C"),
            ("kernel/d.ko", "D"),
            ("kernel/e_x.ko", "E"),
        ] {
            let file = dir.join(path);
            fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
            fs::write(file, body).expect("write module");
        }
        fs::write(
            dir.join("modules.dep"),
            "kernel/a.ko:\nkernel/sub/b.ko: kernel/a.ko\nkernel/c.ko: kernel/sub/b.ko kernel/a.ko\n\
             kernel/d.ko:\nkernel/e_x.ko:\n",
        )
        .expect("modules.dep");
        fs::write(
            dir.join("modules.builtin"),
            "kernel/drivers/virtio/virtio.ko\n",
        )
        .expect("modules.builtin");
        dir
    }

    fn spec(root: &Path, wanted: &[&str], mtime: u64) -> InitramfsSpec {
        let init = root.join("machined");
        fs::write(&init, b"\x7fELF fake init").expect("init");
        InitramfsSpec {
            init,
            kernel_modules: Some(ModulesSpec {
                modules_dir: module_tree(root),
                kernel_release: "9.9.9-test".into(),
                wanted: wanted.iter().map(|s| s.to_string()).collect(),
                on_demand: Vec::new(),
            }),
            extra_files: vec![("/etc/hostname".into(), b"node\n".to_vec(), 0o644)],
            mtime,
        }
    }

    fn unpack(image: &Initramfs) -> Vec<ReadEntry> {
        let cpio = zstd::decode_all(image.bytes.as_slice()).expect("valid zstd");
        read(&cpio)
    }

    #[test]
    fn carries_init_modules_closure_trimmed_dep_and_mount_points() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let image = build(&spec(tmp.path(), &["c", "e-x", "virtio"], 42)).expect("build");
        assert_eq!(image.manifest.module_load_order, ["a", "b", "c", "e_x"]);
        assert_eq!(image.manifest.builtin_modules, ["virtio"]);

        let entries = unpack(&image);
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, image.manifest.paths);
        let get = |name: &str| {
            entries
                .iter()
                .find(|e| e.name == name)
                .unwrap_or_else(|| panic!("{name} missing from {names:?}"))
        };
        assert_eq!(get("init").data, b"\x7fELF fake init");
        assert_eq!(get("init").mode, 0o100_755);
        assert_eq!(get("etc/hostname").data, b"node\n");
        for dir in MOUNT_POINTS {
            assert_eq!(get(&dir[1..]).mode, 0o040_755, "{dir}");
        }
        let kdir = "lib/modules/9.9.9-test";
        assert_eq!(get(&format!("{kdir}/kernel/sub/b.ko")).data, b"B");
        assert_eq!(
            String::from_utf8(get(&format!("{kdir}/modules.dep")).data.clone()).expect("utf-8"),
            "kernel/a.ko:\nkernel/sub/b.ko: kernel/a.ko\n\
             kernel/c.ko: kernel/sub/b.ko kernel/a.ko\nkernel/e_x.ko:\n"
        );
        assert!(!names.contains(&"lib/modules/9.9.9-test/kernel/d.ko"));
        let files: Vec<&str> = entries
            .iter()
            .filter(|e| e.mode & 0o170_000 == 0o100_000)
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(
            files,
            [
                "etc/hostname",
                "init",
                "lib/modules/9.9.9-test/kernel/a.ko",
                "lib/modules/9.9.9-test/kernel/c.ko",
                "lib/modules/9.9.9-test/kernel/e_x.ko",
                "lib/modules/9.9.9-test/kernel/sub/b.ko",
                "lib/modules/9.9.9-test/modules.dep",
            ]
        );
    }

    #[test]
    fn carries_on_demand_drivers_with_only_their_aliases() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut spec = spec(tmp.path(), &["a"], 42);
        let modules = spec.kernel_modules.as_mut().expect("modules");
        modules.on_demand = vec!["c".into(), "e-x".into()];
        fs::write(
            modules.modules_dir.join("modules.alias"),
            "# Aliases extracted from modules themselves.\n\
             alias usb:v0525p*d*dc*dsc*dp*ic02isc06ip00in* c\n\
             alias pci:v00001AF4d00001000sv*sd*bc*sc*i* a\n\
             alias of:N*T*Cvendor,e-xC* e_x\n\
             alias platform:d d\n",
        )
        .expect("modules.alias");
        let image = build(&spec).expect("build");
        assert_eq!(image.manifest.module_load_order, ["a", "b", "c", "e_x"]);
        let entries = unpack(&image);
        let alias = entries
            .iter()
            .find(|e| e.name == "lib/modules/9.9.9-test/modules.alias")
            .expect("modules.alias");
        assert_eq!(
            String::from_utf8_lossy(&alias.data),
            "alias usb:v0525p*d*dc*dsc*dp*ic02isc06ip00in* c\nalias of:N*T*Cvendor,e-xC* e_x\n"
        );
    }

    /// A node image's uncompressed segment and the zstd archive after it.
    fn split_segment(bytes: &[u8]) -> (&[u8], &[u8]) {
        let trailer = bytes
            .windows(11)
            .position(|w| w == b"TRAILER!!!\0")
            .expect("a trailer");
        bytes.split_at((trailer + 11).next_multiple_of(4))
    }

    #[test]
    fn the_rootfs_travels_uncompressed_in_front_of_the_zstd_archive() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let spec = spec(tmp.path(), &["c"], 42);
        let rootfs = Rootfs {
            squashfs: b"hsqs, already compressed".to_vec(),
            interpreter: "/lib/ld-linux-aarch64.so.1".into(),
            interpreter_in_usr: "/usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1".into(),
            files: vec!["bin/runc".into()],
        };
        let image = build_with_rootfs(&spec, &rootfs).expect("build");
        assert_eq!(build_with_rootfs(&spec, &rootfs).expect("again"), image);

        let plain = build(&spec).expect("plain");
        let (segment, rest) = split_segment(&image.bytes);
        assert_eq!(rest, plain.bytes, "the compressed archive is unchanged");
        let entries = read(segment);
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["lib", "lib/ld-linux-aarch64.so.1", "rootfs.sqsh"]);
        assert_eq!(image.manifest.paths[..3], names);
        assert_eq!(image.manifest.paths[3..], plain.manifest.paths);
        assert_eq!(entries[1].mode, 0o120_777);
        assert_eq!(
            entries[1].data,
            b"/usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1"
        );
        assert_eq!(entries[2].mode, 0o100_400);
        assert_eq!(entries[2].data, rootfs.squashfs);
        assert!(entries.iter().all(|e| e.mtime == 42 && e.uid == 0));
    }

    #[test]
    fn builds_are_reproducible_and_follow_mtime() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let first = build(&spec(tmp.path(), &["c"], 1_700_000_000)).expect("first");
        let second = build(&spec(tmp.path(), &["c"], 1_700_000_000)).expect("second");
        assert_eq!(first, second);
        let other = build(&spec(tmp.path(), &["c"], 1_700_000_001)).expect("other mtime");
        assert_ne!(first.bytes, other.bytes);
        assert!(unpack(&other).iter().all(|e| e.mtime == 1_700_000_001));
    }

    #[test]
    fn a_missing_wanted_module_is_named() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let err = build(&spec(tmp.path(), &["c", "no-such_mod"], 0)).expect_err("must fail");
        assert!(
            matches!(&err, ImageError::ModuleNotFound { module, .. } if module == "no-such_mod"),
            "{err:?}"
        );
        assert!(err.to_string().contains("\"no-such_mod\""), "{err}");
        assert!(err.to_string().contains("modules.dep"), "{err}");
    }

    #[test]
    fn without_modules_the_image_holds_only_init_extras_and_mount_points() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut spec = spec(tmp.path(), &[], 0);
        spec.kernel_modules = None;
        let image = build(&spec).expect("build");
        assert_eq!(
            image.manifest.paths,
            [
                "dev",
                "etc",
                "etc/hostname",
                "init",
                "proc",
                "run",
                "sys",
                "system",
                "system/state",
                "tmp",
                "var"
            ]
        );
        assert!(image.manifest.module_load_order.is_empty());
    }

    #[test]
    fn extra_files_cannot_replace_init_and_bad_dep_lines_are_reported() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut clash = spec(tmp.path(), &[], 0);
        clash.extra_files.push(("/init".into(), vec![], 0o755));
        assert!(matches!(
            build(&clash),
            Err(ImageError::Archive(CpioError::Duplicate { .. }))
        ));

        let broken = spec(tmp.path(), &["a"], 0);
        let dir = &broken.kernel_modules.as_ref().expect("modules").modules_dir;
        fs::write(
            dir.join("modules.dep"),
            "kernel/a.ko:\nkernel/b.ko: ../../etc/passwd\n",
        )
        .expect("rewrite");
        let err = build(&broken).expect_err("must fail");
        assert!(
            matches!(err, ImageError::ModulesDep { line: 2, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn module_names_are_normalised() {
        assert_eq!(
            module_name("kernel/x/virtio-rng.ko").as_deref(),
            Some("virtio_rng")
        );
        assert_eq!(module_name("kernel/x/ext4.ko.xz").as_deref(), Some("ext4"));
        assert_eq!(module_name("kernel/x/readme.txt"), None);
        assert_eq!(normalize_module_name("net-failover"), "net_failover");
    }
}
