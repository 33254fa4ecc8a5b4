//! Certificates and keys: the Talos OS CA, client certificates whose Organization names carry
//! roles, server certificates for apid, and the PEM formats upstream Talos reads and writes.
//!
//! Keys are written with upstream's PEM labels: `ED25519 PRIVATE KEY` (PKCS#8 content) for
//! Ed25519, `EC PRIVATE KEY` (SEC1 content, curve named) for ECDSA and `RSA PRIVATE KEY`
//! (PKCS#1) for the Kubernetes service-account key. [`pem_to_der_key`] reads
//! any `* PRIVATE KEY` block and always returns PKCS#8, converting SEC1 and PKCS#1 content.

mod der;

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_ED25519, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Lifetime of the Talos OS CA and the other cluster CAs (87,600 h).
pub const OS_CA_VALIDITY: Duration = Duration::from_secs(87_600 * 3600);
/// Lifetime of a talosconfig client certificate (8,760 h).
pub const CLIENT_CERT_VALIDITY: Duration = Duration::from_secs(8_760 * 3600);
/// Certificates are valid from this long before they are issued, so a peer whose clock is a
/// little behind (a board without an RTC, a VM) does not see them as not yet valid.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(5 * 60);

const CERTIFICATE_LABEL: &str = "CERTIFICATE";
const ED25519_KEY_LABEL: &str = "ED25519 PRIVATE KEY";
const EC_KEY_LABEL: &str = "EC PRIVATE KEY";
const RSA_KEY_LABEL: &str = "RSA PRIVATE KEY";

/// Size of the Kubernetes service-account signing key, as in upstream's config contracts after 1.6.
pub const SERVICE_ACCOUNT_KEY_BITS: usize = 4096;

/// A PKI operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("No PEM block labelled {0} found")]
    MissingPem(&'static str),
    #[error("Malformed PEM: {0}")]
    MalformedPem(String),
    #[error("Malformed DER: {0}")]
    MalformedDer(String),
    #[error("Unsupported private key: {0}")]
    UnsupportedKey(String),
    #[error("Cannot parse certificate: {0}")]
    Certificate(String),
    #[error("Certificate signature does not verify against the issuer: {0}")]
    BadSignature(String),
    #[error("Invalid subject alternative name {0:?}")]
    InvalidSan(String),
    #[error("Validity period does not fit a certificate: {0}")]
    InvalidTime(String),
    #[error("Cannot build certificate")]
    Rcgen(#[from] rcgen::Error),
    #[error("Cannot generate an RSA key: {0}")]
    RsaKey(String),
    #[error("System random number generator failed")]
    Random,
}

/// A PEM certificate and its PEM private key. `Debug` never prints the key.
#[derive(Clone, PartialEq, Eq)]
pub struct CertAndKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for CertAndKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertAndKey")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl CertAndKey {
    /// DER of the first certificate.
    pub fn cert_der(&self) -> Result<Vec<u8>, PkiError> {
        first_cert(&self.cert_pem)
    }

    /// PKCS#8 DER of the key.
    pub fn key_der(&self) -> Result<Vec<u8>, PkiError> {
        pem_to_der_key(&self.key_pem)
    }
}

/// Subject of an ECDSA cluster CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSubject {
    Organization(String),
    CommonName(String),
}

/// A subject alternative name of a server certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SubjectAltName {
    Ip(IpAddr),
    Dns(String),
}

impl SubjectAltName {
    /// An IP address if `value` parses as one, a DNS name otherwise.
    pub fn parse(value: &str) -> SubjectAltName {
        match value.parse() {
            Ok(ip) => SubjectAltName::Ip(ip),
            Err(_) => SubjectAltName::Dns(value.to_owned()),
        }
    }
}

/// An extended key usage found in a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtKeyUsage {
    Any,
    ServerAuth,
    ClientAuth,
    CodeSigning,
    EmailProtection,
    TimeStamping,
    OcspSigning,
    /// Any other usage, by dotted OID.
    Other(String),
}

