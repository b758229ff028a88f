//! The privacy team's console without a browser: sessions (cookie attributes, hashing,
//! expiry, bounds, sign-out, revoked keys), CSRF and cross-site forms, every page for every
//! role (and no data without a session), escaping of every value, and each action going
//! through the same rules as the platform API: the two-person rule, banned apps stay banned,
//! a dead delivery retried, an audit equal to the API's.

#![allow(clippy::indexing_slicing)] // serde_json indexing returns Null, it never panics

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use consentry_api::console::{Console, CONTENT_SECURITY_POLICY, SESSION_COOKIE, SIGN_IN_COOKIE};
use consentry_api::{app, ApiState};
use consentry_ledger::{Ledger, LedgerOptions};
use consentry_service::{ServerKey, Service, ServiceConfig, SessionLimits, SimulatedClock};
use consentry_store::DeliveryStatus;
use consentry_store_sqlite::SqliteStore;
use consentry_types::{AppId, DeveloperId, GroupId, Instant, MemberId, NodeId, OperatorRole, Scope};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

const LEGACY: &str = include_str!("../../../policies/legacy-2017.cedar");
const GROUPS_2018: &str = include_str!("../../../policies/groups-2018.cedar");
const HOSTILE_APP: &str = "<script>alert(1)</script>";
const QUOTED_DEVELOPER: &str = "Dev \"Quoted\" O'Brien & Sons";

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers.get(header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    fn cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(String::from))
            .collect()
    }

    fn cookie(&self, name: &str) -> Option<String> {
        self.cookies().into_iter().find(|c| c.starts_with(&format!("{name}=")))
    }

    fn csrf(&self) -> String {
        hidden(&self.body, "csrf")
    }
}

fn hidden(body: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    body.split(&marker).nth(1).and_then(|rest| rest.split('"').next()).unwrap_or_default().to_string()
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .and_then(|p| p.split_once('='))
        .map(|(_, v)| v.to_string())
        .unwrap_or_default()
}

fn encode(fields: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish()
}

/// A signed-in browser: its session cookie and the CSRF token its pages carry.
#[derive(Clone)]
struct Session {
    cookie: String,
    csrf: String,
}

struct World {
    router: Router,
    service: Arc<Service>,
    clock: Arc<SimulatedClock>,
    state: ApiState,
    ledger_dir: PathBuf,
    operator: String,
    officer: String,
    second_officer: String,
    auditor: String,
    app: AppId,
    hostile_app: AppId,
    token: String,
}

fn ok<T, E: std::fmt::Display>(result: Result<T, E>) -> T {
    result.unwrap_or_else(|e| unreachable!("{e}"))
}

