//! The OpenAPI 3.1 document, generated from the handlers' annotations.
//!
//! Each handler's annotation declares what is particular to it: its success, and the refusals
//! only it can give (403 where the role table refuses someone, 404, 409, 422, 503). What
//! operations share is declared once, by [`SharedAnswers`], from what the operation takes and
//! how it authenticates; and [`ProblemBodies`] serves every `Problem` as
//! `application/problem+json`. `tests/http.rs` checks every response the HTTP tests see
//! against this document, and `tests/fuzz.rs` every answer to hostile requests.

use utoipa::openapi::header::{Header, HeaderBuilder};
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{Object, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::{audits, cases, groups, keys, oauth, platform, proofs, transparency};

/// The media type of every error outside `/oauth`.
pub const PROBLEM_JSON: &str = "application/problem+json";

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |what: &str| {
            let mut scheme = Http::new(HttpAuthScheme::Bearer);
            scheme.description = Some(what.to_string());
            SecurityScheme::Http(scheme)
        };
        components.add_security_scheme("app_token", bearer("an access token from POST /oauth/token"));
        components.add_security_scheme(
            "operator_key",
            bearer("an operator API key (csk_…); its role decides what it may do"),
        );
        let mut basic = Http::new(HttpAuthScheme::Basic);
        basic.description = Some(
            "one of the developer's apps' client id and secret (still accepted for an app that was revoked)"
                .to_string(),
        );
        components.add_security_scheme("client_basic", SecurityScheme::Http(basic));
    }
}

/// Answers of the HTTP stack itself, or shared by every operation of a kind: each is a
/// component response, referred to from every operation that can give it.
#[derive(Clone, Copy)]
enum Shared {
    /// A path or query parameter, or a body, the operation cannot take.
    BadRequest,
    /// No credentials, or wrong, expired or revoked ones.
    Unauthenticated,
    TooLarge,
    UriTooLong,
    UnsupportedMediaType,
    HeadersTooLarge,
    TooManyAttempts,
    Busy,
}

impl Shared {
    const ALL: [Shared; 8] = [
        Shared::BadRequest,
        Shared::Unauthenticated,
        Shared::TooLarge,
        Shared::UriTooLong,
        Shared::UnsupportedMediaType,
        Shared::HeadersTooLarge,
        Shared::TooManyAttempts,
        Shared::Busy,
    ];

    fn name(self) -> &'static str {
        match self {
            Shared::BadRequest => "BadRequest",
            Shared::Unauthenticated => "Unauthenticated",
            Shared::TooLarge => "TooLarge",
            Shared::UriTooLong => "UriTooLong",
            Shared::UnsupportedMediaType => "UnsupportedMediaType",
            Shared::HeadersTooLarge => "HeadersTooLarge",
            Shared::TooManyAttempts => "TooManyAttempts",
            Shared::Busy => "Busy",
        }
    }

    fn status(self) -> &'static str {
        match self {
            Shared::BadRequest => "400",
            Shared::Unauthenticated => "401",
            Shared::TooLarge => "413",
            Shared::UriTooLong => "414",
            Shared::UnsupportedMediaType => "415",
            Shared::HeadersTooLarge => "431",
            Shared::TooManyAttempts => "429",
            Shared::Busy => "503",
        }
    }

    fn response(self) -> Response {
        let description = match self {
            Shared::BadRequest => {
                "a path parameter, query parameter or body this operation cannot take; the detail says which"
            }
            Shared::Unauthenticated => "no credentials, or credentials that are wrong, expired or revoked",
            Shared::TooLarge => "the body is larger than this operation takes (64 KiB; policy text 1 MiB)",
            Shared::UriTooLong => "the URI is longer than the server reads (64 KiB)",
            Shared::UnsupportedMediaType => "the body is not of the media type this operation takes",
            Shared::HeadersTooLarge => "the request's headers are larger than the server reads",
            Shared::TooManyAttempts => "too many failed authentications from this address or client id",
            Shared::Busy => "every client-secret checker is busy",
        };
        let mut response = ResponseBuilder::new().description(description).content(
            PROBLEM_JSON,
            ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build(),
        );
        match self {
            Shared::Unauthenticated => {
                response =
                    response.header("WWW-Authenticate", header("the scheme and realm to authenticate with"));
            }
            Shared::TooManyAttempts | Shared::Busy => {
                response = response.header("Retry-After", seconds());
            }
            _ => {}
        }
        response.build()
    }

    fn reference(self) -> RefOr<Response> {
        RefOr::Ref(Ref::new(format!("#/components/responses/{}", self.name())))
    }
}

fn header(description: &str) -> Header {
    HeaderBuilder::new().schema(Object::with_type(Type::String)).description(Some(description)).build()
}

fn seconds() -> Header {
    HeaderBuilder::new()
        .schema(Object::with_type(Type::Integer))
        .description(Some("seconds to wait before trying again"))
        .build()
}

/// Adds to every operation the answers it shares with others of its kind:
/// - any operation: 414 and 431, which the HTTP layer gives before routing;
/// - a path or query parameter: 400 (every parameter is parsed and checked);
/// - a JSON or text body: 400, 413, 415 (`/oauth` answers these as RFC 6749 errors,
///   declared by its own annotations);
/// - `operator_key`: 401, and 429 once an address has failed too often;
/// - `app_token`: 401;
/// - `client_basic`: 401, 429, and 503 when every client-secret checker is busy.
///
/// An annotation that declares one of these statuses itself keeps its own.
struct SharedAnswers;

