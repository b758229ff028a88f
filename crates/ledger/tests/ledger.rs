//! The ledger keeps what it acknowledged, gives it back exactly, and detects any change.

#![allow(clippy::indexing_slicing)] // test data is built to the sizes indexed

use std::path::{Path, PathBuf};
use std::sync::Arc;

use consentry_ledger::{verify, Entries, Ledger, LedgerOptions};
use consentry_types::{
    AppId, DeveloperId, Disclosure, DisclosureRecord, Field, FieldSet, GroupId, Instant, MemberId, Subject,
};
use proptest::prelude::*;

#[path = "ledger/file_layer.rs"]
mod file_layer;
#[path = "ledger/recovery.rs"]
mod recovery;
#[path = "ledger/streams.rs"]
mod streams;

fn temp(name: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("consentry-ledger-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn record(i: u64, members: &[u32], fields: &[u16]) -> DisclosureRecord {
    let mut disclosures: Vec<Disclosure> = members
        .iter()
        .zip(fields.iter().cycle())
        .map(|(m, f)| Disclosure {
            subject: Subject::Member(
                MemberId::parse(&format!("m-{m:05}")).unwrap_or_else(|e| unreachable!("{e}")),
            ),
            fields: FieldSet::from_bits((*f).max(1)),
        })
        .collect();
    disclosures.sort_by(|a, b| format!("{:?}", a.subject).cmp(&format!("{:?}", b.subject)));
    disclosures.dedup_by(|a, b| a.subject == b.subject);
    if i.is_multiple_of(5) {
        let group = GroupId::parse(&format!("g-{}", i % 7)).unwrap_or_else(|e| unreachable!("{e}"));
        disclosures.insert(
            0,
            Disclosure { subject: Subject::Group(group), fields: [Field::GroupName].into_iter().collect() },
        );
    }
    DisclosureRecord {
        at: Instant::from_millis(1_550_000_000_000 + (i as i64) * 1_000),
        request_id: format!("{i:016x}"),
        app: AppId::parse(&format!("app_{}", i % 3)).unwrap_or_else(|e| unreachable!("{e}")),
        developer: DeveloperId::parse(&format!("dev-{}", i % 2)).unwrap_or_else(|e| unreachable!("{e}")),
        group: GroupId::parse(&format!("g-{}", i % 7)).unwrap_or_else(|e| unreachable!("{e}")),
        token_hash: format!("{:064x}", i * 7919),
        policy_version: (i % 3) as u32 + 1,
        route: "GET /v1/groups/{id}/members".into(),
        disclosures,
    }
}

/// What a record reads back as: the token only as its id (first 64 bits of its hash), and
/// the group subject first, members in number order (as first seen).
fn as_kept(mut record: DisclosureRecord) -> DisclosureRecord {
    record.token_hash.truncate(16);
    record
}

fn read_all(dir: &Path) -> Vec<DisclosureRecord> {
    Entries::open(dir)
        .unwrap_or_else(|e| unreachable!("{e}"))
        .map(|e| e.unwrap_or_else(|e| unreachable!("{e}")).record)
        .collect()
}

fn sorted(mut record: DisclosureRecord) -> DisclosureRecord {
    record.disclosures.sort_by(|a, b| format!("{:?}", a.subject).cmp(&format!("{:?}", b.subject)));
    record
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn records_read_back_exactly(pages in prop::collection::vec((prop::collection::vec(0u32..400, 0..60), prop::collection::vec(1u16..128, 1..4)), 1..30)) {
        let dir = temp("roundtrip");
        let ledger = Ledger::open(&dir, LedgerOptions { segment_bytes: 2_000 }).unwrap_or_else(|e| unreachable!("{e}"));
        let written: Vec<DisclosureRecord> = pages.iter().enumerate().map(|(i, (m, f))| record(i as u64, m, f)).collect();
        let seqs = ledger.append_all(&written).unwrap_or_else(|e| unreachable!("{e}"));
        prop_assert_eq!(seqs, (1..=written.len() as u64).collect::<Vec<_>>());
        drop(ledger);
        let read: Vec<DisclosureRecord> = read_all(&dir).into_iter().map(sorted).collect();
        let expected: Vec<DisclosureRecord> = written.into_iter().map(as_kept).map(sorted).collect();
        prop_assert_eq!(read, expected);
        let report = verify(&dir, &[]).unwrap_or_else(|e| unreachable!("{e}"));
        prop_assert!(report.ok(), "{:?}", report.problem);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A ledger of several sealed segments and an active one.
pub(crate) fn sample(name: &str) -> (PathBuf, u64) {
    let dir = temp(name);
    let ledger =
        Ledger::open(&dir, LedgerOptions { segment_bytes: 1_500 }).unwrap_or_else(|e| unreachable!("{e}"));
    let members: Vec<u32> = (0..40).collect();
    for i in 0..40u64 {
        ledger
            .append(&record(i, &members[(i as usize % 10)..], &[3, 96]))
            .unwrap_or_else(|e| unreachable!("{e}"));
    }
    let segments = ledger.stats().segments;
    drop(ledger);
    assert!(segments >= 4, "{segments} segments");
    assert!(verify(&dir, &[]).map(|r| r.ok()).unwrap_or(false));
    (dir, segments)
}

fn segment(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:08}.seg"))
}

/// Frame boundaries of a segment file: (start, end).
fn frames(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= bytes.len() {
        let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        out.push((at, at + 4 + len + 32));
        at += 4 + len + 32;
    }
    out
}

#[test]
fn altering_the_last_frames_length_is_detected() {
    let (dir, segments) = sample("length");
    let path = segment(&dir, segments);
    let mut bytes = std::fs::read(&path).unwrap_or_default();
    let f = frames(&bytes);
    let (start, _) = f[f.len() - 1];
    bytes[start + 1] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap_or_else(|e| unreachable!("{e}"));
    assert!(problem(&dir).is_some());
}

fn problem(dir: &Path) -> Option<String> {
    verify(dir, &[]).ok().and_then(|r| r.problem).map(|p| p.to_string())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn flipping_any_byte_is_detected(which in 0usize..1000, position in any::<prop::sample::Index>(), bit in 0u8..8) {
        let (dir, _) = sample("flip");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap_or_else(|e| unreachable!("{e}"))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "seg" || x == "seal") || p.ends_with("checkpoints"))
            .collect();
        files.sort();
        let file = files[which % files.len()].clone();
        let mut bytes = std::fs::read(&file).unwrap_or_default();
        prop_assume!(!bytes.is_empty());
        let at = position.index(bytes.len());
        bytes[at] ^= 1 << bit;
        std::fs::write(&file, &bytes).unwrap_or_else(|e| unreachable!("{e}"));
        let found = problem(&dir);
        prop_assert!(found.is_some(), "flip of bit {} at byte {} of {} went unnoticed", bit, at, file.display());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn deleting_a_record_is_detected() {
    let (dir, _) = sample("delete");
    let path = segment(&dir, 2);
    let bytes = std::fs::read(&path).unwrap_or_default();
    let f = frames(&bytes);
    let (start, end) = f[f.len() / 2];
    let cut: Vec<u8> = bytes[..start].iter().chain(&bytes[end..]).copied().collect();
    std::fs::write(&path, cut).unwrap_or_else(|e| unreachable!("{e}"));
    let found = problem(&dir).unwrap_or_default();
    assert!(found.starts_with("segment 2"), "{found}");
}

#[test]
fn swapping_two_records_is_detected() {
    let (dir, _) = sample("swap");
    let path = segment(&dir, 3);
    let bytes = std::fs::read(&path).unwrap_or_default();
    let f = frames(&bytes);
    let (a, b) = (f[0], f[1]);
    let swapped: Vec<u8> =
        bytes[b.0..b.1].iter().chain(&bytes[a.0..a.1]).chain(&bytes[b.1..]).copied().collect();
    std::fs::write(&path, swapped).unwrap_or_else(|e| unreachable!("{e}"));
    let found = problem(&dir).unwrap_or_default();
    assert!(found.starts_with("segment 3") && found.contains("hash chain"), "{found}");
}

#[test]
fn truncating_a_sealed_segment_is_detected() {
    let (dir, _) = sample("truncate");
    let path = segment(&dir, 1);
    let bytes = std::fs::read(&path).unwrap_or_default();
    let f = frames(&bytes);
    // Cut at a frame boundary, so the frames left are whole and chained.
    std::fs::write(&path, &bytes[..f[f.len() - 2].1]).unwrap_or_else(|e| unreachable!("{e}"));
    let found = problem(&dir).unwrap_or_default();
    assert!(found.starts_with("segment 1") && found.contains("seal"), "{found}");
}

#[test]
fn a_missing_segment_is_detected() {
    let (dir, _) = sample("missing");
    std::fs::remove_file(segment(&dir, 2)).unwrap_or_else(|e| unreachable!("{e}"));
    let found = problem(&dir).unwrap_or_default();
    assert!(found.contains("segment 2") && found.contains("missing"), "{found}");
}

#[test]
fn a_rehashed_forgery_without_the_key_is_detected() {
    let (dir, _) = sample("forgery");
    // The forger rewrites segment 2 in another ledger that holds a different record, with a
    // valid chain from the same starting point, and copies segment and seal over. Without the
    // real key the seal's signature cannot match.
    let other = temp("forger");
    std::fs::create_dir_all(&other).unwrap_or_else(|e| unreachable!("{e}"));
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| unreachable!("{e}")).flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".seg") && name != "00000001.seg" && name != "00000002.seg" {
            continue;
        }
        if name.ends_with(".seal") || name == "checkpoints" || name == "signing.key" || name == "signing.pub"
        {
            continue;
        }
        let _ = std::fs::copy(entry.path(), other.join(&name));
    }
    // Drop segment 2's last frame and re-chain by appending through a ledger with its own key.
    let bytes = std::fs::read(other.join("00000002.seg")).unwrap_or_default();
    let f = frames(&bytes);
    std::fs::write(other.join("00000002.seg"), &bytes[..f[0].0]).unwrap_or_else(|e| unreachable!("{e}"));
    std::fs::copy(dir.join("00000001.seal"), other.join("00000001.seal"))
        .unwrap_or_else(|e| unreachable!("{e}"));
    let forger_key = other.join("signing.key");
    std::fs::write(&forger_key, format!("{}\n", "ab".repeat(32))).unwrap_or_else(|e| unreachable!("{e}"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&forger_key, std::fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| unreachable!("{e}"));
    }
    {
        let forger = Ledger::open(&other, LedgerOptions { segment_bytes: 1_500 })
            .unwrap_or_else(|e| unreachable!("{e}"));
        let members: Vec<u32> = (100..140).collect();
        let mut i = 0;
        while !other.join("00000002.seal").exists() {
            forger.append(&record(1000 + i, &members, &[3])).unwrap_or_else(|e| unreachable!("{e}"));
            i += 1;
        }
    }
    std::fs::copy(other.join("00000002.seg"), segment(&dir, 2)).unwrap_or_else(|e| unreachable!("{e}"));
    std::fs::copy(other.join("00000002.seal"), dir.join("00000002.seal"))
        .unwrap_or_else(|e| unreachable!("{e}"));
    let found = problem(&dir).unwrap_or_default();
    assert!(found.starts_with("segment 2") && found.contains("signature"), "{found}");
    let _ = std::fs::remove_dir_all(&other);
}

