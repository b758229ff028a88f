//! Benchmark: members pages per second through the whole HTTP stack in process, on the
//! realistic world (`consentry-world`: Zipf-sized groups, 3–15% opt-in per app, many apps and
//! groups, history through 2019 with groups-2018 active at its end), in the same run: enforced
//! with the durable ledger (each response's one record handed to the ledger writer thread and
//! synced, with whatever else queued meanwhile, before the response leaves: `ApiState::with_ledger`,
//! as `consentry serve` records) against the same handler with enforcement bypassed and no
//! ledger (a bench-only switch: no consents read, no decisions, every member shown). Apps walk their groups' member lists page after page, following the cursor, in the
//! order the store holds them then; every walk is checked against the world's own facts.
//!
//! `cargo bench -p consentry-api --bench members_page` prints the figures; under `cargo test`
//! it plays a small world and runs a few requests of each kind.

#![allow(clippy::indexing_slicing)] // serde_json indexing returns Null, it never panics

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant as WallClock};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use consentry_api::{app, ApiState};
use consentry_service::{ServerKey, Service, ServiceConfig, SimulatedClock, SystemClock};
use consentry_store_sqlite::SqliteStore;
use consentry_types::{AppStatus, GroupId, MemberId};
use consentry_world::{Applier, Replay, ShippedPolicy, World, WorldParams};
use http_body_util::BodyExt;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use tower::ServiceExt;

const SEED: u64 = 2019;
const FIELDS: &str = "name,picture";

/// One app's walk through one group's member list.
struct Walk {
    token: String,
    group: GroupId,
    /// Who the app may see there (enforced) and who is there (bypassed), in the store's order,
    /// as the app-scoped ids the API answers with.
    visible: Vec<String>,
    everyone: Vec<String>,
}