/// Creates the Talos OS CA: Ed25519, O=talos, valid [`OS_CA_VALIDITY`] from `now`.
pub fn new_os_ca(now: SystemTime) -> Result<CertAndKey, PkiError> {
    let key = KeyPair::generate_for(&PKCS_ED25519)?;
    let mut subject = DistinguishedName::new();
    subject.push(DnType::OrganizationName, "talos");
    self_signed_ca(key, subject, now)
}

/// Creates an ECDSA P-256 cluster CA (etcd, Kubernetes, aggregator), valid [`OS_CA_VALIDITY`].
pub fn new_ecdsa_ca(subject: CaSubject, now: SystemTime) -> Result<CertAndKey, PkiError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut name = DistinguishedName::new();
    match subject {
        CaSubject::Organization(o) => name.push(DnType::OrganizationName, o),
        CaSubject::CommonName(cn) => name.push(DnType::CommonName, cn),
    }
    self_signed_ca(key, name, now)
}

fn self_signed_ca(
    key: KeyPair,
    subject: DistinguishedName,
    now: SystemTime,
) -> Result<CertAndKey, PkiError> {
    let mut params = base_params(now, OS_CA_VALIDITY)?;
    params.distinguished_name = subject;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.self_signed(&key)?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key_to_pem(&key)?,
    })
}

/// Issues an Ed25519 client certificate whose Organization names are the roles, with
/// KeyUsage DigitalSignature and ExtKeyUsage ClientAuth only.
pub fn issue_client_cert(
    ca: &CertAndKey,
    roles: &[crate::role::Role],
    validity: Duration,
    now: SystemTime,
) -> Result<CertAndKey, PkiError> {
    let key = KeyPair::generate_for(&PKCS_ED25519)?;
    let mut params = base_params(now, validity)?;
    params.distinguished_name = DistinguishedName::new();
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let ca_key_der = ca.key_der()?;
    let issuer = issuer(ca, &ca_key_der)?;
    let cert = params.signed_by(&key, &issuer)?;
    // rcgen keeps one value per attribute type, so the repeated O=<role> subject is written here
    // and the certificate signed again.
    let organizations: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    let der = replace_subject(cert.der(), &organizations, &ca_key_der)?;
    Ok(CertAndKey {
        cert_pem: der_to_pem(CERTIFICATE_LABEL, &der),
        key_pem: key_to_pem(&key)?,
    })
}

/// Issues an Ed25519 server certificate (KeyUsage DigitalSignature, ExtKeyUsage ServerAuth only).
pub fn issue_server_cert(
    ca: &CertAndKey,
    common_name: &str,
    sans: &[SubjectAltName],
    validity: Duration,
    now: SystemTime,
) -> Result<CertAndKey, PkiError> {
    let key = KeyPair::generate_for(&PKCS_ED25519)?;
    let params = server_params(common_name, sans, validity, now)?;
    signed_by_ca(&params, key, ca)
}

/// Issues an ECDSA P-256 certificate for both ends of mutual TLS (ExtKeyUsage ServerAuth and
/// ClientAuth), as etcd's server and peer certificates must be: etcd also dials itself and its
/// peers with them.
pub fn issue_peer_cert(
    ca: &CertAndKey,
    common_name: &str,
    sans: &[SubjectAltName],
    validity: Duration,
    now: SystemTime,
) -> Result<CertAndKey, PkiError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = server_params(common_name, sans, validity, now)?;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    signed_by_ca(&params, key, ca)
}

/// Issues an ECDSA P-256 client certificate for the Kubernetes API: the user is the Common
/// Name and the group the Organization (ExtKeyUsage ClientAuth only).
pub fn issue_kubernetes_client_cert(
    ca: &CertAndKey,
    user: &str,
    group: &str,
    validity: Duration,
    now: SystemTime,
) -> Result<CertAndKey, PkiError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = base_params(now, validity)?;
    let mut subject = DistinguishedName::new();
    subject.push(DnType::OrganizationName, group);
    subject.push(DnType::CommonName, user);
    params.distinguished_name = subject;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    signed_by_ca(&params, key, ca)
}

