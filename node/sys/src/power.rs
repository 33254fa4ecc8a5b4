//! sync(2), reboot(2), and QEMU's debug-exit port on x86.

use crate::error::SysError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebootAction {
    Restart,
    PowerOff,
}

pub trait Power {
    /// Flushes every filesystem's dirty data.
    fn sync(&self);
    /// Reboots or powers off. Only returns on failure.
    fn reboot(&self, action: RebootAction) -> SysError;
}

impl Power for crate::fs::Linux {
    fn sync(&self) {
        // SAFETY: sync(2) takes no arguments and cannot fail.
        unsafe { libc::sync() }
    }

    fn reboot(&self, action: RebootAction) -> SysError {
        let cmd = match action {
            RebootAction::Restart => libc::RB_AUTOBOOT,
            RebootAction::PowerOff => libc::RB_POWER_OFF,
        };
        // SAFETY: reboot(2) with a valid command; on success it does not return.
        unsafe { libc::reboot(cmd) };
        SysError::last("reboot", format!("{action:?}"))
    }
}

/// Writes `value` to QEMU's isa-debug-exit device at `port`, which ends the QEMU process.
/// Only meaningful inside QEMU started with `-device isa-debug-exit`.
#[cfg(target_arch = "x86_64")]
pub fn qemu_debug_exit(port: u16, value: u8) -> SysError {
    // SAFETY: ioperm grants this process access to one I/O port; it has no memory effects.
    if unsafe { libc::ioperm(libc::c_ulong::from(port), 1, 1) } != 0 {
        return SysError::last("ioperm", format!("{port:#x}"));
    }
    // SAFETY: access to `port` was granted above; an `out` to the debug-exit port makes QEMU
    // exit and touches no memory of ours.
    unsafe {
        std::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags));
    }
    SysError::new(
        "qemu debug exit",
        format!("{port:#x}"),
        std::io::Error::other("QEMU did not exit: no isa-debug-exit device at this port"),
    )
}
