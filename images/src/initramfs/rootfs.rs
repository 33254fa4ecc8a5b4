//! The node's read-only `/usr`: executables taken from unpacked Debian packages, plus the
//! program interpreter and every shared library they need (their `DT_NEEDED` closure), as a
//! zstd squashfs made by `mksquashfs`.
//!
//! Libraries go to `lib/<triplet>/<soname>`, which Debian's glibc searches by default as
//! `/usr/lib/<triplet>`, so the node needs no `ld.so.cache`. Only what the closure names is
//! copied: no shell or other tool comes along with a package.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use object::elf;
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use object::{Endianness, FileKind};

/// Directories of an unpacked package that hold `<triplet>/` library directories.
const LIBRARY_DIRS: [&str; 2] = ["lib", "usr/lib"];
/// Symlink hops followed inside a package before giving up.
const MAX_LINK_HOPS: usize = 8;

/// What goes into `/usr`.
#[derive(Debug, Clone)]
pub struct RootfsSpec {
    /// Package trees as `dpkg -x` leaves them, searched in order for libraries.
    pub packages: Vec<PathBuf>,
    /// `(path below /usr, file)`, e.g. `("sbin/mkfs.ext4", ".../sbin/mke2fs")`.
    pub executables: Vec<(String, PathBuf)>,
    /// The mtime of every entry and of the filesystem (32-bit).
    pub mtime: u64,
}

/// A built `/usr` image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rootfs {
    pub squashfs: Vec<u8>,
    /// The executables' program interpreter (`PT_INTERP`), e.g. `/lib/ld-linux-aarch64.so.1`.
    pub interpreter: String,
    /// Where that interpreter is once `/usr` is mounted, e.g.
    /// `/usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1`.
    pub interpreter_in_usr: String,
    /// Every file below `/usr`, sorted, without a leading `/`.
    pub files: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("Cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a 64-bit ELF file we can use: {reason}")]
    Elf { path: PathBuf, reason: String },
    #[error("{path}: {what} differs from the first executable's ({expected:?} vs {found:?})")]
    Mismatch {
        path: PathBuf,
        what: &'static str,
        expected: String,
        found: String,
    },
    #[error("Shared library {library:?}, needed by {needed_by}, is in none of {searched:?}")]
    LibraryNotFound {
        library: String,
        needed_by: String,
        searched: Vec<PathBuf>,
    },
    #[error("Invalid path {path:?} below /usr: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("Mtime {0} does not fit squashfs's 32-bit timestamps")]
    MtimeOutOfRange(u64),
    #[error("Staging {path} for mksquashfs")]
    Stage {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mksquashfs failed: {0}")]
    Mksquashfs(String),
}

/// Which file goes where below `/usr`, before anything is written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plan {
    files: BTreeMap<String, PathBuf>,
    interpreter: String,
    interpreter_in_usr: String,
}

/// Builds the squashfs. The same spec and input files always give the same bytes.
pub fn build(spec: &RootfsSpec) -> Result<Rootfs, RootfsError> {
    let mtime = u32::try_from(spec.mtime).map_err(|_| RootfsError::MtimeOutOfRange(spec.mtime))?;
    let plan = plan(spec)?;
    let stage = tempfile::tempdir().map_err(|source| RootfsError::Stage {
        path: std::env::temp_dir(),
        source,
    })?;
    let usr = stage.path().join("usr");
    for (path, source) in &plan.files {
        copy_file(source, &usr.join(path))?;
    }
    set_dir_modes(&usr)?;
    let image = stage.path().join("usr.sqsh");
    mksquashfs(&usr, &image, mtime)?;
    let squashfs = fs::read(&image).map_err(|source| RootfsError::Read {
        path: image.clone(),
        source,
    })?;
    Ok(Rootfs {
        squashfs,
        interpreter: plan.interpreter,
        interpreter_in_usr: plan.interpreter_in_usr,
        files: plan.files.into_keys().collect(),
    })
}

