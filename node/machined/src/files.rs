//! Read, List and Copy: files under / only, never device files, never secrets, even through links.

use std::io::{Read as _, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use talos_proto::machine::FileInfo;
use talos_proto::machine::list_request::Type as ListType;

/// Where the node keeps key material: the machine config (with the OS CA key) on STATE, and
/// the runtime secrets directory.
pub const SECRET_DIRS: &[&str] = &["/system/state", "/system/secrets"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FileAccessError {
    #[error("path {0:?} must be absolute")]
    NotAbsolute(String),
    #[error("path {0:?} does not exist")]
    NotFound(String),
    #[error("path {path:?} resolves into {secret}, which holds secrets")]
    Secret { path: String, secret: String },
    #[error("path must be a regular file: {0:?} is not")]
    NotRegular(String),
    #[error("path {0:?} is a device file")]
    Device(String),
    #[error("reading {path:?}: {reason}")]
    Io { path: String, reason: String },
}

/// Resolves `path` (following links) relative to `root`, refusing secrets.
pub fn resolve(root: &Path, path: &str) -> Result<PathBuf, FileAccessError> {
    if !path.starts_with('/') {
        return Err(FileAccessError::NotAbsolute(path.to_owned()));
    }
    let relative: PathBuf = Path::new(path)
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    let real_root = root.canonicalize().map_err(|e| FileAccessError::Io {
        path: root.display().to_string(),
        reason: e.to_string(),
    })?;
    let resolved = real_root
        .join(relative)
        .canonicalize()
        .map_err(|_| FileAccessError::NotFound(path.to_owned()))?;
    let inside = resolved
        .strip_prefix(&real_root)
        .map_err(|_| FileAccessError::NotFound(path.to_owned()))?;
    let as_node_path = Path::new("/").join(inside);
    for secret in SECRET_DIRS {
        if as_node_path.starts_with(secret) {
            return Err(FileAccessError::Secret {
                path: path.to_owned(),
                secret: (*secret).to_owned(),
            });
        }
    }
    Ok(resolved)
}

/// A regular, non-secret file's path, for Read.
pub fn readable_file(root: &Path, path: &str) -> Result<PathBuf, FileAccessError> {
    let resolved = resolve(root, path)?;
    let meta = std::fs::metadata(&resolved).map_err(|e| FileAccessError::Io {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let ft = meta.file_type();
    if ft.is_block_device() || ft.is_char_device() {
        return Err(FileAccessError::Device(path.to_owned()));
    }
    if !ft.is_file() {
        return Err(FileAccessError::NotRegular(path.to_owned()));
    }
    Ok(resolved)
}

fn info(path: &Path, relative: &str) -> FileInfo {
    let name = path.display().to_string();
    match std::fs::symlink_metadata(path) {
        Ok(meta) => FileInfo {
            metadata: None,
            name,
            size: i64::try_from(meta.len()).unwrap_or(i64::MAX),
            mode: talos_machinery::file_mode::from_unix(meta.mode()),
            modified: meta.mtime(),
            is_dir: meta.is_dir(),
            error: String::new(),
            link: std::fs::read_link(path)
                .map(|l| l.display().to_string())
                .unwrap_or_default(),
            relative_name: relative.to_owned(),
            uid: meta.uid(),
            gid: meta.gid(),
            xattrs: Vec::new(),
        },
        Err(e) => FileInfo {
            name,
            error: e.to_string(),
            relative_name: relative.to_owned(),
            ..FileInfo::default()
        },
    }
}

fn wanted(types: &[ListType], meta: &std::fs::Metadata) -> bool {
    if types.is_empty() {
        return true;
    }
    let ft = meta.file_type();
    types.iter().any(|t| match t {
        ListType::Regular => ft.is_file(),
        ListType::Directory => ft.is_dir(),
        ListType::Symlink => ft.is_symlink(),
    })
}

/// Lists `path` (the directory itself first, as upstream does), descending `depth` levels
/// (`None` = unlimited). Secret directories and their contents are left out; links are
/// reported, not followed.
pub fn list(
    root: &Path,
    path: &str,
    depth: Option<u32>,
    types: &[ListType],
) -> Result<Vec<FileInfo>, FileAccessError> {
    let start = resolve(root, path)?;
    let mut out = vec![info(&start, ".")];
    let real_root = root.canonicalize().map_err(|e| FileAccessError::Io {
        path: root.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut stack = vec![(start.clone(), 0u32)];
    while let Some((dir, level)) = stack.pop() {
        if depth.is_some_and(|d| level >= d) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = entries.filter_map(|e| e.ok()).collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let p = entry.path();
            let node_path = Path::new("/").join(p.strip_prefix(&real_root).unwrap_or(&p));
            if SECRET_DIRS.iter().any(|s| node_path.starts_with(s)) {
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            let relative = p
                .strip_prefix(&start)
                .map(|r| r.display().to_string())
                .unwrap_or_default();
            if wanted(types, &meta) {
                out.push(info(&p, &relative));
            }
            if meta.is_dir() {
                stack.push((p, level + 1));
            }
        }
    }
    Ok(out)
}

/// Files of at most this size that report a size of 0 (those under /proc and /sys) are read
/// whole, so Copy carries their content.
const SYNTHETIC_FILE_LIMIT: u64 = 1 << 20;

fn io_error(path: &Path, e: std::io::Error) -> FileAccessError {
    FileAccessError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Where Copy of `path` starts: anything but a device file or a secret.
pub fn archive_root(root: &Path, path: &str) -> Result<PathBuf, FileAccessError> {
    let start = resolve(root, path)?;
    let meta = std::fs::metadata(&start).map_err(|e| io_error(&start, e))?;
    if meta.file_type().is_block_device() || meta.file_type().is_char_device() {
        return Err(FileAccessError::Device(path.to_owned()));
    }
    Ok(start)
}

/// Writes `path` (a file or a directory tree) to `out` as a tar archive whose names start at
/// `path`'s own name, as upstream's Copy does. Secret directories are left out, links are
/// archived as links, and device files, sockets and pipes are skipped.
pub fn archive(root: &Path, path: &str, out: impl Write) -> Result<(), FileAccessError> {
    let start = archive_root(root, path)?;
    let real_root = root.canonicalize().map_err(|e| io_error(root, e))?;
    let base = match start.parent() {
        Some(parent) if start != real_root => parent.to_path_buf(),
        _ => start.clone(),
    };
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    let mut pending = vec![start.clone()];
    while let Some(p) = pending.pop() {
        let node_path = Path::new("/").join(p.strip_prefix(&real_root).unwrap_or(&p));
        if SECRET_DIRS.iter().any(|s| node_path.starts_with(s)) {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let name = p.strip_prefix(&base).unwrap_or(&p);
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        let written = if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&p) {
                let mut children: Vec<PathBuf> =
                    entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
                children.sort_unstable_by(|a, b| b.cmp(a));
                pending.extend(children);
            }
            if name.as_os_str().is_empty() {
                // Copying / itself: its entries are the top level.
                continue;
            }
            header.set_size(0);
            tar.append_data(&mut header, name, std::io::empty())
        } else if meta.is_symlink() {
            let Ok(target) = std::fs::read_link(&p) else {
                continue;
            };
            header.set_size(0);
            tar.append_link(&mut header, name, target)
        } else if meta.is_file() {
            let Ok(mut file) = std::fs::File::open(&p) else {
                continue;
            };
            if meta.len() == 0 {
                let mut content = Vec::new();
                if (&mut file)
                    .take(SYNTHETIC_FILE_LIMIT)
                    .read_to_end(&mut content)
                    .is_err()
                {
                    continue;
                }
                header.set_size(content.len() as u64);
                tar.append_data(&mut header, name, content.as_slice())
            } else {
                // A file that shrinks while it is read is padded, one that grows is cut, so the
                // header's size stays true.
                let size = meta.len();
                let exact = file.take(size).chain(std::io::repeat(0)).take(size);
                tar.append_data(&mut header, name, exact)
            }
        } else {
            continue;
        };
        written.map_err(|e| io_error(&p, e))?;
    }
    tar.into_inner()
        .map_err(|e| io_error(Path::new(path), e))?
        .flush()
        .map_err(|e| io_error(Path::new(path), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::create_dir_all(r.join("system/state")).unwrap();
        std::fs::write(r.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
        std::fs::write(r.join("system/state/config.yaml"), "secret").unwrap();
        std::os::unix::fs::symlink("/system/state/config.yaml", r.join("etc/sneaky")).unwrap();
        std::os::unix::fs::symlink("../system/state", r.join("etc/sneaky-dir")).unwrap();
        dir
    }

    #[test]
    fn reads_regular_files() {
        let t = tree();
        assert_eq!(
            readable_file(t.path(), "/etc/hosts").unwrap(),
            t.path().canonicalize().unwrap().join("etc/hosts")
        );
    }

    #[test]
    fn refuses_secrets_directly_and_through_links() {
        let t = tree();
        assert!(matches!(
            readable_file(t.path(), "/system/state/config.yaml"),
            Err(FileAccessError::Secret { .. })
        ));
        // An absolute link target resolves outside the test root, so it is not found there.
        assert!(readable_file(t.path(), "/etc/sneaky").is_err());
        assert!(matches!(
            resolve(t.path(), "/etc/sneaky-dir/config.yaml"),
            Err(FileAccessError::Secret { .. })
        ));
    }

    #[test]
    fn cannot_escape_the_root() {
        let t = tree();
        let outside = resolve(t.path(), "/../../../../etc/hostname");
        assert!(!matches!(outside, Ok(p) if !p.starts_with(t.path().canonicalize().unwrap())));
    }

    #[test]
    fn refuses_devices_directories_and_relative_paths() {
        assert_eq!(
            readable_file(Path::new("/"), "/dev/null"),
            Err(FileAccessError::Device("/dev/null".into()))
        );
        let t = tree();
        assert_eq!(
            readable_file(t.path(), "/etc"),
            Err(FileAccessError::NotRegular("/etc".into()))
        );
        assert_eq!(
            readable_file(t.path(), "etc/hosts"),
            Err(FileAccessError::NotAbsolute("etc/hosts".into()))
        );
    }

    #[test]
    fn listing_skips_secrets_and_honours_depth_and_types() {
        let t = tree();
        let all: Vec<String> = list(t.path(), "/", None, &[])
            .unwrap()
            .into_iter()
            .map(|f| f.relative_name)
            .collect();
        assert!(all.contains(&"etc/hosts".to_owned()));
        assert!(!all.iter().any(|n| n.contains("config.yaml")), "{all:?}");
        let shallow: Vec<String> = list(t.path(), "/", Some(1), &[])
            .unwrap()
            .into_iter()
            .map(|f| f.relative_name)
            .collect();
        assert!(shallow.contains(&"etc".to_owned()) && !shallow.contains(&"etc/hosts".to_owned()));
        let links: Vec<String> = list(t.path(), "/etc", None, &[ListType::Symlink])
            .unwrap()
            .into_iter()
            .map(|f| f.relative_name)
            .collect();
        assert_eq!(links, vec![".", "sneaky", "sneaky-dir"]);
    }

    fn archived(root: &Path, path: &str) -> Vec<(String, tar::EntryType, Vec<u8>)> {
        let mut bytes = Vec::new();
        archive(root, path, &mut bytes).unwrap();
        tar::Archive::new(bytes.as_slice())
            .entries()
            .unwrap()
            .map(|entry| {
                let mut entry = entry.unwrap();
                let name = entry.path().unwrap().display().to_string();
                let kind = entry.header().entry_type();
                let mut content = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
                (name, kind, content)
            })
            .collect()
    }

    #[test]
    fn archives_trees_by_their_own_name_without_secrets_or_devices() {
        let t = tree();
        let etc = archived(t.path(), "/etc");
        let names: Vec<(&str, tar::EntryType)> =
            etc.iter().map(|(n, k, _)| (n.as_str(), *k)).collect();
        assert_eq!(
            names,
            [
                ("etc", tar::EntryType::Directory),
                ("etc/hosts", tar::EntryType::Regular),
                ("etc/sneaky", tar::EntryType::Symlink),
                ("etc/sneaky-dir", tar::EntryType::Symlink),
            ]
        );
        assert_eq!(etc[1].2, b"127.0.0.1 localhost\n");

        let everything = archived(t.path(), "/");
        assert_eq!(
            everything[0].0, "etc",
            "copying / archives its entries at the top"
        );
        assert!(everything.iter().any(|(n, _, _)| n == "etc/hosts"));
        assert!(
            !everything
                .iter()
                .any(|(n, _, _)| n.contains("system/state")),
            "{:?}",
            everything.iter().map(|e| &e.0).collect::<Vec<_>>()
        );
        assert!(matches!(
            archive(t.path(), "/etc/sneaky-dir/config.yaml", Vec::new()),
            Err(FileAccessError::Secret { .. })
        ));
        assert_eq!(
            archive(Path::new("/"), "/dev/null", Vec::new()),
            Err(FileAccessError::Device("/dev/null".into()))
        );
    }

    #[test]
    fn archives_the_content_of_files_that_report_no_size() {
        let status = archived(Path::new("/"), "/proc/self/status");
        let [(name, _, content)] = status.as_slice() else {
            panic!("{status:?}");
        };
        assert_eq!(name, "status");
        assert!(String::from_utf8_lossy(content).contains("Name:"));
    }
}
