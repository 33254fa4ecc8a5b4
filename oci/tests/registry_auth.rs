//! Credentials and mirror endpoints against a real registry (Debian's `docker-registry`,
//! started per test): htpasswd Basic auth over HTTPS and over plain HTTP, and pulls through
//! mirror endpoints with and without `overridePath`.
//!
//! Without `/usr/bin/docker-registry` the tests skip with a message, unless
//! `TALOS_RS_E2E_REQUIRED` is set (as `cargo xtask test` does), which makes them fail.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use talos_oci::{
    ClientIdentity, Credentials, Image, LocalRegistry, Reference, Registry, RegistryClientAuth,
    RegistryError, RegistryHtpasswd, RegistryOptions, RegistryTls, RegistryTlsFiles,
    installer_image, installer_initramfs_path, installer_kernel_path, local_registry,
};

const LIMIT: u64 = 1 << 20;
const USERNAME: &str = "talos";
const PASSWORD: &str = "s3cret-Pa55";
const WRONG_PASSWORD: &str = "wr0ng-Pa55";

/// A CA and a certificate it issued for 127.0.0.1.
fn tls_files() -> RegistryTlsFiles {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    RegistryTlsFiles {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        ca_pem,
        guest_host: "registry.test".into(),
        client_auth: None,
    }
}

/// A client CA and a client certificate it issued.
fn client_auth() -> RegistryClientAuth {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    RegistryClientAuth {
        ca_pem,
        identity: ClientIdentity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        },
    }
}

fn basic(password: &str) -> Credentials {
    Credentials::Basic {
        username: USERNAME.into(),
        password: password.into(),
    }
}

fn installer(seed: u8) -> (Image, BTreeMap<String, Vec<u8>>) {
    let kernel = vec![seed; 4096];
    let initramfs = vec![seed.wrapping_add(1); 2048];
    let image = installer_image("arm64", kernel.clone(), initramfs.clone()).unwrap();
    let files = BTreeMap::from([
        (installer_kernel_path("arm64"), kernel),
        (installer_initramfs_path("arm64"), initramfs),
    ]);
    (image, files)
}

async fn pull(
    registry: &Registry,
    reference: &Reference,
) -> Result<BTreeMap<String, Vec<u8>>, RegistryError> {
    let wanted = [
        installer_kernel_path("arm64"),
        installer_initramfs_path("arm64"),
    ];
    let wanted: Vec<&str> = wanted.iter().map(String::as_str).collect();
    registry
        .pull_files(reference, "arm64", &wanted, LIMIT)
        .await
}

fn reference(addr: SocketAddr, rest: &str) -> Reference {
    Reference::parse(&format!("{addr}/{rest}")).unwrap()
}

