//! Content digests: `sha256:<64 lowercase hex>`, the only algorithm we produce or accept.

use std::fmt;

use sha2::{Digest as _, Sha256};

/// A SHA-256 content digest as OCI writes it, always valid once constructed.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("digest {input:?}: {reason}")]
pub struct DigestError {
    pub input: String,
    pub reason: &'static str,
}

const PREFIX: &str = "sha256:";

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self::from_hasher(Sha256::new_with_prefix(bytes))
    }

    pub fn parse(input: &str) -> Result<Self, DigestError> {
        let err = |reason| DigestError {
            input: input.to_owned(),
            reason,
        };
        let hex = input.strip_prefix(PREFIX).ok_or_else(|| {
            err(if input.contains(':') {
                "only sha256 digests are supported"
            } else {
                "expected sha256:<64 hex digits>"
            })
        })?;
        if hex.len() != 64 {
            return Err(err("a sha256 digest has exactly 64 hex digits"));
        }
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(err("the hex digits must be 0-9 or lowercase a-f"));
        }
        Ok(Self(input.to_owned()))
    }

    /// The 64 hex digits, which name the blob in an image layout.
    pub fn hex(&self) -> &str {
        &self.0[PREFIX.len()..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn from_hasher(hasher: Sha256) -> Self {
        let hex = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        Self(format!("{PREFIX}{hex}"))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Digest {
    type Error = DigestError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> Self {
        d.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_bytes_as_oci_writes_them() {
        let d = Digest::of(b"");
        assert_eq!(
            d.as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::parse(d.as_str()).unwrap(), d);
        assert_eq!(d.hex().len(), 64);
    }

    #[test]
    fn refuses_what_is_not_a_sha256_digest() {
        for (input, reason) in [
            ("sha512:abcd", "only sha256"),
            ("e3b0c442", "expected sha256:"),
            ("sha256:abc", "exactly 64"),
            (&format!("sha256:{}", "A".repeat(64)), "lowercase"),
        ] {
            let e = Digest::parse(input).unwrap_err().to_string();
            assert!(e.contains(reason) && e.contains(input), "{input}: {e}");
        }
    }
}
