//! Access history: memberships, installations, consents and app status, each change appended
//! to its history table in the transaction that changes the current row; `facts_as_of` and
//! `fact_history` read the history back.

use std::collections::HashSet;

use consentry_store::{Change, FactHistory, Facts, StoreError};
use consentry_types::{AppId, AppStatus, GroupId, Installation, Instant, MemberId, PolicyActivation, Role};
use postgres::Row;

use crate::sql::{
    instant, parsed, require, require_in_order, role_of, status_of, version_of, Db, DbResult, Failure,
};

pub(crate) fn set_membership(
    db: &mut dyn Db,
    group: &GroupId,
    member: &MemberId,
    role: Option<Role>,
    at: Instant,
) -> DbResult<()> {
    require(db, "SELECT 1 FROM groups WHERE id = $1", "group", group.as_str())?;
    require(db, "SELECT 1 FROM members WHERE id = $1", "member", member.as_str())?;
    let (g, m) = (group.as_str(), member.as_str());
    let current: Option<String> = db
        .query_opt("SELECT role FROM memberships WHERE group_id = $1 AND member_id = $2", &[&g, &m])?
        .map(|row| row.try_get(0))
        .transpose()?;
    if current.as_deref() == role.map(Role::as_str) {
        return Ok(());
    }
    require_in_order(
        db,
        "SELECT MAX(at) FROM membership_history WHERE group_id = $1 AND member_id = $2",
        &[&g, &m],
        at,
    )?;
    let role_text = role.map(Role::as_str);
    match role_text {
        Some(role) => db.execute(
            "INSERT INTO memberships (group_id, member_id, role) VALUES ($1, $2, $3)
             ON CONFLICT (group_id, member_id) DO UPDATE SET role = excluded.role",
            &[&g, &m, &role],
        )?,
        None => db.execute("DELETE FROM memberships WHERE group_id = $1 AND member_id = $2", &[&g, &m])?,
    };
    db.execute(
        "INSERT INTO membership_history (group_id, member_id, role, at) VALUES ($1, $2, $3, $4)",
        &[&g, &m, &role_text, &at.millis()],
    )?;
    Ok(())
}

pub(crate) fn membership(db: &mut dyn Db, group: &GroupId, member: &MemberId) -> DbResult<Option<Role>> {
    db.query_opt(
        "SELECT role FROM memberships WHERE group_id = $1 AND member_id = $2",
        &[&group.as_str(), &member.as_str()],
    )?
    .map(|row| parsed(&row, 0, role_of, "role"))
    .transpose()
}

pub(crate) fn set_app_status(db: &mut dyn Db, app: &AppId, status: AppStatus, at: Instant) -> DbResult<()> {
    let current: Option<String> = db
        .query_opt("SELECT status FROM apps WHERE id = $1", &[&app.as_str()])?
        .map(|r| r.try_get(0))
        .transpose()?;
    match current {
        None => return Err(Failure::Store(StoreError::NotFound(format!("app {:?}", app.as_str())))),
        Some(current) if current == status.as_str() => return Ok(()),
        Some(_) => {}
    }
    require_in_order(db, "SELECT MAX(at) FROM app_status_history WHERE app = $1", &[&app.as_str()], at)?;
    db.execute("UPDATE apps SET status = $2 WHERE id = $1", &[&app.as_str(), &status.as_str()])?;
    db.execute(
        "INSERT INTO app_status_history (app, status, at) VALUES ($1, $2, $3)",
        &[&app.as_str(), &status.as_str(), &at.millis()],
    )?;
    Ok(())
}

pub(crate) fn set_installation(
    db: &mut dyn Db,
    app: &AppId,
    group: &GroupId,
    authorized_by: Option<&MemberId>,
    at: Instant,
) -> DbResult<()> {
    require(db, "SELECT 1 FROM apps WHERE id = $1", "app", app.as_str())?;
    require(db, "SELECT 1 FROM groups WHERE id = $1", "group", group.as_str())?;
    if let Some(by) = authorized_by {
        require(db, "SELECT 1 FROM members WHERE id = $1", "member", by.as_str())?;
    }
    let (a, g) = (app.as_str(), group.as_str());
    let current: Option<(String, i64)> = db
        .query_opt(
            "SELECT authorized_by, installed_at FROM installations WHERE app = $1 AND group_id = $2",
            &[&a, &g],
        )?
        .map(|r| Ok::<_, postgres::Error>((r.try_get(0)?, r.try_get(1)?)))
        .transpose()?;
    if current.as_ref().map(|(by, _)| by.as_str()) == authorized_by.map(MemberId::as_str) {
        return Ok(());
    }
    require_in_order(
        db,
        "SELECT MAX(at) FROM installation_history WHERE app = $1 AND group_id = $2",
        &[&a, &g],
        at,
    )?;
    let installed_at = match (&current, authorized_by) {
        (_, None) => None,
        (Some((_, since)), Some(_)) => Some(*since),
        (None, Some(_)) => Some(at.millis()),
    };
    let by = authorized_by.map(MemberId::as_str);
    match (by, installed_at) {
        (Some(by), Some(since)) => db.execute(
            "INSERT INTO installations (app, group_id, authorized_by, installed_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (app, group_id) DO UPDATE SET authorized_by = excluded.authorized_by",
            &[&a, &g, &by, &since],
        )?,
        _ => db.execute("DELETE FROM installations WHERE app = $1 AND group_id = $2", &[&a, &g])?,
    };
    db.execute(
        "INSERT INTO installation_history (app, group_id, authorized_by, installed_at, at)
         VALUES ($1, $2, $3, $4, $5)",
        &[&a, &g, &by, &installed_at, &at.millis()],
    )?;
    Ok(())
}

