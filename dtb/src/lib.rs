//! Our device-tree overlays (`dtb/overlays/<name>.dts`), compiled with `dtc` and checked.
//!
//! A compiled overlay is accepted only when dtc exits with success and without warnings, and
//! the output is a well-formed flattened device tree (magic `0xd00dfeed`, sizes within the
//! file, a structure block that ends properly) with at least one `__overlay__` node.

pub mod fdt;

use std::path::{Path, PathBuf};
use std::process::Command;

/// On the EFI partition of boards whose U-Boot loads the DTB from `dtb/` (layout
/// `efi-dtb-dir`): the kernel package's DTBs as shipped, from which machined writes `dtb/` with
/// the chosen overlays applied.
pub const PRISTINE_DTB_DIR: &str = "dtb-base";

#[derive(Debug, thiserror::Error)]
pub enum DtbError {
    #[error("Cannot run {tool} (install the Debian package device-tree-compiler)")]
    Spawn {
        tool: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("dtc failed on {source_file} ({status}): {stderr}")]
    Compile {
        source_file: PathBuf,
        status: String,
        stderr: String,
    },
    #[error("dtc warned about {source_file}: {stderr}")]
    Warnings {
        source_file: PathBuf,
        stderr: String,
    },
    #[error("Cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid overlay: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// What a valid compiled overlay holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    pub path: PathBuf,
    pub total_size: u32,
    pub version: u32,
    /// Names of the root's child nodes, e.g. `fragment@0`.
    pub fragments: Vec<String>,
}

/// The overlay sources in `dir` (`<name>.dts`), by name, sorted.
pub fn sources(dir: &Path) -> Result<Vec<(String, PathBuf)>, DtbError> {
    let read_error = |source| DtbError::Read {
        path: dir.to_owned(),
        source,
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        if path.extension().is_some_and(|e| e == "dts")
            && let Some(name) = path.file_stem().and_then(|s| s.to_str())
        {
            found.push((name.to_owned(), path.clone()));
        }
    }
    found.sort();
    Ok(found)
}

/// Compiles `source` into `output` with `dtc -@` and validates the result.
pub fn compile(source: &Path, output: &Path) -> Result<Overlay, DtbError> {
    let result = Command::new("dtc")
        .args(["-@", "-q", "-I", "dts", "-O", "dtb", "-o"])
        .arg(output)
        .arg(source)
        .output()
        .map_err(|source| DtbError::Spawn {
            tool: "dtc",
            source,
        })?;
    let stderr = String::from_utf8_lossy(&result.stderr).trim().to_owned();
    if !result.status.success() {
        return Err(DtbError::Compile {
            source_file: source.to_owned(),
            status: result.status.to_string(),
            stderr,
        });
    }
    if !stderr.is_empty() {
        return Err(DtbError::Warnings {
            source_file: source.to_owned(),
            stderr,
        });
    }
    let bytes = std::fs::read(output).map_err(|e| DtbError::Read {
        path: output.to_owned(),
        source: e,
    })?;
    parse_overlay(output, &bytes)
}

/// Checks a compiled overlay: a well-formed device tree (see [`fdt::Fdt::parse`]) of version 17
/// or later, exactly as long as the file, with at least one `__overlay__` node.
pub fn parse_overlay(path: &Path, bytes: &[u8]) -> Result<Overlay, DtbError> {
    let invalid = |reason: String| DtbError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let tree = fdt::Fdt::parse(bytes).map_err(|e| invalid(e.to_string()))?;
    let header =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let (total_size, version) = (header(4), header(20));
    if total_size as usize != bytes.len() {
        return Err(invalid(format!(
            "totalsize {total_size} but the file has {} bytes",
            bytes.len()
        )));
    }
    if version < 17 {
        return Err(invalid(format!("version {version}, expected 17 or later")));
    }
    fn has_overlay(node: &fdt::Node) -> bool {
        node.name == "__overlay__" || node.children.iter().any(has_overlay)
    }
    if !has_overlay(&tree.root) {
        return Err(invalid(
            "no __overlay__ node: a plain device tree, not an overlay".into(),
        ));
    }
    Ok(Overlay {
        path: path.to_owned(),
        total_size,
        version,
        fragments: tree.root.children.iter().map(|c| c.name.clone()).collect(),
    })
}
