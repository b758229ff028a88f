//! Signing in and out of the console, and the session every other page runs in.
//!
//! - Sign-in form: a random token in a short-lived cookie and in the form (double submit), so
//!   no other site can sign a browser in; the key is checked exactly as the platform API does.
//! - The session cookie holds a random id the server keeps only as a hash
//!   ([`consentry_service::SignInSessions`]); it is `HttpOnly`, `SameSite=Strict`, scoped to
//!   `/console`, lives as long as the session, and is `Secure` when the request came over
//!   https: the URI says so, or a proxy in front says so (`X-Forwarded-Proto: https` or
//!   `Forwarded: proto=https`). Honouring those headers can only add `Secure`, never remove it.
//! - Every request reads the session's key again: a revoked or expired key ends it.
//! - Every non-GET request must carry the session's CSRF token and must not come from another
//!   site (`Sec-Fetch-Site: cross-site` or `same-site` is refused).

use askama::Template;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use consentry_service::{OperatorSession, ResumedSession};

use super::view::{self, Chrome, ConsoleError};
use crate::extract::blocking;
use crate::problem::ApiError;
use crate::ApiState;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "consentry_console";
/// The sign-in form's cookie (double-submit token).
pub const SIGN_IN_COOKIE: &str = "consentry_sign_in";
/// The form field every console form carries its CSRF token in.
pub const CSRF_FIELD: &str = "csrf";

/// How long the sign-in form may be left open.
const SIGN_IN_FORM_SECS: i64 = 600;

/// The value of cookie `name` in the request, if it is sent exactly once.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut found = None;
    for value in headers.get_all(header::COOKIE) {
        let Ok(text) = value.to_str() else { continue };
        for pair in text.split(';') {
            if let Some((key, value)) = pair.trim().split_once('=') {
                if key == name {
                    if found.is_some() {
                        return None;
                    }
                    found = Some(value);
                }
            }
        }
    }
    found
}

/// Whether the browser reached the server over https (directly, or through a proxy that says so).
pub(crate) fn over_https(parts_uri: &axum::http::Uri, headers: &HeaderMap) -> bool {
    if parts_uri.scheme_str() == Some("https") {
        return true;
    }
    let forwarded_proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
    let forwarded = headers
        .get(header::FORWARDED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|first| {
            first.split(';').any(|pair| {
                pair.trim().split_once('=').is_some_and(|(k, v)| {
                    k.trim().eq_ignore_ascii_case("proto")
                        && v.trim().trim_matches('"').eq_ignore_ascii_case("https")
                })
            })
        });
    forwarded_proto || forwarded
}

fn set_cookie(name: &str, value: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text = format!("{name}={value}; Path=/console; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

fn clear_cookie(name: &str, secure: bool) -> HeaderValue {
    set_cookie(name, "", 0, secure)
}

/// A request from another site (the browser says so) is refused for anything but GET.
fn same_site_only(method: &Method, headers: &HeaderMap) -> Result<(), ConsoleError> {
    if method == Method::GET || method == Method::HEAD {
        return Ok(());
    }
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()).unwrap_or("none");
    if site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site") {
        return Err(ConsoleError::new(
            StatusCode::FORBIDDEN,
            "a form from another site cannot act in the console",
        ));
    }
    Ok(())
}

/// The signed-in operator of this request, resumed from the session cookie.
pub(crate) struct Signed {
    pub operator: OperatorSession,
    pub session: ResumedSession,
    pub secure: bool,
}

/// Why a request has no session: GETs go to the sign-in form, anything else is a 401 page.
pub(crate) struct NoSession {
    get: bool,
    message: String,
    secure: bool,
}

impl IntoResponse for NoSession {
    fn into_response(self) -> Response {
        let mut response = if self.get {
            Redirect::to("/console/sign-in").into_response()
        } else {
            view::error_page(StatusCode::UNAUTHORIZED, &format!("{}; sign in again", self.message))
        };
        response.headers_mut().append(header::SET_COOKIE, clear_cookie(SESSION_COOKIE, self.secure));
        response
    }
}

