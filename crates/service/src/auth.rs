//! Authentication: OAuth 2.0 client credentials for apps, API keys for operators.

use std::net::IpAddr;

use consentry_store::{OperatorKey, TokenRecord};
use consentry_types::{AppId, AppStatus, Instant, OperatorRole};

use crate::secret_checks::CheckRefused;
use crate::secrets::{constant_time_eq, fast_hash, random_text};
use crate::throttle::{AddressBlock, Credential, TooManyAttempts};
use crate::{Service, ServiceError, ServiceResult};

/// Prefix of access tokens, so a leaked one is recognizable by secret scanners.
pub const TOKEN_PREFIX: &str = "cst_";
/// Prefix of operator API keys.
pub const OPERATOR_KEY_PREFIX: &str = "csk_";

/// A token just issued; the only moment its text exists outside the app.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub access_token: String,
    pub expires_in: i64,
    pub app: AppId,
}

/// An app whose token was checked for this request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSession {
    pub app: AppId,
    /// Hash of the token, to name it in logs and records without its text.
    pub token_hash: String,
}

/// What RFC 7662 introspection tells the token's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIntrospection {
    pub active: bool,
    pub client_id: Option<String>,
    pub expires_at: Option<Instant>,
    pub issued_at: Option<Instant>,
}

/// An operator whose API key was checked for this request. Only
/// [`Service::authenticate_operator`] makes one, so holding one proves a key was presented.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OperatorSession {
    pub key_id: String,
    pub name: String,
    pub role: OperatorRole,
}

impl OperatorSession {
    /// Refuses unless the operator has one of `roles`.
    pub fn require(&self, roles: &[OperatorRole]) -> ServiceResult<()> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            let wanted: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            Err(ServiceError::Forbidden(format!(
                "this needs the role {}; key {} has {}",
                wanted.join(" or "),
                self.key_id,
                self.role.as_str()
            )))
        }
    }
}

/// The stored form of a bearer token, or the refusal of one that cannot be ours.
fn bearer_hash(token: &str) -> ServiceResult<String> {
    if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
        return Err(ServiceError::Unauthenticated("the access token is malformed".into()));
    }
    Ok(fast_hash(token))
}

fn invalid_client() -> ServiceError {
    ServiceError::Unauthenticated("client authentication failed".into())
}

fn too_many(refused: TooManyAttempts) -> ServiceError {
    ServiceError::TooManyAttempts { retry_after_secs: refused.retry_after_secs() }
}

impl Service {
    /// Checks client credentials sent from `from` (`None`: an in-process caller, tallied per
    /// client id only). The client id must be known and the secret match. A client id or
    /// address with too many recent failures is refused before any argon2 work, and the
    /// argon2 check itself runs on its own threads, refused at once when they are all busy.
    pub fn authenticate_client(
        &self,
        client_id: &str,
        client_secret: &str,
        from: Option<IpAddr>,
    ) -> ServiceResult<AppId> {
        self.refuse_throttled_client(client_id, from)?;
        let from = from.map(AddressBlock::of);
        let tallies = &self.failed_auth;
        let known = if client_id.is_empty() || client_id.len() > 128 || client_secret.len() > 256 {
            None
        } else {
            self.store.app_by_client_id(client_id)?
        };
        let Some(credentials) = known else {
            tallies.address_failed(Credential::ClientSecret, from, std::time::Instant::now());
            return Err(invalid_client());
        };
        let attempt = tallies.admit_client(client_id, from, std::time::Instant::now()).map_err(too_many)?;
        match self.secret_checks.check(client_secret, &credentials.secret_hash) {
            Ok(true) => {
                attempt.succeeded(std::time::Instant::now());
                Ok(credentials.app.id)
            }
            Ok(false) => {
                attempt.failed(std::time::Instant::now());
                Err(invalid_client())
            }
            // Dropped unsettled: a check that did not run counts for nothing.
            Err(CheckRefused::Busy) => Err(ServiceError::Busy { retry_after_secs: 1 }),
            Err(CheckRefused::Stopped(why)) => Err(ServiceError::Internal(why)),
        }
    }

