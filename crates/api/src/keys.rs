//! Operator keys over the platform API: create (by the role table), list, show, revoke.
//! A key's secret is shown once, when it is created; its hash is never shown.
//!
//! | key of role      | may create                           | may revoke                                  |
//! |------------------|--------------------------------------|---------------------------------------------|
//! | operator         | operator, auditor                    | its own; operator and auditor keys          |
//! | privacy_officer  | operator, auditor, privacy_officer   | its own; any key, but never the last live privacy-officer key |
//! | auditor          | nothing                              | its own                                     |
//!
//! The first privacy-officer key is made on the server (`consentry keys create`).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use consentry_service::parse_key_lifetime;
use consentry_store::{KeyOrigin, OperatorKey};
use consentry_types::{Instant, OperatorRole};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::extract::{blocking, JsonBody, OperatorAuth};
use crate::problem::{ApiError, Problem};
use crate::ApiState;

const READERS: &[OperatorRole] =
    &[OperatorRole::Operator, OperatorRole::PrivacyOfficer, OperatorRole::Auditor];

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyInput {
    pub name: String,
    /// `operator`, `privacy_officer` or `auditor` (see the role table: operators create
    /// operator and auditor keys, privacy officers also privacy-officer keys).
    pub role: String,
    /// e.g. `90d` or `12h` (at most 3650d). A key never outlives the key that created it.
    pub expires_in: Option<String>,
}

/// A new operator key. Its text is shown here once and kept only as a hash.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyCreated {
    pub id: String,
    pub key: String,
    pub name: String,
    pub role: String,
    pub expires_at: Option<String>,
}

/// Who made a key: another key over the platform API, or a command on the server.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyMaker {
    /// The id of the key it was created with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The command run on the server that created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The OS user who ran that command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_user: Option<String>,
}

/// An operator key as listed: never its secret or hash.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyBody {
    pub id: String,
    pub name: String,
    pub role: String,
    /// `live`, `expired` or `revoked`.
    pub status: &'static str,
    pub created_by: KeyMaker,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
}

impl KeyBody {
    pub fn of(key: OperatorKey, now: Instant) -> KeyBody {
        let status = if key.revoked_at.is_some() {
            "revoked"
        } else if key.is_live(now) {
            "live"
        } else {
            "expired"
        };
        let created_by = match key.created_by {
            KeyOrigin::Key(id) => KeyMaker { key: Some(id), command: None, os_user: None },
            KeyOrigin::Server { command, os_user } => {
                KeyMaker { key: None, command: Some(command), os_user: Some(os_user) }
            }
        };
        KeyBody {
            id: key.id,
            name: key.name,
            role: key.role.as_str().to_string(),
            status,
            created_by,
            created_at: key.created_at.to_string(),
            expires_at: key.expires_at.map(|t| t.to_string()),
            revoked_at: key.revoked_at.map(|t| t.to_string()),
        }
    }
}

fn key_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) = path.map_err(|e| ApiError::bad_request(format!("bad path: {e}")))?;
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ApiError::bad_request("a key id is 1 to 64 letters and digits"));
    }
    Ok(id)
}

/// Creates an operator key with the caller's key, as the role table allows.
#[utoipa::path(post, path = "/platform/v1/keys", tag = "keys", request_body = KeyInput,
    responses((status = 201, description = "created; the key is shown this once", body = KeyCreated), (status = 403, body = Problem, description = "the caller's role may not create keys of that role")),
    security(("operator_key" = [])))]
pub async fn create_key(
    State(state): State<ApiState>,
    OperatorAuth(op): OperatorAuth,
    JsonBody(input): JsonBody<KeyInput>,
) -> Result<(StatusCode, Json<KeyCreated>), ApiError> {
    let role = OperatorRole::parse(&input.role)
        .ok_or_else(|| ApiError::bad_request("role must be operator, privacy_officer or auditor"))?;
    let created = blocking(&state.service, move |s| {
        let lifetime = input.expires_in.as_deref().map(parse_key_lifetime).transpose()?;
        s.create_operator_key(&op, &input.name, role, lifetime).map_err(ApiError::from)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(KeyCreated {
            id: created.id,
            key: created.key,
            name: created.name,
            role: created.role.as_str().to_string(),
            expires_at: created.expires_at.map(|t| t.to_string()),
        }),
    ))
}

/// Every operator key, revoked and expired ones too, oldest first.
#[utoipa::path(get, path = "/platform/v1/keys", tag = "keys",
    responses((status = 200, description = "every key, oldest first", body = Vec<KeyBody>)),
    security(("operator_key" = [])))]
pub async fn list_keys(
    State(state): State<ApiState>,
    OperatorAuth(op): OperatorAuth,
) -> Result<Json<Vec<KeyBody>>, ApiError> {
    op.require(READERS)?;
    let keys = blocking(&state.service, |s| {
        let now = s.now();
        Ok(s.operator_keys()?.into_iter().map(|k| KeyBody::of(k, now)).collect())
    })
    .await?;
    Ok(Json(keys))
}

#[utoipa::path(get, path = "/platform/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path)),
    responses((status = 200, description = "the key", body = KeyBody), (status = 404, body = Problem, description = "no such key")),
    security(("operator_key" = [])))]
pub async fn show_key(
    State(state): State<ApiState>,
    OperatorAuth(op): OperatorAuth,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<KeyBody>, ApiError> {
    op.require(READERS)?;
    let id = key_id(path)?;
    let key = blocking(&state.service, move |s| Ok(KeyBody::of(s.operator_key(&id)?, s.now()))).await?;
    Ok(Json(key))
}

/// Revokes a key: it fails from its very next request. Revoking a revoked key changes nothing.
#[utoipa::path(delete, path = "/platform/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path)),
    responses((status = 204, description = "revoked (or already was)"), (status = 403, body = Problem, description = "the caller's role may not revoke that key"), (status = 404, body = Problem, description = "no such key"), (status = 409, body = Problem, description = "it is the last live privacy-officer key")),
    security(("operator_key" = [])))]
pub async fn revoke_key(
    State(state): State<ApiState>,
    OperatorAuth(op): OperatorAuth,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let id = key_id(path)?;
    blocking(&state.service, move |s| s.revoke_operator_key(&op, &id).map_err(ApiError::from)).await?;
    Ok(StatusCode::NO_CONTENT)
}
