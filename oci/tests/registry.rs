//! Push and pull against a real registry (Debian's `docker-registry`, started per test), and
//! against a tiny hand-written HTTP server for what a well-behaved registry never does:
//! tampered blobs, wrong manifests, indexes, 401s.
//!
//! Without `/usr/bin/docker-registry` the real-registry tests skip with a message, unless
//! `TALOS_RS_E2E_REQUIRED` is set (as `cargo xtask test` does), which makes them fail.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use talos_oci::{
    Credentials, Image, LocalRegistry, Reference, Registry, RegistryError, RegistryOptions,
    installer_image, installer_initramfs_path, installer_kernel_path, media_type,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMIT: u64 = 64 << 20;

fn start_registry(dir: &Path) -> Option<LocalRegistry> {
    if !common::registry_installed() {
        return None;
    }
    Some(LocalRegistry::start(dir).unwrap_or_else(|e| panic!("{e}")))
}

/// Incompressible bytes, so the layer is as large as its files.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn installer(arch: &str, seed: u64) -> (Image, BTreeMap<String, Vec<u8>>) {
    let kernel = noise(3 << 20, seed);
    let initramfs = noise(1 << 20, seed + 1);
    let image = installer_image(arch, kernel.clone(), initramfs.clone()).unwrap();
    let files = BTreeMap::from([
        (installer_kernel_path(arch), kernel),
        (installer_initramfs_path(arch), initramfs),
    ]);
    (image, files)
}

fn wanted(arch: &str) -> [String; 2] {
    [installer_kernel_path(arch), installer_initramfs_path(arch)]
}

async fn pull(
    registry: &Registry,
    reference: &Reference,
    arch: &str,
    limit: u64,
) -> Result<BTreeMap<String, Vec<u8>>, RegistryError> {
    let wanted = wanted("arm64");
    let wanted: Vec<&str> = wanted.iter().map(String::as_str).collect();
    registry.pull_files(reference, arch, &wanted, limit).await
}

fn reference(addr: SocketAddr, rest: &str) -> Reference {
    Reference::parse(&format!("{addr}/{rest}")).unwrap()
}

#[tokio::test]
async fn push_then_pull_by_tag_and_by_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(local) = start_registry(tmp.path()) else {
        return;
    };
    let tagged = reference(local.addr(), "talos/installer:v1");
    let registry = Registry::for_reference(&tagged).unwrap();
    let (image, files) = installer("arm64", 7);

    let pushed = registry.push(&tagged, &image).await.unwrap();
    assert_eq!((pushed.blobs_uploaded, pushed.blobs_skipped), (2, 0));
    assert_eq!(pushed.reference.digest(), Some(image.manifest_digest()));
    assert_eq!(pushed.reference.tag(), Some("v1"));

    assert_eq!(
        pull(&registry, &tagged, "arm64", LIMIT).await.unwrap(),
        files
    );
    assert_eq!(
        pull(&registry, &pushed.reference, "arm64", LIMIT)
            .await
            .unwrap(),
        files
    );
    let by_digest_only = reference(
        local.addr(),
        &format!("talos/installer@{}", image.manifest_digest()),
    );
    assert_eq!(
        pull(&registry, &by_digest_only, "arm64", LIMIT)
            .await
            .unwrap(),
        files
    );

    // Again under another tag: the registry has both blobs, only the manifest goes up.
    let again = registry
        .push(&reference(local.addr(), "talos/installer:v1-again"), &image)
        .await
        .unwrap();
    assert_eq!((again.blobs_uploaded, again.blobs_skipped), (0, 2));
}

