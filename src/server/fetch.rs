//! `--allow-remote-images`: fetching the `http://` image URL a request
//! names. Off by default (SSRF: the server would fetch whatever a client
//! names, internal addresses included).
//!
//! The client is hyper's own HTTP/1 client connection: hyper is already in
//! the tree through axum, so this adds two tiny crates (`want`, `try-lock`)
//! and a few seconds of compile time, where ureq would bring a second HTTP
//! stack (and, with its default TLS, rustls and ring: minutes on a small
//! machine). No TLS: an `https://` URL gets a 400 that says so.

use std::time::Duration;

use axum::http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use super::api::ApiError;

/// What one fetch may take.
#[derive(Clone, Copy, Debug)]
pub struct FetchLimits {
    /// The most bytes of an image (the request body limit).
    pub max_bytes: usize,
    /// For the whole fetch, redirects included.
    pub timeout: Duration,
}

/// Redirects followed before the fetch fails.
pub const MAX_REDIRECTS: usize = 5;

fn failed(url: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::bad(
        "remote_image_fetch_failed",
        format!("cannot fetch the image {url}: {why}"),
    )
}

/// Fetches `url` from a blocking thread of the server's runtime (the
/// request parser runs in `spawn_blocking`).
pub fn fetch_blocking(url: &str, limits: FetchLimits) -> Result<Vec<u8>, ApiError> {
    let rt = tokio::runtime::Handle::try_current().map_err(|_| failed(url, "no runtime"))?;
    rt.block_on(async {
        tokio::time::timeout(limits.timeout, fetch(url, limits))
            .await
            .unwrap_or_else(|_| {
                Err(failed(
                    url,
                    format!("no complete answer within {:?}", limits.timeout),
                ))
            })
    })
}

/// Aborts the connection's task when the fetch ends (or times out).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// GET `url`, following at most [`MAX_REDIRECTS`] redirects; the body of a
/// 2xx answer whose content type (if any) is an image, within the limit.
async fn fetch(url: &str, limits: FetchLimits) -> Result<Vec<u8>, ApiError> {
    let mut uri: Uri = url.parse().map_err(|e| failed(url, e))?;
    for _ in 0..=MAX_REDIRECTS {
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(failed(
                    url,
                    "https is not supported (this server has no TLS client); send the image inline as data:image/png;base64,...",
                ))
            }
            _ => return Err(failed(url, format!("{uri}: not an http:// URL"))),
        }
        let (host, authority) = match (uri.host(), uri.authority()) {
            (Some(h), Some(a)) => (h.trim_matches(['[', ']']).to_string(), a.to_string()),
            _ => return Err(failed(url, format!("{uri}: no host"))),
        };
        let port = uri.port_u16().unwrap_or(80);
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| failed(url, format!("{authority}: {e}")))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| failed(url, e))?;
        let _conn = AbortOnDrop(tokio::spawn(async move {
            let _ = conn.await;
        }));
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let req = Request::get(path)
            .header(header::HOST, &authority)
            .header(header::ACCEPT, "image/png, image/jpeg")
            .header(header::USER_AGENT, "dam-serve")
            .body(Empty::<Bytes>::new())
            .map_err(|e| failed(url, e))?;
        let resp = send.send_request(req).await.map_err(|e| failed(url, e))?;
        let status = resp.status();
        if status.is_redirection() {
            let to = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| failed(url, format!("{status} without a Location")))?;
            uri = resolve(&uri, to).ok_or_else(|| failed(url, format!("bad redirect to {to}")))?;
            continue;
        }
        if !status.is_success() {
            return Err(failed(url, format!("the server answered {status}")));
        }
        check_headers(url, resp.headers(), limits.max_bytes)?;
        let body = Limited::new(resp.into_body(), limits.max_bytes)
            .collect()
            .await
            .map_err(|e| match e.downcast_ref::<LengthLimitError>() {
                Some(_) => too_large(url, limits.max_bytes),
                None => failed(url, e),
            })?;
        return Ok(body.to_bytes().to_vec());
    }
    Err(failed(url, format!("more than {MAX_REDIRECTS} redirects")))
}

fn too_large(url: &str, max: usize) -> ApiError {
    ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        message: format!("the image {url} is larger than {max} bytes"),
        kind: "invalid_request_error",
        code: "remote_image_too_large",
    }
}

/// The content type, if given, must be an image (or untyped bytes, which
/// the decoder then checks); a declared length must fit.
fn check_headers(url: &str, h: &axum::http::HeaderMap, max: usize) -> Result<(), ApiError> {
    if let Some(ct) = h.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("?").to_ascii_lowercase();
        if !(ct.starts_with("image/") || ct.starts_with("application/octet-stream")) {
            return Err(ApiError::bad(
                "invalid_image",
                format!("the URL {url} gives {ct}, not an image"),
            ));
        }
    }
    let declared = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large(url, max));
    }
    Ok(())
}

/// A redirect's target: absolute, or relative to `base`.
fn resolve(base: &Uri, to: &str) -> Option<Uri> {
    if to.contains("://") {
        return to.parse().ok();
    }
    let path = if to.starts_with('/') {
        to.to_string()
    } else {
        let dir = base.path().rsplit_once('/').map_or("", |(d, _)| d);
        format!("{dir}/{to}")
    };
    Uri::builder()
        .scheme(base.scheme_str()?)
        .authority(base.authority()?.as_str())
        .path_and_query(path)
        .build()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_resolve() {
        let base: Uri = "http://h:8/a/b.png?x=1".parse().unwrap();
        let r = |to| resolve(&base, to).map(|u| u.to_string());
        assert_eq!(r("/c.png").as_deref(), Some("http://h:8/c.png"));
        assert_eq!(r("c.png").as_deref(), Some("http://h:8/a/c.png"));
        assert_eq!(r("http://o/x").as_deref(), Some("http://o/x"));
    }
}
