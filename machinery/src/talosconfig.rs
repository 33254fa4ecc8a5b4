//! The client configuration file (`~/.talos/config`): named contexts, each with endpoints,
//! default nodes and base64 PEM credentials.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::b64;
use crate::codec::{self, CodecError};
use crate::config::raw::RawValue;

/// A talosconfig could not be read, written or used.
#[derive(Debug, thiserror::Error)]
pub enum TalosconfigError {
    #[error("Invalid talosconfig: {0}")]
    Codec(#[from] CodecError),
    #[error("Context {0:?} is not defined in the talosconfig")]
    MissingContext(String),
    #[error("The talosconfig has no current context; pass a context name")]
    NoCurrentContext,
    #[error("Context field {field} is empty")]
    EmptyField { field: &'static str },
    #[error("Context field {field}: {message}")]
    BadField {
        field: &'static str,
        message: String,
    },
}

/// The whole file. Like upstream, keys we do not know are accepted; they are kept (and written
/// back) in `extra` and listed by [`Talosconfig::unknown_keys`] so callers can warn about typos.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Talosconfig {
    /// Name of the current context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, RawValue>,
}

/// One context. `ca`, `crt` and `key` hold base64 of PEM, as upstream writes them.
#[derive(Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Context {
    /// apid endpoints (host or host:port; port 50000 implied).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    /// Default target nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub crt: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    /// Deprecated predecessor of `endpoints`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Cluster name for proxied (Omni-style) endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(rename = "proxy-url", default, skip_serializing_if = "Option::is_none")]
    pub proxy_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
    /// Keys we do not know, kept as they came.
    #[serde(flatten)]
    pub extra: BTreeMap<String, RawValue>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("endpoints", &self.endpoints)
            .field("nodes", &self.nodes)
            .field("ca", &format_args!("<{} bytes>", self.ca.len()))
            .field("crt", &format_args!("<{} bytes>", self.crt.len()))
            .field("key", &"<redacted>")
            .field("target", &self.target)
            .field("cluster", &self.cluster)
            .field("proxy_url", &self.proxy_url)
            .field("auth", &self.auth)
            .field("extra", &self.extra.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Omni authentication variants; kept so such files parse and round-trip.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic: Option<BasicAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub siderov1: Option<SideroV1Auth>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("basic", &self.basic)
            .field("siderov1", &self.siderov1)
            .finish()
    }
}

#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SideroV1Auth {
    #[serde(default)]
    pub identity: String,
}

impl Talosconfig {
    /// A file with one context, which is also the current one.
    pub fn with_context(name: &str, context: Context) -> Talosconfig {
        Talosconfig {
            context: Some(name.to_owned()),
            contexts: BTreeMap::from([(name.to_owned(), context)]),
            extra: BTreeMap::new(),
        }
    }

