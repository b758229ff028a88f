//! Proofs in the privacy review: a version's proof results are kept with it, and a version
//! whose proofs did not pass cannot be approved unless a privacy officer waived them, with a
//! reason, from a key outside the author's lineage.

use consentry_store::{ProofRecord, ProofWaiver};
use consentry_types::{Instant, OperatorRole};

use crate::auth::OperatorSession;
use crate::{Service, ServiceError, ServiceResult};

/// Who may ask for proofs of a stored version.
pub const PROVERS: &[OperatorRole] = &[OperatorRole::Operator, OperatorRole::PrivacyOfficer];

/// Where a version stands with its proofs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProofStanding {
    /// The latest proofs passed: every invariant proven for every field, never errors.
    Passed { at: Instant },
    /// A privacy officer waived the proofs (whatever they say), with a reason.
    Waived(ProofWaiver),
    /// The latest proofs did not pass, and nobody waived them.
    Failed { at: Instant },
    /// No proofs were recorded and none were waived.
    Missing,
}

impl ProofStanding {
    /// Whether the proofs let the version be approved.
    pub fn allows_approval(&self) -> bool {
        matches!(self, ProofStanding::Passed { .. } | ProofStanding::Waived(_))
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            ProofStanding::Passed { .. } => "passed",
            ProofStanding::Waived(_) => "waived",
            ProofStanding::Failed { .. } => "failed",
            ProofStanding::Missing => "missing",
        }
    }
}

impl Service {
    fn require_version(&self, version: u32) -> ServiceResult<consentry_types::PolicyVersion> {
        self.store
            .policy_version(version)?
            .ok_or_else(|| ServiceError::NotFound(format!("policy version {version}")))
    }

    /// Keeps the result of proving a stored version (the summary is the review as JSON).
    pub fn record_proof(
        &self,
        version: u32,
        by: &OperatorSession,
        passed: bool,
        summary: &str,
    ) -> ServiceResult<ProofRecord> {
        by.require(PROVERS)?;
        self.live_key(&by.key_id)?;
        self.require_version(version)?;
        let record =
            ProofRecord { by: by.key_id.clone(), at: self.clock.now(), passed, summary: summary.to_string() };
        self.store.record_proof(version, &record)?;
        Ok(record)
    }

    /// A privacy officer lets a version be approved although its proofs did not pass (or could
    /// not be run), with a reason that is kept and shown. The officer's key must be outside the
    /// author's lineage, as for an approval.
    pub fn waive_proofs(
        &self,
        version: u32,
        by: &OperatorSession,
        reason: &str,
    ) -> ServiceResult<ProofWaiver> {
        by.require(&[OperatorRole::PrivacyOfficer])?;
        self.live_key(&by.key_id)?;
        let reason = reason.trim();
        if reason.chars().count() < 10 {
            return Err(ServiceError::InvalidInput(
                "a waiver needs a reason of at least 10 characters: it is kept and shown with the version"
                    .into(),
            ));
        }
        if reason.chars().count() > 2000 || reason.chars().any(|c| c.is_control() && c != '\n') {
            return Err(ServiceError::InvalidInput(
                "the reason must be at most 2000 characters, without control characters".into(),
            ));
        }
        let stored = self.require_version(version)?;
        if let Some(why) = self.approval_refusal(&stored.author, &by.key_id)? {
            return Err(ServiceError::Rejected(format!(
                "key {} cannot waive the proofs of policy version {version}: {why}",
                by.key_id
            )));
        }
        let waiver = ProofWaiver { by: by.key_id.clone(), at: self.clock.now(), reason: reason.to_string() };
        self.store.record_waiver(version, &waiver)?;
        Ok(waiver)
    }

    /// Where `version` stands: the latest proofs decide, unless a waiver was recorded.
    pub fn proof_standing(&self, version: u32) -> ServiceResult<ProofStanding> {
        self.require_version(version)?;
        let latest = self.store.policy_proofs(version)?.pop();
        if let Some(proof) = &latest {
            if proof.passed {
                return Ok(ProofStanding::Passed { at: proof.at });
            }
        }
        if let Some(waiver) = self.store.policy_waivers(version)?.pop() {
            return Ok(ProofStanding::Waived(waiver));
        }
        Ok(match latest {
            Some(proof) => ProofStanding::Failed { at: proof.at },
            None => ProofStanding::Missing,
        })
    }

    /// Why the proofs stop `version` from being approved, if they do.
    pub(crate) fn proof_refusal(&self, version: u32) -> ServiceResult<Option<String>> {
        Ok(match self.proof_standing(version)? {
            ProofStanding::Passed { .. } | ProofStanding::Waived(_) => None,
            ProofStanding::Failed { at } => Some(format!(
                "the proofs of policy version {version} recorded at {at} did not pass; fix the draft, or a privacy officer may waive them with a reason"
            )),
            ProofStanding::Missing => Some(format!(
                "policy version {version} has no proofs: run them (POST /platform/v1/policies/{version}/proofs or `consentry policy approve`), or a privacy officer may waive them with a reason"
            )),
        })
    }
}
