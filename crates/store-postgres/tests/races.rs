//! What SQLite gives for free (one writer at a time) must hold on PostgreSQL with several
//! connections writing at once, and the release fence must order changes against page reads.
//! Each test uses its own schema of `CONSENTRY_TEST_POSTGRES` (skipped, saying so, when unset).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, reason = "tests")]

use std::sync::{Arc, Barrier};
use std::thread;

use consentry_store::{
    conformance, FenceScope, KeyOrigin, OperatorKey, PageList, PageQuery, Store, StoreError,
};
use consentry_store_postgres::testing::{fresh_schema, test_database};
use consentry_store_postgres::{PgOptions, PgStore};
use consentry_types::{AppId, GroupId, Instant, MemberId, OperatorRole};

/// Two stores (two nodes' pools) on one fresh schema.
fn two_nodes(what: &str) -> Option<(Arc<PgStore>, Arc<PgStore>)> {
    let url = fresh_schema(&test_database(what)?).unwrap();
    let options = PgOptions { pool_size: 4 };
    Some((Arc::new(PgStore::open(&url, &options).unwrap()), Arc::new(PgStore::open(&url, &options).unwrap())))
}

fn officer(id: &str) -> OperatorKey {
    OperatorKey {
        id: id.into(),
        hash: format!("{id:0>64}"),
        name: id.into(),
        role: OperatorRole::PrivacyOfficer,
        created_by: KeyOrigin::Server { command: "test".into(), os_user: "tester".into() },
        created_at: Instant::from_secs(1),
        expires_at: None,
        revoked_at: None,
    }
}

/// Runs `a` and `b` on two threads released at the same moment.
fn at_once<A: Send, B: Send>(a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B + Send) -> (A, B) {
    let barrier = Barrier::new(2);
    thread::scope(|scope| {
        let first = scope.spawn(|| {
            barrier.wait();
            a()
        });
        let second = scope.spawn(|| {
            barrier.wait();
            b()
        });
        (first.join().unwrap(), second.join().unwrap())
    })
}

#[test]
fn two_nodes_revoking_the_last_two_officer_keys_at_once_keep_one() {
    let Some((a, b)) = two_nodes("the last-officer-key race") else { return };
    for round in 0..25 {
        let (first, second) = (format!("o{round}a"), format!("o{round}b"));
        a.put_operator_key(&officer(&first)).unwrap();
        a.put_operator_key(&officer(&second)).unwrap();
        let at = Instant::from_secs(100 + round);
        let (x, y) =
            at_once(|| a.revoke_operator_key(&first, at, true), || b.revoke_operator_key(&second, at, true));
        let kept = [&x, &y].iter().filter(|r| matches!(r, Err(StoreError::Conflict(_)))).count();
        assert_eq!(kept, 1, "round {round}: {x:?} {y:?}: exactly one revocation is refused");
        assert!(x == Ok(true) || y == Ok(true));
        // Leave one live officer key only for the next round's pair to race against.
        let live: Vec<String> =
            a.operator_keys().unwrap().into_iter().filter(|k| k.is_live(at)).map(|k| k.id).collect();
        assert_eq!(live.len(), 1, "{live:?}");
        a.revoke_operator_key(&live[0], at, false).unwrap();
    }
}

#[test]
fn policy_versions_added_at_once_on_two_nodes_get_distinct_numbers() {
    let Some((a, b)) = two_nodes("the policy-version race") else { return };
    let (x, y): (Vec<u32>, Vec<u32>) = at_once(
        || {
            (0..20)
                .map(|_| {
                    a.add_policy_version("permit(principal, action, resource);", "a", Instant::from_secs(1))
                        .unwrap()
                })
                .collect()
        },
        || {
            (0..20)
                .map(|_| {
                    b.add_policy_version("forbid(principal, action, resource);", "b", Instant::from_secs(1))
                        .unwrap()
                })
                .collect()
        },
    );
    let mut all: Vec<u32> = x.into_iter().chain(y).collect();
    all.sort_unstable();
    assert_eq!(all, (1..=40).collect::<Vec<_>>());
    // Approving the same version twice at once records one approval.
    let (x, y) = at_once(
        || a.approve_policy(3, "officer", Instant::from_secs(2)),
        || b.approve_policy(3, "officer", Instant::from_secs(2)),
    );
    assert_eq!((x, y), (Ok(()), Ok(())));
    assert_eq!(a.policy_approvals(3).unwrap().len(), 1);
}

