//! The serving path decides at every request: each write takes effect for the very next one.

use std::sync::Arc;

use consentry_service::{
    parse_fields, AppSession, PageRequest, ServerKey, Service, ServiceConfig, ServiceError, SimulatedClock,
    Subject,
};
use consentry_store_sqlite::SqliteStore;
use consentry_types::{
    AppStatus, DeveloperId, Field, GroupId, Instant, MemberId, PostId, ResourceKind, Role, Scope,
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
}

/// A group "hikers" with admin ann and members bob, cat; one app installed by ann;
/// groups-2018 active; bob consented to the app.
fn world() -> World {
    let clock =
        Arc::new(SimulatedClock::starting_at(Instant::parse("2019-01-01T00:00:00Z").unwrap_or(Instant::MIN)));
    let store = Arc::new(SqliteStore::in_memory().unwrap_or_else(|e| unreachable!("{e}")));
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
    let version = service.submit_policy(GROUPS_2018, "policy-team").unwrap_or_else(|e| unreachable!("{e}"));
    service.approve_policy(version, "privacy-officer").unwrap_or_else(|e| unreachable!("{e}"));
    service
        .activate_policy(version, "privacy-officer", "the 2018 rules")
        .unwrap_or_else(|e| unreachable!("{e}"));
    let token =
        service.issue_token(&app.app.client_id, &app.client_secret).unwrap_or_else(|e| unreachable!("{e}"));
    let session = service.authenticate_app(&token.access_token).unwrap_or_else(|e| unreachable!("{e}"));
    clock.advance_secs(1);
    World { service, clock, app, session }
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

#[test]
fn activating_legacy_policy_shows_everyone_on_next_request_and_back() {
    let w = world();
    let legacy = w.service.submit_policy(LEGACY, "ops").unwrap_or_default();
    assert!(w.service.approve_policy(legacy, "officer").is_ok());
    assert!(w.service.activate_policy(legacy, "ops", "rollback").is_ok());
    assert_eq!(visible_names(&w), ["ann name", "bob name", "cat name"]);
    w.clock.advance_secs(1);
    assert!(w.service.activate_policy(1, "ops", "forward again").is_ok());
    assert_eq!(visible_names(&w), ["bob name"]);
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
    let legacy = w.service.submit_policy(LEGACY, "ops").unwrap_or_default();
    assert!(w.service.approve_policy(legacy, "officer").is_ok());
    assert!(w.service.activate_policy(legacy, "ops", "all visible").is_ok());
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
