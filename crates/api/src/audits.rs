//! Audits over HTTP, and the one JSON form of an audit report (the CLI prints the same).

use axum::extract::State;
use axum::Json;
use consentry_audit::{members_affected, AuditReport};
use consentry_policy::compile;
use consentry_types::{Instant, OperatorRole};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::extract::{blocking, JsonBody, OperatorAuth};
use crate::problem::{ApiError, Problem};
use crate::ApiState;

/// What to audit: a stored version or draft text (default: the active policy), over a window.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditInput {
    pub policy_version: Option<u32>,
    /// Cedar text of a draft to audit against instead of a stored version.
    pub policy_text: Option<String>,
    /// RFC 3339; with `to`, the window. Or give `since`.
    pub from: Option<String>,
    pub to: Option<String>,
    /// e.g. `60d`: the window ending now.
    pub since: Option<String>,
}

/// Parses `60d`, `12h` or `30m` into seconds.
pub fn parse_since(text: &str) -> Option<i64> {
    let (number, unit) = text.split_at(text.len().checked_sub(1)?);
    let number: i64 = number.parse().ok().filter(|n| *n > 0)?;
    match unit {
        "d" => number.checked_mul(86_400),
        "h" => number.checked_mul(3_600),
        "m" => number.checked_mul(60),
        _ => None,
    }
}

/// The window an audit covers.
pub fn window(
    from: Option<&str>,
    to: Option<&str>,
    since: Option<&str>,
    now: Instant,
) -> Result<(Instant, Instant), String> {
    let parse = |t: &str| Instant::parse(t).map_err(|e| e.to_string());
    let to = match to {
        Some(t) => parse(t)?,
        None => now,
    };
    let from = match (from, since) {
        (Some(_), Some(_)) => return Err("give either from or since, not both".into()),
        (Some(f), None) => parse(f)?,
        (None, Some(s)) => to.plus_secs(
            -parse_since(s).ok_or_else(|| format!("since must look like 60d, 12h or 30m, not {s:?}"))?,
        ),
        (None, None) => return Err("give a window: from (and to), or since".into()),
    };
    if from >= to {
        return Err("the window is empty: from must be before to".into());
    }
    Ok((from, to))
}

fn instant(t: Option<Instant>) -> Value {
    t.map_or(Value::Null, |t| Value::String(t.to_string()))
}

/// The JSON form of an audit report.
pub fn report_json(report: &AuditReport) -> Value {
    let did_apps: Vec<Value> = report
        .did
        .by_app
        .iter()
        .map(|(app, f)| {
            json!({
                "app": app.as_str(),
                "developer": f.developer.as_ref().map(|d| d.as_str()),
                "category": f.category,
                "violations": f.violations,
                "by_field": f.by_field.iter().map(|(field, n)| (field.as_str().to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
                "members_affected": f.members.len(),
                "groups": f.groups.len(),
                "first": instant(f.first),
                "last": instant(f.last),
            })
        })
        .collect();
    let could_apps: Vec<Value> = report
        .could
        .by_app
        .iter()
        .map(|(app, e)| {
            json!({
                "app": app.as_str(),
                "developer": e.developer.as_ref().map(|d| d.as_str()),
                "category": e.category,
                "groups_exposed": e.groups.len(),
                "members_exposed": e.members.len(),
                "fields": e.fields.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
                "member_days": e.member_seconds as f64 / 86_400.0,
                "first": instant(e.first),
                "last": instant(e.last),
            })
        })
        .collect();
    let manifests: serde_json::Map<String, Value> = report
        .did
        .manifests
        .iter()
        .map(|(developer, apps)| {
            let apps: serde_json::Map<String, Value> = apps
                .iter()
                .map(|(app, pairs)| {
                    let pairs: Vec<Value> = pairs
                        .iter()
                        .map(|(member, field)| json!({"member": member, "field": field.as_str()}))
                        .collect();
                    (app.to_string(), Value::Array(pairs))
                })
                .collect();
            (developer.to_string(), Value::Object(apps))
        })
        .collect();
    let did_developers = report.did.developers();
    let could_developers = report.could.developers();
    json!({
        "policy": report.policy,
        "from": report.from.to_string(),
        "to": report.to.to_string(),
        "summary": {
            "developers_could": could_developers.len(),
            "developers_did": did_developers.len(),
            "developers_could_but_did_not": could_developers.difference(&did_developers).count(),
            "apps_could": report.could.by_app.len(),
            "apps_did": report.did.by_app.len(),
            "records_checked": report.did.records_checked,
            "disclosures_checked": report.did.disclosures_checked,
            "violating_disclosures": report.did.violations,
            "members_affected": members_affected(&report.did),
            "seconds": report.seconds,
        },
        "did": did_apps,
        "could": could_apps,
        "by_day": report.did.by_day.iter().map(|((day, app), n)| json!({"day": day, "app": app.as_str(), "violations": n})).collect::<Vec<_>>(),
        "deletion_manifests": manifests,
    })
}

/// Audits a window against a policy: what apps did see and could see that it forbids.
#[utoipa::path(post, path = "/platform/v1/audits", tag = "policies", request_body = AuditInput,
    responses((status = 200, description = "the report, with deletion manifests"), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("operator_key" = [])))]
