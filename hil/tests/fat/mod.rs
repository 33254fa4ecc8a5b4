//! Reading the FAT boot partition of a built image, shared by the image test files.

use std::path::Path;
use std::process::Command;

/// Copies every file of the FAT partition at `offset` into `dir` with mtools.
pub fn extract_fat(image: &Path, offset: u64, dir: &Path) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let out = Command::new("mcopy")
        .args(["-s", "-n", "-i"])
        .arg(format!("{}@@{offset}", image.display()))
        .arg("::*")
        .arg(dir)
        .output()
        .expect("mcopy runs (install mtools: cargo xtask deps)");
    assert!(
        out.status.success(),
        "mcopy from {}: {}",
        image.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}