fn signed_by_ca(
    params: &CertificateParams,
    key: KeyPair,
    ca: &CertAndKey,
) -> Result<CertAndKey, PkiError> {
    let ca_key_der = ca.key_der()?;
    let issuer = issuer(ca, &ca_key_der)?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key_to_pem(&key)?,
    })
}

/// A self-signed Ed25519 server certificate, for maintenance mode (no CA exists yet).
pub fn self_signed_server_cert(
    common_name: &str,
    sans: &[SubjectAltName],
    validity: Duration,
    now: SystemTime,
) -> Result<CertAndKey, PkiError> {
    let key = KeyPair::generate_for(&PKCS_ED25519)?;
    let params = server_params(common_name, sans, validity, now)?;
    let cert = params.self_signed(&key)?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key_to_pem(&key)?,
    })
}

fn server_params(
    common_name: &str,
    sans: &[SubjectAltName],
    validity: Duration,
    now: SystemTime,
) -> Result<CertificateParams, PkiError> {
    let mut params = base_params(now, validity)?;
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, common_name);
    params.distinguished_name = subject;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.subject_alt_names = sans
        .iter()
        .map(|san| match san {
            SubjectAltName::Ip(ip) => Ok(SanType::IpAddress(*ip)),
            SubjectAltName::Dns(name) => name
                .as_str()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|_| PkiError::InvalidSan(name.clone())),
        })
        .collect::<Result<_, _>>()?;
    Ok(params)
}

fn base_params(now: SystemTime, validity: Duration) -> Result<CertificateParams, PkiError> {
    let issued = unix_seconds(now)?;
    let skew = i64::try_from(CLOCK_SKEW_ALLOWANCE.as_secs()).unwrap_or(0);
    let start = issued.saturating_sub(skew);
    let end = issued
        .checked_add(i64::try_from(validity.as_secs()).map_err(|_| too_long(validity))?)
        .ok_or_else(|| too_long(validity))?;
    let mut params = CertificateParams::default();
    params.not_before = asn1_time(start)?.to_datetime();
    params.not_after = asn1_time(end)?.to_datetime();
    let mut serial = random_bytes::<16>()?;
    serial[0] &= 0x7f;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn too_long(validity: Duration) -> PkiError {
    PkiError::InvalidTime(format!("validity of {} s is too long", validity.as_secs()))
}

fn unix_seconds(time: SystemTime) -> Result<i64, PkiError> {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map_err(|_| PkiError::InvalidTime("time is before 1970".into()))?
        .as_secs();
    i64::try_from(secs).map_err(|_| PkiError::InvalidTime(format!("{secs} s after 1970")))
}

fn asn1_time(unix: i64) -> Result<x509_parser::time::ASN1Time, PkiError> {
    x509_parser::time::ASN1Time::from_timestamp(unix)
        .map_err(|e| PkiError::InvalidTime(e.to_string()))
}

fn issuer<'a>(ca: &CertAndKey, ca_key_der: &[u8]) -> Result<Issuer<'a, KeyPair>, PkiError> {
    let key = KeyPair::try_from(ca_key_der)
        .map_err(|e| PkiError::UnsupportedKey(format!("CA key: {e}")))?;
    let cert = ca.cert_der()?;
    Ok(Issuer::from_ca_cert_der(&cert.as_slice().into(), key)?)
}

/// Rewrites the subject to one O=<name> RDN per organization and re-signs with the CA key.
fn replace_subject(
    cert_der: &[u8],
    organizations: &[&str],
    ca_key_der: &[u8],
) -> Result<Vec<u8>, PkiError> {
    let (cert, _) = der::expect(cert_der, der::SEQUENCE)?;
    let parts = der::children(cert.content)?;
    let [tbs, algorithm, _signature] = parts.as_slice() else {
        return Err(PkiError::MalformedDer(
            "certificate is not three elements".into(),
        ));
    };
    let fields = der::children(tbs.content)?;
    let subject_index = if fields.first().map(|f| f.tag) == Some(der::CONTEXT_0) {
        5
    } else {
        4
    };
    if fields.len() <= subject_index {
        return Err(PkiError::MalformedDer("certificate has no subject".into()));
    }
    let rdns: Vec<Vec<u8>> = organizations
        .iter()
        .map(|org| {
            let attribute = der::write_parts(
                der::SEQUENCE,
                &[
                    &der::write(der::OID, der::OID_ORGANIZATION),
                    &der::write(der::UTF8_STRING, org.as_bytes()),
                ],
            );
            der::write(der::SET, &attribute)
        })
        .collect();
    let subject = der::write(der::SEQUENCE, &rdns.concat());
    let mut tbs_content = Vec::with_capacity(tbs.content.len() + subject.len());
    for (i, field) in fields.iter().enumerate() {
        if i == subject_index {
            tbs_content.extend_from_slice(&subject);
        } else {
            tbs_content.extend_from_slice(field.raw);
        }
    }
    let new_tbs = der::write(der::SEQUENCE, &tbs_content);
    let mut signature = vec![0u8];
    signature.extend_from_slice(&sign(ca_key_der, &new_tbs)?);
    Ok(der::write_parts(
        der::SEQUENCE,
        &[
            &new_tbs,
            algorithm.raw,
            &der::write(der::BIT_STRING, &signature),
        ],
    ))
}

fn sign(key_pkcs8: &[u8], message: &[u8]) -> Result<Vec<u8>, PkiError> {
    if let Ok(key) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(key_pkcs8) {
        return Ok(key.sign(message).as_ref().to_vec());
    }
    let rng = SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, key_pkcs8, &rng)
        .map_err(|e| PkiError::UnsupportedKey(format!("CA key cannot sign: {e}")))?;
    key.sign(&rng, message)
        .map(|s| s.as_ref().to_vec())
        .map_err(|_| PkiError::Random)
}

