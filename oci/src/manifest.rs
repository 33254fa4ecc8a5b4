//! The JSON documents of an image: descriptors, manifests, indexes and the image config.
//!
//! Field order is fixed by the struct order, so what we serialize is deterministic; unknown
//! fields of what we read are ignored.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::media_type;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    pub fn is_linux(&self, arch: &str) -> bool {
        self.os == "linux" && self.architecture == arch
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// The parts of an image config we write and check: its platform and layer diff IDs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ImageConfig {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<RootFs>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

/// A manifest or an index, told apart by its `mediaType`, else by the `Content-Type` it came
/// with, else by whether it lists `manifests`.
#[derive(Debug)]
pub(crate) enum ManifestOrIndex {
    Manifest(Manifest),
    Index(Index),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    schema_version: Option<u32>,
    media_type: Option<String>,
    manifests: Option<serde::de::IgnoredAny>,
}

impl ManifestOrIndex {
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Self, String> {
        let invalid = |e: serde_json::Error| format!("invalid manifest JSON: {e}");
        let probe: Probe = serde_json::from_slice(bytes).map_err(invalid)?;
        if probe.schema_version != Some(2) {
            return Err(format!(
                "schemaVersion is {:?}, only 2 is supported",
                probe.schema_version
            ));
        }
        let content_type = content_type.map(|c| c.split(';').next().unwrap_or(c).trim());
        let is_index = match probe.media_type.as_deref().or(content_type) {
            Some(media_type::OCI_INDEX | media_type::DOCKER_MANIFEST_LIST) => true,
            Some(media_type::OCI_MANIFEST | media_type::DOCKER_MANIFEST) => false,
            Some(other) if probe.media_type.is_some() => {
                return Err(format!("unsupported manifest media type {other:?}"));
            }
            _ => probe.manifests.is_some(),
        };
        if is_index {
            serde_json::from_slice(bytes)
                .map(Self::Index)
                .map_err(invalid)
        } else {
            serde_json::from_slice(bytes)
                .map(Self::Manifest)
                .map_err(invalid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn manifest_json(media_type: Option<&str>) -> String {
        let media_type = media_type.map_or(String::new(), |m| format!(r#""mediaType":"{m}","#));
        format!(
            r#"{{"schemaVersion":2,{media_type}"config":{{"mediaType":"c","digest":"{DIGEST}","size":0}},"layers":[]}}"#
        )
    }

    #[test]
    fn tells_manifests_from_indexes() {
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"m","digest":"{DIGEST}","size":1,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}}]}}"#
        );
        let ManifestOrIndex::Index(i) = ManifestOrIndex::parse(index.as_bytes(), None).unwrap()
        else {
            panic!("an index with no mediaType is still an index");
        };
        let platform = i.manifests[0].platform.as_ref().unwrap();
        assert!(platform.is_linux("arm64") && !platform.is_linux("amd64"));
        assert_eq!(platform.to_string(), "linux/arm64/v8");
        for (json, content_type) in [
            (manifest_json(Some(media_type::DOCKER_MANIFEST)), None),
            (
                manifest_json(None),
                Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
            ),
            (manifest_json(None), None),
        ] {
            assert!(matches!(
                ManifestOrIndex::parse(json.as_bytes(), content_type),
                Ok(ManifestOrIndex::Manifest(_))
            ));
        }
    }

    #[test]
    fn refuses_other_schemas_and_media_types() {
        let e = ManifestOrIndex::parse(br#"{"schemaVersion":1,"fsLayers":[]}"#, None).unwrap_err();
        assert!(e.contains("only 2"), "{e}");
        let json = manifest_json(Some("application/vnd.docker.distribution.manifest.v1+json"));
        let e = ManifestOrIndex::parse(json.as_bytes(), None).unwrap_err();
        assert!(e.contains("unsupported manifest media type"), "{e}");
        let e = ManifestOrIndex::parse(b"<html>", None).unwrap_err();
        assert!(e.contains("invalid manifest JSON"), "{e}");
    }
}
