//! The platform API under `/platform/v1`: ingest with the platform's own ids, apps,
//! installations, consents, policies and operator keys. Every call needs an operator key.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::Json;
use consentry_types::{AppId, AppStatus, DeveloperId, GroupId, MemberId, OperatorRole, PostId, Role, Scope};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::extract::{blocking, body_bytes, require_media_type, JsonBody, OperatorAuth};
use crate::problem::{ApiError, Problem};
use crate::ApiState;

const WRITERS: &[OperatorRole] = &[OperatorRole::Operator];
const POLICY_AUTHORS: &[OperatorRole] = &[OperatorRole::Operator, OperatorRole::PrivacyOfficer];
const READERS: &[OperatorRole] =
    &[OperatorRole::Operator, OperatorRole::PrivacyOfficer, OperatorRole::Auditor];

fn id<T>(raw: &str, parse: impl Fn(&str) -> Result<T, consentry_types::InvalidId>) -> Result<T, ApiError> {
    parse(raw).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn one(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(p)| p).map_err(|e| ApiError::bad_request(format!("bad path: {e}")))
}

fn two(path: Result<Path<(String, String)>, PathRejection>) -> Result<(String, String), ApiError> {
    path.map(|Path(p)| p).map_err(|e| ApiError::bad_request(format!("bad path: {e}")))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberInput {
    pub name: String,
    pub picture_url: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupInput {
    pub name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MembershipInput {
    /// `member` or `admin`.
    pub role: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostInput {
    /// The author's platform member id; must be a member of the group.
    pub author: String,
    pub content: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeveloperInput {
    pub name: String,
    pub contact_email: String,
    /// An `https://` URL on a public address (see the README's "Receiving webhooks").
    pub webhook_url: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppInput {
    pub developer: String,
    pub name: String,
    /// e.g. `social_media_management`, `video_streaming`.
    pub category: String,
}

/// A registered app. The client secret is shown here once and never again.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppCreated {
    pub id: String,
    pub client_id: String,
    pub client_secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AppBody {
    pub id: String,
    pub developer: String,
    pub name: String,
    pub category: String,
    pub status: String,
    pub client_id: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallationInput {
    /// The platform member id of the group admin who authorized the app.
    pub authorized_by: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentInput {
    /// Today only `profile` (name and picture).
    pub scopes: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyCreated {
    pub version: u32,
}

/// An operator key named in a record: its id, and its name if it is a key (authors from
/// before keys had identities were recorded by a typed name, with no key behind it).
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyRef {
    pub id: String,
    pub name: Option<String>,
}

/// A privacy officer's approval of a version.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalBody {
    pub by: KeyRef,
    pub at: String,
    /// Whether it satisfies the two-person rule now (a key outside the author's lineage, not
    /// revoked since).
    pub counts: bool,
}

/// One time a version was made the active policy.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActivationRecord {
    pub at: String,
    pub by: KeyRef,
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyBody {
    pub version: u32,
    /// The key that submitted it.
    pub author: KeyRef,
    pub created_at: String,
    pub active: bool,
    pub text: String,
    /// Who approved it (by key), and when.
    pub approvals: Vec<ApprovalBody>,
    /// Every time it was made the active policy: when, by which key, why.
    pub activations: Vec<ActivationRecord>,
    /// Previews kept with the version: who, when, and the summary.
    #[schema(value_type = Vec<Object>)]
    pub previews: Vec<serde_json::Value>,
    /// Where the version stands with its proofs (passed, failed, waived with the waiver, or
    /// missing), and every waiver kept with it.
    #[schema(value_type = Object)]
    pub proofs: serde_json::Value,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivationInput {
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ActivationBody {
    pub version: u32,
    /// The id of the key that activated it.
    pub author: String,
    pub reason: String,
    pub at: String,
}

type NoContent = Result<StatusCode, ApiError>;

macro_rules! write_call {
    ($state:expr, $operator:expr, $roles:expr, |$s:ident| $body:expr) => {{
        $operator.require($roles)?;
        blocking(&$state.service, move |$s| $body.map_err(ApiError::from)).await?;
        Ok(StatusCode::NO_CONTENT)
    }};
}

#[utoipa::path(put, path = "/platform/v1/members/{id}", tag = "platform", request_body = MemberInput,
    params(("id" = String, Path)), responses((status = 204, description = "stored"), (status = 403, body = Problem, description = "only an operator key may write the platform's facts")),
    security(("operator_key" = [])))]
pub async fn put_member(
    State(state): State<ApiState>,
    OperatorAuth(op): OperatorAuth,
    path: Result<Path<String>, PathRejection>,
    JsonBody(input): JsonBody<MemberInput>,
) -> NoContent {
    let member = id(&one(path)?, MemberId::parse)?;
    write_call!(state, op, WRITERS, |s| s.put_member(&member, &input.name, &input.picture_url))
}

#[utoipa::path(put, path = "/platform/v1/groups/{id}", tag = "platform", request_body = GroupInput,
    params(("id" = String, Path)), responses((status = 204, description = "stored"), (status = 403, body = Problem, description = "only an operator key may write the platform's facts")),
    security(("operator_key" = [])))]
pub async fn put_group(
    State(state): State<ApiState>,
    OperatorAuth(op): OperatorAuth,
    path: Result<Path<String>, PathRejection>,
    JsonBody(input): JsonBody<GroupInput>,
) -> NoContent {
    let group = id(&one(path)?, GroupId::parse)?;
    write_call!(state, op, WRITERS, |s| s.put_group(&group, &input.name))
}

#[utoipa::path(put, path = "/platform/v1/groups/{gid}/members/{mid}", tag = "platform", request_body = MembershipInput,
    params(("gid" = String, Path), ("mid" = String, Path)), responses((status = 204, description = "stored"), (status = 403, body = Problem, description = "only an operator key may write the platform's facts"), (status = 404, body = Problem, description = "no such group or member")),
    security(("operator_key" = [])))]
pub async fn put_membership(
    State(state): State<ApiState>,
    OperatorAuth(op): OperatorAuth,
    path: Result<Path<(String, String)>, PathRejection>,
    JsonBody(input): JsonBody<MembershipInput>,
) -> NoContent {
    let (g, m) = two(path)?;
    let (group, member) = (id(&g, GroupId::parse)?, id(&m, MemberId::parse)?);
    let role =
        Role::parse(&input.role).ok_or_else(|| ApiError::bad_request("role must be member or admin"))?;
    write_call!(state, op, WRITERS, |s| s.set_membership(&group, &member, Some(role)))
}

#[utoipa::path(delete, path = "/platform/v1/groups/{gid}/members/{mid}", tag = "platform",
    params(("gid" = String, Path), ("mid" = String, Path)), responses((status = 204, description = "removed, or was not a member"), (status = 403, body = Problem, description = "only an operator key may write the platform's facts"), (status = 404, body = Problem, description = "no such group or member")),
    security(("operator_key" = [])))]
pub async fn delete_membership(
    State(state): State<ApiState>,
    OperatorAuth(op): OperatorAuth,
    path: Result<Path<(String, String)>, PathRejection>,
) -> NoContent {
    let (g, m) = two(path)?;
    let (group, member) = (id(&g, GroupId::parse)?, id(&m, MemberId::parse)?);
    write_call!(state, op, WRITERS, |s| s.set_membership(&group, &member, None))
}

#[utoipa::path(put, path = "/platform/v1/groups/{gid}/posts/{pid}", tag = "platform", request_body = PostInput,
    params(("gid" = String, Path), ("pid" = String, Path)), responses((status = 204, description = "stored"), (status = 403, body = Problem, description = "only an operator key may write the platform's facts"), (status = 404, body = Problem, description = "no such group or author"), (status = 422, body = Problem, description = "the author is not a member of the group")),
    security(("operator_key" = [])))]
