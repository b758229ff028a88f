//! Two real `consentry serve` nodes on one store and one ledger root behind a real HAProxy
//! (`deploy/haproxy.cfg`, the README's configuration): a change made through one node is
//! honored by the other's very next request; draining a node under load loses no request;
//! a node killed under load loses no response a client received; the README walk-through
//! passes through the balancer. Skipped, saying so, when HAProxy is not installed; on
//! PostgreSQL when `CONSENTRY_TEST_POSTGRES` is set (CI sets both).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, reason = "tests")]

mod cluster;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::{Cluster, Http, Options};
use consentry_loadgen::client::{Body, Connection};
use consentry_loadgen::world::{Reader, WorldSize};
use hyper::Method;
use serde_json::{json, Value};

const GROUPS_2018: &str = include_str!("../../../policies/groups-2018.cedar");
const LEGACY_2017: &str = include_str!("../../../policies/legacy-2017.cedar");

/// Interleaved tries of each kind of change, directly node to node.
const TRIES: usize = 1_000;
/// And through the balancer.
const BALANCED_TRIES: usize = 200;

#[test]
fn the_readme_shows_the_haproxy_configuration_the_tests_use() {
    let config = cluster::read(std::path::Path::new(cluster::HAPROXY_CFG));
    let readme = cluster::read(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")));
    assert!(
        readme.contains(&format!("```haproxy\n{config}```\n")),
        "README.md must show deploy/haproxy.cfg as it is, in a ```haproxy block"
    );
    // The settings the tests (and the drain) rely on are in it.
    for needed in
        ["balance roundrobin", "option httpchk GET /readyz", "http-check expect status 200", "retry-on"]
    {
        assert!(config.contains(needed), "deploy/haproxy.cfg lacks {needed:?}");
    }
}

/// The walk-through's world: group `hikers` (ann admin, bob, cat), developer `acme` and its
/// app installed by ann, bob opted in, groups-2018 as version 1 (active) and legacy-2017 as
/// version 2 (approved), and the app's token. Every request goes to `at`.
struct Story {
    app: String,
    token: String,
}

fn op(cluster: &Cluster) -> Option<&str> {
    Some(cluster.operator_key.as_str())
}

fn put(http: &mut Http, cluster: &Cluster, at: SocketAddr, path: &str, body: Value) {
    http.ok(at, Method::PUT, path, op(cluster), Some(Body::json(&body)));
}

fn new_app(http: &mut Http, cluster: &Cluster, at: SocketAddr, name: &str) -> (String, String, String) {
    let app = http.ok(
        at,
        Method::POST,
        "/platform/v1/apps",
        op(cluster),
        Some(Body::json(&json!({"developer": "acme", "name": name, "category": "social_media_management"}))),
    );
    let field = |name: &str| app[name].as_str().unwrap().to_string();
    (field("id"), field("client_id"), field("client_secret"))
}

fn token(http: &mut Http, at: SocketAddr, client_id: &str, secret: &str) -> String {
    let token = http.ok(
        at,
        Method::POST,
        "/oauth/token",
        None,
        Some(Body::form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
        ])),
    );
    token["access_token"].as_str().unwrap().to_string()
}

fn submit_approved(http: &mut Http, cluster: &Cluster, at: SocketAddr, text: &str) -> u64 {
    let submitted = http.ok(at, Method::POST, "/platform/v1/policies", op(cluster), Some(Body::text(text)));
    let version = submitted["version"].as_u64().unwrap();
    let officer = Some(cluster.officer_key.as_str());
    http.ok(
        at,
        Method::POST,
        &format!("/platform/v1/policies/{version}/waivers"),
        officer,
        Some(Body::json(&json!({"reason": "two-node tests: the shipped policies"}))),
    );
    http.ok(at, Method::POST, &format!("/platform/v1/policies/{version}/approve"), officer, None);
    version
}

