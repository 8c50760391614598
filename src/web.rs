//! The web page: compose a batch, watch it go out, manage batches. Plain HTML, CSS
//! and JavaScript from `src/web/`, embedded in the binary, so `herald serve` needs
//! no build step and no files beside it. The page holds no data: it talks to the
//! API like any other client, and is public even when the API needs a token.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH,
    X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// One embedded file and how it is served.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const INDEX: Asset = Asset {
    name: "index.html",
    content_type: "text/html; charset=utf-8",
    body: include_str!("web/index.html"),
};

/// What `/assets/{name}` serves.
const ASSETS: [Asset; 2] = [
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("web/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("web/app.css"),
    },
];

/// The names `/assets/{name}` serves, each with its media type (without parameters).
pub(crate) fn assets() -> impl Iterator<Item = (&'static str, &'static str)> {
    ASSETS.iter().map(|a| {
        let media = a.content_type.split(';').next().unwrap_or(a.content_type);
        (a.name, media)
    })
}

/// Only this origin's own files and API: the page loads nothing from elsewhere.
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'self'";

/// `GET /`: the page.
pub async fn page(headers: HeaderMap) -> Response {
    serve(&INDEX, &headers)
}

/// `GET /assets/{name}`: the page's script and stylesheet; `404` for any other name.
pub async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(asset) => serve(asset, &headers),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

/// Each asset's entity tag: a hash of its bytes, computed once.
static ETAGS: LazyLock<Vec<(&'static str, HeaderValue)>> = LazyLock::new(|| {
    std::iter::once(&INDEX)
        .chain(ASSETS.iter())
        .map(|a| {
            let hash = Sha256::digest(a.body.as_bytes());
            let tag = format!("\"{}\"", hex::encode(&hash[..12]));
            (
                a.name,
                HeaderValue::from_str(&tag).expect("a hex tag is a valid header"),
            )
        })
        .collect()
});

/// The asset, or `304` when the browser's copy is current. Browsers revalidate
/// every time (`no-cache`): a new binary can change any file, and a revalidation
/// costs a few bytes.
fn serve(asset: &Asset, headers: &HeaderMap) -> Response {
    let etag = ETAGS
        .iter()
        .find(|(name, _)| *name == asset.name)
        .map(|(_, tag)| tag.clone())
        .expect("every asset has a tag");
    let fresh = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        asset.body.into_response()
    };
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(ETAG, etag);
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    response
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn get(path: &str, if_none_match: Option<&str>) -> Response {
        let mut request = Request::get(path);
        if let Some(tag) = if_none_match {
            request = request.header(IF_NONE_MATCH, tag);
        }
        axum::Router::new()
            .route("/", axum::routing::get(page))
            .route("/assets/{name}", axum::routing::get(asset))
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    async fn text(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn the_page_is_served_at_the_root_as_html_linking_its_assets() {
        let response = get("/", None).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(response.headers()[CACHE_CONTROL], "no-cache");
        assert!(response.headers().contains_key(CONTENT_SECURITY_POLICY));
        let html = text(response).await;
        for asset in ASSETS {
            assert!(
                html.contains(&format!("/assets/{}", asset.name)),
                "the page links {}",
                asset.name
            );
        }
    }

    #[tokio::test]
    async fn assets_carry_their_type_and_a_tag_that_answers_not_modified() {
        for (name, content_type) in [
            ("app.js", "text/javascript; charset=utf-8"),
            ("app.css", "text/css; charset=utf-8"),
        ] {
            let response = get(&format!("/assets/{name}"), None).await;
            assert_eq!(response.status(), StatusCode::OK, "{name}");
            assert_eq!(response.headers()[CONTENT_TYPE], content_type);
            let tag = response.headers()[ETAG].to_str().unwrap().to_owned();
            assert!(!text(response).await.is_empty());

            let again = get(&format!("/assets/{name}"), Some(&tag)).await;
            assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{name}");
            assert!(text(again).await.is_empty());
            let stale = get(&format!("/assets/{name}"), Some("\"old\"")).await;
            assert_eq!(stale.status(), StatusCode::OK, "{name}");
        }
    }

    #[tokio::test]
    async fn an_unknown_asset_is_not_found() {
        let response = get("/assets/secrets.txt", None).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let response = get("/assets/..%2FCargo.toml", None).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
}
