//! The conformance suite every `Store` backend must pass; backends call [`run_all`] from a test.

#![allow(clippy::indexing_slicing)] // test support: indices are of what the check just made

use std::collections::HashSet;

use consentry_types::{
    App, AppId, AppStatus, Developer, DeveloperId, Group, GroupId, Instant, Member, MemberId, OperatorRole,
    PolicyActivation, Post, PostId, Role,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::{
    DeliveryStatus, Facts, KeyOrigin, OperatorKey, OutboxDepth, ProfileKinds, ProofRecord, ProofWaiver,
    SecretPurpose, ServerSecret, Store, StoreError, TokenRecord,
};

fn member_id(text: &str) -> MemberId {
    MemberId::parse(text).unwrap_or_else(|e| unreachable!("{e}"))
}
fn group_id(text: &str) -> GroupId {
    GroupId::parse(text).unwrap_or_else(|e| unreachable!("{e}"))
}
fn app_id(text: &str) -> AppId {
    AppId::parse(text).unwrap_or_else(|e| unreachable!("{e}"))
}

fn at(secs: i64) -> Instant {
    Instant::from_secs(1_500_000_000 + secs)
}

/// A small world: members m0..m4, groups g0..g1, developer d0 with apps a0..a1.
pub fn seed(store: &dyn Store) -> Result<(), StoreError> {
    for i in 0..5 {
        let member = Member {
            id: member_id(&format!("m{i}")),
            name: format!("Member {i}"),
            picture_url: format!("https://pics.example/{i}.jpg"),
        };
        store.put_member(&member, at(0))?;
    }
    for i in 0..2 {
        store.put_group(&Group { id: group_id(&format!("g{i}")), name: format!("Group {i}") }, at(0))?;
    }
    let developer = Developer {
        id: DeveloperId::parse("d0").unwrap_or_else(|e| unreachable!("{e}")),
        name: "Dev Zero".into(),
        contact_email: "privacy@dev0.example".into(),
        webhook_url: "https://dev0.example/hook".into(),
    };
    store.put_developer(&developer, at(0))?;
    for i in 0..2 {
        let app = App {
            id: app_id(&format!("a{i}")),
            developer: developer.id.clone(),
            name: format!("App {i}"),
            category: "video_streaming".into(),
            status: AppStatus::Active,
            client_id: format!("client-a{i}"),
        };
        store.register_app(&app, "$argon2id$fake", at(0))?;
    }
    Ok(())
}

/// Runs every check against fresh stores from `make`.
pub fn run_all<S: Store>(make: impl Fn() -> S) {
    values_round_trip(&make());
    posts_need_a_known_group_and_author(&make());
    installation_keeps_its_first_instant(&make());
    pages_are_ordered_and_resume_after_the_cursor(&make());
    consents_are_per_app(&make());
    consents_of_many_members_are_exactly_those_asked(&make());
    policy_versions_number_from_one_and_the_last_activation_wins(&make());
    tokens_are_found_by_hash_and_revocable(&make());
    operator_keys_keep_their_maker_expiry_and_revocation(&make());
    the_last_live_officer_key_is_kept_when_asked(&make());
    duplicate_client_id_is_a_conflict(&make());
    the_outbox_keeps_notifications_until_delivered_or_dead(&make());
    cases_move_only_from_their_current_state(&make());
    certification_counts_from_registration(&make());
    facts_as_of_reconstructs_every_change(&make);
    a_page_is_read_as_its_facts_are(&make());
    a_members_page_reads_the_consents_and_profiles_of_its_own_members(&make());
    // The checks of several nodes, with both "nodes" on one handle.
    let store = make();
    server_secrets_are_added_once_per_generation(&store, &store);
    let store = make();
    each_notification_is_claimed_by_one_node_at_a_time(&store, &store);
    let store = make();
    a_job_runs_once_per_period_and_a_lapsed_lease_frees_it(&store, &store);
    let store = make();
    a_node_claims_free_developers_past_those_another_holds(&store, &store);
}

/// Runs the checks of several nodes with two handles on one store (two connections or pools
/// on one database, two `SqliteStore`s on one file), each a node: `make_pair` makes a fresh
/// store and opens it twice. Includes races: every notification delivered exactly once and
/// every period of a job run once while both claim at the same time.
pub fn run_several_nodes<S: Store>(make_pair: impl Fn() -> (S, S)) {
    let (a, b) = make_pair();
    server_secrets_are_added_once_per_generation(&a, &b);
    let (a, b) = make_pair();
    each_notification_is_claimed_by_one_node_at_a_time(&a, &b);
    let (a, b) = make_pair();
    a_job_runs_once_per_period_and_a_lapsed_lease_frees_it(&a, &b);
    let (a, b) = make_pair();
    a_node_claims_free_developers_past_those_another_holds(&a, &b);
    let (a, b) = make_pair();
    two_nodes_delivering_at_once_deliver_every_event_exactly_once(&a, &b);
    let (a, b) = make_pair();
    two_nodes_running_jobs_at_once_run_each_period_once(&a, &b);
}

fn values_round_trip(store: &dyn Store) {
    assert_eq!(seed(store), Ok(()));
    let m = store.member(&member_id("m3")).ok().flatten();
    assert_eq!(m.map(|m| m.name), Some("Member 3".to_string()));
    let renamed =
        Member { id: member_id("m3"), name: "Renamed".into(), picture_url: "https://x/y.png".into() };
    assert_eq!(store.put_member(&renamed, at(5)), Ok(()));
    assert_eq!(store.member(&member_id("m3")), Ok(Some(renamed)));
    assert_eq!(store.member(&member_id("nobody")), Ok(None));
    assert_eq!(store.group(&group_id("g1")).ok().flatten().map(|g| g.name), Some("Group 1".to_string()));
    let app = store.app(&app_id("a1")).ok().flatten();
    assert_eq!(app.as_ref().map(|a| a.client_id.as_str()), Some("client-a1"));
    let by_client = store.app_by_client_id("client-a1").ok().flatten();
    assert_eq!(by_client.map(|c| (c.app, c.secret_hash)), app.map(|a| (a, "$argon2id$fake".to_string())));
    assert_eq!(store.apps().map(|a| a.len()), Ok(2));
}

fn posts_need_a_known_group_and_author(store: &dyn Store) {
    assert_eq!(seed(store), Ok(()));
    let post = |group: &str, author: &str| Post {
        id: PostId::parse("p1").unwrap_or_else(|e| unreachable!("{e}")),
        group: group_id(group),
        author: member_id(author),
        content: "hello".into(),
        created_at: at(1),
    };
    assert!(matches!(store.put_post(&post("g0", "ghost")), Err(StoreError::NotFound(_))));
    assert!(matches!(store.put_post(&post("nogroup", "m0")), Err(StoreError::NotFound(_))));
    assert_eq!(store.put_post(&post("g0", "m0")), Ok(()));
    let page = store.posts_page(&group_id("g0"), None, 10).unwrap_or_default();
    assert_eq!(page, vec![post("g0", "m0")]);
}

fn installation_keeps_its_first_instant(store: &dyn Store) {
    assert_eq!(seed(store), Ok(()));
    let (a, g) = (app_id("a0"), group_id("g0"));
    assert_eq!(store.set_installation(&a, &g, Some(&member_id("m0")), at(10)), Ok(()));
    assert_eq!(store.set_installation(&a, &g, Some(&member_id("m1")), at(20)), Ok(()));
    let installation = store.installation(&a, &g).ok().flatten();
    assert_eq!(installation.as_ref().map(|i| i.installed_at), Some(at(10)));
    assert_eq!(installation.map(|i| i.authorized_by), Some(member_id("m1")));
    assert_eq!(store.set_installation(&a, &g, None, at(30)), Ok(()));
    assert_eq!(store.installation(&a, &g), Ok(None));
    assert_eq!(store.set_installation(&a, &g, Some(&member_id("m0")), at(40)), Ok(()));
    assert_eq!(store.installation(&a, &g).ok().flatten().map(|i| i.installed_at), Some(at(40)));
}

fn pages_are_ordered_and_resume_after_the_cursor(store: &dyn Store) {
    assert_eq!(seed(store), Ok(()));
    let g = group_id("g0");
    for (i, m) in ["m4", "m1", "m3", "m0"].iter().enumerate() {
        let role = if i == 0 { Role::Admin } else { Role::Member };
        assert_eq!(store.set_membership(&g, &member_id(m), Some(role), at(i as i64)), Ok(()));
    }
    assert_eq!(store.member_count(&g), Ok(4));
    let first: Vec<String> = store
        .members_page(&g, None, 2)
        .unwrap_or_default()
        .into_iter()
        .map(|(m, _)| m.id.to_string())
        .collect();
    assert_eq!(first, ["m0", "m1"]);
    let rest = store.members_page(&g, Some(&member_id("m1")), 10).unwrap_or_default();
    let rest: Vec<(String, Role)> = rest.into_iter().map(|(m, r)| (m.id.to_string(), r)).collect();
    assert_eq!(rest, [("m3".to_string(), Role::Member), ("m4".to_string(), Role::Admin)]);
    // The same pages without profiles: the same ids and roles in the same order.
    for (after, limit) in [(None, 2), (None, 10), (Some(member_id("m1")), 10), (Some(member_id("m0")), 1)] {
        let full: Vec<(MemberId, Role)> = store
            .members_page(&g, after.as_ref(), limit)
            .unwrap_or_default()
            .into_iter()
            .map(|(m, r)| (m.id, r))
            .collect();
        assert_eq!(store.member_roles_page(&g, after.as_ref(), limit), Ok(full), "{after:?} {limit}");
    }
    assert_eq!(store.member_roles_page(&g, Some(&member_id("m4")), 10), Ok(vec![]));
    // Profiles by id: those that exist, whatever else is asked.
    let asked = [member_id("m3"), member_id("nobody"), member_id("m0"), member_id("m3")];
    let profiles = store.members_by_id(&asked).unwrap_or_default();
    assert_eq!(profiles.len(), 2, "{profiles:?}");
    assert_eq!(profiles.get(&member_id("m3")), store.member(&member_id("m3")).ok().flatten().as_ref());
    assert_eq!(profiles.get(&member_id("m0")).map(|m| m.name.as_str()), Some("Member 0"));
    assert_eq!(store.members_by_id(&[]), Ok(Default::default()));
    assert_eq!(store.set_membership(&g, &member_id("m3"), None, at(9)), Ok(()));
    assert_eq!(store.member_count(&g), Ok(3));
    assert_eq!(store.membership(&g, &member_id("m3")), Ok(None));
    assert_eq!(store.membership(&g, &member_id("m4")), Ok(Some(Role::Admin)));
}

fn consents_are_per_app(store: &dyn Store) {
    assert_eq!(seed(store), Ok(()));
    assert_eq!(store.set_consent(&member_id("m1"), &app_id("a0"), true, at(1)), Ok(()));
    assert_eq!(store.set_consent(&member_id("m2"), &app_id("a1"), true, at(1)), Ok(()));
    let asked: Vec<MemberId> = (0..5).map(|i| member_id(&format!("m{i}"))).collect();
    assert_eq!(store.profile_consents(&app_id("a0"), &asked), Ok(HashSet::from([member_id("m1")])));
    assert_eq!(store.set_consent(&member_id("m1"), &app_id("a0"), false, at(2)), Ok(()));
    assert_eq!(store.profile_consents(&app_id("a0"), &asked), Ok(HashSet::new()));
}

fn consents_of_many_members_are_exactly_those_asked(store: &dyn Store) {
    assert_eq!(seed(store), Ok(()));
    let ids: Vec<MemberId> = (0..30).map(|i| member_id(&format!("n{i:02}"))).collect();
    for (i, id) in ids.iter().enumerate() {
        let member =
            Member { id: id.clone(), name: format!("N{i}"), picture_url: "https://p.example/n.jpg".into() };
        assert_eq!(store.put_member(&member, at(0)), Ok(()));
        if i % 3 == 0 {
            assert_eq!(store.set_consent(id, &app_id("a0"), true, at(1)), Ok(()));
        }
        if i % 2 == 0 {
            assert_eq!(store.set_consent(id, &app_id("a1"), true, at(1)), Ok(()));
        }
    }
    // Ask for every other member: consenting members between them are not reported.
    let asked: Vec<MemberId> = ids.iter().step_by(2).cloned().collect();
    let expected: HashSet<MemberId> =
        ids.iter().enumerate().filter(|(i, _)| i % 6 == 0).map(|(_, m)| m.clone()).collect();
    assert_eq!(store.profile_consents(&app_id("a0"), &asked), Ok(expected));
    assert_eq!(store.profile_consents(&app_id("a0"), &[]), Ok(HashSet::new()));
}

fn policy_versions_number_from_one_and_the_last_activation_wins(store: &dyn Store) {
    assert_eq!(store.active_policy(), Ok(None));
    assert_eq!(store.add_policy_version("permit(principal, action, resource);", "alice", at(1)), Ok(1));
    assert_eq!(store.add_policy_version("forbid(principal, action, resource);", "bob", at(2)), Ok(2));
    let activate = |version, secs| PolicyActivation {
        version,
        author: "carol".into(),
        reason: "test".into(),
        at: at(secs),
    };
    assert_eq!(store.activate_policy(&activate(2, 3)), Ok(()));
    assert_eq!(store.activate_policy(&activate(1, 4)), Ok(()));
    assert_eq!(
        store.active_policy().ok().flatten().map(|p| (p.version, p.author)),
        Some((1, "alice".to_string()))
    );
    assert!(matches!(store.activate_policy(&activate(7, 5)), Err(StoreError::NotFound(_))));
    assert_eq!(store.approve_policy(2, "officer", at(6)), Ok(()));
    assert_eq!(store.approve_policy(2, "officer", at(7)), Ok(()), "approving twice is harmless");
    assert_eq!(store.policy_approvals(2), Ok(vec![("officer".to_string(), at(6))]));
    assert_eq!(store.policy_approvals(1), Ok(vec![]));
    assert!(matches!(store.approve_policy(9, "officer", at(8)), Err(StoreError::NotFound(_))));
    assert_eq!(store.record_preview(2, "officer", r#"{"gains":[]}"#, at(9)), Ok(()));
    assert_eq!(
        store.policy_previews(2),
        Ok(vec![("officer".to_string(), at(9), r#"{"gains":[]}"#.to_string())])
    );
    assert!(matches!(store.record_preview(9, "officer", "{}", at(9)), Err(StoreError::NotFound(_))));
    let failed =
        ProofRecord { by: "k1".into(), at: at(9), passed: false, summary: r#"{"passed":false}"#.into() };
    let proven =
        ProofRecord { by: "k2".into(), at: at(10), passed: true, summary: r#"{"passed":true}"#.into() };
    assert_eq!(store.record_proof(2, &failed), Ok(()));
    assert_eq!(store.record_proof(2, &proven), Ok(()));
    assert_eq!(store.policy_proofs(2), Ok(vec![failed.clone(), proven]), "kept in order, never replaced");
    assert_eq!(store.policy_proofs(1), Ok(vec![]));
    assert!(matches!(store.record_proof(9, &failed), Err(StoreError::NotFound(_))));
    let waiver = ProofWaiver { by: "officer".into(), at: at(11), reason: "reviewed by hand".into() };
    assert_eq!(store.record_waiver(2, &waiver), Ok(()));
    assert_eq!(store.policy_waivers(2), Ok(vec![waiver.clone()]));
    assert_eq!(store.policy_waivers(1), Ok(vec![]));
    assert!(matches!(store.record_waiver(9, &waiver), Err(StoreError::NotFound(_))));
    assert_eq!(store.policy_activations().map(|a| a.len()), Ok(2));
    assert_eq!(store.policy_versions().map(|v| v.len()), Ok(2));
}

fn tokens_are_found_by_hash_and_revocable(store: &dyn Store) {
    assert_eq!(seed(store), Ok(()));
    let token = TokenRecord {
        hash: "ab".repeat(32),
        app: app_id("a0"),
        issued_at: at(0),
        expires_at: at(3600),
        revoked_at: None,
    };
    assert_eq!(store.put_token(&token), Ok(()));
    assert_eq!(store.token(&token.hash), Ok(Some(token.clone())));
    assert_eq!(store.revoke_token(&token.hash, at(5)), Ok(true));
    assert_eq!(store.revoke_token(&token.hash, at(6)), Ok(false));
    assert_eq!(store.token(&token.hash).ok().flatten().and_then(|t| t.revoked_at), Some(at(5)));
    assert_eq!(store.token("00"), Ok(None));
    for (i, app) in ["a0", "a0", "a1"].iter().enumerate() {
        let other = TokenRecord {
            hash: format!("{i:064}"),
            app: app_id(app),
            issued_at: at(0),
            expires_at: at(3600),
            revoked_at: None,
        };
        assert_eq!(store.put_token(&other), Ok(()));
    }
    assert_eq!(
        store.revoke_app_tokens(&app_id("a0"), at(9)),
        Ok(2),
        "the two live tokens of a0, not the revoked one"
    );
    assert_eq!(
        store.token(&format!("{:064}", 2)).ok().flatten().and_then(|t| t.revoked_at),
        None,
        "a1 keeps its token"
    );
}

fn key(id: &str, role: OperatorRole, created_by: KeyOrigin, expires_at: Option<Instant>) -> OperatorKey {
    OperatorKey {
        id: id.into(),
        hash: format!("{id:0>64}"),
        name: format!("{id} name"),
        role,
        created_by,
        created_at: at(0),
        expires_at,
        revoked_at: None,
    }
}

fn on_server() -> KeyOrigin {
    KeyOrigin::Server { command: "consentry keys create".into(), os_user: "root (uid 0)".into() }
}

fn operator_keys_keep_their_maker_expiry_and_revocation(store: &dyn Store) {
    assert_eq!(store.operator_key_count(), Ok(0));
    assert_eq!(store.operator_keys(), Ok(vec![]));
    let root = key("root", OperatorRole::Operator, on_server(), None);
    assert_eq!(store.put_operator_key(&root), Ok(()));
    let mut child = key("child", OperatorRole::Auditor, KeyOrigin::Key("root".into()), Some(at(100)));
    child.created_at = at(1);
    assert_eq!(store.put_operator_key(&child), Ok(()));
    assert_eq!(store.operator_key("root"), Ok(Some(root.clone())));
    assert_eq!(store.operator_key("child"), Ok(Some(child.clone())), "maker and expiry round-trip");
    assert_eq!(store.operator_key("nobody"), Ok(None));
    assert_eq!(store.operator_keys(), Ok(vec![root.clone(), child.clone()]), "oldest first");
    assert_eq!(store.operator_key_count(), Ok(2));
    // Keys made at the same instant are listed in the order they were stored.
    let (late, early) = (
        key("zz", OperatorRole::Auditor, on_server(), None),
        key("aa", OperatorRole::Auditor, on_server(), None),
    );
    assert_eq!(store.put_operator_key(&late), Ok(()));
    assert_eq!(store.put_operator_key(&early), Ok(()));
    let order: Vec<String> = store.operator_keys().unwrap_or_default().into_iter().map(|k| k.id).collect();
    assert_eq!(order, ["root", "zz", "aa", "child"]);
    assert_eq!(store.revoke_operator_key("zz", at(1), true), Ok(true));
    assert_eq!(store.revoke_operator_key("aa", at(1), true), Ok(true));
    // A key made with a key that does not exist, or under a taken id, is refused.
    let orphan = key("orphan", OperatorRole::Operator, KeyOrigin::Key("ghost".into()), None);
    assert!(matches!(store.put_operator_key(&orphan), Err(StoreError::NotFound(_))));
    let twin = key("root", OperatorRole::PrivacyOfficer, on_server(), None);
    assert!(matches!(store.put_operator_key(&twin), Err(StoreError::Conflict(_))));
    assert_eq!(store.operator_key("root"), Ok(Some(root.clone())), "the refused twin changed nothing");
    assert_eq!(store.operator_key_count(), Ok(4));
    // Revocation: once, keeping its first instant; unknown keys are not found.
    assert_eq!(store.revoke_operator_key("child", at(5), true), Ok(true));
    assert_eq!(store.revoke_operator_key("child", at(6), true), Ok(false));
    assert_eq!(store.operator_key("child").ok().flatten().and_then(|k| k.revoked_at), Some(at(5)));
    assert!(matches!(store.revoke_operator_key("ghost", at(6), true), Err(StoreError::NotFound(_))));
    assert_eq!(store.operator_key("root").ok().flatten().and_then(|k| k.revoked_at), None);
    // Liveness: revoked or expired keys are not live.
    let child = store.operator_key("child").ok().flatten();
    assert_eq!(child.as_ref().map(|k| (k.is_live(at(4)), k.is_live(at(5)))), Some((true, false)));
    let expiring = key("expiring", OperatorRole::Operator, on_server(), Some(at(100)));
    assert!(expiring.is_live(at(99)) && !expiring.is_live(at(100)));
}

fn the_last_live_officer_key_is_kept_when_asked(store: &dyn Store) {
    for (id, expires) in [("o1", None), ("o2", None), ("o3", Some(at(50)))] {
        assert_eq!(
            store.put_operator_key(&key(id, OperatorRole::PrivacyOfficer, on_server(), expires)),
            Ok(())
        );
    }
    assert_eq!(store.put_operator_key(&key("op", OperatorRole::Operator, on_server(), None)), Ok(()));
    assert_eq!(store.revoke_operator_key("o1", at(60), true), Ok(true), "o2 is still live");
    // o3 expired at 50, so at 60 o2 is the last live officer key.
    assert!(matches!(store.revoke_operator_key("o2", at(60), true), Err(StoreError::Conflict(_))));
    assert_eq!(
        store.operator_key("o2").ok().flatten().and_then(|k| k.revoked_at),
        None,
        "refused: unchanged"
    );
    // Before o3 expired, o2 was not the last.
    assert_eq!(store.operator_key("o3").ok().flatten().map(|k| k.is_live(at(40))), Some(true));
    // Non-officer keys, and expired officer keys, are never held back.
    assert_eq!(store.revoke_operator_key("op", at(60), true), Ok(true));
    assert_eq!(store.revoke_operator_key("o3", at(60), true), Ok(true));
    // Without the guard (a command on the server), the last one goes too.
    assert_eq!(store.revoke_operator_key("o2", at(61), false), Ok(true));
    assert_eq!(store.operator_keys().map(|k| k.iter().filter(|k| k.is_live(at(61))).count()), Ok(0));
}

fn the_outbox_keeps_notifications_until_delivered_or_dead(store: &dyn Store) {
    use crate::DeliveryStatus;
    let dev = DeveloperId::parse("d0").unwrap_or_else(|e| unreachable!("{e}"));
    let first = store.enqueue_notification(&dev, "installation.created", "{}", at(10)).unwrap_or(0);
    let second = store.enqueue_notification(&dev, "consent.revoked", "{}", at(11)).unwrap_or(0);
    assert!(first > 0 && second > first);
    assert_eq!(
        store.due_notifications(at(9), 10).map(|d| d.len()),
        Ok(0),
        "nothing is due before it was made"
    );
    assert_eq!(
        store.due_notifications(at(20), 10).map(|d| d.iter().map(|n| n.id).collect::<Vec<_>>()),
        Ok(vec![first, second])
    );
    assert_eq!(
        store.record_delivery(first, DeliveryStatus::Pending, at(60), Some("connection refused")),
        Ok(())
    );
    assert_eq!(store.record_delivery(second, DeliveryStatus::Delivered, at(20), None), Ok(()));
    assert_eq!(
        store.due_notifications(at(30), 10).map(|d| d.len()),
        Ok(0),
        "retry not due yet, the other delivered"
    );
    let due = store.due_notifications(at(60), 10).unwrap_or_default();
    assert_eq!(
        due.first().map(|n| (n.attempts, n.last_error.clone())),
        Some((1, Some("connection refused".into())))
    );
    assert_eq!(store.record_delivery(first, DeliveryStatus::Dead, at(60), Some("500")), Ok(()));
    assert!(
        matches!(
            store.record_delivery(first, DeliveryStatus::Delivered, at(61), None),
            Err(StoreError::NotFound(_))
        ),
        "a dead letter stays dead"
    );
    let all = store.notifications(&dev).unwrap_or_default();
    assert_eq!(
        all.iter().map(|n| n.status).collect::<Vec<_>>(),
        [DeliveryStatus::Dead, DeliveryStatus::Delivered]
    );
    a_dead_letter_is_retried_only_when_asked(store, &dev, first, second);
}

/// A dead notification comes back only by `retry_notification`: pending and due at once, its
/// attempts and last error kept; a delivered or pending one, or an unknown id, is `NotFound`.
fn a_dead_letter_is_retried_only_when_asked(store: &dyn Store, dev: &DeveloperId, dead: u64, delivered: u64) {
    use crate::DeliveryStatus;
    assert_eq!(store.due_notifications(at(1_000), 10).map(|d| d.len()), Ok(0), "dead is never due");
    for refused in [delivered, dead + delivered + 100] {
        assert!(
            matches!(store.retry_notification(refused, at(70)), Err(StoreError::NotFound(_))),
            "only a dead notification can be retried ({refused})"
        );
    }
    assert_eq!(store.retry_notification(dead, at(70)), Ok(()));
    let due = store.due_notifications(at(70), 10).unwrap_or_default();
    assert_eq!(
        due.iter().map(|n| (n.id, n.status, n.attempts, n.last_error.clone())).collect::<Vec<_>>(),
        [(dead, DeliveryStatus::Pending, 2, Some("500".to_string()))],
        "due at once, attempts and last error kept"
    );
    assert!(
        matches!(store.retry_notification(dead, at(71)), Err(StoreError::NotFound(_))),
        "a pending notification is not retried twice"
    );
    assert_eq!(store.record_delivery(dead, DeliveryStatus::Delivered, at(72), None), Ok(()));
    let all = store.notifications(dev).unwrap_or_default();
    assert_eq!(
        all.iter().map(|n| (n.status, n.attempts)).collect::<Vec<_>>(),
        [(DeliveryStatus::Delivered, 3), (DeliveryStatus::Delivered, 1)]
    );
}

fn cases_move_only_from_their_current_state(store: &dyn Store) {
    use crate::CaseState;
    assert_eq!(seed(store), Ok(()));
    let dev = DeveloperId::parse("d0").unwrap_or_else(|e| unreachable!("{e}"));
    let id = store.open_case(&dev, "{}", at(100), at(1)).unwrap_or(0);
    assert_eq!(
        store.case(id).ok().flatten().map(|c| (c.state, c.deadline)),
        Some((CaseState::DeletionRequested, at(100)))
    );
    assert_eq!(
        store.move_case(id, CaseState::DeletionRequested, CaseState::Attested, "deleted", at(5)),
        Ok(())
    );
    assert!(matches!(
        store.move_case(id, CaseState::DeletionRequested, CaseState::Attested, "again", at(6)),
        Err(StoreError::Conflict(_))
    ));
    let events: Vec<CaseState> =
        store.case_events(id).unwrap_or_default().into_iter().map(|e| e.state).collect();
    assert_eq!(events, [CaseState::DeletionRequested, CaseState::Attested]);
    assert!(matches!(
        store.open_case(
            &DeveloperId::parse("ghost").unwrap_or_else(|e| unreachable!("{e}")),
            "{}",
            at(9),
            at(1)
        ),
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.cases().map(|c| c.len()), Ok(1));
}

fn certification_counts_from_registration(store: &dyn Store) {
    assert_eq!(seed(store), Ok(()));
    assert_eq!(store.last_certified(&app_id("a0")), Ok(Some(at(0))), "registration counts as the first");
    assert_eq!(store.certify_app(&app_id("a0"), "we use names to schedule posts", at(50)), Ok(()));
    assert_eq!(store.last_certified(&app_id("a0")), Ok(Some(at(50))));
    assert_eq!(store.last_certified(&app_id("nope")), Ok(None));
    assert!(matches!(store.certify_app(&app_id("nope"), "x", at(1)), Err(StoreError::NotFound(_))));
}

fn duplicate_client_id_is_a_conflict(store: &dyn Store) {
    assert_eq!(seed(store), Ok(()));
    let app = App {
        id: app_id("a9"),
        developer: DeveloperId::parse("d0").unwrap_or_else(|e| unreachable!("{e}")),
        name: "Copy".into(),
        category: "x".into(),
        status: AppStatus::Active,
        client_id: "client-a0".into(),
    };
    assert!(matches!(store.register_app(&app, "h", at(1)), Err(StoreError::Conflict(_))));
    assert_eq!(store.app(&app_id("a9")), Ok(None), "nothing half-written");
}

/// One change of an access fact.
#[derive(Debug, Clone)]
enum Change {
    Membership(usize, usize, Option<Role>),
    Installation(usize, usize, Option<usize>),
    Consent(usize, usize, bool),
    AppStatus(usize, AppStatus),
    Activate(u32),
}

fn change() -> impl Strategy<Value = Change> {
    let role = prop::option::of(prop_oneof![Just(Role::Member), Just(Role::Admin)]);
    let status = prop_oneof![Just(AppStatus::Active), Just(AppStatus::Suspended), Just(AppStatus::Banned)];
    prop_oneof![
        (0..2usize, 0..5usize, role).prop_map(|(g, m, r)| Change::Membership(g, m, r)),
        (0..2usize, 0..2usize, prop::option::of(0..5usize))
            .prop_map(|(a, g, by)| Change::Installation(a, g, by)),
        (0..5usize, 0..2usize, any::<bool>()).prop_map(|(m, a, c)| Change::Consent(m, a, c)),
        (0..2usize, status).prop_map(|(a, s)| Change::AppStatus(a, s)),
        (1..3u32).prop_map(Change::Activate),
    ]
}

/// Applies `change` to the model the way a store must.
fn apply_to_model(model: &mut Facts, change: &Change, when: Instant) {
    match change {
        Change::Membership(g, m, role) => {
            let key = (group_id(&format!("g{g}")), member_id(&format!("m{m}")));
            match role {
                Some(role) => model.memberships.insert(key, *role),
                None => model.memberships.remove(&key),
            };
        }
        Change::Installation(a, g, by) => {
            let key = (app_id(&format!("a{a}")), group_id(&format!("g{g}")));
            match by {
                Some(by) => {
                    let since = model.installations.get(&key).map_or(when, |(_, since)| *since);
                    model.installations.insert(key, (member_id(&format!("m{by}")), since));
                }
                None => {
                    model.installations.remove(&key);
                }
            }
        }
        Change::Consent(m, a, granted) => {
            let key = (member_id(&format!("m{m}")), app_id(&format!("a{a}")));
            if *granted {
                model.profile_consents.insert(key);
            } else {
                model.profile_consents.remove(&key);
            }
        }
        Change::AppStatus(a, status) => {
            model.app_statuses.insert(app_id(&format!("a{a}")), *status);
        }
        Change::Activate(version) => model.active_policy = Some(*version),
    }
}

fn apply_to_store(store: &dyn Store, change: &Change, when: Instant) -> Result<(), StoreError> {
    match change {
        Change::Membership(g, m, role) => {
            store.set_membership(&group_id(&format!("g{g}")), &member_id(&format!("m{m}")), *role, when)
        }
        Change::Installation(a, g, by) => {
            let by = by.map(|b| member_id(&format!("m{b}")));
            store.set_installation(&app_id(&format!("a{a}")), &group_id(&format!("g{g}")), by.as_ref(), when)
        }
        Change::Consent(m, a, granted) => {
            store.set_consent(&member_id(&format!("m{m}")), &app_id(&format!("a{a}")), *granted, when)
        }
        Change::AppStatus(a, status) => store.set_app_status(&app_id(&format!("a{a}")), *status, when),
        Change::Activate(version) => store.activate_policy(&PolicyActivation {
            version: *version,
            author: "ops".into(),
            reason: "conformance".into(),
            at: when,
        }),
    }
}

/// Folds a full history up to `t`, the way an audit replays it.
pub fn fold(history: &crate::FactHistory, t: Instant) -> Facts {
    let mut facts = Facts::default();
    for change in history.memberships.iter().filter(|c| c.at <= t) {
        match change.value {
            Some(role) => facts.memberships.insert(change.key.clone(), role),
            None => facts.memberships.remove(&change.key),
        };
    }
    for change in history.installations.iter().filter(|c| c.at <= t) {
        match &change.value {
            Some(value) => facts.installations.insert(change.key.clone(), value.clone()),
            None => facts.installations.remove(&change.key),
        };
    }
    for change in history.profile_consents.iter().filter(|c| c.at <= t) {
        if change.value {
            facts.profile_consents.insert(change.key.clone());
        } else {
            facts.profile_consents.remove(&change.key);
        }
    }
    for change in history.app_statuses.iter().filter(|c| c.at <= t) {
        facts.app_statuses.insert(change.key.clone(), change.value);
    }
    facts.active_policy = history.activations.iter().rev().find(|a| a.at <= t).map(|a| a.version);
    facts
}

/// Random sequences of changes of every fact kind, some at the same instant: after applying
/// them, `facts_as_of(t)` equals the model at every instant t seen, and between them.
fn facts_as_of_reconstructs_every_change<S: Store>(make: &impl Fn() -> S) {
    let mut runner = TestRunner::new(Config { cases: 64, failure_persistence: None, ..Config::default() });
    let strategy = prop::collection::vec((change(), 0..3i64), 1..40);
    let result = runner.run(&strategy, |changes| {
        let store = make();
        seed(&store).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for text in ["permit(principal, action, resource);", "forbid(principal, action, resource);"] {
            store.add_policy_version(text, "ops", at(0)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        let mut model = Facts::default();
        for i in 0..2 {
            model.app_statuses.insert(app_id(&format!("a{i}")), AppStatus::Active);
        }
        let mut snapshots = vec![(at(0), model.clone())];
        let mut now = at(0);
        for (change, step) in &changes {
            now = now.plus_secs(*step);
            apply_to_model(&mut model, change, now);
            apply_to_store(&store, change, now).map_err(|e| TestCaseError::fail(e.to_string()))?;
            match snapshots.last_mut() {
                Some((t, snapshot)) if *t == now => *snapshot = model.clone(),
                _ => snapshots.push((now, model.clone())),
            }
        }
        for (t, expected) in &snapshots {
            let actual = store.facts_as_of(*t).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&actual, expected, "at {}", t);
            // Just before the next change, nothing has moved yet.
            let later =
                store.facts_as_of(t.plus_millis(999)).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&later, expected, "at {} + 999ms", t);
        }
        let before =
            store.facts_as_of(at(0).plus_millis(-1)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(before, Facts::default());
        // The current facts are the last snapshot.
        for ((g, m), role) in &model.memberships {
            prop_assert_eq!(store.membership(g, m).ok().flatten(), Some(*role));
        }
        Ok(())
    });
    if let Err(failure) = result {
        unreachable!("facts_as_of diverged from the model: {failure}");
    }
}

/// Puts at least one row in every table a backend keeps, through the trait, with history for
/// every kind of access fact (for tests of migrations and of copying a store between backends).
pub fn fill_every_table(store: &dyn Store) -> Result<(), StoreError> {
    use crate::{CaseState, DeliveryStatus};
    seed(store)?;
    let dev = DeveloperId::parse("d0").unwrap_or_else(|e| unreachable!("{e}"));
    let (g0, g1, a0, a1) = (group_id("g0"), group_id("g1"), app_id("a0"), app_id("a1"));
    store.put_post(&Post {
        id: PostId::parse("p0").unwrap_or_else(|e| unreachable!("{e}")),
        group: g0.clone(),
        author: member_id("m1"),
        content: "Hello, group \u{1F600} 'quoted'".into(),
        created_at: at(2),
    })?;
    for i in 0..5 {
        let role = if i == 0 { Role::Admin } else { Role::Member };
        store.set_membership(&g0, &member_id(&format!("m{i}")), Some(role), at(1))?;
    }
    store.set_membership(&g1, &member_id("m4"), Some(Role::Member), at(1))?;
    store.set_membership(&g0, &member_id("m3"), None, at(3))?;
    store.set_installation(&a0, &g0, Some(&member_id("m0")), at(2))?;
    store.set_installation(&a1, &g0, Some(&member_id("m0")), at(2))?;
    store.set_installation(&a1, &g0, None, at(4))?;
    store.set_consent(&member_id("m1"), &a0, true, at(3))?;
    store.set_consent(&member_id("m2"), &a0, true, at(3))?;
    store.set_consent(&member_id("m2"), &a0, false, at(5))?;
    store.set_app_status(&a1, AppStatus::Suspended, at(6))?;
    let v1 = store.add_policy_version("permit(principal, action, resource);", "alice", at(1))?;
    let v2 = store.add_policy_version("forbid(principal, action, resource);", "bob", at(2))?;
    store.approve_policy(v1, "officer", at(3))?;
    store.record_preview(v1, "officer", r#"{"gains":[],"losses":[]}"#, at(3))?;
    store
        .record_proof(v1, &ProofRecord { by: "k1".into(), at: at(3), passed: true, summary: "{}".into() })?;
    store.record_waiver(v2, &ProofWaiver { by: "officer".into(), at: at(4), reason: "by hand".into() })?;
    for (version, secs) in [(v1, 4), (v2, 5), (v1, 6)] {
        store.activate_policy(&PolicyActivation {
            version,
            author: "carol".into(),
            reason: "rollout".into(),
            at: at(secs),
        })?;
    }
    store.put_token(&TokenRecord {
        hash: "cd".repeat(32),
        app: a0.clone(),
        issued_at: at(1),
        expires_at: at(3601),
        revoked_at: None,
    })?;
    store.put_token(&TokenRecord {
        hash: "ef".repeat(32),
        app: a1,
        issued_at: at(1),
        expires_at: at(3601),
        revoked_at: Some(at(6)),
    })?;
    store.put_operator_key(&key("root", OperatorRole::Operator, on_server(), None))?;
    store.put_operator_key(&key(
        "officer",
        OperatorRole::PrivacyOfficer,
        KeyOrigin::Key("root".into()),
        Some(at(900)),
    ))?;
    store.put_operator_key(&key("auditor", OperatorRole::Auditor, KeyOrigin::Key("root".into()), None))?;
    store.revoke_operator_key("auditor", at(7), false)?;
    let delivered = store.enqueue_notification(&dev, "installation.created", r#"{"n":1}"#, at(2))?;
    let dead = store.enqueue_notification(&dev, "consent.revoked", r#"{"n":2}"#, at(5))?;
    store.enqueue_notification(&dev, "app.suspended", r#"{"n":3}"#, at(6))?;
    store.record_delivery(delivered, DeliveryStatus::Delivered, at(2), None)?;
    store.record_delivery(dead, DeliveryStatus::Dead, at(6), Some("status 500"))?;
    let case = store.open_case(&dev, r#"{"items":[]}"#, at(100), at(7))?;
    store.move_case(case, CaseState::DeletionRequested, CaseState::Attested, "deleted", at(8))?;
    store.certify_app(&a0, "we use names to greet members", at(9))?;
    store.add_server_secret(&secret(SecretPurpose::Identity, 0, 7))?;
    store.add_server_secret(&secret(SecretPurpose::Cursor, 1, 8))?;
    store.claim_job("expiry", "node-1", at(9), at(10), at(9))?;
    store.finish_job("expiry", "node-1", at(3609))?;
    Ok(())
}

/// Everything `fill_every_table` wrote, read back through the trait, in a comparable form.
pub fn contents(store: &dyn Store) -> Result<String, StoreError> {
    let dev = DeveloperId::parse("d0").unwrap_or_else(|e| unreachable!("{e}"));
    let mut out = Vec::new();
    for i in 0..5 {
        out.push(format!("{:?}", store.member(&member_id(&format!("m{i}")))?));
    }
    for g in ["g0", "g1"] {
        let g = group_id(g);
        out.push(format!("{:?} {:?}", store.group(&g)?, store.member_count(&g)?));
        out.push(format!("{:?}", store.members_page(&g, None, 100)?));
        out.push(format!("{:?}", store.posts_page(&g, None, 100)?));
        for a in ["a0", "a1"] {
            out.push(format!("{:?}", store.installation(&app_id(a), &g)?));
        }
    }
    out.push(format!("{:?}", store.developer(&dev)?));
    out.push(format!("{:?}", store.apps()?));
    out.push(format!("{:?}", store.app_by_client_id("client-a0")?));
    let members: Vec<MemberId> = (0..5).map(|i| member_id(&format!("m{i}"))).collect();
    for a in ["a0", "a1"] {
        let mut consents: Vec<MemberId> = store.profile_consents(&app_id(a), &members)?.into_iter().collect();
        consents.sort();
        out.push(format!("{consents:?} {:?}", store.last_certified(&app_id(a))?));
    }
    for version in store.policy_versions()? {
        let v = version.version;
        out.push(format!(
            "{version:?} {:?} {:?} {:?} {:?}",
            store.policy_approvals(v)?,
            store.policy_previews(v)?,
            store.policy_proofs(v)?,
            store.policy_waivers(v)?
        ));
    }
    out.push(format!("{:?} {:?}", store.policy_activations()?, store.active_policy()?));
    for hash in ["cd".repeat(32), "ef".repeat(32)] {
        out.push(format!("{:?}", store.token(&hash)?));
    }
    out.push(format!("{:?}", store.operator_keys()?));
    out.push(format!("{:?}", store.notifications(&dev)?));
    for case in store.cases()? {
        out.push(format!("{case:?} {:?}", store.case_events(case.id)?));
    }
    out.push(format!("{:?}", store.fact_history()?));
    for secs in 0..10 {
        out.push(format!("{:?}", store.facts_as_of(at(secs))?));
    }
    Ok(out.join("\n"))
}

/// `read_page` gives exactly what reading each fact on its own gives (nothing changes here
/// meanwhile), for every kind of list, known and unknown tokens, apps and groups.
fn a_page_is_read_as_its_facts_are(store: &dyn Store) {
    use crate::{PageList, PageQuery};
    assert_eq!(fill_every_table(store), Ok(()));
    let lists = [
        PageList::Group { member_count: false },
        PageList::Group { member_count: true },
        PageList::Members { after: None, limit: 100, profiles_of: ProfileKinds::default() },
        PageList::Members { after: None, limit: 100, profiles_of: every_kind() },
        PageList::Members { after: None, limit: usize::MAX, profiles_of: every_kind() },
        PageList::Members { after: None, limit: 2, profiles_of: consenting_members() },
        PageList::Members { after: Some(member_id("m1")), limit: 2, profiles_of: every_kind() },
        PageList::Members { after: Some(member_id("m9")), limit: 2, profiles_of: every_kind() },
        PageList::Posts { after: None, limit: 10 },
        PageList::Posts {
            after: Some(PostId::parse("p0").unwrap_or_else(|e| unreachable!("{e}"))),
            limit: 10,
        },
    ];
    for token in ["cd".repeat(32), "ef".repeat(32), "00".into()] {
        for app in ["a0", "a1", "a9"] {
            for group in ["g0", "g1", "g9"] {
                for list in &lists {
                    let query = PageQuery {
                        token_hash: token.clone(),
                        app: app_id(app),
                        group: group_id(group),
                        list: list.clone(),
                    };
                    let mut read = store.read_page(&query);
                    if let Ok(snapshot) = &mut read {
                        snapshot.released_at = None;
                    }
                    assert_eq!(read, crate::read_page_call_by_call(store, &query), "{query:?}");
                }
            }
        }
    }
    let query = PageQuery {
        token_hash: "cd".repeat(32),
        app: app_id("a0"),
        group: group_id("g0"),
        list: PageList::Members {
            after: None,
            limit: 100,
            profiles_of: ProfileKinds {
                consenting: vec![Role::Member],
                not_consenting: vec![Role::Admin],
                at_most: 100,
            },
        },
    };
    let page = store.read_page(&query).unwrap_or_default();
    let listed: Vec<(&str, Role, bool, Option<&str>)> = page
        .members
        .iter()
        .map(|m| (m.id.as_str(), m.role, m.consented_profile, m.profile.as_ref().map(|p| p.name.as_str())))
        .collect();
    assert_eq!(
        listed,
        [
            ("m0", Role::Admin, false, Some("Member 0")),
            ("m1", Role::Member, true, Some("Member 1")),
            ("m2", Role::Member, false, None),
            ("m4", Role::Member, false, None)
        ],
        "m3 left the group, m2 withdrew consent; profiles only of the kinds asked for"
    );
    // What authenticating an app reads: a token with its app's status, as read apart.
    for hash in ["cd".repeat(32), "ef".repeat(32), "00".repeat(32)] {
        let apart = store.token(&hash).and_then(|token| match token {
            Some(token) => Ok(Some((token.clone(), store.app(&token.app)?.map(|a| a.status)))),
            None => Ok(None),
        });
        assert_eq!(store.token_with_app_status(&hash), apart, "{hash}");
    }
    assert_eq!(
        store.token_with_app_status(&"ef".repeat(32)).map(|t| t.and_then(|(_, status)| status)),
        Ok(Some(AppStatus::Suspended))
    );
    assert_eq!(page.active_policy, Some(1));
    assert_eq!(page.token.map(|t| t.app), Some(app_id("a0")));
    assert_eq!(page.installation.map(|i| i.authorized_by), Some(member_id("m0")));
    let posts = store
        .read_page(&PageQuery { list: PageList::Posts { after: None, limit: 10 }, ..query })
        .unwrap_or_default()
        .posts;
    assert_eq!(
        posts
            .iter()
            .map(|p| (p.post.id.as_str(), p.author.name.as_str(), p.author_role, p.author_consented_profile))
            .collect::<Vec<_>>(),
        [("p0", "Member 1", Some(Role::Member), true)]
    );
}

fn every_kind() -> ProfileKinds {
    ProfileKinds { consenting: Role::ALL.to_vec(), not_consenting: Role::ALL.to_vec(), at_most: usize::MAX }
}

fn consenting_members() -> ProfileKinds {
    ProfileKinds { consenting: vec![Role::Member], not_consenting: Vec::new(), at_most: usize::MAX }
}

/// A members page's consents are those of its own members, however many consents of others
/// (members of other groups) fall between its ids, and whether there are fewer of those than
/// the page has rows or more; its profiles are those of the kinds asked for.
fn a_members_page_reads_the_consents_and_profiles_of_its_own_members(store: &dyn Store) {
    use crate::{PageList, PageQuery};
    assert_eq!(seed(store), Ok(()));
    let sparse = group_id("sparse");
    assert_eq!(store.put_group(&Group { id: sparse.clone(), name: "Sparse".into() }, at(0)), Ok(()));
    let id = |i: usize| member_id(&format!("s{i:02}"));
    for i in 0..=20 {
        let member =
            Member { id: id(i), name: format!("S {i}"), picture_url: format!("https://p.example/{i}") };
        assert_eq!(store.put_member(&member, at(0)), Ok(()));
        // Everyone but s10 and s15 consents to a0; only every fifth is in the group.
        assert_eq!(store.set_consent(&id(i), &app_id("a0"), i != 10 && i != 15, at(1)), Ok(()));
        if i % 5 == 0 {
            let role = if i == 5 { Role::Admin } else { Role::Member };
            assert_eq!(store.set_membership(&sparse, &id(i), Some(role), at(1)), Ok(()));
        }
    }
    let kinds = [
        ProfileKinds::default(),
        consenting_members(),
        every_kind(),
        ProfileKinds { at_most: 1, ..every_kind() },
        ProfileKinds { at_most: 2, ..consenting_members() },
    ];
    let mut pages = 0;
    for limit in [1, 2, 3, 100] {
        for after in [None, Some(id(0)), Some(id(5)), Some(id(7)), Some(id(20))] {
            for profiles_of in &kinds {
                let query = PageQuery {
                    token_hash: "00".repeat(32),
                    app: app_id("a0"),
                    group: sparse.clone(),
                    list: PageList::Members { after: after.clone(), limit, profiles_of: profiles_of.clone() },
                };
                let read = store.read_page(&query).map(|mut s| {
                    s.released_at = None;
                    s
                });
                assert_eq!(read, crate::read_page_call_by_call(store, &query), "{query:?}");
                pages += 1;
            }
        }
    }
    assert_eq!(pages, 100);
    let query = PageQuery {
        token_hash: "00".repeat(32),
        app: app_id("a0"),
        group: sparse,
        list: PageList::Members { after: None, limit: 100, profiles_of: consenting_members() },
    };
    let listed: Vec<(String, bool, bool)> = store
        .read_page(&query)
        .unwrap_or_default()
        .members
        .iter()
        .map(|m| (m.id.as_str().to_string(), m.consented_profile, m.profile.is_some()))
        .collect();
    let expected: Vec<(String, bool, bool)> =
        [(0, true, true), (5, true, false), (10, false, false), (15, false, false), (20, true, true)]
            .into_iter()
            .map(|(i, consented, profile)| (format!("s{i:02}"), consented, profile))
            .collect();
    assert_eq!(listed, expected, "s05 is an admin: not of the kinds asked for");
    // At most one profile: the first member of the kinds asked for, by id.
    let query = PageQuery {
        list: PageList::Members {
            after: None,
            limit: 100,
            profiles_of: ProfileKinds { at_most: 1, ..every_kind() },
        },
        ..query
    };
    let profiled: Vec<String> = store
        .read_page(&query)
        .unwrap_or_default()
        .members
        .iter()
        .filter(|m| m.profile.is_some())
        .map(|m| m.id.as_str().to_string())
        .collect();
    assert_eq!(profiled, ["s00"]);
}

fn secret(purpose: SecretPurpose, generation: u32, byte: u8) -> ServerSecret {
    ServerSecret {
        purpose,
        generation,
        material: [byte; 32],
        created_at: at(generation.into()),
        previous_until: at(100),
    }
}

fn server_secrets_are_added_once_per_generation(a: &dyn Store, b: &dyn Store) {
    assert_eq!(a.server_secrets(), Ok(vec![]));
    // Two nodes start on an empty store at once: the first identity secret wins, for both.
    assert_eq!(a.add_server_secret(&secret(SecretPurpose::Identity, 0, 1)), Ok(true));
    assert_eq!(b.add_server_secret(&secret(SecretPurpose::Identity, 0, 2)), Ok(false));
    assert_eq!(b.add_server_secret(&secret(SecretPurpose::Cursor, 1, 3)), Ok(true));
    assert_eq!(a.add_server_secret(&secret(SecretPurpose::Cursor, 2, 4)), Ok(true));
    assert_eq!(a.add_server_secret(&secret(SecretPurpose::Webhook, 1, 5)), Ok(true));
    let mut kept = b.server_secrets().unwrap_or_default();
    kept.sort_by_key(|s| (s.purpose, s.generation));
    assert_eq!(
        kept,
        vec![
            secret(SecretPurpose::Identity, 0, 1),
            secret(SecretPurpose::Cursor, 1, 3),
            secret(SecretPurpose::Cursor, 2, 4),
            secret(SecretPurpose::Webhook, 1, 5),
        ]
    );
    assert_eq!(a.server_secrets().unwrap_or_default().len(), 4);
}

fn developer(store: &dyn Store, id: &str) -> DeveloperId {
    let developer = Developer {
        id: DeveloperId::parse(id).unwrap_or_else(|e| unreachable!("{e}")),
        name: id.into(),
        contact_email: format!("p@{id}.example"),
        webhook_url: format!("https://{id}.example/hook"),
    };
    assert_eq!(store.put_developer(&developer, at(0)), Ok(()));
    developer.id
}

fn ids(notifications: &[crate::Notification]) -> Vec<u64> {
    notifications.iter().map(|n| n.id).collect()
}

fn each_notification_is_claimed_by_one_node_at_a_time(a: &dyn Store, b: &dyn Store) {
    let (d1, d2) = (developer(a, "d1"), developer(a, "d2"));
    let mut queued = Vec::new();
    for i in 0..6 {
        let developer = if i % 2 == 0 { &d1 } else { &d2 };
        queued.push(a.enqueue_notification(developer, "e", "{}", at(i)).unwrap_or_default());
    }
    let later = a.enqueue_notification(&d1, "e", "{}", at(50)).unwrap_or_default();
    // Node a takes at most 2 of each developer, in queue order; not what is due later.
    let now = at(10);
    let first = a.claim_due_notifications("a", now, at(20), 100, 2).unwrap_or_default();
    assert_eq!(ids(&first), vec![queued[0], queued[1], queued[2], queued[3]]);
    // While a holds them, b gets nothing of those developers.
    assert_eq!(b.claim_due_notifications("b", now, at(20), 100, 2).map(|c| ids(&c)), Ok(vec![]));
    // b cannot record what a holds; a can, once.
    assert_eq!(b.record_claimed_delivery(queued[0], "b", DeliveryStatus::Delivered, now, None), Ok(false));
    for id in [queued[0], queued[2]] {
        assert_eq!(a.record_claimed_delivery(id, "a", DeliveryStatus::Delivered, now, None), Ok(true));
    }
    assert_eq!(a.record_claimed_delivery(queued[0], "a", DeliveryStatus::Delivered, now, None), Ok(false));
    // d1 is free again (its leased events recorded): b takes d1's next; d2 is still a's.
    assert_eq!(b.claim_due_notifications("b", now, at(20), 100, 2).map(|c| ids(&c)), Ok(vec![queued[4]]));
    assert_eq!(b.record_claimed_delivery(queued[4], "b", DeliveryStatus::Delivered, now, None), Ok(true));
    // a's lease on d2 runs out: b takes d2's events over, and a's late answer is not recorded.
    let expired = at(21);
    let taken = b.claim_due_notifications("b", expired, at(40), 100, 10).unwrap_or_default();
    assert_eq!(ids(&taken), vec![queued[1], queued[3], queued[5]]);
    assert_eq!(
        a.record_claimed_delivery(queued[1], "a", DeliveryStatus::Delivered, expired, None),
        Ok(false)
    );
    // A retry recorded by its holder is due again later, and claimable then.
    assert_eq!(
        b.record_claimed_delivery(queued[1], "b", DeliveryStatus::Pending, at(30), Some("timeout")),
        Ok(true)
    );
    assert_eq!(
        b.record_claimed_delivery(queued[3], "b", DeliveryStatus::Dead, expired, Some("http_5xx 503")),
        Ok(true)
    );
    assert_eq!(b.record_claimed_delivery(queued[5], "b", DeliveryStatus::Delivered, expired, None), Ok(true));
    assert_eq!(a.claim_due_notifications("a", at(25), at(26), 100, 10).map(|c| ids(&c)), Ok(vec![]));
    let due = a.claim_due_notifications("a", at(60), at(70), 100, 10).unwrap_or_default();
    assert_eq!(ids(&due), vec![queued[1], later]);
    // Given back unattempted: b's release of a's claims does nothing, a's frees them at once.
    assert_eq!(b.release_notifications("b", &ids(&due)), Ok(()));
    assert_eq!(b.claim_due_notifications("b", at(61), at(70), 100, 10).map(|c| ids(&c)), Ok(vec![]));
    assert_eq!(a.release_notifications("a", &ids(&due)), Ok(()));
    let due = b.claim_due_notifications("b", at(61), at(70), 100, 10).unwrap_or_default();
    assert_eq!(ids(&due), vec![queued[1], later]);
    assert_eq!(
        due.first().map(|n| (n.attempts, n.last_error.clone())),
        Some((1, Some("timeout".to_string())))
    );
    assert_eq!(a.outbox_depth(), Ok(OutboxDepth { pending: 2, dead: 1 }));
    assert_eq!(b.outbox_depth(), Ok(OutboxDepth { pending: 2, dead: 1 }));
}

/// The developers with the oldest events are held by one node: another, claiming at most as
/// many as those, still gets the free developers' events (it does not stop at the held ones).
fn a_node_claims_free_developers_past_those_another_holds(a: &dyn Store, b: &dyn Store) {
    let developers: Vec<DeveloperId> = (0..4).map(|i| developer(a, &format!("free{i}"))).collect();
    let queued: Vec<u64> = developers
        .iter()
        .enumerate()
        .map(|(i, d)| a.enqueue_notification(d, "e", "{}", at(i as i64)).unwrap_or_default())
        .collect();
    let held = a.claim_due_notifications("a", at(10), at(100), 2, 1).unwrap_or_default();
    assert_eq!(Some(ids(&held).as_slice()), queued.get(..2));
    let free = b.claim_due_notifications("b", at(10), at(100), 2, 1).unwrap_or_default();
    assert_eq!(Some(ids(&free).as_slice()), queued.get(2..), "b stopped at the developers a holds");
}

fn a_job_runs_once_per_period_and_a_lapsed_lease_frees_it(a: &dyn Store, b: &dyn Store) {
    // Never seen before: first due at its first instant, not before.
    assert_eq!(a.claim_job("expiry", "a", at(0), at(5), at(10)), Ok(false));
    assert_eq!(
        b.claim_job("expiry", "b", at(9), at(15), at(0)),
        Ok(false),
        "the first sight fixed its first instant"
    );
    assert_eq!(a.claim_job("expiry", "a", at(10), at(15), at(10)), Ok(true));
    assert_eq!(b.claim_job("expiry", "b", at(11), at(16), at(10)), Ok(false), "held by a");
    assert_eq!(b.finish_job("expiry", "b", at(100)), Ok(false), "b never held it");
    assert_eq!(a.finish_job("expiry", "a", at(100)), Ok(true));
    assert_eq!(b.claim_job("expiry", "b", at(50), at(55), at(10)), Ok(false), "not due until 100");
    assert_eq!(b.claim_job("expiry", "b", at(100), at(105), at(10)), Ok(true));
    // b dies holding it: once its lease ran out, a takes it; b's late finish changes nothing.
    assert_eq!(a.claim_job("expiry", "a", at(104), at(110), at(10)), Ok(false));
    assert_eq!(a.claim_job("expiry", "a", at(105), at(110), at(10)), Ok(true));
    assert_eq!(b.finish_job("expiry", "b", at(1000)), Ok(false));
    assert_eq!(a.finish_job("expiry", "a", at(200)), Ok(true));
    assert_eq!(a.claim_job("expiry", "a", at(199), at(205), at(10)), Ok(false), "a's schedule holds");
    // Jobs are independent.
    assert_eq!(b.claim_job("deadlines", "b", at(199), at(205), at(0)), Ok(true));
}

fn two_nodes_delivering_at_once_deliver_every_event_exactly_once(a: &dyn Store, b: &dyn Store) {
    let developers: Vec<DeveloperId> = (0..5).map(|i| developer(a, &format!("dev{i}"))).collect();
    let mut queued = Vec::new();
    for i in 0..200u64 {
        let developer = &developers[(i % 5) as usize];
        queued.push(a.enqueue_notification(developer, "e", "{}", at(0)).unwrap_or_default());
    }
    let delivered = std::sync::Mutex::new(Vec::new());
    let deliver = |store: &dyn Store, node: &str| {
        let mut idle = 0;
        while idle < 3 {
            let claimed = store.claim_due_notifications(node, at(1), at(1_000), 7, 3).unwrap_or_default();
            if claimed.is_empty() {
                idle += 1;
                std::thread::yield_now();
                continue;
            }
            idle = 0;
            for notification in claimed {
                let recorded = store.record_claimed_delivery(
                    notification.id,
                    node,
                    DeliveryStatus::Delivered,
                    at(1),
                    None,
                );
                assert_eq!(recorded, Ok(true), "{node} lost a lease it held");
                if let Ok(mut d) = delivered.lock() {
                    d.push((notification.id, node.to_string()));
                }
            }
        }
    };
    std::thread::scope(|scope| {
        scope.spawn(|| deliver(a, "a"));
        scope.spawn(|| deliver(b, "b"));
    });
    let delivered = delivered.into_inner().unwrap_or_default();
    let mut got: Vec<u64> = delivered.iter().map(|(id, _)| *id).collect();
    got.sort_unstable();
    assert_eq!(got, queued, "every event delivered exactly once");
    assert_eq!(a.outbox_depth(), Ok(OutboxDepth { pending: 0, dead: 0 }));
}

fn two_nodes_running_jobs_at_once_run_each_period_once(a: &dyn Store, b: &dyn Store) {
    // Each period (10 s of store time) both nodes try, many times each; one runs it. Each
    // thread has its own idea of "now" (its period), so the lease outlasts every period: a
    // thread a period ahead must not take over a run still going as if its lease had lapsed
    // (that case has its own check, `a_job_runs_once_per_period_and_a_lapsed_lease_frees_it`).
    let runs = std::sync::Mutex::new(Vec::new());
    let run = |store: &dyn Store, node: &str| {
        for period in 0..40i64 {
            for _ in 0..5 {
                let now = at(period * 10);
                if store.claim_job("sweep", node, now, at(100_000), at(0)) == Ok(true) {
                    if let Ok(mut r) = runs.lock() {
                        r.push(period);
                    }
                    assert_eq!(store.finish_job("sweep", node, at(period * 10 + 10)), Ok(true));
                }
            }
        }
    };
    std::thread::scope(|scope| {
        scope.spawn(|| run(a, "a"));
        scope.spawn(|| run(b, "b"));
    });
    let mut runs = runs.into_inner().unwrap_or_default();
    runs.sort_unstable();
    let mut once = runs.clone();
    once.dedup();
    assert_eq!(runs, once, "a period ran twice: {runs:?}");
}
