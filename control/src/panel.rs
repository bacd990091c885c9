//! Serves the control panel that build.rs compiled into `$OUT_DIR`: `/` and
//! every `/ui/…` path, all assets embedded in the binary.

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "$OUT_DIR/panel-dist/"]
struct Assets;

/// The panel loads nothing from elsewhere; saying so to the browser keeps it
/// that way and stops other sites from framing the controls.
/// `wasm-unsafe-eval` is what compiling the wasm module needs, nothing more.
const CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
                   style-src 'self'; img-src 'self' data:; connect-src 'self'; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The response for `path` if it belongs to the panel: `/`, `/ui` and any
/// `/ui/…` path that is not a file get index.html (the app routes in the
/// browser); a missing file (a last segment with a dot) is a 404.
pub(crate) fn serve(path: &str) -> Option<Response<Bytes>> {
    let file = match path {
        "/" | "/ui" => "",
        _ => path.strip_prefix("/ui/")?,
    };
    let last_segment = file.rsplit('/').next().unwrap_or_default();
    let (name, asset) = match Assets::get(file) {
        Some(asset) => (file, asset),
        None if last_segment.contains('.') => return Some(not_found(path)),
        None => ("index.html", Assets::get("index.html")?),
    };
    let content_type = content_type(name, asset.metadata.mimetype());
    let bytes = match asset.data {
        Cow::Borrowed(bytes) => Bytes::from_static(bytes),
        Cow::Owned(bytes) => Bytes::from(bytes),
    };
    let mut response = Response::new(bytes);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    // File names carry no hash, so the browser must ask again each load;
    // on loopback that costs nothing.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    Some(response)
}

fn content_type(name: &str, guessed: &str) -> HeaderValue {
    // Browsers only stream-compile wasm served as application/wasm, and only
    // run modules served with a JavaScript type.
    let mime = match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("wasm") => "application/wasm",
        _ => {
            return HeaderValue::from_str(guessed)
                .unwrap_or(HeaderValue::from_static("application/octet-stream"));
        }
    };
    HeaderValue::from_static(mime)
}

fn not_found(path: &str) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from(format!("no panel file at {path}\n")));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> (StatusCode, String, Bytes) {
        let response = serve(path).expect("a panel path");
        let status = response.status();
        let content_type = response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        (status, content_type, response.into_body())
    }

    #[test]
    fn app_paths_get_index_html_and_missing_files_a_404() {
        let (status, content_type, index) = get("/");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "text/html; charset=utf-8");
        for path in ["/ui", "/ui/", "/ui/functions/0123456789abcdef"] {
            let (status, _, body) = get(path);
            assert_eq!((status, &body), (StatusCode::OK, &index), "{path}");
        }
        assert_eq!(get("/ui/pkg/nothing.js").0, StatusCode::NOT_FOUND);
        assert!(serve("/api/functions").is_none());
        assert!(serve("/uix").is_none());
    }

    #[test]
    fn every_asset_is_served_with_the_type_a_browser_needs() {
        for name in Assets::iter() {
            let (status, content_type, body) = get(&format!("/ui/{name}"));
            assert_eq!(status, StatusCode::OK, "{name}");
            assert!(!body.is_empty(), "{name} is empty");
            if name.ends_with(".wasm") {
                assert_eq!(content_type, "application/wasm");
            }
            if name.ends_with(".js") {
                assert!(
                    content_type.starts_with("text/javascript"),
                    "{name}: {content_type}"
                );
            }
        }
    }
}
