//! Member transparency: which apps received which of a member's fields, and when, read from
//! the ledger as a stream.

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
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "1 to 1000, default 100"),
        ("after" = Option<u64>, Query, description = "the last seq of the previous page"),
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
    let after: u64 = match params.get("after") {
        Some(text) => text.parse().map_err(|_| ApiError::bad_request("after must be a record number"))?,
        None => 0,
    };
    let dir: PathBuf = state.ledger_dir.clone().ok_or_else(|| {
        ApiError::new(axum::http::StatusCode::NOT_FOUND, "not-found", "this server keeps no ledger")
    })?;
    let found =
        blocking(&state.service, move |_| member_disclosures_page(&dir, &member, (from, to), after, limit))
            .await?;
    Ok(Json(found))
}

/// One page of what the ledger in `dir` says `member` was disclosed in, oldest first: records
/// after `after` within the window, at most `limit`. Reads the ledger as raw records and
/// compares the member's number (learned from the ledger's own names entries), resolving names
/// only for the records that disclosed the member.
pub(crate) fn member_disclosures_page(
    dir: &std::path::Path,
    member: &MemberId,
    (from, to): (Option<Instant>, Option<Instant>),
    after: u64,
    limit: usize,
) -> Result<MemberDisclosures, ApiError> {
    let failed = |e: consentry_ledger::LedgerError| ApiError::internal(&e.to_string());
    let mut entries = RawEntries::open(dir).map_err(failed)?;
    let mut record = RawRecord::default();
    let mut number = None;
    let mut data = Vec::new();
    let mut more = false;
    while entries.next_into(&mut record).map_err(failed)? {
        if record.seq <= after || from.is_some_and(|f| record.at < f) || to.is_some_and(|t| record.at >= t) {
            continue;
        }
        if number.is_none() {
            number = entries.member_number(member.as_str());
        }
        let Some(wanted) = number else { continue };
        // Members are kept in number order.
        let Ok(found) = record.members.binary_search_by_key(&wanted, |(n, _)| *n) else { continue };
        let fields = record.members.get(found).map(|(_, f)| FieldSet::from_bits(*f)).unwrap_or_default();
        if data.len() == limit {
            more = true;
            break;
        }
        let name = |n: u64| entries.name(n).unwrap_or_default().to_string();
        data.push(MemberDisclosure {
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
    let next = more.then(|| data.last().map(|d: &MemberDisclosure| d.seq.to_string())).flatten();
    Ok(MemberDisclosures { data, paging: crate::groups::Paging { after: next } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use consentry_ledger::{Entries, LedgerOptions};
    use consentry_types::{AppId, DeveloperId, Disclosure, Field, GroupId, Subject};

    fn id<T>(parse: fn(&str) -> Result<T, consentry_types::InvalidId>, text: &str) -> T {
        parse(text).unwrap_or_else(|e| unreachable!("{e}"))
    }

    /// The reference: every record decoded with its names, filtered by subject.
    fn reference(
        dir: &std::path::Path,
        member: &MemberId,
        window: (Option<Instant>, Option<Instant>),
        after: u64,
        limit: usize,
    ) -> Vec<(u64, String, String, String, u32, Vec<String>)> {
        let mut out = Vec::new();
        for entry in Entries::open(dir).unwrap_or_else(|e| unreachable!("{e}")) {
            let entry = entry.unwrap_or_else(|e| unreachable!("{e}"));
            let r = &entry.record;
            if entry.seq <= after || window.0.is_some_and(|f| r.at < f) || window.1.is_some_and(|t| r.at >= t)
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

    /// Differential: the raw scan by member number returns exactly what decoding every record
    /// and comparing subjects returns, for members seen early, late, never, and in between.
    #[test]
    fn the_raw_scan_by_member_number_equals_decoding_every_record() {
        let dir = std::env::temp_dir().join(format!("consentry-transparency-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ledger = Ledger::open(&dir, LedgerOptions::default()).unwrap_or_else(|e| unreachable!("{e}"));
        let fields = [
            Field::MemberName.bit(),
            Field::MemberPicture.bit() | Field::MemberName.bit(),
            Field::PostAuthor.bit(),
        ];
        for i in 0..120u64 {
            // Record i discloses members i % 7 .. i % 7 + i % 4 (a member first seen late, some never).
            let first = i % 7 + if i > 60 { 3 } else { 0 };
            let disclosures: Vec<Disclosure> = (first..first + i % 4)
                .map(|m| Disclosure {
                    subject: Subject::Member(id(MemberId::parse, &format!("m-{m:02}"))),
                    fields: FieldSet::from_bits(fields.get((i + m) as usize % 3).copied().unwrap_or(1)),
                })
                .chain(std::iter::once(Disclosure {
                    subject: Subject::Group(id(GroupId::parse, "g-1")),
                    fields: FieldSet::from_bits(Field::GroupName.bit()),
                }))
                .collect();
            let record = consentry_types::DisclosureRecord {
                at: Instant::from_secs(1_600_000_000 + i as i64 * 60),
                request_id: format!("{i:016x}"),
                app: id(AppId::parse, &format!("app-{}", i % 3)),
                developer: id(DeveloperId::parse, "dev"),
                group: id(GroupId::parse, &format!("g-{}", i % 2)),
                token_hash: format!("{i:064x}"),
                policy_version: (i / 40) as u32 + 1,
                route: "GET /v1/groups/{id}/members".into(),
                disclosures,
            };
            ledger.append(&record).unwrap_or_else(|e| unreachable!("{e}"));
        }
        let window = (
            Some(Instant::from_secs(1_600_000_000 + 30 * 60)),
            Some(Instant::from_secs(1_600_000_000 + 100 * 60)),
        );
        for m in 0..12 {
            let member = id(MemberId::parse, &format!("m-{m:02}"));
            for (window, after, limit) in
                [((None, None), 0, 1000), (window, 0, 1000), ((None, None), 50, 3), ((None, None), 0, 1)]
            {
                let page = member_disclosures_page(&dir, &member, window, after, limit)
                    .unwrap_or_else(|e| unreachable!("{e:?}"));
                let got: Vec<_> = page
                    .data
                    .iter()
                    .map(|d| {
                        (
                            d.seq,
                            d.app.clone(),
                            d.group.clone(),
                            d.route.clone(),
                            d.policy_version,
                            d.fields.clone(),
                        )
                    })
                    .collect();
                let expected = reference(&dir, &member, window, after, limit);
                assert_eq!(got, expected, "{member} {window:?} after {after} limit {limit}");
                let more = reference(&dir, &member, window, after, limit + 1).len() > limit;
                assert_eq!(page.paging.after.is_some(), more, "{member}: paging");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
