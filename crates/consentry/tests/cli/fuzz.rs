//! The OpenAPI fuzz over a real socket against `consentry serve` (a shorter run than the
//! router fuzz in `crates/api/tests/fuzz.rs`), plus what only a socket can send: URIs over
//! 64 KiB, headers over hyper's buffer, broken framing. Every answer is a 2xx or a 4xx
//! declared by the document (hyper's own 400, 414 and 431 included, as problem+json), never a
//! 5xx but the declared ones of throttling and of a server without a solver; the server
//! answers its health check afterwards.

#![allow(clippy::indexing_slicing)] // serde_json indexing returns Null, it never panics

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::hostile::{self, Credentials, HostileRequest, Rng};
use super::openapi_check::{media_type, Document, Exchange};
use super::support::start_server_with;
use super::{server_key, temp_dir};

/// An answer read off the socket.
#[derive(Debug, Default)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Sends `bytes` from the loopback address 127.0.0.`from` (so that per-address throttling
/// of one hostile request does not reach the next) and reads the answer until the server
/// closes. `None`: the server closed without answering.
async fn exchange_bytes(server: SocketAddr, from: u8, bytes: Vec<u8>) -> Option<Answer> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, from)), 0)).ok()?;
    let mut stream = socket.connect(server).await.ok()?;
    // The server may answer (414, 431) and close before it has read everything.
    let _ = stream.write_all(&bytes).await;
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut received)).await;
    if read.is_err() || received.is_empty() {
        return None;
    }
    let split = received.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(received.get(..split)?).to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.get(9..12)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':').map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string())))
        .collect();
    let body = received.get(split + 4..)?.to_vec();
    Some(Answer { status, headers, body })
}

