//! OCI installer images: build them, store them as OCI image layouts, push them to a registry
//! and pull files back out of them.
//!
//! An installer image has one layer holding `usr/install/<arch>/vmlinuz` and
//! `usr/install/<arch>/initramfs.zst`, as upstream Talos's does; `talosctl upgrade --image REF`
//! names one. Invariants: building is a pure function of its inputs (same files, same bytes,
//! same digest); every pulled manifest and blob is checked against its digest; the registry
//! client speaks HTTPS (plain HTTP only for IP-literal registries without TLS settings, or
//! `http://` mirror endpoints) and sends [`Credentials`] to no host but the registry's and its
//! token service's. No async runtime is started here: [`Registry`] runs on the caller's tokio
//! runtime.

mod auth;
pub mod digest;
pub mod image;
mod layer;
pub mod layout;
pub mod local_registry;
mod manifest;
pub mod media_type;
pub mod reference;
pub mod registry;
#[cfg(feature = "serve")]
pub mod serve;
mod transport;

pub use auth::Credentials;
pub use digest::{Digest, DigestError};
pub use image::{
    ARCHITECTURES, Blob, BuildError, Image, ImageBuilder, installer_image,
    installer_initramfs_path, installer_kernel_path,
};
pub use layer::LayerError;
pub use layout::{
    LayoutError, read_layout_dir, read_layout_tar, write_layout_dir, write_layout_tar,
};
pub use local_registry::{
    LocalRegistry, PushLayoutError, RegistryClientAuth, RegistryHtpasswd, RegistryTlsFiles,
};
pub use reference::{Reference, ReferenceError};
pub use registry::{MAX_MANIFEST_BYTES, Pushed, Registry, RegistryError, RegistryOptions};
pub use transport::{
    BoxFuture, ClientIdentity, RegistryTls, Resolve, SystemResolver, TlsConfigError, client_config,
};
