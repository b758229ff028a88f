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
