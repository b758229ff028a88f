//! Proofs over HTTP: prove a stored version within the invariants and against the active one,
//! keep the result with it, list what was kept, and let a privacy officer waive failed proofs.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use consentry_prove::{
    Comparison, Difference, FieldOutcome, Invariant, Outcome, PolicyText, Prover, Review, Witness,
};
use consentry_service::{OperatorSession, ProofStanding, Service, PROVERS};
use consentry_types::{OperatorRole, Role};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::extract::{blocking, JsonBody, OperatorAuth};
use crate::problem::{ApiError, Problem};
use crate::ApiState;

/// A prover and the invariants it proves drafts within; given to the API by `serve`.
pub struct Proofs {
    pub prover: Prover,
    pub invariants: Vec<Invariant>,
}

fn facts(witness: &Witness, with_category: bool) -> Value {
    let page = &witness.page;
    let mut facts = serde_json::Map::new();
    facts.insert("app_status".into(), json!(page.app_status.as_str()));
    if with_category {
        facts.insert("app_category".into(), json!(page.app_category));
    }
    facts.insert("installed".into(), json!(page.installed));
    let since = page.installed.then(|| consentry_types::Instant::from_secs(page.installed_since).to_string());
    facts.insert("installed_since".into(), json!(since));
    if witness.field.has_member_subject() {
        facts.insert(
            "subject".into(),
            json!({
                "is_member": witness.subject.is_member,
                "role": witness.subject.role.map_or("none", Role::as_str),
                "consented_profile": witness.subject.consented_profile,
            }),
        );
    }
    Value::Object(facts)
}

fn field_json(outcome: &FieldOutcome) -> Value {
    match &outcome.outcome {
        Outcome::Proven => json!({"field": outcome.field.as_str(), "outcome": "proven"}),
        Outcome::Violated(witness) => json!({
            "field": outcome.field.as_str(),
            "outcome": "violated",
            "witness": {
                "situation": witness.situation(outcome.category_matters),
                "facts": facts(witness, outcome.category_matters),
            },
        }),
        Outcome::Unknown(why) => {
            json!({"field": outcome.field.as_str(), "outcome": "unknown", "reason": why})
        }
    }
}

fn difference_json(difference: &Difference) -> Value {
    json!({
        "field": difference.witness.field.as_str(),
        "situation": difference.witness.situation(difference.category_matters),
        "facts": facts(&difference.witness, difference.category_matters),
    })
}

fn comparison_json(comparison: &Comparison) -> Value {
    json!({
        "against": comparison.against,
        "newly_allows": comparison.newly_allowed.iter().map(difference_json).collect::<Vec<_>>(),
        "newly_denies": comparison.newly_denied.iter().map(difference_json).collect::<Vec<_>>(),
        "unknown": comparison.unknown.iter().map(|(f, why)| json!({"field": f.as_str(), "reason": why})).collect::<Vec<_>>(),
    })
}

