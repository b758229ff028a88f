//! Policies: versions, approvals, previews, proofs, waivers and activations.

use consentry_store::{ProofRecord, ProofWaiver, StoreError, StoreResult};
use consentry_types::{Instant, PolicyActivation, PolicyVersion};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::sql::{backend, exists};

pub(crate) fn policy_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<PolicyVersion> {
    Ok(PolicyVersion {
        version: row.get(0)?,
        text: row.get(1)?,
        author: row.get(2)?,
        created_at: Instant::from_millis(row.get(3)?),
    })
}

pub(crate) fn add_policy_version(
    tx: &Transaction<'_>,
    text: &str,
    author: &str,
    at: Instant,
) -> StoreResult<u32> {
    let next: u32 = tx
        .query_row("SELECT COALESCE(MAX(version), 0) + 1 FROM policy_versions", [], |r| r.get(0))
        .map_err(backend)?;
    tx.execute(
        "INSERT INTO policy_versions (version, text, author, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![next, text, author, at.millis()],
    )
    .map_err(backend)?;
    Ok(next)
}

pub(crate) fn policy_version(c: &Connection, version: u32) -> rusqlite::Result<Option<PolicyVersion>> {
    c.prepare_cached("SELECT version, text, author, created_at FROM policy_versions WHERE version = ?1")?
        .query_row([version], policy_row)
        .optional()
}

pub(crate) fn policy_versions(c: &Connection) -> rusqlite::Result<Vec<PolicyVersion>> {
    c.prepare_cached("SELECT version, text, author, created_at FROM policy_versions ORDER BY version")?
        .query_map([], policy_row)?
        .collect()
}

pub(crate) fn approve_policy(
    tx: &Transaction<'_>,
    version: u32,
    approver: &str,
    at: Instant,
) -> StoreResult<()> {
    if !exists(tx, "SELECT 1 FROM policy_versions WHERE version = ?1", &version.to_string())? {
        return Err(StoreError::NotFound(format!("policy version {version}")));
    }
    tx.execute(
        "INSERT INTO policy_approvals (version, approver, at) VALUES (?1, ?2, ?3)
         ON CONFLICT (version, approver) DO NOTHING",
        params![version, approver, at.millis()],
    )
    .map_err(backend)?;
    Ok(())
}

pub(crate) fn policy_approvals(c: &Connection, version: u32) -> rusqlite::Result<Vec<(String, Instant)>> {
    c.prepare_cached("SELECT approver, at FROM policy_approvals WHERE version = ?1 ORDER BY at, approver")?
        .query_map([version], |row| Ok((row.get(0)?, Instant::from_millis(row.get(1)?))))?
        .collect()
}

pub(crate) fn record_preview(
    tx: &Transaction<'_>,
    version: u32,
    by: &str,
    summary: &str,
    at: Instant,
) -> StoreResult<()> {
    if !exists(tx, "SELECT 1 FROM policy_versions WHERE version = ?1", &version.to_string())? {
        return Err(StoreError::NotFound(format!("policy version {version}")));
    }
    tx.execute(
        "INSERT INTO policy_previews (version, by, summary, at) VALUES (?1, ?2, ?3, ?4)",
        params![version, by, summary, at.millis()],
    )
    .map_err(backend)?;
    Ok(())
}

pub(crate) fn policy_previews(
    c: &Connection,
    version: u32,
) -> rusqlite::Result<Vec<(String, Instant, String)>> {
    c.prepare_cached("SELECT by, at, summary FROM policy_previews WHERE version = ?1 ORDER BY seq")?
        .query_map([version], |row| Ok((row.get(0)?, Instant::from_millis(row.get(1)?), row.get(2)?)))?
        .collect()
}

pub(crate) fn record_proof(tx: &Transaction<'_>, version: u32, proof: &ProofRecord) -> StoreResult<()> {
    if !exists(tx, "SELECT 1 FROM policy_versions WHERE version = ?1", &version.to_string())? {
        return Err(StoreError::NotFound(format!("policy version {version}")));
    }
    tx.execute(
        "INSERT INTO policy_proofs (version, by, passed, summary, at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![version, proof.by, proof.passed, proof.summary, proof.at.millis()],
    )
    .map_err(backend)?;
    Ok(())
}

