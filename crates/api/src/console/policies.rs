//! Policies: every version with its author, approvals and activations; one version's text with
//! a diff against the active one, its previews on real history, its proofs (standing, kept
//! reviews, waivers), and the approve, activate, preview, prove and waive buttons for the roles
//! that may use them. Each button calls the service exactly as the platform API's call does.

use askama::Template;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use consentry_service::PROVERS;
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

/// Back to the version's page, saying what was done to it.
fn version_done(version: u32, what: &str) -> Response {
    done(&format!("/console/policies/{version}"), what, Some(u64::from(version)))
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
    Ok(version_done(version, "submitted"))
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

/// One invariant of a review: its name, whether it held, and each field it did not hold for.
pub(crate) struct InvariantView {
    pub name: String,
    pub proven: bool,
    /// (field, outcome, the situation that breaks it or why it is unknown).
    pub failures: Vec<(String, String, String)>,
}

/// A kept proof of the version.
pub(crate) struct ReviewView {
    pub by: String,
    pub at: String,
    pub passed: bool,
    pub solver: String,
    pub invariants: Vec<InvariantView>,
    /// Fields the policy may fail to evaluate for, with why.
    pub errors: Vec<(String, String, String)>,
    pub against: String,
    pub newly_allows: usize,
    pub newly_denies: usize,
}

/// The proofs section: standing, kept reviews (newest first), waivers, and what may be done.
pub(crate) struct ProofsView {
    pub standing: String,
    pub note: String,
    pub reviews: Vec<ReviewView>,
    pub waivers: Vec<(String, String, String)>,
    pub may_prove: bool,
    pub no_prover: bool,
    pub may_waive: bool,
}

fn outcomes(fields: &Value) -> Vec<(String, String, String)> {
    fields
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| at(f, "outcome").as_str() != Some("proven"))
        .map(|f| {
            let why = at(at(f, "witness"), "situation").as_str().or_else(|| at(f, "reason").as_str());
            (
                at(f, "field").as_str().unwrap_or_default().to_string(),
                at(f, "outcome").as_str().unwrap_or_default().to_string(),
                why.unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn short_instant(value: &Value) -> String {
    value.as_str().and_then(|t| t.get(..16)).unwrap_or_default().replace('T', " ")
}

/// The proofs section from the platform API's JSON of them (`proofs_of`).
fn proofs_view(kept: &Value, names: &std::collections::HashMap<String, String>) -> ProofsView {
    let name = |id: &Value| {
        let id = id.as_str().unwrap_or_default();
        key_label(names.get(id).map(String::as_str), id)
    };
    let standing = at(kept, "standing");
    let state = at(standing, "standing").as_str().unwrap_or("missing").to_string();
    let note = match state.as_str() {
        "passed" => format!("The latest proofs, recorded {}, passed.", short_instant(at(standing, "at"))),
        "failed" => format!(
            "The latest proofs, recorded {}, did not pass: the version cannot be approved unless a privacy officer waives them.",
            short_instant(at(standing, "at"))
        ),
        "waived" => {
            let waiver = at(standing, "waiver");
            format!(
                "Waived by {} on {}: {}",
                name(at(waiver, "by")),
                short_instant(at(waiver, "at")),
                at(waiver, "reason").as_str().unwrap_or_default()
            )
        }
        _ => "No proofs recorded for this version.".to_string(),
    };
    let reviews = at(kept, "proofs")
        .as_array()
        .into_iter()
        .flatten()
        .rev()
        .map(|p| {
            let review = at(p, "review");
            let comparison = at(review, "comparison");
            let count = |key: &str| at(comparison, key).as_array().map_or(0, Vec::len);
            ReviewView {
                by: name(at(p, "by")),
                at: short_instant(at(p, "at")),
                passed: at(p, "passed").as_bool().unwrap_or(false),
                solver: at(review, "solver").as_str().unwrap_or_default().to_string(),
                invariants: at(review, "invariants")
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|i| InvariantView {
                        name: at(i, "name").as_str().unwrap_or_default().to_string(),
                        proven: at(i, "proven").as_bool().unwrap_or(false),
                        failures: outcomes(at(i, "fields")),
                    })
                    .collect(),
                errors: outcomes(at(review, "never_errors")),
                against: at(comparison, "against").as_str().unwrap_or_default().to_string(),
                newly_allows: count("newly_allows"),
                newly_denies: count("newly_denies"),
            }
        })
        .collect();
    let waivers = at(kept, "waivers")
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            (
                name(at(w, "by")),
                short_instant(at(w, "at")),
                at(w, "reason").as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    ProofsView {
        standing: state,
        note,
        reviews,
        waivers,
        may_prove: false,
        no_prover: false,
        may_waive: false,
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
    proofs: ProofsView,
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
    let (bodies, refusal, kept, names) = blocking(&state.service, move |s| {
        let bodies = crate::platform::policy_bodies(s)?;
        let author = bodies.iter().find(|b| b.version == version).map(|b| b.author.id.clone());
        let refusal = match (author, me.role) {
            (Some(author), OperatorRole::PrivacyOfficer) => s.approval_refusal(&author, &me.key_id)?,
            _ => None,
        };
        let kept = match bodies.iter().any(|b| b.version == version) {
            true => crate::proofs::proofs_of(s, version)?,
            false => Value::Null,
        };
        let names: std::collections::HashMap<String, String> =
            s.operator_keys()?.into_iter().map(|k| (k.id, k.name)).collect();
        Ok((bodies, refusal, kept, names))
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
    let mut proofs = proofs_view(&kept, &names);
    proofs.no_prover = state.proofs.is_none();
    proofs.may_prove = PROVERS.contains(&role) && !proofs.no_prover;
    proofs.may_waive = role == OperatorRole::PrivacyOfficer
        && refusal.is_none()
        && !matches!(proofs.standing.as_str(), "passed" | "waived");
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
        proofs,
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
    let proofs = state.proofs.clone();
    blocking(&state.service, move |s| {
        crate::platform::approve_version(s, proofs.as_deref(), version, &operator)
    })
    .await?;
    Ok(version_done(version, "approved"))
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
    Ok(version_done(version, "activated"))
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
    Ok(version_done(version, "previewed"))
}

/// `POST /console/policies/{version}/proofs`: proves the version (against the active one) with
/// this server's prover and keeps the result with it.
pub(crate) async fn prove(
    State(state): State<ApiState>,
    signed: Signed,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let version = version_of(path)?;
    signed.require(PROVERS)?;
    signed.form(&headers, &body, &[])?;
    let proofs = state.proofs.clone().ok_or_else(|| {
        ConsoleError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("this server proves no policies: {}", consentry_prove::INSTALL_HINT),
        )
    })?;
    let operator = signed.operator.clone();
    blocking(&state.service, move |s| {
        crate::proofs::prove_version(s, &proofs, version, None, &operator).map(|_| ())
    })
    .await?;
    Ok(version_done(version, "proved"))
}

/// `POST /console/policies/{version}/waivers`: a privacy officer outside the author's lineage
/// lets the version be approved although its proofs did not pass, with a `reason` kept with it.
pub(crate) async fn waive(
    State(state): State<ApiState>,
    signed: Signed,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let version = version_of(path)?;
    signed.require(&[OperatorRole::PrivacyOfficer])?;
    let form = signed.form(&headers, &body, &["reason"])?;
    let reason = form.get("reason").unwrap_or_default().to_string();
    let operator = signed.operator.clone();
    blocking(&state.service, move |s| {
        s.waive_proofs(version, &operator, &reason).map(|_| ()).map_err(ApiError::from)
    })
    .await?;
    Ok(version_done(version, "waived"))
}