fn temp_dir(name: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("consentry-console-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

impl World {
    /// A group of three, a developer with a quoted name, an app installed in it (bob opted in),
    /// an app named like a script, the legacy rules active, and the members page read once
    /// (recorded in the ledger).
    async fn new(limits: SessionLimits) -> World {
        World::new_with(limits, None).await
    }

    /// The same world, its ledger a root of streams, this server writing node `node`'s.
    async fn new_with(limits: SessionLimits, node: Option<&str>) -> World {
        let clock = Arc::new(SimulatedClock::starting_at(ok(Instant::parse("2020-01-01T00:00:00Z"))));
        let store = Arc::new(ok(SqliteStore::in_memory()));
        let service =
            Arc::new(Service::new(store, clock.clone(), ServerKey::generate(), ServiceConfig::default()));
        let operator =
            ok(service.bootstrap_operator_key("test", "tester")).map(|k| k.key).unwrap_or_default();
        let key = |name: &str, role| ok(service.create_key_on_server("test", "tester", name, role, None)).key;
        let officer = key("olga", OperatorRole::PrivacyOfficer);
        let second_officer = key("pia", OperatorRole::PrivacyOfficer);
        let auditor = key("aud", OperatorRole::Auditor);
        let group = ok(GroupId::parse("hikers"));
        ok(service.put_group(&group, "Hikers"));
        for (id, role) in [
            ("ann", consentry_types::Role::Admin),
            ("bob", consentry_types::Role::Member),
            ("cat", consentry_types::Role::Member),
        ] {
            let member = ok(MemberId::parse(id));
            ok(service.put_member(
                &member,
                &format!("{id} <b>name</b>"),
                &format!("https://pics.example/{id}.jpg"),
            ));
            ok(service.set_membership(&group, &member, Some(role)));
        }
        let developer = ok(DeveloperId::parse("acme"));
        ok(service.put_developer(
            &developer,
            QUOTED_DEVELOPER,
            "privacy@acme.example",
            "https://acme.example/hook",
        ));
        let registered = ok(service.register_app(&developer, "Scheduler", "social_media_management"));
        let hostile = ok(service.register_app(&developer, HOSTILE_APP, "analytics"));
        let ann = ok(MemberId::parse("ann"));
        ok(service.install_app(&registered.app.id, &group, &ann));
        ok(service.set_consent(&ok(MemberId::parse("bob")), &registered.app.id, &[Scope::Profile]));
        let author = ok(service.authenticate_operator(&operator));
        let version = ok(service.submit_policy(LEGACY, &author));
        let approver = ok(service.authenticate_operator(&officer));
        // Proven (as a prover would record it), so that it can be approved.
        ok(service.record_proof(version, &approver, true, "{}"));
        ok(service.approve_policy(version, &approver));
        ok(service.activate_policy(version, &author, "launch rules"));
        let ledger_dir = temp_dir("ledger");
        let ledger = Arc::new(match node {
            Some(node) => {
                ok(Ledger::open_stream(&ledger_dir, &ok(NodeId::parse(node)), LedgerOptions::default()))
            }
            None => ok(Ledger::open(&ledger_dir, LedgerOptions::default())),
        });
        let state = ApiState::new(service.clone()).with_ledger(ledger).with_console(Console::new(limits));
        let router = app(state.clone());
        let token =
            ok(service.issue_token(&registered.app.client_id, &registered.client_secret)).access_token;
        let world = World {
            router,
            service,
            clock,
            state,
            ledger_dir,
            operator,
            officer,
            second_officer,
            auditor,
            app: registered.app.id,
            hostile_app: hostile.app.id,
            token,
        };
        world.clock.advance_secs(600);
        let read = world
            .raw(
                Method::GET,
                "/v1/groups/hikers/members?fields=name,picture",
                &[(header::AUTHORIZATION.as_str(), &format!("Bearer {}", world.token))],
                "",
            )
            .await;
        assert_eq!(read.status, StatusCode::OK, "{}", read.body);
        world.clock.advance_secs(3600);
        world
    }

    async fn raw(&self, method: Method, uri: &str, headers: &[(&str, &str)], body: &str) -> Page {
        let mut builder = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(Body::from(body.to_string())).unwrap_or_default();
        let response = self.router.clone().oneshot(request).await.unwrap_or_else(|e| match e {});
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        Page { status, headers, body: String::from_utf8_lossy(&bytes).into_owned() }
    }

    async fn sign_in_with(&self, key: &str, extra: &[(&str, &str)]) -> (Page, Option<Session>) {
        let form = self.raw(Method::GET, "/console/sign-in", extra, "").await;
        assert_eq!(form.status, StatusCode::OK);
        let token_cookie = form.cookie(SIGN_IN_COOKIE).unwrap_or_default();
        let token = hidden(&form.body, "token");
        assert_eq!(cookie_value(&token_cookie), token, "the form and its cookie carry the same token");
        let cookie = format!("{SIGN_IN_COOKIE}={token}");
        let mut headers: Vec<(&str, &str)> =
            vec![("content-type", "application/x-www-form-urlencoded"), ("cookie", &cookie)];
        headers.extend_from_slice(extra);
        let reply = self
            .raw(Method::POST, "/console/sign-in", &headers, &encode(&[("key", key), ("token", &token)]))
            .await;
        let session = reply.cookie(SESSION_COOKIE).map(|c| cookie_value(&c)).filter(|v| !v.is_empty());
        let Some(cookie) = session else { return (reply, None) };
        let mut signed = Session { cookie, csrf: String::new() };
        signed.csrf = self.get(&signed, "/console/overview").await.csrf();
        assert!(!signed.csrf.is_empty());
        (reply, Some(signed))
    }

    async fn sign_in(&self, key: &str) -> Session {
        let (reply, session) = self.sign_in_with(key, &[]).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
        session.unwrap_or_else(|| unreachable!("no session cookie"))
    }

    async fn get(&self, session: &Session, uri: &str) -> Page {
        let cookie = format!("{SESSION_COOKIE}={}", session.cookie);
        self.raw(Method::GET, uri, &[("cookie", &cookie)], "").await
    }

    async fn post(&self, session: &Session, uri: &str, fields: &[(&str, &str)]) -> Page {
        let mut all = fields.to_vec();
        all.push(("csrf", &session.csrf));
        self.post_raw(session, uri, &encode(&all), &[]).await
    }

    async fn post_raw(&self, session: &Session, uri: &str, body: &str, extra: &[(&str, &str)]) -> Page {
        let cookie = format!("{SESSION_COOKIE}={}", session.cookie);
        let mut headers: Vec<(&str, &str)> =
            vec![("content-type", "application/x-www-form-urlencoded"), ("cookie", &cookie)];
        headers.extend_from_slice(extra);
        self.raw(Method::POST, uri, &headers, body).await
    }

    /// Waits for an audit job's page to stop refreshing.
    async fn finished(&self, session: &Session, uri: &str) -> Page {
        for _ in 0..500 {
            let page = self.get(session, uri).await;
            if !page.body.contains("http-equiv=\"refresh\"") {
                return page;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        unreachable!("{uri} never finished")
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.ledger_dir);
    }
}

/// Every page a signed-in operator might open, with the roles that may read it.
const PAGES: [(&str, &[OperatorRole]); 9] = [
    ("/console/overview", &[OperatorRole::Operator, OperatorRole::PrivacyOfficer, OperatorRole::Auditor]),
    ("/console/policies", &[OperatorRole::Operator, OperatorRole::PrivacyOfficer, OperatorRole::Auditor]),
    ("/console/policies/1", &[OperatorRole::Operator, OperatorRole::PrivacyOfficer, OperatorRole::Auditor]),
    ("/console/audits", &[OperatorRole::PrivacyOfficer, OperatorRole::Auditor]),
    ("/console/remediation", &[OperatorRole::Operator, OperatorRole::PrivacyOfficer, OperatorRole::Auditor]),
    ("/console/apps", &[OperatorRole::Operator, OperatorRole::PrivacyOfficer, OperatorRole::Auditor]),
    (
        "/console/members?member=bob",
        &[OperatorRole::Operator, OperatorRole::PrivacyOfficer, OperatorRole::Auditor],
    ),
    ("/console/members", &[OperatorRole::Operator, OperatorRole::PrivacyOfficer, OperatorRole::Auditor]),
    (
        "/console/remediation?done=retried&n=3",
        &[OperatorRole::Operator, OperatorRole::PrivacyOfficer, OperatorRole::Auditor],
    ),
];

/// What a page may never contain: script other than the console's own file, inline styles or
/// event handlers (the CSP would block them, and the browser test fails on the error).
fn assert_no_inline_code(uri: &str, body: &str) {
    let lower = body.to_ascii_lowercase();
    for (i, _) in lower.match_indices("<script") {
        let tag = lower.get(i..).and_then(|t| t.split('>').next()).unwrap_or_default();
        assert!(tag.contains("src=\"/console/static/console.js\""), "{uri}: inline script {tag}");
    }
    for forbidden in [" style=\"", " onclick=", " onload=", " onerror=", "javascript:"] {
        assert!(!lower.contains(forbidden), "{uri} contains {forbidden}");
    }
}

#[tokio::test]
async fn signing_in_sets_a_strict_http_only_session_cookie_kept_only_as_a_hash() {
    let world = World::new(SessionLimits::default()).await;
    let (reply, session) = world.sign_in_with(&world.officer, &[]).await;
    assert_eq!((reply.status, reply.location()), (StatusCode::SEE_OTHER, "/console/overview"));
    let set = reply.cookie(SESSION_COOKIE).unwrap_or_default();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/console", "Max-Age=43200"] {
        assert!(set.contains(part), "{set}");
    }
    assert!(!set.contains("Secure"), "plain http: a Secure cookie would never come back: {set}");
    let session = session.unwrap_or_else(|| unreachable!());
    assert!(session.cookie.len() >= 40, "a random id of 32 bytes");
    let sessions = world.state.console.sessions();
    assert_eq!(sessions.count(), 1);
    assert!(!sessions.stores_in_clear(&session.cookie), "the id is kept only as a hash");
    // Behind a proxy that terminates TLS and says so, the cookie is Secure.
    let (proxied, _) = world.sign_in_with(&world.officer, &[("x-forwarded-proto", "https")]).await;
    assert!(
        proxied.cookie(SESSION_COOKIE).is_some_and(|c| c.contains("; Secure")),
        "{:?}",
        proxied.cookies()
    );
    assert!(
        proxied.cookie(SIGN_IN_COOKIE).is_some_and(|c| c.contains("Max-Age=0")),
        "the form's cookie is cleared"
    );
    // Every console response carries the CSP; no page has inline script.
    let overview = world.get(&session, "/console/overview").await;
    assert_eq!(
        overview.headers.get(header::CONTENT_SECURITY_POLICY).and_then(|v| v.to_str().ok()),
        Some(CONTENT_SECURITY_POLICY)
    );
    assert!(
        CONTENT_SECURITY_POLICY.contains("script-src 'self'") && !CONTENT_SECURITY_POLICY.contains("unsafe")
    );
    assert_eq!(overview.headers.get("x-frame-options").and_then(|v| v.to_str().ok()), Some("DENY"));
    assert_eq!(overview.headers.get(header::CACHE_CONTROL).and_then(|v| v.to_str().ok()), Some("no-store"));
}

#[tokio::test]
async fn sign_in_refuses_a_bad_key_and_a_form_from_elsewhere() {
    let world = World::new(SessionLimits::default()).await;
    let (reply, session) = world.sign_in_with("csk_nothing_here", &[]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(
        session.is_none() && reply.body.contains("Not signed in: the API key is not valid"),
        "{}",
        reply.body
    );
    // The form's token must come back in its cookie: a form posted from another site has no cookie.
    let fields = encode(&[("key", world.officer.as_str()), ("token", "abc")]);
    let forged = world
        .raw(
            Method::POST,
            "/console/sign-in",
            &[("content-type", "application/x-www-form-urlencoded")],
            &fields,
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(forged.cookie(SESSION_COOKIE).is_none());
    let mismatched = world
        .raw(
            Method::POST,
            "/console/sign-in",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("cookie", &format!("{SIGN_IN_COOKIE}=abd")),
            ],
            &fields,
        )
        .await;
    assert_eq!(mismatched.status, StatusCode::FORBIDDEN);
    let cross_site = world
        .raw(
            Method::POST,
            "/console/sign-in",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("cookie", &format!("{SIGN_IN_COOKIE}=abc")),
                ("sec-fetch-site", "cross-site"),
            ],
            &fields,
        )
        .await;
    assert_eq!(cross_site.status, StatusCode::FORBIDDEN);
    assert_eq!(world.state.console.sessions().count(), 0, "no refusal made a session");
    // A revoked key cannot sign in.
    let auditor = ok(world.service.authenticate_operator(&world.auditor));
    ok(world.service.revoke_operator_key(&auditor, &auditor.key_id));
    let (revoked, session) = world.sign_in_with(&world.auditor, &[]).await;
    assert!(
        revoked.status == StatusCode::UNAUTHORIZED && session.is_none() && revoked.body.contains("revoked"),
        "{}",
        revoked.body
    );
}

#[tokio::test]
async fn without_a_session_no_page_shows_data_and_no_action_runs() {
    let world = World::new(SessionLimits::default()).await;
    let nobody = Session { cookie: "forged-session-id".into(), csrf: "x".into() };
    for (uri, _) in PAGES {
        let anonymous = world.raw(Method::GET, uri, &[], "").await;
        assert_eq!(
            (anonymous.status, anonymous.location()),
            (StatusCode::SEE_OTHER, "/console/sign-in"),
            "{uri}"
        );
        let forged = world.get(&nobody, uri).await;
        assert_eq!((forged.status, forged.location()), (StatusCode::SEE_OTHER, "/console/sign-in"), "{uri}");
    }
    let app = world.app.to_string();
    for uri in [
        "/console/policies/1/approve",
        &format!("/console/apps/{app}/revoke"),
        "/console/deliveries/1/retry",
        "/console/audits",
        "/console/sign-out",
    ] {
        let reply = world.post(&nobody, uri, &[("reason", "x")]).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{uri}: {}", reply.body);
    }
    assert_eq!(
        ok(world.service.store().app(&world.app)).map(|a| a.status),
        Some(consentry_types::AppStatus::Active)
    );
}

#[tokio::test]
async fn each_role_sees_its_pages_and_is_refused_the_others() {
    let world = World::new(SessionLimits::default()).await;
    for (key, role) in [
        (&world.operator, OperatorRole::Operator),
        (&world.officer, OperatorRole::PrivacyOfficer),
        (&world.auditor, OperatorRole::Auditor),
    ] {
        let session = world.sign_in(key).await;
        for (uri, roles) in PAGES {
            let page = world.get(&session, uri).await;
            let expected = if roles.contains(&role) { StatusCode::OK } else { StatusCode::FORBIDDEN };
            assert_eq!(page.status, expected, "{role:?} {uri}: {}", page.body);
            assert_no_inline_code(uri, &page.body);
            let link = format!("href=\"{}\"", uri.split('?').next().unwrap_or_default());
            if page.status == StatusCode::OK && !uri.contains("/1") {
                assert!(page.body.contains(&link), "{role:?}: the navigation offers {uri}");
            }
        }
        let overview = world.get(&session, "/console/overview").await.body;
        assert_eq!(
            overview.contains("href=\"/console/audits\""),
            role != OperatorRole::Operator,
            "{role:?}: audits offered only to who may run them"
        );
        assert!(overview.contains(&format!("id=\"signed-in-role\">{}<", role.as_str())));
    }
}

#[tokio::test]
async fn what_a_role_may_not_do_is_not_offered_and_refused_if_tried() {
    let world = World::new(SessionLimits::default()).await;
    let draft = ok(world
        .service
        .submit_policy(GROUPS_2018, &ok(world.service.authenticate_operator(&world.operator))));
    let app = world.app.to_string();
    let auditor = world.sign_in(&world.auditor).await;
    let page = world.get(&auditor, &format!("/console/policies/{draft}")).await.body;
    for action in ["/approve\"", "/activate\"", "/preview\""] {
        assert!(!page.contains(action), "an auditor is offered {action}");
    }
    let app_page = world.get(&auditor, &format!("/console/apps/{app}")).await.body;
    assert!(
        !app_page.contains("/revoke\"") && !app_page.contains("/suspend\""),
        "an auditor is offered standing actions"
    );
    let remediation = world.get(&auditor, "/console/remediation").await.body;
    assert!(!remediation.contains("/retry\""));
    for (uri, fields) in [
        (format!("/console/policies/{draft}/approve"), vec![]),
        (format!("/console/policies/{draft}/activate"), vec![("reason", "x")]),
        (format!("/console/apps/{app}/revoke"), vec![("reason", "x")]),
        ("/console/deliveries/1/retry".to_string(), vec![]),
        ("/console/policies".to_string(), vec![("text", GROUPS_2018)]),
        (format!("/console/policies/{draft}/preview"), vec![("since", "30d")]),
        (format!("/console/policies/{draft}/proofs"), vec![]),
        (format!("/console/policies/{draft}/waivers"), vec![("reason", "x")]),
        (format!("/console/apps/{app}/suspend"), vec![("reason", "x")]),
        (format!("/console/apps/{app}/reinstate"), vec![("reason", "x")]),
        ("/console/developers/acme/revoke".to_string(), vec![("reason", "x")]),
        ("/console/audits/1/cases".to_string(), vec![]),
    ] {
        let reply = world.post(&auditor, &uri, &fields).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "auditor {uri}: {}", reply.body);
        assert!(reply.body.contains("this needs the role"), "{}", reply.body);
    }
    // An operator may not approve, nor run audits.
    let operator = world.sign_in(&world.operator).await;
    assert!(!world.get(&operator, &format!("/console/policies/{draft}")).await.body.contains("/approve\""));
    assert_eq!(
        world.post(&operator, &format!("/console/policies/{draft}/approve"), &[]).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        world.post(&operator, "/console/audits", &[("policy", "active"), ("since", "1d")]).await.status,
        StatusCode::FORBIDDEN
    );
    // An operator may not open cases from an audit, nor waive proofs.
    for uri in ["/console/audits/1/cases".to_string(), format!("/console/policies/{draft}/waivers")] {
        let reply = world.post(&operator, &uri, &[("reason", "x")]).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "operator {uri}: {}", reply.body);
    }
    assert!(ok(world.service.store().policy_approvals(draft)).is_empty(), "nothing was approved");
    assert!(ok(world.service.store().policy_previews(draft)).is_empty(), "nothing was previewed");
    assert!(ok(world.service.store().policy_proofs(draft)).is_empty(), "nothing was proved");
    assert!(ok(world.service.store().policy_waivers(draft)).is_empty(), "nothing was waived");
    assert!(ok(world.service.store().cases()).is_empty(), "no case was opened");
    assert_eq!(
        ok(world.service.store().app(&world.app)).map(|a| a.status),
        Some(consentry_types::AppStatus::Active)
    );
}

