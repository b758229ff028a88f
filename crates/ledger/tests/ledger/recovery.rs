//! Recovery on open: only a torn tail is cut; any other damage refuses and changes no file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use consentry_ledger::{Entries, Ledger, LedgerOptions};

use super::{frames, record, segment, temp};

/// Every file under the ledger directory with its bytes, to show that a refusal changed nothing.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path.clone());
                out.insert(path, Vec::new());
            } else {
                out.insert(path.clone(), std::fs::read(&path).unwrap_or_default());
            }
        }
    }
    out
}

/// Puts the directory back exactly as `snapshot` saw it.
fn restore(dir: &Path, saved: &BTreeMap<PathBuf, Vec<u8>>) {
    for path in snapshot(dir).keys() {
        if !saved.contains_key(path) && path.is_file() {
            std::fs::remove_file(path).unwrap_or_else(|e| unreachable!("{e}"));
        }
    }
    for (path, bytes) in saved {
        if !path.is_dir() && std::fs::read(path).ok().as_ref() != Some(bytes) {
            overwrite(path, bytes);
        }
    }
}

/// Writes `bytes` over a file in place (no truncation first, which ext4 answers with a
/// flush on close that makes thousands of rewrites slow), then cuts it to their length.
fn overwrite(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap_or_else(|e| unreachable!("{e}"));
    file.write_all(bytes)
        .and_then(|_| file.set_len(bytes.len() as u64))
        .unwrap_or_else(|e| unreachable!("{e}"));
}

fn request_ids(dir: &Path) -> Result<Vec<String>, String> {
    Entries::open(dir)
        .map_err(|e| e.to_string())?
        .map(|e| e.map(|e| e.record.request_id).map_err(|e| e.to_string()))
        .collect()
}

/// A ledger of one active segment holding `n` acknowledged records (23 as in issue 8).
fn active_only(name: &str, n: u64) -> (PathBuf, Vec<String>) {
    let dir = temp(name);
    let ledger = Ledger::open(&dir, LedgerOptions::default()).unwrap_or_else(|e| unreachable!("{e}"));
    let mut acknowledged = Vec::new();
    for i in 0..n {
        let record = record(i, &[i as u32 % 7, 10 + i as u32, 40], &[3, 96]);
        ledger.append(&record).unwrap_or_else(|e| unreachable!("{e}"));
        acknowledged.push(record.request_id);
    }
    drop(ledger);
    (dir, acknowledged)
}

/// Opens the ledger: either it refuses, naming the file and byte, and no file changed, or it
/// opens and every acknowledged record is still there. Returns whether it refused.
fn refuses_or_keeps_everything(dir: &Path, acknowledged: &[String], damaged_file: &Path, what: &str) -> bool {
    let before = snapshot(dir);
    let opened = Ledger::open(dir, LedgerOptions::default());
    match opened {
        Err(error) => {
            let message = error.to_string();
            let file = damaged_file.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
            assert!(
                message.contains(&file) && message.contains("byte ") && !message.contains('\n'),
                "{what}: the refusal must name the file and byte on one line: {message}"
            );
            assert!(snapshot(dir) == before, "{what}: a refused open changed a file");
            true
        }
        Ok(ledger) => {
            drop(ledger);
            let kept = request_ids(dir).unwrap_or_else(|e| unreachable!("{what}: {e}"));
            let lost: Vec<&String> = acknowledged.iter().filter(|id| !kept.contains(id)).collect();
            assert!(lost.is_empty(), "{what}: opening destroyed {} acknowledged records", lost.len());
            false
        }
    }
}

