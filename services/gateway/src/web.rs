//! The customer portal: a browser app the gateway serves itself from files compiled into the
//! binary (`services/gateway/web/`), so nothing is fetched from the internet at run time and
//! `make run` needs no JavaScript toolchain. The app talks to the `/v1` REST API like any client.
//!
//! - `/app/...` answers the app shell (client-side routes), revalidated on every load;
//! - each file is served at `/assets/<stem>.<content hash>.<ext>` and cached for a year (a changed
//!   file gets a new name, and the shell names the new one);
//! - every page carries a strict Content-Security-Policy: scripts, styles and connections to this
//!   origin only, no inline script or style.

use std::{collections::HashMap, sync::LazyLock};

use axum::{
    Router,
    extract::Path,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::get,
};
use sha2::{Digest, Sha256};
use tower_http::compression::CompressionLayer;

use crate::{AppState, error::ApiError};

/// The policy of every page the gateway serves to a browser.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
                            base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The app's files and the API docs page's: name, content type, content. The docs UI is Swagger
/// UI, vendored from the npm package `swagger-ui-dist` (version and checksums:
/// `scripts/vendor-docs-ui.sh`, `web/vendor/swagger-ui/SHA256SUMS`).
const FILES: &[(&str, &str, &[u8])] = &[
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../web/app.js")),
    ("app.css", "text/css; charset=utf-8", include_bytes!("../web/app.css")),
    ("icon.svg", "image/svg+xml", include_bytes!("../web/icon.svg")),
    ("docs.js", "text/javascript; charset=utf-8", include_bytes!("../web/docs.js")),
    ("swagger-ui-bundle.js", "text/javascript; charset=utf-8", include_bytes!("../web/vendor/swagger-ui/swagger-ui-bundle.js")),
    ("swagger-ui.css", "text/css; charset=utf-8", include_bytes!("../web/vendor/swagger-ui/swagger-ui.css")),
];

const SHELL: &str = include_str!("../web/index.html");
const DOCS: &str = include_str!("../web/docs.html");

struct Web {
    /// Served name (`app.1a2b3c4d5e6f.js`) → content type and content.
    assets: HashMap<String, (&'static str, &'static [u8])>,
    /// File name (`app.css`) → the path it is served at.
    paths: HashMap<&'static str, String>,
    /// The shell with each `{{name}}` replaced by the file's served path.
    shell: String,
    /// The API docs page, likewise.
    docs: String,
}

static WEB: LazyLock<Web> = LazyLock::new(|| {
    let (mut assets, mut paths) = (HashMap::new(), HashMap::new());
    let (mut shell, mut docs) = (SHELL.to_owned(), DOCS.to_owned());
    for &(name, content_type, body) in FILES {
        let served = hashed_name(name, body);
        let path = format!("/assets/{served}");
        shell = shell.replace(&format!("{{{{{name}}}}}"), &path);
        docs = docs.replace(&format!("{{{{{name}}}}}"), &path);
        assets.insert(served, (content_type, body));
        paths.insert(name, path);
    }
    Web { assets, paths, shell, docs }
});

/// `app.js` with content `body` → `app.<first 12 hex digits of its SHA-256>.js`.
fn hashed_name(name: &str, body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let hash: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    match name.rsplit_once('.') {
        Some((stem, ext)) => format!("{stem}.{hash}.{ext}"),
        None => format!("{name}.{hash}"),
    }
}

/// Where the stylesheet is served, for the gateway's server-rendered pages (local checkout).
pub fn stylesheet() -> &'static str {
    WEB.paths.get("app.css").map_or("", String::as_str)
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/app/") }))
        .route("/app", get(shell))
        .route("/app/", get(shell))
        .route("/app/{*path}", get(shell))
        .route("/assets/{name}", get(asset))
        .route("/docs", get(docs))
        .layer(CompressionLayer::new())
}

/// The app shell; the app itself decides what to show for the path (and shows "not found").
async fn shell() -> Response {
    let mut resp = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], WEB.shell.clone()).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP));
    resp
}

/// The API reference: `/openapi.json` rendered by the vendored Swagger UI, under the same policy
/// as every page (nothing from elsewhere, no inline script or style).
async fn docs() -> Response {
    let mut resp = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], WEB.docs.clone()).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP));
    resp
}

async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    let &(content_type, body) = WEB.assets.get(&name).ok_or_else(|| ApiError::not_found("asset"))?;
    let mut resp = (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pages_name_every_file_by_its_content_hash() {
        for &(name, _, body) in FILES {
            let served = hashed_name(name, body);
            let named = format!("/assets/{served}");
            assert!(WEB.shell.contains(&named) || WEB.docs.contains(&named), "no page names {name}");
            assert!(WEB.assets.contains_key(&served));
        }
        assert!(!WEB.shell.contains("{{"), "a placeholder in index.html names no file");
        assert!(!WEB.docs.contains("{{"), "a placeholder in docs.html names no file");
        assert_ne!(hashed_name("a.js", b"1"), hashed_name("a.js", b"2"));
    }
}