#[test]
fn one_consent_changed_at_once_on_two_nodes_keeps_its_history_and_current_row_agreeing() {
    let Some((a, b)) = two_nodes("the history-append race") else { return };
    conformance::seed(a.as_ref()).unwrap();
    let (member, app) = (MemberId::parse("m1").unwrap(), AppId::parse("a0").unwrap());
    for round in 0..40i64 {
        let at = Instant::from_secs(10 + round);
        let _ = at_once(
            || a.set_consent(&member, &app, true, at),
            || b.set_consent(&member, &app, round % 2 == 0, at),
        );
        let current = a.profile_consents(&app, std::slice::from_ref(&member)).unwrap().contains(&member);
        let replayed =
            a.facts_as_of(Instant::MAX).unwrap().profile_consents.contains(&(member.clone(), app.clone()));
        assert_eq!(current, replayed, "round {round}: the current row and the history disagree");
    }
    let history = a.fact_history().unwrap().profile_consents;
    // Each recorded change changes the value (an unchanged value appends nothing), in order.
    for pair in history.windows(2) {
        assert!(pair[0].at <= pair[1].at);
        assert_ne!(pair[0].value, pair[1].value, "{history:?}");
    }
}

/// A change holds the fence while a node reads: the read waits (with no connection held),
/// then sees the change and is released no earlier than it; a read before is released
/// strictly before it.
#[test]
fn a_page_read_during_a_change_waits_for_it_and_sees_it() {
    let Some((a, b)) = two_nodes("the release fence") else { return };
    conformance::fill_every_table(a.as_ref()).unwrap();
    let query = PageQuery {
        token_hash: "cd".repeat(32),
        app: AppId::parse("a0").unwrap(),
        group: GroupId::parse("g0").unwrap(),
        list: PageList::Members { after: None, limit: 100, profiles_of: Default::default() },
    };
    let m1 = MemberId::parse("m1").unwrap();
    let consenting =
        |page: &consentry_store::PageSnapshot| page.members.iter().any(|m| m.id == m1 && m.consented_profile);
    for _ in 0..10 {
        let before = b.read_page(&query).unwrap();
        assert!(consenting(&before));
        let fence = a.release_fence().unwrap();
        let change = fence.change(&FenceScope::App(query.app.clone())).unwrap();
        assert!(before.released_at.unwrap() < change.at, "a read before a change is released before it");
        let reader = {
            let (b, query) = (b.clone(), query.clone());
            thread::spawn(move || b.read_page(&query).unwrap())
        };
        thread::sleep(std::time::Duration::from_millis(30));
        assert!(!reader.is_finished(), "the read waits while the change holds the fence");
        // A request about another app and group is not held up by it.
        let other = PageQuery {
            app: AppId::parse("a1").unwrap(),
            group: GroupId::parse("g1").unwrap(),
            ..query.clone()
        };
        assert!(b.read_page(&other).is_ok());
        a.set_consent(&m1, &query.app, false, change.at).unwrap();
        let at = change.at;
        drop(change);
        let after = reader.join().unwrap();
        assert!(!consenting(&after), "the read that waited sees the change");
        assert!(after.released_at.unwrap() >= at);
        let t = after.released_at.unwrap();
        assert!(!b.facts_as_of(t).unwrap().profile_consents.contains(&(m1.clone(), query.app.clone())));
        // Put it back for the next round, fenced too.
        let change = fence.change(&FenceScope::App(query.app.clone())).unwrap();
        a.set_consent(&m1, &query.app, true, change.at).unwrap();
    }
    // Everything: a policy activation holds every request.
    let fence = a.release_fence().unwrap();
    let change = fence.change(&FenceScope::Everything).unwrap();
    let reader = {
        let (b, query) = (b.clone(), query.clone());
        thread::spawn(move || b.read_page(&query).unwrap())
    };
    thread::sleep(std::time::Duration::from_millis(30));
    assert!(!reader.is_finished());
    drop(change);
    assert!(reader.join().unwrap().released_at.is_some());
}

