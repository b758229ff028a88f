//! Benchmark: the server's time per console page on the demo world (p50 and p99), in process
//! through the whole HTTP stack (session cookie, service calls, templates), with the platform
//! API's JSON for the same data measured alongside as the baseline. Target: p99 under 100 ms
//! for every page (a running audit excluded; its finished page is measured).
//!
//! `cargo bench -p consentry --bench console_pages` plays the full demo world and prints the
//! figures; under `cargo test` it plays the small world and times a few requests per page.
//! Either way it checks that each page and its API baseline say the same.

#![allow(clippy::indexing_slicing)] // serde_json indexing returns Null, it never panics

use std::sync::Arc;
use std::time::{Duration, Instant as WallClock};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use consentry_api::console::{SESSION_COOKIE, SIGN_IN_COOKIE};
use consentry_api::{app, ApiState};
use consentry_ledger::{Ledger, LedgerOptions};
use consentry_service::{load_server_key, Service, ServiceConfig, SystemClock};
use consentry_store_sqlite::SqliteStore;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

fn ok<T, E: std::fmt::Display>(result: Result<T, E>) -> T {
    result.unwrap_or_else(|e| unreachable!("{e}"))
}

async fn send(router: &Router, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
    let response = router.clone().oneshot(request).await.unwrap_or_else(|e| match e {});
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    (status, headers, String::from_utf8_lossy(&bytes).into_owned())
}

fn get(uri: &str, header_name: &str, value: &str) -> Request<Body> {
    Request::builder().uri(uri).header(header_name, value).body(Body::empty()).unwrap_or_default()
}

/// Signs in through the console's form and returns the session cookie.
async fn sign_in(router: &Router, key: &str) -> String {
    let (_, headers, body) =
        send(router, Request::builder().uri("/console/sign-in").body(Body::empty()).unwrap_or_default())
            .await;
    let token =
        body.split("name=\"token\" value=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or_default();
    assert!(headers.get_all(header::SET_COOKIE).iter().any(|c| c.to_str().is_ok_and(|c| c.contains(token))));
    // A key (csk_, base64url) and the token (hex) need no escaping in a form.
    let form = format!("key={key}&token={token}");
    let request = Request::builder()
        .method(Method::POST)
        .uri("/console/sign-in")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::COOKIE, format!("{SIGN_IN_COOKIE}={token}"))
        .body(Body::from(form))
        .unwrap_or_default();
    let (status, headers, _) = send(router, request).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|c| c.to_str().ok())
        .find(|c| c.starts_with(SESSION_COOKIE))
        .and_then(|c| c.split(';').next())
        .unwrap_or_default()
        .to_string()
}

