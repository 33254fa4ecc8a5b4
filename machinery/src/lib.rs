//! The contract shared by the node and every client: config model, PKI, talosconfig and roles.
//! Pure: no I/O, no async runtime. Randomness comes from the OS generator and time is always
//! passed in.

pub mod arch;
mod b64;
pub mod codec;
pub mod config;
pub mod duration;
pub mod etcd_snapshot;
pub mod file_mode;
pub mod kubeconfig;
pub mod pki;
pub mod platform_network;
pub mod role;
pub mod secret;
pub mod secrets;
pub mod talosconfig;

pub use arch::Arch;
pub use b64::Base64Text;
pub use config::{Config, ConfigError, MachineType, ValidationMode};
pub use pki::{CertAndKey, PkiError};
pub use role::{Role, RoleSet};
pub use secret::Secret;
pub use secrets::SecretsBundle;
pub use talosconfig::{Context, Talosconfig};