    /// Dotted paths of the keys this file has that talosctl does not know (kept on rewrite).
    pub fn unknown_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.extra.keys().cloned().collect();
        for (name, context) in &self.contexts {
            keys.extend(context.extra.keys().map(|k| format!("contexts.{name}.{k}")));
        }
        keys
    }

    /// Adds the contexts of `other`. A name already taken gets the first free `-1`, `-2`, …
    /// suffix; `other`'s current context becomes the current one. Returns the renames.
    pub fn merge(&mut self, other: Talosconfig) -> Vec<(String, String)> {
        let mut renames = Vec::new();
        let mut current = other.context.clone();
        for (name, context) in other.contexts {
            let mut new_name = name.clone();
            let mut suffix = 1;
            while self.contexts.contains_key(&new_name) {
                new_name = format!("{name}-{suffix}");
                suffix += 1;
            }
            if new_name != name {
                if current.as_deref() == Some(name.as_str()) {
                    current = Some(new_name.clone());
                }
                renames.push((name, new_name.clone()));
            }
            self.contexts.insert(new_name, context);
        }
        if current.is_some() {
            self.context = current;
        }
        renames
    }

    /// The named context (or the current one) for editing.
    pub fn current_mut(
        &mut self,
        name: Option<&str>,
    ) -> Result<(String, &mut Context), TalosconfigError> {
        let name = self.current(name)?.0.to_owned();
        let context = self
            .contexts
            .get_mut(&name)
            .ok_or_else(|| TalosconfigError::MissingContext(name.clone()))?;
        Ok((name, context))
    }

    /// Makes `name` the current context; it must exist.
    pub fn set_current(&mut self, name: &str) -> Result<(), TalosconfigError> {
        if !self.contexts.contains_key(name) {
            return Err(TalosconfigError::MissingContext(name.to_owned()));
        }
        self.context = Some(name.to_owned());
        Ok(())
    }

    pub fn from_yaml(input: &str) -> Result<Talosconfig, TalosconfigError> {
        Ok(codec::from_yaml(input)?)
    }

    pub fn to_yaml(&self) -> Result<String, TalosconfigError> {
        Ok(codec::to_yaml(self)?)
    }

    /// The named context, or the current one when `name` is `None`.
    pub fn current(&self, name: Option<&str>) -> Result<(&str, &Context), TalosconfigError> {
        let name = match name {
            Some(name) => name,
            None => self
                .context
                .as_deref()
                .filter(|n| !n.is_empty())
                .ok_or(TalosconfigError::NoCurrentContext)?,
        };
        self.contexts
            .get_key_value(name)
            .map(|(k, v)| (k.as_str(), v))
            .ok_or_else(|| TalosconfigError::MissingContext(name.to_owned()))
    }

    /// Adds or replaces a context (used by `talosctl config merge`-style commands).
    pub fn insert(&mut self, name: &str, context: Context) {
        self.contexts.insert(name.to_owned(), context);
    }
}

impl Context {
    /// A context from PEM credentials; stores them base64-encoded.
    pub fn new(endpoints: Vec<String>, ca_pem: &str, crt_pem: &str, key_pem: &str) -> Context {
        Context {
            endpoints,
            ca: b64::encode(ca_pem),
            crt: b64::encode(crt_pem),
            key: b64::encode(key_pem),
            ..Context::default()
        }
    }

    pub fn ca_pem(&self) -> Result<String, TalosconfigError> {
        decode_field(&self.ca, "ca")
    }

    pub fn crt_pem(&self) -> Result<String, TalosconfigError> {
        decode_field(&self.crt, "crt")
    }

    pub fn key_pem(&self) -> Result<String, TalosconfigError> {
        decode_field(&self.key, "key")
    }

    /// `endpoints`, or the deprecated `target` when `endpoints` is empty.
    pub fn effective_endpoints(&self) -> Vec<String> {
        if self.endpoints.is_empty() {
            self.target.iter().cloned().collect()
        } else {
            self.endpoints.clone()
        }
    }
}