fn random_bytes<const N: usize>() -> Result<[u8; N], PkiError> {
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| PkiError::Random)?;
    Ok(out)
}

/// A new RSA private key of `bits` bits, as PKCS#1 PEM under `RSA PRIVATE KEY`.
pub fn new_rsa_key(bits: usize) -> Result<String, PkiError> {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    let key = rsa::PrivateKey::new(&mut getrandom::SysRng, bits)
        .map_err(|e| PkiError::RsaKey(e.to_string()))?;
    let der = key
        .to_pkcs1_der()
        .map_err(|e| PkiError::RsaKey(e.to_string()))?;
    Ok(der_to_pem(RSA_KEY_LABEL, der.as_bytes()))
}

/// Random bytes from the system generator, for secrets.
pub(crate) fn random_secret<const N: usize>() -> Result<[u8; N], PkiError> {
    random_bytes()
}

/// A new token in the `[a-z0-9]{6}.[a-z0-9]{16}` format used for machine and bootstrap tokens.
///
/// # Panics
/// If the operating system's random number generator fails.
pub fn new_token() -> String {
    try_new_token().expect("system random number generator failed")
}

/// [`new_token`] reporting a failing random number generator as an error.
pub fn try_new_token() -> Result<String, PkiError> {
    const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    // 252 is the largest multiple of 36 below 256: rejecting larger bytes keeps it uniform.
    let mut chars = Vec::with_capacity(22);
    while chars.len() < 22 {
        for byte in random_bytes::<32>()? {
            if byte < 252 && chars.len() < 22 {
                chars.push(ALPHABET[usize::from(byte % 36)]);
            }
        }
    }
    let text = String::from_utf8(chars).map_err(|_| PkiError::Random)?;
    Ok(format!("{}.{}", &text[..6], &text[6..]))
}

