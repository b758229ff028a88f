//! What every console page shares: the signed-in chrome (navigation by role, the CSRF token
//! for the sign-out form), HTML responses, error pages, strict form and query parsing, and
//! the formatting of instants and numbers.

use askama::Template;
use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use consentry_service::OperatorSession;
use consentry_types::{Instant, OperatorRole};

use crate::extract::Params;
use crate::problem::ApiError;

/// Roles that may read each page (as the platform API's reads).
pub(crate) const READERS: &[OperatorRole] =
    &[OperatorRole::Operator, OperatorRole::PrivacyOfficer, OperatorRole::Auditor];
/// Roles that run audits and read their results (as `POST /platform/v1/audits`).
pub(crate) const AUDITORS: &[OperatorRole] = &[OperatorRole::Auditor, OperatorRole::PrivacyOfficer];

/// One link of the navigation.
pub(crate) struct NavItem {
    pub href: &'static str,
    pub label: &'static str,
    pub current: bool,
}

/// The frame of every signed-in page.
pub(crate) struct Chrome {
    pub title: String,
    pub name: String,
    pub key_id: String,
    pub role: &'static str,
    pub csrf: String,
    pub nav: Vec<NavItem>,
    /// A one-line confirmation of what the last action did (fixed texts only).
    pub notice: Option<String>,
}

const PAGES: [(&str, &str, &[OperatorRole]); 6] = [
    ("/console/overview", "Overview", READERS),
    ("/console/policies", "Policies", READERS),
    ("/console/audits", "Audits", AUDITORS),
    ("/console/remediation", "Remediation", READERS),
    ("/console/apps", "Apps and developers", READERS),
    ("/console/members", "Members", READERS),
];

impl Chrome {
    pub(crate) fn new(operator: &OperatorSession, csrf: &str, current: &str, title: String) -> Chrome {
        Chrome {
            title,
            name: operator.name.clone(),
            key_id: operator.key_id.clone(),
            role: operator.role.as_str(),
            csrf: csrf.to_string(),
            nav: PAGES
                .iter()
                .filter(|(_, _, roles)| roles.contains(&operator.role))
                .map(|(href, label, _)| NavItem { href, label, current: *href == current })
                .collect(),
            notice: None,
        }
    }
}

/// Why a console request did not succeed, shown as a page with its status.
#[derive(Debug)]
pub(crate) struct ConsoleError {
    pub status: StatusCode,
    pub message: String,
}

impl ConsoleError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ConsoleError {
        ConsoleError { status, message: message.into() }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> ConsoleError {
        ConsoleError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<ApiError> for ConsoleError {
    fn from(error: ApiError) -> ConsoleError {
        ConsoleError { status: error.status, message: error.problem.detail }
    }
}

impl From<consentry_service::ServiceError> for ConsoleError {
    fn from(error: consentry_service::ServiceError) -> ConsoleError {
        ConsoleError::from(ApiError::from(error))
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        error_page(self.status, &self.message)
    }
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage<'a> {
    status: u16,
    reason: &'a str,
    message: &'a str,
}

/// A page saying what went wrong, with the status code.
pub(crate) fn error_page(status: StatusCode, message: &str) -> Response {
    let page =
        ErrorPage { status: status.as_u16(), reason: status.canonical_reason().unwrap_or("Error"), message };
    let mut response = html(&page);
    *response.status_mut() = status;
    response
}

/// A rendered template as an HTML response.
pub(crate) fn html(page: &impl Template) -> Response {
    match page.render() {
        Ok(body) => ([(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))], body)
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "a console template failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page could not be rendered; it was logged")
                .into_response()
        }
    }
}

/// The fields of a submitted form, refusing any but `allowed` (and the CSRF token), repeats,
/// and bodies that are not `application/x-www-form-urlencoded`.
pub(crate) fn form(headers: &HeaderMap, body: &Bytes, allowed: &[&str]) -> Result<Params, ConsoleError> {
    if !crate::extract::has_media_type(headers, "application/x-www-form-urlencoded") {
        return Err(ConsoleError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the form as application/x-www-form-urlencoded",
        ));
    }
    let mut names: Vec<&str> = allowed.to_vec();
    names.push(super::CSRF_FIELD);
    Params::parse(body, &names).map_err(ConsoleError::from)
}

/// The query string's parameters, refusing any but `allowed`.
pub(crate) fn query(raw: Option<String>, allowed: &[&str]) -> Result<Params, ConsoleError> {
    Params::parse(raw.unwrap_or_default().as_bytes(), allowed).map_err(ConsoleError::from)
}

/// The confirmation for `?done=…&n=…`: fixed texts only, so nothing from the URL is shown.
pub(crate) fn notice(params: &Params) -> Option<String> {
    let n = params.get("n").and_then(|n| n.parse::<u64>().ok());
    let with = |text: &str| match n {
        Some(n) => text.replace('#', &n.to_string()),
        None => text.replace(" #", ""),
    };
    let text = match params.get("done")? {
        "submitted" => {
            "Policy version # submitted; a privacy officer outside its author's lineage must approve it."
        }
        "approved" => "Policy version # approved.",
        "activated" => "Policy version # is now the active policy.",
        "previewed" => "Preview of version # recorded with the version.",
        "proved" => "Proofs of version # recorded with the version.",
        "waived" => "Proofs of version # waived; the reason is kept with the version.",
        "retried" => "Delivery # will be attempted again now.",
        "suspended" => "App suspended; its developer was told why.",
        "reinstated" => "App reinstated; its developer was told why.",
        "revoked" => "App revoked: banned for good, # tokens revoked.",
        "developer-revoked" => "Every app of the developer revoked (# apps).",
        "cases-opened" => "# cases opened: apps revoked, deletion requested, developers notified.",
        "verifying" => "Ledger verification # started.",
        _ => return None,
    };
    Some(with(text))
}

/// `2019-11-05 12:00` (UTC).
pub(crate) fn when(at: Instant) -> String {
    let text = at.to_string();
    let date = text.get(..10).unwrap_or_default();
    let time = text.get(11..16).unwrap_or_default();
    format!("{date} {time}")
}

/// `2019-11-05`.
pub(crate) fn day(at: Instant) -> String {
    at.to_string().get(..10).unwrap_or_default().to_string()
}

/// `12,345`.
pub(crate) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A key as people know it: its name and the start of its id.
pub(crate) fn key_label(name: Option<&str>, id: &str) -> String {
    let short: String = id.chars().take(8).collect();
    match name {
        Some(name) => format!("{name} ({short})"),
        None => short,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_grouped_by_thousands() {
        for (n, text) in [(0, "0"), (999, "999"), (1_000, "1,000"), (1_234_567, "1,234,567")] {
            assert_eq!(count(n), text);
        }
    }

    #[test]
    fn a_notice_shows_only_fixed_text() {
        let params = |q: &str| Params::parse(q.as_bytes(), &["done", "n"]).unwrap_or_default();
        assert_eq!(notice(&params("done=approved&n=3")).as_deref(), Some("Policy version 3 approved."));
        assert_eq!(notice(&params("done=approved")).as_deref(), Some("Policy version approved."));
        assert_eq!(notice(&params("done=%3Cscript%3E")), None);
        assert_eq!(notice(&params("done=approved&n=%3Cb%3E")).as_deref(), Some("Policy version approved."));
    }
}