pub async fn put_post(
    State(state): State<ApiState>,
    OperatorAuth(op): OperatorAuth,
    path: Result<Path<(String, String)>, PathRejection>,
    JsonBody(input): JsonBody<PostInput>,
) -> NoContent {
    let (g, p) = two(path)?;
    let (group, post) = (id(&g, GroupId::parse)?, id(&p, PostId::parse)?);
    let author = id(&input.author, MemberId::parse)?;
    write_call!(state, op, WRITERS, |s| s.put_post(&group, &post, &author, &input.content))
}

#[utoipa::path(put, path = "/platform/v1/developers/{id}", tag = "platform", request_body = DeveloperInput,
    params(("id" = String, Path)), responses((status = 204, description = "stored"), (status = 403, body = Problem, description = "only an operator key may write the platform's facts"), (status = 422, body = Problem, description = "the webhook URL's target is refused (not https, or a loopback, private, link-local or metadata address)")),
    security(("operator_key" = [])))]
pub async fn put_developer(
    State(state): State<ApiState>,
    OperatorAuth(op): OperatorAuth,
    path: Result<Path<String>, PathRejection>,
    JsonBody(input): JsonBody<DeveloperInput>,
) -> NoContent {
    let developer = id(&one(path)?, DeveloperId::parse)?;
    write_call!(state, op, WRITERS, |s| s.put_developer(
        &developer,
        &input.name,
        &input.contact_email,
        &input.webhook_url
    ))
}

