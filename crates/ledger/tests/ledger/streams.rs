//! A ledger of several streams: one per node, written at the same time, read back as one,
//! verified stream by stream; one writer per stream; a single-node ledger adopted unchanged.

use std::collections::BTreeMap;

use consentry_ledger::{
    adopt_single_node_ledger, streams, verify_all, Entries, Ledger, LedgerError, LedgerOptions, RawEntries,
};
use consentry_types::{DisclosureRecord, Instant, NodeId, Subject};

use super::{as_kept, record, sorted, temp};

fn node(text: &str) -> NodeId {
    NodeId::parse(text).unwrap_or_else(|e| unreachable!("{e}"))
}

fn small() -> LedgerOptions {
    LedgerOptions { segment_bytes: 2_000 }
}

/// Record `i` of a node, at `1_000 * i + offset` ms: two nodes with offsets 0 and 500 interleave.
fn at(i: u64, offset: i64) -> DisclosureRecord {
    let mut r = record(i, &[(i % 50) as u32, 77, 400 + (i % 3) as u32], &[3]);
    r.at = Instant::from_millis(1_600_000_000_000 + 1_000 * i as i64 + offset);
    r.request_id = format!("{offset}-{i}");
    r
}

/// Two nodes append 300 records each at the same time, their instants interleaved.
fn two_streams(name: &str) -> (std::path::PathBuf, Vec<DisclosureRecord>, Vec<DisclosureRecord>) {
    let root = temp(name);
    let a = Ledger::open_stream(&root, &node("web-a"), small()).unwrap_or_else(|e| unreachable!("{e}"));
    let b = Ledger::open_stream(&root, &node("web-b"), small()).unwrap_or_else(|e| unreachable!("{e}"));
    let (written_a, written_b): (Vec<_>, Vec<_>) =
        ((0..300).map(|i| at(i, 0)).collect(), (0..300).map(|i| at(i, 500)).collect());
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for r in &written_a {
                a.append(r).unwrap_or_else(|e| unreachable!("{e}"));
            }
        });
        scope.spawn(|| {
            for r in &written_b {
                b.append(r).unwrap_or_else(|e| unreachable!("{e}"));
            }
        });
    });
    assert!(a.stats().segments > 1 && b.stats().segments > 1, "several sealed segments each");
    a.checkpoint().unwrap_or_else(|e| unreachable!("{e}"));
    b.checkpoint().unwrap_or_else(|e| unreachable!("{e}"));
    (root, written_a, written_b)
}

