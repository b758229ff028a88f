//! The serving path decides at every request: each write takes effect for the very next one.

use std::sync::Arc;

use consentry_service::{
    parse_fields, AppSession, OperatorSession, PageRequest, ProofStanding, ServerKey, Service, ServiceConfig,
    ServiceError, SimulatedClock, Subject,
};
use consentry_store::{AppCredentials, FactHistory, Facts, OperatorKey, Store, StoreResult, TokenRecord};
use consentry_store_sqlite::SqliteStore;
use consentry_types::{
    App, AppId, AppStatus, Developer, DeveloperId, Field, Group, GroupId, Installation, Instant, Member,
    MemberId, OperatorRole, PolicyActivation, PolicyVersion, Post, PostId, ResourceKind, Role, Scope,
};

const LEGACY: &str = include_str!("../../../policies/legacy-2017.cedar");
const GROUPS_2018: &str = include_str!("../../../policies/groups-2018.cedar");

fn member(id: &str) -> MemberId {
    MemberId::parse(id).unwrap_or_else(|e| unreachable!("{e}"))
}
fn group() -> GroupId {
    GroupId::parse("hikers").unwrap_or_else(|e| unreachable!("{e}"))
}

struct World {
    service: Service,
    clock: Arc<SimulatedClock>,
    app: consentry_service::RegisteredApp,
    session: AppSession,
    /// An operator key and an independent privacy-officer key, both made on the server.
    ops: OperatorSession,
    officer: OperatorSession,
}

/// A key made on the server (as `consentry keys create` does), signed in with.
fn server_key(service: &Service, name: &str, role: OperatorRole) -> (String, OperatorSession) {
    let key = service
        .create_key_on_server("test", "tester", name, role, None)
        .unwrap_or_else(|e| unreachable!("{e}"));
    let session = service.authenticate_operator(&key.key).unwrap_or_else(|e| unreachable!("{e}"));
    (key.key, session)
}

/// Submits a policy and keeps passing proofs with it (as `POST …/proofs` does for a draft
/// within the invariants), so that tests of other rules can approve it.
fn proven_version(service: &Service, text: &str, author: &OperatorSession) -> u32 {
    let version = service.submit_policy(text, author).unwrap_or_else(|e| unreachable!("{e}"));
    service.record_proof(version, author, true, "{}").unwrap_or_else(|e| unreachable!("{e}"));
    version
}

/// A key made over the platform API with `maker`'s key, signed in with.
fn made_with(service: &Service, maker: &OperatorSession, name: &str, role: OperatorRole) -> OperatorSession {
    let key = service.create_operator_key(maker, name, role, None).unwrap_or_else(|e| unreachable!("{e}"));
    service.authenticate_operator(&key.key).unwrap_or_else(|e| unreachable!("{e}"))
}

/// A group "hikers" with admin ann and members bob, cat; one app installed by ann;
/// groups-2018 active; bob consented to the app.
fn world() -> World {
    world_on(Arc::new(SqliteStore::in_memory().unwrap_or_else(|e| unreachable!("{e}"))))
}

fn world_on(store: Arc<dyn Store>) -> World {
    let clock =
        Arc::new(SimulatedClock::starting_at(Instant::parse("2019-01-01T00:00:00Z").unwrap_or(Instant::MIN)));
    let service = Service::new(store, clock.clone(), ServerKey::generate(), ServiceConfig::default());
    let ok = |r: Result<(), ServiceError>| r.unwrap_or_else(|e| unreachable!("{e}"));
    ok(service.put_group(&group(), "Hikers"));
    for (id, role) in [("ann", Role::Admin), ("bob", Role::Member), ("cat", Role::Member)] {
        ok(service.put_member(&member(id), &format!("{id} name"), &format!("https://pics.example/{id}.jpg")));
        ok(service.set_membership(&group(), &member(id), Some(role)));
    }
    ok(service.put_post(
        &group(),
        &PostId::parse("p1").unwrap_or_else(|e| unreachable!("{e}")),
        &member("bob"),
        "hello",
    ));
    ok(service.put_post(
        &group(),
        &PostId::parse("p2").unwrap_or_else(|e| unreachable!("{e}")),
        &member("cat"),
        "hi",
    ));
    let developer = DeveloperId::parse("acme").unwrap_or_else(|e| unreachable!("{e}"));
    ok(service.put_developer(&developer, "Acme", "privacy@acme.example", "https://acme.example/hook"));
    let app = service
        .register_app(&developer, "Acme Scheduler", "social_media_management")
        .unwrap_or_else(|e| unreachable!("{e}"));
    ok(service.install_app(&app.app.id, &group(), &member("ann")));
    ok(service.set_consent(&member("bob"), &app.app.id, &[Scope::Profile]));
    let (_, ops) = server_key(&service, "policy-team", OperatorRole::Operator);
    let (_, officer) = server_key(&service, "privacy-officer", OperatorRole::PrivacyOfficer);
    let version = proven_version(&service, GROUPS_2018, &ops);
    service.approve_policy(version, &officer).unwrap_or_else(|e| unreachable!("{e}"));
    service.activate_policy(version, &officer, "the 2018 rules").unwrap_or_else(|e| unreachable!("{e}"));
    let token =
        service.issue_token(&app.app.client_id, &app.client_secret).unwrap_or_else(|e| unreachable!("{e}"));
    let session = service.authenticate_app(&token.access_token).unwrap_or_else(|e| unreachable!("{e}"));
    clock.advance_secs(1);
    World { service, clock, app, session, ops, officer }
}

fn member_fields() -> consentry_types::FieldSet {
    parse_fields(ResourceKind::Member, None).unwrap_or_default()
}

fn visible_names(world: &World) -> Vec<String> {
    let served = world
        .service
        .read_members(&world.session, &group(), member_fields(), &PageRequest::default())
        .unwrap_or_else(|e| unreachable!("{e}"));
    served.body.items.into_iter().filter_map(|m| m.name).collect()
}

