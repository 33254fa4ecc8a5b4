//! Kubernetes client configs: the admin kubeconfig a control-plane node mints for
//! `talosctl kubeconfig`, and merging one into a user's existing file.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};
use crate::config::Config;
use crate::config::raw::RawValue;
use crate::pki::{self, PkiError};

/// Lifetime of the admin certificate unless `cluster.adminKubeconfig.certLifetime` says otherwise.
pub const ADMIN_CERT_LIFETIME: Duration = Duration::from_secs(8_760 * 3600);
/// The Kubernetes user of the admin kubeconfig.
pub const ADMIN_USER: &str = "admin";
/// The group that Kubernetes binds to cluster-admin.
pub const ADMIN_GROUP: &str = "system:masters";

#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error(
        "the machine config holds no Kubernetes CA key (cluster.ca.key): only control-plane nodes mint kubeconfigs"
    )]
    NoCa,
    #[error("the machine config has no cluster.controlPlane.endpoint")]
    NoEndpoint,
    #[error("the machine config has no cluster.clusterName")]
    NoClusterName,
    #[error("cannot issue the admin certificate")]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// A kubeconfig file. Entries are kept as written, so merging into a user's file loses nothing.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Kubeconfig {
    #[serde(rename = "apiVersion", default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub clusters: Vec<Named>,
    #[serde(default)]
    pub users: Vec<Named>,
    #[serde(default)]
    pub contexts: Vec<Named>,
    #[serde(rename = "current-context", default)]
    pub current_context: String,
    /// Everything else (`preferences`, `extensions`).
    #[serde(flatten)]
    pub other: BTreeMap<String, RawValue>,
}

/// A named cluster, user or context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Named {
    pub name: String,
    /// The `cluster`, `user` or `context` mapping, and anything written beside it.
    #[serde(flatten)]
    pub body: BTreeMap<String, RawValue>,
}

/// What a merge did to an entry of the incoming kubeconfig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeNote {
    /// A different entry had the name; the incoming one was renamed.
    Renamed {
        kind: &'static str,
        from: String,
        to: String,
    },
    /// A different entry had the name and was replaced.
    Replaced { kind: &'static str, name: String },
}

impl Named {
    fn new(name: &str, key: &str, fields: &[(&str, &str)]) -> Named {
        let mapping = fields
            .iter()
            .map(|(k, v)| (RawValue::string(*k), RawValue::string(*v)))
            .collect();
        Named {
            name: name.to_owned(),
            body: BTreeMap::from([(key.to_owned(), RawValue::Map(mapping))]),
        }
    }

    /// A string field of the inner mapping, e.g. a context's `cluster`.
    fn field(&self, key: &str, field: &str) -> Option<&str> {
        self.body.get(key)?.get(field)?.as_str()
    }

    fn rename_reference(&mut self, field: &str, renames: &BTreeMap<String, String>) {
        let Some(value) = self
            .body
            .get_mut("context")
            .and_then(|context| context.get_mut(field))
        else {
            return;
        };
        if let Some(new) = value.as_str().and_then(|old| renames.get(old)) {
            *value = RawValue::string(new.clone());
        }
    }
}

/// Mints an admin kubeconfig from a control-plane node's config: a new ECDSA client certificate
/// (CN=admin, O=system:masters) issued by the Kubernetes CA, for the control-plane endpoint.
pub fn admin(config: &Config, now: SystemTime) -> Result<Kubeconfig, KubeconfigError> {
    let ca = config.kubernetes_ca().ok_or(KubeconfigError::NoCa)?;
    let endpoint = config
        .control_plane_endpoint()
        .filter(|e| !e.is_empty())
        .ok_or(KubeconfigError::NoEndpoint)?;
    let cluster = config
        .cluster_name()
        .filter(|n| !n.is_empty())
        .ok_or(KubeconfigError::NoClusterName)?;
    let lifetime = config
        .admin_kubeconfig_lifetime()
        .unwrap_or(ADMIN_CERT_LIFETIME);
    let cert = pki::issue_kubernetes_client_cert(&ca, ADMIN_USER, ADMIN_GROUP, lifetime, now)?;
    let name = format!("{ADMIN_USER}@{cluster}");
    let b64 = |pem: &str| STANDARD.encode(pem);
    Ok(Kubeconfig {
        api_version: "v1".into(),
        kind: "Config".into(),
        clusters: vec![Named::new(
            &cluster,
            "cluster",
            &[
                ("server", &endpoint),
                ("certificate-authority-data", &b64(&ca.cert_pem)),
            ],
        )],
        users: vec![Named::new(
            &name,
            "user",
            &[
                ("client-certificate-data", &b64(&cert.cert_pem)),
                ("client-key-data", &b64(&cert.key_pem)),
            ],
        )],
        contexts: vec![Named::new(
            &name,
            "context",
            &[
                ("cluster", &cluster),
                ("namespace", "default"),
                ("user", &name),
            ],
        )],
        current_context: name,
        other: BTreeMap::new(),
    })
}

