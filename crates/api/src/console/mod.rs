//! The privacy team's console at `/console`: server-rendered pages (askama templates, checked
//! at compile time) over the same service calls and rules as the platform API, signed in with
//! an operator key. It adds no path to data of its own: every page reads what the platform API
//! reads, and every button calls the service function the matching API call does, after the
//! same role check.
//!
//! Security: a session cookie (HttpOnly, SameSite=Strict, Secure when the request came over
//! https or a proxy says it did) holds a random id the server keeps only as a hash; every form
//! carries the session's CSRF token and a cross-site `Sec-Fetch-Site` is refused; every
//! response carries a Content-Security-Policy allowing only the console's own script and
//! style (no inline script); every value is escaped by the templates.

mod apps;
mod audits;
mod charts;
mod diff;
mod digest;
mod jobs;
mod members;
mod overview;
mod policies;
mod remediation;
mod session;
mod view;

use std::sync::{Arc, Mutex};

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use consentry_service::{SessionLimits, SignInSessions};

use crate::ApiState;

pub use digest::LedgerDigest;
pub use jobs::MAX_RUNNING_JOBS;
pub use session::{CSRF_FIELD, SESSION_COOKIE, SIGN_IN_COOKIE};

/// Largest form the console accepts (a pasted policy draft).
pub const CONSOLE_FORM_LIMIT: usize = 4 * 1024 * 1024;

/// The Content-Security-Policy of every console response: only the console's own script,
/// style and images; no inline script; forms post only to the console; never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const STYLE: &str = include_str!("static/console.css");
const SCRIPT: &str = include_str!("static/console.js");
const ICON: &str = include_str!("static/icon.svg");

/// What the console keeps between requests: signed-in sessions, audit and verification jobs,
/// the last ledger verification, and the per-day digest of the ledger.
#[derive(Default)]
pub struct Console {
    pub(crate) sessions: SignInSessions,
    pub(crate) jobs: jobs::Jobs,
    pub(crate) digest: Mutex<Option<Arc<LedgerDigest>>>,
    pub(crate) digest_refreshing: std::sync::atomic::AtomicBool,
}

impl Console {
    pub fn new(limits: SessionLimits) -> Console {
        Console { sessions: SignInSessions::new(limits), ..Console::default() }
    }

    /// The session table (tests: how many sessions exist, and that none is kept in clear).
    pub fn sessions(&self) -> &SignInSessions {
        &self.sessions
    }
}

/// What the console says for an error axum answered itself (a body over the limit, a path
/// that does not parse, a method a page does not take): the same HTML error page as the
/// console's own errors, never plain text or JSON.
async fn as_error_page(response: Response) -> Response {
    let status = response.status();
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/html"));
    if !(status.is_client_error() || status.is_server_error()) || is_html {
        return response;
    }
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        format!(
            "This form is larger than the console accepts ({} MiB for a pasted policy, {} KiB for anything else).",
            CONSOLE_FORM_LIMIT / (1024 * 1024),
            crate::JSON_BODY_LIMIT / 1024
        )
    } else if status == StatusCode::METHOD_NOT_ALLOWED {
        "This page does not take that kind of request.".to_string()
    } else if status.is_server_error() {
        "Something went wrong on the server; it was logged.".to_string()
    } else {
        let text = axum::body::to_bytes(response.into_body(), 4096).await.unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let detail = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_string))
            .unwrap_or_else(|| text.chars().take(300).collect());
        format!("The request could not be read: {detail}")
    };
    view::error_page(status, &message)
}

async fn security_headers(request: axum::extract::Request, next: Next) -> Response {
    let mut response = as_error_page(next.run(request).await).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600")),
        ],
        body,
    )
        .into_response()
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn icon() -> Response {
    asset("image/svg+xml", ICON)
}

async fn home() -> Redirect {
    Redirect::to("/console/overview")
}

async fn method_not_allowed() -> Response {
    view::error_page(StatusCode::METHOD_NOT_ALLOWED, "This page does not take that kind of request.")
}

async fn not_found() -> Response {
    view::error_page(StatusCode::NOT_FOUND, "There is no such page in the console.")
}

/// The console's routes, to be nested at `/console`.
pub fn router() -> Router<ApiState> {
    let small = DefaultBodyLimit::max(crate::JSON_BODY_LIMIT);
    Router::new()
        .route("/", get(home))
        .route("/static/console.css", get(style))
        .route("/static/console.js", get(script))
        .route("/static/icon.svg", get(icon))
        .route("/sign-in", get(session::sign_in_form).post(session::sign_in).layer(small))
        .route("/sign-out", post(session::sign_out).layer(small))
        .route("/overview", get(overview::page))
        .route("/ledger/verify", post(overview::verify).layer(small))
        .route("/ledger/verifications/{id}", get(overview::verification))
        .route("/policies", get(policies::list).post(policies::submit))
        .route("/policies/{version}", get(policies::show))
        .route("/policies/{version}/approve", post(policies::approve).layer(small))
        .route("/policies/{version}/activate", post(policies::activate).layer(small))
        .route("/policies/{version}/preview", post(policies::preview).layer(small))
        .route("/policies/{version}/proofs", post(policies::prove).layer(small))
        .route("/policies/{version}/waivers", post(policies::waive).layer(small))
        .route("/audits", get(audits::form).post(audits::start))
        .route("/audits/{id}", get(audits::show))
        .route("/audits/{id}/report.html", get(audits::report_html))
        .route("/audits/{id}/report.csv", get(audits::report_csv))
        .route("/audits/{id}/manifests/{file}", get(audits::manifest))
        .route("/audits/{id}/cases", post(audits::open_cases).layer(small))
        .route("/remediation", get(remediation::page))
        .route("/deliveries/{id}/retry", post(remediation::retry).layer(small))
        .route("/apps", get(apps::list))
        .route("/apps/{id}", get(apps::show))
        .route("/apps/{id}/{action}", post(apps::act).layer(small))
        .route("/developers/{id}/revoke", post(apps::revoke_developer).layer(small))
        .route("/members", get(members::page))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(CONSOLE_FORM_LIMIT))
        .layer(middleware::from_fn(security_headers))
}