#[test]
fn only_consenting_members_are_listed_under_groups_2018() {
    let w = world();
    assert_eq!(visible_names(&w), ["bob name"]);
    let group_view = w.service.read_group(
        &w.session,
        &group(),
        parse_fields(ResourceKind::Group, None).unwrap_or_default(),
    );
    let group_view = group_view.unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(group_view.body.member_count, Some(3), "the count is the only trace of the others");
}

#[test]
fn revoked_consent_hides_name_on_next_request() {
    let w = world();
    assert_eq!(visible_names(&w), ["bob name"]);
    assert_eq!(w.service.set_consent(&member("bob"), &w.app.app.id, &[]), Ok(()));
    assert!(visible_names(&w).is_empty());
}

/// Also what a stale guess of the kinds of member shown must not change: each page below is
/// read with the kinds the page before it showed, under the other policy.
#[test]
fn activating_legacy_policy_shows_everyone_on_next_request_and_back() {
    let w = world();
    assert_eq!(visible_names(&w), ["bob name"]);
    let legacy = proven_version(&w.service, LEGACY, &w.ops);
    assert!(w.service.approve_policy(legacy, &w.officer).is_ok());
    assert!(w.service.activate_policy(legacy, &w.ops, "rollback").is_ok());
    assert_eq!(visible_names(&w), ["ann name", "bob name", "cat name"]);
    w.clock.advance_secs(1);
    assert!(w.service.activate_policy(1, &w.ops, "forward again").is_ok());
    assert_eq!(visible_names(&w), ["bob name"]);
    let served = w
        .service
        .read_members(&w.session, &group(), member_fields(), &PageRequest::default())
        .unwrap_or_else(|e| unreachable!("{e}"));
    let disclosed: Vec<Subject> = served.disclosures.iter().map(|d| d.subject.clone()).collect();
    assert_eq!(disclosed, [Subject::Member(member("bob"))], "only bob is recorded as disclosed");
}

#[test]
fn removed_installation_answers_like_a_missing_group() {
    let w = world();
    assert_eq!(w.service.uninstall_app(&w.app.app.id, &group()), Ok(()));
    let fields = parse_fields(ResourceKind::Group, None).unwrap_or_default();
    let removed = w.service.read_group(&w.session, &group(), fields).err();
    let missing = w
        .service
        .read_group(&w.session, &GroupId::parse("nope").unwrap_or_else(|e| unreachable!("{e}")), fields)
        .err();
    assert!(matches!(removed, Some(ServiceError::NotFound(_))), "{removed:?}");
    assert_eq!(
        removed.map(|e| e.to_string().replace("hikers", "X")),
        missing.map(|e| e.to_string().replace("nope", "X"))
    );
}

#[test]
fn suspended_app_is_refused_on_next_request() {
    let w = world();
    assert_eq!(w.service.set_app_status(&w.app.app.id, AppStatus::Suspended), Ok(()));
    let token_check = w.service.authenticate_app("cst_anything");
    assert!(matches!(token_check, Err(ServiceError::Unauthenticated(_))));
    let again = w.service.issue_token(&w.app.app.client_id, &w.app.client_secret);
    assert!(matches!(again, Err(ServiceError::Forbidden(_))), "{again:?}");
    // A session obtained before the suspension is refused at its next request: the serving
    // path re-checks the app's status, whatever the policy would say.
    let refused = w.service.read_members(&w.session, &group(), member_fields(), &PageRequest::default());
    assert!(
        matches!(&refused, Err(ServiceError::Unauthenticated(m)) if m == "the app is suspended"),
        "{refused:?}"
    );
    let posts = parse_fields(ResourceKind::Post, None).unwrap_or_default();
    let refused = w.service.read_posts(&w.session, &group(), posts, &PageRequest::default());
    assert!(matches!(refused, Err(ServiceError::Unauthenticated(_))));
}

#[test]
fn revoked_and_expired_tokens_stop_working() {
    let w = world();
    let token = w
        .service
        .issue_token(&w.app.app.client_id, &w.app.client_secret)
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert!(w.service.authenticate_app(&token.access_token).is_ok());
    assert_eq!(w.service.revoke_token(&w.app.app.id, &token.access_token), Ok(()));
    assert!(
        matches!(w.service.authenticate_app(&token.access_token), Err(ServiceError::Unauthenticated(m)) if m.contains("revoked"))
    );
    let token = w
        .service
        .issue_token(&w.app.app.client_id, &w.app.client_secret)
        .unwrap_or_else(|e| unreachable!("{e}"));
    w.clock.advance_secs(3600);
    assert!(
        matches!(w.service.authenticate_app(&token.access_token), Err(ServiceError::Unauthenticated(m)) if m.contains("expired"))
    );
    assert!(w.service.issue_token(&w.app.app.client_id, "css_wrong").is_err());
}

