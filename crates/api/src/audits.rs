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

/// The earliest instant a window may reach: 0001-01-01T00:00:00Z. RFC 3339 writes years
/// 0000 to 9999 only, so every window must lie within years 0001 to 9999.
pub const EARLIEST: Instant = Instant::from_millis(-62_135_596_800_000);
/// The latest instant a window may reach: 9999-12-31T23:59:59.999Z.
pub const LATEST: Instant = Instant::from_millis(253_402_300_799_999);

/// Parses `60d`, `12h` or `30m` (a positive whole number of ASCII digits and one unit) into
/// seconds. Any other text, however odd, is `None`.
pub fn parse_since(text: &str) -> Option<i64> {
    let (number, seconds) = [('d', 86_400), ('h', 3_600), ('m', 60)]
        .into_iter()
        .find_map(|(unit, seconds)| text.strip_suffix(unit).map(|number| (number, seconds)))?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let number: i64 = number.parse().ok().filter(|n| *n > 0)?;
    number.checked_mul(seconds)
}

/// The window an audit covers: both ends within years 0001 to 9999 (so both print as
/// RFC 3339), `from` before `to`.
pub fn window(
    from: Option<&str>,
    to: Option<&str>,
    since: Option<&str>,
    now: Instant,
) -> Result<(Instant, Instant), String> {
    let within = |t: Instant, what: &str| {
        if (EARLIEST..=LATEST).contains(&t) {
            Ok(t)
        } else {
            Err(format!("{what} must lie between the years 0001 and 9999"))
        }
    };
    let parse =
        |t: &str, what: &str| Instant::parse(t).map_err(|e| e.to_string()).and_then(|t| within(t, what));
    let to = match to {
        Some(t) => parse(t, "to")?,
        None => within(now, "now")?,
    };
    let from = match (from, since) {
        (Some(_), Some(_)) => return Err("give either from or since, not both".into()),
        (Some(f), None) => parse(f, "from")?,
        (None, Some(s)) => {
            let shown: String = s.chars().take(40).collect();
            let seconds = parse_since(s)
                .ok_or_else(|| format!("since must look like 60d, 12h or 30m, not {shown:?}"))?;
            let start = seconds
                .checked_mul(1000)
                .and_then(|millis| to.millis().checked_sub(millis))
                .map(Instant::from_millis);
            match start {
                Some(start) if start >= EARLIEST => start,
                _ => return Err(format!("since {shown:?} reaches back before the year 0001")),
            }
        }
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

/// The JSON form of an audit report (what [`report_json`] builds).
#[derive(ToSchema)]
#[allow(dead_code)] // describes report_json's JSON for the OpenAPI document; tests/http.rs checks they agree
pub struct AuditReportBody {
    /// `version N` or `draft`.
    pub policy: String,
    pub from: String,
    pub to: String,
    pub summary: AuditSummary,
    /// Per app: what it received that the policy forbids.
    #[schema(value_type = Vec<Object>)]
    pub did: Vec<Value>,
    /// Per app: what it could have received that the policy forbids.
    #[schema(value_type = Vec<Object>)]
    pub could: Vec<Value>,
    /// Violations per day and app.
    #[schema(value_type = Vec<Object>)]
    pub by_day: Vec<Value>,
    /// developer → app → the (member, field) pairs to delete.
    #[schema(value_type = Object)]
    pub deletion_manifests: Value,
}

/// An audit's counts.
#[derive(ToSchema)]
#[allow(dead_code)] // describes report_json's JSON for the OpenAPI document
pub struct AuditSummary {
    pub developers_could: usize,
    pub developers_did: usize,
    pub developers_could_but_did_not: usize,
    pub apps_could: usize,
    pub apps_did: usize,
    pub records_checked: u64,
    pub disclosures_checked: u64,
    pub violating_disclosures: u64,
    pub members_affected: usize,
    pub seconds: f64,
}

/// What a draft would change against the active policy (what `preview_json` builds).
#[derive(ToSchema)]
#[allow(dead_code)] // describes preview_json's JSON for the OpenAPI document
pub struct PreviewBody {
    pub against_version: u32,
    pub from: String,
    pub to: String,
    /// Apps that could see fields the draft would deny them.
    pub loses: Vec<PreviewExposure>,
    pub disclosures_the_draft_would_have_denied: u64,
    /// Apps that could see fields the draft would newly allow.
    pub gains: Vec<PreviewExposure>,
}

/// One app's change of exposure in a preview.
#[derive(ToSchema)]
#[allow(dead_code)] // describes preview_json's JSON for the OpenAPI document
pub struct PreviewExposure {
    pub app: String,
    pub developer: Option<String>,
    pub fields: Vec<String>,
    pub members: usize,
    pub groups: usize,
}

/// Audits a window against a policy: what apps did see and could see that it forbids.
#[utoipa::path(post, path = "/platform/v1/audits", tag = "policies", request_body = AuditInput,
    responses((status = 200, description = "the report, with deletion manifests", body = AuditReportBody), (status = 403, body = Problem, description = "only auditors and privacy officers audit"), (status = 404, body = Problem, description = "no such policy version, or none is active"), (status = 422, body = Problem, description = "the policy does not parse or validate")),
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
    responses((status = 200, description = "what the draft would take and give, against the active policy", body = PreviewBody), (status = 409, body = Problem, description = "no policy is active to compare with"), (status = 422, body = Problem, description = "the draft does not parse or validate")),
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
    responses((status = 200, description = "what the version would take and give, now kept with it", body = PreviewBody), (status = 403, body = Problem, description = "an auditor key may not do this"), (status = 404, body = Problem, description = "no such version"), (status = 409, body = Problem, description = "no policy is active to compare with"), (status = 422, body = Problem, description = "the version does not compile")),
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn round_trips(t: Instant) -> bool {
        Instant::parse(&t.to_string()) == Ok(t)
    }

    #[test]
    fn since_takes_a_number_and_a_unit_and_nothing_else() {
        assert_eq!(parse_since("60d"), Some(60 * 86_400));
        assert_eq!(parse_since("12h"), Some(12 * 3_600));
        assert_eq!(parse_since("30m"), Some(30 * 60));
        for bad in ["", "d", "é", "1é", "é1d", "1dé", "+1d", "-1d", "0d", " 1d", "1 d", "1s", "١d"] {
            assert_eq!(parse_since(bad), None, "{bad:?}");
        }
        assert_eq!(parse_since("9223372036854775807d"), None, "overflows, not wraps");
    }

    #[test]
    fn windows_stay_within_years_1_to_9999() {
        let now = Instant::parse("2019-11-05").unwrap_or(Instant::MIN);
        assert!(window(None, None, Some("106751991167d"), now).is_err());
        assert!(window(None, None, Some("738000d"), now).is_err(), "before the year 1");
        let (from, to) = window(None, None, Some("738000d"), LATEST).unwrap_or((now, now));
        assert!(from >= EARLIEST && to == LATEST && round_trips(from) && round_trips(to));
        assert!(window(None, Some("0000-06-01T00:00:00Z"), Some("1d"), now).is_err());
        assert!(window(Some("0000-01-01T00:00:00Z"), None, None, now).is_err());
        assert_eq!(
            window(Some("2019-01-01"), Some("2019-01-02"), None, now),
            Ok((Instant::from_secs(1_546_300_800), Instant::from_secs(1_546_387_200)))
        );
    }

    fn since_text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[0-9]{1,20}[dhm]",
            "[-+ 0-9a-zé١]{0,6}[dhmé]?",
            (any::<u64>(), prop_oneof![Just("d"), Just("h"), Just("m")]).prop_map(|(n, u)| format!("{n}{u}")),
        ]
    }

    fn instant_text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            (-1_000i64..12_000, 1u8..13, 1u8..29).prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}")),
            (0u16..10_000).prop_map(|y| format!("{y:04}-12-31T23:59:59.999Z")),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn since_and_window_never_panic_and_every_window_prints_as_rfc_3339(
            since in since_text(),
            from in proptest::option::of(instant_text()),
            to in proptest::option::of(instant_text()),
            now in -62_135_596_800_000i64..=253_402_300_799_999,
        ) {
            let _ = parse_since(&since);
            let now = Instant::from_millis(now);
            for since in [Some(since.as_str()), None] {
                if let Ok((start, end)) = window(from.as_deref(), to.as_deref(), since, now) {
                    prop_assert!(start < end);
                    prop_assert!(round_trips(start), "{start:?}");
                    prop_assert!(round_trips(end), "{end:?}");
                }
            }
        }
    }
}