#[test]
fn an_auditors_checkpoint_proves_the_ledger_only_grew() {
    let dir = temp("checkpoint");
    let ledger = Ledger::open(&dir, LedgerOptions::default()).unwrap_or_else(|e| unreachable!("{e}"));
    for i in 0..5 {
        ledger.append(&record(i, &[1, 2, 3], &[3])).unwrap_or_else(|e| unreachable!("{e}"));
    }
    let kept = ledger.checkpoint().unwrap_or_else(|e| unreachable!("{e}")).to_line();
    for i in 5..9 {
        ledger.append(&record(i, &[4, 5], &[3])).unwrap_or_else(|e| unreachable!("{e}"));
    }
    drop(ledger);
    let report = verify(&dir, std::slice::from_ref(&kept)).unwrap_or_else(|e| unreachable!("{e}"));
    assert!(report.ok() && report.checkpoints == 2, "{report:?}");
    let altered = kept.replace("seq=5", "seq=4");
    let report = verify(&dir, &[altered]).unwrap_or_else(|e| unreachable!("{e}"));
    assert!(report.problem.is_some_and(|p| p.reason.contains("signature")));
}

#[test]
fn a_torn_tail_is_cut_on_open_and_everything_acknowledged_survives() {
    let dir = temp("torn");
    let ledger = Ledger::open(&dir, LedgerOptions::default()).unwrap_or_else(|e| unreachable!("{e}"));
    for i in 0..10 {
        ledger.append(&record(i, &[1, 2, 3], &[3])).unwrap_or_else(|e| unreachable!("{e}"));
    }
    drop(ledger);
    let path = segment(&dir, 1);
    let mut bytes = std::fs::read(&path).unwrap_or_default();
    let whole = bytes.len();
    // Half of a frame: a length, then fewer bytes than it promises.
    bytes.extend_from_slice(&200u32.to_le_bytes());
    bytes.extend_from_slice(&[7u8; 50]);
    std::fs::write(&path, &bytes).unwrap_or_else(|e| unreachable!("{e}"));
    let report = verify(&dir, &[]).unwrap_or_else(|e| unreachable!("{e}"));
    assert!(
        report.torn_bytes == 54 && report.problem.is_some_and(|p| p.reason.contains("not a whole record"))
    );
    let ledger = Ledger::open(&dir, LedgerOptions::default()).unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(std::fs::metadata(&path).map(|m| m.len() as usize).ok(), Some(whole));
    assert_eq!(ledger.append(&record(10, &[9], &[3])).ok(), Some(11));
    drop(ledger);
    assert_eq!(read_all(&dir).len(), 11);
    assert!(verify(&dir, &[]).map(|r| r.ok()).unwrap_or(false));
}

