//! Every operation `/openapi.json` lists, asked with hostile values (see `support/hostile.rs`)
//! through the router: every answer is a 2xx or a 4xx, never a 5xx; every answer is one the
//! document declares, with its content type and schema, errors as problem+json (RFC 6749
//! JSON on `/oauth`), and a 2xx only for a request the document allows; the server answers
//! its health check afterwards. `CONSENTRY_FUZZ_SEED` and `CONSENTRY_FUZZ_PER_OPERATION`
//! change the run; the seed is printed so a failure can be replayed.

#![allow(clippy::indexing_slicing)] // serde_json indexing returns Null, it never panics

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue, Method, Request, StatusCode};
use axum::Router;
use consentry_api::{app, ApiState};
use consentry_service::{AuthLimits, ServerKey, Service, ServiceConfig, SimulatedClock};
use consentry_store_sqlite::SqliteStore;
use consentry_types::{DeveloperId, Instant, OperatorRole};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

#[path = "support/openapi_check.rs"]
mod openapi_check;

#[path = "support/hostile.rs"]
mod hostile;

use hostile::{Credentials, HostileRequest, Rng};
use openapi_check::{Document, Exchange};

const GROUPS_2018: &str = include_str!("../../../policies/groups-2018.cedar");

struct Answer {
    status: StatusCode,
    content_type: Option<String>,
    headers: Vec<String>,
    body: Vec<u8>,
}

async fn send(router: &Router, request: Request<Body>) -> Answer {
    let response = router.clone().oneshot(request).await.unwrap_or_else(|e| match e {});
    let status = response.status();
    let content_type =
        response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(String::from);
    let headers = response.headers().keys().map(|k| k.as_str().to_string()).collect();
    let body = response.into_body().collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
    Answer { status, content_type, headers, body }
}

async fn call(
    router: &Router,
    method: Method,
    uri: &str,
    auth: Option<String>,
    body: Option<(&str, String)>,
) -> Value {
    let mut request = Request::builder().method(method.clone()).uri(uri);
    if let Some(auth) = auth {
        request = request.header(header::AUTHORIZATION, auth);
    }
    let body = match body {
        Some((kind, text)) => {
            request = request.header(header::CONTENT_TYPE, kind);
            Body::from(text)
        }
        None => Body::empty(),
    };
    let answer = send(router, request.body(body).unwrap_or_default()).await;
    let value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    assert!(answer.status.is_success(), "setting up: {method} {uri}: {} {value}", answer.status);
    value
}

