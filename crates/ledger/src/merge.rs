//! Reading the whole ledger: every stream under a ledger root, merged by instant. Each stream
//! is read in its own order (its record numbers); the next entry is always the earliest of
//! the streams' next records (ties: the stream listed first, see [`crate::streams`]). A
//! stream's own records are almost, not strictly, in time order (appends from concurrent
//! requests), so neither is the merge; every record of every stream comes exactly once, and
//! damage in any stream is an error, never a silent end.

use std::collections::HashMap;
use std::path::Path;

use consentry_types::{DisclosureRecord, NodeId};

use crate::codec::{NameKind, RawRecord};
use crate::reader::{StreamEntries, StreamEntry, StreamRawEntries};
use crate::streams::streams;
use crate::LedgerError;

/// One disclosure record: the stream it is in (its node), and its number in that stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// The node whose stream holds it; `None` for a single-node ledger not adopted yet.
    pub node: Option<NodeId>,
    pub seq: u64,
    pub record: DisclosureRecord,
}

struct StreamHead {
    node: Option<NodeId>,
    entries: StreamEntries,
    next: Option<StreamEntry>,
    done: bool,
}

/// Every record of every stream under a ledger root (or of one stream's directory), merged
/// by instant, streaming.
pub struct Entries {
    streams: Vec<StreamHead>,
    failed: bool,
}

impl Entries {
    /// Reads the ledger under `root`; a root with no stream has no records.
    pub fn open(root: &Path) -> Result<Entries, LedgerError> {
        let mut heads = Vec::new();
        for stream in streams(root)? {
            heads.push(StreamHead {
                node: stream.node,
                entries: StreamEntries::open(&stream.dir)?,
                next: None,
                done: false,
            });
        }
        Ok(Entries { streams: heads, failed: false })
    }
}

impl Iterator for Entries {
    type Item = Result<LedgerEntry, LedgerError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        for head in &mut self.streams {
            if head.next.is_none() && !head.done {
                match head.entries.next() {
                    Some(Ok(entry)) => head.next = Some(entry),
                    Some(Err(e)) => {
                        self.failed = true;
                        return Some(Err(e));
                    }
                    None => head.done = true,
                }
            }
        }
        let earliest = self
            .streams
            .iter_mut()
            .filter(|h| h.next.is_some())
            .min_by_key(|h| h.next.as_ref().map(|e| e.record.at))?;
        let StreamEntry { seq, record } = earliest.next.take()?;
        Some(Ok(LedgerEntry { node: earliest.node.clone(), seq, record }))
    }
}

struct RawHead {
    node: Option<NodeId>,
    entries: StreamRawEntries,
    next: RawRecord,
    has_next: bool,
    done: bool,
    /// The stream's dictionary numbers as ledger-wide numbers (+1; 0: not numbered yet).
    numbers: Vec<u64>,
}

/// Every record of every stream merged by instant, identities as numbers read into one
/// reused [`RawRecord`]; [`RawEntries::name`] resolves a number. Numbers are ledger-wide: one
/// identity has one number whichever stream recorded it (each stream numbers its own names;
/// with several streams they are renumbered as they are read). For scans of very large
/// ledgers.
pub struct RawEntries {
    streams: Vec<RawHead>,
    /// The stream the last record read came from.
    last: usize,
    names: Vec<String>,
    numbered: HashMap<(NameKind, String), u64>,
}

impl RawEntries {
    pub fn open(root: &Path) -> Result<RawEntries, LedgerError> {
        let mut heads = Vec::new();
        for stream in streams(root)? {
            heads.push(RawHead {
                node: stream.node,
                entries: StreamRawEntries::open(&stream.dir)?,
                next: RawRecord::default(),
                has_next: false,
                done: false,
                numbers: Vec::new(),
            });
        }
        Ok(RawEntries { streams: heads, last: 0, names: Vec::new(), numbered: HashMap::new() })
    }

    /// The identity a number stands for.
    pub fn name(&self, number: u64) -> Option<&str> {
        match self.streams.as_slice() {
            [single] => single.entries.name(number).map(|(_, name)| name),
            _ => usize::try_from(number).ok().and_then(|n| self.names.get(n)).map(String::as_str),
        }
    }

    /// The number `member` goes by in the records read so far (`None` until a record or a
    /// names entry read so far has numbered it): a scan for one member compares numbers, not
    /// names. Once read, a record naming the member has numbered them.
    pub fn member_number(&self, member: &str) -> Option<u64> {
        match self.streams.as_slice() {
            [single] => single.entries.member_number(member),
            _ => self.numbered.get(&(NameKind::Member, member.to_string())).copied(),
        }
    }

    /// The node whose stream holds the record read last (`None`: a single-node ledger not
    /// adopted yet). Meaningful only after [`RawEntries::next_into`] has returned a record.
    pub fn node(&self) -> Option<&NodeId> {
        self.streams.get(self.last).and_then(|h| h.node.as_ref())
    }

    /// Reads the next record into `out`; `Ok(false)` at the end.
    pub fn next_into(&mut self, out: &mut RawRecord) -> Result<bool, LedgerError> {
        if let [single] = self.streams.as_mut_slice() {
            return single.entries.next_into(out);
        }
        for head in &mut self.streams {
            if !head.has_next && !head.done {
                head.has_next = head.entries.next_into(&mut head.next)?;
                head.done = !head.has_next;
            }
        }
        let Some(index) = self
            .streams
            .iter()
            .enumerate()
            .filter(|(_, h)| h.has_next)
            .min_by_key(|(_, h)| h.next.at)
            .map(|(i, _)| i)
        else {
            return Ok(false);
        };
        let Some(head) = self.streams.get_mut(index) else { return Ok(false) };
        self.last = index;
        head.has_next = false;
        std::mem::swap(out, &mut head.next);
        let (names, numbered) = (&mut self.names, &mut self.numbered);
        let mut renumber = |number: u64| -> Result<u64, LedgerError> {
            let slot = usize::try_from(number).map_err(|_| unknown(number))?;
            if let Some(&global) = head.numbers.get(slot).filter(|g| **g > 0) {
                return Ok(global - 1);
            }
            let (kind, name) = head.entries.name(number).ok_or_else(|| unknown(number))?;
            let global = *numbered.entry((kind, name.to_string())).or_insert_with(|| {
                names.push(name.to_string());
                names.len() as u64 - 1
            });
            if head.numbers.len() <= slot {
                head.numbers.resize(slot + 1, 0);
            }
            if let Some(cell) = head.numbers.get_mut(slot) {
                *cell = global + 1;
            }
            Ok(global)
        };
        out.app = renumber(out.app)?;
        out.developer = renumber(out.developer)?;
        out.group = renumber(out.group)?;
        out.route = renumber(out.route)?;
        for member in &mut out.members {
            member.0 = renumber(member.0)?;
        }
        out.members.sort_unstable();
        Ok(true)
    }
}

fn unknown(number: u64) -> LedgerError {
    LedgerError::Corrupt(format!("a record refers to an unknown name number {number}"))
}
