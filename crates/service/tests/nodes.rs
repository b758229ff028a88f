//! Several nodes on one store (two handles on one SQLite file, as two nodes are): one server
//! key (the same app-scoped ids, each other's cursors, the same webhook secrets, through
//! rotations; a `server.key` of an earlier version keeps its meaning), and periodic jobs run
//! once per period.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the message

use std::sync::Arc;

use consentry_service::{load_server_key, KeyOrigin, ServerKey, Service, ServiceConfig, SimulatedClock};
use consentry_store::{SecretPurpose, Store};
use consentry_store_sqlite::SqliteStore;
use consentry_types::{AppId, DeveloperId, Instant, MemberId};

fn temp(name: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("consentry-keys-{name}-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// A node: its own handle on the store file, its own clock (set alike), keys from the store.
fn node(
    path: &std::path::Path,
    clock: &Arc<SimulatedClock>,
    legacy: Option<&ServerKey>,
) -> (Service, KeyOrigin) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(path).unwrap());
    let (key, origin) = load_server_key(store.as_ref(), legacy, clock.now_instant()).unwrap();
    (Service::new(store, clock.clone(), key, ServiceConfig::default()), origin)
}

trait Now {
    fn now_instant(&self) -> Instant;
}
impl Now for Arc<SimulatedClock> {
    fn now_instant(&self) -> Instant {
        consentry_service::Clock::now(self.as_ref())
    }
}

fn ids() -> (AppId, MemberId, DeveloperId) {
    (AppId::parse("app-1").unwrap(), MemberId::parse("bob").unwrap(), DeveloperId::parse("acme").unwrap())
}

#[test]
fn two_nodes_starting_at_once_share_one_key() {
    let path = temp("race");
    let clock = Arc::new(SimulatedClock::starting_at(Instant::from_secs(1_700_000_000)));
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| node(&path, &clock, None));
        let b = scope.spawn(|| node(&path, &clock, None));
        (a.join().unwrap(), b.join().unwrap())
    });
    let origins = [a.1, b.1];
    assert!(origins.contains(&KeyOrigin::Created) && origins.contains(&KeyOrigin::Store), "{origins:?}");
    let (app, member, developer) = ids();
    assert_eq!(a.0.scoped_member_id(&app, &member), b.0.scoped_member_id(&app, &member));
    assert_eq!(a.0.webhook_secret(&developer), b.0.webhook_secret(&developer));
    let cursor = a.0.server_key().seal_cursor("app-1/hikers/members", "m-42").unwrap();
    assert_eq!(b.0.server_key().open_cursor("app-1/hikers/members", &cursor).as_deref(), Some("m-42"));
    let _ = std::fs::remove_file(&path);
}

#[test]
fn rotating_cursor_and_webhook_keys_keeps_ids_and_overlaps_the_previous_key() {
    let path = temp("rotate");
    let clock = Arc::new(SimulatedClock::starting_at(Instant::from_secs(1_700_000_000)));
    let (a, _) = node(&path, &clock, None);
    let (b, _) = node(&path, &clock, None);
    let (app, member, developer) = ids();
    let id_before = a.scoped_member_id(&app, &member);
    let scope = "app-1/hikers/members";
    let old_cursor = a.server_key().seal_cursor(scope, "m-1").unwrap();
    let old_secret = a.webhook_secret(&developer);
    // a rotates the cursor key with an hour of overlap; b has not reloaded yet.
    assert_eq!(a.rotate_server_key(SecretPurpose::Cursor, 3_600), Ok(1));
    let new_cursor = a.server_key().seal_cursor(scope, "m-2").unwrap();
    assert_eq!(b.server_key().open_cursor(scope, &new_cursor), None, "b still has the old keys");
    b.reload_server_key().unwrap();
    assert_eq!(b.server_key().open_cursor(scope, &new_cursor).as_deref(), Some("m-2"));
    assert_eq!(b.server_key().open_cursor(scope, &old_cursor).as_deref(), Some("m-1"), "within the overlap");
    // Webhooks: both secrets sign during the overlap, the new one first, handed out.
    assert_eq!(b.rotate_server_key(SecretPurpose::Webhook, 3_600), Ok(1));
    a.reload_server_key().unwrap();
    let secrets = a.webhook_secrets(&developer);
    assert_eq!(secrets.len(), 2);
    assert_eq!(secrets[1], old_secret);
    assert_eq!(a.webhook_secret(&developer), secrets[0]);
    assert_ne!(secrets[0], old_secret);
    assert_eq!(b.webhook_secrets(&developer), secrets);
    // After the overlap only the new keys; app-scoped ids never changed.
    clock.advance_secs(3_601);
    a.reload_server_key().unwrap();
    assert_eq!(a.server_key().open_cursor(scope, &old_cursor), None);
    assert_eq!(a.server_key().open_cursor(scope, &new_cursor).as_deref(), Some("m-2"));
    assert_eq!(a.webhook_secrets(&developer), vec![secrets[0].clone()]);
    assert_eq!(a.scoped_member_id(&app, &member), id_before);
    assert_eq!(b.scoped_member_id(&app, &member), id_before);
    // The identity key never rotates.
    assert!(a.rotate_server_key(SecretPurpose::Identity, 0).is_err());
    // A second rotation chains from the first.
    assert_eq!(a.rotate_server_key(SecretPurpose::Cursor, 0), Ok(2));
    let _ = std::fs::remove_file(&path);
}

