//! The world the load runs on, built through the platform API of the server it drives:
//! groups of Zipf-distributed sizes, apps of several developers installed across groups, opt-in
//! rates of 3–15% per app, posts, the 2018 rules active, and one token per app.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hyper::Method;
use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::client::{Body, Connection};
use crate::LoadError;

const GROUPS_2018: &str = include_str!("../../../policies/groups-2018.cedar");

/// The world's parameters; printed with every result.
#[derive(Debug, Clone)]
pub struct WorldSize {
    pub members: usize,
    pub groups: usize,
    /// Group `i` (from 0) gets a share of memberships proportional to `1 / (i + 1)^zipf`.
    pub zipf: f64,
    /// Memberships per member on average.
    pub memberships_per_member: f64,
    pub apps: usize,
    /// Each app is installed in this share of the groups (at least one).
    pub installed_share: f64,
    pub posts_per_group: usize,
    pub seed: u64,
}

impl WorldSize {
    /// What `cargo bench` and the binary run by default.
    pub fn full() -> WorldSize {
        WorldSize {
            members: 5_000,
            groups: 60,
            zipf: 1.0,
            memberships_per_member: 1.6,
            apps: 24,
            installed_share: 0.25,
            posts_per_group: 5,
            seed: 12,
        }
    }

    /// What the bench runs under `cargo test`.
    pub fn small() -> WorldSize {
        WorldSize {
            members: 300,
            groups: 6,
            zipf: 1.0,
            memberships_per_member: 1.5,
            apps: 4,
            installed_share: 0.5,
            posts_per_group: 3,
            seed: 12,
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "{} members, {} groups (Zipf s={}, {:.1} memberships a member), {} apps of {} developers each installed in {:.0}% of groups, opt-in 3-15% per app, {} posts a group, policy groups-2018, seed {}",
            self.members,
            self.groups,
            self.zipf,
            self.memberships_per_member,
            self.apps,
            developers(self.apps),
            self.installed_share * 100.0,
            self.posts_per_group,
            self.seed
        )
    }
}

fn developers(apps: usize) -> usize {
    apps.div_ceil(2).max(1)
}

/// An app's view: its token and a group it is installed in.
#[derive(Debug, Clone)]
pub struct Reader {
    pub app: String,
    pub token: String,
    pub group: String,
    pub group_size: usize,
}

/// What was built.
#[derive(Debug, Clone)]
pub struct World {
    /// Every installation, as the app that reads through it.
    pub readers: Vec<Reader>,
    pub memberships: usize,
    pub consents: usize,
    pub largest_group: usize,
    pub platform_requests: usize,
}

fn member_id(i: usize) -> String {
    format!("m-{i:06}")
}

fn group_id(i: usize) -> String {
    format!("g-{i:04}")
}

/// A platform write, for [`run_all`].
struct Write {
    method: Method,
    path: String,
    body: Body,
}

fn put(path: String, body: serde_json::Value) -> Write {
    Write { method: Method::PUT, path, body: Body::json(&body) }
}

