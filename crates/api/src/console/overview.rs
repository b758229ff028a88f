//! The overview: disclosures per day by field and by policy version (from the ledger), apps,
//! installations and opt-ins now, versions awaiting approval or activation, open and overdue
//! cases, and the ledger's health (last verification, last checkpoint), with a button to
//! verify the ledger now.

use std::sync::Arc;

use askama::Template;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use consentry_store::CaseState;
use consentry_types::{AppStatus, Field, Instant};

use super::charts::BarChart;
use super::digest::LedgerDigest;
use super::jobs::{JobKind, JobResult, Jobs};
use super::session::{done, Signed};
use super::view::{self, count, key_label, Chrome, ConsoleError, READERS};
use crate::extract::blocking;
use crate::problem::ApiError;
use crate::ApiState;

/// Days the overview's charts cover, ending on the last day the ledger recorded.
const CHART_DAYS: i64 = 60;

pub(crate) struct PolicyLine {
    pub version: u32,
    pub author: String,
    pub created: String,
}

pub(crate) struct CaseLine {
    pub id: u64,
    pub developer: String,
    pub deadline: String,
    pub late_by: String,
}

pub(crate) struct VerificationLine {
    pub id: u64,
    pub started: String,
    pub by: String,
    pub running: bool,
    pub ok: bool,
    pub outcome: String,
    /// Per stream: its name, whether it verified, and what was found.
    pub streams: Vec<(String, bool, String)>,
}

/// One stream of the ledger (one node's) on the overview.
pub(crate) struct StreamHealth {
    pub name: String,
    pub records: String,
    pub last_record: String,
    pub last_checkpoint: String,
}

