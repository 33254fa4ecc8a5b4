//! Shared by the QEMU test files.

use std::path::PathBuf;

use talos_boards::Board;
use talos_hil::{Accel, BootSource, QemuBoard, QemuSpec};

/// A booted node that prints its serial console when the test fails.
pub struct Node {
    pub qemu: QemuBoard,
}

impl Node {
    /// Boots `board` under QEMU (TCG) from `boot` with `disk` attached, the console logged to
    /// `serial_log`.
    pub fn launch(board: Board, boot: BootSource, disk: PathBuf, serial_log: PathBuf) -> Node {
        let qemu = QemuBoard::launch(QemuSpec {
            board,
            boot,
            disk: Some(disk),
            api_port: None,
            serial_log,
            accel: Accel::Tcg,
            no_reboot: false,
        })
        .expect("QEMU starts");
        Node { qemu }
    }
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
