//! Benchmark: a member's history (member transparency's first page, 100 disclosures) through
//! the member index against the full scan it replaces (`scan_member_history`, what the API
//! did before), on ledgers of two sizes, answers asserted equal; then `verify` on the larger
//! ledger at one thread and at every core, the same verdict asserted.
//!
//! The ledger: two streams (two nodes) written in turn, members pages as serving records
//! them: a group's roster of Zipf-distributed size, a page of up to 100 of its members, of
//! whom only those who opted in to the app (3% to 15% per app) are disclosed, with name and
//! picture or name alone; 10% of responses are group reads (no member). Parameters and seed
//! are printed.
//!
//! `cargo bench -p consentry-ledger --bench member_history` builds 20 M and 100 M
//! disclosures (0.2 GB and 1 GB of segments, and 30% more of index) under
//! `$CONSENTRY_BENCH_DIR` (default: the temporary directory) and deletes them after;
//! `CONSENTRY_BENCH_SIZES=1000000,5000000` picks other sizes. Under `cargo test` it runs
//! small (segments of 64 KiB, so that most are sealed).
//!
//! Each lookup's wall-clock time is printed beside its time on a CPU and waiting for one
//! (`/proc/thread-self/schedstat`): on a machine shared with other work, the tail is mostly
//! the wait.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // a bench binary

use std::path::{Path, PathBuf};
use std::time::Instant as WallClock;

use consentry_ledger::{
    scan_member_history, verify_all_with, Ledger, LedgerOptions, MemberIndex, MemberQuery,
};
use consentry_types::{
    AppId, DeveloperId, Disclosure, DisclosureRecord, Field, FieldSet, GroupId, Instant, MemberId, NodeId,
    Subject,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SEED: u64 = 12;
const PAGE: usize = 100;
const BATCH: usize = 1_000;

struct World {
    members: u64,
    groups: Vec<(u64, u64)>,
    /// Cumulative Zipf weights of the groups (how often each is read).
    weights: Vec<f64>,
    apps: Vec<(AppId, DeveloperId, u64)>,
    group_ids: Vec<GroupId>,
}

fn world(members: u64, groups: usize, rng: &mut StdRng) -> World {
    // Roster sizes Zipf-like: group g has about 5,000 / (g + 1)^0.8 members, at least 20.
    let mut rosters = Vec::with_capacity(groups);
    let mut weights = Vec::with_capacity(groups);
    let mut total = 0.0;
    for g in 0..groups {
        let size = ((5_000.0 / ((g + 1) as f64).powf(0.8)) as u64).max(20);
        let start = rng.gen_range(0..members - size);
        rosters.push((start, size));
        total += 1.0 / ((g + 1) as f64).powf(1.0);
        weights.push(total);
    }
    let apps = (0..200)
        .map(|a| {
            (
                AppId::parse(&format!("app_{a:016x}")).unwrap(),
                DeveloperId::parse(&format!("dev-{:03}", a % 90)).unwrap(),
                rng.gen_range(3..=15),
            )
        })
        .collect();
    let group_ids = (0..groups).map(|g| GroupId::parse(&format!("g-{g:06}")).unwrap()).collect();
    World { members, groups: rosters, weights, apps, group_ids }
}

fn member(n: u64) -> MemberId {
    MemberId::parse(&format!("m-{n:08}")).unwrap()
}

/// Whether member `m` opted in to app `a` (a fixed hash: `rate` in 100).
fn opted_in(m: u64, a: usize, rate: u64) -> bool {
    let h = (m ^ ((a as u64) << 40)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> 32) % 100 < rate
}

fn response(world: &World, i: u64, rng: &mut StdRng) -> DisclosureRecord {
    let pick = rng.gen::<f64>() * world.weights.last().copied().unwrap_or(1.0);
    let g = world.weights.partition_point(|w| *w < pick).min(world.groups.len() - 1);
    let (start, size) = world.groups[g];
    let a = rng.gen_range(0..world.apps.len());
    let (app, developer, rate) = &world.apps[a];
    let group_read = rng.gen_range(0..10) == 0;
    let mut disclosures = Vec::new();
    if group_read {
        disclosures.push(Disclosure {
            subject: Subject::Group(world.group_ids[g].clone()),
            fields: [Field::GroupName, Field::GroupMemberCount].into_iter().collect(),
        });
    } else {
        let from = if size > PAGE as u64 { rng.gen_range(0..size / PAGE as u64) * PAGE as u64 } else { 0 };
        let profile: FieldSet = [Field::MemberName, Field::MemberPicture].into_iter().collect();
        let name: FieldSet = [Field::MemberName].into_iter().collect();
        for m in (start + from..start + (from + PAGE as u64).min(size)).filter(|m| *m < world.members) {
            if opted_in(m, a, *rate) {
                let fields = if m % 3 == 0 { name } else { profile };
                disclosures.push(Disclosure { subject: Subject::Member(member(m)), fields });
            }
        }
    }
    DisclosureRecord {
        at: Instant::from_millis(1_560_000_000_000 + i as i64 * 3),
        request_id: format!("{:016x}", rng.gen::<u64>()),
        app: app.clone(),
        developer: developer.clone(),
        group: world.group_ids[g].clone(),
        token_hash: format!("{:064x}", a),
        policy_version: 2,
        route: if group_read { "GET /v1/groups/{id}".into() } else { "GET /v1/groups/{id}/members".into() },
        disclosures,
    }
}

fn disk_usage(dir: &Path, suffix: &str) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            total += disk_usage(&path, suffix);
        } else if path.to_string_lossy().ends_with(suffix) {
            total += entry.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    total
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// CPU seconds (user and system) this process used so far (Linux; 0 elsewhere).
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = [11, 12].iter().filter_map(|i| fields.get(*i)?.parse::<f64>().ok()).sum();
    ticks / 100.0
}