fn plan(spec: &RootfsSpec) -> Result<Plan, RootfsError> {
    let mut files = BTreeMap::new();
    let mut first: Option<(elf::Machine, String)> = None;
    let mut queue = VecDeque::new();
    for (dest, source) in &spec.executables {
        check_relative(dest)?;
        let info = inspect(source)?;
        let interpreter = info.interpreter.clone().ok_or_else(|| RootfsError::Elf {
            path: source.clone(),
            reason: "no program interpreter (PT_INTERP): not a dynamic executable".into(),
        })?;
        match &first {
            None => first = Some((info.machine, interpreter)),
            Some((machine, expected)) => {
                if *machine != info.machine {
                    return Err(mismatch(source, "the ELF machine", machine, &info.machine));
                }
                if *expected != interpreter {
                    return Err(mismatch(source, "the interpreter", expected, &interpreter));
                }
            }
        }
        queue.extend(info.needed.into_iter().map(|n| (n, dest.clone())));
        files.insert(dest.clone(), source.clone());
    }
    let Some((machine, interpreter)) = first else {
        return Err(RootfsError::InvalidPath {
            path: String::new(),
            reason: "no executables were given",
        });
    };
    let triplet = triplet(machine).ok_or_else(|| RootfsError::Elf {
        path: spec.executables[0].1.clone(),
        reason: format!("unsupported ELF machine {}", machine.0),
    })?;
    let loader = interpreter
        .rsplit('/')
        .next()
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| RootfsError::Elf {
            path: spec.executables[0].1.clone(),
            reason: format!("program interpreter {interpreter:?} has no file name"),
        })?;
    queue.push_front((loader.clone(), format!("PT_INTERP {interpreter}")));

    let lib_dir = format!("lib/{triplet}");
    let mut seen = BTreeSet::new();
    while let Some((library, needed_by)) = queue.pop_front() {
        if !seen.insert(library.clone()) {
            continue;
        }
        if library.contains('/') || library == "." || library == ".." {
            return Err(RootfsError::Elf {
                path: PathBuf::from(needed_by),
                reason: format!("DT_NEEDED {library:?} is not a plain file name"),
            });
        }
        let source = find_library(&spec.packages, triplet, &library).ok_or_else(|| {
            RootfsError::LibraryNotFound {
                library: library.clone(),
                needed_by: needed_by.clone(),
                searched: spec.packages.clone(),
            }
        })?;
        let dest = format!("{lib_dir}/{library}");
        queue.extend(
            inspect(&source)?
                .needed
                .into_iter()
                .map(|n| (n, dest.clone())),
        );
        files.insert(dest, source);
    }
    Ok(Plan {
        files,
        interpreter_in_usr: format!("/usr/{lib_dir}/{loader}"),
        interpreter,
    })
}

fn mismatch(
    path: &Path,
    what: &'static str,
    expected: &impl std::fmt::Debug,
    found: &impl std::fmt::Debug,
) -> RootfsError {
    RootfsError::Mismatch {
        path: path.to_owned(),
        what,
        expected: format!("{expected:?}"),
        found: format!("{found:?}"),
    }
}

/// Debian's multiarch directory for an ELF machine.
fn triplet(machine: elf::Machine) -> Option<&'static str> {
    match machine {
        elf::EM_AARCH64 => Some("aarch64-linux-gnu"),
        elf::EM_X86_64 => Some("x86_64-linux-gnu"),
        _ => None,
    }
}

#[derive(Debug)]
struct ElfInfo {
    machine: elf::Machine,
    interpreter: Option<String>,
    needed: Vec<String>,
}

