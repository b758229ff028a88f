//! Remediation cases over HTTP: developers read their case and attest with their own client
//! credentials (HTTP Basic, which still works for a revoked app); the platform lists cases.

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use consentry_service::ServiceError;
use consentry_store::Case;
use consentry_types::{DeveloperId, OperatorRole};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::extract::{blocking, peer_address, JsonBody, OperatorAuth};
use crate::problem::{ApiError, Problem};
use crate::ApiState;

/// A developer authenticated by one of its apps' client credentials (HTTP Basic).
pub struct DeveloperAuth(pub DeveloperId);

fn basic_challenge(detail: &str) -> ApiError {
    let mut error = ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", detail);
    error.challenge = Some("Basic realm=\"consentry\"".to_string());
    error
}

impl FromRequestParts<ApiState> for DeveloperAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let credentials = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
            .and_then(|(_, encoded)| STANDARD.decode(encoded.trim()).ok())
            .and_then(|decoded| String::from_utf8(decoded).ok())
            .and_then(|text| text.split_once(':').map(|(id, secret)| (id.to_string(), secret.to_string())));
        let Some((client_id, secret)) = credentials else {
            return Err(basic_challenge("use one of your apps' client credentials (HTTP Basic)"));
        };
        let from = peer_address(&parts.extensions);
        state.service.refuse_throttled_client(&client_id, from)?;
        blocking(&state.service, move |s| {
            s.developer_of_client_from(&client_id, &secret, from).map_err(|e| match e {
                throttled @ (ServiceError::TooManyAttempts { .. } | ServiceError::Busy { .. }) => {
                    ApiError::from(throttled)
                }
                ServiceError::Internal(detail) => ApiError::internal(&detail),
                _ => basic_challenge("client authentication failed"),
            })
        })
        .await
        .map(DeveloperAuth)
    }
}

/// A case as its developer and the platform see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CaseBody {
    pub id: u64,
    pub developer: String,
    pub state: &'static str,
    pub opened_at: String,
    pub deadline: String,
    /// Exactly the (app, app-scoped member id, field) triples to delete.
    #[schema(value_type = Object)]
    pub manifest: serde_json::Value,
    /// Every transition, oldest first (platform view only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<CaseEventBody>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CaseEventBody {
    pub state: &'static str,
    pub at: String,
    pub note: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttestationInput {
    /// What was deleted, how, and by whom.
    pub statement: String,
}

fn body(case: Case, events: Vec<CaseEventBody>) -> CaseBody {
    CaseBody {
        id: case.id,
        developer: case.developer.to_string(),
        state: case.state.as_str(),
        opened_at: case.opened_at.to_string(),
        deadline: case.deadline.to_string(),
        manifest: serde_json::from_str(&case.manifest).unwrap_or(serde_json::Value::Null),
        events,
    }
}

/// The caller's cases, with the deletion manifest of each.
#[utoipa::path(get, path = "/v1/cases", tag = "cases",
    responses((status = 200, description = "the developer's cases", body = Vec<CaseBody>)),
    security(("client_basic" = [])))]
pub async fn my_cases(
    State(state): State<ApiState>,
    DeveloperAuth(developer): DeveloperAuth,
) -> Result<Json<Vec<CaseBody>>, ApiError> {
    let cases = blocking(&state.service, move |s| s.cases_of(&developer).map_err(ApiError::from)).await?;
    Ok(Json(cases.into_iter().map(|c| body(c, Vec::new())).collect()))
}

/// The developer attests the deletion; once, for its own case only.
#[utoipa::path(post, path = "/v1/cases/{id}/attestation", tag = "cases", request_body = AttestationInput,
    params(("id" = u64, Path)),
    responses((status = 200, description = "attested", body = CaseBody), (status = 404, body = Problem, description = "no such case of yours"), (status = 409, body = Problem, description = "already attested, or the case is closed")),
    security(("client_basic" = [])))]
pub async fn attest(
    State(state): State<ApiState>,
    DeveloperAuth(developer): DeveloperAuth,
    path: Result<Path<String>, PathRejection>,
    JsonBody(input): JsonBody<AttestationInput>,
) -> Result<Json<CaseBody>, ApiError> {
    let Path(raw) = path.map_err(|e| ApiError::bad_request(format!("bad path: {e}")))?;
    let id: u64 = raw.parse().map_err(|_| ApiError::bad_request("a case id is a whole number"))?;
    let case = blocking(&state.service, move |s| {
        s.attest_case(&developer, id, &input.statement).map_err(ApiError::from)?;
        s.store().case(id).map_err(|e| ApiError::from(consentry_service::ServiceError::from(e)))
    })
    .await?
    .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not-found", "case not found"))?;
    Ok(Json(body(case, Vec::new())))
}

/// Every case, with its history.
#[utoipa::path(get, path = "/platform/v1/cases", tag = "cases",
    responses((status = 200, description = "every case, with its history", body = Vec<CaseBody>)),
    security(("operator_key" = [])))]
pub async fn all_cases(
    State(state): State<ApiState>,
    OperatorAuth(op): OperatorAuth,
) -> Result<Json<Vec<CaseBody>>, ApiError> {
    op.require(&[OperatorRole::Operator, OperatorRole::PrivacyOfficer, OperatorRole::Auditor])?;
    let cases = blocking(&state.service, case_bodies).await?;
    Ok(Json(cases))
}

/// Every case with its history, as the platform API lists them (the console shows the same).
pub(crate) fn case_bodies(s: &consentry_service::Service) -> Result<Vec<CaseBody>, ApiError> {
    let map = |e| ApiError::from(consentry_service::ServiceError::from(e));
    let mut out = Vec::new();
    for case in s.store().cases().map_err(map)? {
        let events = s
            .store()
            .case_events(case.id)
            .map_err(map)?
            .into_iter()
            .map(|e| CaseEventBody { state: e.state.as_str(), at: e.at.to_string(), note: e.note })
            .collect();
        out.push(body(case, events));
    }
    Ok(out)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificationInput {
    /// How the app uses member data, re-certified every year.
    pub statement: String,
}

/// The annual data-use checkup: the developer re-certifies one of its apps.
#[utoipa::path(post, path = "/v1/apps/{id}/certification", tag = "cases", request_body = CertificationInput,
    params(("id" = String, Path)),
    responses((status = 204, description = "certified"), (status = 404, body = Problem, description = "no such app of yours")),
    security(("client_basic" = [])))]
pub async fn certify(
    State(state): State<ApiState>,
    DeveloperAuth(developer): DeveloperAuth,
    path: Result<Path<String>, PathRejection>,
    JsonBody(input): JsonBody<CertificationInput>,
) -> Result<StatusCode, ApiError> {
    let Path(raw) = path.map_err(|e| ApiError::bad_request(format!("bad path: {e}")))?;
    let app = consentry_types::AppId::parse(&raw).map_err(|e| ApiError::bad_request(e.to_string()))?;
    blocking(&state.service, move |s| {
        s.certify_app(&developer, &app, &input.statement).map_err(ApiError::from)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
