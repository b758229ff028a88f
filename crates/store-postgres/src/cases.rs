//! Remediation cases with every transition, and annual certifications.

use consentry_store::{Case, CaseEvent, CaseState, StoreError};
use consentry_types::{AppId, DeveloperId, Instant};
use postgres::Row;

use crate::sql::{corrupt, instant, optional_instant, parsed, require, Db, DbResult, Failure};

fn state_of(row: &Row, index: usize) -> DbResult<CaseState> {
    let state: String = row.try_get(index)?;
    CaseState::parse(&state).ok_or_else(|| corrupt("case state", &state))
}

pub(crate) fn case_row(row: &Row) -> DbResult<Case> {
    let id: i64 = row.try_get(0)?;
    Ok(Case {
        id: u64::try_from(id).map_err(|_| corrupt("case id", &id.to_string()))?,
        developer: parsed(row, 1, DeveloperId::parse, "developer id")?,
        state: state_of(row, 2)?,
        manifest: row.try_get(3)?,
        deadline: instant(row, 4)?,
        opened_at: instant(row, 5)?,
    })
}

pub(crate) fn certify_app(db: &mut dyn Db, app: &AppId, statement: &str, at: Instant) -> DbResult<()> {
    require(db, "SELECT 1 FROM apps WHERE id = $1", "app", app.as_str())?;
    db.execute(
        "INSERT INTO certifications (app, statement, at) VALUES ($1, $2, $3)",
        &[&app.as_str(), &statement, &at.millis()],
    )?;
    Ok(())
}

pub(crate) fn last_certified(db: &mut dyn Db, app: &AppId) -> DbResult<Option<Instant>> {
    optional_instant(
        &db.query_one(
            "SELECT MAX(at) FROM (SELECT at FROM certifications WHERE app = $1
             UNION ALL SELECT created_at AS at FROM apps WHERE id = $1) AS known",
            &[&app.as_str()],
        )?,
        0,
    )
}

pub(crate) fn open_case(
    db: &mut dyn Db,
    developer: &DeveloperId,
    manifest: &str,
    deadline: Instant,
    at: Instant,
) -> DbResult<u64> {
    require(db, "SELECT 1 FROM developers WHERE id = $1", "developer", developer.as_str())?;
    let id: i64 = db
        .query_one(
            "INSERT INTO cases (developer, state, manifest, deadline, opened_at) VALUES ($1, $2, $3, $4, $5)
             RETURNING id",
            &[
                &developer.as_str(),
                &CaseState::DeletionRequested.as_str(),
                &manifest,
                &deadline.millis(),
                &at.millis(),
            ],
        )?
        .try_get(0)?;
    db.execute(
        "INSERT INTO case_events (case_id, state, at, note) VALUES ($1, $2, $3, $4)",
        &[
            &id,
            &CaseState::DeletionRequested.as_str(),
            &at.millis(),
            &"access revoked; deletion of the manifest requested",
        ],
    )?;
    u64::try_from(id).map_err(|_| corrupt("case id", &id.to_string()))
}

pub(crate) fn case(db: &mut dyn Db, id: u64) -> DbResult<Option<Case>> {
    let Ok(key) = i64::try_from(id) else { return Ok(None) };
    db.query_opt(
        "SELECT id, developer, state, manifest, deadline, opened_at FROM cases WHERE id = $1",
        &[&key],
    )?
    .map(|row| case_row(&row))
    .transpose()
}

pub(crate) fn cases(db: &mut dyn Db) -> DbResult<Vec<Case>> {
    db.query("SELECT id, developer, state, manifest, deadline, opened_at FROM cases ORDER BY id", &[])?
        .iter()
        .map(case_row)
        .collect()
}

pub(crate) fn move_case(
    db: &mut dyn Db,
    id: u64,
    from: CaseState,
    to: CaseState,
    note: &str,
    at: Instant,
) -> DbResult<()> {
    let conflict = || Failure::Store(StoreError::Conflict(format!("case {id} is not {}", from.as_str())));
    let key = i64::try_from(id).map_err(|_| conflict())?;
    let changed = db.execute(
        "UPDATE cases SET state = $3 WHERE id = $1 AND state = $2",
        &[&key, &from.as_str(), &to.as_str()],
    )?;
    if changed == 0 {
        return Err(conflict());
    }
    db.execute(
        "INSERT INTO case_events (case_id, state, at, note) VALUES ($1, $2, $3, $4)",
        &[&key, &to.as_str(), &at.millis(), &note],
    )?;
    Ok(())
}

pub(crate) fn case_events(db: &mut dyn Db, id: u64) -> DbResult<Vec<CaseEvent>> {
    let Ok(key) = i64::try_from(id) else { return Ok(Vec::new()) };
    db.query("SELECT state, at, note FROM case_events WHERE case_id = $1 ORDER BY seq", &[&key])?
        .iter()
        .map(|row| Ok(CaseEvent { state: state_of(row, 0)?, at: instant(row, 1)?, note: row.try_get(2)? }))
        .collect()
}
