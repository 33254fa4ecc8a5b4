//! What the node needs for pulling images, from either config layout: per-registry TLS,
//! credentials and mirrors (`machine.registries` or the `Registry*Config` documents), and static
//! host names (`machine.network.extraHostEntries` or `StaticHostConfig`).

use std::fmt;
use std::net::IpAddr;

use super::Config;
use super::kinds::{RegistryAuthConfig, RegistryMirrorConfig, RegistryTLSConfig, StaticHostConfig};
use super::v1alpha1::Registries;
use crate::b64;
use crate::secret::Secret;

/// TLS settings for one registry host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryTlsConfig {
    /// PEM certificates trusted for the registry.
    pub ca_pem: Option<String>,
    pub insecure_skip_verify: bool,
    /// The client certificate and key (PEM) presented to the registry.
    pub client_identity: Option<ClientCertificate>,
}

/// A PEM client certificate and its key.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ClientCertificate({} bytes, key <redacted>)",
            self.cert_pem.len()
        )
    }
}

/// Credentials for one registry host.
#[derive(Clone, PartialEq, Eq)]
pub enum RegistryCredentials {
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (`identityToken`).
    IdentityToken(String),
}

impl fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryCredentials::Basic { username, .. } => {
                write!(
                    f,
                    "Basic {{ username: {username:?}, password: <redacted> }}"
                )
            }
            RegistryCredentials::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

/// Mirrors of one registry host, tried in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryMirrors {
    pub endpoints: Vec<MirrorEndpoint>,
    /// Do not try the registry itself when every mirror fails.
    pub skip_fallback: bool,
}

/// One mirror: `scheme://host[:port][/path]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorEndpoint {
    pub url: String,
    /// The URL's path replaces `/v2` instead of prefixing it.
    pub override_path: bool,
}

/// One static host: an IP address and the names that map to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    pub ip: IpAddr,
    pub aliases: Vec<String>,
}

impl Config {
    fn registries(&self) -> Option<&Registries> {
        self.v1alpha1.machine.registries.as_ref()
    }

    /// The first `T` document named `host`.
    fn registry_document<T: super::kinds::KindDocument>(
        &self,
        host: &str,
        name: impl Fn(&T) -> &str,
    ) -> Option<T> {
        self.documents_of::<T>()
            .ok()?
            .into_iter()
            .find(|d| name(d) == host)
    }

    /// TLS settings for registry `host` (`name[:port]`, as the image reference writes it):
    /// `machine.registries.config.<host>.tls`, else a `RegistryTLSConfig` named `host`.
    pub fn registry_tls(&self, host: &str) -> Option<RegistryTlsConfig> {
        if let Some(tls) = self
            .registries()
            .and_then(|r| r.config.get(host))
            .and_then(|c| c.tls.as_ref())
        {
            return Some(RegistryTlsConfig {
                ca_pem: tls.ca.as_ref().map(|ca| ca.as_str().to_owned()),
                insecure_skip_verify: tls.insecure_skip_verify.unwrap_or(false),
                client_identity: tls.client_identity.as_ref().map(|pair| ClientCertificate {
                    cert_pem: pair.crt.as_str().to_owned(),
                    key_pem: pair.key().unwrap_or_default().to_owned(),
                }),
            });
        }
        let tls = self.registry_document(host, |d: &RegistryTLSConfig| &d.name)?;
        Some(RegistryTlsConfig {
            ca_pem: tls.ca,
            insecure_skip_verify: tls.insecure_skip_verify.unwrap_or(false),
            client_identity: tls.client_identity.map(|identity| ClientCertificate {
                cert_pem: identity.cert.unwrap_or_default(),
                key_pem: identity.key.unwrap_or_default().into_inner(),
            }),
        })
    }