#[utoipa::path(post, path = "/platform/v1/apps", tag = "platform", request_body = AppInput,
    responses((status = 201, description = "registered; the client secret is shown this once", body = AppCreated), (status = 403, body = Problem, description = "only an operator key may write the platform's facts"), (status = 404, body = Problem, description = "no such developer")),
    security(("operator_key" = [])))]
pub async fn create_app(
    State(state): State<ApiState>,
    OperatorAuth(op): OperatorAuth,
    JsonBody(input): JsonBody<AppInput>,
) -> Result<(StatusCode, Json<AppCreated>), ApiError> {
    op.require(WRITERS)?;
    let developer = id(&input.developer, DeveloperId::parse)?;
    let created = blocking(&state.service, move |s| {
        s.register_app(&developer, &input.name, &input.category).map_err(ApiError::from)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(AppCreated {
            id: created.app.id.to_string(),
            client_id: created.app.client_id,
            client_secret: created.client_secret,
        }),
    ))
}

#[utoipa::path(get, path = "/platform/v1/apps", tag = "platform",
    responses((status = 200, description = "every app", body = Vec<AppBody>)),
    security(("operator_key" = [])))]
pub async fn list_apps(
    State(state): State<ApiState>,
    OperatorAuth(op): OperatorAuth,
) -> Result<Json<Vec<AppBody>>, ApiError> {
    op.require(READERS)?;
    let apps = blocking(&state.service, |s| {
        s.store().apps().map_err(|e| ApiError::from(consentry_service::ServiceError::from(e)))
    })
    .await?;
    Ok(Json(
        apps.into_iter()
            .map(|a| AppBody {
                id: a.id.to_string(),
                developer: a.developer.to_string(),
                name: a.name,
                category: a.category,
                status: a.status.as_str().to_string(),
                client_id: a.client_id,
            })
            .collect(),
    ))
}

#[utoipa::path(post, path = "/platform/v1/apps/{id}/suspend", tag = "platform",
    params(("id" = String, Path)), responses((status = 204, description = "suspended"), (status = 403, body = Problem, description = "an auditor key may not do this"), (status = 404, body = Problem, description = "no such app"), (status = 409, body = Problem, description = "the app is banned, and stays so")),
    security(("operator_key" = [])))]
pub async fn suspend_app(
    State(state): State<ApiState>,
    OperatorAuth(op): OperatorAuth,
    path: Result<Path<String>, PathRejection>,
) -> NoContent {
    let app = id(&one(path)?, AppId::parse)?;
    write_call!(state, op, POLICY_AUTHORS, |s| s.set_app_status(&app, AppStatus::Suspended))
}