#[tokio::test]
async fn a_form_without_the_sessions_csrf_token_or_from_another_site_is_refused() {
    let world = World::new(SessionLimits::default()).await;
    let draft = ok(world
        .service
        .submit_policy(GROUPS_2018, &ok(world.service.authenticate_operator(&world.operator))));
    ok(world.service.record_proof(
        draft,
        &ok(world.service.authenticate_operator(&world.officer)),
        true,
        "{}",
    ));
    let officer = world.sign_in(&world.officer).await;
    let other = world.sign_in(&world.second_officer).await;
    let uri = format!("/console/policies/{draft}/approve");
    for body in [String::new(), "csrf=".to_string(), "csrf=wrong".to_string(), format!("csrf={}", other.csrf)]
    {
        let reply = world.post_raw(&officer, &uri, &body, &[]).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{body}: {}", reply.body);
        assert!(reply.body.contains("CSRF token does not match"), "{}", reply.body);
    }
    let cross_site = world
        .post_raw(&officer, &uri, &format!("csrf={}", officer.csrf), &[("sec-fetch-site", "cross-site")])
        .await;
    assert_eq!(cross_site.status, StatusCode::FORBIDDEN);
    let wrong_type = world
        .raw(
            Method::POST,
            &uri,
            &[
                ("content-type", "application/json"),
                ("cookie", &format!("{SESSION_COOKIE}={}", officer.cookie)),
            ],
            "{}",
        )
        .await;
    assert_eq!(wrong_type.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let unknown_field = world.post(&officer, &uri, &[("version", "9")]).await;
    assert_eq!(unknown_field.status, StatusCode::BAD_REQUEST);
    assert!(
        ok(world.service.store().policy_approvals(draft)).is_empty(),
        "no refused form approved anything"
    );
    // The same form with the token of this session goes through.
    let approved = world.post(&officer, &uri, &[]).await;
    assert_eq!(
        (approved.status, approved.location()),
        (StatusCode::SEE_OTHER, format!("/console/policies/{draft}?done=approved&n={draft}").as_str())
    );
}

#[tokio::test]
async fn signing_out_ends_the_session_on_the_server() {
    let world = World::new(SessionLimits::default()).await;
    let session = world.sign_in(&world.officer).await;
    let kept = world.sign_in(&world.officer).await;
    assert_eq!(world.state.console.sessions().count(), 2);
    let out = world.post(&session, "/console/sign-out", &[]).await;
    assert_eq!((out.status, out.location()), (StatusCode::SEE_OTHER, "/console/sign-in"));
    assert!(out.cookie(SESSION_COOKIE).is_some_and(|c| c.contains("Max-Age=0")));
    let again = world.get(&session, "/console/overview").await;
    assert_eq!(
        (again.status, again.location()),
        (StatusCode::SEE_OTHER, "/console/sign-in"),
        "the old cookie no longer works"
    );
    // The old cookie with its CSRF token acts no more.
    let replayed = world.post(&session, "/console/ledger/verify", &[]).await;
    assert_eq!(replayed.status, StatusCode::UNAUTHORIZED, "{}", replayed.body);
    let replayed_out = world.post(&session, "/console/sign-out", &[]).await;
    assert_eq!(replayed_out.status, StatusCode::UNAUTHORIZED);
    assert!(
        world.get(&kept, "/console/overview").await.body.contains("not verified since the server started"),
        "the replayed form started no verification"
    );
    assert_eq!(world.get(&kept, "/console/overview").await.status, StatusCode::OK, "only that session ended");
    assert_eq!(world.state.console.sessions().count(), 1);
}

#[tokio::test]
async fn a_revoked_or_expired_key_ends_its_sessions_at_the_next_request() {
    let world = World::new(SessionLimits::default()).await;
    let session = world.sign_in(&world.second_officer).await;
    assert_eq!(world.get(&session, "/console/overview").await.status, StatusCode::OK);
    let officer = ok(world.service.authenticate_operator(&world.officer));
    let target = ok(world.service.authenticate_operator(&world.second_officer));
    ok(world.service.revoke_operator_key(&officer, &target.key_id));
    let page = world.get(&session, "/console/policies").await;
    assert_eq!((page.status, page.location()), (StatusCode::SEE_OTHER, "/console/sign-in"));
    let action = world.post(&session, "/console/ledger/verify", &[]).await;
    assert_eq!(action.status, StatusCode::UNAUTHORIZED);
    assert_eq!(world.state.console.sessions().count(), 0, "the revoked key's sessions are gone");
    // A key that expires: its session ends when it does, even in the middle of the session.
    let short =
        ok(world.service.create_key_on_server("test", "tester", "brief", OperatorRole::Auditor, Some(1800)))
            .key;
    let brief = world.sign_in(&short).await;
    world.clock.advance_secs(1000);
    assert_eq!(world.get(&brief, "/console/overview").await.status, StatusCode::OK);
    world.clock.advance_secs(900);
    assert_eq!(world.get(&brief, "/console/overview").await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn sessions_end_when_idle_or_old_and_are_bounded_in_number() {
    let limits = SessionLimits { idle_secs: 600, absolute_secs: 3600, max_sessions: 3, max_per_key: 2 };
    let world = World::new(limits).await;
    let session = world.sign_in(&world.officer).await;
    for _ in 0..5 {
        world.clock.advance_secs(599);
        assert_eq!(
            world.get(&session, "/console/overview").await.status,
            StatusCode::OK,
            "used within the idle time"
        );
    }
    world.clock.advance_secs(700);
    assert_eq!(
        world.get(&session, "/console/overview").await.status,
        StatusCode::SEE_OTHER,
        "past the absolute lifetime"
    );
    let idle = world.sign_in(&world.officer).await;
    world.clock.advance_secs(601);
    assert_eq!(world.get(&idle, "/console/overview").await.status, StatusCode::SEE_OTHER, "idle too long");
    // Bounded: per key, then in all; the least recently used goes first.
    let first = world.sign_in(&world.officer).await;
    world.clock.advance_secs(1);
    let second = world.sign_in(&world.officer).await;
    world.clock.advance_secs(1);
    let third = world.sign_in(&world.officer).await;
    assert_eq!(
        world.get(&first, "/console/overview").await.status,
        StatusCode::SEE_OTHER,
        "a key keeps at most 2"
    );
    assert_eq!(world.get(&second, "/console/overview").await.status, StatusCode::OK);
    world.clock.advance_secs(1);
    assert_eq!(world.get(&third, "/console/overview").await.status, StatusCode::OK);
    world.clock.advance_secs(1);
    let _auditor = world.sign_in(&world.auditor).await;
    world.clock.advance_secs(1);
    let _operator = world.sign_in(&world.operator).await;
    assert!(world.state.console.sessions().count() <= 3);
    assert_eq!(
        world.get(&second, "/console/overview").await.status,
        StatusCode::SEE_OTHER,
        "the least recently used went"
    );
}

#[tokio::test]
async fn every_value_is_escaped() {
    let world = World::new(SessionLimits::default()).await;
    let officer = world.sign_in(&world.officer).await;
    // A draft whose comment tries to close the <pre> and run a script.
    let hostile_policy = format!("// </pre><script>alert(2)</script> \"quoted\"\n{GROUPS_2018}");
    let submitted = world.post(&officer, "/console/policies", &[("text", &hostile_policy)]).await;
    assert_eq!(submitted.status, StatusCode::SEE_OTHER, "{}", submitted.body);
    let hostile = world.hostile_app.to_string();
    for uri in [
        "/console/apps".to_string(),
        format!("/console/apps/{hostile}"),
        format!("/console/policies/{}", 2),
        "/console/members?member=bob".to_string(),
        "/console/overview".to_string(),
    ] {
        let page = world.get(&officer, &uri).await;
        assert_eq!(page.status, StatusCode::OK, "{uri}");
        assert!(!page.body.contains("<script>alert"), "{uri} carries a live script");
        assert!(!page.body.contains("<b>name</b>"), "{uri} carries live markup");
        assert!(!page.body.contains(QUOTED_DEVELOPER), "{uri} carries a raw quote");
        assert_no_inline_code(&uri, &page.body);
    }
    let apps = world.get(&officer, "/console/apps").await.body;
    assert!(apps.contains("&#60;script&#62;alert(1)&#60;/script&#62;"), "the app's name is shown, escaped");
    assert!(apps.contains("Dev &#34;Quoted&#34; O&#39;Brien &#38; Sons"), "{apps}");
    let policy = world.get(&officer, "/console/policies/2").await.body;
    assert!(policy.contains("alert(2)") && !policy.contains("</pre><script>"));
    // A reason typed into a form is shown back escaped, on the app's page and the remediation
    // page (the developer's notification).
    let scheduler = world.app.to_string();
    let hostile_reason = "<img src=x alt=4> </td></tr><tr><td>forged</td> \"quoted\" reason";
    let suspended = world
        .post(&officer, &format!("/console/apps/{scheduler}/suspend"), &[("reason", hostile_reason)])
        .await;
    assert_eq!(suspended.status, StatusCode::SEE_OTHER, "{}", suspended.body);
    for uri in [format!("/console/apps/{scheduler}"), "/console/remediation".to_string()] {
        let page = world.get(&officer, &uri).await.body;
        assert!(
            !page.contains("<img src=x") && !page.contains("<td>forged</td>"),
            "{uri} carries live markup from a reason"
        );
    }
    assert!(
        world.get(&officer, &format!("/console/apps/{scheduler}")).await.body.contains("&#60;img src=x"),
        "the reason is shown, escaped"
    );
    // A problem message quoting input is escaped too.
    let bad = world.get(&officer, "/console/members?member=%3Cscript%3E").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(!bad.body.contains("<script>"), "{}", bad.body);
}

#[tokio::test]
async fn the_two_person_rule_holds_in_the_console() {
    let world = World::new(SessionLimits::default()).await;
    let author = world.sign_in(&world.officer).await;
    let submitted = world.post(&author, "/console/policies", &[("text", GROUPS_2018)]).await;
    assert_eq!(submitted.location(), "/console/policies/2?done=submitted&n=2");
    let page = world.get(&author, "/console/policies/2").await.body;
    assert!(
        page.contains("id=\"approve-refused\"") && !page.contains("id=\"approve\""),
        "the author is not offered approval"
    );
    assert!(
        page.contains("id=\"diff\"") && page.contains("class=\"added\""),
        "the draft is shown as a diff against the active version"
    );
    assert!(
        page.contains("id=\"proof-standing\">missing<")
            && page.contains("No proofs recorded for this version.")
    );
    assert!(
        page.contains("id=\"no-prover\"") && !page.contains("id=\"waive\""),
        "the author may not waive either"
    );
    let refused = world.post(&author, "/console/policies/2/approve", &[]).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.body);
    assert!(refused.body.contains("cannot approve policy version 2"), "{}", refused.body);
    // Nor with a second privacy-officer key the author made for itself: the same person could
    // hold both, so the lineage rule refuses it as the API does.
    let minted = ok(world.service.create_operator_key(
        &ok(world.service.authenticate_operator(&world.officer)),
        "olga-too",
        OperatorRole::PrivacyOfficer,
        None,
    ));
    let sock_puppet = world.sign_in(&minted.key).await;
    let page = world.get(&sock_puppet, "/console/policies/2").await.body;
    assert!(!page.contains("id=\"approve\""), "a key of the author's lineage is not offered approval");
    let puppet = world.post(&sock_puppet, "/console/policies/2/approve", &[]).await;
    assert_eq!(puppet.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", puppet.body);
    assert!(ok(world.service.store().policy_approvals(2)).is_empty());
    // Activating before an approval is refused by the same rule the API applies.
    let operator = world.sign_in(&world.operator).await;
    assert!(world.get(&operator, "/console/policies/2").await.body.contains("id=\"activate-blocked\""));
    let early = world.post(&operator, "/console/policies/2/activate", &[("reason", "too soon")]).await;
    assert_eq!(early.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", early.body);
    let forged_waiver =
        world.post(&author, "/console/policies/2/waivers", &[("reason", "I wrote it, trust me")]).await;
    assert_eq!(forged_waiver.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", forged_waiver.body);
    // A second officer: no proofs, no prover here, so approval is refused until proofs pass or
    // are waived with a reason.
    let second = world.sign_in(&world.second_officer).await;
    let page = world.get(&second, "/console/policies/2").await.body;
    assert!(page.contains("id=\"approve\"") && page.contains("id=\"waive\""));
    let unproven = world.post(&second, "/console/policies/2/approve", &[]).await;
    assert_eq!(unproven.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", unproven.body);
    assert!(unproven.body.contains("has no proofs"), "{}", unproven.body);
    let terse = world.post(&second, "/console/policies/2/waivers", &[("reason", "ok")]).await;
    assert_eq!(terse.status, StatusCode::BAD_REQUEST, "a waiver needs a reason: {}", terse.body);
    let no_prover = world.post(&second, "/console/policies/2/proofs", &[]).await;
    assert_eq!(no_prover.status, StatusCode::SERVICE_UNAVAILABLE, "{}", no_prover.body);
    let waived = world
        .post(&second, "/console/policies/2/waivers", &[("reason", "reviewed by hand: the 2018 rules")])
        .await;
    assert_eq!(waived.location(), "/console/policies/2?done=waived&n=2", "{}", waived.body);
    let page = world.get(&second, "/console/policies/2").await.body;
    assert!(
        page.contains("id=\"proof-standing\">waived<") && page.contains("reviewed by hand: the 2018 rules")
    );
    // Then it approves; then the operator activates.
    let approved = world.post(&second, "/console/policies/2/approve", &[]).await;
    assert_eq!(approved.status, StatusCode::SEE_OTHER, "{}", approved.body);
    let preview = world.post(&second, "/console/policies/2/preview", &[("since", "30d")]).await;
    assert_eq!(preview.status, StatusCode::SEE_OTHER, "{}", preview.body);
    let activated =
        world.post(&operator, "/console/policies/2/activate", &[("reason", "April 2018 rules")]).await;
    assert_eq!(activated.status, StatusCode::SEE_OTHER, "{}", activated.body);
    assert_eq!(ok(world.service.store().active_policy()).map(|p| p.version), Some(2));
    let shown = world.get(&second, "/console/policies/2?done=activated&n=2").await.body;
    assert!(
        shown.contains("Policy version 2 is now the active policy.") && shown.contains("April 2018 rules")
    );
    assert!(shown.contains("disclosures in the window would have been denied"), "the kept preview is shown");
    // What the API lists is what the console did.
    let listed = world
        .raw(
            Method::GET,
            "/platform/v1/policies",
            &[("authorization", &format!("Bearer {}", world.operator))],
            "",
        )
        .await;
    let listed: Value = serde_json::from_str(&listed.body).unwrap_or_default();
    assert_eq!(listed[1]["approvals"][0]["counts"], json!(true));
    assert_eq!(listed[1]["activations"][0]["reason"], json!("April 2018 rules"));
}

#[tokio::test]
async fn a_banned_app_stays_banned_and_its_developer_is_told_why() {
    let world = World::new(SessionLimits::default()).await;
    let officer = world.sign_in(&world.officer).await;
    let app = world.app.to_string();
    let missing = world.post(&officer, &format!("/console/apps/{app}/revoke"), &[("reason", "  ")]).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST, "a reason is required");
    let suspended = world
        .post(&officer, &format!("/console/apps/{app}/suspend"), &[("reason", "data use \"under review\"")])
        .await;
    assert_eq!(suspended.status, StatusCode::SEE_OTHER, "{}", suspended.body);
    let revoked = world
        .post(
            &officer,
            &format!("/console/apps/{app}/revoke"),
            &[("reason", "kept reading after the change")],
        )
        .await;
    assert_eq!(
        (revoked.status, revoked.location()),
        (StatusCode::SEE_OTHER, format!("/console/apps/{app}?done=revoked&n=1").as_str())
    );
    let page = world.get(&officer, revoked.location()).await.body;
    assert!(page.contains("id=\"app-status\">banned<") && page.contains("id=\"banned-note\""));
    assert!(
        !page.contains("id=\"suspend\"")
            && !page.contains("id=\"reinstate\"")
            && !page.contains("id=\"revoke\"")
    );
    assert!(
        page.contains("kept reading after the change") && page.contains("data use &#34;under review&#34;"),
        "{page}"
    );
    for action in ["reinstate", "suspend"] {
        let reply =
            world.post(&officer, &format!("/console/apps/{app}/{action}"), &[("reason", "try")]).await;
        assert_eq!(reply.status, StatusCode::CONFLICT, "{action}: {}", reply.body);
        assert!(reply.body.contains("banned app stays banned"));
    }
    assert_eq!(
        ok(world.service.store().app(&world.app)).map(|a| a.status),
        Some(consentry_types::AppStatus::Banned)
    );
    // The token died with it; the developer was told, with the reason, as valid JSON.
    let read = world
        .raw(Method::GET, "/v1/groups/hikers", &[("authorization", &format!("Bearer {}", world.token))], "")
        .await;
    assert_eq!(read.status, StatusCode::UNAUTHORIZED);
    let told = ok(world.service.store().notifications(&ok(DeveloperId::parse("acme"))));
    let revoked_event =
        told.iter().find(|n| n.event == "access.revoked").map(|n| n.payload.clone()).unwrap_or_default();
    let payload: Value = serde_json::from_str(&revoked_event).unwrap_or_default();
    assert_eq!(payload["reason"], json!("kept reading after the change"), "{revoked_event}");
    let suspended_event =
        told.iter().find(|n| n.event == "app.suspended").map(|n| n.payload.clone()).unwrap_or_default();
    assert_eq!(
        serde_json::from_str::<Value>(&suspended_event).unwrap_or_default()["reason"],
        json!("data use \"under review\"")
    );
}

#[tokio::test]
async fn a_dead_delivery_is_retried_once_from_the_console() {
    let world = World::new(SessionLimits::default()).await;
    let store = world.service.store().clone();
    let developer = ok(DeveloperId::parse("acme"));
    let now = world.service.now();
    let due = ok(store.due_notifications(now, 100));
    let dead = due.first().map(|n| n.id).unwrap_or_default();
    assert!(store.retry_notification(dead, now).is_err(), "a pending one is not retried");
    // Its last allowed attempt failed.
    ok(store.record_delivery(dead, DeliveryStatus::Dead, now, Some("http_5xx 503")));
    let operator = world.sign_in(&world.operator).await;
    let page = world.get(&operator, "/console/remediation").await.body;
    assert!(page.contains(&format!("id=\"retry-{dead}\"")), "a retry button for the dead delivery");
    assert!(page.contains("http_5xx 503"));
    let retried = world.post(&operator, &format!("/console/deliveries/{dead}/retry"), &[]).await;
    assert_eq!(
        (retried.status, retried.location()),
        (StatusCode::SEE_OTHER, format!("/console/remediation?done=retried&n={dead}").as_str())
    );
    let after = ok(store.notifications(&developer)).into_iter().find(|n| n.id == dead);
    assert_eq!(
        after.as_ref().map(|n| (n.status, n.attempts)),
        Some((DeliveryStatus::Pending, 1)),
        "pending again, attempts kept"
    );
    assert!(ok(store.due_notifications(world.service.now(), 100)).iter().any(|n| n.id == dead), "due now");
    let page = world.get(&operator, "/console/remediation?done=retried&n=1").await.body;
    assert!(
        !page.contains(&format!("id=\"retry-{dead}\"")) && page.contains(&format!("id=\"delivery-{dead}\""))
    );
    let twice = world.post(&operator, &format!("/console/deliveries/{dead}/retry"), &[]).await;
    assert_eq!(twice.status, StatusCode::CONFLICT, "only a dead delivery is retried: {}", twice.body);
}

/// The console's audit is the platform API's audit: same numbers, same CSV and manifests as
/// the report the API returns.
#[tokio::test]
async fn an_audit_from_the_console_equals_the_platform_api_audit() {
    let world = World::new(SessionLimits::default()).await;
    let auditor = world.sign_in(&world.auditor).await;
    let started = world
        .post(
            &auditor,
            "/console/audits",
            &[
                ("policy", "draft"),
                ("draft", GROUPS_2018),
                ("from", "2019-12-01"),
                ("to", "2020-02-01"),
                ("since", "60d"),
            ],
        )
        .await;
    assert_eq!(started.status, StatusCode::SEE_OTHER, "{}", started.body);
    let job = started.location().to_string();
    let page = world.finished(&auditor, &job).await;
    assert_eq!(page.status, StatusCode::OK);
    let api = world
        .raw(
            Method::POST,
            "/platform/v1/audits",
            &[("authorization", &format!("Bearer {}", world.auditor)), ("content-type", "application/json")],
            &json!({"policy_text": GROUPS_2018, "from": "2019-12-01", "to": "2020-02-01"}).to_string(),
        )
        .await;
    let api: Value = serde_json::from_str(&api.body).unwrap_or_default();
    let shown = |id: &str| {
        page.body
            .split(&format!("id=\"{id}\">"))
            .nth(1)
            .and_then(|r| r.split('<').next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    for (id, key) in [
        ("developers-could", "developers_could"),
        ("developers-did", "developers_did"),
        ("could-but-did-not", "developers_could_but_did_not"),
        ("violating-disclosures", "violating_disclosures"),
        ("members-affected", "members_affected"),
        ("records-checked", "records_checked"),
    ] {
        assert_eq!(shown(id), api["summary"][key].as_u64(), "{id}");
    }
    assert_eq!(
        api["summary"]["violating_disclosures"],
        json!(4),
        "ann's and cat's name and picture were read without opt-in: {api}"
    );
    assert!(page.body.contains("id=\"did\"") && page.body.contains("id=\"violations-per-day\""));
    let csv = world.get(&auditor, &format!("{job}/report.csv")).await;
    assert_eq!(
        csv.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()),
        Some("text/csv; charset=utf-8")
    );
    assert!(
        csv.body.starts_with("answer,app,developer")
            && csv.body.contains(&format!("\ndid,{},acme,", world.app)),
        "{}",
        csv.body
    );
    let manifest = world.get(&auditor, &format!("{job}/manifests/acme.json")).await;
    let manifest: Value = serde_json::from_str(&manifest.body).unwrap_or_default();
    assert_eq!(manifest["apps"], api["deletion_manifests"]["acme"], "the manifest is the API's");
    let html = world.get(&auditor, &format!("{job}/report.html")).await;
    assert!(html.body.contains("<svg") && html.headers.get(header::CONTENT_DISPOSITION).is_some());
    assert_eq!(
        world.get(&auditor, &format!("{job}/manifests/nobody.json")).await.status,
        StatusCode::NOT_FOUND
    );
    // An auditor may not open cases; a privacy officer opens one for the developer that did.
    assert!(!page.body.contains("id=\"open-cases\""));
    assert_eq!(
        world.post(&auditor, &format!("{job}/cases"), &[("deadline_days", "30")]).await.status,
        StatusCode::FORBIDDEN
    );
    let officer = world.sign_in(&world.officer).await;
    let opened = world.post(&officer, &format!("{job}/cases"), &[("deadline_days", "30")]).await;
    assert_eq!(
        (opened.status, opened.location()),
        (StatusCode::SEE_OTHER, "/console/remediation?done=cases-opened&n=1")
    );
    let cases = ok(world.service.store().cases());
    assert_eq!(cases.len(), 1);
    let kept: Value = serde_json::from_str(&cases.first().map(|c| c.manifest.clone()).unwrap_or_default())
        .unwrap_or_default();
    assert_eq!(kept, api["deletion_manifests"]["acme"]);
    let again = world.post(&officer, &format!("{job}/cases"), &[("deadline_days", "30")]).await;
    assert_eq!(
        again.location(),
        "/console/remediation?done=cases-opened&n=0",
        "a developer with an open case is skipped"
    );
    // A draft that does not validate is refused at once, with the reason.
    let bad = world
        .post(
            &auditor,
            "/console/audits",
            &[
                ("policy", "draft"),
                ("draft", "permit (principal, action == Action::\"member.shoe_size\", resource);"),
                ("since", "60d"),
            ],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
}

#[tokio::test]
async fn a_member_lookup_shows_what_the_ledger_says_each_app_received() {
    let world = World::new(SessionLimits::default()).await;
    let auditor = world.sign_in(&world.auditor).await;
    let page = world.get(&auditor, "/console/members?member=bob").await;
    assert_eq!(page.status, StatusCode::OK);
    let api = world
        .raw(
            Method::GET,
            "/platform/v1/members/bob/disclosures",
            &[("authorization", &format!("Bearer {}", world.auditor))],
            "",
        )
        .await;
    let api: Value = serde_json::from_str(&api.body).unwrap_or_default();
    let first = &api["data"][0];
    assert!(first["seq"].as_u64().is_some(), "{api}");
    assert!(
        page.body.contains(first["app"].as_str().unwrap_or("?"))
            && page.body.contains("member.name, member.picture")
    );
    assert!(
        page.body.contains(&format!("<td class=\"n\">{}</td>", first["policy_version"])),
        "under which version"
    );
    let nobody = world.get(&auditor, "/console/members?member=zed").await;
    assert!(nobody.body.contains("id=\"nothing-disclosed\"") && nobody.body.contains("(no such member now)"));
}

#[tokio::test]
async fn the_overview_counts_what_the_store_and_ledger_hold_and_verifies_the_ledger() {
    let world = World::new(SessionLimits::default()).await;
    let session = world.sign_in(&world.auditor).await;
    let page = world.get(&session, "/console/overview").await.body;
    let shown = |id: &str| {
        page.split(&format!("id=\"{id}\">"))
            .nth(1)
            .and_then(|r| r.split('<').next())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(shown("apps-active"), "2");
    assert_eq!(shown("installations"), "1");
    assert_eq!(shown("opt-ins"), "1");
    assert_eq!(shown("ledger-records"), "1");
    assert!(
        page.contains("id=\"by-field\"") && page.contains("member.name: 3"),
        "ann, bob and cat's names were sent on one day"
    );
    assert!(page.contains("id=\"last-verification\">not verified"));
    let started = world.post(&session, "/console/ledger/verify", &[]).await;
    assert_eq!(started.status, StatusCode::SEE_OTHER, "{}", started.body);
    let done = world.finished(&session, started.location()).await;
    assert!(done.body.contains("id=\"outcome\" class=\"ok\">OK: 1 records"), "{}", done.body);
    let page = world.get(&session, "/console/overview").await.body;
    assert!(page.contains("<span class=\"ok\">OK: 1 records"), "the overview shows the last verification");
}

/// Huge and malformed forms get a clear error page with the console's headers, never a 5xx,
/// and change nothing.
#[tokio::test]
async fn a_huge_or_malformed_form_gets_a_clear_error_page_and_changes_nothing() {
    let world = World::new(SessionLimits::default()).await;
    let draft = ok(world
        .service
        .submit_policy(GROUPS_2018, &ok(world.service.authenticate_operator(&world.operator))));
    let officer = world.sign_in(&world.officer).await;
    let approve = format!("/console/policies/{draft}/approve");
    let csrf = format!("csrf={}", officer.csrf);
    let huge_draft = format!("{csrf}&text={}", "a".repeat(consentry_api::console::CONSOLE_FORM_LIMIT + 1));
    let huge_small = format!("{csrf}&reason={}", "b".repeat(2 * 1024 * 1024));
    let cases: Vec<(&str, String, StatusCode)> = vec![
        ("/console/policies", huge_draft, StatusCode::PAYLOAD_TOO_LARGE),
        (&approve, huge_small, StatusCode::PAYLOAD_TOO_LARGE),
        (&approve, format!("{csrf}&{csrf}"), StatusCode::BAD_REQUEST),
        (&approve, format!("{csrf}&%%%&&&==="), StatusCode::BAD_REQUEST),
        (&approve, format!("{csrf}&\u{0}=\u{0}"), StatusCode::BAD_REQUEST),
        ("/console/policies", format!("{csrf}&text=%FF%FE%00"), StatusCode::UNPROCESSABLE_ENTITY),
        (
            "/console/audits",
            format!("{csrf}&policy=version&version=99999999999999999999&since=1d"),
            StatusCode::BAD_REQUEST,
        ),
        ("/console/audits", format!("{csrf}&policy=active&from=not-a-date"), StatusCode::BAD_REQUEST),
        ("/console/apps/zzz/explode", format!("{csrf}&reason=x"), StatusCode::NOT_FOUND),
        ("/console/overview", csrf.clone(), StatusCode::METHOD_NOT_ALLOWED),
        ("/console/policies/not-a-number/approve", csrf.clone(), StatusCode::BAD_REQUEST),
    ];
    for (uri, body, expected) in &cases {
        let reply = world.post_raw(&officer, uri, body, &[]).await;
        let shown: String = body.chars().take(60).collect();
        assert_eq!(
            reply.status,
            *expected,
            "{uri} {shown}: {}",
            reply.body.chars().take(300).collect::<String>()
        );
        assert!(
            reply
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.starts_with("text/html")),
            "{uri} {shown}: an error page, not {:?}",
            reply.headers.get(header::CONTENT_TYPE)
        );
        assert_eq!(
            reply.headers.get(header::CONTENT_SECURITY_POLICY).and_then(|v| v.to_str().ok()),
            Some(CONTENT_SECURITY_POLICY),
            "{uri}"
        );
    }
    assert!(ok(world.service.store().policy_approvals(draft)).is_empty(), "nothing was approved");
    assert_eq!(ok(world.service.store().policy_versions()).len(), 2, "no draft was submitted");
    assert_eq!(
        world.get(&officer, "/console/overview").await.status,
        StatusCode::OK,
        "the session still works"
    );
}

/// Several nodes: the console reads the ledger as all its streams. Another node's records show
/// in a member lookup beside this node's, the overview gives each stream its records and last
/// checkpoint, and a verification verifies every stream.
#[tokio::test]
async fn the_console_reads_every_nodes_stream_of_the_ledger() {
    let world = World::new_with(SessionLimits::default(), Some("node-a")).await;
    // Another node writes its own stream under the same root: two responses that disclosed
    // bob's name, one an hour later than the other, and a checkpoint.
    let other =
        ok(Ledger::open_stream(&world.ledger_dir, &ok(NodeId::parse("node-b")), LedgerOptions::default()));
    let bob = ok(MemberId::parse("bob"));
    for (i, minutes) in [(0u64, 10i64), (1, 70)] {
        let record = consentry_types::DisclosureRecord {
            at: world.service.now().plus_secs(minutes * 60 - 7200),
            request_id: format!("{:016x}", 0xb0b0 + i),
            app: world.app.clone(),
            developer: ok(DeveloperId::parse("acme")),
            group: ok(GroupId::parse("hikers")),
            token_hash: format!("{i:064x}"),
            policy_version: 1,
            route: "GET /v1/groups/{id}/members".into(),
            disclosures: vec![consentry_types::Disclosure {
                subject: consentry_types::Subject::Member(bob.clone()),
                fields: consentry_types::FieldSet::from_bits(consentry_types::Field::MemberName.bit()),
            }],
        };
        ok(other.append(&record));
    }
    let checkpoint = ok(other.checkpoint());
    drop(other);
    let auditor = world.sign_in(&world.auditor).await;
    let lookup = world.get(&auditor, "/console/members?member=bob").await;
    assert_eq!(lookup.status, StatusCode::OK, "{}", lookup.body);
    let rows = |node: &str| lookup.body.matches(&format!("<tr><td>{node}</td>")).count();
    assert_eq!((rows("node-a"), rows("node-b")), (1, 2), "bob's responses from both nodes: {}", lookup.body);
    // Merged by instant: this node's read (10 minutes after the start) sits between node-b's.
    let (b0, a0) = (lookup.body.find("<tr><td>node-b</td>"), lookup.body.find("<tr><td>node-a</td>"));
    assert!(b0 < a0 && a0 < lookup.body.rfind("<tr><td>node-b</td>"), "oldest first across streams");
    // The platform API says the same.
    let api = world
        .raw(
            Method::GET,
            "/platform/v1/members/bob/disclosures",
            &[(header::AUTHORIZATION.as_str(), &format!("Bearer {}", world.auditor))],
            "",
        )
        .await;
    let api: Value = serde_json::from_str(&api.body).unwrap_or_default();
    let nodes: Vec<&str> = api["data"]
        .as_array()
        .map(|d| d.iter().filter_map(|r| r["node"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(nodes, ["node-b", "node-a", "node-b"]);
    // The overview: one row per stream, each with its records and last checkpoint.
    let overview = world.get(&auditor, "/console/overview").await.body;
    let streams = overview.split("id=\"ledger-streams\"").nth(1).unwrap_or_default();
    let row = |node: &str| {
        streams
            .split(&format!("<tr><td>{node}</td>"))
            .nth(1)
            .and_then(|r| r.split("</tr>").next())
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        row("node-a").contains("<td class=\"n\">1</td>") && row("node-a").contains("none yet"),
        "{}",
        row("node-a")
    );
    assert!(row("node-b").contains("<td class=\"n\">2</td>"), "{}", row("node-b"));
    assert!(row("node-b").contains(&format!("record {}", checkpoint.seq)), "{}", row("node-b"));
    assert!(overview.contains("id=\"ledger-records\">3<"), "records of every stream counted");
    // A verification verifies both streams.
    let started = world.post(&auditor, "/console/ledger/verify", &[]).await;
    assert_eq!(started.status, StatusCode::SEE_OTHER, "{}", started.body);
    let verified =
        world.finished(&auditor, started.location().split('?').next().unwrap_or_default()).await.body;
    assert!(verified.contains("OK: 3 records in 2 streams"), "{verified}");
    assert!(
        verified.contains("node-a</span>: 1 records") && verified.contains("node-b</span>: 2 records"),
        "{verified}"
    );
}

/// A byte flipped in the ledger on disk: the overview still renders, its ledger health says
/// the ledger could not be read, and a verification from the console reports the damage.
#[tokio::test]
async fn a_damaged_ledger_is_shown_on_the_overview_not_hidden_behind_an_error() {
    let world = World::new(SessionLimits::default()).await;
    let segment = ok(std::fs::read_dir(&world.ledger_dir))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .unwrap_or_else(|| unreachable!("no segment"));
    let mut bytes = ok(std::fs::read(&segment));
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    ok(std::fs::write(&segment, &bytes));
    let auditor = world.sign_in(&world.auditor).await;
    let overview = world.get(&auditor, "/console/overview").await;
    assert_eq!(overview.status, StatusCode::OK, "{}", overview.body);
    assert!(overview.body.contains("id=\"ledger-unreadable\""), "{}", overview.body);
    assert!(overview.body.contains("id=\"platform-heading\"") || overview.body.contains("installations"));
    let started = world.post(&auditor, "/console/ledger/verify", &[]).await;
    assert_eq!(started.status, StatusCode::SEE_OTHER, "{}", started.body);
    let verified =
        world.finished(&auditor, started.location().split('?').next().unwrap_or_default()).await.body;
    assert!(verified.contains("FAILED"), "{verified}");
}
