//! Facts: members, groups, posts, developers and apps, and the pages served from them.

use std::collections::HashMap;

use consentry_store::{AppCredentials, StoreResult};
use consentry_types::{
    App, AppId, Developer, DeveloperId, Group, GroupId, Instant, Member, MemberId, Post, PostId, Role,
};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::sql::{backend, require, role_of, status_of};

pub(crate) fn member_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Member> {
    Ok(Member {
        id: parse_column!(row, 0, MemberId::parse, "member id"),
        name: row.get(1)?,
        picture_url: row.get(2)?,
    })
}

pub(crate) fn app_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<App> {
    Ok(App {
        id: parse_column!(row, 0, AppId::parse, "app id"),
        developer: parse_column!(row, 1, DeveloperId::parse, "developer id"),
        name: row.get(2)?,
        category: row.get(3)?,
        status: parse_column!(row, 4, status_of, "app status"),
        client_id: row.get(5)?,
    })
}

pub(crate) fn post_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Post> {
    Ok(Post {
        id: parse_column!(row, 0, PostId::parse, "post id"),
        group: parse_column!(row, 1, GroupId::parse, "group id"),
        author: parse_column!(row, 2, MemberId::parse, "member id"),
        content: row.get(3)?,
        created_at: Instant::from_millis(row.get(4)?),
    })
}

pub(crate) const APP_COLUMNS: &str = "id, developer, name, category, status, client_id";

pub(crate) fn put_member(tx: &Transaction<'_>, member: &Member, at: Instant) -> StoreResult<()> {
    tx.prepare_cached(
        "INSERT INTO members (id, name, picture_url, updated_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, picture_url = excluded.picture_url,
         updated_at = excluded.updated_at",
    )
    .and_then(|mut s| s.execute(params![member.id.as_str(), member.name, member.picture_url, at.millis()]))
    .map_err(backend)?;
    Ok(())
}

pub(crate) fn member(c: &Connection, id: &MemberId) -> rusqlite::Result<Option<Member>> {
    c.prepare_cached("SELECT id, name, picture_url FROM members WHERE id = ?1")?
        .query_row([id.as_str()], member_row)
        .optional()
}

pub(crate) fn put_group(tx: &Transaction<'_>, group: &Group, at: Instant) -> StoreResult<()> {
    tx.prepare_cached(
        "INSERT INTO groups (id, name, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, updated_at = excluded.updated_at",
    )
    .and_then(|mut s| s.execute(params![group.id.as_str(), group.name, at.millis()]))
    .map_err(backend)?;
    Ok(())
}

pub(crate) fn group(c: &Connection, id: &GroupId) -> rusqlite::Result<Option<Group>> {
    c.prepare_cached("SELECT id, name FROM groups WHERE id = ?1")?
        .query_row([id.as_str()], |row| {
            Ok(Group { id: parse_column!(row, 0, GroupId::parse, "group id"), name: row.get(1)? })
        })
        .optional()
}

pub(crate) fn put_post(tx: &Transaction<'_>, post: &Post) -> StoreResult<()> {
    require(tx, "groups", "group", post.group.as_str())?;
    require(tx, "members", "member", post.author.as_str())?;
    tx.prepare_cached(
        "INSERT INTO posts (id, group_id, author, content, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (id) DO UPDATE SET group_id = excluded.group_id, author = excluded.author,
         content = excluded.content, created_at = excluded.created_at",
    )
    .and_then(|mut s| {
        s.execute(params![
            post.id.as_str(),
            post.group.as_str(),
            post.author.as_str(),
            post.content,
            post.created_at.millis()
        ])
    })
    .map_err(backend)?;
    Ok(())
}

pub(crate) fn put_developer(tx: &Transaction<'_>, developer: &Developer, at: Instant) -> StoreResult<()> {
    tx.prepare_cached(
        "INSERT INTO developers (id, name, contact_email, webhook_url, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, contact_email = excluded.contact_email,
         webhook_url = excluded.webhook_url, updated_at = excluded.updated_at",
    )
    .and_then(|mut s| {
        s.execute(params![
            developer.id.as_str(),
            developer.name,
            developer.contact_email,
            developer.webhook_url,
            at.millis()
        ])
    })
    .map_err(backend)?;
    Ok(())
}

pub(crate) fn developer(c: &Connection, id: &DeveloperId) -> rusqlite::Result<Option<Developer>> {
    c.prepare_cached("SELECT id, name, contact_email, webhook_url FROM developers WHERE id = ?1")?
        .query_row([id.as_str()], |row| {
            Ok(Developer {
                id: parse_column!(row, 0, DeveloperId::parse, "developer id"),
                name: row.get(1)?,
                contact_email: row.get(2)?,
                webhook_url: row.get(3)?,
            })
        })
        .optional()
}

