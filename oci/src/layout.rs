//! OCI image layouts: a directory (`oci-layout`, `index.json`, `blobs/sha256/<hex>`) or a tar
//! of one, which is how a local installer image is handed to tools (`skopeo copy oci:DIR`,
//! `crane push`).
//!
//! We write one image per layout. Reading accepts a layout whose index lists exactly one OCI
//! image manifest, and checks every blob's size and digest against its descriptor.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::image::{Blob, Image, to_json};
use crate::layer::TarTree;
use crate::manifest::{Descriptor, ImageConfig, Index, Manifest};
use crate::media_type;

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("refusing to write an image layout into {}: it is not empty", dir.display())]
    NotEmpty { dir: PathBuf },
    #[error("reading the layout tarball")]
    ReadTar(#[source] io::Error),
    #[error("writing the layout tarball")]
    WriteTar(#[source] io::Error),
    #[error("{0} is missing from the layout tarball")]
    MissingInTar(String),
    #[error("{path}: invalid JSON")]
    Json {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    #[error("{path}: the content has digest {actual}, its descriptor says {expected}")]
    Digest {
        path: String,
        expected: Digest,
        actual: Digest,
    },
}

const OCI_LAYOUT_FILE: &str = "oci-layout";
const INDEX_FILE: &str = "index.json";

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciLayout {
    image_layout_version: String,
}

/// The files of the layout, keyed by relative path; a blob used twice is stored once.
fn layout_files(image: &Image) -> BTreeMap<String, Cow<'_, [u8]>> {
    let version = OciLayout {
        image_layout_version: "1.0.0".into(),
    };
    let index = Index {
        schema_version: 2,
        media_type: Some(media_type::OCI_INDEX.into()),
        manifests: vec![Descriptor {
            media_type: media_type::OCI_MANIFEST.into(),
            digest: image.manifest_digest().clone(),
            size: image.manifest().len() as u64,
            platform: Some(image.platform()),
        }],
    };
    let mut files = BTreeMap::new();
    files.insert(OCI_LAYOUT_FILE.to_owned(), Cow::Owned(to_json(&version)));
    files.insert(INDEX_FILE.to_owned(), Cow::Owned(to_json(&index)));
    files.insert(
        blob_path(image.manifest_digest()),
        Cow::Borrowed(image.manifest()),
    );
    for blob in std::iter::once(image.config()).chain(image.layers()) {
        files.insert(blob_path(blob.digest()), Cow::Borrowed(blob.data()));
    }
    files
}

fn blob_path(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

/// Writes `image` as a layout in `dir`, which must be absent or empty.
pub fn write_layout_dir(image: &Image, dir: &Path) -> Result<(), LayoutError> {
    let read_err = |source| LayoutError::Read {
        path: dir.to_owned(),
        source,
    };
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(LayoutError::NotEmpty {
                    dir: dir.to_owned(),
                });
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(read_err(e)),
    }
    for (relative, data) in layout_files(image) {
        let path = dir.join(relative);
        let write_err = |source| LayoutError::Write {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(write_err)?;
        }
        std::fs::write(&path, &data).map_err(write_err)?;
    }
    Ok(())
}

/// Writes `image` as a tar of its layout, deterministically, and gives `out` back.
pub fn write_layout_tar<W: Write>(image: &Image, out: W) -> Result<W, LayoutError> {
    let files = layout_files(image);
    let entries: Vec<(&str, &[u8])> = files.iter().map(|(p, d)| (p.as_str(), &**d)).collect();
    TarTree::new(&entries)
        .expect("layout paths are fixed relative paths and blobs are deduplicated")
        .write(out)
        .map_err(LayoutError::WriteTar)
}

pub fn read_layout_dir(dir: &Path) -> Result<Image, LayoutError> {
    read_layout(&DirSource(dir))
}

pub fn read_layout_tar<R: Read>(input: R) -> Result<Image, LayoutError> {
    let mut files = BTreeMap::new();
    let mut archive = tar::Archive::new(input);
    for entry in archive.entries().map_err(LayoutError::ReadTar)? {
        let mut entry = entry.map_err(LayoutError::ReadTar)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(LayoutError::ReadTar)?;
        let path = path.to_string_lossy().trim_start_matches("./").to_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).map_err(LayoutError::ReadTar)?;
        files.insert(path, data);
    }
    read_layout(&TarSource(files))
}

