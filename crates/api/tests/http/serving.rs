//! The serving path's holes, pinned over HTTP: app-scoped post ids and posts that leave no
//! trace, revocations racing in-flight requests, audit windows from hostile `since` text, and
//! ledger instants that arrive out of order.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Mutex;

use consentry_service::{Clock, DisclosureRecord, DisclosureSink};
use consentry_types::{AppId, Field, Subject};

use super::*;

fn sent_member_fields(record: &DisclosureRecord, member: &str) -> Vec<Field> {
    record
        .disclosures
        .iter()
        .filter(|d| matches!(&d.subject, Subject::Member(m) if m.as_str() == member))
        .flat_map(|d| d.fields.iter())
        .collect()
}

/// A second app of another developer, installed in hikers; returns (app id, token).
async fn second_app(h: &Harness) -> (String, String) {
    let dev = json!({"name": "Other", "contact_email": "privacy@other.example", "webhook_url": "https://other.example/h"});
    assert!(h.op(Method::PUT, "/platform/v1/developers/other", Some(dev)).await.status.is_success());
    let created = h
        .op(
            Method::POST,
            "/platform/v1/apps",
            Some(json!({"developer": "other", "name": "Reader", "category": "analytics"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let app = created.body["id"].as_str().unwrap_or_default().to_string();
    let installed = h
        .op(
            Method::PUT,
            &format!("/platform/v1/groups/hikers/installations/{app}"),
            Some(json!({"authorized_by": "ann"})),
        )
        .await;
    assert!(installed.status.is_success(), "{}", installed.body);
    let token = h
        .token(
            created.body["client_id"].as_str().unwrap_or_default(),
            created.body["client_secret"].as_str().unwrap_or_default(),
        )
        .await;
    (app, token)
}

fn ids(reply: &Reply) -> Vec<String> {
    reply.body["data"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["id"].as_str().map(String::from)).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn post_ids_are_scoped_to_the_app_and_a_post_with_nothing_permitted_leaves_no_trace() {
    let h = Harness::new();
    let sink = Arc::new(MemorySink::default());
    let h = Harness { router: app(ApiState::new(h.service.clone()).with_disclosures(sink.clone())), ..h };
    let (_, client_id, secret) = h.world().await;
    // p1 (bob, who opted in to the first app) is already there; cat never opted in.
    for (post, author) in [("p2", "cat"), ("p3", "bob")] {
        let put = h
            .op(
                Method::PUT,
                &format!("/platform/v1/groups/hikers/posts/{post}"),
                Some(json!({"author": author, "content": format!("{post} text")})),
            )
            .await;
        assert!(put.status.is_success(), "{}", put.body);
    }
    let first = h.token(&client_id, &secret).await;
    let (_, second) = second_app(&h).await;

    // Two apps in one group see different ids for the same posts, never the platform's.
    let by_first = h.call(Method::GET, "/v1/groups/hikers/posts?fields=content", Some(&first), None).await;
    let by_second = h.call(Method::GET, "/v1/groups/hikers/posts?fields=content", Some(&second), None).await;
    let (a, b) = (ids(&by_first), ids(&by_second));
    assert_eq!((a.len(), b.len()), (3, 3), "{} {}", by_first.body, by_second.body);
    for (x, y) in a.iter().zip(&b) {
        assert_ne!(x, y, "the same post must not carry the same id for two apps");
        assert!(!["p1", "p2", "p3"].contains(&x.as_str()) && !["p1", "p2", "p3"].contains(&y.as_str()));
    }
    // Stable for one app across requests.
    let again = h.call(Method::GET, "/v1/groups/hikers/posts?fields=content", Some(&first), None).await;
    assert_eq!(ids(&again), a);

    // Only the author requested: a post whose author did not opt in is absent, not an empty shell.
    let authors = h.call(Method::GET, "/v1/groups/hikers/posts?fields=author", Some(&first), None).await;
    assert_eq!(authors.status, StatusCode::OK);
    assert_eq!(ids(&authors), [a[0].clone(), a[2].clone()], "{}", authors.body);
    assert!(authors.body["paging"]["after"].is_null(), "{}", authors.body);
    let none = h.call(Method::GET, "/v1/groups/hikers/posts?fields=author", Some(&second), None).await;
    assert_eq!(none.body, json!({"data": [], "paging": {}}), "nothing permitted: no trace");
    // Paged one by one, the hidden post is skipped, not served as an empty page.
    let page1 =
        h.call(Method::GET, "/v1/groups/hikers/posts?fields=author&limit=1", Some(&first), None).await;
    assert_eq!(ids(&page1), [a[0].clone()]);
    let after = page1.body["paging"]["after"].as_str().unwrap_or_default().to_string();
    let page2 = h
        .call(
            Method::GET,
            &format!("/v1/groups/hikers/posts?fields=author&limit=1&after={after}"),
            Some(&first),
            None,
        )
        .await;
    assert_eq!(ids(&page2), [a[2].clone()], "{}", page2.body);

    // The ledger records exactly what was sent, response by response.
    let records = sink.0.lock().map(|r| r.clone()).unwrap_or_default();
    let posts: Vec<&DisclosureRecord> =
        records.iter().filter(|r| r.route == "GET /v1/groups/{id}/posts").collect();
    assert_eq!(posts.len(), 7);
    // fields=author, first app: bob's two posts, never cat.
    assert_eq!(sent_member_fields(posts[3], "bob"), [Field::PostAuthor]);
    assert!(sent_member_fields(posts[3], "cat").is_empty());
    // fields=author, second app: nothing at all.
    assert!(posts[4].disclosures.is_empty(), "{:?}", posts[4]);
    // fields=content: content of all three posts, recorded against their authors.
    assert_eq!(sent_member_fields(posts[0], "cat"), [Field::PostContent]);
    assert_eq!(sent_member_fields(posts[1], "bob"), [Field::PostContent]);
}

#[tokio::test]
async fn an_audit_window_from_hostile_since_text_is_a_400_never_a_500() {
    let h = Harness::new();
    let dir = ledger_dir("since");
    let ledger = Arc::new(
        consentry_ledger::Ledger::open(&dir, consentry_ledger::LedgerOptions::default())
            .unwrap_or_else(|e| unreachable!("{e}")),
    );
    let h = Harness { router: app(ApiState::new(h.service.clone()).with_ledger(ledger)), ..h };
    h.world().await;
    let auditor = super::server_key(&h.service, "auditor", OperatorRole::Auditor);
    let huge = "106751991167d";
    for since in ["1é", "é", "d", "-1d", "0d", "1", "1\u{0}d", huge, "9223372036854775807m", "3652060d"] {
        let audit =
            h.call(Method::POST, "/platform/v1/audits", Some(&auditor), Some(json!({"since": since}))).await;
        assert!(
            is_problem(&audit, StatusCode::BAD_REQUEST),
            "audit since {since:?}: {} {}",
            audit.status,
            audit.body
        );
        let preview = h
            .op(
                Method::POST,
                "/platform/v1/policies/preview",
                Some(json!({"policy_text": LEGACY, "since": since})),
            )
            .await;
        assert!(
            is_problem(&preview, StatusCode::BAD_REQUEST),
            "preview since {since:?}: {} {}",
            preview.status,
            preview.body
        );
    }
    // A long but representable window is fine, and says where it starts in RFC 3339.
    let long =
        h.call(Method::POST, "/platform/v1/audits", Some(&auditor), Some(json!({"since": "365000d"}))).await;
    assert_eq!(long.status, StatusCode::OK, "{}", long.body);
    let from = long.body["from"].as_str().unwrap_or_default();
    assert_eq!(Instant::parse(from).map(|t| t.to_string()).as_deref(), Ok(from), "{}", long.body);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A clock that moves one millisecond every time it is read, so that every instant taken is
/// distinct and their order is the order in which they were taken.
#[derive(Debug)]
struct TickingClock(AtomicI64);

impl Clock for TickingClock {
    fn now(&self) -> Instant {
        Instant::from_millis(self.0.fetch_add(1, Ordering::SeqCst))
    }
}

/// Keeps every record in the ledger and a copy in memory, to compare what was read back.
struct LedgerAndCopy(consentry_api::LedgerSink, Mutex<Vec<DisclosureRecord>>);

impl DisclosureSink for LedgerAndCopy {
    fn record(&self, record: &DisclosureRecord) -> Result<(), String> {
        self.0.record(record)?;
        self.1.lock().map_err(|e| e.to_string())?.push(record.clone());
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
enum Revocation {
    TokenRevoked,
    AppSuspended,
    AppRevoked,
    InstallationRemoved,
    ConsentWithdrawn,
    /// The legacy rules (everyone visible) replaced by groups-2018 (opt-in only).
    PolicyNarrowed,
}

impl Revocation {
    /// The member whose fields the revocation takes away from the app.
    fn witness(self) -> &'static str {
        match self {
            Revocation::PolicyNarrowed => "cat",
            _ => "bob",
        }
    }
}

/// Serves the members page from several tasks at once while `revocation` happens, then checks
/// the ledger: nothing it affects was recorded at or after its instant.
async fn race(revocation: Revocation, round: usize) -> (usize, usize) {
    let path =
        std::env::temp_dir().join(format!("consentry-race-{}-{round}-{revocation:?}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let store = Arc::new(SqliteStore::open(&path).unwrap_or_else(|e| unreachable!("{e}")));
    let clock = Arc::new(TickingClock(AtomicI64::new(1_600_000_000_000)));
    let service = Arc::new(Service::new(store, clock, ServerKey::generate(), ServiceConfig::default()));
    let operator =
        service.bootstrap_operator_key("test", "tester").ok().flatten().map(|k| k.key).unwrap_or_default();
    let officer = super::server_key(&service, "officer", OperatorRole::PrivacyOfficer);
    let dir = ledger_dir(&format!("race-{round}-{revocation:?}"));
    let ledger = Arc::new(
        consentry_ledger::Ledger::open(&dir, consentry_ledger::LedgerOptions::default())
            .unwrap_or_else(|e| unreachable!("{e}")),
    );
    let sink = Arc::new(LedgerAndCopy(consentry_api::LedgerSink(ledger), Mutex::new(Vec::new())));
    let h = Harness {
        router: app(ApiState::new(service.clone()).with_disclosures(sink.clone())),
        service,
        clock: Arc::new(SimulatedClock::starting_at(Instant::from_secs(0))),
        operator,
        officer,
        _conformance: super::conformance::Guard::new(),
    };
    let (app_id, client_id, secret) = h.world().await;
    let token = h.token(&client_id, &secret).await;
    if let Revocation::PolicyNarrowed = revocation {
        assert_eq!(h.policy(LEGACY).await.status, StatusCode::CREATED);
        let legacy = h.approve(2).await.op(
            Method::POST,
            "/platform/v1/policies/2/activate",
            Some(json!({"reason": "legacy"})),
        );
        assert_eq!(legacy.await.status, StatusCode::OK);
    }
    let witness = format!("{} name", revocation.witness());

    let served = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut requesters = Vec::new();
    for _ in 0..6 {
        let (router, token, witness) = (h.router.clone(), token.clone(), witness.clone());
        let (served, refused, stop) = (served.clone(), refused.clone(), stop.clone());
        requesters.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let request = Request::builder()
                    .uri("/v1/groups/hikers/members")
                    .header(header::AUTHORIZATION, format!("Bearer {token}"))
                    .body(Body::empty())
                    .unwrap_or_default();
                let response = router.clone().oneshot(request).await.unwrap_or_else(|e| match e {});
                let status = response.status();
                let bytes = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                if status == StatusCode::OK && bytes.windows(witness.len()).any(|w| w == witness.as_bytes()) {
                    served.fetch_add(1, Ordering::SeqCst);
                } else {
                    refused.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    while served.load(Ordering::SeqCst) < 20 {
        tokio::task::yield_now().await;
    }
    let done = match revocation {
        Revocation::TokenRevoked => {
            h.form("/oauth/revoke", &format!("token={token}"), Some((&client_id, &secret))).await.status
        }
        Revocation::AppSuspended => {
            h.op(Method::POST, &format!("/platform/v1/apps/{app_id}/suspend"), None).await.status
        }
        Revocation::AppRevoked => {
            h.op(Method::POST, &format!("/platform/v1/apps/{app_id}/revoke"), None).await.status
        }
        Revocation::InstallationRemoved => {
            h.op(Method::DELETE, &format!("/platform/v1/groups/hikers/installations/{app_id}"), None)
                .await
                .status
        }
        Revocation::ConsentWithdrawn => {
            h.op(Method::DELETE, &format!("/platform/v1/members/bob/consents/{app_id}"), None).await.status
        }
        Revocation::PolicyNarrowed => {
            h.op(Method::POST, "/platform/v1/policies/1/activate", Some(json!({"reason": "opt-in only"})))
                .await
                .status
        }
    };
    assert!(done.is_success(), "{revocation:?}: {done}");
    let refused_before = refused.load(Ordering::SeqCst);
    while refused.load(Ordering::SeqCst) < refused_before + 20 {
        tokio::task::yield_now().await;
    }
    stop.store(true, Ordering::SeqCst);
    for requester in requesters {
        let _ = requester.await;
    }

    // The revocation's instant, as the store keeps it.
    let store = h.service.store();
    let app = AppId::parse(&app_id).unwrap_or_else(|e| unreachable!("{e}"));
    let history = store.fact_history().unwrap_or_else(|e| unreachable!("{e}"));
    let copy = sink.1.lock().map(|r| r.clone()).unwrap_or_default();
    let revoked_at = match revocation {
        Revocation::TokenRevoked => {
            copy.first().and_then(|r| store.token(&r.token_hash).ok().flatten()).and_then(|t| t.revoked_at)
        }
        Revocation::AppSuspended | Revocation::AppRevoked => {
            history.app_statuses.iter().rev().find(|c| c.key == app).map(|c| c.at)
        }
        Revocation::InstallationRemoved => {
            history.installations.iter().rev().find(|c| c.key.0 == app && c.value.is_none()).map(|c| c.at)
        }
        Revocation::ConsentWithdrawn => history
            .profile_consents
            .iter()
            .rev()
            .find(|c| c.key.1 == app && c.key.0.as_str() == "bob" && !c.value)
            .map(|c| c.at),
        Revocation::PolicyNarrowed => history.activations.last().map(|a| a.at),
    }
    .unwrap_or_else(|| unreachable!("{revocation:?} left no instant"));
    let late: Vec<&DisclosureRecord> = copy
        .iter()
        .filter(|r| r.at >= revoked_at)
        .filter(|r| match revocation {
            Revocation::ConsentWithdrawn | Revocation::PolicyNarrowed => {
                !sent_member_fields(r, revocation.witness()).is_empty()
            }
            _ => r.app == app,
        })
        .collect();
    assert!(
        late.is_empty(),
        "{revocation:?} at {revoked_at}: {} of {} records of what it revoked are stamped at or after it, first {:?}",
        late.len(),
        copy.len(),
        late.first().map(|r| (r.at, &r.request_id))
    );
    assert!(copy
        .iter()
        .any(|r| r.at < revoked_at && !sent_member_fields(r, revocation.witness()).is_empty()));

    // Concurrent requests append their instants out of order; the ledger gives each back exactly.
    drop(h);
    let read: Vec<(String, Instant)> = consentry_ledger::Entries::open(&dir)
        .unwrap_or_else(|e| unreachable!("{e}"))
        .map(|e| e.map(|e| (e.record.request_id.clone(), e.record.at)))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| unreachable!("{e}"));
    let written: std::collections::HashMap<String, Instant> =
        copy.iter().map(|r| (r.request_id.clone(), r.at)).collect();
    assert_eq!(read.len(), written.len());
    assert_eq!(read.iter().cloned().collect::<std::collections::HashMap<_, _>>(), written);
    let out_of_order = read.windows(2).filter(|w| w[1].1 < w[0].1).count();
    let _ = std::fs::remove_dir_all(&dir);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    (copy.len(), out_of_order)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_disclosure_is_recorded_after_a_revocation_that_raced_it() {
    let mut out_of_order = 0;
    for round in 0..3 {
        for revocation in [
            Revocation::TokenRevoked,
            Revocation::AppSuspended,
            Revocation::AppRevoked,
            Revocation::InstallationRemoved,
            Revocation::ConsentWithdrawn,
            Revocation::PolicyNarrowed,
        ] {
            out_of_order += race(revocation, round).await.1;
        }
    }
    println!("records appended out of instant order and read back exactly: {out_of_order}");
}

#[test]
fn ledger_instants_out_of_order_round_trip() {
    let dir = ledger_dir("out-of-order");
    let base = 1_600_000_000_000i64;
    let offsets = [0i64, -5, 3, -1_000_000, 7, 7, i64::from(i32::MAX), -1];
    let record = |n: usize, offset: i64| DisclosureRecord {
        at: Instant::from_millis(base + offset),
        request_id: format!("r{n}"),
        app: AppId::parse("app1").unwrap_or_else(|e| unreachable!("{e}")),
        developer: consentry_types::DeveloperId::parse("dev").unwrap_or_else(|e| unreachable!("{e}")),
        group: consentry_types::GroupId::parse("g").unwrap_or_else(|e| unreachable!("{e}")),
        token_hash: "00".repeat(32),
        policy_version: 1,
        route: "GET /v1/groups/{id}/members".into(),
        disclosures: Vec::new(),
    };
    {
        let ledger = consentry_ledger::Ledger::open(&dir, consentry_ledger::LedgerOptions::default())
            .unwrap_or_else(|e| unreachable!("{e}"));
        for (n, offset) in offsets.iter().enumerate().take(4) {
            ledger.append(&record(n, *offset)).unwrap_or_else(|e| unreachable!("{e}"));
        }
    }
    // Reopened, the ledger goes on from the last record's instant, whichever it was.
    let ledger = consentry_ledger::Ledger::open(&dir, consentry_ledger::LedgerOptions::default())
        .unwrap_or_else(|e| unreachable!("{e}"));
    for (n, offset) in offsets.iter().enumerate().skip(4) {
        ledger.append(&record(n, *offset)).unwrap_or_else(|e| unreachable!("{e}"));
    }
    drop(ledger);
    let read: Vec<i64> = consentry_ledger::Entries::open(&dir)
        .unwrap_or_else(|e| unreachable!("{e}"))
        .map(|e| e.map(|e| e.record.at.millis() - base))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(read, offsets);
    assert!(consentry_ledger::verify(&dir, &[]).map(|r| r.ok()).unwrap_or(false));
    let _ = std::fs::remove_dir_all(&dir);
}