/// A token this node has seen is not looked up again before the page snapshot
/// (`app_of_seen_token`); the snapshot and the release must then refuse it exactly as a full
/// check would, on every Groups route, the moment it is revoked, its app suspended or it
/// expires.
#[test]
fn a_token_seen_before_is_refused_by_the_snapshot_once_revoked_suspended_or_expired() {
    let w = world();
    let issue = || {
        w.service
            .issue_token(&w.app.app.client_id, &w.app.client_secret)
            .unwrap_or_else(|e| unreachable!("{e}"))
            .access_token
    };
    let posts = parse_fields(ResourceKind::Post, None).unwrap_or_default();
    let group_fields = parse_fields(ResourceKind::Group, None).unwrap_or_default();
    let every_route = |session: &AppSession| -> Vec<Option<String>> {
        let refused = |e: ServiceError| match e {
            ServiceError::Unauthenticated(why) => Some(why),
            other => Some(format!("not a 401: {other}")),
        };
        vec![
            w.service.read_group(session, &group(), group_fields).err().and_then(refused),
            w.service.read_posts(session, &group(), posts, &PageRequest::default()).err().and_then(refused),
            w.service
                .read_members(session, &group(), member_fields(), &PageRequest::default())
                .err()
                .and_then(refused),
        ]
    };
    let seen = |token: &str| match w.service.app_of_seen_token(token) {
        Some(Ok(session)) => session,
        other => unreachable!("the node issued this token, so it has seen it: {other:?}"),
    };

    // Revoked after it was seen: still identified, refused by the snapshot.
    let token = issue();
    let session = seen(&token);
    assert_eq!(session.app, w.app.app.id);
    assert_eq!(every_route(&session), vec![None, None, None], "a good token is served");
    assert_eq!(w.service.revoke_token(&w.app.app.id, &token), Ok(()));
    let revoked = Some("the access token was revoked".to_string());
    assert_eq!(every_route(&seen(&token)), vec![revoked.clone(), revoked.clone(), revoked]);
    // Refused once by a snapshot, the token is forgotten: its next use is checked in full, and
    // refused, before any page is read.
    assert!(w.service.app_of_seen_token(&token).is_none());
    assert!(
        matches!(w.service.authenticate_app(&token), Err(ServiceError::Unauthenticated(m)) if m.contains("revoked"))
    );

    // The app suspended after the token was seen.
    let token = issue();
    let _ = seen(&token);
    assert_eq!(w.service.set_app_status(&w.app.app.id, AppStatus::Suspended), Ok(()));
    let suspended = Some("the app is suspended".to_string());
    assert_eq!(every_route(&seen(&token)), vec![suspended.clone(), suspended.clone(), suspended]);
    assert!(w.service.app_of_seen_token(&token).is_none(), "forgotten once refused");
    assert_eq!(w.service.set_app_status(&w.app.app.id, AppStatus::Active), Ok(()));

    // Expired: refused before the snapshot, and by the release for a session made just before.
    let token = issue();
    let session = seen(&token);
    w.clock.advance_secs(3600);
    assert!(
        matches!(w.service.app_of_seen_token(&token), Some(Err(ServiceError::Unauthenticated(m))) if m.contains("expired"))
    );
    let expired = Some("the access token expired".to_string());
    assert_eq!(every_route(&session), vec![expired.clone(), expired.clone(), expired]);

    // Unseen (e.g. issued by another node) or malformed: the caller checks it in full.
    assert!(w.service.app_of_seen_token("cst_never_issued_here").is_none());
    assert!(matches!(w.service.app_of_seen_token("nope"), Some(Err(ServiceError::Unauthenticated(_)))));
    let other_node = Service::new(
        w.service.store().clone(),
        w.clock.clone(),
        ServerKey::generate(),
        ServiceConfig::default(),
    );
    let token = issue();
    assert!(other_node.app_of_seen_token(&token).is_none(), "another node has not seen it");
    assert_eq!(other_node.authenticate_app(&token).map(|s| s.app), Ok(w.app.app.id.clone()));
    assert!(other_node.app_of_seen_token(&token).is_some_and(|s| s.is_ok()), "and now it has");
}

#[test]
fn post_authors_appear_only_when_they_consented() {
    let w = world();
    let fields = parse_fields(ResourceKind::Post, None).unwrap_or_default();
    let served = w
        .service
        .read_posts(&w.session, &group(), fields, &PageRequest::default())
        .unwrap_or_else(|e| unreachable!("{e}"));
    let authors: Vec<Option<String>> =
        served.body.items.iter().map(|p| p.author.as_ref().map(|a| a.name.clone())).collect();
    assert_eq!(authors, [Some("bob name".to_string()), None]);
    assert!(served.body.items.iter().all(|p| p.content.is_some()));
    // Disclosures name the subjects and fields, and nothing for cat's author field.
    let cat = served.disclosures.iter().find(|d| d.subject == Subject::Member(member("cat")));
    assert!(
        cat.is_some_and(|d| !d.fields.contains(Field::PostAuthor) && d.fields.contains(Field::PostContent))
    );
}

#[test]
fn installer_must_be_an_admin() {
    let w = world();
    let second = w
        .service
        .register_app(&w.app.app.developer, "Other", "video_streaming")
        .unwrap_or_else(|e| unreachable!("{e}"));
    let refused = w.service.install_app(&second.app.id, &group(), &member("bob"));
    assert!(matches!(refused, Err(ServiceError::Rejected(m)) if m.contains("not an admin")));
}

#[test]
fn members_pages_resume_and_never_repeat() {
    let w = world();
    let legacy = proven_version(&w.service, LEGACY, &w.ops);
    assert!(w.service.approve_policy(legacy, &w.officer).is_ok());
    assert!(w.service.activate_policy(legacy, &w.ops, "all visible").is_ok());
    for i in 0..7 {
        let id = member(&format!("z{i}"));
        assert_eq!(w.service.put_member(&id, &format!("z{i}"), "https://pics.example/z.jpg"), Ok(()));
        assert_eq!(w.service.set_membership(&group(), &id, Some(Role::Member)), Ok(()));
    }
    let mut seen = Vec::new();
    let mut page = PageRequest { after: None, limit: Some(4) };
    loop {
        let served = w
            .service
            .read_members(&w.session, &group(), member_fields(), &page)
            .unwrap_or_else(|e| unreachable!("{e}"));
        seen.extend(served.body.items.into_iter().map(|m| m.id));
        match served.body.next {
            Some(next) => page.after = Some(next),
            None => break,
        }
    }
    let unique: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!((seen.len(), unique.len()), (10, 10));
    let bad = w.service.read_members(
        &w.session,
        &group(),
        member_fields(),
        &PageRequest { after: Some("junk".into()), limit: None },
    );
    assert!(matches!(bad, Err(ServiceError::InvalidInput(_))));
    let too_big = w.service.read_members(
        &w.session,
        &group(),
        member_fields(),
        &PageRequest { after: None, limit: Some(100_000) },
    );
    assert!(matches!(too_big, Err(ServiceError::InvalidInput(_))));
}

