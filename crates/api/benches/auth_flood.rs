//! Benchmark: a legitimate app's `GET /v1/groups/{id}` over real loopback sockets, alone and
//! then while 64 connections post wrong client secrets to `/oauth/token` for known client
//! ids, in the same run. The server is what `serve` runs: axum on a TCP listener with connect
//! info and a durable ledger in a temporary directory. Clients are plain threads with
//! keep-alive connections, as outside processes would be.
//!
//! `cargo bench -p consentry-api --bench auth_flood` prints both figures and their ratio
//! (target >= 0.8); under `cargo test` it runs briefly and checks that the flood was throttled.
//! `FLOOD_ADDRESSES=n` spreads the flood over n loopback addresses (default 8);
//! `SUSPECT_CHECKS=n` sets `AuthLimits::suspect_checks_per_second` (default: the product's).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant as WallClock};

use consentry_api::{app, ApiState};
use consentry_service::{ServerKey, Service, ServiceConfig, SystemClock};
use consentry_store_sqlite::SqliteStore;
use consentry_types::{DeveloperId, GroupId, MemberId, OperatorRole, Role, Scope};

const GROUPS_2018: &str = include_str!("../../../policies/groups-2018.cedar");
const GROUP: &str = "g-flood";

struct Sizes {
    apps: usize,
    members: usize,
    legit_connections: usize,
    flood_connections: usize,
    flood_addresses: u8,
    suspect_checks: Option<u32>,
    warm_up: Duration,
    measured: Duration,
}

/// The world: `apps` apps of as many developers, one group of `members` with the first app
/// installed. Returns the service, the legitimate app's token and every client id.
fn world(path: &std::path::Path, sizes: &Sizes) -> (Arc<Service>, String, Vec<String>) {
    let store = Arc::new(SqliteStore::open(path).unwrap_or_else(|e| unreachable!("{e}")));
    store.set_bulk_load(true).unwrap_or_else(|e| unreachable!("{e}"));
    let mut config = ServiceConfig::default();
    if let Some(rate) = sizes.suspect_checks {
        config.auth_limits.suspect_checks_per_second = rate;
    }
    let service = Arc::new(Service::new(
        store.clone(),
        Arc::new(SystemClock::default()),
        ServerKey::generate(),
        config,
    ));
    let ok = |r: Result<(), consentry_service::ServiceError>| r.unwrap_or_else(|e| unreachable!("{e}"));
    let group = GroupId::parse(GROUP).unwrap_or_else(|e| unreachable!("{e}"));
    ok(service.put_group(&group, "Flooded"));
    let mut registered = Vec::new();
    for i in 0..sizes.apps {
        let developer = DeveloperId::parse(&format!("dev-{i:03}")).unwrap_or_else(|e| unreachable!("{e}"));
        ok(service.put_developer(&developer, "Dev", "d@dev.example", "https://dev.example/h"));
        registered.push(
            service
                .register_app(&developer, &format!("App {i}"), "analytics")
                .unwrap_or_else(|e| unreachable!("{e}")),
        );
    }
    let legit = registered.first().map(|r| r.app.id.clone()).unwrap_or_else(|| unreachable!("no app"));
    for i in 0..sizes.members {
        let member = MemberId::parse(&format!("m-{i:05}")).unwrap_or_else(|e| unreachable!("{e}"));
        ok(service.put_member(&member, &format!("Member {i}"), &format!("https://pictures.example/{i}.jpg")));
        ok(service.set_membership(&group, &member, Some(if i == 0 { Role::Admin } else { Role::Member })));
        ok(service.set_consent(&member, &legit, &[Scope::Profile]));
    }
    let admin = MemberId::parse("m-00000").unwrap_or_else(|e| unreachable!("{e}"));
    ok(service.install_app(&legit, &group, &admin));
    // Two keys made on the server: the author's, and an independent privacy officer's.
    let sign_in = |name: &str, role: OperatorRole| {
        let made = service.create_key_on_server("bench", "bench", name, role, None);
        let made = made.unwrap_or_else(|e| unreachable!("{e}"));
        service.authenticate_operator(&made.key).unwrap_or_else(|e| unreachable!("{e}"))
    };
    let author = sign_in("bench", OperatorRole::Operator);
    let officer = sign_in("bench-officer", OperatorRole::PrivacyOfficer);
    let version = service.submit_policy(GROUPS_2018, &author).unwrap_or_else(|e| unreachable!("{e}"));
    service.record_proof(version, &officer, true, "{}").unwrap_or_else(|e| unreachable!("{e}"));
    service.approve_policy(version, &officer).unwrap_or_else(|e| unreachable!("{e}"));
    service.activate_policy(version, &author, "bench").unwrap_or_else(|e| unreachable!("{e}"));
    store.set_bulk_load(false).unwrap_or_else(|e| unreachable!("{e}"));
    let first = registered.first().unwrap_or_else(|| unreachable!("no app"));
    let token = service
        .issue_token(&first.app.client_id, &first.client_secret)
        .unwrap_or_else(|e| unreachable!("{e}"));
    let client_ids = registered.iter().map(|r| r.app.client_id.clone()).collect();
    (service, token.access_token, client_ids)
}