/// Brings a suspended app back: never a banned one, never while a remediation case naming
/// it is open.
#[utoipa::path(post, path = "/platform/v1/apps/{id}/reinstate", tag = "platform",
    params(("id" = String, Path)), responses((status = 204, description = "reinstated"), (status = 403, body = Problem, description = "an auditor key may not do this"), (status = 404, body = Problem, description = "no such app"), (status = 409, body = Problem, description = "the app is not suspended (banned apps stay banned), or a case naming it is open")),
    security(("operator_key" = [])))]
pub async fn reinstate_app(
    State(state): State<ApiState>,
    OperatorAuth(op): OperatorAuth,
    path: Result<Path<String>, PathRejection>,
) -> NoContent {
    let app = id(&one(path)?, AppId::parse)?;
    write_call!(state, op, POLICY_AUTHORS, |s| s.reinstate_app(&app))
}

#[utoipa::path(put, path = "/platform/v1/groups/{gid}/installations/{app}", tag = "platform", request_body = InstallationInput,
    params(("gid" = String, Path), ("app" = String, Path)),
    responses((status = 204, description = "installed"), (status = 403, body = Problem, description = "only an operator key may write the platform's facts"), (status = 404, body = Problem, description = "no such group, app or member"), (status = 422, body = Problem, description = "authorized_by is not an admin of the group, or the app may not be installed")),
    security(("operator_key" = [])))]
pub async fn put_installation(
    State(state): State<ApiState>,
    OperatorAuth(op): OperatorAuth,
    path: Result<Path<(String, String)>, PathRejection>,
    JsonBody(input): JsonBody<InstallationInput>,
) -> NoContent {
    let (g, a) = two(path)?;
    let (group, app) = (id(&g, GroupId::parse)?, id(&a, AppId::parse)?);
    let by = id(&input.authorized_by, MemberId::parse)?;
    write_call!(state, op, WRITERS, |s| s.install_app(&app, &group, &by))
}

#[utoipa::path(delete, path = "/platform/v1/groups/{gid}/installations/{app}", tag = "platform",
    params(("gid" = String, Path), ("app" = String, Path)), responses((status = 204, description = "removed, or was not installed"), (status = 403, body = Problem, description = "only an operator key may write the platform's facts"), (status = 404, body = Problem, description = "no such group or app")),
    security(("operator_key" = [])))]
pub async fn delete_installation(
    State(state): State<ApiState>,
    OperatorAuth(op): OperatorAuth,
    path: Result<Path<(String, String)>, PathRejection>,
) -> NoContent {
    let (g, a) = two(path)?;
    let (group, app) = (id(&g, GroupId::parse)?, id(&a, AppId::parse)?);
    write_call!(state, op, WRITERS, |s| s.uninstall_app(&app, &group))
}

#[utoipa::path(put, path = "/platform/v1/members/{mid}/consents/{app}", tag = "platform", request_body = ConsentInput,
    params(("mid" = String, Path), ("app" = String, Path)), responses((status = 204, description = "stored"), (status = 403, body = Problem, description = "only an operator key may write the platform's facts"), (status = 404, body = Problem, description = "no such member or app")),
    security(("operator_key" = [])))]
pub async fn put_consent(
    State(state): State<ApiState>,
    OperatorAuth(op): OperatorAuth,
    path: Result<Path<(String, String)>, PathRejection>,
    JsonBody(input): JsonBody<ConsentInput>,
) -> NoContent {
    let (m, a) = two(path)?;
    let (member, app) = (id(&m, MemberId::parse)?, id(&a, AppId::parse)?);
    let scopes = input
        .scopes
        .iter()
        .map(|s| {
            Scope::parse(s)
                .ok_or_else(|| ApiError::bad_request(format!("unknown scope {s:?}; known: profile")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    write_call!(state, op, WRITERS, |s| s.set_consent(&member, &app, &scopes))
}

#[utoipa::path(delete, path = "/platform/v1/members/{mid}/consents/{app}", tag = "platform",
    params(("mid" = String, Path), ("app" = String, Path)), responses((status = 204, description = "withdrawn, or there was none"), (status = 403, body = Problem, description = "only an operator key may write the platform's facts"), (status = 404, body = Problem, description = "no such member or app")),
    security(("operator_key" = [])))]
pub async fn delete_consent(
    State(state): State<ApiState>,
    OperatorAuth(op): OperatorAuth,
    path: Result<Path<(String, String)>, PathRejection>,
) -> NoContent {
    let (m, a) = two(path)?;
    let (member, app) = (id(&m, MemberId::parse)?, id(&a, AppId::parse)?);
    write_call!(state, op, WRITERS, |s| s.set_consent(&member, &app, &[]))
}

/// Submits Cedar policy text (validated against the schema) as a new version.
#[utoipa::path(post, path = "/platform/v1/policies", tag = "policies",
    request_body(content = String, content_type = "text/plain", description = "Cedar policy text"),
    responses((status = 201, description = "stored as a new version", body = PolicyCreated), (status = 403, body = Problem, description = "an auditor key may not do this"), (status = 422, body = Problem, description = "does not parse or validate; errors carry line and column")),
    security(("operator_key" = [])))]