#[test]
fn no_active_policy_discloses_nothing() {
    let clock = Arc::new(SimulatedClock::starting_at(Instant::from_secs(1_600_000_000)));
    let store = Arc::new(SqliteStore::in_memory().unwrap_or_else(|e| unreachable!("{e}")));
    let service = Service::new(store, clock, ServerKey::generate(), ServiceConfig::default());
    assert!(service.put_group(&group(), "Hikers").is_ok());
    assert!(service.put_member(&member("ann"), "Ann", "https://p.example/a.jpg").is_ok());
    assert!(service.set_membership(&group(), &member("ann"), Some(Role::Admin)).is_ok());
    let dev = DeveloperId::parse("d").unwrap_or_else(|e| unreachable!("{e}"));
    assert!(service.put_developer(&dev, "D", "d@d.example", "https://d.example/h").is_ok());
    let app = service.register_app(&dev, "A", "analytics").unwrap_or_else(|e| unreachable!("{e}"));
    assert!(service.install_app(&app.app.id, &group(), &member("ann")).is_ok());
    let token =
        service.issue_token(&app.app.client_id, &app.client_secret).unwrap_or_else(|e| unreachable!("{e}"));
    let session = service.authenticate_app(&token.access_token).unwrap_or_else(|e| unreachable!("{e}"));
    let served =
        service.read_group(&session, &group(), parse_fields(ResourceKind::Group, None).unwrap_or_default());
    let served = served.unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!((served.body.name, served.body.member_count, served.disclosures.len()), (None, None, 0));
}

#[test]
fn fields_parameter_rejects_unknown_and_repeated_names() {
    assert!(
        matches!(parse_fields(ResourceKind::Member, Some("name,email")), Err(ServiceError::InvalidInput(m)) if m.contains("email"))
    );
    assert!(parse_fields(ResourceKind::Member, Some("name,name")).is_err());
    assert!(parse_fields(ResourceKind::Group, Some("")).is_err());
    assert_eq!(
        parse_fields(ResourceKind::Member, Some("picture")).map(|f| f.iter().collect::<Vec<_>>()),
        Ok(vec![Field::MemberPicture])
    );
}

#[test]
fn installations_unused_for_the_cutoff_expire_and_the_developer_is_told() {
    let w = world();
    let developer = w.app.app.developer.clone();
    let second = w
        .service
        .register_app(&developer, "Other", "video_streaming")
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(w.service.install_app(&second.app.id, &group(), &member("ann")), Ok(()));
    w.clock.advance_secs(89 * 86_400);
    // The first app was used yesterday; the second never.
    let mut last_use = std::collections::HashMap::new();
    last_use.insert((w.app.app.id.clone(), group()), w.service.now().plus_days(-1));
    assert_eq!(w.service.expire_inactive_installations(&last_use, 90), Ok(vec![]));
    w.clock.advance_secs(2 * 86_400);
    let expired = w.service.expire_inactive_installations(&last_use, 90).unwrap_or_default();
    assert_eq!(expired, vec![(second.app.id.clone(), group())]);
    assert_eq!(w.service.store().installation(&second.app.id, &group()), Ok(None));
    assert!(w.service.store().installation(&w.app.app.id, &group()).is_ok_and(|i| i.is_some()));
    let told = w.service.store().notifications(&developer).unwrap_or_default();
    assert!(told
        .iter()
        .any(|n| n.event == "installation.removed" && n.payload.contains("unused for 90 days")));
    assert!(w.service.expire_inactive_installations(&last_use, 0).is_err());
}

#[test]
fn an_app_whose_yearly_certification_lapses_is_suspended() {
    let w = world();
    let developer = w.app.app.developer.clone();
    let second = w
        .service
        .register_app(&developer, "Other", "video_streaming")
        .unwrap_or_else(|e| unreachable!("{e}"));
    w.clock.advance_secs(300 * 86_400);
    assert_eq!(
        w.service.certify_app(
            &developer,
            &w.app.app.id,
            "names and pictures schedule posts; nothing is kept"
        ),
        Ok(())
    );
    let stranger = DeveloperId::parse("someone-else").unwrap_or_else(|e| unreachable!("{e}"));
    assert!(matches!(
        w.service.certify_app(&stranger, &second.app.id, "mine"),
        Err(ServiceError::NotFound(_))
    ));
    assert!(matches!(
        w.service.certify_app(&developer, &second.app.id, " "),
        Err(ServiceError::InvalidInput(_))
    ));
    assert_eq!(w.service.suspend_lapsed_certifications(365), Ok(vec![]));
    w.clock.advance_secs(70 * 86_400);
    // The second app was never certified: a year after registration it is suspended.
    assert_eq!(w.service.suspend_lapsed_certifications(365), Ok(vec![second.app.id.clone()]));
    assert_eq!(
        w.service.store().app(&second.app.id).ok().flatten().map(|a| a.status),
        Some(AppStatus::Suspended)
    );
    assert_eq!(
        w.service.store().app(&w.app.app.id).ok().flatten().map(|a| a.status),
        Some(AppStatus::Active)
    );
    assert!(w
        .service
        .store()
        .notifications(&developer)
        .unwrap_or_default()
        .iter()
        .any(|n| n.event == "app.suspended"));
}

