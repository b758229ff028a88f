//! OAuth 2.0 for apps: client credentials grant (RFC 6749 §4.4), revocation (RFC 7009) and
//! introspection (RFC 7662). Errors are RFC 6749 §5.2 JSON.
//!
//! Client authentication is throttled (see `consentry_service::AuthLimits`): a client id or
//! address with too many recent failures gets 429, and when every client-secret checker is
//! busy the answer is 503; both with `Retry-After` and `error` = `temporarily_unavailable`.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use consentry_service::ServiceError;
use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::extract::{blocking, body_bytes, has_media_type, peer_address, Params};
use crate::ApiState;

/// An RFC 6749 §5.2 error.
#[derive(Debug, Serialize, ToSchema)]
pub struct OAuthError {
    pub error: &'static str,
    pub error_description: String,
    #[serde(skip)]
    status: u16,
    #[serde(skip)]
    basic_challenge: bool,
    #[serde(skip)]
    retry_after: Option<u64>,
}

impl OAuthError {
    fn new(error: &'static str, description: impl Into<String>) -> OAuthError {
        OAuthError {
            error,
            error_description: description.into(),
            status: 400,
            basic_challenge: false,
            retry_after: None,
        }
    }
    fn invalid_client() -> OAuthError {
        OAuthError {
            status: 401,
            basic_challenge: true,
            ..OAuthError::new("invalid_client", "client authentication failed")
        }
    }
    /// 429 or 503 with `Retry-After`: nothing was checked, try again later.
    fn retry_later(status: u16, description: String, secs: u64) -> OAuthError {
        OAuthError {
            status,
            retry_after: Some(secs.max(1)),
            ..OAuthError::new("temporarily_unavailable", description)
        }
    }
}

/// The answer to a failed client authentication (or token issue).
fn authentication_failed(error: ServiceError) -> Response {
    match error {
        ServiceError::Unauthenticated(_) => OAuthError::invalid_client().into_response(),
        ServiceError::Forbidden(why) => OAuthError::new("unauthorized_client", why).into_response(),
        ServiceError::TooManyAttempts { retry_after_secs } => OAuthError::retry_later(
            429,
            format!(
                "too many failed authentications for this client or from this address; retry after {retry_after_secs} s"
            ),
            retry_after_secs,
        )
        .into_response(),
        ServiceError::Busy { retry_after_secs } => OAuthError::retry_later(
            503,
            format!("too many client secrets are being checked; retry after {retry_after_secs} s"),
            retry_after_secs,
        )
        .into_response(),
        other => crate::problem::ApiError::from(other).into_response(),
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        let (challenge, retry_after) = (self.basic_challenge, self.retry_after);
        let mut response = (status, Json(self)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if challenge {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"consentry\""));
        }
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            response.extensions_mut().insert(crate::RefusedForNow);
        }
        response
    }
}

/// A successful token response.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the token expires.
    pub expires_in: i64,
}

/// What introspection tells the token's own client.
#[derive(Debug, Serialize, ToSchema)]
pub struct IntrospectionResponse {
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
}

/// The client credentials grant's form (RFC 6749 §4.4.2). The client authenticates with
/// `client_id` and `client_secret` here or with HTTP Basic, not both.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // describes the form for the OpenAPI document; the handler reads it as `Params`
pub struct TokenForm {
    /// `client_credentials`, the only grant.
    pub grant_type: String,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    /// Accepted and ignored: an app's access is decided per field, per request.
    pub scope: Option<String>,
}

/// The form of revocation (RFC 7009) and introspection (RFC 7662); the client authenticates
/// here or with HTTP Basic, not both.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // describes the form for the OpenAPI document; the handlers read it as `Params`
pub struct TokenQueryForm {
    pub token: String,
    /// Accepted and ignored: there is one kind of token.
    pub token_type_hint: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
}

/// Reads a form body and the client's credentials (Basic header or body, not both).
async fn form_and_client(
    request: Request,
    state: &ApiState,
    allowed: &[&str],
) -> Result<(Params, String, String), OAuthError> {
    let headers: HeaderMap = request.headers().clone();
    let is_form = has_media_type(&headers, "application/x-www-form-urlencoded");
    if !is_form {
        return Err(OAuthError::new(
            "invalid_request",
            "send the parameters as application/x-www-form-urlencoded",
        ));
    }
    let body =
        body_bytes(request, state).await.map_err(|e| OAuthError::new("invalid_request", e.problem.detail))?;
    let params =
        Params::parse(&body, allowed).map_err(|e| OAuthError::new("invalid_request", e.problem.detail))?;
    let basic = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| {
        let (scheme, rest) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("basic").then(|| rest.trim().to_string())
    });
    let in_body = params.get("client_id").is_some() || params.get("client_secret").is_some();
    match (basic, in_body) {
        (Some(_), true) => {
            Err(OAuthError::new("invalid_request", "use one client authentication method, not two"))
        }
        (Some(encoded), false) => {
            let decoded = STANDARD.decode(encoded).map_err(|_| OAuthError::invalid_client())?;
            let decoded = String::from_utf8(decoded).map_err(|_| OAuthError::invalid_client())?;
            let (id, secret) = decoded.split_once(':').ok_or_else(OAuthError::invalid_client)?;
            // RFC 6749 §2.3.1: both parts are form-encoded before Basic encoding.
            let id = percent_decode_str(&id.replace('+', " ")).decode_utf8_lossy().into_owned();
            let secret = percent_decode_str(&secret.replace('+', " ")).decode_utf8_lossy().into_owned();
            Ok((params, id, secret))
        }
        (None, _) => {
            let id = params.get("client_id").unwrap_or_default().to_string();
            let secret = params.get("client_secret").unwrap_or_default().to_string();
            if id.is_empty() {
                return Err(OAuthError::invalid_client());
            }
            Ok((params, id, secret))
        }
    }
}

fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// Client credentials grant.
#[utoipa::path(
    post, path = "/oauth/token", tag = "oauth",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded", description = "grant_type=client_credentials; client_id and client_secret here or in HTTP Basic"),
    responses(
        (status = 200, body = TokenResponse),
        (status = 400, body = OAuthError, description = "invalid_request, unsupported_grant_type or unauthorized_client"),
        (status = 401, body = OAuthError, description = "invalid_client"),
        (status = 429, body = OAuthError, description = "temporarily_unavailable: too many failed authentications for this client id or from this address; see Retry-After", headers(("Retry-After" = u64, description = "seconds to wait before trying again"))),
        (status = 503, body = OAuthError, description = "temporarily_unavailable: every client-secret checker is busy; see Retry-After", headers(("Retry-After" = u64, description = "seconds to wait before trying again"))),
    )
)]
pub async fn token(State(state): State<ApiState>, request: Request) -> Response {
    let allowed = ["grant_type", "client_id", "client_secret", "scope"];
    let from = peer_address(request.extensions());
    let (params, client_id, secret) = match form_and_client(request, &state, &allowed).await {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    match params.get("grant_type") {
        None => return OAuthError::new("invalid_request", "grant_type is required").into_response(),
        Some("client_credentials") => {}
        Some(_) => {
            return OAuthError::new("unsupported_grant_type", "only client_credentials is supported")
                .into_response()
        }
    }
    // A blocked client id or address is refused here, before any work is queued.
    if let Err(refused) = state.service.refuse_throttled_client(&client_id, from) {
        return authentication_failed(refused);
    }
    let issued = blocking(&state.service, move |s| Ok(s.issue_token_from(&client_id, &secret, from))).await;
    match issued {
        Ok(Ok(token)) => no_store(
            Json(TokenResponse {
                access_token: token.access_token,
                token_type: "Bearer",
                expires_in: token.expires_in,
            })
            .into_response(),
        ),
        Ok(Err(failed)) => authentication_failed(failed),
        Err(error) => error.into_response(),
    }
}

async fn authenticated_token_request(
    state: &ApiState,
    request: Request,
) -> Result<(consentry_types::AppId, String), Response> {
    let allowed = ["token", "token_type_hint", "client_id", "client_secret"];
    let from = peer_address(request.extensions());
    let (params, client_id, secret) =
        form_and_client(request, state, &allowed).await.map_err(IntoResponse::into_response)?;
    let token = params
        .get("token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| OAuthError::new("invalid_request", "token is required").into_response())?
        .to_string();
    state.service.refuse_throttled_client(&client_id, from).map_err(authentication_failed)?;
    let client = blocking(&state.service, move |s| Ok(s.authenticate_client(&client_id, &secret, from)))
        .await
        .map_err(IntoResponse::into_response)?
        .map_err(authentication_failed)?;
    Ok((client, token))
}

/// Token revocation; answers 200 whether or not the token was known.
#[utoipa::path(
    post, path = "/oauth/revoke", tag = "oauth",
    request_body(content = TokenQueryForm, content_type = "application/x-www-form-urlencoded", description = "token, optional token_type_hint; client authentication"),
    responses((status = 200, description = "revoked, or not a token of this client"), (status = 400, body = OAuthError), (status = 401, body = OAuthError), (status = 429, body = OAuthError, description = "temporarily_unavailable; see Retry-After", headers(("Retry-After" = u64, description = "seconds to wait before trying again"))), (status = 503, body = OAuthError, description = "temporarily_unavailable; see Retry-After", headers(("Retry-After" = u64, description = "seconds to wait before trying again"))))
)]
pub async fn revoke(State(state): State<ApiState>, request: Request) -> Response {
    let (client, token) = match authenticated_token_request(&state, request).await {
        Ok(x) => x,
        Err(response) => return response,
    };
    match blocking(&state.service, move |s| s.revoke_token(&client, &token).map_err(Into::into)).await {
        Ok(()) => no_store(StatusCode::OK.into_response()),
        Err(e) => e.into_response(),
    }
}

/// Token introspection, for the token's own client.
#[utoipa::path(
    post, path = "/oauth/introspect", tag = "oauth",
    request_body(content = TokenQueryForm, content_type = "application/x-www-form-urlencoded", description = "token; client authentication"),
    responses((status = 200, body = IntrospectionResponse), (status = 400, body = OAuthError), (status = 401, body = OAuthError), (status = 429, body = OAuthError, description = "temporarily_unavailable; see Retry-After", headers(("Retry-After" = u64, description = "seconds to wait before trying again"))), (status = 503, body = OAuthError, description = "temporarily_unavailable; see Retry-After", headers(("Retry-After" = u64, description = "seconds to wait before trying again"))))
)]
pub async fn introspect(State(state): State<ApiState>, request: Request) -> Response {
    let (client, token) = match authenticated_token_request(&state, request).await {
        Ok(x) => x,
        Err(response) => return response,
    };
    match blocking(&state.service, move |s| s.introspect_token(&client, &token).map_err(Into::into)).await {
        Ok(found) => no_store(
            Json(IntrospectionResponse {
                active: found.active,
                client_id: found.client_id,
                token_type: found.active.then_some("Bearer"),
                exp: found.expires_at.map(|t| t.secs()),
                iat: found.issued_at.map(|t| t.secs()),
            })
            .into_response(),
        ),
        Err(e) => e.into_response(),
    }
}
