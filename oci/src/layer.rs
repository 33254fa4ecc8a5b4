//! Layer tarballs: a deterministic tar writer, deterministic gzip, and unpacking layers into
//! files with overlay semantics (later layers win, whiteouts delete).
//!
//! Written tars hold entries sorted by path, parents first, owned by 0:0 with mtime 0, files
//! 0644 and directories 0755, in ustar format; the gzip header has no mtime and no name.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};

use flate2::read::GzDecoder;
use flate2::{Compression, GzBuilder};

use crate::image::BuildError;
use crate::media_type;

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("reading the layer (corrupt gzip or tar stream)")]
    Read(#[source] io::Error),
    #[error("the layers unpack to more than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("{path} is a {kind} in the layer, not a regular file")]
    NotRegularFile { path: String, kind: String },
    #[error("layer media type {0:?} is not supported (only tar and tar+gzip)")]
    UnsupportedMediaType(String),
}

const FILE_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o755;
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";

/// A relative path of plain components: no leading or trailing `/`, no empty, `.` or `..`
/// component, no NUL, and no whiteout names (those mean "delete" to overlay readers).
fn check_path(path: &str) -> Result<(), BuildError> {
    let invalid = |reason| BuildError::Path {
        path: path.to_owned(),
        reason,
    };
    if path.starts_with('/') {
        return Err(invalid("must be relative (no leading '/')"));
    }
    if path.contains('\0') {
        return Err(invalid("contains a NUL byte"));
    }
    for component in path.split('/') {
        match component {
            "" => return Err(invalid("has an empty component (or a trailing '/')")),
            "." | ".." => return Err(invalid("has a '.' or '..' component")),
            c if c.starts_with(WHITEOUT_PREFIX) => {
                return Err(invalid(
                    "has a '.wh.' name, which overlays read as a deletion",
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Files and their parent directories, checked and sorted, ready to be written as a tar.
#[derive(Debug)]
pub(crate) struct TarTree<'a> {
    /// `None` marks a directory.
    entries: BTreeMap<&'a str, Option<&'a [u8]>>,
}

impl<'a> TarTree<'a> {
    pub fn new(files: &[(&'a str, &'a [u8])]) -> Result<Self, BuildError> {
        let mut entries = BTreeMap::new();
        for &(path, data) in files {
            check_path(path)?;
            for (i, _) in path.match_indices('/') {
                let parent = &path[..i];
                if let Some(Some(_)) = entries.insert(parent, None) {
                    return Err(BuildError::FileIsParent {
                        file: parent.to_owned(),
                        child: path.to_owned(),
                    });
                }
            }
            match entries.insert(path, Some(data)) {
                None => {}
                Some(Some(_)) => return Err(BuildError::Duplicate(path.to_owned())),
                Some(None) => {
                    let child = files
                        .iter()
                        .find(|(p, _)| is_under(p, path))
                        .map_or("", |(p, _)| *p);
                    return Err(BuildError::FileIsParent {
                        file: path.to_owned(),
                        child: child.to_owned(),
                    });
                }
            }
        }
        Ok(Self { entries })
    }

    /// Writes the tar. A prefix sorts before its extensions, so parents precede children.
    pub fn write<W: Write>(&self, out: W) -> io::Result<W> {
        let mut tar = tar::Builder::new(out);
        for (&path, data) in &self.entries {
            let mut header = tar::Header::new_ustar();
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            match data {
                Some(data) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(FILE_MODE);
                    header.set_size(data.len() as u64);
                    tar.append_data(&mut header, path, *data)?;
                }
                None => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(DIR_MODE);
                    header.set_size(0);
                    tar.append_data(&mut header, format!("{path}/"), io::empty())?;
                }
            }
        }
        tar.into_inner()
    }
}

/// Gzip with a fixed header (mtime 0, no file name), so equal input gives equal output.
pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::default());
    let written = encoder.write_all(data).and_then(|()| encoder.finish());
    written.expect("compressing into memory cannot fail")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LayerFormat {
    Tar,
    TarGzip,
}

impl LayerFormat {
    /// The format of a layer with this media type, if we can read it at all.
    pub fn of(layer_media_type: &str) -> Result<Self, LayerError> {
        match layer_media_type {
            media_type::OCI_LAYER_TAR_GZIP | media_type::DOCKER_LAYER_TAR_GZIP => Ok(Self::TarGzip),
            media_type::OCI_LAYER_TAR => Ok(Self::Tar),
            other => Err(LayerError::UnsupportedMediaType(other.to_owned())),
        }
    }
}

/// Files unpacked from layers applied in order, optionally only some wanted paths. One byte
/// budget bounds everything read out of the layers, skipped entries included, so a
/// decompression bomb stops early.
#[derive(Debug)]
pub(crate) struct Overlay {
    wanted: Option<BTreeSet<String>>,
    files: BTreeMap<String, Vec<u8>>,
    limit: u64,
    remaining: u64,
}

/// What one layer adds and what it hides from the layers below it.
#[derive(Debug, Default)]
struct LayerChanges {
    files: BTreeMap<String, Vec<u8>>,
    /// Paths named by `.wh.<name>` entries: gone, with everything under them.
    deleted: Vec<String>,
    /// Directories holding `.wh..wh..opq`: everything below them from lower layers is gone.
    opaque_dirs: Vec<String>,
}

impl Overlay {
    /// Keeps every regular file.
    pub fn all(limit: u64) -> Self {
        Self {
            wanted: None,
            files: BTreeMap::new(),
            limit,
            remaining: limit,
        }
    }

    /// Keeps only `wanted` (relative paths; a leading `/` is ignored).
    pub fn only(wanted: &[&str], limit: u64) -> Self {
        Self {
            wanted: Some(
                wanted
                    .iter()
                    .map(|w| w.trim_start_matches('/').to_owned())
                    .collect(),
            ),
            ..Self::all(limit)
        }
    }

    pub fn apply(&mut self, layer: &[u8], format: LayerFormat) -> Result<(), LayerError> {
        let mut reader = Budgeted {
            inner: match format {
                LayerFormat::TarGzip => Box::new(GzDecoder::new(layer)) as Box<dyn Read + '_>,
                LayerFormat::Tar => Box::new(layer),
            },
            remaining: self.remaining,
            exceeded: false,
        };
        let changes = self.read_layer(&mut reader);
        if reader.exceeded {
            return Err(LayerError::TooLarge { limit: self.limit });
        }
        let changes = changes?;
        self.remaining = reader.remaining;
        self.files.retain(|path, _| {
            !changes
                .deleted
                .iter()
                .any(|d| path == d || is_under(path, d))
                && !changes
                    .opaque_dirs
                    .iter()
                    .any(|d| d.is_empty() || is_under(path, d))
        });
        self.files.extend(changes.files);
        Ok(())
    }

    fn read_layer(&self, reader: &mut dyn Read) -> Result<LayerChanges, LayerError> {
        let mut changes = LayerChanges::default();
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries().map_err(LayerError::Read)? {
            let mut entry = entry.map_err(LayerError::Read)?;
            let Some(path) = normalize(&entry.path().map_err(LayerError::Read)?) else {
                continue;
            };
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", &path));
            if name == OPAQUE_WHITEOUT {
                changes.opaque_dirs.push(dir.to_owned());
                continue;
            }
            if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
                changes.deleted.push(match dir {
                    "" => hidden.to_owned(),
                    _ => format!("{dir}/{hidden}"),
                });
                continue;
            }
            let kind = entry.header().entry_type();
            let kept = self.wanted.as_ref().is_none_or(|w| w.contains(&path));
            if kind.is_dir() || !kept {
                continue;
            }
            if !kind.is_file() {
                // Asked for by name, a link or device is an error; unasked, it is skipped.
                if self.wanted.is_some() {
                    return Err(LayerError::NotRegularFile {
                        path,
                        kind: format!("{kind:?}").to_lowercase(),
                    });
                }
                continue;
            }
            let mut data = Vec::new();
            entry.read_to_end(&mut data).map_err(LayerError::Read)?;
            changes.files.insert(path, data);
        }
        Ok(changes)
    }

    pub fn into_files(self) -> BTreeMap<String, Vec<u8>> {
        self.files
    }

    /// Wanted paths no layer provided, in order.
    pub fn missing(&self) -> Vec<String> {
        self.wanted
            .iter()
            .flatten()
            .filter(|w| !self.files.contains_key(*w))
            .cloned()
            .collect()
    }
}

/// Whether `path` lies strictly below the directory `dir`.
fn is_under(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// `./usr/x`, `/usr/x` and `usr/x/` all name `usr/x`; paths with `..` or non-UTF-8 bytes name
/// nothing we could want.
fn normalize(path: &std::path::Path) -> Option<String> {
    use std::path::Component;
    let mut out = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(c) => out.push(c.to_str()?),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    (!out.is_empty()).then(|| out.join("/"))
}

/// Fails the read that would go past `remaining` bytes, and remembers that it did.
struct Budgeted<R> {
    inner: R,
    remaining: u64,
    exceeded: bool,
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        match self.remaining.checked_sub(n as u64) {
            Some(left) => {
                self.remaining = left;
                Ok(n)
            }
            None => {
                self.exceeded = true;
                Err(io::Error::other("layer byte budget exceeded"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar with arbitrary names (whiteouts, `./` prefixes), which the builder would refuse.
    fn raw_tar(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for &(path, kind, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(kind);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            if kind == tar::EntryType::Symlink {
                header.set_link_name("elsewhere").unwrap();
            }
            // Raw names: the tar crate would refuse the absolute ones.
            header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_cksum();
            tar.append(&header, data).unwrap();
        }
        tar.into_inner().unwrap()
    }

    const FILE: tar::EntryType = tar::EntryType::Regular;

    #[test]
    fn later_layers_win_and_whiteouts_delete() {
        let lower = raw_tar(&[
            ("./etc/keep", FILE, b"1"),
            ("etc/replaced", FILE, b"old"),
            ("etc/gone", FILE, b"x"),
            ("opt/dir/a", FILE, b"x"),
            ("var/old", FILE, b"x"),
        ]);
        let upper = raw_tar(&[
            ("etc/replaced", FILE, b"new"),
            ("etc/.wh.gone", FILE, b""),
            ("opt/.wh.dir", FILE, b""),
            ("var/.wh..wh..opq", FILE, b""),
            ("/var/new", FILE, b"y"),
        ]);
        let mut overlay = Overlay::all(1 << 20);
        overlay.apply(&gzip(&lower), LayerFormat::TarGzip).unwrap();
        overlay.apply(&upper, LayerFormat::Tar).unwrap();
        let files: Vec<(String, Vec<u8>)> = overlay.into_files().into_iter().collect();
        let want = |p: &str, d: &[u8]| (p.to_owned(), d.to_vec());
        assert_eq!(
            files,
            [
                want("etc/keep", b"1"),
                want("etc/replaced", b"new"),
                want("var/new", b"y"),
            ]
        );
    }

    #[test]
    fn keeps_only_what_is_wanted_and_names_what_is_missing() {
        let layer = raw_tar(&[
            ("a", FILE, b"1"),
            ("b", FILE, b"2"),
            ("link", tar::EntryType::Symlink, b""),
        ]);
        let mut overlay = Overlay::only(&["/a", "c"], 1 << 20);
        overlay.apply(&layer, LayerFormat::Tar).unwrap();
        assert_eq!(overlay.missing(), ["c"]);
        assert_eq!(overlay.into_files().into_keys().collect::<Vec<_>>(), ["a"]);

        let e = Overlay::only(&["link"], 1 << 20)
            .apply(&layer, LayerFormat::Tar)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "link is a symlink in the layer, not a regular file"
        );
        // Unasked, a link is skipped.
        Overlay::all(1 << 20)
            .apply(&layer, LayerFormat::Tar)
            .unwrap();
    }

    #[test]
    fn a_decompression_bomb_stops_at_the_budget() {
        let bomb = gzip(&raw_tar(&[("zeros", FILE, &vec![0; 4 << 20])]));
        assert!(bomb.len() < 64 << 10);
        let e = Overlay::only(&["nothing"], 1 << 20)
            .apply(&bomb, LayerFormat::TarGzip)
            .unwrap_err();
        assert!(
            matches!(e, LayerError::TooLarge { limit } if limit == 1 << 20),
            "{e}"
        );
    }

    #[test]
    fn corrupt_or_unknown_layers_are_errors() {
        let e = Overlay::all(1 << 20)
            .apply(b"not gzip at all", LayerFormat::TarGzip)
            .unwrap_err();
        assert!(matches!(e, LayerError::Read(_)), "{e}");
        let e = LayerFormat::of("application/vnd.oci.image.layer.v1.tar+zstd").unwrap_err();
        assert!(e.to_string().contains("tar+zstd"), "{e}");
    }
}
