//! Audits from the console: *did* and *could* for the active policy, a stored version or a
//! pasted draft over a window, run in the background exactly as `POST /platform/v1/audits`
//! runs them (same policy choice, same window rules, same report); a page that refreshes with
//! a progress bar until it ends; then charts, sortable tables, the HTML report, the CSV,
//! deletion manifests, and (for privacy officers) one remediation case per developer that did.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use askama::Template;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use consentry_audit::AuditReport;
use consentry_store::CaseState;
use consentry_types::{DeveloperId, OperatorRole};
use serde_json::Value;

use super::charts::BarChart;
use super::jobs::{Job, JobKind, JobResult, Jobs};
use super::session::{done, Signed};
use super::view::{self, key_label, Chrome, ConsoleError, AUDITORS};
use crate::extract::blocking;
use crate::problem::ApiError;
use crate::ApiState;

/// A member of a JSON object, or null.
fn at<'a>(value: &'a Value, key: &str) -> &'a Value {
    value.get(key).unwrap_or(&Value::Null)
}

/// Who opens remediation cases from an audit: it revokes apps (a privacy officer's or
/// operator's call) and needs the audit's results (an auditor's or privacy officer's).
const CASE_OPENERS: &[OperatorRole] = &[OperatorRole::PrivacyOfficer];

pub(crate) struct JobLine {
    pub id: u64,
    pub label: String,
    pub by: String,
    pub started: String,
    pub state: &'static str,
}

fn job_state(job: &Job) -> &'static str {
    match job.outcome.lock().ok().as_deref() {
        Some(None) => "running",
        Some(Some(Ok(_))) => "done",
        _ => "failed",
    }
}

#[derive(Template)]
#[template(path = "console/audits.html")]
struct AuditsPage {
    chrome: Chrome,
    versions: Vec<u32>,
    active: Option<u32>,
    jobs: Vec<JobLine>,
}

/// `GET /console/audits`: the form and the recent audits.
pub(crate) async fn form(
    State(state): State<ApiState>,
    signed: Signed,
    RawQuery(query): RawQuery,
) -> Result<Response, ConsoleError> {
    signed.require(AUDITORS)?;
    let params = view::query(query, &["done", "n"])?;
    let (versions, active) = blocking(&state.service, |s| {
        let map = |e| ApiError::from(consentry_service::ServiceError::from(e));
        let versions = s.store().policy_versions().map_err(map)?.into_iter().map(|v| v.version).collect();
        let active = s.store().active_policy().map_err(map)?.map(|p| p.version);
        Ok((versions, active))
    })
    .await?;
    let jobs = state
        .console
        .jobs
        .list(JobKind::Audit)
        .iter()
        .map(|j| JobLine {
            id: j.id,
            label: j.label.clone(),
            by: j.started_by.clone(),
            started: view::when(j.started_at),
            state: job_state(j),
        })
        .collect();
    let mut chrome = signed.chrome("/console/audits", "Audits");
    chrome.notice = view::notice(&params);
    Ok(view::html(&AuditsPage { chrome, versions, active, jobs }))
}

/// `POST /console/audits`: `policy` (`active`, `version` with `version`, or `draft` with
/// `draft`), and a window (`from`/`to` dates, or `since`).
pub(crate) async fn start(
    State(state): State<ApiState>,
    signed: Signed,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    signed.require(AUDITORS)?;
    let form = signed.form(&headers, &body, &["policy", "version", "draft", "from", "to", "since"])?;
    let nonempty = |name: &str| form.get(name).map(str::trim).filter(|v| !v.is_empty()).map(str::to_string);
    let (version, text) = match form.get("policy").unwrap_or("active") {
        "active" => (None, None),
        "version" => {
            let v = nonempty("version")
                .and_then(|v| v.parse::<u32>().ok())
                .ok_or_else(|| ConsoleError::bad_request("choose a stored version"))?;
            (Some(v), None)
        }
        "draft" => {
            let text = form.get("draft").unwrap_or_default().replace("\r\n", "\n");
            if text.trim().is_empty() {
                return Err(ConsoleError::bad_request("paste the draft's Cedar text"));
            }
            if text.len() > crate::POLICY_BODY_LIMIT {
                return Err(ConsoleError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "a draft is at most 1 MiB of text",
                ));
            }
            (None, Some(text))
        }
        _ => return Err(ConsoleError::bad_request("policy must be active, version or draft")),
    };
    let (from, to) = (nonempty("from"), nonempty("to"));
    let since = if from.is_some() { None } else { nonempty("since") };
    let (policy, window) = blocking(&state.service, move |s| {
        let window = crate::audits::window(from.as_deref(), to.as_deref(), since.as_deref(), s.now())
            .map_err(ApiError::bad_request)?;
        Ok((crate::audits::audited_policy(s, version, text)?, window))
    })
    .await?;
    let label = format!("{}, {} to {}", policy.1, view::when(window.0), view::when(window.1));
    let dir = state.ledger_dir.clone().unwrap_or_default();
    let total = state.console.ledger_records(state.ledger.as_deref());
    let service = state.service.clone();
    let by = key_label(Some(&signed.operator.name), &signed.operator.key_id);
    let job = state
        .console
        .jobs
        .start(JobKind::Audit, label, by, state.service.now(), total, move |progress| {
            crate::audits::audit_report(&service, &dir, &policy, window, &mut |records| {
                progress.store(records, Ordering::Relaxed)
            })
            .map(|report| JobResult::Audit(Arc::new(report)))
            .map_err(|e| e.problem.detail)
        })
        .map_err(|_| {
            ConsoleError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "{} jobs are running, the most at once; start this audit when one ends",
                    super::MAX_RUNNING_JOBS
                ),
            )
        })?;
    Ok(axum::response::Redirect::to(&format!("/console/audits/{}", job.id)).into_response())
}

