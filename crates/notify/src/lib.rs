//! Webhooks to developers, in the manner of Stripe and GitHub: each event in the store's
//! durable outbox is POSTed as JSON whose first member is the delivery `id` (the same on
//! every retry; developers deduplicate by it), signed with
//! `Consentry-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` under the
//! developer's webhook secret, `t` being the instant of that attempt. Failed attempts are
//! retried with exponential backoff and dead-lettered after a limit; nothing is lost across a
//! restart, the outbox is the store.
//!
//! Before each attempt the endpoint's host is resolved once and every address checked against
//! the service's [`consentry_service::WebhookTargets`]; the request then goes to exactly those
//! addresses. Failures are recorded as a class ([`DeliveryFailure`]), never as raw text.
//!
//! Developers are delivered to concurrently (at most `max_in_flight` at once), each one's
//! events one at a time in the order they were queued, so a slow or dead endpoint holds up only
//! its own developer.
//!
//! The only crate that sends HTTP requests (ureq, with rustls for `https://`; redirects are
//! not followed, so a signature is only ever sent to the registered endpoint).

mod failure;
mod http;
mod signing;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use consentry_service::{Service, TargetError};
use consentry_store::{DeliveryStatus, Notification};
use consentry_types::DeveloperId;

pub use failure::DeliveryFailure;
pub use http::SystemResolver;
pub use signing::{signature, signatures, verify_signature, SignatureError};

/// How deliveries are attempted.
#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    /// Per attempt: connect, send and read the status line within this.
    pub timeout: Duration,
    /// After this many failed attempts a notification is dead.
    pub max_attempts: u32,
    /// The first retry waits this long; each further one twice as long, up to `max_backoff`.
    pub first_backoff_secs: i64,
    pub max_backoff_secs: i64,
    /// Developers delivered to at the same time (each one's events one at a time).
    pub max_in_flight: usize,
    /// Due events read from the outbox at once.
    pub batch: usize,
    /// At most this many of one developer's events are attempted in a row; the rest wait for
    /// the next pass, so a slow endpoint with a long queue does not keep a slot forever.
    pub per_developer: usize,
}

impl Default for DeliveryOptions {
    fn default() -> DeliveryOptions {
        DeliveryOptions {
            timeout: Duration::from_secs(10),
            max_attempts: 8,
            first_backoff_secs: 30,
            max_backoff_secs: 3_600,
            max_in_flight: 8,
            batch: 1_000,
            per_developer: 32,
        }
    }
}

/// What one pass over the due notifications did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassReport {
    pub delivered: u32,
    pub retrying: u32,
    pub dead: u32,
}

