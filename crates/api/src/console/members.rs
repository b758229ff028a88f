//! Members: look a member up and see what each app received of theirs, when, and under which
//! policy version, read from the ledger as `GET /platform/v1/members/{id}/disclosures` reads it.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::response::Response;
use consentry_types::MemberId;

use super::session::Signed;
use super::view::{self, Chrome, ConsoleError, READERS};
use crate::extract::blocking;
use crate::problem::ApiError;
use crate::ApiState;

/// Responses shown on one page (the most the platform API gives at once).
const PAGE: usize = 1000;

pub(crate) struct Row {
    /// The record's stream (its node) and its number there.
    pub node: String,
    pub seq: u64,
    pub at: String,
    pub app: String,
    pub developer: String,
    pub group: String,
    pub route: String,
    pub policy_version: u32,
    pub fields: String,
}

pub(crate) struct PerApp {
    pub app: String,
    pub developer: String,
    pub responses: u64,
    pub fields: String,
    pub versions: String,
    pub first: String,
    pub last: String,
}

/// Per app: developer, responses, fields, policy versions, first and last instant.
type AppTally = (String, u64, Vec<String>, Vec<u32>, String, String);

pub(crate) struct Lookup {
    pub member: String,
    pub name: Option<String>,
    pub rows: Vec<Row>,
    pub per_app: Vec<PerApp>,
    /// Where the next page starts: `paging.after` of the platform API, URL-encoded.
    pub next: Option<String>,
    /// Whether this page starts after an earlier one.
    pub later: bool,
}

#[derive(Template)]
#[template(path = "console/members.html")]
struct MembersPage {
    chrome: Chrome,
    query: String,
    lookup: Option<Lookup>,
    no_ledger: bool,
}

/// `GET /console/members?member=ID&after=NODE:SEQ,…` (`after` as the platform API takes it).
pub(crate) async fn page(
    State(state): State<ApiState>,
    signed: Signed,
    RawQuery(query): RawQuery,
) -> Result<Response, ConsoleError> {
    signed.require(READERS)?;
    let params = view::query(query, &["member", "after"])?;
    let raw = params.get("member").map(str::trim).unwrap_or_default().to_string();
    let after = params.get("after").map(str::to_string);
    let chrome = signed.chrome("/console/members", "Members");
    let Some(dir) = state.ledger_dir.clone() else {
        return Ok(view::html(&MembersPage { chrome, query: raw, lookup: None, no_ledger: true }));
    };
    if raw.is_empty() {
        return Ok(view::html(&MembersPage { chrome, query: raw, lookup: None, no_ledger: false }));
    }
    let member = MemberId::parse(&raw).map_err(|e| ConsoleError::bad_request(e.to_string()))?;
    let lookup = blocking(&state.service, move |s| {
        let name = s
            .store()
            .member(&member)
            .map_err(|e| ApiError::from(consentry_service::ServiceError::from(e)))?
            .map(|m| m.name);
        let streams = consentry_ledger::streams(&dir).map_err(|e| ApiError::internal(&e.to_string()))?;
        let names: Vec<String> = streams.iter().map(|s| s.name()).collect();
        let frontier = crate::transparency::parse_after(after.as_deref(), &names)?;
        let later = !frontier.is_empty();
        let found =
            crate::transparency::member_disclosures_page(&dir, &member, (None, None), frontier, PAGE)?;
        let mut per_app: BTreeMap<String, AppTally> = BTreeMap::new();
        for d in &found.data {
            let entry = per_app.entry(d.app.clone()).or_insert_with(|| {
                (d.developer.clone(), 0, Vec::new(), Vec::new(), d.at.clone(), d.at.clone())
            });
            entry.1 += 1;
            for field in &d.fields {
                if !entry.2.contains(field) {
                    entry.2.push(field.clone());
                }
            }
            if !entry.3.contains(&d.policy_version) {
                entry.3.push(d.policy_version);
            }
            entry.5.clone_from(&d.at);
        }
        let short = |at: &str| at.get(..16).unwrap_or_default().replace('T', " ");
        Ok(Lookup {
            member: member.to_string(),
            name,
            next: found.paging.after.map(|a| form_urlencoded::byte_serialize(a.as_bytes()).collect()),
            later,
            per_app: per_app
                .into_iter()
                .map(|(app, (developer, responses, mut fields, mut versions, first, last))| {
                    fields.sort();
                    versions.sort_unstable();
                    PerApp {
                        app,
                        developer,
                        responses,
                        fields: fields.join(", "),
                        versions: versions.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", "),
                        first: short(&first),
                        last: short(&last),
                    }
                })
                .collect(),
            rows: found
                .data
                .into_iter()
                .map(|d| Row {
                    node: d.node,
                    seq: d.seq,
                    at: short(&d.at),
                    app: d.app,
                    developer: d.developer,
                    group: d.group,
                    route: d.route,
                    policy_version: d.policy_version,
                    fields: d.fields.join(", "),
                })
                .collect(),
        })
    })
    .await?;
    Ok(view::html(&MembersPage { chrome, query: raw, lookup: Some(lookup), no_ledger: false }))
}
