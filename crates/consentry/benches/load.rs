//! Benchmark over real sockets: `consentry serve` (this crate's binary) on loopback, a world
//! built through its platform API, and `consentry-load` driving it over HTTP/1.1 keep-alive
//! with many app tokens across many groups, one route at a time beside `GET /healthz` (the
//! HTTP stack's ceiling). Printed per route: requests/s, p50/p99/p99.9 latency, ledger records
//! per sync and syncs/s, the server's threads. The server runs twice in the same run: with the
//! ledger writer's bounded commit wait (the default) and without it (`--commit-wait-us 0`,
//! syncing as soon as the writer is free), so the wait's effect is shown beside its baseline.
//!
//! `cargo bench -p consentry --bench load` runs the full world at 32 connections; under
//! `cargo test` it runs a small world briefly and checks that every answered Groups API
//! request left exactly one record and nothing failed.

use consentry_loadgen::{LoadOptions, Route, RunOptions, RunReport, WorldSize};

fn run(options: &RunOptions) -> RunReport {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| unreachable!("runtime: {e}"));
    runtime.block_on(consentry_loadgen::run(options)).unwrap_or_else(|e| unreachable!("load run failed: {e}"))
}

fn check(report: &RunReport) {
    for phase in &report.phases {
        assert_eq!(phase.errors, 0, "{}: {:?}", phase.route.name(), phase.first_error);
        assert!(phase.ok > 0, "{} answered nothing", phase.route.name());
        let (records, syncs) =
            phase.ledger.unwrap_or_else(|| unreachable!("the server shows its ledger counters"));
        if phase.route.records() {
            assert_eq!(records, phase.ok, "{}: one record for every answered request", phase.route.name());
            assert!(
                syncs >= 1 && syncs <= records,
                "{}: {syncs} syncs for {records} records",
                phase.route.name()
            );
        } else {
            assert_eq!((records, syncs), (0, 0), "the ceiling records nothing");
        }
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let options = RunOptions {
        binary: env!("CARGO_BIN_EXE_consentry").into(),
        work_dir: std::env::temp_dir(),
        listen: "127.0.0.1:0".parse().unwrap_or_else(|e| unreachable!("{e}")),
        world: if full { WorldSize::full() } else { WorldSize::small() },
        load: if full {
            LoadOptions {
                connections: 32,
                seconds: 10.0,
                max_requests: 1_000_000,
                warm_up_seconds: 2.0,
                page: 100,
            }
        } else {
            LoadOptions { connections: 8, seconds: 30.0, max_requests: 200, warm_up_seconds: 0.0, page: 50 }
        },
        routes: vec![Route::Health, Route::Group, Route::Posts, Route::Members],
        serve_args: Vec::new(),
    };
    let waiting = run(&options);
    check(&waiting);
    let no_wait = run(&RunOptions {
        serve_args: vec!["--commit-wait-us".into(), "0".into()],
        routes: vec![Route::Members],
        ..options
    });
    check(&no_wait);
    println!(
        "consentry serve, default commit wait ({} ms at most):",
        consentry_api::COMMIT_WAIT.as_secs_f64() * 1e3
    );
    print!("{}", waiting.render());
    println!("baseline in the same run: the same server with --commit-wait-us 0 (sync as soon as the writer is free):");
    print!("{}", consentry_loadgen::load::table(&no_wait.phases));
    let members = |r: &RunReport| r.phases.iter().find(|p| p.route == Route::Members).cloned();
    if let (Some(w), Some(n)) = (members(&waiting), members(&no_wait)) {
        println!(
            "members page with the wait / without: {:.2}x requests/s, {:.1} vs {:.1} records a sync, p99 {:.2} vs {:.2} ms (target >= 8 records a sync at 32 connections)",
            w.per_second() / n.per_second().max(1e-9),
            w.records_per_sync().unwrap_or(0.0),
            n.records_per_sync().unwrap_or(0.0),
            w.latency_ms[1],
            n.latency_ms[1],
        );
    }
}
