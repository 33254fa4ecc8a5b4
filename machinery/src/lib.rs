//! The contract shared by the node and every client: config model, PKI, talosconfig and roles.
//! Pure: no I/O, no async runtime.

pub mod arch;

pub use arch::Arch;