pub async fn run_audit(
    State(state): State<ApiState>,
    OperatorAuth(op): OperatorAuth,
    JsonBody(input): JsonBody<AuditInput>,
) -> Result<Json<Value>, ApiError> {
    op.require(&[OperatorRole::Auditor, OperatorRole::PrivacyOfficer])?;
    let ledger_dir = state.ledger_dir.clone().unwrap_or_default();
    let report = blocking(&state.service, move |service| {
        let window =
            window(input.from.as_deref(), input.to.as_deref(), input.since.as_deref(), service.now())
                .map_err(ApiError::bad_request)?;
        let policy = audited_policy(service, input.policy_version, input.policy_text)?;
        audit_report(service, &ledger_dir, &policy, window, &mut |_| {})
    })
    .await?;
    Ok(Json(report_json(&report)))
}

/// The policy an audit is run against, with its label: a stored version, draft text, or
/// (neither given) the active policy.
pub(crate) fn audited_policy(
    service: &consentry_service::Service,
    version: Option<u32>,
    text: Option<String>,
) -> Result<(consentry_policy::CompiledPolicy, String), ApiError> {
    let store = service.store();
    match (version, text) {
        (Some(_), Some(_)) => Err(ApiError::bad_request("give policy_version or policy_text, not both")),
        (None, Some(text)) => {
            let compiled =
                compile(0, &text).map_err(|e| ApiError::from(consentry_service::ServiceError::Policy(e)))?;
            Ok((compiled, "draft".to_string()))
        }
        (version, None) => {
            let stored = match version {
                Some(v) => store.policy_version(v),
                None => store.active_policy(),
            }
            .map_err(|e| ApiError::from(consentry_service::ServiceError::from(e)))?
            .ok_or_else(|| {
                ApiError::new(axum::http::StatusCode::NOT_FOUND, "not-found", "no such policy version")
            })?;
            let compiled = compile(stored.version, &stored.text)
                .map_err(|e| ApiError::from(consentry_service::ServiceError::Policy(e)))?;
            Ok((compiled, format!("version {}", stored.version)))
        }
    }
}

/// Runs an audit exactly as `POST /platform/v1/audits` does, telling `progress` how many
/// records it has read.
pub(crate) fn audit_report(
    service: &consentry_service::Service,
    ledger_dir: &std::path::Path,
    (policy, label): &(consentry_policy::CompiledPolicy, String),
    window: (Instant, Instant),
    progress: &mut dyn FnMut(u64),
) -> Result<AuditReport, ApiError> {
    let scoped = |app: &consentry_types::AppId, member: &consentry_types::MemberId| {
        service.scoped_member_id(app, member)
    };
    consentry_audit::run(service.store().as_ref(), ledger_dir, policy, label, window, &scoped, progress)
        .map_err(|e| ApiError::internal(&e.to_string()))
}

/// A draft to preview, over a window.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewInput {
    /// Cedar text of the draft.
    pub policy_text: String,
    pub from: Option<String>,
    pub to: Option<String>,
    /// e.g. `30d`.
    pub since: Option<String>,
}

fn exposures(report: &consentry_audit::CouldReport) -> Vec<Value> {
    report
        .by_app
        .iter()
        .map(|(app, e)| {
            json!({
                "app": app.as_str(),
                "developer": e.developer.as_ref().map(|d| d.as_str()),
                "fields": e.fields.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
                "members": e.members.len(),
                "groups": e.groups.len(),
            })
        })
        .collect()
}

/// What a draft would change against the active policy, replayed over recent history: which
/// apps, fields and members would lose or gain access.
#[utoipa::path(post, path = "/platform/v1/policies/preview", tag = "policies", request_body = PreviewInput,
    responses((status = 200, description = "loses and gains"), (status = 400, body = Problem), (status = 401, body = Problem), (status = 422, body = Problem)),
    security(("operator_key" = [])))]
