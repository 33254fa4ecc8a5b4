use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;
use crate::role::{Role, RoleSet};

const OID_ED25519_SIGNATURE: &str = "1.3.101.112";

fn parse(der: &[u8]) -> X509Certificate<'_> {
    X509Certificate::from_der(der).unwrap().1
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[test]
fn os_ca_is_ed25519_self_signed_ten_year_ca_for_talos() {
    let now = at(1_700_000_000);
    let ca = new_os_ca(now).unwrap();
    let der = ca.cert_der().unwrap();
    let cert = parse(&der);

    assert_eq!(
        cert.public_key().algorithm.algorithm.to_id_string(),
        OID_ED25519_SIGNATURE
    );
    assert_eq!(
        cert.signature_algorithm.algorithm.to_id_string(),
        OID_ED25519_SIGNATURE
    );
    assert!(cert.is_ca());
    assert_eq!(cert.subject(), cert.issuer());
    verify_issued_by(&der, &der).unwrap();
    assert_eq!(cert_organizations(&der).unwrap(), ["talos"]);

    let (not_before, not_after) = cert_validity(&der).unwrap();
    assert_eq!(not_before, now - CLOCK_SKEW_ALLOWANCE);
    assert_eq!(
        not_after.duration_since(now).unwrap(),
        Duration::from_secs(87_600 * 3600)
    );

    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign() && ku.digital_signature());
    assert_eq!(
        extended_key_usages(&der).unwrap(),
        [ExtKeyUsage::ServerAuth, ExtKeyUsage::ClientAuth]
    );
    assert!(
        ca.key_pem
            .starts_with("-----BEGIN ED25519 PRIVATE KEY-----")
    );
    assert!(key_matches_cert(&ca.cert_pem, &ca.key_pem).unwrap());
}

#[test]
fn client_cert_chains_to_ca_and_carries_roles_as_organizations() {
    let now = at(1_700_000_000);
    let ca = new_os_ca(now).unwrap();
    let client = issue_client_cert(&ca, &[Role::Admin], CLIENT_CERT_VALIDITY, now).unwrap();
    let der = client.cert_der().unwrap();
    let ca_der = ca.cert_der().unwrap();

    verify_issued_by(&der, &ca_der).unwrap();
    assert_eq!(parse(&der).issuer(), parse(&ca_der).subject());
    assert_eq!(cert_organizations(&der).unwrap(), ["os:admin"]);
    assert_eq!(
        extended_key_usages(&der).unwrap(),
        [ExtKeyUsage::ClientAuth]
    );
    let cert = parse(&der);
    assert!(!cert.is_ca());
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && !ku.key_cert_sign());
    let (from, to) = cert_validity(&der).unwrap();
    assert_eq!(
        to.duration_since(from).unwrap(),
        CLIENT_CERT_VALIDITY + CLOCK_SKEW_ALLOWANCE
    );
    assert!(key_matches_cert(&client.cert_pem, &client.key_pem).unwrap());
    assert!(!key_matches_cert(&client.cert_pem, &ca.key_pem).unwrap());
}

#[test]
fn client_cert_with_several_roles_lists_each_and_still_verifies() {
    let now = at(1_700_000_000);
    let ca = new_os_ca(now).unwrap();
    let roles = [Role::Reader, Role::EtcdBackup, Role::MetaWriter];
    let client = issue_client_cert(&ca, &roles, CLIENT_CERT_VALIDITY, now).unwrap();
    let der = client.cert_der().unwrap();
    verify_issued_by(&der, &ca.cert_der().unwrap()).unwrap();
    let organizations = cert_organizations(&der).unwrap();
    assert_eq!(
        organizations,
        ["os:reader", "os:etcd:backup", "os:meta:writer"]
    );
    assert_eq!(
        RoleSet::from_organizations(organizations.iter().map(String::as_str)),
        RoleSet::of(&roles)
    );
}

