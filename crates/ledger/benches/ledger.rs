//! Benchmark: raw append (disclosures per second on one thread, bytes per disclosure on
//! disk) for 200-member pages in batches of 1,000 records with one sync each, verify speed in
//! GB/s, recovery on open in GB/s, and how long opening takes to refuse a segment whose first
//! frame's length was altered to run past its end (the search for frames that still chain).
//!
//! `cargo bench -p consentry-ledger --bench ledger` prints the figures; under `cargo test`
//! it runs small and checks that verify accepts what was written.

use std::time::Instant as WallClock;

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
}
