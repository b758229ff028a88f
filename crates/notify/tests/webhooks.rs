//! Webhook delivery against a real HTTP receiver on loopback that is down, slow, failing,
//! then recovers; dead letters; and nothing lost across a restart.

#![allow(clippy::indexing_slicing)] // buffers are read within their length

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use consentry_notify::{signature, verify_signature, Deliverer, DeliveryOptions, PassReport, SignatureError};
use consentry_service::{ServerKey, Service, ServiceConfig, SimulatedClock};
use consentry_store::{DeliveryStatus, Store};
use consentry_store_sqlite::SqliteStore;
use consentry_types::{DeveloperId, GroupId, Instant, MemberId, Role, Scope};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Redirect,
    Fail500,
    Slow,
    Accept,
}

/// A receiver on a fixed port; `None` mode means nobody listens.
struct Receiver {
    port: u16,
    mode: Arc<Mutex<Option<Mode>>>,
    received: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    fn new() -> Receiver {
        let port =
            TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0);
        Receiver { port, mode: Arc::new(Mutex::new(None)), received: Arc::new(Mutex::new(Vec::new())) }
    }

    /// Starts listening (once) and serves each connection per the current mode.
    fn listen(&self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).unwrap_or_else(|e| unreachable!("{e}"));
        let (mode, received) = (self.mode.clone(), self.received.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (mode, received) = (mode.clone(), received.clone());
                // One thread a connection, so a slow answer does not hold up the next.
                std::thread::spawn(move || {
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 4096];
                    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
                    while let Ok(n) = stream.read(&mut buffer) {
                        if n == 0 {
                            break;
                        }
                        request.extend_from_slice(&buffer[..n]);
                        let text = String::from_utf8_lossy(&request);
                        if let Some((head, body)) = text.split_once("\r\n\r\n") {
                            let length = head
                                .lines()
                                .find_map(|l| l.strip_prefix("Content-Length: "))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            if body.len() >= length {
                                break;
                            }
                        }
                    }
                    let current = *mode.lock().unwrap_or_else(|e| e.into_inner());
                    let status = match current {
                        Some(Mode::Slow) => {
                            std::thread::sleep(Duration::from_millis(1_500));
                            "200 OK"
                        }
                        Some(Mode::Fail500) => "500 Internal Server Error",
                        Some(Mode::Redirect) => "302 Found\r\nLocation: http://127.0.0.1:9/elsewhere",
                        _ => {
                            received
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(String::from_utf8_lossy(&request).into_owned());
                            "200 OK"
                        }
                    };
                    let _ = stream
                        .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes());
                });
            }
        });
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap_or_else(|e| e.into_inner()) = Some(mode);
    }
}

fn ok(result: Result<(), consentry_service::ServiceError>) {
    result.unwrap_or_else(|e| unreachable!("{e}"));
}

/// A developer whose webhook points at `port`, with an app installed in a group.
fn world(
    store: Arc<dyn Store>,
    clock: Arc<SimulatedClock>,
    key: ServerKey,
    port: u16,
) -> (Arc<Service>, consentry_types::AppId) {
    let service = Arc::new(Service::new(store, clock, key, ServiceConfig::default()));
    let dev = DeveloperId::parse("acme").unwrap_or_else(|e| unreachable!("{e}"));
    ok(service.put_developer(&dev, "Acme", "p@acme.example", &format!("http://127.0.0.1:{port}/hook")));
    let group = GroupId::parse("g").unwrap_or_else(|e| unreachable!("{e}"));
    let ann = MemberId::parse("ann").unwrap_or_else(|e| unreachable!("{e}"));
    ok(service.put_group(&group, "G"));
    ok(service.put_member(&ann, "Ann", "https://p.example/a.jpg"));
    ok(service.set_membership(&group, &ann, Some(Role::Admin)));
    let app = service.register_app(&dev, "App", "analytics").unwrap_or_else(|e| unreachable!("{e}")).app.id;
    ok(service.install_app(&app, &group, &ann));
    (service, app)
}

fn options() -> DeliveryOptions {
    DeliveryOptions {
        timeout: Duration::from_millis(300),
        max_attempts: 5,
        first_backoff_secs: 30,
        max_backoff_secs: 3_600,
    }
}

