//! Operator keys: who may create and revoke which key, expiry, and the lineage the
//! two-person rule reads.
//!
//! Whoever creates a key is shown its secret once, so the creator (and whoever created the
//! creator's key, and so on up to a key made on the server) could act with it. Two keys are
//! held by two different people only if no key appears in both of their lineages: that is the
//! test [`Service::approval_refusal`] applies between a policy's author and its approver.

use consentry_store::{KeyOrigin, OperatorKey, StoreError};
use consentry_types::{Instant, OperatorRole};

use crate::auth::{OperatorSession, OPERATOR_KEY_PREFIX};
use crate::secrets::{fast_hash, random_hex, random_text};
use crate::{Service, ServiceError, ServiceResult};

/// Longest lifetime a key may be given: ten years.
pub const MAX_KEY_LIFETIME_DAYS: i64 = 3650;

/// Lineages longer than this are treated as corrupt rather than followed further.
const MAX_LINEAGE: usize = 10_000;

/// A newly created operator API key, shown once.
#[derive(Debug, Clone)]
pub struct NewOperatorKey {
    pub key: String,
    pub id: String,
    pub name: String,
    pub role: OperatorRole,
    pub expires_at: Option<Instant>,
}

/// Which roles a key of role `creator` may create over the platform API: operators create
/// operator and auditor keys; privacy officers also privacy-officer keys; auditors none.
/// The first privacy-officer key is made on the server (`consentry keys create`).
pub fn may_create(creator: OperatorRole, role: OperatorRole) -> bool {
    match creator {
        OperatorRole::PrivacyOfficer => true,
        OperatorRole::Operator => role != OperatorRole::PrivacyOfficer,
        OperatorRole::Auditor => false,
    }
}

/// Whether `by` may revoke `target` over the platform API: its own key, or a key of a role it
/// may create.
pub fn may_revoke(by: &OperatorSession, target: &OperatorKey) -> bool {
    by.key_id == target.id || may_create(by.role, target.role)
}

/// Parses a key lifetime such as `90d` or `12h` into seconds (1 hour to ten years).
pub fn parse_key_lifetime(text: &str) -> ServiceResult<i64> {
    let wrong = || {
        ServiceError::InvalidInput(format!(
            "a key lifetime looks like 90d or 12h (at most {MAX_KEY_LIFETIME_DAYS}d), not {:?}",
            text.chars().take(40).collect::<String>()
        ))
    };
    let (number, unit_secs) = if let Some(days) = text.strip_suffix('d') {
        (days, 86_400)
    } else if let Some(hours) = text.strip_suffix('h') {
        (hours, 3_600)
    } else {
        return Err(wrong());
    };
    if number.is_empty() || number.len() > 9 || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(wrong());
    }
    let secs = number.parse::<i64>().map_err(|_| wrong())?.checked_mul(unit_secs).ok_or_else(wrong)?;
    if !(3_600..=MAX_KEY_LIFETIME_DAYS * 86_400).contains(&secs) {
        return Err(wrong());
    }
    Ok(secs)
}

/// "an operator", "a privacy_officer", "an auditor".
fn a_role(role: OperatorRole) -> String {
    let article = if role == OperatorRole::PrivacyOfficer { "a" } else { "an" };
    format!("{article} {}", role.as_str())
}

fn key_name(name: &str) -> ServiceResult<()> {
    if name.trim().is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(ServiceError::InvalidInput(
            "a key name must be 1 to 200 characters, without control characters".into(),
        ));
    }
    Ok(())
}

fn origin_text(what: &str, value: &str) -> ServiceResult<()> {
    if value.trim().is_empty() || value.chars().count() > 200 || value.chars().any(char::is_control) {
        return Err(ServiceError::InvalidInput(format!("{what} must be 1 to 200 printable characters")));
    }
    Ok(())
}

/// Why the holder of `approver` is not a second person next to the holder of `author`, or
/// `None` if it is. `lineage_*` are each key followed by the keys that made it.
fn lineage_refusal(author: &[String], approver: &[String]) -> Option<String> {
    let (author_key, approver_key) = (author.first()?, approver.first()?);
    if author_key == approver_key {
        return Some(format!("key {approver_key} submitted it"));
    }
    if approver.contains(author_key) {
        return Some(format!(
            "key {approver_key} was created by key {author_key} (directly or through keys it created), which submitted it"
        ));
    }
    if author.contains(approver_key) {
        return Some(format!(
            "key {approver_key} created key {author_key} (directly or through keys it created), which submitted it"
        ));
    }
    let shared = approver.iter().find(|k| author.contains(k))?;
    Some(format!(
        "keys {author_key} (the author) and {approver_key} were both created by key {shared}, whose holder could use either"
    ))
}

