//! Images in memory, and the pure builder that makes them.
//!
//! [`ImageBuilder`] turns an architecture and a list of files into one tar+gzip layer, an
//! image config and a manifest. It reads no clock and no host state, so the same inputs give
//! the same bytes, and therefore the same manifest digest.

use std::collections::BTreeMap;

use crate::digest::Digest;
use crate::layer::{LayerError, LayerFormat, Overlay, TarTree, gzip};
use crate::manifest::{Descriptor, ImageConfig, Manifest, Platform, RootFs};
use crate::media_type;

/// Architectures an installer image can be for, in OCI's (Go's) spelling.
pub const ARCHITECTURES: [&str; 2] = ["amd64", "arm64"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error(
        "architecture {0:?} is not one of amd64, arm64 (OCI uses Go's names: x86_64 is amd64, aarch64 is arm64)"
    )]
    Arch(String),
    #[error("layer path {path:?}: {reason}")]
    Path { path: String, reason: &'static str },
    #[error("layer path {0:?} is given twice")]
    Duplicate(String),
    #[error("layer path {file:?} is a file, but {child:?} needs it to be a directory")]
    FileIsParent { file: String, child: String },
}

/// Content addressed by its digest, with the media type its descriptor gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    media_type: String,
    digest: Digest,
    data: Vec<u8>,
}

impl Blob {
    pub(crate) fn new(media_type: &str, data: Vec<u8>) -> Self {
        Self {
            media_type: media_type.to_owned(),
            digest: Digest::of(&data),
            data,
        }
    }

    pub fn media_type(&self) -> &str {
        &self.media_type
    }

    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    pub fn data(&self) -> &[u8] {
        &self.data
    }

    pub(crate) fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.data.len() as u64,
            platform: None,
        }
    }
}

/// A single-platform image whose manifest names exactly its config and layers, by digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    manifest: Vec<u8>,
    manifest_digest: Digest,
    config: Blob,
    layers: Vec<Blob>,
    arch: String,
}

impl Image {
    /// Callers have checked that `manifest` names `config` and `layers` and that `config`
    /// says `arch`.
    pub(crate) fn from_checked_parts(
        manifest: Vec<u8>,
        config: Blob,
        layers: Vec<Blob>,
        arch: String,
    ) -> Self {
        Self {
            manifest_digest: Digest::of(&manifest),
            manifest,
            config,
            layers,
            arch,
        }
    }

    /// The manifest's JSON, exactly as pushed or stored.
    pub fn manifest(&self) -> &[u8] {
        &self.manifest
    }

    pub fn manifest_digest(&self) -> &Digest {
        &self.manifest_digest
    }

    pub fn config(&self) -> &Blob {
        &self.config
    }

    pub fn layers(&self) -> &[Blob] {
        &self.layers
    }

    /// The config's `architecture`, e.g. `arm64`.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    pub(crate) fn platform(&self) -> Platform {
        Platform {
            architecture: self.arch.clone(),
            os: "linux".into(),
            variant: None,
        }
    }

    /// The regular files of all layers, applied in order (later layers win, whiteouts
    /// delete), keyed by relative path. `max_bytes` bounds the unpacked size.
    pub fn files(&self, max_bytes: u64) -> Result<BTreeMap<String, Vec<u8>>, LayerError> {
        let mut overlay = Overlay::all(max_bytes);
        for layer in &self.layers {
            overlay.apply(&layer.data, LayerFormat::of(&layer.media_type)?)?;
        }
        Ok(overlay.into_files())
    }
}

/// Builds a single-layer `linux/<arch>` image from files, deterministically.
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    arch: String,
    files: Vec<(String, Vec<u8>)>,
}

impl ImageBuilder {
    /// `arch` is `amd64` or `arm64` (checked by [`build`](Self::build)).
    pub fn new(arch: &str) -> Self {
        Self {
            arch: arch.to_owned(),
            files: Vec::new(),
        }
    }

