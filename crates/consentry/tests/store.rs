//! `--store postgres://…` and `consentry store copy`, end to end: an embedded installation
//! moves to PostgreSQL and every command (and `serve`) works on it; every bad input is one
//! line. The PostgreSQL parts are skipped, saying so, when `CONSENTRY_TEST_POSTGRES` is unset.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Output;

use consentry_store_postgres::testing::{fresh_schema, test_database};
use support::{consentry, start_server, start_server_with};

fn run(args: &[&str]) -> Output {
    consentry().args(args).output().unwrap_or_else(|e| unreachable!("cannot run consentry: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("consentry-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn assert_one_line_error(output: &Output, mentions: &str) {
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: ") && last.contains(mentions), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn server_key(data: &str, role: &str, name: &str, store: &[&str]) -> String {
    let mut args = vec!["keys", "create", "--role", role, "--name", name, "--data-dir", data];
    args.extend_from_slice(store);
    let output = run(&args);
    assert!(output.status.success(), "{}", text(&output.stderr));
    text(&output.stdout).lines().last().unwrap_or_default().trim().to_string()
}

fn http_get_with_key(addr: &str, path: &str, key: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| unreachable!("{e}"));
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap_or_else(|e| unreachable!("{e}"));
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

#[test]
fn an_embedded_installation_is_copied_to_postgres_and_served_from_it() {
    let Some(url) = test_database("store copy and serve on PostgreSQL") else { return };
    let url = fresh_schema(&url).unwrap_or_else(|e| unreachable!("{e}"));
    let dir = temp_dir("copy");
    let data = dir.to_str().unwrap_or_default().to_string();
    let officer = server_key(&data, "privacy_officer", "olga", &[]);
    server_key(&data, "auditor", "audrey", &[]);
    let before = text(&run(&["keys", "list", "--data-dir", &data]).stdout);

    let copied = run(&["store", "copy", "--from", &format!("sqlite:{data}"), "--to", &url]);
    assert!(copied.status.success(), "{}", text(&copied.stderr));
    let said = text(&copied.stdout);
    assert!(said.contains("operator_keys") && said.contains("every table's count checked"), "{said}");
    // Every command reads the copy with --store (or CONSENTRY_STORE), as it read the original.
    let listed = run(&["keys", "list", "--data-dir", &data, "--store", &url]);
    assert_eq!(text(&listed.stdout), before);
    let from_env = consentry()
        .env("CONSENTRY_STORE", &url)
        .args(["keys", "list", "--data-dir", &data])
        .output()
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(text(&from_env.stdout), before);
    // A key made on PostgreSQL is not in the SQLite file, and the other way round.
    server_key(&data, "auditor", "newcomer", &["--store", &url]);
    assert!(text(&run(&["keys", "list", "--data-dir", &data, "--store", &url]).stdout).contains("newcomer"));
    assert!(!text(&run(&["keys", "list", "--data-dir", &data]).stdout).contains("newcomer"));
    // Copying again into the same (now non-empty) database is refused in one line.
    assert_one_line_error(
        &run(&["store", "copy", "--from", &format!("sqlite:{data}"), "--to", &url]),
        "the target store is not empty",
    );
    // serve runs on it, with a pool of 4.
    let (mut child, addr, said) =
        start_server_with(&dir, &[("CONSENTRY_STORE", url.as_str()), ("CONSENTRY_POOL_SIZE", "4")]);
    assert!(
        said.iter().any(|l| l.starts_with("store: PostgreSQL at ") && l.contains("(up to 4 connections)")),
        "{said:?}"
    );
    let keys = http_get_with_key(&addr, "/platform/v1/keys", &officer);
    assert!(keys.starts_with("HTTP/1.1 200") && keys.contains("newcomer"), "{keys}");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_store_addresses_and_copies_are_one_line() {
    let dir = temp_dir("bad");
    let data = dir.to_str().unwrap_or_default().to_string();
    assert_one_line_error(
        &run(&["keys", "list", "--data-dir", &data, "--store", "mysql://x"]),
        "--store takes a postgres://",
    );
    let unreachable =
        run(&["keys", "list", "--data-dir", &data, "--store", "postgres://me:s3cret@127.0.0.1:1/db"]);
    assert_one_line_error(&unreachable, "cannot connect to postgres://me:***@127.0.0.1:1/db");
    assert!(!text(&unreachable.stderr).contains("s3cret"));
    assert_one_line_error(
        &run(&["store", "copy", "--from", &data, "--to", "postgres://x@127.0.0.1:1/db"]),
        "--from takes sqlite:DIR",
    );
    assert_one_line_error(
        &run(&[
            "store",
            "copy",
            "--from",
            &format!("sqlite:{data}/nothing"),
            "--to",
            "postgres://x@127.0.0.1:1/db",
        ]),
        "there is no store in",
    );
    server_key(&data, "auditor", "audrey", &[]);
    assert_one_line_error(
        &run(&["store", "copy", "--from", &format!("sqlite:{data}"), "--to", "sqlite:elsewhere"]),
        "--to takes a postgres://",
    );
    assert_one_line_error(
        &run(&[
            "store",
            "copy",
            "--from",
            &format!("sqlite:{data}"),
            "--to",
            "postgres://me:s3cret@127.0.0.1:1/db",
        ]),
        "cannot connect to postgres://me:***@127.0.0.1:1/db",
    );
    // Without --store, serve is on SQLite in the data directory as before.
    let (mut child, _, said) = start_server(&dir);
    assert!(said.iter().any(|l| l.starts_with("store: SQLite in ")), "{said:?}");
    let _ = child.kill();
    let _ = child.wait();
    assert_one_line_error(
        &run(&["demo", "--store", "postgres://x@127.0.0.1:1/db", "--data-dir", &data]),
        "the demo plays on its own SQLite store",
    );
    let zero = run(&["keys", "list", "--data-dir", &data, "--pool-size", "0"]);
    assert!(!zero.status.success() && text(&zero.stderr).contains("--pool-size"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two running nodes on the store in `dir` (or the PostgreSQL database `store` names), as
/// `serve` opens them.
fn running_nodes(dir: &std::path::Path, store: &[&str]) -> [consentry_service::Service; 2] {
    use std::sync::Arc;
    [(); 2].map(|()| {
        let opened: Arc<dyn consentry_store::Store> = match store {
            [_, url] => Arc::new(
                consentry_store_postgres::PgStore::open(
                    url,
                    &consentry_store_postgres::PgOptions { pool_size: 2 },
                )
                .unwrap_or_else(|e| unreachable!("{e}")),
            ),
            _ => Arc::new(
                consentry_store_sqlite::SqliteStore::open(&dir.join("consentry.db"))
                    .unwrap_or_else(|e| unreachable!("{e}")),
            ),
        };
        let (key, _) =
            consentry_service::load_server_key(opened.as_ref(), None, consentry_types::Instant::now())
                .unwrap_or_else(|e| unreachable!("{e}"));
        consentry_service::Service::new(
            opened,
            Arc::new(consentry_service::SystemClock::default()),
            key,
            consentry_service::ServiceConfig::default(),
        )
    })
}

/// `consentry server-key rotate` while two nodes serve: a cursor sealed before the rotation
/// still opens after it on both (the overlap), one sealed after it by a node that reloaded
/// opens on the other once that one reloads (as `serve` does every 10 s, and at once when a
/// cursor does not open); app-scoped ids do not change; bad input is one line.
fn rotate_while_two_nodes_serve(dir: &std::path::Path, store: &[&str]) {
    let data = dir.to_str().unwrap_or_default();
    let listed = run(&[&["keys", "list", "--data-dir", data], store].concat());
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let [a, b] = running_nodes(dir, store);
    let (a, b) = (&a, &b);
    let scope = "app-1/hikers/members";
    let app = consentry_types::AppId::parse("app-1").unwrap_or_else(|e| unreachable!("{e}"));
    let member = consentry_types::MemberId::parse("ann").unwrap_or_else(|e| unreachable!("{e}"));
    let id = a.scoped_member_id(&app, &member);
    let before = a.server_key().seal_cursor(scope, "m-1").unwrap_or_default();
    let rotated = run(&[
        &["server-key", "rotate", "--purpose", "cursor", "--overlap-secs", "3600", "--data-dir", data],
        store,
    ]
    .concat());
    assert!(rotated.status.success(), "{}", text(&rotated.stderr));
    assert!(
        text(&rotated.stdout)
            .contains("the cursor key is now generation 1; generation 0 stays accepted until "),
        "{}",
        text(&rotated.stdout)
    );
    a.reload_server_key().unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(a.server_key().open_cursor(scope, &before).as_deref(), Some("m-1"), "within the overlap");
    let after = a.server_key().seal_cursor(scope, "m-2").unwrap_or_default();
    assert_eq!(b.server_key().open_cursor(scope, &before).as_deref(), Some("m-1"));
    assert_eq!(b.server_key().open_cursor(scope, &after), None, "b has not reloaded yet");
    b.reload_server_key().unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(b.server_key().open_cursor(scope, &after).as_deref(), Some("m-2"));
    assert_eq!(b.server_key().open_cursor(scope, &before).as_deref(), Some("m-1"));
    assert_eq!(b.scoped_member_id(&app, &member), id);
    // Again: generation 2, chained from the first.
    let again = run(&[&["server-key", "rotate", "--purpose", "webhook", "--data-dir", data], store].concat());
    assert!(text(&again.stdout).contains("the webhook key is now generation 1"), "{}", text(&again.stderr));
    let again = run(&[
        &["server-key", "rotate", "--purpose", "cursor", "--overlap-secs", "0", "--data-dir", data],
        store,
    ]
    .concat());
    assert!(text(&again.stdout).contains("the cursor key is now generation 2"), "{}", text(&again.stderr));
    let identity =
        run(&[&["server-key", "rotate", "--purpose", "identity", "--data-dir", data], store].concat());
    assert_one_line_error(&identity, "the identity key never rotates");
    let overlap = run(&[
        &["server-key", "rotate", "--purpose", "cursor", "--overlap-secs", "-1", "--data-dir", data],
        store,
    ]
    .concat());
    assert_one_line_error(&overlap, "the overlap must be 0 to 90 days");
    a.reload_server_key().unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(a.scoped_member_id(&app, &member), id, "the identity key never changed");
}

#[test]
fn server_key_rotate_reaches_every_node_and_old_cursors_still_open() {
    let dir = temp_dir("rotate");
    rotate_while_two_nodes_serve(&dir, &[]);
    let _ = std::fs::remove_dir_all(&dir);
    let Some(url) = test_database("server-key rotate on PostgreSQL") else { return };
    let url = fresh_schema(&url).unwrap_or_else(|e| unreachable!("{e}"));
    let dir = temp_dir("rotate-pg");
    rotate_while_two_nodes_serve(&dir, &["--store", &url]);
    let _ = std::fs::remove_dir_all(&dir);
}
