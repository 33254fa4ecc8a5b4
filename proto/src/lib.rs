//! The Talos API: protobuf packages `common`, `machine` and `time`, wire-compatible with upstream.
//!
//! Generated at build time from `proto/**/*.proto` by protox + tonic-prost-build; no protoc needed.
//! Each package module holds the messages plus `<service>_client` and `<service>_server` modules.

pub use prost_types;

/// `google.rpc` (only `Status`).
pub mod google {
    /// `google.rpc.Status`, used by `common.Metadata.status`.
    pub mod rpc {
        include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
    }
}

/// Package `common`: metadata, byte chunks, errors and container enums.
pub mod common {
    include!(concat!(env!("OUT_DIR"), "/common.rs"));
}

/// Package `machine`: `MachineService`.
pub mod machine {
    include!(concat!(env!("OUT_DIR"), "/machine.rs"));
}

/// Package `time`: `TimeService`.
pub mod time {
    include!(concat!(env!("OUT_DIR"), "/time.rs"));
}

/// Serialized `FileDescriptorSet` of every file above plus its imports, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/talos_descriptor.bin"));
