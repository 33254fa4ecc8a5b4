//! Secret text (keys, tokens, passwords) that `Debug` never prints.

use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Serialize};

/// A secret string. Serializes as the plain string; `Debug` prints `<redacted>`, and there is
/// deliberately no `Display`.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret text, for code that must use it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The secret text, owned.
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Deref for Secret {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Holder {
        token: Secret,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password: Option<Secret>,
    }

    #[test]
    fn debug_never_shows_the_value() {
        let holder = Holder {
            token: "abcdef.0123456789abcdef".into(),
            password: Some(Secret::from("hunter2".to_owned())),
        };
        let debug = format!("{holder:?}");
        assert!(!debug.contains("abcdef"), "{debug}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        assert_eq!(holder.password.as_deref(), Some("hunter2"));
    }

    #[test]
    fn yaml_holds_the_plain_string() {
        let text = "token: abcdef.0123456789abcdef\npassword: hunter2\n";
        let holder: Holder = codec::from_yaml(text).unwrap();
        assert_eq!(holder.token.expose(), "abcdef.0123456789abcdef");
        assert_eq!(codec::to_yaml(&holder).unwrap(), text);
        assert!(codec::from_yaml::<Holder>("token: a\nother: b\n").is_err());
    }
}
