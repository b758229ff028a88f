//! Webhook delivery against real HTTP endpoints on loopback (served by axum) that are down,
//! slow, failing, redirecting or not speaking TLS; dead letters; nothing lost across a
//! restart; failures recorded as classes; the delivery id signed inside the body and `t`
//! stamped at each attempt; one slow endpoint not holding up the others; targets refused at
//! delivery, connected to at the address checked; signatures against an independent vector.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use consentry_notify::{
    signature, verify_signature, Deliverer, DeliveryOptions, PassReport, SignatureError, SystemResolver,
};
use consentry_service::{HostResolver, ServerKey, Service, ServiceConfig, SimulatedClock, WebhookTargets};
use consentry_store::{DeliveryStatus, Notification, Store};
use consentry_store_sqlite::SqliteStore;
use consentry_types::{AppId, Developer, DeveloperId, GroupId, Instant, MemberId, Role, Scope};

const T0: i64 = 1_700_000_000;

/// What an endpoint does with the next request.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Behaviour {
    Accept,
    Status(u16),
    Redirect,
    /// Answers 200, but only after this long.
    Sleep(Duration),
}

/// One request as the endpoint saw it.
#[derive(Clone, Debug)]
struct Arrival {
    arrived: std::time::Instant,
    answered: Behaviour,
    host: String,
    event: String,
    delivery: String,
    signature: String,
    body: String,
}

struct EndpointState {
    behaviour: Mutex<Behaviour>,
    arrivals: Mutex<Vec<Arrival>>,
    /// Each request moves this clock on by `tick` seconds (the time the endpoint takes).
    clock: Mutex<Option<(Arc<SimulatedClock>, i64)>>,
}

/// A developer's webhook endpoint on a loopback port; nobody listens until `listen`.
struct Endpoint {
    port: u16,
    state: Arc<EndpointState>,
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

async fn receive(
    axum::extract::State(state): axum::extract::State<Arc<EndpointState>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let behaviour = *state.behaviour.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((clock, tick)) = state.clock.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        clock.advance_secs(*tick);
    }
    state.arrivals.lock().unwrap_or_else(|e| e.into_inner()).push(Arrival {
        arrived: std::time::Instant::now(),
        answered: behaviour,
        host: header(&headers, "host"),
        event: header(&headers, "consentry-event"),
        delivery: header(&headers, "consentry-delivery"),
        signature: header(&headers, "consentry-signature"),
        body,
    });
    match behaviour {
        Behaviour::Accept => StatusCode::OK.into_response(),
        Behaviour::Status(code) => {
            StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT).into_response()
        }
        Behaviour::Redirect => {
            (StatusCode::FOUND, [("location", "http://127.0.0.1:9/elsewhere")]).into_response()
        }
        Behaviour::Sleep(how_long) => {
            tokio::time::sleep(how_long).await;
            StatusCode::OK.into_response()
        }
    }
}

impl Endpoint {
    fn new(behaviour: Behaviour) -> Endpoint {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(0);
        let state = EndpointState {
            behaviour: Mutex::new(behaviour),
            arrivals: Mutex::new(Vec::new()),
            clock: Mutex::new(None),
        };
        Endpoint { port, state: Arc::new(state) }
    }

    /// An endpoint already listening.
    fn listening(behaviour: Behaviour) -> Endpoint {
        let endpoint = Endpoint::new(behaviour);
        endpoint.listen();
        endpoint
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Starts serving on the endpoint's port, on a runtime of its own.
    fn listen(&self) {
        let listener =
            std::net::TcpListener::bind(("127.0.0.1", self.port)).unwrap_or_else(|e| unreachable!("{e}"));
        listener.set_nonblocking(true).unwrap_or_else(|e| unreachable!("{e}"));
        let router = axum::Router::new().fallback(receive).with_state(self.state.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| unreachable!("{e}"));
            runtime.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener).unwrap_or_else(|e| unreachable!("{e}"));
                let _ = axum::serve(listener, router).await;
            });
        });
    }

    fn set(&self, behaviour: Behaviour) {
        *self.state.behaviour.lock().unwrap_or_else(|e| e.into_inner()) = behaviour;
    }

    /// Every request moves `clock` on by `secs`.
    fn takes(&self, clock: Arc<SimulatedClock>, secs: i64) {
        *self.state.clock.lock().unwrap_or_else(|e| e.into_inner()) = Some((clock, secs));
    }

    fn arrivals(&self) -> Vec<Arrival> {
        self.state.arrivals.lock().map(|a| a.clone()).unwrap_or_default()
    }

    fn accepted(&self) -> Vec<Arrival> {
        self.arrivals().into_iter().filter(|a| a.answered == Behaviour::Accept).collect()
    }
}

