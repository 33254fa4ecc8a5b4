//! Upgrades from an installer image: pull its kernel and initramfs, write them into the
//! other boot slot, and arm a one-shot trial of it.

use std::sync::Arc;

use talos_oci::{Reference, Registry};

use crate::boot::{BootError, BootSlots};

/// Kernel plus initramfs; anything larger is not an installer we can boot.
const MAX_PAYLOAD_BYTES: u64 = 512 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("{0}")]
    Reference(String),
    #[error(
        "{0} (the node resolves no DNS names yet: name the registry by IP address and port, e.g. 10.0.2.2:5000/talos/installer:v2)"
    )]
    Registry(String),
    #[error("pulling the installer: {0}")]
    Pull(String),
    #[error("writing the new slot: {0}")]
    Write(#[from] BootError),
}

fn arch() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    }
}

/// Refuses references the node cannot pull, before anything starts.
pub fn check(image: &str) -> Result<(), UpgradeError> {
    let reference = Reference::parse(image).map_err(|e| UpgradeError::Reference(e.to_string()))?;
    Registry::for_reference(&reference).map_err(|e| UpgradeError::Registry(e.to_string()))?;
    Ok(())
}

/// Pulls `image` and stages it; returns the version label of the new slot.
pub async fn stage(slots: Arc<BootSlots>, image: &str) -> Result<String, UpgradeError> {
    let reference = Reference::parse(image).map_err(|e| UpgradeError::Reference(e.to_string()))?;
    let registry =
        Registry::for_reference(&reference).map_err(|e| UpgradeError::Registry(e.to_string()))?;
    let kernel_path = talos_oci::installer_kernel_path(arch());
    let initramfs_path = talos_oci::installer_initramfs_path(arch());
    tracing::info!(%reference, "pulling the installer");
    let mut files = registry
        .pull_files(
            &reference,
            arch(),
            &[&kernel_path, &initramfs_path],
            MAX_PAYLOAD_BYTES,
        )
        .await
        .map_err(|e| UpgradeError::Pull(e.to_string()))?;
    let kernel = files
        .remove(kernel_path.trim_start_matches('/'))
        .unwrap_or_default();
    let initramfs = files
        .remove(initramfs_path.trim_start_matches('/'))
        .unwrap_or_default();
    // A label for the boot entry: the tag, else the start of the digest.
    let version = match (reference.tag(), reference.digest()) {
        (Some(tag), _) => tag.to_owned(),
        (None, Some(digest)) => format!("sha256:{}", &digest.hex()[..12]),
        (None, None) => "latest".to_owned(),
    };
    let label = version.clone();
    tokio::task::spawn_blocking(move || slots.stage_upgrade(&kernel, &initramfs, &label))
        .await
        .map_err(|e| UpgradeError::Pull(format!("the writer stopped: {e}")))??;
    Ok(version)
}