pub(crate) fn register_app(
    tx: &Transaction<'_>,
    app: &App,
    secret_hash: &str,
    at: Instant,
) -> StoreResult<()> {
    require(tx, "developers", "developer", app.developer.as_str())?;
    tx.prepare_cached(
        "INSERT INTO apps (id, developer, name, category, status, client_id, secret_hash, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .and_then(|mut s| {
        s.execute(params![
            app.id.as_str(),
            app.developer.as_str(),
            app.name,
            app.category,
            app.status.as_str(),
            app.client_id,
            secret_hash,
            at.millis()
        ])
    })
    .map_err(backend)?;
    tx.prepare_cached("INSERT INTO app_status_history (app, status, at) VALUES (?1, ?2, ?3)")
        .and_then(|mut s| s.execute(params![app.id.as_str(), app.status.as_str(), at.millis()]))
        .map_err(backend)?;
    Ok(())
}

pub(crate) fn app(c: &Connection, id: &AppId) -> rusqlite::Result<Option<App>> {
    c.prepare_cached(&format!("SELECT {APP_COLUMNS} FROM apps WHERE id = ?1"))?
        .query_row([id.as_str()], app_row)
        .optional()
}

pub(crate) fn app_by_client_id(c: &Connection, client_id: &str) -> rusqlite::Result<Option<AppCredentials>> {
    c.prepare_cached(&format!("SELECT {APP_COLUMNS}, secret_hash FROM apps WHERE client_id = ?1"))?
        .query_row([client_id], |row| Ok(AppCredentials { app: app_row(row)?, secret_hash: row.get(6)? }))
        .optional()
}

pub(crate) fn apps(c: &Connection) -> rusqlite::Result<Vec<App>> {
    c.prepare_cached(&format!("SELECT {APP_COLUMNS} FROM apps ORDER BY id"))?
        .query_map([], app_row)?
        .collect()
}

pub(crate) fn member_count(c: &Connection, group: &GroupId) -> rusqlite::Result<u64> {
    c.prepare_cached("SELECT COUNT(*) FROM memberships WHERE group_id = ?1")?
        .query_row([group.as_str()], |r| r.get(0))
}

pub(crate) fn members_page(
    c: &Connection,
    group: &GroupId,
    after: Option<&MemberId>,
    limit: usize,
) -> rusqlite::Result<Vec<(Member, Role)>> {
    c.prepare_cached(
        "SELECT m.id, m.name, m.picture_url, ms.role FROM memberships ms JOIN members m ON m.id = ms.member_id
         WHERE ms.group_id = ?1 AND ms.member_id > ?2 ORDER BY ms.member_id LIMIT ?3",
    )?
    .query_map(params![group.as_str(), after.map_or("", MemberId::as_str), limit as i64], |row| {
        Ok((member_row(row)?, parse_column!(row, 3, role_of, "role")))
    })?
    .collect()
}

/// A members page from the memberships alone: the primary key holds the page in order, the
/// members table is not read.
pub(crate) fn member_roles_page(
    c: &Connection,
    group: &GroupId,
    after: Option<&MemberId>,
    limit: usize,
) -> rusqlite::Result<Vec<(MemberId, Role)>> {
    c.prepare_cached(
        "SELECT member_id, role FROM memberships WHERE group_id = ?1 AND member_id > ?2
         ORDER BY member_id LIMIT ?3",
    )?
    .query_map(params![group.as_str(), after.map_or("", MemberId::as_str), limit as i64], |row| {
        Ok((parse_column!(row, 0, MemberId::parse, "member id"), parse_column!(row, 1, role_of, "role")))
    })?
    .collect()
}

/// The profiles of those of `ids` that exist, one primary-key lookup each.
pub(crate) fn members_by_id(c: &Connection, ids: &[MemberId]) -> rusqlite::Result<HashMap<MemberId, Member>> {
    let mut statement = c.prepare_cached("SELECT id, name, picture_url FROM members WHERE id = ?1")?;
    let mut found = HashMap::with_capacity(ids.len());
    for id in ids {
        if let Some(member) = statement.query_row([id.as_str()], member_row).optional()? {
            found.insert(id.clone(), member);
        }
    }
    Ok(found)
}

pub(crate) fn posts_page(
    c: &Connection,
    group: &GroupId,
    after: Option<&PostId>,
    limit: usize,
) -> rusqlite::Result<Vec<Post>> {
    c.prepare_cached(
        "SELECT id, group_id, author, content, created_at FROM posts
         WHERE group_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
    )?
    .query_map(params![group.as_str(), after.map_or("", PostId::as_str), limit as i64], post_row)?
    .collect()
}
