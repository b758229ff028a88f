//! Webhook signatures: `Consentry-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
//! "<t>.<raw body>")>`, made by the deliverer at each attempt and checked by developers
//! (`verify_signature` is what a developer's endpoint does).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The signature header value for `body` sent at `t` (seconds) under `secret`.
pub fn signature(secret: &str, t: i64, body: &str) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(), // HMAC takes keys of any length; not reached.
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// The header with one `v1` per secret (after a rotation: the current secret's, then the
/// previous one's), as Stripe does: `t=<t>,v1=<new>,v1=<old>`.
pub fn signatures(secrets: &[String], t: i64, body: &str) -> String {
    let mut header = format!("t={t}");
    for secret in secrets {
        let one = signature(secret, t, body);
        if let Some((_, v1)) = one.split_once(",v1=") {
            header.push_str(",v1=");
            header.push_str(v1);
        }
    }
    header
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
/// compared in constant time, and `t` within `tolerance_secs` of `now_secs`. The body is
/// the raw request body, byte for byte; it carries the delivery `id` to deduplicate by.
pub fn verify_signature(
    secret: &str,
    header: &str,
    body: &str,
    now_secs: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let mut t = None;
    let mut v1s = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().ok(),
            Some(("v1", value)) => v1s.push(value.to_string()),
            _ => return Err(SignatureError::Malformed),
        }
    }
    let Some(t) = t else { return Err(SignatureError::Malformed) };
    if v1s.is_empty() || v1s.len() > 4 {
        return Err(SignatureError::Malformed);
    }
    // Any one of the signatures (one per secret during a rotation) made with this secret.
    let expected = signature(secret, t, body);
    let same = v1s.iter().fold(false, |any, v1| {
        let given = format!("t={t},v1={v1}");
        let equal = expected.len() == given.len()
            && expected.bytes().zip(given.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        any | equal
    });
    if !same {
        return Err(SignatureError::Mismatch);
    }
    let age = now_secs.saturating_sub(t);
    if age.saturating_abs() > tolerance_secs {
        return Err(SignatureError::TooOld(age));
    }
    Ok(())
}
