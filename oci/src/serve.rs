//! A read-only registry for one image, so a node can pull an installer that exists only as a
//! local OCI layout or tarball on the operator's machine (`talosctl upgrade --image ./dir`).

use std::convert::Infallible;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::image::Image;
use crate::media_type;

/// The repository the served image appears under.
pub const REPOSITORY: &str = "local/installer";

fn respond(request: &Request<Incoming>, image: &Image) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    let found = |media_type: &str, body: &[u8], digest: &str| {
        let body_len = body.len();
        let body = if request.method() == Method::HEAD {
            Bytes::new()
        } else {
            Bytes::copy_from_slice(body)
        };
        Response::builder()
            .header(header::CONTENT_TYPE, media_type)
            .header(header::CONTENT_LENGTH, body_len)
            .header("Docker-Content-Digest", digest)
            .body(Full::new(body))
    };
    let manifest_digest = image.manifest_digest().as_str();
    let result = if path == "/v2/" {
        Response::builder().body(Full::new(Bytes::new()))
    } else if let Some(reference) = path.strip_prefix(&format!("/v2/{REPOSITORY}/manifests/")) {
        if reference == manifest_digest || reference == "latest" {
            found(media_type::OCI_MANIFEST, image.manifest(), manifest_digest)
        } else {
            not_found()
        }
    } else if let Some(digest) = path.strip_prefix(&format!("/v2/{REPOSITORY}/blobs/")) {
        std::iter::once(image.config())
            .chain(image.layers())
            .find(|b| b.digest().as_str() == digest)
            .map_or_else(not_found, |b| found(b.media_type(), b.data(), digest))
    } else {
        not_found()
    };
    result.unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn not_found() -> http::Result<Response<Full<Bytes>>> {
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .body(Full::new(Bytes::new()))
}

/// Serves `image` on `listener` until the task is dropped or aborted.
pub async fn serve(image: Arc<Image>, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let image = image.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = respond(&request, &image);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Reference, Registry, installer_image};

    #[tokio::test]
    async fn a_registry_client_pulls_the_served_image() {
        let image =
            Arc::new(installer_image("arm64", b"kernel".to_vec(), b"initrd".to_vec()).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(image.clone(), listener));
        let reference =
            Reference::parse(&format!("{addr}/{REPOSITORY}@{}", image.manifest_digest())).unwrap();
        let files = Registry::plain_http(addr)
            .pull_files(
                &reference,
                "arm64",
                &[
                    "usr/install/arm64/vmlinuz",
                    "usr/install/arm64/initramfs.zst",
                ],
                1 << 20,
            )
            .await
            .unwrap();
        assert_eq!(files["usr/install/arm64/vmlinuz"], b"kernel");
        let missing = Reference::parse(&format!("{addr}/{REPOSITORY}:v9")).unwrap();
        let err = Registry::plain_http(addr)
            .pull_files(&missing, "arm64", &[], 1 << 20)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("404"), "{err}");
        server.abort();
    }
}