/// Where the files of a layout come from, and how to name one in an error.
trait LayoutSource {
    fn read(&self, path: &str) -> Result<Vec<u8>, LayoutError>;
    fn name(&self, path: &str) -> String;
}

struct DirSource<'a>(&'a Path);

impl LayoutSource for DirSource<'_> {
    fn read(&self, path: &str) -> Result<Vec<u8>, LayoutError> {
        let path = self.0.join(path);
        std::fs::read(&path).map_err(|source| LayoutError::Read { path, source })
    }

    fn name(&self, path: &str) -> String {
        self.0.join(path).display().to_string()
    }
}

struct TarSource(BTreeMap<String, Vec<u8>>);

impl LayoutSource for TarSource {
    fn read(&self, path: &str) -> Result<Vec<u8>, LayoutError> {
        self.0
            .get(path)
            .cloned()
            .ok_or_else(|| LayoutError::MissingInTar(path.to_owned()))
    }

    fn name(&self, path: &str) -> String {
        format!("{path} (in the layout tarball)")
    }
}

fn read_layout(source: &dyn LayoutSource) -> Result<Image, LayoutError> {
    let invalid = |path: &str, reason: String| LayoutError::Invalid {
        path: source.name(path),
        reason,
    };
    let version: OciLayout = parse_json(source, OCI_LAYOUT_FILE)?;
    if !version.image_layout_version.starts_with("1.") {
        return Err(invalid(
            OCI_LAYOUT_FILE,
            format!(
                "imageLayoutVersion is {:?}, only 1.x is supported",
                version.image_layout_version
            ),
        ));
    }
    let index: Index = parse_json(source, INDEX_FILE)?;
    let [descriptor] = index.manifests.as_slice() else {
        return Err(invalid(
            INDEX_FILE,
            format!(
                "lists {} manifests; a layout we read holds exactly one image",
                index.manifests.len()
            ),
        ));
    };
    if descriptor.media_type != media_type::OCI_MANIFEST {
        return Err(invalid(
            INDEX_FILE,
            format!(
                "the manifest's media type is {:?}, expected {}",
                descriptor.media_type,
                media_type::OCI_MANIFEST
            ),
        ));
    }
    let manifest_bytes = read_blob(source, descriptor)?;
    let manifest_path = blob_path(&descriptor.digest);
    let manifest: Manifest =
        serde_json::from_slice(&manifest_bytes).map_err(|e| LayoutError::Json {
            path: source.name(&manifest_path),
            source: e,
        })?;
    let config = Blob::new(
        &manifest.config.media_type,
        read_blob(source, &manifest.config)?,
    );
    let image_config: ImageConfig =
        serde_json::from_slice(config.data()).map_err(|e| LayoutError::Json {
            path: source.name(&blob_path(config.digest())),
            source: e,
        })?;
    if image_config.os != "linux" {
        return Err(invalid(
            &blob_path(config.digest()),
            format!("the image is for {:?}, not linux", image_config.os),
        ));
    }
    let layers = manifest
        .layers
        .iter()
        .map(|d| Ok(Blob::new(&d.media_type, read_blob(source, d)?)))
        .collect::<Result<Vec<_>, LayoutError>>()?;
    Ok(Image::from_checked_parts(
        manifest_bytes,
        config,
        layers,
        image_config.architecture,
    ))
}

fn parse_json<T: serde::de::DeserializeOwned>(
    source: &dyn LayoutSource,
    path: &str,
) -> Result<T, LayoutError> {
    serde_json::from_slice(&source.read(path)?).map_err(|e| LayoutError::Json {
        path: source.name(path),
        source: e,
    })
}