/// Server time of `iterations` requests to `uri`: (p50, p99), and the last body.
async fn time(
    router: &Router,
    uri: &str,
    header_name: &str,
    value: &str,
    iterations: usize,
) -> (Duration, Duration, String) {
    let mut times = Vec::with_capacity(iterations);
    let mut last = String::new();
    for _ in 0..iterations {
        let started = WallClock::now();
        let (status, _, body) = send(router, get(uri, header_name, value)).await;
        times.push(started.elapsed());
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        last = body;
    }
    times.sort();
    let at =
        |q: f64| times.get(((times.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or_default();
    (at(0.5), at(0.99), last)
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let dir = std::env::temp_dir().join(format!("consentry-console-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let scale = if full { "full" } else { "small" };
    let played = WallClock::now();
    let demo = ok(std::process::Command::new(env!("CARGO_BIN_EXE_consentry"))
        .args(["demo", "--scale", scale, "--no-serve", "--data-dir", dir.to_str().unwrap_or_default()])
        .env("RUST_LOG", "error")
        .output());
    assert!(demo.status.success(), "{}", String::from_utf8_lossy(&demo.stderr));
    println!("demo world ({scale}) played in {:.1} s", played.elapsed().as_secs_f64());
    let store = Arc::new(ok(SqliteStore::open(&dir.join("consentry.db"))));
    // The server key the demo kept in the store, as every node reads it.
    let (key, _) = ok(load_server_key(store.as_ref(), None, consentry_types::Instant::now()));
    let service =
        Arc::new(Service::new(store, Arc::new(SystemClock::default()), key, ServiceConfig::default()));
    // The demo's node's ledger stream, under the ledger root a server reads every stream of.
    let root = dir.join("ledger");
    let streams = ok(consentry_ledger::streams(&root));
    let node = streams.iter().find_map(|s| s.node.clone());
    let node = node.unwrap_or_else(|| unreachable!("the demo wrote no ledger stream: {streams:?}"));
    let ledger = Arc::new(ok(Ledger::open_stream(&root, &node, LedgerOptions::default())));
    println!("ledger: {} records, {} disclosures", ledger.stats().records, ledger.stats().disclosures);
    let router = app(ApiState::new(service).with_ledger(ledger));
    let officer =
        std::fs::read_to_string(dir.join("privacy-officer.key")).unwrap_or_default().trim().to_string();
    let runtime = ok(tokio::runtime::Builder::new_multi_thread().enable_all().build());
    runtime.block_on(async move {
        let cookie = sign_in(&router, &officer).await;
        let bearer = format!("Bearer {officer}");
        // A finished audit to show: the 60 days before the demo's audit, against the active policy.
        let csrf = {
            let (_, _, body) = send(&router, get("/console/audits", "cookie", &cookie)).await;
            body.split("name=\"csrf\" value=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or_default()
                .to_string()
        };
        let form = format!("csrf={csrf}&policy=active&from=2019-09-06&to=2019-11-05");
        let request = Request::builder()
            .method(Method::POST)
            .uri("/console/audits")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::COOKIE, &cookie)
            .body(Body::from(form))
            .unwrap_or_default();
        let (status, headers, body) = send(&router, request).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
        let audit =
            headers.get(header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let audit_started = WallClock::now();
        loop {
            let (_, _, body) = send(&router, get(&audit, "cookie", &cookie)).await;
            if !body.contains("http-equiv=\"refresh\"") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!(
            "the audit ran in the background in {:.2} s (not a page: excluded)",
            audit_started.elapsed().as_secs_f64()
        );
        let member = "m-00001";
        // (page, console uri, API baseline uri)
        let pages: Vec<(&str, String, Option<&str>)> = vec![
            ("overview", "/console/overview".into(), None),
            ("policies", "/console/policies".into(), Some("/platform/v1/policies")),
            ("policy diff", "/console/policies/2".into(), None),
            ("audits", "/console/audits".into(), None),
            ("audit result", audit.clone(), None),
            ("remediation", "/console/remediation".into(), Some("/platform/v1/cases")),
            ("apps", "/console/apps".into(), Some("/platform/v1/apps")),
            ("app", "/console/apps/app-000-0".into(), None),
            (
                "member",
                format!("/console/members?member={member}"),
                Some("/platform/v1/members/m-00001/disclosures?limit=1000"),
            ),
        ];
        let iterations = if full { 200 } else { 5 };
        // Warm the ledger digest and caches once, as a server that has been up would be.
        for (_, uri, _) in &pages {
            let _ = send(&router, get(uri, "cookie", &cookie)).await;
        }
        println!(
            "{:<14} {:>9} {:>9}   {:>13} {:>13}  {:>7}",
            "page", "p50 ms", "p99 ms", "API p50 ms", "API p99 ms", "ratio"
        );
        let mut worst = Duration::ZERO;
        for (name, uri, baseline) in &pages {
            let (p50, p99, page) = time(&router, uri, "cookie", &cookie, iterations).await;
            worst = worst.max(p99);
            let (api, ratio) = match baseline {
                Some(api_uri) => {
                    let (a50, a99, json) = time(&router, api_uri, "authorization", &bearer, iterations).await;
                    same_answers(name, &page, &json);
                    (
                        format!("{:>13} {:>13}", ms(a50), ms(a99)),
                        format!("{:.1}x", p50.as_secs_f64() / a50.as_secs_f64().max(1e-9)),
                    )
                }
                None => (format!("{:>13} {:>13}", "-", "-"), "-".to_string()),
            };
            println!("{name:<14} {:>9} {:>9}   {api}  {ratio:>7}", ms(p50), ms(p99));
        }
        println!(
            "worst p99: {} ms (target: under 100 ms){}",
            ms(worst),
            if worst < Duration::from_millis(100) { "" } else { "  ABOVE TARGET" }
        );
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// The console page shows what the API's JSON says.
fn same_answers(name: &str, page: &str, json: &str) {
    let value: Value = serde_json::from_str(json).unwrap_or_default();
    match name {
        "policies" => {
            for version in value.as_array().into_iter().flatten() {
                let v = version["version"].as_u64().unwrap_or(0);
                assert!(page.contains(&format!("id=\"version-{v}\"")), "policies: version {v} missing");
            }
        }
        "apps" => {
            let apps = value.as_array().map(Vec::len).unwrap_or(0);
            assert!(apps > 0 && page.matches("<tr id=\"app-").count() == apps, "apps: {apps} in the API");
        }
        "remediation" => {
            for case in value.as_array().into_iter().flatten() {
                let row = format!(
                    "<td class=\"n\">{}</td><td>{}</td>",
                    case["id"],
                    case["developer"].as_str().unwrap_or_default()
                );
                assert!(page.contains(&row), "remediation: case {} missing", case["id"]);
            }
        }
        "member" => {
            let rows = value["data"].as_array().map(Vec::len).unwrap_or(0);
            let shown =
                page.split("id=\"disclosures\"").nth(1).map(|t| t.matches("<tr><td>").count()).unwrap_or(0);
            assert_eq!(shown, rows, "member: the console lists every response the API does");
        }
        _ => {}
    }
}
