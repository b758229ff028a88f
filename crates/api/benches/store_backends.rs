//! Benchmark: the enforced members page served from PostgreSQL against SQLite, same machine,
//! same run, one node: requests per second, p50/p99 latency, and database round trips per
//! page on PostgreSQL (counted by the store: every statement, every statement prepared, every
//! BEGIN and COMMIT). The world is realistic and small: one group, a few percent of its
//! members opted in to the app (groups-2018 shows only them), pages read at cursors all
//! along the group. Both backends hold the same world and must give the same pages.
//!
//! `cargo bench -p consentry-api --bench store_backends` prints the figures (target:
//! PostgreSQL at least 0.5x SQLite, at most 3 round trips per page); under `cargo test` it
//! runs a small world briefly and checks the answers agree. PostgreSQL is skipped, saying so,
//! when `CONSENTRY_TEST_POSTGRES` is unset.

#![allow(clippy::indexing_slicing)] // serde_json indexing returns Null, it never panics

use std::sync::Arc;
use std::time::{Duration, Instant as WallClock};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use consentry_api::{app, ApiState};
use consentry_service::{ServerKey, Service, ServiceConfig, SystemClock};
use consentry_store::Store;
use consentry_store_postgres::testing::{fresh_schema, test_database};
use consentry_store_postgres::{PgOptions, PgStore};
use consentry_store_sqlite::SqliteStore;
use consentry_types::{DeveloperId, GroupId, Instant, Member, MemberId, OperatorRole, Role};
use http_body_util::BodyExt;
use tower::ServiceExt;

const GROUPS_2018: &str = include_str!("../../../policies/groups-2018.cedar");

/// One in `OPTED_IN` members consents to the app (3 %).
const OPTED_IN: usize = 33;

/// Puts the same world in `store` through the trait (fast on both backends), then registers
/// the app, activates groups-2018 and issues a token through `service`.
fn world(store: &dyn Store, service: &Service, members: usize) -> String {
    let at = Instant::from_secs(1_600_000_000);
    let group = GroupId::parse("g-bench").unwrap_or_else(|e| unreachable!("{e}"));
    let developer = DeveloperId::parse("dev").unwrap_or_else(|e| unreachable!("{e}"));
    let ok = |r: Result<(), consentry_store::StoreError>| r.unwrap_or_else(|e| unreachable!("{e}"));
    ok(store.put_group(&consentry_types::Group { id: group.clone(), name: "Bench".into() }, at));
    service
        .put_developer(&developer, "Dev", "d@dev.example", "https://dev.example/h")
        .unwrap_or_else(|e| unreachable!("{e}"));
    let registered =
        service.register_app(&developer, "Bench", "analytics").unwrap_or_else(|e| unreachable!("{e}"));
    for i in 0..members {
        let id = MemberId::parse(&format!("m-{i:06}")).unwrap_or_else(|e| unreachable!("{e}"));
        let member = Member {
            id: id.clone(),
            name: format!("Member {i}"),
            picture_url: format!("https://pictures.example/{i}.jpg"),
        };
        ok(store.put_member(&member, at));
        ok(store.set_membership(&group, &id, Some(if i == 0 { Role::Admin } else { Role::Member }), at));
        if i % OPTED_IN == 1 {
            ok(store.set_consent(&id, &registered.app.id, true, at));
        }
    }
    let admin = MemberId::parse("m-000000").unwrap_or_else(|e| unreachable!("{e}"));
    service.install_app(&registered.app.id, &group, &admin).unwrap_or_else(|e| unreachable!("{e}"));
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
    service
        .issue_token(&registered.app.client_id, &registered.client_secret)
        .unwrap_or_else(|e| unreachable!("{e}"))
        .access_token
}

async fn get(router: &Router, token: &str, uri: &str) -> serde_json::Value {
    let request = Request::builder()
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap_or_default();
    let response = router.clone().oneshot(request).await.unwrap_or_else(|e| match e {});
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    serde_json::from_slice(&body).unwrap_or_default()
}

/// Walks the whole group page by page: every page's request path, and what each showed.
async fn walk(router: &Router, token: &str) -> (Vec<String>, Vec<serde_json::Value>) {
    let mut uris = vec!["/v1/groups/g-bench/members?fields=name,picture".to_string()];
    let mut shown = Vec::new();
    while let Some(uri) = uris.last().cloned() {
        let page = get(router, token, &uri).await;
        shown.push(page["data"].clone());
        match page["paging"]["after"].as_str() {
            Some(after) => uris.push(format!("/v1/groups/g-bench/members?fields=name,picture&after={after}")),
            None => break,
        }
    }
    (uris, shown)
}