/// A review as the platform API shows it and as it is kept with the version.
pub fn review_json(review: &Review) -> Value {
    json!({
        "draft": review.draft,
        "solver": review.solver,
        "passed": review.passed(),
        "elapsed_ms": review.elapsed.as_millis() as u64,
        "invariants": review.invariants.iter().map(|report| json!({
            "name": report.name,
            "proven": report.proven(),
            "fields": report.fields.iter().map(field_json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "never_errors": review.never_errors.iter().map(field_json).collect::<Vec<_>>(),
        "comparison": review.comparison.as_ref().map(comparison_json),
    })
}

/// Where a version stands with its proofs, as JSON.
pub fn standing_json(standing: &ProofStanding) -> Value {
    match standing {
        ProofStanding::Passed { at } => json!({"standing": "passed", "at": at.to_string()}),
        ProofStanding::Failed { at } => json!({"standing": "failed", "at": at.to_string()}),
        ProofStanding::Missing => json!({"standing": "missing"}),
        ProofStanding::Waived(waiver) => json!({
            "standing": "waived",
            "waiver": {"by": waiver.by, "at": waiver.at.to_string(), "reason": waiver.reason},
        }),
    }
}

/// Proves stored `version` (against the active version when it is another one), keeps the
/// result with it and returns the review and its JSON. Blocking: call off the async threads.
pub fn prove_version(
    service: &Service,
    proofs: &Proofs,
    version: u32,
    against: Option<u32>,
    by: &OperatorSession,
) -> Result<(Review, Value), ApiError> {
    by.require(PROVERS)?;
    let store = service.store();
    let stored_error = |e| ApiError::from(consentry_service::ServiceError::from(e));
    let not_found =
        |v: u32| ApiError::new(StatusCode::NOT_FOUND, "not-found", format!("policy version {v} not found"));
    let stored = store.policy_version(version).map_err(stored_error)?.ok_or_else(|| not_found(version))?;
    let baseline = match against {
        Some(v) => Some(store.policy_version(v).map_err(stored_error)?.ok_or_else(|| not_found(v))?),
        None => store.active_policy().map_err(stored_error)?.filter(|active| active.version != version),
    };
    let draft = PolicyText { label: format!("version {version}"), text: &stored.text };
    let baseline_label = baseline.as_ref().map(|b| {
        let active = against.is_none();
        format!("version {}{}", b.version, if active { " (active)" } else { "" })
    });
    let other = baseline.as_ref().zip(baseline_label).map(|(b, label)| PolicyText { label, text: &b.text });
    let review = proofs
        .prover
        .review(&draft, &proofs.invariants, other.as_ref())
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "proofs-unavailable", e.to_string()))?;
    let summary = review_json(&review);
    service.record_proof(version, by, review.passed(), &summary.to_string())?;
    Ok((review, summary))
}

fn no_solver() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "proofs-unavailable",
        format!("this server proves no policies: {}", consentry_prove::INSTALL_HINT),
    )
}

fn version_of(path: Result<Path<String>, PathRejection>) -> Result<u32, ApiError> {
    let Path(raw) = path.map_err(|e| ApiError::bad_request(format!("bad path: {e}")))?;
    raw.parse().map_err(|_| ApiError::bad_request("version must be a whole number"))
}

/// What to prove a version against.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProofInput {
    /// A stored version to compare with; default: the active version.
    pub against: Option<u32>,
}

/// A review as kept and answered (what [`review_json`] builds).
#[derive(ToSchema)]
#[allow(dead_code)] // describes review_json's JSON for the OpenAPI document; tests/http.rs checks they agree
pub struct ReviewBody {
    pub draft: String,
    pub solver: String,
    pub passed: bool,
    pub elapsed_ms: u64,
    /// Per invariant: proven or not, per field with a witness where violated.
    #[schema(value_type = Vec<Object>)]
    pub invariants: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    pub never_errors: Vec<Value>,
    /// Against the active (or named) version: what it newly allows and denies.
    #[schema(value_type = Option<Object>)]
    pub comparison: Option<Value>,
}

/// A version's proofs (what [`proofs_of`] builds).
#[derive(ToSchema)]
#[allow(dead_code)] // describes proofs_of's JSON for the OpenAPI document
pub struct ProofsBody {
    pub version: u32,
    /// passed, failed, waived (with the waiver) or missing.
    #[schema(value_type = Object)]
    pub standing: Value,
    /// Oldest first: by, at, passed, review.
    #[schema(value_type = Vec<Object>)]
    pub proofs: Vec<Value>,
    /// by, at, reason.
    #[schema(value_type = Vec<Object>)]
    pub waivers: Vec<Value>,
}

/// A waiver kept with a version.
#[derive(Serialize, ToSchema)]
pub struct WaiverBody {
    pub version: u32,
    /// The id of the waiving key.
    pub by: String,
    pub at: String,
    pub reason: String,
}

