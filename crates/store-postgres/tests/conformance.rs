//! Runs the `Store` conformance suite against PostgreSQL, each store in a fresh schema of the
//! database named by `CONSENTRY_TEST_POSTGRES` (skipped, saying so, when it is unset).

use consentry_store::conformance;
use consentry_store_postgres::testing::{fresh_schema, test_database};
use consentry_store_postgres::{PgOptions, PgStore};

fn fresh_store(url: &str) -> PgStore {
    let url = fresh_schema(url).unwrap_or_else(|e| unreachable!("{e}"));
    PgStore::open(&url, &PgOptions { pool_size: 4 }).unwrap_or_else(|e| unreachable!("{e}"))
}

#[test]
fn postgres_store_conforms() {
    let Some(url) = test_database("the Store conformance suite") else { return };
    conformance::run_all(|| fresh_store(&url));
}

/// Two pools on one schema, as two nodes on one database: the several-nodes checks and races.
#[test]
fn two_pools_on_one_database_behave_as_several_nodes() {
    let Some(url) = test_database("the several-nodes conformance checks") else { return };
    conformance::run_several_nodes(|| {
        let url = fresh_schema(&url).unwrap_or_else(|e| unreachable!("{e}"));
        let open =
            || PgStore::open(&url, &PgOptions { pool_size: 4 }).unwrap_or_else(|e| unreachable!("{e}"));
        (open(), open())
    });
}

#[test]
fn a_database_with_a_newer_schema_is_refused_in_one_line() {
    let Some(url) = test_database("the newer-schema check") else { return };
    let url = fresh_schema(&url).unwrap_or_else(|e| unreachable!("{e}"));
    let running = PgStore::open(&url, &PgOptions::default()).unwrap_or_else(|e| unreachable!("{e}"));
    let known = consentry_store_postgres::latest_schema_version();
    let versions = consentry_store::Store::schema_versions(&running);
    assert_eq!(versions, Ok(consentry_store::SchemaVersions { applied: known, known }));
    assert!(versions.is_ok_and(consentry_store::SchemaVersions::is_current));
    let newer = known + 1;
    let mut client = url
        .parse::<postgres::Config>()
        .and_then(|c| c.connect(postgres::NoTls))
        .unwrap_or_else(|e| unreachable!("{e}"));
    client
        .execute(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
             VALUES ($1, 'from_the_future', '2030-01-01T00:00:00Z', '1')",
            &[&i32::try_from(newer).unwrap_or(i32::MAX)],
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
    // A node still running (opened before) sees it at once: its schema is no longer current.
    let versions = consentry_store::Store::schema_versions(&running);
    assert_eq!(versions, Ok(consentry_store::SchemaVersions { applied: newer, known }));
    assert!(!versions.is_ok_and(consentry_store::SchemaVersions::is_current));
    drop(running);
    let refused = PgStore::open(&url, &PgOptions::default()).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        refused.contains(&format!("schema is version {newer}, newer than this consentry knows")),
        "{refused}"
    );
    assert!(!refused.contains('\n'));
    // Opening an up-to-date database again applies nothing and changes nothing.
    client
        .execute(
            "DELETE FROM refinery_schema_history WHERE version = $1",
            &[&i32::try_from(newer).unwrap_or(i32::MAX)],
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
    let store = PgStore::open(&url, &PgOptions::default()).unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(conformance::seed(&store), Ok(()));
    drop(store);
    let store = PgStore::open(&url, &PgOptions::default()).unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(consentry_store::Store::apps(&store).map(|a| a.len()), Ok(2));
}

#[test]
fn an_unreachable_database_is_one_line_without_the_password() {
    let refused = PgStore::open("postgres://someone:hunter2@127.0.0.1:1/nowhere", &PgOptions::default())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(refused.contains("cannot connect to postgres://someone:***@127.0.0.1:1/nowhere"), "{refused}");
    assert!(!refused.contains("hunter2") && !refused.contains('\n'), "{refused}");
    let garbled = PgStore::open("postgres://[::1", &PgOptions::default()).err().map(|e| e.to_string());
    assert!(garbled.is_some_and(|e| e.contains("not a PostgreSQL address")));
}
