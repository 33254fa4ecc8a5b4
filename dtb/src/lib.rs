//! Our device-tree overlays (`dtb/overlays/<name>.dts`), compiled with `dtc` and checked.
//!
//! A compiled overlay is accepted only when dtc exits with success and without warnings, and
//! the output is a well-formed flattened device tree (magic `0xd00dfeed`, sizes within the
//! file, a structure block that ends properly) with at least one `__overlay__` node.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The FDT header magic, big-endian at offset 0.
pub const FDT_MAGIC: u32 = 0xd00d_feed;

const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;

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

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(word.try_into().ok()?))
}

/// Checks the header and walks the structure block of a compiled overlay.
pub fn parse_overlay(path: &Path, bytes: &[u8]) -> Result<Overlay, DtbError> {
    let invalid = |reason: String| DtbError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let field = |at: usize, name: &str| {
        be32(bytes, at).ok_or_else(|| invalid(format!("file too short for header field {name}")))
    };
    let magic = field(0, "magic")?;
    if magic != FDT_MAGIC {
        return Err(invalid(format!(
            "magic {magic:#010x}, expected {FDT_MAGIC:#010x}"
        )));
    }
    let total_size = field(4, "totalsize")?;
    if total_size as usize != bytes.len() {
        return Err(invalid(format!(
            "totalsize {total_size} but the file has {} bytes",
            bytes.len()
        )));
    }
    let struct_off = field(8, "off_dt_struct")? as usize;
    let strings_off = field(12, "off_dt_strings")? as usize;
    let version = field(20, "version")?;
    let strings_size = field(32, "size_dt_strings")? as usize;
    let struct_size = field(36, "size_dt_struct")? as usize;
    if version < 17 {
        return Err(invalid(format!("version {version}, expected 17 or later")));
    }
    let within =
        |off: usize, size: usize| off.checked_add(size).is_some_and(|end| end <= bytes.len());
    if !within(struct_off, struct_size) || !within(strings_off, strings_size) {
        return Err(invalid("a block lies outside the file".into()));
    }
    let structure = &bytes[struct_off..struct_off + struct_size];

    let mut at = 0;
    let mut depth = 0usize;
    let mut fragments = Vec::new();
    let mut overlay_nodes = 0;
    let align = |n: usize| (n + 3) & !3;
    loop {
        let token = be32(structure, at)
            .ok_or_else(|| invalid("structure block ends without FDT_END".into()))?;
        at += 4;
        match token {
            FDT_BEGIN_NODE => {
                let rest = &structure[at..];
                let len = rest
                    .iter()
                    .position(|b| *b == 0)
                    .ok_or_else(|| invalid("unterminated node name".into()))?;
                let name = String::from_utf8_lossy(&rest[..len]).into_owned();
                at += align(len + 1);
                depth += 1;
                if depth == 2 {
                    fragments.push(name.clone());
                }
                if name == "__overlay__" {
                    overlay_nodes += 1;
                }
            }
            FDT_END_NODE => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| invalid("more node ends than node starts".into()))?;
            }
            FDT_PROP => {
                let len = be32(structure, at).ok_or_else(|| invalid("truncated property".into()))?
                    as usize;
                at += 8 + align(len);
                if at > structure.len() {
                    return Err(invalid("property runs past the structure block".into()));
                }
            }
            FDT_NOP => {}
            FDT_END => break,
            other => return Err(invalid(format!("unknown structure token {other}"))),
        }
    }
    if depth != 0 {
        return Err(invalid(format!("{depth} nodes never end")));
    }
    if overlay_nodes == 0 {
        return Err(invalid(
            "no __overlay__ node: a plain device tree, not an overlay".into(),
        ));
    }
    Ok(Overlay {
        path: path.to_owned(),
        total_size,
        version,
        fragments,
    })
}
