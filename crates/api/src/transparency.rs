//! Member transparency: which apps received which of a member's fields, and when, read from
//! every stream of the ledger (every node's), merged by instant.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::Json;
use consentry_ledger::{Entries, Ledger};
use consentry_service::{DisclosureRecord, DisclosureSink};
use consentry_types::{Instant, MemberId, OperatorRole, Subject};
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
        let mut frontier = parse_after(after.as_deref(), &names)?;
        let entries = Entries::open(&dir).map_err(|e| ApiError::internal(&e.to_string()))?;
        let mut data = Vec::new();
        let mut more = false;
        for entry in entries {
            let entry = entry.map_err(|e| ApiError::internal(&e.to_string()))?;
            let record = &entry.record;
            let node = entry.node.as_ref().map_or_else(|| "single-node".to_string(), |n| n.to_string());
            let seen = frontier.get(&node).copied().unwrap_or(0);
            if entry.seq <= seen || from.is_some_and(|f| record.at < f) || to.is_some_and(|t| record.at >= t)
            {
                continue;
            }
            let Some(fields) = record
                .disclosures
                .iter()
                .find(|d| d.subject == Subject::Member(member.clone()))
                .map(|d| d.fields)
            else {
                continue;
            };
            if data.len() == limit {
                more = true;
                break;
            }
            frontier.insert(node.clone(), entry.seq);
            data.push(MemberDisclosure {
                node,
                seq: entry.seq,
                at: record.at.to_string(),
                app: record.app.to_string(),
                developer: record.developer.to_string(),
                group: record.group.to_string(),
                route: record.route.clone(),
                policy_version: record.policy_version,
                fields: fields.iter().map(|f| f.as_str().to_string()).collect(),
            });
        }
        let next = more.then(|| {
            frontier.iter().map(|(node, seq)| format!("{node}:{seq}")).collect::<Vec<_>>().join(",")
        });
        Ok(MemberDisclosures { data, paging: crate::groups::Paging { after: next } })
    })
    .await?;
    Ok(Json(found))
}

/// Where the previous page ended in each stream: `after` is `NODE:SEQ,NODE:SEQ…` (what
/// `paging.after` says), or, for a ledger of one stream, a plain record number. Streams are
/// read in their own order, so a position per stream is exact however records of different
/// nodes interleave in time, and records appended after a page was read are never skipped.
fn parse_after(after: Option<&str>, streams: &[String]) -> Result<BTreeMap<String, u64>, ApiError> {
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
