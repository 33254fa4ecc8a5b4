//! A deterministic writer for cpio "newc" archives (magic `070701`), the format the
//! kernel unpacks as an initramfs.
//!
//! Entries are kept sorted by path, so a parent directory always precedes its children.
//! Owners are root, every entry carries the same mtime, and inode numbers follow the
//! output order, so the same entries always give the same bytes.

use std::collections::BTreeMap;

const MAGIC: &[u8; 6] = b"070701";
const TRAILER: &str = "TRAILER!!!";

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const PERMISSION_BITS: u32 = 0o7777;
const IMPLICIT_DIR_MODE: u32 = 0o755;

/// Why an entry cannot go into the archive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpioError {
    #[error("Invalid archive path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("Archive path {path:?} is added twice")]
    Duplicate { path: String },
    #[error("Archive path {path:?} is needed as a directory but is a file or symlink")]
    NotADirectory { path: String },
    #[error("Mode {mode:#o} of {path:?} has bits beyond the permission bits 0o7777")]
    InvalidMode { path: String, mode: u32 },
    #[error("File {path:?} is {size} bytes; newc holds at most 4 GiB - 1")]
    TooLarge { path: String, size: usize },
    #[error("Mtime {mtime} does not fit the 32-bit newc field")]
    MtimeOutOfRange { mtime: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Directory { explicit: bool },
    File(Vec<u8>),
    Symlink(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    mode: u32,
    kind: Kind,
}

/// Collects archive entries and writes them as one deterministic newc archive.
///
/// Paths are written without a leading `/`; `"/init"` and `"init"` name the same entry.
/// Missing parent directories are added with mode 0755.
#[derive(Debug, Clone)]
pub struct CpioBuilder {
    mtime: u32,
    entries: BTreeMap<String, Entry>,
}

impl CpioBuilder {
    /// Every entry gets `mtime` (seconds since the epoch, e.g. `SOURCE_DATE_EPOCH`).
    pub fn new(mtime: u64) -> Result<Self, CpioError> {
        let mtime = u32::try_from(mtime).map_err(|_| CpioError::MtimeOutOfRange { mtime })?;
        Ok(Self {
            mtime,
            entries: BTreeMap::new(),
        })
    }

    /// Adds a directory; adding one that exists only as an implied parent sets its mode.
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<(), CpioError> {
        let path = normalize(path)?;
        check_mode(&path, mode)?;
        self.add_parents(&path)?;
        match self.entries.get_mut(&path) {
            None => {
                self.entries.insert(
                    path,
                    Entry {
                        mode,
                        kind: Kind::Directory { explicit: true },
                    },
                );
                Ok(())
            }
            Some(entry) if entry.kind == (Kind::Directory { explicit: false }) => {
                *entry = Entry {
                    mode,
                    kind: Kind::Directory { explicit: true },
                };
                Ok(())
            }
            Some(_) => Err(CpioError::Duplicate { path }),
        }
    }

    /// Adds a regular file with the given permission bits.
    pub fn file(&mut self, path: &str, data: Vec<u8>, mode: u32) -> Result<(), CpioError> {
        let path = normalize(path)?;
        check_mode(&path, mode)?;
        if u32::try_from(data.len()).is_err() {
            return Err(CpioError::TooLarge {
                path,
                size: data.len(),
            });
        }
        self.insert_leaf(path, mode, Kind::File(data))
    }

    /// Adds a symlink pointing at `target` (stored verbatim).
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), CpioError> {
        let path = normalize(path)?;
        if target.is_empty() {
            return Err(CpioError::InvalidPath {
                path,
                reason: "symlink target is empty",
            });
        }
        self.insert_leaf(path, 0o777, Kind::Symlink(target.to_owned()))
    }

    /// The entry paths in archive order (without the trailer).
    pub fn paths(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    /// The complete archive, ending with the `TRAILER!!!` entry.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (index, (path, entry)) in self.entries.iter().enumerate() {
            let ino = u32::try_from(index + 1).expect("fewer than 2^32 entries");
            let (type_bits, nlink, data): (u32, u32, &[u8]) = match &entry.kind {
                Kind::Directory { .. } => (S_IFDIR, 2, &[]),
                Kind::File(data) => (S_IFREG, 1, data),
                Kind::Symlink(target) => (S_IFLNK, 1, target.as_bytes()),
            };
            let header = Header {
                ino,
                mode: type_bits | entry.mode,
                nlink,
                mtime: self.mtime,
                filesize: u32::try_from(data.len()).expect("size checked when the entry was added"),
            };
            write_entry(&mut out, &header, path, data);
        }
        let trailer = Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            mtime: 0,
            filesize: 0,
        };
        write_entry(&mut out, &trailer, TRAILER, &[]);
        out
    }

    fn insert_leaf(&mut self, path: String, mode: u32, kind: Kind) -> Result<(), CpioError> {
        self.add_parents(&path)?;
        if self.entries.contains_key(&path) {
            return Err(CpioError::Duplicate { path });
        }
        self.entries.insert(path, Entry { mode, kind });
        Ok(())
    }

    fn add_parents(&mut self, path: &str) -> Result<(), CpioError> {
        for (end, _) in path.match_indices('/') {
            let parent = &path[..end];
            match self.entries.get(parent) {
                None => {
                    self.entries.insert(
                        parent.to_owned(),
                        Entry {
                            mode: IMPLICIT_DIR_MODE,
                            kind: Kind::Directory { explicit: false },
                        },
                    );
                }
                Some(Entry {
                    kind: Kind::Directory { .. },
                    ..
                }) => {}
                Some(_) => {
                    return Err(CpioError::NotADirectory {
                        path: parent.to_owned(),
                    });
                }
            }
        }
        Ok(())
    }
}

struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    filesize: u32,
}

fn write_entry(out: &mut Vec<u8>, header: &Header, name: &str, data: &[u8]) {
    let namesize = u32::try_from(name.len() + 1).expect("path length fits u32");
    out.extend_from_slice(MAGIC);
    // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
    let fields = [
        header.ino,
        header.mode,
        0,
        0,
        header.nlink,
        header.mtime,
        header.filesize,
        0,
        0,
        0,
        0,
        namesize,
        0,
    ];
    for field in fields {
        out.extend_from_slice(format!("{field:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn check_mode(path: &str, mode: u32) -> Result<(), CpioError> {
    if mode & !PERMISSION_BITS != 0 {
        return Err(CpioError::InvalidMode {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

fn normalize(path: &str) -> Result<String, CpioError> {
    let invalid = |reason| CpioError::InvalidPath {
        path: path.to_owned(),
        reason,
    };
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    if trimmed.is_empty() {
        return Err(invalid("the root itself is not an entry"));
    }
    if path.contains('\0') {
        return Err(invalid("contains a NUL byte"));
    }
    for component in trimmed.split('/') {
        match component {
            "" => return Err(invalid("has an empty component")),
            "." | ".." => return Err(invalid("has a '.' or '..' component")),
            _ => {}
        }
    }
    if trimmed == TRAILER {
        return Err(invalid("is the reserved trailer name"));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
pub(crate) mod reader {
    //! A minimal newc parser used to check the writer's output.

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ReadEntry {
        pub name: String,
        pub ino: u32,
        pub mode: u32,
        pub uid: u32,
        pub gid: u32,
        pub nlink: u32,
        pub mtime: u32,
        pub data: Vec<u8>,
    }

    /// Parses an archive up to (not including) the trailer.
    pub fn read(mut bytes: &[u8]) -> Vec<ReadEntry> {
        let total = bytes.len();
        let mut entries = Vec::new();
        loop {
            assert_eq!(&bytes[..6], b"070701", "bad magic");
            let field = |i: usize| {
                let text = std::str::from_utf8(&bytes[6 + 8 * i..14 + 8 * i]).expect("ascii hex");
                u32::from_str_radix(text, 16).expect("hex field")
            };
            let (ino, mode, uid, gid, nlink, mtime, filesize, namesize) = (
                field(0),
                field(1),
                field(2),
                field(3),
                field(4),
                field(5),
                field(6),
                field(11),
            );
            let name_end = 110 + namesize as usize;
            assert_eq!(bytes[name_end - 1], 0, "name is NUL terminated");
            let name = String::from_utf8(bytes[110..name_end - 1].to_vec()).expect("utf-8 name");
            let data_start = name_end.next_multiple_of(4);
            let data_end = data_start + filesize as usize;
            let data = bytes[data_start..data_end].to_vec();
            let next = data_end.next_multiple_of(4);
            assert_eq!((total - bytes.len()) % 4, 0, "entries are 4-byte aligned");
            bytes = &bytes[next..];
            if name == super::TRAILER {
                assert!(bytes.is_empty(), "nothing follows the trailer");
                return entries;
            }
            entries.push(ReadEntry {
                name,
                ino,
                mode,
                uid,
                gid,
                nlink,
                mtime,
                data,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::reader::read;
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    fn sample(mtime: u64) -> CpioBuilder {
        let mut cpio = CpioBuilder::new(mtime).expect("mtime fits");
        cpio.file("/init", b"#!binary".to_vec(), 0o755)
            .expect("init");
        cpio.file("/lib/modules/6.1/modules.dep", b"a.ko:\n".to_vec(), 0o644)
            .expect("modules.dep");
        cpio.dir("/dev", 0o755).expect("dev");
        cpio.dir("/tmp", 0o1777).expect("tmp");
        cpio.symlink("/bin", "usr/bin").expect("symlink");
        cpio.file("/etc/odd-size", vec![7u8; 5], 0o600)
            .expect("odd");
        cpio
    }

    #[test]
    fn entries_are_sorted_with_parents_first_and_numbered_in_order() {
        let entries = read(&sample(0).to_bytes());
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "dev",
                "etc",
                "etc/odd-size",
                "init",
                "lib",
                "lib/modules",
                "lib/modules/6.1",
                "lib/modules/6.1/modules.dep",
                "tmp"
            ]
        );
        let inodes: Vec<u32> = entries.iter().map(|e| e.ino).collect();
        assert_eq!(inodes, (1..=10).collect::<Vec<_>>());
    }

    #[test]
    fn headers_carry_types_modes_owner_and_mtime() {
        let entries = read(&sample(1_700_000_000).to_bytes());
        let get = |name: &str| {
            entries
                .iter()
                .find(|e| e.name == name)
                .unwrap_or_else(|| panic!("{name} missing"))
        };
        assert_eq!(get("init").mode, 0o100_755);
        assert_eq!(get("init").data, b"#!binary");
        assert_eq!(get("tmp").mode, 0o041_777);
        assert_eq!(get("tmp").nlink, 2);
        assert_eq!(get("lib/modules").mode, 0o040_755);
        assert_eq!(get("bin").mode, 0o120_777);
        assert_eq!(get("bin").data, b"usr/bin");
        assert_eq!(get("etc/odd-size").data, vec![7u8; 5]);
        for entry in &entries {
            assert_eq!((entry.uid, entry.gid), (0, 0), "{}", entry.name);
            assert_eq!(entry.mtime, 1_700_000_000, "{}", entry.name);
        }
    }

    #[test]
    fn insertion_order_does_not_change_the_bytes() {
        let mut reversed = CpioBuilder::new(0).expect("mtime fits");
        reversed
            .file("/etc/odd-size", vec![7u8; 5], 0o600)
            .expect("odd");
        reversed.symlink("bin", "usr/bin").expect("symlink");
        reversed.dir("tmp", 0o1777).expect("tmp");
        reversed.dir("dev", 0o755).expect("dev");
        reversed
            .file("lib/modules/6.1/modules.dep", b"a.ko:\n".to_vec(), 0o644)
            .expect("modules.dep");
        reversed
            .file("init", b"#!binary".to_vec(), 0o755)
            .expect("init");
        assert_eq!(reversed.to_bytes(), sample(0).to_bytes());
        assert_ne!(sample(1).to_bytes(), sample(0).to_bytes());
    }

    #[test]
    fn system_cpio_lists_the_archive() {
        let mut child = Command::new("/usr/bin/cpio")
            .args(["-itv", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn /usr/bin/cpio");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&sample(0).to_bytes())
            .expect("feed cpio");
        let output = child.wait_with_output().expect("cpio runs");
        assert!(output.status.success(), "{output:?}");
        let listing = String::from_utf8(output.stdout).expect("utf-8 listing");
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), 10, "{listing}");
        let line = |name: &str| {
            *lines
                .iter()
                .find(|l| l.ends_with(&format!(" {name}")) || l.contains(&format!(" {name} -> ")))
                .unwrap_or_else(|| panic!("{name} not listed in {listing}"))
        };
        assert!(line("init").starts_with("-rwxr-xr-x   1 root     root            8"));
        assert!(line("tmp").starts_with("drwxrwxrwt   2 root     root"));
        assert!(line("etc/odd-size").starts_with("-rw-------   1 root     root            5"));
        assert!(line("bin").starts_with("lrwxrwxrwx"));
        assert!(line("bin").ends_with("bin -> usr/bin"));
    }

    #[test]
    fn conflicting_and_invalid_entries_are_rejected() {
        let mut cpio = sample(0);
        assert_eq!(
            cpio.file("init", vec![], 0o644),
            Err(CpioError::Duplicate {
                path: "init".into()
            })
        );
        assert_eq!(
            cpio.file("init/x", vec![], 0o644),
            Err(CpioError::NotADirectory {
                path: "init".into()
            })
        );
        assert_eq!(
            cpio.dir("dev", 0o700),
            Err(CpioError::Duplicate { path: "dev".into() })
        );
        // An implied parent may later be given its own mode.
        cpio.dir("lib/modules", 0o700)
            .expect("explicit mode for implied dir");
        assert!(matches!(
            cpio.file("a/../b", vec![], 0o644),
            Err(CpioError::InvalidPath { .. })
        ));
        assert!(matches!(
            cpio.file("/", vec![], 0o644),
            Err(CpioError::InvalidPath { .. })
        ));
        assert!(matches!(
            cpio.file("a//b", vec![], 0o644),
            Err(CpioError::InvalidPath { .. })
        ));
        assert_eq!(
            cpio.file("x", vec![], 0o100_644),
            Err(CpioError::InvalidMode {
                path: "x".into(),
                mode: 0o100_644
            })
        );
        assert_eq!(
            CpioBuilder::new(1 << 32).map(|_| ()),
            Err(CpioError::MtimeOutOfRange { mtime: 1 << 32 })
        );
        let entries = read(&cpio.to_bytes());
        let modules = entries
            .iter()
            .find(|e| e.name == "lib/modules")
            .expect("lib/modules");
        assert_eq!(modules.mode, 0o040_700);
    }
}
