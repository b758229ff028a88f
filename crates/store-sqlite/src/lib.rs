//! SQLite implementation of `Store`: one file, WAL, synchronous commits. The only crate that knows SQL.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use consentry_store::{
    AppCredentials, Case, CaseEvent, CaseState, Change, DeliveryStatus, FactHistory, Facts, KeyOrigin,
    Notification, OperatorKey, OutboxDepth, ProofRecord, ProofWaiver, ServerSecret, Store, StoreError,
    StoreResult, TokenRecord,
};
use consentry_types::{
    App, AppId, AppStatus, Developer, DeveloperId, Group, GroupId, Installation, Instant, Member, MemberId,
    OperatorRole, PolicyActivation, PolicyVersion, Post, PostId, Role,
};
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction};

mod nodes;

const SCHEMA: &str = include_str!("schema.sql");
const READERS: usize = 4;

/// The embedded store: one SQLite file, one writer connection and a few readers.
pub struct SqliteStore {
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
}

fn backend(error: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(failure, message) = &error {
        let detail = message.clone().unwrap_or_else(|| failure.to_string());
        if failure.code == ErrorCode::ConstraintViolation {
            return if detail.contains("FOREIGN KEY") {
                StoreError::NotFound(format!("a referenced entity ({detail})"))
            } else {
                StoreError::Conflict(detail)
            };
        }
    }
    StoreError::Backend(error.to_string())
}

fn corrupt(what: &str, text: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("stored {what} {text:?} is not valid").into(),
    )
}

macro_rules! parse_column {
    ($row:expr, $index:expr, $parse:expr, $what:literal) => {{
        let text: String = $row.get($index)?;
        $parse(&text).map_err(|_| corrupt($what, &text))?
    }};
}

fn role_of(text: &str) -> Result<Role, ()> {
    Role::parse(text).ok_or(())
}
fn status_of(text: &str) -> Result<AppStatus, ()> {
    AppStatus::parse(text).ok_or(())
}
fn operator_role_of(text: &str) -> Result<OperatorRole, ()> {
    OperatorRole::parse(text).ok_or(())
}

/// Brings a store written by an earlier version up to this schema, in place: operator keys
/// gain the columns that say who made them and when they expire. Keys from before are marked
/// as made on the server by an unrecorded command.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('operator_keys')")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut added = false;
    for (column, kind) in [
        ("created_by_key", "TEXT"),
        ("created_by_command", "TEXT"),
        ("created_by_user", "TEXT"),
        ("expires_at", "INTEGER"),
    ] {
        if !columns.iter().any(|c| c == column) {
            conn.execute_batch(&format!("ALTER TABLE operator_keys ADD COLUMN {column} {kind}"))?;
            added = true;
        }
    }
    if added {
        conn.execute(
            "UPDATE operator_keys SET created_by_command = ?1, created_by_user = 'unknown'
             WHERE created_by_key IS NULL AND created_by_command IS NULL",
            [UNRECORDED_ORIGIN],
        )?;
    }
    Ok(())
}