/// Sends `writes` over `connections` keep-alive connections; every one must succeed.
async fn run_all(
    address: SocketAddr,
    key: &str,
    writes: Vec<Write>,
    connections: usize,
) -> Result<usize, LoadError> {
    let count = writes.len();
    let queue = Arc::new(Mutex::new(VecDeque::from(writes)));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections.max(1) {
        let (queue, key) = (queue.clone(), key.to_string());
        tasks.spawn(async move {
            let mut connection = Connection::open(address).await?;
            loop {
                let next =
                    queue.lock().map_err(|_| LoadError::Setup("a setup task failed".into()))?.pop_front();
                let Some(write) = next else { return Ok::<(), LoadError>(()) };
                connection.expect_json(write.method, &write.path, Some(&key), Some(write.body)).await?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| LoadError::Setup(format!("a setup task failed: {e}")))??;
    }
    Ok(count)
}

/// Builds the world in the server at `address` with its operator and privacy-officer keys.
pub async fn build(
    address: SocketAddr,
    operator: &str,
    officer: &str,
    size: &WorldSize,
) -> Result<World, LoadError> {
    let mut rng = StdRng::seed_from_u64(size.seed);
    let parallel = 8;
    let mut requests = 0;
    // Members and groups.
    let members: Vec<Write> = (0..size.members)
        .map(|i| {
            put(
                format!("/platform/v1/members/{}", member_id(i)),
                json!({"name": format!("Member {i}"), "picture_url": format!("https://pictures.example/{i}.jpg")}),
            )
        })
        .collect();
    requests += run_all(address, operator, members, parallel).await?;
    let groups: Vec<Write> = (0..size.groups)
        .map(|g| put(format!("/platform/v1/groups/{}", group_id(g)), json!({"name": format!("Group {g}")})))
        .collect();
    requests += run_all(address, operator, groups, parallel).await?;
    // Memberships: Zipf-distributed group sizes, members drawn at random; the first is the admin.
    let weights: Vec<f64> = (0..size.groups).map(|g| 1.0 / ((g + 1) as f64).powf(size.zipf)).collect();
    let total_weight: f64 = weights.iter().sum();
    let total = size.members as f64 * size.memberships_per_member;
    let mut rosters: Vec<Vec<usize>> = Vec::with_capacity(size.groups);
    let mut writes = Vec::new();
    for (g, weight) in weights.iter().enumerate() {
        let wanted =
            ((total * weight / total_weight).round() as usize).clamp(3.min(size.members), size.members);
        let roster: Vec<usize> = sample(&mut rng, size.members, wanted).into_vec();
        for (k, m) in roster.iter().enumerate() {
            let role = if k == 0 { "admin" } else { "member" };
            writes.push(put(
                format!("/platform/v1/groups/{}/members/{}", group_id(g), member_id(*m)),
                json!({"role": role}),
            ));
        }
        rosters.push(roster);
    }
    let memberships = writes.len();
    let largest_group = rosters.iter().map(Vec::len).max().unwrap_or(0);
    requests += run_all(address, operator, writes, parallel).await?;
    // Posts by members of the group.
    let mut writes = Vec::new();
    for (g, roster) in rosters.iter().enumerate() {
        for p in 0..size.posts_per_group {
            let author = roster.get(rng.gen_range(0..roster.len().max(1))).copied().unwrap_or(0);
            writes.push(put(
                format!("/platform/v1/groups/{}/posts/p-{g:04}-{p:03}", group_id(g)),
                json!({"author": member_id(author), "content": format!("post {p} of group {g}")}),
            ));
        }
    }
    requests += run_all(address, operator, writes, parallel).await?;
    // Developers (webhooks to a closed loopback port) and their apps.
    let mut writes = Vec::new();
    for d in 0..developers(size.apps) {
        writes.push(put(
            format!("/platform/v1/developers/dev-{d:03}"),
            json!({"name": format!("Developer {d}"), "contact_email": format!("privacy@dev-{d}.example"), "webhook_url": "http://127.0.0.1:9/hook"}),
        ));
    }
    requests += run_all(address, operator, writes, parallel).await?;
    let mut connection = Connection::open(address).await?;
    let mut apps = Vec::new();
    for a in 0..size.apps {
        let category = ["social_media_management", "analytics", "events", "games"]
            .get(a % 4)
            .copied()
            .unwrap_or("analytics");
        let created = connection
            .expect_json(
                Method::POST,
                "/platform/v1/apps",
                Some(operator),
                Some(Body::json(&json!({"developer": format!("dev-{:03}", a / 2), "name": format!("App {a}"), "category": category}))),
            )
            .await?;
        requests += 1;
        let field = |name: &str| created.get(name).and_then(|v| v.as_str()).unwrap_or_default().to_string();
        apps.push((field("id"), field("client_id"), field("client_secret")));
    }
    // Installations (authorized by the group's admin), spread so that every group has an app.
    let per_app = ((size.groups as f64 * size.installed_share).round() as usize).clamp(1, size.groups);
    let mut installed: BTreeSet<(usize, usize)> = BTreeSet::new();
    for a in 0..apps.len() {
        for g in sample(&mut rng, size.groups, per_app).into_iter() {
            installed.insert((a, g));
        }
    }
    for g in 0..size.groups {
        installed.insert((g % apps.len().max(1), g));
    }
    let mut writes = Vec::new();
    for (a, g) in &installed {
        let (Some((app, _, _)), Some(roster)) = (apps.get(*a), rosters.get(*g)) else { continue };
        let admin = roster.first().copied().unwrap_or(0);
        writes.push(put(
            format!("/platform/v1/groups/{}/installations/{app}", group_id(*g)),
            json!({"authorized_by": member_id(admin)}),
        ));
    }
    requests += run_all(address, operator, writes, parallel).await?;
    // Consents: each app's opt-in rate between 3% and 15% of the members it can see.
    let mut writes = Vec::new();
    for (a, (app, _, _)) in apps.iter().enumerate() {
        let rate = rng.gen_range(0.03..=0.15);
        let seen: BTreeSet<usize> = installed
            .iter()
            .filter(|(ia, _)| *ia == a)
            .filter_map(|(_, g)| rosters.get(*g))
            .flatten()
            .copied()
            .collect();
        for m in seen {
            if rng.gen_bool(rate) {
                writes.push(put(
                    format!("/platform/v1/members/{}/consents/{app}", member_id(m)),
                    json!({"scopes": ["profile"]}),
                ));
            }
        }
    }
    let consents = writes.len();
    requests += run_all(address, operator, writes, parallel).await?;
    // The 2018 rules: submitted by the operator, proofs waived and approved by the officer
    // (no solver needed), activated.
    let submitted = connection
        .expect_json(Method::POST, "/platform/v1/policies", Some(operator), Some(Body::text(GROUPS_2018)))
        .await?;
    let version = submitted.get("version").and_then(|v| v.as_u64()).unwrap_or(1);
    connection
        .expect_json(
            Method::POST,
            &format!("/platform/v1/policies/{version}/waivers"),
            Some(officer),
            Some(Body::json(&json!({"reason": "load test world: the shipped 2018 rules"}))),
        )
        .await?;
    connection
        .expect_json(Method::POST, &format!("/platform/v1/policies/{version}/approve"), Some(officer), None)
        .await?;
    connection
        .expect_json(
            Method::POST,
            &format!("/platform/v1/policies/{version}/activate"),
            Some(operator),
            Some(Body::json(&json!({"reason": "load test"}))),
        )
        .await?;
    requests += 4;
    // One token per app.
    let mut tokens = Vec::new();
    for (_, client_id, secret) in &apps {
        let token = connection
            .expect_json(
                Method::POST,
                "/oauth/token",
                None,
                Some(Body::form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id),
                    ("client_secret", secret),
                ])),
            )
            .await?;
        requests += 1;
        tokens.push(token.get("access_token").and_then(|t| t.as_str()).unwrap_or_default().to_string());
    }
    let mut readers: Vec<Reader> = installed
        .iter()
        .filter_map(|(a, g)| {
            Some(Reader {
                app: apps.get(*a)?.0.clone(),
                token: tokens.get(*a)?.clone(),
                group: group_id(*g),
                group_size: rosters.get(*g)?.len(),
            })
        })
        .collect();
    // Connections take readers in turn: spread them over apps and groups.
    rand::seq::SliceRandom::shuffle(readers.as_mut_slice(), &mut rng);
    Ok(World { readers, memberships, consents, largest_group, platform_requests: requests })
}
