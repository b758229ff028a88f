//! Benchmark: the *did* audit against DuckDB with the whole question in SQL, on a realistic
//! world's ledger (`consentry-world`: Zipf-sized groups whose members join, leave and change
//! role; installations removed and made again; apps suspended, banned and reinstated; 3–15%
//! opt-in with withdrawals; legacy-2017, groups-2018-grandfathered and groups-2018 in turn;
//! traffic following the membership order; groups-2018-grandfathered rolled out six months
//! late, so that an audit against it finds what legacy-2017 showed meanwhile). Audited against groups-2018 and against
//! groups-2018-grandfathered, at 1 and 2 threads on both sides (`SET threads = N` in DuckDB,
//! `audit_did_threads` in consentry), in the same run.
//!
//! Loading is counted on both sides: consentry's time is reading the fact history from the
//! SQLite store and indexing it, plus reading and re-deciding the ledger; DuckDB's is loading
//! the four fact histories (CSV, written by this bench from the same store's history) plus the
//! query over the ledger's Parquet export (as-of joins for app status, installations,
//! memberships and consents; the policy's rules written out in SQL in `duckdb_audit.py`).
//! Neither side is charged for the export itself, which is printed apart.
//!
//! The answers are asserted equal per (app, field, member) — the set of (app, field, member)
//! received in violation, which is the deletion manifest — and per (app, field) in counts, at
//! every size, including the small one `cargo test` runs. DuckDB comes from PyPI (`pip install
//! duckdb`) when python3 cannot import it; if that fails the DuckDB side is skipped, saying so.
//!
//! `cargo bench -p consentry-audit --bench audit_scale` runs 1 M and 10 M disclosures
//! (CONSENTRY_AUDIT_SIZES=1M,10M,100M adds 100 M; CONSENTRY_AUDIT_THREADS=1,2 the thread
//! counts; CONSENTRY_AUDIT_POLICIES=groups-2018 one policy; CONSENTRY_AUDIT_DUCKDB=0 consentry's
//! side alone, comparing nothing); `cargo test` runs the small world.

#[path = "world_ledger.rs"]
mod world_ledger;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Instant as WallClock;

use consentry_audit::{audit_did_threads, read_known, AuditContext};
use consentry_ledger::RawEntries;
use consentry_policy::compile;
use consentry_store::Store;
use consentry_types::{AppId, Field, Instant, MemberId};
use consentry_world::{ShippedPolicy, World, WorldParams};

const SEED: u64 = 2019;

/// (app, field) -> violations; and the (app, field, member) received in violation.
type Counts = BTreeMap<(String, String), u64>;
type Triples = BTreeSet<(String, String, String)>;

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn reset_peak_rss() {
    // Linux: writing 5 to clear_refs resets the peak resident set size.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (number, unit) = match text.strip_suffix(['M', 'm']) {
        Some(n) => (n, 1_000_000),
        None => (text, 1),
    };
    number.parse::<u64>().ok().map(|n| n * unit)
}