/// What a key from before keys recorded their maker is said to have been made by.
pub const UNRECORDED_ORIGIN: &str = "unrecorded (made before consentry recorded who makes keys)";

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the store in one file.
    pub fn open(path: &Path) -> StoreResult<SqliteStore> {
        let writer = Connection::open(path).map_err(backend)?;
        writer.pragma_update(None, "journal_mode", "WAL").map_err(backend)?;
        configure(&writer).map_err(backend)?;
        writer.execute_batch(SCHEMA).map_err(backend)?;
        writer.execute_batch(nodes::SCHEMA).map_err(backend)?;
        migrate(&writer).map_err(backend)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let reader = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX
                    | OpenFlags::SQLITE_OPEN_URI,
            )
            .map_err(backend)?;
            reader.busy_timeout(std::time::Duration::from_secs(10)).map_err(backend)?;
            readers.push(Mutex::new(reader));
        }
        Ok(SqliteStore { writer: Mutex::new(writer), readers, next_reader: AtomicUsize::new(0) })
    }

    /// A private in-memory store, for tests and benchmarks.
    pub fn in_memory() -> StoreResult<SqliteStore> {
        let writer = Connection::open_in_memory().map_err(backend)?;
        configure(&writer).map_err(backend)?;
        writer.execute_batch(SCHEMA).map_err(backend)?;
        writer.execute_batch(nodes::SCHEMA).map_err(backend)?;
        migrate(&writer).map_err(backend)?;
        Ok(SqliteStore { writer: Mutex::new(writer), readers: Vec::new(), next_reader: AtomicUsize::new(0) })
    }

    /// Bulk loading (e.g. the demo seeding a world it can regenerate): commits stop waiting
    /// for the disk. Turn it off again before serving; off is the default.
    pub fn set_bulk_load(&self, bulk: bool) -> StoreResult<()> {
        let level = if bulk { "OFF" } else { "FULL" };
        self.writer()?.pragma_update(None, "synchronous", level).map_err(backend)
    }

    fn writer(&self) -> StoreResult<MutexGuard<'_, Connection>> {
        self.writer.lock().map_err(|_| StoreError::Backend("writer connection poisoned".into()))
    }

    fn reader(&self) -> StoreResult<MutexGuard<'_, Connection>> {
        if self.readers.is_empty() {
            return self.writer();
        }
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for offset in 0..self.readers.len() {
            if let Some(Ok(guard)) =
                self.readers.get((start + offset) % self.readers.len()).map(|m| m.try_lock())
            {
                return Ok(guard);
            }
        }
        self.readers
            .get(start % self.readers.len())
            .ok_or_else(|| StoreError::Backend("no reader".into()))?
            .lock()
            .map_err(|_| StoreError::Backend("reader connection poisoned".into()))
    }

    fn write<T>(&self, body: impl FnOnce(&Transaction<'_>) -> StoreResult<T>) -> StoreResult<T> {
        let mut conn = self.writer()?;
        let tx = conn.transaction().map_err(backend)?;
        let value = body(&tx)?;
        tx.commit().map_err(backend)?;
        Ok(value)
    }

    fn read<T>(&self, body: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> StoreResult<T> {
        let conn = self.reader()?;
        body(&conn).map_err(backend)
    }
}

fn exists(tx: &Transaction<'_>, sql: &str, id: &str) -> StoreResult<bool> {
    tx.prepare_cached(sql).and_then(|mut s| s.exists([id])).map_err(backend)
}

fn require(tx: &Transaction<'_>, table: &str, what: &str, id: &str) -> StoreResult<()> {
    if exists(tx, &format!("SELECT 1 FROM {table} WHERE id = ?1"), id)? {
        Ok(())
    } else {
        Err(StoreError::NotFound(format!("{what} {id:?}")))
    }
}

/// History is appended in time order: a change may not take effect before the last one of the same fact.
fn require_in_order(tx: &Transaction<'_>, sql: &str, key: [&str; 2], at: Instant) -> StoreResult<()> {
    let last: Option<i64> =
        tx.prepare_cached(sql).and_then(|mut s| s.query_row(key, |r| r.get(0))).map_err(backend)?;
    match last {
        Some(last) if last > at.millis() => Err(StoreError::Conflict(format!(
            "a change at {at} would precede the last recorded change at {}",
            Instant::from_millis(last)
        ))),
        _ => Ok(()),
    }
}

fn member_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Member> {
    Ok(Member {
        id: parse_column!(row, 0, MemberId::parse, "member id"),
        name: row.get(1)?,
        picture_url: row.get(2)?,
    })
}

fn app_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<App> {
    Ok(App {
        id: parse_column!(row, 0, AppId::parse, "app id"),
        developer: parse_column!(row, 1, DeveloperId::parse, "developer id"),
        name: row.get(2)?,
        category: row.get(3)?,
        status: parse_column!(row, 4, status_of, "app status"),
        client_id: row.get(5)?,
    })
}

fn post_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Post> {
    Ok(Post {
        id: parse_column!(row, 0, PostId::parse, "post id"),
        group: parse_column!(row, 1, GroupId::parse, "group id"),
        author: parse_column!(row, 2, MemberId::parse, "member id"),
        content: row.get(3)?,
        created_at: Instant::from_millis(row.get(4)?),
    })
}

fn policy_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<PolicyVersion> {
    Ok(PolicyVersion {
        version: row.get(0)?,
        text: row.get(1)?,
        author: row.get(2)?,
        created_at: Instant::from_millis(row.get(3)?),
    })
}

fn token_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
    Ok(TokenRecord {
        hash: row.get(0)?,
        app: parse_column!(row, 1, AppId::parse, "app id"),
        issued_at: Instant::from_millis(row.get(2)?),
        expires_at: Instant::from_millis(row.get(3)?),
        revoked_at: row.get::<_, Option<i64>>(4)?.map(Instant::from_millis),
    })
}

