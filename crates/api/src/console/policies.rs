//! Policies: every version with its author, approvals and activations; one version's text with
//! a diff against the active one, its previews on real history, its proof results (none are
//! recorded yet), and the approve, activate and preview buttons for the roles that may use
//! them. Each button calls the service exactly as the platform API's call does.

use askama::Template;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use consentry_types::OperatorRole;
use serde_json::Value;

use super::diff::{self, DiffLine};
use super::session::{done, Signed};
use super::view::{self, key_label, Chrome, ConsoleError, READERS};
use crate::extract::blocking;
use crate::platform::{KeyRef, PolicyBody};
use crate::problem::ApiError;
use crate::ApiState;

/// A member of a JSON object, or null.
fn at<'a>(value: &'a Value, key: &str) -> &'a Value {
    value.get(key).unwrap_or(&Value::Null)
}

/// Who may submit and activate versions (as the platform API).
const AUTHORS: &[OperatorRole] = &[OperatorRole::Operator, OperatorRole::PrivacyOfficer];
/// Who may preview a stored version and keep the preview (as the platform API).
const PREVIEWERS: &[OperatorRole] = &[OperatorRole::Operator, OperatorRole::PrivacyOfficer];

fn key(key: &KeyRef) -> String {
    key_label(key.name.as_deref(), &key.id)
}

fn status(body: &PolicyBody) -> &'static str {
    if body.active {
        "active"
    } else if !body.activations.is_empty() {
        "was active"
    } else if body.approvals.iter().any(|a| a.counts) {
        "approved, not active"
    } else {
        "awaiting approval"
    }
}

fn version_of(path: Result<Path<String>, PathRejection>) -> Result<u32, ConsoleError> {
    path.ok()
        .and_then(|Path(raw)| raw.parse::<u32>().ok())
        .ok_or_else(|| ConsoleError::bad_request("a policy version is a whole number"))
}

pub(crate) struct VersionLine {
    pub version: u32,
    pub author: String,
    pub created: String,
    pub status: &'static str,
    pub approvals: String,
    pub activations: usize,
}

#[derive(Template)]
#[template(path = "console/policies.html")]
struct PoliciesPage {
    chrome: Chrome,
    versions: Vec<VersionLine>,
    may_submit: bool,
}

/// `GET /console/policies`.
pub(crate) async fn list(
    State(state): State<ApiState>,
    signed: Signed,
    RawQuery(query): RawQuery,
) -> Result<Response, ConsoleError> {
    signed.require(READERS)?;
    let params = view::query(query, &["done", "n"])?;
    let bodies = blocking(&state.service, crate::platform::policy_bodies).await?;
    let versions = bodies
        .iter()
        .rev()
        .map(|b| VersionLine {
            version: b.version,
            author: key(&b.author),
            created: b.created_at.get(..10).unwrap_or_default().to_string(),
            status: status(b),
            approvals: format!(
                "{} of {} count",
                b.approvals.iter().filter(|a| a.counts).count(),
                b.approvals.len()
            ),
            activations: b.activations.len(),
        })
        .collect();
    let mut chrome = signed.chrome("/console/policies", "Policies");
    chrome.notice = view::notice(&params);
    Ok(view::html(&PoliciesPage { chrome, versions, may_submit: AUTHORS.contains(&signed.operator.role) }))
}

/// `POST /console/policies`: submits `text` as a new version (authored by the signed-in key).
pub(crate) async fn submit(
    State(state): State<ApiState>,
    signed: Signed,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    signed.require(AUTHORS)?;
    let form = signed.form(&headers, &body, &["text"])?;
    let text = form.get("text").unwrap_or_default().replace("\r\n", "\n");
    let operator = signed.operator.clone();
    let version =
        blocking(&state.service, move |s| s.submit_policy(&text, &operator).map_err(ApiError::from)).await?;
    Ok(done(&format!("/console/policies/{version}"), "submitted", Some(u64::from(version))))
}

