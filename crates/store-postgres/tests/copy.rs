//! `consentry store copy`: an embedded (SQLite) store moves to PostgreSQL with its history,
//! row for row, and the copy reads back exactly as the original.

use consentry_store::conformance;
use consentry_store::copy::{copy_store, TABLES};
use consentry_store_postgres::testing::{fresh_schema, test_database};
use consentry_store_postgres::{PgOptions, PgStore};
use consentry_store_sqlite::SqliteStore;

fn sqlite_store(name: &str) -> (SqliteStore, std::path::PathBuf) {
    let path = std::env::temp_dir().join(format!("consentry-copy-{}-{name}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    (SqliteStore::open(&path).unwrap_or_else(|e| unreachable!("{e}")), path)
}

#[test]
fn a_sqlite_store_copies_to_postgres_with_every_row_and_reads_back_the_same() {
    let Some(url) = test_database("store copy") else { return };
    let (source, path) = sqlite_store("full");
    assert_eq!(conformance::fill_every_table(&source), Ok(()));
    let target = PgStore::open(&fresh_schema(&url).unwrap_or_default(), &PgOptions::default())
        .unwrap_or_else(|e| unreachable!("{e}"));
    let counts = copy_store(&source, &target).unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(counts.len(), TABLES.len());
    assert!(counts.iter().all(|(_, n)| *n > 0), "every table had rows: {counts:?}");
    assert_eq!(conformance::contents(&target), conformance::contents(&source));
    // The server secrets too (app-scoped ids and cursors keep their meaning), byte for byte.
    let secrets = consentry_store::Store::server_secrets(&source).unwrap_or_default();
    assert_eq!(secrets.len(), 2);
    assert_eq!(consentry_store::Store::server_secrets(&target), Ok(secrets));
    // The copy goes on where the original left off: new ids and sequence numbers follow.
    let developer = consentry_types::DeveloperId::parse("d0").unwrap_or_else(|e| unreachable!("{e}"));
    let next = consentry_store::Store::enqueue_notification(
        &target,
        &developer,
        "x",
        "{}",
        consentry_types::Instant::from_secs(1),
    );
    let original = consentry_store::Store::enqueue_notification(
        &source,
        &developer,
        "x",
        "{}",
        consentry_types::Instant::from_secs(1),
    );
    assert_eq!(next, original);
    // A target with anything in it is refused, in one line, and left as it was.
    let refused = copy_store(&source, &target).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(refused.contains("the target store is not empty"), "{refused}");
    assert!(!refused.contains('\n'));
    let _ = std::fs::remove_file(&path);
}

#[test]
fn the_store_from_before_migrations_copies_too() {
    let Some(url) = test_database("store copy of an old store") else { return };
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../store-sqlite/tests/fixtures/store-before-migrations.db");
    let path = std::env::temp_dir().join(format!("consentry-copy-{}-old.db", std::process::id()));
    std::fs::copy(&fixture, &path).unwrap_or_else(|e| unreachable!("{e}"));
    let source = SqliteStore::open(&path).unwrap_or_else(|e| unreachable!("{e}"));
    let target = PgStore::open(&fresh_schema(&url).unwrap_or_default(), &PgOptions::default())
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert!(copy_store(&source, &target).is_ok());
    let expected = include_str!("../../store-sqlite/tests/fixtures/store-before-migrations.contents.txt");
    assert_eq!(conformance::contents(&target).as_deref(), Ok(expected));
    let _ = std::fs::remove_file(&path);
}