/// Proves a stored version within the invariants, never erroring, and against the active (or
/// a named) version; the result is kept with the version and decides whether it may be approved.
#[utoipa::path(post, path = "/platform/v1/policies/{version}/proofs", tag = "policies", request_body = ProofInput,
    params(("version" = u32, Path)),
    responses((status = 201, description = "the review, now kept with the version", body = ReviewBody), (status = 403, body = Problem, description = "an auditor key may not do this"), (status = 404, body = Problem, description = "no such version"), (status = 503, body = Problem, description = "the server has no SMT solver, or it failed")),
    security(("operator_key" = [])))]
pub async fn prove(
    State(state): State<ApiState>,
    OperatorAuth(op): OperatorAuth,
    path: Result<Path<String>, PathRejection>,
    JsonBody(input): JsonBody<ProofInput>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let version = version_of(path)?;
    op.require(PROVERS)?;
    let proofs: Arc<Proofs> = state.proofs.clone().ok_or_else(no_solver)?;
    let body = blocking(&state.service, move |s| {
        prove_version(s, &proofs, version, input.against, &op).map(|(_, json)| json)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(body)))
}

/// The proofs kept with a version, its waivers, and where it stands.
#[utoipa::path(get, path = "/platform/v1/policies/{version}/proofs", tag = "policies",
    params(("version" = u32, Path)),
    responses((status = 200, description = "standing, proofs oldest first, waivers", body = ProofsBody), (status = 404, body = Problem, description = "no such version")),
    security(("operator_key" = [])))]
pub async fn list_proofs(
    State(state): State<ApiState>,
    OperatorAuth(op): OperatorAuth,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let version = version_of(path)?;
    op.require(&[OperatorRole::Operator, OperatorRole::PrivacyOfficer, OperatorRole::Auditor])?;
    let body = blocking(&state.service, move |s| proofs_of(s, version)).await?;
    Ok(Json(body))
}

/// A version's standing, kept proofs and waivers, as JSON.
pub fn proofs_of(service: &Service, version: u32) -> Result<Value, ApiError> {
    let standing = service.proof_standing(version)?;
    let store = service.store();
    let stored_error = |e| ApiError::from(consentry_service::ServiceError::from(e));
    let proofs: Vec<Value> = store
        .policy_proofs(version)
        .map_err(stored_error)?
        .into_iter()
        .map(|p| {
            let review = serde_json::from_str::<Value>(&p.summary).unwrap_or(Value::Null);
            json!({"by": p.by, "at": p.at.to_string(), "passed": p.passed, "review": review})
        })
        .collect();
    let waivers: Vec<Value> = store
        .policy_waivers(version)
        .map_err(stored_error)?
        .into_iter()
        .map(|w| json!({"by": w.by, "at": w.at.to_string(), "reason": w.reason}))
        .collect();
    Ok(
        json!({"version": version, "standing": standing_json(&standing), "proofs": proofs, "waivers": waivers}),
    )
}

/// Why a privacy officer approves although the proofs did not pass.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WaiverInput {
    /// Kept and shown with the version; at least 10 characters.
    pub reason: String,
}

/// A privacy officer (outside the author's lineage) waives a version's proofs, with a reason.
#[utoipa::path(post, path = "/platform/v1/policies/{version}/waivers", tag = "policies", request_body = WaiverInput,
    params(("version" = u32, Path)),
    responses((status = 201, description = "the waiver, kept with the version", body = WaiverBody), (status = 403, body = Problem, description = "only a privacy officer waives proofs"), (status = 404, body = Problem, description = "no such version"), (status = 422, body = Problem, description = "the officer's key is in the author's lineage")),
    security(("operator_key" = [])))]
pub async fn waive(
    State(state): State<ApiState>,
    OperatorAuth(op): OperatorAuth,
    path: Result<Path<String>, PathRejection>,
    JsonBody(input): JsonBody<WaiverInput>,
) -> Result<(StatusCode, Json<WaiverBody>), ApiError> {
    let version = version_of(path)?;
    op.require(&[OperatorRole::PrivacyOfficer])?;
    let waiver = blocking(&state.service, move |s| {
        s.waive_proofs(version, &op, &input.reason).map_err(ApiError::from)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(WaiverBody { version, by: waiver.by, at: waiver.at.to_string(), reason: waiver.reason }),
    ))
}
