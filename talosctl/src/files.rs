//! Reading bounded input files and writing files atomically.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context as _, bail};
use talos_machinery::codec::MAX_CONFIG_BYTES;

/// Reads a YAML input file, refusing files over the codec's size limit before reading them whole.
pub fn read_bounded(path: &Path) -> anyhow::Result<Vec<u8>> {
    let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() > MAX_CONFIG_BYTES {
        bail!("{} is larger than {MAX_CONFIG_BYTES} bytes", path.display());
    }
    Ok(bytes)
}

/// Reads a bounded UTF-8 text file.
pub fn read_text(path: &Path) -> anyhow::Result<String> {
    String::from_utf8(read_bounded(path)?)
        .with_context(|| format!("{} is not UTF-8 text", path.display()))
}

/// Replaces `path` with `contents` (mode `mode`) so readers see the old or the new file, never a
/// mix: a temporary file in the same directory is written, synced and renamed over it.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?;
    let temp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> anyhow::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temp)
            .with_context(|| format!("creating {}", temp.display()))?;
        file.set_permissions(fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {}", temp.display()))?;
        file.write_all(contents)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", temp.display()))?;
        fs::rename(&temp, path).with_context(|| format!("replacing {}", path.display()))?;
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("config");
        write_atomic(&path, b"one", 0o600).unwrap();
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["config"]);
    }

    #[test]
    fn read_bounded_refuses_large_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        fs::write(&path, vec![b'a'; MAX_CONFIG_BYTES + 1]).unwrap();
        let err = read_bounded(&path).unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");
        let err = read_bounded(&dir.path().join("missing")).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
