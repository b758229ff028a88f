//! Member transparency: which apps received which of a member's fields, and when, read from
//! every stream of the ledger (every node's), merged by instant.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::Json;
use consentry_ledger::{Ledger, RawEntries, RawRecord};
use consentry_service::{DisclosureRecord, DisclosureSink};
use consentry_types::{FieldSet, Instant, MemberId, OperatorRole};
use serde::Serialize;
use utoipa::ToSchema;

use crate::extract::{blocking, OperatorAuth, Params};
use crate::problem::{ApiError, Problem};
use crate::ApiState;

/// Records disclosures in the ledger, returning once they are durable.
pub struct LedgerSink(pub Arc<Ledger>);

impl DisclosureSink for LedgerSink {
    fn record(&self, record: &DisclosureRecord) -> Result<(), String> {
        self.0.append(record).map(|_| ()).map_err(|e| e.to_string())
    }

    /// One append of all of them, made durable by one sync.
    fn record_all(&self, records: &[DisclosureRecord]) -> Result<(), String> {
        self.0.append_all(records).map(|_| ()).map_err(|e| e.to_string())
    }
}

/// The ledger's counters since this server opened it (records, disclosures and bytes include
/// what it held then).
#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerStatsBody {
    pub records: u64,
    /// (subject, field) pairs disclosed.
    pub disclosures: u64,
    pub bytes: u64,
    pub segments: u64,
    /// `fdatasync`s of appends since the server started: each made a group of records durable.
    pub syncs: u64,
}

/// The ledger's counters: how many records, disclosures and bytes, and how many syncs made
/// them durable (records per sync shows how well appends share a sync).
#[utoipa::path(get, path = "/platform/v1/ledger/stats", tag = "platform",
    responses((status = 200, body = LedgerStatsBody), (status = 401, body = Problem), (status = 404, body = Problem, description = "this server keeps no ledger")),
    security(("operator_key" = [])))]
pub async fn ledger_stats(
    State(state): State<ApiState>,
    OperatorAuth(op): OperatorAuth,
) -> Result<Json<LedgerStatsBody>, ApiError> {
    op.require(&[OperatorRole::Operator, OperatorRole::PrivacyOfficer, OperatorRole::Auditor])?;
    let ledger = state.ledger.as_ref().ok_or_else(|| {
        ApiError::new(axum::http::StatusCode::NOT_FOUND, "not-found", "this server keeps no ledger")
    })?;
    let stats = ledger.stats();
    Ok(Json(LedgerStatsBody {
        records: stats.records,
        disclosures: stats.disclosures,
        bytes: stats.bytes,
        segments: stats.segments,
        syncs: stats.syncs,
    }))
}

/// One response that disclosed some of the member's fields.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberDisclosure {
    /// The node whose ledger stream holds the record (`single-node` for a ledger from before
    /// nodes had streams).
    pub node: String,
    /// The record's number in that stream.
    pub seq: u64,
    pub at: String,
    pub app: String,
    pub developer: String,
    pub group: String,
    pub route: String,
    pub policy_version: u32,
    /// e.g. `member.name`.
    pub fields: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberDisclosures {
    pub data: Vec<MemberDisclosure>,
    pub paging: crate::groups::Paging,
}

fn instant(params: &Params, name: &str) -> Result<Option<Instant>, ApiError> {
    params.get(name).map(|t| Instant::parse(t).map_err(|e| ApiError::bad_request(e.to_string()))).transpose()
}

/// Which apps received which of this member's fields, oldest first.
#[utoipa::path(get, path = "/platform/v1/members/{id}/disclosures", tag = "platform",
    params(
        ("id" = String, Path, description = "platform member id"),
        ("from" = Option<String>, Query, description = "RFC 3339, inclusive"),
        ("to" = Option<String>, Query, description = "RFC 3339, exclusive"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "1 to 1000, default 100"),
        ("after" = Option<String>, Query, description = "`paging.after` of the previous page: one position per ledger stream, `node:seq,…`"),
    ),
    responses((status = 200, description = "a page of disclosures, oldest first", body = MemberDisclosures), (status = 404, body = Problem, description = "this server keeps no ledger")),
    security(("operator_key" = [])))]
