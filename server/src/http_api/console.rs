//! The web console: static files from `server/console/`, embedded in the binary so that it
//! works offline and matches the server it came with. `/` is the page, `/console/{file}` its
//! assets. The page runs under a strict Content-Security-Policy (its own scripts and styles
//! only, no inline code, no framing), since it handles tokens.

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};

use super::problem::Problem;

/// Each asset: its name under `/console/`, its media type, its bytes.
const ASSETS: [(&str, &str, &[u8]); 3] = [
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../console/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../console/style.css"),
    ),
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../console/index.html"),
    ),
];

const CSP: &str = "default-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

pub async fn index() -> Response {
    file("index.html").expect("the page is embedded")
}

pub async fn asset(Path(name): Path<String>) -> Result<Response, Problem> {
    file(&name).ok_or_else(|| {
        Problem::new(
            StatusCode::NOT_FOUND,
            tonic::Code::NotFound,
            format!("the console has no file {name:?}"),
        )
    })
}

fn file(name: &str) -> Option<Response> {
    let (_, media_type, bytes) = ASSETS.iter().find(|(file, _, _)| *file == name)?;
    let mut response = (StatusCode::OK, *bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Always revalidated: a console from before an upgrade must not talk to the new server.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(response)
}
