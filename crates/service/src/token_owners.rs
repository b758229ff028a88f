//! Which app each access token this node has seen belongs to, and when it expires, so that a
//! Groups request need not ask the store before its page snapshot does.
//!
//! Both facts are fixed when a token is issued and never change (a token is only ever
//! revoked, never moved to another app nor extended), so a node may keep them as long as it
//! likes without ever being wrong. What does change (revocation, the app's status) is never
//! kept here: every Groups request reads it again in its page snapshot, in the same
//! transaction as the facts it decides on (`Service::read_page`), and refuses there.

use std::collections::HashMap;
use std::sync::Mutex;

use consentry_types::{AppId, Instant};

/// Tokens kept at most; past that, expired ones are dropped, then all of them (a miss only
/// costs one store read).
const CAPACITY: usize = 100_000;

/// Token hash → (its app, its expiry).
#[derive(Default)]
pub(crate) struct TokenOwners {
    known: Mutex<HashMap<String, (AppId, Instant)>>,
}

impl TokenOwners {
    /// The app and expiry of the token with this hash, if this node has seen it.
    pub(crate) fn get(&self, hash: &str) -> Option<(AppId, Instant)> {
        self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(hash).cloned()
    }

    /// Forgets a token the store refused (revoked, or its app no longer active), so that its
    /// next use is refused by the cheap lookup rather than by a whole page snapshot.
    pub(crate) fn forget(&self, hash: &str) {
        self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(hash);
    }

    /// Remembers a token's owner and expiry, read from the store or just issued.
    pub(crate) fn remember(&self, hash: &str, app: &AppId, expires_at: Instant, now: Instant) {
        let mut known = self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if known.len() >= CAPACITY && !known.contains_key(hash) {
            known.retain(|_, (_, expires)| *expires > now);
            // Sweeping again at the next token for the few that expired since would scan the
            // whole table each time: unless a tenth went, start afresh.
            if known.len() >= CAPACITY - CAPACITY / 10 {
                known.clear();
            }
        }
        known.insert(hash.to_string(), (app.clone(), expires_at));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str) -> AppId {
        AppId::parse(name).unwrap_or_else(|e| unreachable!("{e}"))
    }

    #[test]
    fn a_full_table_drops_expired_tokens_first_and_never_loses_the_newest() {
        let owners = TokenOwners::default();
        let now = Instant::from_secs(1_000);
        for i in 0..CAPACITY {
            let expires = if i % 2 == 0 { Instant::from_secs(999) } else { Instant::from_secs(2_000) };
            owners.remember(&format!("h{i}"), &app("a"), expires, now);
        }
        owners.remember("newest", &app("b"), Instant::from_secs(2_000), now);
        assert_eq!(owners.get("newest"), Some((app("b"), Instant::from_secs(2_000))));
        assert_eq!(owners.get("h0"), None, "an expired token was dropped");
        assert_eq!(owners.get("h1"), Some((app("a"), Instant::from_secs(2_000))), "a live one was kept");
        owners.forget("h1");
        assert_eq!(owners.get("h1"), None);
        // Full of live tokens: everything goes, the newest stays.
        for i in 0..CAPACITY {
            owners.remember(&format!("live{i}"), &app("a"), Instant::from_secs(2_000), now);
        }
        owners.remember("last", &app("c"), Instant::from_secs(2_000), now);
        assert_eq!(owners.get("last"), Some((app("c"), Instant::from_secs(2_000))));
        assert!(owners.known.lock().map(|k| k.len() <= CAPACITY).unwrap_or(false));
    }
}
