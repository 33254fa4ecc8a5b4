//! Shared by the test files.

use std::path::PathBuf;

/// The Debian arm64 kernel's device trees (`linux-image-<release>/`), if fetched.
pub fn kernel_dtb_dir() -> Option<PathBuf> {
    let root = talos_boards::cache_dir().join("kernels/arm64");
    let Ok(release) = std::fs::read_to_string(root.join("release")) else {
        println!("skipped: no arm64 kernel in {}", root.display());
        return None;
    };
    Some(
        root.join("usr/lib")
            .join(format!("linux-image-{}", release.trim())),
    )
}