fn activate(http: &mut Http, cluster: &Cluster, at: SocketAddr, version: u64) {
    http.ok(
        at,
        Method::POST,
        &format!("/platform/v1/policies/{version}/activate"),
        op(cluster),
        Some(Body::json(&json!({"reason": "two-node tests"}))),
    );
}

fn story(http: &mut Http, cluster: &Cluster, at: SocketAddr) -> Story {
    put(http, cluster, at, "/platform/v1/groups/hikers", json!({"name": "Hikers of Oslo"}));
    for m in ["ann", "bob", "cat"] {
        put(
            http,
            cluster,
            at,
            &format!("/platform/v1/members/{m}"),
            json!({"name": m, "picture_url": format!("https://pictures.example/{m}.jpg")}),
        );
    }
    for (m, role) in [("ann", "admin"), ("bob", "member"), ("cat", "member")] {
        put(http, cluster, at, &format!("/platform/v1/groups/hikers/members/{m}"), json!({"role": role}));
    }
    put(
        http,
        cluster,
        at,
        "/platform/v1/developers/acme",
        json!({"name": "Acme", "contact_email": "privacy@acme.example", "webhook_url": "http://127.0.0.1:9/hook"}),
    );
    let (app, client_id, secret) = new_app(http, cluster, at, "Scheduler");
    install(http, cluster, at, &app);
    put(
        http,
        cluster,
        at,
        &format!("/platform/v1/members/bob/consents/{app}"),
        json!({"scopes": ["profile"]}),
    );
    let v1 = submit_approved(http, cluster, at, GROUPS_2018);
    let v2 = submit_approved(http, cluster, at, LEGACY_2017);
    assert_eq!((v1, v2), (1, 2));
    activate(http, cluster, at, 1);
    let token = token(http, at, &client_id, &secret);
    Story { app, token }
}

fn install(http: &mut Http, cluster: &Cluster, at: SocketAddr, app: &str) {
    put(
        http,
        cluster,
        at,
        &format!("/platform/v1/groups/hikers/installations/{app}"),
        json!({"authorized_by": "ann"}),
    );
}

/// The names the app sees on the hikers' members page.
fn member_names(http: &mut Http, at: SocketAddr, token: &str) -> Vec<String> {
    let page = http.ok(at, Method::GET, "/v1/groups/hikers/members?fields=name", Some(token), None);
    let mut names: Vec<String> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

fn group_status(http: &mut Http, at: SocketAddr, token: &str) -> u16 {
    http.send(at, Method::GET, "/v1/groups/hikers?fields=name", Some(token), None).status.as_u16()
}

/// Runs `tries` changes, each made through one address and checked by the very next request
/// through the other; returns the stale answers, described. The change alternates (withdraw,
/// give, withdraw…) while the pair is drawn at random (seeded): were the pairs to alternate in
/// step with it, a node could answer from what it saw two tries before and look fresh. Through
/// the balancer (writer = reader), a `/healthz` sent first at random shifts which node takes
/// the change.
fn interleave(
    http: &mut Http,
    pairs: &[(SocketAddr, SocketAddr)],
    tries: usize,
    mut change: impl FnMut(&mut Http, SocketAddr, usize),
    mut fresh: impl FnMut(&mut Http, SocketAddr, usize) -> Result<(), String>,
) -> Vec<String> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let mut stale = Vec::new();
    for i in 0..tries {
        let (writer, reader) = pairs[rng.gen_range(0..pairs.len())];
        if writer == reader && rng.gen_bool(0.5) {
            http.send(writer, Method::GET, "/healthz", None, None);
        }
        change(http, writer, i);
        if let Err(what) = fresh(http, reader, i) {
            stale.push(format!("try {i} (changed on {writer}, read on {reader}): {what}"));
        }
    }
    stale
}

/// Direct A→B or B→A, then through the balancer (round robin: each request goes to the
/// other node than the one before).
fn both_ways(cluster: &Cluster) -> [Vec<(SocketAddr, SocketAddr)>; 2] {
    let (a, b) = (cluster.node(0).addr, cluster.node(1).addr);
    let lb = cluster.balancer();
    [vec![(a, b), (b, a)], vec![(lb, lb)]]
}

