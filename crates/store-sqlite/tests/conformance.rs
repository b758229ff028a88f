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
