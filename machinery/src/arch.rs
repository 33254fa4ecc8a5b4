//! CPU architectures a node image can be built for.

use std::fmt;
use std::str::FromStr;

/// A node architecture, named as upstream Talos names it (`arm64`, `amd64`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Arm64,
    Amd64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::Arm64, Arch::Amd64];

    /// The name used in the API's `VersionInfo.arch` and in image file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Arm64 => "arm64",
            Arch::Amd64 => "amd64",
        }
    }

    /// The Rust target triple the node binaries are built for.
    pub fn rust_target(self) -> &'static str {
        match self {
            Arch::Arm64 => "aarch64-unknown-linux-gnu",
            Arch::Amd64 => "x86_64-unknown-linux-gnu",
        }
    }

    /// The Debian architecture name (the same strings, kept separate on purpose).
    pub fn debian(self) -> &'static str {
        self.as_str()
    }

    /// The architecture of the machine running this code, if it is one we build for.
    pub fn host() -> Option<Arch> {
        match std::env::consts::ARCH {
            "aarch64" => Some(Arch::Arm64),
            "x86_64" => Some(Arch::Amd64),
            _ => None,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An architecture name that is not `arm64` or `amd64`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Unknown architecture {0:?}: expected arm64 or amd64")]
pub struct UnknownArchError(pub String);

impl FromStr for Arch {
    type Err = UnknownArchError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "arm64" | "aarch64" => Ok(Arch::Arm64),
            "amd64" | "x86_64" => Ok(Arch::Amd64),
            other => Err(UnknownArchError(other.to_owned())),
        }
    }
}
