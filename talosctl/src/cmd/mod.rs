//! One module per talosctl command.

pub mod apply;
pub mod config;
pub mod dmesg;
pub mod r#gen;
pub mod hostname;
pub mod image;
pub mod machineconfig;
pub mod memory;
pub mod power;
pub mod service;
pub mod upgrade;
pub mod validate;
pub mod version;
