//! The load itself: many keep-alive connections, each an app reading a group it is installed
//! in, one route at a time; latency per request, the server's ledger counters and threads.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;

use crate::client::Connection;
use crate::server::{process_cpu_seconds, process_threads};
use crate::world::{Reader, World};
use crate::LoadError;

/// What a phase requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /healthz`: no authentication, no decision, no disclosure: the HTTP stack's ceiling.
    Health,
    Group,
    Posts,
    /// `GET /v1/groups/{id}/members`, following each page's cursor to the end and starting over.
    Members,
}

impl Route {
    pub fn name(self) -> &'static str {
        match self {
            Route::Health => "GET /healthz",
            Route::Group => "GET /v1/groups/{id}",
            Route::Posts => "GET /v1/groups/{id}/posts",
            Route::Members => "GET /v1/groups/{id}/members",
        }
    }

    /// Whether every answered request appends one ledger record.
    pub fn records(self) -> bool {
        self != Route::Health
    }

    fn path(self, reader: &Reader, page: usize, cursor: Option<&str>) -> String {
        let group = &reader.group;
        match self {
            Route::Health => "/healthz".to_string(),
            Route::Group => format!("/v1/groups/{group}?fields=name,member_count"),
            Route::Posts => format!("/v1/groups/{group}/posts?fields=content,created_time,author&limit=25"),
            Route::Members => {
                let mut path = format!("/v1/groups/{group}/members?fields=name,picture&limit={page}");
                if let Some(cursor) = cursor {
                    path.push_str("&after=");
                    path.extend(form_urlencoded::byte_serialize(cursor.as_bytes()));
                }
                path
            }
        }
    }
}

/// How hard and how long.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub connections: usize,
    /// Each route is measured for at most this long…
    pub seconds: f64,
    /// …and at most this many requests.
    pub max_requests: u64,
    /// Unmeasured requests before each route's measurement, at most this long.
    pub warm_up_seconds: f64,
    /// Members a members page asks for.
    pub page: usize,
}

/// The server's ledger counters (`GET /platform/v1/ledger/stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LedgerCounters {
    pub records: u64,
    pub disclosures: u64,
    pub bytes: u64,
    pub syncs: u64,
}

/// One route's figures.
#[derive(Debug, Clone)]
pub struct PhaseReport {
    pub route: Route,
    pub connections: usize,
    /// Requests answered 2xx.
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub seconds: f64,
    /// Latency of answered requests, in milliseconds: p50, p99, p99.9, max.
    pub latency_ms: [f64; 4],
    /// Ledger records and syncs during the phase (None: the server does not say).
    pub ledger: Option<(u64, u64)>,
    /// Most threads the server process had while measured.
    pub threads: Option<u64>,
    /// CPU time the server process used while measured, in seconds: on a shared machine,
    /// CPU per request compares servers better than requests per second.
    pub server_cpu_seconds: Option<f64>,
}

impl PhaseReport {
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.seconds.max(1e-9)
    }

    pub fn records_per_sync(&self) -> Option<f64> {
        self.ledger.filter(|(_, syncs)| *syncs > 0).map(|(records, syncs)| records as f64 / syncs as f64)
    }
}