/// A world for the fuzz: a group an app reads (g1), a sacrificial group, member, post,
/// developer with a case, app and key for the operations that write or revoke, a policy active.
async fn world(router: &Router, service: &Service) -> (Credentials, BTreeMap<&'static str, String>) {
    let operator =
        service.bootstrap_operator_key("fuzz", "tester").ok().flatten().map(|k| k.key).unwrap_or_default();
    let on_server = |name: &str, role| {
        service
            .create_key_on_server("fuzz", "tester", name, role, None)
            .unwrap_or_else(|e| unreachable!("{e}"))
    };
    let officer = on_server("officer", OperatorRole::PrivacyOfficer).key;
    let auditor = on_server("auditor", OperatorRole::Auditor).key;
    let revoked = on_server("revoked", OperatorRole::Operator);
    service.revoke_key_on_server(&revoked.id, false).unwrap_or_else(|e| unreachable!("{e}"));
    let sacrificial_key = on_server("sacrificial", OperatorRole::Auditor).id;
    let op = || Some(format!("Bearer {operator}"));
    let json_body = |v: Value| Some(("application/json", v.to_string()));
    for group in ["g1", "g2"] {
        call(
            router,
            Method::PUT,
            &format!("/platform/v1/groups/{group}"),
            op(),
            json_body(json!({"name": group})),
        )
        .await;
    }
    for (member, role) in [("m1", "admin"), ("m2", "member")] {
        let body = json!({"name": member, "picture_url": format!("https://pics.example/{member}.jpg")});
        call(router, Method::PUT, &format!("/platform/v1/members/{member}"), op(), json_body(body)).await;
        for group in ["g1", "g2"] {
            let uri = format!("/platform/v1/groups/{group}/members/{member}");
            call(router, Method::PUT, &uri, op(), json_body(json!({"role": role}))).await;
        }
    }
    call(
        router,
        Method::PUT,
        "/platform/v1/groups/g1/posts/p1",
        op(),
        json_body(json!({"author": "m2", "content": "hi"})),
    )
    .await;
    let mut apps = Vec::new();
    for developer in ["d1", "d2"] {
        let body = json!({"name": developer, "contact_email": "privacy@example.org", "webhook_url": format!("https://{developer}.example/h")});
        call(router, Method::PUT, &format!("/platform/v1/developers/{developer}"), op(), json_body(body))
            .await;
        let body = json!({"developer": developer, "name": "App", "category": "social_media_management"});
        apps.push(call(router, Method::POST, "/platform/v1/apps", op(), json_body(body)).await);
    }
    let text = |v: &Value, name: &str| v[name].as_str().unwrap_or_default().to_string();
    let (main, other) = (&apps[0], &apps[1]);
    for (group, app) in [("g1", text(main, "id")), ("g2", text(other, "id"))] {
        let uri = format!("/platform/v1/groups/{group}/installations/{app}");
        call(router, Method::PUT, &uri, op(), json_body(json!({"authorized_by": "m1"}))).await;
    }
    let uri = format!("/platform/v1/members/m2/consents/{}", text(main, "id"));
    call(router, Method::PUT, &uri, op(), json_body(json!({"scopes": ["profile"]}))).await;
    call(router, Method::POST, "/platform/v1/policies", op(), Some(("text/plain", GROUPS_2018.to_string())))
        .await;
    let officer_session = service.authenticate_operator(&officer).unwrap_or_else(|e| unreachable!("{e}"));
    service.record_proof(1, &officer_session, true, "{}").unwrap_or_else(|e| unreachable!("{e}"));
    call(router, Method::POST, "/platform/v1/policies/1/approve", Some(format!("Bearer {officer}")), None)
        .await;
    call(
        router,
        Method::POST,
        "/platform/v1/policies/1/activate",
        op(),
        json_body(json!({"reason": "fuzz"})),
    )
    .await;
    let form = format!(
        "grant_type=client_credentials&client_id={}&client_secret={}",
        text(main, "client_id"),
        text(main, "client_secret")
    );
    let token = call(
        router,
        Method::POST,
        "/oauth/token",
        None,
        Some(("application/x-www-form-urlencoded", form.clone())),
    )
    .await;
    let form_token =
        call(router, Method::POST, "/oauth/token", None, Some(("application/x-www-form-urlencoded", form)))
            .await;
    // A case for the other developer (opening it revokes that developer's apps).
    let d2 = DeveloperId::parse("d2").unwrap_or_else(|e| unreachable!("{e}"));
    service.open_case(&d2, "{}", 30).unwrap_or_else(|e| unreachable!("{e}"));
    let credentials = Credentials {
        operator,
        auditor,
        officer,
        revoked: revoked.key,
        app_token: text(&token, "access_token"),
        form_token: text(&form_token, "access_token"),
        client_id: text(main, "client_id"),
        client_secret: text(main, "client_secret"),
        developer_client_id: text(other, "client_id"),
        developer_client_secret: text(other, "client_secret"),
    };
    let valid = BTreeMap::from([
        ("main_app", text(main, "id")),
        ("other_app", text(other, "id")),
        ("sacrificial_key", sacrificial_key),
    ]);
    (credentials, valid)
}

/// A valid value for a parameter: what the app reads (g1) for the Groups API, sacrificial
/// things everywhere else, so that writes and revocations leave the credentials working.
fn valid_value(ids: &BTreeMap<&'static str, String>, template: &str, name: &str) -> String {
    let id = |key: &str| ids.get(key).cloned().unwrap_or_default();
    match (name, template) {
        ("id", t) if t.starts_with("/v1/groups/") => "g1".into(),
        ("id", t) if t.starts_with("/v1/cases/") => "1".into(),
        ("id", t) if t.starts_with("/v1/apps/") || t.starts_with("/platform/v1/apps/") => id("other_app"),
        ("id", t) if t.starts_with("/platform/v1/keys/") => id("sacrificial_key"),
        ("id", t) if t.starts_with("/platform/v1/developers/") => "d2".into(),
        ("id" | "mid", t) if t.starts_with("/platform/v1/members/") => "m2".into(),
        ("id" | "gid", _) => "g2".into(),
        ("mid", _) => "m2".into(),
        ("pid", _) => "p9".into(),
        ("app", _) => id("other_app"),
        ("version", _) => "1".into(),
        ("fields", _) => "name".into(),
        ("limit", _) => "5".into(),
        ("after", t) if t.contains("/disclosures") => "0".into(),
        ("from", _) => "2020-01-01T00:00:00Z".into(),
        ("to", _) => "2021-01-01T00:00:00Z".into(),
        _ => "x".into(),
    }
}