fn inspect(path: &Path) -> Result<ElfInfo, RootfsError> {
    let data = fs::read(path).map_err(|source| RootfsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let bad = |reason: String| RootfsError::Elf {
        path: path.to_owned(),
        reason,
    };
    if FileKind::parse(data.as_slice()).map_err(|e| bad(e.to_string()))? != FileKind::Elf64 {
        return Err(bad("not ELF64".into()));
    }
    let file = ElfFile64::<Endianness>::parse(data.as_slice()).map_err(|e| bad(e.to_string()))?;
    let endian = file.endian();
    let mut interpreter = None;
    for header in file.elf_program_headers() {
        if let Some(bytes) = header
            .interpreter(endian, data.as_slice())
            .map_err(|e| bad(e.to_string()))?
        {
            interpreter = Some(String::from_utf8_lossy(bytes).into_owned());
        }
    }
    let dynamic = file
        .elf_section_table()
        .dynamic_table(endian, data.as_slice())
        .map_err(|e| bad(e.to_string()))?;
    let mut needed = Vec::new();
    for entry in dynamic.iter().filter(|d| d.tag == elf::DT_NEEDED) {
        let name = dynamic.string(entry).map_err(|e| bad(e.to_string()))?;
        needed.push(String::from_utf8_lossy(name).into_owned());
    }
    Ok(ElfInfo {
        machine: file.elf_header().e_machine(endian),
        interpreter,
        needed,
    })
}

/// The regular file `library` names in the first package that has it.
fn find_library(packages: &[PathBuf], triplet: &str, library: &str) -> Option<PathBuf> {
    packages.iter().find_map(|root| {
        LIBRARY_DIRS
            .iter()
            .find_map(|dir| resolve_in(root, &root.join(dir).join(triplet).join(library)))
    })
}

/// Follows symlinks with absolute targets taken relative to the package `root`.
fn resolve_in(root: &Path, path: &Path) -> Option<PathBuf> {
    let mut path = path.to_owned();
    for _ in 0..MAX_LINK_HOPS {
        let meta = fs::symlink_metadata(&path).ok()?;
        if meta.is_file() {
            return Some(path);
        }
        if !meta.file_type().is_symlink() {
            return None;
        }
        let target = fs::read_link(&path).ok()?;
        path = match target.strip_prefix("/") {
            Ok(inside) => root.join(inside),
            Err(_) => path.parent()?.join(target),
        };
    }
    None
}

fn check_relative(path: &str) -> Result<(), RootfsError> {
    let invalid = |reason| RootfsError::InvalidPath {
        path: path.to_owned(),
        reason,
    };
    if path.is_empty() || path.starts_with('/') {
        return Err(invalid("must be relative and not empty"));
    }
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(invalid("has an empty, '.' or '..' component"));
    }
    Ok(())
}

/// Copies `source` with its permission bits, minus set-id, sticky and group/other write.
fn copy_file(source: &Path, dest: &Path) -> Result<(), RootfsError> {
    let stage = |path: &Path| {
        let path = path.to_owned();
        move |source| RootfsError::Stage { path, source }
    };
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(stage(parent))?;
    }
    let mode = fs::metadata(source)
        .map_err(stage(source))?
        .permissions()
        .mode()
        & 0o755;
    fs::copy(source, dest).map_err(stage(dest))?;
    fs::set_permissions(dest, fs::Permissions::from_mode(mode)).map_err(stage(dest))
}

/// Every staged directory is 0755, whatever the umask.
fn set_dir_modes(dir: &Path) -> Result<(), RootfsError> {
    let stage = |source| RootfsError::Stage {
        path: dir.to_owned(),
        source,
    };
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(stage)?;
    for entry in fs::read_dir(dir).map_err(stage)? {
        let entry = entry.map_err(stage)?;
        if entry.file_type().map_err(stage)?.is_dir() {
            set_dir_modes(&entry.path())?;
        }
    }
    Ok(())
}

/// mksquashfs 4.5 is reproducible by default (the same bytes with any number of threads);
/// owners, times and xattrs are fixed here so the host's never leak in.
fn mksquashfs(dir: &Path, image: &Path, mtime: u32) -> Result<(), RootfsError> {
    let time = mtime.to_string();
    let output = Command::new("mksquashfs")
        .arg(dir)
        .arg(image)
        .args(["-noappend", "-comp", "zstd", "-all-root", "-no-xattrs"])
        .args(["-mkfs-time", &time, "-all-time", &time])
        .args(["-quiet", "-no-progress", "-exit-on-error"])
        // It would clamp times to this, and refuses it alongside -mkfs-time.
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .map_err(|e| {
            RootfsError::Mksquashfs(format!("cannot run it (install squashfs-tools): {e}"))
        })?;
    if !output.status.success() {
        return Err(RootfsError::Mksquashfs(format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