fn job_of(state: &ApiState, path: Result<Path<String>, PathRejection>) -> Result<Arc<Job>, ConsoleError> {
    let id = path
        .ok()
        .and_then(|Path(raw)| raw.parse::<u64>().ok())
        .ok_or_else(|| ConsoleError::bad_request("an audit id is a whole number"))?;
    state
        .console
        .jobs
        .get(id)
        .filter(|j| j.kind == JobKind::Audit)
        .ok_or_else(|| ConsoleError::new(StatusCode::NOT_FOUND, "no such audit (only the last few are kept)"))
}

/// The finished report of an audit job, or why there is none.
fn report_of(job: &Job) -> Result<Arc<AuditReport>, ConsoleError> {
    let outcome =
        job.outcome.lock().map_err(|_| ConsoleError::new(StatusCode::INTERNAL_SERVER_ERROR, "lost"))?;
    match outcome.as_ref() {
        Some(Ok(JobResult::Audit(report))) => Ok(report.clone()),
        Some(Err(error)) => Err(ConsoleError::new(StatusCode::UNPROCESSABLE_ENTITY, error.clone())),
        Some(Ok(JobResult::Verification(_))) => Err(ConsoleError::new(StatusCode::NOT_FOUND, "not an audit")),
        None => Err(ConsoleError::new(StatusCode::CONFLICT, "the audit is still running")),
    }
}

pub(crate) struct DidRow {
    pub app: String,
    pub developer: String,
    pub category: String,
    pub violations: u64,
    pub members: u64,
    pub groups: u64,
    pub first: String,
    pub last: String,
    pub fields: String,
}

pub(crate) struct CouldRow {
    pub app: String,
    pub developer: String,
    pub category: String,
    pub groups: u64,
    pub members: u64,
    pub fields: String,
    pub member_days: String,
    pub used: &'static str,
}

pub(crate) struct Summary {
    pub developers_could: u64,
    pub developers_did: u64,
    pub could_but_did_not: u64,
    pub apps_could: u64,
    pub apps_did: u64,
    pub violations: u64,
    pub members_affected: u64,
    pub records: u64,
    pub disclosures: u64,
    pub seconds: String,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    chrome: Chrome,
    id: u64,
    label: String,
    by: String,
    started: String,
    running: bool,
    progress: (u64, u64),
    failure: Option<String>,
    summary: Option<Summary>,
    chart: Option<BarChart>,
    did: Vec<DidRow>,
    could: Vec<CouldRow>,
    manifests: Vec<String>,
    may_open_cases: bool,
}

fn first_day(value: &Value) -> String {
    value.as_str().and_then(|t| t.get(..10)).unwrap_or("-").to_string()
}