#[test]
fn a_case_fails_when_the_developer_received_data_after_it_opened_and_closes_when_clean() {
    let w = world();
    let developer = w.app.app.developer.clone();
    let failing = w.service.open_case(&developer, "{}", 30).unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(w.service.follow_up_case(failing, true), Ok(consentry_store::CaseState::Failed));
    assert!(w
        .service
        .store()
        .notifications(&developer)
        .unwrap_or_default()
        .iter()
        .any(|n| n.event == "case.failed"));
    let clean = w.service.open_case(&developer, "{}", 30).unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(
        w.service.follow_up_case(clean, false),
        Ok(consentry_store::CaseState::DeletionRequested),
        "not attested yet"
    );
    assert_eq!(w.service.attest_case(&developer, clean, "deleted"), Ok(consentry_store::CaseState::Attested));
    assert_eq!(w.service.follow_up_case(clean, false), Ok(consentry_store::CaseState::Closed));
    assert_eq!(
        w.service.follow_up_case(failing, false),
        Ok(consentry_store::CaseState::Failed),
        "a failed case stays failed"
    );
    assert!(matches!(w.service.open_case(&developer, "{}", 0), Err(ServiceError::InvalidInput(_))));
}

#[test]
fn no_key_in_the_authors_lineage_can_approve_its_policy() {
    let w = world();
    let rejected = |r: Result<(), ServiceError>, says: &str| {
        assert!(matches!(&r, Err(ServiceError::Rejected(m)) if m.contains(says)), "{r:?}");
    };
    // Olga's officer key was made on the server; she makes officer keys for Peter and an
    // operator key for herself.
    let (_, olga) = server_key(&w.service, "olga", OperatorRole::PrivacyOfficer);
    let peter = made_with(&w.service, &olga, "peter", OperatorRole::PrivacyOfficer);
    let olga_ops = made_with(&w.service, &olga, "olga-ops", OperatorRole::Operator);
    let by_olga = proven_version(&w.service, LEGACY, &olga);
    let by_peter = proven_version(&w.service, LEGACY, &peter);
    let by_olga_ops = proven_version(&w.service, LEGACY, &olga_ops);
    rejected(w.service.approve_policy(by_olga, &olga), "submitted it");
    rejected(w.service.approve_policy(by_olga, &peter), "was created by key");
    rejected(w.service.approve_policy(by_peter, &olga), "created key");
    rejected(w.service.approve_policy(by_olga_ops, &peter), "both created by key");
    // A key the operator made cannot approve (not an officer), nor can the operator.
    let ops_child = made_with(&w.service, &w.ops, "ops-child", OperatorRole::Operator);
    let forbidden = w.service.approve_policy(by_olga, &ops_child);
    assert!(matches!(forbidden, Err(ServiceError::Forbidden(_))), "{forbidden:?}");
    for version in [by_olga, by_peter, by_olga_ops] {
        assert_eq!(w.service.counting_approvals(version), Ok(vec![]));
        let early = w.service.activate_policy(version, &w.ops, "alone");
        assert!(matches!(&early, Err(ServiceError::Rejected(m)) if m.contains("not approved")), "{early:?}");
    }
    // An officer with a key of her own lineage approves each of them.
    for version in [by_olga, by_peter, by_olga_ops] {
        assert_eq!(w.service.approve_policy(version, &w.officer), Ok(()));
        assert_eq!(w.service.counting_approvals(version).map(|a| a.len()), Ok(1));
    }
    assert!(w.service.activate_policy(by_olga_ops, &olga_ops, "reviewed").is_ok());
    let stored = w.service.store().policy_version(by_olga_ops).ok().flatten().map(|v| v.author);
    assert_eq!(stored, Some(olga_ops.key_id.clone()), "the author is recorded by key id");
    let approvals = w.service.store().policy_approvals(by_olga_ops).unwrap_or_default();
    assert_eq!(approvals.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), [w.officer.key_id.as_str()]);
}

#[test]
fn a_revoked_or_expired_key_fails_at_its_very_next_use() {
    let w = world();
    let (text, olga) = server_key(&w.service, "olga", OperatorRole::PrivacyOfficer);
    let version = proven_version(&w.service, LEGACY, &w.ops);
    let forbidden = w.service.revoke_operator_key(&w.ops, &olga.key_id);
    assert!(
        matches!(&forbidden, Err(ServiceError::Forbidden(m)) if m.starts_with("an operator key cannot revoke privacy_officer keys")),
        "{forbidden:?}"
    );
    assert_eq!(w.service.revoke_operator_key(&w.officer, &olga.key_id), Ok(true));
    let refused = w.service.authenticate_operator(&text);
    assert!(
        matches!(&refused, Err(ServiceError::Unauthenticated(m)) if m.contains("revoked")),
        "{refused:?}"
    );
    // A session signed in with before the revocation can no longer approve either.
    let stale = w.service.approve_policy(version, &olga);
    assert!(matches!(&stale, Err(ServiceError::Unauthenticated(m)) if m.contains("revoked")), "{stale:?}");
    // Expiry: a key for one day works until then, and not a moment after.
    let day = w
        .service
        .create_key_on_server("test", "tester", "temp", OperatorRole::Auditor, Some(86_400))
        .unwrap_or_else(|e| unreachable!("{e}"));
    w.clock.advance_secs(86_399);
    assert!(w.service.authenticate_operator(&day.key).is_ok());
    w.clock.advance_secs(1);
    let expired = w.service.authenticate_operator(&day.key);
    assert!(
        matches!(&expired, Err(ServiceError::Unauthenticated(m)) if m.contains("expired")),
        "{expired:?}"
    );
}

#[test]
fn an_approval_whose_key_was_revoked_since_no_longer_counts() {
    let w = world();
    let (_, second) = server_key(&w.service, "second officer", OperatorRole::PrivacyOfficer);
    let version = proven_version(&w.service, LEGACY, &w.ops);
    assert_eq!(w.service.approve_policy(version, &second), Ok(()));
    assert_eq!(w.service.revoke_operator_key(&w.officer, &second.key_id), Ok(true));
    let refused = w.service.activate_policy(version, &w.ops, "approved by a key revoked since");
    assert!(matches!(&refused, Err(ServiceError::Rejected(m)) if m.contains("not approved")), "{refused:?}");
}

