//! Benchmark: one node against two nodes on one PostgreSQL, over real sockets. Real `consentry
//! serve` processes (this crate's binary) behind a real HAProxy on `deploy/haproxy.cfg` (with
//! one node, both of its `server` lines point at it, so both runs pay the same hop), a world
//! built through the balancer, and `consentry-load` reading enforced members pages through it
//! over HTTP/1.1 keep-alive. Printed for each: requests/s, p50/p99/p99.9, and what a request
//! costs the database: statements (`pg_stat_statements`, when the server loads it) and
//! transactions (`pg_stat_database`) per request. Both runs must answer every request, and
//! show the same members to the same app.
//!
//! Needs `CONSENTRY_TEST_POSTGRES` and HAProxy (skipped, saying so, without them; `.ci/run`
//! provides both). `cargo bench -p consentry --bench nodes` runs the full world at 32
//! connections; under `cargo test` a small world briefly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, reason = "bench")]

#[path = "../tests/cluster/mod.rs"]
mod cluster;

use cluster::{Cluster, Http, Options};
use consentry_loadgen::{LoadOptions, PhaseReport, Route, Target, WorldSize};
use hyper::Method;

/// The database's counters: statements run (None without pg_stat_statements) and
/// transactions ended, over the whole database.
fn database_counters(client: &mut postgres::Client, statements: bool) -> (Option<i64>, i64) {
    let calls = if statements {
        client
            .query_one(
                "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements \
                 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[],
            )
            .ok()
            .map(|row| row.get::<_, i64>(0))
    } else {
        None
    };
    // Statistics are sent to the collector when a transaction ends; take them fresh.
    let _ = client.batch_execute("SELECT pg_stat_clear_snapshot()");
    let transactions = client
        .query_one(
            "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .map(|row| row.get::<_, i64>(0))
        .unwrap_or(0);
    (calls, transactions)
}

/// Calls of each statement text (pg_stat_statements), to name what a request costs.
fn statement_calls(client: &mut postgres::Client) -> std::collections::HashMap<String, i64> {
    client
        .query(
            "SELECT regexp_replace(query, '\\s+', ' ', 'g'), sum(calls)::bigint FROM pg_stat_statements \
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) GROUP BY 1",
            &[],
        )
        .map(|rows| rows.iter().map(|row| (row.get::<_, String>(0), row.get::<_, i64>(1))).collect())
        .unwrap_or_default()
}

struct Measured {
    nodes: usize,
    phase: PhaseReport,
    statements_per_request: Option<f64>,
    transactions_per_request: f64,
    /// CPU time of every node process together, per request, in microseconds.
    node_cpu_us: f64,
    /// The statements run most per request, with their calls per request.
    top_statements: Vec<(f64, String)>,
    first_page: Vec<String>,
}

fn measure(url: &str, nodes: usize, size: &WorldSize, load: &LoadOptions, statements: bool) -> Measured {
    let names: Vec<String> = ["node-a", "node-b"].iter().take(nodes).map(|n| n.to_string()).collect();
    let cluster = Cluster::start(
        &format!("bench-{nodes}"),
        Options { nodes: names, drain_secs: 0, ..Options::default() },
    )
    .unwrap_or_else(|| unreachable!("haproxy was found a moment ago"));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let lb = cluster.balancer();
    let world = runtime
        .block_on(consentry_loadgen::world::build(lb, &cluster.operator_key, &cluster.officer_key, size))
        .unwrap_or_else(|e| panic!("building the world: {e}"));
    let mut client = url.parse::<postgres::Config>().unwrap().connect(postgres::NoTls).unwrap();
    let target = Target { address: lb, operator: cluster.operator_key.clone(), pid: None };
    // Warm up outside the counted window (connections, prepared statements, memo).
    let warm = LoadOptions { seconds: load.warm_up_seconds.max(0.2), warm_up_seconds: 0.0, ..load.clone() };
    runtime.block_on(consentry_loadgen::load::measure(&target, &world, Route::Members, &warm)).unwrap();
    let pids: Vec<u32> = cluster.nodes.iter().map(cluster::Node::pid).collect();
    let cpu =
        || pids.iter().filter_map(|pid| consentry_loadgen::server::process_cpu_seconds(*pid)).sum::<f64>();
    let cpu_before = cpu();
    let calls_before = if statements { statement_calls(&mut client) } else { Default::default() };
    let before = database_counters(&mut client, statements);
    let cold = LoadOptions { warm_up_seconds: 0.0, ..load.clone() };
    let phase =
        runtime.block_on(consentry_loadgen::load::measure(&target, &world, Route::Members, &cold)).unwrap();
    let after = database_counters(&mut client, statements);
    let calls_after = if statements { statement_calls(&mut client) } else { Default::default() };
    let cpu_seconds = cpu() - cpu_before;
    assert_eq!(phase.errors, 0, "{nodes} node(s): {:?}", phase.first_error);
    assert!(phase.ok > 0);
    let requests = phase.ok as f64;
    let mut top_statements: Vec<(f64, String)> = calls_after
        .iter()
        .map(|(query, calls)| {
            let delta = calls - calls_before.get(query).copied().unwrap_or(0);
            (delta as f64 / requests, query.chars().take(90).collect::<String>())
        })
        .filter(|(per_request, query)| *per_request >= 0.05 && !query.contains("pg_stat"))
        .collect();
    top_statements.sort_by(|a, b| b.0.total_cmp(&a.0));
    top_statements.truncate(8);
    // The same app's first page, for comparing both runs' answers.
    let reader = &world.readers[0];
    let mut http = Http::new();
    let page = http.ok(
        lb,
        Method::GET,
        &format!("/v1/groups/{}/members?fields=name&limit=100", reader.group),
        Some(&reader.token),
        None,
    );
    let mut first_page: Vec<String> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str().map(str::to_string))
        .collect();
    first_page.sort();
    first_page.insert(0, reader.group.clone());
    Measured {
        nodes,
        phase,
        // Minus the two counting queries themselves.
        statements_per_request: after.0.zip(before.0).map(|(a, b)| (a - b - 2).max(0) as f64 / requests),
        transactions_per_request: (after.1 - before.1) as f64 / requests,
        node_cpu_us: cpu_seconds * 1e6 / requests,
        top_statements,
        first_page,
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let Ok(url) = std::env::var("CONSENTRY_TEST_POSTGRES") else {
        eprintln!("CONSENTRY_TEST_POSTGRES is not set: skipping the nodes bench (one node against two on PostgreSQL)");
        return;
    };
    if !cluster::haproxy_installed("the nodes bench") {
        return;
    }
    let mut client = url.parse::<postgres::Config>().unwrap().connect(postgres::NoTls).unwrap();
    let statements = client.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").is_ok()
        && client.batch_execute("SELECT pg_stat_statements_reset()").is_ok();
    if !statements {
        eprintln!("pg_stat_statements is not loaded (shared_preload_libraries): counting transactions only");
    }
    let size = if full { WorldSize::full() } else { WorldSize::small() };
    let load = if full {
        LoadOptions {
            connections: 32,
            seconds: 10.0,
            max_requests: 1_000_000,
            warm_up_seconds: 2.0,
            page: 100,
        }
    } else {
        LoadOptions { connections: 8, seconds: 30.0, max_requests: 200, warm_up_seconds: 0.0, page: 50 }
    };
    // One node, two nodes, and again: on a shared machine a single pair is mostly noise.
    let rounds = if full { 2 } else { 1 };
    let mut runs = Vec::new();
    for _ in 0..rounds {
        runs.push(measure(&url, 1, &size, &load, statements));
        runs.push(measure(&url, 2, &size, &load, statements));
    }
    for run in &runs[1..] {
        assert_eq!(
            runs[0].first_page, run.first_page,
            "one node and two nodes show the app different members"
        );
    }

    println!("world: {}", size.describe());
    println!(
        "load: GET /v1/groups/{{id}}/members (pages of {} following cursors), {} connections through HAProxy, HTTP/1.1 keep-alive over loopback; one PostgreSQL database",
        load.page, load.connections
    );
    println!(
        "{:<8} {:>9} {:>9} {:>8} {:>8} {:>9} {:>14} {:>16} {:>15}",
        "nodes",
        "answered",
        "req/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "statements/req",
        "transactions/req",
        "node cpu us/req"
    );
    for m in &runs {
        let [p50, p99, p999, _] = m.phase.latency_ms;
        println!(
            "{:<8} {:>9} {:>9.0} {:>8.2} {:>8.2} {:>9.2} {:>14} {:>16.2} {:>15.0}",
            m.nodes,
            m.phase.ok,
            m.phase.per_second(),
            p50,
            p99,
            p999,
            m.statements_per_request.map_or("-".to_string(), |s| format!("{s:.2}")),
            m.transactions_per_request,
            m.node_cpu_us,
        );
    }
    for nodes in [1, 2] {
        if let Some(m) = runs.iter().find(|m| m.nodes == nodes && !m.top_statements.is_empty()) {
            println!("statements per request, {nodes} node(s):");
            for (per_request, query) in &m.top_statements {
                println!("  {per_request:>6.2}  {query}");
            }
        }
    }
    let best = |nodes: usize| {
        runs.iter().filter(|m| m.nodes == nodes).map(|m| m.phase.per_second()).fold(0.0, f64::max)
    };
    let cpu = |nodes: usize| {
        let of: Vec<f64> = runs.iter().filter(|m| m.nodes == nodes).map(|m| m.node_cpu_us).collect();
        of.iter().sum::<f64>() / of.len().max(1) as f64
    };
    println!(
        "two nodes / one node: {:.2}x requests/s (best of each), {:.2}x node CPU a request (one machine: both nodes, HAProxy, PostgreSQL and the client share its cores)",
        best(2) / best(1).max(1e-9),
        cpu(2) / cpu(1).max(1e-9),
    );
}
