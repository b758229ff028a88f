//! Pages: everything one request decides on (its token, app, installation, group, the active
//! policy and a page of members or posts with each subject's role and consent), read in ONE
//! round trip by `consentry_read_page` (migrations/V1__initial.sql) under the shared side of
//! the release fence, with the release instant from the database's clock.

use consentry_store::{ListedMember, ListedPost, PageList, PageQuery, PageSnapshot, TokenRecord};
use consentry_types::{App, Group, Installation, Instant, Member, MemberId, Post, PostId, Role};
use postgres::Row;

use crate::facts::limit_of;
use crate::fence::page_keys;
use crate::sql::{corrupt, instant, optional_instant, parsed, role_of, status_of, Db, DbResult};

/// Reads the page, or `None` if a change in one of its scopes holds the fence right now (the
/// caller lets go of its connection, waits a little and asks again).
pub(crate) fn read_page(db: &mut dyn Db, query: &PageQuery) -> DbResult<Option<PageSnapshot>> {
    let (list, after, limit, count) = match &query.list {
        PageList::Group { member_count } => ("group", String::new(), 0, *member_count),
        PageList::Members { after, limit } => {
            ("members", after.as_ref().map_or("", MemberId::as_str).to_string(), limit_of(*limit), false)
        }
        PageList::Posts { after, limit } => {
            ("posts", after.as_ref().map_or("", PostId::as_str).to_string(), limit_of(*limit), false)
        }
    };
    let keys = page_keys(query);
    let rows = db.query(
        "SELECT * FROM consentry_read_page($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &query.token_hash,
            &query.app.as_str(),
            &query.group.as_str(),
            &list,
            &after,
            &limit,
            &count,
            &keys.as_slice(),
        ],
    )?;
    let mut snapshot = PageSnapshot::default();
    for row in &rows {
        let kind: String = row.try_get(0)?;
        match kind.as_str() {
            "busy" => return Ok(None),
            "context" => context(row, query, &mut snapshot)?,
            "member" => snapshot.members.push(ListedMember {
                member: subject(row)?,
                role: parsed(row, 19, role_of, "role")?,
                consented_profile: row.try_get(20)?,
            }),
            "post" => {
                let author = subject(row)?;
                snapshot.posts.push(ListedPost {
                    post: Post {
                        id: parsed(row, 21, PostId::parse, "post id")?,
                        group: query.group.clone(),
                        author: author.id.clone(),
                        content: row.try_get(22)?,
                        created_at: instant(row, 23)?,
                    },
                    author,
                    author_role: match row.try_get::<_, Option<String>>(19)? {
                        Some(text) => Some(role_of(&text).map_err(|_| corrupt("role", &text))?),
                        None => None::<Role>,
                    },
                    author_consented_profile: row.try_get(20)?,
                });
            }
            other => return Err(corrupt("kind of page row", other)),
        }
    }
    if snapshot.released_at.is_none() {
        return Err(corrupt("page", "without its context row"));
    }
    // The function orders each list; its union is put in that order here (byte order of ids,
    // as the columns' "C" collation compares them).
    snapshot.members.sort_by(|a, b| a.member.id.as_str().cmp(b.member.id.as_str()));
    snapshot.posts.sort_by(|a, b| a.post.id.as_str().cmp(b.post.id.as_str()));
    Ok(Some(snapshot))
}

fn subject(row: &Row) -> DbResult<Member> {
    Ok(Member {
        id: parsed(row, 16, MemberId::parse, "member id")?,
        name: row.try_get(17)?,
        picture_url: row.try_get(18)?,
    })
}

fn context(row: &Row, query: &PageQuery, snapshot: &mut PageSnapshot) -> DbResult<()> {
    if row.try_get::<_, Option<String>>(1)?.is_some() {
        snapshot.token = Some(TokenRecord {
            hash: query.token_hash.clone(),
            app: parsed(row, 1, consentry_types::AppId::parse, "app id")?,
            issued_at: instant(row, 2)?,
            expires_at: instant(row, 3)?,
            revoked_at: optional_instant(row, 4)?,
        });
    }
    if row.try_get::<_, Option<String>>(8)?.is_some() {
        snapshot.app = Some(App {
            id: query.app.clone(),
            developer: parsed(row, 5, consentry_types::DeveloperId::parse, "developer id")?,
            name: row.try_get(6)?,
            category: row.try_get(7)?,
            status: parsed(row, 8, status_of, "app status")?,
            client_id: row.try_get(9)?,
        });
    }
    if row.try_get::<_, Option<String>>(10)?.is_some() {
        snapshot.installation = Some(Installation {
            app: query.app.clone(),
            group: query.group.clone(),
            authorized_by: parsed(row, 10, MemberId::parse, "member id")?,
            installed_at: instant(row, 11)?,
        });
    }
    if let Some(name) = row.try_get::<_, Option<String>>(12)? {
        snapshot.group = Some(Group { id: query.group.clone(), name });
    }
    snapshot.active_policy = match row.try_get::<_, Option<i64>>(13)? {
        Some(version) => {
            Some(u32::try_from(version).map_err(|_| corrupt("policy version", &version.to_string()))?)
        }
        None => None,
    };
    snapshot.member_count = row.try_get::<_, Option<i64>>(14)?.map(i64::unsigned_abs);
    snapshot.released_at = Some(Instant::from_millis(row.try_get(15)?));
    Ok(())
}