#[test]
fn two_streams_written_at_once_read_back_as_one_ledger_merged_by_instant() {
    let (root, written_a, written_b) = two_streams("merged");
    let entries: Vec<_> = Entries::open(&root)
        .unwrap_or_else(|e| unreachable!("{e}"))
        .map(|e| e.unwrap_or_else(|e| unreachable!("{e}")))
        .collect();
    assert_eq!(entries.len(), 600);
    // Merged by instant, and each stream in its own order, every record exactly once.
    assert!(entries.windows(2).all(|w| w[0].record.at <= w[1].record.at), "not merged by instant");
    let mut by_node: BTreeMap<String, Vec<(u64, DisclosureRecord)>> = BTreeMap::new();
    for entry in &entries {
        let name = entry.node.as_ref().map(|n| n.to_string()).unwrap_or_default();
        by_node.entry(name).or_default().push((entry.seq, sorted(entry.record.clone())));
    }
    let expect = |written: &[DisclosureRecord]| -> Vec<(u64, DisclosureRecord)> {
        written.iter().cloned().enumerate().map(|(i, r)| (i as u64 + 1, sorted(as_kept(r)))).collect()
    };
    assert_eq!(by_node.get("web-a"), Some(&expect(&written_a)));
    assert_eq!(by_node.get("web-b"), Some(&expect(&written_b)));
    // The raw reader gives the same records, with one number per identity across streams.
    let mut raw = RawEntries::open(&root).unwrap_or_else(|e| unreachable!("{e}"));
    let mut out = consentry_ledger::RawRecord::default();
    let mut seen = 0;
    let mut numbers: BTreeMap<String, u64> = BTreeMap::new();
    while raw.next_into(&mut out).unwrap_or_else(|e| unreachable!("{e}")) {
        let entry = &entries[seen];
        assert_eq!((out.seq, out.at), (entry.seq, entry.record.at));
        assert_eq!(raw.name(out.app), Some(entry.record.app.as_str()));
        assert_eq!(raw.name(out.group), Some(entry.record.group.as_str()));
        let members: Vec<(String, u16)> =
            out.members.iter().map(|(n, f)| (raw.name(*n).unwrap_or("?").to_string(), *f)).collect();
        let mut expected: Vec<(String, u16)> = entry
            .record
            .disclosures
            .iter()
            .filter_map(|d| match &d.subject {
                Subject::Member(m) => Some((m.to_string(), d.fields.bits())),
                Subject::Group(_) => None,
            })
            .collect();
        let mut sorted_members = members.clone();
        sorted_members.sort();
        expected.sort();
        assert_eq!(sorted_members, expected, "record {seen}");
        assert!(out.members.windows(2).all(|w| w[0].0 < w[1].0), "members in number order");
        for (n, _) in &out.members {
            let name = raw.name(*n).unwrap_or("?").to_string();
            assert_eq!(*numbers.entry(name).or_insert(*n), *n, "one identity, one number");
        }
        seen += 1;
    }
    assert_eq!(seen, 600);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_stream_is_written_by_one_process_at_a_time() {
    let root = temp("one-writer");
    let first = Ledger::open_stream(&root, &node("web-1"), small()).unwrap_or_else(|e| unreachable!("{e}"));
    let second = Ledger::open_stream(&root, &node("web-1"), small());
    match second {
        Err(LedgerError::Locked(message)) => {
            assert!(
                message.contains("node web-1") && message.contains(&format!("pid {}", std::process::id())),
                "{message}"
            )
        }
        Err(other) => unreachable!("wrong refusal: {other}"),
        Ok(_) => unreachable!("two writers of one stream"),
    }
    // Another node's stream opens meanwhile; and once the first lets go, the stream opens again.
    let other = Ledger::open_stream(&root, &node("web-2"), small());
    assert!(other.is_ok());
    first.append(&at(1, 0)).unwrap_or_else(|e| unreachable!("{e}"));
    drop(first);
    let again = Ledger::open_stream(&root, &node("web-1"), small()).unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(again.append(&at(2, 0)).ok(), Some(2));
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn verify_all_checks_every_stream_and_says_which_one_is_damaged() {
    let (root, _, _) = two_streams("verify-all");
    let report = verify_all(&root, &[]).unwrap_or_else(|e| unreachable!("{e}"));
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.streams.iter().map(|s| s.stream.name()).collect::<Vec<_>>(), ["web-a", "web-b"]);
    assert_eq!(report.streams.iter().map(|s| s.report.records).sum::<u64>(), 600);
    // Checkpoints name their node.
    let kept = std::fs::read_to_string(root.join("web-b").join("checkpoints")).unwrap_or_default();
    let line = kept.lines().last().unwrap_or_default().to_string();
    assert!(line.starts_with("checkpoint v2 node=web-b seq="), "{line}");
    // An auditor's checkpoint goes to the stream it names; one of a node with no stream is reported.
    assert!(verify_all(&root, std::slice::from_ref(&line))
        .is_ok_and(|r| r.ok() && r.streams[1].report.checkpoints > 1));
    let stranger = line.replace("node=web-b", "node=web-c");
    let report = verify_all(&root, &[stranger]).unwrap_or_else(|e| unreachable!("{e}"));
    assert!(!report.ok() && report.unmatched[0].contains("no stream of node web-c"), "{report:?}");
    // A byte flipped in web-b's first segment: web-b fails, web-a still verifies.
    let segment = root.join("web-b").join("00000001.seg");
    let mut bytes = std::fs::read(&segment).unwrap_or_default();
    bytes[100] ^= 0x10;
    std::fs::write(&segment, bytes).unwrap_or_else(|e| unreachable!("{e}"));
    let report = verify_all(&root, &[]).unwrap_or_else(|e| unreachable!("{e}"));
    assert!(report.streams[0].report.ok());
    let problem = report.streams[1].report.problem.as_ref().map(|p| (p.segment, p.reason.clone()));
    assert!(matches!(&problem, Some((1, _))), "{problem:?}");
    // Every reader refuses rather than skip the damaged stream.
    assert!(Entries::open(&root).unwrap_or_else(|e| unreachable!("{e}")).any(|e| e.is_err()));
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_stream_under_another_nodes_name_is_detected() {
    let (root, _, _) = two_streams("swapped");
    std::fs::rename(root.join("web-a"), root.join("tmp")).unwrap_or_else(|e| unreachable!("{e}"));
    std::fs::rename(root.join("web-b"), root.join("web-a")).unwrap_or_else(|e| unreachable!("{e}"));
    std::fs::rename(root.join("tmp"), root.join("web-b")).unwrap_or_else(|e| unreachable!("{e}"));
    let report = verify_all(&root, &[]).unwrap_or_else(|e| unreachable!("{e}"));
    let reason = report.streams[0].report.problem.as_ref().map(|p| p.reason.clone()).unwrap_or_default();
    assert!(reason.contains("checkpoint of node web-b is in the stream of web-a"), "{reason}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_single_node_ledger_becomes_the_stream_of_the_first_node_unchanged() {
    let root = temp("adopt");
    let legacy = Ledger::open(&root, small()).unwrap_or_else(|e| unreachable!("{e}"));
    let written: Vec<DisclosureRecord> = (0..60).map(|i| at(i, 0)).collect();
    legacy.append_all(&written).unwrap_or_else(|e| unreachable!("{e}"));
    let auditors = legacy.checkpoint().unwrap_or_else(|e| unreachable!("{e}")).to_line();
    assert!(auditors.starts_with("checkpoint v1 seq=60"), "{auditors}");
    drop(legacy);
    let before: Vec<_> = Entries::open(&root)
        .unwrap_or_else(|e| unreachable!("{e}"))
        .map(|e| e.map(|e| (e.seq, e.record)).ok())
        .collect();
    assert_eq!(streams(&root).map(|s| s.len()).ok(), Some(1));
    let files_before = names_in(&root);
    // The first node to open a stream adopts it, and says what moved.
    let web1 = Ledger::open_stream(&root, &node("web-1"), small()).unwrap_or_else(|e| unreachable!("{e}"));
    let adopted = web1.adopted().cloned().unwrap_or_else(|| unreachable!("not adopted"));
    assert_eq!(adopted.node, node("web-1"));
    assert!(
        adopted.moved.contains(&"00000001.seg".to_string())
            && adopted.moved.contains(&"signing.key".to_string())
    );
    // Every file moved as it was, and nothing else is left of it in the root.
    for name in files_before.iter().filter(|n| n.as_str() != "writer.lock") {
        assert!(root.join("web-1").join(name).exists(), "{name} lost");
    }
    assert_eq!(
        streams(&root).map(|s| s.iter().map(|s| s.name()).collect::<Vec<_>>()).ok(),
        Some(vec!["web-1".to_string()])
    );
    // The same records, now web-1's; its chain goes on; the auditor's old checkpoint still holds.
    assert_eq!(web1.append(&at(60, 0)).ok(), Some(61));
    let after: Vec<_> = Entries::open(&root)
        .unwrap_or_else(|e| unreachable!("{e}"))
        .map(|e| e.map(|e| (e.seq, e.record)).ok())
        .collect();
    assert_eq!(after[..60], before[..]);
    assert_eq!(after.len(), 61);
    let new_line = web1.checkpoint().unwrap_or_else(|e| unreachable!("{e}")).to_line();
    assert!(new_line.starts_with("checkpoint v2 node=web-1 seq=61"), "{new_line}");
    let report = verify_all(&root, &[auditors, new_line]).unwrap_or_else(|e| unreachable!("{e}"));
    assert!(report.ok() && report.streams[0].report.checkpoints >= 4, "{report:?}");
    // A second node gets a stream of its own; nothing is adopted twice.
    let web2 = Ledger::open_stream(&root, &node("web-2"), small()).unwrap_or_else(|e| unreachable!("{e}"));
    assert!(web2.adopted().is_none());
    let _ = std::fs::remove_dir_all(&root);
}

fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn an_adoption_a_crash_cut_short_is_finished_for_the_node_it_began_for() {
    let root = temp("adopt-crash");
    let legacy = Ledger::open(&root, small()).unwrap_or_else(|e| unreachable!("{e}"));
    legacy.append_all(&(0..60).map(|i| at(i, 0)).collect::<Vec<_>>()).unwrap_or_else(|e| unreachable!("{e}"));
    drop(legacy);
    // As a crash would leave it: the staging directory with some of the files.
    let staging = root.join(".adopting-web-1");
    std::fs::create_dir(&staging).unwrap_or_else(|e| unreachable!("{e}"));
    for name in ["00000001.seg", "00000001.seal", "signing.key"] {
        std::fs::rename(root.join(name), staging.join(name)).unwrap_or_else(|e| unreachable!("{e}"));
    }
    // Another node starts first: it finishes web-1's adoption and opens its own stream.
    let web2 = Ledger::open_stream(&root, &node("web-2"), small()).unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(web2.adopted().map(|a| a.node.to_string()), Some("web-1".to_string()));
    let report = verify_all(&root, &[]).unwrap_or_else(|e| unreachable!("{e}"));
    assert!(report.ok(), "{report:?}");
    assert_eq!(
        report.streams.iter().map(|s| (s.stream.name(), s.report.records)).collect::<Vec<_>>(),
        [("web-1".to_string(), 60), ("web-2".to_string(), 0)]
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_single_node_ledger_being_written_is_not_adopted() {
    let root = temp("adopt-busy");
    let legacy = Ledger::open(&root, small()).unwrap_or_else(|e| unreachable!("{e}"));
    legacy.append(&at(0, 0)).unwrap_or_else(|e| unreachable!("{e}"));
    let before = names_in(&root);
    assert!(matches!(adopt_single_node_ledger(&root, &node("web-1")), Err(LedgerError::Locked(_))));
    assert!(matches!(Ledger::open_stream(&root, &node("web-1"), small()), Err(LedgerError::Locked(_))));
    let mut after = names_in(&root);
    after.retain(|n| n != "root.lock");
    assert_eq!(after, before, "nothing moved");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_node_that_has_a_stream_does_not_adopt_a_second_chain() {
    let root = temp("adopt-two-chains");
    drop(Ledger::open_stream(&root, &node("web-1"), small()).map(|l| l.append(&at(0, 0))));
    let legacy = Ledger::open(&root, small()).unwrap_or_else(|e| unreachable!("{e}"));
    legacy.append(&at(0, 0)).unwrap_or_else(|e| unreachable!("{e}"));
    drop(legacy);
    let refused =
        Ledger::open_stream(&root, &node("web-1"), small()).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(refused.contains("two chains cannot become one"), "{refused}");
    assert!(root.join("00000001.seg").exists());
    // Readers see both, the single-node stream first.
    assert_eq!(
        streams(&root).map(|s| s.iter().map(|s| s.name()).collect::<Vec<_>>()).ok(),
        Some(vec!["single-node".to_string(), "web-1".to_string()])
    );
    assert_eq!(Entries::open(&root).map(|e| e.count()).ok(), Some(2));
    let _ = std::fs::remove_dir_all(&root);
}
