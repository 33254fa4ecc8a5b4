//! One module per talosctl command.

pub mod apply;
pub mod bootstrap;
pub mod config;
pub mod copy;
pub mod dmesg;
pub mod etcd;
pub mod events;
pub mod r#gen;
pub mod hostname;
pub mod image;
pub mod kubeconfig;
pub mod list;
pub mod logs;
pub mod machineconfig;
pub mod memory;
pub mod meta;
pub mod mounts;
pub mod power;
pub mod processes;
pub mod read;
pub mod reset;
pub mod service;
pub mod time;
pub mod upgrade;
pub mod validate;
pub mod version;