/// A keep-alive HTTP/1.1 connection from a chosen local address.
struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Connection {
    fn open(
        runtime: &tokio::runtime::Handle,
        from: IpAddr,
        server: SocketAddr,
    ) -> std::io::Result<Connection> {
        let stream = runtime.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(from, 0))?;
            socket.connect(server).await
        })?;
        let stream = stream.into_std()?;
        stream.set_nonblocking(false)?;
        stream.set_nodelay(true)?;
        Ok(Connection { stream, buffer: Vec::with_capacity(4096) })
    }

    /// Sends one request and reads its answer: (status, body).
    fn exchange(&mut self, request: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        self.stream.write_all(request)?;
        self.buffer.clear();
        let mut chunk = [0u8; 4096];
        let header_end = loop {
            if let Some(at) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let read = self.stream.read(&mut chunk)?;
            if read == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buffer.extend_from_slice(chunk.get(..read).unwrap_or_default());
        };
        let head = String::from_utf8_lossy(self.buffer.get(..header_end).unwrap_or_default()).into_owned();
        let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let length: usize = head
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, value)| value.trim().parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no content-length in {head:?}")))?;
        while self.buffer.len() < header_end + length {
            let read = self.stream.read(&mut chunk)?;
            if read == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buffer.extend_from_slice(chunk.get(..read).unwrap_or_default());
        }
        Ok((status, self.buffer.get(header_end..header_end + length).unwrap_or_default().to_vec()))
    }
}

/// What the legitimate app saw in one phase.
struct Served {
    per_second: f64,
    p50: Duration,
    p99: Duration,
    requests: usize,
}

fn legit_phase(runtime: &tokio::runtime::Handle, server: SocketAddr, token: &str, sizes: &Sizes) -> Served {
    let request = format!(
        "GET /v1/groups/{GROUP}?fields=name,member_count HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .into_bytes();
    let start = Arc::new(Barrier::new(sizes.legit_connections + 1));
    let threads: Vec<_> = (0..sizes.legit_connections)
        .map(|_| {
            let (runtime, request, start) = (runtime.clone(), request.clone(), start.clone());
            let (warm_up, measured) = (sizes.warm_up, sizes.measured);
            std::thread::spawn(move || {
                let from = IpAddr::V4(Ipv4Addr::LOCALHOST);
                let mut connection =
                    Connection::open(&runtime, from, server).unwrap_or_else(|e| unreachable!("connect: {e}"));
                start.wait();
                let began = WallClock::now();
                let mut latencies = Vec::new();
                loop {
                    let sent = WallClock::now();
                    let (status, body) =
                        connection.exchange(&request).unwrap_or_else(|e| unreachable!("legit request: {e}"));
                    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
                    let done = WallClock::now();
                    let since = done.duration_since(began);
                    if since > warm_up + measured {
                        break;
                    }
                    if sent.duration_since(began) >= warm_up {
                        latencies.push(done.duration_since(sent));
                    }
                }
                latencies
            })
        })
        .collect();
    start.wait();
    let mut latencies: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap_or_else(|_| unreachable!("a legit client failed")))
        .collect();
    latencies.sort_unstable();
    let at = |q: f64| {
        let index = ((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1));
        latencies.get(index).copied().unwrap_or_default()
    };
    Served {
        per_second: latencies.len() as f64 / sizes.measured.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
        requests: latencies.len(),
    }
}