/// CPU time, in seconds, that the processes named `postgres` on this machine have used so far
/// (theirs and their reaped children's, from `/proc`), or `None` where there is no `/proc`.
/// The database's cost per request, when it runs on this machine as in `.ci/run` (every
/// cluster on the machine counts: run it with no other busy one).
fn postgres_cpu_secs() -> Option<f64> {
    let mut ticks = 0u64;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let path = entry.path();
        if std::fs::read_to_string(path.join("comm")).map_or(true, |c| c.trim() != "postgres") {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else { continue };
        let Some((_, fields)) = stat.rsplit_once(')') else { continue };
        // utime, stime, cutime, cstime: fields 14 to 17 of proc(5), 12 to 15 after the name.
        ticks +=
            fields.split_whitespace().skip(11).take(4).filter_map(|f| f.parse::<u64>().ok()).sum::<u64>();
    }
    // Clock ticks are 1/100 s on Linux (USER_HZ).
    Some(ticks as f64 / 100.0)
}

struct Figures {
    per_second: f64,
    p50: Duration,
    p99: Duration,
    requests: usize,
}

/// Requests per second and latencies with `clients` concurrent callers cycling through `uris`.
async fn measure(
    router: &Router,
    token: &str,
    uris: &[String],
    clients: usize,
    duration: Duration,
) -> Figures {
    let started = WallClock::now();
    let uris = Arc::new(uris.to_vec());
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (router, token, uris) = (router.clone(), token.to_string(), uris.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut next = client;
            while started.elapsed() < duration {
                let uri = &uris[next % uris.len()];
                next += 1;
                let began = WallClock::now();
                let _ = get(&router, &token, uri).await;
                latencies.push(began.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap_or_default());
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Figures {
        per_second: latencies.len() as f64 / elapsed,
        p50: at(0.5),
        p99: at(0.99),
        requests: latencies.len(),
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (members, clients, duration, rounds) =
        // Many short rounds, each backend in turn: the machine's speed drifts (other work on
        // shared cores), and the ratio is taken round by round, each pair measured side by side.
        if full { (20_000, 8, Duration::from_millis(1500), 7) } else { (400, 2, Duration::from_millis(150), 1) };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| unreachable!("{e}"));
    let key = ServerKey::generate().to_bytes();
    let service_on = |store: Arc<dyn Store>| {
        Arc::new(Service::new(
            store,
            Arc::new(SystemClock::default()),
            ServerKey::from_bytes(key),
            ServiceConfig::default(),
        ))
    };

    let dir = std::env::temp_dir().join(format!("consentry-bench-backends-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::create_dir_all(&dir);
    let sqlite = Arc::new(SqliteStore::open(&dir.join("bench.db")).unwrap_or_else(|e| unreachable!("{e}")));
    sqlite.set_bulk_load(true).unwrap_or_else(|e| unreachable!("{e}"));
    let sqlite_service = service_on(sqlite.clone());
    let sqlite_token = world(sqlite.as_ref(), &sqlite_service, members);
    sqlite.set_bulk_load(false).unwrap_or_else(|e| unreachable!("{e}"));
    let sqlite_router = app(ApiState::new(sqlite_service));

    let postgres = test_database("the PostgreSQL side of the store benchmark").map(|url| {
        let url = fresh_schema(&url).unwrap_or_else(|e| unreachable!("{e}"));
        let store = Arc::new(
            PgStore::open(&url, &PgOptions { pool_size: 16 }).unwrap_or_else(|e| unreachable!("{e}")),
        );
        let service = service_on(store.clone());
        let token = world(store.as_ref(), &service, members);
        // As after any bulk load: statistics now, so that no connection caches a plan made
        // on an empty table's (autovacuum would get there on its own, at some point).
        store.analyze().unwrap_or_else(|e| unreachable!("{e}"));
        (store, app(ApiState::new(service)), token)
    });

    // The page read alone, on this (non-async) thread: the store is called from blocking threads.
    let trips_per_page_read = postgres.as_ref().map(|(store, _, _)| {
        let query = consentry_store::PageQuery {
            token_hash: String::new(),
            app: consentry_types::AppId::parse("x").unwrap_or_else(|e| unreachable!("{e}")),
            group: GroupId::parse("g-bench").unwrap_or_else(|e| unreachable!("{e}")),
            list: consentry_store::PageList::Members {
                after: None,
                limit: 200,
                profiles_of: Default::default(),
            },
        };
        let _ = store.read_page(&query);
        let warm = store.round_trips();
        let _ = store.read_page(&query);
        store.round_trips() - warm
    });

    runtime.block_on(async {
        let (uris, sqlite_pages) = walk(&sqlite_router, &sqlite_token).await;
        let shown: usize = sqlite_pages.iter().map(|p| p.as_array().map_or(0, Vec::len)).sum();
        assert_eq!(shown, (1..members).filter(|i| i % OPTED_IN == 1).count(), "every opted-in member, once");
        println!(
            "enforced members page: {members} members, {shown} opted in, {} pages of up to 25; one node, in process, {clients} concurrent clients",
            uris.len()
        );
        let mut sqlite_runs = Vec::new();
        let mut postgres_runs = Vec::new();
        let mut trips_per_request = None;
        let mut pg_uris = Vec::new();
        if let Some((store, router, token)) = &postgres {
            let pg_pages;
            (pg_uris, pg_pages) = walk(router, token).await;
            // Apps get random ids, so app-scoped member ids differ: compare what was shown of whom.
            let names = |pages: &[serde_json::Value]| -> Vec<Vec<(String, String)>> {
                pages
                    .iter()
                    .map(|p| {
                        p.as_array()
                            .map(|items| {
                                items
                                    .iter()
                                    .map(|m| (m["name"].to_string(), m["picture"].to_string()))
                                    .collect()
                            })
                            .unwrap_or_default()
                    })
                    .collect()
            };
            assert_eq!(names(&pg_pages), names(&sqlite_pages), "both backends show the same pages");
            assert_eq!(pg_uris.len(), uris.len());
            // Round trips: a whole warm request (a token the node has seen, the kinds of member
            // the last page showed), and the snapshot alone.
            let _ = get(router, token, &pg_uris[1 % pg_uris.len()]).await;
            let _ = get(router, token, &pg_uris[1 % pg_uris.len()]).await;
            let warm = store.round_trips();
            let _ = get(router, token, &pg_uris[1 % pg_uris.len()]).await;
            trips_per_request = Some(store.round_trips() - warm);
        }
        let (mut database_cpu, mut database_requests) = (Some(0.0), 0);
        for _ in 0..rounds {
            sqlite_runs.push(measure(&sqlite_router, &sqlite_token, &uris, clients, duration).await);
            if let Some((_, router, token)) = &postgres {
                let before = postgres_cpu_secs();
                let run = measure(router, token, &pg_uris, clients, duration).await;
                database_cpu = database_cpu.zip(before.zip(postgres_cpu_secs())).map(|(sum, (b, a))| sum + a - b);
                database_requests += run.requests;
                postgres_runs.push(run);
            }
        }
        // Each round's PostgreSQL figure against the SQLite figure measured just before it.
        let mut ratios: Vec<f64> =
            sqlite_runs.iter().zip(&postgres_runs).map(|(s, p)| p.per_second / s.per_second).collect();
        ratios.sort_by(f64::total_cmp);
        let median = |runs: &mut Vec<Figures>| {
            runs.sort_by(|a, b| a.per_second.total_cmp(&b.per_second));
            runs.swap_remove(runs.len() / 2)
        };
        let s = median(&mut sqlite_runs);
        assert!(s.requests > 0);
        println!(
            "  SQLite:      {:>8.0} requests/s  p50 {:>6.2} ms  p99 {:>6.2} ms",
            s.per_second,
            s.p50.as_secs_f64() * 1e3,
            s.p99.as_secs_f64() * 1e3
        );
        if postgres_runs.is_empty() {
            println!("  PostgreSQL:  skipped (CONSENTRY_TEST_POSTGRES is not set)");
            return;
        }
        let p = median(&mut postgres_runs);
        assert!(p.requests > 0);
        println!(
            "  PostgreSQL:  {:>8.0} requests/s  p50 {:>6.2} ms  p99 {:>6.2} ms",
            p.per_second,
            p.p50.as_secs_f64() * 1e3,
            p.p99.as_secs_f64() * 1e3
        );
        println!(
            "  ratio (PostgreSQL / SQLite): {:.2}, median of {} rounds side by side (lowest {:.2}, highest {:.2}; target >= 0.5)",
            ratios.get(ratios.len() / 2).copied().unwrap_or_default(),
            ratios.len(),
            ratios.first().copied().unwrap_or_default(),
            ratios.last().copied().unwrap_or_default()
        );
        match database_cpu {
            Some(cpu) if cpu > 0.0 && database_requests > 0 => println!(
                "  PostgreSQL server CPU: {:.0} us per request (its processes on this machine, from /proc; the rest of the request is consentry's)",
                cpu * 1e6 / database_requests as f64
            ),
            _ => println!("  PostgreSQL server CPU: not measured (the server is not a process of this machine)"),
        }
        println!(
            "  PostgreSQL round trips: {} per request once warm (the snapshot brings the profiles shown; target: at most 3), {} per page snapshot",
            trips_per_request.unwrap_or_default(),
            trips_per_page_read.unwrap_or_default()
        );
    });
    let _ = std::fs::remove_dir_all(&dir);
}
