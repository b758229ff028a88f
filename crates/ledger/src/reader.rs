//! Streaming reads of the ledger: one record at a time, never the whole ledger in memory.

use std::path::{Path, PathBuf};

use consentry_types::{DisclosureRecord, Instant};

use crate::codec::{decode, Dictionary, Entry};
use crate::segment::{continues, segment_files, FrameReader, Stop};
use crate::LedgerError;

/// One disclosure record with its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub seq: u64,
    pub record: DisclosureRecord,
}

/// Every record of the ledger in order. The hash chain is checked on the way; a torn tail
/// (never acknowledged) ends the stream.
pub struct Entries {
    files: std::vec::IntoIter<(u64, PathBuf)>,
    current: Option<FrameReader>,
    dictionary: Dictionary,
    head: [u8; 32],
    last_at: Instant,
    failed: bool,
}

impl Entries {
    pub fn open(dir: &Path) -> Result<Entries, LedgerError> {
        Ok(Entries {
            files: segment_files(dir)?.into_iter(),
            current: None,
            dictionary: Dictionary::default(),
            head: [0; 32],
            last_at: Instant::from_millis(0),
            failed: false,
        })
    }
}

impl Iterator for Entries {
    type Item = Result<LedgerEntry, LedgerError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            if self.current.is_none() {
                let (_, path) = self.files.next()?;
                match FrameReader::open(&path) {
                    Ok(reader) => self.current = Some(reader),
                    Err(e) => {
                        self.failed = true;
                        return Some(Err(e));
                    }
                }
            }
            let reader = self.current.as_mut()?;
            match reader.next_frame() {
                Ok(Some(frame)) => {
                    if !continues(&frame, &self.head) {
                        self.failed = true;
                        return Some(Err(LedgerError::Corrupt(format!(
                            "the hash chain is broken at byte {} (run `consentry ledger verify`)",
                            frame.offset
                        ))));
                    }
                    self.head = frame.stored_hash;
                    match decode(&frame.payload, &mut self.dictionary, self.last_at) {
                        Ok(Entry::Name) => continue,
                        Ok(Entry::Disclosure { seq, record }) => {
                            self.last_at = record.at;
                            return Some(Ok(LedgerEntry { seq, record }));
                        }
                        Err(e) => {
                            self.failed = true;
                            return Some(Err(e));
                        }
                    }
                }
                Ok(None) | Err(Stop::Torn { .. }) => self.current = None,
                Err(Stop::Io(e)) => {
                    self.failed = true;
                    return Some(Err(LedgerError::Corrupt(format!("read failed: {e}"))));
                }
            }
        }
    }
}
