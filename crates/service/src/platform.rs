//! The platform's own operations: ingest of facts, apps and credentials, installations,
//! consents, and policy versions. Each write takes effect for the very next request.

use consentry_policy::compile;
use consentry_store::{CaseState, FenceScope};
use consentry_types::{
    App, AppId, AppStatus, Developer, DeveloperId, Group, GroupId, Member, MemberId, OperatorRole,
    PolicyActivation, Post, PostId, Role, Scope,
};

use crate::auth::OperatorSession;
use crate::secrets::{random_hex, random_text, slow_hash};
use crate::{Service, ServiceError, ServiceResult};

/// Who may write and activate policies; only privacy officers approve.
const POLICY_AUTHORS: &[OperatorRole] = &[OperatorRole::Operator, OperatorRole::PrivacyOfficer];

/// A newly registered app and its client secret, shown once.
#[derive(Debug, Clone)]
pub struct RegisteredApp {
    pub app: App,
    pub client_secret: String,
}

fn text(what: &str, value: &str, max: usize) -> ServiceResult<()> {
    if value.trim().is_empty() {
        return Err(ServiceError::InvalidInput(format!("{what} must not be empty")));
    }
    if value.chars().count() > max {
        return Err(ServiceError::InvalidInput(format!("{what} must be at most {max} characters")));
    }
    if value.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(ServiceError::InvalidInput(format!("{what} must not contain control characters")));
    }
    Ok(())
}

fn url(what: &str, value: &str) -> ServiceResult<()> {
    text(what, value, 2048)?;
    let rest = value.strip_prefix("https://").or_else(|| value.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !value.chars().any(char::is_whitespace) => Ok(()),
        _ => Err(ServiceError::InvalidInput(format!("{what} must be an http(s) URL"))),
    }
}

fn category(value: &str) -> ServiceResult<()> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ServiceError::InvalidInput("category must be 1 to 64 characters from a-z 0-9 _".into()))
    }
}

impl Service {
    pub fn put_member(&self, id: &MemberId, name: &str, picture_url: &str) -> ServiceResult<()> {
        text("name", name, 200)?;
        url("picture_url", picture_url)?;
        let member = Member { id: id.clone(), name: name.to_string(), picture_url: picture_url.to_string() };
        Ok(self.store.put_member(&member, self.clock.now())?)
    }

    pub fn put_group(&self, id: &GroupId, name: &str) -> ServiceResult<()> {
        text("name", name, 200)?;
        Ok(self.store.put_group(&Group { id: id.clone(), name: name.to_string() }, self.clock.now())?)
    }

    /// Adds the member to the group, changes their role, or (with `None`) removes them.
    pub fn set_membership(
        &self,
        group: &GroupId,
        member: &MemberId,
        role: Option<Role>,
    ) -> ServiceResult<()> {
        let change = self.change(FenceScope::Group(group.clone()))?;
        Ok(self.store.set_membership(group, member, role, change.at)?)
    }

    /// Stores a post; its author must be a member of the group now.
    pub fn put_post(
        &self,
        group: &GroupId,
        id: &PostId,
        author: &MemberId,
        content: &str,
    ) -> ServiceResult<()> {
        text("content", content, 65_536)?;
        if self.store.group(group)?.is_none() {
            return Err(ServiceError::NotFound(format!("group {:?}", group.as_str())));
        }
        if self.store.membership(group, author)?.is_none() {
            return Err(ServiceError::Rejected(format!(
                "author {:?} is not a member of group {:?}",
                author.as_str(),
                group.as_str()
            )));
        }
        let post = Post {
            id: id.clone(),
            group: group.clone(),
            author: author.clone(),
            content: content.to_string(),
            created_at: self.clock.now(),
        };
        Ok(self.store.put_post(&post)?)
    }

    pub fn put_developer(
        &self,
        id: &DeveloperId,
        name: &str,
        contact_email: &str,
        webhook_url: &str,
    ) -> ServiceResult<()> {
        text("name", name, 200)?;
        text("contact_email", contact_email, 320)?;
        if !contact_email.contains('@') || contact_email.chars().any(char::is_whitespace) {
            return Err(ServiceError::InvalidInput("contact_email must be an email address".into()));
        }
        text("webhook_url", webhook_url, 2048)?;
        self.check_webhook_url(webhook_url)?;
        let developer = Developer {
            id: id.clone(),
            name: name.to_string(),
            contact_email: contact_email.to_string(),
            webhook_url: webhook_url.to_string(),
        };
        Ok(self.store.put_developer(&developer, self.clock.now())?)
    }

