//! Benchmark: members pages per second (200 members each) through the whole HTTP stack
//! in process, in the same run: with enforcement against the same handler with enforcement
//! bypassed (a bench-only switch), and with the durable ledger against the same server with
//! the ledger switched off.
//!
//! `cargo bench -p consentry-api --bench members_page` prints the figures; under
//! `cargo test` it runs a few requests and checks both modes answer.

#![allow(clippy::indexing_slicing)] // serde_json indexing returns Null, it never panics

use std::sync::Arc;
use std::time::{Duration, Instant as WallClock};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use consentry_api::{app, ApiState};
use consentry_service::{ServerKey, Service, ServiceConfig, SystemClock};
use consentry_store_sqlite::SqliteStore;
use consentry_types::{DeveloperId, GroupId, MemberId, OperatorRole, Role, Scope};
use http_body_util::BodyExt;
use tower::ServiceExt;

const GROUPS_2018: &str = include_str!("../../../policies/groups-2018.cedar");
const MEMBERS: usize = 200;

fn world(path: &std::path::Path) -> (Arc<Service>, String) {
    let store = Arc::new(SqliteStore::open(path).unwrap_or_else(|e| unreachable!("{e}")));
    store.set_bulk_load(true).unwrap_or_else(|e| unreachable!("{e}"));
    let service = Arc::new(Service::new(
        store.clone(),
        Arc::new(SystemClock::default()),
        ServerKey::generate(),
        ServiceConfig::default(),
    ));
    let ok = |r: Result<(), consentry_service::ServiceError>| r.unwrap_or_else(|e| unreachable!("{e}"));
    let group = GroupId::parse("g-bench").unwrap_or_else(|e| unreachable!("{e}"));
    ok(service.put_group(&group, "Bench"));
    let developer = DeveloperId::parse("dev").unwrap_or_else(|e| unreachable!("{e}"));
    ok(service.put_developer(&developer, "Dev", "d@dev.example", "https://dev.example/h"));
    let registered =
        service.register_app(&developer, "Bench", "analytics").unwrap_or_else(|e| unreachable!("{e}"));
    for i in 0..MEMBERS {
        let member = MemberId::parse(&format!("m-{i:05}")).unwrap_or_else(|e| unreachable!("{e}"));
        ok(service.put_member(&member, &format!("Member {i}"), &format!("https://pictures.example/{i}.jpg")));
        ok(service.set_membership(&group, &member, Some(if i == 0 { Role::Admin } else { Role::Member })));
        // Everyone opted in, so enforcement decides and the page is full in both modes.
        ok(service.set_consent(&member, &registered.app.id, &[Scope::Profile]));
    }
    let admin = MemberId::parse("m-00000").unwrap_or_else(|e| unreachable!("{e}"));
    ok(service.install_app(&registered.app.id, &group, &admin));
    // Two keys made on the server: the author's, and an independent privacy officer's.
    let sign_in = |name: &str, role: OperatorRole| {
        let made = service.create_key_on_server("bench", "bench", name, role, None);
        let made = made.unwrap_or_else(|e| unreachable!("{e}"));
        service.authenticate_operator(&made.key).unwrap_or_else(|e| unreachable!("{e}"))
    };
    let author = sign_in("bench", OperatorRole::Operator);
    let officer = sign_in("bench-officer", OperatorRole::PrivacyOfficer);
    let version = service.submit_policy(GROUPS_2018, &author).unwrap_or_else(|e| unreachable!("{e}"));
    service.record_proof(version, &officer, true, "{}").unwrap_or_else(|e| unreachable!("{e}"));
    service.approve_policy(version, &officer).unwrap_or_else(|e| unreachable!("{e}"));
    service.activate_policy(version, &author, "bench").unwrap_or_else(|e| unreachable!("{e}"));
    store.set_bulk_load(false).unwrap_or_else(|e| unreachable!("{e}"));
    let token = service
        .issue_token(&registered.app.client_id, &registered.client_secret)
        .unwrap_or_else(|e| unreachable!("{e}"));
    (service, token.access_token)
}

async fn one_page(router: &Router, token: &str) -> usize {
    let request = Request::builder()
        .uri(format!("/v1/groups/g-bench/members?fields=name,picture&limit={MEMBERS}"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap_or_default();
    let response = router.clone().oneshot(request).await.unwrap_or_else(|e| match e {});
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    json["data"].as_array().map_or(0, Vec::len)
}

/// Pages per second with `clients` concurrent callers for `duration`.
async fn pages_per_second(router: &Router, token: &str, clients: usize, duration: Duration) -> f64 {
    let started = WallClock::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (router, token) = (router.clone(), token.to_string());
        tasks.push(tokio::spawn(async move {
            let mut pages = 0u64;
            while started.elapsed() < duration {
                assert_eq!(one_page(&router, &token).await, MEMBERS);
                pages += 1;
            }
            pages
        }));
    }
    let mut pages = 0;
    for task in tasks {
        pages += task.await.unwrap_or(0);
    }
    pages as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let dir = std::env::temp_dir().join(format!("consentry-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::create_dir_all(&dir);
    let (service, token) = world(&dir.join("bench.db"));
    let ledger = Arc::new(
        consentry_ledger::Ledger::open(&dir.join("ledger"), consentry_ledger::LedgerOptions::default())
            .unwrap_or_else(|e| unreachable!("{e}")),
    );
    let plain = app(ApiState::new(service.clone()));
    let recorded = app(ApiState::new(service.clone()).with_ledger(ledger.clone()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| unreachable!("{e}"));
    let (rounds, duration, clients) =
        if full { (3, Duration::from_secs(3), 32) } else { (1, Duration::from_millis(100), 4) };
    let (mut bypassed, mut enforced, mut durable) = (Vec::new(), Vec::new(), Vec::new());
    runtime.block_on(async {
        // Warm up every path, then alternate so drift affects all alike.
        for (router, bypass) in [(&plain, true), (&plain, false), (&recorded, false)] {
            service.bypass_enforcement_for_benchmark(bypass);
            assert_eq!(one_page(router, &token).await, MEMBERS);
        }
        for _ in 0..rounds {
            service.bypass_enforcement_for_benchmark(true);
            bypassed.push(pages_per_second(&plain, &token, clients, duration).await);
            service.bypass_enforcement_for_benchmark(false);
            enforced.push(pages_per_second(&plain, &token, clients, duration).await);
            durable.push(pages_per_second(&recorded, &token, clients, duration).await);
        }
    });
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let (b, e, d) = (median(&mut bypassed), median(&mut enforced), median(&mut durable));
    let stats = ledger.stats();
    assert!(stats.records > 0 && stats.disclosures >= stats.records * MEMBERS as u64);
    drop(recorded);
    let report = consentry_ledger::verify(ledger.dir(), &[]).unwrap_or_else(|e| unreachable!("{e}"));
    assert!(report.ok(), "{:?}", report.problem);
    println!(
        "members page ({MEMBERS} members, fields name,picture), in process, {clients} concurrent clients:"
    );
    println!("  enforcement bypassed, no ledger:   {b:>10.0} pages/s");
    println!("  enforcement, no ledger:            {e:>10.0} pages/s");
    println!(
        "  enforcement, durable ledger:       {d:>10.0} pages/s  ({} records, all verified)",
        stats.records
    );
    println!("  enforcement ratio (enforced / bypassed):  {:.2} (target >= 0.8)", e / b);
    println!("  ledger ratio (durable / no ledger):       {:.2} (target >= 0.7)", d / e);
    let _ = std::fs::remove_dir_all(&dir);
}