pub async fn submit_policy(
    State(state): State<ApiState>,
    OperatorAuth(op): OperatorAuth,
    request: Request,
) -> Result<(StatusCode, Json<PolicyCreated>), ApiError> {
    op.require(POLICY_AUTHORS)?;
    require_media_type(request.headers(), "text/plain")?;
    let bytes = body_bytes(request, &state).await?;
    let text =
        String::from_utf8(bytes.to_vec()).map_err(|_| ApiError::bad_request("policy text must be UTF-8"))?;
    let version =
        blocking(&state.service, move |s| s.submit_policy(&text, &op).map_err(ApiError::from)).await?;
    Ok((StatusCode::CREATED, Json(PolicyCreated { version })))
}

#[utoipa::path(get, path = "/platform/v1/policies", tag = "policies",
    responses((status = 200, description = "every version, oldest first", body = Vec<PolicyBody>)),
    security(("operator_key" = [])))]
pub async fn list_policies(
    State(state): State<ApiState>,
    OperatorAuth(op): OperatorAuth,
) -> Result<Json<Vec<PolicyBody>>, ApiError> {
    op.require(READERS)?;
    let bodies = blocking(&state.service, policy_bodies).await?;
    Ok(Json(bodies))
}

/// Every policy version as the platform API lists it (the console shows the same).
pub(crate) fn policy_bodies(s: &consentry_service::Service) -> Result<Vec<PolicyBody>, ApiError> {
    {
        let store = s.store();
        let map = |e| ApiError::from(consentry_service::ServiceError::from(e));
        let names: std::collections::HashMap<String, String> =
            s.operator_keys()?.into_iter().map(|k| (k.id, k.name)).collect();
        let key_ref = |id: &str| KeyRef { id: id.to_string(), name: names.get(id).cloned() };
        let active = store.active_policy().map_err(map)?.map(|p| p.version);
        let all_activations = store.policy_activations().map_err(map)?;
        let mut bodies = Vec::new();
        for v in store.policy_versions().map_err(map)? {
            let counting = s.counting_approvals(v.version)?;
            let approvals = store
                .policy_approvals(v.version)
                .map_err(map)?
                .into_iter()
                .map(|(who, at)| ApprovalBody {
                    counts: counting.iter().any(|(k, _)| *k == who),
                    by: key_ref(&who),
                    at: at.to_string(),
                })
                .collect();
            let previews = store
                .policy_previews(v.version)
                .map_err(map)?
                .into_iter()
                .map(|(by, at, summary)| {
                    let summary = serde_json::from_str::<serde_json::Value>(&summary).unwrap_or_default();
                    serde_json::json!({"by": by, "at": at.to_string(), "summary": summary})
                })
                .collect();
            let activations = all_activations
                .iter()
                .filter(|a| a.version == v.version)
                .map(|a| ActivationRecord {
                    at: a.at.to_string(),
                    by: key_ref(&a.author),
                    reason: a.reason.clone(),
                })
                .collect();
            let proofs = crate::proofs::proofs_of(s, v.version)?;
            let proofs = serde_json::json!({"standing": proofs.get("standing").cloned().unwrap_or_default(), "waivers": proofs.get("waivers").cloned().unwrap_or_default()});
            bodies.push(PolicyBody {
                proofs,
                activations,
                active: Some(v.version) == active,
                version: v.version,
                author: key_ref(&v.author),
                created_at: v.created_at.to_string(),
                text: v.text,
                approvals,
                previews,
            });
        }
        Ok(bodies)
    }
}