impl FromRequestParts<ApiState> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Signed, Response> {
        let secure = over_https(&parts.uri, &parts.headers);
        let get = parts.method == Method::GET || parts.method == Method::HEAD;
        same_site_only(&parts.method, &parts.headers).map_err(IntoResponse::into_response)?;
        let Some(id) = cookie(&parts.headers, SESSION_COOKIE).map(str::to_string) else {
            return Err(NoSession { get, message: "you are not signed in".into(), secure }.into_response());
        };
        let console = state.console.clone();
        let resumed =
            blocking(&state.service, move |s| console.sessions.resume(s, &id).map_err(ApiError::from)).await;
        match resumed {
            Ok(session) => Ok(Signed { operator: session.operator.clone(), session, secure }),
            Err(error) if error.status == StatusCode::UNAUTHORIZED => {
                Err(NoSession { get, message: error.problem.detail, secure }.into_response())
            }
            Err(error) => Err(ConsoleError::from(error).into_response()),
        }
    }
}

impl Signed {
    /// The page frame for `current` (a navigation href).
    pub(crate) fn chrome(&self, current: &str, title: impl Into<String>) -> Chrome {
        Chrome::new(&self.operator, &self.session.csrf, current, title.into())
    }

    /// Refuses (403) unless the operator has one of `roles`: the same check as the API's.
    pub(crate) fn require(&self, roles: &[consentry_types::OperatorRole]) -> Result<(), ConsoleError> {
        self.operator.require(roles).map_err(ConsoleError::from)
    }

    /// The form's fields, once its CSRF token is this session's.
    pub(crate) fn form(
        &self,
        headers: &HeaderMap,
        body: &Bytes,
        allowed: &[&str],
    ) -> Result<crate::extract::Params, ConsoleError> {
        let params = view::form(headers, body, allowed)?;
        let token = params.get(CSRF_FIELD).unwrap_or_default();
        if !self.session.csrf_matches(token) {
            return Err(ConsoleError::new(
                StatusCode::FORBIDDEN,
                "this form is out of date or came from elsewhere (its CSRF token does not match your session); reload the page and try again",
            ));
        }
        Ok(params)
    }
}

#[derive(Template)]
#[template(path = "console/sign_in.html")]
struct SignInPage {
    token: String,
    message: Option<String>,
}

fn random_token() -> String {
    // A fresh request id is 64 random bits; two make a 128-bit token.
    format!("{}{}", consentry_service::request_id(), consentry_service::request_id())
}

fn sign_in_page(status: StatusCode, message: Option<String>, secure: bool) -> Response {
    let token = random_token();
    let mut response = view::html(&SignInPage { token: token.clone(), message });
    *response.status_mut() = status;
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(SIGN_IN_COOKIE, &token, SIGN_IN_FORM_SECS, secure));
    response
}

/// `GET /console/sign-in`.
pub(crate) async fn sign_in_form(uri: axum::http::Uri, headers: HeaderMap) -> Response {
    sign_in_page(StatusCode::OK, None, over_https(&uri, &headers))
}

/// `POST /console/sign-in`: `key` and the form's `token`.
pub(crate) async fn sign_in(
    State(state): State<ApiState>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let secure = over_https(&uri, &headers);
    if let Err(error) = same_site_only(&method, &headers) {
        return error.into_response();
    }
    let params = match view::form(&headers, &body, &["key", "token"]) {
        Ok(params) => params,
        Err(error) => return error.into_response(),
    };
    let expected = cookie(&headers, SIGN_IN_COOKIE).unwrap_or_default();
    let token = params.get("token").unwrap_or_default();
    if expected.is_empty() || expected.len() != token.len() || !constant_time_eq(expected, token) {
        return sign_in_page(
            StatusCode::FORBIDDEN,
            Some("The sign-in form expired or came from elsewhere; here is a fresh one.".into()),
            secure,
        );
    }
    let key = params.get("key").unwrap_or_default().trim().to_string();
    let console = state.console.clone();
    let signed =
        blocking(&state.service, move |s| console.sessions.sign_in(s, &key).map_err(ApiError::from)).await;
    match signed {
        Ok(signed) => {
            let max_age = (signed.expires_at.secs() - state.service.now().secs()).max(1);
            let mut response = Redirect::to("/console/overview").into_response();
            let headers = response.headers_mut();
            headers.append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, &signed.session, max_age, secure));
            headers.append(header::SET_COOKIE, clear_cookie(SIGN_IN_COOKIE, secure));
            tracing::info!(key = %signed.operator.key_id, role = signed.operator.role.as_str(), "console sign-in");
            response
        }
        Err(error) if error.status == StatusCode::UNAUTHORIZED => sign_in_page(
            StatusCode::UNAUTHORIZED,
            Some(format!("Not signed in: {}.", error.problem.detail)),
            secure,
        ),
        Err(error) => ConsoleError::from(error).into_response(),
    }
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `POST /console/sign-out`: ends the session on the server and clears the cookie.
pub(crate) async fn sign_out(
    State(state): State<ApiState>,
    signed: Signed,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    signed.form(&headers, &body, &[])?;
    state.console.sessions.end(&signed.session);
    let mut response = Redirect::to("/console/sign-in").into_response();
    response.headers_mut().append(header::SET_COOKIE, clear_cookie(SESSION_COOKIE, signed.secure));
    Ok(response)
}

