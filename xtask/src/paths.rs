//! Where things live: the workspace, the build outputs, and the download cache.

use std::path::{Path, PathBuf};

use talos_machinery::Arch;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_owned()
}

/// Cargo's target directory (`$CARGO_TARGET_DIR`, else target/ in the workspace).
pub fn target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

/// Built images per architecture: `out/<arch>/`.
pub fn out(arch: Arch) -> PathBuf {
    root().join("out").join(arch.as_str())
}

/// Downloads and unpacked packages, kept across clean clones (`$TALOS_RS_CACHE`, else
/// `~/.cache/talos-rs`).
pub fn cache() -> PathBuf {
    talos_boards::cache_dir()
}

pub fn boards() -> PathBuf {
    root().join("boards")
}

/// The board each architecture's QEMU tests use.
pub fn default_board(arch: Arch) -> &'static str {
    match arch {
        Arch::Arm64 => "qemu-virt-arm64",
        Arch::Amd64 => "qemu-amd64",
    }
}
