//! Access history: memberships, installations, consents and app status, each change appended
//! to its history table in the transaction that changes the current row; `facts_as_of` and
//! `fact_history` read the history back.

use std::collections::HashSet;

use consentry_store::{Change, FactHistory, Facts, StoreError, StoreResult};
use consentry_types::{AppId, AppStatus, GroupId, Installation, Instant, MemberId, PolicyActivation, Role};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::sql::{backend, corrupt, require, require_in_order, role_of, status_of};

pub(crate) fn set_membership(
    tx: &Transaction<'_>,
    group: &GroupId,
    member: &MemberId,
    role: Option<Role>,
    at: Instant,
) -> StoreResult<()> {
    require(tx, "groups", "group", group.as_str())?;
    require(tx, "members", "member", member.as_str())?;
    let key = [group.as_str(), member.as_str()];
    let current: Option<String> = tx
        .prepare_cached("SELECT role FROM memberships WHERE group_id = ?1 AND member_id = ?2")
        .and_then(|mut s| s.query_row(key, |r| r.get(0)).optional())
        .map_err(backend)?;
    if current.as_deref() == role.map(Role::as_str) {
        return Ok(());
    }
    require_in_order(
        tx,
        "SELECT MAX(at) FROM membership_history WHERE group_id = ?1 AND member_id = ?2",
        key,
        at,
    )?;
    let role_text = role.map(Role::as_str);
    let statement = match role_text {
        Some(_) => {
            "INSERT INTO memberships (group_id, member_id, role) VALUES (?1, ?2, ?3)
                    ON CONFLICT (group_id, member_id) DO UPDATE SET role = excluded.role"
        }
        None => "DELETE FROM memberships WHERE group_id = ?1 AND member_id = ?2 AND ?3 IS NULL",
    };
    tx.prepare_cached(statement)
        .and_then(|mut s| s.execute(params![group.as_str(), member.as_str(), role_text]))
        .map_err(backend)?;
    tx.prepare_cached(
        "INSERT INTO membership_history (group_id, member_id, role, at) VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut s| s.execute(params![group.as_str(), member.as_str(), role_text, at.millis()]))
    .map_err(backend)?;
    Ok(())
}

pub(crate) fn membership(
    c: &Connection,
    group: &GroupId,
    member: &MemberId,
) -> rusqlite::Result<Option<Role>> {
    c.prepare_cached("SELECT role FROM memberships WHERE group_id = ?1 AND member_id = ?2")?
        .query_row([group.as_str(), member.as_str()], |row| Ok(parse_column!(row, 0, role_of, "role")))
        .optional()
}

pub(crate) fn set_app_status(
    tx: &Transaction<'_>,
    app: &AppId,
    status: AppStatus,
    at: Instant,
) -> StoreResult<()> {
    let current: Option<String> = tx
        .prepare_cached("SELECT status FROM apps WHERE id = ?1")
        .and_then(|mut s| s.query_row([app.as_str()], |r| r.get(0)).optional())
        .map_err(backend)?;
    match current {
        None => return Err(StoreError::NotFound(format!("app {:?}", app.as_str()))),
        Some(current) if current == status.as_str() => return Ok(()),
        Some(_) => {}
    }
    require_in_order(
        tx,
        "SELECT MAX(at) FROM app_status_history WHERE app = ?1 AND ?2 = ?2",
        [app.as_str(), ""],
        at,
    )?;
    tx.prepare_cached("UPDATE apps SET status = ?2 WHERE id = ?1")
        .and_then(|mut s| s.execute(params![app.as_str(), status.as_str()]))
        .map_err(backend)?;
    tx.prepare_cached("INSERT INTO app_status_history (app, status, at) VALUES (?1, ?2, ?3)")
        .and_then(|mut s| s.execute(params![app.as_str(), status.as_str(), at.millis()]))
        .map_err(backend)?;
    Ok(())
}

pub(crate) fn set_installation(
    tx: &Transaction<'_>,
    app: &AppId,
    group: &GroupId,
    authorized_by: Option<&MemberId>,
    at: Instant,
) -> StoreResult<()> {
    require(tx, "apps", "app", app.as_str())?;
    require(tx, "groups", "group", group.as_str())?;
    if let Some(by) = authorized_by {
        require(tx, "members", "member", by.as_str())?;
    }
    let key = [app.as_str(), group.as_str()];
    let current: Option<(String, i64)> = tx
        .prepare_cached(
            "SELECT authorized_by, installed_at FROM installations WHERE app = ?1 AND group_id = ?2",
        )
        .and_then(|mut s| s.query_row(key, |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(backend)?;
    if current.as_ref().map(|(by, _)| by.as_str()) == authorized_by.map(MemberId::as_str) {
        return Ok(());
    }
    require_in_order(
        tx,
        "SELECT MAX(at) FROM installation_history WHERE app = ?1 AND group_id = ?2",
        key,
        at,
    )?;
    let installed_at = match (&current, authorized_by) {
        (_, None) => None,
        (Some((_, since)), Some(_)) => Some(*since),
        (None, Some(_)) => Some(at.millis()),
    };
    let by = authorized_by.map(MemberId::as_str);
    match (by, installed_at) {
        (Some(by), Some(since)) => tx
            .prepare_cached(
                "INSERT INTO installations (app, group_id, authorized_by, installed_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (app, group_id) DO UPDATE SET authorized_by = excluded.authorized_by",
            )
            .and_then(|mut s| s.execute(params![app.as_str(), group.as_str(), by, since])),
        _ => tx
            .prepare_cached("DELETE FROM installations WHERE app = ?1 AND group_id = ?2")
            .and_then(|mut s| s.execute(key)),
    }
    .map_err(backend)?;
    tx.prepare_cached(
        "INSERT INTO installation_history (app, group_id, authorized_by, installed_at, at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut s| s.execute(params![app.as_str(), group.as_str(), by, installed_at, at.millis()]))
    .map_err(backend)?;
    Ok(())
}

pub(crate) fn installation(
    c: &Connection,
    app: &AppId,
    group: &GroupId,
) -> rusqlite::Result<Option<Installation>> {
    c.prepare_cached(
        "SELECT app, group_id, authorized_by, installed_at FROM installations WHERE app = ?1 AND group_id = ?2",
    )?
    .query_row([app.as_str(), group.as_str()], |row| {
        Ok(Installation {
            app: parse_column!(row, 0, AppId::parse, "app id"),
            group: parse_column!(row, 1, GroupId::parse, "group id"),
            authorized_by: parse_column!(row, 2, MemberId::parse, "member id"),
            installed_at: Instant::from_millis(row.get(3)?),
        })
    })
    .optional()
}

pub(crate) fn set_consent(
    tx: &Transaction<'_>,
    member: &MemberId,
    app: &AppId,
    profile: bool,
    at: Instant,
) -> StoreResult<()> {
    require(tx, "members", "member", member.as_str())?;
    require(tx, "apps", "app", app.as_str())?;
    let key = [app.as_str(), member.as_str()];
    let current = exists_pair(tx, "SELECT 1 FROM consents WHERE app = ?1 AND member_id = ?2", key)?;
    if current == profile {
        return Ok(());
    }
    require_in_order(tx, "SELECT MAX(at) FROM consent_history WHERE app = ?1 AND member_id = ?2", key, at)?;
    let scopes = profile.then_some("profile");
    if profile {
        tx.prepare_cached("INSERT INTO consents (app, member_id, scopes) VALUES (?1, ?2, 'profile')")
            .and_then(|mut s| s.execute(key))
    } else {
        tx.prepare_cached("DELETE FROM consents WHERE app = ?1 AND member_id = ?2")
            .and_then(|mut s| s.execute(key))
    }
    .map_err(backend)?;
    tx.prepare_cached("INSERT INTO consent_history (app, member_id, scopes, at) VALUES (?1, ?2, ?3, ?4)")
        .and_then(|mut s| s.execute(params![app.as_str(), member.as_str(), scopes, at.millis()]))
        .map_err(backend)?;
    Ok(())
}

pub(crate) fn profile_consents(
    c: &Connection,
    app: &AppId,
    members: &[MemberId],
) -> rusqlite::Result<HashSet<MemberId>> {
    let (Some(low), Some(high)) = (members.iter().min(), members.iter().max()) else {
        return Ok(HashSet::new());
    };
    let wanted: HashSet<&MemberId> = members.iter().collect();
    let mut consenting = HashSet::new();
    if members.len() <= 8 {
        let mut statement = c.prepare_cached("SELECT 1 FROM consents WHERE app = ?1 AND member_id = ?2")?;
        for member in members {
            if statement.exists([app.as_str(), member.as_str()])? {
                consenting.insert(member.clone());
            }
        }
        return Ok(consenting);
    }
    // A page's members are contiguous in id order: one range scan of the primary key.
    let mut statement = c.prepare_cached(
        "SELECT member_id FROM consents WHERE app = ?1 AND member_id >= ?2 AND member_id <= ?3",
    )?;
    let mut rows = statement.query([app.as_str(), low.as_str(), high.as_str()])?;
    while let Some(row) = rows.next()? {
        let member = parse_column!(row, 0, MemberId::parse, "member id");
        if wanted.contains(&member) {
            consenting.insert(member);
        }
    }
    Ok(consenting)
}

pub(crate) fn exists_pair(tx: &Transaction<'_>, sql: &str, key: [&str; 2]) -> StoreResult<bool> {
    tx.prepare_cached(sql).and_then(|mut s| s.exists(key)).map_err(backend)
}

/// Folds every history row that took effect by `at`, in the order the changes took effect.
pub(crate) fn facts_as_of(c: &Connection, at: i64) -> rusqlite::Result<Facts> {
    let mut facts = Facts::default();
    let mut rows = c.prepare_cached(
        "SELECT group_id, member_id, role FROM membership_history WHERE at <= ?1 ORDER BY at, seq",
    )?;
    let mut rows = rows.query([at])?;
    while let Some(row) = rows.next()? {
        let key = (
            parse_column!(row, 0, GroupId::parse, "group id"),
            parse_column!(row, 1, MemberId::parse, "member id"),
        );
        match row.get::<_, Option<String>>(2)? {
            Some(role) => facts.memberships.insert(key, role_of(&role).map_err(|_| corrupt("role", &role))?),
            None => facts.memberships.remove(&key),
        };
    }
    let mut rows = c.prepare_cached(
        "SELECT app, group_id, authorized_by, installed_at FROM installation_history WHERE at <= ?1 ORDER BY at, seq",
    )?;
    let mut rows = rows.query([at])?;
    while let Some(row) = rows.next()? {
        let key = (
            parse_column!(row, 0, AppId::parse, "app id"),
            parse_column!(row, 1, GroupId::parse, "group id"),
        );
        match (row.get::<_, Option<String>>(2)?, row.get::<_, Option<i64>>(3)?) {
            (Some(by), Some(since)) => {
                let by = MemberId::parse(&by).map_err(|_| corrupt("member id", &by))?;
                facts.installations.insert(key, (by, Instant::from_millis(since)))
            }
            _ => facts.installations.remove(&key),
        };
    }
    let mut rows = c.prepare_cached(
        "SELECT member_id, app, scopes FROM consent_history WHERE at <= ?1 ORDER BY at, seq",
    )?;
    let mut rows = rows.query([at])?;
    while let Some(row) = rows.next()? {
        let key = (
            parse_column!(row, 0, MemberId::parse, "member id"),
            parse_column!(row, 1, AppId::parse, "app id"),
        );
        if row.get::<_, Option<String>>(2)?.is_some_and(|s| s.split(',').any(|s| s == "profile")) {
            facts.profile_consents.insert(key);
        } else {
            facts.profile_consents.remove(&key);
        }
    }
    let mut rows =
        c.prepare_cached("SELECT app, status FROM app_status_history WHERE at <= ?1 ORDER BY at, seq")?;
    let mut rows = rows.query([at])?;
    while let Some(row) = rows.next()? {
        let app = parse_column!(row, 0, AppId::parse, "app id");
        facts.app_statuses.insert(app, parse_column!(row, 1, status_of, "app status"));
    }
    facts.active_policy = c
        .prepare_cached(
            "SELECT version FROM policy_activations WHERE at <= ?1 ORDER BY at DESC, seq DESC LIMIT 1",
        )?
        .query_row([at], |r| r.get(0))
        .optional()?;
    Ok(facts)
}

/// Every history row, in the order the changes took effect.
pub(crate) fn fact_history(c: &Connection) -> rusqlite::Result<FactHistory> {
    let memberships = c
        .prepare_cached("SELECT group_id, member_id, role, at FROM membership_history ORDER BY at, seq")?
        .query_map([], |row| {
            let role = match row.get::<_, Option<String>>(2)? {
                Some(text) => Some(role_of(&text).map_err(|_| corrupt("role", &text))?),
                None => None,
            };
            Ok(Change {
                at: Instant::from_millis(row.get(3)?),
                key: (
                    parse_column!(row, 0, GroupId::parse, "group id"),
                    parse_column!(row, 1, MemberId::parse, "member id"),
                ),
                value: role,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let installations = c
        .prepare_cached("SELECT app, group_id, authorized_by, installed_at, at FROM installation_history ORDER BY at, seq")?
        .query_map([], |row| {
            let value = match (row.get::<_, Option<String>>(2)?, row.get::<_, Option<i64>>(3)?) {
                (Some(by), Some(since)) => {
                    Some((MemberId::parse(&by).map_err(|_| corrupt("member id", &by))?, Instant::from_millis(since)))
                }
                _ => None,
            };
            Ok(Change {
                at: Instant::from_millis(row.get(4)?),
                key: (parse_column!(row, 0, AppId::parse, "app id"), parse_column!(row, 1, GroupId::parse, "group id")),
                value,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let profile_consents = c
        .prepare_cached("SELECT member_id, app, scopes, at FROM consent_history ORDER BY at, seq")?
        .query_map([], |row| {
            Ok(Change {
                at: Instant::from_millis(row.get(3)?),
                key: (
                    parse_column!(row, 0, MemberId::parse, "member id"),
                    parse_column!(row, 1, AppId::parse, "app id"),
                ),
                value: row.get::<_, Option<String>>(2)?.is_some_and(|s| s.split(',').any(|s| s == "profile")),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let app_statuses = c
        .prepare_cached("SELECT app, status, at FROM app_status_history ORDER BY at, seq")?
        .query_map([], |row| {
            Ok(Change {
                at: Instant::from_millis(row.get(2)?),
                key: parse_column!(row, 0, AppId::parse, "app id"),
                value: parse_column!(row, 1, status_of, "app status"),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let activations = c
        .prepare_cached("SELECT version, author, reason, at FROM policy_activations ORDER BY at, seq")?
        .query_map([], |row| {
            Ok(PolicyActivation {
                version: row.get(0)?,
                author: row.get(1)?,
                reason: row.get(2)?,
                at: Instant::from_millis(row.get(3)?),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(FactHistory { memberships, installations, profile_consents, app_statuses, activations })
}