pub(crate) struct Approval {
    pub by: String,
    pub at: String,
    pub counts: bool,
}

pub(crate) struct Activation {
    pub by: String,
    pub at: String,
    pub reason: String,
}

/// Apps that would lose or gain access, with counts.
pub(crate) struct Exposure {
    pub app: String,
    pub developer: String,
    pub fields: String,
    pub members: u64,
    pub groups: u64,
}

pub(crate) struct PreviewView {
    pub by: String,
    pub at: String,
    pub window: String,
    pub against: String,
    pub denied: u64,
    pub loses: Vec<Exposure>,
    pub gains: Vec<Exposure>,
}

fn exposures(value: Option<&Value>) -> Vec<Exposure> {
    value
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|e| Exposure {
                    app: at(e, "app").as_str().unwrap_or_default().to_string(),
                    developer: at(e, "developer").as_str().unwrap_or("-").to_string(),
                    fields: at(e, "fields")
                        .as_array()
                        .map(|f| f.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
                        .unwrap_or_default(),
                    members: at(e, "members").as_u64().unwrap_or(0),
                    groups: at(e, "groups").as_u64().unwrap_or(0),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn preview_view(kept: &Value) -> PreviewView {
    let summary = &at(kept, "summary");
    let from = at(summary, "from").as_str().unwrap_or_default();
    let to = at(summary, "to").as_str().unwrap_or_default();
    PreviewView {
        by: at(kept, "by").as_str().unwrap_or_default().to_string(),
        at: at(kept, "at").as_str().unwrap_or_default().get(..16).unwrap_or_default().replace('T', " "),
        window: format!("{} to {}", from.get(..10).unwrap_or(from), to.get(..10).unwrap_or(to)),
        against: at(summary, "against_version").as_u64().map(|v| format!("version {v}")).unwrap_or_default(),
        denied: at(summary, "disclosures_the_draft_would_have_denied").as_u64().unwrap_or(0),
        loses: exposures(summary.get("loses")),
        gains: exposures(summary.get("gains")),
    }
}

#[derive(Template)]
#[template(path = "console/policy.html")]
struct PolicyPage {
    chrome: Chrome,
    version: u32,
    author: String,
    created: String,
    status: &'static str,
    text: String,
    approvals: Vec<Approval>,
    activations: Vec<Activation>,
    active_version: Option<u32>,
    /// `None` when this is the active version, there is none, or the texts are too long.
    diff: Option<Vec<DiffLine>>,
    previews: Vec<PreviewView>,
    /// Why the signed-in officer cannot approve, when they are an officer who cannot.
    approve_refused: Option<String>,
    may_approve: bool,
    may_activate: bool,
    activate_blocked: Option<&'static str>,
    may_preview: bool,
}

/// `GET /console/policies/{version}`.
pub(crate) async fn show(
    State(state): State<ApiState>,
    signed: Signed,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Response, ConsoleError> {
    signed.require(READERS)?;
    let params = view::query(query, &["done", "n"])?;
    let version = version_of(path)?;
    let me = signed.operator.clone();
    let (bodies, refusal) = blocking(&state.service, move |s| {
        let bodies = crate::platform::policy_bodies(s)?;
        let author = bodies.iter().find(|b| b.version == version).map(|b| b.author.id.clone());
        let refusal = match (author, me.role) {
            (Some(author), OperatorRole::PrivacyOfficer) => s.approval_refusal(&author, &me.key_id)?,
            _ => None,
        };
        Ok((bodies, refusal))
    })
    .await?;
    let active = bodies.iter().find(|b| b.active);
    let body = bodies.iter().find(|b| b.version == version).ok_or_else(|| {
        ConsoleError::new(StatusCode::NOT_FOUND, format!("there is no policy version {version}"))
    })?;
    let diff = match active {
        Some(active) if active.version != version => diff::lines(&active.text, &body.text),
        _ => None,
    };
    let role = signed.operator.role;
    let approved_by_me = body.approvals.iter().any(|a| a.by.id == signed.operator.key_id);
    let counts = body.approvals.iter().any(|a| a.counts);
    let activate_blocked = if body.active {
        Some("This version is the active policy.")
    } else if !counts {
        Some("A privacy officer outside its author's lineage must approve it before it can be activated.")
    } else {
        None
    };
    let mut chrome = signed.chrome("/console/policies", format!("Policy version {version}"));
    chrome.notice = view::notice(&params);
    let page = PolicyPage {
        chrome,
        version,
        author: key(&body.author),
        created: body.created_at.get(..16).unwrap_or_default().replace('T', " "),
        status: status(body),
        text: body.text.clone(),
        approvals: body
            .approvals
            .iter()
            .map(|a| Approval {
                by: key(&a.by),
                at: a.at.get(..16).unwrap_or_default().replace('T', " "),
                counts: a.counts,
            })
            .collect(),
        activations: body
            .activations
            .iter()
            .map(|a| Activation {
                by: key(&a.by),
                at: a.at.get(..16).unwrap_or_default().replace('T', " "),
                reason: a.reason.clone(),
            })
            .collect(),
        active_version: active.map(|a| a.version),
        diff,
        previews: body.previews.iter().rev().map(preview_view).collect(),
        approve_refused: if role == OperatorRole::PrivacyOfficer { refusal } else { None },
        may_approve: role == OperatorRole::PrivacyOfficer && !approved_by_me,
        may_activate: AUTHORS.contains(&role),
        activate_blocked,
        may_preview: PREVIEWERS.contains(&role),
    };
    Ok(view::html(&page))
}

/// `POST /console/policies/{version}/approve`: the signed-in privacy officer approves.
pub(crate) async fn approve(
    State(state): State<ApiState>,
    signed: Signed,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let version = version_of(path)?;
    signed.require(&[OperatorRole::PrivacyOfficer])?;
    signed.form(&headers, &body, &[])?;
    let operator = signed.operator.clone();
    blocking(&state.service, move |s| s.approve_policy(version, &operator).map_err(ApiError::from)).await?;
    Ok(done(&format!("/console/policies/{version}"), "approved", Some(u64::from(version))))
}

/// `POST /console/policies/{version}/activate`: with a `reason`.
pub(crate) async fn activate(
    State(state): State<ApiState>,
    signed: Signed,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let version = version_of(path)?;
    signed.require(AUTHORS)?;
    let form = signed.form(&headers, &body, &["reason"])?;
    let reason = form.get("reason").unwrap_or_default().to_string();
    let operator = signed.operator.clone();
    blocking(&state.service, move |s| s.activate_policy(version, &operator, &reason).map_err(ApiError::from))
        .await?;
    Ok(done(&format!("/console/policies/{version}"), "activated", Some(u64::from(version))))
}

/// `POST /console/policies/{version}/preview`: over `since` (e.g. `30d`), kept with the version.
pub(crate) async fn preview(
    State(state): State<ApiState>,
    signed: Signed,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let version = version_of(path)?;
    signed.require(PREVIEWERS)?;
    let form = signed.form(&headers, &body, &["since", "from", "to"])?;
    let nonempty = |name: &str| form.get(name).map(str::trim).filter(|v| !v.is_empty()).map(str::to_string);
    let (from, to) = (nonempty("from"), nonempty("to"));
    // A window given by dates wins over the default `since`.
    let since = if from.is_some() { None } else { nonempty("since") };
    let dir = state.ledger_dir.clone().unwrap_or_default();
    let by = signed.operator.name.clone();
    blocking(&state.service, move |s| {
        let window = crate::audits::window(from.as_deref(), to.as_deref(), since.as_deref(), s.now())
            .map_err(ApiError::bad_request)?;
        crate::audits::preview_and_keep(s, &dir, version, window, &by)
    })
    .await?;
    Ok(done(&format!("/console/policies/{version}"), "previewed", Some(u64::from(version))))
}