fn decode_field(value: &str, field: &'static str) -> Result<String, TalosconfigError> {
    if value.is_empty() {
        return Err(TalosconfigError::EmptyField { field });
    }
    b64::decode_text(value).map_err(|message| TalosconfigError::BadField { field, message })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";

    #[test]
    fn round_trip_keeps_base64_pem() {
        let mut context = Context::new(vec!["10.0.0.2".into()], PEM, PEM, "key-pem");
        context.nodes = vec!["10.0.0.3".into()];
        context.proxy_url = Some("http://proxy:3128".into());
        let config = Talosconfig::with_context("lab", context);
        let text = config.to_yaml().unwrap();
        assert!(text.contains("proxy-url:"));
        assert!(
            !text.contains("BEGIN"),
            "credentials must be base64 in YAML"
        );
        let parsed = Talosconfig::from_yaml(&text).unwrap();
        assert_eq!(parsed, config);
        let (name, ctx) = parsed.current(None).unwrap();
        assert_eq!(name, "lab");
        assert_eq!(ctx.ca_pem().unwrap(), PEM);
        assert_eq!(ctx.key_pem().unwrap(), "key-pem");
    }

    #[test]
    fn parses_upstream_shape() {
        let text = "context: c\ncontexts:\n  c:\n    endpoints: [10.0.0.2, 10.0.0.3]\n    nodes: [10.0.0.2]\n    ca: YQ==\n    crt: Yg==\n    key: Yw==\n    cluster: prod\n    auth:\n      siderov1:\n        identity: me@example.com\n";
        let config = Talosconfig::from_yaml(text).unwrap();
        let (_, ctx) = config.current(Some("c")).unwrap();
        assert_eq!(ctx.endpoints, ["10.0.0.2", "10.0.0.3"]);
        assert_eq!(ctx.crt_pem().unwrap(), "b");
        assert_eq!(
            ctx.auth
                .as_ref()
                .unwrap()
                .siderov1
                .as_ref()
                .unwrap()
                .identity,
            "me@example.com"
        );
    }

    #[test]
    fn missing_context_is_named() {
        let config = Talosconfig::with_context("a", Context::default());
        let err = config.current(Some("b")).unwrap_err();
        assert!(err.to_string().contains("\"b\""), "{err}");
        assert!(matches!(
            Talosconfig::default().current(None),
            Err(TalosconfigError::NoCurrentContext)
        ));
    }

    #[test]
    fn debug_redacts_the_key() {
        let context = Context::new(vec![], PEM, PEM, "very-secret");
        let shown = format!("{context:?}");
        assert!(!shown.contains(&b64::encode("very-secret")));
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn unknown_keys_are_kept_and_reported() {
        let text = "context: c\ncontexts:\n  c:\n    endpoint: [x]\n    endpoints: [a]\n    future:\n      nested: 1\nextra-top: yes\n";
        let config = Talosconfig::from_yaml(text).unwrap();
        assert_eq!(
            config.unknown_keys(),
            ["extra-top", "contexts.c.endpoint", "contexts.c.future"]
        );
        let again = Talosconfig::from_yaml(&config.to_yaml().unwrap()).unwrap();
        assert_eq!(again, config);
        assert_eq!(again.current(None).unwrap().1.endpoints, ["a"]);
    }

    #[test]
    fn wrong_types_name_their_path() {
        let err = Talosconfig::from_yaml("contexts: [1]\n").unwrap_err();
        assert!(
            err.to_string().starts_with("Invalid talosconfig: "),
            "{err}"
        );
        assert!(err.to_string().contains("contexts"), "{err}");
    }

    #[test]
    fn merge_renames_taken_names_and_switches_context() {
        let mut config = Talosconfig::with_context("lab", Context::default());
        config.insert("lab-1", Context::default());
        let mut incoming = Talosconfig::with_context(
            "lab",
            Context {
                nodes: vec!["n".into()],
                ..Context::default()
            },
        );
        incoming.insert("other", Context::default());
        let renames = config.merge(incoming);
        assert_eq!(renames, [("lab".to_owned(), "lab-2".to_owned())]);
        assert_eq!(config.context.as_deref(), Some("lab-2"));
        assert_eq!(config.contexts["lab-2"].nodes, ["n"]);
        assert!(config.contexts.contains_key("other"));
        assert!(config.contexts["lab"].nodes.is_empty());
    }

    #[test]
    fn editing_the_current_context() {
        let mut config = Talosconfig::with_context("a", Context::default());
        config.insert("b", Context::default());
        config.current_mut(None).unwrap().1.endpoints = vec!["e".into()];
        config.current_mut(Some("b")).unwrap().1.nodes = vec!["n".into()];
        assert_eq!(config.contexts["a"].endpoints, ["e"]);
        assert_eq!(config.contexts["b"].nodes, ["n"]);
        let err = config.set_current("c").unwrap_err();
        assert_eq!(
            err.to_string(),
            "Context \"c\" is not defined in the talosconfig"
        );
        config.set_current("b").unwrap();
        assert_eq!(config.current(None).unwrap().0, "b");
    }
}