#[utoipa::path(post, path = "/platform/v1/policies/{version}/activate", tag = "policies", request_body = ActivationInput,
    params(("version" = u32, Path)), responses((status = 200, description = "now the active policy", body = ActivationBody), (status = 403, body = Problem, description = "an auditor key may not do this"), (status = 404, body = Problem, description = "no such version"), (status = 422, body = Problem, description = "the version lacks an approval that satisfies the two-person rule")),
    security(("operator_key" = [])))]
pub async fn activate_policy(
    State(state): State<ApiState>,
    OperatorAuth(op): OperatorAuth,
    path: Result<Path<String>, PathRejection>,
    JsonBody(input): JsonBody<ActivationInput>,
) -> Result<Json<ActivationBody>, ApiError> {
    op.require(POLICY_AUTHORS)?;
    let version: u32 =
        one(path)?.parse().map_err(|_| ApiError::bad_request("version must be a whole number"))?;
    let activation = blocking(&state.service, move |s| {
        s.activate_policy(version, &op, &input.reason).map_err(ApiError::from)
    })
    .await?;
    Ok(Json(ActivationBody {
        version: activation.version,
        author: activation.author,
        reason: activation.reason,
        at: activation.at.to_string(),
    }))
}

/// The secret a developer verifies webhook signatures with, for the platform to hand over.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookSecret {
    pub developer: String,
    pub secret: String,
    /// How deliveries are signed.
    pub signature_header: &'static str,
}

/// A webhook event and where its delivery stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationBody {
    pub id: u64,
    pub event: String,
    pub created_at: String,
    pub status: &'static str,
    pub attempts: u32,
    pub next_attempt_at: String,
    /// Why the last attempt failed, as a class and the HTTP status where there is one (e.g.
    /// `timeout`, `refused_target`, `http_5xx 503`); never the network's own error text.
    pub last_error: Option<String>,
}

#[utoipa::path(get, path = "/platform/v1/developers/{id}/webhook-secret", tag = "platform",
    params(("id" = String, Path)), responses((status = 200, description = "the secret deliveries are signed with", body = WebhookSecret), (status = 403, body = Problem, description = "only an operator key sees webhook secrets"), (status = 404, body = Problem, description = "no such developer")),
    security(("operator_key" = [])))]
pub async fn webhook_secret(
    State(state): State<ApiState>,
    OperatorAuth(op): OperatorAuth,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<WebhookSecret>, ApiError> {
    op.require(WRITERS)?;
    let developer = id(&one(path)?, DeveloperId::parse)?;
    let secret = blocking(&state.service, move |s| {
        s.store()
            .developer(&developer)
            .map_err(|e| ApiError::from(consentry_service::ServiceError::from(e)))?
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not-found", "no such developer"))?;
        Ok(WebhookSecret {
            secret: s.webhook_secret(&developer),
            developer: developer.to_string(),
            signature_header:
                "Consentry-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, \"<t>.<body>\")>",
        })
    })
    .await?;
    Ok(Json(secret))
}

#[utoipa::path(get, path = "/platform/v1/developers/{id}/notifications", tag = "platform",
    params(("id" = String, Path)), responses((status = 200, description = "the developer's webhook events, oldest first", body = Vec<NotificationBody>)),
    security(("operator_key" = [])))]