/// Three deliverers on each of two nodes, one outbox of many developers: every event is
/// delivered exactly once, each developer's in queue order (one node at a time holds a
/// developer), no deliverer loses a lease it holds, and claims made while a lease lapses hand
/// the events over rather than twice.
#[test]
fn six_deliverers_on_two_nodes_deliver_each_event_once_and_each_developers_in_order() {
    use consentry_store::DeliveryStatus;
    use consentry_types::{Developer, DeveloperId};
    let Some((a, b)) = two_nodes("the outbox race") else { return };
    let developers: Vec<DeveloperId> = (0..7)
        .map(|i| {
            let id = DeveloperId::parse(&format!("dev{i}")).unwrap();
            let developer = Developer {
                id: id.clone(),
                name: format!("dev{i}"),
                contact_email: format!("p@dev{i}.example"),
                webhook_url: format!("https://dev{i}.example/hook"),
            };
            a.put_developer(&developer, Instant::from_secs(0)).unwrap();
            id
        })
        .collect();
    let mut queued = Vec::new();
    for i in 0..300usize {
        let developer = &developers[(i * 3 + i / 7) % 7];
        queued.push((
            a.enqueue_notification(developer, "e", "{}", Instant::from_secs(0)).unwrap(),
            developer.clone(),
        ));
    }
    // What each deliverer sent, in the order sent (while holding the lease).
    let sent = std::sync::Mutex::new(Vec::<(DeveloperId, u64)>::new());
    let deliver = |store: &PgStore, node: &str| {
        let mut idle = 0;
        while idle < 20 {
            let claimed = store
                .claim_due_notifications(node, Instant::from_secs(1), Instant::from_secs(1_000), 5, 2)
                .unwrap();
            if claimed.is_empty() {
                idle += 1;
                thread::sleep(std::time::Duration::from_millis(2));
                continue;
            }
            idle = 0;
            for notification in claimed {
                sent.lock().unwrap().push((notification.developer.clone(), notification.id));
                let recorded = store.record_claimed_delivery(
                    notification.id,
                    node,
                    DeliveryStatus::Delivered,
                    Instant::from_secs(1),
                    None,
                );
                assert_eq!(recorded, Ok(true), "{node} lost a lease it held");
            }
        }
    };
    thread::scope(|scope| {
        for (store, node) in [(&a, "a"), (&b, "b")] {
            for worker in 0..3 {
                let deliver = &deliver;
                scope.spawn(move || deliver(store, &format!("{node}-{worker}")));
            }
        }
    });
    let sent = sent.into_inner().unwrap();
    let mut ids: Vec<u64> = sent.iter().map(|(_, id)| *id).collect();
    ids.sort_unstable();
    assert_eq!(ids, queued.iter().map(|(id, _)| *id).collect::<Vec<_>>(), "each event exactly once");
    for developer in &developers {
        let order: Vec<u64> = sent.iter().filter(|(d, _)| d == developer).map(|(_, id)| *id).collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{developer} out of order: {order:?}");
    }
    assert_eq!(a.outbox_depth().map(|d| d.pending), Ok(0));
}

/// Two nodes, three job runners each, hammering one job over 60 periods: each period runs
/// exactly once, and a runner whose lease lapsed (it stalls past it) cannot finish the run
/// another took over.
#[test]
fn six_job_runners_on_two_nodes_run_each_period_once() {
    let Some((a, b)) = two_nodes("the job race") else { return };
    let runs = std::sync::Mutex::new(Vec::<(i64, String)>::new());
    let run = |store: &PgStore, node: &str| {
        for period in 0..60i64 {
            for _ in 0..4 {
                let now = Instant::from_secs(period * 10);
                if store.claim_job(
                    "sweep",
                    node,
                    now,
                    // Outlasting every period: each thread's "now" is its own period, and one a
                    // period ahead must not see a run still going as a lapsed lease (that case
                    // is checked on its own below).
                    Instant::from_secs(100_000),
                    Instant::from_secs(0),
                ) == Ok(true)
                {
                    runs.lock().unwrap().push((period, node.to_string()));
                    assert_eq!(
                        store.finish_job("sweep", node, Instant::from_secs(period * 10 + 10)),
                        Ok(true)
                    );
                }
            }
        }
    };
    thread::scope(|scope| {
        for (store, node) in [(&a, "a"), (&b, "b")] {
            for worker in 0..3 {
                let run = &run;
                scope.spawn(move || run(store, &format!("{node}-{worker}")));
            }
        }
    });
    let runs = runs.into_inner().unwrap();
    let mut periods: Vec<i64> = runs.iter().map(|(p, _)| *p).collect();
    periods.sort_unstable();
    let mut once = periods.clone();
    once.dedup();
    assert_eq!(periods, once, "a period ran twice");
    // A lapsed lease: x takes the job and stalls; y takes it over once the lease ran out; x's
    // late finish is refused and does not move the schedule y set.
    let late = Instant::from_secs(10_000);
    assert_eq!(a.claim_job("audit", "x", late, Instant::from_secs(10_005), late), Ok(true));
    assert_eq!(
        b.claim_job("audit", "y", Instant::from_secs(10_004), Instant::from_secs(10_010), late),
        Ok(false)
    );
    assert_eq!(
        b.claim_job("audit", "y", Instant::from_secs(10_005), Instant::from_secs(10_010), late),
        Ok(true)
    );
    assert_eq!(a.finish_job("audit", "x", Instant::from_secs(99_999)), Ok(false));
    assert_eq!(b.finish_job("audit", "y", Instant::from_secs(10_100)), Ok(true));
    assert_eq!(
        a.claim_job("audit", "x", Instant::from_secs(10_099), Instant::from_secs(10_200), late),
        Ok(false)
    );
    assert_eq!(
        a.claim_job("audit", "x", Instant::from_secs(10_100), Instant::from_secs(10_200), late),
        Ok(true)
    );
}
