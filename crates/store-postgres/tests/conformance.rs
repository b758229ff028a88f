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