#[tokio::test]
async fn pulling_what_is_not_there_names_the_reference_url_and_status() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(local) = start_registry(tmp.path()) else {
        return;
    };
    let tagged = reference(local.addr(), "talos/installer:v1");
    let registry = Registry::for_reference(&tagged).unwrap();
    registry
        .push(&tagged, &installer("arm64", 1).0)
        .await
        .unwrap();

    let missing_tag = reference(local.addr(), "talos/installer:v2");
    let e = pull(&registry, &missing_tag, "arm64", LIMIT)
        .await
        .unwrap_err();
    let message = e.to_string();
    assert!(matches!(e, RegistryError::NotFound { .. }), "{message}");
    let url = format!("http://{}/v2/talos/installer/manifests/v2", local.addr());
    for part in [
        &missing_tag.to_string(),
        &url,
        "404 Not Found",
        "MANIFEST_UNKNOWN",
    ] {
        assert!(message.contains(part), "{part:?} not in {message}");
    }

    let missing_repo = reference(local.addr(), "talos/nothing:v1");
    let e = pull(&registry, &missing_repo, "arm64", LIMIT)
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::NotFound { .. }), "{e}");

    let other_digest = installer("arm64", 2).0.manifest_digest().clone();
    let e = pull(&registry, &tagged.with_digest(other_digest), "arm64", LIMIT)
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::NotFound { .. }), "{e}");
}

#[tokio::test]
async fn pull_checks_platform_wanted_files_and_size() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(local) = start_registry(tmp.path()) else {
        return;
    };
    let tagged = reference(local.addr(), "talos/installer:v1");
    let registry = Registry::for_reference(&tagged).unwrap();
    registry
        .push(&tagged, &installer("arm64", 3).0)
        .await
        .unwrap();

    let e = pull(&registry, &tagged, "amd64", LIMIT).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("the image is for linux/arm64, not linux/amd64"),
        "{e}"
    );

    let e = registry
        .pull_files(
            &tagged,
            "arm64",
            &["usr/install/arm64/vmlinuz", "usr/install/arm64/missing"],
            LIMIT,
        )
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{tagged}: not in the image: usr/install/arm64/missing")
    );

    let e = pull(&registry, &tagged, "arm64", 1 << 20)
        .await
        .unwrap_err();
    assert!(
        matches!(e, RegistryError::TooLarge { limit, .. } if limit == 1 << 20),
        "{e}"
    );
}

/// A response the fake registry gives for one path.
#[derive(Clone)]
struct Route {
    status: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Route {
    fn ok(content_type: &str, body: &[u8]) -> Self {
        Self {
            status: "200 OK",
            headers: vec![("Content-Type", content_type.to_owned())],
            body: body.to_vec(),
        }
    }
}

/// Serves fixed routes over HTTP/1.1, one exchange per connection; anything else is a 404.
async fn fake_registry(routes: BTreeMap<String, Route>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let routes = routes.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = stream.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                let head = String::from_utf8_lossy(&head);
                let mut request_line = head.lines().next().unwrap().split(' ');
                let method = request_line.next().unwrap().to_owned();
                let path = request_line.next().unwrap();
                let route = routes.get(path).cloned().unwrap_or(Route {
                    status: "404 Not Found",
                    headers: vec![],
                    body: br#"{"errors":[{"code":"BLOB_UNKNOWN","message":"no route"}]}"#.to_vec(),
                });
                let mut response = format!(
                    "HTTP/1.1 {}\r\nContent-Length: {}\r\nConnection: close\r\n",
                    route.status,
                    route.body.len()
                );
                for (name, value) in &route.headers {
                    response.push_str(&format!("{name}: {value}\r\n"));
                }
                response.push_str("\r\n");
                stream.write_all(response.as_bytes()).await.unwrap();
                if method != "HEAD" {
                    stream.write_all(&route.body).await.unwrap();
                }
            });
        }
    });
    addr
}

/// Routes serving `image` under `repo`: its manifest by `tag` and by digest, and its blobs.
fn image_routes(repo: &str, tag: &str, image: &Image) -> BTreeMap<String, Route> {
    let manifest = Route::ok(media_type::OCI_MANIFEST, image.manifest());
    let mut routes = BTreeMap::from([
        (format!("/v2/{repo}/manifests/{tag}"), manifest.clone()),
        (
            format!("/v2/{repo}/manifests/{}", image.manifest_digest()),
            manifest,
        ),
    ]);
    for blob in std::iter::once(image.config()).chain(image.layers()) {
        routes.insert(
            format!("/v2/{repo}/blobs/{}", blob.digest()),
            Route::ok("application/octet-stream", blob.data()),
        );
    }
    routes
}