#[test]
fn issue_8_a_flipped_length_bit_refuses_to_open_and_changes_no_file() {
    // Issue 8: 23 requests, then the top bit of the 6th frame's length flipped. Opening cut
    // the segment to the 5 frames before it and 20 acknowledged records were gone.
    let (dir, acknowledged) = active_only("issue8", 23);
    let path = segment(&dir, 1);
    let mut bytes = std::fs::read(&path).unwrap_or_default();
    let (start, _) = frames(&bytes)[5];
    bytes[start + 3] ^= 0x80;
    std::fs::write(&path, &bytes).unwrap_or_else(|e| unreachable!("{e}"));
    let before = snapshot(&dir);
    let opened = Ledger::open(&dir, LedgerOptions::default());
    let message = opened.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("00000001.seg") && message.contains(&format!("byte {start}")),
        "opening must refuse, naming the segment and the byte: {message:?}"
    );
    assert!(snapshot(&dir) == before, "a refused open changed a file");
    assert_eq!(std::fs::metadata(&path).map(|m| m.len()).ok(), Some(bytes.len() as u64));
    assert_eq!(acknowledged.len(), 23);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_bit_of_every_length_and_hash_flipped_refuses_or_keeps_every_record() {
    let (dir, acknowledged) = active_only("framing", 23);
    let path = segment(&dir, 1);
    let saved = snapshot(&dir);
    let bytes = std::fs::read(&path).unwrap_or_default();
    let boundaries = frames(&bytes);
    assert!(boundaries.len() > 23, "names frames and record frames: {}", boundaries.len());
    let (mut refused, mut tried) = (0, 0);
    for (n, (start, end)) in boundaries.iter().copied().enumerate() {
        let framing = (start..start + 4).chain(end - 32..end);
        for at in framing {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[at] ^= 1 << bit;
                overwrite(&path, &damaged);
                let what = format!("frame {n} (bytes {start}..{end}), bit {bit} of byte {at}");
                refused += usize::from(refuses_or_keeps_everything(&dir, &acknowledged, &path, &what));
                tried += 1;
                restore(&dir, &saved);
            }
        }
    }
    println!("{tried} framing bit flips: {refused} refused, {} opened with every record", tried - refused);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The segment before and after one more batch of `n` records (names frames included).
fn with_a_last_batch(name: &str, n: u64) -> (PathBuf, Vec<String>, Vec<u8>, Vec<u8>) {
    let (dir, acknowledged) = active_only(name, 10);
    let path = segment(&dir, 1);
    let before = std::fs::read(&path).unwrap_or_default();
    let ledger = Ledger::open(&dir, LedgerOptions::default()).unwrap_or_else(|e| unreachable!("{e}"));
    let batch: Vec<_> =
        (0..n).map(|i| record(100 + i, &[200 + i as u32, 300, 301 + i as u32], &[3])).collect();
    ledger.append_all(&batch).unwrap_or_else(|e| unreachable!("{e}"));
    drop(ledger);
    let after = std::fs::read(&path).unwrap_or_default();
    (dir, acknowledged, before, after)
}

/// Where the last whole frame within `bytes` ends.
fn whole_frames_end(bytes: &[u8]) -> usize {
    frames(bytes).into_iter().map(|(_, end)| end).filter(|end| *end <= bytes.len()).max().unwrap_or(0)
}

