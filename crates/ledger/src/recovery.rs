//! Recovery on open, in two halves. [`check`] reads everything and changes nothing: keys,
//! every segment frame by frame (a torn tail is allowed only at the end of the last, unsealed
//! segment), every seal, and the kept checkpoints, which must all be covered by the records
//! found. Only when all of that passes does [`Checked::apply`] change anything: it creates the
//! key of a new ledger, cuts the torn tail, finishes a checkpoint line a crash cut, and opens
//! the segment appends go to. `repair` starts from what `check` refused.

use std::path::{Path, PathBuf};

use consentry_types::Instant;
use ed25519_dalek::SigningKey;

use crate::chain::{Chain, SegmentEnd, Step};
use crate::checkpoints::{self, KeptCheckpoints, Unfinished};
use crate::codec::{decode, merkle_root, Dictionary, Entry};
use crate::files::{AppendFile, FileLayer};
use crate::keys;
use crate::seal::Seal;
use crate::segment::{seal_path, segment_path};
use crate::{field_pairs, LedgerError, LedgerStats};

/// The segment being scanned (after the scan: the last one).
#[derive(Debug, Clone, Default)]
pub(crate) struct SegmentState {
    pub number: u64,
    pub path: PathBuf,
    /// Bytes of whole frames that continue the chain.
    pub length: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub records: u64,
    pub hashes: Vec<[u8; 32]>,
    /// The chain head before its first frame.
    pub previous: [u8; 32],
    pub sealed: bool,
    /// Bytes a crash left after its whole frames.
    pub torn: u64,
}

/// What the scan found so far: everything, or everything before the first damage.
#[derive(Default)]
pub(crate) struct Scanner {
    pub dictionary: Dictionary,
    pub head: [u8; 32],
    pub next_seq: u64,
    pub last_at: Instant,
    pub stats: LedgerStats,
    pub segment: SegmentState,
    pub segments: u64,
}

impl Scanner {
    pub(crate) fn new() -> Scanner {
        Scanner { next_seq: 1, last_at: Instant::from_millis(0), ..Scanner::default() }
    }

    /// Walks every segment, comparing each sealed one with what its seal says.
    pub(crate) fn run(&mut self, dir: &Path) -> Result<(), LedgerError> {
        let mut chain = Chain::open(dir)?;
        loop {
            let number = chain.segment();
            if !chain.finished() && self.segment.number != number {
                self.segment = SegmentState {
                    number,
                    path: segment_path(dir, number),
                    previous: chain.head(),
                    ..SegmentState::default()
                };
            }
            match chain.step()? {
                Step::Frame(frame) => {
                    let damaged = |reason: String| LedgerError::Damaged {
                        segment: number,
                        path: segment_path(dir, number),
                        offset: Some(frame.offset),
                        reason,
                    };
                    match decode(&frame.payload, &mut self.dictionary, self.last_at) {
                        Ok(Entry::Disclosure { seq, record }) => {
                            if seq != self.next_seq {
                                return Err(damaged(format!("record {seq} where {} was due", self.next_seq)));
                            }
                            self.next_seq += 1;
                            self.last_at = record.at;
                            if self.segment.first_seq == 0 {
                                self.segment.first_seq = seq;
                            }
                            self.segment.last_seq = seq;
                            self.segment.records += 1;
                            self.stats.records += 1;
                            self.stats.disclosures += field_pairs(&record);
                        }
                        Ok(Entry::Name) => {}
                        Err(e) => {
                            return Err(damaged(format!(
                                "the frame continues the chain but cannot be read ({e})"
                            )))
                        }
                    }
                    self.head = frame.stored_hash;
                    self.segment.length = frame.end();
                    self.segment.hashes.push(frame.stored_hash);
                }
                Step::SegmentEnd(end) => {
                    self.end_segment(dir, &end)?;
                    self.segments += 1;
                    self.stats.segments += 1;
                    self.stats.bytes += end.length;
                }
                Step::End => return Ok(()),
            }
        }
    }

    fn end_segment(&mut self, dir: &Path, end: &SegmentEnd) -> Result<(), LedgerError> {
        self.segment.length = end.length;
        self.segment.torn = end.torn;
        self.segment.sealed = end.sealed;
        self.segment.previous = end.previous;
        if end.sealed {
            let path = seal_path(dir, end.number);
            let expected = Seal {
                segment: end.number,
                frames: self.segment.hashes.len() as u64,
                first_seq: self.segment.first_seq,
                last_seq: self.segment.last_seq,
                bytes: end.length,
                previous: end.previous,
                head: self.head,
                merkle: merkle_root(&self.segment.hashes),
            };
            if let Err(reason) = Seal::check(&path, None, &expected) {
                return Err(LedgerError::Damaged { segment: end.number, path, offset: None, reason });
            }
        }
        Ok(())
    }
}

