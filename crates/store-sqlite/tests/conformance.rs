//! Runs the `Store` conformance suite against SQLite, in memory and in a file.

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
