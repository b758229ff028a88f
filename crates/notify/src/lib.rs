//! Webhooks to developers, in the manner of Stripe and GitHub: each event in the store's
//! durable outbox is POSTed as JSON with
//! `Consentry-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` under the
//! developer's webhook secret, retried with exponential backoff, and dead-lettered after a
//! limit. Nothing is lost across a restart: the outbox is the store.
//!
//! A developer verifies a delivery by recomputing the HMAC over the timestamp, a dot and the
//! raw body, comparing in constant time, and refusing timestamps older than a few minutes.
//!
//! The only crate that sends HTTP requests (ureq, with rustls for `https://`; redirects are
//! not followed, so a signature is only ever sent to the registered endpoint).

use std::sync::Arc;
use std::time::Duration;

use consentry_service::Service;
use consentry_store::{DeliveryStatus, Notification};
use consentry_types::Instant;
use hmac::{Hmac, Mac};
use sha2::Sha256;

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
}

impl Default for DeliveryOptions {
    fn default() -> DeliveryOptions {
        DeliveryOptions {
            timeout: Duration::from_secs(10),
            max_attempts: 8,
            first_backoff_secs: 30,
            max_backoff_secs: 3_600,
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

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Store(#[from] consentry_store::StoreError),
}

/// The signature header value for `body` sent at `t` (seconds) under `secret`.
pub fn signature(secret: &str, t: i64, body: &str) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(), // HMAC takes keys of any length; not reached.
    };
    mac.update(format!("{t}.{body}").as_bytes());
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// Why a received webhook's signature was refused (what a developer's endpoint checks).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Consentry-Signature header is malformed: expected t=<seconds>,v1=<hex>")]
    Malformed,
    #[error("the signature does not match the body: wrong secret or altered body")]
    Mismatch,
    #[error("the signature is {0} s old, more than the tolerance: possibly a replay")]
    TooOld(i64),
}

/// Verifies a delivery as a developer's endpoint should: the HMAC over `"<t>.<body>"`
/// compared in constant time, and `t` within `tolerance_secs` of `now_secs`.
pub fn verify_signature(
    secret: &str,
    header: &str,
    body: &str,
    now_secs: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().ok(),
            Some(("v1", value)) => v1 = Some(value.to_string()),
            _ => return Err(SignatureError::Malformed),
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else { return Err(SignatureError::Malformed) };
    let expected = signature(secret, t, body);
    let given = format!("t={t},v1={v1}");
    let same = expected.len() == given.len()
        && expected.bytes().zip(given.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    if !same {
        return Err(SignatureError::Mismatch);
    }
    let age = now_secs - t;
    if age.abs() > tolerance_secs {
        return Err(SignatureError::TooOld(age));
    }
    Ok(())
}

/// Delivers the outbox of a service's store.
pub struct Deliverer {
    service: Arc<Service>,
    options: DeliveryOptions,
}

impl Deliverer {
    pub fn new(service: Arc<Service>, options: DeliveryOptions) -> Deliverer {
        Deliverer { service, options }
    }

    /// Attempts every notification due now, once.
    pub fn deliver_due(&self) -> Result<PassReport, NotifyError> {
        let store = self.service.store();
        let now = self.service.now();
        let mut report = PassReport::default();
        for notification in store.due_notifications(now, 100)? {
            let outcome = match store.developer(&notification.developer)? {
                Some(developer) => self.attempt(&notification, &developer.webhook_url, now),
                None => Err("the developer no longer exists".to_string()),
            };
            match outcome {
                Ok(()) => {
                    store.record_delivery(notification.id, DeliveryStatus::Delivered, now, None)?;
                    report.delivered += 1;
                }
                Err(error) if notification.attempts + 1 >= self.options.max_attempts => {
                    store.record_delivery(notification.id, DeliveryStatus::Dead, now, Some(&error))?;
                    report.dead += 1;
                }
                Err(error) => {
                    let shift = notification.attempts.min(30);
                    let wait = self
                        .options
                        .first_backoff_secs
                        .saturating_mul(1i64 << shift)
                        .min(self.options.max_backoff_secs);
                    store.record_delivery(
                        notification.id,
                        DeliveryStatus::Pending,
                        now.plus_secs(wait),
                        Some(&error),
                    )?;
                    report.retrying += 1;
                }
            }
        }
        Ok(report)
    }

    fn attempt(&self, notification: &Notification, url: &str, now: Instant) -> Result<(), String> {
        let secret = self.service.webhook_secret(&notification.developer);
        let headers = [
            ("Content-Type", "application/json".to_string()),
            ("Consentry-Event", notification.event.clone()),
            ("Consentry-Delivery", notification.id.to_string()),
            ("Consentry-Signature", signature(&secret, now.secs(), &notification.payload)),
        ];
        let status = post(url, &headers, &notification.payload, self.options.timeout)?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(format!("the endpoint answered {status}"))
        }
    }

    /// Delivers in the background every `every`, until the process ends.
    pub fn spawn(self, every: Duration) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || loop {
            if let Err(error) = self.deliver_due() {
                eprintln!("webhook delivery pass failed: {error}");
            }
            std::thread::sleep(every);
        })
    }
}

/// POSTs `body` and returns the response status (any status; transport failures are errors).
fn post(url: &str, headers: &[(&str, String)], body: &str, timeout: Duration) -> Result<u16, String> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("not an http(s) URL: {url}"));
    }
    let agent =
        ureq::AgentBuilder::new().timeout(timeout).redirects(0).user_agent("consentry-webhooks").build();
    let mut request = agent.post(url);
    for (name, value) in headers {
        request = request.set(name, value);
    }
    match request.send_string(body) {
        Ok(response) => Ok(response.status()),
        Err(ureq::Error::Status(status, _)) => Ok(status),
        Err(ureq::Error::Transport(error)) => Err(format!("cannot deliver: {error}")),
    }
}