/// The benchmark world (60,000 members, 1,500 groups, 2016–2019), whose apps read each of
/// their groups every 14 days, discloses about `FULL_AT_14_DAYS` (subject, field) pairs
/// (`CONSENTRY_AUDIT_CALIBRATE=1` prints what each size gets). Sized to `disclosures`: reads
/// made more or less often (every 2 to 365 days); beyond reads every 2 days the world grows
/// (members, groups, the largest group and developers alike; disclosures grow about with the
/// scale to the power 2.4, measured).
fn world_for(disclosures: u64) -> WorldParams {
    const FULL_AT_14_DAYS: f64 = 4.19e6;
    let target = disclosures as f64;
    let mut params = WorldParams::benchmark(SEED);
    let most = FULL_AT_14_DAYS * 7.0;
    if target <= most {
        params.traffic.every_days = ((14.0 * FULL_AT_14_DAYS / target).round() as i64).clamp(2, 365);
        return params;
    }
    let scale = (target / most).powf(1.0 / 2.4);
    let scaled = |n: usize| (n as f64 * scale).round() as usize;
    params.members = scaled(params.members);
    params.groups.count = scaled(params.groups.count);
    params.groups.largest = scaled(params.groups.largest);
    params.developers = scaled(params.developers);
    params.traffic.keep_reading_developers = scaled(params.traffic.keep_reading_developers);
    params.traffic.every_days = 2;
    params
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let sizes: Vec<Option<u64>> = if full {
        std::env::var("CONSENTRY_AUDIT_SIZES")
            .unwrap_or_else(|_| "1M,10M".into())
            .split(',')
            .map(|s| Some(parse_size(s).unwrap_or_else(|| unreachable!("CONSENTRY_AUDIT_SIZES: {s}?"))))
            .collect()
    } else {
        vec![None]
    };
    let threads: Vec<usize> = std::env::var("CONSENTRY_AUDIT_THREADS")
        .unwrap_or_else(|_| "1,2".into())
        .split(',')
        .filter_map(|t| t.trim().parse().ok())
        .collect();
    if std::env::var_os("CONSENTRY_AUDIT_CALIBRATE").is_some() {
        // What each size's world discloses (`world_for`), without writing it.
        for size in sizes.iter().flatten() {
            let mut params = world_for(*size);
            world_ledger::late_rollout(&mut params);
            let world = World::generate(&params).unwrap_or_else(|e| unreachable!("{e}"));
            println!("{size}: {} disclosures; {params}", world_ledger::count_traffic(&world));
        }
        return;
    }
    // CONSENTRY_AUDIT_DUCKDB=0: consentry's side alone (its rate and memory), nothing compared.
    let duckdb = if std::env::var("CONSENTRY_AUDIT_DUCKDB").is_ok_and(|v| v == "0") {
        println!("duckdb: not run (CONSENTRY_AUDIT_DUCKDB=0): consentry's side alone, no answers compared");
        None
    } else {
        duckdb_available()
    };
    let root = std::env::temp_dir().join(format!("consentry-audit-bench-{}", std::process::id()));
    for size in sizes {
        let mut params = match size {
            Some(disclosures) => world_for(disclosures),
            None => WorldParams::small(SEED),
        };
        world_ledger::late_rollout(&mut params);
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap_or_else(|e| unreachable!("{e}"));
        bench_one(&params, &threads, duckdb.as_deref(), &root);
        let _ = std::fs::remove_dir_all(&root);
    }
}

