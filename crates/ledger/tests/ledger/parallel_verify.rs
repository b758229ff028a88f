//! `verify` on several threads gives the one-thread verdict: the same counts on a sound
//! ledger, and the same problem named, stream by stream, on a damaged one.

use std::path::{Path, PathBuf};

use consentry_ledger::{verify_all_with, Ledger, LedgerOptions, LedgerReport};
use consentry_types::NodeId;
use proptest::prelude::*;

use super::{record, temp};

/// Two streams of several sealed segments each, with checkpoints.
fn two_streams(name: &str) -> PathBuf {
    let root = temp(name);
    for (s, node) in ["web-a", "web-b"].into_iter().enumerate() {
        let node = NodeId::parse(node).unwrap_or_else(|e| unreachable!("{e}"));
        let ledger = Ledger::open_stream(&root, &node, LedgerOptions { segment_bytes: 1_200 })
            .unwrap_or_else(|e| unreachable!("{e}"));
        for i in 0..80u64 {
            let members: Vec<u32> = (0..5).map(|k| ((i * 3 + k * 11 + s as u64) % 60) as u32).collect();
            ledger.append(&record(i, &members, &[3, 1])).unwrap_or_else(|e| unreachable!("{e}"));
            if i % 25 == 0 {
                ledger.checkpoint().unwrap_or_else(|e| unreachable!("{e}"));
            }
        }
        assert!(ledger.stats().segments >= 4);
    }
    root
}

/// A stream's verdict: its name, segments, records, disclosures, bytes, checkpoints, problem.
type Verdict = (String, u64, u64, u64, u64, u64, Option<String>);

/// What a verdict says, without timings.
fn verdict(report: &LedgerReport) -> Vec<Verdict> {
    report
        .streams
        .iter()
        .map(|s| {
            let r = &s.report;
            (
                s.stream.name(),
                r.segments,
                r.records,
                r.disclosures,
                r.bytes,
                r.checkpoints,
                r.problem.as_ref().map(|p| p.to_string()),
            )
        })
        .collect()
}

fn both(root: &Path) -> (LedgerReport, LedgerReport) {
    let one = verify_all_with(root, &[], 1).unwrap_or_else(|e| unreachable!("{e}"));
    let three = verify_all_with(root, &[], 3).unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(three.threads, 3);
    (one, three)
}

#[test]
fn several_threads_give_the_one_thread_verdict_on_a_sound_ledger() {
    let root = two_streams("parallel-sound");
    let (one, three) = both(&root);
    assert!(one.ok() && three.ok(), "{:?}", verdict(&one));
    assert_eq!(verdict(&one), verdict(&three));
    assert!(three.streams.iter().all(|s| s.report.checkpoints > 0));
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_damaged_segment_is_named_the_same_on_several_threads() {
    let root = two_streams("parallel-damaged");
    let segment = root.join("web-b").join("00000002.seg");
    let mut bytes = std::fs::read(&segment).unwrap_or_else(|e| unreachable!("{e}"));
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x04;
    std::fs::write(&segment, bytes).unwrap_or_else(|e| unreachable!("{e}"));
    let (one, three) = both(&root);
    assert!(!one.ok());
    assert_eq!(verdict(&one), verdict(&three));
    let problem = three.streams[1].report.problem.as_ref().map(|p| p.segment);
    assert_eq!(problem, Some(2), "{:?}", verdict(&three));
    assert!(three.streams[0].report.ok(), "the other stream is sound");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_missing_segment_and_a_deleted_seal_are_named_the_same_on_several_threads() {
    let root = two_streams("parallel-missing");
    std::fs::remove_file(root.join("web-a").join("00000002.seg")).unwrap_or_else(|e| unreachable!("{e}"));
    std::fs::remove_file(root.join("web-b").join("00000003.seal")).unwrap_or_else(|e| unreachable!("{e}"));
    let (one, three) = both(&root);
    assert!(one.streams.iter().all(|s| !s.report.ok()));
    assert_eq!(verdict(&one), verdict(&three));
    let _ = std::fs::remove_dir_all(&root);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    /// A bit flipped anywhere in any segment, seal or checkpoints file of either stream.
    #[test]
    fn any_flipped_bit_is_named_the_same_on_several_threads(file in any::<prop::sample::Index>(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let root = two_streams("parallel-flip");
        let mut files: Vec<PathBuf> = ["web-a", "web-b"]
            .iter()
            .flat_map(|s| std::fs::read_dir(root.join(s)).into_iter().flatten().flatten().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "seg" || e == "seal") || p.ends_with("checkpoints"))
            .collect();
        files.sort();
        let path = file.get(&files);
        let mut bytes = std::fs::read(path).unwrap_or_else(|e| unreachable!("{e}"));
        if !bytes.is_empty() {
            let position = at.index(bytes.len());
            bytes[position] ^= 1 << bit;
            std::fs::write(path, bytes).unwrap_or_else(|e| unreachable!("{e}"));
        }
        let (one, three) = both(&root);
        prop_assert_eq!(verdict(&one), verdict(&three));
        let _ = std::fs::remove_dir_all(&root);
    }
}