pub async fn member_disclosures(
    State(state): State<ApiState>,
    OperatorAuth(op): OperatorAuth,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Json<MemberDisclosures>, ApiError> {
    op.require(&[OperatorRole::Operator, OperatorRole::PrivacyOfficer, OperatorRole::Auditor])?;
    let Path(raw) = path.map_err(|e| ApiError::bad_request(format!("bad path: {e}")))?;
    let member = MemberId::parse(&raw).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let params = Params::parse(query.unwrap_or_default().as_bytes(), &["from", "to", "limit", "after"])?;
    let (from, to) = (instant(&params, "from")?, instant(&params, "to")?);
    let limit = params.usize("limit")?.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 1000"));
    }
    let after = params.get("after").map(str::to_string);
    let dir: PathBuf = state.ledger_dir.clone().ok_or_else(|| {
        ApiError::new(axum::http::StatusCode::NOT_FOUND, "not-found", "this server keeps no ledger")
    })?;
    let found = blocking(&state.service, move |_| {
        let streams = consentry_ledger::streams(&dir).map_err(|e| ApiError::internal(&e.to_string()))?;
        let names: Vec<String> = streams.iter().map(|s| s.name()).collect();
        let frontier = parse_after(after.as_deref(), &names)?;
        member_disclosures_page(&dir, &member, (from, to), frontier, limit)
    })
    .await?;
    Ok(Json(found))
}

/// One page of what the ledger under `root` (every stream, merged by instant) says `member`
/// was disclosed in: records after `frontier` (a position per stream, see [`parse_after`])
/// within the window, at most `limit`. Reads the ledger as raw records and compares the
/// member's number, resolving names only for the records that disclosed the member.
pub(crate) fn member_disclosures_page(
    root: &std::path::Path,
    member: &MemberId,
    (from, to): (Option<Instant>, Option<Instant>),
    mut frontier: BTreeMap<String, u64>,
    limit: usize,
) -> Result<MemberDisclosures, ApiError> {
    let failed = |e: consentry_ledger::LedgerError| ApiError::internal(&e.to_string());
    let mut entries = RawEntries::open(root).map_err(failed)?;
    let mut record = RawRecord::default();
    let mut number = None;
    let mut data = Vec::new();
    let mut more = false;
    while entries.next_into(&mut record).map_err(failed)? {
        if from.is_some_and(|f| record.at < f) || to.is_some_and(|t| record.at >= t) {
            continue;
        }
        if number.is_none() {
            number = entries.member_number(member.as_str());
        }
        let Some(wanted) = number else { continue };
        // Members are kept in number order.
        let Ok(found) = record.members.binary_search_by_key(&wanted, |(n, _)| *n) else { continue };
        let node = entries.node().map_or_else(|| "single-node".to_string(), |n| n.to_string());
        if record.seq <= frontier.get(&node).copied().unwrap_or(0) {
            continue;
        }
        let fields = record.members.get(found).map(|(_, f)| FieldSet::from_bits(*f)).unwrap_or_default();
        if data.len() == limit {
            more = true;
            break;
        }
        frontier.insert(node.clone(), record.seq);
        let name = |n: u64| entries.name(n).unwrap_or_default().to_string();
        data.push(MemberDisclosure {
            node,
            seq: record.seq,
            at: record.at.to_string(),
            app: name(record.app),
            developer: name(record.developer),
            group: name(record.group),
            route: name(record.route),
            policy_version: record.policy_version,
            fields: fields.iter().map(|f| f.as_str().to_string()).collect(),
        });
    }
    let next = more
        .then(|| frontier.iter().map(|(node, seq)| format!("{node}:{seq}")).collect::<Vec<_>>().join(","));
    Ok(MemberDisclosures { data, paging: crate::groups::Paging { after: next } })
}