/// One page: its member ids and the cursor to the next, if any.
async fn one_page(
    router: &Router,
    walk: &Walk,
    limit: usize,
    after: Option<&str>,
) -> (Vec<String>, Option<String>) {
    let mut uri = format!("/v1/groups/{}/members?fields={FIELDS}&limit={limit}", walk.group);
    if let Some(after) = after {
        uri.push_str("&after=");
        uri.push_str(after);
    }
    let request = Request::builder()
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {}", walk.token))
        .body(Body::empty())
        .unwrap_or_default();
    let response = router.clone().oneshot(request).await.unwrap_or_else(|e| match e {});
    let status = response.status();
    let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let ids = json["data"]
        .as_array()
        .map(|d| d.iter().filter_map(|m| m["id"].as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    (ids, json["paging"]["after"].as_str().map(str::to_string))
}

/// Walks a whole member list: every page's ids, and how many pages it took.
async fn walk_all(router: &Router, walk: &Walk, limit: usize) -> (Vec<String>, usize) {
    let (mut all, mut pages, mut after) = (Vec::new(), 0, None);
    loop {
        let (ids, next) = one_page(router, walk, limit, after.as_deref()).await;
        all.extend(ids);
        pages += 1;
        match next {
            Some(next) => after = Some(next),
            None => return (all, pages),
        }
    }
}

/// What one timed round served.
#[derive(Clone, Copy, Default)]
struct Round {
    pages_per_second: f64,
    members_per_second: f64,
}

/// `clients` concurrent callers walk member lists (each its share of the walks, page after
/// page, starting over) for `duration`.
async fn round(
    router: &Router,
    walks: &Arc<Vec<Walk>>,
    limit: usize,
    clients: usize,
    duration: Duration,
) -> Round {
    let started = WallClock::now();
    let next_walk = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (router, walks, next_walk) = (router.clone(), walks.clone(), next_walk.clone());
        tasks.push(tokio::spawn(async move {
            let (mut pages, mut members) = (0u64, 0u64);
            let mut current: Option<(usize, Option<String>)> = None;
            while started.elapsed() < duration {
                let (w, after) = current
                    .take()
                    .unwrap_or_else(|| (next_walk.fetch_add(1, Ordering::Relaxed) % walks.len(), None));
                let (ids, next) = one_page(&router, &walks[w], limit, after.as_deref()).await;
                pages += 1;
                members += ids.len() as u64;
                current = next.map(|n| (w, Some(n)));
            }
            (pages, members)
        }));
    }
    let (mut pages, mut members) = (0, 0);
    for task in tasks {
        let (p, m) = task.await.unwrap_or((0, 0));
        pages += p;
        members += m;
    }
    let secs = started.elapsed().as_secs_f64();
    Round { pages_per_second: pages as f64 / secs, members_per_second: members as f64 / secs }
}

fn median(rounds: &[Round], key: fn(&Round) -> f64) -> f64 {
    let mut values: Vec<f64> = rounds.iter().map(key).collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let params = if full {
        WorldParams::benchmark(SEED)
    } else {
        let mut params = WorldParams::small(SEED);
        params.members = 600;
        params.groups.count = 30;
        params.groups.largest = 240;
        params.developers = 6;
        params.traffic.limit = 25;
        params
    };
    let limit = params.traffic.limit;
    let world = World::generate(&params).unwrap_or_else(|e| unreachable!("{e}"));
    let dir = std::env::temp_dir().join(format!("consentry-members-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::create_dir_all(&dir);

    // The world's history, through the platform's own calls.
    let started = WallClock::now();
    let store = Arc::new(SqliteStore::open(&dir.join("bench.db")).unwrap_or_else(|e| unreachable!("{e}")));
    store.set_bulk_load(true).unwrap_or_else(|e| unreachable!("{e}"));
    let key = ServerKey::generate();
    let clock = Arc::new(SimulatedClock::starting_at(params.start));
    let history = Arc::new(Service::new(store.clone(), clock.clone(), key.clone(), ServiceConfig::default()));
    let mut applier = Applier::new(history, clock).unwrap_or_else(|e| unreachable!("{e}"));
    let changes = applier.apply_changes(&world.events).unwrap_or_else(|e| unreachable!("{e}"));
    store.set_bulk_load(false).unwrap_or_else(|e| unreachable!("{e}"));
    let applied_in = started.elapsed().as_secs_f64();

    // Served now, with the wall clock: every app installed somewhere and still active reads
    // every group it is installed in.
    let service = Arc::new(Service::new(
        store.clone(),
        Arc::new(SystemClock::default()),
        key,
        ServiceConfig::default(),
    ));
    let mut replay = Replay::new(&world);
    replay.advance_to(params.end);
    assert_eq!(replay.active_policy().map(|(_, p)| p), Some(ShippedPolicy::Groups2018));
    let mut tokens = std::collections::HashMap::new();
    let mut walks = Vec::new();
    for (app, group) in replay.installations().keys() {
        if replay.status(app) != Some(AppStatus::Active) {
            continue;
        }
        let token = tokens
            .entry(app.clone())
            .or_insert_with(|| {
                let credentials =
                    applier.credentials(app).unwrap_or_else(|| unreachable!("{app} registered"));
                service
                    .issue_token(&credentials.app.client_id, &credentials.client_secret)
                    .unwrap_or_else(|e| unreachable!("{e}"))
                    .access_token
            })
            .clone();
        let scoped = |m: &MemberId| service.scoped_member_id(app, m);
        walks.push(Walk {
            token,
            group: group.clone(),
            visible: replay
                .members(group)
                .filter(|(m, _)| replay.consented(m, app))
                .map(|(m, _)| scoped(m))
                .collect(),
            everyone: replay.members(group).map(|(m, _)| scoped(m)).collect(),
        });
    }
    walks.shuffle(&mut rand::rngs::StdRng::seed_from_u64(SEED));
    let walks = Arc::new(walks);
    let members_listed: usize = walks.iter().map(|w| w.everyone.len()).sum();
    let members_visible: usize = walks.iter().map(|w| w.visible.len()).sum();

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
        if full { (3, Duration::from_secs(5), 32) } else { (1, Duration::from_millis(200), 4) };
    let (mut bypassed, mut enforced, mut durable) = (Vec::new(), Vec::new(), Vec::new());
    let (mut pages_bypassed, mut pages_enforced) = (0, 0);
    runtime.block_on(async {
        // Warm-up, and the answers checked: every walk, both ways, lists exactly whom the
        // world says it should, in the store's order.
        for walk in walks.iter() {
            service.bypass_enforcement_for_benchmark(true);
            let (all, pages) = walk_all(&plain, walk, limit).await;
            assert_eq!(all, walk.everyone, "bypassed: every member of {}, in order", walk.group);
            pages_bypassed += pages;
            service.bypass_enforcement_for_benchmark(false);
            let (shown, pages) = walk_all(&recorded, walk, limit).await;
            assert_eq!(shown, walk.visible, "enforced: exactly the members who opted in, in order");
            pages_enforced += pages;
        }
        // Alternate so that drift affects every side alike.
        for _ in 0..rounds {
            service.bypass_enforcement_for_benchmark(true);
            bypassed.push(round(&plain, &walks, limit, clients, duration).await);
            service.bypass_enforcement_for_benchmark(false);
            enforced.push(round(&plain, &walks, limit, clients, duration).await);
            durable.push(round(&recorded, &walks, limit, clients, duration).await);
        }
    });
    let pages = |r: &Round| r.pages_per_second;
    let members = |r: &Round| r.members_per_second;
    let (b, e, d) = (median(&bypassed, pages), median(&enforced, pages), median(&durable, pages));
    let stats = ledger.stats();
    assert!(stats.records > 0);
    drop(recorded);
    let report = consentry_ledger::verify(ledger.dir(), &[]).unwrap_or_else(|e| unreachable!("{e}"));
    assert!(report.ok(), "{:?}", report.problem);
    println!("members pages (fields {FIELDS}, limit {limit}, following the cursor), in process, {clients} concurrent clients, {} threads:", std::thread::available_parallelism().map_or(0, |n| n.get()));
    println!("  {params}");
    println!(
        "  {} walks ({} apps over {} groups): {members_listed} members listed, {members_visible} of them opted in to the app ({:.1}%); one walk is {:.1} pages bypassed, {:.1} enforced; {changes} changes applied in {applied_in:.1} s",
        walks.len(),
        tokens.len(),
        walks.iter().map(|w| &w.group).collect::<std::collections::HashSet<_>>().len(),
        members_visible as f64 * 100.0 / members_listed.max(1) as f64,
        pages_bypassed as f64 / walks.len() as f64,
        pages_enforced as f64 / walks.len() as f64,
    );
    println!("  timing: every walk once both ways untimed (checked), then the median of {rounds} rounds of {} s per side, alternating", duration.as_secs_f64());
    println!(
        "  enforcement bypassed, no ledger:   {b:>9.0} pages/s {:>10.0} members listed/s",
        median(&bypassed, members)
    );
    println!(
        "  enforced, no ledger:               {e:>9.0} pages/s {:>10.0} members shown/s",
        median(&enforced, members)
    );
    println!(
        "  enforced, durable ledger:          {d:>9.0} pages/s {:>10.0} members shown/s  ({} records in {} syncs, {:.1} a sync; verified)",
        median(&durable, members),
        stats.records,
        stats.syncs,
        stats.records as f64 / stats.syncs.max(1) as f64
    );
    println!("  ratio enforced with durable ledger / bypassed: {:.2} pages (target >= 0.7); enforced without ledger / bypassed: {:.2}", d / b, e / b);
    let _ = std::fs::remove_dir_all(&dir);
}
