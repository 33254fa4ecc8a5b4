//! Orderly power transitions: flush, then reboot(2). PID 1 never just exits.

use std::time::Duration;

use talos_node_sys::power::{Power, RebootAction};

/// Syncs and reboots or powers off. Only returns if every way of doing so failed.
pub fn power_down(system: &dyn Power, action: RebootAction, isa_debug_exit: Option<u16>) {
    tracing::info!(?action, "syncing filesystems");
    system.sync();
    #[cfg(target_arch = "x86_64")]
    if let (RebootAction::PowerOff, Some(port)) = (action, isa_debug_exit) {
        tracing::info!(port, "powering off through QEMU's isa-debug-exit port");
        let e = talos_node_sys::power::qemu_debug_exit(port, 0);
        tracing::error!("{e}");
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = isa_debug_exit;
    let e = system.reboot(action);
    tracing::error!("{e}");
}

/// How long a fatal error stays on the console before the node reboots.
pub const FATAL_REBOOT_DELAY: Duration = Duration::from_secs(10);

/// Says on the console why PID 1 cannot go on, waits so a human can read it, then reboots.
/// Returns only if the reboot failed.
pub fn reboot_after_fatal(system: &dyn Power, what: &str, delay: Duration) {
    eprintln!("machined: fatal: {what}; rebooting in {delay:?}");
    tracing::error!("fatal: {what}; rebooting in {delay:?}");
    std::thread::sleep(delay);
    power_down(system, RebootAction::Restart, None);
}

/// [`reboot_after_fatal`], and never return: PID 1 must not exit.
pub fn fatal(system: &dyn Power, what: &str) -> ! {
    reboot_after_fatal(system, what, FATAL_REBOOT_DELAY);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use talos_node_sys::fake::{Call, FakeSystem};

    #[test]
    fn syncs_before_rebooting() {
        let fake = FakeSystem::default();
        power_down(&fake, RebootAction::PowerOff, None);
        assert_eq!(
            fake.calls(),
            vec![Call::Sync, Call::Reboot(RebootAction::PowerOff)]
        );
    }
}
