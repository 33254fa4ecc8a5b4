//! Reproducible image builder: initramfs (cpio newc + zstd) and raw GPT disk images.
//!
//! Everything here is a pure function of its inputs: no timestamps, owners or host
//! paths leak into the output, so two builds from the same inputs are byte-identical.

pub mod cpio;
pub mod disk_image;
pub mod flash;
pub mod initramfs;

pub use cpio::{CpioBuilder, CpioError};
pub use initramfs::{ImageError, Initramfs, InitramfsSpec, Manifest, ModulesSpec, build};
