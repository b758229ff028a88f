//! Benchmark: raw append (disclosures per second on one thread, bytes per disclosure on
//! disk) for 200-member pages in batches of 1,000 records with one sync each; then one record
//! per request, as serving appends, from 1, 8 and 64 concurrent writers (appends/s, syncs/s,
//! records per sync, latency), against the same records in batches of 1,000 in the same run;
//! bytes per disclosure on a realistic mix of responses; verify speed in GB/s, recovery on
//! open in GB/s, and how long opening takes to refuse a segment whose first frame's length
//! was altered to run past its end (the search for frames that still chain).
//!
//! The realistic mix is generated here (no shared world crate yet): groups of Zipf-sized
//! rosters, members pages of 25 to 100 following the roster's order with each app's opt-in
//! rate between 3% and 15%, group reads and posts pages; its parameters and seed are printed.
//!
//! `cargo bench -p consentry-ledger --bench ledger` prints the figures; under `cargo test`
//! it runs small and checks that verify accepts what was written.

use std::time::Instant as WallClock;

use std::sync::{Arc, Barrier};

use consentry_ledger::{verify, Ledger, LedgerOptions};
use consentry_types::{
    AppId, DeveloperId, Disclosure, DisclosureRecord, Field, FieldSet, GroupId, Instant, MemberId, Subject,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const PAGE: usize = 200;
const BATCH: usize = 1_000;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (records, population) = if full { (20_000, 50_000) } else { (300, 2_000) };
    let dir = std::env::temp_dir().join(format!("consentry-ledger-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut rng = StdRng::seed_from_u64(7);
    let members: Vec<MemberId> = (0..population)
        .map(|i| MemberId::parse(&format!("m-{i:07}")).unwrap_or_else(|e| unreachable!("{e}")))
        .collect();
    let apps: Vec<AppId> = (0..100)
        .map(|i| AppId::parse(&format!("app_{i:016x}")).unwrap_or_else(|e| unreachable!("{e}")))
        .collect();
    let profile: FieldSet = [Field::MemberName, Field::MemberPicture].into_iter().collect();
    // Pages as apps read them: 200 members of a group in id order, groups re-read over time.
    let mut pages: Vec<DisclosureRecord> = Vec::with_capacity(records);
    for i in 0..records {
        let start = rng.gen_range(0..population - PAGE);
        let app = apps.get(i % apps.len()).cloned().unwrap_or_else(|| unreachable!("app"));
        pages.push(DisclosureRecord {
            at: Instant::from_millis(1_560_000_000_000 + i as i64 * 37),
            request_id: format!("{:016x}", rng.gen::<u64>()),
            app,
            developer: DeveloperId::parse(&format!("dev-{:03}", i % 90))
                .unwrap_or_else(|e| unreachable!("{e}")),
            group: GroupId::parse(&format!("g-{:05}", start / PAGE)).unwrap_or_else(|e| unreachable!("{e}")),
            token_hash: format!("{:064x}", i % 500),
            policy_version: 2,
            route: "GET /v1/groups/{id}/members".into(),
            disclosures: members
                .get(start..start + PAGE)
                .unwrap_or_default()
                .iter()
                .map(|m| Disclosure { subject: Subject::Member(m.clone()), fields: profile })
                .collect(),
        });
    }
    // A disclosure is a (subject, field) pair: two per member here (name and picture).
    let disclosures = (records * PAGE * 2) as f64;
    let ledger = Ledger::open(&dir, LedgerOptions::default()).unwrap_or_else(|e| unreachable!("{e}"));
    let started = WallClock::now();
    for batch in pages.chunks(BATCH) {
        ledger.append_all(batch).unwrap_or_else(|e| unreachable!("{e}"));
    }
    let append_secs = started.elapsed().as_secs_f64();
    let bytes = ledger.stats().bytes as f64;
    drop(ledger);
    let report = verify(&dir, &[]).unwrap_or_else(|e| unreachable!("{e}"));
    assert!(report.ok(), "{:?}", report.problem);
    assert_eq!(report.disclosures as f64, disclosures);
    println!("ledger raw append, one thread, {records} records of {PAGE} members, batches of {BATCH} (one fdatasync each):");
    println!("  {:>12.0} disclosures/s  (target >= 2,000,000; immudb publishes 1.2-1.8 million entries/s on 4 cores)", disclosures / append_secs);
    println!(
        "  {:>12.2} bytes/disclosure on disk, names and hashes included  (target <= 4)",
        bytes / disclosures
    );
    println!(
        "ledger verify: {:.2} GB/s ({:.0} MB in {:.3} s, {:.0} disclosures/s)",
        bytes / report.seconds / 1e9,
        bytes / 1e6,
        report.seconds,
        disclosures / report.seconds
    );
    let started = WallClock::now();
    let reopened = Ledger::open(&dir, LedgerOptions::default()).unwrap_or_else(|e| unreachable!("{e}"));
    let open_secs = started.elapsed().as_secs_f64();
    assert_eq!(reopened.stats().records, records as u64);
    drop(reopened);
    println!(
        "ledger open (recovery scan of every frame): {:.2} GB/s ({:.3} s)",
        bytes / open_secs / 1e9,
        open_secs
    );
    // The first frame's length made to run past the end of the segment, within the maximum.
    let segment = dir.join("00000001.seg");
    let mut file = std::fs::read(&segment).unwrap_or_default();
    let size = file.len() as u32;
    let length = file.get(..4).and_then(|b| b.try_into().ok()).map_or(0, u32::from_le_bytes);
    let altered = (length | size.next_power_of_two()).min(64 << 20);
    assert!(altered > size - 36, "the altered length runs past the end");
    file.splice(..4, altered.to_le_bytes());
    std::fs::write(&segment, &file).unwrap_or_else(|e| unreachable!("{e}"));
    let started = WallClock::now();
    let refused = Ledger::open(&dir, LedgerOptions::default());
    let refuse_secs = started.elapsed().as_secs_f64();
    let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("damaged at byte 0"), "{message}");
    println!(
        "ledger open refusing an altered first length in a {:.0} MB segment: {:.4} s",
        f64::from(size) / 1e6,
        refuse_secs
    );
    let _ = std::fs::remove_dir_all(&dir);
    one_record_per_request(full);
}

/// The realistic mix's parameters.
struct Mix {
    members: usize,
    groups: usize,
    zipf: f64,
    apps: usize,
    seed: u64,
}

fn id<T>(parsed: Result<T, impl std::fmt::Display>) -> T {
    parsed.unwrap_or_else(|e| unreachable!("{e}"))
}

/// Responses as serving records them: 60% members pages (25 to 100 members in roster order,
/// each disclosed with the app's opt-in rate, name and picture or name only), 25% group reads,
/// 15% posts pages (25 posts by members of the group, content and time, and the author where
/// they opted in). Tokens change every 1,000 responses of an app; times advance ~3 ms each.
fn realistic_mix(mix: &Mix, records: usize) -> Vec<DisclosureRecord> {
    let mut rng = StdRng::seed_from_u64(mix.seed);
    let weights: Vec<f64> = (0..mix.groups).map(|g| 1.0 / ((g + 1) as f64).powf(mix.zipf)).collect();
    let total: f64 = weights.iter().sum();
    let rosters: Vec<Vec<MemberId>> = weights
        .iter()
        .map(|w| {
            let size = ((mix.members as f64 * 1.6 * w / total).round() as usize).clamp(3, mix.members);
            rand::seq::index::sample(&mut rng, mix.members, size)
                .into_iter()
                .map(|m| id(MemberId::parse(&format!("m-{m:07}"))))
                .collect()
        })
        .collect();
    let apps: Vec<(AppId, DeveloperId, f64)> = (0..mix.apps)
        .map(|a| {
            (
                id(AppId::parse(&format!("app_{:016x}", rng.gen::<u64>()))),
                id(DeveloperId::parse(&format!("dev-{:03}", a / 2))),
                rng.gen_range(0.03..=0.15),
            )
        })
        .collect();
    let profile: FieldSet = [Field::MemberName, Field::MemberPicture].into_iter().collect();
    let name_only: FieldSet = [Field::MemberName].into_iter().collect();
    let group_fields: FieldSet = [Field::GroupName, Field::GroupMemberCount].into_iter().collect();
    let post_fields: FieldSet = [Field::PostContent, Field::PostCreatedTime].into_iter().collect();
    let mut sent = vec![0usize; mix.apps];
    (0..records)
        .map(|i| {
            let a = rng.gen_range(0..mix.apps);
            let (app, developer, rate) = apps.get(a).cloned().unwrap_or_else(|| unreachable!("app"));
            let count = sent.get_mut(a).map_or(0, |n| {
                *n += 1;
                *n
            });
            // Bigger groups are read more: pick a group by its Zipf weight.
            let mut pick = rng.gen::<f64>() * total;
            let g = weights.iter().position(|w| {
                pick -= w;
                pick <= 0.0
            });
            let g = g.unwrap_or(0);
            let roster = rosters.get(g).map(Vec::as_slice).unwrap_or_default();
            let kind = rng.gen_range(0..100);
            let (route, disclosures) = if kind < 60 {
                let page = [25, 50, 100].get(rng.gen_range(0..3)).copied().unwrap_or(25);
                let start = rng.gen_range(0..roster.len().max(1)) / page * page;
                let fields = if rng.gen_bool(0.2) { name_only } else { profile };
                let disclosed = roster
                    .get(start..(start + page).min(roster.len()))
                    .unwrap_or_default()
                    .iter()
                    .filter(|_| rng.gen_bool(rate))
                    .map(|m| Disclosure { subject: Subject::Member(m.clone()), fields })
                    .collect();
                ("GET /v1/groups/{id}/members", disclosed)
            } else if kind < 85 {
                let group = id(GroupId::parse(&format!("g-{g:05}")));
                (
                    "GET /v1/groups/{id}",
                    vec![Disclosure { subject: Subject::Group(group), fields: group_fields }],
                )
            } else {
                let mut by_author: Vec<Disclosure> = Vec::new();
                for _ in 0..25 {
                    let author = roster.get(rng.gen_range(0..roster.len().max(1))).cloned();
                    let Some(author) = author else { continue };
                    if by_author.iter().any(|d| d.subject == Subject::Member(author.clone())) {
                        continue;
                    }
                    let mut fields = post_fields;
                    if rng.gen_bool(rate) {
                        fields.insert(Field::PostAuthor);
                    }
                    by_author.push(Disclosure { subject: Subject::Member(author), fields });
                }
                ("GET /v1/groups/{id}/posts", by_author)
            };
            DisclosureRecord {
                at: Instant::from_millis(1_560_000_000_000 + i as i64 * 3),
                request_id: format!("{:016x}", rng.gen::<u64>()),
                app,
                developer,
                group: id(GroupId::parse(&format!("g-{g:05}"))),
                token_hash: format!("{:064x}", (a * 1_000_000 + count / 1_000) as u64),
                policy_version: 2,
                route: route.into(),
                disclosures,
            }
        })
        .collect()
}

fn percentile_ms(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or(0.0) * 1e3
}

/// One record per `append`, as serving appends one per response, from `writers` threads;
/// then the same records in batches of 1,000 (one sync each) as the baseline.
fn one_record_per_request(full: bool) {
    let mix = if full {
        Mix { members: 200_000, groups: 2_000, zipf: 1.0, apps: 100, seed: 12 }
    } else {
        Mix { members: 5_000, groups: 50, zipf: 1.0, apps: 10, seed: 12 }
    };
    let per_run = if full { 20_000 } else { 400 };
    let records = realistic_mix(&mix, per_run);
    println!(
        "one record per request: realistic mix of {per_run} responses ({} members, {} groups of Zipf s={} rosters, {} apps with opt-in 3-15%; 60% members pages of 25-100, 25% group reads, 15% posts pages; seed {})",
        mix.members, mix.groups, mix.zipf, mix.apps, mix.seed
    );
    let disclosures: u64 = records.iter().map(consentry_ledger::field_pairs).sum();
    let base = std::env::temp_dir().join(format!("consentry-ledger-bench-writers-{}", std::process::id()));
    // The baseline: the same records, 1,000 to a sync, on one thread.
    let dir = base.join("batched");
    let _ = std::fs::remove_dir_all(&dir);
    let ledger = Ledger::open(&dir, LedgerOptions::default()).unwrap_or_else(|e| unreachable!("{e}"));
    let started = WallClock::now();
    for batch in records.chunks(BATCH) {
        ledger.append_all(batch).unwrap_or_else(|e| unreachable!("{e}"));
    }
    let batched = per_run as f64 / started.elapsed().as_secs_f64();
    let stats = ledger.stats();
    drop(ledger);
    assert_eq!(verify(&dir, &[]).map(|r| (r.ok(), r.records)).ok(), Some((true, per_run as u64)));
    println!(
        "  {:.2} bytes a disclosure on disk on this mix ({} disclosures in {} records, {:.1} a record; names and hashes included)",
        stats.bytes as f64 / disclosures.max(1) as f64,
        disclosures,
        per_run,
        disclosures as f64 / per_run as f64
    );
    println!("  baseline, batches of {BATCH} on one thread: {batched:>9.0} appends/s");
    println!(
        "  {:>7} {:>11} {:>9} {:>12} {:>10} {:>10} {:>12}",
        "writers", "appends/s", "syncs/s", "records/sync", "p50 ms", "p99 ms", "of baseline"
    );
    let records = Arc::new(records);
    for writers in [1usize, 8, 64] {
        let dir = base.join(format!("writers-{writers}"));
        let _ = std::fs::remove_dir_all(&dir);
        let ledger =
            Arc::new(Ledger::open(&dir, LedgerOptions::default()).unwrap_or_else(|e| unreachable!("{e}")));
        let start = Arc::new(Barrier::new(writers + 1));
        let threads: Vec<_> = (0..writers)
            .map(|w| {
                let (ledger, records, start) = (ledger.clone(), records.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    let mut latencies = Vec::new();
                    for record in records.iter().skip(w).step_by(writers) {
                        let began = WallClock::now();
                        ledger.append(record).unwrap_or_else(|e| unreachable!("{e}"));
                        latencies.push(began.elapsed().as_secs_f64());
                    }
                    latencies
                })
            })
            .collect();
        start.wait();
        let started = WallClock::now();
        let mut latencies: Vec<f64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap_or_else(|_| unreachable!("a writer panicked")))
            .collect();
        let secs = started.elapsed().as_secs_f64();
        latencies.sort_by(f64::total_cmp);
        let stats = ledger.stats();
        drop(ledger);
        // Every record is there once, and the ledger verifies.
        let report = verify(&dir, &[]).unwrap_or_else(|e| unreachable!("{e}"));
        assert!(report.ok() && report.records == per_run as u64, "{report:?}");
        assert_eq!(report.disclosures, disclosures);
        assert_eq!(stats.records, per_run as u64);
        let per_sync = stats.records as f64 / stats.syncs.max(1) as f64;
        if writers == 64 {
            assert!(per_sync > 1.0, "64 writers shared no sync: {stats:?}");
        }
        println!(
            "  {:>7} {:>11.0} {:>9.0} {:>12.1} {:>10.3} {:>10.3} {:>12.3}",
            writers,
            per_run as f64 / secs,
            stats.syncs as f64 / secs,
            per_sync,
            percentile_ms(&latencies, 0.50),
            percentile_ms(&latencies, 0.99),
            per_run as f64 / secs / batched,
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_dir_all(&base);
}
