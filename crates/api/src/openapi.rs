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
        platform::activate_policy, keys::create_key, keys::list_keys, keys::show_key, keys::revoke_key, transparency::member_disclosures,
        audits::run_audit, audits::preview_policy, audits::preview_version, platform::approve_policy, platform::revoke_app, platform::revoke_developer, platform::webhook_secret, platform::list_notifications, cases::my_cases, cases::attest, cases::all_cases, cases::certify, platform::group_installations,
        proofs::prove, proofs::list_proofs, proofs::waive,
    ),
    modifiers(&SecuritySchemes),
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