/// A redirect after an action, to `to` with a fixed confirmation.
pub(crate) fn done(to: &str, what: &str, n: Option<u64>) -> Response {
    let n = n.map(|n| format!("&n={n}")).unwrap_or_default();
    Redirect::to(&format!("{to}?done={what}{n}")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            if let (Ok(name), Ok(value)) =
                (header::HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value))
            {
                map.append(name, value);
            }
        }
        map
    }

    #[test]
    fn a_cookie_sent_twice_is_no_cookie() {
        assert_eq!(
            cookie(&headers(&[("cookie", "a=1; consentry_console=xyz")]), SESSION_COOKIE),
            Some("xyz")
        );
        assert_eq!(
            cookie(&headers(&[("cookie", "consentry_console=1; consentry_console=2")]), SESSION_COOKIE),
            None
        );
        assert_eq!(
            cookie(
                &headers(&[("cookie", "consentry_console=1"), ("cookie", "consentry_console=2")]),
                SESSION_COOKIE
            ),
            None
        );
        assert_eq!(cookie(&headers(&[("cookie", "xconsentry_console=1")]), SESSION_COOKIE), None);
    }

    #[test]
    fn https_is_the_uri_or_what_the_proxy_says() {
        let plain: axum::http::Uri = "/console".parse().unwrap_or_default();
        let tls: axum::http::Uri = "https://example.org/console".parse().unwrap_or_default();
        assert!(!over_https(&plain, &headers(&[])));
        assert!(over_https(&tls, &headers(&[])));
        assert!(over_https(&plain, &headers(&[("x-forwarded-proto", "https")])));
        assert!(over_https(&plain, &headers(&[("forwarded", "for=1.2.3.4;proto=https;host=x")])));
        assert!(!over_https(&plain, &headers(&[("x-forwarded-proto", "http")])));
        assert!(!over_https(&plain, &headers(&[("forwarded", "proto=http")])));
    }

    #[test]
    fn the_session_cookie_is_http_only_strict_and_secure_over_https() {
        let cookie = set_cookie(SESSION_COOKIE, "abc", 60, true);
        let text = cookie.to_str().unwrap_or_default();
        for part in
            ["consentry_console=abc", "Path=/console", "Max-Age=60", "HttpOnly", "SameSite=Strict", "Secure"]
        {
            assert!(text.contains(part), "{text}");
        }
        assert!(!set_cookie(SESSION_COOKIE, "abc", 60, false)
            .to_str()
            .unwrap_or_default()
            .contains("Secure"));
    }

    #[test]
    fn forms_from_other_sites_are_refused() {
        for site in ["cross-site", "same-site"] {
            assert!(same_site_only(&Method::POST, &headers(&[("sec-fetch-site", site)])).is_err());
        }
        for site in ["same-origin", "none"] {
            assert!(same_site_only(&Method::POST, &headers(&[("sec-fetch-site", site)])).is_ok());
        }
        assert!(same_site_only(&Method::POST, &headers(&[])).is_ok());
        assert!(same_site_only(&Method::GET, &headers(&[("sec-fetch-site", "cross-site")])).is_ok());
    }
}
