//! The router the HTTP tests use, checked against the OpenAPI document: every response any
//! test sees goes through `openapi_check` (operation, declared status, content type, headers,
//! schema; for accepted requests, what was sent). A violation fails the request's test at
//! once and, in case that test swallowed the panic in a spawned task, every later `Guard`.
//! Each `Guard` that drops prints how many (operation, status) pairs this test binary has seen.

#![allow(dead_code)] // each test binary that includes this uses a different part of it
#![allow(clippy::panic)] // a violation must fail the test that saw it

use std::collections::BTreeSet;
use std::io::Write as _;
use std::sync::{Mutex, OnceLock};

use axum::body::Body;
use axum::extract::Request;
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use consentry_api::ApiState;
use http_body_util::BodyExt;

use super::openapi_check::{Document, Exchange, Seen};

/// The document `/openapi.json` serves, built from the same annotations.
pub fn document() -> &'static Document {
    static DOCUMENT: OnceLock<Document> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        Document::new(consentry_api::openapi_json())
            .unwrap_or_else(|e| unreachable!("the document is well formed: {e}"))
    })
}

fn seen() -> &'static Mutex<BTreeSet<Seen>> {
    static SEEN: OnceLock<Mutex<BTreeSet<Seen>>> = OnceLock::new();
    SEEN.get_or_init(Mutex::default)
}

fn violations() -> &'static Mutex<Vec<String>> {
    static VIOLATIONS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    VIOLATIONS.get_or_init(Mutex::default)
}

/// A request header that marks a violation as expected (a test of the checker itself): it
/// still fails its request, but is not held against the other tests.
pub const EXPECTED_VIOLATION: &str = "x-conformance-expected-violation";

/// The whole application, every response checked against the document.
pub fn app(state: ApiState) -> Router {
    checked(consentry_api::app(state))
}

/// `router`, every response checked against the document.
pub fn checked(router: Router) -> Router {
    router.layer(middleware::from_fn(check))
}

/// Paths outside the API document (the console's HTML pages).
fn outside_the_document(path: &str) -> bool {
    path == "/console" || path.starts_with("/console/")
}

async fn check(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let sent = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let method = parts.method.as_str().to_string();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().map(String::from);
    let request_type =
        parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(String::from);
    let expected = parts.headers.contains_key(EXPECTED_VIOLATION);
    let response = next.run(Request::from_parts(parts, Body::from(sent.clone()))).await;
    if outside_the_document(&path) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let received = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let exchange = Exchange {
        method: &method,
        path: &path,
        query: query.as_deref(),
        request_content_type: request_type.as_deref(),
        request_body: &sent,
        status: parts.status.as_u16(),
        content_type: parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()),
        headers: parts.headers.keys().map(|k| k.as_str().to_string()).collect(),
        body: &received,
    };
    match document().check(&exchange) {
        Ok(pair) => {
            if let Ok(mut seen) = seen().lock() {
                seen.insert(pair);
            }
        }
        Err(violation) => {
            if let (false, Ok(mut all)) = (expected, violations().lock()) {
                all.push(violation.clone());
            }
            panic!("the OpenAPI document does not describe this answer: {violation}");
        }
    }
    Response::from_parts(parts, Body::from(received))
}

/// How many (operation, status) pairs were seen so far in this test binary.
pub fn pairs_seen() -> usize {
    seen().lock().map(|s| s.len()).unwrap_or(0)
}

/// Every pair seen so far.
pub fn seen_pairs() -> Vec<Seen> {
    seen().lock().map(|s| s.iter().cloned().collect()).unwrap_or_default()
}

/// Held by each test using the checked router: on drop, prints the running count of pairs
/// seen, and fails if any response anywhere in this binary violated the document.
pub struct Guard(());

/// Guards alive, and the count last printed.
static LIVE: Mutex<(usize, usize)> = Mutex::new((0, 0));

impl Guard {
    pub fn new() -> Guard {
        if let Ok(mut live) = LIVE.lock() {
            live.0 += 1;
        }
        Guard(())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // Printed when the last guard alive drops and more pairs were seen since the last
        // line: the last line printed is the binary's total.
        let pairs = pairs_seen();
        let print = LIVE.lock().map_or(true, |mut live| {
            live.0 = live.0.saturating_sub(1);
            let print = live.0 == 0 && pairs > live.1;
            if print {
                live.1 = pairs;
            }
            print
        });
        let line = format!(
            "openapi conformance: {} (operation, status) pairs of the {} declared seen so far in this test binary",
            pairs,
            document().declared_pairs()
        );
        if print {
            let _ = writeln!(std::io::stderr(), "{line}");
        }
        if std::thread::panicking() {
            return;
        }
        let found = violations().lock().map(|v| v.clone()).unwrap_or_default();
        assert!(found.is_empty(), "responses the OpenAPI document does not describe: {found:#?}");
    }
}