    /// Credentials for registry `host`: `machine.registries.config.<host>.auth`, else a
    /// `RegistryAuthConfig` named `host`. An identity token wins over a username and password,
    /// which win over `auth` (base64 `username:password`). Errors name the malformed field.
    pub fn registry_credentials(&self, host: &str) -> Result<Option<RegistryCredentials>, String> {
        let (path, fields) = match self
            .registries()
            .and_then(|r| r.config.get(host))
            .and_then(|c| c.auth.as_ref())
        {
            Some(auth) => (
                format!("machine.registries.config.{host:?}.auth"),
                (
                    auth.identity_token.clone(),
                    auth.username.clone(),
                    auth.password.clone(),
                    auth.auth.clone(),
                ),
            ),
            None => match self.registry_document(host, |d: &RegistryAuthConfig| &d.name) {
                Some(auth) => (
                    format!("RegistryAuthConfig[{host}]"),
                    (auth.identity_token, auth.username, auth.password, auth.auth),
                ),
                None => return Ok(None),
            },
        };
        let nonempty = |value: Option<String>| value.filter(|v| !v.is_empty());
        let (identity_token, username, password, auth) = fields;
        if let Some(token) = nonempty(identity_token.map(Secret::into_inner)) {
            return Ok(Some(RegistryCredentials::IdentityToken(token)));
        }
        if let Some(username) = nonempty(username) {
            return Ok(Some(RegistryCredentials::Basic {
                username,
                password: password.unwrap_or_default().into_inner(),
            }));
        }
        let Some(auth) = nonempty(auth.map(Secret::into_inner)) else {
            return Ok(None);
        };
        let decoded = b64::decode_text(&auth).map_err(|e| format!("{path}.auth: {e}"))?;
        let (username, password) = decoded
            .split_once(':')
            .ok_or_else(|| format!("{path}.auth: expected base64 of username:password"))?;
        Ok(Some(RegistryCredentials::Basic {
            username: username.to_owned(),
            password: password.to_owned(),
        }))
    }

    /// Mirrors of registry `host`: `machine.registries.mirrors.<host>`, else a
    /// `RegistryMirrorConfig` named `host`; failing both, the same for the wildcard `*`.
    pub fn registry_mirrors(&self, host: &str) -> Option<RegistryMirrors> {
        [host, "*"].into_iter().find_map(|name| {
            if let Some(mirror) = self.registries().and_then(|r| r.mirrors.get(name)) {
                return Some(RegistryMirrors {
                    endpoints: mirror
                        .endpoints
                        .iter()
                        .map(|url| MirrorEndpoint {
                            url: url.clone(),
                            override_path: mirror.override_path.unwrap_or(false),
                        })
                        .collect(),
                    skip_fallback: mirror.skip_fallback.unwrap_or(false),
                });
            }
            let mirror = self.registry_document(name, |d: &RegistryMirrorConfig| &d.name)?;
            Some(RegistryMirrors {
                endpoints: mirror
                    .endpoints
                    .into_iter()
                    .filter_map(|e| {
                        Some(MirrorEndpoint {
                            url: e.url?,
                            override_path: e.override_path.unwrap_or(false),
                        })
                    })
                    .collect(),
                skip_fallback: mirror.skip_fallback.unwrap_or(false),
            })
        })
    }
}

/// A host entry whose address is not an IP address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {value:?} is not an IP address")]
pub struct BadHostEntry {
    /// The field, e.g. `machine.network.extraHostEntries[0].ip`.
    pub path: String,
    pub value: String,
}