impl Service {
    fn new_key(
        &self,
        name: &str,
        role: OperatorRole,
        created_by: KeyOrigin,
        expires_at: Option<Instant>,
    ) -> ServiceResult<NewOperatorKey> {
        key_name(name)?;
        let id = random_hex(6);
        let secret = random_text(32);
        let key = OperatorKey {
            id: id.clone(),
            hash: fast_hash(&secret),
            name: name.to_string(),
            role,
            created_by,
            created_at: self.clock.now(),
            expires_at,
            revoked_at: None,
        };
        self.store.put_operator_key(&key)?;
        Ok(NewOperatorKey {
            key: format!("{OPERATOR_KEY_PREFIX}{id}_{secret}"),
            id,
            name: name.to_string(),
            role,
            expires_at,
        })
    }

    /// Over the platform API: the holder of `creator` creates a key of `role` (see
    /// [`may_create`]). A key never outlives the key that created it.
    pub fn create_operator_key(
        &self,
        creator: &OperatorSession,
        name: &str,
        role: OperatorRole,
        lifetime_secs: Option<i64>,
    ) -> ServiceResult<NewOperatorKey> {
        if !may_create(creator.role, role) {
            let allowed: Vec<&str> =
                [OperatorRole::Operator, OperatorRole::Auditor, OperatorRole::PrivacyOfficer]
                    .into_iter()
                    .filter(|r| may_create(creator.role, *r))
                    .map(OperatorRole::as_str)
                    .collect();
            return Err(ServiceError::Forbidden(format!(
                "{} key cannot create {} keys (it may create: {}); the first privacy-officer key is made on the server with `consentry keys create --role privacy_officer`",
                a_role(creator.role),
                role.as_str(),
                if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") }
            )));
        }
        let maker = self.live_key(&creator.key_id)?;
        let requested = lifetime_secs.map(|secs| self.clock.now().plus_secs(secs));
        let expires_at = match (requested, maker.expires_at) {
            (Some(asked), Some(cap)) => Some(asked.min(cap)),
            (asked, cap) => asked.or(cap),
        };
        self.new_key(name, role, KeyOrigin::Key(maker.id), expires_at)
    }

    /// On the server (a command run there, never over HTTP): creates a key of any role.
    /// `command` and `os_user` are recorded as its maker.
    pub fn create_key_on_server(
        &self,
        command: &str,
        os_user: &str,
        name: &str,
        role: OperatorRole,
        lifetime_secs: Option<i64>,
    ) -> ServiceResult<NewOperatorKey> {
        origin_text("the command", command)?;
        origin_text("the OS user", os_user)?;
        let expires_at = lifetime_secs.map(|secs| self.clock.now().plus_secs(secs));
        let origin = KeyOrigin::Server { command: command.to_string(), os_user: os_user.to_string() };
        self.new_key(name, role, origin, expires_at)
    }

    /// On a store with no operator key yet, creates the first one (role `operator`), made by
    /// `command` run by `os_user` on the server.
    pub fn bootstrap_operator_key(
        &self,
        command: &str,
        os_user: &str,
    ) -> ServiceResult<Option<NewOperatorKey>> {
        if self.store.operator_key_count()? > 0 {
            return Ok(None);
        }
        self.create_key_on_server(command, os_user, "bootstrap", OperatorRole::Operator, None).map(Some)
    }

    /// Every key, revoked and expired ones too, oldest first (with hashes: never show those).
    pub fn operator_keys(&self) -> ServiceResult<Vec<OperatorKey>> {
        Ok(self.store.operator_keys()?)
    }

    pub fn operator_key(&self, id: &str) -> ServiceResult<OperatorKey> {
        self.store.operator_key(id)?.ok_or_else(|| ServiceError::NotFound(format!("operator key {id:?}")))
    }

    /// Over the platform API: `by` revokes a key (see [`may_revoke`]). The last live
    /// privacy-officer key is kept: without one no policy could be approved. Returns whether
    /// it was live until now.
    pub fn revoke_operator_key(&self, by: &OperatorSession, id: &str) -> ServiceResult<bool> {
        let target = self.operator_key(id)?;
        if !may_revoke(by, &target) {
            return Err(ServiceError::Forbidden(format!(
                "{} key cannot revoke {} keys (only its own, or keys of a role it may create)",
                a_role(by.role),
                target.role.as_str()
            )));
        }
        self.store.revoke_operator_key(id, self.clock.now(), true).map_err(|e| match e {
            StoreError::Conflict(_) => ServiceError::Conflict(format!(
                "key {id} is the last live privacy-officer key, and without one no policy can be approved: create another first, or revoke it on the server with `consentry keys revoke {id} --force`"
            )),
            other => other.into(),
        })
    }

    /// On the server: revokes any key; the last live privacy-officer key only with `force`.
    pub fn revoke_key_on_server(&self, id: &str, force: bool) -> ServiceResult<bool> {
        self.store.revoke_operator_key(id, self.clock.now(), !force).map_err(|e| match e {
            StoreError::Conflict(_) => ServiceError::Conflict(format!(
                "key {id} is the last live privacy-officer key: without one no policy can be approved; add --force to revoke it anyway"
            )),
            other => other.into(),
        })
    }