fn request(hostile: &HostileRequest) -> Option<Request<Body>> {
    let mut builder =
        Request::builder().method(Method::from_bytes(hostile.method.as_bytes()).ok()?).uri(&hostile.target);
    for (name, value) in &hostile.headers {
        // A value the HTTP types refuse cannot reach a router; the socket fuzz sends those.
        let value = HeaderValue::from_bytes(value).ok()?;
        builder = builder.header(HeaderName::from_bytes(name.as_bytes()).ok()?, value);
    }
    builder.body(Body::from(hostile.body.clone())).ok()
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_answers_hostile_requests_with_a_declared_4xx_and_the_server_stays_up() {
    let seed = env_number("CONSENTRY_FUZZ_SEED", 0x5EED_0008);
    let per_operation = env_number("CONSENTRY_FUZZ_PER_OPERATION", 60) as usize;
    // Failed authentication is throttled (429, held back a second); here the limits are out
    // of reach so that every request reaches its operation. tests/http.rs covers throttling.
    let limits = AuthLimits {
        failures_per_client: u32::MAX,
        failures_per_address: u32::MAX,
        suspect_checks_per_second: u32::MAX,
        secret_checks_waiting: 1_000,
        ..AuthLimits::default()
    };
    let clock = Arc::new(SimulatedClock::starting_at(Instant::from_secs(1_600_000_000)));
    let store = Arc::new(SqliteStore::in_memory().unwrap_or_else(|e| unreachable!("{e}")));
    let config = ServiceConfig { auth_limits: limits, ..ServiceConfig::default() };
    let service = Arc::new(Service::new(store, clock, ServerKey::generate(), config));
    let dir = std::env::temp_dir().join(format!("consentry-api-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ledger = Arc::new(
        consentry_ledger::Ledger::open(&dir, consentry_ledger::LedgerOptions::default())
            .unwrap_or_else(|e| unreachable!("{e}")),
    );
    let router = app(ApiState::new(service.clone()).with_ledger(ledger));
    let (credentials, ids) = world(&router, &service).await;

    // The document, as the app serves it.
    let served =
        send(&router, Request::builder().uri("/openapi.json").body(Body::empty()).unwrap_or_default()).await;
    assert_eq!(served.status, StatusCode::OK);
    let document = Document::new(serde_json::from_slice(&served.body).unwrap_or_default())
        .unwrap_or_else(|e| unreachable!("{e}"));
    let operations = document.operations().len();
    assert!(operations >= 46, "{operations} operations in the document");

    let mut rng = Rng::new(seed);
    let (mut requests, mut refused_by_http_types) = (0usize, 0usize);
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut failures: Vec<String> = Vec::new();
    let valid = |template: &str, name: &str| valid_value(&ids, template, name);
    for operation in document.operations() {
        for _ in 0..per_operation {
            let hostile = hostile::generate(&document, operation, &credentials, &valid, 60_000, &mut rng);
            let Some(built) = request(&hostile) else {
                refused_by_http_types += 1;
                continue;
            };
            let answer = send(&router, built).await;
            requests += 1;
            *statuses.entry(answer.status.as_u16()).or_default() += 1;
            let content_type = hostile.header("content-type").and_then(|v| std::str::from_utf8(v).ok());
            let exchange = Exchange {
                method: &hostile.method,
                path: hostile.path(),
                query: hostile.query(),
                request_content_type: content_type,
                request_body: &hostile.body,
                status: answer.status.as_u16(),
                content_type: answer.content_type.as_deref(),
                headers: answer.headers.clone(),
                body: &answer.body,
            };
            let mut problems = Vec::new();
            // The one 5xx allowed: a server started without an SMT solver proves nothing, and
            // says so (declared for the operations that prove).
            let kind = serde_json::from_slice::<Value>(&answer.body).unwrap_or_default()["type"].clone();
            let no_solver = answer.status == StatusCode::SERVICE_UNAVAILABLE
                && kind == "urn:consentry:problem:proofs-unavailable";
            if !(answer.status.is_success() || answer.status.is_client_error() || no_solver) {
                problems.push(format!("answered {}", answer.status));
            }
            if let Err(violation) = document.check(&exchange) {
                problems.push(violation);
            }
            let oauth = hostile.path().starts_with("/oauth/");
            let media = answer.content_type.as_deref().map(openapi_check::media_type);
            if answer.status.is_client_error()
                && !oauth
                && media.as_deref() != Some("application/problem+json")
            {
                problems.push(format!("an error as {media:?}, not problem+json"));
            }
            if answer.status.is_client_error() && oauth {
                let error: Value = serde_json::from_slice(&answer.body).unwrap_or_default();
                if !error["error"].is_string() {
                    problems.push(format!("an OAuth error without `error`: {error}"));
                }
            }
            if !problems.is_empty() {
                let body: String = String::from_utf8_lossy(&answer.body).chars().take(300).collect();
                failures.push(format!(
                    "{}\n    → {} {body}\n    {}",
                    hostile.describe(),
                    answer.status,
                    problems.join("\n    ")
                ));
            }
        }
    }
    let health =
        send(&router, Request::builder().uri("/healthz").body(Body::empty()).unwrap_or_default()).await;
    let line = format!(
        "fuzz (router, seed {seed:#x}): {operations} operations, {requests} hostile requests answered ({refused_by_http_types} more not representable as an HTTP request), statuses {statuses:?}"
    );
    let _ = writeln!(std::io::stderr(), "{line}");
    assert!(
        failures.is_empty(),
        "{} of {requests} answers broke the rules (seed {seed:#x}):\n{}",
        failures.len(),
        failures.iter().take(60).cloned().collect::<Vec<_>>().join("\n")
    );
    assert_eq!(
        (health.status, health.body.as_slice()),
        (StatusCode::OK, &b"ok"[..]),
        "the server stopped answering"
    );
    assert!(
        statuses.keys().any(|s| (400..500).contains(s)) && requests >= operations * per_operation * 9 / 10
    );
    let _ = std::fs::remove_dir_all(&dir);
}
