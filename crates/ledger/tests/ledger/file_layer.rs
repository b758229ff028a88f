//! The file layer: an append is acknowledged only once it is synced, shown on a disk that
//! loses everything written since the last sync when it crashes (`LossyDisk`). These tests
//! fail if `flush` stops syncing, which the SIGKILL test in `crates/consentry/tests/crash.rs`
//! cannot show (a killed process loses nothing the kernel already has).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use consentry_ledger::{verify, Entries, Ledger, LedgerOptions, LossyDisk};

use super::{record, temp};

struct Crashed {
    dir: PathBuf,
    acknowledged: Vec<String>,
    failed: usize,
    lost_bytes: u64,
}

/// Eight threads append through `disk` until it crashes, which happens once `after` appends
/// were acknowledged; `crash` decides what the crash leaves. Small segments are sealed and
/// checkpointed under load too.
fn crash_under_load(
    name: &str,
    segment_bytes: u64,
    disk: Arc<LossyDisk>,
    after: usize,
    crash: impl FnOnce(&LossyDisk) -> u64,
) -> Crashed {
    let dir = temp(name);
    let ledger = Arc::new(
        Ledger::open_on(&dir, LedgerOptions { segment_bytes }, disk.clone())
            .unwrap_or_else(|e| unreachable!("{e}")),
    );
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let (ledger, acknowledged, failed) = (ledger.clone(), acknowledged.clone(), failed.clone());
            std::thread::spawn(move || {
                for i in 0.. {
                    let record = record(t * 1_000_000 + i, &[t as u32, i as u32 % 50, 77], &[3]);
                    match ledger.append(&record) {
                        Ok(_) => {
                            acknowledged.lock().unwrap_or_else(|p| p.into_inner()).push(record.request_id)
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    while acknowledged.lock().map(|a| a.len()).unwrap_or(0) < after {
        std::thread::sleep(Duration::from_millis(1));
    }
    let lost_bytes = crash(&disk);
    for thread in threads {
        let _ = thread.join();
    }
    drop(ledger);
    let acknowledged = acknowledged.lock().map(|a| a.clone()).unwrap_or_default();
    Crashed { dir, acknowledged, failed: failed.load(Ordering::Relaxed), lost_bytes }
}

/// Reopens on the real file system: every acknowledged record must be there.
fn reopen_and_check(crashed: &Crashed, what: &str) -> usize {
    let ledger = Ledger::open(&crashed.dir, LedgerOptions { segment_bytes: 6_000 })
        .unwrap_or_else(|e| unreachable!("{what}: after a crash the ledger must open: {e}"));
    drop(ledger);
    let kept: std::collections::HashSet<String> = Entries::open(&crashed.dir)
        .unwrap_or_else(|e| unreachable!("{e}"))
        .map(|e| e.unwrap_or_else(|e| unreachable!("{what}: {e}")).record.request_id)
        .collect();
    let missing = crashed.acknowledged.iter().filter(|id| !kept.contains(*id)).count();
    assert_eq!(
        missing,
        0,
        "{what}: {missing} of {} acknowledged appends are gone after the crash",
        crashed.acknowledged.len()
    );
    let report = verify(&crashed.dir, &[]).unwrap_or_else(|e| unreachable!("{e}"));
    assert!(report.ok(), "{what}: {:?}", report.problem);
    kept.len()
}

#[test]
fn every_acknowledged_append_survives_a_crash_that_loses_what_was_not_synced() {
    // Syncs take a millisecond, so the crash almost always finds written, unsynced bytes; it
    // is tried until it did at least once, so the test shows something was really lost.
    let mut lost_some = false;
    for attempt in 0..10 {
        let disk = LossyDisk::with_sync_delay(Duration::from_millis(1));
        // One segment: the crash cuts the active segment only, so a lost acknowledged append
        // shows as exactly that (with seals, a lost write would also break a seal).
        let crashed = crash_under_load("lossy", 64 << 20, disk, 300, |disk| disk.crash());
        assert!(crashed.acknowledged.len() >= 300);
        assert_eq!(crashed.failed, 8, "every thread's next append failed once the disk was gone");
        let kept = reopen_and_check(&crashed, "a crash losing everything unsynced");
        println!(
            "crash {attempt}: {} appends acknowledged, {kept} records kept, {} unsynced bytes lost",
            crashed.acknowledged.len(),
            crashed.lost_bytes
        );
        let _ = std::fs::remove_dir_all(&crashed.dir);
        lost_some = crashed.lost_bytes > 0;
        if lost_some {
            break;
        }
    }
    assert!(lost_some, "no crash found unsynced bytes to lose");
}

#[test]
fn acknowledged_appends_survive_crashes_that_leave_part_of_the_unsynced_bytes_or_zeros() {
    for (kept, zeroed) in [(1, 0), (3, 0), (37, 0), (150, 0), (0, 4096), (90, 4096), (u64::MAX, 0)] {
        let what = format!("a crash keeping {kept} unsynced bytes then {zeroed} zeros");
        let disk = LossyDisk::with_sync_delay(Duration::from_micros(300));
        let crashed =
            crash_under_load("torn-crash", 6_000, disk, 150, |disk| disk.crash_leaving(kept, zeroed));
        reopen_and_check(&crashed, &what);
        let _ = std::fs::remove_dir_all(&crashed.dir);
    }
}

#[test]
fn concurrent_appends_share_syncs_on_a_disk_whose_syncs_take_time() {
    let disk = LossyDisk::with_sync_delay(Duration::from_millis(2));
    let dir = temp("shared-syncs");
    let ledger = Arc::new(
        Ledger::open_on(&dir, LedgerOptions { segment_bytes: 1 << 20 }, disk.clone())
            .unwrap_or_else(|e| unreachable!("{e}")),
    );
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let ledger = ledger.clone();
            std::thread::spawn(move || {
                (0..50u64).filter(|i| ledger.append(&record(t * 1000 + i, &[t as u32], &[3])).is_ok()).count()
            })
        })
        .collect();
    let appended: usize = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
    let stats = ledger.stats();
    assert_eq!((appended, stats.records), (400, 400));
    assert_eq!(stats.syncs, disk.syncs(), "every sync is counted");
    // About half the threads wait on the sync before the one their record goes in, so a
    // batch carries ~4 records; unshared, there would be 400 syncs.
    assert!(stats.syncs <= 200, "{} syncs for 400 appends from 8 threads: they were not shared", stats.syncs);
    println!(
        "400 appends from 8 threads, 2 ms syncs: {} syncs ({:.1} records per sync)",
        stats.syncs,
        400.0 / stats.syncs as f64
    );
    drop(ledger);
    let _ = std::fs::remove_dir_all(&dir);
}
