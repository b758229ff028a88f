//! Member transparency: which apps received which of a member's fields, and when, read from
//! the ledger as a stream.

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
    /// The ledger record's sequence number (use as `after` for the next page).
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
        ("limit" = Option<usize>, Query, description = "1 to 1000, default 100"),
        ("after" = Option<u64>, Query, description = "the last seq of the previous page"),
    ),
    responses((status = 200, body = MemberDisclosures), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem, description = "this server keeps no ledger")),
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
    let after: u64 = match params.get("after") {
        Some(text) => text.parse().map_err(|_| ApiError::bad_request("after must be a record number"))?,
        None => 0,
    };
    let dir: PathBuf = state.ledger_dir.clone().ok_or_else(|| {
        ApiError::new(axum::http::StatusCode::NOT_FOUND, "not-found", "this server keeps no ledger")
    })?;
    let found = blocking(&state.service, move |_| {
        let entries = Entries::open(&dir).map_err(|e| ApiError::internal(&e.to_string()))?;
        let mut data = Vec::new();
        let mut more = false;
        for entry in entries {
            let entry = entry.map_err(|e| ApiError::internal(&e.to_string()))?;
            let record = &entry.record;
            if entry.seq <= after || from.is_some_and(|f| record.at < f) || to.is_some_and(|t| record.at >= t)
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
            data.push(MemberDisclosure {
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
        let next = more.then(|| data.last().map(|d: &MemberDisclosure| d.seq.to_string())).flatten();
        Ok(MemberDisclosures { data, paging: crate::groups::Paging { after: next } })
    })
    .await?;
    Ok(Json(found))
}
