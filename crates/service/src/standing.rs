//! An app's standing changed by a person, with the reason they give: suspend, reinstate,
//! revoke (an app or all of a developer's), and another attempt at a dead webhook delivery.
//! The same rules as the platform API's calls (a banned app stays banned; a suspended app
//! comes back only once its case is closed), with the role checked here; the reason goes to
//! the developer with the event and to the log with the key that acted.

use consentry_types::{AppId, AppStatus, DeveloperId, OperatorRole};

use crate::auth::OperatorSession;
use crate::{Service, ServiceError, ServiceResult};

/// Who may suspend, reinstate and revoke apps (as over the platform API).
pub const STANDING_ROLES: &[OperatorRole] = &[OperatorRole::Operator, OperatorRole::PrivacyOfficer];

/// Who may give a dead webhook delivery another attempt.
pub const RETRY_ROLES: &[OperatorRole] = &[OperatorRole::Operator, OperatorRole::PrivacyOfficer];

/// A reason as a JSON string: 1 to 500 characters, no control characters but newlines and tabs.
fn reason_json(reason: &str) -> ServiceResult<String> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(ServiceError::InvalidInput("give a reason of 1 to 500 characters".into()));
    }
    if reason.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(ServiceError::InvalidInput("the reason must not contain control characters".into()));
    }
    let mut json = String::with_capacity(reason.len() + 2);
    json.push('"');
    for c in reason.chars() {
        match c {
            '"' => json.push_str("\\\""),
            '\\' => json.push_str("\\\\"),
            '\n' => json.push_str("\\n"),
            '\t' => json.push_str("\\t"),
            // Keeps the payload safe to embed anywhere (no closing tags, no line separators).
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => json.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => json.push(c),
        }
    }
    json.push('"');
    Ok(json)
}

impl Service {
    /// Suspends an app for `reason` (told to the developer with `app.suspended`).
    pub fn suspend_app_because(&self, by: &OperatorSession, app: &AppId, reason: &str) -> ServiceResult<()> {
        by.require(STANDING_ROLES)?;
        let reason = reason_json(reason)?;
        self.live_key(&by.key_id)?;
        self.set_app_status_because(app, AppStatus::Suspended, Some(&reason))?;
        tracing::info!(key = %by.key_id, %app, "app suspended");
        Ok(())
    }

    /// Brings a suspended app back for `reason` (never a banned one, never while a case
    /// naming it is open), telling the developer with `app.reinstated`.
    pub fn reinstate_app_because(
        &self,
        by: &OperatorSession,
        app: &AppId,
        reason: &str,
    ) -> ServiceResult<()> {
        by.require(STANDING_ROLES)?;
        let reason = reason_json(reason)?;
        self.live_key(&by.key_id)?;
        match self.store.app(app)?.map(|a| a.status) {
            Some(AppStatus::Suspended) => {
                self.set_app_status_because(app, AppStatus::Active, Some(&reason))?
            }
            // The same refusals as `reinstate_app`.
            Some(_) => return self.reinstate_app(app),
            None => return Err(ServiceError::NotFound(format!("app {:?}", app.as_str()))),
        }
        tracing::info!(key = %by.key_id, %app, "app reinstated");
        Ok(())
    }

    /// Revokes an app for `reason`: banned for good, every token dead at the next request.
    pub fn revoke_app_by(&self, by: &OperatorSession, app: &AppId, reason: &str) -> ServiceResult<u64> {
        by.require(STANDING_ROLES)?;
        let reason = reason_json(reason)?;
        self.live_key(&by.key_id)?;
        let tokens = self.revoke_app_because(app, &reason)?;
        tracing::info!(key = %by.key_id, %app, tokens, "app revoked");
        Ok(tokens)
    }

    /// Revokes every app of a developer for `reason`. Returns (apps, tokens).
    pub fn revoke_developer_by(
        &self,
        by: &OperatorSession,
        developer: &DeveloperId,
        reason: &str,
    ) -> ServiceResult<(u64, u64)> {
        by.require(STANDING_ROLES)?;
        let reason = reason_json(reason)?;
        self.live_key(&by.key_id)?;
        if self.store.developer(developer)?.is_none() {
            return Err(ServiceError::NotFound(format!("developer {:?}", developer.as_str())));
        }
        let (mut apps, mut tokens) = (0, 0);
        for app in self.store.apps()?.into_iter().filter(|a| &a.developer == developer) {
            tokens += self.revoke_app_because(&app.id, &reason)?;
            apps += 1;
        }
        tracing::info!(key = %by.key_id, %developer, apps, tokens, "developer revoked");
        Ok((apps, tokens))
    }

    /// Gives a dead webhook delivery one more attempt, due now; if that fails too it is dead
    /// again (its attempts are kept, never reset).
    pub fn retry_delivery(&self, by: &OperatorSession, notification: u64) -> ServiceResult<()> {
        by.require(RETRY_ROLES)?;
        self.live_key(&by.key_id)?;
        self.store.retry_notification(notification, self.clock.now()).map_err(|e| match e {
            consentry_store::StoreError::NotFound(_) => ServiceError::Conflict(format!(
                "delivery {notification} is not dead (or does not exist): only a dead delivery can be retried"
            )),
            other => other.into(),
        })?;
        tracing::info!(key = %by.key_id, notification, "dead webhook delivery retried");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::reason_json;

    #[test]
    fn a_reason_is_one_json_string_whatever_it_says() {
        for (reason, json) in [
            ("spam", r#""spam""#),
            (" \"quoted\" \\ ", r#""\"quoted\" \\""#),
            ("line\nnext", r#""line\nnext""#),
            ("</script><b>", r#""\u003c/script\u003e\u003cb\u003e""#),
        ] {
            assert_eq!(reason_json(reason).as_deref(), Ok(json), "{reason:?}");
        }
        for bad in ["", "   ", "bell\u{7}", &"x".repeat(501)] {
            assert!(reason_json(bad).is_err(), "{bad:?}");
        }
    }
}