#[test]
fn a_broken_chain_in_the_middle_refuses_to_open() {
    let (dir, _) = sample("refuse");
    let path = segment(&dir, 2);
    let mut bytes = std::fs::read(&path).unwrap_or_default();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap_or_else(|e| unreachable!("{e}"));
    let opened = Ledger::open(&dir, LedgerOptions { segment_bytes: 1_500 });
    assert!(opened.is_err(), "a corrupt ledger must not be appended to");
}

#[test]
fn concurrent_appends_share_syncs_and_lose_nothing() {
    let dir = temp("concurrent");
    let ledger = Arc::new(
        Ledger::open(&dir, LedgerOptions { segment_bytes: 20_000 }).unwrap_or_else(|e| unreachable!("{e}")),
    );
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let ledger = ledger.clone();
            std::thread::spawn(move || {
                (0..50u64)
                    .map(|i| ledger.append(&record(t * 1000 + i, &[t as u32, i as u32], &[3])).unwrap_or(0))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = threads.into_iter().flat_map(|t| t.join().unwrap_or_default()).collect();
    seqs.sort();
    assert_eq!(seqs, (1..=400).collect::<Vec<_>>());
    // Group commit: appends that arrive while a sync runs share the next one.
    let syncs = ledger.stats().syncs;
    assert!(syncs > 0 && syncs < 400, "{syncs} syncs for 400 concurrent appends: none were shared");
    println!("400 appends from 8 threads: {syncs} fdatasyncs ({:.1} records per sync)", 400.0 / syncs as f64);
    drop(ledger);
    let report = verify(&dir, &[]).unwrap_or_else(|e| unreachable!("{e}"));
    assert!(report.ok() && report.records == 400, "{report:?}");
    let ids: std::collections::HashSet<String> = read_all(&dir).into_iter().map(|r| r.request_id).collect();
    assert_eq!(ids.len(), 400);
}

/// The console's ledger health shows the last checkpoint: the newest line signed by the
/// ledger's key, never a forged line after it.
#[test]
fn the_last_checkpoint_is_the_newest_line_the_ledger_signed() {
    let dir = temp("last-checkpoint");
    let ledger = Ledger::open(&dir, LedgerOptions::default()).unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(consentry_ledger::last_checkpoint(&dir).map(|c| c.map(|c| c.seq)).ok(), Some(None));
    ledger.append(&record(1, &[1, 2], &[3])).unwrap_or_else(|e| unreachable!("{e}"));
    let first = ledger.checkpoint().unwrap_or_else(|e| unreachable!("{e}"));
    ledger.append(&record(2, &[1], &[1])).unwrap_or_else(|e| unreachable!("{e}"));
    let second = ledger.checkpoint().unwrap_or_else(|e| unreachable!("{e}"));
    assert!(second.seq > first.seq);
    let last = consentry_ledger::last_checkpoint(&dir).unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(last.map(|c| c.to_line()), Some(second.to_line()));
    // A line claiming more records, signed by no one the ledger knows, is passed over.
    let forged = second.to_line().replace(&format!("seq={}", second.seq), &format!("seq={}", second.seq + 9));
    let path = dir.join("checkpoints");
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    text.push_str(&forged);
    text.push('\n');
    std::fs::write(&path, text).unwrap_or_else(|e| unreachable!("{e}"));
    let last = consentry_ledger::last_checkpoint(&dir).unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(last.map(|c| c.seq), Some(second.seq));
    let _ = std::fs::remove_dir_all(&dir);
}