fn rows(json: &Value) -> (Summary, Vec<DidRow>, Vec<CouldRow>) {
    let s = &at(json, "summary");
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let summary = Summary {
        developers_could: n(at(s, "developers_could")),
        developers_did: n(at(s, "developers_did")),
        could_but_did_not: n(at(s, "developers_could_but_did_not")),
        apps_could: n(at(s, "apps_could")),
        apps_did: n(at(s, "apps_did")),
        violations: n(at(s, "violating_disclosures")),
        members_affected: n(at(s, "members_affected")),
        records: n(at(s, "records_checked")),
        disclosures: n(at(s, "disclosures_checked")),
        seconds: format!("{:.2}", at(s, "seconds").as_f64().unwrap_or(0.0)),
    };
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let did_apps: Vec<String> = list(at(json, "did")).iter().map(|a| text(at(a, "app"))).collect();
    let did = list(at(json, "did"))
        .iter()
        .map(|a| DidRow {
            app: text(at(a, "app")),
            developer: text(at(a, "developer")),
            category: text(at(a, "category")),
            violations: n(at(a, "violations")),
            members: n(at(a, "members_affected")),
            groups: n(at(a, "groups")),
            first: first_day(at(a, "first")),
            last: first_day(at(a, "last")),
            fields: at(a, "by_field")
                .as_object()
                .map(|m| m.iter().map(|(f, c)| format!("{f}: {}", n(c))).collect::<Vec<_>>().join(", "))
                .unwrap_or_default(),
        })
        .collect();
    let could = list(at(json, "could"))
        .iter()
        .map(|a| CouldRow {
            app: text(at(a, "app")),
            developer: text(at(a, "developer")),
            category: text(at(a, "category")),
            groups: n(at(a, "groups_exposed")),
            members: n(at(a, "members_exposed")),
            fields: list(at(a, "fields")).iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "),
            member_days: format!("{:.1}", at(a, "member_days").as_f64().unwrap_or(0.0)),
            used: if did_apps.contains(&text(at(a, "app"))) { "yes" } else { "no" },
        })
        .collect();
    (summary, did, could)
}

/// Violating disclosures per day, one colour per app (the eight with most, then the others).
fn chart(report: &AuditReport) -> BarChart {
    let mut totals: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for ((_, app), n) in &report.did.by_day {
        *totals.entry(app.as_str()).or_default() += n;
    }
    let mut top: Vec<(&str, u64)> = totals.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let named: Vec<&str> = top.iter().take(8).map(|(a, _)| *a).collect();
    let mut series: Vec<String> = named.iter().map(|a| a.to_string()).collect();
    if top.len() > named.len() {
        series.push("other apps".into());
    }
    let mut days: std::collections::BTreeMap<&str, Vec<u64>> = std::collections::BTreeMap::new();
    for ((day, app), n) in &report.did.by_day {
        let slot = named.iter().position(|a| *a == app.as_str()).unwrap_or(named.len());
        let values = days.entry(day.as_str()).or_insert_with(|| vec![0; series.len()]);
        if let Some(v) = values.get_mut(slot) {
            *v += n;
        }
    }
    BarChart::stacked(
        "Disclosures the policy denies, per day and app",
        series,
        days.into_iter().map(|(d, v)| (d.to_string(), v)).collect(),
    )
}

