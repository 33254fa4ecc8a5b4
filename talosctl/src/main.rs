//! The talosctl command line

fn main() {}
