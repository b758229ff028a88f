//! Signed-in sessions of operator keys (the privacy team's console): a person signs in once
//! with a key and then acts through a random session id. The id is kept only as a hash, in
//! memory, with an idle and an absolute expiry and a bound on how many exist; every use reads
//! the key again, so a revoked or expired key ends its sessions at the very next request.
//! Each session carries a random token that every form it submits must echo (CSRF).

use std::collections::HashMap;
use std::sync::Mutex;

use consentry_types::Instant;

use crate::auth::OperatorSession;
use crate::secrets::{constant_time_eq, fast_hash, random_text};
use crate::{Service, ServiceError, ServiceResult};

/// How long sessions live and how many may exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// A session unused this long ends.
    pub idle_secs: i64,
    /// A session ends this long after sign-in, however much it is used.
    pub absolute_secs: i64,
    /// Sessions kept at once; signing in beyond it ends the least recently used one.
    pub max_sessions: usize,
    /// Sessions of one key at once; beyond it, that key's least recently used one ends.
    pub max_per_key: usize,
}

impl Default for SessionLimits {
    fn default() -> SessionLimits {
        SessionLimits { idle_secs: 30 * 60, absolute_secs: 12 * 3600, max_sessions: 1024, max_per_key: 16 }
    }
}

/// A session just made: the only moment its id exists outside the browser.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// The session id, for the cookie. Kept on the server only as a hash.
    pub session: String,
    pub operator: OperatorSession,
    /// The token every form of this session must carry.
    pub csrf: String,
    /// The absolute end of the session.
    pub expires_at: Instant,
}

/// A session in use for one request.
#[derive(Debug, Clone)]
pub struct ResumedSession {
    pub operator: OperatorSession,
    pub csrf: String,
    /// Hash of the session id, to end exactly this session.
    pub session_hash: String,
}

impl ResumedSession {
    /// Whether `token` is this session's CSRF token (compared in constant time).
    pub fn csrf_matches(&self, token: &str) -> bool {
        constant_time_eq(self.csrf.as_bytes(), token.as_bytes())
    }
}

#[derive(Debug, Clone)]
struct Entry {
    key_id: String,
    csrf: String,
    created: Instant,
    last_used: Instant,
}

impl Entry {
    fn expired(&self, now: Instant, limits: &SessionLimits) -> bool {
        now >= self.created.plus_secs(limits.absolute_secs)
            || now >= self.last_used.plus_secs(limits.idle_secs)
    }
}

/// The table of signed-in sessions, keyed by the hash of their id.
#[derive(Debug, Default)]
pub struct SignInSessions {
    limits: SessionLimits,
    entries: Mutex<HashMap<String, Entry>>,
}

fn ended() -> ServiceError {
    ServiceError::Unauthenticated("the session ended; sign in again".into())
}

impl SignInSessions {
    pub fn new(limits: SessionLimits) -> SignInSessions {
        SignInSessions { limits, entries: Mutex::new(HashMap::new()) }
    }

    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    fn lock(&self) -> ServiceResult<std::sync::MutexGuard<'_, HashMap<String, Entry>>> {
        self.entries.lock().map_err(|_| ServiceError::Internal("the session table is poisoned".into()))
    }

    /// Signs in with an operator key (checked exactly as the platform API checks it) and
    /// makes a session.
    pub fn sign_in(&self, service: &Service, key: &str) -> ServiceResult<SignedIn> {
        let operator = service.authenticate_operator(key)?;
        let now = service.now();
        let session = random_text(32);
        let csrf = random_text(32);
        let entry =
            Entry { key_id: operator.key_id.clone(), csrf: csrf.clone(), created: now, last_used: now };
        let mut entries = self.lock()?;
        entries.retain(|_, e| !e.expired(now, &self.limits));
        let of_key = entries.values().filter(|e| e.key_id == operator.key_id).count();
        if of_key >= self.limits.max_per_key.max(1) {
            evict_least_recently_used(&mut entries, |e| e.key_id == operator.key_id);
        }
        if entries.len() >= self.limits.max_sessions.max(1) {
            evict_least_recently_used(&mut entries, |_| true);
        }
        entries.insert(fast_hash(&session), entry);
        Ok(SignedIn { session, operator, csrf, expires_at: now.plus_secs(self.limits.absolute_secs) })
    }

    /// The session `session` (the cookie's id) for this request, its key read again now:
    /// unknown, expired, or of a key revoked or expired since, it is refused (and ended).
    pub fn resume(&self, service: &Service, session: &str) -> ServiceResult<ResumedSession> {
        if session.is_empty() || session.len() > 128 {
            return Err(ended());
        }
        let hash = fast_hash(session);
        let now = service.now();
        let entry = {
            let mut entries = self.lock()?;
            match entries.get(&hash) {
                Some(entry) if !entry.expired(now, &self.limits) => entry.clone(),
                Some(_) => {
                    entries.remove(&hash);
                    return Err(ended());
                }
                None => return Err(ended()),
            }
        };
        let operator = match service.operator_session_of_live_key(&entry.key_id) {
            Ok(operator) => operator,
            Err(error) => {
                self.end_key_sessions(&entry.key_id);
                return Err(error);
            }
        };
        if let Ok(mut entries) = self.lock() {
            if let Some(stored) = entries.get_mut(&hash) {
                stored.last_used = now;
            }
        }
        Ok(ResumedSession { operator, csrf: entry.csrf, session_hash: hash })
    }

    /// Ends one session (sign out).
    pub fn end(&self, session: &ResumedSession) {
        if let Ok(mut entries) = self.lock() {
            entries.remove(&session.session_hash);
        }
    }

    fn end_key_sessions(&self, key_id: &str) {
        if let Ok(mut entries) = self.lock() {
            entries.retain(|_, e| e.key_id != key_id);
        }
    }

    /// How many sessions exist now (expired ones not yet swept included).
    pub fn count(&self) -> usize {
        self.lock().map(|e| e.len()).unwrap_or(0)
    }

    /// Whether any stored value equals `text` (tests: no session id is kept in clear).
    pub fn stores_in_clear(&self, text: &str) -> bool {
        self.lock().is_ok_and(|entries| entries.keys().any(|k| k == text))
    }
}

fn evict_least_recently_used(entries: &mut HashMap<String, Entry>, which: impl Fn(&Entry) -> bool) {
    let oldest =
        entries.iter().filter(|(_, e)| which(e)).min_by_key(|(_, e)| e.last_used).map(|(k, _)| k.clone());
    if let Some(oldest) = oldest {
        entries.remove(&oldest);
    }
}

impl Service {
    /// The session of the key `id` if it is live now: used to resume a signed-in session,
    /// whose key was checked with its secret at sign-in.
    fn operator_session_of_live_key(&self, id: &str) -> ServiceResult<OperatorSession> {
        let key = self.live_key(id)?;
        Ok(OperatorSession { key_id: key.id, name: key.name, role: key.role })
    }
}