    /// Registers an app for a developer; the client secret is returned once and kept only as
    /// an argon2 hash.
    pub fn register_app(
        &self,
        developer: &DeveloperId,
        name: &str,
        app_category: &str,
    ) -> ServiceResult<RegisteredApp> {
        let id = AppId::parse(&format!("app_{}", random_hex(8)))
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        self.register_app_with_id(id, developer, name, app_category)
    }

    /// Registers an app under an id the caller chose (a seeded world keeps its ids stable).
    pub fn register_app_with_id(
        &self,
        id: AppId,
        developer: &DeveloperId,
        name: &str,
        app_category: &str,
    ) -> ServiceResult<RegisteredApp> {
        text("name", name, 200)?;
        category(app_category)?;
        if self.store.developer(developer)?.is_none() {
            return Err(ServiceError::NotFound(format!("developer {:?}", developer.as_str())));
        }
        let app = App {
            id,
            developer: developer.clone(),
            name: name.to_string(),
            category: app_category.to_string(),
            status: AppStatus::Active,
            client_id: format!("cid_{}", random_hex(16)),
        };
        let client_secret = format!("css_{}", random_text(32));
        let hash = slow_hash(&client_secret).map_err(ServiceError::Internal)?;
        self.store.register_app(&app, &hash, self.clock.now())?;
        Ok(RegisteredApp { app, client_secret })
    }

    /// Sets an app's status. A banned app stays banned; an app becomes active again only if
    /// no remediation case about it (its developer's case naming it) is still open.
    pub fn set_app_status(&self, app: &AppId, status: AppStatus) -> ServiceResult<()> {
        let found =
            self.store.app(app)?.ok_or_else(|| ServiceError::NotFound(format!("app {:?}", app.as_str())))?;
        if found.status == AppStatus::Banned && status != AppStatus::Banned {
            return Err(ServiceError::Conflict(format!(
                "app {app} is banned, and a banned app stays banned: it cannot be suspended or reinstated"
            )));
        }
        if status == AppStatus::Active && found.status != AppStatus::Active {
            // Ids are validated to [A-Za-z0-9_.:-], so the quoted id appears in a case's
            // manifest (JSON keyed by app id) exactly when the manifest names the app.
            let quoted = format!("\"{app}\"");
            let open = self.store.cases()?.into_iter().find(|c| {
                c.developer == found.developer && c.state != CaseState::Closed && c.manifest.contains(&quoted)
            });
            if let Some(case) = open {
                return Err(ServiceError::Conflict(format!(
                    "app {app} is named in case {} of developer {}, which is {}: it cannot be reinstated before the case is closed",
                    case.id,
                    case.developer,
                    case.state.as_str()
                )));
            }
        }
        let change = self.change(FenceScope::App(app.clone()))?;
        self.store.set_app_status(app, status, change.at)?;
        drop(change);
        if status == AppStatus::Suspended && found.status != AppStatus::Suspended {
            self.notify_app_developer(app, "app.suspended", "")?;
        }
        Ok(())
    }

    /// Brings a suspended app back (only a suspended one: see [`Service::set_app_status`]).
    pub fn reinstate_app(&self, app: &AppId) -> ServiceResult<()> {
        match self.app_status(app)? {
            AppStatus::Suspended => self.set_app_status(app, AppStatus::Active),
            AppStatus::Banned => Err(ServiceError::Conflict(format!(
                "app {app} is banned, and a banned app stays banned: only a suspended app can be reinstated"
            ))),
            AppStatus::Active => Err(ServiceError::Conflict(format!(
                "app {app} is active: only a suspended app can be reinstated"
            ))),
        }
    }

    fn app_status(&self, app: &AppId) -> ServiceResult<AppStatus> {
        self.store
            .app(app)?
            .map(|a| a.status)
            .ok_or_else(|| ServiceError::NotFound(format!("app {:?}", app.as_str())))
    }