    /// Refuses a client-secret attempt for `client_id` from `from` if its client id or address
    /// is blocked now. Cheap (no store, no argon2): callers may ask before queueing any work.
    pub fn refuse_throttled_client(&self, client_id: &str, from: Option<IpAddr>) -> ServiceResult<()> {
        self.failed_auth
            .check_client(client_id, from.map(AddressBlock::of), std::time::Instant::now())
            .map_err(too_many)
    }

    /// Refuses an operator-key attempt from a blocked address. Cheap, as above.
    pub fn refuse_throttled_operator(&self, from: Option<IpAddr>) -> ServiceResult<()> {
        self.failed_auth
            .check_address(Credential::OperatorKey, from.map(AddressBlock::of), std::time::Instant::now())
            .map_err(too_many)
    }

    /// RFC 6749 §4.4: exchanges client credentials for an access token.
    pub fn issue_token(&self, client_id: &str, client_secret: &str) -> ServiceResult<IssuedToken> {
        self.issue_token_from(client_id, client_secret, None)
    }

    /// [`Service::issue_token`] for credentials sent from `from`.
    pub fn issue_token_from(
        &self,
        client_id: &str,
        client_secret: &str,
        from: Option<IpAddr>,
    ) -> ServiceResult<IssuedToken> {
        let app = self.authenticate_client(client_id, client_secret, from)?;
        let status = self.store.app(&app)?.map(|a| a.status);
        if status != Some(AppStatus::Active) {
            return Err(ServiceError::Forbidden(format!(
                "app {app} is {}",
                status.map_or("unknown", AppStatus::as_str)
            )));
        }
        let text = format!("{TOKEN_PREFIX}{}", random_text(32));
        let now = self.clock.now();
        let record = TokenRecord {
            hash: fast_hash(&text),
            app: app.clone(),
            issued_at: now,
            expires_at: now.plus_secs(self.config.token_ttl_secs),
            revoked_at: None,
        };
        self.store.put_token(&record)?;
        self.token_owners.remember(&record.hash, &app, record.expires_at, now);
        Ok(IssuedToken { access_token: text, expires_in: self.config.token_ttl_secs, app })
    }

    /// Checks a bearer token for this request: known, unexpired, unrevoked, app active.
    pub fn authenticate_app(&self, token: &str) -> ServiceResult<AppSession> {
        let refused = |why: &str| ServiceError::Unauthenticated(why.to_string());
        let hash = bearer_hash(token)?;
        let (record, status) =
            self.store.token_with_app_status(&hash)?.ok_or_else(|| refused("the access token is unknown"))?;
        if record.revoked_at.is_some() {
            return Err(refused("the access token was revoked"));
        }
        if record.expires_at <= self.clock.now() {
            return Err(refused("the access token expired"));
        }
        match status {
            Some(AppStatus::Active) => {
                self.token_owners.remember(&hash, &record.app, record.expires_at, self.clock.now());
                Ok(AppSession { app: record.app, token_hash: hash })
            }
            Some(status) => Err(refused(&format!("the app is {}", status.as_str()))),
            None => Err(refused("the app no longer exists")),
        }
    }

    /// The app a bearer token belongs to, without asking the store, for a request that reads
    /// a page snapshot (`GET /v1/groups/…`): that snapshot reads the token again with the
    /// facts it decides on and refuses a revoked token or an app no longer active
    /// (`read_page`), and the release refuses an expired one (`served`). A token this node
    /// has seen is therefore not looked up twice: its app and expiry never change
    /// (`token_owners`). `None`: this node has not seen it; check it in full with
    /// [`Service::authenticate_app`]. A token revoked (or whose app was suspended) since this
    /// node saw it gets the same 401 from the snapshot, only after the request's parameters
    /// were checked rather than before.
    pub fn app_of_seen_token(&self, token: &str) -> Option<ServiceResult<AppSession>> {
        let hash = match bearer_hash(token) {
            Ok(hash) => hash,
            Err(malformed) => return Some(Err(malformed)),
        };
        let (app, expires_at) = self.token_owners.get(&hash)?;
        Some(if expires_at <= self.clock.now() {
            Err(ServiceError::Unauthenticated("the access token expired".into()))
        } else {
            Ok(AppSession { app, token_hash: hash })
        })
    }

