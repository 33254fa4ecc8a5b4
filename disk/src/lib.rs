//! The on-disk contract between the image builder and the node.
//!
//! Pure: every function works on byte buffers or `Read + Write + Seek` values the caller
//! opens, so the same code builds images on the host and edits system disks on the node.

pub mod adv;
pub mod gpt;
pub mod layout;
pub mod slots;
pub mod uimage;