/// This thread's time on a CPU and waiting for one, in nanoseconds (Linux).
fn schedstat() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    Some((fields.next()??, fields.next()??))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

struct Built {
    root: PathBuf,
    disclosures: u64,
    touched: Vec<u64>,
}

fn build(base: &Path, target: u64, segment_bytes: u64) -> Built {
    let root = base.join(format!("consentry-member-history-{}-{target}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let mut rng = StdRng::seed_from_u64(SEED);
    let members = (target / 40).clamp(10_000, 2_000_000);
    let groups = (members / 200) as usize;
    let world = world(members, groups, &mut rng);
    println!(
        "  world: seed {SEED}, {members} members, {groups} groups (Zipf rosters of 20 to 5,000), 200 apps with opt-in 3-15%, pages of {PAGE}, 10% group reads; two streams written in turn, batches of {BATCH}, segments of {} bytes",
        segment_bytes
    );
    let nodes = ["web-1", "web-2"].map(|n| {
        Ledger::open_stream(&root, &NodeId::parse(n).unwrap(), LedgerOptions { segment_bytes }).unwrap()
    });
    let started = WallClock::now();
    let (mut disclosures, mut i) = (0u64, 0u64);
    let mut touched = Vec::new();
    while disclosures < target {
        let batch: Vec<DisclosureRecord> = (0..BATCH)
            .map(|_| {
                i += 1;
                response(&world, i, &mut rng)
            })
            .collect();
        for record in &batch {
            disclosures +=
                record.disclosures.iter().map(|d| u64::from(d.fields.bits().count_ones())).sum::<u64>();
            if touched.len() < 100_000 && rng.gen_range(0..50) == 0 {
                if let Some(Disclosure { subject: Subject::Member(m), .. }) = record.disclosures.first() {
                    touched.push(m.as_str().trim_start_matches("m-").parse().unwrap());
                }
            }
        }
        nodes[(i / BATCH as u64 % 2) as usize].append_all(&batch).unwrap();
    }
    drop(nodes); // waits for the index of the last sealed segments
    let seconds = started.elapsed().as_secs_f64();
    let (ledger_bytes, index_bytes) = (disk_usage(&root, ".seg"), disk_usage(&root, ".members"));
    println!(
        "  built {disclosures} disclosures in {i} records in {seconds:.1} s ({:.0} disclosures/s, index included): ledger {:.2} GB ({:.2} bytes a disclosure), index {:.2} GB ({:.0}% of the ledger)",
        disclosures as f64 / seconds,
        ledger_bytes as f64 / 1e9,
        ledger_bytes as f64 / disclosures as f64,
        index_bytes as f64 / 1e9,
        100.0 * index_bytes as f64 / ledger_bytes.max(1) as f64
    );
    Built { root, disclosures, touched }
}

fn history_bench(built: &Built, lookups: usize, scans: usize) -> (f64, f64) {
    let mut rng = StdRng::seed_from_u64(SEED + 1);
    let query = MemberQuery::first(100);
    let mut index = MemberIndex::open(&built.root);
    let first = WallClock::now();
    let warm_member = member(built.touched[0]);
    index.history(&warm_member, &query).unwrap();
    let cold_ms = first.elapsed().as_secs_f64() * 1e3;
    let stats = index.stats();
    // Members who were disclosed (most) and any member of the population (some none).
    let picks: Vec<MemberId> = (0..lookups)
        .map(|k| {
            if k % 10 == 9 {
                member(rng.gen_range(0..5_000_000))
            } else {
                member(built.touched[rng.gen_range(0..built.touched.len())])
            }
        })
        .collect();
    let mut times = Vec::with_capacity(lookups);
    let (mut on_cpu, mut waiting) = (Vec::with_capacity(lookups), Vec::with_capacity(lookups));
    let mut found = 0usize;
    for m in &picks {
        let before = schedstat();
        let started = WallClock::now();
        let page = index.history(m, &query).unwrap();
        times.push(started.elapsed().as_secs_f64() * 1e3);
        if let (Some(before), Some(after)) = (before, schedstat()) {
            on_cpu.push((after.0 - before.0) as f64 / 1e6);
            waiting.push((after.1 - before.1) as f64 / 1e6);
        }
        found += page.disclosures.len();
    }
    times.sort_by(f64::total_cmp);
    on_cpu.sort_by(f64::total_cmp);
    waiting.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&times, 0.50), percentile(&times, 0.99));
    // The baseline: the full scan, on a few of the same members; answers must be equal.
    let mut scan_times = Vec::with_capacity(scans);
    for m in picks.iter().take(scans) {
        let started = WallClock::now();
        let scanned = scan_member_history(&built.root, m, &query).unwrap();
        scan_times.push(started.elapsed().as_secs_f64() * 1e3);
        let indexed = index.history(m, &query).unwrap();
        assert_eq!(indexed, scanned, "the index and the scan disagree on {m}");
    }
    scan_times.sort_by(f64::total_cmp);
    let scan_p50 = percentile(&scan_times, 0.5);
    println!(
        "  member history, first page of 100, {lookups} random members ({found} disclosures found): index p50 {p50:.3} ms, p99 {p99:.3} ms, max {:.3} ms (target p99 < 10 ms); first lookup {cold_ms:.0} ms (loads and checks every index file: {} loaded, {} built)",
        times.last().copied().unwrap_or(0.0),
        stats.loaded,
        stats.built + stats.rebuilt
    );
    if !on_cpu.is_empty() {
        println!(
            "  the same lookups on the CPU (this thread's run time, /proc/thread-self/schedstat): p50 {:.3} ms, p99 {:.3} ms; waiting for a core: p99 {:.3} ms, max {:.3} ms",
            percentile(&on_cpu, 0.5),
            percentile(&on_cpu, 0.99),
            percentile(&waiting, 0.99),
            waiting.last().copied().unwrap_or(0.0)
        );
    }
    println!(
        "  baseline full scan on {scans} of the same members: p50 {scan_p50:.1} ms, max {:.1} ms; index {:.0}x faster at p50; answers equal",
        scan_times.last().copied().unwrap_or(0.0),
        scan_p50 / p50.max(1e-9)
    );
    (p50, p99)
}