/// True if `token` has the `[a-z0-9]{6}.[a-z0-9]{16}` shape.
pub fn is_valid_token(token: &str) -> bool {
    let allowed = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    match token.split_once('.') {
        Some((id, secret)) => id.len() == 6 && secret.len() == 16 && allowed(id) && allowed(secret),
        None => false,
    }
}

/// Every PEM block in `pem` as (label, DER).
pub fn parse_pem(pem: &str) -> Result<Vec<(String, Vec<u8>)>, PkiError> {
    let mut blocks = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in pem.lines().map(str::trim) {
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            if current.is_some() {
                return Err(PkiError::MalformedPem(format!(
                    "BEGIN {label} inside another block"
                )));
            }
            current = Some((label.to_owned(), String::new()));
        } else if let Some(label) = line
            .strip_prefix("-----END ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            let Some((begin, body)) = current.take() else {
                return Err(PkiError::MalformedPem(format!("END {label} without BEGIN")));
            };
            if begin != label {
                return Err(PkiError::MalformedPem(format!(
                    "BEGIN {begin} closed by END {label}"
                )));
            }
            let der = STANDARD
                .decode(body)
                .map_err(|e| PkiError::MalformedPem(format!("{label}: {e}")))?;
            blocks.push((label.to_owned(), der));
        } else if let Some((_, body)) = current.as_mut()
            && !line.contains(':')
        {
            // Lines with a colon are RFC 1421 headers, not base64.
            body.push_str(line);
        }
    }
    if let Some((label, _)) = current {
        return Err(PkiError::MalformedPem(format!("BEGIN {label} without END")));
    }
    Ok(blocks)
}

/// Encodes DER as a PEM block with 64-character lines.
pub fn der_to_pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The DER of every `CERTIFICATE` block, in order. Errors if there is none.
pub fn pem_to_der_certs(pem: &str) -> Result<Vec<Vec<u8>>, PkiError> {
    let certs: Vec<Vec<u8>> = parse_pem(pem)?
        .into_iter()
        .filter(|(label, _)| label == CERTIFICATE_LABEL)
        .map(|(_, der)| der)
        .collect();
    if certs.is_empty() {
        return Err(PkiError::MissingPem(CERTIFICATE_LABEL));
    }
    Ok(certs)
}

fn first_cert(pem: &str) -> Result<Vec<u8>, PkiError> {
    pem_to_der_certs(pem)?
        .into_iter()
        .next()
        .ok_or(PkiError::MissingPem(CERTIFICATE_LABEL))
}

/// The first private key in `pem`, as PKCS#8 DER.
///
/// Accepts any `* PRIVATE KEY` label except `ENCRYPTED PRIVATE KEY` and looks at the content, not
/// the label: PKCS#8 is returned as is; SEC1 (`EC PRIVATE KEY`) is wrapped into PKCS#8 with its
/// curve (P-256 when the key does not name one); PKCS#1 (`RSA PRIVATE KEY`) is wrapped too.
pub fn pem_to_der_key(pem: &str) -> Result<Vec<u8>, PkiError> {
    let (label, der) = parse_pem(pem)?
        .into_iter()
        .find(|(label, _)| label.ends_with("PRIVATE KEY"))
        .ok_or(PkiError::MissingPem("PRIVATE KEY"))?;
    if label == "ENCRYPTED PRIVATE KEY" {
        return Err(PkiError::UnsupportedKey(
            "encrypted keys are not supported".into(),
        ));
    }
    to_pkcs8(&der)
}

