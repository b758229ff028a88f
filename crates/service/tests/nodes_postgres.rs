//! Two nodes on one PostgreSQL database: a revocation made through node A is honored by the
//! requests node B serves, with no response released after the revocation's instant that it
//! did not see (the release fence). Skipped, saying so, when `CONSENTRY_TEST_POSTGRES` is unset.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, reason = "tests")]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use consentry_service::{
    parse_fields, AppSession, OperatorSession, PageRequest, ServerKey, Service, ServiceConfig, ServiceError,
    SystemClock,
};
use consentry_store_postgres::testing::{fresh_schema, test_database};
use consentry_store_postgres::{PgOptions, PgStore};
use consentry_types::{
    AppId, AppStatus, DeveloperId, GroupId, Instant, MemberId, OperatorRole, ResourceKind, Role, Scope,
};

const LEGACY: &str = include_str!("../../../policies/legacy-2017.cedar");
const GROUPS_2018: &str = include_str!("../../../policies/groups-2018.cedar");

#[derive(Debug, Clone, Copy)]
enum Revocation {
    TokenRevoked,
    AppSuspended,
    InstallationRemoved,
    ConsentWithdrawn,
    MembershipEnded,
    /// legacy-2017 (everyone visible) replaced by groups-2018 (opt-in only): cat disappears.
    PolicyNarrowed,
}

fn member(id: &str) -> MemberId {
    MemberId::parse(id).unwrap()
}
fn hikers() -> GroupId {
    GroupId::parse("hikers").unwrap()
}

struct Nodes {
    a: Arc<Service>,
    b: Arc<Service>,
    store_b: Arc<PgStore>,
    app: AppId,
    token: String,
    session_b: AppSession,
    officer: OperatorSession,
    groups_2018: u32,
}

/// Node A sets up the world (bob consents; legacy-2017 active, everyone visible, or
/// groups-2018, only bob); node B, another process on the same database with the same server
/// key, serves.
fn nodes(url: &str, legacy: bool) -> Nodes {
    let url = fresh_schema(url).unwrap();
    let key = ServerKey::generate().to_bytes();
    let node = || {
        let store = Arc::new(PgStore::open(&url, &PgOptions { pool_size: 8 }).unwrap());
        let service = Arc::new(Service::new(
            store.clone(),
            Arc::new(SystemClock::default()),
            ServerKey::from_bytes(key),
            ServiceConfig::default(),
        ));
        (store, service)
    };
    let ((_, a), (store_b, b)) = (node(), node());
    a.put_group(&hikers(), "Hikers").unwrap();
    for (id, role) in [("ann", Role::Admin), ("bob", Role::Member), ("cat", Role::Member)] {
        a.put_member(&member(id), &format!("{id} name"), "https://pics.example/x.jpg").unwrap();
        a.set_membership(&hikers(), &member(id), Some(role)).unwrap();
    }
    let developer = DeveloperId::parse("acme").unwrap();
    a.put_developer(&developer, "Acme", "privacy@acme.example", "https://acme.example/hook").unwrap();
    let app = a.register_app(&developer, "Acme", "social_media_management").unwrap();
    a.install_app(&app.app.id, &hikers(), &member("ann")).unwrap();
    a.set_consent(&member("bob"), &app.app.id, &[Scope::Profile]).unwrap();
    let server_key = |name: &str, role| {
        let key = a.create_key_on_server("test", "tester", name, role, None).unwrap();
        a.authenticate_operator(&key.key).unwrap()
    };
    let (ops, officer) =
        (server_key("ops", OperatorRole::Operator), server_key("officer", OperatorRole::PrivacyOfficer));
    let mut versions = Vec::new();
    for text in [LEGACY, GROUPS_2018] {
        let version = a.submit_policy(text, &ops).unwrap();
        a.record_proof(version, &ops, true, "{}").unwrap();
        a.approve_policy(version, &officer).unwrap();
        versions.push(version);
    }
    a.activate_policy(if legacy { versions[0] } else { versions[1] }, &officer, "first").unwrap();
    let token = a.issue_token(&app.app.client_id, &app.client_secret).unwrap().access_token;
    let session_b = b.authenticate_app(&token).unwrap();
    Nodes { a, b, store_b, app: app.app.id, token, session_b, officer, groups_2018: versions[1] }
}

/// What one response node B served showed of the witness, and when it was released.
#[derive(Debug)]
struct Seen {
    released_at: Option<Instant>,
    witness_shown: bool,
}

