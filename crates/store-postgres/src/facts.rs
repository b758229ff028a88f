//! Facts: members, groups, posts, developers and apps, and the pages served from them.

use consentry_store::AppCredentials;
use consentry_types::{
    App, AppId, Developer, DeveloperId, Group, GroupId, Instant, Member, MemberId, Post, PostId, Role,
};
use postgres::Row;

use crate::sql::{instant, parsed, require, role_of, status_of, Db, DbResult};

pub(crate) fn member_row(row: &Row) -> DbResult<Member> {
    Ok(Member {
        id: parsed(row, 0, MemberId::parse, "member id")?,
        name: row.try_get(1)?,
        picture_url: row.try_get(2)?,
    })
}

pub(crate) fn app_row(row: &Row) -> DbResult<App> {
    Ok(App {
        id: parsed(row, 0, AppId::parse, "app id")?,
        developer: parsed(row, 1, DeveloperId::parse, "developer id")?,
        name: row.try_get(2)?,
        category: row.try_get(3)?,
        status: parsed(row, 4, status_of, "app status")?,
        client_id: row.try_get(5)?,
    })
}

pub(crate) fn post_row(row: &Row) -> DbResult<Post> {
    Ok(Post {
        id: parsed(row, 0, PostId::parse, "post id")?,
        group: parsed(row, 1, GroupId::parse, "group id")?,
        author: parsed(row, 2, MemberId::parse, "member id")?,
        content: row.try_get(3)?,
        created_at: instant(row, 4)?,
    })
}

pub(crate) fn put_member(db: &mut dyn Db, member: &Member, at: Instant) -> DbResult<()> {
    db.execute(
        "INSERT INTO members (id, name, picture_url, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, picture_url = excluded.picture_url,
         updated_at = excluded.updated_at",
        &[&member.id.as_str(), &member.name, &member.picture_url, &at.millis()],
    )?;
    Ok(())
}

pub(crate) fn member(db: &mut dyn Db, id: &MemberId) -> DbResult<Option<Member>> {
    db.query_opt("SELECT id, name, picture_url FROM members WHERE id = $1", &[&id.as_str()])?
        .map(|row| member_row(&row))
        .transpose()
}

pub(crate) fn put_group(db: &mut dyn Db, group: &Group, at: Instant) -> DbResult<()> {
    db.execute(
        "INSERT INTO groups (id, name, updated_at) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, updated_at = excluded.updated_at",
        &[&group.id.as_str(), &group.name, &at.millis()],
    )?;
    Ok(())
}

pub(crate) fn group(db: &mut dyn Db, id: &GroupId) -> DbResult<Option<Group>> {
    db.query_opt("SELECT id, name FROM groups WHERE id = $1", &[&id.as_str()])?
        .map(|row| Ok(Group { id: parsed(&row, 0, GroupId::parse, "group id")?, name: row.try_get(1)? }))
        .transpose()
}

pub(crate) fn put_post(db: &mut dyn Db, post: &Post) -> DbResult<()> {
    require(db, "SELECT 1 FROM groups WHERE id = $1", "group", post.group.as_str())?;
    require(db, "SELECT 1 FROM members WHERE id = $1", "member", post.author.as_str())?;
    db.execute(
        "INSERT INTO posts (id, group_id, author, content, created_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (id) DO UPDATE SET group_id = excluded.group_id, author = excluded.author,
         content = excluded.content, created_at = excluded.created_at",
        &[
            &post.id.as_str(),
            &post.group.as_str(),
            &post.author.as_str(),
            &post.content,
            &post.created_at.millis(),
        ],
    )?;
    Ok(())
}

pub(crate) fn put_developer(db: &mut dyn Db, developer: &Developer, at: Instant) -> DbResult<()> {
    db.execute(
        "INSERT INTO developers (id, name, contact_email, webhook_url, updated_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, contact_email = excluded.contact_email,
         webhook_url = excluded.webhook_url, updated_at = excluded.updated_at",
        &[&developer.id.as_str(), &developer.name, &developer.contact_email, &developer.webhook_url, &at.millis()],
    )?;
    Ok(())
}

