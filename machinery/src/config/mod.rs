//! The machine configuration: a multi-document YAML stream holding exactly one legacy
//! `version: v1alpha1` document plus any number of `apiVersion`/`kind` documents.
//!
//! Decoding is strict: unknown keys, unknown kinds and duplicate documents are errors that name
//! the YAML path (and line and column). `HostnameConfig`, `TimeSyncConfig`, `ResolverConfig`
//! and `BoardConfig` are typed ([`Document`]). Documents of every other kind are checked key by
//! key against their schema in [`kinds`], kept as their source text ([`RawDocument`]), and read
//! typed with [`Config::document`].

mod documents;
mod generate;
pub mod kinds;
pub mod patch;
pub mod raw;
mod registries;
#[cfg(test)]
pub(crate) mod testing;
pub mod v1alpha1;
mod validate;

use std::fmt;

use serde::Deserialize;

use crate::codec::{self, CodecError, MAX_CONFIG_BYTES};
use crate::pki::{self, PkiError};

pub use documents::{
    AutoHostname, BoardConfig, Document, HostnameConfig, Nameserver, NtpConfig, PtpConfig,
    RawDocument, ResolverConfig, SearchDomains, TimeSyncConfig,
};
pub use generate::{
    DEFAULT_INSTALL_DISK, DEFAULT_INSTALL_IMAGE, DEFAULT_KUBERNETES_VERSION, DEFAULT_TALOS_VERSION,
    GenerateError, GenerateInput, Generated, VersionContract, generate,
};
pub use patch::{Patch, PatchError};
pub use registries::{
    BadHostEntry, ClientCertificate, HostEntry, MirrorEndpoint, RegistryCredentials,
    RegistryMirrors, RegistryTlsConfig,
};
pub use v1alpha1::{MachineType, V1Alpha1};
pub use validate::{Problem, ValidationMode, ValidationReport};

/// A machine config that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("Machine config is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("Invalid machine config: {0}")]
    Codec(#[from] CodecError),
    #[error("Unknown config document kind {kind:?} (line {line})")]
    UnknownKind { kind: String, line: usize },
    #[error(
        "Config document kind {kind:?} has apiVersion {api_version:?}; expected v1alpha1 (line {line})"
    )]
    UnsupportedApiVersion {
        kind: String,
        api_version: String,
        line: usize,
    },
    #[error(
        "Config document without kind must have version: v1alpha1, found {found} (line {line})"
    )]
    NotV1Alpha1 { found: String, line: usize },
    #[error("Duplicate config document {what} (line {line})")]
    Duplicate { what: String, line: usize },
    #[error("Machine config has no v1alpha1 document")]
    MissingV1Alpha1,
    #[error("{path}: {source}")]
    Pem {
        path: &'static str,
        #[source]
        source: PkiError,
    },
    #[error(
        "UnattendedInstallConfig.provisioning.diskSelector.match: talos-rs installs only onto a disk named as disk.dev_path == \"/dev/...\", not {0:?}"
    )]
    UnsupportedDiskSelector(String),
}

/// The device path of a disk selector `disk.dev_path == "/dev/sda"` (single quotes too).
fn dev_path_selector(expression: &str) -> Option<&str> {
    let quoted = expression
        .trim()
        .strip_prefix("disk.dev_path")?
        .trim_start()
        .strip_prefix("==")?
        .trim();
    let quote = quoted.chars().next().filter(|c| matches!(c, '"' | '\''))?;
    let path = quoted.strip_prefix(quote)?.strip_suffix(quote)?;
    (path.starts_with('/') && !path.contains(['"', '\'', '\\'])).then_some(path)
}

/// The small header every document has, read before choosing the type of the rest.
#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(rename = "apiVersion", default)]
    api_version: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

/// A parsed machine config.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    v1alpha1: V1Alpha1,
    documents: Vec<Document>,
}

/// The Talos OS CA as found in `machine.ca`; workers have no key.
#[derive(Clone, PartialEq, Eq)]
pub struct CaCertificate {
    pub cert_pem: String,
    pub key_pem: Option<String>,
}

impl fmt::Debug for CaCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaCertificate")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &self.key_pem.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl CaCertificate {
    /// The certificate and key, when the key is present (control plane).
    pub fn to_cert_and_key(&self) -> Option<pki::CertAndKey> {
        self.key_pem.as_ref().map(|key| pki::CertAndKey {
            cert_pem: self.cert_pem.clone(),
            key_pem: key.clone(),
        })
    }
}

impl Config {
    /// Wraps an already-built v1alpha1 document.
    pub fn new(v1alpha1: V1Alpha1) -> Config {
        Config {
            v1alpha1,
            documents: Vec::new(),
        }
    }

