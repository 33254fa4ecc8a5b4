//! Shared by the real-registry test files.

use talos_oci::{LocalRegistry, local_registry};

/// Whether Debian's `docker-registry` is installed; without it tests skip with a message,
/// unless `TALOS_RS_E2E_REQUIRED` is set (as `cargo xtask test` does), which fails them.
pub fn registry_installed() -> bool {
    if LocalRegistry::is_installed() {
        return true;
    }
    assert!(
        std::env::var_os("TALOS_RS_E2E_REQUIRED").is_none(),
        "{} is missing: install Debian's docker-registry package (cargo xtask deps)",
        local_registry::BINARY
    );
    eprintln!(
        "skipped: {} is missing; install Debian's docker-registry package (cargo xtask deps)",
        local_registry::BINARY
    );
    false
}