pub(crate) fn developer(db: &mut dyn Db, id: &DeveloperId) -> DbResult<Option<Developer>> {
    db.query_opt(
        "SELECT id, name, contact_email, webhook_url FROM developers WHERE id = $1",
        &[&id.as_str()],
    )?
    .map(|row| {
        Ok(Developer {
            id: parsed(&row, 0, DeveloperId::parse, "developer id")?,
            name: row.try_get(1)?,
            contact_email: row.try_get(2)?,
            webhook_url: row.try_get(3)?,
        })
    })
    .transpose()
}

pub(crate) fn register_app(db: &mut dyn Db, app: &App, secret_hash: &str, at: Instant) -> DbResult<()> {
    require(db, "SELECT 1 FROM developers WHERE id = $1", "developer", app.developer.as_str())?;
    db.execute(
        "INSERT INTO apps (id, developer, name, category, status, client_id, secret_hash, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &app.id.as_str(),
            &app.developer.as_str(),
            &app.name,
            &app.category,
            &app.status.as_str(),
            &app.client_id,
            &secret_hash,
            &at.millis(),
        ],
    )?;
    db.execute(
        "INSERT INTO app_status_history (app, status, at) VALUES ($1, $2, $3)",
        &[&app.id.as_str(), &app.status.as_str(), &at.millis()],
    )?;
    Ok(())
}

pub(crate) fn app(db: &mut dyn Db, id: &AppId) -> DbResult<Option<App>> {
    db.query_opt(
        "SELECT id, developer, name, category, status, client_id FROM apps WHERE id = $1",
        &[&id.as_str()],
    )?
    .map(|row| app_row(&row))
    .transpose()
}

pub(crate) fn app_by_client_id(db: &mut dyn Db, client_id: &str) -> DbResult<Option<AppCredentials>> {
    db.query_opt(
        "SELECT id, developer, name, category, status, client_id, secret_hash FROM apps WHERE client_id = $1",
        &[&client_id],
    )?
    .map(|row| Ok(AppCredentials { app: app_row(&row)?, secret_hash: row.try_get(6)? }))
    .transpose()
}

pub(crate) fn apps(db: &mut dyn Db) -> DbResult<Vec<App>> {
    db.query("SELECT id, developer, name, category, status, client_id FROM apps ORDER BY id", &[])?
        .iter()
        .map(app_row)
        .collect()
}

pub(crate) fn member_count(db: &mut dyn Db, group: &GroupId) -> DbResult<u64> {
    let count: i64 = db
        .query_one("SELECT COUNT(*) FROM memberships WHERE group_id = $1", &[&group.as_str()])?
        .try_get(0)?;
    Ok(count.unsigned_abs())
}

pub(crate) fn members_page(
    db: &mut dyn Db,
    group: &GroupId,
    after: Option<&MemberId>,
    limit: usize,
) -> DbResult<Vec<(Member, Role)>> {
    db.query(
        "SELECT m.id, m.name, m.picture_url, ms.role FROM memberships ms JOIN members m ON m.id = ms.member_id
         WHERE ms.group_id = $1 AND ms.member_id > $2 ORDER BY ms.member_id LIMIT $3",
        &[&group.as_str(), &after.map_or("", MemberId::as_str), &limit_of(limit)],
    )?
    .iter()
    .map(|row| Ok((member_row(row)?, parsed(row, 3, role_of, "role")?)))
    .collect()
}

pub(crate) fn posts_page(
    db: &mut dyn Db,
    group: &GroupId,
    after: Option<&PostId>,
    limit: usize,
) -> DbResult<Vec<Post>> {
    db.query(
        "SELECT id, group_id, author, content, created_at FROM posts
         WHERE group_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        &[&group.as_str(), &after.map_or("", PostId::as_str), &limit_of(limit)],
    )?
    .iter()
    .map(post_row)
    .collect()
}

/// A row limit as the database takes it.
pub(crate) fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}