    /// Parses a config stream. Refuses input over [`MAX_CONFIG_BYTES`], unknown kinds, unknown
    /// keys, duplicate documents and a legacy document without `version: v1alpha1`.
    pub fn from_bytes(input: &[u8]) -> Result<Config, ConfigError> {
        if input.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                size: input.len(),
                limit: MAX_CONFIG_BYTES,
            });
        }
        let text = codec::str_from_bytes(input)?;
        let mut v1alpha1: Option<V1Alpha1> = None;
        let mut documents: Vec<Document> = Vec::new();
        for document in codec::split_documents(text)? {
            if document.is_empty() {
                continue;
            }
            let line = document.content_line();
            let header: Header = document.decode()?;
            match header.kind {
                None => {
                    match header.version.as_deref() {
                        Some("v1alpha1") => {}
                        other => {
                            return Err(ConfigError::NotV1Alpha1 {
                                found: other.map_or("no version".to_owned(), |v| format!("{v:?}")),
                                line,
                            });
                        }
                    }
                    if v1alpha1.is_some() {
                        return Err(ConfigError::Duplicate {
                            what: "v1alpha1".into(),
                            line,
                        });
                    }
                    v1alpha1 = Some(document.decode()?);
                }
                Some(kind) => {
                    if !kinds::is_known(&kind) {
                        return Err(ConfigError::UnknownKind { kind, line });
                    }
                    let api_version = header.api_version.unwrap_or_default();
                    if api_version != "v1alpha1" {
                        return Err(ConfigError::UnsupportedApiVersion {
                            kind,
                            api_version,
                            line,
                        });
                    }
                    if documents
                        .iter()
                        .any(|d| d.kind() == kind && d.name() == header.name.as_deref())
                    {
                        let what = match &header.name {
                            Some(name) => format!("{kind} named {name:?}"),
                            None => kind,
                        };
                        return Err(ConfigError::Duplicate { what, line });
                    }
                    documents.push(match kind.as_str() {
                        HostnameConfig::KIND => Document::Hostname(document.decode()?),
                        TimeSyncConfig::KIND => Document::TimeSync(document.decode()?),
                        ResolverConfig::KIND => Document::Resolver(document.decode()?),
                        BoardConfig::KIND => Document::Board(document.decode()?),
                        _ => Document::Other({
                            kinds::check(&kind, &document)?;
                            RawDocument {
                                kind,
                                name: header.name,
                                text: normalize_document_text(document.text()),
                            }
                        }),
                    });
                }
            }
        }
        let v1alpha1 = v1alpha1.ok_or(ConfigError::MissingV1Alpha1)?;
        Ok(Config {
            v1alpha1,
            documents,
        })
    }

    /// Writes the config: the v1alpha1 document first, then the other documents in order.
    pub fn to_yaml(&self) -> Result<String, ConfigError> {
        let mut out = codec::to_yaml(&self.v1alpha1)?;
        for document in &self.documents {
            if !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str("---\n");
            let text = match document {
                Document::Hostname(d) => codec::to_yaml(d)?,
                Document::TimeSync(d) => codec::to_yaml(d)?,
                Document::Resolver(d) => codec::to_yaml(d)?,
                Document::Board(d) => codec::to_yaml(d)?,
                Document::Other(raw) => raw.text.clone(),
            };
            out.push_str(text.trim_end());
            out.push('\n');
        }
        Ok(out)
    }

    pub fn v1alpha1(&self) -> &V1Alpha1 {
        &self.v1alpha1
    }

    /// The documents other than v1alpha1, in input order.
    pub fn documents(&self) -> &[Document] {
        &self.documents
    }

    /// True when a document of `kind` is present.
    pub fn has_kind(&self, kind: &str) -> bool {
        self.documents.iter().any(|d| d.kind() == kind)
    }

    /// The first document of `T`'s kind, decoded.
    pub fn document<T: kinds::KindDocument>(&self) -> Result<Option<T>, ConfigError> {
        self.texts_of::<T>()
            .next()
            .map(|text| codec::from_yaml(text).map_err(ConfigError::from))
            .transpose()
    }

    /// Every document of `T`'s kind (named kinds may repeat), decoded, in input order.
    pub fn documents_of<T: kinds::KindDocument>(&self) -> Result<Vec<T>, ConfigError> {
        self.texts_of::<T>()
            .map(|text| codec::from_yaml(text).map_err(ConfigError::from))
            .collect()
    }

    /// The source text of each document of `T`'s kind.
    fn texts_of<T: kinds::KindDocument>(&self) -> impl Iterator<Item = &str> {
        self.documents.iter().filter_map(|d| match d {
            Document::Other(raw) if raw.kind == T::KIND => Some(raw.text.as_str()),
            _ => None,
        })
    }

    /// The `HostnameConfig` document, if any.
    pub fn hostname_config(&self) -> Option<&HostnameConfig> {
        self.documents.iter().find_map(|d| match d {
            Document::Hostname(h) => Some(h),
            _ => None,
        })
    }

    /// The `TimeSyncConfig` document, if any.
    pub fn time_sync_config(&self) -> Option<&TimeSyncConfig> {
        self.documents.iter().find_map(|d| match d {
            Document::TimeSync(t) => Some(t),
            _ => None,
        })
    }

    /// The `BoardConfig` document, if any.
    pub fn board_config(&self) -> Option<&BoardConfig> {
        self.documents.iter().find_map(|d| match d {
            Document::Board(b) => Some(b),
            _ => None,
        })
    }

    /// The `ResolverConfig` document, if any.
    pub fn resolver_config(&self) -> Option<&ResolverConfig> {
        self.documents.iter().find_map(|d| match d {
            Document::Resolver(r) => Some(r),
            _ => None,
        })
    }

    pub fn machine_type(&self) -> MachineType {
        self.v1alpha1.machine.machine_type
    }

    /// `machine.ca`, PEM-decoded. `None` when absent or its certificate is empty.
    pub fn os_ca(&self) -> Result<Option<CaCertificate>, ConfigError> {
        let Some(ca) = &self.v1alpha1.machine.ca else {
            return Ok(None);
        };
        if ca.crt.is_empty() {
            return Ok(None);
        }
        pki::pem_to_der_certs(ca.crt.as_str()).map_err(|source| ConfigError::Pem {
            path: "machine.ca.crt",
            source,
        })?;
        Ok(Some(CaCertificate {
            cert_pem: ca.crt.as_str().to_owned(),
            key_pem: ca.key().map(str::to_owned),
        }))
    }

    /// `machine.acceptedCAs` as PEM certificates.
    pub fn accepted_cas(&self) -> Vec<String> {
        self.v1alpha1
            .machine
            .accepted_cas
            .iter()
            .map(|ca| ca.crt.as_str().to_owned())
            .collect()
    }

    /// `machine.token`.
    pub fn machine_token(&self) -> Option<&str> {
        self.v1alpha1.machine.token.as_deref()
    }

    /// `machine.certSANs`.
    pub fn cert_sans(&self) -> &[String] {
        &self.v1alpha1.machine.cert_sans
    }

    /// The static hostname: `HostnameConfig.hostname`, else `machine.network.hostname`.
    pub fn hostname(&self) -> Option<&str> {
        self.hostname_config()
            .and_then(|h| h.hostname.as_deref())
            .or_else(|| self.network().and_then(|n| n.hostname.as_deref()))
    }

    /// `machine.network.interfaces`.
    pub fn interfaces(&self) -> &[v1alpha1::Interface] {
        self.network().map_or(&[], |n| n.interfaces.as_slice())
    }

    /// DNS servers: from `ResolverConfig` when present, else `machine.network.nameservers`.
    pub fn nameservers(&self) -> Vec<&str> {
        match self.resolver_config() {
            Some(resolver) if !resolver.nameservers.is_empty() => resolver
                .nameservers
                .iter()
                .map(|n| n.address.as_str())
                .collect(),
            _ => self.network().map_or(Vec::new(), |n| {
                n.nameservers.iter().map(String::as_str).collect()
            }),
        }
    }

    /// NTP servers: from `TimeSyncConfig` when present, else `machine.time.servers`.
    pub fn time_servers(&self) -> &[String] {
        if let Some(ntp) = self.time_sync_config().and_then(|t| t.ntp.as_ref()) {
            return &ntp.servers;
        }
        self.v1alpha1
            .machine
            .time
            .as_ref()
            .map_or(&[], |t| t.servers.as_slice())
    }

    /// `machine.install`.
    pub fn install(&self) -> Option<&v1alpha1::Install> {
        self.v1alpha1.machine.install.as_ref()
    }

    /// The disk to install onto: `machine.install.disk`, else the `UnattendedInstallConfig`
    /// disk selector when it names one device by path (what `gen config` writes).
    pub fn install_disk(&self) -> Result<Option<String>, ConfigError> {
        if let Some(disk) = self.install().and_then(|i| i.disk.clone()) {
            return Ok(Some(disk));
        }
        let Some(install) = self.document::<kinds::UnattendedInstallConfig>()? else {
            return Ok(None);
        };
        let Some(expression) = install
            .provisioning
            .and_then(|p| p.disk_selector)
            .and_then(|s| s.expression)
        else {
            return Ok(None);
        };
        dev_path_selector(&expression)
            .map(|path| Some(path.to_owned()))
            .ok_or_else(|| ConfigError::UnsupportedDiskSelector(expression.clone()))
    }

    /// `machine.features.rbac`. Absent means on: configs generated since Talos 1.12 omit the
    /// field because RBAC can no longer be turned off there; only an explicit `false` disables it.
    pub fn rbac_enabled(&self) -> bool {
        self.v1alpha1
            .machine
            .features
            .as_ref()
            .and_then(|f| f.rbac)
            .unwrap_or(true)
    }

    /// `machine.features.apidCheckExtKeyUsage`; absent means on, like RBAC.
    pub fn apid_check_ext_key_usage(&self) -> bool {
        self.v1alpha1
            .machine
            .features
            .as_ref()
            .and_then(|f| f.apid_check_ext_key_usage)
            .unwrap_or(true)
    }

    /// `cluster.clusterName`, else `KubeClusterConfig.clusterName` (the v1.14 layout).
    pub fn cluster_name(&self) -> Option<String> {
        self.v1alpha1
            .cluster
            .as_ref()
            .and_then(|c| c.cluster_name.clone())
            .or_else(|| self.kube_cluster().and_then(|k| k.cluster_name))
    }

    /// `cluster.controlPlane.endpoint`, else `KubeClusterConfig.endpoint` (the v1.14 layout).
    pub fn control_plane_endpoint(&self) -> Option<String> {
        self.v1alpha1
            .cluster
            .as_ref()
            .and_then(|c| c.control_plane.as_ref())
            .and_then(|cp| cp.endpoint.clone())
            .or_else(|| self.kube_cluster().and_then(|k| k.endpoint))
    }

    /// The CA that issues Kubernetes API certificates, with its key: `cluster.ca`, else the
    /// `KubeAPIServerCAConfig` document's issuing CA. `None` on workers, which hold no key.
    pub fn kubernetes_ca(&self) -> Option<pki::CertAndKey> {
        let from_cluster = self
            .v1alpha1
            .cluster
            .as_ref()
            .and_then(|c| c.ca.as_ref())
            .filter(|ca| !ca.crt.is_empty())
            .and_then(|ca| {
                Some(pki::CertAndKey {
                    cert_pem: ca.crt.as_str().to_owned(),
                    key_pem: ca.key()?.to_owned(),
                })
            });
        from_cluster.or_else(|| {
            let issuing = self
                .document::<kinds::KubeAPIServerCAConfig>()
                .ok()
                .flatten()?
                .issuing_ca?;
            Some(pki::CertAndKey {
                cert_pem: issuing.cert.filter(|c| !c.is_empty())?,
                key_pem: issuing.key.map(|k| k.expose().to_owned())?,
            })
        })
    }

    /// `cluster.adminKubeconfig.certLifetime`; it was validated.
    pub fn admin_kubeconfig_lifetime(&self) -> Option<std::time::Duration> {
        let lifetime = self
            .v1alpha1
            .cluster
            .as_ref()?
            .admin_kubeconfig
            .as_ref()?
            .cert_lifetime
            .as_deref()?;
        crate::duration::parse_go_duration(lifetime)
    }

    /// The `KubeClusterConfig` document; it was checked against its schema on decode.
    fn kube_cluster(&self) -> Option<kinds::KubeClusterConfig> {
        self.document::<kinds::KubeClusterConfig>().ok().flatten()
    }

    fn network(&self) -> Option<&v1alpha1::Network> {
        self.v1alpha1.machine.network.as_ref()
    }
}

fn normalize_document_text(text: &str) -> String {
    let text = match text.split_once('\n') {
        Some((first, rest)) if first.trim_end() == "---" => rest,
        _ if text.trim_end() == "---" => "",
        _ => text,
    };
    let text = text.trim_end();
    let text = text.strip_suffix("...").unwrap_or(text).trim_end();
    text.to_owned()
}

/// An `https://host:port` URL, as `cluster.controlPlane.endpoint` and `talosctl gen config` need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl {
    /// Host name or IP address, without IPv6 brackets.
    pub host: String,
    pub port: u16,
}

impl EndpointUrl {
    /// Parses `https://host:port` with an optional trailing path. The message says what is wrong.
    pub fn parse(url: &str) -> Result<EndpointUrl, String> {
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| format!("{url:?} must start with https://"))?;
        let authority = rest.split('/').next().unwrap_or_default();
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| format!("{url:?} has an unclosed IPv6 bracket"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        let port = port.ok_or_else(|| format!("{url:?} has no port (e.g. https://{host}:6443)"))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("{url:?} has an invalid port {port:?}"))?;
        Ok(EndpointUrl {
            host: host.to_owned(),
            port,
        })
    }
}

#[cfg(test)]
mod tests;