fn bench_one(params: &WorldParams, threads: &[usize], duckdb: Option<&str>, dir: &Path) {
    let started = WallClock::now();
    let world = World::generate(params).unwrap_or_else(|e| unreachable!("{e}"));
    println!("{params}");
    println!("events: {:?}", world.counts());
    let played = world_ledger::play(&world, dir);
    drop(world);
    println!(
        "generated in {:.1} s: {} changes through the service into SQLite ({:.1} s); ledger of {} records, {} disclosures, {:.0} MB ({:.1} s)",
        started.elapsed().as_secs_f64(),
        played.changes,
        played.store_seconds,
        played.ledger.records,
        played.ledger.disclosures,
        played.ledger.bytes as f64 / 1e6,
        played.ledger_seconds
    );
    let store: &dyn Store = played.store.as_ref();
    let theirs_input = duckdb.map(|_| {
        let export_started = WallClock::now();
        let summary = consentry_export::export_parquet(&played.ledger_dir, &dir.join("export"))
            .unwrap_or_else(|e| unreachable!("{e}"));
        let bytes: u64 = summary.files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
        write_history(store, &dir.join("history"));
        println!(
            "parquet export: {} rows in {} files, {:.0} MB, {:.1} s; fact history as CSV for DuckDB (both counted in neither audit)",
            summary.rows,
            summary.files.len(),
            bytes as f64 / 1e6,
            export_started.elapsed().as_secs_f64()
        );
        (dir.join("export"), dir.join("history"))
    });
    if duckdb.is_none() && std::env::var("CONSENTRY_AUDIT_DUCKDB").is_err() {
        println!("duckdb: SKIPPED, python3 cannot import duckdb and `pip install duckdb` failed");
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "machine: {} cores available, load average {}",
        consentry_audit::default_threads(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    let policies: Vec<ShippedPolicy> = [ShippedPolicy::Groups2018, ShippedPolicy::Groups2018Grandfathered]
        .into_iter()
        .filter(|p| {
            std::env::var("CONSENTRY_AUDIT_POLICIES")
                .map_or(true, |only| only.split(',').any(|o| o == p.name()))
        })
        .collect();
    for policy in policies {
        let compiled = compile(0, policy.text()).unwrap_or_else(|e| unreachable!("{e}"));
        for &n in threads {
            // consentry: the store's fact history read and indexed, then the ledger re-decided
            // (the *did* part of `consentry audit`; its *could* part is not DuckDB's question).
            let scoped = |_: &AppId, member: &MemberId| member.to_string();
            reset_peak_rss();
            let started = WallClock::now();
            let known = read_known(store).unwrap_or_else(|e| unreachable!("{e}"));
            let context = AuditContext {
                policy: &compiled,
                from: Instant::MIN,
                to: Instant::MAX,
                history: &known.history,
                apps: &known.apps,
                enforced: &known.enforced,
                scoped_id: &scoped,
            };
            let history_seconds = started.elapsed().as_secs_f64();
            let mut entries = RawEntries::open(&played.ledger_dir).unwrap_or_else(|e| unreachable!("{e}"));
            let report = audit_did_threads(&context, &mut entries, n, &mut |_| {})
                .unwrap_or_else(|e| unreachable!("{e}"));
            let ours_secs = started.elapsed().as_secs_f64();
            let peak = peak_rss_mib();
            let did = &report;
            let ours_counts: Counts = did
                .by_app
                .iter()
                .flat_map(|(app, f)| {
                    f.by_field.iter().map(move |(field, v)| ((app.to_string(), field.to_string()), *v))
                })
                .collect();
            let ours_triples: Triples = did
                .manifests
                .values()
                .flat_map(|apps| apps.iter())
                .flat_map(|(app, pairs)| {
                    pairs
                        .iter()
                        .map(move |(member, field)| (app.to_string(), field.to_string(), member.clone()))
                })
                .collect();
            assert_eq!(did.violations, ours_counts.values().sum::<u64>());
            assert!(did.violations > 0, "{}: an audit that finds nothing compares nothing", policy.name());
            println!(
                "consentry {} threads={n}: {} disclosures in {:.2} s ({:.2} s fact history from SQLite + {:.2} s ledger) = {:.0} disclosures/s; peak RSS {:.0} MiB; {} violations, {} (app, field, member)",
                policy.name(),
                did.disclosures_checked,
                ours_secs,
                history_seconds,
                ours_secs - history_seconds,
                did.disclosures_checked as f64 / ours_secs,
                peak,
                did.violations,
                ours_triples.len(),
            );
            let (Some(script_python), Some((export, history))) = (duckdb, theirs_input.as_ref()) else {
                continue;
            };
            let out = dir.join(format!("duckdb-{}-{n}.csv", policy.name()));
            let (theirs_secs, theirs_peak, theirs_counts, theirs_triples, version) =
                run_duckdb(script_python, export, history, policy, n, &out);
            let _ = std::fs::remove_file(&out);
            println!(
                "duckdb    {} threads={n}: {} disclosures in {:.2} s = {:.0} disclosures/s; peak RSS {:.0} MiB; duckdb {version}",
                policy.name(),
                did.disclosures_checked,
                theirs_secs,
                did.disclosures_checked as f64 / theirs_secs.max(1e-9),
                theirs_peak,
            );
            assert_eq!(
                theirs_counts,
                ours_counts,
                "{} threads={n}: violations per (app, field) differ",
                policy.name()
            );
            assert_eq!(
                theirs_triples,
                ours_triples,
                "{} threads={n}: (app, field, member) differ",
                policy.name()
            );
            println!(
                "ratio {} threads={n}: consentry {:.1}x DuckDB (target >= 5x at 100 M); answers identical: {} (app, field) counts, {} (app, field, member); consentry peak {:.0} MiB (target < 2048)",
                policy.name(),
                theirs_secs / ours_secs,
                ours_counts.len(),
                ours_triples.len(),
                peak
            );
        }
    }
}

/// The store's fact history as the CSV files DuckDB loads, in the order the store gives it.
fn write_history(store: &dyn Store, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| unreachable!("{e}"));
    let history = store.fact_history().unwrap_or_else(|e| unreachable!("{e}"));
    let mut text = String::from("seq,since,grp,member,role\n");
    for (seq, c) in history.memberships.iter().enumerate() {
        let role = c.value.map_or("", |r| r.as_str());
        let _ = writeln!(text, "{seq},{},{},{},{role}", c.at.millis(), c.key.0, c.key.1);
    }
    write(dir, "memberships.csv", &text);
    let mut text = String::from("seq,since,app,grp,installed_ms\n");
    for (seq, c) in history.installations.iter().enumerate() {
        let since = c.value.as_ref().map_or(String::new(), |(_, since)| since.millis().to_string());
        let _ = writeln!(text, "{seq},{},{},{},{since}", c.at.millis(), c.key.0, c.key.1);
    }
    write(dir, "installations.csv", &text);
    let mut text = String::from("seq,since,app,status\n");
    for (seq, c) in history.app_statuses.iter().enumerate() {
        let _ = writeln!(text, "{seq},{},{},{}", c.at.millis(), c.key, c.value.as_str());
    }
    write(dir, "app_statuses.csv", &text);
    let mut text = String::from("seq,since,member,app,granted\n");
    for (seq, c) in history.profile_consents.iter().enumerate() {
        let _ = writeln!(text, "{seq},{},{},{},{}", c.at.millis(), c.key.0, c.key.1, c.value);
    }
    write(dir, "consents.csv", &text);
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap_or_else(|e| unreachable!("{e}"));
}

/// python3 when it can import duckdb, after installing it from PyPI if it could not.
fn duckdb_available() -> Option<String> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let imports = |python: &str| {
        Command::new(python).args(["-c", "import duckdb"]).output().is_ok_and(|o| o.status.success())
    };
    if imports(&python) {
        return Some(python);
    }
    println!("duckdb: python3 cannot import it; installing it from PyPI (pip install duckdb)");
    let pip = |extra: &[&str]| {
        let mut command = Command::new(&python);
        command.args(["-m", "pip", "install", "--quiet", "duckdb"]).args(extra);
        command.status().is_ok_and(|s| s.success())
    };
    // A Debian python refuses installs outside a virtual environment unless told.
    let installed = pip(&[]) || pip(&["--break-system-packages"]);
    if installed && imports(&python) {
        return Some(python);
    }
    None
}

