//! Streaming reads of the ledger: one record at a time, never the whole ledger in memory.

use std::path::{Path, PathBuf};

use consentry_types::{DisclosureRecord, Instant};

use crate::codec::{decode, decode_raw, Dictionary, Entry, RawRecord};
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

/// Every record in order with identities as dictionary numbers, read into one reused
/// [`RawRecord`]; [`RawEntries::name`] resolves a number. For scans of very large ledgers.
pub struct RawEntries {
    files: std::vec::IntoIter<(u64, PathBuf)>,
    current: Option<FrameReader>,
    dictionary: Dictionary,
    head: [u8; 32],
    last_at: Instant,
}

impl RawEntries {
    pub fn open(dir: &Path) -> Result<RawEntries, LedgerError> {
        Ok(RawEntries {
            files: segment_files(dir)?.into_iter(),
            current: None,
            dictionary: Dictionary::default(),
            head: [0; 32],
            last_at: Instant::from_millis(0),
        })
    }

    /// The identity a number stands for.
    pub fn name(&self, number: u64) -> Option<&str> {
        self.dictionary.any_name(number)
    }

    /// Reads the next record into `out`; `Ok(false)` at the end.
    pub fn next_into(&mut self, out: &mut RawRecord) -> Result<bool, LedgerError> {
        loop {
            if self.current.is_none() {
                let Some((_, path)) = self.files.next() else { return Ok(false) };
                self.current = Some(FrameReader::open(&path)?);
            }
            let Some(reader) = self.current.as_mut() else { return Ok(false) };
            match reader.next_frame() {
                Ok(Some(frame)) => {
                    if !continues(&frame, &self.head) {
                        return Err(LedgerError::Corrupt(format!(
                            "the hash chain is broken at byte {} (run `consentry ledger verify`)",
                            frame.offset
                        )));
                    }
                    self.head = frame.stored_hash;
                    if decode_raw(&frame.payload, &mut self.dictionary, self.last_at, out)? {
                        self.last_at = out.at;
                        return Ok(true);
                    }
                }
                Ok(None) | Err(Stop::Torn { .. }) => self.current = None,
                Err(Stop::Io(e)) => return Err(LedgerError::Corrupt(format!("read failed: {e}"))),
            }
        }
    }
}
