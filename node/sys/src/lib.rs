//! Every syscall the node makes that std does not wrap, behind narrow traits.
//!
//! Invariant: this is the only crate in the workspace with `unsafe` code. Each trait has a
//! Linux implementation and a recording fake (feature `testing`, or in this crate's tests), so
//! the logic that drives them is unit-tested without a kernel.
#![allow(unsafe_code)]

pub mod block;
pub mod clock;
mod error;
pub mod fs;
pub mod loopdev;
pub mod net;
pub mod netlink;
pub mod power;
pub mod process;
pub mod uevent;

#[cfg(any(test, feature = "testing"))]
pub mod fake;

pub use error::SysError;