/// Where the previous page ended in each stream: `after` is `NODE:SEQ,NODE:SEQ…` (what
/// `paging.after` says), or, for a ledger of one stream, a plain record number. Streams are
/// read in their own order, so a position per stream is exact however records of different
/// nodes interleave in time, and records appended after a page was read are never skipped.
pub(crate) fn parse_after(
    after: Option<&str>,
    streams: &[String],
) -> Result<BTreeMap<String, u64>, ApiError> {
    let mut frontier = BTreeMap::new();
    let Some(after) = after else { return Ok(frontier) };
    let bad = || ApiError::bad_request("after must be the paging.after of the previous page");
    if let Ok(seq) = after.parse::<u64>() {
        match streams {
            [only] => {
                frontier.insert(only.clone(), seq);
                return Ok(frontier);
            }
            [] => return Ok(frontier),
            _ => return Err(bad()),
        }
    }
    for part in after.split(',') {
        let (node, seq) = part.rsplit_once(':').ok_or_else(bad)?;
        let seq: u64 = seq.parse().map_err(|_| bad())?;
        if node.is_empty() || node.len() > 64 || frontier.insert(node.to_string(), seq).is_some() {
            return Err(bad());
        }
        if frontier.len() > 1_000 {
            return Err(bad());
        }
    }
    Ok(frontier)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]
    use super::*;
    use consentry_ledger::{Entries, LedgerOptions};
    use consentry_types::{AppId, DeveloperId, Disclosure, Field, GroupId, NodeId, Subject};

    fn id<T>(parse: fn(&str) -> Result<T, consentry_types::InvalidId>, text: &str) -> T {
        parse(text).unwrap_or_else(|e| unreachable!("{e}"))
    }

    type Row = (String, u64, String, String, String, u32, Vec<String>);

    /// The reference: every record of every stream decoded with its names, filtered by
    /// subject, paged by a position per stream.
    fn reference(
        root: &std::path::Path,
        member: &MemberId,
        window: (Option<Instant>, Option<Instant>),
        frontier: &BTreeMap<String, u64>,
        limit: usize,
    ) -> Vec<Row> {
        let mut out = Vec::new();
        for entry in Entries::open(root).unwrap() {
            let entry = entry.unwrap();
            let node = entry.node.as_ref().map_or_else(|| "single-node".to_string(), |n| n.to_string());
            let r = &entry.record;
            if entry.seq <= frontier.get(&node).copied().unwrap_or(0)
                || window.0.is_some_and(|f| r.at < f)
                || window.1.is_some_and(|t| r.at >= t)
            {
                continue;
            }
            let Some(d) = r.disclosures.iter().find(|d| d.subject == Subject::Member(member.clone())) else {
                continue;
            };
            if out.len() == limit {
                break;
            }
            let fields = d.fields.iter().map(|f| f.as_str().to_string()).collect();
            out.push((
                node,
                entry.seq,
                r.app.to_string(),
                r.group.to_string(),
                r.route.clone(),
                r.policy_version,
                fields,
            ));
        }
        out
    }

    /// Record `i` of a seeded ledger: it discloses members `i % 7 ..` (a member first seen
    /// late, some never) and the group.
    fn record(i: u64) -> consentry_types::DisclosureRecord {
        let fields = [
            Field::MemberName.bit(),
            Field::MemberPicture.bit() | Field::MemberName.bit(),
            Field::PostAuthor.bit(),
        ];
        let first = i % 7 + if i > 60 { 3 } else { 0 };
        let disclosures: Vec<Disclosure> = (first..first + i % 4)
            .map(|m| Disclosure {
                subject: Subject::Member(id(MemberId::parse, &format!("m-{m:02}"))),
                fields: FieldSet::from_bits(fields[((i + m) % 3) as usize]),
            })
            .chain(std::iter::once(Disclosure {
                subject: Subject::Group(id(GroupId::parse, "g-1")),
                fields: FieldSet::from_bits(Field::GroupName.bit()),
            }))
            .collect();
        consentry_types::DisclosureRecord {
            at: Instant::from_secs(1_600_000_000 + i as i64 * 60),
            request_id: format!("{i:016x}"),
            app: id(AppId::parse, &format!("app-{}", i % 3)),
            developer: id(DeveloperId::parse, "dev"),
            group: id(GroupId::parse, &format!("g-{}", i % 2)),
            token_hash: format!("{i:064x}"),
            policy_version: (i / 40) as u32 + 1,
            route: "GET /v1/groups/{id}/members".into(),
            disclosures,
        }
    }

    /// Pages through every member's disclosures with the raw scan and checks each page, and
    /// the position it hands on, against the reference.
    fn check_against_reference(root: &std::path::Path) {
        let window = (
            Some(Instant::from_secs(1_600_000_000 + 30 * 60)),
            Some(Instant::from_secs(1_600_000_000 + 100 * 60)),
        );
        for m in 0..12 {
            let member = id(MemberId::parse, &format!("m-{m:02}"));
            for (window, limit) in [((None, None), 1000), (window, 1000), ((None, None), 3), (window, 1)] {
                let mut frontier = BTreeMap::new();
                let mut pages = 0;
                loop {
                    let page =
                        member_disclosures_page(root, &member, window, frontier.clone(), limit).unwrap();
                    let got: Vec<Row> = page
                        .data
                        .iter()
                        .map(|d| {
                            let (app, group, route) = (d.app.clone(), d.group.clone(), d.route.clone());
                            (d.node.clone(), d.seq, app, group, route, d.policy_version, d.fields.clone())
                        })
                        .collect();
                    let expected = reference(root, &member, window, &frontier, limit);
                    assert_eq!(got, expected, "{member} {window:?} after {frontier:?} limit {limit}");
                    let more = reference(root, &member, window, &frontier, limit + 1).len() > limit;
                    assert_eq!(page.paging.after.is_some(), more, "{member}: paging");
                    let Some(after) = page.paging.after else { break };
                    let names: Vec<String> =
                        consentry_ledger::streams(root).unwrap().iter().map(|s| s.name()).collect();
                    frontier = parse_after(Some(&after), &names).unwrap();
                    pages += 1;
                    assert!(pages < 200, "paging never ends");
                }
            }
        }
    }

    /// Differential: the raw scan by member number returns exactly what decoding every record
    /// and comparing subjects returns, for members seen early, late, never, and in between.
    #[test]
    fn the_raw_scan_by_member_number_equals_decoding_every_record() {
        let dir = std::env::temp_dir().join(format!("consentry-transparency-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ledger = Ledger::open(&dir, LedgerOptions::default()).unwrap();
        for i in 0..120u64 {
            ledger.append(&record(i)).unwrap();
        }
        check_against_reference(&dir);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The same over a ledger root of three streams whose records interleave in time: each
    /// stream numbers names its own way, and a member first seen in one stream is found in
    /// the others.
    #[test]
    fn the_raw_scan_equals_decoding_every_record_across_streams() {
        let root =
            std::env::temp_dir().join(format!("consentry-transparency-streams-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let nodes = ["node-a", "node-b", "node-c"];
        let ledgers: Vec<Ledger> = nodes
            .iter()
            .map(|n| {
                Ledger::open_stream(&root, &NodeId::parse(n).unwrap(), LedgerOptions::default()).unwrap()
            })
            .collect();
        for i in 0..150u64 {
            // Uneven shares: node-c records only every fifth, node-a most.
            let stream = if i % 5 == 0 { 2 } else { (i % 3 % 2) as usize };
            ledgers[stream].append(&record(i)).unwrap();
        }
        drop(ledgers);
        check_against_reference(&root);
        let _ = std::fs::remove_dir_all(&root);
    }
}