#[test]
fn a_receiver_that_is_down_slow_and_failing_gets_the_event_once_it_recovers() {
    let receiver = Receiver::new();
    let clock = Arc::new(SimulatedClock::starting_at(Instant::from_secs(1_700_000_000)));
    let key = ServerKey::generate();
    let store = Arc::new(SqliteStore::in_memory().unwrap_or_else(|e| unreachable!("{e}")));
    let (service, _) = world(store.clone(), clock.clone(), key, receiver.port);
    let deliverer = Deliverer::new(service.clone(), options());
    // Down: nobody listens.
    assert_eq!(deliverer.deliver_due().ok(), Some(PassReport { delivered: 0, retrying: 1, dead: 0 }));
    assert_eq!(deliverer.deliver_due().ok(), Some(PassReport::default()), "the retry is not due yet");
    receiver.listen();
    receiver.set(Mode::Fail500);
    clock.advance_secs(30);
    assert_eq!(deliverer.deliver_due().ok(), Some(PassReport { delivered: 0, retrying: 1, dead: 0 }));
    receiver.set(Mode::Slow);
    clock.advance_secs(60);
    assert_eq!(
        deliverer.deliver_due().ok(),
        Some(PassReport { delivered: 0, retrying: 1, dead: 0 }),
        "too slow counts as failed"
    );
    receiver.set(Mode::Accept);
    clock.advance_secs(119);
    assert_eq!(deliverer.deliver_due().ok(), Some(PassReport::default()), "backoff doubles: 30, 60, 120 s");
    clock.advance_secs(1);
    assert_eq!(deliverer.deliver_due().ok(), Some(PassReport { delivered: 1, retrying: 0, dead: 0 }));
    let dev = DeveloperId::parse("acme").unwrap_or_else(|e| unreachable!("{e}"));
    let kept = store.notifications(&dev).unwrap_or_default();
    assert_eq!(
        kept.iter().map(|n| (n.event.as_str(), n.status, n.attempts)).collect::<Vec<_>>(),
        [("installation.created", DeliveryStatus::Delivered, 4)]
    );
    // What arrived is signed with the developer's secret over the timestamp and the body.
    let request =
        receiver.received.lock().map(|r| r.first().cloned().unwrap_or_default()).unwrap_or_default();
    let (head, body) = request.split_once("\r\n\r\n").unwrap_or_default();
    let header = head.lines().find_map(|l| l.strip_prefix("Consentry-Signature: ")).unwrap_or_default();
    let t: i64 =
        header.strip_prefix("t=").and_then(|r| r.split(',').next()).and_then(|t| t.parse().ok()).unwrap_or(0);
    assert_eq!(header, signature(&service.webhook_secret(&dev), t, body));
    assert_ne!(header, signature("whsec_wrong", t, body));
    assert!(
        body.contains("\"event\":\"installation.created\"")
            && head.contains("Consentry-Event: installation.created")
    );
}

#[test]
fn a_receiver_that_keeps_failing_gets_a_dead_letter_and_consent_events_carry_scoped_ids() {
    let receiver = Receiver::new();
    receiver.listen();
    receiver.set(Mode::Fail500);
    let clock = Arc::new(SimulatedClock::starting_at(Instant::from_secs(1_700_000_000)));
    let store = Arc::new(SqliteStore::in_memory().unwrap_or_else(|e| unreachable!("{e}")));
    let (service, app) = world(store.clone(), clock.clone(), ServerKey::generate(), receiver.port);
    let ann = MemberId::parse("ann").unwrap_or_else(|e| unreachable!("{e}"));
    ok(service.set_consent(&ann, &app, &[Scope::Profile]));
    ok(service.set_consent(&ann, &app, &[]));
    let deliverer = Deliverer::new(service.clone(), DeliveryOptions { max_attempts: 3, ..options() });
    for _ in 0..3 {
        assert!(deliverer.deliver_due().is_ok());
        clock.advance_secs(3_600);
    }
    let dev = DeveloperId::parse("acme").unwrap_or_else(|e| unreachable!("{e}"));
    let kept = store.notifications(&dev).unwrap_or_default();
    assert_eq!(
        kept.iter().map(|n| (n.event.as_str(), n.status)).collect::<Vec<_>>(),
        [("installation.created", DeliveryStatus::Dead), ("consent.revoked", DeliveryStatus::Dead)]
    );
    let revoked = kept.get(1).map(|n| n.payload.clone()).unwrap_or_default();
    assert!(
        revoked.contains(&service.scoped_member_id(&app, &ann)) && !revoked.contains("\"ann\""),
        "{revoked}"
    );
    assert!(kept.iter().all(|n| n.last_error.as_deref() == Some("the endpoint answered 500")));
}

