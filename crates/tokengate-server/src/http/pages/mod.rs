//! The web pages the service serves itself: `/` (sign in, register),
//! `/account` (who you are, your sessions, your password) and `/admin`
//! (users, the audit log, the sign-in activity chart).
//!
//! Static HTML, one hand-written script and one stylesheet, embedded in the
//! binary: no build step, nothing fetched from elsewhere. The pages work
//! under a strict Content-Security-Policy (scripts and styles from this
//! origin only, no inline script or style, no eval), and talk to the API in
//! cookie mode, so they are served only while cookie mode is not `off`.
//! They are not part of the OpenAPI document, which describes the API.

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::http::state::AppState;

const SIGN_IN: &str = include_str!("index.html");
const ACCOUNT: &str = include_str!("account.html");
const ADMIN: &str = include_str!("admin.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");

/// The pages' policy: everything from this origin only, nothing inline
/// (the global policy, `default-src 'none'`, would block the pages' own
/// script and style). Trusted Types are required and no policy may be
/// made: the browser refuses any string written into an HTML or script
/// sink (`innerHTML`, `document.write`, a script's `src`, ...), so even a
/// future slip in `app.js` cannot turn text from the service into markup.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'; require-trusted-types-for 'script'; trusted-types 'none'";

/// The pages and their two assets.
pub fn router(state: &AppState) -> Router<Arc<AppState>> {
    // The sign-in page shows the register form only when registration is
    // open: a data attribute, read by the script (no inline script).
    let sign_in = SIGN_IN.replace(
        "{{registration}}",
        if state.settings.registration {
            "true"
        } else {
            "false"
        },
    );
    Router::new()
        .route("/", get(move || async move { html(sign_in.clone()) }))
        .route("/account", get(|| async { html(ACCOUNT.to_owned()) }))
        .route("/admin", get(|| async { html(ADMIN.to_owned()) }))
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}

fn html(body: String) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(PAGE_CSP),
            ),
            // Never kept, not even in the back-forward cache: after a
            // sign-out, Back must not show an account or the admin console
            // again (and a new binary's page is fetched anyway).
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            // A page this one opens, or that opened it, from another origin
            // gets no handle on its window (no `window.opener` navigation,
            // no cross-window probing of a signed-in page).
            (
                HeaderName::from_static("cross-origin-opener-policy"),
                HeaderValue::from_static("same-origin"),
            ),
        ],
        body,
    )
        .into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}
