//! The HTTP surfaces end to end without a socket: OAuth, the Groups API, the platform API,
//! every kind of bad input, and each write taking effect for the very next request.

#![allow(clippy::indexing_slicing)] // serde_json indexing returns Null, it never panics

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use conformance::app;
use consentry_api::ApiState;
use consentry_service::{ServerKey, Service, ServiceConfig, SimulatedClock};
use consentry_store::CaseState;
use consentry_store_sqlite::SqliteStore;
use consentry_types::{AppId, AppStatus, DeveloperId, Instant, OperatorRole};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

#[path = "http/serving.rs"]
mod serving;

#[path = "support/openapi_check.rs"]
mod openapi_check;

#[path = "support/conformance.rs"]
mod conformance;

#[path = "http/openapi.rs"]
mod openapi;

const GROUPS_2018: &str = include_str!("../../../policies/groups-2018.cedar");
const LEGACY: &str = include_str!("../../../policies/legacy-2017.cedar");

#[path = "http/proofs.rs"]
mod proofs;

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

struct Harness {
    router: Router,
    service: Arc<Service>,
    clock: Arc<SimulatedClock>,
    operator: String,
    officer: String,
    /// Fails the test if any response broke the OpenAPI document; prints the pairs seen.
    _conformance: conformance::Guard,
}

impl Harness {
    fn new() -> Harness {
        Harness::with_config(ServiceConfig::default())
    }

    /// A harness whose API state is configured by `configure` (e.g. with a prover).
    fn new_with(configure: impl FnOnce(ApiState) -> ApiState) -> Harness {
        Harness::build(ServiceConfig::default(), configure)
    }

    fn with_config(config: ServiceConfig) -> Harness {
        Harness::build(config, |state| state)
    }

    fn build(config: ServiceConfig, configure: impl FnOnce(ApiState) -> ApiState) -> Harness {
        let clock = Arc::new(SimulatedClock::starting_at(Instant::from_secs(1_600_000_000)));
        let store = Arc::new(SqliteStore::in_memory().unwrap_or_else(|e| unreachable!("{e}")));
        let service = Arc::new(Service::new(store, clock.clone(), ServerKey::generate(), config));
        let operator = service
            .bootstrap_operator_key("test", "tester")
            .ok()
            .flatten()
            .map(|k| k.key)
            .unwrap_or_default();
        let officer = server_key(&service, "officer", OperatorRole::PrivacyOfficer);
        let router = app(configure(ApiState::new(service.clone())));
        Harness { router, service, clock, operator, officer, _conformance: conformance::Guard::new() }
    }

    async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(request).await.unwrap_or_else(|e| match e {});
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply { status, headers, body }
    }

    async fn call(&self, method: Method, uri: &str, auth: Option<&str>, body: Option<Value>) -> Reply {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(auth) = auth {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {auth}"));
        }
        let body = match body {
            Some(json) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        self.send(builder.body(body).unwrap_or_default()).await
    }

    async fn op(&self, method: Method, uri: &str, body: Option<Value>) -> Reply {
        let key = self.operator.clone();
        self.call(method, uri, Some(&key), body).await
    }

    async fn form(&self, uri: &str, form: &str, basic: Option<(&str, &str)>) -> Reply {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some((id, secret)) = basic {
            use base64::Engine as _;
            let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
            builder = builder.header(header::AUTHORIZATION, format!("Basic {encoded}"));
        }
        self.send(builder.body(Body::from(form.to_string())).unwrap_or_default()).await
    }

    async fn policy(&self, text: &str) -> Reply {
        let request = Request::builder()
            .method(Method::POST)
            .uri("/platform/v1/policies")
            .header(header::AUTHORIZATION, format!("Bearer {}", self.operator))
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from(text.to_string()))
            .unwrap_or_default();
        self.send(request).await
    }

    /// Ingests a small world through the platform API and returns (app id, client id, secret).
    async fn world(&self) -> (String, String, String) {
        let ok = |r: &Reply| assert!(r.status.is_success(), "{} {}", r.status, r.body);
        ok(&self.op(Method::PUT, "/platform/v1/groups/hikers", Some(json!({"name": "Hikers"}))).await);
        for (id, role) in [("ann", "admin"), ("bob", "member"), ("cat", "member")] {
            let member = json!({"name": format!("{id} name"), "picture_url": format!("https://pics.example/{id}.jpg")});
            ok(&self.op(Method::PUT, &format!("/platform/v1/members/{id}"), Some(member)).await);
            ok(&self
                .op(
                    Method::PUT,
                    &format!("/platform/v1/groups/hikers/members/{id}"),
                    Some(json!({"role": role})),
                )
                .await);
        }
        ok(&self
            .op(
                Method::PUT,
                "/platform/v1/groups/hikers/posts/p1",
                Some(json!({"author": "bob", "content": "hello"})),
            )
            .await);
        let dev = json!({"name": "Acme", "contact_email": "privacy@acme.example", "webhook_url": "https://acme.example/h"});
        ok(&self.op(Method::PUT, "/platform/v1/developers/acme", Some(dev)).await);
        let created = self
            .op(
                Method::POST,
                "/platform/v1/apps",
                Some(
                    json!({"developer": "acme", "name": "Scheduler", "category": "social_media_management"}),
                ),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
        let app_id = created.body["id"].as_str().unwrap_or_default().to_string();
        ok(&self
            .op(
                Method::PUT,
                &format!("/platform/v1/groups/hikers/installations/{app_id}"),
                Some(json!({"authorized_by": "ann"})),
            )
            .await);
        ok(&self
            .op(
                Method::PUT,
                &format!("/platform/v1/members/bob/consents/{app_id}"),
                Some(json!({"scopes": ["profile"]})),
            )
            .await);
        let policy = self.policy(GROUPS_2018).await;
        assert_eq!(policy.status, StatusCode::CREATED, "{}", policy.body);
        ok(&self
            .approve(1)
            .await
            .op(Method::POST, "/platform/v1/policies/1/activate", Some(json!({"reason": "the 2018 rules"})))
            .await);
        (
            app_id,
            created.body["client_id"].as_str().unwrap_or_default().to_string(),
            created.body["client_secret"].as_str().unwrap_or_default().to_string(),
        )
    }

    /// A privacy officer (not the author) approves a version, after keeping passing proofs
    /// with it (as `POST …/proofs` does for a draft within the invariants).
    async fn approve(&self, version: u32) -> &Harness {
        let officer = self.officer.clone();
        let session = self.service.authenticate_operator(&officer).unwrap_or_else(|e| unreachable!("{e}"));
        self.service.record_proof(version, &session, true, "{}").unwrap_or_else(|e| unreachable!("{e}"));
        let reply = self
            .call(Method::POST, &format!("/platform/v1/policies/{version}/approve"), Some(&officer), None)
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.body["proofs"]["standing"]["standing"], "passed", "{}", reply.body);
        self
    }

    async fn token(&self, client_id: &str, secret: &str) -> String {
        let reply = self
            .form(
                "/oauth/token",
                &format!("grant_type=client_credentials&client_id={client_id}&client_secret={secret}"),
                None,
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body["access_token"].as_str().unwrap_or_default().to_string()
    }

    async fn names(&self, token: &str) -> Vec<String> {
        let reply = self.call(Method::GET, "/v1/groups/hikers/members", Some(token), None).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body["data"]
            .as_array()
            .map(|a| a.iter().filter_map(|m| m["name"].as_str().map(String::from)).collect())
            .unwrap_or_default()
    }
}

/// A key made on the server, as `consentry keys create` does (never over HTTP).
fn server_key(service: &Service, name: &str, role: OperatorRole) -> String {
    service.create_key_on_server("test", "tester", name, role, None).map(|k| k.key).unwrap_or_default()
}

fn is_problem(reply: &Reply, status: StatusCode) -> bool {
    reply.status == status
        && reply.headers.get(header::CONTENT_TYPE).is_some_and(|v| v == "application/problem+json")
        && reply.body["status"] == status.as_u16()
        && reply.body["detail"].as_str().is_some_and(|d| !d.is_empty())
}

