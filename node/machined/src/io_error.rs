//! I/O errors that say what was being done, and to which path.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("{action} {path}")]
pub struct PathError {
    action: &'static str,
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// For `map_err`: `.map_err(io("reading", &path))?`.
pub fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PathError {
    let path = path.to_owned();
    move |source| PathError {
        action,
        path,
        source,
    }
}
