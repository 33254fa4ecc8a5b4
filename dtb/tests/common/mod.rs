//! Shared by the test files.

use std::path::PathBuf;

use talos_boards::DebianKernel;
use talos_machinery::Arch;

/// The Debian arm64 kernel's device trees (`linux-image-<release>/`), if fetched.
pub fn kernel_dtb_dir() -> Option<PathBuf> {
    let Some(kernel) = DebianKernel::unpacked(Arch::Arm64) else {
        println!(
            "skipped: no arm64 kernel in {}",
            DebianKernel::root(Arch::Arm64).display()
        );
        return None;
    };
    Some(kernel.dtb_dir())
}