    /// Adds a file at `path` (relative, `/`-separated); parent directories are implied.
    pub fn file(mut self, path: &str, data: Vec<u8>) -> Self {
        self.files.push((path.to_owned(), data));
        self
    }

    pub fn build(self) -> Result<Image, BuildError> {
        if !ARCHITECTURES.contains(&self.arch.as_str()) {
            return Err(BuildError::Arch(self.arch));
        }
        let files: Vec<(&str, &[u8])> = self
            .files
            .iter()
            .map(|(path, data)| (path.as_str(), data.as_slice()))
            .collect();
        let tar = TarTree::new(&files)?
            .write(Vec::new())
            .expect("writing a tar into memory cannot fail");
        let diff_id = Digest::of(&tar);
        let layer = Blob::new(media_type::OCI_LAYER_TAR_GZIP, gzip(&tar));
        let config = ImageConfig {
            architecture: self.arch.clone(),
            os: "linux".into(),
            rootfs: Some(RootFs {
                kind: "layers".into(),
                diff_ids: vec![diff_id],
            }),
        };
        let config = Blob::new(media_type::OCI_CONFIG, to_json(&config));
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(media_type::OCI_MANIFEST.into()),
            config: config.descriptor(),
            layers: vec![layer.descriptor()],
        };
        Ok(Image::from_checked_parts(
            to_json(&manifest),
            config,
            vec![layer],
            self.arch,
        ))
    }
}

/// Where an installer image keeps the kernel for `arch`.
pub fn installer_kernel_path(arch: &str) -> String {
    format!("usr/install/{arch}/vmlinuz")
}

/// Where an installer image keeps the initramfs for `arch`.
pub fn installer_initramfs_path(arch: &str) -> String {
    format!("usr/install/{arch}/initramfs.zst")
}