/// Reads the server's ledger counters with an operator key; `None` if it does not serve them.
pub async fn ledger_counters(address: SocketAddr, key: &str) -> Result<Option<LedgerCounters>, LoadError> {
    let mut connection = Connection::open(address).await?;
    let (status, body) = connection.send(Method::GET, "/platform/v1/ledger/stats", Some(key), None).await?;
    if status == hyper::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !status.is_success() {
        return Err(LoadError::Refused {
            request: "GET /platform/v1/ledger/stats".into(),
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let number = |name: &str| json.get(name).and_then(|v| v.as_u64()).unwrap_or(0);
    Ok(Some(LedgerCounters {
        records: number("records"),
        disclosures: number("disclosures"),
        bytes: number("bytes"),
        syncs: number("syncs"),
    }))
}

/// What one connection measured.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

/// The cursor in a members page's answer, if there is a next page.
fn next_cursor(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let rest = text.split("\"after\":\"").nth(1)?;
    rest.split('"').next().map(str::to_string)
}

async fn connection_loop(
    address: SocketAddr,
    route: Route,
    reader: Reader,
    page: usize,
    stop: Arc<AtomicBool>,
    budget: Arc<AtomicU64>,
) -> Tally {
    let mut tally = Tally::default();
    let mut connection = None;
    let mut cursor: Option<String> = None;
    while !stop.load(Ordering::Relaxed) {
        // The request budget is shared by every connection of the phase.
        if budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(1)).is_err() {
            break;
        }
        if connection.is_none() {
            match Connection::open(address).await {
                Ok(opened) => connection = Some(opened),
                Err(e) => {
                    tally.errors += 1;
                    tally.first_error.get_or_insert_with(|| e.to_string());
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(open) = connection.as_mut() else { continue };
        let path = route.path(&reader, page, cursor.as_deref());
        let bearer = (route != Route::Health).then_some(reader.token.as_str());
        let started = Instant::now();
        match open.send(Method::GET, &path, bearer, None).await {
            Ok((status, body)) if status.is_success() => {
                let micros = started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                tally.latencies_us.push(micros);
                if route == Route::Members {
                    cursor = next_cursor(&body);
                }
            }
            Ok((status, body)) => {
                tally.errors += 1;
                tally.first_error.get_or_insert_with(|| {
                    format!(
                        "{path}: {status} {}",
                        String::from_utf8_lossy(&body).chars().take(200).collect::<String>()
                    )
                });
                cursor = None;
            }
            Err(e) => {
                tally.errors += 1;
                tally.first_error.get_or_insert_with(|| format!("{path}: {e}"));
                connection = None;
                cursor = None;
            }
        }
    }
    tally
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted.get(rank - 1).map_or(0.0, |us| f64::from(*us) / 1000.0)
}

/// The server under load: where it listens, an operator key to read its counters with, and
/// its process id when it is a child of this one (for its thread count).
#[derive(Debug, Clone)]
pub struct Target {
    pub address: SocketAddr,
    pub operator: String,
    pub pid: Option<u32>,
}

/// Runs `route` on every connection for `seconds` or `max_requests`, whichever ends first.
async fn run_phase(
    target: &Target,
    world: &World,
    route: Route,
    options: &LoadOptions,
    seconds: f64,
    max_requests: u64,
) -> Result<PhaseReport, LoadError> {
    let (address, pid) = (target.address, target.pid);
    if world.readers.is_empty() {
        return Err(LoadError::Setup("the world has no installation to read through".into()));
    }
    let before = ledger_counters(address, &target.operator).await?;
    let cpu_before = pid.and_then(process_cpu_seconds);
    let stop = Arc::new(AtomicBool::new(false));
    let budget = Arc::new(AtomicU64::new(max_requests));
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    for k in 0..options.connections {
        let Some(reader) = world.readers.get(k % world.readers.len()).cloned() else { continue };
        tasks.spawn(connection_loop(address, route, reader, options.page, stop.clone(), budget.clone()));
    }
    let mut threads = pid.and_then(process_threads);
    let deadline = Duration::from_secs_f64(seconds);
    while started.elapsed() < deadline && budget.load(Ordering::Relaxed) > 0 {
        tokio::time::sleep(Duration::from_millis(50).min(deadline)).await;
        threads = threads.max(pid.and_then(process_threads));
    }
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let (mut errors, mut first_error) = (0, None);
    while let Some(done) = tasks.join_next().await {
        let tally = done.map_err(|e| LoadError::Setup(format!("a load task failed: {e}")))?;
        latencies.extend(tally.latencies_us);
        errors += tally.errors;
        first_error = first_error.or(tally.first_error);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = pid.and_then(process_cpu_seconds);
    let after = ledger_counters(address, &target.operator).await?;
    latencies.sort_unstable();
    let max = latencies.last().map_or(0.0, |us| f64::from(*us) / 1000.0);
    Ok(PhaseReport {
        route,
        connections: options.connections,
        ok: latencies.len() as u64,
        errors,
        first_error,
        seconds: elapsed,
        latency_ms: [
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            percentile(&latencies, 0.999),
            max,
        ],
        ledger: before
            .zip(after)
            .map(|(b, a)| (a.records.saturating_sub(b.records), a.syncs.saturating_sub(b.syncs))),
        threads,
        server_cpu_seconds: cpu_before.zip(cpu_after).map(|(b, a)| a - b),
    })
}

/// Warms `route` up, then measures it.
pub async fn measure(
    target: &Target,
    world: &World,
    route: Route,
    options: &LoadOptions,
) -> Result<PhaseReport, LoadError> {
    if options.warm_up_seconds > 0.0 {
        let warm_up = options.max_requests.div_ceil(10).max(options.connections as u64);
        run_phase(target, world, route, options, options.warm_up_seconds, warm_up).await?;
    }
    run_phase(target, world, route, options, options.seconds, options.max_requests).await
}

/// The figures as a table, each route's rate also as a share of the ceiling's.
pub fn table(phases: &[PhaseReport]) -> String {
    let ceiling = phases.iter().find(|p| p.route == Route::Health).map(PhaseReport::per_second);
    let mut out = format!(
        "{:<28} {:>5} {:>8} {:>6} {:>9} {:>8} {:>8} {:>8} {:>8} {:>10} {:>8} {:>7} {:>11}\n",
        "route",
        "conns",
        "answered",
        "errors",
        "req/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "rec/sync",
        "syncs/s",
        "threads",
        "cpu us/req"
    );
    for p in phases {
        let [p50, p99, p999, max] = p.latency_ms;
        let share = match (ceiling, p.route) {
            (Some(c), route) if route != Route::Health && c > 0.0 => {
                format!("  ({:.2} of the ceiling)", p.per_second() / c)
            }
            (_, Route::Health) => "  (ceiling: no decision, no disclosure)".to_string(),
            _ => String::new(),
        };
        out.push_str(&format!(
            "{:<28} {:>5} {:>8} {:>6} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>10} {:>8} {:>7} {:>11}{share}\n",
            p.route.name(),
            p.connections,
            p.ok,
            p.errors,
            p.per_second(),
            p50,
            p99,
            p999,
            max,
            p.records_per_sync().map_or("-".to_string(), |r| format!("{r:.1}")),
            p.ledger
                .map_or("-".to_string(), |(_, syncs)| format!("{:.0}", syncs as f64 / p.seconds.max(1e-9))),
            p.threads.map_or("-".to_string(), |t| t.to_string()),
            p.server_cpu_seconds.map_or("-".to_string(), |cpu| format!("{:.0}", cpu * 1e6 / p.ok.max(1) as f64)),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let sorted: Vec<u32> = (1..=1000).map(|ms| ms * 1000).collect();
        assert_eq!(percentile(&sorted, 0.5), 500.0);
        assert_eq!(percentile(&sorted, 0.99), 990.0);
        assert_eq!(percentile(&sorted, 0.999), 999.0);
        assert_eq!(percentile(&[7000], 0.999), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn the_cursor_is_read_from_the_paging_member() {
        assert_eq!(next_cursor(br#"{"data":[],"paging":{"after":"abc-_9"}}"#).as_deref(), Some("abc-_9"));
        assert_eq!(next_cursor(br#"{"data":[],"paging":{}}"#), None);
    }

    #[test]
    fn members_pages_carry_the_cursor_encoded() {
        let reader = Reader { app: "a".into(), token: "t".into(), group: "g-0001".into(), group_size: 3 };
        assert_eq!(
            Route::Members.path(&reader, 50, Some("a+b/c=")),
            "/v1/groups/g-0001/members?fields=name,picture&limit=50&after=a%2Bb%2Fc%3D"
        );
        assert_eq!(Route::Group.path(&reader, 50, None), "/v1/groups/g-0001?fields=name,member_count");
    }
}