fn wire(request: &HostileRequest, host: &str) -> Vec<u8> {
    let mut bytes =
        format!("{} {} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n", request.method, request.target)
            .into_bytes();
    for (name, value) in &request.headers {
        bytes.extend_from_slice(name.as_bytes());
        bytes.extend_from_slice(b": ");
        bytes.extend_from_slice(value);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(format!("content-length: {}\r\n\r\n", request.body.len()).as_bytes());
    bytes.extend_from_slice(&request.body);
    bytes
}

async fn call(
    server: SocketAddr,
    method: &str,
    target: &str,
    auth: Option<String>,
    body: Option<(&str, String)>,
) -> Value {
    let mut headers = Vec::new();
    if let Some(auth) = auth {
        headers.push(("authorization".to_string(), auth.into_bytes()));
    }
    let mut bytes = Vec::new();
    if let Some((kind, text)) = body {
        headers.push(("content-type".to_string(), kind.as_bytes().to_vec()));
        bytes = text.into_bytes();
    }
    let request =
        HostileRequest { method: method.into(), target: target.into(), headers, body: bytes, what: vec![] };
    let answer = exchange_bytes(server, 1, wire(&request, &server.to_string())).await.unwrap_or_default();
    let value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    assert!((200..300).contains(&answer.status), "setting up: {method} {target}: {} {value}", answer.status);
    value
}

/// A world over the platform API: a group an app reads, sacrificial things for the writes.
async fn world(
    server: SocketAddr,
    operator: &str,
    data: &str,
) -> (Credentials, BTreeMap<&'static str, String>) {
    let op = || Some(format!("Bearer {operator}"));
    let json_body = |v: Value| Some(("application/json", v.to_string()));
    for group in ["g1", "g2"] {
        call(server, "PUT", &format!("/platform/v1/groups/{group}"), op(), json_body(json!({"name": group})))
            .await;
    }
    for (member, role) in [("m1", "admin"), ("m2", "member")] {
        let body = json!({"name": member, "picture_url": "https://pics.example/m.jpg"});
        call(server, "PUT", &format!("/platform/v1/members/{member}"), op(), json_body(body)).await;
        for group in ["g1", "g2"] {
            let target = format!("/platform/v1/groups/{group}/members/{member}");
            call(server, "PUT", &target, op(), json_body(json!({"role": role}))).await;
        }
    }
    let mut apps = Vec::new();
    for developer in ["d1", "d2"] {
        // Loopback port 9: nothing listens, no delivery leaves the machine.
        let body = json!({"name": developer, "contact_email": "privacy@example.org", "webhook_url": "http://127.0.0.1:9/h"});
        call(server, "PUT", &format!("/platform/v1/developers/{developer}"), op(), json_body(body)).await;
        let body = json!({"developer": developer, "name": "App", "category": "social_media_management"});
        apps.push(call(server, "POST", "/platform/v1/apps", op(), json_body(body)).await);
    }
    let text = |v: &Value, name: &str| v[name].as_str().unwrap_or_default().to_string();
    let (main, other) = (&apps[0], &apps[1]);
    let target = format!("/platform/v1/groups/g1/installations/{}", text(main, "id"));
    call(server, "PUT", &target, op(), json_body(json!({"authorized_by": "m1"}))).await;
    let form = format!(
        "grant_type=client_credentials&client_id={}&client_secret={}",
        text(main, "client_id"),
        text(main, "client_secret")
    );
    let form_body = || Some(("application/x-www-form-urlencoded", form.clone()));
    let token = call(server, "POST", "/oauth/token", None, form_body()).await;
    let form_token = call(server, "POST", "/oauth/token", None, form_body()).await;
    let revoked = server_key(data, "operator", "revoked");
    let listed = call(server, "GET", "/platform/v1/keys", op(), None).await;
    let id_of = |name: &str| {
        listed
            .as_array()
            .into_iter()
            .flatten()
            .find(|k| k["name"] == name)
            .map(|k| text(k, "id"))
            .unwrap_or_default()
    };
    call(server, "DELETE", &format!("/platform/v1/keys/{}", id_of("revoked")), op(), None).await;
    let sacrificial = server_key(data, "auditor", "sacrificial");
    let _ = sacrificial;
    let listed = call(server, "GET", "/platform/v1/keys", op(), None).await;
    let sacrificial_id = listed
        .as_array()
        .into_iter()
        .flatten()
        .find(|k| k["name"] == "sacrificial")
        .map(|k| text(k, "id"))
        .unwrap_or_default();
    let credentials = Credentials {
        operator: operator.to_string(),
        auditor: server_key(data, "auditor", "auditor"),
        officer: server_key(data, "privacy_officer", "officer"),
        revoked,
        app_token: text(&token, "access_token"),
        form_token: text(&form_token, "access_token"),
        client_id: text(main, "client_id"),
        client_secret: text(main, "client_secret"),
        developer_client_id: text(other, "client_id"),
        developer_client_secret: text(other, "client_secret"),
    };
    let ids = BTreeMap::from([("other_app", text(other, "id")), ("sacrificial_key", sacrificial_id)]);
    (credentials, ids)
}

fn valid_value(ids: &BTreeMap<&'static str, String>, template: &str, name: &str) -> String {
    let id = |key: &str| ids.get(key).cloned().unwrap_or_default();
    match (name, template) {
        ("id", t) if t.starts_with("/v1/groups/") => "g1".into(),
        ("id", t) if t.starts_with("/v1/cases/") => "1".into(),
        ("id", t) if t.starts_with("/v1/apps/") || t.starts_with("/platform/v1/apps/") => id("other_app"),
        ("id", t) if t.starts_with("/platform/v1/keys/") => id("sacrificial_key"),
        ("id", t) if t.starts_with("/platform/v1/developers/") => "d2".into(),
        ("id" | "mid", t) if t.starts_with("/platform/v1/members/") => "m2".into(),
        ("id" | "gid", _) => "g2".into(),
        ("mid", _) => "m2".into(),
        ("app", _) => id("other_app"),
        ("version", _) => "1".into(),
        ("fields", _) => "name".into(),
        ("limit", _) => "5".into(),
        ("after", t) if t.contains("/disclosures") => "0".into(),
        ("from", _) => "2020-01-01T00:00:00Z".into(),
        _ => "x".into(),
    }
}

/// What only a socket can send: each answered by hyper or the application, as problem+json.
fn framing_attacks(host: &str) -> Vec<(&'static str, Vec<u8>)> {
    let mut attacks: Vec<(&'static str, Vec<u8>)> = vec![
        ("a URI of 70 KiB", format!("GET /v1/groups/{} HTTP/1.1\r\nhost: {host}\r\n\r\n", "a".repeat(70_000)).into_bytes()),
        ("a query of 70 KiB", format!("GET /v1/groups/g1?fields={} HTTP/1.1\r\nhost: {host}\r\n\r\n", "a".repeat(70_000)).into_bytes()),
        ("a header of 500 KiB", format!("GET /healthz HTTP/1.1\r\nhost: {host}\r\nx-big: {}\r\n\r\n", "a".repeat(500_000)).into_bytes()),
        ("200 headers", format!("GET /healthz HTTP/1.1\r\nhost: {host}\r\n{}\r\n", (0..200).map(|i| format!("x-h{i}: v\r\n")).collect::<String>()).into_bytes()),
        ("a space in a header name", format!("GET /healthz HTTP/1.1\r\nhost: {host}\r\nbad header: x\r\n\r\n").into_bytes()),
        ("two content lengths", format!("POST /platform/v1/apps HTTP/1.1\r\nhost: {host}\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nabcdef").into_bytes()),
        ("content length and chunked", format!("POST /platform/v1/apps HTTP/1.1\r\nhost: {host}\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n").into_bytes()),
        ("broken chunks on /oauth/token", format!("POST /oauth/token HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/x-www-form-urlencoded\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\nzz\r\nabc\r\n0\r\n\r\n").into_bytes()),
        ("a negative content length", format!("POST /platform/v1/apps HTTP/1.1\r\nhost: {host}\r\ncontent-length: -1\r\n\r\n").into_bytes()),
        ("a huge content length", format!("POST /platform/v1/apps HTTP/1.1\r\nhost: {host}\r\ncontent-length: 99999999999999999999999\r\n\r\n").into_bytes()),
        ("a garbage request line", b"HELLO\r\n\r\n".to_vec()),
        ("raw non-UTF-8 in the path", [b"GET /v1/groups/\xff\xfe HTTP/1.1\r\nhost: x\r\n\r\n".as_slice()].concat()),
        ("a NUL in a header", [b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-a: a\x00b\r\n\r\n".as_slice()].concat()),
        ("a bare LF request", format!("GET /healthz HTTP/1.1\nhost: {host}\nconnection: close\n\n").into_bytes()),
        ("an unknown HTTP version", format!("GET /healthz HTTP/9.9\r\nhost: {host}\r\n\r\n").into_bytes()),
        ("an absolute URI elsewhere", format!("GET http://elsewhere.example/v1/groups/g1 HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").into_bytes()),
        ("a lowercase method", format!("get /healthz HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").into_bytes()),
        ("an unknown method", format!("BREW /v1/groups/g1 HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").into_bytes()),
        ("an unknown route", format!("GET /v2/everything HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").into_bytes()),
        ("a request after a good one, then garbage", format!("GET /healthz HTTP/1.1\r\nhost: {host}\r\n\r\nGARBAGE\r\n\r\n").into_bytes()),
    ];
    attacks.push(("a policy over 1 MiB", {
        let mut bytes = format!("POST /platform/v1/policies HTTP/1.1\r\nhost: {host}\r\ncontent-type: text/plain\r\ncontent-length: 1100000\r\nconnection: close\r\n\r\n").into_bytes();
        bytes.extend(std::iter::repeat_n(b'a', 1_100_000));
        bytes
    }));
    attacks
}

#[test]
fn every_operation_answers_hostile_requests_over_a_socket_and_the_server_stays_up() {
    let dir = temp_dir("socket-fuzz");
    let data = dir.to_str().unwrap_or_default().to_string();
    let (mut child, address, _) = start_server_with(&dir, &[("CONSENTRY_ALLOW_LOCAL_WEBHOOKS", "1")]);
    let server: SocketAddr = address.parse().unwrap_or_else(|e| unreachable!("{e}"));
    let operator =
        std::fs::read_to_string(dir.join("bootstrap-operator.key")).unwrap_or_default().trim().to_string();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| unreachable!("{e}"));
    let outcome = runtime.block_on(async {
        let (credentials, ids) = world(server, &operator, &data).await;
        let served = exchange_bytes(server, 1, format!("GET /openapi.json HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n\r\n").into_bytes()).await.unwrap_or_default();
        let document = Arc::new(Document::new(serde_json::from_slice(&served.body).unwrap_or_default()).unwrap_or_else(|e| unreachable!("{e}")));
        let seed = std::env::var("CONSENTRY_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5EED_5000_u64);
        let mut rng = Rng::new(seed);
        let valid = |template: &str, name: &str| valid_value(&ids, template, name);
        let mut requests: Vec<(String, Option<HostileRequest>, Vec<u8>)> = Vec::new();
        for operation in document.operations() {
            for _ in 0..6 {
                let request = hostile::generate(&document, operation, &credentials, &valid, 140_000, &mut rng);
                let bytes = wire(&request, &address);
                requests.push((request.describe(), Some(request), bytes));
            }
        }
        for (what, bytes) in framing_attacks(&address) {
            requests.push((what.to_string(), None, bytes));
        }
        // Sixteen at a time: a throttled answer is held back a second.
        let places = Arc::new(tokio::sync::Semaphore::new(16));
        let mut sent = tokio::task::JoinSet::new();
        for (i, (what, request, bytes)) in requests.into_iter().enumerate() {
            let (places, from) = (places.clone(), 2 + (i % 250) as u8);
            sent.spawn(async move {
                let _place = places.acquire_owned().await;
                (what, request, exchange_bytes(server, from, bytes).await)
            });
        }
        let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
        let (mut answered, mut unanswered, mut failures) = (0usize, Vec::new(), Vec::new());
        while let Some(Ok((what, request, answer))) = sent.join_next().await {
            let Some(answer) = answer else {
                unanswered.push(what);
                continue;
            };
            answered += 1;
            *statuses.entry(answer.status).or_default() += 1;
            let mut problems = Vec::new();
            let media = answer.header("content-type").map(media_type);
            let kind = serde_json::from_slice::<Value>(&answer.body).unwrap_or_default()["type"].clone();
            let declared_unavailable = answer.status == 503
                && (kind == "urn:consentry:problem:proofs-unavailable" || kind == "urn:consentry:problem:busy");
            let oauth_busy = answer.status == 503 && request.as_ref().is_some_and(|r| r.path().starts_with("/oauth/"));
            if !((200..500).contains(&answer.status) && !(300..400).contains(&answer.status) || declared_unavailable || oauth_busy) {
                problems.push(format!("answered {}", answer.status));
            }
            let oauth = request.as_ref().map_or(what.contains("/oauth/"), |r| r.path().starts_with("/oauth/"));
            if answer.status >= 400 && !oauth && media.as_deref() != Some("application/problem+json") {
                problems.push(format!("an error as {media:?}, not problem+json"));
            }
            if let Some(request) = &request {
                let content_type = request.header("content-type").and_then(|v| std::str::from_utf8(v).ok());
                let headers: Vec<String> = answer.headers.iter().map(|(n, _)| n.clone()).collect();
                let exchange = Exchange {
                    method: &request.method,
                    path: request.path(),
                    query: request.query(),
                    request_content_type: content_type,
                    request_body: &request.body,
                    status: answer.status,
                    content_type: answer.header("content-type"),
                    headers,
                    body: &answer.body,
                };
                // hyper answers a request it cannot read before any route: 400 (a header
                // value it refuses), 414, 431; the document declares 414 and 431 for every
                // operation, and 400 outside them.
                let before_routing = answer.status == 400 && kind == "urn:consentry:problem:malformed-request";
                if !before_routing {
                    if let Err(violation) = document.check(&exchange) {
                        problems.push(violation);
                    }
                }
            }
            if !problems.is_empty() {
                let body: String = String::from_utf8_lossy(&answer.body).chars().take(300).collect();
                failures.push(format!("{what}\n    → {} {body}\n    {}", answer.status, problems.join("\n    ")));
            }
        }
        let health = exchange_bytes(server, 1, format!("GET /healthz HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n\r\n").into_bytes()).await.unwrap_or_default();
        let line = format!(
            "fuzz (socket, seed {seed:#x}): {} operations, {answered} requests answered ({} framing attacks among them), {} closed without an answer, statuses {statuses:?}",
            document.operations().len(),
            framing_attacks(&address).len(),
            unanswered.len()
        );
        let _ = writeln!(std::io::stderr(), "{line}");
        (failures, unanswered, health)
    });
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let (failures, unanswered, health) = outcome;
    assert!(unanswered.is_empty(), "closed without an answer: {unanswered:?}");
    assert!(
        failures.is_empty(),
        "{} answers broke the rules:\n{}",
        failures.len(),
        failures.iter().take(40).cloned().collect::<Vec<_>>().join("\n")
    );
    assert_eq!((health.status, health.body.as_slice()), (200, &b"ok"[..]), "the server stopped answering");
}