/// The installer image for `arch`: the kernel and initramfs at upstream Talos's paths.
pub fn installer_image(
    arch: &str,
    kernel: Vec<u8>,
    initramfs: Vec<u8>,
) -> Result<Image, BuildError> {
    ImageBuilder::new(arch)
        .file(&installer_kernel_path(arch), kernel)
        .file(&installer_initramfs_path(arch), initramfs)
        .build()
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("our manifest types always serialize")
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn sample(arch: &str) -> Image {
        installer_image(arch, b"kernel".to_vec(), b"initramfs".to_vec()).unwrap()
    }

    #[test]
    fn the_same_inputs_give_the_same_bytes() {
        let a = sample("arm64");
        let b = ImageBuilder::new("arm64")
            .file("usr/install/arm64/initramfs.zst", b"initramfs".to_vec())
            .file("usr/install/arm64/vmlinuz", b"kernel".to_vec())
            .build()
            .unwrap();
        assert_eq!(a, b, "file order does not matter");
        assert_eq!(a.manifest_digest(), b.manifest_digest());
        let other = installer_image("arm64", b"kernel2".to_vec(), b"initramfs".to_vec()).unwrap();
        assert_ne!(a.manifest_digest(), other.manifest_digest());
        assert_ne!(a.manifest_digest(), sample("amd64").manifest_digest());
    }

    #[test]
    fn the_manifest_names_its_config_and_layer_by_digest() {
        let image = sample("amd64");
        let manifest: serde_json::Value = serde_json::from_slice(image.manifest()).unwrap();
        assert_eq!(manifest["schemaVersion"], 2);
        assert_eq!(manifest["mediaType"], media_type::OCI_MANIFEST);
        assert_eq!(manifest["config"]["mediaType"], media_type::OCI_CONFIG);
        assert_eq!(
            manifest["config"]["digest"],
            image.config().digest().as_str()
        );
        assert_eq!(manifest["config"]["size"], image.config().data().len());
        let layer = &image.layers()[0];
        assert_eq!(
            manifest["layers"][0]["mediaType"],
            media_type::OCI_LAYER_TAR_GZIP
        );
        assert_eq!(manifest["layers"][0]["digest"], layer.digest().as_str());
        assert_eq!(manifest["layers"][0]["size"], layer.data().len());
        assert_eq!(layer.digest(), &Digest::of(layer.data()));
        assert_eq!(image.manifest_digest(), &Digest::of(image.manifest()));

        let config: serde_json::Value = serde_json::from_slice(image.config().data()).unwrap();
        assert_eq!(config["architecture"], "amd64");
        assert_eq!(config["os"], "linux");
        assert!(config.get("created").is_none(), "no timestamps");
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(layer.data())
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(config["rootfs"]["type"], "layers");
        assert_eq!(config["rootfs"]["diff_ids"][0], Digest::of(&tar).as_str());
    }

    #[test]
    fn the_layer_is_a_deterministic_tar_in_deterministic_gzip() {
        let image = sample("arm64");
        let gz = image.layers()[0].data();
        assert_eq!(
            &gz[..4],
            &[0x1f, 0x8b, 8, 0],
            "gzip with no name or other flags"
        );
        assert_eq!(&gz[4..8], &[0, 0, 0, 0], "gzip mtime is 0");
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz));
        let entries: Vec<(String, bool, u32, u64, u64, u64, String)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let h = e.header().clone();
                let mut data = String::new();
                e.read_to_string(&mut data).unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.entry_type().is_dir(),
                    h.mode().unwrap(),
                    h.uid().unwrap() + h.gid().unwrap(),
                    h.mtime().unwrap(),
                    h.size().unwrap(),
                    data,
                )
            })
            .collect();
        let dir = |p: &str| (p.to_owned(), true, 0o755, 0, 0, 0, String::new());
        let file = |p: &str, d: &str| (p.to_owned(), false, 0o644, 0, 0, d.len() as u64, d.into());
        assert_eq!(
            entries,
            [
                dir("usr/"),
                dir("usr/install/"),
                dir("usr/install/arm64/"),
                file("usr/install/arm64/initramfs.zst", "initramfs"),
                file("usr/install/arm64/vmlinuz", "kernel"),
            ]
        );
    }

    #[test]
    fn files_come_back_out_of_the_image() {
        let files = sample("arm64").files(1 << 20).unwrap();
        assert_eq!(
            files.into_iter().collect::<Vec<_>>(),
            [
                (installer_initramfs_path("arm64"), b"initramfs".to_vec()),
                (installer_kernel_path("arm64"), b"kernel".to_vec()),
            ]
        );
        let e = sample("arm64").files(100).unwrap_err();
        assert!(matches!(e, LayerError::TooLarge { limit: 100 }), "{e}");
    }

    #[test]
    fn refuses_bad_paths_and_architectures() {
        let build = |arch: &str, paths: &[&str]| {
            paths
                .iter()
                .fold(ImageBuilder::new(arch), |b, p| b.file(p, b"x".to_vec()))
                .build()
                .unwrap_err()
                .to_string()
        };
        for (arch, paths, message) in [
            (
                "x86_64",
                &["a"][..],
                "\"x86_64\" is not one of amd64, arm64",
            ),
            ("aarch64", &["a"], "aarch64 is arm64"),
            ("arm64", &["/usr/a"], "\"/usr/a\": must be relative"),
            ("arm64", &["usr//a"], "empty component"),
            ("arm64", &["usr/a/"], "empty component"),
            ("arm64", &[""], "empty component"),
            ("arm64", &["usr/../a"], "'..' component"),
            ("arm64", &["./a"], "'.' or '..' component"),
            ("arm64", &["usr/.wh.a"], "'.wh.' name"),
            ("arm64", &["a\0b"], "NUL"),
            ("arm64", &["a", "a"], "\"a\" is given twice"),
            (
                "arm64",
                &["a", "a/b"],
                "\"a\" is a file, but \"a/b\" needs it",
            ),
            (
                "arm64",
                &["a/b", "a"],
                "\"a\" is a file, but \"a/b\" needs it",
            ),
        ] {
            let e = build(arch, paths);
            assert!(e.contains(message), "{arch} {paths:?}: {e}");
        }
    }
}
