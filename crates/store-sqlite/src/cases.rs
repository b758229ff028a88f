//! Remediation cases with every transition, and annual certifications.

use consentry_store::{Case, CaseEvent, CaseState, StoreError, StoreResult};
use consentry_types::{AppId, DeveloperId, Instant};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::sql::{backend, corrupt, require};

pub(crate) fn case_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Case> {
    let state: String = row.get(2)?;
    Ok(Case {
        id: row.get::<_, i64>(0)? as u64,
        developer: parse_column!(row, 1, DeveloperId::parse, "developer id"),
        state: CaseState::parse(&state).ok_or_else(|| corrupt("case state", &state))?,
        manifest: row.get(3)?,
        deadline: Instant::from_millis(row.get(4)?),
        opened_at: Instant::from_millis(row.get(5)?),
    })
}

pub(crate) fn certify_app(
    tx: &Transaction<'_>,
    app: &AppId,
    statement: &str,
    at: Instant,
) -> StoreResult<()> {
    require(tx, "apps", "app", app.as_str())?;
    tx.execute(
        "INSERT INTO certifications (app, statement, at) VALUES (?1, ?2, ?3)",
        params![app.as_str(), statement, at.millis()],
    )
    .map_err(backend)?;
    Ok(())
}

pub(crate) fn last_certified(c: &Connection, app: &AppId) -> rusqlite::Result<Option<Instant>> {
    c.prepare_cached(
        "SELECT MAX(at) FROM (SELECT at FROM certifications WHERE app = ?1
         UNION ALL SELECT created_at AS at FROM apps WHERE id = ?1)",
    )?
    .query_row([app.as_str()], |r| r.get::<_, Option<i64>>(0))
    .map(|t| t.map(Instant::from_millis))
}

pub(crate) fn open_case(
    tx: &Transaction<'_>,
    developer: &DeveloperId,
    manifest: &str,
    deadline: Instant,
    at: Instant,
) -> StoreResult<u64> {
    require(tx, "developers", "developer", developer.as_str())?;
    tx.execute(
        "INSERT INTO cases (developer, state, manifest, deadline, opened_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            developer.as_str(),
            CaseState::DeletionRequested.as_str(),
            manifest,
            deadline.millis(),
            at.millis()
        ],
    )
    .map_err(backend)?;
    let id = tx.last_insert_rowid();
    tx.execute(
        "INSERT INTO case_events (case_id, state, at, note) VALUES (?1, ?2, ?3, ?4)",
        params![
            id,
            CaseState::DeletionRequested.as_str(),
            at.millis(),
            "access revoked; deletion of the manifest requested"
        ],
    )
    .map_err(backend)?;
    Ok(id as u64)
}

pub(crate) fn case(c: &Connection, id: u64) -> rusqlite::Result<Option<Case>> {
    c.prepare_cached("SELECT id, developer, state, manifest, deadline, opened_at FROM cases WHERE id = ?1")?
        .query_row([id as i64], case_row)
        .optional()
}

pub(crate) fn cases(c: &Connection) -> rusqlite::Result<Vec<Case>> {
    c.prepare_cached("SELECT id, developer, state, manifest, deadline, opened_at FROM cases ORDER BY id")?
        .query_map([], case_row)?
        .collect()
}

pub(crate) fn move_case(
    tx: &Transaction<'_>,
    id: u64,
    from: CaseState,
    to: CaseState,
    note: &str,
    at: Instant,
) -> StoreResult<()> {
    let changed = tx
        .execute(
            "UPDATE cases SET state = ?3 WHERE id = ?1 AND state = ?2",
            params![id as i64, from.as_str(), to.as_str()],
        )
        .map_err(backend)?;
    if changed == 0 {
        return Err(StoreError::Conflict(format!("case {id} is not {}", from.as_str())));
    }
    tx.execute(
        "INSERT INTO case_events (case_id, state, at, note) VALUES (?1, ?2, ?3, ?4)",
        params![id as i64, to.as_str(), at.millis(), note],
    )
    .map_err(backend)?;
    Ok(())
}

pub(crate) fn case_events(c: &Connection, id: u64) -> rusqlite::Result<Vec<CaseEvent>> {
    c.prepare_cached("SELECT state, at, note FROM case_events WHERE case_id = ?1 ORDER BY seq")?
        .query_map([id as i64], |row| {
            let state: String = row.get(0)?;
            Ok(CaseEvent {
                state: CaseState::parse(&state).ok_or_else(|| corrupt("case state", &state))?,
                at: Instant::from_millis(row.get(1)?),
                note: row.get(2)?,
            })
        })?
        .collect()
}