fn to_pkcs8(der: &[u8]) -> Result<Vec<u8>, PkiError> {
    let (outer, _) = der::expect(der, der::SEQUENCE)?;
    let fields = der::children(outer.content)?;
    match fields.as_slice() {
        [version, second, ..] if version.tag == der::INTEGER && second.tag == der::SEQUENCE => {
            Ok(der.to_vec())
        }
        [version, second, rest @ ..]
            if version.tag == der::INTEGER
                && version.content == [1]
                && second.tag == der::OCTET_STRING =>
        {
            let curve = match rest.iter().find(|f| f.tag == der::CONTEXT_0) {
                Some(params) => params.content.to_vec(),
                None => der::write(der::OID, der::OID_P256),
            };
            let algorithm = der::write_parts(
                der::SEQUENCE,
                &[&der::write(der::OID, der::OID_EC_PUBLIC_KEY), &curve],
            );
            Ok(pkcs8(&algorithm, der))
        }
        [version, modulus, ..] if version.tag == der::INTEGER && modulus.tag == der::INTEGER => {
            let algorithm = der::write_parts(
                der::SEQUENCE,
                &[
                    &der::write(der::OID, der::OID_RSA),
                    &der::write(der::NULL, &[]),
                ],
            );
            Ok(pkcs8(&algorithm, der))
        }
        _ => Err(PkiError::UnsupportedKey(
            "neither PKCS#8, SEC1 nor PKCS#1".into(),
        )),
    }
}

fn pkcs8(algorithm: &[u8], private_key: &[u8]) -> Vec<u8> {
    der::write_parts(
        der::SEQUENCE,
        &[
            &der::write(der::INTEGER, &[0]),
            algorithm,
            &der::write(der::OCTET_STRING, private_key),
        ],
    )
}

/// Writes a key the way upstream does: Ed25519 as PKCS#8 v1 under `ED25519 PRIVATE KEY`,
/// ECDSA as SEC1 (with the curve named) under `EC PRIVATE KEY`.
fn key_to_pem(key: &KeyPair) -> Result<String, PkiError> {
    let (outer, _) = der::expect(key.serialized_der(), der::SEQUENCE)?;
    let fields = der::children(outer.content)?;
    let [_, algorithm, private, ..] = fields.as_slice() else {
        return Err(PkiError::MalformedDer("PKCS#8 key is too short".into()));
    };
    let oids = der::children(algorithm.content)?;
    match oids.as_slice() {
        [oid] if oid.content == der::OID_ED25519 => {
            // Drop ring's embedded public key: PKCS#8 v1 is what upstream writes.
            let v1 = pkcs8(algorithm.raw, private.content);
            Ok(der_to_pem(ED25519_KEY_LABEL, &v1))
        }
        [oid, curve] if oid.content == der::OID_EC_PUBLIC_KEY => {
            let (inner, _) = der::expect(private.content, der::SEQUENCE)?;
            let inner_fields = der::children(inner.content)?;
            let [version, secret, rest @ ..] = inner_fields.as_slice() else {
                return Err(PkiError::MalformedDer("EC private key is too short".into()));
            };
            let public = rest
                .iter()
                .find(|f| f.tag == der::CONTEXT_1)
                .ok_or_else(|| PkiError::MalformedDer("EC private key has no public key".into()))?;
            let sec1 = der::write_parts(
                der::SEQUENCE,
                &[
                    version.raw,
                    secret.raw,
                    &der::write(der::CONTEXT_0, curve.raw),
                    public.raw,
                ],
            );
            Ok(der_to_pem(EC_KEY_LABEL, &sec1))
        }
        _ => Err(PkiError::UnsupportedKey(
            "only Ed25519 and ECDSA keys are written".into(),
        )),
    }
}

fn parse_cert(cert_der: &[u8]) -> Result<X509Certificate<'_>, PkiError> {
    X509Certificate::from_der(cert_der)
        .map(|(_, cert)| cert)
        .map_err(|e| PkiError::Certificate(e.to_string()))
}

/// The subject's Organization values, in order.
pub fn cert_organizations(cert_der: &[u8]) -> Result<Vec<String>, PkiError> {
    let cert = parse_cert(cert_der)?;
    cert.subject()
        .iter_organization()
        .map(|attr| {
            attr.as_str()
                .map(str::to_owned)
                .map_err(|e| PkiError::Certificate(format!("organization: {e}")))
        })
        .collect()
}

