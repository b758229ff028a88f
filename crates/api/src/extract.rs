//! Request extractors that turn every kind of bad input into a problem+json error.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use consentry_service::{AppSession, OperatorSession, Service};
use serde::de::DeserializeOwned;

use crate::problem::ApiError;
use crate::ApiState;

/// The address the request came from, when served with connect info (`serve` is; router
/// tests without a socket are not, and are then throttled per client id only).
pub fn peer_address(extensions: &axum::http::Extensions) -> Option<std::net::IpAddr> {
    extensions.get::<ConnectInfo<std::net::SocketAddr>>().map(|ConnectInfo(address)| address.ip())
}

/// Runs blocking service work off the async threads.
pub async fn blocking<T: Send + 'static>(
    service: &Arc<Service>,
    work: impl FnOnce(&Service) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let service = service.clone();
    tokio::task::spawn_blocking(move || work(&service))
        .await
        .unwrap_or_else(|e| Err(ApiError::internal(&format!("worker failed: {e}"))))
}

fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            "the request body is larger than this endpoint accepts",
        )
    } else {
        ApiError::bad_request(format!("the request body could not be read: {rejection}"))
    }
}

/// Reads the whole body within the route's limit.
pub async fn body_bytes<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(request, state).await.map_err(body_rejection)
}

/// Whether the request's `Content-Type` is `media` (parameters such as charset ignored).
pub fn has_media_type(headers: &axum::http::HeaderMap, media: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(media))
}

/// 415 unless the body is `media`.
pub fn require_media_type(headers: &axum::http::HeaderMap, media: &str) -> Result<(), ApiError> {
    if has_media_type(headers, media) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            format!("send the body as {media}"),
        ))
    }
}

/// A JSON body, strictly parsed (types define `deny_unknown_fields`).
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        require_media_type(request.headers(), "application/json")?;
        let bytes = body_bytes(request, state).await?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("the JSON body is not valid: {e}")))
    }
}

/// Decoded `application/x-www-form-urlencoded` pairs (query string or form body), with
/// repeated or unknown names refused.
#[derive(Debug, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(raw: &[u8], allowed: &[&str]) -> Result<Params, ApiError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (name, value) in form_urlencoded::parse(raw) {
            if !allowed.contains(&name.as_ref()) {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter {:?}; this endpoint takes: {}",
                    name.chars().take(40).collect::<String>(),
                    allowed.join(", ")
                )));
            }
            if pairs.iter().any(|(n, _)| n == name.as_ref()) {
                return Err(ApiError::bad_request(format!("parameter {name:?} is given more than once")));
            }
            pairs.push((name.into_owned(), value.into_owned()));
        }
        Ok(Params(pairs))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn usize(&self, name: &str) -> Result<Option<usize>, ApiError> {
        self.get(name)
            .map(|v| {
                v.parse::<usize>()
                    .map_err(|_| ApiError::bad_request(format!("{name} must be a whole number")))
            })
            .transpose()
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

/// An app identified by its bearer token, for the Groups routes, whose page snapshot checks
/// the token in full again (a route that does not read one must not use this).
pub struct AppAuth(pub AppSession);

impl FromRequestParts<ApiState> for AppAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let Some(token) = bearer(parts).map(str::to_string) else {
            let mut error =
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", "an access token is required");
            error.challenge = Some("Bearer realm=\"consentry\"".to_string());
            return Err(error);
        };
        // The Groups routes this extracts for read the token again in their page snapshot
        // (see `Service::app_of_seen_token`): a token this node has seen costs no store read.
        if let Some(seen) = state.service.app_of_seen_token(&token) {
            return seen.map(AppAuth).map_err(ApiError::from);
        }
        blocking(&state.service, move |s| s.authenticate_app(&token).map_err(ApiError::from))
            .await
            .map(AppAuth)
    }
}

/// An operator authenticated by an API key.
pub struct OperatorAuth(pub OperatorSession);

impl FromRequestParts<ApiState> for OperatorAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let Some(key) = bearer(parts).map(str::to_string) else {
            return Err(ApiError::operator_key(
                "an operator API key is required (Authorization: Bearer csk_…)",
            ));
        };
        let from = peer_address(&parts.extensions);
        state.service.refuse_throttled_operator(from)?;
        blocking(&state.service, move |s| {
            s.authenticate_operator_from(&key, from).map_err(|e| match e {
                consentry_service::ServiceError::Unauthenticated(m) => ApiError::operator_key(m),
                other => ApiError::from(other),
            })
        })
        .await
        .map(OperatorAuth)
    }
}
