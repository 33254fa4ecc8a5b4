//! The only crate with unsafe code and raw syscalls, behind traits with fakes
