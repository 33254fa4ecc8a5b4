//! Build automation: cargo xtask deps|build|image|qemu|demo|test|bench

fn main() {}
