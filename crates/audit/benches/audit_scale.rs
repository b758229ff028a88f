//! Benchmark: the *did* audit over a 60-day ledger of 100 million disclosures, against DuckDB
//! (installed from PyPI by this bench) computing the same answer from the Parquet export and
//! the consent history with an ASOF JOIN, in the same run; both answers compared.
//!
//! `cargo bench -p consentry-audit --bench audit_scale` (CONSENTRY_AUDIT_DISCLOSURES sets the
//! size, default 100,000,000). Under `cargo test` it runs on 40,000 disclosures without DuckDB
//! and checks the audit against a count made from the generator's own knowledge.

#![allow(clippy::indexing_slicing, clippy::needless_range_loop)] // indices come from the generator's own ranges

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant as WallClock;

use consentry_audit::{run, AuditReport};
use consentry_ledger::{Ledger, LedgerOptions};
use consentry_service::{ServerKey, Service, ServiceConfig, SimulatedClock};
use consentry_store::Store;
use consentry_store_sqlite::SqliteStore;
use consentry_types::{
    AppId, DeveloperId, Disclosure, DisclosureRecord, Field, FieldSet, GroupId, Instant, MemberId,
    OperatorRole, Role, Scope, Subject,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const GROUPS_2018: &str = include_str!("../../../policies/groups-2018.cedar");
const PAGE: usize = 200;

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

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let disclosures: usize = if full {
        std::env::var("CONSENTRY_AUDIT_DISCLOSURES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000_000)
    } else {
        40_000
    };
    let (groups, apps, members_per_group) = if full { (1_000, 200, PAGE) } else { (20, 10, PAGE) };
    let dir = std::env::temp_dir().join(format!("consentry-audit-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| unreachable!("{e}"));
    let started = WallClock::now();
    let mut rng = StdRng::seed_from_u64(60);

    // History: members, groups of 200, apps installed in 10 groups each, opt-ins and withdrawals.
    let window_start = Instant::parse("2019-09-06T00:00:00Z").unwrap_or_default();
    let window_end = window_start.plus_days(60);
    let clock = Arc::new(SimulatedClock::starting_at(window_start.plus_days(-400)));
    let store =
        Arc::new(SqliteStore::open(&dir.join("consentry.db")).unwrap_or_else(|e| unreachable!("{e}")));
    store.set_bulk_load(true).unwrap_or_else(|e| unreachable!("{e}"));
    let key = ServerKey::generate();
    let service = Service::new(store.clone(), clock.clone(), key.clone(), ServiceConfig::default());
    let ok = |r: Result<(), consentry_service::ServiceError>| r.unwrap_or_else(|e| unreachable!("{e}"));
    let member_count = groups * members_per_group / 2 + members_per_group;
    let member_ids: Vec<MemberId> = (0..member_count)
        .map(|i| MemberId::parse(&format!("m{i:07}")).unwrap_or_else(|e| unreachable!("{e}")))
        .collect();
    for m in &member_ids {
        ok(service.put_member(m, "Member", "https://p.example/m.jpg"));
    }
    // Group g holds members [g*100, g*100+200): neighbours overlap, as real groups do.
    let group_ids: Vec<GroupId> = (0..groups)
        .map(|g| GroupId::parse(&format!("g{g:05}")).unwrap_or_else(|e| unreachable!("{e}")))
        .collect();
    for (g, group) in group_ids.iter().enumerate() {
        ok(service.put_group(group, "Group"));
        for (i, m) in member_ids.iter().skip(g * members_per_group / 2).take(members_per_group).enumerate() {
            ok(service.set_membership(group, m, Some(if i == 0 { Role::Admin } else { Role::Member })));
        }
    }
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
    let mut app_ids = Vec::new();
    let mut installs: Vec<Vec<usize>> = Vec::new();
    for a in 0..apps {
        let developer =
            DeveloperId::parse(&format!("dev{:03}", a / 2)).unwrap_or_else(|e| unreachable!("{e}"));
        ok(service.put_developer(&developer, "Dev", "d@dev.example", "https://dev.example/h"));
        let app = AppId::parse(&format!("app{a:03}")).unwrap_or_else(|e| unreachable!("{e}"));
        service
            .register_app_with_id(app.clone(), &developer, "App", "analytics")
            .unwrap_or_else(|e| unreachable!("{e}"));
        let mut mine: Vec<usize> = (0..10).map(|_| rng.gen_range(0..groups)).collect();
        mine.sort_unstable();
        mine.dedup();
        for g in &mine {
            ok(service.install_app(&app, &group_ids[*g], &member_ids[g * members_per_group / 2]));
        }
        installs.push(mine);
        app_ids.push(app);
    }
    // Opt-ins before and during the window; some withdrawn during it.
    let mut consent_events: Vec<(Instant, usize, usize, bool)> = Vec::new();
    for (a, groups_of_app) in installs.iter().enumerate() {
        for g in groups_of_app {
            for m in (g * members_per_group / 2)..(g * members_per_group / 2 + members_per_group) {
                if rng.gen_bool(0.1) {
                    let at = Instant::from_millis(
                        rng.gen_range(window_start.plus_days(-30).millis()..window_end.millis()),
                    );
                    consent_events.push((at, m, a, true));
                    if rng.gen_bool(0.3) {
                        let later = Instant::from_millis(
                            rng.gen_range(at.millis()..window_end.plus_days(1).millis()),
                        );
                        consent_events.push((later, m, a, false));
                    }
                }
            }
        }
    }
    consent_events.sort_by_key(|e| e.0);
    let mut consents_csv = String::from("member,app,at_ms,granted\n");
    // (member index, app index) -> the changes that took, in time order.
    let mut consent_changes: HashMap<(usize, usize), Vec<(Instant, bool)>> = HashMap::new();
    for (at, m, a, granted) in &consent_events {
        clock.set(*at);
        let scopes: &[Scope] = if *granted { &[Scope::Profile] } else { &[] };
        if service.set_consent(&member_ids[*m], &app_ids[*a], scopes).is_ok() {
            let _ =
                writeln!(consents_csv, "{},{},{},{granted}", member_ids[*m], app_ids[*a], clock_now(&clock));
            consent_changes
                .entry((*m, *a))
                .or_default()
                .push((Instant::from_millis(clock_now(&clock)), *granted));
        }
    }
    store.set_bulk_load(false).unwrap_or_else(|e| unreachable!("{e}"));

    // The ledger: member pages of 200, spread over the 60 days in time order.
    let records = disclosures / (PAGE * 2);
    let profile: FieldSet = [Field::MemberName, Field::MemberPicture].into_iter().collect();
    let ledger =
        Ledger::open(&dir.join("ledger"), LedgerOptions::default()).unwrap_or_else(|e| unreachable!("{e}"));
    let step = (window_end.millis() - window_start.millis()) / records.max(1) as i64;
    let mut expected: BTreeMap<(String, Field), u64> = BTreeMap::new();
    let mut batch = Vec::with_capacity(1_000);
    for r in 0..records {
        let a = rng.gen_range(0..apps);
        let g = installs[a][rng.gen_range(0..installs[a].len())];
        let at = Instant::from_millis(window_start.millis() + r as i64 * step);
        let first = g * members_per_group / 2;
        let mut ds = Vec::with_capacity(PAGE);
        for m in first..first + members_per_group {
            let consented = consent_changes
                .get(&(m, a))
                .and_then(|c| c.iter().rev().find(|(t, _)| *t <= at))
                .is_some_and(|(_, granted)| *granted);
            if !consented {
                *expected.entry((app_ids[a].to_string(), Field::MemberName)).or_default() += 1;
                *expected.entry((app_ids[a].to_string(), Field::MemberPicture)).or_default() += 1;
            }
            ds.push(Disclosure { subject: Subject::Member(member_ids[m].clone()), fields: profile });
        }
        batch.push(DisclosureRecord {
            at,
            request_id: format!("{r:016x}"),
            app: app_ids[a].clone(),
            developer: DeveloperId::parse(&format!("dev{:03}", a / 2))
                .unwrap_or_else(|e| unreachable!("{e}")),
            group: group_ids[g].clone(),
            token_hash: "00".repeat(32),
            policy_version: version,
            route: "GET /v1/groups/{id}/members".into(),
            disclosures: ds,
        });
        if batch.len() == 1_000 {
            ledger.append_all(&batch).unwrap_or_else(|e| unreachable!("{e}"));
            batch.clear();
        }
    }
    ledger.append_all(&batch).unwrap_or_else(|e| unreachable!("{e}"));
    let stats = ledger.stats();
    drop(ledger);
    println!(
        "generated in {:.1} s: {} records, {} disclosures ({:.0} MB of ledger), {} consent changes",
        started.elapsed().as_secs_f64(),
        stats.records,
        stats.disclosures,
        stats.bytes as f64 / 1e6,
        consent_events.len()
    );

    // consentry's audit, measured alone.
    let policy = consentry_policy::compile(0, GROUPS_2018).unwrap_or_else(|e| unreachable!("{e}"));
    let scoped = move |a: &AppId, m: &MemberId| key.scoped_member_id(a, m);
    reset_peak_rss();
    let before_mib = peak_rss_mib();
    let audit_started = WallClock::now();
    let report: AuditReport = run(
        store.as_ref() as &dyn Store,
        &dir.join("ledger"),
        &policy,
        "groups-2018",
        (window_start, window_end),
        &scoped,
        &mut |_| {},
    )
    .unwrap_or_else(|e| unreachable!("{e}"));
    let audit_secs = audit_started.elapsed().as_secs_f64();
    let peak_mib = peak_rss_mib();
    let ours: BTreeMap<(String, Field), u64> = report
        .did
        .by_app
        .iter()
        .flat_map(|(app, f)| f.by_field.iter().map(move |(field, n)| ((app.to_string(), *field), *n)))
        .collect();
    assert_eq!(ours, expected, "the audit disagrees with the generator's own count");
    let rate = report.did.disclosures_checked as f64 / report.did_seconds;
    println!(
        "consentry audit: {} disclosures re-evaluated in {:.2} s = {:.0} disclosures/s (did); whole audit with could {:.2} s; peak RSS {:.0} MiB (whole process; {:.0} MiB before the audit); {} violations",
        report.did.disclosures_checked, report.did_seconds, rate, audit_secs, peak_mib, before_mib, report.did.violations
    );
    if !full {
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }

    // DuckDB over the Parquet export.
    let export_started = WallClock::now();
    let summary = consentry_export::export_parquet(&dir.join("ledger"), &dir.join("export"))
        .unwrap_or_else(|e| unreachable!("{e}"));
    println!(
        "parquet export: {} rows in {} files in {:.1} s (counted in neither audit)",
        summary.rows,
        summary.files.len(),
        export_started.elapsed().as_secs_f64()
    );
    let csv = dir.join("consents.csv");
    std::fs::write(&csv, consents_csv).unwrap_or_else(|e| unreachable!("{e}"));
    let has_duckdb =
        Command::new("python3").args(["-c", "import duckdb"]).status().is_ok_and(|s| s.success());
    if !has_duckdb {
        let _ = Command::new("python3").args(["-m", "pip", "install", "--quiet", "duckdb"]).status();
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/duckdb_did.py");
    let output = Command::new("python3")
        .arg(&script)
        .arg(dir.join("export"))
        .arg(&csv)
        .output()
        .unwrap_or_else(|e| unreachable!("cannot run python3: {e}"));
    if !output.status.success() {
        println!("duckdb failed: {}", String::from_utf8_lossy(&output.stderr));
        return;
    }
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut theirs: BTreeMap<(String, Field), u64> = BTreeMap::new();
    let (mut duck_secs, mut duck_mib) = (0.0f64, 0.0f64);
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["seconds", s] => duck_secs = s.parse().unwrap_or(0.0),
            ["peak_rss_mib", m] => duck_mib = m.parse().unwrap_or(0.0),
            [app, field, n] => {
                if let Ok(field) = Field::parse(field) {
                    theirs.insert((app.to_string(), field), n.parse().unwrap_or(0));
                }
            }
            _ => {}
        }
    }
    println!(
        "duckdb (ASOF JOIN over the export): {duck_secs:.2} s = {:.0} disclosures/s; peak RSS {duck_mib:.0} MiB",
        report.did.disclosures_checked as f64 / duck_secs.max(1e-9)
    );
    println!("answers identical per app and field: {} ({} app/field counts)", theirs == ours, ours.len());
    println!(
        "ratio: consentry's did is {:.1}x DuckDB's speed, the whole audit (did and could) {:.1}x (target >= 5x); consentry peak memory {peak_mib:.0} MiB (target < 2048)",
        duck_secs / report.did_seconds,
        duck_secs / audit_secs
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn clock_now(clock: &SimulatedClock) -> i64 {
    use consentry_service::Clock;
    clock.now().millis()
}