pub(crate) fn policy_proofs(c: &Connection, version: u32) -> rusqlite::Result<Vec<ProofRecord>> {
    c.prepare_cached("SELECT by, at, passed, summary FROM policy_proofs WHERE version = ?1 ORDER BY seq")?
        .query_map([version], |row| {
            Ok(ProofRecord {
                by: row.get(0)?,
                at: Instant::from_millis(row.get(1)?),
                passed: row.get(2)?,
                summary: row.get(3)?,
            })
        })?
        .collect()
}

pub(crate) fn record_waiver(tx: &Transaction<'_>, version: u32, waiver: &ProofWaiver) -> StoreResult<()> {
    if !exists(tx, "SELECT 1 FROM policy_versions WHERE version = ?1", &version.to_string())? {
        return Err(StoreError::NotFound(format!("policy version {version}")));
    }
    tx.execute(
        "INSERT INTO policy_waivers (version, by, reason, at) VALUES (?1, ?2, ?3, ?4)",
        params![version, waiver.by, waiver.reason, waiver.at.millis()],
    )
    .map_err(backend)?;
    Ok(())
}

pub(crate) fn policy_waivers(c: &Connection, version: u32) -> rusqlite::Result<Vec<ProofWaiver>> {
    c.prepare_cached("SELECT by, at, reason FROM policy_waivers WHERE version = ?1 ORDER BY seq")?
        .query_map([version], |row| {
            Ok(ProofWaiver { by: row.get(0)?, at: Instant::from_millis(row.get(1)?), reason: row.get(2)? })
        })?
        .collect()
}

pub(crate) fn activate_policy(tx: &Transaction<'_>, activation: &PolicyActivation) -> StoreResult<()> {
    if !exists(tx, "SELECT 1 FROM policy_versions WHERE version = ?1", &activation.version.to_string())? {
        return Err(StoreError::NotFound(format!("policy version {}", activation.version)));
    }
    let last: Option<i64> =
        tx.query_row("SELECT MAX(at) FROM policy_activations", [], |r| r.get(0)).map_err(backend)?;
    if last.is_some_and(|last| last > activation.at.millis()) {
        return Err(StoreError::Conflict("an activation may not precede the last one".into()));
    }
    tx.execute(
        "INSERT INTO policy_activations (version, author, reason, at) VALUES (?1, ?2, ?3, ?4)",
        params![activation.version, activation.author, activation.reason, activation.at.millis()],
    )
    .map_err(backend)?;
    Ok(())
}

pub(crate) fn policy_activations(c: &Connection) -> rusqlite::Result<Vec<PolicyActivation>> {
    c.prepare_cached("SELECT version, author, reason, at FROM policy_activations ORDER BY at, seq")?
        .query_map([], |row| {
            Ok(PolicyActivation {
                version: row.get(0)?,
                author: row.get(1)?,
                reason: row.get(2)?,
                at: Instant::from_millis(row.get(3)?),
            })
        })?
        .collect()
}

pub(crate) fn active_policy(c: &Connection) -> rusqlite::Result<Option<PolicyVersion>> {
    c.prepare_cached(
        "SELECT v.version, v.text, v.author, v.created_at FROM policy_activations a
         JOIN policy_versions v ON v.version = a.version ORDER BY a.at DESC, a.seq DESC LIMIT 1",
    )?
    .query_row([], policy_row)
    .optional()
}

/// The active policy's version only (what a request needs; the text never changes).
pub(crate) fn active_policy_version(c: &Connection) -> rusqlite::Result<Option<u32>> {
    c.prepare_cached("SELECT version FROM policy_activations ORDER BY at DESC, seq DESC LIMIT 1")?
        .query_row([], |r| r.get(0))
        .optional()
}