pub(crate) fn installation(db: &mut dyn Db, app: &AppId, group: &GroupId) -> DbResult<Option<Installation>> {
    db.query_opt(
        "SELECT app, group_id, authorized_by, installed_at FROM installations WHERE app = $1 AND group_id = $2",
        &[&app.as_str(), &group.as_str()],
    )?
    .map(|row| {
        Ok(Installation {
            app: parsed(&row, 0, AppId::parse, "app id")?,
            group: parsed(&row, 1, GroupId::parse, "group id")?,
            authorized_by: parsed(&row, 2, MemberId::parse, "member id")?,
            installed_at: instant(&row, 3)?,
        })
    })
    .transpose()
}

pub(crate) fn set_consent(
    db: &mut dyn Db,
    member: &MemberId,
    app: &AppId,
    profile: bool,
    at: Instant,
) -> DbResult<()> {
    require(db, "SELECT 1 FROM members WHERE id = $1", "member", member.as_str())?;
    require(db, "SELECT 1 FROM apps WHERE id = $1", "app", app.as_str())?;
    let (a, m) = (app.as_str(), member.as_str());
    let current =
        db.query_opt("SELECT 1 FROM consents WHERE app = $1 AND member_id = $2", &[&a, &m])?.is_some();
    if current == profile {
        return Ok(());
    }
    require_in_order(
        db,
        "SELECT MAX(at) FROM consent_history WHERE app = $1 AND member_id = $2",
        &[&a, &m],
        at,
    )?;
    let scopes = profile.then_some("profile");
    if profile {
        db.execute("INSERT INTO consents (app, member_id, scopes) VALUES ($1, $2, 'profile')", &[&a, &m])?;
    } else {
        db.execute("DELETE FROM consents WHERE app = $1 AND member_id = $2", &[&a, &m])?;
    }
    db.execute(
        "INSERT INTO consent_history (app, member_id, scopes, at) VALUES ($1, $2, $3, $4)",
        &[&a, &m, &scopes, &at.millis()],
    )?;
    Ok(())
}

pub(crate) fn profile_consents(
    db: &mut dyn Db,
    app: &AppId,
    members: &[MemberId],
) -> DbResult<HashSet<MemberId>> {
    if members.is_empty() {
        return Ok(HashSet::new());
    }
    let ids: Vec<&str> = members.iter().map(MemberId::as_str).collect();
    db.query("SELECT member_id FROM consents WHERE app = $1 AND member_id = ANY($2)", &[&app.as_str(), &ids])?
        .iter()
        .map(|row| parsed(row, 0, MemberId::parse, "member id"))
        .collect()
}

fn role_or_none(row: &Row, index: usize) -> DbResult<Option<Role>> {
    match row.try_get::<_, Option<String>>(index)? {
        Some(text) => Ok(Some(role_of(&text).map_err(|_| crate::sql::corrupt("role", &text))?)),
        None => Ok(None),
    }
}

fn installed(row: &Row, by: usize, since: usize) -> DbResult<consentry_store::Installed> {
    match (row.try_get::<_, Option<String>>(by)?, row.try_get::<_, Option<i64>>(since)?) {
        (Some(by), Some(since)) => {
            let by = MemberId::parse(&by).map_err(|_| crate::sql::corrupt("member id", &by))?;
            Ok(Some((by, Instant::from_millis(since))))
        }
        _ => Ok(None),
    }
}

fn consented(row: &Row, index: usize) -> DbResult<bool> {
    Ok(row.try_get::<_, Option<String>>(index)?.is_some_and(|s| s.split(',').any(|s| s == "profile")))
}