fn ok(result: Result<(), consentry_service::ServiceError>) {
    result.unwrap_or_else(|e| unreachable!("{e}"));
}

fn dev(id: &str) -> DeveloperId {
    DeveloperId::parse(id).unwrap_or_else(|e| unreachable!("{e}"))
}

fn clock() -> Arc<SimulatedClock> {
    Arc::new(SimulatedClock::starting_at(Instant::from_secs(T0)))
}

fn memory_store() -> Arc<SqliteStore> {
    Arc::new(SqliteStore::in_memory().unwrap_or_else(|e| unreachable!("{e}")))
}

/// Local development: loopback and plain http allowed, names resolved by the system.
fn local_targets() -> WebhookTargets {
    WebhookTargets::strict().allow_local(true).with_resolver(Arc::new(SystemResolver))
}

fn service_with(
    store: Arc<dyn Store>,
    clock: Arc<SimulatedClock>,
    key: ServerKey,
    targets: WebhookTargets,
) -> Arc<Service> {
    Arc::new(Service::new(store, clock, key, ServiceConfig::default()).with_webhook_targets(targets))
}

/// A group with admin ann, for developers' apps to be installed in.
fn group(service: &Service) -> (GroupId, MemberId) {
    let group = GroupId::parse("g").unwrap_or_else(|e| unreachable!("{e}"));
    let ann = MemberId::parse("ann").unwrap_or_else(|e| unreachable!("{e}"));
    ok(service.put_group(&group, "G"));
    ok(service.put_member(&ann, "Ann", "https://p.example/a.jpg"));
    ok(service.set_membership(&group, &ann, Some(Role::Admin)));
    (group, ann)
}

/// Registers `developer` with its webhook at `url`, and installs an app of it (which queues
/// `installation.created`).
fn developer_with_app(service: &Service, developer: &str, url: &str) -> AppId {
    let (group, ann) = (GroupId::parse("g").unwrap_or_else(|e| unreachable!("{e}")), MemberId::parse("ann"));
    let ann = ann.unwrap_or_else(|e| unreachable!("{e}"));
    ok(service.put_developer(&dev(developer), developer, "p@dev.example", url));
    let app =
        service.register_app(&dev(developer), "App", "analytics").unwrap_or_else(|e| unreachable!("{e}"));
    ok(service.install_app(&app.app.id, &group, &ann));
    app.app.id
}

/// Developer `acme`, its webhook at `url`, with an app installed in a group.
fn world(
    store: Arc<dyn Store>,
    clock: Arc<SimulatedClock>,
    key: ServerKey,
    url: &str,
) -> (Arc<Service>, AppId) {
    let service = service_with(store, clock, key, local_targets());
    group(&service);
    let app = developer_with_app(&service, "acme", url);
    (service, app)
}

fn options() -> DeliveryOptions {
    DeliveryOptions {
        timeout: Duration::from_millis(500),
        max_attempts: 5,
        first_backoff_secs: 30,
        max_backoff_secs: 3_600,
        ..DeliveryOptions::default()
    }
}

fn kept(store: &dyn Store, developer: &str) -> Vec<Notification> {
    store.notifications(&dev(developer)).unwrap_or_default()
}

fn last_errors(store: &dyn Store, developer: &str) -> Vec<Option<String>> {
    kept(store, developer).into_iter().map(|n| n.last_error).collect()
}