#[test]
fn a_key_never_outlives_the_key_that_made_it_and_the_last_officer_key_stays() {
    let w = world();
    let week = w
        .service
        .create_key_on_server("test", "tester", "contractor", OperatorRole::Operator, Some(7 * 86_400))
        .unwrap_or_else(|e| unreachable!("{e}"));
    let contractor = w.service.authenticate_operator(&week.key).unwrap_or_else(|e| unreachable!("{e}"));
    let forever = w
        .service
        .create_operator_key(&contractor, "persistence", OperatorRole::Operator, None)
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(forever.expires_at, week.expires_at, "capped at the maker's expiry");
    let longer = w
        .service
        .create_operator_key(&contractor, "longer", OperatorRole::Operator, Some(30 * 86_400))
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(longer.expires_at, week.expires_at);
    // The world's officer key is the only officer key: it cannot revoke itself over the API.
    let last = w.service.revoke_operator_key(&w.officer, &w.officer.key_id);
    assert!(
        matches!(&last, Err(ServiceError::Conflict(m)) if m.contains("last live privacy-officer key")),
        "{last:?}"
    );
    assert!(w.service.authenticate_operator("csk_x_y").is_err());
    assert!(matches!(
        w.service.revoke_key_on_server(&w.officer.key_id, false),
        Err(ServiceError::Conflict(_))
    ));
    assert_eq!(w.service.revoke_key_on_server(&w.officer.key_id, true), Ok(true));
}

/// A key made over the platform API: `(role, index of the key that made it)`.
fn key_forest() -> impl proptest::strategy::Strategy<Value = Vec<(OperatorRole, usize)>> {
    use proptest::prelude::*;
    let role = prop_oneof![
        Just(OperatorRole::Operator),
        Just(OperatorRole::PrivacyOfficer),
        Just(OperatorRole::Auditor)
    ];
    prop::collection::vec((role, any::<prop::sample::Index>()), 0..12)
        .prop_map(|keys| keys.into_iter().map(|(role, maker)| (role, maker.index(usize::MAX))).collect())
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config { cases: 64, ..proptest::test_runner::Config::default() })]

    /// Against a model kept in the test: an approval succeeds exactly when no key is both the
    /// author's or one of its makers and the approver's or one of its makers.
    #[test]
    fn an_approval_counts_exactly_when_the_two_lineages_share_no_key(
        forest in key_forest(),
        pairs in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<proptest::sample::Index>()), 1..6),
    ) {
        let w = world();
        // Three roots made on the server, then keys made by earlier keys that may make them.
        let mut keys: Vec<(OperatorSession, Option<usize>)> = Vec::new();
        for (i, role) in [OperatorRole::PrivacyOfficer, OperatorRole::PrivacyOfficer, OperatorRole::Operator].into_iter().enumerate() {
            keys.push((server_key(&w.service, &format!("root{i}"), role).1, None));
        }
        for (role, pick) in forest {
            let makers: Vec<usize> = (0..keys.len()).filter(|&k| consentry_service::may_create(keys[k].0.role, role)).collect();
            let Some(&maker) = makers.get(pick % makers.len().max(1)) else { continue };
            let made = made_with(&w.service, &keys[maker].0, "k", role);
            keys.push((made, Some(maker)));
        }
        let chain = |mut k: usize| {
            let mut chain = vec![k];
            while let Some(parent) = keys[k].1 {
                chain.push(parent);
                k = parent;
            }
            chain
        };
        let authors: Vec<usize> = (0..keys.len()).filter(|&k| keys[k].0.role != OperatorRole::Auditor).collect();
        let officers: Vec<usize> = (0..keys.len()).filter(|&k| keys[k].0.role == OperatorRole::PrivacyOfficer).collect();
        for (a, o) in pairs {
            let (author, officer) = (authors[a.index(authors.len())], officers[o.index(officers.len())]);
            let version = proven_version(&w.service, LEGACY, &keys[author].0);
            let approved = w.service.approve_policy(version, &keys[officer].0);
            let one_person = chain(author).iter().any(|k| chain(officer).contains(k));
            proptest::prop_assert_eq!(approved.is_ok(), !one_person, "author {} officer {}: {:?}", author, officer, approved);
            proptest::prop_assert_eq!(w.service.counting_approvals(version).map(|a| a.len()), Ok(usize::from(!one_person)));
        }
    }
}