#[test]
fn every_prefix_of_the_last_batch_and_every_zero_fill_is_cut_and_nothing_acknowledged_is_lost() {
    let (dir, acknowledged, before, after) = with_a_last_batch("prefixes", 5);
    let path = segment(&dir, 1);
    let saved = snapshot(&dir);
    let batch = &after[before.len()..];
    assert!(frames(batch).len() >= 6, "the batch holds names and records");
    let mut cases = 0;
    for kept in 0..=batch.len() {
        let prefix = [&before[..], &batch[..kept]].concat();
        // A prefix, a prefix zero-filled to the batch's end, and one zero-filled past a block.
        let mut to_batch_end = prefix.clone();
        to_batch_end.resize(after.len(), 0);
        let mut to_block = prefix.clone();
        to_block.resize(after.len().next_multiple_of(4096), 0);
        for (shape, bytes) in [("prefix", prefix.clone()), ("zero-filled", to_batch_end), ("block", to_block)]
        {
            overwrite(&path, &bytes);
            let what = format!("{shape} with {kept} of the batch's {} bytes", batch.len());
            let ledger = Ledger::open(&dir, LedgerOptions::default())
                .unwrap_or_else(|e| unreachable!("{what}: a torn tail must be cut, not refused: {e}"));
            // Whole frames of the batch stay (they chain); everything after them is cut.
            let expected = before.len() + whole_frames_end(&batch[..kept]);
            assert_eq!(ledger.stats().bytes, expected as u64, "{what}");
            if kept % 97 == 0 {
                let more = record(999, &[1, 2], &[3]);
                assert!(ledger.append(&more).is_ok(), "{what}: the ledger appends again");
            }
            drop(ledger);
            if kept % 97 != 0 {
                assert_eq!(std::fs::metadata(&path).map(|m| m.len() as usize).ok(), Some(expected), "{what}");
            }
            let kept_ids = request_ids(&dir).unwrap_or_else(|e| unreachable!("{what}: {e}"));
            assert!(
                acknowledged.iter().all(|id| kept_ids.contains(id)),
                "{what}: an acknowledged record is gone"
            );
            let report = consentry_ledger::verify(&dir, &[]).unwrap_or_else(|e| unreachable!("{e}"));
            assert!(report.ok(), "{what}: {:?}", report.problem);
            restore(&dir, &saved);
            cases += 1;
        }
    }
    println!("{cases} torn tails cut");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_torn_looking_tail_that_a_checkpoint_covers_refuses() {
    let (dir, _) = active_only("covered", 10);
    let ledger = Ledger::open(&dir, LedgerOptions::default()).unwrap_or_else(|e| unreachable!("{e}"));
    let checkpoint = ledger.checkpoint().unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(checkpoint.seq, 10);
    drop(ledger);
    let path = segment(&dir, 1);
    let bytes = std::fs::read(&path).unwrap_or_default();
    let boundaries = frames(&bytes);
    let (start, end) = boundaries[boundaries.len() - 1];
    // Records lost by the disk after they were checkpointed: cut mid-frame (looks torn), at a
    // frame boundary, or zeroed.
    let zeroed = [&bytes[..start], &vec![0u8; end - start][..]].concat();
    for (what, damaged) in [
        ("mid-frame", bytes[..start + 20].to_vec()),
        ("boundary", bytes[..start].to_vec()),
        ("zeroed", zeroed),
    ] {
        overwrite(&path, &damaged);
        let before = snapshot(&dir);
        let message =
            Ledger::open(&dir, LedgerOptions::default()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("00000001.seg is damaged at byte") && message.contains("covers record 10"),
            "{what}: {message:?}"
        );
        assert!(snapshot(&dir) == before, "{what}: a refused open changed a file");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn damage_to_a_sealed_segment_always_refuses() {
    // `segments` were sealed; the one after them is active.
    let (dir, segments) = super::sample("sealed-damage");
    assert!(dir.join(format!("{segments:08}.seal")).exists() && segment(&dir, segments + 1).exists());
    let saved = snapshot(&dir);
    let mut tried = 0;
    for number in 1..=segments {
        let path = segment(&dir, number);
        let bytes = std::fs::read(&path).unwrap_or_default();
        let boundaries = frames(&bytes);
        let mut damaged: Vec<(String, Vec<u8>)> = Vec::new();
        for (start, end) in boundaries.iter().copied() {
            for at in (start..start + 4).chain(end - 32..end) {
                for bit in [0, 7] {
                    let mut flipped = bytes.clone();
                    flipped[at] ^= 1 << bit;
                    damaged.push((format!("bit {bit} of byte {at}"), flipped));
                }
            }
        }
        let (last_start, _) = boundaries[boundaries.len() - 1];
        damaged.push(("cut mid-frame".into(), bytes[..last_start + 10].to_vec()));
        damaged.push(("zeros appended".into(), [&bytes[..], &[0u8; 100][..]].concat()));
        damaged.push(("half a frame appended".into(), [&bytes[..], &bytes[..50]].concat()));
        for (what, bytes) in damaged {
            overwrite(&path, &bytes);
            let before = snapshot(&dir);
            let opened = Ledger::open(&dir, LedgerOptions { segment_bytes: 1_500 });
            let message = opened.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(message.contains(&format!("{number:08}.se")), "segment {number}, {what}: {message:?}");
            assert!(snapshot(&dir) == before, "segment {number}, {what}: a refused open changed a file");
            restore(&dir, &saved);
            tried += 1;
        }
    }
    // The last segment sealed (as a crash after sealing, before the next one was made,
    // leaves it): without the active segment.
    std::fs::remove_file(segment(&dir, segments + 1)).unwrap_or_else(|e| unreachable!("{e}"));
    let last = segment(&dir, segments);
    let bytes = std::fs::read(&last).unwrap_or_default();
    overwrite(&last, &[&bytes[..], &[0u8, 1, 0][..]].concat());
    let before = snapshot(&dir);
    assert!(
        Ledger::open(&dir, LedgerOptions { segment_bytes: 1_500 }).is_err(),
        "a sealed last segment has no torn tail"
    );
    assert!(snapshot(&dir) == before);
    overwrite(&last, &bytes);
    assert!(Ledger::open(&dir, LedgerOptions { segment_bytes: 1_500 }).is_ok(), "undamaged, it opens");
    println!("{tried} kinds of damage to sealed segments refused");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_signing_key_refuses_and_no_new_key_is_made() {
    let (dir, _) = active_only("no-key", 3);
    std::fs::remove_file(dir.join("signing.key")).unwrap_or_else(|e| unreachable!("{e}"));
    let before = snapshot(&dir);
    let message =
        Ledger::open(&dir, LedgerOptions::default()).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("signing.key is missing") && message.contains("restore"), "{message}");
    assert!(snapshot(&dir) == before, "no key was made and nothing changed");
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(unix)]
#[test]
fn the_signing_key_is_private_and_never_read_or_written_through_a_link() {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
    let (dir, _) = active_only("key-mode", 2);
    let key = dir.join("signing.key");
    assert_eq!(mode(&key), 0o600);
    // Readable by others: refused, nothing changed.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644))
        .unwrap_or_else(|e| unreachable!("{e}"));
    let before = snapshot(&dir);
    let message =
        Ledger::open(&dir, LedgerOptions::default()).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("signing.key is open to group or others (mode 644)"), "{message}");
    assert!(snapshot(&dir) == before);
    // A symbolic link to a private copy: refused.
    let elsewhere = temp("key-elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap_or_else(|e| unreachable!("{e}"));
    let copy = elsewhere.join("key");
    std::fs::rename(&key, &copy).unwrap_or_else(|e| unreachable!("{e}"));
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| unreachable!("{e}"));
    symlink(&copy, &key).unwrap_or_else(|e| unreachable!("{e}"));
    let message =
        Ledger::open(&dir, LedgerOptions::default()).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("symbolic link"), "{message}");
    // The real file back: it opens.
    std::fs::remove_file(&key).unwrap_or_else(|e| unreachable!("{e}"));
    std::fs::rename(&copy, &key).unwrap_or_else(|e| unreachable!("{e}"));
    assert!(Ledger::open(&dir, LedgerOptions::default()).is_ok());
    // A new ledger whose key name is a dangling link: no key is written through it.
    let fresh = temp("key-link");
    std::fs::create_dir_all(&fresh).unwrap_or_else(|e| unreachable!("{e}"));
    let target = elsewhere.join("planted");
    symlink(&target, fresh.join("signing.key")).unwrap_or_else(|e| unreachable!("{e}"));
    assert!(Ledger::open(&fresh, LedgerOptions::default()).is_err());
    assert!(!target.exists(), "the key was written through a symbolic link");
    // A new ledger's directory and key are its owner's only.
    let new = temp("key-new");
    assert!(Ledger::open(&new, LedgerOptions::default()).is_ok());
    assert_eq!((mode(&new), mode(&new.join("signing.key"))), (0o700, 0o600));
    // A public key that is not the key's half: refused.
    std::fs::write(new.join("signing.pub"), format!("{}\n", "cd".repeat(32)))
        .unwrap_or_else(|e| unreachable!("{e}"));
    let message =
        Ledger::open(&new, LedgerOptions::default()).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("signing.pub is not the public half"), "{message}");
    for d in [&dir, &elsewhere, &fresh, &new] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn a_checkpoint_line_a_crash_cut_is_removed_on_open_and_a_damaged_one_refuses() {
    let (dir, _) = active_only("checkpoint-line", 3);
    let ledger = Ledger::open(&dir, LedgerOptions::default()).unwrap_or_else(|e| unreachable!("{e}"));
    let line = ledger.checkpoint().unwrap_or_else(|e| unreachable!("{e}")).to_line();
    drop(ledger);
    let file = dir.join("checkpoints");
    let whole = std::fs::read(&file).unwrap_or_default();
    assert_eq!(whole, format!("{line}\n").into_bytes());
    // Every prefix of a second line, as a crash while writing it leaves: cut on open.
    for cut in 1..line.len() {
        overwrite(&file, &[&whole[..], &line.as_bytes()[..cut]].concat());
        let report = consentry_ledger::verify(&dir, &[]).unwrap_or_else(|e| unreachable!("{e}"));
        assert!(report.problem.is_some_and(|p| p.reason.contains("a crash left it")), "prefix {cut}");
        assert!(Ledger::open(&dir, LedgerOptions::default()).is_ok(), "prefix {cut}");
        assert_eq!(std::fs::read(&file).ok(), Some(whole.clone()), "prefix {cut}");
    }
    // A whole line whose newline the crash cut: completed.
    overwrite(&file, &[&whole[..], line.as_bytes()].concat());
    assert!(Ledger::open(&dir, LedgerOptions::default()).is_ok());
    assert_eq!(std::fs::read(&file).ok(), Some([&whole[..], &whole[..]].concat()));
    // A line edited to claim more records than the ledger holds: its signature fails, and
    // opening refuses it as altered rather than as records lost.
    let forged = line.replace("seq=3 ", "seq=99 ");
    overwrite(&file, format!("{line}\n{forged}\n").as_bytes());
    let message =
        Ledger::open(&dir, LedgerOptions::default()).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("line 2 is not a valid checkpoint (the checkpoint's signature does not match"),
        "{message}"
    );
    // A bad signature on a line that claims nothing beyond the ledger does not stop it from
    // opening (opening checks only the signatures it relies on); verify reports it.
    let last = line.chars().last().unwrap_or('0');
    let resigned = format!("{}{}", &line[..line.len() - 1], if last == '0' { '1' } else { '0' });
    overwrite(&file, format!("{line}\n{resigned}\n").as_bytes());
    assert!(Ledger::open(&dir, LedgerOptions::default()).is_ok());
    let report = consentry_ledger::verify(&dir, &[]).unwrap_or_else(|e| unreachable!("{e}"));
    assert!(report.problem.is_some_and(|p| p.reason.contains("signature")));
    // A flipped bit in a kept line: refused, nothing changed.
    let mut flipped = whole.clone();
    flipped[20] ^= 0x01;
    overwrite(&file, &flipped);
    let before = snapshot(&dir);
    let message =
        Ledger::open(&dir, LedgerOptions::default()).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("checkpoints is damaged at byte 0: line 1"), "{message}");
    assert!(snapshot(&dir) == before);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn readers_and_verify_report_damage_at_its_byte_instead_of_ending_quietly() {
    let (dir, _) = active_only("readers", 23);
    let path = segment(&dir, 1);
    let mut bytes = std::fs::read(&path).unwrap_or_default();
    let (start, _) = frames(&bytes)[5];
    bytes[start + 3] ^= 0x80;
    overwrite(&path, &bytes);
    let read = request_ids(&dir).err().unwrap_or_default();
    assert!(read.contains(&format!("00000001.seg is damaged at byte {start}")), "{read:?}");
    let report = consentry_ledger::verify(&dir, &[]).unwrap_or_else(|e| unreachable!("{e}"));
    let problem = report.problem.map(|p| p.to_string()).unwrap_or_default();
    assert!(
        problem.starts_with("segment 1, after record ") && problem.contains(&format!("at byte {start}: ")),
        "{problem}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn repair_keeps_what_chains_moves_the_damaged_segment_aside_and_the_ledger_opens_again() {
    use consentry_ledger::{diagnose, repair, Diagnosis};
    let (dir, acknowledged) = active_only("repair", 23);
    let ledger = Ledger::open(&dir, LedgerOptions::default()).unwrap_or_else(|e| unreachable!("{e}"));
    let kept_checkpoint = ledger.checkpoint().unwrap_or_else(|e| unreachable!("{e}")).to_line();
    drop(ledger);
    assert!(matches!(diagnose(&dir), Ok(Diagnosis::Opens { torn_bytes: 0, .. })));
    let path = segment(&dir, 1);
    let mut bytes = std::fs::read(&path).unwrap_or_default();
    let boundaries = frames(&bytes);
    let (start, _) = boundaries[5];
    bytes[start + 3] ^= 0x80;
    overwrite(&path, &bytes);
    let before = snapshot(&dir);
    let Ok(Diagnosis::Repairable(plan)) = diagnose(&dir) else { unreachable!("repairable") };
    assert!(snapshot(&dir) == before, "diagnosing changes nothing");
    let kept_ids: Vec<String> = acknowledged.iter().take(plan.kept_records as usize).cloned().collect();
    assert_eq!(
        (plan.segment, plan.keep_bytes, plan.kept_frames, plan.lost_bytes, plan.checkpoint_beyond),
        (1, start as u64, 5, (bytes.len() - start) as u64, Some(23))
    );
    assert!(plan.kept_records > 0 && plan.last_kept_record == plan.kept_records && !plan.sealed);
    let done = repair(&dir, &plan, consentry_types::Instant::from_secs(1_700_000_000))
        .unwrap_or_else(|e| unreachable!("{e}"));
    // The damaged segment is kept, byte for byte, under damaged/.
    assert_eq!(done.moved.len(), 1);
    assert_eq!(std::fs::read(&done.moved[0]).ok(), Some(bytes.clone()));
    assert!(done.moved[0].starts_with(dir.join("damaged")), "{:?}", done.moved);
    assert_eq!(std::fs::read(&path).ok(), Some(bytes[..start].to_vec()));
    // It opens, keeps what chained, and appends; verify reports the old checkpoint honestly.
    let ledger = Ledger::open(&dir, LedgerOptions::default()).unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(ledger.append(&record(500, &[1], &[3])).ok(), Some(plan.last_kept_record + 1));
    drop(ledger);
    let ids = request_ids(&dir).unwrap_or_else(|e| unreachable!("{e}"));
    assert!(kept_ids.iter().all(|id| ids.contains(id)));
    let report = consentry_ledger::verify(&dir, &[kept_checkpoint]).unwrap_or_else(|e| unreachable!("{e}"));
    let problem = report.problem.map(|p| p.reason).unwrap_or_default();
    assert!(problem.contains("record 23") && problem.contains("repaired"), "{problem}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn repair_refuses_damage_that_later_segments_chain_from() {
    use consentry_ledger::{diagnose, Diagnosis};
    let (dir, _) = super::sample("repair-sealed");
    let path = segment(&dir, 2);
    let mut bytes = std::fs::read(&path).unwrap_or_default();
    bytes[10] ^= 0x04;
    overwrite(&path, &bytes);
    let before = snapshot(&dir);
    let diagnosis = diagnose(&dir).unwrap_or_else(|e| unreachable!("{e}"));
    assert!(
        matches!(&diagnosis, Diagnosis::Unrepairable(why) if why.contains("00000002.seg is damaged") && why.contains("later segments")),
        "{diagnosis:?}"
    );
    assert!(snapshot(&dir) == before);
    let _ = std::fs::remove_dir_all(&dir);
}