    /// The key behind a session, read again now: refused if it was revoked or expired since.
    pub(crate) fn live_key(&self, id: &str) -> ServiceResult<OperatorKey> {
        match self.store.operator_key(id)? {
            Some(key) if key.is_live(self.clock.now()) => Ok(key),
            Some(key) if key.revoked_at.is_some() => {
                Err(ServiceError::Unauthenticated("the API key was revoked".into()))
            }
            Some(_) => Err(ServiceError::Unauthenticated("the API key expired".into())),
            None => Err(ServiceError::Unauthenticated("the API key is not valid".into())),
        }
    }

    /// The key `id` followed by the key that made it, and so on up to a key made on the
    /// server. An id that is no key (a policy author from before keys had identities) is a
    /// lineage of itself alone.
    pub fn key_lineage(&self, id: &str) -> ServiceResult<Vec<String>> {
        let mut lineage = vec![id.to_string()];
        let mut current = id.to_string();
        while let Some(key) = self.store.operator_key(&current)? {
            let KeyOrigin::Key(parent) = key.created_by else { break };
            if lineage.contains(&parent) || lineage.len() >= MAX_LINEAGE {
                return Err(ServiceError::Internal(format!("the lineage of operator key {id} loops")));
            }
            lineage.push(parent.clone());
            current = parent;
        }
        Ok(lineage)
    }

    /// Why the key `approver` may not approve what the key `author` submitted, or `None` if
    /// it may: the approver must be a live privacy-officer key, and no key may be in both
    /// lineages (not the same key, not one the author created or that created the author, not
    /// two keys made by one key).
    pub fn approval_refusal(&self, author: &str, approver: &str) -> ServiceResult<Option<String>> {
        let Some(key) = self.store.operator_key(approver)? else {
            return Ok(Some(format!("{approver:?} is not an operator key")));
        };
        if key.role != OperatorRole::PrivacyOfficer {
            return Ok(Some(format!("key {approver} is not a privacy-officer key")));
        }
        if key.revoked_at.is_some() {
            return Ok(Some(format!("key {approver} was revoked")));
        }
        Ok(lineage_refusal(&self.key_lineage(author)?, &self.key_lineage(approver)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lineage(keys: &[&str]) -> Vec<String> {
        keys.iter().map(|k| k.to_string()).collect()
    }

    #[test]
    fn the_creation_table_is_exactly_the_documented_one() {
        use OperatorRole::{Auditor, Operator, PrivacyOfficer};
        let table = [
            (Operator, [(Operator, true), (Auditor, true), (PrivacyOfficer, false)]),
            (PrivacyOfficer, [(Operator, true), (Auditor, true), (PrivacyOfficer, true)]),
            (Auditor, [(Operator, false), (Auditor, false), (PrivacyOfficer, false)]),
        ];
        for (creator, cells) in table {
            for (role, allowed) in cells {
                assert_eq!(may_create(creator, role), allowed, "{creator:?} creating {role:?}");
            }
        }
    }

    #[test]
    fn lineages_that_share_a_key_are_one_person() {
        // Disjoint lineages: two people.
        assert_eq!(lineage_refusal(&lineage(&["a", "root1"]), &lineage(&["o", "root2"])), None);
        // The same key; the approver made by the author; the author made by the approver; both
        // made by one key.
        for (author, approver, says) in [
            (lineage(&["a"]), lineage(&["a"]), "submitted it"),
            (lineage(&["a", "r"]), lineage(&["o", "x", "a", "r"]), "was created by key a"),
            (lineage(&["a", "o", "r"]), lineage(&["o", "r"]), "key o created key a"),
            (lineage(&["a", "s"]), lineage(&["o", "s"]), "both created by key s"),
        ] {
            let refusal = lineage_refusal(&author, &approver);
            assert!(
                refusal.as_deref().is_some_and(|r| r.contains(says)),
                "{author:?} {approver:?}: {refusal:?}"
            );
        }
    }

    #[test]
    fn key_lifetimes_are_hours_or_days_within_ten_years() {
        assert_eq!(parse_key_lifetime("90d"), Ok(90 * 86_400));
        assert_eq!(parse_key_lifetime("1h"), Ok(3_600));
        assert_eq!(parse_key_lifetime("3650d"), Ok(3650 * 86_400));
        for bad in
            ["", "d", "0d", "3651d", "-1d", "+1d", "1.5d", "1é", "é", "1m", "30", "99999999999d", " 1d"]
        {
            assert!(
                matches!(parse_key_lifetime(bad), Err(ServiceError::InvalidInput(_))),
                "{bad:?} was accepted"
            );
        }
    }
}
