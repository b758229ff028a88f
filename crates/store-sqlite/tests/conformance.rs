//! Runs the `Store` conformance suite against SQLite, in memory and in a file, and opens stores
//! written by earlier versions.

use consentry_store::conformance;
use consentry_store_sqlite::SqliteStore;

#[test]
fn in_memory_store_conforms() {
    conformance::run_all(|| SqliteStore::in_memory().unwrap_or_else(|e| unreachable!("{e}")));
}

#[test]
fn file_store_conforms() {
    let dir = std::env::temp_dir().join(format!("consentry-conformance-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| unreachable!("{e}"));
    let counter = std::sync::atomic::AtomicUsize::new(0);
    conformance::run_all(|| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        SqliteStore::open(&dir.join(format!("store-{n}.db"))).unwrap_or_else(|e| unreachable!("{e}"))
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reopening_a_file_keeps_every_fact() {
    use consentry_store::Store;
    use consentry_types::Instant;
    let path = std::env::temp_dir().join(format!("consentry-reopen-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let before = {
        let store = SqliteStore::open(&path).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(conformance::seed(&store), Ok(()));
        store.facts_as_of(Instant::MAX)
    };
    let store = SqliteStore::open(&path).unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(store.facts_as_of(Instant::MAX), before);
    assert_eq!(store.apps().map(|a| a.len()), Ok(2));
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_store_from_before_key_makers_were_recorded_opens_and_says_so() {
    use consentry_store::{KeyOrigin, Store};
    let path = std::env::temp_dir().join(format!("consentry-old-keys-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    {
        let old = rusqlite::Connection::open(&path).unwrap_or_else(|e| unreachable!("{e}"));
        old.execute_batch(
            "CREATE TABLE operator_keys (id TEXT PRIMARY KEY, hash TEXT NOT NULL, name TEXT NOT NULL,
               role TEXT NOT NULL, created_at INTEGER NOT NULL, revoked_at INTEGER);
             INSERT INTO operator_keys VALUES ('old1', 'ab', 'bootstrap', 'operator', 5, NULL);",
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
    }
    let store = SqliteStore::open(&path).unwrap_or_else(|e| unreachable!("{e}"));
    let old = store.operator_key("old1").ok().flatten();
    assert_eq!(
        old.as_ref().map(|k| (k.created_by.clone(), k.expires_at)),
        Some((
            KeyOrigin::Server {
                command: consentry_store_sqlite::UNRECORDED_ORIGIN.into(),
                os_user: "unknown".into()
            },
            None
        ))
    );
    // New keys can be made with it, and reopening changes nothing.
    let mut child = old.unwrap_or_else(|| unreachable!("the old key is gone"));
    child.id = "new1".into();
    child.created_by = KeyOrigin::Key("old1".into());
    assert_eq!(store.put_operator_key(&child), Ok(()));
    drop(store);
    let store = SqliteStore::open(&path).unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(store.operator_keys().map(|k| k.len()), Ok(2));
    assert_eq!(store.operator_key("new1"), Ok(Some(child)));
    let _ = std::fs::remove_file(&path);
}

/// A copy of a fixture in a fresh temporary file of its own (`test` names it).
fn copy_of_fixture(name: &str, test: &str) -> std::path::PathBuf {
    let from = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    let to = std::env::temp_dir().join(format!("consentry-{}-{test}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&to);
    std::fs::copy(&from, &to).unwrap_or_else(|e| unreachable!("{e}"));
    to
}

/// `tests/fixtures/store-before-migrations.db` was written by consentry before schema
/// migrations were versioned (commit 1a7f45d: schema.sql applied on every open), filled by
/// `conformance::fill_every_table`; `….contents.txt` is what `conformance::contents` read from
/// it then. Opening it now adopts it as version 1 and brings it up to date, losing nothing.
#[test]
fn a_store_written_before_versioned_migrations_opens_with_everything_in_it() {
    let path = copy_of_fixture("store-before-migrations.db", "adopted");
    let expected = include_str!("fixtures/store-before-migrations.contents.txt");
    let store = SqliteStore::open(&path).unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(conformance::contents(&store).as_deref(), Ok(expected));
    // It keeps working, and opens again (the migrations are recorded, not re-run).
    assert_eq!(
        conformance::fill_every_table(&store)
            .map_err(|e| e.to_string())
            .err()
            .map(|e| e.contains("conflict")),
        Some(true),
        "the same rows again conflict"
    );
    drop(store);
    let store = SqliteStore::open(&path).unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(conformance::contents(&store).as_deref(), Ok(expected));
    let versions: Vec<i64> = rusqlite::Connection::open(&path)
        .and_then(|c| {
            c.prepare("SELECT version FROM refinery_schema_history ORDER BY version")?
                .query_map([], |r| r.get(0))?
                .collect()
        })
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(versions, (1..=consentry_store_sqlite::latest_schema_version()).collect::<Vec<_>>());
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_store_with_a_newer_schema_is_refused_in_one_line_and_left_unchanged() {
    let path = std::env::temp_dir().join(format!("consentry-newer-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let running = SqliteStore::open(&path).unwrap_or_else(|e| unreachable!("{e}"));
    let known = consentry_store_sqlite::latest_schema_version();
    let versions = consentry_store::Store::schema_versions(&running);
    assert_eq!(versions, Ok(consentry_store::SchemaVersions { applied: known, known }));
    assert!(versions.is_ok_and(consentry_store::SchemaVersions::is_current));
    let newer = known + 1;
    {
        let conn = rusqlite::Connection::open(&path).unwrap_or_else(|e| unreachable!("{e}"));
        conn.execute(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
             VALUES (?1, 'from_the_future', '2030-01-01T00:00:00Z', '1')",
            [newer],
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        conn.execute_batch("CREATE TABLE from_the_future (x INTEGER)")
            .unwrap_or_else(|e| unreachable!("{e}"));
    }
    // A node still running (opened before) sees it at once: its schema is no longer current.
    let versions = consentry_store::Store::schema_versions(&running);
    assert_eq!(versions, Ok(consentry_store::SchemaVersions { applied: newer, known }));
    assert!(!versions.is_ok_and(consentry_store::SchemaVersions::is_current));
    drop(running);
    // Everything written so far into the file itself (not left in the WAL), to compare below.
    rusqlite::Connection::open(&path)
        .and_then(|c| c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)"))
        .unwrap_or_else(|e| unreachable!("{e}"));
    let before = std::fs::read(&path).unwrap_or_default();
    let refused = SqliteStore::open(&path).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        refused.contains(&format!("schema is version {newer}, newer than this consentry knows")),
        "{refused}"
    );
    assert!(!refused.contains('\n'), "one line: {refused}");
    assert!(std::fs::read(&path).unwrap_or_default() == before, "nothing changed");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn two_stores_on_one_file_behave_as_several_nodes() {
    let dir = std::env::temp_dir().join(format!("consentry-nodes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| unreachable!("{e}"));
    let counter = std::sync::atomic::AtomicUsize::new(0);
    conformance::run_several_nodes(|| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("nodes-{n}.db"));
        let open = || SqliteStore::open(&path).unwrap_or_else(|e| unreachable!("{e}"));
        (open(), open())
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// A store written by consentry after several nodes (server secrets, leases) but before those
/// tables were a versioned migration: each open ran `schema.sql` (now `V1__initial.sql`, the
/// same statements) and then the nodes tables' statements (now `V2__nodes.sql`, the same),
/// with no record of versions. The test makes one as that code did, from the fixture of
/// before migrations plus a secret and a job lease, and opens it: adopted, nothing lost.
#[test]
fn a_store_written_after_several_nodes_but_before_their_migration_opens_with_everything_in_it() {
    let path = copy_of_fixture("store-before-migrations.db", "nodes");
    {
        let conn = rusqlite::Connection::open(&path).unwrap_or_else(|e| unreachable!("{e}"));
        conn.execute_batch(include_str!("../migrations/V1__initial.sql"))
            .unwrap_or_else(|e| unreachable!("{e}"));
        conn.execute_batch(include_str!("../migrations/V2__nodes.sql"))
            .unwrap_or_else(|e| unreachable!("{e}"));
        conn.execute(
            "INSERT INTO server_secrets (purpose, generation, material, created_at, previous_until)
             VALUES ('identity', 0, ?1, 5, 5)",
            [vec![9u8; 32]],
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        conn.execute(
            "INSERT INTO job_leases (job, node, lease_until, next_due) VALUES ('expiry', NULL, 0, 7000)",
            [],
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
    }
    let expected = include_str!("fixtures/store-before-migrations.contents.txt");
    let store = SqliteStore::open(&path).unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(conformance::contents(&store).as_deref(), Ok(expected));
    let secrets = consentry_store::Store::server_secrets(&store).unwrap_or_default();
    assert_eq!(secrets.iter().map(|s| (s.generation, s.material)).collect::<Vec<_>>(), vec![(0, [9u8; 32])]);
    let early = consentry_types::Instant::from_millis(6999);
    let due = consentry_types::Instant::from_millis(7000);
    let until = consentry_types::Instant::from_millis(8000);
    assert_eq!(
        consentry_store::Store::claim_job(&store, "expiry", "n", early, until, early),
        Ok(false),
        "kept its schedule"
    );
    assert_eq!(consentry_store::Store::claim_job(&store, "expiry", "n", due, until, early), Ok(true));
    let versions: Vec<i64> = rusqlite::Connection::open(&path)
        .and_then(|c| {
            c.prepare("SELECT version FROM refinery_schema_history ORDER BY version")?
                .query_map([], |r| r.get(0))?
                .collect()
        })
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(versions, (1..=consentry_store_sqlite::latest_schema_version()).collect::<Vec<_>>());
    let _ = std::fs::remove_file(&path);
}