#[tokio::test]
async fn a_tampered_layer_is_detected() {
    let (image, _) = installer("arm64", 4);
    let mut routes = image_routes("talos/installer", "v1", &image);
    let layer = &image.layers()[0];
    let layer_path = format!("/v2/talos/installer/blobs/{}", layer.digest());
    let mut tampered = layer.data().to_vec();
    tampered[1000] ^= 0x20;
    routes.get_mut(&layer_path).unwrap().body = tampered;
    let addr = fake_registry(routes).await;
    let tagged = reference(addr, "talos/installer:v1");
    let registry = Registry::for_reference(&tagged).unwrap();

    let e = pull(&registry, &tagged, "arm64", LIMIT).await.unwrap_err();
    let message = e.to_string();
    assert!(
        matches!(&e, RegistryError::DigestMismatch { expected, .. } if expected == layer.digest()),
        "{message}"
    );
    assert!(
        message.contains(&format!("http://{addr}{layer_path}")) && message.contains("layer 0"),
        "{message}"
    );

    for (body, sent) in [
        (layer.data()[..100].to_vec(), "100"),
        ([layer.data(), b"!"].concat(), "more"),
    ] {
        let mut routes = image_routes("talos/installer", "v1", &image);
        routes.get_mut(&layer_path).unwrap().body = body;
        let addr = fake_registry(routes).await;
        let tagged = reference(addr, "talos/installer:v1");
        let registry = Registry::for_reference(&tagged).unwrap();
        let e = pull(&registry, &tagged, "arm64", LIMIT).await.unwrap_err();
        assert!(
            e.to_string().ends_with(&format!(
                "layer 0: its descriptor says {} bytes, the registry sent {sent}",
                layer.data().len()
            )),
            "{e}"
        );
    }
}

#[tokio::test]
async fn a_manifest_must_match_the_pinned_or_announced_digest() {
    let (image, _) = installer("arm64", 5);
    let (other, _) = installer("arm64", 6);
    let mut routes = image_routes("talos/installer", "v1", &image);
    // The pinned digest's path serves another image's manifest.
    routes.insert(
        format!("/v2/talos/installer/manifests/{}", image.manifest_digest()),
        Route::ok(media_type::OCI_MANIFEST, other.manifest()),
    );
    // The tag announces a digest its body does not have.
    let mut announced = Route::ok(media_type::OCI_MANIFEST, image.manifest());
    announced
        .headers
        .push(("Docker-Content-Digest", other.manifest_digest().to_string()));
    routes.insert("/v2/talos/installer/manifests/v2".into(), announced);
    let addr = fake_registry(routes).await;
    let registry = Registry::plain_http(addr);

    let pinned = reference(
        addr,
        &format!("talos/installer@{}", image.manifest_digest()),
    );
    let e = pull(&registry, &pinned, "arm64", LIMIT).await.unwrap_err();
    assert!(
        matches!(&e, RegistryError::DigestMismatch { expected, actual, .. }
            if expected == image.manifest_digest() && actual == other.manifest_digest()),
        "{e}"
    );
    let e = pull(
        &registry,
        &reference(addr, "talos/installer:v2"),
        "arm64",
        LIMIT,
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("the manifest has digest"), "{e}");
}

#[tokio::test]
async fn an_index_resolves_to_the_linux_image_of_the_arch() {
    let (arm64, arm64_files) = installer("arm64", 8);
    let (amd64, _) = installer("amd64", 9);
    let entry = |image: &Image, arch: &str| {
        serde_json::json!({
            "mediaType": media_type::OCI_MANIFEST,
            "digest": image.manifest_digest().as_str(),
            "size": image.manifest().len(),
            "platform": {"architecture": arch, "os": "linux"},
        })
    };
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::DOCKER_MANIFEST_LIST,
        "manifests": [entry(&amd64, "amd64"), entry(&arm64, "arm64")],
    }))
    .unwrap();
    let mut routes = image_routes("talos/installer", "arm64-only", &arm64);
    routes.extend(image_routes("talos/installer", "amd64-only", &amd64));
    routes.insert(
        "/v2/talos/installer/manifests/v1".into(),
        Route::ok(media_type::DOCKER_MANIFEST_LIST, &index),
    );
    let addr = fake_registry(routes).await;
    let tagged = reference(addr, "talos/installer:v1");
    let registry = Registry::for_reference(&tagged).unwrap();

    assert_eq!(
        pull(&registry, &tagged, "arm64", LIMIT).await.unwrap(),
        arm64_files
    );
    let e = pull(&registry, &tagged, "riscv64", LIMIT)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no linux/riscv64 image (it has: linux/amd64, linux/arm64)"),
        "{e}"
    );
}