#[test]
fn client_cert_from_another_ca_does_not_verify() {
    let now = at(1_700_000_000);
    let ca = new_os_ca(now).unwrap();
    let other = new_os_ca(now).unwrap();
    let client = issue_client_cert(&ca, &[Role::Admin], CLIENT_CERT_VALIDITY, now).unwrap();
    assert!(verify_issued_by(&client.cert_der().unwrap(), &other.cert_der().unwrap()).is_err());
}

#[test]
fn server_cert_has_the_given_sans_and_server_auth_only() {
    let now = at(1_700_000_000);
    let ca = new_os_ca(now).unwrap();
    let sans = [
        SubjectAltName::Ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))),
        SubjectAltName::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        SubjectAltName::Dns("node-1.example.com".into()),
    ];
    let server =
        issue_server_cert(&ca, "node-1", &sans, Duration::from_secs(24 * 3600), now).unwrap();
    let der = server.cert_der().unwrap();
    verify_issued_by(&der, &ca.cert_der().unwrap()).unwrap();
    assert_eq!(subject_alt_names(&der).unwrap(), sans);
    assert_eq!(
        extended_key_usages(&der).unwrap(),
        [ExtKeyUsage::ServerAuth]
    );
    let cert = parse(&der);
    let cn: Vec<_> = cert
        .subject()
        .iter_common_name()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(cn, ["node-1"]);
}

#[test]
fn peer_cert_is_ecdsa_for_server_and_client_auth() {
    let now = at(1_700_000_000);
    let ca = new_ecdsa_ca(CaSubject::Organization("etcd".into()), now).unwrap();
    let sans = [SubjectAltName::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST))];
    let peer = issue_peer_cert(&ca, "cp-1", &sans, Duration::from_secs(3600), now).unwrap();
    let der = peer.cert_der().unwrap();
    verify_issued_by(&der, &ca.cert_der().unwrap()).unwrap();
    assert_eq!(
        extended_key_usages(&der).unwrap(),
        [ExtKeyUsage::ServerAuth, ExtKeyUsage::ClientAuth]
    );
    assert!(peer.key_pem.starts_with("-----BEGIN EC PRIVATE KEY-----"));
    assert!(key_matches_cert(&peer.cert_pem, &peer.key_pem).unwrap());
}

#[test]
fn self_signed_server_cert_verifies_against_itself() {
    let now = at(1_700_000_000);
    let sans = [
        SubjectAltName::parse("192.168.1.5"),
        SubjectAltName::parse("talos"),
    ];
    assert_eq!(sans[1], SubjectAltName::Dns("talos".into()));
    let cert = self_signed_server_cert("talos", &sans, Duration::from_secs(3600), now).unwrap();
    let der = cert.cert_der().unwrap();
    verify_issued_by(&der, &der).unwrap();
    assert_eq!(subject_alt_names(&der).unwrap(), sans);
    assert_eq!(
        extended_key_usages(&der).unwrap(),
        [ExtKeyUsage::ServerAuth]
    );
}

#[test]
fn ecdsa_ca_writes_sec1_ec_private_key_and_reads_it_back() {
    let now = at(1_700_000_000);
    let ca = new_ecdsa_ca(CaSubject::CommonName("front-proxy".into()), now).unwrap();
    assert!(ca.key_pem.starts_with("-----BEGIN EC PRIVATE KEY-----"));
    let blocks = parse_pem(&ca.key_pem).unwrap();
    let (outer, _) = der::expect(&blocks[0].1, der::SEQUENCE).unwrap();
    let fields = der::children(outer.content).unwrap();
    // SEC1: version 1, the secret, the named curve, the public key.
    assert_eq!(fields[0].content, [1]);
    assert_eq!(fields[1].tag, der::OCTET_STRING);
    assert_eq!(fields[2].tag, der::CONTEXT_0);
    assert_eq!(fields[2].content, der::write(der::OID, der::OID_P256));
    assert_eq!(fields[3].tag, der::CONTEXT_1);

    assert!(key_matches_cert(&ca.cert_pem, &ca.key_pem).unwrap());
    let der = ca.cert_der().unwrap();
    verify_issued_by(&der, &der).unwrap();
    assert!(parse(&der).is_ca());
    // The ECDSA CA can sign leaves too.
    let leaf = issue_server_cert(&ca, "x", &[], Duration::from_secs(60), now).unwrap();
    verify_issued_by(&leaf.cert_der().unwrap(), &der).unwrap();
}