    /// Revokes an app: it is banned and every token it holds stops working, from the very
    /// next request. Returns how many tokens were revoked.
    pub fn revoke_app(&self, app: &AppId) -> ServiceResult<u64> {
        if self.store.app(app)?.is_none() {
            return Err(ServiceError::NotFound(format!("app {:?}", app.as_str())));
        }
        let change = self.change(FenceScope::App(app.clone()))?;
        self.store.set_app_status(app, AppStatus::Banned, change.at)?;
        let tokens = self.store.revoke_app_tokens(app, change.at)?;
        drop(change);
        self.notify_app_developer(app, "access.revoked", r#","reason":"revoked by the platform""#)?;
        Ok(tokens)
    }

    /// Revokes every app of a developer. Returns (apps, tokens) revoked.
    pub fn revoke_developer(&self, developer: &DeveloperId) -> ServiceResult<(u64, u64)> {
        if self.store.developer(developer)?.is_none() {
            return Err(ServiceError::NotFound(format!("developer {:?}", developer.as_str())));
        }
        let (mut apps, mut tokens) = (0, 0);
        for app in self.store.apps()?.into_iter().filter(|a| &a.developer == developer) {
            tokens += self.revoke_app(&app.id)?;
            apps += 1;
        }
        Ok((apps, tokens))
    }

    /// A group admin authorizes an app for the group. `authorized_by` must be an admin of the
    /// group at this instant.
    pub fn install_app(&self, app: &AppId, group: &GroupId, authorized_by: &MemberId) -> ServiceResult<()> {
        if self.store.app(app)?.is_none() {
            return Err(ServiceError::NotFound(format!("app {:?}", app.as_str())));
        }
        if self.store.group(group)?.is_none() {
            return Err(ServiceError::NotFound(format!("group {:?}", group.as_str())));
        }
        if self.store.membership(group, authorized_by)? != Some(Role::Admin) {
            return Err(ServiceError::Rejected(format!(
                "member {:?} is not an admin of group {:?}, so cannot authorize an app for it",
                authorized_by.as_str(),
                group.as_str()
            )));
        }
        let existed = self.store.installation(app, group)?.is_some();
        let change = self.change(FenceScope::App(app.clone()))?;
        self.store.set_installation(app, group, Some(authorized_by), change.at)?;
        drop(change);
        if !existed {
            self.notify_app_developer(app, "installation.created", &format!(r#","group":"{group}""#))?;
        }
        Ok(())
    }

    /// Removes every installation no app request used for `inactive_days` (the platform's
    /// inactivity cutoff). `last_use` holds when each (app, group) was last served, as the
    /// ledger says; an installation never used counts from when it was made. Returns what
    /// was removed; each developer is told, with the reason.
    pub fn expire_inactive_installations(
        &self,
        last_use: &std::collections::HashMap<(AppId, GroupId), consentry_types::Instant>,
        inactive_days: i64,
    ) -> ServiceResult<Vec<(AppId, GroupId)>> {
        if inactive_days < 1 {
            return Err(ServiceError::InvalidInput("the inactivity cutoff must be at least one day".into()));
        }
        let change = self.change(FenceScope::Everything)?;
        let now = change.at;
        let cutoff = now.plus_days(-inactive_days);
        let mut expired = Vec::new();
        for ((app, group), (_, installed_at)) in self.store.facts_as_of(now)?.installations {
            let used = last_use
                .get(&(app.clone(), group.clone()))
                .copied()
                .unwrap_or(installed_at)
                .max(installed_at);
            if used < cutoff {
                self.store.set_installation(&app, &group, None, now)?;
                let details = format!(
                    r#","group":"{group}","reason":"unused for {inactive_days} days","last_used":"{used}""#
                );
                self.notify_app_developer(&app, "installation.removed", &details)?;
                expired.push((app, group));
            }
        }
        Ok(expired)
    }

    pub fn uninstall_app(&self, app: &AppId, group: &GroupId) -> ServiceResult<()> {
        let existed = self.store.installation(app, group)?.is_some();
        let change = self.change(FenceScope::App(app.clone()))?;
        self.store.set_installation(app, group, None, change.at)?;
        drop(change);
        if existed {
            self.notify_app_developer(app, "installation.removed", &format!(r#","group":"{group}""#))?;
        }
        Ok(())
    }

    /// Sets a member's consent to an app: the given scopes, or none to withdraw.
    pub fn set_consent(&self, member: &MemberId, app: &AppId, scopes: &[Scope]) -> ServiceResult<()> {
        if self.store.app(app)?.is_none() {
            return Err(ServiceError::NotFound(format!("app {:?}", app.as_str())));
        }
        let profile = scopes.contains(&Scope::Profile);
        let had = self.store.profile_consents(app, std::slice::from_ref(member))?.contains(member);
        let change = self.change(FenceScope::App(app.clone()))?;
        self.store.set_consent(member, app, profile, change.at)?;
        drop(change);
        if had && !profile {
            // The developer learns which of its app-scoped ids withdrew, never the platform id.
            let scoped = self.server_key().scoped_member_id(app, member);
            self.notify_app_developer(
                app,
                "consent.revoked",
                &format!(r#","member":"{scoped}","scopes":["profile"]"#),
            )?;
        }
        Ok(())
    }

    /// Validates policy text against the schema and stores it as a new version, written by
    /// the key `author` (recorded by its id).
    pub fn submit_policy(&self, text: &str, author: &OperatorSession) -> ServiceResult<u32> {
        author.require(POLICY_AUTHORS)?;
        if text.len() > 1 << 20 {
            return Err(ServiceError::InvalidInput("policy text must be at most 1 MiB".into()));
        }
        compile(0, text).map_err(ServiceError::Policy)?;
        self.live_key(&author.key_id)?;
        Ok(self.store.add_policy_version(text, &author.key_id, self.clock.now())?)
    }

    /// A privacy officer approves a stored version, recorded by key id. Two-person rule: the
    /// approver's key is not the author's, and no key is in both keys' lineages (see
    /// [`Service::approval_refusal`]). The version's proofs must have passed, or been waived.
    pub fn approve_policy(&self, version: u32, approver: &OperatorSession) -> ServiceResult<()> {
        approver.require(&[OperatorRole::PrivacyOfficer])?;
        self.live_key(&approver.key_id)?;
        let stored = self
            .store
            .policy_version(version)?
            .ok_or_else(|| ServiceError::NotFound(format!("policy version {version}")))?;
        if let Some(why) = self.approval_refusal(&stored.author, &approver.key_id)? {
            return Err(ServiceError::Rejected(format!(
                "key {} cannot approve policy version {version}: {why}; a privacy officer holding a key outside the author's lineage must approve it",
                approver.key_id
            )));
        }
        if let Some(why) = self.proof_refusal(version)? {
            return Err(ServiceError::Rejected(why));
        }
        Ok(self.store.approve_policy(version, &approver.key_id, self.clock.now())?)
    }

    /// The approvals of a version that satisfy the two-person rule now (an approval whose key
    /// was revoked since no longer counts).
    pub fn counting_approvals(&self, version: u32) -> ServiceResult<Vec<(String, consentry_types::Instant)>> {
        let stored = self
            .store
            .policy_version(version)?
            .ok_or_else(|| ServiceError::NotFound(format!("policy version {version}")))?;
        let mut counting = Vec::new();
        for (approver, at) in self.store.policy_approvals(version)? {
            if self.approval_refusal(&stored.author, &approver)?.is_none() {
                counting.push((approver, at));
            }
        }
        Ok(counting)
    }

    /// Makes a stored version the active policy from this instant on, recording the key `by`
    /// that activated it. The version must carry an approval that satisfies the two-person
    /// rule now.
    pub fn activate_policy(
        &self,
        version: u32,
        by: &OperatorSession,
        reason: &str,
    ) -> ServiceResult<PolicyActivation> {
        by.require(POLICY_AUTHORS)?;
        text("reason", reason, 2000)?;
        self.live_key(&by.key_id)?;
        if self.counting_approvals(version)?.is_empty() {
            return Err(ServiceError::Rejected(format!(
                "policy version {version} is not approved: a privacy officer holding a key outside its author's lineage must approve it first"
            )));
        }
        // Refuse to activate anything that does not compile today.
        self.compiled_policy(version)?;
        let change = self.change(FenceScope::Everything)?;
        let activation = PolicyActivation {
            version,
            author: by.key_id.clone(),
            reason: reason.to_string(),
            at: change.at,
        };
        self.store.activate_policy(&activation)?;
        drop(change);
        Ok(activation)
    }
}
