//! For tests and benchmarks: a fresh, empty schema of the database named by
//! `CONSENTRY_TEST_POSTGRES`, so that every run (and every store of a run) starts empty.

use std::sync::atomic::{AtomicU64, Ordering};

use postgres::NoTls;

/// The environment variable that names the test database (`.ci/run` always sets it).
pub const TEST_DATABASE: &str = "CONSENTRY_TEST_POSTGRES";

/// The test database's address, or `None` (after saying so on stderr, naming `what` is skipped)
/// when `CONSENTRY_TEST_POSTGRES` is unset.
pub fn test_database(what: &str) -> Option<String> {
    match std::env::var(TEST_DATABASE) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            eprintln!("{TEST_DATABASE} is not set: skipping {what} on PostgreSQL");
            None
        }
    }
}

/// Creates a new schema in the database at `url` and gives an address whose connections use it
/// (its `search_path`), so a store opened there is empty and its own.
pub fn fresh_schema(url: &str) -> Result<String, String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let schema =
        format!("consentry_test_{}_{}_{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let mut client = url
        .parse::<postgres::Config>()
        .map_err(|e| e.to_string())?
        .connect(NoTls)
        .map_err(|e| format!("cannot connect to the test database: {e}"))?;
    client.batch_execute(&format!("CREATE SCHEMA {schema}")).map_err(|e| e.to_string())?;
    let separator = if url.contains('?') { '&' } else { '?' };
    Ok(format!("{url}{separator}options=-c%20search_path%3D{schema}"))
}