#[test]
fn ed25519_key_pem_round_trips_as_pkcs8() {
    let ca = new_os_ca(at(1_700_000_000)).unwrap();
    let pkcs8 = pem_to_der_key(&ca.key_pem).unwrap();
    // PKCS#8 v1 with the Ed25519 OID, as upstream writes it.
    let (outer, _) = der::expect(&pkcs8, der::SEQUENCE).unwrap();
    let fields = der::children(outer.content).unwrap();
    assert_eq!(fields.len(), 3);
    assert_eq!(fields[0].content, [0]);
    assert!(Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8).is_ok());

    // The same key under the generic label reads back identically.
    let relabelled = der_to_pem("PRIVATE KEY", &pkcs8);
    assert_eq!(pem_to_der_key(&relabelled).unwrap(), pkcs8);
    assert!(key_matches_cert(&ca.cert_pem, &relabelled).unwrap());
}

#[test]
fn sec1_without_curve_is_read_as_p256() {
    let ca = new_ecdsa_ca(CaSubject::Organization("etcd".into()), at(1_700_000_000)).unwrap();
    let sec1 = &parse_pem(&ca.key_pem).unwrap()[0].1;
    let (outer, _) = der::expect(sec1, der::SEQUENCE).unwrap();
    let fields = der::children(outer.content).unwrap();
    let without_curve = der::write_parts(
        der::SEQUENCE,
        &[fields[0].raw, fields[1].raw, fields[3].raw],
    );
    let pem = der_to_pem("EC PRIVATE KEY", &without_curve);
    assert!(key_matches_cert(&ca.cert_pem, &pem).unwrap());
}

#[test]
fn pem_errors_are_reported() {
    assert!(matches!(pem_to_der_certs(""), Err(PkiError::MissingPem(_))));
    assert!(matches!(
        pem_to_der_certs("-----BEGIN CERTIFICATE-----\nAAAA\n"),
        Err(PkiError::MalformedPem(_))
    ));
    assert!(matches!(
        pem_to_der_key(
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n"
        ),
        Err(PkiError::UnsupportedKey(_))
    ));
    assert!(matches!(
        pem_to_der_key("-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n"),
        Err(PkiError::MalformedPem(_))
    ));
}

#[test]
fn pem_chain_yields_every_certificate() {
    let now = at(1_700_000_000);
    let a = new_os_ca(now).unwrap();
    let b = new_os_ca(now).unwrap();
    let chain = format!("{}{}", a.cert_pem, b.cert_pem);
    let ders = pem_to_der_certs(&chain).unwrap();
    assert_eq!(ders, [a.cert_der().unwrap(), b.cert_der().unwrap()]);
}

#[test]
fn debug_redacts_the_key() {
    let ca = new_os_ca(at(1_700_000_000)).unwrap();
    let shown = format!("{ca:?}");
    assert!(!shown.contains(&ca.key_pem));
    assert!(shown.contains("redacted"));
}

#[test]
fn tokens_have_the_upstream_shape_and_differ() {
    let token = new_token();
    assert!(is_valid_token(&token), "{token}");
    let (id, secret) = token.split_once('.').unwrap();
    assert_eq!((id.len(), secret.len()), (6, 16));
    assert!(
        token
            .bytes()
            .all(|b| b == b'.' || b.is_ascii_lowercase() || b.is_ascii_digit())
    );
    assert_ne!(new_token(), token);
    for bad in [
        "abcdef0123456789abcdef",
        "abcde.0123456789abcdef",
        "ABCDEF.0123456789abcdef",
        "abcdef.0123456789abcde_",
    ] {
        assert!(!is_valid_token(bad), "{bad}");
    }
}
