//! The multi-document kinds (all `apiVersion: v1alpha1`): every kind upstream Talos registers
//! has a schema here, except the few typed in [`Document`](super::Document), plus our own
//! `BoardConfig`.
//!
//! A schema is a serde type with `deny_unknown_fields` throughout. A document of a schema kind
//! is checked key by key on decode, keeps its source text (so it writes back as it came), and
//! is read typed with [`Config::document`](super::Config::document).

mod k8s;
mod network;
mod system;

use serde::de::DeserializeOwned;

use super::documents::{BoardConfig, HostnameConfig, ResolverConfig, TimeSyncConfig};
use crate::codec::{CodecError, YamlDocument};

pub use k8s::*;
pub use network::*;
pub use system::*;

/// A multi-document kind with a schema.
pub trait KindDocument: DeserializeOwned {
    const KIND: &'static str;
}

/// How a kind's documents are checked on decode.
pub(super) struct Schema {
    kind: &'static str,
    check: fn(&YamlDocument<'_>) -> Result<(), CodecError>,
}

/// The schema of `T`'s kind.
pub(super) const fn schema<T: KindDocument>() -> Schema {
    Schema {
        kind: T::KIND,
        check: decode_and_drop::<T>,
    }
}

fn decode_and_drop<T: KindDocument>(document: &YamlDocument<'_>) -> Result<(), CodecError> {
    document.decode::<T>().map(drop)
}

/// Kinds decoded into [`Document`](super::Document) variants instead of kept as text.
const TYPED_KINDS: &[&str] = &[
    HostnameConfig::KIND,
    TimeSyncConfig::KIND,
    ResolverConfig::KIND,
    BoardConfig::KIND,
];

fn schemas() -> impl Iterator<Item = &'static Schema> {
    [k8s::SCHEMAS, network::SCHEMAS, system::SCHEMAS]
        .into_iter()
        .flatten()
}

pub(super) fn is_known(kind: &str) -> bool {
    TYPED_KINDS.contains(&kind) || schemas().any(|schema| schema.kind == kind)
}

/// Checks `document` against the schema of its `kind`.
pub(super) fn check(kind: &str, document: &YamlDocument<'_>) -> Result<(), CodecError> {
    schemas()
        .find(|schema| schema.kind == kind)
        .map_or(Ok(()), |schema| (schema.check)(document))
}
