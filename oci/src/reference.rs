//! Image references: `host[:port]/repo/path[:tag][@sha256:<64 hex>]`.
//!
//! Unlike Docker there is no default registry: the host must be written out (it contains a `.`
//! or a `:`, or is `localhost`), so `talos/installer` is an error, not a trip to Docker Hub.

use std::fmt;

use crate::digest::Digest;

/// A parsed image reference. Its `Display` gives back the text it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    host: String,
    port: Option<u16>,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("image reference {input:?}: {reason}")]
pub struct ReferenceError {
    pub input: String,
    pub reason: String,
}

/// What a registry accepts as the name of a repository, in bytes.
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;
/// The tag pulled or pushed when a reference names neither a tag nor a digest.
const DEFAULT_TAG: &str = "latest";

impl Reference {
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let err = |reason: String| ReferenceError {
            input: input.to_owned(),
            reason,
        };
        let (name_and_tag, digest) = match input.split_once('@') {
            Some((name, digest)) => (
                name,
                Some(Digest::parse(digest).map_err(|e| err(e.to_string()))?),
            ),
            None => (input, None),
        };
        let Some((registry, path_and_tag)) = name_and_tag.split_once('/') else {
            return Err(err(
                "no registry host: write host[:port]/repository[:tag], e.g. 10.0.2.2:5000/talos/installer:v1"
                    .into(),
            ));
        };
        if !(registry.contains('.') || registry.contains(':') || registry == "localhost") {
            return Err(err(format!(
                "{registry:?} is not a registry host (a host has a '.' or a ':' or is localhost); \
                 there is no default registry, so write it out, e.g. ghcr.io/{name_and_tag}"
            )));
        }
        let (host, port) = split_host_port(registry).map_err(err)?;
        let (repository, tag) = match path_and_tag.rsplit_once(':') {
            Some((repository, tag)) => (repository, Some(tag)),
            None => (path_and_tag, None),
        };
        check_repository(repository).map_err(err)?;
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(err(format!(
                "the name is longer than {MAX_NAME_LEN} characters"
            )));
        }
        if let Some(tag) = tag {
            check_tag(tag).map_err(err)?;
        }
        Ok(Self {
            registry: registry.to_owned(),
            host: host.to_owned(),
            port,
            repository: repository.to_owned(),
            tag: tag.map(str::to_owned),
            digest,
        })
    }

    /// `host[:port]`, as written.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host without port; an IPv6 address comes without its brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The repository path inside the registry, e.g. `talos/installer`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The manifest digest the reference pins, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The same repository and tag, pinned to `digest`.
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// What `/v2/<repo>/manifests/<this>` names when pulling: the digest if pinned (it wins
    /// over the tag, as in Docker), else the tag, else `latest`.
    pub(crate) fn pull_target(&self) -> &str {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.as_str(),
            (None, Some(tag)) => tag,
            (None, None) => DEFAULT_TAG,
        }
    }

    /// What a manifest is pushed under: the tag, else the pinned digest, else `latest`.
    pub(crate) fn push_target(&self) -> &str {
        match (&self.tag, &self.digest) {
            (Some(tag), _) => tag,
            (None, Some(digest)) => digest.as_str(),
            (None, None) => DEFAULT_TAG,
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn split_host_port(registry: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) =
        if let Some(bracketed) = registry.strip_prefix('[') {
            let (ip, rest) = bracketed
                .split_once(']')
                .ok_or_else(|| format!("registry {registry:?} opens '[' but never closes it"))?;
            if ip.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!(
                    "registry {registry:?}: {ip:?} in brackets is not an IPv6 address"
                ));
            }
            match rest {
                "" => (ip, None),
                _ => (
                    ip,
                    Some(rest.strip_prefix(':').ok_or_else(|| {
                        format!("registry {registry:?}: expected ':port' after ']'")
                    })?),
                ),
            }
        } else {
            let (host, port) = match registry.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (registry, None),
            };
            let valid_label = |label: &str| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            };
            if !host.split('.').all(valid_label) {
                return Err(format!(
                    "registry host {host:?} is not a host name: labels of letters, digits and '-', \
                 separated by '.'"
                ));
            }
            (host, port)
        };
    let port = port
        .map(|p| match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
            _ => Err(format!(
                "registry port {p:?} is not a port number (1-65535)"
            )),
        })
        .transpose()?;
    Ok((host, port))
}

/// Path components are lowercase alphanumerics joined by `.`, `_`, `__` or runs of `-`.
fn check_repository(repository: &str) -> Result<(), String> {
    if repository.is_empty() {
        return Err("the repository path is empty".into());
    }
    for component in repository.split('/') {
        if !valid_path_component(component) {
            return Err(format!(
                "repository component {component:?} must be lowercase letters and digits, \
                 joined by '.', '_', '__' or '-'"
            ));
        }
    }
    Ok(())
}

fn valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !bytes.first().is_some_and(alnum) || !bytes.last().is_some_and(alnum) {
        return false;
    }
    // Between alphanumeric runs: exactly one '.', one or two '_', or any number of '-'.
    bytes
        .split(alnum)
        .all(|sep| matches!(sep, b"" | b"." | b"_" | b"__") || sep.iter().all(|b| *b == b'-'))
}