fn race(url: &str, revocation: Revocation) -> (usize, usize) {
    let n = nodes(url, matches!(revocation, Revocation::PolicyNarrowed | Revocation::MembershipEnded));
    let witness = match revocation {
        Revocation::PolicyNarrowed | Revocation::MembershipEnded => "cat name",
        _ => "bob name",
    };
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let shown = Arc::new(AtomicUsize::new(0));
    let fields = parse_fields(ResourceKind::Member, None).unwrap();
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (b, session, seen, stop, shown) =
                (n.b.clone(), n.session_b.clone(), seen.clone(), stop.clone(), shown.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let served = b.read_members(&session, &hikers(), fields, &PageRequest::default());
                    let entry = match served {
                        Ok(served) => {
                            let witness_shown =
                                served.body.items.iter().any(|m| m.name.as_deref() == Some(witness));
                            if witness_shown {
                                shown.fetch_add(1, Ordering::SeqCst);
                            }
                            Seen { released_at: Some(served.released_at), witness_shown }
                        }
                        Err(ServiceError::Unauthenticated(_) | ServiceError::NotFound(_)) => {
                            Seen { released_at: None, witness_shown: false }
                        }
                        Err(other) => panic!("{revocation:?}: {other}"),
                    };
                    seen.lock().unwrap().push(entry);
                }
            })
        })
        .collect();
    while shown.load(Ordering::SeqCst) < 20 {
        std::thread::yield_now();
    }
    match revocation {
        Revocation::TokenRevoked => n.a.revoke_token(&n.app, &n.token).unwrap(),
        Revocation::AppSuspended => n.a.set_app_status(&n.app, AppStatus::Suspended).unwrap(),
        Revocation::InstallationRemoved => n.a.uninstall_app(&n.app, &hikers()).unwrap(),
        Revocation::ConsentWithdrawn => n.a.set_consent(&member("bob"), &n.app, &[]).unwrap(),
        Revocation::MembershipEnded => n.a.set_membership(&hikers(), &member("cat"), None).unwrap(),
        Revocation::PolicyNarrowed => {
            n.a.activate_policy(n.groups_2018, &n.officer, "opt-in only").unwrap();
        }
    }
    let after = seen.lock().unwrap().len();
    while seen.lock().unwrap().len() < after + 20 {
        std::thread::yield_now();
    }
    stop.store(true, Ordering::SeqCst);
    for reader in readers {
        reader.join().unwrap();
    }
    let store = n.a.store();
    let history = store.fact_history().unwrap();
    let revoked_at = match revocation {
        Revocation::TokenRevoked => store.token(&n.session_b.token_hash).unwrap().and_then(|t| t.revoked_at),
        Revocation::AppSuspended => history.app_statuses.iter().rev().find(|c| c.key == n.app).map(|c| c.at),
        Revocation::InstallationRemoved => {
            history.installations.iter().rev().find(|c| c.value.is_none()).map(|c| c.at)
        }
        Revocation::ConsentWithdrawn => {
            history.profile_consents.iter().rev().find(|c| !c.value).map(|c| c.at)
        }
        Revocation::MembershipEnded => {
            history.memberships.iter().rev().find(|c| c.value.is_none()).map(|c| c.at)
        }
        Revocation::PolicyNarrowed => history.activations.last().map(|a| a.at),
    }
    .unwrap();
    let seen = seen.lock().unwrap();
    let stale: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.released_at.is_some_and(|at| at >= revoked_at))
        .filter(|s| match revocation {
            Revocation::ConsentWithdrawn | Revocation::PolicyNarrowed | Revocation::MembershipEnded => {
                s.witness_shown
            }
            // Refused outright: any response released at or after it is stale.
            _ => true,
        })
        .collect();
    assert!(
        stale.is_empty(),
        "{revocation:?} at {revoked_at}: {} stale of {}: {:?}",
        stale.len(),
        seen.len(),
        stale.first()
    );
    assert!(seen.iter().any(|s| s.witness_shown && s.released_at.is_some_and(|at| at < revoked_at)));
    (seen.len(), seen.iter().filter(|s| s.released_at.is_some_and(|at| at >= revoked_at)).count())
}

#[test]
fn a_revocation_through_one_node_is_honored_by_every_response_the_other_releases_after_it() {
    let Some(url) = test_database("the two-node revocation race") else { return };
    let mut total = 0;
    for revocation in [
        Revocation::TokenRevoked,
        Revocation::AppSuspended,
        Revocation::InstallationRemoved,
        Revocation::ConsentWithdrawn,
        Revocation::MembershipEnded,
        Revocation::PolicyNarrowed,
    ] {
        for _ in 0..2 {
            total += race(&url, revocation).0;
        }
    }
    println!("responses served by node B while node A revoked: {total}");
}

/// A members page on PostgreSQL takes one round trip once warm, whoever it shows: the token,
/// seen before, is not looked up again before the snapshot, and the snapshot brings the
/// profiles of the kinds of member the app's last page there showed (cold, a token never seen
/// and no page yet, it takes the bearer check, the snapshot, and the profiles shown in one
/// query).
#[test]
fn a_warm_members_page_on_postgres_takes_one_round_trip() {
    let Some(url) = test_database("round trips per members page") else { return };
    let fields = parse_fields(ResourceKind::Member, None).unwrap();
    // legacy-2017 shows all three members; groups-2018 only bob, who consented.
    for (legacy, names) in [(true, vec!["ann name", "bob name", "cat name"]), (false, vec!["bob name"])] {
        let n = nodes(&url, legacy);
        // As the Groups routes do: the full check only for a token this node has not seen.
        let page = |request: &PageRequest| {
            let session = match n.b.app_of_seen_token(&n.token) {
                Some(seen) => seen.unwrap(),
                None => n.b.authenticate_app(&n.token).unwrap(),
            };
            n.b.read_members(&session, &hikers(), fields, request).unwrap()
        };
        // Cold: statements prepared on new connections, the token and the page's kinds unseen.
        let cold = page(&PageRequest::default());
        let before = n.store_b.round_trips();
        let served = page(&PageRequest::default());
        let trips = n.store_b.round_trips() - before;
        let shown: Vec<_> = served.body.items.iter().filter_map(|m| m.name.as_deref()).collect();
        assert_eq!(shown, names);
        assert_eq!(cold.body.items, served.body.items);
        assert_eq!(trips, 1, "round trips for a warm page showing {}", names.len());
        // Pages of one, all along the group, shown or not: one round trip each.
        let mut after = None;
        let mut trips_per_page = Vec::new();
        loop {
            let before = n.store_b.round_trips();
            let served = page(&PageRequest { limit: Some(1), after: after.clone() });
            trips_per_page.push((served.body.items.len(), n.store_b.round_trips() - before));
            match served.body.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert!(trips_per_page.iter().all(|(_, trips)| *trips == 1), "{trips_per_page:?}");
    }
}