/// `GET /console/audits/{id}`: progress while it runs (the page refreshes itself), then results.
pub(crate) async fn show(
    State(state): State<ApiState>,
    signed: Signed,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Response, ConsoleError> {
    signed.require(AUDITORS)?;
    let params = view::query(query, &["done", "n"])?;
    let job = job_of(&state, path)?;
    let running = job.running();
    let (mut summary, mut chart_view, mut did, mut could, mut manifests, mut failure) =
        (None, None, Vec::new(), Vec::new(), Vec::new(), None);
    if !running {
        match report_of(&job) {
            Ok(report) => {
                let json = crate::audits::report_json(&report);
                let (s, d, c) = rows(&json);
                summary = Some(s);
                did = d;
                could = c;
                chart_view = Some(chart(&report));
                manifests = report.did.manifests.keys().map(|d| d.to_string()).collect();
            }
            Err(error) => failure = Some(error.message),
        }
    }
    let mut chrome = signed.chrome("/console/audits", format!("Audit {}", job.id));
    chrome.notice = view::notice(&params);
    let page = AuditPage {
        chrome,
        id: job.id,
        label: job.label.clone(),
        by: job.started_by.clone(),
        started: view::when(job.started_at),
        running,
        progress: Jobs::fraction(&job),
        failure,
        summary,
        chart: chart_view,
        did,
        could,
        manifests,
        may_open_cases: CASE_OPENERS.contains(&signed.operator.role),
    };
    Ok(view::html(&page))
}

fn download(content_type: &'static str, filename: &str, body: String) -> Response {
    let disposition = format!("attachment; filename=\"{filename}\"");
    let mut response =
        ([(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], body).into_response();
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        response.headers_mut().insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// `GET /console/audits/{id}/report.html`: the same self-contained file `consentry audit
/// --format html` writes.
pub(crate) async fn report_html(
    State(state): State<ApiState>,
    signed: Signed,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ConsoleError> {
    report_file(&state, &signed, path, ("text/html; charset=utf-8", "html"), crate::report::report_html)
}

/// `GET /console/audits/{id}/report.csv`.
pub(crate) async fn report_csv(
    State(state): State<ApiState>,
    signed: Signed,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ConsoleError> {
    report_file(&state, &signed, path, ("text/csv; charset=utf-8", "csv"), crate::report::report_csv)
}

/// An audit job's report as a download of one kind: `(content type, extension)`.
fn report_file(
    state: &ApiState,
    signed: &Signed,
    path: Result<Path<String>, PathRejection>,
    (content_type, extension): (&'static str, &str),
    render: fn(&AuditReport) -> String,
) -> Result<Response, ConsoleError> {
    signed.require(AUDITORS)?;
    let job = job_of(state, path)?;
    let report = report_of(&job)?;
    Ok(download(content_type, &format!("audit-{}.{extension}", job.id), render(&report)))
}

/// `GET /console/audits/{id}/manifests/{developer}.json|csv`: one developer's deletion manifest.
pub(crate) async fn manifest(
    State(state): State<ApiState>,
    signed: Signed,
    paths: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ConsoleError> {
    signed.require(AUDITORS)?;
    let Path((id, file)) = paths.map_err(|_| ConsoleError::bad_request("bad path"))?;
    let job = job_of(&state, Ok(Path(id)))?;
    let report = report_of(&job)?;
    let (developer, csv) = match (file.strip_suffix(".json"), file.strip_suffix(".csv")) {
        (Some(d), _) => (d, false),
        (_, Some(d)) => (d, true),
        _ => return Err(ConsoleError::bad_request("a manifest is DEVELOPER.json or DEVELOPER.csv")),
    };
    let developer = DeveloperId::parse(developer).map_err(|e| ConsoleError::bad_request(e.to_string()))?;
    let missing = || ConsoleError::new(StatusCode::NOT_FOUND, "this audit found nothing for that developer");
    if csv {
        let body = crate::report::manifest_csv(&report, &developer).ok_or_else(missing)?;
        Ok(download("text/csv; charset=utf-8", &format!("{developer}.csv"), body))
    } else {
        let body = crate::report::manifest_json(&report, &developer).ok_or_else(missing)?;
        let text = serde_json::to_string_pretty(&body).unwrap_or_default() + "\n";
        Ok(download("application/json", &format!("{developer}.json"), text))
    }
}

/// `POST /console/audits/{id}/cases`: one case per developer the audit found (`deadline_days`
/// to attest), as `consentry case open` opens them; a developer with a case still open is
/// skipped.
pub(crate) async fn open_cases(
    State(state): State<ApiState>,
    signed: Signed,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    signed.require(CASE_OPENERS)?;
    let form = signed.form(&headers, &body, &["deadline_days"])?;
    let job = job_of(&state, path)?;
    let report = report_of(&job)?;
    let deadline: i64 = form
        .get("deadline_days")
        .unwrap_or("30")
        .trim()
        .parse()
        .map_err(|_| ConsoleError::bad_request("the deadline is a whole number of days"))?;
    let operator = signed.operator.clone();
    let opened = blocking(&state.service, move |s| {
        let json = crate::audits::report_json(&report);
        let open_for: Vec<DeveloperId> = s
            .store()
            .cases()
            .map_err(|e| ApiError::from(consentry_service::ServiceError::from(e)))?
            .into_iter()
            .filter(|c| !matches!(c.state, CaseState::Closed | CaseState::Failed))
            .map(|c| c.developer)
            .collect();
        let mut opened = 0u64;
        for developer in report.did.manifests.keys() {
            if open_for.contains(developer) {
                continue;
            }
            let manifest = at(&json, "deletion_manifests")
                .get(developer.as_str())
                .map(Value::to_string)
                .unwrap_or_else(|| "{}".to_string());
            s.open_case(developer, &manifest, deadline).map_err(ApiError::from)?;
            opened += 1;
        }
        tracing::info!(key = %operator.key_id, opened, "cases opened from an audit in the console");
        Ok(opened)
    })
    .await?;
    Ok(done("/console/remediation", "cases-opened", Some(opened)))
}