/// Everything `check` read, for `apply`.
pub(crate) struct Checked {
    pub dir: PathBuf,
    pub key: Option<SigningKey>,
    pub public_written: bool,
    pub checkpoints: Option<KeptCheckpoints>,
}

/// Reads and checks the ledger in `dir`, changing nothing; `scanner` holds what was found,
/// also when it refuses.
pub(crate) fn check(dir: &Path, scanner: &mut Scanner) -> Result<Checked, LedgerError> {
    let key = keys::read_key(dir)?;
    let verifying = key.as_ref().map(|k| k.verifying_key());
    let public_written = match &key {
        Some(key) => keys::check_public(dir, key)?,
        None => {
            if let Some(name) = keys::has_signed_files(dir)? {
                return Err(LedgerError::Corrupt(format!(
                    "{} is missing but the ledger has {name}: restore the key (a new one is never made over an existing ledger)",
                    dir.join(keys::KEY_FILE).display()
                )));
            }
            false
        }
    };
    scanner.run(dir)?;
    let checkpoints = match &verifying {
        Some(_) => Some(checkpoints::read(dir)?),
        None => None,
    };
    if let (Some(kept), Some(verifying)) = (&checkpoints, &verifying) {
        let damaged = |offset: u64, reason: String| LedgerError::Damaged {
            segment: 0,
            path: kept.path.clone(),
            offset: Some(offset),
            reason,
        };
        if let Some((line, reason)) = kept.first_bad() {
            return Err(damaged(
                line.offset,
                format!("line {} is not a valid checkpoint ({reason})", line.number),
            ));
        }
        if let Some(Unfinished::Damaged { offset }) = kept.unfinished {
            let reason = "the last checkpoint is followed by a byte that is not a newline: it was altered";
            return Err(damaged(offset, reason.to_string()));
        }
        let from = checkpoints::lines_before_last_repair(dir)? + 1;
        let recovered = scanner.next_seq - 1;
        let highest = kept.highest_from(from, verifying).map_err(|(line, reason)| {
            damaged(line.offset, format!("line {} is not a valid checkpoint ({reason})", line.number))
        })?;
        if let Some((line, checkpoint)) = highest {
            if checkpoint.seq > recovered {
                let segment = &scanner.segment;
                return Err(LedgerError::Damaged {
                    segment: segment.number.max(1),
                    path: if segment.number == 0 { segment_path(dir, 1) } else { segment.path.clone() },
                    offset: Some(segment.length),
                    reason: format!(
                        "the ledger ends here with record {recovered}, but line {line} of {} covers record {}: acknowledged records are missing",
                        kept.path.display(),
                        checkpoint.seq
                    ),
                });
            }
        }
    }
    Ok(Checked { dir: dir.to_path_buf(), key, public_written, checkpoints })
}

impl Checked {
    /// Makes the checked ledger ready for appends: the only changes opening makes. Returns
    /// the signing key and the file appends go to.
    pub(crate) fn apply(
        self,
        scanner: &Scanner,
        files: &dyn FileLayer,
    ) -> Result<(SigningKey, Box<dyn AppendFile>, u64), LedgerError> {
        let dir = &self.dir;
        create_private_dir(dir)?;
        let key = match self.key {
            Some(key) => key,
            None => keys::create_key(dir)?,
        };
        if !self.public_written {
            keys::write_public(dir, &key)?;
        }
        let segment = &scanner.segment;
        if segment.torn > 0 {
            files
                .open_append(&segment.path)
                .and_then(|file| file.truncate(segment.length))
                .map_err(|e| LedgerError::io(&segment.path, e))?;
        }
        if let Some(kept) = &self.checkpoints {
            let done = match kept.unfinished {
                Some(Unfinished::Torn { offset }) => {
                    files.open_append(&kept.path).and_then(|file| file.truncate(offset))
                }
                Some(Unfinished::Unterminated) => files
                    .open_append(&kept.path)
                    .and_then(|file| file.append(b"\n").and_then(|_| file.sync())),
                _ => Ok(()),
            };
            done.map_err(|e| LedgerError::io(&kept.path, e))?;
        }
        let number = match (segment.number, segment.sealed) {
            (0, _) => 1,
            (n, true) => n + 1,
            (n, false) => n,
        };
        let path = segment_path(dir, number);
        let file = files.open_append(&path).map_err(|e| LedgerError::io(&path, e))?;
        let expected = if number == segment.number { segment.length } else { 0 };
        let length = file.length().map_err(|e| LedgerError::io(&path, e))?;
        if length != expected {
            return Err(LedgerError::Corrupt(format!(
                "{} is {length} bytes, not the {expected} just read: is another process writing the ledger?",
                path.display()
            )));
        }
        Ok((key, file, number))
    }
}

/// Creates the ledger directory (and its parents) readable by its owner only.
fn create_private_dir(dir: &Path) -> Result<(), LedgerError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| LedgerError::io(dir, e))
}
