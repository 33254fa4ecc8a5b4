//! The floor that `cargo xtask bench` compares machined against: the same kernel booting an
//! init that mounts /proc and powers off. Its time is QEMU start to QEMU exit.

use std::path::PathBuf;

use talos_node_sys::fs::{Linux, MountFlags, MountSpec, Mounter};
use talos_node_sys::power::{Power, RebootAction};

fn main() {
    let _ = std::fs::create_dir_all("/proc");
    let _ = Linux.mount(&MountSpec {
        source: "proc".into(),
        target: PathBuf::from("/proc"),
        fstype: "proc".into(),
        flags: MountFlags::default(),
        data: String::new(),
    });
    #[cfg(target_arch = "x86_64")]
    if std::fs::read_to_string("/proc/cmdline")
        .is_ok_and(|c| c.contains("talos.qemu.isa_debug_exit=0xf4"))
    {
        let _ = talos_node_sys::power::qemu_debug_exit(0xf4, 0);
    }
    Linux.sync();
    let _ = Linux.reboot(RebootAction::PowerOff);
    loop {
        std::thread::park();
    }
}