fn security_schemes(operation: &Operation) -> Vec<String> {
    let json = serde_json::to_value(&operation.security).unwrap_or_default();
    json.as_array()
        .into_iter()
        .flatten()
        .filter_map(|requirement| requirement.as_object())
        .flat_map(|requirement| requirement.keys().cloned())
        .collect()
}

fn shared_answers(operation: &Operation) -> Vec<Shared> {
    let mut shared = vec![Shared::UriTooLong, Shared::HeadersTooLarge];
    let takes_parameters = operation
        .parameters
        .iter()
        .flatten()
        .any(|p| matches!(p.parameter_in, ParameterIn::Path | ParameterIn::Query));
    let body_types: Vec<&String> =
        operation.request_body.iter().flat_map(|body| body.content.keys()).collect();
    let form_only = !body_types.is_empty()
        && body_types.iter().all(|media| media.as_str() == "application/x-www-form-urlencoded");
    if takes_parameters || (!body_types.is_empty() && !form_only) {
        shared.push(Shared::BadRequest);
    }
    if !body_types.is_empty() && !form_only {
        shared.extend([Shared::TooLarge, Shared::UnsupportedMediaType]);
    }
    for scheme in security_schemes(operation) {
        match scheme.as_str() {
            "operator_key" => shared.extend([Shared::Unauthenticated, Shared::TooManyAttempts]),
            "app_token" => shared.push(Shared::Unauthenticated),
            "client_basic" => shared.extend([Shared::Unauthenticated, Shared::TooManyAttempts, Shared::Busy]),
            _ => {}
        }
    }
    shared
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch].into_iter().flatten()
}

impl Modify for SharedAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for shared in Shared::ALL {
            components.responses.insert(shared.name().to_string(), RefOr::T(shared.response()));
        }
        for item in openapi.paths.paths.values_mut() {
            for operation in operations(item) {
                for shared in shared_answers(operation) {
                    operation
                        .responses
                        .responses
                        .entry(shared.status().to_string())
                        .or_insert_with(|| shared.reference());
                }
            }
        }
    }
}

/// Every response whose body is a `Problem` is served as `application/problem+json`
/// (`ApiError`'s `IntoResponse`), so that is how the document declares it: annotations say
/// `body = Problem` and this is the one place that knows the media type.
struct ProblemBodies;

fn is_problem(content: &utoipa::openapi::Content) -> bool {
    matches!(&content.schema, Some(RefOr::Ref(r)) if r.ref_location == "#/components/schemas/Problem")
}

impl Modify for ProblemBodies {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for operation in operations(item) {
                for response in operation.responses.responses.values_mut() {
                    let RefOr::T(response) = response else { continue };
                    if response.content.get("application/json").is_some_and(is_problem) {
                        if let Some(content) = response.content.shift_remove("application/json") {
                            response.content.insert(PROBLEM_JSON.to_string(), content);
                        }
                    }
                }
            }
        }
    }
}

/// Every route consentry serves.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "consentry",
        description = "The Groups API for third-party apps, decided field by field at request time, and the platform API that feeds it.\n\nEvery error is `application/problem+json` (RFC 9457), except on `/oauth`, which answers RFC 6749 errors. Besides what each operation declares, a request that matches no route is answered 404, one whose method the route does not take 405, and malformed HTTP 400, all `application/problem+json`. An operation that declares query parameters refuses any other (400); one that declares none does not read the query string."
    ),
    paths(
        oauth::token, oauth::revoke, oauth::introspect,
        groups::read_group, groups::read_posts, groups::read_members,
        platform::put_member, platform::put_group, platform::put_membership, platform::delete_membership,
        platform::put_post, platform::put_developer, platform::create_app, platform::list_apps,
        platform::suspend_app, platform::reinstate_app, platform::put_installation, platform::delete_installation,
        platform::put_consent, platform::delete_consent, platform::submit_policy, platform::list_policies,
        platform::activate_policy, keys::create_key, keys::list_keys, keys::show_key, keys::revoke_key, transparency::member_disclosures, transparency::ledger_stats,
        audits::run_audit, audits::preview_policy, audits::preview_version, platform::approve_policy, platform::revoke_app, platform::revoke_developer, platform::webhook_secret, platform::list_notifications, cases::my_cases, cases::attest, cases::all_cases, cases::certify, platform::group_installations,
        proofs::prove, proofs::list_proofs, proofs::waive,
        crate::health, crate::serve_openapi,
    ),
    modifiers(&SecuritySchemes, &ProblemBodies, &SharedAnswers),
    tags(
        (name = "oauth", description = "OAuth 2.0 client credentials, revocation, introspection"),
        (name = "groups", description = "The Groups API for apps"),
        (name = "platform", description = "The platform's own backend: ingest, apps, installations, consents"),
        (name = "policies", description = "Cedar policy versions and activation"),
        (name = "keys", description = "Operator keys: who made them, expiry, revocation"),
        (name = "cases", description = "Remediation: deletion requests, attestations, deadlines"),
        (name = "server", description = "The server itself: liveness and this document"),
    )
)]
pub struct ApiDoc;

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