/// A fake registry that answers every manifest request of `talos/installer:v1` with 401 and
/// `challenge`.
async fn challenging_registry(challenge: &str) -> (Reference, SocketAddr) {
    let routes = BTreeMap::from([(
        "/v2/talos/installer/manifests/v1".to_owned(),
        Route {
            status: "401 Unauthorized",
            headers: vec![("WWW-Authenticate", challenge.to_owned())],
            body: vec![],
        },
    )]);
    let addr = fake_registry(routes).await;
    (reference(addr, "talos/installer:v1"), addr)
}

fn with_credentials(tagged: &Reference, credentials: Credentials) -> Registry {
    let options = RegistryOptions {
        credentials: Some(credentials),
        ..Default::default()
    };
    Registry::with_options(tagged, &options).unwrap()
}

#[tokio::test]
async fn a_basic_challenge_without_fitting_credentials_says_what_is_missing() {
    let challenge = r#"Basic realm="registry""#;
    let (tagged, addr) = challenging_registry(challenge).await;

    let registry = Registry::for_reference(&tagged).unwrap();
    let e = pull(&registry, &tagged, "arm64", LIMIT).await.unwrap_err();
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e}");
    let message = e.to_string();
    assert!(
        message.contains(&format!(
            "http://{addr}/v2/talos/installer/manifests/v1: authentication is required ({challenge}); \
             no credentials are configured for {addr} (machine.registries.config.\"{addr}\".auth)"
        )),
        "{message}"
    );

    let registry = with_credentials(&tagged, Credentials::IdentityToken("r3fresh".into()));
    let e = pull(&registry, &tagged, "arm64", LIMIT).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("an identity token answers bearer challenges only"),
        "{e}"
    );

    // The fake registry refuses everyone: sent credentials were refused.
    let registry = with_credentials(
        &tagged,
        Credentials::Basic {
            username: "talos".into(),
            password: "s3cret".into(),
        },
    );
    let e = pull(&registry, &tagged, "arm64", LIMIT).await.unwrap_err();
    let message = e.to_string();
    assert!(
        matches!(e, RegistryError::CredentialsRefused { .. })
            && message.contains(&format!("the credentials for {addr} were refused"))
            && !message.contains("s3cret"),
        "{message}"
    );
}

#[tokio::test]
async fn credentials_go_to_a_plain_http_realm_on_the_registry_host_only() {
    // 127.0.0.2 is another host: the credentials stay home, and nothing is asked of it.
    let (tagged, _) =
        challenging_registry(r#"Bearer realm="http://127.0.0.2:9/token",service="r""#).await;
    let registry = with_credentials(
        &tagged,
        Credentials::Basic {
            username: "talos".into(),
            password: "s3cret".into(),
        },
    );
    let e = pull(&registry, &tagged, "arm64", LIMIT).await.unwrap_err();
    assert!(matches!(e, RegistryError::Token { .. }), "{e}");
    assert!(
        e.to_string().contains(&format!(
            "the credentials for {} are not sent to another host over plain HTTP",
            tagged.registry()
        )),
        "{e}"
    );

    // On the registry's own host (another port), they go: that realm answers 404 here.
    let realm = format!("http://{}/token", fake_registry(BTreeMap::new()).await);
    let (tagged, _) = challenging_registry(&format!(r#"Bearer realm="{realm}",service="r""#)).await;
    let registry = with_credentials(
        &tagged,
        Credentials::Basic {
            username: "talos".into(),
            password: "s3cret".into(),
        },
    );
    let e = pull(&registry, &tagged, "arm64", LIMIT)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!(
            "getting a bearer token from {realm}?service=r: answered 404"
        )),
        "{e}"
    );
}