    /// RFC 7009: revokes a token of the authenticated client. Unknown tokens, or tokens of
    /// other clients, are ignored (the RFC's answer is 200 either way).
    pub fn revoke_token(&self, client: &AppId, token: &str) -> ServiceResult<()> {
        let hash = fast_hash(token);
        if let Some(record) = self.store.token(&hash)? {
            if &record.app == client {
                let change = self.change(consentry_store::FenceScope::App(client.clone()))?;
                self.store.revoke_token(&hash, change.at)?;
            }
        }
        Ok(())
    }

    /// RFC 7662: tells the authenticated client whether one of its tokens is active.
    /// Another client's token is reported inactive, so a client learns nothing of others.
    pub fn introspect_token(&self, client: &AppId, token: &str) -> ServiceResult<TokenIntrospection> {
        let inactive =
            TokenIntrospection { active: false, client_id: None, expires_at: None, issued_at: None };
        let Some(record) = self.store.token(&fast_hash(token))? else { return Ok(inactive) };
        if &record.app != client {
            return Ok(inactive);
        }
        let app = self.store.app(&record.app)?;
        let live = record.revoked_at.is_none()
            && record.expires_at > self.clock.now()
            && app.as_ref().is_some_and(|a| a.status == AppStatus::Active);
        if !live {
            return Ok(inactive);
        }
        Ok(TokenIntrospection {
            active: true,
            client_id: app.map(|a| a.client_id),
            expires_at: Some(record.expires_at),
            issued_at: Some(record.issued_at),
        })
    }

    /// [`Service::authenticate_operator`] for a key sent from `from`: an address with too many
    /// recent failures is refused before the key is looked at, and each failure is tallied.
    pub fn authenticate_operator_from(
        &self,
        key: &str,
        from: Option<IpAddr>,
    ) -> ServiceResult<OperatorSession> {
        self.refuse_throttled_operator(from)?;
        let checked = self.authenticate_operator(key);
        if let Err(ServiceError::Unauthenticated(_)) = checked {
            let from = from.map(AddressBlock::of);
            self.failed_auth.address_failed(Credential::OperatorKey, from, std::time::Instant::now());
        }
        checked
    }

    /// The tallies of failed authentication (for tests and diagnostics).
    pub fn failed_authentication(&self) -> &crate::FailedAuthentication {
        &self.failed_auth
    }

    /// Checks an operator API key (`csk_<id>_<secret>`).
    pub fn authenticate_operator(&self, key: &str) -> ServiceResult<OperatorSession> {
        let refused = || ServiceError::Unauthenticated("the API key is not valid".into());
        let rest = key.strip_prefix(OPERATOR_KEY_PREFIX).ok_or_else(refused)?;
        let (id, secret) = rest.split_once('_').ok_or_else(refused)?;
        if id.is_empty() || id.len() > 64 || secret.len() > 128 {
            return Err(refused());
        }
        let stored: OperatorKey = self.store.operator_key(id)?.ok_or_else(refused)?;
        if !constant_time_eq(stored.hash.as_bytes(), fast_hash(secret).as_bytes()) {
            return Err(refused());
        }
        // Only the key's holder learns why it no longer works.
        if stored.revoked_at.is_some() {
            return Err(ServiceError::Unauthenticated("the API key was revoked".into()));
        }
        if stored.expires_at.is_some_and(|at| at <= self.clock.now()) {
            return Err(ServiceError::Unauthenticated("the API key expired".into()));
        }
        Ok(OperatorSession { key_id: stored.id, name: stored.name, role: stored.role })
    }
}
