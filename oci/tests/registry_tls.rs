//! Pulls over HTTPS from a hand-written registry on 127.0.0.1 that is named `registry.test`
//! (a test resolver maps it), asks for an anonymous bearer token first, and redirects blobs:
//! what ghcr.io does. The right CA pulls; a wrong or missing one fails naming the setting.
//! The token service may instead want Basic credentials or an identity token (a refresh
//! token POSTed as an OAuth2 form).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use talos_oci::{
    BoxFuture, Credentials, Image, Reference, Registry, RegistryError, RegistryOptions,
    RegistryTls, Resolve, installer_image, installer_initramfs_path, installer_kernel_path,
};

const HOST: &str = "registry.test";
const TOKEN: &str = "anonymous-token";
const USERNAME: &str = "talos";
const PASSWORD: &str = "s3cret";
/// `Basic base64("talos:s3cret")`.
const BASIC: &str = "Basic dGFsb3M6czNjcmV0";
const REFRESH_TOKEN: &str = "r3fresh/t0ken";
const SCOPE_QUERY: &str = "service=registry.test&scope=repository%3Atalos%2Finstaller%3Apull";

/// What the token service wants before it issues [`TOKEN`].
#[derive(Debug, Clone, Copy)]
enum TokenAuth {
    Anonymous,
    /// `GET` with `Authorization: Basic` for [`USERNAME`] and [`PASSWORD`].
    Basic,
    /// A `POST`ed OAuth2 refresh-token form with [`REFRESH_TOKEN`].
    RefreshToken,
}

#[derive(Debug)]
struct TestResolver;

impl Resolve for TestResolver {
    fn resolve<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, String>> {
        Box::pin(async move {
            if host == HOST {
                Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)])
            } else {
                Err(format!("{host} is not known here"))
            }
        })
    }
}