impl PassReport {
    fn add(&mut self, other: PassReport) {
        self.delivered += other.delivered;
        self.retrying += other.retrying;
        self.dead += other.dead;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Store(#[from] consentry_store::StoreError),
}

/// One developer's due events, oldest first.
struct Lane {
    developer: DeveloperId,
    notifications: Vec<Notification>,
}

/// Groups due events by developer, developers in the order their first event fell due.
fn lanes(due: Vec<Notification>) -> Vec<Lane> {
    let mut order: Vec<DeveloperId> = Vec::new();
    let mut by_developer: HashMap<DeveloperId, Vec<Notification>> = HashMap::new();
    for notification in due {
        if !by_developer.contains_key(&notification.developer) {
            order.push(notification.developer.clone());
        }
        by_developer.entry(notification.developer.clone()).or_default().push(notification);
    }
    order
        .into_iter()
        .filter_map(|developer| {
            let mut notifications = by_developer.remove(&developer)?;
            notifications.sort_by_key(|n| n.id);
            Some(Lane { developer, notifications })
        })
        .collect()
}

/// The body sent: the queued JSON object with the delivery id as its first member, so that
/// the signature covers the id.
fn body_with_id(notification: &Notification) -> Result<String, DeliveryFailure> {
    let payload = notification.payload.trim();
    let inner = payload
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
        .ok_or(DeliveryFailure::InvalidPayload)?;
    let id = notification.id;
    if inner.trim().is_empty() {
        Ok(format!("{{\"id\":\"{id}\"}}"))
    } else {
        Ok(format!("{{\"id\":\"{id}\",{inner}}}"))
    }
}

/// Which developers have a lane running, and how many lanes have ended (to wake the
/// dispatcher when one does).
#[derive(Default)]
struct Running {
    developers: HashSet<DeveloperId>,
    ended: u64,
}

type Shared = Arc<(Mutex<Running>, Condvar)>;

/// Frees a developer's lane when its thread ends, however it ends.
struct LaneGuard {
    running: Shared,
    developer: DeveloperId,
}

impl Drop for LaneGuard {
    fn drop(&mut self) {
        let (lock, changed) = &*self.running;
        if let Ok(mut running) = lock.lock() {
            running.developers.remove(&self.developer);
            running.ended = running.ended.wrapping_add(1);
        }
        changed.notify_all();
    }
}

/// Delivers the outbox of a service's store. Several nodes may deliver one store's outbox at
/// once: each takes the events it sends with a lease in the store
/// ([`consentry_store::Store::claim_due_notifications`]), one developer's events by one node at
/// a time, so an event is sent by one node only (again only if that node's lease ran out
/// before it recorded the attempt, e.g. it died; receivers deduplicate by `id`).
#[derive(Clone)]
pub struct Deliverer {
    service: Arc<Service>,
    options: DeliveryOptions,
    node: String,
}

impl Deliverer {
    pub fn new(service: Arc<Service>, options: DeliveryOptions) -> Deliverer {
        Deliverer { service, options, node: "local".to_string() }
    }

    /// Takes leases as `node` (each node its own id).
    pub fn with_node(mut self, node: &str) -> Deliverer {
        self.node = node.to_string();
        self
    }

    /// How long a claimed event is this node's: long enough for a lane's every attempt to
    /// time out, and then some.
    fn lease_secs(&self) -> i64 {
        let per_lane =
            self.options.timeout.as_secs().max(1).saturating_mul(self.options.per_developer.max(1) as u64);
        i64::try_from(per_lane.saturating_mul(2).saturating_add(60)).unwrap_or(i64::MAX / 2)
    }

    fn claim(&self) -> Result<Vec<Notification>, NotifyError> {
        let now = self.service.now();
        Ok(self.service.store().claim_due_notifications(
            &self.node,
            now,
            now.plus_secs(self.lease_secs()),
            self.options.batch,
            self.options.per_developer.max(1),
        )?)
    }

    /// Attempts the notifications due now, once, and returns when every attempt has ended.
    /// Developers are delivered to concurrently, up to `max_in_flight` at a time.
    pub fn deliver_due(&self) -> Result<PassReport, NotifyError> {
        let lanes = lanes(self.claim()?);
        let workers = self.options.max_in_flight.clamp(1, lanes.len().max(1));
        let queue = Mutex::new(lanes.into_iter());
        let outcome: Mutex<Result<PassReport, NotifyError>> = Mutex::new(Ok(PassReport::default()));
        // The queue's lock is held only while taking a lane, never while delivering it.
        let next_lane = || queue.lock().ok().and_then(|mut lanes| lanes.next());
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    while let Some(lane) = next_lane() {
                        let result = self.deliver_lane(lane);
                        if let Ok(mut outcome) = outcome.lock() {
                            match (&mut *outcome, result) {
                                (Ok(total), Ok(report)) => total.add(report),
                                (Ok(_), Err(error)) => *outcome = Err(error),
                                (Err(_), _) => {}
                            }
                        }
                    }
                });
            }
        });
        outcome.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Delivers continuously until `stop` is set: every `every`, and whenever a developer's
    /// lane ends, starts a lane for each developer with due events that has none running (at
    /// most `max_in_flight` at once). A lane held up by a slow endpoint never delays another
    /// developer's events.
    pub fn run(&self, every: Duration, stop: &AtomicBool) {
        let running: Shared = Arc::default();
        while !stop.load(Ordering::SeqCst) {
            let ended_before = running.0.lock().map(|r| r.ended).unwrap_or(0);
            match self.claim() {
                Ok(due) => self.start_lanes(due, &running),
                Err(error) => eprintln!("webhook delivery: cannot read the outbox: {error}"),
            }
            let (lock, changed) = &*running;
            if let Ok(guard) = lock.lock() {
                let _ = changed.wait_timeout_while(guard, every, |r| r.ended == ended_before);
            }
        }
    }

    fn start_lanes(&self, due: Vec<Notification>, running: &Shared) {
        let mut unstarted = Vec::new();
        for lane in lanes(due) {
            let started = match running.0.lock() {
                Ok(mut busy) => {
                    busy.developers.len() < self.options.max_in_flight.max(1)
                        && busy.developers.insert(lane.developer.clone())
                }
                Err(_) => false,
            };
            if !started {
                // Claimed but not sent now: given back, for this or another node's next pass.
                unstarted.extend(lane.notifications.iter().map(|n| n.id));
                continue;
            }
            let guard = LaneGuard { running: running.clone(), developer: lane.developer.clone() };
            let deliverer = self.clone();
            std::thread::spawn(move || {
                let _guard = guard;
                if let Err(error) = deliverer.deliver_lane(lane) {
                    eprintln!("webhook delivery: {error}");
                }
            });
        }
        if !unstarted.is_empty() {
            if let Err(error) = self.service.store().release_notifications(&self.node, &unstarted) {
                eprintln!("webhook delivery: cannot give back claimed events: {error}");
            }
        }
    }

    /// Delivers one developer's events in order. After the endpoint fails, the developer's
    /// remaining due events are not sent in this pass: they are rescheduled with the same
    /// failure, so a dead endpoint costs one timeout per pass, not one per event.
    fn deliver_lane(&self, lane: Lane) -> Result<PassReport, NotifyError> {
        let store = self.service.store();
        let developer = store.developer(&lane.developer)?;
        let mut report = PassReport::default();
        let mut endpoint_failed: Option<DeliveryFailure> = None;
        for (sent, notification) in lane.notifications.iter().enumerate() {
            if endpoint_failed.is_none() && sent >= self.options.per_developer.max(1) {
                break;
            }
            let outcome = match (endpoint_failed, &developer) {
                (Some(failure), _) => Err(failure),
                (None, Some(developer)) => self.attempt(notification, &developer.webhook_url),
                (None, None) => Err(DeliveryFailure::DeveloperGone),
            };
            let at = self.service.now();
            let node = self.node.as_str();
            match outcome {
                Ok(()) => {
                    // `false`: this node's lease ran out and another took the event over.
                    if store.record_claimed_delivery(
                        notification.id,
                        node,
                        DeliveryStatus::Delivered,
                        at,
                        None,
                    )? {
                        report.delivered += 1;
                    }
                }
                Err(failure) => {
                    let recorded = failure.to_string();
                    if notification.attempts.saturating_add(1) >= self.options.max_attempts {
                        if store.record_claimed_delivery(
                            notification.id,
                            node,
                            DeliveryStatus::Dead,
                            at,
                            Some(&recorded),
                        )? {
                            report.dead += 1;
                        }
                    } else {
                        let shift = notification.attempts.min(30);
                        let wait = self
                            .options
                            .first_backoff_secs
                            .saturating_mul(1i64 << shift)
                            .min(self.options.max_backoff_secs);
                        if store.record_claimed_delivery(
                            notification.id,
                            node,
                            DeliveryStatus::Pending,
                            at.plus_secs(wait),
                            Some(&recorded),
                        )? {
                            report.retrying += 1;
                        }
                    }
                    if failure.is_the_endpoints() {
                        endpoint_failed = Some(failure);
                    }
                }
            }
        }
        Ok(report)
    }

    /// One attempt: build the body, check the target, stamp and sign now, send.
    fn attempt(&self, notification: &Notification, url: &str) -> Result<(), DeliveryFailure> {
        let body = body_with_id(notification)?;
        let target =
            self.service.webhook_targets().resolve_for_delivery(url).map_err(|error| match error {
                TargetError::Unresolved => DeliveryFailure::DnsFailed,
                TargetError::Malformed(_) | TargetError::Refused(_) => DeliveryFailure::RefusedTarget,
            })?;
        // After a rotation, for a while, one signature under each secret.
        let secrets = self.service.webhook_secrets(&notification.developer);
        let t = self.service.now().secs();
        let headers = [
            ("Content-Type", "application/json".to_string()),
            ("Consentry-Event", notification.event.clone()),
            ("Consentry-Delivery", notification.id.to_string()),
            ("Consentry-Signature", signatures(&secrets, t, &body)),
        ];
        let status = http::post(&target, &headers, &body, self.options.timeout)?;
        match DeliveryFailure::from_status(status) {
            None => Ok(()),
            Some(failure) => Err(failure),
        }
    }

    /// Delivers in the background (see [`Deliverer::run`]), until the process ends.
    pub fn spawn(self, every: Duration) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || self.run(every, &AtomicBool::new(false)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use consentry_types::Instant;

    fn queued(id: u64, developer: &str, payload: &str) -> Notification {
        Notification {
            id,
            developer: DeveloperId::parse(developer).unwrap_or_else(|e| unreachable!("{e}")),
            event: "e".into(),
            payload: payload.into(),
            created_at: Instant::from_secs(0),
            attempts: 0,
            next_attempt_at: Instant::from_secs(0),
            status: DeliveryStatus::Pending,
            last_error: None,
        }
    }

    #[test]
    fn the_id_becomes_the_first_member_of_the_body() {
        let body = |payload: &str| body_with_id(&queued(7, "d", payload));
        assert_eq!(body(r#"{"event":"x"}"#), Ok(r#"{"id":"7","event":"x"}"#.to_string()));
        assert_eq!(body("{}"), Ok(r#"{"id":"7"}"#.to_string()));
        assert_eq!(body(" { } "), Ok(r#"{"id":"7"}"#.to_string()));
        for broken in ["", "not json", "[1]", "{", "}", "\"{}\""] {
            assert_eq!(body(broken), Err(DeliveryFailure::InvalidPayload), "{broken:?}");
        }
    }

    #[test]
    fn lanes_keep_each_developers_events_in_queue_order() {
        let due =
            vec![queued(5, "b", "{}"), queued(3, "a", "{}"), queued(4, "b", "{}"), queued(1, "a", "{}")];
        let lanes: Vec<(String, Vec<u64>)> = lanes(due)
            .into_iter()
            .map(|l| (l.developer.to_string(), l.notifications.iter().map(|n| n.id).collect()))
            .collect();
        assert_eq!(lanes, [("b".to_string(), vec![4, 5]), ("a".to_string(), vec![1, 3])]);
    }

    #[test]
    fn failures_are_recorded_as_a_class_and_a_status() {
        assert_eq!(DeliveryFailure::from_status(204), None);
        assert_eq!(
            DeliveryFailure::from_status(301).map(|f| f.to_string()).as_deref(),
            Some("redirect_refused 301")
        );
        assert_eq!(DeliveryFailure::from_status(429).map(|f| f.to_string()).as_deref(), Some("http_4xx 429"));
        assert_eq!(DeliveryFailure::from_status(503).map(|f| f.to_string()).as_deref(), Some("http_5xx 503"));
        assert_eq!(
            DeliveryFailure::from_status(101).map(|f| f.to_string()).as_deref(),
            Some("http_other 101")
        );
        assert_eq!(DeliveryFailure::Timeout.to_string(), "timeout");
    }
}
