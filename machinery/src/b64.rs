//! Base64 (standard alphabet, padded) text fields, as upstream writes PEM blobs and secrets.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub(crate) fn encode(text: &str) -> String {
    STANDARD.encode(text.as_bytes())
}

/// Decodes base64 that must hold UTF-8 text.
pub(crate) fn decode_text(encoded: &str) -> Result<String, String> {
    let bytes = STANDARD
        .decode(encoded.trim())
        .map_err(|e| format!("invalid base64: {e}"))?;
    String::from_utf8(bytes).map_err(|_| "base64 content is not UTF-8 text".to_owned())
}

/// Text (usually PEM) stored in YAML as base64. Holds the decoded text; decoding happens at
/// parse time so a bad value is reported with its YAML path.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Base64Text(pub String);

impl Base64Text {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Base64Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Base64Text({} bytes)", self.0.len())
    }
}

impl Serialize for Base64Text {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Base64Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let encoded = String::deserialize(deserializer)?;
        decode_text(&encoded)
            .map(Base64Text)
            .map_err(serde::de::Error::custom)
    }
}