impl Config {
    /// The static names for `/etc/hosts` and registry lookups: `machine.network.extraHostEntries`,
    /// then each `StaticHostConfig` document, in input order.
    pub fn host_entries(&self) -> Result<Vec<HostEntry>, BadHostEntry> {
        let parse = |path: String, value: &str| {
            value.parse::<IpAddr>().map_err(|_| BadHostEntry {
                path,
                value: value.to_owned(),
            })
        };
        let mut entries = Vec::new();
        let extra = self
            .v1alpha1
            .machine
            .network
            .as_ref()
            .and_then(|n| n.extra_host_entries.as_deref())
            .unwrap_or_default();
        for (i, entry) in extra.iter().enumerate() {
            entries.push(HostEntry {
                ip: parse(
                    format!("machine.network.extraHostEntries[{i}].ip"),
                    &entry.ip,
                )?,
                aliases: entry.aliases.clone(),
            });
        }
        for document in self.documents_of::<StaticHostConfig>().unwrap_or_default() {
            entries.push(HostEntry {
                ip: parse(
                    format!("StaticHostConfig[{}].name", document.name),
                    &document.name,
                )?,
                aliases: document.hostnames,
            });
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::{MirrorEndpoint, RegistryCredentials, RegistryMirrors};
    use crate::config::{Config, V1Alpha1};

    fn config(text: &str) -> Config {
        Config::from_bytes(
            format!("version: v1alpha1\nmachine:\n  type: worker\n{text}").as_bytes(),
        )
        .unwrap()
    }

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    #[test]
    fn reads_registry_tls_by_host_and_port() {
        let config = config(&format!(
            "  registries:\n    config:\n      \"registry.test:5443\":\n        tls:\n          ca: {}\n      \
             insecure.test:\n        tls:\n          insecureSkipVerify: true\n          \
             clientIdentity:\n            crt: {}\n            key: {}\n",
            crate::b64::encode(PEM),
            crate::b64::encode(PEM),
            crate::b64::encode("KEY PEM"),
        ));
        let tls = config.registry_tls("registry.test:5443").unwrap();
        assert_eq!(tls.ca_pem.as_deref(), Some(PEM));
        assert!(!tls.insecure_skip_verify);
        assert_eq!(config.registry_tls("registry.test"), None);
        let tls = config.registry_tls("insecure.test").unwrap();
        assert_eq!((tls.ca_pem, tls.insecure_skip_verify), (None, true));
        let identity = tls.client_identity.unwrap();
        assert_eq!(
            (identity.cert_pem.as_str(), identity.key_pem.as_str()),
            (PEM, "KEY PEM")
        );
        assert!(!format!("{identity:?}").contains("KEY PEM"));
    }

    #[test]
    fn reads_registry_settings_from_documents() {
        let config = config(&format!(
            "---\napiVersion: v1alpha1\nkind: RegistryTLSConfig\nname: registry.test:5443\nca: |\n  {}\n---\n\
             apiVersion: v1alpha1\nkind: RegistryAuthConfig\nname: registry.test:5443\nusername: edge\npassword: s3cret\n---\n\
             apiVersion: v1alpha1\nkind: RegistryMirrorConfig\nname: ghcr.io\nendpoints:\n  - url: https://registry.test:5443/v2/ghcr\n    overridePath: true\nskipFallback: true\n",
            PEM.trim_end().replace('\n', "\n  ")
        ));
        let tls = config.registry_tls("registry.test:5443").unwrap();
        assert_eq!(tls.ca_pem.as_deref(), Some(PEM));
        assert_eq!(
            config.registry_credentials("registry.test:5443").unwrap(),
            Some(RegistryCredentials::Basic {
                username: "edge".into(),
                password: "s3cret".into()
            })
        );
        assert_eq!(config.registry_credentials("ghcr.io").unwrap(), None);
        assert_eq!(
            config.registry_mirrors("ghcr.io"),
            Some(RegistryMirrors {
                endpoints: vec![MirrorEndpoint {
                    url: "https://registry.test:5443/v2/ghcr".into(),
                    override_path: true
                }],
                skip_fallback: true
            })
        );
        assert_eq!(config.registry_mirrors("docker.io"), None);
    }

    #[test]
    fn credentials_prefer_the_token_then_the_password_then_auth() {
        let auth = |fields: &str| {
            config(&format!(
                "  registries:\n    config:\n      r.test:\n        auth:\n{fields}"
            ))
            .registry_credentials("r.test")
        };
        let basic = |u: &str, p: &str| {
            Some(RegistryCredentials::Basic {
                username: u.into(),
                password: p.into(),
            })
        };
        let encoded = crate::b64::encode("ci:pa:ss");
        assert_eq!(
            auth(&format!("          auth: {encoded}\n")).unwrap(),
            basic("ci", "pa:ss")
        );
        assert_eq!(
            auth(&format!(
                "          auth: {encoded}\n          username: u\n          password: p\n"
            ))
            .unwrap(),
            basic("u", "p")
        );
        assert_eq!(
            auth("          username: u\n          identityToken: t\n").unwrap(),
            Some(RegistryCredentials::IdentityToken("t".into()))
        );
        assert_eq!(
            auth(&format!(
                "          auth: {}\n",
                crate::b64::encode("nocolon")
            ))
            .unwrap_err(),
            "machine.registries.config.\"r.test\".auth.auth: expected base64 of username:password"
        );
        let shown = format!("{:?}", basic("u", "hunter2").unwrap());
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn mirrors_fall_back_to_the_wildcard() {
        let config = config(
            "  registries:\n    mirrors:\n      \"*\":\n        endpoints: [http://10.0.0.5:5000]\n      docker.io:\n        endpoints: [https://m.test, https://n.test]\n",
        );
        let docker = config.registry_mirrors("docker.io").unwrap();
        assert_eq!(docker.endpoints.len(), 2);
        assert!(!docker.skip_fallback);
        assert_eq!(
            config.registry_mirrors("ghcr.io").unwrap().endpoints[0].url,
            "http://10.0.0.5:5000"
        );
    }

    #[test]
    fn a_registry_ca_that_is_not_base64_is_refused_at_its_path() {
        let input = "version: v1alpha1\nmachine:\n  registries:\n    config:\n      bad.test:\n        tls:\n          ca: \"%%\"\n";
        let e = crate::codec::from_yaml::<V1Alpha1>(input).unwrap_err();
        assert!(e.to_string().contains("invalid base64"), "{e}");
        assert_eq!(e.path(), Some("machine.registries.config.bad.test.tls.ca"));
    }

    #[test]
    fn host_entries_come_from_extra_host_entries_then_static_host_documents() {
        let config = config(
            "  network:\n    extraHostEntries:\n      - ip: 10.0.2.2\n        aliases: [registry.test, r]\n      \
             - ip: fd00::1\n---\napiVersion: v1alpha1\nkind: StaticHostConfig\nname: 10.0.0.9\nhostnames: [mirror.lab]\n",
        );
        let entries = config.host_entries().unwrap();
        let listed: Vec<(String, Vec<String>)> = entries
            .iter()
            .map(|e| (e.ip.to_string(), e.aliases.clone()))
            .collect();
        assert_eq!(
            listed,
            [
                (
                    "10.0.2.2".to_owned(),
                    vec!["registry.test".to_owned(), "r".to_owned()]
                ),
                ("fd00::1".to_owned(), vec![]),
                ("10.0.0.9".to_owned(), vec!["mirror.lab".to_owned()]),
            ]
        );
    }

    #[test]
    fn a_host_entry_that_is_not_an_ip_is_named() {
        let bad = config("  network:\n    extraHostEntries:\n      - ip: nope\n");
        assert_eq!(
            bad.host_entries().unwrap_err().to_string(),
            "machine.network.extraHostEntries[0].ip: \"nope\" is not an IP address"
        );
        let bad = config(
            "---\napiVersion: v1alpha1\nkind: StaticHostConfig\nname: mirror\nhostnames: [m]\n",
        );
        assert_eq!(
            bad.host_entries().unwrap_err().to_string(),
            "StaticHostConfig[mirror].name: \"mirror\" is not an IP address"
        );
    }
}