pub async fn list_notifications(
    State(state): State<ApiState>,
    OperatorAuth(op): OperatorAuth,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Vec<NotificationBody>>, ApiError> {
    op.require(READERS)?;
    let developer = id(&one(path)?, DeveloperId::parse)?;
    let found = blocking(&state.service, move |s| {
        s.store()
            .notifications(&developer)
            .map_err(|e| ApiError::from(consentry_service::ServiceError::from(e)))
    })
    .await?;
    Ok(Json(
        found
            .into_iter()
            .map(|n| NotificationBody {
                id: n.id,
                event: n.event,
                created_at: n.created_at.to_string(),
                status: n.status.as_str(),
                attempts: n.attempts,
                next_attempt_at: n.next_attempt_at.to_string(),
                last_error: n.last_error,
            })
            .collect(),
    ))
}

/// One installation of an app in a group, current or ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstallationBody {
    pub app: String,
    pub authorized_by: String,
    pub installed_at: String,
    /// When it ended (removed by an admin, revoked, or expired for inactivity); absent while current.
    pub removed_at: Option<String>,
}

/// Every installation a group has had, for admins and members to see (including those that
/// expired after 90 days without use).
#[utoipa::path(get, path = "/platform/v1/groups/{gid}/installations", tag = "platform",
    params(("gid" = String, Path)), responses((status = 200, description = "every installation the group has had", body = Vec<InstallationBody>)),
    security(("operator_key" = [])))]
pub async fn group_installations(
    State(state): State<ApiState>,
    OperatorAuth(op): OperatorAuth,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Vec<InstallationBody>>, ApiError> {
    op.require(READERS)?;
    let group = id(&one(path)?, GroupId::parse)?;
    let history = blocking(&state.service, |s| {
        s.store().fact_history().map_err(|e| ApiError::from(consentry_service::ServiceError::from(e)))
    })
    .await?;
    let mut out: Vec<InstallationBody> = Vec::new();
    for change in history.installations.iter().filter(|c| c.key.1 == group) {
        let app = change.key.0.to_string();
        match &change.value {
            Some((by, since)) => {
                let current = out.iter_mut().rev().find(|i| i.app == app && i.removed_at.is_none());
                match current {
                    Some(existing) => existing.authorized_by = by.to_string(),
                    None => out.push(InstallationBody {
                        app,
                        authorized_by: by.to_string(),
                        installed_at: since.to_string(),
                        removed_at: None,
                    }),
                }
            }
            None => {
                if let Some(existing) = out.iter_mut().rev().find(|i| i.app == app && i.removed_at.is_none())
                {
                    existing.removed_at = Some(change.at.to_string());
                }
            }
        }
    }
    Ok(Json(out))
}

/// What a revocation did.
#[derive(Debug, Serialize, ToSchema)]
pub struct Revoked {
    pub apps: u64,
    pub tokens_revoked: u64,
}

/// Revokes an app: banned, every token dead, from the very next request.
#[utoipa::path(post, path = "/platform/v1/apps/{id}/revoke", tag = "platform",
    params(("id" = String, Path)), responses((status = 200, description = "banned, every token dead", body = Revoked), (status = 403, body = Problem, description = "an auditor key may not do this"), (status = 404, body = Problem, description = "no such app")),
    security(("operator_key" = [])))]
pub async fn revoke_app(
    State(state): State<ApiState>,
    OperatorAuth(op): OperatorAuth,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Revoked>, ApiError> {
    op.require(POLICY_AUTHORS)?;
    let app = id(&one(path)?, AppId::parse)?;
    let tokens = blocking(&state.service, move |s| s.revoke_app(&app).map_err(ApiError::from)).await?;
    Ok(Json(Revoked { apps: 1, tokens_revoked: tokens }))
}

/// Revokes every app of a developer.
#[utoipa::path(post, path = "/platform/v1/developers/{id}/revoke", tag = "platform",
    params(("id" = String, Path)), responses((status = 200, description = "every app banned, every token dead", body = Revoked), (status = 403, body = Problem, description = "an auditor key may not do this"), (status = 404, body = Problem, description = "no such developer")),
    security(("operator_key" = [])))]
