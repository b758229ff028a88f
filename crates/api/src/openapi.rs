//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{audits, cases, groups, keys, oauth, platform, proofs, transparency};

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("app_token", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        components
            .add_security_scheme("operator_key", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// Every route that authenticates with an operator key or client credentials may be refused
/// for now: 429 when the address (or client id) has too many recent failures, and for client
/// credentials 503 when every client-secret checker is busy; both with `Retry-After`.
struct ThrottledAuthentication;

fn retry_later(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::Response> {
    use utoipa::openapi::schema::{Object, Type};
    use utoipa::openapi::{ContentBuilder, HeaderBuilder, Ref, ResponseBuilder};
    let seconds = HeaderBuilder::new()
        .schema(Object::with_type(Type::Integer))
        .description(Some("seconds to wait before trying again"))
        .build();
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build(),
        )
        .header("Retry-After", seconds)
        .build()
        .into()
}

impl Modify for ThrottledAuthentication {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operator = path.starts_with("/platform/v1/");
            let client = path.starts_with("/v1/cases") || path.starts_with("/v1/apps/");
            if !operator && !client {
                continue;
            }
            let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete];
            for operation in operations.into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                responses.entry("429".into()).or_insert_with(|| {
                    retry_later("too many failed authentications from this address or client id")
                });
                if client {
                    responses
                        .entry("503".into())
                        .or_insert_with(|| retry_later("every client-secret checker is busy"));
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
        description = "The Groups API for third-party apps, decided field by field at request time, and the platform API that feeds it."
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
    ),
    modifiers(&SecuritySchemes, &ThrottledAuthentication),
    tags(
        (name = "oauth", description = "OAuth 2.0 client credentials, revocation, introspection"),
        (name = "groups", description = "The Groups API for apps"),
        (name = "platform", description = "The platform's own backend: ingest, apps, installations, consents"),
        (name = "policies", description = "Cedar policy versions and activation"),
        (name = "keys", description = "Operator keys: who made them, expiry, revocation"),
        (name = "cases", description = "Remediation: deletion requests, attestations, deadlines"),
    )
)]
pub struct ApiDoc;

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