fn case_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Case> {
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

const KEY_COLUMNS: &str = "id, hash, name, role, created_at, revoked_at, created_by_key, created_by_command,
     created_by_user, expires_at";

fn key_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<OperatorKey> {
    let id: String = row.get(0)?;
    let by_key: Option<String> = row.get(6)?;
    let command: Option<String> = row.get(7)?;
    let created_by = match (by_key, command) {
        (Some(parent), _) => KeyOrigin::Key(parent),
        (None, Some(command)) => {
            KeyOrigin::Server { command, os_user: row.get::<_, Option<String>>(8)?.unwrap_or_default() }
        }
        (None, None) => return Err(corrupt("maker of operator key", &id)),
    };
    Ok(OperatorKey {
        hash: row.get(1)?,
        name: row.get(2)?,
        role: parse_column!(row, 3, operator_role_of, "operator role"),
        created_at: Instant::from_millis(row.get(4)?),
        revoked_at: row.get::<_, Option<i64>>(5)?.map(Instant::from_millis),
        created_by,
        expires_at: row.get::<_, Option<i64>>(9)?.map(Instant::from_millis),
        id,
    })
}

const NOTIFICATION_COLUMNS: &str =
    "id, developer, event, payload, created_at, attempts, next_attempt_at, status, last_error";

fn notification_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Notification> {
    let status: String = row.get(7)?;
    let status = match status.as_str() {
        "pending" => DeliveryStatus::Pending,
        "delivered" => DeliveryStatus::Delivered,
        "dead" => DeliveryStatus::Dead,
        other => return Err(corrupt("delivery status", other)),
    };
    Ok(Notification {
        id: row.get::<_, i64>(0)? as u64,
        developer: parse_column!(row, 1, DeveloperId::parse, "developer id"),
        event: row.get(2)?,
        payload: row.get(3)?,
        created_at: Instant::from_millis(row.get(4)?),
        attempts: row.get(5)?,
        next_attempt_at: Instant::from_millis(row.get(6)?),
        status,
        last_error: row.get(8)?,
    })
}

const APP_COLUMNS: &str = "id, developer, name, category, status, client_id";

impl Store for SqliteStore {
    fn put_member(&self, member: &Member, at: Instant) -> StoreResult<()> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO members (id, name, picture_url, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, picture_url = excluded.picture_url,
                 updated_at = excluded.updated_at",
            )
            .and_then(|mut s| {
                s.execute(params![member.id.as_str(), member.name, member.picture_url, at.millis()])
            })
            .map_err(backend)?;
            Ok(())
        })
    }

    fn member(&self, id: &MemberId) -> StoreResult<Option<Member>> {
        self.read(|c| {
            c.prepare_cached("SELECT id, name, picture_url FROM members WHERE id = ?1")?
                .query_row([id.as_str()], member_row)
                .optional()
        })
    }

    fn put_group(&self, group: &Group, at: Instant) -> StoreResult<()> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO groups (id, name, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, updated_at = excluded.updated_at",
            )
            .and_then(|mut s| s.execute(params![group.id.as_str(), group.name, at.millis()]))
            .map_err(backend)?;
            Ok(())
        })
    }

    fn group(&self, id: &GroupId) -> StoreResult<Option<Group>> {
        self.read(|c| {
            c.prepare_cached("SELECT id, name FROM groups WHERE id = ?1")?
                .query_row([id.as_str()], |row| {
                    Ok(Group { id: parse_column!(row, 0, GroupId::parse, "group id"), name: row.get(1)? })
                })
                .optional()
        })
    }

    fn put_post(&self, post: &Post) -> StoreResult<()> {
        self.write(|tx| {
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
        })
    }

    fn put_developer(&self, developer: &Developer, at: Instant) -> StoreResult<()> {
        self.write(|tx| {
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
        })
    }

    fn developer(&self, id: &DeveloperId) -> StoreResult<Option<Developer>> {
        self.read(|c| {
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
        })
    }

    fn set_membership(
        &self,
        group: &GroupId,
        member: &MemberId,
        role: Option<Role>,
        at: Instant,
    ) -> StoreResult<()> {
        self.write(|tx| {
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
        })
    }

    fn membership(&self, group: &GroupId, member: &MemberId) -> StoreResult<Option<Role>> {
        self.read(|c| {
            c.prepare_cached("SELECT role FROM memberships WHERE group_id = ?1 AND member_id = ?2")?
                .query_row([group.as_str(), member.as_str()], |row| {
                    Ok(parse_column!(row, 0, role_of, "role"))
                })
                .optional()
        })
    }

    fn register_app(&self, app: &App, secret_hash: &str, at: Instant) -> StoreResult<()> {
        self.write(|tx| {
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
        })
    }

    fn set_app_status(&self, app: &AppId, status: AppStatus, at: Instant) -> StoreResult<()> {
        self.write(|tx| {
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
        })
    }

    fn app(&self, id: &AppId) -> StoreResult<Option<App>> {
        self.read(|c| {
            c.prepare_cached(&format!("SELECT {APP_COLUMNS} FROM apps WHERE id = ?1"))?
                .query_row([id.as_str()], app_row)
                .optional()
        })
    }

    fn app_by_client_id(&self, client_id: &str) -> StoreResult<Option<AppCredentials>> {
        self.read(|c| {
            c.prepare_cached(&format!("SELECT {APP_COLUMNS}, secret_hash FROM apps WHERE client_id = ?1"))?
                .query_row([client_id], |row| {
                    Ok(AppCredentials { app: app_row(row)?, secret_hash: row.get(6)? })
                })
                .optional()
        })
    }

    fn apps(&self) -> StoreResult<Vec<App>> {
        self.read(|c| {
            c.prepare_cached(&format!("SELECT {APP_COLUMNS} FROM apps ORDER BY id"))?
                .query_map([], app_row)?
                .collect()
        })
    }

    fn set_installation(
        &self,
        app: &AppId,
        group: &GroupId,
        authorized_by: Option<&MemberId>,
        at: Instant,
    ) -> StoreResult<()> {
        self.write(|tx| {
            require(tx, "apps", "app", app.as_str())?;
            require(tx, "groups", "group", group.as_str())?;
            if let Some(by) = authorized_by {
                require(tx, "members", "member", by.as_str())?;
            }
            let key = [app.as_str(), group.as_str()];
            let current: Option<(String, i64)> = tx
                .prepare_cached("SELECT authorized_by, installed_at FROM installations WHERE app = ?1 AND group_id = ?2")
                .and_then(|mut s| s.query_row(key, |r| Ok((r.get(0)?, r.get(1)?))).optional())
                .map_err(backend)?;
            if current.as_ref().map(|(by, _)| by.as_str()) == authorized_by.map(MemberId::as_str) {
                return Ok(());
            }
            require_in_order(tx, "SELECT MAX(at) FROM installation_history WHERE app = ?1 AND group_id = ?2", key, at)?;
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
        })
    }

    fn installation(&self, app: &AppId, group: &GroupId) -> StoreResult<Option<Installation>> {
        self.read(|c| {
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
        })
    }

    fn set_consent(&self, member: &MemberId, app: &AppId, profile: bool, at: Instant) -> StoreResult<()> {
        self.write(|tx| {
            require(tx, "members", "member", member.as_str())?;
            require(tx, "apps", "app", app.as_str())?;
            let key = [app.as_str(), member.as_str()];
            let current = exists_pair(tx, "SELECT 1 FROM consents WHERE app = ?1 AND member_id = ?2", key)?;
            if current == profile {
                return Ok(());
            }
            require_in_order(
                tx,
                "SELECT MAX(at) FROM consent_history WHERE app = ?1 AND member_id = ?2",
                key,
                at,
            )?;
            let scopes = profile.then_some("profile");
            if profile {
                tx.prepare_cached("INSERT INTO consents (app, member_id, scopes) VALUES (?1, ?2, 'profile')")
                    .and_then(|mut s| s.execute(key))
            } else {
                tx.prepare_cached("DELETE FROM consents WHERE app = ?1 AND member_id = ?2")
                    .and_then(|mut s| s.execute(key))
            }
            .map_err(backend)?;
            tx.prepare_cached(
                "INSERT INTO consent_history (app, member_id, scopes, at) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut s| s.execute(params![app.as_str(), member.as_str(), scopes, at.millis()]))
            .map_err(backend)?;
            Ok(())
        })
    }

    fn profile_consents(&self, app: &AppId, members: &[MemberId]) -> StoreResult<HashSet<MemberId>> {
        let (Some(low), Some(high)) = (members.iter().min(), members.iter().max()) else {
            return Ok(HashSet::new());
        };
        let wanted: HashSet<&MemberId> = members.iter().collect();
        self.read(|c| {
            let mut consenting = HashSet::new();
            if members.len() <= 8 {
                let mut statement =
                    c.prepare_cached("SELECT 1 FROM consents WHERE app = ?1 AND member_id = ?2")?;
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
        })
    }

    fn member_count(&self, group: &GroupId) -> StoreResult<u64> {
        self.read(|c| {
            c.prepare_cached("SELECT COUNT(*) FROM memberships WHERE group_id = ?1")?
                .query_row([group.as_str()], |r| r.get(0))
        })
    }

    fn members_page(
        &self,
        group: &GroupId,
        after: Option<&MemberId>,
        limit: usize,
    ) -> StoreResult<Vec<(Member, Role)>> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT m.id, m.name, m.picture_url, ms.role FROM memberships ms JOIN members m ON m.id = ms.member_id
                 WHERE ms.group_id = ?1 AND ms.member_id > ?2 ORDER BY ms.member_id LIMIT ?3",
            )?
            .query_map(params![group.as_str(), after.map_or("", MemberId::as_str), limit as i64], |row| {
                Ok((member_row(row)?, parse_column!(row, 3, role_of, "role")))
            })?
            .collect()
        })
    }

    fn posts_page(&self, group: &GroupId, after: Option<&PostId>, limit: usize) -> StoreResult<Vec<Post>> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT id, group_id, author, content, created_at FROM posts
                 WHERE group_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            )?
            .query_map(params![group.as_str(), after.map_or("", PostId::as_str), limit as i64], post_row)?
            .collect()
        })
    }

    fn add_policy_version(&self, text: &str, author: &str, at: Instant) -> StoreResult<u32> {
        self.write(|tx| {
            let next: u32 = tx
                .query_row("SELECT COALESCE(MAX(version), 0) + 1 FROM policy_versions", [], |r| r.get(0))
                .map_err(backend)?;
            tx.execute(
                "INSERT INTO policy_versions (version, text, author, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![next, text, author, at.millis()],
            )
            .map_err(backend)?;
            Ok(next)
        })
    }

    fn policy_version(&self, version: u32) -> StoreResult<Option<PolicyVersion>> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT version, text, author, created_at FROM policy_versions WHERE version = ?1",
            )?
            .query_row([version], policy_row)
            .optional()
        })
    }

    fn policy_versions(&self) -> StoreResult<Vec<PolicyVersion>> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT version, text, author, created_at FROM policy_versions ORDER BY version",
            )?
            .query_map([], policy_row)?
            .collect()
        })
    }

    fn approve_policy(&self, version: u32, approver: &str, at: Instant) -> StoreResult<()> {
        self.write(|tx| {
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
        })
    }

    fn policy_approvals(&self, version: u32) -> StoreResult<Vec<(String, Instant)>> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT approver, at FROM policy_approvals WHERE version = ?1 ORDER BY at, approver",
            )?
            .query_map([version], |row| Ok((row.get(0)?, Instant::from_millis(row.get(1)?))))?
            .collect()
        })
    }

    fn record_preview(&self, version: u32, by: &str, summary: &str, at: Instant) -> StoreResult<()> {
        self.write(|tx| {
            if !exists(tx, "SELECT 1 FROM policy_versions WHERE version = ?1", &version.to_string())? {
                return Err(StoreError::NotFound(format!("policy version {version}")));
            }
            tx.execute(
                "INSERT INTO policy_previews (version, by, summary, at) VALUES (?1, ?2, ?3, ?4)",
                params![version, by, summary, at.millis()],
            )
            .map_err(backend)?;
            Ok(())
        })
    }

    fn policy_previews(&self, version: u32) -> StoreResult<Vec<(String, Instant, String)>> {
        self.read(|c| {
            c.prepare_cached("SELECT by, at, summary FROM policy_previews WHERE version = ?1 ORDER BY seq")?
                .query_map([version], |row| {
                    Ok((row.get(0)?, Instant::from_millis(row.get(1)?), row.get(2)?))
                })?
                .collect()
        })
    }

    fn record_proof(&self, version: u32, proof: &ProofRecord) -> StoreResult<()> {
        self.write(|tx| {
            if !exists(tx, "SELECT 1 FROM policy_versions WHERE version = ?1", &version.to_string())? {
                return Err(StoreError::NotFound(format!("policy version {version}")));
            }
            tx.execute(
                "INSERT INTO policy_proofs (version, by, passed, summary, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![version, proof.by, proof.passed, proof.summary, proof.at.millis()],
            )
            .map_err(backend)?;
            Ok(())
        })
    }

    fn policy_proofs(&self, version: u32) -> StoreResult<Vec<ProofRecord>> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT by, at, passed, summary FROM policy_proofs WHERE version = ?1 ORDER BY seq",
            )?
            .query_map([version], |row| {
                Ok(ProofRecord {
                    by: row.get(0)?,
                    at: Instant::from_millis(row.get(1)?),
                    passed: row.get(2)?,
                    summary: row.get(3)?,
                })
            })?
            .collect()
        })
    }

    fn record_waiver(&self, version: u32, waiver: &ProofWaiver) -> StoreResult<()> {
        self.write(|tx| {
            if !exists(tx, "SELECT 1 FROM policy_versions WHERE version = ?1", &version.to_string())? {
                return Err(StoreError::NotFound(format!("policy version {version}")));
            }
            tx.execute(
                "INSERT INTO policy_waivers (version, by, reason, at) VALUES (?1, ?2, ?3, ?4)",
                params![version, waiver.by, waiver.reason, waiver.at.millis()],
            )
            .map_err(backend)?;
            Ok(())
        })
    }

    fn policy_waivers(&self, version: u32) -> StoreResult<Vec<ProofWaiver>> {
        self.read(|c| {
            c.prepare_cached("SELECT by, at, reason FROM policy_waivers WHERE version = ?1 ORDER BY seq")?
                .query_map([version], |row| {
                    Ok(ProofWaiver {
                        by: row.get(0)?,
                        at: Instant::from_millis(row.get(1)?),
                        reason: row.get(2)?,
                    })
                })?
                .collect()
        })
    }

    fn activate_policy(&self, activation: &PolicyActivation) -> StoreResult<()> {
        self.write(|tx| {
            if !exists(
                tx,
                "SELECT 1 FROM policy_versions WHERE version = ?1",
                &activation.version.to_string(),
            )? {
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
        })
    }

    fn policy_activations(&self) -> StoreResult<Vec<PolicyActivation>> {
        self.read(|c| {
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
        })
    }

    fn active_policy(&self) -> StoreResult<Option<PolicyVersion>> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT v.version, v.text, v.author, v.created_at FROM policy_activations a
                 JOIN policy_versions v ON v.version = a.version ORDER BY a.at DESC, a.seq DESC LIMIT 1",
            )?
            .query_row([], policy_row)
            .optional()
        })
    }

    fn put_token(&self, token: &TokenRecord) -> StoreResult<()> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO tokens (hash, app, issued_at, expires_at, revoked_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    token.hash,
                    token.app.as_str(),
                    token.issued_at.millis(),
                    token.expires_at.millis(),
                    token.revoked_at.map(Instant::millis)
                ])
            })
            .map_err(backend)?;
            Ok(())
        })
    }

    fn token(&self, hash: &str) -> StoreResult<Option<TokenRecord>> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT hash, app, issued_at, expires_at, revoked_at FROM tokens WHERE hash = ?1",
            )?
            .query_row([hash], token_row)
            .optional()
        })
    }

    fn revoke_token(&self, hash: &str, at: Instant) -> StoreResult<bool> {
        self.write(|tx| {
            let changed = tx
                .prepare_cached("UPDATE tokens SET revoked_at = ?2 WHERE hash = ?1 AND revoked_at IS NULL")
                .and_then(|mut s| s.execute(params![hash, at.millis()]))
                .map_err(backend)?;
            Ok(changed > 0)
        })
    }

    fn revoke_app_tokens(&self, app: &AppId, at: Instant) -> StoreResult<u64> {
        self.write(|tx| {
            let changed = tx
                .prepare_cached("UPDATE tokens SET revoked_at = ?2 WHERE app = ?1 AND revoked_at IS NULL")
                .and_then(|mut s| s.execute(params![app.as_str(), at.millis()]))
                .map_err(backend)?;
            Ok(changed as u64)
        })
    }

    fn put_operator_key(&self, key: &OperatorKey) -> StoreResult<()> {
        self.write(|tx| {
            let (by_key, command, user) = match &key.created_by {
                KeyOrigin::Key(parent) => {
                    require(tx, "operator_keys", "operator key", parent)?;
                    (Some(parent.as_str()), None, None)
                }
                KeyOrigin::Server { command, os_user } => {
                    (None, Some(command.as_str()), Some(os_user.as_str()))
                }
            };
            tx.prepare_cached(
                "INSERT INTO operator_keys (id, hash, name, role, created_at, revoked_at, created_by_key,
                   created_by_command, created_by_user, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    key.id,
                    key.hash,
                    key.name,
                    key.role.as_str(),
                    key.created_at.millis(),
                    key.revoked_at.map(Instant::millis),
                    by_key,
                    command,
                    user,
                    key.expires_at.map(Instant::millis),
                ])
            })
            .map_err(backend)?;
            Ok(())
        })
    }

    fn operator_key(&self, id: &str) -> StoreResult<Option<OperatorKey>> {
        self.read(|c| {
            c.prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM operator_keys WHERE id = ?1"))?
                .query_row([id], key_row)
                .optional()
        })
    }

    fn operator_keys(&self) -> StoreResult<Vec<OperatorKey>> {
        self.read(|c| {
            c.prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM operator_keys ORDER BY created_at, rowid"))?
                .query_map([], key_row)?
                .collect()
        })
    }

    fn operator_key_count(&self) -> StoreResult<u64> {
        self.read(|c| c.query_row("SELECT COUNT(*) FROM operator_keys", [], |r| r.get(0)))
    }

    fn revoke_operator_key(&self, id: &str, at: Instant, keep_a_live_officer: bool) -> StoreResult<bool> {
        self.write(|tx| {
            let target = tx
                .prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM operator_keys WHERE id = ?1"))
                .and_then(|mut s| s.query_row([id], key_row).optional())
                .map_err(backend)?
                .ok_or_else(|| StoreError::NotFound(format!("operator key {id:?}")))?;
            if target.revoked_at.is_some() {
                return Ok(false);
            }
            if keep_a_live_officer && target.role == OperatorRole::PrivacyOfficer && target.is_live(at) {
                let others: i64 = tx
                    .query_row(
                        "SELECT COUNT(*) FROM operator_keys WHERE role = ?1 AND id <> ?2
                           AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?3)",
                        params![OperatorRole::PrivacyOfficer.as_str(), id, at.millis()],
                        |r| r.get(0),
                    )
                    .map_err(backend)?;
                if others == 0 {
                    return Err(StoreError::Conflict(format!(
                        "operator key {id:?} is the last live privacy-officer key"
                    )));
                }
            }
            tx.execute(
                "UPDATE operator_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, at.millis()],
            )
            .map_err(backend)?;
            Ok(true)
        })
    }

    fn enqueue_notification(
        &self,
        developer: &DeveloperId,
        event: &str,
        payload: &str,
        at: Instant,
    ) -> StoreResult<u64> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO notifications (developer, event, payload, created_at, next_attempt_at, status)
                 VALUES (?1, ?2, ?3, ?4, ?4, 'pending')",
            )
            .and_then(|mut s| s.execute(params![developer.as_str(), event, payload, at.millis()]))
            .map_err(backend)?;
            Ok(tx.last_insert_rowid() as u64)
        })
    }

    fn due_notifications(&self, now: Instant, limit: usize) -> StoreResult<Vec<Notification>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE status = 'pending' AND next_attempt_at <= ?1
                 ORDER BY next_attempt_at, id LIMIT ?2"
            ))?
            .query_map(params![now.millis(), limit as i64], notification_row)?
            .collect()
        })
    }

    fn record_delivery(
        &self,
        id: u64,
        status: DeliveryStatus,
        next_attempt_at: Instant,
        error: Option<&str>,
    ) -> StoreResult<()> {
        self.write(|tx| {
            let changed = tx
                .prepare_cached(
                    "UPDATE notifications SET attempts = attempts + 1, status = ?2, next_attempt_at = ?3, last_error = ?4
                     WHERE id = ?1 AND status = 'pending'",
                )
                .and_then(|mut s| s.execute(params![id as i64, status.as_str(), next_attempt_at.millis(), error]))
                .map_err(backend)?;
            if changed == 0 {
                return Err(StoreError::NotFound(format!("pending notification {id}")));
            }
            Ok(())
        })
    }

    fn notifications(&self, developer: &DeveloperId) -> StoreResult<Vec<Notification>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE developer = ?1 ORDER BY id"
            ))?
            .query_map([developer.as_str()], notification_row)?
            .collect()
        })
    }

    fn server_secrets(&self) -> StoreResult<Vec<ServerSecret>> {
        nodes::server_secrets(self)
    }

    fn add_server_secret(&self, secret: &ServerSecret) -> StoreResult<bool> {
        nodes::add_server_secret(self, secret)
    }

    fn claim_due_notifications(
        &self,
        node: &str,
        now: Instant,
        lease_until: Instant,
        limit: usize,
        per_developer: usize,
    ) -> StoreResult<Vec<Notification>> {
        nodes::claim_due_notifications(self, node, now, lease_until, limit, per_developer)
    }

    fn record_claimed_delivery(
        &self,
        id: u64,
        node: &str,
        status: DeliveryStatus,
        next_attempt_at: Instant,
        error: Option<&str>,
    ) -> StoreResult<bool> {
        nodes::record_claimed_delivery(self, id, node, status, next_attempt_at, error)
    }

    fn release_notifications(&self, node: &str, ids: &[u64]) -> StoreResult<()> {
        nodes::release_notifications(self, node, ids)
    }

    fn outbox_depth(&self) -> StoreResult<OutboxDepth> {
        nodes::outbox_depth(self)
    }

    fn claim_job(
        &self,
        job: &str,
        node: &str,
        now: Instant,
        lease_until: Instant,
        first_due: Instant,
    ) -> StoreResult<bool> {
        nodes::claim_job(self, job, node, now, lease_until, first_due)
    }

    fn finish_job(&self, job: &str, node: &str, next_due: Instant) -> StoreResult<bool> {
        nodes::finish_job(self, job, node, next_due)
    }

    fn certify_app(&self, app: &AppId, statement: &str, at: Instant) -> StoreResult<()> {
        self.write(|tx| {
            require(tx, "apps", "app", app.as_str())?;
            tx.execute(
                "INSERT INTO certifications (app, statement, at) VALUES (?1, ?2, ?3)",
                params![app.as_str(), statement, at.millis()],
            )
            .map_err(backend)?;
            Ok(())
        })
    }

    fn last_certified(&self, app: &AppId) -> StoreResult<Option<Instant>> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT MAX(at) FROM (SELECT at FROM certifications WHERE app = ?1
                 UNION ALL SELECT created_at AS at FROM apps WHERE id = ?1)",
            )?
            .query_row([app.as_str()], |r| r.get::<_, Option<i64>>(0))
            .map(|t| t.map(Instant::from_millis))
        })
    }

    fn open_case(
        &self,
        developer: &DeveloperId,
        manifest: &str,
        deadline: Instant,
        at: Instant,
    ) -> StoreResult<u64> {
        self.write(|tx| {
            require(tx, "developers", "developer", developer.as_str())?;
            tx.execute(
                "INSERT INTO cases (developer, state, manifest, deadline, opened_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![developer.as_str(), CaseState::DeletionRequested.as_str(), manifest, deadline.millis(), at.millis()],
            )
            .map_err(backend)?;
            let id = tx.last_insert_rowid();
            tx.execute(
                "INSERT INTO case_events (case_id, state, at, note) VALUES (?1, ?2, ?3, ?4)",
                params![id, CaseState::DeletionRequested.as_str(), at.millis(), "access revoked; deletion of the manifest requested"],
            )
            .map_err(backend)?;
            Ok(id as u64)
        })
    }

    fn case(&self, id: u64) -> StoreResult<Option<Case>> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT id, developer, state, manifest, deadline, opened_at FROM cases WHERE id = ?1",
            )?
            .query_row([id as i64], case_row)
            .optional()
        })
    }

    fn cases(&self) -> StoreResult<Vec<Case>> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT id, developer, state, manifest, deadline, opened_at FROM cases ORDER BY id",
            )?
            .query_map([], case_row)?
            .collect()
        })
    }

    fn move_case(&self, id: u64, from: CaseState, to: CaseState, note: &str, at: Instant) -> StoreResult<()> {
        self.write(|tx| {
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
        })
    }

    fn case_events(&self, id: u64) -> StoreResult<Vec<CaseEvent>> {
        self.read(|c| {
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
        })
    }

    fn facts_as_of(&self, at: Instant) -> StoreResult<Facts> {
        self.read(|c| facts_as_of(c, at.millis()))
    }

    fn fact_history(&self) -> StoreResult<FactHistory> {
        self.read(fact_history)
    }
}

fn exists_pair(tx: &Transaction<'_>, sql: &str, key: [&str; 2]) -> StoreResult<bool> {
    tx.prepare_cached(sql).and_then(|mut s| s.exists(key)).map_err(backend)
}

/// Folds every history row that took effect by `at`, in the order the changes took effect.
fn facts_as_of(c: &Connection, at: i64) -> rusqlite::Result<Facts> {
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
fn fact_history(c: &Connection) -> rusqlite::Result<FactHistory> {
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
