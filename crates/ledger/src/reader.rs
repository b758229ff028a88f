//! Streaming reads of one ledger stream: one record at a time, never the whole stream in
//! memory. The hash chain is checked on the way; a torn tail (never acknowledged) ends the
//! stream, and any damage is an error, never a silent end. `merge.rs` reads all streams.

use std::path::Path;

use consentry_types::{DisclosureRecord, Instant};

use crate::chain::{Chain, Step};
use crate::codec::{decode, decode_raw, Dictionary, Entry, NameKind, RawRecord};
use crate::LedgerError;

/// One disclosure record of a stream with its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamEntry {
    pub seq: u64,
    pub record: DisclosureRecord,
}

/// Every record of one stream in order.
pub(crate) struct StreamEntries {
    chain: Chain,
    dictionary: Dictionary,
    last_at: Instant,
    failed: bool,
}

impl StreamEntries {
    pub(crate) fn open(dir: &Path) -> Result<StreamEntries, LedgerError> {
        Ok(StreamEntries {
            chain: Chain::open(dir)?,
            dictionary: Dictionary::default(),
            last_at: Instant::from_millis(0),
            failed: false,
        })
    }
}

impl Iterator for StreamEntries {
    type Item = Result<StreamEntry, LedgerError>;

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
                    return Some(Ok(StreamEntry { seq, record }));
                }
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// Every record of one stream in order with identities as the stream's dictionary numbers,
/// read into one reused [`RawRecord`]. For scans of very large ledgers.
pub(crate) struct StreamRawEntries {
    chain: Chain,
    dictionary: Dictionary,
    last_at: Instant,
}

impl StreamRawEntries {
    pub(crate) fn open(dir: &Path) -> Result<StreamRawEntries, LedgerError> {
        Ok(StreamRawEntries {
            chain: Chain::open(dir)?,
            dictionary: Dictionary::default(),
            last_at: Instant::from_millis(0),
        })
    }

    /// The identity a number stands for, with its kind.
    pub(crate) fn name(&self, number: u64) -> Option<(NameKind, &str)> {
        self.dictionary.entry(number)
    }

    /// The number `member` goes by in the records read so far (`None` until a names entry
    /// has numbered it): a scan for one member compares numbers, not names.
    pub(crate) fn member_number(&self, member: &str) -> Option<u64> {
        self.dictionary.member_number(member)
    }

    /// Reads the next record into `out`; `Ok(false)` at the end.
    pub(crate) fn next_into(&mut self, out: &mut RawRecord) -> Result<bool, LedgerError> {
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