fn verify_bench(built: &Built) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu_before = process_cpu_seconds();
    let one = verify_all_with(&built.root, &[], 1).unwrap();
    let cpu_between = process_cpu_seconds();
    let all = verify_all_with(&built.root, &[], cores.max(2)).unwrap();
    let cpu_after = process_cpu_seconds();
    assert!(one.ok() && all.ok());
    let verdict = |r: &consentry_ledger::LedgerReport| {
        r.streams
            .iter()
            .map(|s| (s.report.records, s.report.disclosures, s.report.bytes, s.report.checkpoints))
            .collect::<Vec<_>>()
    };
    assert_eq!(verdict(&one), verdict(&all), "the same verdict at every thread count");
    let gbs = |r: &consentry_ledger::LedgerReport| r.bytes() as f64 / r.seconds / 1e9;
    println!(
        "  verify {:.2} GB ({} disclosures): 1 thread {:.2} GB/s ({:.1} s), {} threads {:.2} GB/s ({:.1} s): {:.2}x; same verdict ({} cores available)",
        one.bytes() as f64 / 1e9,
        built.disclosures,
        gbs(&one),
        one.seconds,
        all.threads,
        gbs(&all),
        all.seconds,
        gbs(&all) / gbs(&one),
        cores
    );
    println!(
        "  verify CPU time (the process's, /proc/self/stat): 1 thread {:.1} s, {} threads {:.1} s; the machine gives this session one share of its cores whatever its thread count (autogroup), so under load the wall-clock ratio shows the share, not the parallelism",
        cpu_between - cpu_before,
        all.threads,
        cpu_after - cpu_between
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let base = std::env::var_os("CONSENTRY_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let sizes: Vec<u64> = match std::env::var("CONSENTRY_BENCH_SIZES") {
        Ok(list) => list.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
        Err(_) if full => vec![20_000_000, 100_000_000],
        Err(_) => vec![100_000, 300_000],
    };
    let segment_bytes = if full { LedgerOptions::default().segment_bytes } else { 64 << 10 };
    let (lookups, scans) = if full { (2_000, 5) } else { (200, 20) };
    println!("member history and verify (load average before: {})", load());
    let mut p99s = Vec::new();
    for (k, size) in sizes.iter().enumerate() {
        println!("ledger of {size} disclosures:");
        let built = build(&base, *size, segment_bytes);
        let (_, p99) = history_bench(&built, lookups, scans);
        p99s.push((built.disclosures, p99));
        if k + 1 == sizes.len() {
            verify_bench(&built);
        }
        let _ = std::fs::remove_dir_all(&built.root);
    }
    if let [(small, p99_small), .., (large, p99_large)] = p99s.as_slice() {
        println!(
            "  p99 from {small} to {large} disclosures ({:.0}x): {p99_small:.3} ms -> {p99_large:.3} ms ({:.2}x)",
            *large as f64 / *small as f64,
            p99_large / p99_small
        );
    }
    println!("load average after: {}", load());
}
