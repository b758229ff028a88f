//! Pages: everything one request decides on (its token, app, installation, group, the active
//! policy and a page of members or posts with each subject's role and consent), read in one
//! read transaction, so that all of it is as it was at one instant. A listed member's profile
//! is read, in the same transaction, only if the request names its kind (`ProfileKinds`).

use consentry_store::{ListedMember, ListedPost, PageList, PageQuery, PageSnapshot};
use consentry_types::{MemberId, PostId};
use rusqlite::{params, Connection};

use crate::facts::post_row;
use crate::sql::{corrupt, role_of};
use crate::{access, credentials, facts, policies};

/// Reads the page; `c` is in a read transaction.
pub(crate) fn read_page(c: &Connection, query: &PageQuery) -> rusqlite::Result<PageSnapshot> {
    let mut snapshot = PageSnapshot {
        token: credentials::token(c, &query.token_hash)?,
        app: facts::app(c, &query.app)?,
        installation: access::installation(c, &query.app, &query.group)?,
        group: facts::group(c, &query.group)?,
        active_policy: policies::active_policy_version(c)?,
        ..PageSnapshot::default()
    };
    match &query.list {
        PageList::Group { member_count } => {
            if *member_count {
                snapshot.member_count = Some(facts::member_count(c, &query.group)?);
            }
        }
        PageList::Members { after, limit, profiles_of } => {
            let mut members: Vec<ListedMember> = c
                .prepare_cached(
                    "SELECT ms.member_id, ms.role, c.member_id IS NOT NULL
                     FROM memberships ms
                     LEFT JOIN consents c ON c.app = ?2 AND c.member_id = ms.member_id
                     WHERE ms.group_id = ?1 AND ms.member_id > ?3 ORDER BY ms.member_id LIMIT ?4",
                )?
                .query_map(
                    params![
                        query.group.as_str(),
                        query.app.as_str(),
                        after.as_ref().map_or("", MemberId::as_str),
                        *limit as i64
                    ],
                    |row| {
                        Ok(ListedMember {
                            id: parse_column!(row, 0, MemberId::parse, "member id"),
                            role: parse_column!(row, 1, role_of, "role"),
                            consented_profile: row.get(2)?,
                            profile: None,
                        })
                    },
                )?
                .collect::<rusqlite::Result<_>>()?;
            let wanted: Vec<MemberId> = members
                .iter()
                .filter(|m| profiles_of.includes(m.role, m.consented_profile))
                .take(profiles_of.at_most)
                .map(|m| m.id.clone())
                .collect();
            if !wanted.is_empty() {
                let mut profiles = facts::members_by_id(c, &wanted)?;
                for member in &mut members {
                    member.profile = profiles.remove(&member.id);
                }
            }
            snapshot.members = members;
        }
        PageList::Posts { after, limit } => {
            snapshot.posts = c
                .prepare_cached(
                    "SELECT p.id, p.group_id, p.author, p.content, p.created_at,
                       m.name, m.picture_url, ms.role, c.member_id IS NOT NULL
                     FROM posts p JOIN members m ON m.id = p.author
                     LEFT JOIN memberships ms ON ms.group_id = p.group_id AND ms.member_id = p.author
                     LEFT JOIN consents c ON c.app = ?2 AND c.member_id = p.author
                     WHERE p.group_id = ?1 AND p.id > ?3 ORDER BY p.id LIMIT ?4",
                )?
                .query_map(
                    params![
                        query.group.as_str(),
                        query.app.as_str(),
                        after.as_ref().map_or("", PostId::as_str),
                        *limit as i64
                    ],
                    |row| {
                        let post = post_row(row)?;
                        let author_role = match row.get::<_, Option<String>>(7)? {
                            Some(text) => Some(role_of(&text).map_err(|_| corrupt("role", &text))?),
                            None => None,
                        };
                        Ok(ListedPost {
                            author: consentry_types::Member {
                                id: post.author.clone(),
                                name: row.get(5)?,
                                picture_url: row.get(6)?,
                            },
                            author_role,
                            author_consented_profile: row.get(8)?,
                            post,
                        })
                    },
                )?
                .collect::<rusqlite::Result<_>>()?;
        }
    }
    Ok(snapshot)
}