pub async fn preview_policy(
    State(state): State<ApiState>,
    OperatorAuth(op): OperatorAuth,
    JsonBody(input): JsonBody<PreviewInput>,
) -> Result<Json<Value>, ApiError> {
    op.require(&[OperatorRole::Operator, OperatorRole::PrivacyOfficer, OperatorRole::Auditor])?;
    let ledger_dir = state.ledger_dir.clone().unwrap_or_default();
    let body = blocking(&state.service, move |service| {
        let window =
            window(input.from.as_deref(), input.to.as_deref(), input.since.as_deref(), service.now())
                .map_err(ApiError::bad_request)?;
        let draft = compile(0, &input.policy_text)
            .map_err(|e| ApiError::from(consentry_service::ServiceError::Policy(e)))?;
        preview_json(service, &ledger_dir, &draft, window)
    })
    .await?;
    Ok(Json(body))
}

/// The preview of `draft` against the active policy, as JSON.
pub(crate) fn preview_json(
    service: &consentry_service::Service,
    ledger_dir: &std::path::Path,
    draft: &consentry_policy::CompiledPolicy,
    window: (Instant, Instant),
) -> Result<Value, ApiError> {
    let store = service.store();
    let active = store
        .active_policy()
        .map_err(|e| ApiError::from(consentry_service::ServiceError::from(e)))?
        .ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "no-active-policy",
                "no policy is active to compare with",
            )
        })?;
    let active_policy = compile(active.version, &active.text)
        .map_err(|e| ApiError::from(consentry_service::ServiceError::Policy(e)))?;
    let scoped = |app: &consentry_types::AppId, member: &consentry_types::MemberId| {
        service.scoped_member_id(app, member)
    };
    let preview =
        consentry_audit::preview(store.as_ref(), ledger_dir, draft, &active_policy, window, &scoped)
            .map_err(|e| ApiError::internal(&e.to_string()))?;
    Ok(json!({
        "against_version": active.version,
        "from": window.0.to_string(),
        "to": window.1.to_string(),
        "loses": exposures(&preview.loses.could),
        "disclosures_the_draft_would_have_denied": preview.loses.did.violations,
        "gains": exposures(&preview.gains),
    }))
}

/// The window to preview a stored version over.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VersionPreviewInput {
    pub from: Option<String>,
    pub to: Option<String>,
    pub since: Option<String>,
}

/// Previews a stored version (a draft) against the active policy and keeps the preview with it.
#[utoipa::path(post, path = "/platform/v1/policies/{version}/preview", tag = "policies", request_body = VersionPreviewInput,
    params(("version" = u32, Path)),
    responses((status = 200, description = "loses and gains, now kept with the version"), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("operator_key" = [])))]
pub async fn preview_version(
    State(state): State<ApiState>,
    OperatorAuth(op): OperatorAuth,
    path: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
    JsonBody(input): JsonBody<VersionPreviewInput>,
) -> Result<Json<Value>, ApiError> {
    op.require(&[OperatorRole::Operator, OperatorRole::PrivacyOfficer])?;
    let axum::extract::Path(raw) = path.map_err(|e| ApiError::bad_request(format!("bad path: {e}")))?;
    let version: u32 = raw.parse().map_err(|_| ApiError::bad_request("version must be a whole number"))?;
    let ledger_dir = state.ledger_dir.clone().unwrap_or_default();
    let by = op.name.clone();
    let body = blocking(&state.service, move |service| {
        let window =
            window(input.from.as_deref(), input.to.as_deref(), input.since.as_deref(), service.now())
                .map_err(ApiError::bad_request)?;
        preview_and_keep(service, &ledger_dir, version, window, &by)
    })
    .await?;
    Ok(Json(body))
}

/// Previews the stored version `version` against the active policy over `window` and keeps
/// the preview with the version, recorded as by `by`.
pub(crate) fn preview_and_keep(
    service: &consentry_service::Service,
    ledger_dir: &std::path::Path,
    version: u32,
    window: (Instant, Instant),
    by: &str,
) -> Result<Value, ApiError> {
    {
        let store = service.store();
        let stored = store
            .policy_version(version)
            .map_err(|e| ApiError::from(consentry_service::ServiceError::from(e)))?
            .ok_or_else(|| {
                ApiError::new(
                    axum::http::StatusCode::NOT_FOUND,
                    "not-found",
                    format!("policy version {version} not found"),
                )
            })?;
        let draft = compile(version, &stored.text)
            .map_err(|e| ApiError::from(consentry_service::ServiceError::Policy(e)))?;
        let summary = preview_json(service, ledger_dir, &draft, window)?;
        store
            .record_preview(version, by, &summary.to_string(), service.now())
            .map_err(|e| ApiError::from(consentry_service::ServiceError::from(e)))?;
        Ok(summary)
    }
}
