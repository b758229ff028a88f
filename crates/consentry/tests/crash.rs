//! Crash safety: SIGKILL the server under concurrent load, restart it, and find that the
//! ledger verifies and holds a record of every response a client received.
//!
//! A SIGKILL loses nothing the kernel already holds, so this test would still pass if the
//! ledger stopped syncing before it acknowledged an append. A lost power supply does lose
//! unsynced writes: that gap is closed by the tests on a disk that loses everything not
//! synced when it crashes, `crates/ledger/tests/ledger/file_layer.rs`
//! (`every_acknowledged_append_survives_a_crash_that_loses_what_was_not_synced`, which fails
//! with the sync in `Ledger::flush` removed) and, through the HTTP stack,
//! `crates/api/tests/durability.rs`.

use std::collections::HashSet;
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Child;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{consentry, start_server};

fn start(dir: &Path) -> (Child, String) {
    let (child, addr, _) = start_server(dir);
    (child, addr)
}

struct Reply {
    status: u16,
    request_id: Option<String>,
    body: String,
}

fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Option<Reply> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let request_id =
        head.lines().find_map(|l| l.strip_prefix("x-request-id: ")).map(|v| v.trim().to_string());
    Some(Reply { status, request_id, body: body.to_string() })
}

fn json_field(body: &str, name: &str) -> String {
    let marker = format!("\"{name}\":\"");
    body.split(&marker).nth(1).and_then(|r| r.split('"').next()).unwrap_or_default().to_string()
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_disclosure() {
    let dir = std::env::temp_dir().join(format!("consentry-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (mut server, addr) = start(&dir);
    let key =
        std::fs::read_to_string(dir.join("bootstrap-operator.key")).unwrap_or_default().trim().to_string();
    let auth = format!("Bearer {key}");
    let put = |path: &str, body: &str| {
        let reply =
            http(&addr, "PUT", path, &[("Authorization", &auth), ("Content-Type", "application/json")], body);
        assert!(reply.as_ref().is_some_and(|r| r.status == 204), "PUT {path}: {:?}", reply.map(|r| r.body));
    };
    put("/platform/v1/groups/hikers", r#"{"name":"Hikers"}"#);
    put(
        "/platform/v1/developers/acme",
        r#"{"name":"Acme","contact_email":"p@acme.example","webhook_url":"https://acme.example/h"}"#,
    );
    let app = http(
        &addr,
        "POST",
        "/platform/v1/apps",
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        r#"{"developer":"acme","name":"Load","category":"analytics"}"#,
    )
    .unwrap_or_else(|| unreachable!("no app"));
    let (app_id, client_id, secret) = (
        json_field(&app.body, "id"),
        json_field(&app.body, "client_id"),
        json_field(&app.body, "client_secret"),
    );
    for i in 0..30 {
        put(
            &format!("/platform/v1/members/m{i:02}"),
            &format!(r#"{{"name":"M{i}","picture_url":"https://p.example/{i}.jpg"}}"#),
        );
        put(
            &format!("/platform/v1/groups/hikers/members/m{i:02}"),
            if i == 0 { r#"{"role":"admin"}"# } else { r#"{"role":"member"}"# },
        );
        put(&format!("/platform/v1/members/m{i:02}/consents/{app_id}"), r#"{"scopes":["profile"]}"#);
    }
    put(&format!("/platform/v1/groups/hikers/installations/{app_id}"), r#"{"authorized_by":"m00"}"#);
    let policy = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/groups-2018.cedar"),
    )
    .unwrap_or_default();
    let created = http(
        &addr,
        "POST",
        "/platform/v1/policies",
        &[("Authorization", &auth), ("Content-Type", "text/plain")],
        &policy,
    );
    assert_eq!(created.map(|r| r.status), Some(201));
    // A privacy officer whose key was made on the server, not by the author, approves it
    // (two-person rule); an operator cannot mint that key over HTTP.
    let minted = http(
        &addr,
        "POST",
        "/platform/v1/keys",
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        r#"{"name":"olga","role":"privacy_officer"}"#,
    );
    assert_eq!(minted.map(|r| r.status), Some(403));
    let made = consentry()
        .args(["keys", "create", "--role", "privacy_officer", "--name", "olga", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let officer = String::from_utf8_lossy(&made.stdout).lines().last().unwrap_or_default().trim().to_string();
    // The officer waives the proofs (whether this machine has a solver or not), then approves.
    let waived = http(
        &addr,
        "POST",
        "/platform/v1/policies/1/waivers",
        &[("Authorization", &format!("Bearer {officer}")), ("Content-Type", "application/json")],
        r#"{"reason":"the crash test does not prove its policy"}"#,
    );
    assert_eq!(waived.map(|r| r.status), Some(201));
    let approved = http(
        &addr,
        "POST",
        "/platform/v1/policies/1/approve",
        &[("Authorization", &format!("Bearer {officer}"))],
        "",
    );
    assert_eq!(approved.map(|r| r.status), Some(200));
    let activated = http(
        &addr,
        "POST",
        "/platform/v1/policies/1/activate",
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        r#"{"reason":"load test"}"#,
    );
    assert_eq!(activated.map(|r| r.status), Some(200));
    let form = format!("grant_type=client_credentials&client_id={client_id}&client_secret={secret}");
    let token =
        http(&addr, "POST", "/oauth/token", &[("Content-Type", "application/x-www-form-urlencoded")], &form)
            .map(|r| json_field(&r.body, "access_token"))
            .unwrap_or_default();
    let bearer = format!("Bearer {token}");

    // Load: clients record the request id of every page they received.
    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (addr, bearer, received, stop) =
                (addr.clone(), bearer.clone(), received.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match http(
                        &addr,
                        "GET",
                        "/v1/groups/hikers/members?limit=50",
                        &[("Authorization", &bearer)],
                        "",
                    ) {
                        Some(reply) if reply.status == 200 && reply.body.contains("\"data\"") => {
                            if let (Some(id), Ok(mut all)) = (reply.request_id, received.lock()) {
                                all.push(id);
                            }
                        }
                        Some(_) => {}
                        None => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    server.kill().unwrap_or_else(|e| unreachable!("{e}")); // SIGKILL
    let _ = server.wait();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.join();
    }
    let received: Vec<String> = received.lock().map(|r| r.clone()).unwrap_or_default();
    assert!(received.len() > 20, "the load generator got only {} pages", received.len());

    // Restart: recovery runs, the server serves again.
    let (mut restarted, addr) = start(&dir);
    assert_eq!(http(&addr, "GET", "/healthz", &[], "").map(|r| r.status), Some(200));
    let _ = restarted.kill();
    let _ = restarted.wait();

    let verify = consentry()
        .args(["ledger", "verify", "--data-dir", dir.to_str().unwrap_or_default()])
        .output()
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    assert!(String::from_utf8_lossy(&verify.stdout).starts_with("OK: "));
    let show = consentry()
        .args(["ledger", "show", "--data-dir", dir.to_str().unwrap_or_default()])
        .output()
        .unwrap_or_else(|e| unreachable!("{e}"));
    let recorded: HashSet<String> = String::from_utf8_lossy(&show.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("request=")).map(String::from))
        .collect();
    let missing: Vec<&String> = received.iter().filter(|id| !recorded.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} received responses have no record: {:?}",
        missing.len(),
        received.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
