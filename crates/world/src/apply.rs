//! The applier: plays a world's events through a `Service`'s public API with a
//! `SimulatedClock`, so that every change goes through the rules the platform API enforces
//! (an installer must be an admin, a banned app stays banned, a policy is activated only once a
//! privacy officer outside its author's lineage approved it, after its proofs passed or were
//! waived) and every read is served from the store as it is at that instant.

use std::collections::HashMap;
use std::sync::Arc;

use consentry_service::{
    request_id, AppSession, OperatorSession, PageRequest, RegisteredApp, Service, ServiceError,
    SimulatedClock,
};
use consentry_store::Facts;
use consentry_types::{AppId, DeveloperId, DisclosureRecord, Instant, OperatorRole, Scope};

use crate::event::{Event, Read, StatusChange, Timed};
use crate::replay::Replay;

/// Why an event could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The service refused the event: the world (or what was applied before it) broke a rule.
    #[error("{kind} at {at} refused: {error}")]
    Refused { at: Instant, kind: &'static str, error: ServiceError },
    /// A read or registration names an app the applier never registered.
    #[error("{kind} at {at} names app {app}, which this applier never registered")]
    UnknownApp { at: Instant, kind: &'static str, app: AppId },
    /// A members list did not end within the number of pages its group can have.
    #[error("members of {group} at {at} did not end after {pages} pages")]
    EndlessList { at: Instant, group: String, pages: usize },
}

impl ApplyError {
    /// The service's reason, when the service refused.
    pub fn refusal(&self) -> Option<&ServiceError> {
        match self {
            ApplyError::Refused { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// What applying one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// A change of the world was made.
    Changed,
    /// A shipped policy became the active one, as this version.
    Activated(u32),
    /// A read was served: the record of each response (one per page), for the ledger.
    Served(Vec<DisclosureRecord>),
}

/// An app's credentials and the token it reads with.
struct Client {
    registered: RegisteredApp,
    session: Option<(AppSession, Instant)>,
}

/// The reason every waiver of a world's policy reviews carries.
pub const WAIVER_REASON: &str = "a generated world replays the shipped policies as they were activated; their proofs are reviewed with `consentry policy prove`, not by the world's applier";

/// Plays events into a service. Build it on a service whose clock is `clock`.
pub struct Applier {
    service: Arc<Service>,
    clock: Arc<SimulatedClock>,
    author: OperatorSession,
    officer: OperatorSession,
    webhook_url: Box<dyn Fn(&DeveloperId) -> String + Send + Sync>,
    clients: HashMap<AppId, Client>,
}

impl Applier {
    /// An applier that makes its policy team on the server: an operator key that writes
    /// policies and an independent privacy officer's key that approves them.
    pub fn new(service: Arc<Service>, clock: Arc<SimulatedClock>) -> Result<Applier, ApplyError> {
        let at = clock_now(&clock);
        let refused = |error| ApplyError::Refused { at, kind: "operator key", error };
        let sign_in = |name: &str, role: OperatorRole| -> Result<OperatorSession, ApplyError> {
            let made = service
                .create_key_on_server("consentry-world", "world", name, role, None)
                .map_err(refused)?;
            service.authenticate_operator(&made.key).map_err(refused)
        };
        let author = sign_in("world-author", OperatorRole::Operator)?;
        let officer = sign_in("world-privacy-officer", OperatorRole::PrivacyOfficer)?;
        Ok(Applier::with_keys(service, clock, author, officer))
    }

    /// An applier whose policies are written by `author` and approved by `officer`.
    pub fn with_keys(
        service: Arc<Service>,
        clock: Arc<SimulatedClock>,
        author: OperatorSession,
        officer: OperatorSession,
    ) -> Applier {
        Applier {
            service,
            clock,
            author,
            officer,
            webhook_url: Box::new(|developer| format!("https://hooks.{developer}.example/consentry")),
            clients: HashMap::new(),
        }
    }

    /// Where each developer's webhooks go (default: `https://hooks.<developer>.example/consentry`).
    pub fn with_webhook_url(
        mut self,
        url: impl Fn(&DeveloperId) -> String + Send + Sync + 'static,
    ) -> Applier {
        self.webhook_url = Box::new(url);
        self
    }

    pub fn service(&self) -> &Arc<Service> {
        &self.service
    }

    pub fn author(&self) -> &OperatorSession {
        &self.author
    }

    pub fn officer(&self) -> &OperatorSession {
        &self.officer
    }

    /// The client credentials an app was registered with.
    pub fn credentials(&self, app: &AppId) -> Option<&RegisteredApp> {
        self.clients.get(app).map(|c| &c.registered)
    }

    /// Applies one event at its instant.
    pub fn apply(&mut self, timed: &Timed) -> Result<Applied, ApplyError> {
        let at = timed.at;
        self.clock.set(at);
        let kind = timed.event.kind();
        let refused = |error| ApplyError::Refused { at, kind, error };
        let service = self.service.clone();
        match &timed.event {
            Event::Member { member, name } => {
                let picture = format!("https://pictures.example/{member}.jpg");
                service.put_member(member, name, &picture).map_err(refused)?;
            }
            Event::Group { group, name } => service.put_group(group, name).map_err(refused)?,
            Event::Developer { developer, name, contact_email } => {
                let url = (self.webhook_url)(developer);
                service.put_developer(developer, name, contact_email, &url).map_err(refused)?;
            }
            Event::App { app, developer, name, category } => {
                let registered =
                    service.register_app_with_id(app.clone(), developer, name, category).map_err(refused)?;
                self.clients.insert(app.clone(), Client { registered, session: None });
                // The app signs in at once, as a new app does.
                self.session(app, at)?;
            }
            Event::Post { group, post, author, content } => {
                service.put_post(group, post, author, content).map_err(refused)?;
            }
            Event::Join { group, member, role } | Event::ChangeRole { group, member, role } => {
                service.set_membership(group, member, Some(*role)).map_err(refused)?;
            }
            Event::Leave { group, member } => service.set_membership(group, member, None).map_err(refused)?,
            Event::Install { app, group, by } => service.install_app(app, group, by).map_err(refused)?,
            Event::Uninstall { app, group } => service.uninstall_app(app, group).map_err(refused)?,
            Event::OptIn { member, app } => {
                service.set_consent(member, app, &[Scope::Profile]).map_err(refused)?;
            }
            Event::Withdraw { member, app } => service.set_consent(member, app, &[]).map_err(refused)?,
            Event::Status { app, change: StatusChange::Suspend } => {
                service.set_app_status(app, consentry_types::AppStatus::Suspended).map_err(refused)?;
            }
            Event::Status { app, change: StatusChange::Reinstate } => {
                service.reinstate_app(app).map_err(refused)?;
            }
            Event::Status { app, change: StatusChange::Ban } => {
                service.revoke_app(app).map_err(refused)?;
            }
            Event::Policy { policy } => {
                let version = service.submit_policy(policy.text(), &self.author).map_err(refused)?;
                service.waive_proofs(version, &self.officer, WAIVER_REASON).map_err(refused)?;
                service.approve_policy(version, &self.officer).map_err(refused)?;
                let reason = format!("{} as the world's history has it", policy.name());
                service.activate_policy(version, &self.author, &reason).map_err(refused)?;
                return Ok(Applied::Activated(version));
            }
            Event::Read { app, group, read } => {
                let session = self.session(app, at)?;
                let mut records = Vec::new();
                match *read {
                    Read::Group { fields } => {
                        let served = service.read_group(&session, group, fields).map_err(refused)?;
                        records.push(served.record(&request_id(), "GET /v1/groups/{id}", &session));
                    }
                    Read::Members { fields, limit } => {
                        let mut after = None;
                        // A list ends within (members / limit + 1) pages; the store bounds it.
                        let most = service.store().member_count(group).map_err(|e| refused(e.into()))?
                            as usize
                            / limit.max(1)
                            + 2;
                        loop {
                            let page = PageRequest { after, limit: Some(limit) };
                            let served =
                                service.read_members(&session, group, fields, &page).map_err(refused)?;
                            records.push(served.record(
                                &request_id(),
                                "GET /v1/groups/{id}/members",
                                &session,
                            ));
                            after = served.body.next;
                            if after.is_none() {
                                break;
                            }
                            if records.len() > most {
                                return Err(ApplyError::EndlessList {
                                    at,
                                    group: group.to_string(),
                                    pages: records.len(),
                                });
                            }
                        }
                    }
                }
                return Ok(Applied::Served(records));
            }
        }
        Ok(Applied::Changed)
    }

    /// Applies every change of the world, in order, skipping its reads.
    pub fn apply_changes<'a>(
        &mut self,
        events: impl IntoIterator<Item = &'a Timed>,
    ) -> Result<usize, ApplyError> {
        let mut applied = 0;
        for timed in events.into_iter().filter(|t| !t.event.is_read()) {
            self.apply(timed)?;
            applied += 1;
        }
        Ok(applied)
    }

    /// The app's session, signing in again (client credentials) when its token has expired.
    fn session(&mut self, app: &AppId, at: Instant) -> Result<AppSession, ApplyError> {
        let kind = "sign-in";
        let client =
            self.clients.get_mut(app).ok_or_else(|| ApplyError::UnknownApp { at, kind, app: app.clone() })?;
        if let Some((session, expires)) = &client.session {
            if at < *expires {
                return Ok(session.clone());
            }
        }
        let refused = |error| ApplyError::Refused { at, kind, error };
        let registered = &client.registered;
        let token = self
            .service
            .issue_token(&registered.app.client_id, &registered.client_secret)
            .map_err(refused)?;
        let session = self.service.authenticate_app(&token.access_token).map_err(refused)?;
        client.session = Some((session.clone(), at.plus_secs(token.expires_in)));
        Ok(session)
    }
}

fn clock_now(clock: &SimulatedClock) -> Instant {
    consentry_service::Clock::now(clock)
}

impl Replay<'_> {
    /// The facts as a store that applied the same events reconstructs them with `facts_as_of`.
    pub fn facts(&self) -> Facts {
        Facts {
            memberships: self.memberships(),
            installations: self.installations().clone(),
            profile_consents: self.consents().clone(),
            app_statuses: self.statuses().clone(),
            active_policy: self.active_policy().map(|(version, _)| version),
        }
    }
}