#[tokio::test]
async fn token_then_group_members_and_posts() {
    let h = Harness::new();
    let (_, client_id, secret) = h.world().await;
    // client_secret_basic works as well as client_secret_post.
    let basic = h.form("/oauth/token", "grant_type=client_credentials", Some((&client_id, &secret))).await;
    assert_eq!(basic.status, StatusCode::OK, "{}", basic.body);
    assert_eq!(basic.body["token_type"], "Bearer");
    assert_eq!(basic.body["expires_in"], 3600);
    assert_eq!(basic.headers.get(header::CACHE_CONTROL).map(|v| v.as_bytes()), Some(&b"no-store"[..]));
    let token = basic.body["access_token"].as_str().unwrap_or_default().to_string();
    let group = h.call(Method::GET, "/v1/groups/hikers?fields=name,member_count", Some(&token), None).await;
    assert_eq!(group.body, json!({"id": "hikers", "name": "Hikers", "member_count": 3}));
    assert_eq!(h.names(&token).await, ["bob name"]);
    let members = h.call(Method::GET, "/v1/groups/hikers/members", Some(&token), None).await;
    let scoped = members.body["data"][0]["id"].as_str().unwrap_or_default();
    assert!(scoped.starts_with("m_") && !scoped.contains("bob"), "{scoped}");
    let posts =
        h.call(Method::GET, "/v1/groups/hikers/posts?fields=content,author", Some(&token), None).await;
    assert_eq!(posts.body["data"][0]["content"], "hello");
    assert_eq!(posts.body["data"][0]["author"]["id"], scoped, "the author's id is the same app-scoped id");
    assert!(members.headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn each_write_takes_effect_for_the_very_next_request() {
    let h = Harness::new();
    let (app_id, client_id, secret) = h.world().await;
    let token = h.token(&client_id, &secret).await;
    assert_eq!(h.names(&token).await, ["bob name"]);

    // Policy activated: legacy shows everyone at once.
    assert_eq!(h.policy(LEGACY).await.status, StatusCode::CREATED);
    let activated = h
        .approve(2)
        .await
        .op(Method::POST, "/platform/v1/policies/2/activate", Some(json!({"reason": "test"})))
        .await;
    assert_eq!(activated.status, StatusCode::OK, "{}", activated.body);
    assert_eq!(h.names(&token).await, ["ann name", "bob name", "cat name"]);
    h.clock.advance_secs(1);
    assert_eq!(
        h.op(Method::POST, "/platform/v1/policies/1/activate", Some(json!({"reason": "back"}))).await.status,
        StatusCode::OK
    );

    // Consent revoked.
    assert_eq!(
        h.op(Method::DELETE, &format!("/platform/v1/members/bob/consents/{app_id}"), None).await.status,
        StatusCode::NO_CONTENT
    );
    assert!(h.names(&token).await.is_empty());

    // Installation removed: the group is now indistinguishable from a missing one.
    assert_eq!(
        h.op(Method::DELETE, &format!("/platform/v1/groups/hikers/installations/{app_id}"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let gone = h.call(Method::GET, "/v1/groups/hikers", Some(&token), None).await;
    let missing = h.call(Method::GET, "/v1/groups/nowhere", Some(&token), None).await;
    assert!(is_problem(&gone, StatusCode::NOT_FOUND));
    assert_eq!(
        gone.body["detail"].as_str().map(|d| d.replace("hikers", "X")),
        missing.body["detail"].as_str().map(|d| d.replace("nowhere", "X"))
    );
    assert_eq!(
        h.op(
            Method::PUT,
            &format!("/platform/v1/groups/hikers/installations/{app_id}"),
            Some(json!({"authorized_by": "ann"}))
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(h.call(Method::GET, "/v1/groups/hikers", Some(&token), None).await.status, StatusCode::OK);
    // Admins and members can be shown the group's installations, past and current.
    let seen = h.op(Method::GET, "/platform/v1/groups/hikers/installations", None).await;
    let shown: Vec<(Option<&str>, bool)> = seen
        .body
        .as_array()
        .map(|a| a.iter().map(|i| (i["app"].as_str(), i["removed_at"].is_null())).collect())
        .unwrap_or_default();
    assert_eq!(shown, [(Some(app_id.as_str()), false), (Some(app_id.as_str()), true)], "{}", seen.body);

    // Token revoked.
    let revoke = h.form("/oauth/revoke", &format!("token={token}"), Some((&client_id, &secret))).await;
    assert_eq!(revoke.status, StatusCode::OK);
    let refused = h.call(Method::GET, "/v1/groups/hikers", Some(&token), None).await;
    assert!(is_problem(&refused, StatusCode::UNAUTHORIZED));
    assert!(refused
        .headers
        .get(header::WWW_AUTHENTICATE)
        .is_some_and(|v| v.to_str().unwrap_or("").contains("invalid_token")));

    // App suspended.
    let token = h.token(&client_id, &secret).await;
    assert_eq!(h.call(Method::GET, "/v1/groups/hikers", Some(&token), None).await.status, StatusCode::OK);
    assert_eq!(
        h.op(Method::POST, &format!("/platform/v1/apps/{app_id}/suspend"), None).await.status,
        StatusCode::NO_CONTENT
    );
    assert!(is_problem(
        &h.call(Method::GET, "/v1/groups/hikers", Some(&token), None).await,
        StatusCode::UNAUTHORIZED
    ));
    let again = h
        .form(
            "/oauth/token",
            &format!("grant_type=client_credentials&client_id={client_id}&client_secret={secret}"),
            None,
        )
        .await;
    assert_eq!(
        (again.status, again.body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unauthorized_client"))
    );
}

#[tokio::test]
async fn introspection_tells_only_the_owner() {
    let h = Harness::new();
    let (_, client_id, secret) = h.world().await;
    let token = h.token(&client_id, &secret).await;
    let own = h.form("/oauth/introspect", &format!("token={token}"), Some((&client_id, &secret))).await;
    assert_eq!(
        (own.status, own.body["active"].as_bool(), own.body["client_id"].as_str()),
        (StatusCode::OK, Some(true), Some(client_id.as_str()))
    );
    let other = h
        .op(
            Method::POST,
            "/platform/v1/apps",
            Some(json!({"developer": "acme", "name": "Other", "category": "analytics"})),
        )
        .await;
    let (other_id, other_secret) =
        (other.body["client_id"].as_str().unwrap_or(""), other.body["client_secret"].as_str().unwrap_or(""));
    let theirs = h.form("/oauth/introspect", &format!("token={token}"), Some((other_id, other_secret))).await;
    assert_eq!(theirs.body, json!({"active": false}));
    h.clock.advance_secs(3601);
    let expired = h.form("/oauth/introspect", &format!("token={token}"), Some((&client_id, &secret))).await;
    assert_eq!(expired.body, json!({"active": false}));
    assert!(is_problem(
        &h.call(Method::GET, "/v1/groups/hikers", Some(&token), None).await,
        StatusCode::UNAUTHORIZED
    ));
}

#[tokio::test]
async fn oauth_errors_follow_rfc_6749() {
    let h = Harness::new();
    let (_, client_id, secret) = h.world().await;
    let cases = [
        (format!("grant_type=client_credentials&client_id={client_id}&client_secret=wrong"), StatusCode::UNAUTHORIZED, "invalid_client"),
        (format!("grant_type=password&client_id={client_id}&client_secret={secret}"), StatusCode::BAD_REQUEST, "unsupported_grant_type"),
        (format!("client_id={client_id}&client_secret={secret}"), StatusCode::BAD_REQUEST, "invalid_request"),
        (format!("grant_type=client_credentials&grant_type=client_credentials&client_id={client_id}&client_secret={secret}"), StatusCode::BAD_REQUEST, "invalid_request"),
        ("grant_type=client_credentials&client_id=nobody&client_secret=x".to_string(), StatusCode::UNAUTHORIZED, "invalid_client"),
        ("grant_type=client_credentials&bogus=1".to_string(), StatusCode::BAD_REQUEST, "invalid_request"),
    ];
    for (form, status, error) in cases {
        let reply = h.form("/oauth/token", &form, None).await;
        assert_eq!((reply.status, reply.body["error"].as_str()), (status, Some(error)), "{form}");
    }
    let both = h
        .form(
            "/oauth/token",
            &format!("grant_type=client_credentials&client_id={client_id}"),
            Some((&client_id, &secret)),
        )
        .await;
    assert_eq!(both.body["error"], "invalid_request");
    let json_body =
        h.call(Method::POST, "/oauth/token", None, Some(json!({"grant_type": "client_credentials"}))).await;
    assert_eq!(json_body.body["error"], "invalid_request");
}

#[tokio::test]
async fn bad_input_gets_a_clear_problem_and_changes_nothing() {
    let h = Harness::new();
    let (app_id, client_id, secret) = h.world().await;
    let token = h.token(&client_id, &secret).await;
    let raw = |body: &str, content_type: &str| {
        Request::builder()
            .method(Method::PUT)
            .uri("/platform/v1/members/dan")
            .header(header::AUTHORIZATION, format!("Bearer {}", h.operator))
            .header(header::CONTENT_TYPE, content_type.to_string())
            .body(Body::from(body.to_string()))
            .unwrap_or_default()
    };
    // Malformed JSON, unknown fields, wrong media type, oversized body.
    assert!(is_problem(&h.send(raw("{\"name\": ", "application/json")).await, StatusCode::BAD_REQUEST));
    assert!(is_problem(
        &h.send(raw(r#"{"name":"Dan","picture_url":"https://p/x.jpg","email":"d@x"}"#, "application/json"))
            .await,
        StatusCode::BAD_REQUEST
    ));
    assert!(is_problem(
        &h.send(raw(r#"{"name":"Dan","picture_url":"https://p/x.jpg"}"#, "text/plain")).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    ));
    let huge = format!(r#"{{"name":"{}","picture_url":"https://p/x.jpg"}}"#, "x".repeat(100_000));
    assert!(is_problem(&h.send(raw(&huge, "application/json")).await, StatusCode::PAYLOAD_TOO_LARGE));
    assert!(is_problem(
        &h.send(raw(r#"{"name":"","picture_url":"https://p/x.jpg"}"#, "application/json")).await,
        StatusCode::BAD_REQUEST
    ));
    assert!(is_problem(
        &h.send(raw(r#"{"name":"Dan","picture_url":"ftp://p/x.jpg"}"#, "application/json")).await,
        StatusCode::BAD_REQUEST
    ));
    assert_eq!(
        h.service
            .store()
            .member(&consentry_types::MemberId::parse("dan").unwrap_or_else(|e| unreachable!("{e}"))),
        Ok(None),
        "nothing half-written"
    );

    // Bad ids, roles, scopes; installer who is not an admin.
    assert!(is_problem(
        &h.op(Method::PUT, "/platform/v1/groups/bad%20id", Some(json!({"name": "x"}))).await,
        StatusCode::BAD_REQUEST
    ));
    assert!(is_problem(
        &h.op(Method::PUT, "/platform/v1/groups/hikers/members/bob", Some(json!({"role": "owner"}))).await,
        StatusCode::BAD_REQUEST
    ));
    assert!(is_problem(
        &h.op(
            Method::PUT,
            &format!("/platform/v1/members/bob/consents/{app_id}"),
            Some(json!({"scopes": ["email"]}))
        )
        .await,
        StatusCode::BAD_REQUEST
    ));
    assert!(is_problem(
        &h.op(
            Method::PUT,
            &format!("/platform/v1/groups/hikers/installations/{app_id}"),
            Some(json!({"authorized_by": "cat"}))
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY
    ));
    assert!(is_problem(
        &h.op(
            Method::PUT,
            "/platform/v1/groups/hikers/posts/p9",
            Some(json!({"author": "ghost", "content": "boo"}))
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY
    ));
    assert!(is_problem(
        &h.op(Method::POST, "/platform/v1/policies/99/activate", Some(json!({"reason": "x"}))).await,
        StatusCode::NOT_FOUND
    ));

    // Invalid Cedar: 422 with line and column; nothing stored.
    let invalid =
        h.policy("permit (principal, action == Consentry::Action::\"member.email\", resource);").await;
    assert!(is_problem(&invalid, StatusCode::UNPROCESSABLE_ENTITY), "{}", invalid.body);
    assert_eq!(invalid.body["errors"][0]["line"], 1);
    let unparsable = h.policy("permit (principal, action, resource)\nwhen { && };").await;
    assert!(is_problem(&unparsable, StatusCode::UNPROCESSABLE_ENTITY));
    assert_eq!(unparsable.body["errors"][0]["line"], 2);
    assert_eq!(h.service.store().policy_versions().map(|v| v.len()), Ok(1));

    // App API: unknown field, unknown parameter, bad limit, bad cursor, bad tokens.
    assert!(is_problem(
        &h.call(Method::GET, "/v1/groups/hikers/members?fields=name,email", Some(&token), None).await,
        StatusCode::BAD_REQUEST
    ));
    assert!(is_problem(
        &h.call(Method::GET, "/v1/groups/hikers/members?sort=name", Some(&token), None).await,
        StatusCode::BAD_REQUEST
    ));
    assert!(is_problem(
        &h.call(Method::GET, "/v1/groups/hikers/members?limit=-1", Some(&token), None).await,
        StatusCode::BAD_REQUEST
    ));
    assert!(is_problem(
        &h.call(Method::GET, "/v1/groups/hikers/members?limit=0", Some(&token), None).await,
        StatusCode::BAD_REQUEST
    ));
    assert!(is_problem(
        &h.call(Method::GET, "/v1/groups/hikers/members?after=zzz", Some(&token), None).await,
        StatusCode::BAD_REQUEST
    ));
    assert!(is_problem(
        &h.call(Method::GET, "/v1/groups/hikers", Some("cst_forged"), None).await,
        StatusCode::UNAUTHORIZED
    ));
    assert!(is_problem(
        &h.call(Method::GET, "/v1/groups/hikers", Some("garbage"), None).await,
        StatusCode::UNAUTHORIZED
    ));
    let anonymous = h.call(Method::GET, "/v1/groups/hikers", None, None).await;
    assert!(is_problem(&anonymous, StatusCode::UNAUTHORIZED));
    assert!(anonymous.headers.contains_key(header::WWW_AUTHENTICATE));
    // An operator key is not an app token, and an app token is not an operator key.
    assert!(is_problem(
        &h.call(Method::GET, "/v1/groups/hikers", Some(&h.operator), None).await,
        StatusCode::UNAUTHORIZED
    ));
    assert!(is_problem(
        &h.call(Method::GET, "/platform/v1/apps", Some(&token), None).await,
        StatusCode::UNAUTHORIZED
    ));
    assert!(is_problem(&h.call(Method::GET, "/no/such/route", None, None).await, StatusCode::NOT_FOUND));
    assert!(is_problem(
        &h.call(Method::DELETE, "/v1/groups/hikers", Some(&token), None).await,
        StatusCode::METHOD_NOT_ALLOWED
    ));
}

#[tokio::test]
async fn platform_endpoints_need_a_key_and_the_right_role() {
    let h = Harness::new();
    h.world().await;
    let auditor = server_key(&h.service, "auditor", OperatorRole::Auditor);
    let officer = server_key(&h.service, "officer", OperatorRole::PrivacyOfficer);
    let writes: Vec<(Method, &str, Option<Value>)> = vec![
        (
            Method::PUT,
            "/platform/v1/members/zed",
            Some(json!({"name": "Zed", "picture_url": "https://p/z.jpg"})),
        ),
        (Method::PUT, "/platform/v1/groups/g2", Some(json!({"name": "G2"}))),
        (Method::PUT, "/platform/v1/groups/hikers/members/cat", Some(json!({"role": "admin"}))),
        (Method::DELETE, "/platform/v1/groups/hikers/members/cat", None),
        (Method::PUT, "/platform/v1/groups/hikers/posts/p2", Some(json!({"author": "bob", "content": "x"}))),
        (
            Method::PUT,
            "/platform/v1/developers/d2",
            Some(json!({"name": "D", "contact_email": "a@b.c", "webhook_url": "https://b.c/h"})),
        ),
        (Method::POST, "/platform/v1/apps", Some(json!({"developer": "acme", "name": "X", "category": "x"}))),
        (Method::POST, "/platform/v1/apps/app_x/suspend", None),
        (
            Method::PUT,
            "/platform/v1/groups/hikers/installations/app_x",
            Some(json!({"authorized_by": "ann"})),
        ),
        (Method::DELETE, "/platform/v1/groups/hikers/installations/app_x", None),
        (Method::PUT, "/platform/v1/members/bob/consents/app_x", Some(json!({"scopes": ["profile"]}))),
        (Method::DELETE, "/platform/v1/members/bob/consents/app_x", None),
        (Method::POST, "/platform/v1/policies/1/activate", Some(json!({"reason": "x"}))),
        (Method::POST, "/platform/v1/policies/1/approve", None),
        (Method::POST, "/platform/v1/apps/app_x/revoke", None),
        (Method::POST, "/platform/v1/developers/acme/revoke", None),
        (Method::POST, "/platform/v1/keys", Some(json!({"name": "k", "role": "operator"}))),
    ];
    for (method, uri, body) in &writes {
        let anonymous = h.call(method.clone(), uri, None, body.clone()).await;
        assert!(
            is_problem(&anonymous, StatusCode::UNAUTHORIZED),
            "{method} {uri} without a key: {}",
            anonymous.status
        );
        let forged = h.call(method.clone(), uri, Some("csk_000000000000_forged"), body.clone()).await;
        assert!(is_problem(&forged, StatusCode::UNAUTHORIZED), "{method} {uri} with a forged key");
        let read_only = h.call(method.clone(), uri, Some(&auditor), body.clone()).await;
        assert!(
            is_problem(&read_only, StatusCode::FORBIDDEN),
            "{method} {uri} as auditor: {}",
            read_only.status
        );
    }
    let policy_post = Request::builder()
        .method(Method::POST)
        .uri("/platform/v1/policies")
        .header(header::AUTHORIZATION, format!("Bearer {auditor}"))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(LEGACY))
        .unwrap_or_default();
    assert!(is_problem(&h.send(policy_post).await, StatusCode::FORBIDDEN));
    // Auditors read; privacy officers may not ingest facts.
    assert_eq!(
        h.call(Method::GET, "/platform/v1/policies", Some(&auditor), None).await.status,
        StatusCode::OK
    );
    assert_eq!(h.call(Method::GET, "/platform/v1/apps", Some(&auditor), None).await.status, StatusCode::OK);
    let officer_ingest =
        h.call(Method::PUT, "/platform/v1/groups/g3", Some(&officer), Some(json!({"name": "G3"}))).await;
    assert!(is_problem(&officer_ingest, StatusCode::FORBIDDEN));
    // A key created through the API works once and for what its role allows.
    let created =
        h.op(Method::POST, "/platform/v1/keys", Some(json!({"name": "ops2", "role": "auditor"}))).await;
    let key = created.body["key"].as_str().unwrap_or_default();
    assert_eq!(h.call(Method::GET, "/platform/v1/policies", Some(key), None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn openapi_document_lists_every_route() {
    let h = Harness::new();
    let doc = h.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.body["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", doc.body["openapi"]);
    let routes = [
        ("post", "/oauth/token"),
        ("post", "/oauth/revoke"),
        ("post", "/oauth/introspect"),
        ("get", "/v1/groups/{id}"),
        ("get", "/v1/groups/{id}/posts"),
        ("get", "/v1/groups/{id}/members"),
        ("put", "/platform/v1/members/{id}"),
        ("put", "/platform/v1/groups/{id}"),
        ("put", "/platform/v1/groups/{gid}/members/{mid}"),
        ("delete", "/platform/v1/groups/{gid}/members/{mid}"),
        ("put", "/platform/v1/groups/{gid}/posts/{pid}"),
        ("put", "/platform/v1/developers/{id}"),
        ("post", "/platform/v1/apps"),
        ("get", "/platform/v1/apps"),
        ("post", "/platform/v1/apps/{id}/suspend"),
        ("post", "/platform/v1/apps/{id}/reinstate"),
        ("put", "/platform/v1/groups/{gid}/installations/{app}"),
        ("delete", "/platform/v1/groups/{gid}/installations/{app}"),
        ("put", "/platform/v1/members/{mid}/consents/{app}"),
        ("delete", "/platform/v1/members/{mid}/consents/{app}"),
        ("post", "/platform/v1/policies"),
        ("get", "/platform/v1/policies"),
        ("post", "/platform/v1/policies/{version}/activate"),
        ("post", "/platform/v1/policies/{version}/approve"),
        ("post", "/platform/v1/apps/{id}/revoke"),
        ("post", "/platform/v1/developers/{id}/revoke"),
        ("get", "/platform/v1/developers/{id}/webhook-secret"),
        ("get", "/platform/v1/developers/{id}/notifications"),
        ("get", "/v1/cases"),
        ("post", "/v1/cases/{id}/attestation"),
        ("get", "/platform/v1/cases"),
        ("post", "/v1/apps/{id}/certification"),
        ("get", "/platform/v1/groups/{gid}/installations"),
        ("post", "/platform/v1/keys"),
        ("get", "/platform/v1/keys"),
        ("get", "/platform/v1/keys/{id}"),
        ("delete", "/platform/v1/keys/{id}"),
        ("get", "/platform/v1/members/{id}/disclosures"),
        ("get", "/platform/v1/ledger/stats"),
        ("post", "/platform/v1/audits"),
        ("post", "/platform/v1/policies/preview"),
        ("post", "/platform/v1/policies/{version}/preview"),
        ("post", "/platform/v1/policies/{version}/proofs"),
        ("get", "/platform/v1/policies/{version}/proofs"),
        ("post", "/platform/v1/policies/{version}/waivers"),
        ("get", "/healthz"),
        ("get", "/openapi.json"),
    ];
    for (method, path) in routes {
        assert!(
            doc.body["paths"][path][method].is_object(),
            "{method} {path} missing from the OpenAPI document"
        );
    }
    let documented: usize = doc.body["paths"]
        .as_object()
        .map(|p| p.values().map(|v| v.as_object().map_or(0, |o| o.len())).sum())
        .unwrap_or(0);
    assert_eq!(documented, routes.len(), "the document and the list above disagree");
}

struct FailingSink;
impl consentry_service::DisclosureSink for FailingSink {
    fn record(&self, _: &consentry_service::DisclosureRecord) -> Result<(), String> {
        Err("disk full".into())
    }
}

#[derive(Default)]
struct MemorySink(std::sync::Mutex<Vec<consentry_service::DisclosureRecord>>);
impl consentry_service::DisclosureSink for MemorySink {
    fn record(&self, record: &consentry_service::DisclosureRecord) -> Result<(), String> {
        self.0.lock().map_err(|e| e.to_string())?.push(record.clone());
        Ok(())
    }
}

#[tokio::test]
async fn a_response_leaves_only_after_its_record_is_taken() {
    let h = Harness::new();
    let (_, client_id, secret) = h.world().await;
    let token = h.token(&client_id, &secret).await;

    let failing = Harness {
        router: app(ApiState::new(h.service.clone()).with_disclosures(Arc::new(FailingSink))),
        ..h
    };
    let refused = failing.call(Method::GET, "/v1/groups/hikers/members", Some(&token), None).await;
    assert!(is_problem(&refused, StatusCode::SERVICE_UNAVAILABLE), "{}", refused.body);
    assert!(!refused.body.to_string().contains("bob name"), "nothing is disclosed");

    let sink = Arc::new(MemorySink::default());
    let recording = Harness {
        router: app(ApiState::new(failing.service.clone()).with_disclosures(sink.clone())),
        ..failing
    };
    let served = recording.call(Method::GET, "/v1/groups/hikers/members", Some(&token), None).await;
    assert_eq!(served.status, StatusCode::OK);
    let records = sink.0.lock().map(|r| r.clone()).unwrap_or_default();
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record.route, "GET /v1/groups/{id}/members");
    assert_eq!(record.policy_version, 1);
    assert_eq!(
        served.headers.get("x-request-id").and_then(|v| v.to_str().ok()),
        Some(record.request_id.as_str())
    );
    let subjects: Vec<String> = record
        .disclosures
        .iter()
        .map(|d| match &d.subject {
            consentry_types::Subject::Member(m) => m.to_string(),
            consentry_types::Subject::Group(g) => g.to_string(),
        })
        .collect();
    assert_eq!(subjects, ["bob"], "the record names exactly the members sent");
    assert!(!format!("{record:?}").contains("bob name"), "identities only, never values");
}

fn ledger_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("consentry-api-ledger-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[tokio::test]
async fn members_can_be_told_which_apps_received_their_fields() {
    let h = Harness::new();
    let (app_id, client_id, secret) = h.world().await;
    let none = h.op(Method::GET, "/platform/v1/ledger/stats", None).await;
    assert!(is_problem(&none, StatusCode::NOT_FOUND), "a server without a ledger says so: {}", none.body);
    let dir = ledger_dir("transparency");
    let ledger = Arc::new(
        consentry_ledger::Ledger::open(&dir, consentry_ledger::LedgerOptions::default())
            .unwrap_or_else(|e| unreachable!("{e}")),
    );
    let h = Harness { router: app(ApiState::new(h.service.clone()).with_ledger(ledger.clone())), ..h };
    let token = h.token(&client_id, &secret).await;
    for _ in 0..3 {
        assert_eq!(h.names(&token).await, ["bob name"]);
    }
    let posts = h.call(Method::GET, "/v1/groups/hikers/posts?fields=content", Some(&token), None).await;
    assert_eq!(posts.status, StatusCode::OK);
    let seen = h.op(Method::GET, "/platform/v1/members/bob/disclosures?limit=2", None).await;
    assert_eq!(seen.status, StatusCode::OK, "{}", seen.body);
    assert_eq!(seen.body["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(seen.body["data"][0]["app"], app_id.as_str());
    assert_eq!(seen.body["data"][0]["fields"], json!(["member.name", "member.picture"]));
    let after = seen.body["paging"]["after"].as_str().unwrap_or_default().to_string();
    let rest = h.op(Method::GET, &format!("/platform/v1/members/bob/disclosures?after={after}"), None).await;
    let rest_fields: Vec<Value> = rest.body["data"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|d| d["fields"].clone())
        .collect();
    assert_eq!(rest_fields, [json!(["member.name", "member.picture"]), json!(["post.content"])]);
    assert!(rest.body["paging"]["after"].is_null());
    // Cat opted in to nothing: the ledger holds nothing of cat.
    let cat = h.op(Method::GET, "/platform/v1/members/cat/disclosures", None).await;
    assert_eq!(cat.body["data"], json!([]));
    // A window before everything is empty; bad input is a problem.
    let early = h.op(Method::GET, "/platform/v1/members/bob/disclosures?to=2001-01-01", None).await;
    assert_eq!(early.body["data"], json!([]));
    assert!(is_problem(
        &h.op(Method::GET, "/platform/v1/members/bob/disclosures?from=yesterday", None).await,
        StatusCode::BAD_REQUEST
    ));
    assert!(is_problem(
        &h.op(Method::GET, "/platform/v1/members/bob/disclosures?limit=0", None).await,
        StatusCode::BAD_REQUEST
    ));
    assert!(is_problem(
        &h.call(Method::GET, "/platform/v1/members/bob/disclosures", None, None).await,
        StatusCode::UNAUTHORIZED
    ));
    assert!(is_problem(
        &h.call(Method::GET, "/platform/v1/members/bob/disclosures", Some(&token), None).await,
        StatusCode::UNAUTHORIZED
    ));
    assert_eq!(ledger.stats().records, 4);
    // The ledger's counters: for operator keys only, exactly the ledger's own.
    let counters = h.op(Method::GET, "/platform/v1/ledger/stats", None).await;
    assert_eq!(counters.status, StatusCode::OK, "{}", counters.body);
    let stats = ledger.stats();
    assert_eq!(counters.body["records"], 4);
    assert_eq!(counters.body["disclosures"], stats.disclosures);
    assert_eq!(counters.body["bytes"], stats.bytes);
    assert_eq!(counters.body["syncs"], stats.syncs);
    assert!(stats.syncs >= 1 && stats.syncs <= 4, "{stats:?}");
    let auditor = server_key(&h.service, "auditor", OperatorRole::Auditor);
    let read = h.call(Method::GET, "/platform/v1/ledger/stats", Some(&auditor), None).await;
    assert_eq!((read.status, &read.body["records"]), (StatusCode::OK, &json!(4)));
    assert!(is_problem(
        &h.call(Method::GET, "/platform/v1/ledger/stats", None, None).await,
        StatusCode::UNAUTHORIZED
    ));
    assert!(is_problem(
        &h.call(Method::GET, "/platform/v1/ledger/stats", Some(&token), None).await,
        StatusCode::UNAUTHORIZED
    ));
    drop(h);
    let report = consentry_ledger::verify(&dir, &[]).unwrap_or_else(|e| unreachable!("{e}"));
    assert!(report.ok() && report.records == 4, "{report:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two nodes (one store, a stream each under one ledger root) serve in turn; member
/// transparency on either reads both streams, and paging one record at a time, with records
/// appended between pages by both nodes, shows every disclosure exactly once.
#[tokio::test]
async fn transparency_reads_every_nodes_stream_and_its_pages_lose_nothing() {
    let h = Harness::new();
    let (_, client_id, secret) = h.world().await;
    let root = ledger_dir("two-nodes");
    let stream = |node: &str| {
        let node = consentry_types::NodeId::parse(node).unwrap_or_else(|e| unreachable!("{e}"));
        Arc::new(
            consentry_ledger::Ledger::open_stream(&root, &node, consentry_ledger::LedgerOptions::default())
                .unwrap_or_else(|e| unreachable!("{e}")),
        )
    };
    let node = |ledger: Arc<consentry_ledger::Ledger>| Harness {
        router: app(ApiState::new(h.service.clone()).with_ledger(ledger)),
        service: h.service.clone(),
        clock: h.clock.clone(),
        operator: h.operator.clone(),
        officer: h.officer.clone(),
        _conformance: conformance::Guard::new(),
    };
    let (a, b) = (node(stream("web-a")), node(stream("web-b")));
    let token = a.token(&client_id, &secret).await;
    let serve = |round: usize| {
        let (a, b, token) = (&a, &b, token.clone());
        async move {
            for i in 0..round {
                // b answers at odd seconds, a at even ones: the streams interleave in time.
                let node = if i % 2 == 0 { a } else { b };
                node.clock.advance_secs(1);
                assert_eq!(node.names(&token).await, ["bob name"]);
            }
        }
    };
    serve(6).await;
    let mut seen: Vec<(String, u64)> = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let uri = match &after {
            Some(after) => format!("/platform/v1/members/bob/disclosures?limit=1&after={after}"),
            None => "/platform/v1/members/bob/disclosures?limit=1".to_string(),
        };
        // Pages are read from either node, and both keep serving between pages.
        let reader = if pages % 2 == 0 { &b } else { &a };
        let page = reader.op(Method::GET, &uri, None).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        for item in page.body["data"].as_array().cloned().unwrap_or_default() {
            seen.push((
                item["node"].as_str().unwrap_or_default().to_string(),
                item["seq"].as_u64().unwrap_or(0),
            ));
        }
        pages += 1;
        if pages < 4 {
            serve(2).await;
        }
        match page.body["paging"]["after"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
        assert!(pages < 100, "paging does not end");
    }
    let mut expected: Vec<(String, u64)> =
        (1..=6).flat_map(|seq| [("web-a".to_string(), seq), ("web-b".to_string(), seq)]).collect();
    expected.sort();
    let mut got = seen.clone();
    got.sort();
    assert_eq!(got, expected, "every disclosure of both nodes exactly once: {seen:?}");
    // A plain record number names no position once there are two streams.
    assert!(is_problem(
        &a.op(Method::GET, "/platform/v1/members/bob/disclosures?after=3", None).await,
        StatusCode::BAD_REQUEST
    ));
    assert!(is_problem(
        &a.op(Method::GET, "/platform/v1/members/bob/disclosures?after=web-a:x", None).await,
        StatusCode::BAD_REQUEST
    ));
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn a_ledger_that_cannot_write_stops_disclosure_with_503() {
    let h = Harness::new();
    let (_, client_id, secret) = h.world().await;
    let dir = ledger_dir("fault");
    let ledger = Arc::new(
        consentry_ledger::Ledger::open(&dir, consentry_ledger::LedgerOptions::default())
            .unwrap_or_else(|e| unreachable!("{e}")),
    );
    let h = Harness { router: app(ApiState::new(h.service.clone()).with_ledger(ledger.clone())), ..h };
    let token = h.token(&client_id, &secret).await;
    assert_eq!(h.names(&token).await, ["bob name"]);
    ledger.fail_next_write();
    for _ in 0..2 {
        let refused = h.call(Method::GET, "/v1/groups/hikers/members", Some(&token), None).await;
        assert!(is_problem(&refused, StatusCode::SERVICE_UNAVAILABLE), "{}", refused.body);
        assert!(!refused.body.to_string().contains("bob"), "nothing is disclosed");
    }
    drop(h);
    drop(ledger);
    // Reopening recovers: what was acknowledged is there, nothing else.
    let reopened = consentry_ledger::Ledger::open(&dir, consentry_ledger::LedgerOptions::default())
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(reopened.stats().records, 1);
    drop(reopened);
    assert!(consentry_ledger::verify(&dir, &[]).map(|r| r.ok()).unwrap_or(false));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn audits_answer_did_and_could_for_auditors_only() {
    let h = Harness::new();
    let (app_id, client_id, secret) = h.world().await;
    let dir = ledger_dir("audit");
    let ledger = Arc::new(
        consentry_ledger::Ledger::open(&dir, consentry_ledger::LedgerOptions::default())
            .unwrap_or_else(|e| unreachable!("{e}")),
    );
    let h = Harness { router: app(ApiState::new(h.service.clone()).with_ledger(ledger)), ..h };
    let token = h.token(&client_id, &secret).await;
    for _ in 0..3 {
        assert_eq!(h.names(&token).await, ["bob name"]);
    }
    h.clock.advance_secs(60);
    // A draft that permits no member profiles at all.
    let draft = "permit (principal, action in [Consentry::Action::\"group_data\", Consentry::Action::\"post_data\"], resource) when { context.installed };";
    let auditor = server_key(&h.service, "auditor", OperatorRole::Auditor);
    let body = json!({"policy_text": draft, "since": "1d"});
    let report = h.call(Method::POST, "/platform/v1/audits", Some(&auditor), Some(body.clone())).await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.body);
    assert_eq!(report.body["summary"]["violating_disclosures"], 6, "{}", report.body);
    assert_eq!(report.body["summary"]["developers_did"], 1);
    assert_eq!(report.body["did"][0]["app"], app_id.as_str());
    assert_eq!(report.body["did"][0]["members_affected"], 1);
    // Bob is exposed under the enforced policy (he consented) but not under the draft.
    assert_eq!(report.body["could"][0]["members_exposed"], 1);
    let manifest = &report.body["deletion_manifests"]["acme"][app_id.as_str()];
    assert_eq!(manifest.as_array().map(Vec::len), Some(2), "{manifest}");
    assert!(manifest[0]["member"].as_str().is_some_and(|m| m.starts_with("m_")));
    // The active policy finds nothing.
    let clean =
        h.call(Method::POST, "/platform/v1/audits", Some(&auditor), Some(json!({"since": "1d"}))).await;
    assert_eq!(clean.body["summary"]["violating_disclosures"], 0, "{}", clean.body);
    // Roles and bad input.
    assert!(is_problem(
        &h.op(Method::POST, "/platform/v1/audits", Some(body.clone())).await,
        StatusCode::FORBIDDEN
    ));
    assert!(is_problem(
        &h.call(Method::POST, "/platform/v1/audits", None, Some(body)).await,
        StatusCode::UNAUTHORIZED
    ));
    for bad in [
        json!({"since": "sixty days"}),
        json!({"from": "2019-01-02", "to": "2019-01-01"}),
        json!({}),
        json!({"since": "1d", "verbose": true}),
    ] {
        assert!(
            is_problem(
                &h.call(Method::POST, "/platform/v1/audits", Some(&auditor), Some(bad.clone())).await,
                StatusCode::BAD_REQUEST
            ),
            "{bad}"
        );
    }
    // Previewing the draft: bob loses what he opted into; legacy would give ann and cat away.
    let previewed = h
        .call(
            Method::POST,
            "/platform/v1/policies/preview",
            Some(&auditor),
            Some(json!({"policy_text": draft, "since": "1d"})),
        )
        .await;
    assert_eq!(previewed.status, StatusCode::OK, "{}", previewed.body);
    assert_eq!(previewed.body["loses"][0]["members"], 1);
    assert_eq!(previewed.body["disclosures_the_draft_would_have_denied"], 6);
    assert_eq!(previewed.body["gains"], json!([]));
    let legacy_preview = h
        .call(
            Method::POST,
            "/platform/v1/policies/preview",
            Some(&auditor),
            Some(json!({"policy_text": LEGACY, "since": "1d"})),
        )
        .await;
    assert_eq!(legacy_preview.body["gains"][0]["members"], 2, "{}", legacy_preview.body);
    assert!(is_problem(
        &h.call(
            Method::POST,
            "/platform/v1/policies/preview",
            None,
            Some(json!({"policy_text": LEGACY, "since": "1d"}))
        )
        .await,
        StatusCode::UNAUTHORIZED
    ));
    assert!(is_problem(
        &h.call(
            Method::POST,
            "/platform/v1/policies/preview",
            Some(&auditor),
            Some(json!({"policy_text": "nonsense", "since": "1d"}))
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY
    ));
    let invalid = h.call(Method::POST, "/platform/v1/audits", Some(&auditor), Some(json!({"since": "1d", "policy_text": "permit (principal, action == Consentry::Action::\"member.email\", resource);"}))).await;
    assert!(is_problem(&invalid, StatusCode::UNPROCESSABLE_ENTITY));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn activation_needs_approval_by_someone_other_than_the_author() {
    let h = Harness::new();
    h.world().await;
    // An operator submits a draft; activating it unapproved is refused and changes nothing.
    assert_eq!(h.policy(LEGACY).await.status, StatusCode::CREATED);
    let unapproved =
        h.op(Method::POST, "/platform/v1/policies/2/activate", Some(json!({"reason": "early"}))).await;
    assert!(is_problem(&unapproved, StatusCode::UNPROCESSABLE_ENTITY), "{}", unapproved.body);
    assert!(unapproved.body["detail"].as_str().is_some_and(|d| d.contains("not approved")));
    assert_eq!(h.service.store().active_policy().ok().flatten().map(|p| p.version), Some(1));
    // Operators cannot approve; privacy officers cannot approve their own text.
    assert!(is_problem(
        &h.op(Method::POST, "/platform/v1/policies/2/approve", None).await,
        StatusCode::FORBIDDEN
    ));
    let carol = server_key(&h.service, "carol", OperatorRole::PrivacyOfficer);
    let own = Request::builder()
        .method(Method::POST)
        .uri("/platform/v1/policies")
        .header(header::AUTHORIZATION, format!("Bearer {carol}"))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(GROUPS_2018))
        .unwrap_or_default();
    assert_eq!(h.send(own).await.status, StatusCode::CREATED);
    let self_approved = h.call(Method::POST, "/platform/v1/policies/3/approve", Some(&carol), None).await;
    assert!(is_problem(&self_approved, StatusCode::UNPROCESSABLE_ENTITY), "{}", self_approved.body);
    assert!(h.service.store().policy_approvals(3).is_ok_and(|a| a.is_empty()));
    // A preview of the stored draft is kept with it, as is the approval.
    let kept = h
        .call(Method::POST, "/platform/v1/policies/3/preview", Some(&carol), Some(json!({"since": "1d"})))
        .await;
    assert_eq!(kept.status, StatusCode::OK, "{}", kept.body);
    assert!(is_problem(
        &h.call(
            Method::POST,
            "/platform/v1/policies/3/preview",
            Some(&carol),
            Some(json!({"since": "forever"}))
        )
        .await,
        StatusCode::BAD_REQUEST
    ));
    // Another officer's approval lets it through.
    assert_eq!(
        h.call(Method::POST, "/platform/v1/policies/99/approve", Some(&carol), None).await.status,
        StatusCode::NOT_FOUND
    );
    h.approve(3).await;
    let activated = h
        .call(
            Method::POST,
            "/platform/v1/policies/3/activate",
            Some(&carol),
            Some(json!({"reason": "reviewed"})),
        )
        .await;
    assert_eq!(activated.status, StatusCode::OK, "{}", activated.body);
}

#[tokio::test]
async fn revoking_a_developer_stops_every_app_and_token_at_the_next_request() {
    let h = Harness::new();
    let (app_id, client_id, secret) = h.world().await;
    let token = h.token(&client_id, &secret).await;
    let second = h.token(&client_id, &secret).await;
    // Another developer's app is not touched.
    let other_dev = json!({"name": "Other", "contact_email": "p@other.example", "webhook_url": "https://other.example/h"});
    assert_eq!(
        h.op(Method::PUT, "/platform/v1/developers/other", Some(other_dev)).await.status,
        StatusCode::NO_CONTENT
    );
    let other = h
        .op(
            Method::POST,
            "/platform/v1/apps",
            Some(json!({"developer": "other", "name": "O", "category": "analytics"})),
        )
        .await;
    let other_id = other.body["id"].as_str().unwrap_or_default().to_string();
    assert_eq!(
        h.op(
            Method::PUT,
            &format!("/platform/v1/groups/hikers/installations/{other_id}"),
            Some(json!({"authorized_by": "ann"}))
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );
    let other_token = h
        .token(
            other.body["client_id"].as_str().unwrap_or_default(),
            other.body["client_secret"].as_str().unwrap_or_default(),
        )
        .await;
    assert_eq!(h.call(Method::GET, "/v1/groups/hikers", Some(&token), None).await.status, StatusCode::OK);

    let revoked = h.op(Method::POST, "/platform/v1/developers/acme/revoke", None).await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    assert_eq!(revoked.body, json!({"apps": 1, "tokens_revoked": 2}));
    for t in [&token, &second] {
        assert!(is_problem(
            &h.call(Method::GET, "/v1/groups/hikers", Some(t), None).await,
            StatusCode::UNAUTHORIZED
        ));
        let introspected =
            h.form("/oauth/introspect", &format!("token={t}"), Some((&client_id, &secret))).await;
        assert_eq!(introspected.body, json!({"active": false}));
    }
    let again = h
        .form(
            "/oauth/token",
            &format!("grant_type=client_credentials&client_id={client_id}&client_secret={secret}"),
            None,
        )
        .await;
    assert_eq!(again.body["error"], "unauthorized_client");
    assert_eq!(
        h.service
            .store()
            .app(&consentry_types::AppId::parse(&app_id).unwrap_or_else(|e| unreachable!("{e}")))
            .ok()
            .flatten()
            .map(|a| a.status),
        Some(consentry_types::AppStatus::Banned)
    );
    assert_eq!(
        h.call(Method::GET, "/v1/groups/hikers", Some(&other_token), None).await.status,
        StatusCode::OK
    );
    assert!(is_problem(
        &h.op(Method::POST, "/platform/v1/developers/nobody/revoke", None).await,
        StatusCode::NOT_FOUND
    ));
}

async fn basic(
    h: &Harness,
    method: Method,
    uri: &str,
    credentials: (&str, &str),
    body: Option<Value>,
) -> Reply {
    use base64::Engine as _;
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", credentials.0, credentials.1));
    let mut builder =
        Request::builder().method(method).uri(uri).header(header::AUTHORIZATION, format!("Basic {encoded}"));
    let body = match body {
        Some(json) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Body::from(json.to_string())
        }
        None => Body::empty(),
    };
    h.send(builder.body(body).unwrap_or_default()).await
}

#[tokio::test]
async fn a_case_revokes_requests_deletion_takes_one_attestation_and_marks_what_is_overdue() {
    let h = Harness::new();
    let (app_id, client_id, secret) = h.world().await;
    let token = h.token(&client_id, &secret).await;
    let acme = consentry_types::DeveloperId::parse("acme").unwrap_or_else(|e| unreachable!("{e}"));
    let manifest = format!(r#"{{"{app_id}":[{{"member":"m_abc","field":"member.name"}}]}}"#);
    let case = h.service.open_case(&acme, &manifest, 30).unwrap_or_else(|e| unreachable!("{e}"));
    // Revoked at once.
    assert!(is_problem(
        &h.call(Method::GET, "/v1/groups/hikers", Some(&token), None).await,
        StatusCode::UNAUTHORIZED
    ));
    // The developer reads its case with its own (revoked) app's credentials.
    let mine = basic(&h, Method::GET, "/v1/cases", (&client_id, &secret), None).await;
    assert_eq!(mine.status, StatusCode::OK, "{}", mine.body);
    assert_eq!(mine.body[0]["state"], "deletion_requested");
    assert_eq!(mine.body[0]["manifest"][app_id.as_str()][0]["field"], "member.name");
    // Another developer can neither see nor attest it.
    let other_dev = json!({"name": "Other", "contact_email": "p@other.example", "webhook_url": "https://other.example/h"});
    h.op(Method::PUT, "/platform/v1/developers/other", Some(other_dev)).await;
    let other = h
        .op(
            Method::POST,
            "/platform/v1/apps",
            Some(json!({"developer": "other", "name": "O", "category": "analytics"})),
        )
        .await;
    let other_creds = (
        other.body["client_id"].as_str().unwrap_or_default().to_string(),
        other.body["client_secret"].as_str().unwrap_or_default().to_string(),
    );
    let theirs = basic(&h, Method::GET, "/v1/cases", (&other_creds.0, &other_creds.1), None).await;
    assert_eq!(theirs.body, json!([]));
    let attestation = json!({"statement": "deleted m_abc's name from our warehouse on 2019-11-20"});
    let stolen = basic(
        &h,
        Method::POST,
        &format!("/v1/cases/{case}/attestation"),
        (&other_creds.0, &other_creds.1),
        Some(attestation.clone()),
    )
    .await;
    assert!(is_problem(&stolen, StatusCode::NOT_FOUND), "{}", stolen.body);
    assert!(is_problem(
        &basic(
            &h,
            Method::POST,
            &format!("/v1/cases/{case}/attestation"),
            (&client_id, "wrong"),
            Some(attestation.clone())
        )
        .await,
        StatusCode::UNAUTHORIZED
    ));
    assert!(is_problem(&h.call(Method::GET, "/v1/cases", None, None).await, StatusCode::UNAUTHORIZED));
    assert!(is_problem(
        &basic(
            &h,
            Method::POST,
            &format!("/v1/cases/{case}/attestation"),
            (&client_id, &secret),
            Some(json!({"statement": "  "}))
        )
        .await,
        StatusCode::BAD_REQUEST
    ));
    // One attestation; a replay is refused.
    let attested = basic(
        &h,
        Method::POST,
        &format!("/v1/cases/{case}/attestation"),
        (&client_id, &secret),
        Some(attestation.clone()),
    )
    .await;
    assert_eq!(
        (attested.status, attested.body["state"].as_str()),
        (StatusCode::OK, Some("attested")),
        "{}",
        attested.body
    );
    let replay = basic(
        &h,
        Method::POST,
        &format!("/v1/cases/{case}/attestation"),
        (&client_id, &secret),
        Some(attestation),
    )
    .await;
    assert!(is_problem(&replay, StatusCode::CONFLICT), "{}", replay.body);
    // A second case misses its deadline.
    let late = h.service.open_case(&acme, "{}", 7).unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(h.service.check_case_deadlines(), Ok(0));
    h.clock.advance_secs(7 * 86_400);
    assert_eq!(h.service.check_case_deadlines(), Ok(1));
    let all = h.op(Method::GET, "/platform/v1/cases", None).await;
    let states: Vec<&str> = all
        .body
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["state"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(states, ["attested", "overdue"]);
    let history: Vec<&str> = all.body[0]["events"]
        .as_array()
        .map(|e| e.iter().filter_map(|x| x["state"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(history, ["deletion_requested", "attested"]);
    let events = h.op(Method::GET, "/platform/v1/developers/acme/notifications", None).await;
    let names: Vec<&str> = events
        .body
        .as_array()
        .map(|a| a.iter().filter_map(|n| n["event"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        names.contains(&"deletion.requested")
            && names.contains(&"deletion.overdue")
            && names.contains(&"access.revoked"),
        "{names:?}"
    );
    assert!(late > case);
    // The annual checkup over HTTP: only for one's own app.
    let certified = basic(
        &h,
        Method::POST,
        &format!("/v1/apps/{app_id}/certification"),
        (&client_id, &secret),
        Some(json!({"statement": "we schedule posts"})),
    )
    .await;
    assert_eq!(certified.status, StatusCode::NO_CONTENT, "{}", certified.body);
    let foreign = basic(
        &h,
        Method::POST,
        &format!("/v1/apps/{app_id}/certification"),
        (&other_creds.0, &other_creds.1),
        Some(json!({"statement": "mine"})),
    )
    .await;
    assert!(is_problem(&foreign, StatusCode::NOT_FOUND));
}

/// Issue 8 part 3: an operator alone mints a privacy-officer key, approves with it and activates.
#[tokio::test]
async fn one_operator_cannot_mint_an_officer_key_and_pass_the_two_person_rule_alone() {
    let h = Harness::new();
    h.world().await;
    assert_eq!(h.policy(LEGACY).await.status, StatusCode::CREATED);
    let minted = h
        .op(Method::POST, "/platform/v1/keys", Some(json!({"name": "olga", "role": "privacy_officer"})))
        .await;
    assert!(is_problem(&minted, StatusCode::FORBIDDEN), "an operator minted an officer key: {}", minted.body);
    let key = minted.body["key"].as_str().unwrap_or("csk_none_none").to_string();
    let approved = h.call(Method::POST, "/platform/v1/policies/2/approve", Some(&key), None).await;
    assert!(is_problem(&approved, StatusCode::UNAUTHORIZED), "{}", approved.body);
    let activated =
        h.op(Method::POST, "/platform/v1/policies/2/activate", Some(json!({"reason": "alone"}))).await;
    assert!(is_problem(&activated, StatusCode::UNPROCESSABLE_ENTITY), "{}", activated.body);
    assert_eq!(h.service.store().active_policy().ok().flatten().map(|p| p.version), Some(1));
}

/// Issue 8 part 3: a banned app was reinstated by one call (or suspended, then reinstated).
#[tokio::test]
async fn a_banned_app_stays_banned() {
    let h = Harness::new();
    let (app_id, client_id, secret) = h.world().await;
    let revoked = h.op(Method::POST, &format!("/platform/v1/apps/{app_id}/revoke"), None).await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    let reinstated = h.op(Method::POST, &format!("/platform/v1/apps/{app_id}/reinstate"), None).await;
    assert!(is_problem(&reinstated, StatusCode::CONFLICT), "{} {}", reinstated.status, reinstated.body);
    assert!(reinstated.body["detail"].as_str().is_some_and(|d| d.contains("banned")), "{}", reinstated.body);
    // Suspending a banned app first does not launder it either.
    let suspended = h.op(Method::POST, &format!("/platform/v1/apps/{app_id}/suspend"), None).await;
    assert!(is_problem(&suspended, StatusCode::CONFLICT), "{} {}", suspended.status, suspended.body);
    let again = h.op(Method::POST, &format!("/platform/v1/apps/{app_id}/reinstate"), None).await;
    assert!(is_problem(&again, StatusCode::CONFLICT), "{}", again.body);
    let app = AppId::parse(&app_id).unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(h.service.store().app(&app).ok().flatten().map(|a| a.status), Some(AppStatus::Banned));
    let token = h
        .form(
            "/oauth/token",
            &format!("grant_type=client_credentials&client_id={client_id}&client_secret={secret}"),
            None,
        )
        .await;
    assert_ne!(token.status, StatusCode::OK, "a banned app got a token: {}", token.body);
}

/// Issue 8 part 3: a suspended app came back while its developer's case about it was open.
#[tokio::test]
async fn a_suspended_app_comes_back_only_once_its_case_is_closed() {
    let h = Harness::new();
    let (app_id, _, _) = h.world().await;
    let suspended = h.op(Method::POST, &format!("/platform/v1/apps/{app_id}/suspend"), None).await;
    assert_eq!(suspended.status, StatusCode::NO_CONTENT, "{}", suspended.body);
    let acme = DeveloperId::parse("acme").unwrap_or_else(|e| unreachable!("{e}"));
    let now = h.service.now();
    let manifest = format!(r#"{{"{app_id}":[{{"member":"m_1","field":"member.name"}}]}}"#);
    let store = h.service.store();
    // Another developer's case, or one of acme's that names no app, does not hold it back.
    let unrelated = store.open_case(&acme, "{}", now.plus_days(30), now).unwrap_or_default();
    let case = store.open_case(&acme, &manifest, now.plus_days(30), now).unwrap_or_default();
    let refused = h.op(Method::POST, &format!("/platform/v1/apps/{app_id}/reinstate"), None).await;
    assert!(is_problem(&refused, StatusCode::CONFLICT), "{} {}", refused.status, refused.body);
    assert!(
        refused.body["detail"].as_str().is_some_and(|d| d.contains(&format!("case {case}"))),
        "{}",
        refused.body
    );
    for (from, to) in
        [(CaseState::DeletionRequested, CaseState::Attested), (CaseState::Attested, CaseState::Failed)]
    {
        assert_eq!(store.move_case(case, from, to, "test", now), Ok(()));
        let still = h.op(Method::POST, &format!("/platform/v1/apps/{app_id}/reinstate"), None).await;
        assert!(is_problem(&still, StatusCode::CONFLICT), "{} while {}", still.status, to.as_str());
    }
    assert_eq!(store.move_case(case, CaseState::Failed, CaseState::Closed, "test", now), Ok(()));
    let back = h.op(Method::POST, &format!("/platform/v1/apps/{app_id}/reinstate"), None).await;
    assert_eq!(back.status, StatusCode::NO_CONTENT, "{}", back.body);
    let active = h.op(Method::POST, &format!("/platform/v1/apps/{app_id}/reinstate"), None).await;
    assert!(is_problem(&active, StatusCode::CONFLICT), "reinstating an active app: {}", active.status);
    assert!(unrelated > 0);
}

/// The id part of a key's text, `csk_<id>_<secret>`.
fn id_of(key: &str) -> String {
    key.strip_prefix("csk_").and_then(|r| r.split('_').next()).unwrap_or_default().to_string()
}

const ROLES: [&str; 3] = ["operator", "privacy_officer", "auditor"];

#[tokio::test]
async fn over_http_each_role_creates_exactly_the_keys_its_row_of_the_table_allows() {
    let h = Harness::new();
    let auditor = server_key(&h.service, "auditor", OperatorRole::Auditor);
    let callers =
        [("operator", h.operator.clone()), ("privacy_officer", h.officer.clone()), ("auditor", auditor)];
    let allowed = |caller: &str, role: &str| match caller {
        "privacy_officer" => true,
        "operator" => role != "privacy_officer",
        _ => false,
    };
    for role in ROLES {
        let body = json!({"name": format!("new {role}"), "role": role});
        let anonymous = h.call(Method::POST, "/platform/v1/keys", None, Some(body.clone())).await;
        assert!(
            is_problem(&anonymous, StatusCode::UNAUTHORIZED),
            "{role} without a key: {}",
            anonymous.status
        );
        let forged = h
            .call(Method::POST, "/platform/v1/keys", Some("csk_000000000000_forged"), Some(body.clone()))
            .await;
        assert!(is_problem(&forged, StatusCode::UNAUTHORIZED));
        for (caller, key) in &callers {
            let reply = h.call(Method::POST, "/platform/v1/keys", Some(key), Some(body.clone())).await;
            if !allowed(caller, role) {
                assert!(
                    is_problem(&reply, StatusCode::FORBIDDEN),
                    "{caller} made a {role} key: {}",
                    reply.body
                );
                continue;
            }
            assert_eq!(reply.status, StatusCode::CREATED, "{caller} making a {role} key: {}", reply.body);
            let new_key = reply.body["key"].as_str().unwrap_or_default().to_string();
            assert_eq!(reply.body["id"].as_str(), Some(id_of(&new_key).as_str()));
            // The new key works, with its role, and says which key made it.
            let shown = h
                .call(Method::GET, &format!("/platform/v1/keys/{}", id_of(&new_key)), Some(&new_key), None)
                .await;
            assert_eq!(shown.status, StatusCode::OK, "{}", shown.body);
            assert_eq!(shown.body["role"], role);
            assert_eq!(shown.body["created_by"]["key"].as_str(), Some(id_of(key).as_str()));
            assert_eq!(shown.body["status"], "live");
        }
    }
    // Bad input is a 400 and makes no key.
    let before = h.service.operator_keys().map(|k| k.len()).unwrap_or_default();
    for bad in [
        json!({"name": "x", "role": "root"}),
        json!({"name": " ", "role": "auditor"}),
        json!({"name": "x", "role": "auditor", "expires_in": "0d"}),
        json!({"name": "x", "role": "auditor", "expires_in": "1é"}),
        json!({"name": "x", "role": "auditor", "expires_in": "99999d"}),
        json!({"name": "x", "role": "auditor", "hash": "00"}),
    ] {
        let reply = h.call(Method::POST, "/platform/v1/keys", Some(&h.officer), Some(bad.clone())).await;
        assert!(is_problem(&reply, StatusCode::BAD_REQUEST), "{bad}: {} {}", reply.status, reply.body);
    }
    assert_eq!(h.service.operator_keys().map(|k| k.len()).unwrap_or_default(), before);
}

#[tokio::test]
async fn keys_are_listed_and_shown_to_every_role_without_secret_or_hash() {
    let h = Harness::new();
    let auditor = server_key(&h.service, "auditor", OperatorRole::Auditor);
    let made = h
        .call(
            Method::POST,
            "/platform/v1/keys",
            Some(&h.officer),
            Some(json!({"name": "peter", "role": "privacy_officer", "expires_in": "90d"})),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    let secrets: Vec<String> = [h.operator.as_str(), h.officer.as_str(), auditor.as_str()]
        .into_iter()
        .chain(made.body["key"].as_str())
        .map(|k| k.rsplit('_').next().unwrap_or_default().to_string())
        .collect();
    let hashes: Vec<String> =
        h.service.operator_keys().unwrap_or_default().into_iter().map(|k| k.hash).collect();
    assert_eq!(hashes.len(), 4);
    for key in [&h.operator, &h.officer, &auditor] {
        let listed = h.call(Method::GET, "/platform/v1/keys", Some(key), None).await;
        assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
        let text = listed.body.to_string();
        assert_eq!(listed.body.as_array().map(Vec::len), Some(4), "{text}");
        for secret in secrets.iter().chain(&hashes) {
            assert!(!text.contains(secret.as_str()), "the listing shows a secret or a hash: {text}");
        }
        assert!(!text.contains("\"hash\""), "{text}");
    }
    let listed = h.call(Method::GET, "/platform/v1/keys", Some(&auditor), None).await;
    let peter = &listed.body[3];
    assert_eq!(peter["name"], "peter");
    assert_eq!(peter["created_by"]["key"].as_str(), Some(id_of(&h.officer).as_str()));
    assert!(peter["expires_at"].as_str().is_some_and(|t| t.starts_with("2020-")), "{peter}");
    assert_eq!(listed.body[0]["created_by"], json!({"command": "test", "os_user": "tester"}));
    let id = id_of(&h.officer);
    assert!(is_problem(
        &h.call(Method::GET, "/platform/v1/keys", None, None).await,
        StatusCode::UNAUTHORIZED
    ));
    assert!(is_problem(
        &h.call(Method::GET, &format!("/platform/v1/keys/{id}"), None, None).await,
        StatusCode::UNAUTHORIZED
    ));
    assert!(is_problem(
        &h.call(Method::DELETE, &format!("/platform/v1/keys/{id}"), None, None).await,
        StatusCode::UNAUTHORIZED
    ));
    let shown = h.call(Method::GET, &format!("/platform/v1/keys/{id}"), Some(&auditor), None).await;
    assert_eq!((shown.status, shown.body["name"].as_str()), (StatusCode::OK, Some("officer")));
    assert!(is_problem(
        &h.call(Method::GET, "/platform/v1/keys/000000000000", Some(&auditor), None).await,
        StatusCode::NOT_FOUND
    ));
    assert!(is_problem(
        &h.call(Method::GET, "/platform/v1/keys/bad%21id", Some(&auditor), None).await,
        StatusCode::BAD_REQUEST
    ));
}

#[tokio::test]
async fn each_role_revokes_exactly_the_keys_its_row_allows_and_a_revoked_key_fails_at_once() {
    let h = Harness::new();
    let auditor = server_key(&h.service, "auditor", OperatorRole::Auditor);
    let callers =
        [("operator", h.operator.clone()), ("privacy_officer", h.officer.clone()), ("auditor", auditor)];
    let role_of = |name: &str| OperatorRole::parse(name).unwrap_or(OperatorRole::Auditor);
    let allowed = |caller: &str, role: &str| match caller {
        "privacy_officer" => true,
        "operator" => role != "privacy_officer",
        _ => false,
    };
    for (caller, key) in &callers {
        for role in ROLES {
            let target = server_key(&h.service, &format!("{role} target"), role_of(role));
            let uri = format!("/platform/v1/keys/{}", id_of(&target));
            let reply = h.call(Method::DELETE, &uri, Some(key), None).await;
            let still = h.call(Method::GET, "/platform/v1/keys", Some(&target), None).await;
            if allowed(caller, role) {
                assert_eq!(
                    reply.status,
                    StatusCode::NO_CONTENT,
                    "{caller} revoking a {role} key: {}",
                    reply.body
                );
                // The very next request with the revoked key fails, and says why.
                assert!(is_problem(&still, StatusCode::UNAUTHORIZED), "{caller}/{role}: {}", still.status);
                assert_eq!(still.body["detail"], "the API key was revoked");
                // Revoking it again changes nothing.
                assert_eq!(
                    h.call(Method::DELETE, &uri, Some(key), None).await.status,
                    StatusCode::NO_CONTENT
                );
            } else {
                assert!(is_problem(&reply, StatusCode::FORBIDDEN), "{caller} revoked a {role} key");
                assert_eq!(still.status, StatusCode::OK, "a refused revocation changed nothing");
            }
        }
    }
    // Every role may revoke its own key; the very next request with it fails.
    for role in ROLES {
        let own = server_key(&h.service, &format!("own {role}"), role_of(role));
        let reply =
            h.call(Method::DELETE, &format!("/platform/v1/keys/{}", id_of(&own)), Some(&own), None).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{role} revoking itself: {}", reply.body);
        let next = h.call(Method::GET, "/platform/v1/keys", Some(&own), None).await;
        assert!(is_problem(&next, StatusCode::UNAUTHORIZED), "{role}: {}", next.status);
    }
    assert!(is_problem(
        &h.call(Method::DELETE, "/platform/v1/keys/000000000000", Some(&h.officer), None).await,
        StatusCode::NOT_FOUND
    ));
    // The last live privacy-officer key is kept, even from itself.
    for key in h.service.operator_keys().unwrap_or_default() {
        if key.role == OperatorRole::PrivacyOfficer && key.id != id_of(&h.officer) {
            assert!(h.service.revoke_key_on_server(&key.id, false).is_ok());
        }
    }
    let live_officers: Vec<String> = h
        .service
        .operator_keys()
        .unwrap_or_default()
        .into_iter()
        .filter(|k| k.role == OperatorRole::PrivacyOfficer && k.revoked_at.is_none())
        .map(|k| k.id)
        .collect();
    assert_eq!(live_officers, [id_of(&h.officer)]);
    let last = h
        .call(Method::DELETE, &format!("/platform/v1/keys/{}", id_of(&h.officer)), Some(&h.officer), None)
        .await;
    assert!(is_problem(&last, StatusCode::CONFLICT), "{} {}", last.status, last.body);
    assert!(last.body["detail"].as_str().is_some_and(|d| d.contains("last live privacy-officer key")));
    assert_eq!(h.call(Method::GET, "/platform/v1/keys", Some(&h.officer), None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn an_expired_key_fails_at_its_next_request_and_is_listed_expired() {
    let h = Harness::new();
    let made = h
        .op(
            Method::POST,
            "/platform/v1/keys",
            Some(json!({"name": "temp", "role": "auditor", "expires_in": "1h"})),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    assert_eq!(made.body["expires_at"].as_str(), Some(h.service.now().plus_secs(3600).to_string().as_str()));
    let key = made.body["key"].as_str().unwrap_or_default().to_string();
    h.clock.advance_secs(3599);
    assert_eq!(h.call(Method::GET, "/platform/v1/keys", Some(&key), None).await.status, StatusCode::OK);
    h.clock.advance_secs(1);
    let expired = h.call(Method::GET, "/platform/v1/keys", Some(&key), None).await;
    assert!(is_problem(&expired, StatusCode::UNAUTHORIZED), "{}", expired.status);
    assert_eq!(expired.body["detail"], "the API key expired");
    let listed =
        h.call(Method::GET, &format!("/platform/v1/keys/{}", id_of(&key)), Some(&h.operator), None).await;
    assert_eq!(listed.body["status"], "expired");
}

#[tokio::test]
async fn the_version_list_names_author_and_approvers_by_key_and_refuses_the_authors_lineage() {
    let h = Harness::new();
    h.world().await;
    // The officer makes a second officer key over HTTP: whoever holds the first holds both.
    let peter = h
        .call(
            Method::POST,
            "/platform/v1/keys",
            Some(&h.officer),
            Some(json!({"name": "peter", "role": "privacy_officer"})),
        )
        .await;
    let peter = peter.body["key"].as_str().unwrap_or_default().to_string();
    let by_officer = Request::builder()
        .method(Method::POST)
        .uri("/platform/v1/policies")
        .header(header::AUTHORIZATION, format!("Bearer {}", h.officer))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(LEGACY))
        .unwrap_or_default();
    assert_eq!(h.send(by_officer).await.status, StatusCode::CREATED);
    let lineage = h.call(Method::POST, "/platform/v1/policies/2/approve", Some(&peter), None).await;
    assert!(is_problem(&lineage, StatusCode::UNPROCESSABLE_ENTITY), "{}", lineage.body);
    assert!(
        lineage.body["detail"].as_str().is_some_and(|d| d.contains("was created by key")),
        "{}",
        lineage.body
    );
    // The operator's draft, approved by peter, is listed with both keys' ids and names.
    assert_eq!(h.policy(GROUPS_2018).await.status, StatusCode::CREATED);
    let waived = h
        .call(
            Method::POST,
            "/platform/v1/policies/3/waivers",
            Some(&peter),
            Some(json!({"reason": "reviewed by peter by hand"})),
        )
        .await;
    assert_eq!(waived.status, StatusCode::CREATED, "{}", waived.body);
    assert_eq!(
        h.call(Method::POST, "/platform/v1/policies/3/approve", Some(&peter), None).await.status,
        StatusCode::OK
    );
    let activated =
        h.op(Method::POST, "/platform/v1/policies/3/activate", Some(json!({"reason": "reviewed"}))).await;
    assert_eq!(activated.status, StatusCode::OK, "{}", activated.body);
    assert_eq!(activated.body["author"].as_str(), Some(id_of(&h.operator).as_str()));
    let listed = h.call(Method::GET, "/platform/v1/policies", Some(&h.officer), None).await;
    let v3 = &listed.body[2];
    assert_eq!(v3["version"], 3);
    assert_eq!(v3["author"], json!({"id": id_of(&h.operator), "name": "bootstrap"}));
    assert_eq!(v3["approvals"][0]["by"], json!({"id": id_of(&peter), "name": "peter"}));
    assert_eq!(v3["approvals"][0]["counts"], true);
    assert_eq!(v3["activations"][0]["by"]["id"].as_str(), Some(id_of(&h.operator).as_str()));
    assert_eq!(v3["activations"][0]["reason"], "reviewed");
    assert_eq!(listed.body[1]["approvals"], json!([]), "the refused approval left no trace");
    // Once peter's key is revoked, its approval no longer counts.
    assert_eq!(
        h.call(Method::DELETE, &format!("/platform/v1/keys/{}", id_of(&peter)), Some(&h.officer), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let listed = h.call(Method::GET, "/platform/v1/policies", Some(&h.officer), None).await;
    assert_eq!(listed.body[2]["approvals"][0]["counts"], false);
}

/// Issue 8: policy text nested 150 levels deep overflowed the stack of the worker that parsed
/// it and aborted the whole server. Submitting or previewing such text is a 422 with the
/// place of the problem, and the server keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_policy_text_is_a_422_and_the_server_keeps_answering() {
    let h = Harness::new();
    let rule = |body: String| format!("permit (principal, action, resource) when {{ {body} }};");
    let mut texts = Vec::new();
    for levels in [150, 10_000] {
        texts.push((levels, rule(format!("{}context.installed{}", "(".repeat(levels), ")".repeat(levels)))));
        texts.push((levels, rule(format!("{}1{}.contains(1)", "[".repeat(levels), "]".repeat(levels)))));
    }
    // Chains nest too (150 links are within the bounds, and valid).
    texts.push((10_000, rule(format!("{} > 0", vec!["1"; 10_000].join("+")))));
    texts.push((10_000, rule(format!("{}context.installed", "!".repeat(10_000)))));
    for (levels, text) in texts {
        let submitted = h.policy(&text).await;
        assert!(is_problem(&submitted, StatusCode::UNPROCESSABLE_ENTITY), "{levels}: {}", submitted.body);
        assert!(submitted.body["errors"][0]["line"].as_u64().is_some_and(|l| l > 0), "{}", submitted.body);
        let previewed = h
            .op(
                Method::POST,
                "/platform/v1/policies/preview",
                Some(json!({"policy_text": text, "since": "30d"})),
            )
            .await;
        assert!(is_problem(&previewed, StatusCode::UNPROCESSABLE_ENTITY), "{levels}: {}", previewed.body);
    }
    assert_eq!(h.policy(GROUPS_2018).await.status, StatusCode::CREATED);
    assert_eq!(h.op(Method::GET, "/platform/v1/policies", None).await.status, StatusCode::OK);
}

// A flood of wrong credentials (issue 8): throttled per client id and per address with 429 and
// Retry-After, client-secret checks refused with 503 beyond their queue.

/// The peer address `ConnectInfo` carries when served on a socket.
fn peer(last: u8) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([10, 9, 8, last], 40_000 + u16::from(last)))
}

/// A request as if it came over a socket from `from`.
fn from_peer(mut request: Request<Body>, from: std::net::SocketAddr) -> Request<Body> {
    request.extensions_mut().insert(axum::extract::ConnectInfo(from));
    request
}

fn token_request(client_id: &str, secret: &str) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri("/oauth/token")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!(
            "grant_type=client_credentials&client_id={client_id}&client_secret={secret}"
        )))
        .unwrap_or_default()
}

fn retry_after(reply: &Reply) -> Option<u64> {
    reply.headers.get(header::RETRY_AFTER)?.to_str().ok()?.parse().ok()
}

/// An RFC 6749 error with `status`, `error` and a Retry-After of 1 s to `longest` s.
fn is_oauth_retry(reply: &Reply, status: StatusCode, error: &str, longest: u64) -> bool {
    reply.status == status
        && reply.body["error"] == error
        && reply.headers.get(header::CACHE_CONTROL).is_some_and(|v| v == "no-store")
        && retry_after(reply).is_some_and(|s| (1..=longest).contains(&s))
}

#[tokio::test]
async fn repeated_wrong_client_secrets_get_429_with_retry_after_and_existing_tokens_keep_working() {
    let h = Harness::new();
    let (_, client_id, secret) = h.world().await;
    let token = h.token(&client_id, &secret).await;
    for attempt in 0..5 {
        let wrong = h.send(token_request(&client_id, "wrong")).await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "attempt {attempt}: {}", wrong.body);
    }
    let asked = std::time::Instant::now();
    let throttled = h.send(token_request(&client_id, "wrong")).await;
    // Held back for the refusal pause, so a client that ignores Retry-After cannot ask in a
    // tight loop.
    assert!(asked.elapsed() >= consentry_api::REFUSAL_PAUSE, "answered after {:?}", asked.elapsed());
    assert!(
        is_oauth_retry(&throttled, StatusCode::TOO_MANY_REQUESTS, "temporarily_unavailable", 60),
        "{} {:?} {}",
        throttled.status,
        throttled.headers,
        throttled.body
    );
    // The trade-off: while the client id is blocked, even its right secret waits (from an
    // address it never succeeded from)...
    let real = h.send(token_request(&client_id, &secret)).await;
    assert_eq!(real.status, StatusCode::TOO_MANY_REQUESTS, "{}", real.body);
    // ...but the token it already holds keeps working.
    let read = h.call(Method::GET, "/v1/groups/hikers", Some(&token), None).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    // Introspection and revocation authenticate the same client: throttled alike.
    let introspect =
        h.form("/oauth/introspect", &format!("token={token}"), Some((&client_id, &secret))).await;
    assert!(is_oauth_retry(&introspect, StatusCode::TOO_MANY_REQUESTS, "temporarily_unavailable", 60));
    // The developer's case routes answer problem+json with Retry-After.
    let cases = basic(&h, Method::GET, "/v1/cases", (&client_id, &secret), None).await;
    assert!(is_problem(&cases, StatusCode::TOO_MANY_REQUESTS), "{} {}", cases.status, cases.body);
    assert!(retry_after(&cases).is_some_and(|s| (1..=60).contains(&s)), "{:?}", cases.headers);
}

#[tokio::test]
async fn failed_authentication_from_one_address_gets_429_and_other_addresses_do_not() {
    let h = Harness::new();
    let (_, client_id, secret) = h.world().await;
    // Twenty failures from one address, each with a client id nobody has (no argon2 work,
    // but still guessing).
    for i in 0..20 {
        let wrong = h.send(from_peer(token_request(&format!("cid_nobody{i}"), "x"), peer(1))).await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "attempt {i}: {}", wrong.body);
    }
    // The next attempt from there is refused before anything is checked, right secret or not.
    let refused = h.send(from_peer(token_request(&client_id, &secret), peer(1))).await;
    assert!(
        is_oauth_retry(&refused, StatusCode::TOO_MANY_REQUESTS, "temporarily_unavailable", 60),
        "{} {}",
        refused.status,
        refused.body
    );
    // Another address is not affected.
    let elsewhere = h.send(from_peer(token_request(&client_id, &secret), peer(2))).await;
    assert_eq!(elsewhere.status, StatusCode::OK, "{}", elsewhere.body);
}

#[tokio::test]
async fn an_attacker_blocking_a_client_id_does_not_block_the_address_the_client_uses() {
    let h = Harness::new();
    let (_, client_id, secret) = h.world().await;
    let first = h.send(from_peer(token_request(&client_id, &secret), peer(1))).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    for attempt in 0..5 {
        let wrong = h.send(from_peer(token_request(&client_id, "wrong"), peer(7))).await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "attempt {attempt}: {}", wrong.body);
    }
    let attacker = h.send(from_peer(token_request(&client_id, &secret), peer(8))).await;
    assert_eq!(attacker.status, StatusCode::TOO_MANY_REQUESTS, "{}", attacker.body);
    let real = h.send(from_peer(token_request(&client_id, &secret), peer(1))).await;
    assert_eq!(real.status, StatusCode::OK, "{}", real.body);
}

#[tokio::test]
async fn repeated_wrong_operator_keys_from_one_address_get_429() {
    let h = Harness::new();
    let (_, client_id, secret) = h.world().await;
    let list = |key: &str, from: u8| {
        from_peer(
            Request::builder()
                .uri("/platform/v1/policies")
                .header(header::AUTHORIZATION, format!("Bearer {key}"))
                .body(Body::empty())
                .unwrap_or_default(),
            peer(from),
        )
    };
    for i in 0..20 {
        let wrong = h.send(list(&format!("csk_guess{i}_secret"), 3)).await;
        assert!(is_problem(&wrong, StatusCode::UNAUTHORIZED), "attempt {i}: {}", wrong.body);
    }
    let refused = h.send(list(&h.operator, 3)).await;
    assert!(is_problem(&refused, StatusCode::TOO_MANY_REQUESTS), "{} {}", refused.status, refused.body);
    assert!(retry_after(&refused).is_some_and(|s| (1..=60).contains(&s)), "{:?}", refused.headers);
    let elsewhere = h.send(list(&h.operator, 4)).await;
    assert_eq!(elsewhere.status, StatusCode::OK, "{}", elsewhere.body);
    // Operator-key failures are tallied apart from client secrets.
    let token = h.send(from_peer(token_request(&client_id, &secret), peer(3))).await;
    assert_eq!(token.status, StatusCode::OK, "{}", token.body);
}

#[tokio::test]
async fn client_secret_checks_beyond_the_queue_get_503_at_once() {
    let limits = consentry_service::AuthLimits {
        secret_checks_at_once: 1,
        secret_checks_waiting: 0,
        failures_per_client: 1_000,
        ..consentry_service::AuthLimits::default()
    };
    let h = Harness::with_config(ServiceConfig { auth_limits: limits, ..ServiceConfig::default() });
    let (_, client_id, secret) = h.world().await;
    // One check first, so the checker thread is up and waiting.
    let warm = h.send(token_request(&client_id, &secret)).await;
    assert_eq!(warm.status, StatusCode::OK, "{}", warm.body);
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (router, request) = (h.router.clone(), token_request(&client_id, &secret));
        calls.spawn(async move {
            let response = router.oneshot(request).await.unwrap_or_else(|e| match e {});
            let status = response.status();
            let headers = response.headers().clone();
            let bytes = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            Reply { status, headers, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
        });
    }
    let (mut granted, mut busy) = (0, 0);
    while let Some(Ok(reply)) = calls.join_next().await {
        if reply.status == StatusCode::OK {
            granted += 1;
        } else {
            assert!(
                is_oauth_retry(&reply, StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", 1),
                "{} {:?} {}",
                reply.status,
                reply.headers,
                reply.body
            );
            busy += 1;
        }
    }
    assert_eq!(granted + busy, 16);
    assert!(granted >= 1 && busy >= 1, "granted {granted}, busy {busy}");
}

#[tokio::test]
async fn openapi_declares_the_throttled_answers() {
    let h = Harness::new();
    let doc = h.call(Method::GET, "/openapi.json", None, None).await;
    // Shared answers are component responses the operations refer to.
    let declared = |method: &str, path: &str, status: &str| {
        let response = &doc.body["paths"][path][method]["responses"][status];
        match response["$ref"].as_str().and_then(|r| r.strip_prefix('#')) {
            Some(pointer) => doc.body.pointer(pointer).cloned().unwrap_or(Value::Null),
            None => response.clone(),
        }
    };
    for (method, path) in [("post", "/oauth/token"), ("post", "/oauth/revoke"), ("post", "/oauth/introspect")]
    {
        for status in ["429", "503"] {
            let response = declared(method, path, status);
            assert!(response["headers"]["Retry-After"].is_object(), "{method} {path} {status}: {response}");
        }
    }
    for (method, path, statuses) in [
        ("get", "/platform/v1/policies", &["429"][..]),
        ("post", "/platform/v1/apps", &["429"][..]),
        ("get", "/v1/cases", &["429", "503"][..]),
        ("post", "/v1/apps/{id}/certification", &["429", "503"][..]),
    ] {
        for status in statuses {
            let response = declared(method, path, status);
            assert!(response["headers"]["Retry-After"].is_object(), "{method} {path} {status}: {response}");
            assert!(response["content"]["application/problem+json"].is_object(), "{method} {path} {status}");
        }
    }
    // The app API's bearer-token routes are not throttled per address.
    assert!(declared("get", "/v1/groups/{id}", "429").is_null());
}

/// `/readyz` reads the database's schema version afresh: when a newer consentry migrates the
/// database under this running node, the node says not ready (and why) instead of serving a
/// schema it does not know.
#[tokio::test]
async fn readyz_says_not_ready_once_a_newer_consentry_migrated_the_database() {
    let path = std::env::temp_dir().join(format!("consentry-readyz-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let store = Arc::new(SqliteStore::open(&path).unwrap_or_else(|e| unreachable!("{e}")));
    let clock = Arc::new(SimulatedClock::starting_at(Instant::from_secs(1_600_000_000)));
    let service = Arc::new(Service::new(store, clock, ServerKey::generate(), ServiceConfig::default()));
    let router = consentry_api::app(ApiState::new(service));
    let readyz = || async {
        let request = Request::builder().uri("/readyz").body(Body::empty()).unwrap_or_default();
        let response = router.clone().oneshot(request).await.unwrap_or_else(|e| match e {});
        let status = response.status();
        let bytes = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    };
    assert_eq!(readyz().await, (StatusCode::OK, "ready".to_string()));
    let known = consentry_store_sqlite::latest_schema_version();
    rusqlite::Connection::open(&path)
        .and_then(|c| {
            c.execute(
                "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
                 VALUES (?1, 'from_a_newer_consentry', '2030-01-01T00:00:00Z', '1')",
                [known + 1],
            )
        })
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(
        readyz().await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: schema: the database is at version {}, this consentry knows version {known}",
                known + 1
            )
        )
    );
    let _ = std::fs::remove_file(&path);
}
