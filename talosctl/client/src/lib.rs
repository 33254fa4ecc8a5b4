//! Typed Talos API client: endpoint parsing, rustls (ring) mutual TLS or maintenance-mode TLS,
//! node targeting through apid's `node` metadata, and convenience calls over the generated
//! `MachineService` client.
//!
//! gRPC failures stay inspectable: [`ClientError::code`] returns the server's [`tonic::Code`].

mod client;
mod endpoint;
mod error;
mod tls;

pub use client::{
    CONNECT_TIMEOUT, Client, DataStream, FileInfoStream, MAX_MESSAGE_SIZE, NODE_METADATA_KEY,
};
pub use endpoint::{DEFAULT_PORT, Endpoint};
pub use error::ClientError;
pub use tls::{TlsMode, presented_certificate};
