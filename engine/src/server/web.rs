//! The browser client: plain HTML, CSS and JavaScript, no build step,
//! compiled into the binary so the server is one file.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const INDEX_HTML: &str = include_str!("static/index.html");
const APP_JS: &str = include_str!("static/app.js");
const STYLE_CSS: &str = include_str!("static/style.css");
const CHAT_JS: &str = include_str!("static/chat.js");
const E2EE_JS: &str = include_str!("static/e2ee.js");
const E2EE_WORKER_JS: &str = include_str!("static/e2ee-worker.js");

/// Same-origin only; media elements play `MediaStream`s, which need no
/// source list.
const CSP: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; \
                   base-uri 'none'; frame-ancestors 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

/// `GET /` and `GET /r/{room}`: the page (the script reads the path).
pub(super) async fn index() -> Response {
    asset(INDEX_HTML, "text/html; charset=utf-8")
}

/// `GET /assets/app.js`.
pub(super) async fn app_js() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

/// `GET /assets/style.css`.
pub(super) async fn style_css() -> Response {
    asset(STYLE_CSS, "text/css; charset=utf-8")
}

/// `GET /assets/chat.js`: the chat panel.
pub(super) async fn chat_js() -> Response {
    asset(CHAT_JS, "text/javascript; charset=utf-8")
}

/// `GET /assets/e2ee.js`: end-to-end encryption (keys, exchange).
pub(super) async fn e2ee_js() -> Response {
    asset(E2EE_JS, "text/javascript; charset=utf-8")
}

/// `GET /assets/e2ee-worker.js`: the encoded-transform worker.
pub(super) async fn e2ee_worker_js() -> Response {
    asset(E2EE_WORKER_JS, "text/javascript; charset=utf-8")
}