fn read_blob(source: &dyn LayoutSource, descriptor: &Descriptor) -> Result<Vec<u8>, LayoutError> {
    let path = blob_path(&descriptor.digest);
    let data = source.read(&path)?;
    let actual = Digest::of(&data);
    if actual != descriptor.digest {
        return Err(LayoutError::Digest {
            path: source.name(&path),
            expected: descriptor.digest.clone(),
            actual,
        });
    }
    if data.len() as u64 != descriptor.size {
        return Err(LayoutError::Invalid {
            path: source.name(&path),
            reason: format!(
                "{} bytes, its descriptor says {}",
                data.len(),
                descriptor.size
            ),
        });
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::installer_image;

    fn sample() -> Image {
        installer_image("arm64", b"kernel".to_vec(), b"initramfs".to_vec()).unwrap()
    }

    fn files_under(dir: &Path) -> Vec<String> {
        let mut found = Vec::new();
        let mut stack = vec![dir.to_owned()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let relative = path.strip_prefix(dir).unwrap();
                    found.push(relative.to_string_lossy().into_owned());
                }
            }
        }
        found.sort();
        found
    }

    #[test]
    fn a_layout_directory_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("installer");
        let image = sample();
        write_layout_dir(&image, &dir).unwrap();

        let mut want = vec![
            "index.json".to_owned(),
            "oci-layout".to_owned(),
            blob_path(image.manifest_digest()),
            blob_path(image.config().digest()),
            blob_path(image.layers()[0].digest()),
        ];
        want.sort();
        assert_eq!(files_under(&dir), want);
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        assert_eq!(index["mediaType"], media_type::OCI_INDEX);
        let entry = &index["manifests"][0];
        assert_eq!(entry["digest"], image.manifest_digest().as_str());
        assert_eq!(entry["platform"]["architecture"], "arm64");
        assert_eq!(entry["platform"]["os"], "linux");
        assert_eq!(
            std::fs::read_to_string(dir.join("oci-layout")).unwrap(),
            r#"{"imageLayoutVersion":"1.0.0"}"#
        );

        let read = read_layout_dir(&dir).unwrap();
        assert_eq!(read, image);
        assert_eq!(read.arch(), "arm64");
        assert_eq!(read.files(1 << 20).unwrap(), image.files(1 << 20).unwrap());

        let e = write_layout_dir(&image, &dir).unwrap_err();
        assert!(e.to_string().contains("it is not empty"), "{e}");
    }

    #[test]
    fn a_layout_tarball_round_trips_and_is_reproducible() {
        let image = sample();
        let tar = write_layout_tar(&image, Vec::new()).unwrap();
        assert_eq!(tar, write_layout_tar(&sample(), Vec::new()).unwrap());
        let read = read_layout_tar(tar.as_slice()).unwrap();
        assert_eq!(read, image);

        // The tarball holds the same tree as the directory.
        let tmp = tempfile::tempdir().unwrap();
        tar::Archive::new(tar.as_slice())
            .unpack(tmp.path())
            .unwrap();
        assert_eq!(read_layout_dir(tmp.path()).unwrap(), image);
    }

    #[test]
    fn a_tampered_or_missing_blob_is_detected() {
        let image = sample();
        let tmp = tempfile::tempdir().unwrap();
        write_layout_dir(&image, tmp.path()).unwrap();
        let layer = tmp.path().join(blob_path(image.layers()[0].digest()));
        let mut data = std::fs::read(&layer).unwrap();
        let last = data.len() - 1;
        data[last] ^= 1;
        std::fs::write(&layer, &data).unwrap();
        let e = read_layout_dir(tmp.path()).unwrap_err().to_string();
        assert!(
            e.contains(&layer.display().to_string())
                && e.contains(&format!(
                    "its descriptor says {}",
                    image.layers()[0].digest()
                )),
            "{e}"
        );
        std::fs::remove_file(&layer).unwrap();
        let e = read_layout_dir(tmp.path()).unwrap_err();
        assert!(
            matches!(&e, LayoutError::Read { path, .. } if *path == layer),
            "{e}"
        );

        let e = read_layout_tar(&b""[..]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "oci-layout is missing from the layout tarball"
        );
    }

    #[test]
    fn refuses_layouts_with_other_than_one_image() {
        let tmp = tempfile::tempdir().unwrap();
        write_layout_dir(&sample(), tmp.path()).unwrap();
        std::fs::write(
            tmp.path().join(INDEX_FILE),
            r#"{"schemaVersion":2,"manifests":[]}"#,
        )
        .unwrap();
        let e = read_layout_dir(tmp.path()).unwrap_err().to_string();
        assert!(e.contains("lists 0 manifests"), "{e}");
    }
}
