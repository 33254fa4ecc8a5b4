//! PID 1 of every node: mounts, modules, network, API on port 50000

fn main() {}