#[test]
fn nothing_is_lost_across_a_restart() {
    let receiver = Receiver::new();
    let path = std::env::temp_dir().join(format!("consentry-webhooks-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let clock = Arc::new(SimulatedClock::starting_at(Instant::from_secs(1_700_000_000)));
    let key = ServerKey::generate();
    {
        let store = Arc::new(SqliteStore::open(&path).unwrap_or_else(|e| unreachable!("{e}")));
        let (service, app) = world(store, clock.clone(), key.clone(), receiver.port);
        ok(service.set_app_status(&app, consentry_types::AppStatus::Suspended));
        // The receiver is down: both events stay pending when the process stops.
        let report = Deliverer::new(service, options()).deliver_due().ok();
        assert_eq!(report, Some(PassReport { delivered: 0, retrying: 2, dead: 0 }));
    }
    receiver.listen();
    receiver.set(Mode::Accept);
    clock.advance_secs(30);
    let store = Arc::new(SqliteStore::open(&path).unwrap_or_else(|e| unreachable!("{e}")));
    let service = Arc::new(Service::new(store, clock, key, ServiceConfig::default()));
    assert_eq!(
        Deliverer::new(service, options()).deliver_due().ok(),
        Some(PassReport { delivered: 2, retrying: 0, dead: 0 })
    );
    let events: Vec<String> = receiver
        .received
        .lock()
        .map(|r| {
            r.iter()
                .filter_map(|q| q.lines().find_map(|l| l.strip_prefix("Consentry-Event: ")).map(String::from))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(events, ["installation.created", "app.suspended"]);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn redirects_are_not_followed_and_tls_failures_are_reported() {
    let receiver = Receiver::new();
    receiver.listen();
    receiver.set(Mode::Redirect);
    let clock = Arc::new(SimulatedClock::starting_at(Instant::from_secs(1_700_000_000)));
    let store = Arc::new(SqliteStore::in_memory().unwrap_or_else(|e| unreachable!("{e}")));
    let (service, _) = world(store.clone(), clock.clone(), ServerKey::generate(), receiver.port);
    let deliverer = Deliverer::new(service.clone(), options());
    assert_eq!(deliverer.deliver_due().ok(), Some(PassReport { delivered: 0, retrying: 1, dead: 0 }));
    clock.advance_secs(30);
    let dev = DeveloperId::parse("acme").unwrap_or_else(|e| unreachable!("{e}"));
    let kept = store.notifications(&dev).unwrap_or_default();
    assert_eq!(kept.first().and_then(|n| n.last_error.clone()).as_deref(), Some("the endpoint answered 302"));
    // An https endpoint that does not speak TLS: a clear transport error, no panic.
    ok(service.put_developer(
        &dev,
        "Acme",
        "p@acme.example",
        &format!("https://127.0.0.1:{}/hook", receiver.port),
    ));
    let second = Deliverer::new(service, options());
    assert_eq!(second.deliver_due().ok(), Some(PassReport { delivered: 0, retrying: 1, dead: 0 }));
    let error = store
        .notifications(&dev)
        .unwrap_or_default()
        .first()
        .and_then(|n| n.last_error.clone())
        .unwrap_or_default();
    assert!(error.starts_with("cannot deliver"), "{error}");
}

#[test]
fn a_developer_refuses_bad_signatures() {
    let (secret, body, t) = ("whsec_test", r#"{"event":"consent.revoked"}"#, 1_700_000_000);
    let header = signature(secret, t, body);
    assert_eq!(verify_signature(secret, &header, body, t + 10, 300), Ok(()));
    assert_eq!(verify_signature("whsec_other", &header, body, t, 300), Err(SignatureError::Mismatch));
    assert_eq!(
        verify_signature(secret, &header, r#"{"event":"consent.granted"}"#, t, 300),
        Err(SignatureError::Mismatch)
    );
    // Replaying an old delivery: the signature is right but too old.
    assert_eq!(verify_signature(secret, &header, body, t + 3_600, 300), Err(SignatureError::TooOld(3_600)));
    // A replay with a fresh timestamp but the old signature does not match.
    let moved = header.replacen(&format!("t={t}"), &format!("t={}", t + 3_600), 1);
    assert_eq!(verify_signature(secret, &moved, body, t + 3_600, 300), Err(SignatureError::Mismatch));
    for malformed in ["", "v1=abc", "t=x,v1=abc", "t=1,v2=abc", "garbage"] {
        assert_eq!(
            verify_signature(secret, malformed, body, t, 300),
            Err(SignatureError::Malformed),
            "{malformed:?}"
        );
    }
}
