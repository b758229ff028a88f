//! Errors as RFC 9457 problem+json; internal details go to the log, never to the client.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use consentry_service::ServiceError;
use serde::Serialize;
use utoipa::ToSchema;

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// For policy text: each problem with its line and column.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<PolicyProblem>,
}

/// One problem in submitted policy text.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PolicyProblem {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub problem: Box<Problem>,
    /// `WWW-Authenticate` challenge for 401s.
    pub challenge: Option<String>,
    /// `Retry-After` in seconds, for 429s and 503s.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, slug: &str, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            problem: Box::new(Problem {
                kind: format!("urn:consentry:problem:{slug}"),
                title: status.canonical_reason().unwrap_or("error").to_string(),
                status: status.as_u16(),
                detail: detail.into(),
                errors: Vec::new(),
            }),
            challenge: None,
            retry_after: None,
        }
    }

    /// A 429 or 503 that tells the client when to try again.
    pub fn retry_after(status: StatusCode, slug: &str, detail: impl Into<String>, secs: u64) -> ApiError {
        let mut error = ApiError::new(status, slug, detail);
        error.retry_after = Some(secs.max(1));
        error
    }

    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    /// 401 for the app API: a bearer challenge as RFC 6750 §3 describes.
    pub fn bearer(detail: impl Into<String>) -> ApiError {
        let detail = detail.into();
        let mut error = ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", detail.clone());
        let description = detail.replace('"', "'");
        error.challenge = Some(format!(
            "Bearer realm=\"consentry\", error=\"invalid_token\", error_description=\"{description}\""
        ));
        error
    }

    /// 401 for the platform API.
    pub fn operator_key(detail: impl Into<String>) -> ApiError {
        let mut error = ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", detail);
        error.challenge = Some("Bearer realm=\"consentry-platform\"".to_string());
        error
    }

    pub fn internal(detail: &str) -> ApiError {
        tracing::error!(detail, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an internal error occurred; it was logged",
        )
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> ApiError {
        match error {
            ServiceError::NotFound(what) => {
                ApiError::new(StatusCode::NOT_FOUND, "not-found", format!("{what} not found"))
            }
            ServiceError::InvalidInput(detail) => ApiError::bad_request(detail),
            ServiceError::Rejected(detail) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "rejected", detail)
            }
            ServiceError::Unauthenticated(detail) => ApiError::bearer(detail),
            ServiceError::Forbidden(detail) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", detail),
            ServiceError::Conflict(detail) => ApiError::new(StatusCode::CONFLICT, "conflict", detail),
            ServiceError::Policy(policy) => {
                let mut error =
                    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-policy", policy.to_string());
                error.problem.errors = policy
                    .diagnostics()
                    .into_iter()
                    .map(|d| PolicyProblem { line: d.line, column: d.column, message: d.message })
                    .collect();
                error
            }
            ServiceError::TooManyAttempts { retry_after_secs } => ApiError::retry_after(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-attempts",
                format!("too many failed authentications; retry after {retry_after_secs} s"),
                retry_after_secs,
            ),
            ServiceError::Busy { retry_after_secs } => ApiError::retry_after(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                format!("too many credentials are being checked; retry after {retry_after_secs} s"),
                retry_after_secs,
            ),
            ServiceError::Internal(detail) => ApiError::internal(&detail),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(challenge) = self.challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            response.extensions_mut().insert(crate::RefusedForNow);
        }
        response
    }
}