#[derive(Template)]
#[template(path = "console/overview.html")]
struct OverviewPage {
    chrome: Chrome,
    apps: Vec<(&'static str, String)>,
    developers: String,
    installations: String,
    opt_ins: String,
    active_policy: Option<u32>,
    awaiting_approval: Vec<PolicyLine>,
    awaiting_activation: Vec<PolicyLine>,
    cases: Vec<(&'static str, String)>,
    open_cases: String,
    overdue: Vec<CaseLine>,
    ledger_records: String,
    ledger_disclosures: String,
    last_record: String,
    streams: Vec<StreamHealth>,
    /// Why the ledger could not be read, if it could not.
    unreadable: Option<String>,
    verification: Option<VerificationLine>,
    window: String,
    by_field: BarChart,
    by_version: BarChart,
}

/// Everything the overview shows but the ledger's part, read through the store as the
/// platform API reads it.
struct Platform {
    apps: Vec<(&'static str, String)>,
    developers: String,
    installations: String,
    opt_ins: String,
    active_policy: Option<u32>,
    awaiting_approval: Vec<PolicyLine>,
    awaiting_activation: Vec<PolicyLine>,
    cases: Vec<(&'static str, String)>,
    open_cases: String,
    overdue: Vec<CaseLine>,
}

fn platform(service: &consentry_service::Service) -> Result<Platform, ApiError> {
    let store = service.store();
    let map = |e| ApiError::from(consentry_service::ServiceError::from(e));
    let now = service.now();
    let apps = store.apps().map_err(map)?;
    let status_count = |status: AppStatus| count(apps.iter().filter(|a| a.status == status).count() as u64);
    let mut developers: Vec<&str> = apps.iter().map(|a| a.developer.as_str()).collect();
    developers.sort_unstable();
    developers.dedup();
    let facts = store.facts_as_of(now).map_err(map)?;
    let policies = crate::platform::policy_bodies(service)?;
    let line = |p: &crate::platform::PolicyBody| PolicyLine {
        version: p.version,
        author: key_label(p.author.name.as_deref(), &p.author.id),
        created: p.created_at.get(..10).unwrap_or_default().to_string(),
    };
    let never_active = |p: &&crate::platform::PolicyBody| p.activations.is_empty() && !p.active;
    let awaiting_approval = policies
        .iter()
        .filter(never_active)
        .filter(|p| !p.approvals.iter().any(|a| a.counts))
        .map(line)
        .collect();
    let awaiting_activation = policies
        .iter()
        .filter(never_active)
        .filter(|p| p.approvals.iter().any(|a| a.counts))
        .map(line)
        .collect();
    let all_cases = store.cases().map_err(map)?;
    let states = [
        CaseState::DeletionRequested,
        CaseState::Overdue,
        CaseState::Attested,
        CaseState::Failed,
        CaseState::Closed,
    ];
    let cases = states
        .iter()
        .map(|s| (s.as_str(), count(all_cases.iter().filter(|c| c.state == *s).count() as u64)))
        .collect();
    let open = all_cases
        .iter()
        .filter(|c| {
            matches!(c.state, CaseState::DeletionRequested | CaseState::Overdue | CaseState::Attested)
        })
        .count();
    let overdue = all_cases
        .iter()
        .filter(|c| {
            c.state == CaseState::Overdue || (c.state == CaseState::DeletionRequested && c.deadline <= now)
        })
        .map(|c| CaseLine {
            id: c.id,
            developer: c.developer.to_string(),
            deadline: view::day(c.deadline),
            late_by: format!("{} days", (now.secs() - c.deadline.secs()).max(0) / 86_400),
        })
        .collect();
    Ok(Platform {
        apps: vec![
            ("active", status_count(AppStatus::Active)),
            ("suspended", status_count(AppStatus::Suspended)),
            ("banned", status_count(AppStatus::Banned)),
        ],
        developers: count(developers.len() as u64),
        installations: count(facts.installations.len() as u64),
        opt_ins: count(facts.profile_consents.len() as u64),
        active_policy: facts.active_policy,
        awaiting_approval,
        awaiting_activation,
        cases,
        open_cases: count(open as u64),
        overdue,
    })
}

/// The digest's last `CHART_DAYS` days as two charts: by field and by policy version.
fn charts(digest: &LedgerDigest) -> (String, BarChart, BarChart) {
    let last = digest.by_field.keys().next_back().copied().unwrap_or(0);
    let first = last - (CHART_DAYS - 1);
    let days: Vec<i64> = (first..=last).collect();
    let fields: Vec<String> = Field::ALL.iter().map(|f| f.as_str().to_string()).collect();
    let by_field = days
        .iter()
        .map(|d| {
            (LedgerDigest::date(*d), digest.by_field.get(d).map(|v| v.to_vec()).unwrap_or_else(|| vec![0; 7]))
        })
        .collect();
    let mut versions: Vec<u32> =
        digest.by_version.range(first..=last).flat_map(|(_, v)| v.keys().copied()).collect();
    versions.sort_unstable();
    versions.dedup();
    let by_version = days
        .iter()
        .map(|d| {
            let counts = digest.by_version.get(d);
            let values =
                versions.iter().map(|v| counts.and_then(|c| c.get(v)).copied().unwrap_or(0)).collect();
            (LedgerDigest::date(*d), values)
        })
        .collect();
    let window = if digest.records == 0 {
        "no disclosures recorded yet".to_string()
    } else {
        format!("{} to {}", LedgerDigest::date(first), LedgerDigest::date(last))
    };
    (
        window,
        BarChart::stacked("Disclosures per day by field", fields, by_field),
        BarChart::stacked(
            "Disclosures per day by policy version",
            versions.iter().map(|v| format!("version {v}")).collect(),
            by_version,
        ),
    )
}

fn verification_line(job: &super::jobs::Job) -> VerificationLine {
    let outcome = job.outcome.lock().ok().map(|o| match o.as_ref() {
        None => (true, false, "running".to_string()),
        Some(Ok(JobResult::Verification(report))) => {
            let sum = |f: fn(&consentry_ledger::VerifyReport) -> u64| {
                report.streams.iter().map(|s| f(&s.report)).sum::<u64>()
            };
            let failed: Vec<String> = report
                .streams
                .iter()
                .filter_map(|s| s.report.problem.as_ref().map(|p| format!("stream {}: {p}", s.stream.name())))
                .chain(report.unmatched.iter().cloned())
                .collect();
            if failed.is_empty() {
                let streams = report.streams.len();
                (
                    false,
                    true,
                    format!(
                        "OK: {} records in {streams} stream{}, {} segments, {} checkpoints in {:.2} s",
                        count(sum(|r| r.records)),
                        if streams == 1 { "" } else { "s" },
                        sum(|r| r.segments),
                        sum(|r| r.checkpoints),
                        report.streams.iter().map(|s| s.report.seconds).sum::<f64>()
                    ),
                )
            } else {
                (false, false, format!("FAILED: {}", failed.join("; ")))
            }
        }
        Some(Ok(JobResult::Audit(_))) => (false, false, "not a verification".to_string()),
        Some(Err(error)) => (false, false, format!("could not run: {error}")),
    });
    let (running, ok, outcome) = outcome.unwrap_or((false, false, "unknown".into()));
    let streams = job
        .outcome
        .lock()
        .ok()
        .and_then(|o| match o.as_ref() {
            Some(Ok(JobResult::Verification(report))) => Some(
                report
                    .streams
                    .iter()
                    .map(|s| {
                        let r = &s.report;
                        match &r.problem {
                            None => (
                                s.stream.name(),
                                true,
                                format!(
                                    "{} records, {} segments, {} checkpoints",
                                    count(r.records),
                                    r.segments,
                                    r.checkpoints
                                ),
                            ),
                            Some(problem) => (s.stream.name(), false, format!("FAILED: {problem}")),
                        }
                    })
                    .collect(),
            ),
            _ => None,
        })
        .unwrap_or_default();
    VerificationLine {
        id: job.id,
        started: view::when(job.started_at),
        by: job.started_by.clone(),
        running,
        ok,
        outcome,
        streams,
    }
}

/// `GET /console/overview`.
pub(crate) async fn page(
    State(state): State<ApiState>,
    signed: Signed,
    RawQuery(query): RawQuery,
) -> Result<Response, ConsoleError> {
    signed.require(READERS)?;
    let params = view::query(query, &["done", "n"])?;
    let platform = blocking(&state.service, platform).await?;
    let dir = state.ledger_dir.clone();
    let console = state.console.clone();
    // A ledger that cannot be read (damage on disk) is what the ledger's health is for: the
    // page says so, and the rest of the overview is still shown.
    let (digest, streams, unreadable) = blocking(&state.service, move |_| {
        let Some(dir) = dir else { return Ok((Arc::new(LedgerDigest::default()), Vec::new(), None)) };
        let mut unreadable = None;
        let mut failed = |e: consentry_ledger::LedgerError| {
            tracing::error!(error = %e, "the console could not read the ledger");
            unreadable.get_or_insert_with(|| e.to_string());
        };
        let digest = console.ledger_digest(&dir).unwrap_or_else(|e| {
            failed(e);
            Arc::new(LedgerDigest::default())
        });
        let mut streams = Vec::new();
        let found = consentry_ledger::streams(&dir).unwrap_or_else(|e| {
            failed(e);
            Vec::new()
        });
        for stream in found {
            let name = stream.name();
            let checkpoint = consentry_ledger::last_checkpoint(&stream.dir);
            let (records, last) =
                digest.per_stream.get(&name).copied().map_or((0, None), |(n, at)| (n, Some(at)));
            streams.push(StreamHealth {
                records: count(records),
                last_record: last.map(view::when).unwrap_or_else(|| "none".into()),
                last_checkpoint: match checkpoint {
                    Ok(Some(c)) => format!(
                        "record {} at {}",
                        count(c.seq),
                        view::when(Instant::from_millis(c.at_millis))
                    ),
                    Ok(None) => "none yet".into(),
                    Err(e) => {
                        let line = format!("cannot be read: {e}");
                        failed(e);
                        line
                    }
                },
                name,
            });
        }
        Ok((digest, streams, unreadable))
    })
    .await?;
    let (window, by_field, by_version) = charts(&digest);
    let mut chrome = signed.chrome("/console/overview", "Overview");
    chrome.notice = view::notice(&params);
    let page = OverviewPage {
        chrome,
        apps: platform.apps,
        developers: platform.developers,
        installations: platform.installations,
        opt_ins: platform.opt_ins,
        active_policy: platform.active_policy,
        awaiting_approval: platform.awaiting_approval,
        awaiting_activation: platform.awaiting_activation,
        cases: platform.cases,
        open_cases: platform.open_cases,
        overdue: platform.overdue,
        ledger_records: count(digest.records),
        ledger_disclosures: count(digest.disclosures),
        last_record: digest.last_at.map(view::when).unwrap_or_else(|| "none".into()),
        streams,
        unreadable,
        verification: state.console.jobs.last_verification().map(|j| verification_line(&j)),
        window,
        by_field,
        by_version,
    };
    Ok(view::html(&page))
}

/// `POST /console/ledger/verify`: verifies the whole ledger in the background.
pub(crate) async fn verify(
    State(state): State<ApiState>,
    signed: Signed,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    signed.require(READERS)?;
    signed.form(&headers, &body, &[])?;
    let dir = state
        .ledger_dir
        .clone()
        .ok_or_else(|| ConsoleError::new(StatusCode::NOT_FOUND, "this server keeps no ledger"))?;
    let total = state.console.ledger_records(state.ledger.as_deref());
    let by = key_label(Some(&signed.operator.name), &signed.operator.key_id);
    let job = state
        .console
        .jobs
        .start(
            JobKind::Verification,
            "ledger verification".into(),
            by,
            state.service.now(),
            total,
            move |_| {
                consentry_ledger::verify_all(&dir, &[])
                    .map(JobResult::Verification)
                    .map_err(|e| e.to_string())
            },
        )
        .map_err(|_| {
            ConsoleError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "other jobs are running; try again when one ends",
            )
        })?;
    Ok(done(&format!("/console/ledger/verifications/{}", job.id), "verifying", Some(job.id)))
}

#[derive(Template)]
#[template(path = "console/verification.html")]
struct VerificationPage {
    chrome: Chrome,
    line: VerificationLine,
}

/// `GET /console/ledger/verifications/{id}`: refreshes until the verification ends.
pub(crate) async fn verification(
    State(state): State<ApiState>,
    signed: Signed,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Response, ConsoleError> {
    signed.require(READERS)?;
    let params = view::query(query, &["done", "n"])?;
    let id = path
        .ok()
        .and_then(|Path(raw)| raw.parse::<u64>().ok())
        .ok_or_else(|| ConsoleError::bad_request("a verification id is a whole number"))?;
    let job = state.console.jobs.get(id).filter(|j| j.kind == JobKind::Verification).ok_or_else(|| {
        ConsoleError::new(StatusCode::NOT_FOUND, "no such verification (only the last few are kept)")
    })?;
    let mut chrome = signed.chrome("/console/overview", format!("Ledger verification {id}"));
    chrome.notice = view::notice(&params);
    let _ = Jobs::fraction(&job);
    Ok(view::html(&VerificationPage { chrome, line: verification_line(&job) }))
}