/// Folds every history row that took effect by `at`, in the order the changes took effect.
pub(crate) fn facts_as_of(db: &mut dyn Db, at: i64) -> DbResult<Facts> {
    let mut facts = Facts::default();
    for row in db.query(
        "SELECT group_id, member_id, role FROM membership_history WHERE at <= $1 ORDER BY at, seq",
        &[&at],
    )? {
        let key =
            (parsed(&row, 0, GroupId::parse, "group id")?, parsed(&row, 1, MemberId::parse, "member id")?);
        match role_or_none(&row, 2)? {
            Some(role) => facts.memberships.insert(key, role),
            None => facts.memberships.remove(&key),
        };
    }
    for row in db.query(
        "SELECT app, group_id, authorized_by, installed_at FROM installation_history WHERE at <= $1 ORDER BY at, seq",
        &[&at],
    )? {
        let key = (parsed(&row, 0, AppId::parse, "app id")?, parsed(&row, 1, GroupId::parse, "group id")?);
        match installed(&row, 2, 3)? {
            Some(value) => facts.installations.insert(key, value),
            None => facts.installations.remove(&key),
        };
    }
    for row in db
        .query("SELECT member_id, app, scopes FROM consent_history WHERE at <= $1 ORDER BY at, seq", &[&at])?
    {
        let key = (parsed(&row, 0, MemberId::parse, "member id")?, parsed(&row, 1, AppId::parse, "app id")?);
        if consented(&row, 2)? {
            facts.profile_consents.insert(key);
        } else {
            facts.profile_consents.remove(&key);
        }
    }
    for row in
        db.query("SELECT app, status FROM app_status_history WHERE at <= $1 ORDER BY at, seq", &[&at])?
    {
        facts
            .app_statuses
            .insert(parsed(&row, 0, AppId::parse, "app id")?, parsed(&row, 1, status_of, "app status")?);
    }
    facts.active_policy = db
        .query_opt(
            "SELECT version FROM policy_activations WHERE at <= $1 ORDER BY at DESC, seq DESC LIMIT 1",
            &[&at],
        )?
        .map(|row| version_of(&row, 0))
        .transpose()?;
    Ok(facts)
}

/// Every history row, in the order the changes took effect.
pub(crate) fn fact_history(db: &mut dyn Db) -> DbResult<FactHistory> {
    let memberships = db
        .query("SELECT group_id, member_id, role, at FROM membership_history ORDER BY at, seq", &[])?
        .iter()
        .map(|row| {
            Ok(Change {
                at: instant(row, 3)?,
                key: (
                    parsed(row, 0, GroupId::parse, "group id")?,
                    parsed(row, 1, MemberId::parse, "member id")?,
                ),
                value: role_or_none(row, 2)?,
            })
        })
        .collect::<DbResult<Vec<_>>>()?;
    let installations = db
        .query(
            "SELECT app, group_id, authorized_by, installed_at, at FROM installation_history ORDER BY at, seq",
            &[],
        )?
        .iter()
        .map(|row| {
            Ok(Change {
                at: instant(row, 4)?,
                key: (parsed(row, 0, AppId::parse, "app id")?, parsed(row, 1, GroupId::parse, "group id")?),
                value: installed(row, 2, 3)?,
            })
        })
        .collect::<DbResult<Vec<_>>>()?;
    let profile_consents = db
        .query("SELECT member_id, app, scopes, at FROM consent_history ORDER BY at, seq", &[])?
        .iter()
        .map(|row| {
            Ok(Change {
                at: instant(row, 3)?,
                key: (parsed(row, 0, MemberId::parse, "member id")?, parsed(row, 1, AppId::parse, "app id")?),
                value: consented(row, 2)?,
            })
        })
        .collect::<DbResult<Vec<_>>>()?;
    let app_statuses = db
        .query("SELECT app, status, at FROM app_status_history ORDER BY at, seq", &[])?
        .iter()
        .map(|row| {
            Ok(Change {
                at: instant(row, 2)?,
                key: parsed(row, 0, AppId::parse, "app id")?,
                value: parsed(row, 1, status_of, "app status")?,
            })
        })
        .collect::<DbResult<Vec<_>>>()?;
    let activations = db
        .query("SELECT version, author, reason, at FROM policy_activations ORDER BY at, seq", &[])?
        .iter()
        .map(|row| {
            Ok(PolicyActivation {
                version: version_of(row, 0)?,
                author: row.try_get(1)?,
                reason: row.try_get(2)?,
                at: instant(row, 3)?,
            })
        })
        .collect::<DbResult<Vec<_>>>()?;
    Ok(FactHistory { memberships, installations, profile_consents, app_statuses, activations })
}