fn check_tag(tag: &str) -> Result<(), String> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let valid = tag.len() <= MAX_TAG_LEN
        && tag.bytes().next().is_some_and(word)
        && tag.bytes().all(|b| word(b) || b == b'.' || b == b'-');
    if tag.contains('/') {
        Err(format!(
            "{tag:?} after ':' has a '/': a ':' may only come after the last '/', before the tag"
        ))
    } else if valid {
        Ok(())
    } else {
        Err(format!(
            "tag {tag:?} must be 1 to {MAX_TAG_LEN} letters, digits, '_', '.' or '-', \
             not starting with '.' or '-'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    struct Parsed<'a> {
        registry: &'a str,
        host: &'a str,
        port: Option<u16>,
        repository: &'a str,
        tag: Option<&'a str>,
        pinned: bool,
    }

    #[test]
    fn parses_and_displays_what_it_parsed() {
        let pinned = format!("ghcr.io/siderolabs/installer:v1.9.0@sha256:{HEX}");
        let bare_ipv6 = format!("[fd00::1]/x@sha256:{HEX}");
        let table = [
            (
                "10.0.2.2:5000/talos/installer:v1",
                Parsed {
                    registry: "10.0.2.2:5000",
                    host: "10.0.2.2",
                    port: Some(5000),
                    repository: "talos/installer",
                    tag: Some("v1"),
                    pinned: false,
                },
            ),
            (
                "localhost/installer",
                Parsed {
                    registry: "localhost",
                    host: "localhost",
                    port: None,
                    repository: "installer",
                    tag: None,
                    pinned: false,
                },
            ),
            (
                &pinned,
                Parsed {
                    registry: "ghcr.io",
                    host: "ghcr.io",
                    port: None,
                    repository: "siderolabs/installer",
                    tag: Some("v1.9.0"),
                    pinned: true,
                },
            ),
            (
                &bare_ipv6,
                Parsed {
                    registry: "[fd00::1]",
                    host: "fd00::1",
                    port: None,
                    repository: "x",
                    tag: None,
                    pinned: true,
                },
            ),
            (
                "[::1]:5000/a.b/c__d/e-f--g_h:Tag_1.0-rc",
                Parsed {
                    registry: "[::1]:5000",
                    host: "::1",
                    port: Some(5000),
                    repository: "a.b/c__d/e-f--g_h",
                    tag: Some("Tag_1.0-rc"),
                    pinned: false,
                },
            ),
        ];
        for (input, want) in table {
            let r = Reference::parse(input).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(r.registry(), want.registry, "{input}");
            assert_eq!(r.host(), want.host, "{input}");
            assert_eq!(r.port(), want.port, "{input}");
            assert_eq!(r.repository(), want.repository, "{input}");
            assert_eq!(r.tag(), want.tag, "{input}");
            assert_eq!(r.digest().is_some(), want.pinned, "{input}");
            assert_eq!(r.to_string(), input);
            assert_eq!(input.parse::<Reference>().unwrap(), r);
        }
    }

    #[test]
    fn a_digest_wins_over_the_tag_when_pulling_and_latest_is_the_default() {
        let r = Reference::parse(&format!("reg.local/a:v1@sha256:{HEX}")).unwrap();
        assert_eq!(r.pull_target(), format!("sha256:{HEX}"));
        assert_eq!(r.push_target(), "v1");
        let r = Reference::parse("reg.local/a").unwrap();
        assert_eq!((r.pull_target(), r.push_target()), ("latest", "latest"));
        let pinned = r.with_digest(Digest::parse(&format!("sha256:{HEX}")).unwrap());
        assert_eq!(pinned.to_string(), format!("reg.local/a@sha256:{HEX}"));
        assert_eq!(pinned.push_target(), format!("sha256:{HEX}"));
    }

    #[test]
    fn errors_quote_the_input_and_say_what_is_wrong() {
        let long = format!("reg.local/{}", "a".repeat(250));
        let long_tag = format!("reg.local/a:{}", "t".repeat(129));
        let table: &[(&str, &str)] = &[
            ("", "no registry host"),
            ("installer:v1", "no registry host"),
            ("talos/installer:v1", "\"talos\" is not a registry host"),
            ("reg.local/", "repository path is empty"),
            (
                "reg.local/Talos/installer",
                "component \"Talos\" must be lowercase",
            ),
            ("reg.local/talos//installer", "component \"\""),
            ("reg.local/-x", "component \"-x\""),
            ("reg.local/a...b", "component \"a...b\""),
            ("reg.local/a___b", "component \"a___b\""),
            ("reg.local/a:", "tag \"\""),
            ("reg.local/a:.v1", "tag \".v1\""),
            ("reg.local/a:v1:v2", "component \"a:v1\""),
            ("reg.local/a:v1/b", "has a '/'"),
            (&long_tag, "1 to 128"),
            (&long, "longer than 255"),
            ("reg.local:http/a", "port \"http\""),
            ("reg.local:0/a", "port \"0\""),
            ("reg.local:99999/a", "port \"99999\""),
            ("reg_local.x/a", "not a host name"),
            ("[fd00::1/a", "never closes"),
            ("[fd00::zz]/a", "not an IPv6 address"),
            ("[::1]x/a", "expected ':port'"),
            ("reg.local/a@sha256:abc", "exactly 64 hex digits"),
            ("reg.local/a@md5:abc", "only sha256"),
        ];
        for &(input, reason) in table {
            let e = Reference::parse(input)
                .map(|r| r.to_string())
                .expect_err(input)
                .to_string();
            assert!(
                e.starts_with(&format!("image reference {input:?}: ")) && e.contains(reason),
                "{input}: {e}"
            );
        }
    }
}