fn assert_none_stale(kind: &str, stale: &[String], tries: usize) {
    assert!(
        stale.is_empty(),
        "{kind}: {} stale answers in {tries} tries, first: {:?}",
        stale.len(),
        stale.iter().take(5).collect::<Vec<_>>()
    );
}

fn two_nodes(test: &str) -> Option<(Cluster, Http, Story)> {
    let cluster = Cluster::start(test, Options::default())?;
    let mut http = Http::new();
    let story = story(&mut http, &cluster, cluster.balancer());
    Some((cluster, http, story))
}

#[test]
fn a_consent_withdrawn_through_one_node_is_honored_by_the_others_next_request() {
    let Some((cluster, mut http, story)) = two_nodes("consent") else { return };
    for (pairs, tries) in both_ways(&cluster).iter().zip([TRIES, BALANCED_TRIES]) {
        let app = story.app.clone();
        let stale = interleave(
            &mut http,
            pairs,
            tries,
            |http, at, i| {
                let path = format!("/platform/v1/members/bob/consents/{app}");
                if i % 2 == 0 {
                    http.ok(at, Method::DELETE, &path, op(&cluster), None);
                } else {
                    put(http, &cluster, at, &path, json!({"scopes": ["profile"]}));
                }
            },
            |http, at, i| {
                let names = member_names(http, at, &story.token);
                let expected: Vec<String> = if i % 2 == 0 { vec![] } else { vec!["bob".into()] };
                if names == expected {
                    Ok(())
                } else {
                    Err(format!(
                        "saw {names:?}, consent is {}",
                        if i % 2 == 0 { "withdrawn" } else { "given" }
                    ))
                }
            },
        );
        assert_none_stale("consent", &stale, tries);
    }
}

#[test]
fn an_installation_removed_through_one_node_is_honored_by_the_others_next_request() {
    let Some((cluster, mut http, story)) = two_nodes("installation") else { return };
    for (pairs, tries) in both_ways(&cluster).iter().zip([TRIES, BALANCED_TRIES]) {
        let stale = interleave(
            &mut http,
            pairs,
            tries,
            |http, at, i| {
                if i % 2 == 0 {
                    let path = format!("/platform/v1/groups/hikers/installations/{}", story.app);
                    http.ok(at, Method::DELETE, &path, op(&cluster), None);
                } else {
                    install(http, &cluster, at, &story.app);
                }
            },
            |http, at, i| {
                let status = group_status(http, at, &story.token);
                match (i % 2 == 0, status) {
                    (true, 200) => Err("the group was served after its installation was removed".into()),
                    (false, 200) | (true, 403 | 404) => Ok(()),
                    (_, other) => Err(format!("answered {other}")),
                }
            },
        );
        assert_none_stale("installation", &stale, tries);
    }
}

#[test]
fn an_app_suspended_or_revoked_through_one_node_is_honored_by_the_others_next_request() {
    let Some((cluster, mut http, story)) = two_nodes("app") else { return };
    for (pairs, tries) in both_ways(&cluster).iter().zip([TRIES, BALANCED_TRIES]) {
        let stale = interleave(
            &mut http,
            pairs,
            tries,
            |http, at, i| {
                let action = if i % 2 == 0 { "suspend" } else { "reinstate" };
                http.ok(
                    at,
                    Method::POST,
                    &format!("/platform/v1/apps/{}/{action}", story.app),
                    op(&cluster),
                    None,
                );
            },
            |http, at, i| match (i % 2 == 0, group_status(http, at, &story.token)) {
                (true, 200) => Err("a suspended app was served".into()),
                (true, 401 | 403) | (false, 200) => Ok(()),
                (_, other) => Err(format!("answered {other}")),
            },
        );
        assert_none_stale("app status", &stale, tries);
    }
    // Revocation is for good: one app per try, served on the reader just before.
    let (a, b) = (cluster.node(0).addr, cluster.node(1).addr);
    let lb = cluster.balancer();
    let mut stale = Vec::new();
    for (i, (writer, reader)) in [(a, b), (b, a), (lb, lb)].iter().cycle().take(12).enumerate() {
        let (app, client_id, secret) = new_app(&mut http, &cluster, *writer, &format!("Revoked {i}"));
        install(&mut http, &cluster, *writer, &app);
        let token = token(&mut http, *reader, &client_id, &secret);
        assert_eq!(group_status(&mut http, *reader, &token), 200, "app {i} before its revocation");
        http.ok(*writer, Method::POST, &format!("/platform/v1/apps/{app}/revoke"), op(&cluster), None);
        let after = group_status(&mut http, *reader, &token);
        if after != 401 {
            stale.push(format!("revocation {i} on {writer}: {reader} answered {after}"));
        }
        let again = http.send(
            *reader,
            Method::POST,
            "/oauth/token",
            None,
            Some(Body::form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &client_id),
                ("client_secret", &secret),
            ])),
        );
        if again.status.is_success() {
            stale.push(format!("revocation {i}: a new token was issued on {reader}"));
        }
    }
    assert_none_stale("app revocation", &stale, 12);
}