/// The extended key usages; empty when the extension is absent.
pub fn extended_key_usages(cert_der: &[u8]) -> Result<Vec<ExtKeyUsage>, PkiError> {
    let cert = parse_cert(cert_der)?;
    let Some(eku) = cert
        .extended_key_usage()
        .map_err(|e| PkiError::Certificate(e.to_string()))?
    else {
        return Ok(Vec::new());
    };
    let eku = eku.value;
    let flags = [
        (eku.any, ExtKeyUsage::Any),
        (eku.server_auth, ExtKeyUsage::ServerAuth),
        (eku.client_auth, ExtKeyUsage::ClientAuth),
        (eku.code_signing, ExtKeyUsage::CodeSigning),
        (eku.email_protection, ExtKeyUsage::EmailProtection),
        (eku.time_stamping, ExtKeyUsage::TimeStamping),
        (eku.ocsp_signing, ExtKeyUsage::OcspSigning),
    ];
    let mut out: Vec<ExtKeyUsage> = flags
        .into_iter()
        .filter_map(|(set, usage)| set.then_some(usage))
        .collect();
    out.extend(
        eku.other
            .iter()
            .map(|oid| ExtKeyUsage::Other(oid.to_id_string())),
    );
    Ok(out)
}

/// The subject alternative names.
pub fn subject_alt_names(cert_der: &[u8]) -> Result<Vec<SubjectAltName>, PkiError> {
    let cert = parse_cert(cert_der)?;
    let Some(san) = cert
        .subject_alternative_name()
        .map_err(|e| PkiError::Certificate(e.to_string()))?
    else {
        return Ok(Vec::new());
    };
    Ok(san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(SubjectAltName::Dns((*dns).to_owned())),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes)
                    .ok()
                    .map(|b| SubjectAltName::Ip(b.into())),
                16 => <[u8; 16]>::try_from(*bytes)
                    .ok()
                    .map(|b| SubjectAltName::Ip(b.into())),
                _ => None,
            },
            _ => None,
        })
        .collect())
}

/// The certificate's validity window (not before, not after).
pub fn cert_validity(cert_der: &[u8]) -> Result<(SystemTime, SystemTime), PkiError> {
    let cert = parse_cert(cert_der)?;
    let to_system = |t: x509_parser::time::ASN1Time| {
        u64::try_from(t.timestamp())
            .map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
            .map_err(|_| PkiError::InvalidTime("certificate time before 1970".into()))
    };
    Ok((
        to_system(cert.validity().not_before)?,
        to_system(cert.validity().not_after)?,
    ))
}

/// Checks that `cert_der` was signed by the key of `issuer_der`.
pub fn verify_issued_by(cert_der: &[u8], issuer_der: &[u8]) -> Result<(), PkiError> {
    let cert = parse_cert(cert_der)?;
    let issuer = parse_cert(issuer_der)?;
    cert.verify_signature(Some(issuer.public_key()))
        .map_err(|e| PkiError::BadSignature(e.to_string()))
}

/// Checks that `key_pem` holds a private key we can use (Ed25519, ECDSA or RSA).
pub fn parse_private_key(key_pem: &str) -> Result<(), PkiError> {
    let key_der = pem_to_der_key(key_pem)?;
    KeyPair::try_from(key_der.as_slice())
        .map(drop)
        .map_err(|e| PkiError::UnsupportedKey(e.to_string()))
}

/// True if the private key in `key_pem` belongs to the first certificate in `cert_pem`.
pub fn key_matches_cert(cert_pem: &str, key_pem: &str) -> Result<bool, PkiError> {
    let cert_der = first_cert(cert_pem)?;
    let cert = parse_cert(&cert_der)?;
    let key_der = pem_to_der_key(key_pem)?;
    let key = KeyPair::try_from(key_der.as_slice())
        .map_err(|e| PkiError::UnsupportedKey(e.to_string()))?;
    Ok(cert.public_key().subject_public_key.data.as_ref() == key.public_key_raw())
}

#[cfg(test)]
mod tests;
