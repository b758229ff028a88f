//! Policies: versions, approvals, previews, proofs, waivers and activations.

use consentry_store::{ProofRecord, ProofWaiver, StoreError};
use consentry_types::{Instant, PolicyActivation, PolicyVersion};
use postgres::Row;

use crate::sql::{instant, version_of, Db, DbResult, Failure};

pub(crate) fn policy_row(row: &Row) -> DbResult<PolicyVersion> {
    Ok(PolicyVersion {
        version: version_of(row, 0)?,
        text: row.try_get(1)?,
        author: row.try_get(2)?,
        created_at: instant(row, 3)?,
    })
}

fn require_version(db: &mut dyn Db, version: u32) -> DbResult<()> {
    match db.query_opt("SELECT 1 FROM policy_versions WHERE version = $1", &[&i64::from(version)])? {
        Some(_) => Ok(()),
        None => Err(Failure::Store(StoreError::NotFound(format!("policy version {version}")))),
    }
}

pub(crate) fn add_policy_version(db: &mut dyn Db, text: &str, author: &str, at: Instant) -> DbResult<u32> {
    let next: i64 =
        db.query_one("SELECT COALESCE(MAX(version), 0) + 1 FROM policy_versions", &[])?.try_get(0)?;
    db.execute(
        "INSERT INTO policy_versions (version, text, author, created_at) VALUES ($1, $2, $3, $4)",
        &[&next, &text, &author, &at.millis()],
    )?;
    u32::try_from(next)
        .map_err(|_| Failure::Store(StoreError::Conflict("no policy version number is left".into())))
}

pub(crate) fn policy_version(db: &mut dyn Db, version: u32) -> DbResult<Option<PolicyVersion>> {
    db.query_opt(
        "SELECT version, text, author, created_at FROM policy_versions WHERE version = $1",
        &[&i64::from(version)],
    )?
    .map(|row| policy_row(&row))
    .transpose()
}

pub(crate) fn policy_versions(db: &mut dyn Db) -> DbResult<Vec<PolicyVersion>> {
    db.query("SELECT version, text, author, created_at FROM policy_versions ORDER BY version", &[])?
        .iter()
        .map(policy_row)
        .collect()
}

pub(crate) fn approve_policy(db: &mut dyn Db, version: u32, approver: &str, at: Instant) -> DbResult<()> {
    require_version(db, version)?;
    db.execute(
        "INSERT INTO policy_approvals (version, approver, at) VALUES ($1, $2, $3)
         ON CONFLICT (version, approver) DO NOTHING",
        &[&i64::from(version), &approver, &at.millis()],
    )?;
    Ok(())
}

pub(crate) fn policy_approvals(db: &mut dyn Db, version: u32) -> DbResult<Vec<(String, Instant)>> {
    db.query(
        "SELECT approver, at FROM policy_approvals WHERE version = $1 ORDER BY at, approver",
        &[&i64::from(version)],
    )?
    .iter()
    .map(|row| Ok((row.try_get(0)?, instant(row, 1)?)))
    .collect()
}

pub(crate) fn record_preview(
    db: &mut dyn Db,
    version: u32,
    by: &str,
    summary: &str,
    at: Instant,
) -> DbResult<()> {
    require_version(db, version)?;
    db.execute(
        "INSERT INTO policy_previews (version, by, summary, at) VALUES ($1, $2, $3, $4)",
        &[&i64::from(version), &by, &summary, &at.millis()],
    )?;
    Ok(())
}

pub(crate) fn policy_previews(db: &mut dyn Db, version: u32) -> DbResult<Vec<(String, Instant, String)>> {
    db.query(
        "SELECT by, at, summary FROM policy_previews WHERE version = $1 ORDER BY seq",
        &[&i64::from(version)],
    )?
    .iter()
    .map(|row| Ok((row.try_get(0)?, instant(row, 1)?, row.try_get(2)?)))
    .collect()
}

pub(crate) fn record_proof(db: &mut dyn Db, version: u32, proof: &ProofRecord) -> DbResult<()> {
    require_version(db, version)?;
    db.execute(
        "INSERT INTO policy_proofs (version, by, passed, summary, at) VALUES ($1, $2, $3, $4, $5)",
        &[&i64::from(version), &proof.by, &proof.passed, &proof.summary, &proof.at.millis()],
    )?;
    Ok(())
}

pub(crate) fn policy_proofs(db: &mut dyn Db, version: u32) -> DbResult<Vec<ProofRecord>> {
    db.query(
        "SELECT by, at, passed, summary FROM policy_proofs WHERE version = $1 ORDER BY seq",
        &[&i64::from(version)],
    )?
    .iter()
    .map(|row| {
        Ok(ProofRecord {
            by: row.try_get(0)?,
            at: instant(row, 1)?,
            passed: row.try_get(2)?,
            summary: row.try_get(3)?,
        })
    })
    .collect()
}

pub(crate) fn record_waiver(db: &mut dyn Db, version: u32, waiver: &ProofWaiver) -> DbResult<()> {
    require_version(db, version)?;
    db.execute(
        "INSERT INTO policy_waivers (version, by, reason, at) VALUES ($1, $2, $3, $4)",
        &[&i64::from(version), &waiver.by, &waiver.reason, &waiver.at.millis()],
    )?;
    Ok(())
}

pub(crate) fn policy_waivers(db: &mut dyn Db, version: u32) -> DbResult<Vec<ProofWaiver>> {
    db.query(
        "SELECT by, at, reason FROM policy_waivers WHERE version = $1 ORDER BY seq",
        &[&i64::from(version)],
    )?
    .iter()
    .map(|row| Ok(ProofWaiver { by: row.try_get(0)?, at: instant(row, 1)?, reason: row.try_get(2)? }))
    .collect()
}

pub(crate) fn activate_policy(db: &mut dyn Db, activation: &PolicyActivation) -> DbResult<()> {
    require_version(db, activation.version)?;
    let last: Option<i64> = db.query_one("SELECT MAX(at) FROM policy_activations", &[])?.try_get(0)?;
    if last.is_some_and(|last| last > activation.at.millis()) {
        return Err(Failure::Store(StoreError::Conflict(
            "an activation may not precede the last one".into(),
        )));
    }
    db.execute(
        "INSERT INTO policy_activations (version, author, reason, at) VALUES ($1, $2, $3, $4)",
        &[&i64::from(activation.version), &activation.author, &activation.reason, &activation.at.millis()],
    )?;
    Ok(())
}

pub(crate) fn policy_activations(db: &mut dyn Db) -> DbResult<Vec<PolicyActivation>> {
    db.query("SELECT version, author, reason, at FROM policy_activations ORDER BY at, seq", &[])?
        .iter()
        .map(|row| {
            Ok(PolicyActivation {
                version: version_of(row, 0)?,
                author: row.try_get(1)?,
                reason: row.try_get(2)?,
                at: instant(row, 3)?,
            })
        })
        .collect()
}

pub(crate) fn active_policy(db: &mut dyn Db) -> DbResult<Option<PolicyVersion>> {
    db.query_opt(
        "SELECT v.version, v.text, v.author, v.created_at FROM policy_activations a
         JOIN policy_versions v ON v.version = a.version ORDER BY a.at DESC, a.seq DESC LIMIT 1",
        &[],
    )?
    .map(|row| policy_row(&row))
    .transpose()
}