fn run_duckdb(
    python: &str,
    export: &Path,
    history: &Path,
    policy: ShippedPolicy,
    threads: usize,
    out: &Path,
) -> (f64, f64, Counts, Triples, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/duckdb_audit.py");
    let output = Command::new(python)
        .arg(&script)
        .arg(export)
        .arg(history)
        .arg(policy.name())
        .arg(threads.to_string())
        .arg(out)
        .output()
        .unwrap_or_else(|e| unreachable!("cannot run {python}: {e}"));
    assert!(output.status.success(), "duckdb failed: {}", String::from_utf8_lossy(&output.stderr));
    let (mut secs, mut peak, mut version, mut reported_threads) = (0.0, 0.0, String::new(), 0usize);
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        match line.split_once(' ') {
            Some(("seconds", s)) => secs = s.parse().unwrap_or(0.0),
            Some(("peak_rss_mib", m)) => peak = m.parse().unwrap_or(0.0),
            Some(("threads", t)) => reported_threads = t.parse().unwrap_or(0),
            Some(("duckdb", v)) => version = v.to_string(),
            _ => {}
        }
    }
    assert_eq!(reported_threads, threads, "DuckDB runs on the threads it was given");
    let text = std::fs::read_to_string(out).unwrap_or_else(|e| unreachable!("{e}"));
    let (mut counts, mut triples) = (Counts::new(), Triples::new());
    for line in text.lines().skip(1) {
        let words: Vec<&str> = line.split(',').collect();
        let [app, field, member, n] = words.as_slice() else { unreachable!("duckdb answer line {line:?}") };
        Field::parse(field).unwrap_or_else(|e| unreachable!("{e}"));
        *counts.entry((app.to_string(), field.to_string())).or_default() += n.parse::<u64>().unwrap_or(0);
        // A group's own fields have no member: they count, and name nobody in a manifest.
        if !member.starts_with("group:") {
            triples.insert((app.to_string(), field.to_string(), member.to_string()));
        }
    }
    (secs, peak, counts, triples, version)
}