#[test]
fn a_policy_activated_through_one_node_is_honored_by_the_others_next_request() {
    let Some((cluster, mut http, story)) = two_nodes("policy") else { return };
    for (pairs, tries) in both_ways(&cluster).iter().zip([TRIES, BALANCED_TRIES]) {
        let stale = interleave(
            &mut http,
            pairs,
            tries,
            |http, at, i| activate(http, &cluster, at, if i % 2 == 0 { 2 } else { 1 }),
            |http, at, i| {
                let names = member_names(http, at, &story.token);
                // legacy-2017 shows every member; groups-2018 only bob, who opted in.
                let expected: Vec<&str> = if i % 2 == 0 { vec!["ann", "bob", "cat"] } else { vec!["bob"] };
                if names == expected {
                    Ok(())
                } else {
                    Err(format!("saw {names:?} under version {}", if i % 2 == 0 { 2 } else { 1 }))
                }
            },
        );
        assert_none_stale("policy activation", &stale, tries);
    }
}

/// What a client received: when, the status, and the request id (`x-request-id`).
#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    status: u16,
    request_id: Option<String>,
    error: Option<String>,
}

/// Clients reading members pages through `addr` until `stop`, each on its own keep-alive
/// connection (opened again when it breaks), each an app reading a group it is installed in.
fn start_load(
    addr: SocketAddr,
    readers: Vec<Reader>,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<Received>> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let mut tasks = tokio::task::JoinSet::new();
            for k in 0..clients {
                let reader = readers[k % readers.len()].clone();
                let stop = stop.clone();
                tasks.spawn(async move {
                    let mut received = Vec::new();
                    let mut connection: Option<Connection> = None;
                    let path = format!("/v1/groups/{}/members?fields=name,picture&limit=25", reader.group);
                    while !stop.load(Ordering::Relaxed) {
                        if connection.is_none() {
                            match Connection::open(addr).await {
                                Ok(c) => connection = Some(c),
                                Err(e) => {
                                    received.push(Received {
                                        at: Instant::now(),
                                        status: 0,
                                        request_id: None,
                                        error: Some(e.to_string()),
                                    });
                                    tokio::time::sleep(Duration::from_millis(20)).await;
                                    continue;
                                }
                            }
                        }
                        let Some(open) = connection.as_mut() else { continue };
                        match open.exchange(Method::GET, &path, Some(&reader.token), None).await {
                            Ok(answer) => received.push(Received {
                                at: Instant::now(),
                                status: answer.status.as_u16(),
                                request_id: answer.request_id,
                                error: (!answer.status.is_success())
                                    .then(|| String::from_utf8_lossy(&answer.body).into_owned()),
                            }),
                            Err(e) => {
                                received.push(Received {
                                    at: Instant::now(),
                                    status: 0,
                                    request_id: None,
                                    error: Some(e.to_string()),
                                });
                                connection = None;
                            }
                        }
                    }
                    received
                });
            }
            let mut all = Vec::new();
            while let Some(done) = tasks.join_next().await {
                all.extend(done.unwrap());
            }
            all
        })
    })
}