fn t_of(signature_header: &str) -> i64 {
    signature_header
        .strip_prefix("t=")
        .and_then(|r| r.split(',').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or(i64::MIN)
}

#[test]
fn a_receiver_that_is_down_slow_and_failing_gets_the_event_once_it_recovers() {
    let endpoint = Endpoint::new(Behaviour::Accept);
    let clock = clock();
    let store = memory_store();
    let (service, _) = world(store.clone(), clock.clone(), ServerKey::generate(), &endpoint.url());
    let deliverer = Deliverer::new(service.clone(), options());
    // Down: nobody listens.
    assert_eq!(deliverer.deliver_due().ok(), Some(PassReport { delivered: 0, retrying: 1, dead: 0 }));
    assert_eq!(last_errors(store.as_ref(), "acme"), [Some("connect_failed".to_string())]);
    assert_eq!(deliverer.deliver_due().ok(), Some(PassReport::default()), "the retry is not due yet");
    endpoint.listen();
    endpoint.set(Behaviour::Status(500));
    clock.advance_secs(30);
    assert_eq!(deliverer.deliver_due().ok(), Some(PassReport { delivered: 0, retrying: 1, dead: 0 }));
    assert_eq!(last_errors(store.as_ref(), "acme"), [Some("http_5xx 500".to_string())]);
    endpoint.set(Behaviour::Sleep(Duration::from_millis(1_500)));
    clock.advance_secs(60);
    assert_eq!(
        deliverer.deliver_due().ok(),
        Some(PassReport { delivered: 0, retrying: 1, dead: 0 }),
        "too slow counts as failed"
    );
    assert_eq!(last_errors(store.as_ref(), "acme"), [Some("timeout".to_string())]);
    endpoint.set(Behaviour::Accept);
    clock.advance_secs(119);
    assert_eq!(deliverer.deliver_due().ok(), Some(PassReport::default()), "backoff doubles: 30, 60, 120 s");
    clock.advance_secs(1);
    assert_eq!(deliverer.deliver_due().ok(), Some(PassReport { delivered: 1, retrying: 0, dead: 0 }));
    assert_eq!(
        kept(store.as_ref(), "acme")
            .iter()
            .map(|n| (n.event.as_str(), n.status, n.attempts))
            .collect::<Vec<_>>(),
        [("installation.created", DeliveryStatus::Delivered, 4)]
    );
    // What arrived is signed with the developer's secret over the timestamp and the body.
    let accepted = endpoint.accepted();
    let arrival = accepted.first().cloned().unwrap_or_else(|| unreachable!("nothing was accepted"));
    let t = t_of(&arrival.signature);
    assert_eq!(arrival.signature, signature(&service.webhook_secret(&dev("acme")), t, &arrival.body));
    assert_ne!(arrival.signature, signature("whsec_wrong", t, &arrival.body));
    assert!(arrival.body.contains("\"event\":\"installation.created\""), "{}", arrival.body);
    assert_eq!(arrival.event, "installation.created");
}

#[test]
fn a_receiver_that_keeps_failing_gets_a_dead_letter_and_consent_events_carry_scoped_ids() {
    let endpoint = Endpoint::listening(Behaviour::Status(503));
    let clock = clock();
    let store = memory_store();
    let (service, app) = world(store.clone(), clock.clone(), ServerKey::generate(), &endpoint.url());
    let ann = MemberId::parse("ann").unwrap_or_else(|e| unreachable!("{e}"));
    ok(service.set_consent(&ann, &app, &[Scope::Profile]));
    ok(service.set_consent(&ann, &app, &[]));
    let deliverer = Deliverer::new(service.clone(), DeliveryOptions { max_attempts: 3, ..options() });
    for _ in 0..3 {
        assert!(deliverer.deliver_due().is_ok());
        clock.advance_secs(3_600);
    }
    let kept = kept(store.as_ref(), "acme");
    assert_eq!(
        kept.iter().map(|n| (n.event.as_str(), n.status)).collect::<Vec<_>>(),
        [("installation.created", DeliveryStatus::Dead), ("consent.revoked", DeliveryStatus::Dead)]
    );
    let revoked = kept.get(1).map(|n| n.payload.clone()).unwrap_or_default();
    assert!(
        revoked.contains(&service.scoped_member_id(&app, &ann)) && !revoked.contains("\"ann\""),
        "{revoked}"
    );
    // The class and the status code, never the endpoint's words.
    assert!(kept.iter().all(|n| n.last_error.as_deref() == Some("http_5xx 503")), "{kept:?}");
}

#[test]
fn nothing_is_lost_across_a_restart() {
    let endpoint = Endpoint::new(Behaviour::Accept);
    let path = std::env::temp_dir().join(format!("consentry-webhooks-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let clock = clock();
    let key = ServerKey::generate();
    {
        let store = Arc::new(SqliteStore::open(&path).unwrap_or_else(|e| unreachable!("{e}")));
        let (service, app) = world(store, clock.clone(), key.clone(), &endpoint.url());
        ok(service.set_app_status(&app, consentry_types::AppStatus::Suspended));
        // The endpoint is down: both events stay pending when the process stops.
        let report = Deliverer::new(service, options()).deliver_due().ok();
        assert_eq!(report, Some(PassReport { delivered: 0, retrying: 2, dead: 0 }));
    }
    endpoint.listen();
    clock.advance_secs(30);
    let store = Arc::new(SqliteStore::open(&path).unwrap_or_else(|e| unreachable!("{e}")));
    let service = service_with(store, clock, key, local_targets());
    assert_eq!(
        Deliverer::new(service, options()).deliver_due().ok(),
        Some(PassReport { delivered: 2, retrying: 0, dead: 0 })
    );
    let events: Vec<String> = endpoint.accepted().into_iter().map(|a| a.event).collect();
    assert_eq!(events, ["installation.created", "app.suspended"]);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn redirects_are_not_followed_and_tls_failures_are_reported_as_classes() {
    let endpoint = Endpoint::listening(Behaviour::Redirect);
    let clock = clock();
    let store = memory_store();
    let (service, _) = world(store.clone(), clock.clone(), ServerKey::generate(), &endpoint.url());
    let deliverer = Deliverer::new(service.clone(), options());
    assert_eq!(deliverer.deliver_due().ok(), Some(PassReport { delivered: 0, retrying: 1, dead: 0 }));
    assert_eq!(last_errors(store.as_ref(), "acme"), [Some("redirect_refused 302".to_string())]);
    assert_eq!(endpoint.arrivals().len(), 1, "the redirect was not followed");
    // An https endpoint that does not speak TLS: a class, no panic.
    clock.advance_secs(30);
    ok(service.put_developer(
        &dev("acme"),
        "Acme",
        "p@acme.example",
        &format!("https://127.0.0.1:{}/hook", endpoint.port),
    ));
    assert_eq!(deliverer.deliver_due().ok(), Some(PassReport { delivered: 0, retrying: 1, dead: 0 }));
    assert_eq!(last_errors(store.as_ref(), "acme"), [Some("tls_failed".to_string())]);
}

#[test]
fn errors_are_recorded_as_classes_never_as_the_transports_words() {
    // Refused connection, a 4xx with its code, and a timeout, each for its own developer.
    let refusing = Endpoint::new(Behaviour::Accept);
    let missing = Endpoint::listening(Behaviour::Status(404));
    let hanging = Endpoint::listening(Behaviour::Sleep(Duration::from_secs(5)));
    let store = memory_store();
    let service = service_with(store.clone(), clock(), ServerKey::generate(), local_targets());
    group(&service);
    developer_with_app(&service, "refusing", &refusing.url());
    developer_with_app(&service, "missing", &missing.url());
    developer_with_app(&service, "hanging", &hanging.url());
    let report = Deliverer::new(service, options()).deliver_due().ok();
    assert_eq!(report, Some(PassReport { delivered: 0, retrying: 3, dead: 0 }));
    assert_eq!(last_errors(store.as_ref(), "refusing"), [Some("connect_failed".to_string())]);
    assert_eq!(last_errors(store.as_ref(), "missing"), [Some("http_4xx 404".to_string())]);
    assert_eq!(last_errors(store.as_ref(), "hanging"), [Some("timeout".to_string())]);
}

#[test]
fn a_target_stored_before_the_checks_is_refused_at_delivery_and_never_contacted() {
    // A developer row written straight to the store (as by an older version) points at
    // loopback; the server does not allow local webhooks.
    let endpoint = Endpoint::listening(Behaviour::Accept);
    let store = memory_store();
    let service = service_with(
        store.clone(),
        clock(),
        ServerKey::generate(),
        WebhookTargets::strict().with_resolver(Arc::new(SystemResolver)),
    );
    group(&service);
    developer_with_app(&service, "acme", "https://acme.example/hook");
    for url in [
        endpoint.url(),
        format!("https://127.0.0.1:{}/hook", endpoint.port),
        format!("http://[::ffff:127.0.0.1]:{}/", endpoint.port),
    ] {
        let developer = Developer {
            id: dev("acme"),
            name: "Acme".into(),
            contact_email: "p@acme.example".into(),
            webhook_url: url,
        };
        assert!(store.put_developer(&developer, Instant::from_secs(T0)).is_ok());
        let deliverer = Deliverer::new(service.clone(), DeliveryOptions { max_attempts: 10, ..options() });
        assert_eq!(deliverer.deliver_due().ok(), Some(PassReport { delivered: 0, retrying: 1, dead: 0 }));
        assert_eq!(last_errors(store.as_ref(), "acme"), [Some("refused_target".to_string())]);
        assert_eq!(endpoint.arrivals().len(), 0, "a refused target is never contacted");
        // Due again, to try the next spelling.
        let id = kept(store.as_ref(), "acme").first().map(|n| n.id).unwrap_or(0);
        let _ = store.record_delivery(
            id,
            DeliveryStatus::Pending,
            Instant::from_secs(T0),
            Some("refused_target"),
        );
    }
}

#[test]
fn the_delivery_id_is_inside_the_signed_body_and_a_retry_is_signed_afresh() {
    let endpoint = Endpoint::listening(Behaviour::Status(500));
    let clock = clock();
    let store = memory_store();
    let (service, _) = world(store.clone(), clock.clone(), ServerKey::generate(), &endpoint.url());
    let deliverer = Deliverer::new(service.clone(), options());
    assert!(deliverer.deliver_due().is_ok());
    clock.advance_secs(30);
    endpoint.set(Behaviour::Accept);
    assert_eq!(deliverer.deliver_due().ok(), Some(PassReport { delivered: 1, retrying: 0, dead: 0 }));
    let arrivals = endpoint.arrivals();
    let [first, retry] = arrivals.as_slice() else { unreachable!("two attempts expected: {arrivals:?}") };
    let secret = service.webhook_secret(&dev("acme"));
    // The id developers deduplicate by is in the body, so the signature covers it.
    let id = kept(store.as_ref(), "acme").first().map(|n| n.id.to_string()).unwrap_or_default();
    assert_eq!(first.delivery, id);
    assert!(
        first.body.starts_with(&format!("{{\"id\":\"{id}\",\"event\":\"installation.created\"")),
        "{}",
        first.body
    );
    assert_eq!(retry.body, first.body, "a retry sends the same event, same id");
    // Each attempt carries the time it was sent and a signature of its own.
    assert_eq!((t_of(&first.signature), t_of(&retry.signature)), (T0, T0 + 30));
    assert_ne!(first.signature, retry.signature);
    for arrival in [first, retry] {
        let now = t_of(&arrival.signature);
        assert_eq!(verify_signature(&secret, &arrival.signature, &arrival.body, now, 300), Ok(()));
        // Changing the id in the body breaks the signature.
        let other = arrival.body.replacen(&format!("\"id\":\"{id}\""), "\"id\":\"999\"", 1);
        assert_eq!(
            verify_signature(&secret, &arrival.signature, &other, now, 300),
            Err(SignatureError::Mismatch)
        );
    }
}

#[test]
fn each_attempt_is_stamped_when_it_is_sent_not_when_the_pass_began() {
    // Two events for one developer; the endpoint takes a simulated minute for each.
    let endpoint = Endpoint::listening(Behaviour::Accept);
    let clock = clock();
    let store = memory_store();
    let (service, app) = world(store.clone(), clock.clone(), ServerKey::generate(), &endpoint.url());
    ok(service.set_app_status(&app, consentry_types::AppStatus::Suspended));
    endpoint.takes(clock.clone(), 60);
    let report = Deliverer::new(service.clone(), options()).deliver_due().ok();
    assert_eq!(report, Some(PassReport { delivered: 2, retrying: 0, dead: 0 }));
    let stamped: Vec<(String, i64)> =
        endpoint.arrivals().into_iter().map(|a| (a.event, t_of(&a.signature))).collect();
    assert_eq!(stamped, [("installation.created".to_string(), T0), ("app.suspended".to_string(), T0 + 60)]);
    // Both verify at the instant they arrived, with a tight tolerance.
    let secret = service.webhook_secret(&dev("acme"));
    for arrival in endpoint.arrivals() {
        let t = t_of(&arrival.signature);
        assert_eq!(verify_signature(&secret, &arrival.signature, &arrival.body, t + 1, 5), Ok(()));
    }
}

#[test]
fn a_slow_endpoint_does_not_hold_up_another_developers_delivery() {
    let timeout = Duration::from_secs(2);
    // The slow developer's event is first in the outbox; its endpoint answers after the timeout.
    let slow = Endpoint::listening(Behaviour::Sleep(timeout * 3));
    let fast = Endpoint::listening(Behaviour::Accept);
    let store = memory_store();
    let service = service_with(store.clone(), clock(), ServerKey::generate(), local_targets());
    group(&service);
    developer_with_app(&service, "slow", &slow.url());
    developer_with_app(&service, "fast", &fast.url());
    let first_id = |d: &str| kept(store.as_ref(), d).first().map(|n| n.id).unwrap_or(0);
    assert!(first_id("slow") < first_id("fast"), "the slow developer's event comes first");
    let started = std::time::Instant::now();
    let report = Deliverer::new(service, DeliveryOptions { timeout, ..options() }).deliver_due().ok();
    assert_eq!(report, Some(PassReport { delivered: 1, retrying: 1, dead: 0 }));
    let (Some(slow_arrival), Some(fast_arrival)) =
        (slow.arrivals().first().map(|a| a.arrived), fast.arrivals().first().map(|a| a.arrived))
    else {
        unreachable!("both endpoints should have been reached")
    };
    // The fast one was delivered while the slow one was still in flight, not after its timeout.
    assert!(
        fast_arrival < started + timeout && fast_arrival < slow_arrival + timeout,
        "the fast endpoint waited {:?} after the pass began",
        fast_arrival.saturating_duration_since(started)
    );
    assert_eq!(last_errors(store.as_ref(), "slow"), [Some("timeout".to_string())]);
    assert_eq!(last_errors(store.as_ref(), "fast"), [None]);
}

#[test]
fn the_background_deliverer_delivers_new_events_while_one_endpoint_hangs() {
    let hanging = Endpoint::listening(Behaviour::Sleep(Duration::from_secs(30)));
    let fast = Endpoint::listening(Behaviour::Accept);
    let store = memory_store();
    let clock = clock();
    let service = service_with(store.clone(), clock.clone(), ServerKey::generate(), local_targets());
    group(&service);
    developer_with_app(&service, "hanging", &hanging.url());
    let deliverer =
        Deliverer::new(service.clone(), DeliveryOptions { timeout: Duration::from_secs(20), ..options() });
    let stop = Arc::new(AtomicBool::new(false));
    let running = {
        let stop = stop.clone();
        std::thread::spawn(move || deliverer.run(Duration::from_millis(50), &stop))
    };
    // Once the hanging endpoint holds its request, a new event for another developer arrives.
    let waited = wait_for(|| !hanging.arrivals().is_empty());
    assert!(waited, "the hanging endpoint was never reached");
    developer_with_app(&service, "fast", &fast.url());
    let delivered = wait_for(|| !fast.accepted().is_empty());
    stop.store(true, Ordering::SeqCst);
    assert!(delivered, "the new event waited behind the hanging endpoint");
    assert_eq!(hanging.accepted().len(), 0, "still in flight");
    drop(running);
}

/// Polls `done` for up to 10 s.
fn wait_for(done: impl Fn() -> bool) -> bool {
    for _ in 0..1_000 {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    done()
}

/// Answers from a script, counting how often it is asked.
struct ScriptedResolver {
    answers: Mutex<Vec<Vec<IpAddr>>>,
    asked: AtomicUsize,
}

impl ScriptedResolver {
    fn new(answers: Vec<Vec<IpAddr>>) -> Arc<ScriptedResolver> {
        Arc::new(ScriptedResolver { answers: Mutex::new(answers), asked: AtomicUsize::new(0) })
    }
}

impl HostResolver for ScriptedResolver {
    fn resolve(&self, _host: &str, _port: u16) -> std::io::Result<Vec<IpAddr>> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        if answers.is_empty() {
            return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no such name"));
        }
        Ok(answers.remove(0))
    }
}

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const PUBLIC: IpAddr = IpAddr::V4(Ipv4Addr::new(93, 184, 215, 14));
const DOCUMENTATION: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));

#[test]
fn a_name_that_rebinds_to_a_forbidden_address_is_refused_at_delivery() {
    // Public at registration, loopback at delivery (DNS rebinding); local webhooks not allowed.
    let endpoint = Endpoint::listening(Behaviour::Accept);
    let resolver = ScriptedResolver::new(vec![vec![PUBLIC], vec![PUBLIC, LOOPBACK]]);
    let store = memory_store();
    let service = service_with(
        store.clone(),
        clock(),
        ServerKey::generate(),
        WebhookTargets::strict().with_resolver(resolver.clone()),
    );
    group(&service);
    developer_with_app(&service, "acme", &format!("https://rebind.example:{}/hook", endpoint.port));
    let report = Deliverer::new(service, options()).deliver_due().ok();
    assert_eq!(report, Some(PassReport { delivered: 0, retrying: 1, dead: 0 }));
    assert_eq!(last_errors(store.as_ref(), "acme"), [Some("refused_target".to_string())]);
    assert_eq!(resolver.asked.load(Ordering::SeqCst), 2, "once at registration, once at delivery");
    assert_eq!(endpoint.arrivals().len(), 0);
}

#[test]
fn a_name_that_does_not_resolve_at_delivery_is_a_dns_failure() {
    let resolver = ScriptedResolver::new(vec![]);
    let store = memory_store();
    let service = service_with(
        store.clone(),
        clock(),
        ServerKey::generate(),
        WebhookTargets::strict().with_resolver(resolver),
    );
    group(&service);
    // Not resolvable at registration either: accepted there, checked at each delivery.
    developer_with_app(&service, "acme", "https://not-yet.example/hook");
    let report = Deliverer::new(service, options()).deliver_due().ok();
    assert_eq!(report, Some(PassReport { delivered: 0, retrying: 1, dead: 0 }));
    assert_eq!(last_errors(store.as_ref(), "acme"), [Some("dns_failed".to_string())]);
}

#[test]
fn the_connection_goes_to_the_address_checked_and_keeps_the_urls_host() {
    // The first answer is the one checked; a second lookup would get an unreachable address.
    let endpoint = Endpoint::listening(Behaviour::Accept);
    let resolver = ScriptedResolver::new(vec![vec![LOOPBACK], vec![DOCUMENTATION]]);
    let store = memory_store();
    let targets = WebhookTargets::strict().allow_local(true).with_resolver(resolver.clone());
    let service = service_with(store.clone(), clock(), ServerKey::generate(), targets);
    group(&service);
    // Registered by a literal address, then the row is changed to a name (no lookup yet).
    developer_with_app(&service, "acme", &endpoint.url());
    let developer = Developer {
        id: dev("acme"),
        name: "Acme".into(),
        contact_email: "p@acme.example".into(),
        webhook_url: format!("http://hooks.acme.test:{}/hook", endpoint.port),
    };
    assert!(store.put_developer(&developer, Instant::from_secs(T0)).is_ok());
    let report = Deliverer::new(service, options()).deliver_due().ok();
    assert_eq!(report, Some(PassReport { delivered: 1, retrying: 0, dead: 0 }));
    assert_eq!(resolver.asked.load(Ordering::SeqCst), 1, "resolved once, at delivery");
    let hosts: Vec<String> = endpoint.accepted().into_iter().map(|a| a.host).collect();
    assert_eq!(hosts, [format!("hooks.acme.test:{}", endpoint.port)]);
}

#[test]
fn tls_is_negotiated_for_the_urls_name_while_connecting_to_the_address_checked() {
    // A listener that reads the TLS ClientHello and hangs up: the server name (SNI) travels
    // in clear text, so it shows which name the client asked for.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| unreachable!("{e}"));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let hello = Arc::new(Mutex::new(Vec::<u8>::new()));
    let seen = hello.clone();
    std::thread::spawn(move || {
        use std::io::Read;
        if let Ok((mut stream, _)) = listener.accept() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buffer = [0u8; 4096];
            if let Ok(n) = stream.read(&mut buffer) {
                seen.lock().unwrap_or_else(|e| e.into_inner()).extend(buffer.iter().take(n));
            }
        }
    });
    let resolver = ScriptedResolver::new(vec![vec![LOOPBACK]]);
    let store = memory_store();
    let targets = WebhookTargets::strict().allow_local(true).with_resolver(resolver);
    let service = service_with(store.clone(), clock(), ServerKey::generate(), targets);
    group(&service);
    developer_with_app(&service, "acme", &format!("https://127.0.0.1:{port}/hook"));
    let developer = Developer {
        id: dev("acme"),
        name: "Acme".into(),
        contact_email: "p@acme.example".into(),
        webhook_url: format!("https://hooks.acme.test:{port}/hook"),
    };
    assert!(store.put_developer(&developer, Instant::from_secs(T0)).is_ok());
    let report = Deliverer::new(service, options()).deliver_due().ok();
    assert_eq!(report, Some(PassReport { delivered: 0, retrying: 1, dead: 0 }));
    assert_eq!(last_errors(store.as_ref(), "acme"), [Some("tls_failed".to_string())]);
    let hello = hello.lock().map(|h| h.clone()).unwrap_or_default();
    assert!(hello.windows(b"hooks.acme.test".len()).any(|w| w == b"hooks.acme.test"), "no SNI in {hello:?}");
}

#[test]
fn an_event_whose_payload_is_not_a_json_object_is_never_sent() {
    let endpoint = Endpoint::listening(Behaviour::Accept);
    let store = memory_store();
    let (service, _) = world(store.clone(), clock(), ServerKey::generate(), &endpoint.url());
    let queued = store.enqueue_notification(&dev("acme"), "broken", "not json", Instant::from_secs(T0));
    assert!(queued.is_ok());
    let report = Deliverer::new(service, options()).deliver_due().ok();
    assert_eq!(report, Some(PassReport { delivered: 1, retrying: 1, dead: 0 }));
    assert_eq!(last_errors(store.as_ref(), "acme"), [None, Some("invalid_payload".to_string())]);
    assert_eq!(endpoint.arrivals().len(), 1);
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

/// Computed once, outside this code base, with Python's `hmac` module and checked with
/// `openssl dgst -sha256 -hmac` (the first is the README's example):
/// `hmac.new(secret, f"{t}.{body}".encode(), hashlib.sha256).hexdigest()`.
const VECTORS: [(&str, i64, &str, &str); 2] = [
    (
        "whsec_3b1f0c5e9a7d4c2e8f6a1b0d9c8e7f6a",
        1_700_000_000,
        r#"{"id":"42","event":"consent.revoked","at":"2023-11-14T22:13:20Z","developer":"acme","app":"app-1","member":"m_7Qx"}"#,
        "f6b6bac134fd67cef6d36915a58e621e1dec2b315822197002d172e8d426bf74",
    ),
    (
        "clé-secrète",
        0,
        r#"{"note":"café ☕"}"#,
        "6045d18c798d582c678c404834b0e2d318417994c7f22c0b838ecc1cf8c8d589",
    ),
];

#[test]
fn signatures_match_an_independent_hmac_sha256_vector() {
    for (secret, t, body, hex) in VECTORS {
        let header = format!("t={t},v1={hex}");
        assert_eq!(signature(secret, t, body), header, "signing {body}");
        assert_eq!(verify_signature(secret, &header, body, t, 300), Ok(()), "verifying {body}");
        // One hex digit off is refused.
        let first = if hex.starts_with('0') { '1' } else { '0' };
        let flipped = format!("t={t},v1={first}{}", hex.get(1..).unwrap_or_default());
        assert_eq!(verify_signature(secret, &flipped, body, t, 300), Err(SignatureError::Mismatch));
    }
}

/// Two nodes (two services, each with its own handle on one SQLite file) deliver the same
/// outbox at the same time: every event reaches its endpoint exactly once, each developer's
/// in queue order.
#[test]
fn two_nodes_delivering_one_outbox_send_each_event_once_in_order() {
    let path = std::env::temp_dir().join(format!("consentry-two-deliverers-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let clock = clock();
    let key = ServerKey::generate();
    let open =
        || -> Arc<dyn Store> { Arc::new(SqliteStore::open(&path).unwrap_or_else(|e| unreachable!("{e}"))) };
    let a = service_with(open(), clock.clone(), key.clone(), local_targets());
    let b = service_with(open(), clock.clone(), key, local_targets());
    let endpoint = Endpoint::listening(Behaviour::Accept);
    let (group, ann) = group(&a);
    let mut apps = Vec::new();
    for d in 0..4 {
        apps.push(developer_with_app(&a, &format!("dev{d}"), &endpoint.url()));
    }
    // More events: each app uninstalled and installed again, 5 times.
    for _ in 0..5 {
        for app in &apps {
            ok(a.uninstall_app(app, &group));
            ok(a.install_app(app, &group, &ann));
        }
    }
    let queued: u64 = (0..4)
        .map(|d| a.store().notifications(&dev(&format!("dev{d}"))).map(|n| n.len() as u64).unwrap_or(0))
        .sum();
    assert!(queued >= 44, "{queued} events queued");
    let options = DeliveryOptions { per_developer: 3, ..DeliveryOptions::default() };
    let deliverers = [
        Deliverer::new(a.clone(), options.clone()).with_node("web-a"),
        Deliverer::new(b.clone(), options).with_node("web-b"),
    ];
    std::thread::scope(|scope| {
        for deliverer in &deliverers {
            scope.spawn(move || {
                for _ in 0..60 {
                    if deliverer.deliver_due().map(|r| r.delivered).unwrap_or(0) == 0 {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            });
        }
    });
    let arrivals = endpoint.accepted();
    let mut ids: Vec<u64> = arrivals.iter().map(|a| a.delivery.parse().unwrap_or(0)).collect();
    ids.sort_unstable();
    let mut once = ids.clone();
    once.dedup();
    assert_eq!(ids, once, "an event was delivered twice");
    assert_eq!(ids.len() as u64, queued, "every event delivered");
    assert_eq!(a.store().outbox_depth().map(|d| d.pending), Ok(0));
    // Each developer's events arrived in the order they were queued.
    for d in 0..4 {
        let of: Vec<u64> = arrivals
            .iter()
            .filter(|x| x.body.contains(&format!("\"developer\":\"dev{d}\"")))
            .map(|x| x.delivery.parse().unwrap_or(0))
            .collect();
        assert!(of.windows(2).all(|w| w[0] < w[1]), "dev{d} out of order: {of:?}");
    }
    let _ = std::fs::remove_file(&path);
}
