//! Remediation cases: revoke, request deletion of exactly the manifest, take the developer's
//! attestation before a deadline, and mark what is overdue. Every transition is kept.

use consentry_store::{Case, CaseState};
use consentry_types::DeveloperId;

use crate::{Service, ServiceError, ServiceResult};

impl Service {
    /// Opens a case for a developer with findings: every app of the developer is revoked, the
    /// deletion of exactly `manifest` (JSON) is requested, and the developer is notified.
    pub fn open_case(
        &self,
        developer: &DeveloperId,
        manifest: &str,
        deadline_days: i64,
    ) -> ServiceResult<u64> {
        if !(1..=365).contains(&deadline_days) {
            return Err(ServiceError::InvalidInput("the deadline must be 1 to 365 days away".into()));
        }
        let (apps, tokens) = self.revoke_developer(developer)?;
        let now = self.clock.now();
        let deadline = now.plus_days(deadline_days);
        let id = self.store.open_case(developer, manifest, deadline, now)?;
        self.notify_developer(
            developer,
            "deletion.requested",
            &format!(
                r#","case":{id},"deadline":"{deadline}","apps_revoked":{apps},"tokens_revoked":{tokens}"#
            ),
        )?;
        Ok(id)
    }

    /// The developer whose app these client credentials belong to (a revoked app still
    /// authenticates here, so its developer can read and answer its case).
    pub fn developer_of_client(&self, client_id: &str, client_secret: &str) -> ServiceResult<DeveloperId> {
        self.developer_of_client_from(client_id, client_secret, None)
    }

    /// [`Service::developer_of_client`] for credentials sent from `from`.
    pub fn developer_of_client_from(
        &self,
        client_id: &str,
        client_secret: &str,
        from: Option<std::net::IpAddr>,
    ) -> ServiceResult<DeveloperId> {
        let app = self.authenticate_client(client_id, client_secret, from)?;
        self.store
            .app(&app)?
            .map(|a| a.developer)
            .ok_or_else(|| ServiceError::Unauthenticated("client authentication failed".into()))
    }

    /// The cases of one developer.
    pub fn cases_of(&self, developer: &DeveloperId) -> ServiceResult<Vec<Case>> {
        Ok(self.store.cases()?.into_iter().filter(|c| &c.developer == developer).collect())
    }

    /// The developer attests that it deleted what the manifest lists. Only its own case, only
    /// once, only while deletion is requested or overdue.
    pub fn attest_case(
        &self,
        developer: &DeveloperId,
        case: u64,
        statement: &str,
    ) -> ServiceResult<CaseState> {
        if statement.trim().is_empty() || statement.chars().count() > 5_000 {
            return Err(ServiceError::InvalidInput("the statement must be 1 to 5000 characters".into()));
        }
        let found = self.store.case(case)?.filter(|c| &c.developer == developer);
        let Some(found) = found else { return Err(ServiceError::NotFound(format!("case {case}"))) };
        match found.state {
            CaseState::DeletionRequested | CaseState::Overdue => {}
            other => {
                return Err(ServiceError::Conflict(format!(
                    "case {case} is {}: it takes no attestation now",
                    other.as_str()
                )))
            }
        }
        let late = found.state == CaseState::Overdue;
        let note =
            format!("{}attested by the developer: {}", if late { "late: " } else { "" }, statement.trim());
        self.store.move_case(case, found.state, CaseState::Attested, &note, self.clock.now())?;
        Ok(CaseState::Attested)
    }

    /// The follow-up: given whether the ledger shows any disclosure to the developer since the
    /// case opened, a case fails (and the developer is told) or, once attested, closes.
    pub fn follow_up_case(&self, case: u64, disclosed_since_opened: bool) -> ServiceResult<CaseState> {
        let found = self.store.case(case)?.ok_or_else(|| ServiceError::NotFound(format!("case {case}")))?;
        let now = self.clock.now();
        let open =
            matches!(found.state, CaseState::DeletionRequested | CaseState::Attested | CaseState::Overdue);
        if disclosed_since_opened && open {
            self.store.move_case(
                case,
                found.state,
                CaseState::Failed,
                "the follow-up found disclosures after revocation",
                now,
            )?;
            self.notify_developer(&found.developer, "case.failed", &format!(r#","case":{case}"#))?;
            return Ok(CaseState::Failed);
        }
        if found.state == CaseState::Attested {
            self.store.move_case(
                case,
                CaseState::Attested,
                CaseState::Closed,
                "follow-up clean: no disclosure since the case opened",
                now,
            )?;
            return Ok(CaseState::Closed);
        }
        Ok(found.state)
    }

    /// The developer re-certifies one of its apps' use of member data (the annual checkup).
    pub fn certify_app(
        &self,
        developer: &DeveloperId,
        app: &consentry_types::AppId,
        statement: &str,
    ) -> ServiceResult<()> {
        if statement.trim().is_empty() || statement.chars().count() > 5_000 {
            return Err(ServiceError::InvalidInput("the statement must be 1 to 5000 characters".into()));
        }
        match self.store.app(app)? {
            Some(found) if &found.developer == developer => {}
            _ => return Err(ServiceError::NotFound(format!("app {:?}", app.as_str()))),
        }
        Ok(self.store.certify_app(app, statement.trim(), self.clock.now())?)
    }

    /// Suspends every active app whose last certification (or registration) is older than
    /// `period_days`; returns them. Each suspension notifies the developer.
    pub fn suspend_lapsed_certifications(
        &self,
        period_days: i64,
    ) -> ServiceResult<Vec<consentry_types::AppId>> {
        let cutoff = self.clock.now().plus_days(-period_days);
        let mut suspended = Vec::new();
        for app in self.store.apps()? {
            if app.status != consentry_types::AppStatus::Active {
                continue;
            }
            if self.store.last_certified(&app.id)?.is_none_or(|t| t < cutoff) {
                self.set_app_status(&app.id, consentry_types::AppStatus::Suspended)?;
                suspended.push(app.id);
            }
        }
        Ok(suspended)
    }

    /// Moves every case past its deadline without an attestation to `overdue`, and notifies.
    pub fn check_case_deadlines(&self) -> ServiceResult<u32> {
        let now = self.clock.now();
        let mut moved = 0;
        for case in self.store.cases()? {
            if case.state == CaseState::DeletionRequested && case.deadline <= now {
                self.store.move_case(
                    case.id,
                    CaseState::DeletionRequested,
                    CaseState::Overdue,
                    "deadline passed without an attestation",
                    now,
                )?;
                self.notify_developer(
                    &case.developer,
                    "deletion.overdue",
                    &format!(r#","case":{},"deadline":"{}""#, case.id, case.deadline),
                )?;
                moved += 1;
            }
        }
        Ok(moved)
    }
}