/// A small world built through the balancer, and its readers.
fn load_world(cluster: &Cluster) -> Vec<Reader> {
    let size = WorldSize {
        members: 80,
        groups: 4,
        zipf: 1.0,
        memberships_per_member: 1.5,
        apps: 2,
        installed_share: 0.5,
        posts_per_group: 1,
        seed: 9,
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let world = runtime
        .block_on(consentry_loadgen::world::build(
            cluster.balancer(),
            &cluster.operator_key,
            &cluster.officer_key,
            &size,
        ))
        .unwrap_or_else(|e| panic!("building the world through the balancer: {e}"));
    assert!(!world.readers.is_empty());
    world.readers
}

/// Every 200 a client received carries a request id that the merged ledger holds.
fn assert_all_recorded(cluster: &Cluster, received: &[Received]) -> HashMap<String, String> {
    let ledger = cluster.ledger_requests();
    let answered: Vec<&Received> = received.iter().filter(|r| r.status == 200).collect();
    let missing: Vec<&&Received> =
        answered.iter().filter(|r| r.request_id.as_ref().is_none_or(|id| !ledger.contains_key(id))).collect();
    assert!(
        missing.is_empty(),
        "{} of {} answered responses are not in the merged ledger ({} records), e.g. {:?}",
        missing.len(),
        answered.len(),
        ledger.len(),
        missing.first()
    );
    ledger
}

fn assert_verified(cluster: &Cluster, streams: &[&str]) {
    let verified = cluster.ledger_verify();
    let said = String::from_utf8_lossy(&verified.stdout).into_owned();
    assert!(verified.status.success(), "ledger verify: {said}{}", String::from_utf8_lossy(&verified.stderr));
    for stream in streams {
        assert!(
            said.contains(&format!("stream {stream}")),
            "ledger verify does not name stream {stream}: {said}"
        );
    }
}

#[test]
fn draining_a_node_under_load_loses_no_request() {
    let Some(mut cluster) = Cluster::start("drain", Options::default()) else { return };
    let readers = load_world(&cluster);
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(cluster.balancer(), readers.clone(), 6, stop.clone());
    // And one client straight to the node that will drain: it must keep being served while
    // the node says it is not ready (HAProxy's retries would hide a node that stopped early).
    let direct = start_load(cluster.node(0).addr, readers, 1, stop.clone());
    std::thread::sleep(Duration::from_millis(1500));
    let terminated = Instant::now();
    cluster.terminate(0);
    let status = cluster.wait_exit(0, Duration::from_secs(30));
    let exited = Instant::now();
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    let received = load.join().unwrap();
    let direct = direct.join().unwrap();
    let drain = Duration::from_secs(Options::default().drain_secs);
    let while_draining: Vec<&Received> = direct
        .iter()
        .filter(|r| r.at > terminated && r.at < terminated + drain - Duration::from_millis(500))
        .collect();
    assert!(
        while_draining.len() > 5 && while_draining.iter().all(|r| r.status == 200),
        "the draining node stopped serving before --drain-secs: {} answers, first not 200: {:?}",
        while_draining.len(),
        while_draining.iter().find(|r| r.status != 200)
    );
    assert!(exited >= terminated + drain, "the node exited before --drain-secs");

    assert!(status.success(), "the drained node exited with {status}");
    let said = cluster.node(0).said();
    assert!(
        said.iter().any(|l| l.starts_with("ledger checkpoint: checkpoint v2 node=node-a")),
        "the drained node sealed no checkpoint: {said:?}"
    );
    let failed: Vec<&Received> = received.iter().filter(|r| r.status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed while a node drained, e.g. {:?}",
        failed.len(),
        received.len(),
        failed.first()
    );
    let during = received.iter().filter(|r| r.at > terminated && r.at < exited).count();
    let after = received.iter().filter(|r| r.at > exited).count();
    assert!(during > 0 && after > 0, "no load while draining ({during}) or after ({after})");
    let ledger = assert_all_recorded(&cluster, &[received.clone(), direct].concat());
    // Both nodes served this load: the drain was exercised, not avoided.
    let by_node = |node: &str| {
        received
            .iter()
            .filter(|r| r.request_id.as_ref().and_then(|id| ledger.get(id)).is_some_and(|n| n == node))
            .count()
    };
    assert!(
        by_node("node-a") > 0 && by_node("node-b") > 0,
        "a: {}, b: {}",
        by_node("node-a"),
        by_node("node-b")
    );
    assert_verified(&cluster, &["node-a", "node-b"]);
}

#[test]
fn a_node_killed_under_load_loses_no_response_a_client_received() {
    let Some(mut cluster) = Cluster::start("kill", Options::default()) else { return };
    let readers = load_world(&cluster);
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(cluster.balancer(), readers.clone(), 6, stop.clone());
    std::thread::sleep(Duration::from_millis(1500));
    cluster.kill(1);
    let killed = Instant::now();
    std::thread::sleep(Duration::from_millis(2500));
    stop.store(true, Ordering::Relaxed);
    let received = load.join().unwrap();

    // The other node keeps serving: once HAProxy has seen the node gone (two checks of 250 ms),
    // every request is answered.
    let settled = killed + Duration::from_millis(1000);
    let late: Vec<&Received> = received.iter().filter(|r| r.at > settled).collect();
    assert!(late.len() > 10, "only {} requests after the kill", late.len());
    let late_failures: Vec<&&Received> = late.iter().filter(|r| r.status != 200).collect();
    assert!(
        late_failures.is_empty(),
        "after the kill: {} failed, e.g. {:?}",
        late_failures.len(),
        late_failures.first()
    );
    let early_failures: Vec<&Received> = received.iter().filter(|r| r.status != 200).collect();
    eprintln!(
        "kill: {} requests, {} not answered 200 while HAProxy noticed (first: {:?}), {} after it settled",
        received.len(),
        early_failures.len(),
        early_failures.first().and_then(|r| r.error.as_deref()),
        late.len()
    );

    // Started again on its stream, the killed node recovers it; every stream verifies and
    // every answer a client received is recorded.
    cluster.restart(1);
    assert_verified(&cluster, &["node-a", "node-b"]);
    let ledger = assert_all_recorded(&cluster, &received);
    assert!(
        received.iter().any(|r| r
            .request_id
            .as_ref()
            .and_then(|id| ledger.get(id))
            .is_some_and(|n| n == "node-b")),
        "node-b answered nothing before it was killed"
    );
    // HAProxy takes it back: requests through the balancer are recorded in its stream again.
    let mut http = Http::new();
    let reader = &readers[0];
    let path = format!("/v1/groups/{}/members?fields=name", reader.group);
    let started = Instant::now();
    let mut served_again = false;
    while !served_again && started.elapsed() < Duration::from_secs(20) {
        let ids: Vec<String> = (0..4)
            .filter_map(|_| {
                http.send(cluster.balancer(), Method::GET, &path, Some(&reader.token), None).request_id
            })
            .collect();
        let ledger = cluster.ledger_requests();
        served_again = ids.iter().any(|id| ledger.get(id).is_some_and(|n| n == "node-b"));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(served_again, "HAProxy never sent the restarted node a request");
}

#[test]
fn the_readme_walk_through_passes_through_the_balancer() {
    let Some(cluster) = Cluster::start("walkthrough", Options::default()) else { return };
    let mut http = Http::new();
    let api = cluster.balancer();
    put(&mut http, &cluster, api, "/platform/v1/groups/hikers", json!({"name": "Hikers of Oslo"}));
    for m in ["ann", "bob", "cat"] {
        put(
            &mut http,
            &cluster,
            api,
            &format!("/platform/v1/members/{m}"),
            json!({"name": m, "picture_url": format!("https://pictures.example/{m}.jpg")}),
        );
    }
    for (m, role) in [("ann", "admin"), ("bob", "member"), ("cat", "member")] {
        put(
            &mut http,
            &cluster,
            api,
            &format!("/platform/v1/groups/hikers/members/{m}"),
            json!({"role": role}),
        );
    }
    put(
        &mut http,
        &cluster,
        api,
        "/platform/v1/developers/acme",
        json!({"name": "Acme", "contact_email": "privacy@acme.example", "webhook_url": "http://127.0.0.1:9/hook"}),
    );
    let (app, client_id, secret) = new_app(&mut http, &cluster, api, "Scheduler");
    install(&mut http, &cluster, api, &app);
    put(
        &mut http,
        &cluster,
        api,
        &format!("/platform/v1/members/bob/consents/{app}"),
        json!({"scopes": ["profile"]}),
    );
    let submitted =
        http.ok(api, Method::POST, "/platform/v1/policies", op(&cluster), Some(Body::text(GROUPS_2018)));
    assert_eq!(submitted["version"], 1);
    // An operator cannot make a privacy-officer key; the person who runs the server can.
    let refused = http.send(
        api,
        Method::POST,
        "/platform/v1/keys",
        op(&cluster),
        Some(Body::json(&json!({"name": "olga", "role": "privacy_officer"}))),
    );
    assert_eq!(refused.status, 403);
    let olga_file = cluster.dir.join("olga.key");
    let made = cluster.cli(&[
        "keys",
        "create",
        "--role",
        "privacy_officer",
        "--name",
        "olga",
        "--out",
        &olga_file.to_string_lossy(),
    ]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let olga = cluster::read(&olga_file).trim().to_string();
    // Without a solver on the nodes, the officer waives the proofs first.
    http.ok(
        api,
        Method::POST,
        "/platform/v1/policies/1/waivers",
        Some(&olga),
        Some(Body::json(&json!({"reason": "walk-through on two nodes"}))),
    );
    http.ok(api, Method::POST, "/platform/v1/policies/1/approve", Some(&olga), None);
    activate(&mut http, &cluster, api, 1);
    let policies = http.ok(api, Method::GET, "/platform/v1/policies", op(&cluster), None);
    assert_eq!(policies[0]["version"], 1, "{policies}");

    // Be the app, through the balancer: each request goes to the other node.
    let token = token(&mut http, api, &client_id, &secret);
    for _ in 0..2 {
        let group =
            http.ok(api, Method::GET, "/v1/groups/hikers?fields=name,member_count", Some(&token), None);
        assert_eq!(
            (group["name"].as_str(), group["member_count"].as_u64()),
            (Some("Hikers of Oslo"), Some(3))
        );
    }
    for _ in 0..2 {
        assert_eq!(member_names(&mut http, api, &token), vec!["bob".to_string()]);
    }
    // Bob changes his mind: the very next request, on either node, no longer shows him.
    http.ok(api, Method::DELETE, &format!("/platform/v1/members/bob/consents/{app}"), op(&cluster), None);
    for _ in 0..2 {
        assert_eq!(member_names(&mut http, api, &token), Vec::<String>::new());
    }
    // Which apps received bob's data: both nodes' disclosures, from either node.
    for _ in 0..2 {
        let disclosures =
            http.ok(api, Method::GET, "/platform/v1/members/bob/disclosures", op(&cluster), None);
        let data = disclosures["data"].as_array().unwrap();
        assert_eq!(data.len(), 2, "bob's name went out twice, once from each node: {disclosures}");
        assert!(data.iter().all(|d| d["app"] == app.as_str()), "{disclosures}");
    }
    assert_verified(&cluster, &["node-a", "node-b"]);
    let shown = cluster.cli(&["ledger", "show", "--member", "bob"]);
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(
        shown.lines().any(|l| l.starts_with("node-a:")) && shown.lines().any(|l| l.starts_with("node-b:")),
        "bob's disclosures from both nodes: {shown}"
    );
}