/// Issue 10: a version whose proofs fail, or that has none, cannot be approved; a privacy
/// officer outside the author's lineage may waive them with a reason, which is kept.
#[test]
fn a_version_is_approved_only_with_passing_or_waived_proofs() {
    let w = world();
    let rejected = |r: Result<(), ServiceError>, why: &str| {
        assert!(matches!(&r, Err(ServiceError::Rejected(m)) if m.contains(why)), "{why}: {r:?}");
    };
    let version = w.service.submit_policy(LEGACY, &w.ops).unwrap_or_default();
    assert_eq!(w.service.proof_standing(version), Ok(ProofStanding::Missing));
    rejected(w.service.approve_policy(version, &w.officer), "has no proofs");
    // Failed proofs refuse too, however many approvers try.
    assert!(w.service.record_proof(version, &w.ops, false, r#"{"passed":false}"#).is_ok());
    assert!(matches!(w.service.proof_standing(version), Ok(ProofStanding::Failed { .. })));
    rejected(w.service.approve_policy(version, &w.officer), "did not pass");
    // An auditor cannot record proofs; an operator cannot waive; the author's own officer
    // lineage cannot waive; a reason is required.
    let (_, auditor) = server_key(&w.service, "aud", OperatorRole::Auditor);
    assert!(matches!(w.service.record_proof(version, &auditor, true, "{}"), Err(ServiceError::Forbidden(_))));
    assert!(matches!(
        w.service.waive_proofs(version, &w.ops, "reviewed by hand"),
        Err(ServiceError::Forbidden(_))
    ));
    let (_, olga) = server_key(&w.service, "olga", OperatorRole::PrivacyOfficer);
    let by_olga = w.service.submit_policy(LEGACY, &olga).unwrap_or_default();
    let waived_own = w.service.waive_proofs(by_olga, &olga, "my own draft, trust me");
    assert!(
        matches!(&waived_own, Err(ServiceError::Rejected(m)) if m.contains("cannot waive")),
        "{waived_own:?}"
    );
    assert!(matches!(w.service.waive_proofs(version, &w.officer, "ok"), Err(ServiceError::InvalidInput(_))));
    // An independent officer's waiver, with a reason, lets it be approved; it is kept.
    let waiver = w
        .service
        .waive_proofs(version, &w.officer, "legacy rules kept for the 2017 replay")
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(w.service.proof_standing(version), Ok(ProofStanding::Waived(waiver.clone())));
    assert_eq!(w.service.store().policy_waivers(version), Ok(vec![waiver]));
    assert_eq!(w.service.approve_policy(version, &w.officer), Ok(()));
    // Passing proofs kept later decide over an earlier failure.
    let fixed = w.service.submit_policy(GROUPS_2018, &w.ops).unwrap_or_default();
    assert!(w.service.record_proof(fixed, &w.ops, false, "{}").is_ok());
    assert!(w.service.record_proof(fixed, &w.officer, true, "{}").is_ok());
    assert!(matches!(w.service.proof_standing(fixed), Ok(ProofStanding::Passed { .. })));
    assert_eq!(w.service.approve_policy(fixed, &w.officer), Ok(()));
    assert_eq!(w.service.store().policy_proofs(fixed).map(|p| p.len()), Ok(2), "both kept");
}

/// A store that notes every member whose profile (name, picture) is read from it.
struct WatchedProfiles {
    inner: SqliteStore,
    read: std::sync::Mutex<Vec<MemberId>>,
}

impl WatchedProfiles {
    fn note(&self, ids: impl IntoIterator<Item = MemberId>) {
        self.read.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(ids);
    }
}

macro_rules! delegate {
    ($($name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        $(fn $name(&self $(, $arg: $ty)*) -> $ret { self.inner.$name($($arg),*) })*
    };
}

impl Store for WatchedProfiles {
    delegate! {
        put_member(&self, m: &Member, at: Instant) -> StoreResult<()>;
        put_group(&self, g: &Group, at: Instant) -> StoreResult<()>;
        group(&self, id: &GroupId) -> StoreResult<Option<Group>>;
        put_post(&self, p: &Post) -> StoreResult<()>;
        put_developer(&self, d: &Developer, at: Instant) -> StoreResult<()>;
        developer(&self, id: &DeveloperId) -> StoreResult<Option<Developer>>;
        set_membership(&self, g: &GroupId, m: &MemberId, r: Option<Role>, at: Instant) -> StoreResult<()>;
        membership(&self, g: &GroupId, m: &MemberId) -> StoreResult<Option<Role>>;
        register_app(&self, a: &App, h: &str, at: Instant) -> StoreResult<()>;
        set_app_status(&self, a: &AppId, s: AppStatus, at: Instant) -> StoreResult<()>;
        app(&self, id: &AppId) -> StoreResult<Option<App>>;
        app_by_client_id(&self, c: &str) -> StoreResult<Option<AppCredentials>>;
        apps(&self) -> StoreResult<Vec<App>>;
        set_installation(&self, a: &AppId, g: &GroupId, by: Option<&MemberId>, at: Instant) -> StoreResult<()>;
        installation(&self, a: &AppId, g: &GroupId) -> StoreResult<Option<Installation>>;
        set_consent(&self, m: &MemberId, a: &AppId, p: bool, at: Instant) -> StoreResult<()>;
        member_count(&self, g: &GroupId) -> StoreResult<u64>;
        posts_page(&self, g: &GroupId, after: Option<&PostId>, limit: usize) -> StoreResult<Vec<Post>>;
        add_policy_version(&self, t: &str, a: &str, at: Instant) -> StoreResult<u32>;
        policy_version(&self, v: u32) -> StoreResult<Option<PolicyVersion>>;
        policy_versions(&self) -> StoreResult<Vec<PolicyVersion>>;
        activate_policy(&self, a: &PolicyActivation) -> StoreResult<()>;
        approve_policy(&self, v: u32, who: &str, at: Instant) -> StoreResult<()>;
        policy_approvals(&self, v: u32) -> StoreResult<Vec<(String, Instant)>>;
        record_preview(&self, v: u32, by: &str, s: &str, at: Instant) -> StoreResult<()>;
        policy_previews(&self, v: u32) -> StoreResult<Vec<(String, Instant, String)>>;
        record_proof(&self, v: u32, p: &consentry_store::ProofRecord) -> StoreResult<()>;
        policy_proofs(&self, v: u32) -> StoreResult<Vec<consentry_store::ProofRecord>>;
        record_waiver(&self, v: u32, w: &consentry_store::ProofWaiver) -> StoreResult<()>;
        policy_waivers(&self, v: u32) -> StoreResult<Vec<consentry_store::ProofWaiver>>;
        policy_activations(&self) -> StoreResult<Vec<PolicyActivation>>;
        active_policy(&self) -> StoreResult<Option<PolicyVersion>>;
        put_token(&self, t: &TokenRecord) -> StoreResult<()>;
        token(&self, h: &str) -> StoreResult<Option<TokenRecord>>;
        revoke_token(&self, h: &str, at: Instant) -> StoreResult<bool>;
        revoke_app_tokens(&self, a: &AppId, at: Instant) -> StoreResult<u64>;
        put_operator_key(&self, k: &OperatorKey) -> StoreResult<()>;
        operator_key(&self, id: &str) -> StoreResult<Option<OperatorKey>>;
        operator_key_count(&self) -> StoreResult<u64>;
        operator_keys(&self) -> StoreResult<Vec<OperatorKey>>;
        revoke_operator_key(&self, id: &str, at: Instant, keep: bool) -> StoreResult<bool>;
        facts_as_of(&self, at: Instant) -> StoreResult<Facts>;
        fact_history(&self) -> StoreResult<FactHistory>;
        enqueue_notification(&self, d: &DeveloperId, e: &str, p: &str, at: Instant) -> StoreResult<u64>;
        due_notifications(&self, now: Instant, limit: usize) -> StoreResult<Vec<consentry_store::Notification>>;
        record_delivery(&self, id: u64, s: consentry_store::DeliveryStatus, next: Instant, e: Option<&str>) -> StoreResult<()>;
        server_secrets(&self) -> StoreResult<Vec<consentry_store::ServerSecret>>;
        add_server_secret(&self, s: &consentry_store::ServerSecret) -> StoreResult<bool>;
        claim_due_notifications(&self, n: &str, now: Instant, until: Instant, limit: usize, per: usize) -> StoreResult<Vec<consentry_store::Notification>>;
        record_claimed_delivery(&self, id: u64, n: &str, s: consentry_store::DeliveryStatus, next: Instant, e: Option<&str>) -> StoreResult<bool>;
        release_notifications(&self, n: &str, ids: &[u64]) -> StoreResult<()>;
        outbox_depth(&self) -> StoreResult<consentry_store::OutboxDepth>;
        claim_job(&self, j: &str, n: &str, now: Instant, until: Instant, first: Instant) -> StoreResult<bool>;
        finish_job(&self, j: &str, n: &str, next: Instant) -> StoreResult<bool>;
        notifications(&self, d: &DeveloperId) -> StoreResult<Vec<consentry_store::Notification>>;
        retry_notification(&self, id: u64, at: Instant) -> StoreResult<()>;
        open_case(&self, d: &DeveloperId, m: &str, deadline: Instant, at: Instant) -> StoreResult<u64>;
        case(&self, id: u64) -> StoreResult<Option<consentry_store::Case>>;
        cases(&self) -> StoreResult<Vec<consentry_store::Case>>;
        move_case(&self, id: u64, f: consentry_store::CaseState, t: consentry_store::CaseState, n: &str, at: Instant) -> StoreResult<()>;
        case_events(&self, id: u64) -> StoreResult<Vec<consentry_store::CaseEvent>>;
        certify_app(&self, a: &AppId, s: &str, at: Instant) -> StoreResult<()>;
        last_certified(&self, a: &AppId) -> StoreResult<Option<Instant>>;
        profile_consents(&self, a: &AppId, m: &[MemberId]) -> StoreResult<std::collections::HashSet<MemberId>>;
        member_roles_page(&self, g: &GroupId, after: Option<&MemberId>, limit: usize) -> StoreResult<Vec<(MemberId, Role)>>;
        schema_versions(&self) -> StoreResult<consentry_store::SchemaVersions>;
    }

    fn member(&self, id: &MemberId) -> StoreResult<Option<Member>> {
        self.note([id.clone()]);
        self.inner.member(id)
    }

    fn members_page(
        &self,
        g: &GroupId,
        after: Option<&MemberId>,
        limit: usize,
    ) -> StoreResult<Vec<(Member, Role)>> {
        let page = self.inner.members_page(g, after, limit)?;
        self.note(page.iter().map(|(m, _)| m.id.clone()));
        Ok(page)
    }

    fn members_by_id(&self, ids: &[MemberId]) -> StoreResult<std::collections::HashMap<MemberId, Member>> {
        self.note(ids.iter().cloned());
        self.inner.members_by_id(ids)
    }
}

/// Hidden members leave no trace in the response, and their names and pictures are not even
/// read from the store: a members page reads the profiles of exactly the members it shows.
#[test]
fn a_members_page_reads_the_profiles_of_only_the_members_it_shows() {
    let store = Arc::new(WatchedProfiles {
        inner: SqliteStore::in_memory().unwrap_or_else(|e| unreachable!("{e}")),
        read: Default::default(),
    });
    let w = world_on(store.clone());
    let read = |store: &WatchedProfiles| {
        std::mem::take(&mut *store.read.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    };
    read(&store);
    assert_eq!(visible_names(&w), ["bob name"]);
    assert_eq!(read(&store), [member("bob")]);
    // Pages of one: the hidden ones before and after bob are scanned, never read.
    let mut after = None;
    let mut shown = Vec::new();
    loop {
        let page = PageRequest { limit: Some(1), after: after.clone() };
        let served = w
            .service
            .read_members(&w.session, &group(), member_fields(), &page)
            .unwrap_or_else(|e| unreachable!("{e}"));
        shown.extend(served.body.items.into_iter().filter_map(|m| m.name));
        match served.body.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(shown, ["bob name"]);
    assert_eq!(read(&store), [member("bob")]);
    // Once cat consents too, cat's profile is read as well, and still never ann's.
    w.service
        .set_consent(&member("cat"), &w.app.app.id, &[Scope::Profile])
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(visible_names(&w), ["bob name", "cat name"]);
    assert_eq!(read(&store), [member("bob"), member("cat")]);
    // A policy that shows everyone: a page of one, once the guess knows every kind is shown,
    // reads the one profile it shows, not those of every member it lists.
    let legacy = proven_version(&w.service, LEGACY, &w.ops);
    assert!(w.service.approve_policy(legacy, &w.officer).is_ok());
    assert!(w.service.activate_policy(legacy, &w.ops, "all visible").is_ok());
    let one = PageRequest { limit: Some(1), after: None };
    let page = |request: &PageRequest| {
        w.service
            .read_members(&w.session, &group(), member_fields(), request)
            .unwrap_or_else(|e| unreachable!("{e}"))
    };
    let _ = page(&one); // the guess learns that every kind is shown
    read(&store);
    let served = page(&one);
    assert_eq!(served.body.items.iter().filter_map(|m| m.name.as_deref()).collect::<Vec<_>>(), ["ann name"]);
    assert_eq!(read(&store), [member("ann")]);
}
