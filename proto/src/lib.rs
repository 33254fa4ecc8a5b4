//! The Talos API: protobuf packages common and machine, wire-compatible with upstream