#[test]
fn an_earlier_server_key_file_keeps_its_meaning_and_a_different_one_is_refused() {
    let path = temp("legacy");
    let clock = Arc::new(SimulatedClock::starting_at(Instant::from_secs(1_700_000_000)));
    let legacy = ServerKey::generate();
    let (app, member, developer) = ids();
    let cursor = legacy.seal_cursor("s", "m-9").unwrap();
    let (a, origin) = node(&path, &clock, Some(&legacy));
    assert_eq!(origin, KeyOrigin::Imported);
    assert_eq!(a.scoped_member_id(&app, &member), legacy.scoped_member_id(&app, &member));
    assert_eq!(a.webhook_secret(&developer), legacy.webhook_secret(&developer));
    assert_eq!(a.server_key().open_cursor("s", &cursor).as_deref(), Some("m-9"));
    // The same file on another node is fine; a different one would give apps other ids.
    assert_eq!(node(&path, &clock, Some(&legacy)).1, KeyOrigin::Store);
    let store = SqliteStore::open(&path).unwrap();
    let refused = load_server_key(&store, Some(&ServerKey::generate()), clock.now_instant());
    assert!(matches!(&refused, Err(e) if e.to_string().contains("differs")), "{refused:?}");
    let _ = std::fs::remove_file(&path);
}

/// Two nodes run the same periodic jobs on one store, trying at the same time, again and
/// again over simulated days: each job runs once per period.
#[test]
fn two_nodes_run_each_job_once_per_period() {
    let path = temp("jobs");
    let clock = Arc::new(SimulatedClock::starting_at(Instant::from_secs(1_700_000_000)));
    let (a, _) = node(&path, &clock, None);
    let (b, _) = node(&path, &clock, None);
    let schedule =
        consentry_service::JobSchedule { every_secs: 86_400, lease_secs: 600, first_after_secs: 0 };
    let runs = std::sync::Mutex::new(Vec::<(String, i64)>::new());
    for _day in 0..5 {
        std::thread::scope(|scope| {
            for (service, name) in [(&a, "web-a"), (&b, "web-b")] {
                let runs = &runs;
                let clock = &clock;
                scope.spawn(move || {
                    for _ in 0..20 {
                        for job in ["expiry", "certification"] {
                            let ran = service.run_job(job, name, schedule, || -> Result<(), ()> {
                                runs.lock()
                                    .unwrap()
                                    .push((job.to_string(), clock.now_instant().secs() / 86_400));
                                Ok(())
                            });
                            assert!(ran.is_ok());
                        }
                    }
                });
            }
        });
        clock.advance_secs(86_400);
    }
    let mut runs = runs.into_inner().unwrap();
    runs.sort();
    let mut once = runs.clone();
    once.dedup();
    assert_eq!(runs, once, "a job ran twice in one day");
    assert_eq!(runs.len(), 10, "each job ran every day: {runs:?}");
    let _ = std::fs::remove_file(&path);
}
