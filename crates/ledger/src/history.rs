//! A member's history: the records of every stream that disclosed a member's fields, a page
//! at a time (what member transparency answers). [`scan_member_history`] reads every record
//! (the reference, and the baseline the member index is measured against);
//! [`crate::MemberIndex`] answers the same pages from the index.
//!
//! A page is each stream's matching records in the stream's own order (record numbers),
//! merged by instant (ties: the stream listed first, see [`crate::streams`]); a position per
//! stream (`after`) says where the previous page ended, so records appended later are never
//! skipped. Only the member's own records take part in the merge, so an index that holds
//! nothing else gives the same order as a scan.

use std::collections::BTreeMap;
use std::path::Path;

use consentry_types::{AppId, DeveloperId, FieldSet, GroupId, Instant, MemberId, Subject};

use crate::reader::{StreamEntries, StreamEntry};
use crate::streams::streams;
use crate::LedgerError;

/// Which page of a member's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberQuery {
    /// Inclusive.
    pub from: Option<Instant>,
    /// Exclusive.
    pub to: Option<Instant>,
    /// Per stream (its [`crate::Stream::name`]), the last record number already seen.
    pub after: BTreeMap<String, u64>,
    /// At most this many disclosures.
    pub limit: usize,
}

impl MemberQuery {
    /// The first `limit` disclosures.
    pub fn first(limit: usize) -> MemberQuery {
        MemberQuery { from: None, to: None, after: BTreeMap::new(), limit }
    }

    pub(crate) fn seen(&self, stream: &str) -> u64 {
        self.after.get(stream).copied().unwrap_or(0)
    }

    pub(crate) fn in_window(&self, at: Instant) -> bool {
        self.from.is_none_or(|f| at >= f) && self.to.is_none_or(|t| at < t)
    }
}

/// One record that disclosed some of the member's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDisclosure {
    /// The stream holding the record ([`crate::Stream::name`]: its node, or `single-node`).
    pub stream: String,
    /// The record's number in that stream.
    pub seq: u64,
    pub at: Instant,
    pub app: AppId,
    pub developer: DeveloperId,
    pub group: GroupId,
    pub route: String,
    pub policy_version: u32,
    /// The member's fields the record disclosed.
    pub fields: FieldSet,
}

/// A page of a member's history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberHistory {
    pub disclosures: Vec<MemberDisclosure>,
    /// Whether more follow the page.
    pub more: bool,
}

impl MemberHistory {
    /// `after` for the next page: the query's positions moved past this page.
    pub fn next_after(&self, query: &MemberQuery) -> BTreeMap<String, u64> {
        let mut after = query.after.clone();
        for disclosure in &self.disclosures {
            after.insert(disclosure.stream.clone(), disclosure.seq);
        }
        after
    }
}

/// A page of `member`'s history read from every record of every stream under `root`.
pub fn scan_member_history(
    root: &Path,
    member: &MemberId,
    query: &MemberQuery,
) -> Result<MemberHistory, LedgerError> {
    let subject = Subject::Member(member.clone());
    let mut found = Vec::new();
    for stream in streams(root)? {
        let name = stream.name();
        let seen = query.seen(&name);
        let mut hits = Vec::new();
        for entry in StreamEntries::open(&stream.dir)? {
            let StreamEntry { seq, record } = entry?;
            if seq <= seen || !query.in_window(record.at) {
                continue;
            }
            let Some(fields) = record.disclosures.iter().find(|d| d.subject == subject).map(|d| d.fields)
            else {
                continue;
            };
            hits.push(MemberDisclosure {
                stream: name.clone(),
                seq,
                at: record.at,
                app: record.app,
                developer: record.developer,
                group: record.group,
                route: record.route,
                policy_version: record.policy_version,
                fields,
            });
            if hits.len() > query.limit {
                break;
            }
        }
        found.push(hits);
    }
    Ok(merge(found, query.limit))
}

/// Merges each stream's matching records (in the stream's order, at least `limit + 1` of
/// them when there are that many) by instant, ties to the stream listed first.
pub(crate) fn merge(streams: Vec<Vec<MemberDisclosure>>, limit: usize) -> MemberHistory {
    let mut heads: Vec<std::iter::Peekable<std::vec::IntoIter<MemberDisclosure>>> =
        streams.into_iter().map(|s| s.into_iter().peekable()).collect();
    let mut page = MemberHistory::default();
    loop {
        let earliest = heads.iter_mut().enumerate().filter_map(|(i, h)| h.peek().map(|d| (d.at, i))).min();
        let Some((_, index)) = earliest else { break };
        if page.disclosures.len() == limit {
            page.more = true;
            break;
        }
        match heads.get_mut(index).and_then(Iterator::next) {
            Some(disclosure) => page.disclosures.push(disclosure),
            None => break,
        }
    }
    page
}