pub async fn revoke_developer(
    State(state): State<ApiState>,
    OperatorAuth(op): OperatorAuth,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Revoked>, ApiError> {
    op.require(POLICY_AUTHORS)?;
    let developer = id(&one(path)?, DeveloperId::parse)?;
    let (apps, tokens) =
        blocking(&state.service, move |s| s.revoke_developer(&developer).map_err(ApiError::from)).await?;
    Ok(Json(Revoked { apps, tokens_revoked: tokens }))
}

/// What an approval answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalOutcome {
    pub version: u32,
    /// The id of the approving key.
    pub approved_by: String,
    pub proofs: ApprovalProofs,
    /// The latest preview kept with the version: who, when, the summary.
    #[schema(value_type = Option<Object>)]
    pub preview: Option<serde_json::Value>,
}

/// The version's proofs as an approval shows them.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalProofs {
    /// passed, failed, waived (with the waiver) or missing.
    #[schema(value_type = Object)]
    pub standing: serde_json::Value,
    /// The latest proof kept with the version.
    #[schema(value_type = Option<Object>)]
    pub latest: Option<serde_json::Value>,
    #[schema(value_type = Vec<Object>)]
    pub waivers: Vec<serde_json::Value>,
}

/// A privacy officer approves a stored version with a key outside its author's lineage
/// (two-person rule): not the author's key, not one the author's key created or that created
/// it, not one made by the same key as the author's. The version's proofs must have passed or
/// been waived; when none are kept and the server has a solver, they are run first. The answer
/// shows the proofs next to the latest preview on real history.
#[utoipa::path(post, path = "/platform/v1/policies/{version}/approve", tag = "policies",
    params(("version" = u32, Path)), responses((status = 200, description = "approved: the version's proofs and latest preview", body = ApprovalOutcome), (status = 403, body = Problem, description = "only a privacy officer approves"), (status = 404, body = Problem, description = "no such version"), (status = 422, body = Problem, description = "the approver's key is in the author's lineage, or the proofs did not pass and were not waived"), (status = 503, body = Problem, description = "the proofs could not be run")),
    security(("operator_key" = [])))]
pub async fn approve_policy(
    State(state): State<ApiState>,
    OperatorAuth(op): OperatorAuth,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ApprovalOutcome>, ApiError> {
    let version: u32 =
        one(path)?.parse().map_err(|_| ApiError::bad_request("version must be a whole number"))?;
    op.require(&[OperatorRole::PrivacyOfficer])?;
    let proofs = state.proofs.clone();
    let body = blocking(&state.service, move |s| {
        approve_version(s, proofs.as_deref(), version, &op)?;
        let latest_preview = s
            .store()
            .policy_previews(version)
            .map_err(|e| ApiError::from(consentry_service::ServiceError::from(e)))?
            .pop()
            .map(|(by, at, summary)| {
                let summary = serde_json::from_str::<serde_json::Value>(&summary).unwrap_or_default();
                serde_json::json!({"by": by, "at": at.to_string(), "summary": summary})
            });
        let mut proofs = crate::proofs::proofs_of(s, version)?;
        let latest = proofs.get_mut("proofs").and_then(|p| p.as_array_mut()).and_then(|p| p.pop());
        let waivers = match proofs.get_mut("waivers").map(serde_json::Value::take) {
            Some(serde_json::Value::Array(waivers)) => waivers,
            _ => Vec::new(),
        };
        Ok(ApprovalOutcome {
            version,
            approved_by: op.key_id.clone(),
            proofs: ApprovalProofs {
                standing: proofs.get("standing").cloned().unwrap_or_default(),
                latest,
                waivers,
            },
            preview: latest_preview,
        })
    })
    .await?;
    Ok(Json(body))
}

/// A privacy officer's approval as the platform API (and the console) makes it: when the
/// version has no proofs and this server has a prover, the proofs run first; then the
/// two-person rule and the proofs decide.
pub(crate) fn approve_version(
    s: &consentry_service::Service,
    proofs: Option<&crate::proofs::Proofs>,
    version: u32,
    op: &consentry_service::OperatorSession,
) -> Result<(), ApiError> {
    if let (Some(proofs), consentry_service::ProofStanding::Missing) = (proofs, s.proof_standing(version)?) {
        crate::proofs::prove_version(s, proofs, version, None, op)?;
    }
    s.approve_policy(version, op)?;
    Ok(())
}
