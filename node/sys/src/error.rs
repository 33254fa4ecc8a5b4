use std::io;

/// A failed system call, with what was being done and to which object.
#[derive(Debug, thiserror::Error)]
#[error("{op} {target}")]
pub struct SysError {
    pub op: &'static str,
    pub target: String,
    #[source]
    pub source: io::Error,
}

impl SysError {
    pub(crate) fn last(op: &'static str, target: impl Into<String>) -> Self {
        Self::new(op, target, io::Error::last_os_error())
    }

    pub fn new(op: &'static str, target: impl Into<String>, source: io::Error) -> Self {
        Self {
            op,
            target: target.into(),
            source,
        }
    }

    /// The errno, if the kernel gave one.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

pub(crate) fn cstring(op: &'static str, s: &str) -> Result<std::ffi::CString, SysError> {
    std::ffi::CString::new(s)
        .map_err(|e| SysError::new(op, s, io::Error::new(io::ErrorKind::InvalidInput, e)))
}
