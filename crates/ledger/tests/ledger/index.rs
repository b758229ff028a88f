//! The member index answers exactly what a full scan answers, page by page, across streams and
//! sealed and open segments; an index file that is damaged, short, missing or another
//! segment's gives the right answer still, and is rebuilt.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use consentry_ledger::{scan_member_history, Ledger, LedgerOptions, MemberHistory, MemberIndex, MemberQuery};
use consentry_types::{Instant, MemberId, NodeId};
use proptest::prelude::*;

use super::{record, temp};

fn member(n: u32) -> MemberId {
    MemberId::parse(&format!("m-{n:05}")).unwrap_or_else(|e| unreachable!("{e}"))
}

fn node(text: &str) -> NodeId {
    NodeId::parse(text).unwrap_or_else(|e| unreachable!("{e}"))
}

/// Every page of `member`'s history in the window, through the index and by the scan, which
/// must be equal page by page; returns every disclosure.
fn pages_agree(
    index: &mut MemberIndex,
    root: &Path,
    member: &MemberId,
    limit: usize,
    window: (Option<Instant>, Option<Instant>),
) -> Vec<(String, u64)> {
    let mut query = MemberQuery { from: window.0, to: window.1, after: BTreeMap::new(), limit };
    let mut all = Vec::new();
    for _ in 0..10_000 {
        let scanned = scan_member_history(root, member, &query).unwrap_or_else(|e| unreachable!("{e}"));
        let indexed = index.history(member, &query).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(indexed, scanned, "member {member}, query {query:?}");
        all.extend(scanned.disclosures.iter().map(|d| (d.stream.clone(), d.seq)));
        if !scanned.more {
            return all;
        }
        query.after = scanned.next_after(&query);
    }
    unreachable!("paging did not end")
}

/// A ledger of one stream with several sealed segments and an open one.
fn sealed_ledger(name: &str) -> PathBuf {
    let root = temp(name);
    let ledger = Ledger::open_stream(&root, &node("web-1"), LedgerOptions { segment_bytes: 1_500 })
        .unwrap_or_else(|e| unreachable!("{e}"));
    for i in 0..120u64 {
        let members: Vec<u32> = (0..6).map(|k| ((i * 7 + k * 13) % 40) as u32).collect();
        ledger.append(&record(i, &members, &[3, 1])).unwrap_or_else(|e| unreachable!("{e}"));
    }
    assert!(ledger.stats().segments >= 4, "several sealed segments");
    drop(ledger);
    root
}

fn stream_dir(root: &Path) -> PathBuf {
    root.join("web-1")
}

fn index_file(root: &Path, segment: u64) -> PathBuf {
    stream_dir(root).join(format!("{segment:08}.members"))
}

