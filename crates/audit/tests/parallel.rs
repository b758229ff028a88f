//! The *did* audit on many threads gives exactly the report it gives on one, on a realistic
//! world's ledger (churn, installations removed and made again, suspensions and bans, 3–15%
//! opt-in, the three shipped policies in turn), and a damaged ledger is an error on any number
//! of threads.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[path = "../benches/world_ledger.rs"]
mod world_ledger;

use std::collections::HashMap;

use consentry_audit::{
    apps_by_id, audit_could_threads, audit_did_threads, AuditContext, CouldReport, DidReport, History,
};
use consentry_ledger::RawEntries;
use consentry_policy::compile;
use consentry_store::Store;
use consentry_types::{AppId, Instant, MemberId};
use consentry_world::{ShippedPolicy, World, WorldParams};

fn did(
    dir: &std::path::Path,
    store: &dyn Store,
    policy: ShippedPolicy,
    threads: usize,
    window: (Instant, Instant),
) -> DidReport {
    let history = History::new(&store.fact_history().unwrap());
    let apps = apps_by_id(store.apps().unwrap());
    let enforced = HashMap::new();
    let policy = compile(0, policy.text()).unwrap();
    let scoped = |app: &AppId, member: &MemberId| format!("{app}/{member}");
    let context = AuditContext {
        policy: &policy,
        from: window.0,
        to: window.1,
        history: &history,
        apps: &apps,
        enforced: &enforced,
        scoped_id: &scoped,
    };
    let mut entries = RawEntries::open(dir).unwrap();
    let mut progressed = 0;
    let report = audit_did_threads(&context, &mut entries, threads, &mut |read| progressed = read).unwrap();
    assert!(progressed >= report.records_checked, "progress reports every record read");
    report
}

#[test]
fn many_threads_find_what_one_finds() {
    let dir = tempfile_dir("parallel");
    let mut params = WorldParams::small(12);
    // Reads every two weeks: enough records that every thread gets several batches.
    params.traffic.every_days = 14;
    world_ledger::late_rollout(&mut params);
    let world = World::generate(&params).unwrap();
    let played = world_ledger::play(&world, &dir);
    assert!(played.ledger.records > 1_500, "a ledger worth splitting: {:?}", played.ledger);
    let whole = (Instant::MIN, Instant::MAX);
    // A window that cuts through the history, so that records outside it are skipped.
    let part = (Instant::parse("2017-06-01").unwrap(), Instant::parse("2019-11-20").unwrap());
    for policy in [ShippedPolicy::Groups2018, ShippedPolicy::Groups2018Grandfathered] {
        for window in [whole, part] {
            let one = did(&played.ledger_dir, played.store.as_ref(), policy, 1, window);
            assert!(
                one.violations > 0 && one.by_app.len() > 1,
                "{policy:?}: a report with findings to merge"
            );
            assert!(one.manifests.values().map(|apps| apps.len()).sum::<usize>() > 1);
            for threads in [2, 3, 8] {
                let many = did(&played.ledger_dir, played.store.as_ref(), policy, threads, window);
                assert_eq!(many, one, "{policy:?} on {threads} threads, window {window:?}");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn could_on_many_threads_finds_what_one_finds() {
    let dir = tempfile_dir("could");
    let mut params = WorldParams::small(21);
    params.traffic.every_days = 365;
    // Installations made after the grandfathering cutoff, read under legacy-2017 meanwhile:
    // exposures under groups-2018-grandfathered too.
    world_ledger::late_rollout(&mut params);
    let world = World::generate(&params).unwrap();
    let played = world_ledger::play(&world, &dir);
    let store = played.store.as_ref();
    let history = History::new(&store.fact_history().unwrap());
    let apps = apps_by_id(store.apps().unwrap());
    let enforced = store
        .policy_versions()
        .unwrap()
        .into_iter()
        .map(|v| (v.version, compile(v.version, &v.text).unwrap()))
        .collect();
    let scoped = |app: &AppId, member: &MemberId| format!("{app}/{member}");
    for policy in [ShippedPolicy::Groups2018, ShippedPolicy::Groups2018Grandfathered] {
        let name = policy.name();
        let policy = compile(0, policy.text()).unwrap();
        let context = AuditContext {
            policy: &policy,
            from: Instant::parse("2017-01-01").unwrap(),
            to: Instant::parse("2019-12-01").unwrap(),
            history: &history,
            apps: &apps,
            enforced: &enforced,
            scoped_id: &scoped,
        };
        let one: CouldReport = audit_could_threads(&context, 1).unwrap();
        assert!(one.by_app.len() > 1, "{name}: exposures to merge: {one:?}");
        for threads in [2, 5, 1_000] {
            assert_eq!(audit_could_threads(&context, threads).unwrap(), one, "{name} on {threads} threads");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_damaged_ledger_is_an_error_on_any_number_of_threads() {
    let dir = tempfile_dir("damaged");
    let mut params = WorldParams::small(5);
    params.traffic.every_days = 120;
    let world = World::generate(&params).unwrap();
    let played = world_ledger::play(&world, &dir);
    // Flip a byte in the middle of the first segment.
    let segment = std::fs::read_dir(&played.ledger_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .min()
        .expect("a segment file");
    let mut bytes = std::fs::read(&segment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&segment, bytes).unwrap();
    let history = History::new(&played.store.fact_history().unwrap());
    let apps = apps_by_id(played.store.apps().unwrap());
    let enforced = HashMap::new();
    let policy = compile(0, ShippedPolicy::Groups2018.text()).unwrap();
    let scoped = |app: &AppId, member: &MemberId| format!("{app}/{member}");
    let context = AuditContext {
        policy: &policy,
        from: Instant::MIN,
        to: Instant::MAX,
        history: &history,
        apps: &apps,
        enforced: &enforced,
        scoped_id: &scoped,
    };
    for threads in [1, 2, 4] {
        let outcome = RawEntries::open(&played.ledger_dir)
            .map_err(consentry_audit::AuditError::from)
            .and_then(|mut entries| audit_did_threads(&context, &mut entries, threads, &mut |_| {}));
        assert!(outcome.is_err(), "{threads} threads audited a damaged ledger: {outcome:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("consentry-audit-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
