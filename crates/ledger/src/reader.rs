//! Streaming reads of the ledger: one record at a time, never the whole ledger in memory.
//! The hash chain is checked on the way; a torn tail (never acknowledged) ends the stream,
//! and any damage is an error, never a silent end.

use std::path::Path;

use consentry_types::{DisclosureRecord, Instant};

use crate::chain::{Chain, Step};
use crate::codec::{decode, decode_raw, Dictionary, Entry, RawRecord};
use crate::LedgerError;

/// One disclosure record with its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub seq: u64,
    pub record: DisclosureRecord,
}

/// Every record of the ledger in order.
pub struct Entries {
    chain: Chain,
    dictionary: Dictionary,
    last_at: Instant,
    failed: bool,
}

impl Entries {
    pub fn open(dir: &Path) -> Result<Entries, LedgerError> {
        Ok(Entries {
            chain: Chain::open(dir)?,
            dictionary: Dictionary::default(),
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
            let decoded = match self.chain.step() {
                Ok(Step::Frame(frame)) => decode(&frame.payload, &mut self.dictionary, self.last_at),
                Ok(Step::SegmentEnd(_)) => continue,
                Ok(Step::End) => return None,
                Err(e) => Err(e),
            };
            match decoded {
                Ok(Entry::Name) => {}
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
    }
}

/// Every record in order with identities as dictionary numbers, read into one reused
/// [`RawRecord`]; [`RawEntries::name`] resolves a number. For scans of very large ledgers.
pub struct RawEntries {
    chain: Chain,
    dictionary: Dictionary,
    last_at: Instant,
}

impl RawEntries {
    pub fn open(dir: &Path) -> Result<RawEntries, LedgerError> {
        Ok(RawEntries {
            chain: Chain::open(dir)?,
            dictionary: Dictionary::default(),
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
            match self.chain.step()? {
                Step::Frame(frame) => {
                    if decode_raw(&frame.payload, &mut self.dictionary, self.last_at, out)? {
                        self.last_at = out.at;
                        return Ok(true);
                    }
                }
                Step::SegmentEnd(_) => {}
                Step::End => return Ok(false),
            }
        }
    }
}