/// Push and pull with the right credentials (also through `push_layout`); without them, or
/// with a wrong password, pulls and pushes fail saying so and showing no password.
async fn htpasswd_registry_wants_the_right_credentials(https: bool) {
    if !common::registry_installed() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tls = https.then(tls_files);
    let htpasswd = RegistryHtpasswd {
        htpasswd: format!("{USERNAME}:{}\n", bcrypt::hash(PASSWORD, 4).unwrap()),
        credentials: basic(PASSWORD),
    };
    let local =
        LocalRegistry::start_with_htpasswd(&tmp.path().join("registry"), tls.clone(), htpasswd)
            .unwrap_or_else(|e| panic!("{e}"));
    let addr = local.addr();
    let registry = |credentials: Option<Credentials>| {
        let options = RegistryOptions {
            tls: tls.as_ref().map(|tls| RegistryTls {
                ca_pem: Some(tls.ca_pem.clone()),
                ..Default::default()
            }),
            credentials,
            ..Default::default()
        };
        Registry::with_options(&reference(addr, "talos/installer"), &options).unwrap()
    };
    let tagged = reference(addr, "talos/installer:v1");
    let (image, files) = installer(1);

    let authorized = registry(Some(basic(PASSWORD)));
    assert_eq!(authorized.is_https(), https);
    let pushed = authorized.push(&tagged, &image).await.unwrap();
    assert_eq!((pushed.blobs_uploaded, pushed.blobs_skipped), (2, 0));
    assert_eq!(pull(&authorized, &tagged).await.unwrap(), files);
    assert_eq!(pull(&authorized, &pushed.reference).await.unwrap(), files);

    let layout = tmp.path().join("layout");
    let (other, other_files) = installer(2);
    talos_oci::write_layout_dir(&other, &layout).unwrap();
    local
        .push_layout(&layout, "talos/installer:v2")
        .await
        .unwrap();
    let v2 = reference(addr, "talos/installer:v2");
    assert_eq!(pull(&authorized, &v2).await.unwrap(), other_files);

    let e = pull(&registry(None), &tagged).await.unwrap_err();
    let message = e.to_string();
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{message}");
    for part in [
        "authentication is required".to_owned(),
        format!("no credentials are configured for {addr}"),
        format!(r#"Basic realm="{}""#, local_registry::HTPASSWD_REALM),
        format!("machine.registries.config.\"{addr}\".auth"),
    ] {
        assert!(message.contains(&part), "{part:?} not in {message}");
    }

    let wrong = registry(Some(basic(WRONG_PASSWORD)));
    for e in [
        pull(&wrong, &tagged).await.unwrap_err(),
        wrong
            .push(&reference(addr, "talos/installer:v3"), &image)
            .await
            .unwrap_err(),
    ] {
        let message = e.to_string();
        assert!(
            matches!(e, RegistryError::CredentialsRefused { .. }),
            "{message}"
        );
        assert!(
            message.contains(&format!("the credentials for {addr} were refused")),
            "{message}"
        );
        let shown = format!("{message} {e:?} {wrong:?}");
        assert!(
            !shown.contains(WRONG_PASSWORD) && !shown.contains(PASSWORD),
            "{shown}"
        );
    }
}

#[tokio::test]
async fn htpasswd_over_https() {
    htpasswd_registry_wants_the_right_credentials(true).await;
}

#[tokio::test]
async fn htpasswd_over_plain_http() {
    htpasswd_registry_wants_the_right_credentials(false).await;
}

/// A registry that requires client certificates serves a client presenting one, and refuses
/// the TLS handshake of a client that presents none.
#[tokio::test]
async fn client_certificates_are_presented() {
    if !common::registry_installed() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut tls = tls_files();
    let client_auth = client_auth();
    tls.client_auth = Some(client_auth.clone());
    let local = LocalRegistry::start_with(&tmp.path().join("registry"), Some(tls.clone()))
        .unwrap_or_else(|e| panic!("{e}"));
    let layout = tmp.path().join("layout");
    let (image, files) = installer(3);
    talos_oci::write_layout_dir(&image, &layout).unwrap();
    local
        .push_layout(&layout, "talos/installer:v3")
        .await
        .unwrap();
    let registry = |client_identity: Option<ClientIdentity>| {
        let options = RegistryOptions {
            tls: Some(RegistryTls {
                ca_pem: Some(tls.ca_pem.clone()),
                client_identity,
                ..Default::default()
            }),
            ..Default::default()
        };
        Registry::with_options(&reference(local.addr(), "talos/installer"), &options).unwrap()
    };
    let v3 = reference(local.addr(), "talos/installer:v3");
    assert_eq!(
        pull(&registry(Some(client_auth.identity)), &v3)
            .await
            .unwrap(),
        files
    );
    let e = pull(&registry(None), &v3).await.unwrap_err();
    assert!(
        matches!(
            e,
            RegistryError::Tls { .. } | RegistryError::Connect { .. } | RegistryError::Http { .. }
        ),
        "{e:?}"
    );
}

#[test]
fn a_client_identity_whose_key_does_not_match_is_refused() {
    let (one, other) = (client_auth().identity, client_auth().identity);
    let tls = RegistryTls {
        client_identity: Some(ClientIdentity {
            cert_pem: one.cert_pem,
            key_pem: other.key_pem,
        }),
        ..Default::default()
    };
    assert!(!format!("{tls:?}").contains("PRIVATE KEY"));
    let options = RegistryOptions {
        tls: Some(tls),
        ..Default::default()
    };
    let reference = Reference::parse("registry.test:5443/talos/installer:v1").unwrap();
    let e = Registry::with_options(&reference, &options).unwrap_err();
    assert!(matches!(e, RegistryError::TlsConfig { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("tls.clientIdentity: the key does not match the certificate"),
        "{e}"
    );
}

#[tokio::test]
async fn pulls_through_mirror_endpoints_get_what_a_direct_pull_gets() {
    if !common::registry_installed() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let local = LocalRegistry::start(tmp.path()).unwrap_or_else(|e| panic!("{e}"));
    let addr = local.addr();
    let tagged = reference(addr, "talos/installer:v1");
    let direct = Registry::for_reference(&tagged).unwrap();
    let (image, files) = installer(3);
    let pushed = direct.push(&tagged, &image).await.unwrap();
    assert_eq!(pull(&direct, &tagged).await.unwrap(), files);

    // The reference names the upstream registry; the mirror serves its repository.
    let upstream = Reference::parse("registry.example/talos/installer:v1").unwrap();
    let by_digest = upstream.with_digest(pushed.reference.digest().unwrap().clone());
    let options = RegistryOptions::default();
    for (endpoint, override_path, reference) in [
        (format!("http://{addr}"), false, &upstream),
        (format!("http://{addr}/v2/"), false, &upstream),
        (format!("http://{addr}/v2"), true, &upstream),
        (format!("http://{addr}/v2"), true, &by_digest),
    ] {
        let mirror = Registry::mirror(&endpoint, override_path, &options).unwrap();
        assert!(!mirror.is_https());
        assert_eq!(
            pull(&mirror, reference).await.unwrap(),
            files,
            "{endpoint} {override_path}"
        );
    }
    // overridePath with a namespace, as a proxy project of Harbor's is reached.
    let mirror = Registry::mirror(&format!("http://{addr}/v2/talos"), true, &options).unwrap();
    let unqualified = Reference::parse("registry.example/installer:v1").unwrap();
    assert_eq!(pull(&mirror, &unqualified).await.unwrap(), files);

    // Errors name the mirror's URL.
    let mirror = Registry::mirror(&format!("http://{addr}/v2"), true, &options).unwrap();
    let missing = Reference::parse("registry.example/talos/installer:v9").unwrap();
    let e = pull(&mirror, &missing).await.unwrap_err().to_string();
    assert!(
        e.contains(&format!(
            "http://{addr}/v2/talos/installer/manifests/v9 answered 404"
        )),
        "{e}"
    );

    for (endpoint, reason) in [
        ("ftp://x".to_owned(), "must start with http:// or https://"),
        ("http://".to_owned(), "no valid host[:port]"),
        (format!("http://:{}", addr.port()), "no valid host[:port]"),
    ] {
        let e = Registry::mirror(&endpoint, false, &options).unwrap_err();
        assert!(matches!(e, RegistryError::Endpoint { .. }), "{e}");
        let e = e.to_string();
        assert!(
            e.starts_with(&format!("mirror endpoint {endpoint}: ")) && e.contains(reason),
            "{e}"
        );
    }
}