/// The index's answer equals the scan's for members 0..40 (and one never disclosed).
fn answers_right(index: &mut MemberIndex, root: &Path) {
    for m in (0..40).chain([999]) {
        pages_agree(index, root, &member(m), 7, (None, None));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random ledgers of one to three streams (instants jittered, so a stream is not in time
    /// order), small segments so that many are sealed, appended in batches with lookups in
    /// between (the open segment's index grows); every page of every member, in random windows
    /// and page sizes, is the scan's.
    #[test]
    fn index_answers_equal_the_full_scan(
        streams in 1usize..4,
        batches in prop::collection::vec(prop::collection::vec((prop::collection::vec(0u32..30, 0..8), 0i64..5_000, 0usize..3), 1..25), 1..5),
        segment_bytes in 400u64..3_000,
        limit in 1usize..6,
        window in (0i64..200_000, 0i64..200_000),
    ) {
        let root = temp("index-random");
        let ledgers: Vec<Ledger> = (0..streams)
            .map(|s| Ledger::open_stream(&root, &node(&format!("web-{s}")), LedgerOptions { segment_bytes })
                .unwrap_or_else(|e| unreachable!("{e}")))
            .collect();
        let mut index = MemberIndex::open(&root);
        let mut i = 0u64;
        for batch in &batches {
            for (members, jitter, stream) in batch {
                let mut r = record(i, members, &[3, 1, 64]);
                r.at = Instant::from_millis(1_600_000_000_000 + 1_000 * i as i64 + jitter);
                ledgers[stream % streams].append(&r).unwrap_or_else(|e| unreachable!("{e}"));
                i += 1;
            }
            for m in [0u32, 1, 5, 29, 31] {
                let from = Instant::from_millis(1_600_000_000_000 + window.0.min(window.1));
                let to = Instant::from_millis(1_600_000_000_000 + window.0.max(window.1));
                pages_agree(&mut index, &root, &member(m), limit, (None, None));
                pages_agree(&mut index, &root, &member(m), limit, (Some(from), Some(to)));
            }
        }
        drop(ledgers);
        // And from a fresh index, once the writers closed (every sealed segment's file built).
        let mut fresh = MemberIndex::open(&root);
        for m in 0..31u32 {
            pages_agree(&mut fresh, &root, &member(m), limit, (None, None));
        }
        let _ = std::fs::remove_dir_all(&root);
    }
}

#[test]
fn the_writer_builds_each_sealed_segments_index_and_readers_only_load_them() {
    let root = sealed_ledger("index-built");
    let sealed: Vec<u64> =
        (1..).take_while(|n| stream_dir(&root).join(format!("{n:08}.seal")).exists()).collect();
    for n in &sealed {
        assert!(index_file(&root, *n).exists(), "segment {n} has its index once sealed");
    }
    let mut index = MemberIndex::open(&root);
    answers_right(&mut index, &root);
    let stats = index.stats();
    assert_eq!((stats.loaded, stats.built, stats.rebuilt), (sealed.len() as u64, 0, 0), "{stats:?}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_member_with_no_disclosures_has_an_empty_history() {
    let root = sealed_ledger("index-nobody");
    let mut index = MemberIndex::open(&root);
    let page =
        index.history(&member(12_345), &MemberQuery::first(100)).unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(page, MemberHistory::default());
    // A ledger root with no stream at all.
    let empty = temp("index-empty");
    let page = MemberIndex::open(&empty).history(&member(1), &MemberQuery::first(10));
    assert_eq!(page.unwrap_or_else(|e| unreachable!("{e}")), MemberHistory::default());
    let _ = std::fs::remove_dir_all(&root);
}

/// Damages segment 2's index file with `damage`, then checks that a fresh index and one that
/// had loaded the file before both answer right, and that the file is sound again after.
fn survives(name: &str, damage: impl Fn(&Path)) {
    let root = sealed_ledger(name);
    let path = index_file(&root, 2);
    let original = std::fs::read(&path).unwrap_or_else(|e| unreachable!("{e}"));
    let mut loaded = MemberIndex::open(&root);
    answers_right(&mut loaded, &root);
    damage(&path);
    let mut fresh = MemberIndex::open(&root);
    answers_right(&mut fresh, &root);
    assert!(fresh.stats().rebuilt + fresh.stats().built >= 1, "{:?}", fresh.stats());
    assert_eq!(std::fs::read(&path).ok(), Some(original.clone()), "the index file is repaired");
    damage(&path);
    answers_right(&mut loaded, &root);
    assert!(loaded.stats().rebuilt + loaded.stats().built >= 1, "{:?}", loaded.stats());
    assert_eq!(std::fs::read(&path).ok(), Some(original), "the index file is repaired");
    let _ = std::fs::remove_dir_all(&root);
}

fn flip(path: &Path, at: impl Fn(usize) -> usize) {
    let mut bytes = std::fs::read(path).unwrap_or_else(|e| unreachable!("{e}"));
    let position = at(bytes.len());
    bytes[position] ^= 0x10;
    std::fs::write(path, bytes).unwrap_or_else(|e| unreachable!("{e}"));
}

#[test]
fn a_byte_flipped_in_the_index_header_still_answers_right() {
    survives("index-flip-header", |p| flip(p, |_| 20));
}

#[test]
fn a_byte_flipped_in_the_index_tables_still_answers_right() {
    survives("index-flip-tables", |p| flip(p, |len| len / 2));
}

#[test]
fn a_byte_flipped_in_the_postings_still_answers_right() {
    survives("index-flip-postings", |p| flip(p, |len| len - 40));
}

#[test]
fn a_byte_flipped_in_the_checksum_still_answers_right() {
    survives("index-flip-checksum", |p| flip(p, |len| len - 1));
}

#[test]
fn a_truncated_index_still_answers_right() {
    survives("index-truncated", |p| {
        let bytes = std::fs::read(p).unwrap_or_else(|e| unreachable!("{e}"));
        std::fs::write(p, &bytes[..bytes.len() / 3]).unwrap_or_else(|e| unreachable!("{e}"));
    });
}

#[test]
fn a_deleted_index_still_answers_right() {
    survives("index-deleted", |p| std::fs::remove_file(p).unwrap_or_else(|e| unreachable!("{e}")));
}

#[test]
fn another_segments_index_in_its_place_still_answers_right() {
    survives("index-swapped", |p| {
        let other = p.with_file_name("00000003.members");
        std::fs::copy(&other, p).unwrap_or_else(|e| unreachable!("{e}"));
    });
}

#[test]
fn every_byte_flipped_in_an_index_still_answers_right() {
    let root = sealed_ledger("index-every-byte");
    let path = index_file(&root, 1);
    let original = std::fs::read(&path).unwrap_or_else(|e| unreachable!("{e}"));
    for at in 0..original.len() {
        let mut bytes = original.clone();
        bytes[at] ^= 0x01;
        std::fs::write(&path, bytes).unwrap_or_else(|e| unreachable!("{e}"));
        let mut index = MemberIndex::open(&root);
        for m in [0u32, 7, 13, 39] {
            let query = MemberQuery::first(1_000);
            let indexed = index.history(&member(m), &query).unwrap_or_else(|e| unreachable!("{e}"));
            let scanned =
                scan_member_history(&root, &member(m), &query).unwrap_or_else(|e| unreachable!("{e}"));
            assert_eq!(indexed, scanned, "byte {at} flipped");
        }
        assert_eq!(index.stats().rebuilt, 1, "byte {at} flipped: {:?}", index.stats());
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn an_index_whose_records_do_not_name_the_member_is_rebuilt() {
    // A self-consistent index (checksum recomputed) that sends a lookup to the wrong records:
    // every record found through it is checked in the segment, so it is caught and rebuilt.
    let root = sealed_ledger("index-lying");
    let path = index_file(&root, 2);
    let original = std::fs::read(&path).unwrap_or_else(|e| unreachable!("{e}"));
    let mut lying = original.clone();
    let body = lying.len() - 32;
    // The record table's offsets: point every record at the segment's first frame.
    let header = 8 + 5 * 8 + 64 + 4 * 8;
    let count = |i: usize| {
        u64::from_le_bytes(lying[header + 8 * i..header + 8 * i + 8].try_into().unwrap_or([0; 8])) as usize
    };
    let records_at = 8 + 5 * 8 + 64 + 4 * 8 + 5 * 8 + 16 * count(0) + 16 * count(1);
    for r in 0..count(2) {
        lying[records_at + 16 * r..records_at + 16 * r + 8].copy_from_slice(&0u64.to_le_bytes());
    }
    let checksum = *blake3::hash(&lying[..body]).as_bytes();
    lying[body..].copy_from_slice(&checksum);
    std::fs::write(&path, &lying).unwrap_or_else(|e| unreachable!("{e}"));
    let mut index = MemberIndex::open(&root);
    answers_right(&mut index, &root);
    assert_eq!(index.stats().rebuilt, 1, "{:?}", index.stats());
    assert_eq!(std::fs::read(&path).ok(), Some(original));
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_damaged_segment_is_an_error_through_the_index_as_by_the_scan() {
    let root = sealed_ledger("index-damaged-segment");
    let segment = stream_dir(&root).join("00000002.seg");
    let mut bytes = std::fs::read(&segment).unwrap_or_else(|e| unreachable!("{e}"));
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&segment, bytes).unwrap_or_else(|e| unreachable!("{e}"));
    let query = MemberQuery::first(1_000);
    assert!(scan_member_history(&root, &member(0), &query).is_err());
    // Whether the index was loaded before or not, a member whose records are in the damaged
    // segment is an error, never a silent gap.
    let mut index = MemberIndex::open(&root);
    let failed = (0..40).map(|m| index.history(&member(m), &query)).filter(Result::is_err).count();
    assert!(failed > 0, "some member's history runs through the damaged frame");
    let _ = std::fs::remove_dir_all(&root);
}
