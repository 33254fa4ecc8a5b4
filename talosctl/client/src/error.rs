//! The one error type of the client.

use std::time::Duration;

use talos_machinery::pki::PkiError;
use talos_machinery::talosconfig::TalosconfigError;

/// Everything that can go wrong between a talosconfig and an RPC answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("Invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        endpoint: String,
        reason: &'static str,
    },
    #[error("Invalid node {node:?}: not usable as gRPC metadata")]
    InvalidNode { node: String },
    #[error(transparent)]
    Context(TalosconfigError),
    #[error("Context {context:?} has no endpoints")]
    NoEndpoints { context: String },
    #[error("Reading {what} of context {context:?}")]
    Talosconfig {
        what: &'static str,
        context: String,
        #[source]
        source: TalosconfigError,
    },
    #[error("Reading the {what} PEM")]
    Pem {
        what: &'static str,
        #[source]
        source: PkiError,
    },
    #[error("The {what} PEM holds no certificate")]
    NoCertificate { what: &'static str },
    #[error("Unusable {what}")]
    BadCertificate {
        what: &'static str,
        #[source]
        source: rustls::Error,
    },
    #[error("Building the TLS configuration")]
    TlsConfig(#[source] rustls::Error),
    #[error(
        "The server certificate of {endpoint} is not valid for {host}; it names {presented:?} \
         (use an endpoint the node certificate covers)"
    )]
    ServerNameMismatch {
        endpoint: String,
        host: String,
        presented: Vec<String>,
    },
    #[error("TLS handshake with {endpoint} failed")]
    Tls {
        endpoint: String,
        #[source]
        source: rustls::Error,
    },
    /// TCP connect, TLS transport or HTTP/2 setup failed; `reason` is the root cause.
    #[error("Connecting to {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
    /// The server answered with a gRPC error; [`ClientError::code`] exposes its code.
    #[error("{method}: rpc error: code = {code:?} desc = {message}", code = status.code(), message = status.message())]
    Rpc {
        method: &'static str,
        status: tonic::Status,
    },
    #[error("{method} answered with no messages")]
    EmptyResponse { method: &'static str },
    #[error("No gRPC answer from {endpoint} within {waited:?}")]
    Timeout {
        endpoint: String,
        waited: Duration,
        #[source]
        last: Option<Box<ClientError>>,
    },
}

impl ClientError {
    /// The gRPC status code, when the server answered with an error.
    pub fn code(&self) -> Option<tonic::Code> {
        self.status().map(tonic::Status::code)
    }

    /// The gRPC status, when the server answered with an error.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            ClientError::Rpc { status, .. } => Some(status),
            _ => None,
        }
    }

    /// Whether retrying later may succeed: the server was not (yet) reachable or answering.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Connect { .. } | ClientError::Timeout { .. } => true,
            ClientError::Rpc { status, .. } => matches!(
                status.code(),
                tonic::Code::Unavailable
                    | tonic::Code::Unknown
                    | tonic::Code::Cancelled
                    | tonic::Code::DeadlineExceeded
            ),
            _ => false,
        }
    }
}
