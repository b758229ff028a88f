//! Invariant 3 through the HTTP stack, on a disk that loses everything not synced when it
//! crashes: every Groups API response that got a 200 through `ApiState::with_ledger` is in
//! the ledger after the crash, and once the disk is gone apps get a 503 and nothing else.

#![allow(clippy::indexing_slicing)] // serde_json indexing returns Null, it never panics

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use conformance::app;
use consentry_api::ApiState;
use consentry_ledger::{Entries, Ledger, LedgerOptions, LossyDisk};
use consentry_service::{ServerKey, Service, ServiceConfig, SimulatedClock};
use consentry_store_sqlite::SqliteStore;
use consentry_types::{Instant, OperatorRole};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

#[path = "support/openapi_check.rs"]
mod openapi_check;

#[path = "support/conformance.rs"]
mod conformance;

const GROUPS_2018: &str = include_str!("../../../policies/groups-2018.cedar");

async fn send(
    router: &Router,
    method: Method,
    uri: &str,
    auth: Option<&str>,
    body: Option<Body>,
) -> (StatusCode, Option<String>, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(auth) = auth {
        request = request.header(header::AUTHORIZATION, auth);
    }
    let body = match body {
        Some(body) => {
            request = request.header(
                header::CONTENT_TYPE,
                if uri.ends_with("/policies") {
                    "text/plain"
                } else if uri == "/oauth/token" {
                    "application/x-www-form-urlencoded"
                } else {
                    "application/json"
                },
            );
            body
        }
        None => Body::empty(),
    };
    let response =
        router.clone().oneshot(request.body(body).unwrap_or_default()).await.unwrap_or_else(|e| match e {});
    let status = response.status();
    let request_id = response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(String::from);
    let bytes = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    (status, request_id, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// A group with three members, two of whom opted in, an app installed in it, the 2018 rules
/// active; returns the service and the app's bearer token.
async fn world() -> (Arc<Service>, String) {
    let clock = Arc::new(SimulatedClock::starting_at(Instant::from_secs(1_600_000_000)));
    let store = Arc::new(SqliteStore::in_memory().unwrap_or_else(|e| unreachable!("{e}")));
    let service = Arc::new(Service::new(store, clock, ServerKey::generate(), ServiceConfig::default()));
    let operator =
        service.bootstrap_operator_key("test", "tester").ok().flatten().map(|k| k.key).unwrap_or_default();
    let officer = service
        .create_key_on_server("test", "tester", "officer", OperatorRole::PrivacyOfficer, None)
        .map(|k| k.key)
        .unwrap_or_default();
    let router = app(ApiState::new(service.clone()));
    let op = format!("Bearer {operator}");
    let put = |uri: String, body: Value| {
        let (router, op) = (router.clone(), op.clone());
        async move {
            let (status, _, reply) =
                send(&router, Method::PUT, &uri, Some(&op), Some(Body::from(body.to_string()))).await;
            assert!(status.is_success(), "PUT {uri}: {status} {reply}");
        }
    };
    put("/platform/v1/groups/hikers".into(), json!({"name": "Hikers"})).await;
    for (id, role) in [("ann", "admin"), ("bob", "member"), ("cat", "member")] {
        put(
            format!("/platform/v1/members/{id}"),
            json!({"name": id, "picture_url": format!("https://pics.example/{id}.jpg")}),
        )
        .await;
        put(format!("/platform/v1/groups/hikers/members/{id}"), json!({"role": role})).await;
    }
    put("/platform/v1/groups/hikers/posts/p1".into(), json!({"author": "bob", "content": "hello"})).await;
    put("/platform/v1/developers/acme".into(), json!({"name": "Acme", "contact_email": "privacy@acme.example", "webhook_url": "https://acme.example/h"})).await;
    let (status, _, created) = send(
        &router,
        Method::POST,
        "/platform/v1/apps",
        Some(&op),
        Some(Body::from(
            json!({"developer": "acme", "name": "Scheduler", "category": "social_media_management"})
                .to_string(),
        )),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let app_id = created["id"].as_str().unwrap_or_default().to_string();
    put(format!("/platform/v1/groups/hikers/installations/{app_id}"), json!({"authorized_by": "ann"})).await;
    for member in ["bob", "cat"] {
        put(format!("/platform/v1/members/{member}/consents/{app_id}"), json!({"scopes": ["profile"]})).await;
    }
    let (status, _, _) =
        send(&router, Method::POST, "/platform/v1/policies", Some(&op), Some(Body::from(GROUPS_2018))).await;
    assert_eq!(status, StatusCode::CREATED);
    let session = service.authenticate_operator(&officer).unwrap_or_else(|e| unreachable!("{e}"));
    service.record_proof(1, &session, true, "{}").unwrap_or_else(|e| unreachable!("{e}"));
    let (status, _, _) = send(
        &router,
        Method::POST,
        "/platform/v1/policies/1/approve",
        Some(&format!("Bearer {officer}")),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let activate = Body::from(json!({"reason": "the 2018 rules"}).to_string());
    let (status, _, _) =
        send(&router, Method::POST, "/platform/v1/policies/1/activate", Some(&op), Some(activate)).await;
    assert!(status.is_success());
    let form = format!(
        "grant_type=client_credentials&client_id={}&client_secret={}",
        created["client_id"].as_str().unwrap_or_default(),
        created["client_secret"].as_str().unwrap_or_default()
    );
    let (status, _, token) = send(&router, Method::POST, "/oauth/token", None, Some(Body::from(form))).await;
    assert_eq!(status, StatusCode::OK, "{token}");
    (service, format!("Bearer {}", token["access_token"].as_str().unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_200_is_in_the_ledger_after_a_crash_that_loses_unsynced_writes() {
    let _conformance = conformance::Guard::new();
    let (service, bearer) = world().await;
    for (kept, zeroed) in [(0, 0), (0, 4096), (60, 0)] {
        let dir = std::env::temp_dir()
            .join(format!("consentry-api-durability-{}-{kept}-{zeroed}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // Syncs take a millisecond, as a disk's do, so the crash finds writes not yet synced.
        let disk = LossyDisk::with_sync_delay(Duration::from_millis(1));
        let ledger = Arc::new(
            Ledger::open_on(&dir, LedgerOptions { segment_bytes: 8_000 }, disk.clone())
                .unwrap_or_else(|e| unreachable!("{e}")),
        );
        let router = app(ApiState::new(service.clone()).with_ledger(ledger.clone()));
        let ok = Arc::new(Mutex::new(Vec::<String>::new()));
        let (unavailable, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let clients: Vec<_> =
            ["/v1/groups/hikers/members?fields=name,picture", "/v1/groups/hikers/posts", "/v1/groups/hikers"]
                .iter()
                .cycle()
                .take(12)
                .map(|uri| {
                    let (router, bearer, ok, unavailable, stop) =
                        (router.clone(), bearer.clone(), ok.clone(), unavailable.clone(), stop.clone());
                    tokio::spawn(async move {
                        while !stop.load(Ordering::Relaxed) {
                            let (status, request_id, body) =
                                send(&router, Method::GET, uri, Some(&bearer), None).await;
                            match status {
                                StatusCode::OK => {
                                    if let (Some(id), Ok(mut all)) = (request_id, ok.lock()) {
                                        all.push(id);
                                    }
                                }
                                StatusCode::SERVICE_UNAVAILABLE => {
                                    assert!(
                                        !body.to_string().contains("pics.example"),
                                        "a 503 discloses nothing"
                                    );
                                    unavailable.fetch_add(1, Ordering::Relaxed);
                                }
                                other => unreachable!("unexpected {other}: {body}"),
                            }
                        }
                    })
                })
                .collect();
        while ok.lock().map(|o| o.len()).unwrap_or(0) < 150 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let lost = disk.crash_leaving(kept, zeroed);
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.await.unwrap_or_else(|e| unreachable!("{e}"));
        }
        drop(router);
        drop(ledger);
        let answered: Vec<String> = ok.lock().map(|o| o.clone()).unwrap_or_default();
        assert!(unavailable.load(Ordering::Relaxed) > 0, "after the crash apps get a 503");
        // Restart on the real disk: recovery opens it, and every 200 has its record.
        let reopened = Ledger::open(&dir, LedgerOptions { segment_bytes: 8_000 })
            .unwrap_or_else(|e| unreachable!("the ledger must open after a crash: {e}"));
        drop(reopened);
        let recorded: HashSet<String> = Entries::open(&dir)
            .unwrap_or_else(|e| unreachable!("{e}"))
            .map(|e| e.unwrap_or_else(|e| unreachable!("{e}")).record.request_id)
            .collect();
        let missing: Vec<&String> = answered.iter().filter(|id| !recorded.contains(*id)).collect();
        assert!(
            missing.is_empty(),
            "crash keeping {kept} unsynced bytes and {zeroed} zeros: {} of {} responses that got a 200 have no record",
            missing.len(),
            answered.len()
        );
        println!("crash keeping {kept}+{zeroed}: {} responses got a 200, {} records kept, {lost} unsynced bytes lost", answered.len(), recorded.len());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