struct Pki {
    ca_pem: String,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

fn ca() -> (CertificateParams, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    (params, KeyPair::generate().unwrap())
}

fn pki() -> Pki {
    let (ca_params, ca_key) = ca();
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec![HOST.to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    Pki {
        ca_pem,
        cert: cert.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

fn other_ca_pem() -> String {
    let (params, key) = ca();
    params.self_signed(&key).unwrap().pem()
}

/// What the server saw.
#[derive(Default)]
struct Seen {
    tokens_issued: AtomicUsize,
    unauthorized: AtomicUsize,
}

fn respond(status: StatusCode, headers: &[(&str, String)], body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::builder().status(status);
    for (name, value) in headers {
        response = response.header(*name, value);
    }
    response.body(Full::new(Bytes::from(body))).unwrap()
}

/// Serves `image` as `talos/installer:v2` over TLS with `pki`, issuing tokens as `auth`
/// says; returns the port.
async fn serve(pki: Pki, image: Image, seen: Arc<Seen>, auth: TokenAuth) -> u16 {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![pki.cert], pki.key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut blobs = BTreeMap::new();
    for blob in std::iter::once(image.config()).chain(image.layers()) {
        blobs.insert(blob.digest().to_string(), blob.data().to_vec());
    }
    let image = Arc::new(image);
    let blobs = Arc::new(blobs);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, image, blobs, seen) =
                (acceptor.clone(), image.clone(), blobs.clone(), seen.clone());
            tokio::spawn(async move {
                // A client that refuses our certificate ends the handshake; nothing to serve.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let (image, blobs, seen) = (image.clone(), blobs.clone(), seen.clone());
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes());
                        let body = String::from_utf8_lossy(&body.unwrap_or_default()).into_owned();
                        let reply = route(&parts, &body, port, auth, &image, &blobs, &seen);
                        Ok::<_, Infallible>(reply)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    port
}

/// The token service: [`TOKEN`] for the request `auth` wants, 401 for other credentials.
fn token(request: &Parts, body: &str, auth: TokenAuth, seen: &Seen) -> Response<Full<Bytes>> {
    let query = request.uri.query().unwrap_or_default();
    let authorization = request.headers.get("authorization").map(|v| v.as_bytes());
    let granted = match auth {
        TokenAuth::Anonymous if query != SCOPE_QUERY => {
            return respond(StatusCode::BAD_REQUEST, &[], query.as_bytes().to_vec());
        }
        TokenAuth::Anonymous => true,
        TokenAuth::Basic => {
            request.method == Method::GET
                && query == SCOPE_QUERY
                && authorization == Some(BASIC.as_bytes())
        }
        TokenAuth::RefreshToken => {
            let mut fields: Vec<&str> = body.split('&').collect();
            fields.sort_unstable();
            request.method == Method::POST
                && authorization.is_none()
                && request.headers.get("content-type").map(|v| v.as_bytes())
                    == Some(b"application/x-www-form-urlencoded")
                && fields
                    == [
                        "client_id=talos-rs",
                        "grant_type=refresh_token",
                        "refresh_token=r3fresh%2Ft0ken",
                        "scope=repository%3Atalos%2Finstaller%3Apull",
                        "service=registry.test",
                    ]
        }
    };
    if !granted {
        return respond(
            StatusCode::UNAUTHORIZED,
            &[],
            br#"{"details":"bad credentials"}"#.to_vec(),
        );
    }
    seen.tokens_issued.fetch_add(1, Ordering::SeqCst);
    // ghcr.io answers `token`; OAuth2 token endpoints answer `access_token`.
    let key = match auth {
        TokenAuth::RefreshToken => "access_token",
        _ => "token",
    };
    respond(
        StatusCode::OK,
        &[],
        format!(r#"{{"{key}":"{TOKEN}"}}"#).into_bytes(),
    )
}

fn route(
    request: &Parts,
    body: &str,
    port: u16,
    auth: TokenAuth,
    image: &Image,
    blobs: &BTreeMap<String, Vec<u8>>,
    seen: &Seen,
) -> Response<Full<Bytes>> {
    let path = request.uri.path();
    if path == "/token" {
        return token(request, body, auth, seen);
    }
    // Where blobs are redirected: no token needed, like a CDN's signed URL.
    if let Some(digest) = path.strip_prefix("/cdn/") {
        return match blobs.get(digest) {
            Some(data) => respond(StatusCode::OK, &[], data.clone()),
            None => respond(StatusCode::NOT_FOUND, &[], vec![]),
        };
    }
    let authorized = request
        .headers
        .get("authorization")
        .is_some_and(|v| v.as_bytes() == format!("Bearer {TOKEN}").as_bytes());
    if !authorized {
        seen.unauthorized.fetch_add(1, Ordering::SeqCst);
        let challenge = format!(
            r#"Bearer realm="https://{HOST}:{port}/token",service="{HOST}",scope="repository:talos/installer:pull""#
        );
        return respond(
            StatusCode::UNAUTHORIZED,
            &[("WWW-Authenticate", challenge)],
            vec![],
        );
    }
    if path == "/v2/talos/installer/manifests/v2" {
        return respond(
            StatusCode::OK,
            &[(
                "Content-Type",
                talos_oci::media_type::OCI_MANIFEST.to_owned(),
            )],
            image.manifest().to_vec(),
        );
    }
    if let Some(digest) = path.strip_prefix("/v2/talos/installer/blobs/") {
        return respond(
            StatusCode::TEMPORARY_REDIRECT,
            &[("Location", format!("https://{HOST}:{port}/cdn/{digest}"))],
            vec![],
        );
    }
    respond(StatusCode::NOT_FOUND, &[], vec![])
}

fn options(ca_pem: Option<String>) -> RegistryOptions {
    RegistryOptions {
        tls: ca_pem.map(|ca_pem| RegistryTls {
            ca_pem: Some(ca_pem),
            ..Default::default()
        }),
        resolver: Some(Arc::new(TestResolver)),
        credentials: None,
    }
}

async fn pull(
    reference: &Reference,
    options: &RegistryOptions,
) -> Result<BTreeMap<String, Vec<u8>>, RegistryError> {
    let wanted = [
        installer_kernel_path("arm64"),
        installer_initramfs_path("arm64"),
    ];
    let wanted: Vec<&str> = wanted.iter().map(String::as_str).collect();
    Registry::with_options(reference, options)?
        .pull_files(reference, "arm64", &wanted, 1 << 20)
        .await
}

#[tokio::test]
async fn pulls_over_https_with_the_configured_ca_and_an_anonymous_bearer_token() {
    let pki = pki();
    let ca_pem = pki.ca_pem.clone();
    let image = installer_image("arm64", b"kernel".to_vec(), b"initramfs".to_vec()).unwrap();
    let seen = Arc::new(Seen::default());
    let port = serve(pki, image, seen.clone(), TokenAuth::Anonymous).await;
    let reference = Reference::parse(&format!("{HOST}:{port}/talos/installer:v2")).unwrap();

    let files = pull(&reference, &options(Some(ca_pem))).await.unwrap();
    assert_eq!(files["usr/install/arm64/vmlinuz"], b"kernel");
    assert_eq!(files["usr/install/arm64/initramfs.zst"], b"initramfs");
    // One challenge, one token, reused for the blobs.
    assert_eq!(seen.unauthorized.load(Ordering::SeqCst), 1);
    assert_eq!(seen.tokens_issued.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_wrong_or_missing_ca_fails_naming_the_host_and_the_setting() {
    let pki = pki();
    let image = installer_image("arm64", b"k".to_vec(), b"i".to_vec()).unwrap();
    let port = serve(pki, image, Arc::default(), TokenAuth::Anonymous).await;
    let reference = Reference::parse(&format!("{HOST}:{port}/talos/installer:v2")).unwrap();

    for ca in [Some(other_ca_pem()), None] {
        let e = pull(&reference, &options(ca.clone())).await.unwrap_err();
        assert!(matches!(e, RegistryError::Tls { .. }), "{e}");
        let message = e.to_string();
        assert!(
            message.contains(&format!("TLS with {HOST}:{port} failed"))
                && message.contains("invalid peer certificate")
                && message.contains(&format!(
                    "machine.registries.config.\"{HOST}:{port}\".tls.ca"
                )),
            "{ca:?}: {message}"
        );
    }

    let unknown = Reference::parse(&format!("elsewhere.test:{port}/talos/installer:v2")).unwrap();
    let e = pull(&unknown, &options(None))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(
            "cannot resolve the registry host elsewhere.test: elsewhere.test is not known here"
        ) && e.contains("extraHostEntries"),
        "{e}"
    );
}

#[tokio::test]
async fn bearer_tokens_are_fetched_with_basic_credentials_or_an_identity_token() {
    let basic = Credentials::Basic {
        username: USERNAME.into(),
        password: PASSWORD.into(),
    };
    let wrong_basic = Credentials::Basic {
        username: USERNAME.into(),
        password: "wr0ng-pass".into(),
    };
    let refresh = Credentials::IdentityToken(REFRESH_TOKEN.into());
    let wrong_refresh = Credentials::IdentityToken("wr0ng-token".into());
    for (auth, good, wrong, method) in [
        (TokenAuth::Basic, basic, wrong_basic, "GET"),
        (TokenAuth::RefreshToken, refresh, wrong_refresh, "POST"),
    ] {
        let pki = pki();
        let ca_pem = pki.ca_pem.clone();
        let image = installer_image("arm64", b"kernel".to_vec(), b"initramfs".to_vec()).unwrap();
        let seen = Arc::new(Seen::default());
        let port = serve(pki, image, seen.clone(), auth).await;
        let reference = Reference::parse(&format!("{HOST}:{port}/talos/installer:v2")).unwrap();
        let with = |credentials: Option<Credentials>| RegistryOptions {
            credentials,
            ..options(Some(ca_pem.clone()))
        };

        let files = pull(&reference, &with(Some(good))).await.unwrap();
        assert_eq!(files["usr/install/arm64/vmlinuz"], b"kernel", "{auth:?}");
        assert_eq!(seen.tokens_issued.load(Ordering::SeqCst), 1, "{auth:?}");

        let e = pull(&reference, &with(Some(wrong))).await.unwrap_err();
        let message = e.to_string();
        assert!(
            matches!(e, RegistryError::CredentialsRefused { .. }),
            "{auth:?}: {message}"
        );
        assert!(
            message.contains(&format!("{method} https://{HOST}:{port}/token"))
                && message.contains(&format!("the credentials for {HOST}:{port} were refused")),
            "{auth:?}: {message}"
        );
        assert!(!format!("{message} {e:?}").contains("wr0ng"), "{message}");

        // Anonymously, the token service refuses.
        let e = pull(&reference, &with(None)).await.unwrap_err();
        assert!(matches!(e, RegistryError::Token { .. }), "{auth:?}: {e}");
        assert!(e.to_string().contains("answered 401 Unauthorized"), "{e}");
    }
}
