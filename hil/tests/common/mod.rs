//! Shared by the QEMU test files.

use talos_hil::QemuBoard;

/// A booted node that prints its serial console when the test fails.
pub struct Node {
    pub qemu: QemuBoard,
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- serial console ({}) ----",
                self.qemu.serial_log().display()
            );
            for line in self.qemu.serial_lines() {
                eprintln!("{line}");
            }
        }
    }
}