impl Kubeconfig {
    pub fn from_yaml(input: &str) -> Result<Kubeconfig, KubeconfigError> {
        Ok(codec::from_yaml(input)?)
    }

    pub fn to_yaml(&self) -> Result<String, KubeconfigError> {
        Ok(codec::to_yaml(self)?)
    }

    /// The server URL of a cluster.
    pub fn server(&self, cluster: &str) -> Option<&str> {
        self.clusters
            .iter()
            .find(|c| c.name == cluster)?
            .field("cluster", "server")
    }

    /// The cluster and user a context names.
    pub fn context(&self, name: &str) -> Option<(&str, &str)> {
        let context = self.contexts.iter().find(|c| c.name == name)?;
        Some((
            context.field("context", "cluster")?,
            context.field("context", "user")?,
        ))
    }

    /// Adds `incoming`'s clusters, users and contexts and makes its current context current.
    /// An entry whose name is taken by a different entry is renamed with a `-1`, `-2`, … suffix
    /// (contexts follow their cluster and user), or replaces it when `replace` is set.
    pub fn merge(&mut self, incoming: Kubeconfig, replace: bool) -> Vec<MergeNote> {
        let mut notes = Vec::new();
        if self.api_version.is_empty() {
            self.api_version = "v1".into();
        }
        if self.kind.is_empty() {
            self.kind = "Config".into();
        }
        let clusters = add_entries(
            &mut self.clusters,
            incoming.clusters,
            "cluster",
            replace,
            &mut notes,
        );
        let users = add_entries(&mut self.users, incoming.users, "user", replace, &mut notes);
        let contexts: Vec<Named> = incoming
            .contexts
            .into_iter()
            .map(|mut context| {
                context.rename_reference("cluster", &clusters);
                context.rename_reference("user", &users);
                context
            })
            .collect();
        let renamed = add_entries(&mut self.contexts, contexts, "context", replace, &mut notes);
        self.current_context = renamed
            .get(&incoming.current_context)
            .cloned()
            .unwrap_or(incoming.current_context);
        notes
    }
}

/// Adds `incoming` to `existing`; returns the renames it made.
fn add_entries(
    existing: &mut Vec<Named>,
    incoming: Vec<Named>,
    kind: &'static str,
    replace: bool,
    notes: &mut Vec<MergeNote>,
) -> BTreeMap<String, String> {
    let mut renames = BTreeMap::new();
    for mut entry in incoming {
        let Some(index) = existing.iter().position(|e| e.name == entry.name) else {
            existing.push(entry);
            continue;
        };
        if existing[index].body == entry.body {
            continue;
        }
        if replace {
            notes.push(MergeNote::Replaced {
                kind,
                name: entry.name.clone(),
            });
            existing[index] = entry;
            continue;
        }
        let free = (1..)
            .map(|n| format!("{}-{n}", entry.name))
            .find(|candidate| existing.iter().all(|e| &e.name != candidate))
            .expect("some suffix is free");
        let old = std::mem::replace(&mut entry.name, free.clone());
        notes.push(MergeNote::Renamed {
            kind,
            from: old.clone(),
            to: free.clone(),
        });
        renames.insert(old, free);
        existing.push(entry);
    }
    renames
}

#[cfg(test)]
mod tests;
