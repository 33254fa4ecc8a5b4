//! The secrets bundle written by `talosctl gen secrets` (`secrets.yaml`): every CA, key and token
//! a cluster's configs are generated from.

use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::b64::Base64Text;
use crate::codec::{self, CodecError};
use crate::pki::{self, CaSubject, CertAndKey, PkiError};
use crate::secret::Secret;

/// A secrets bundle could not be generated, read or written.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("Cannot generate secrets")]
    Pki(#[from] PkiError),
    #[error("Invalid secrets bundle: {0}")]
    Codec(#[from] CodecError),
    #[error("Invalid secrets bundle: {path}: {message}")]
    Invalid { path: &'static str, message: String },
}

/// `secrets.yaml`, with upstream's key names. PEM values are base64 in YAML and decoded here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsBundle {
    pub cluster: ClusterSecrets,
    pub secrets: Secrets,
    pub trustdinfo: TrustdInfo,
    pub certs: Certs,
}

/// Discovery identity: 32 random bytes each, base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSecrets {
    pub id: String,
    pub secret: Secret,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secrets {
    /// Kubelet bootstrap token, `[a-z0-9]{6}.[a-z0-9]{16}`.
    pub bootstraptoken: Secret,
    /// 32 random bytes, base64.
    pub secretboxencryptionsecret: Secret,
    /// Older bundles may carry an AES-CBC key instead of, or besides, the secretbox key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aescbcencryptionsecret: Option<Secret>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustdInfo {
    /// The machine token workers present to trustd.
    pub token: Secret,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certs {
    pub etcd: PemPair,
    pub k8s: PemPair,
    pub k8saggregator: PemPair,
    pub k8sserviceaccount: PemKey,
    pub os: PemPair,
}

/// A certificate and key, each base64 PEM in YAML.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PemPair {
    pub crt: Base64Text,
    pub key: Base64Text,
}

/// A lone key, base64 PEM in YAML.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PemKey {
    pub key: Base64Text,
}

impl From<CertAndKey> for PemPair {
    fn from(pair: CertAndKey) -> PemPair {
        PemPair {
            crt: Base64Text(pair.cert_pem),
            key: Base64Text(pair.key_pem),
        }
    }
}

impl PemPair {
    pub fn to_cert_and_key(&self) -> CertAndKey {
        CertAndKey {
            cert_pem: self.crt.0.clone(),
            key_pem: self.key.0.clone(),
        }
    }
}

impl SecretsBundle {
    /// Generates a fresh bundle: the Ed25519 OS CA, ECDSA P-256 etcd/Kubernetes/aggregator CAs,
    /// the RSA-4096 service-account key, tokens and random secrets.
    pub fn generate(now: SystemTime) -> Result<SecretsBundle, SecretsError> {
        Ok(SecretsBundle {
            cluster: ClusterSecrets {
                id: STANDARD.encode(pki::random_secret::<32>()?),
                secret: STANDARD.encode(pki::random_secret::<32>()?).into(),
            },
            secrets: Secrets {
                bootstraptoken: pki::try_new_token()?.into(),
                secretboxencryptionsecret: STANDARD.encode(pki::random_secret::<32>()?).into(),
                aescbcencryptionsecret: None,
            },
            trustdinfo: TrustdInfo {
                token: pki::try_new_token()?.into(),
            },
            certs: Certs {
                etcd: pki::new_ecdsa_ca(CaSubject::Organization("etcd".into()), now)?.into(),
                k8s: pki::new_ecdsa_ca(CaSubject::Organization("kubernetes".into()), now)?.into(),
                k8saggregator: pki::new_ecdsa_ca(CaSubject::CommonName("front-proxy".into()), now)?
                    .into(),
                k8sserviceaccount: PemKey {
                    key: Base64Text(pki::new_rsa_key(pki::SERVICE_ACCOUNT_KEY_BITS)?),
                },
                os: pki::new_os_ca(now)?.into(),
            },
        })
    }

    /// Parses `secrets.yaml` and checks that each CA key matches its certificate.
    pub fn from_yaml(input: &str) -> Result<SecretsBundle, SecretsError> {
        let bundle: SecretsBundle = codec::from_yaml(input)?;
        bundle.check()?;
        Ok(bundle)
    }

    pub fn to_yaml(&self) -> Result<String, SecretsError> {
        Ok(codec::to_yaml(self)?)
    }

    /// The Talos OS CA.
    pub fn os_ca(&self) -> CertAndKey {
        self.certs.os.to_cert_and_key()
    }

    fn check(&self) -> Result<(), SecretsError> {
        let pairs = [
            ("certs.os", &self.certs.os),
            ("certs.etcd", &self.certs.etcd),
            ("certs.k8s", &self.certs.k8s),
            ("certs.k8saggregator", &self.certs.k8saggregator),
        ];
        for (path, pair) in pairs {
            let matches =
                pki::key_matches_cert(pair.crt.as_str(), pair.key.as_str()).map_err(|e| {
                    SecretsError::Invalid {
                        path,
                        message: e.to_string(),
                    }
                })?;
            if !matches {
                return Err(SecretsError::Invalid {
                    path,
                    message: "key does not match certificate".into(),
                });
            }
        }
        pki::parse_private_key(self.certs.k8sserviceaccount.key.as_str()).map_err(|e| {
            SecretsError::Invalid {
                path: "certs.k8sserviceaccount.key",
                message: e.to_string(),
            }
        })?;
        for (path, token) in [
            ("trustdinfo.token", &self.trustdinfo.token),
            ("secrets.bootstraptoken", &self.secrets.bootstraptoken),
        ] {
            if !pki::is_valid_token(token) {
                return Err(SecretsError::Invalid {
                    path,
                    message: "token is not in [a-z0-9]{6}.[a-z0-9]{16} format".into(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_bundle_round_trips_through_yaml() {
        let bundle = SecretsBundle::generate(SystemTime::now()).unwrap();
        let text = bundle.to_yaml().unwrap();
        assert!(text.contains("bootstraptoken:"));
        assert!(text.contains("k8sserviceaccount:"));
        assert!(!text.contains("BEGIN"), "PEM must be base64 in YAML");
        assert_eq!(SecretsBundle::from_yaml(&text).unwrap(), bundle);
    }

    #[test]
    fn service_account_key_is_rsa_4096_in_pkcs1() {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        use rsa::traits::PublicKeyParts;
        let bundle = SecretsBundle::generate(SystemTime::now()).unwrap();
        let pem = bundle.certs.k8sserviceaccount.key.as_str();
        assert!(
            pem.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"),
            "{pem}"
        );
        let key = rsa::PrivateKey::from_pkcs1_pem(pem).unwrap();
        assert_eq!(key.n().bit_width(), 4096);
        pki::parse_private_key(pem).unwrap();

        let mut broken = bundle.clone();
        broken.certs.k8sserviceaccount.key = Base64Text(pem.replace("MII", "XII"));
        let err = SecretsBundle::from_yaml(&broken.to_yaml().unwrap()).unwrap_err();
        assert!(
            err.to_string().contains("certs.k8sserviceaccount.key"),
            "{err}"
        );
    }

    #[test]
    fn mismatched_key_is_refused_with_its_path() {
        let mut bundle = SecretsBundle::generate(SystemTime::now()).unwrap();
        bundle.certs.os.key = bundle.certs.etcd.key.clone();
        let text = bundle.to_yaml().unwrap();
        let err = SecretsBundle::from_yaml(&text).unwrap_err();
        assert!(err.to_string().contains("certs.os"), "{err}");
    }
}