/// Answers the flood got, by status.
#[derive(Default)]
struct FloodTally {
    unauthorized: AtomicU64,
    too_many: AtomicU64,
    busy: AtomicU64,
    other: AtomicU64,
}

/// Starts `flood_connections` threads posting wrong secrets for `client_ids`, from
/// 127.0.0.2 onwards, until `stop`. Returns once every connection is open.
fn start_flood(
    runtime: &tokio::runtime::Handle,
    server: SocketAddr,
    client_ids: &[String],
    sizes: &Sizes,
    stop: &Arc<AtomicBool>,
    tally: &Arc<FloodTally>,
) -> Vec<std::thread::JoinHandle<()>> {
    let ready = Arc::new(Barrier::new(sizes.flood_connections + 1));
    let threads = (0..sizes.flood_connections)
        .map(|n| {
            let (runtime, ready, stop, tally) = (runtime.clone(), ready.clone(), stop.clone(), tally.clone());
            let client_ids = client_ids.to_vec();
            let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (n % usize::from(sizes.flood_addresses)) as u8));
            std::thread::spawn(move || {
                let mut connection =
                    Connection::open(&runtime, from, server).unwrap_or_else(|e| unreachable!("connect: {e}"));
                ready.wait();
                let mut attempt = n;
                while !stop.load(Ordering::Relaxed) {
                    let client_id = client_ids.get(attempt % client_ids.len()).cloned().unwrap_or_default();
                    let body = format!(
                        "grant_type=client_credentials&client_id={client_id}&client_secret=wrong-{attempt}"
                    );
                    let request = format!(
                        "POST /oauth/token HTTP/1.1\r\nHost: bench\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    attempt += 1;
                    let counter = match connection.exchange(request.as_bytes()) {
                        Ok((401, _)) => &tally.unauthorized,
                        Ok((429, _)) => &tally.too_many,
                        Ok((503, _)) => &tally.busy,
                        Ok(_) => &tally.other,
                        Err(_) => {
                            tally.other.fetch_add(1, Ordering::Relaxed);
                            match Connection::open(&runtime, from, server) {
                                Ok(fresh) => connection = fresh,
                                Err(_) => return,
                            }
                            continue;
                        }
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    ready.wait();
    threads
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let flood_addresses =
        std::env::var("FLOOD_ADDRESSES").ok().and_then(|v| v.parse().ok()).filter(|n| (1..=200).contains(n));
    let suspect_checks = std::env::var("SUSPECT_CHECKS").ok().and_then(|v| v.parse().ok());
    let sizes = if full {
        Sizes {
            apps: 100,
            members: 200,
            legit_connections: 8,
            flood_connections: 64,
            flood_addresses: flood_addresses.unwrap_or(8),
            suspect_checks,
            warm_up: Duration::from_secs(1),
            measured: Duration::from_secs(10),
        }
    } else {
        Sizes {
            apps: 8,
            members: 20,
            legit_connections: 2,
            flood_connections: 64,
            flood_addresses: flood_addresses.unwrap_or(8),
            suspect_checks,
            warm_up: Duration::from_millis(50),
            measured: Duration::from_millis(400),
        }
    };
    let dir = std::env::temp_dir().join(format!("consentry-auth-flood-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::create_dir_all(&dir);
    let (service, token, client_ids) = world(&dir.join("bench.db"), &sizes);
    let ledger = Arc::new(
        consentry_ledger::Ledger::open(&dir.join("ledger"), consentry_ledger::LedgerOptions::default())
            .unwrap_or_else(|e| unreachable!("{e}")),
    );
    // The server, as `serve` runs it.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| unreachable!("{e}"));
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap_or_else(|e| unreachable!("{e}"));
    let server = listener.local_addr().unwrap_or_else(|e| unreachable!("{e}"));
    let state = ApiState::new(service.clone()).with_ledger(ledger.clone());
    let served = runtime.spawn(consentry_api::serve(listener, app(state), std::future::pending::<()>()));
    let handle = runtime.handle().clone();

    let alone = legit_phase(&handle, server, &token, &sizes);
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(FloodTally::default());
    let flood_started = WallClock::now();
    let flood = start_flood(&handle, server, &client_ids, &sizes, &stop, &tally);
    let flooded = legit_phase(&handle, server, &token, &sizes);
    stop.store(true, Ordering::Relaxed);
    for thread in flood {
        let _ = thread.join();
    }
    let flood_secs = flood_started.elapsed().as_secs_f64();
    served.abort();
    drop(runtime);

    let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let (unauthorized, too_many, busy, other) =
        (count(&tally.unauthorized), count(&tally.too_many), count(&tally.busy), count(&tally.other));
    let attempts = unauthorized + too_many + busy + other;
    // The flood was answered and throttled: within the first block, argon2 ran at most the
    // per-client-id limit for each client id (plus the checks that may be in flight).
    let limits = service.config().auth_limits.clone();
    let most_checks = sizes.apps as u64 * u64::from(limits.failures_per_client)
        + (limits.secret_checks_at_once + limits.secret_checks_waiting) as u64;
    assert!(flood_secs < limits.first_block.as_secs_f64());
    assert!(
        attempts > 0 && unauthorized <= most_checks && too_many + busy > 0,
        "401 {unauthorized} (at most {most_checks}), 429 {too_many}, 503 {busy}, other {other}"
    );
    assert_eq!(other, 0, "the flood got answers other than 401, 429 and 503");
    assert!(alone.requests > 0 && flooded.requests > 0);
    let stats = ledger.stats();
    let report = consentry_ledger::verify(ledger.dir(), &[]).unwrap_or_else(|e| unreachable!("{e}"));
    assert!(report.ok(), "{:?}", report.problem);

    println!(
        "auth flood: {} apps (client ids), group of {} members, GET /v1/groups/{{id}}?fields=name,member_count",
        sizes.apps, sizes.members
    );
    println!(
        "  legitimate app: {} keep-alive connections from 127.0.0.1; {:.1} s measured per phase after {:.1} s warm-up",
        sizes.legit_connections,
        sizes.measured.as_secs_f64(),
        sizes.warm_up.as_secs_f64()
    );
    println!(
        "  flood: {} connections from {} addresses (127.0.0.2 onwards), wrong secrets for all {} client ids",
        sizes.flood_connections, sizes.flood_addresses, sizes.apps
    );
    println!(
        "  limits: {} failures per client id, {} per address, {} suspect checks/s, {} check(s) at once, {} waiting",
        limits.failures_per_client,
        limits.failures_per_address,
        limits.suspect_checks_per_second,
        limits.secret_checks_at_once,
        limits.secret_checks_waiting
    );
    println!(
        "  alone:        {:>9.0} requests/s  p50 {:>7.2} ms  p99 {:>7.2} ms",
        alone.per_second,
        millis(alone.p50),
        millis(alone.p99)
    );
    println!(
        "  under flood:  {:>9.0} requests/s  p50 {:>7.2} ms  p99 {:>7.2} ms",
        flooded.per_second,
        millis(flooded.p50),
        millis(flooded.p99)
    );
    println!(
        "  flood answers: {:.0}/s ({attempts} in {flood_secs:.1} s): 401 (secret checked) {unauthorized}, 429 {too_many}, 503 {busy}",
        attempts as f64 / flood_secs
    );
    println!("  ledger: {} records, verified", stats.records);
    println!("  ratio (under flood / alone): {:.2} (target >= 0.8)", flooded.per_second / alone.per_second);
    let _ = std::fs::remove_dir_all(&dir);
}
