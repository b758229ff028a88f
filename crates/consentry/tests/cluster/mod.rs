//! Several real `consentry serve` processes behind a real HAProxy, for the tests of issue 9:
//! distinct `--node` ids, one ledger root, one store (a fresh PostgreSQL schema of
//! `CONSENTRY_TEST_POSTGRES` when set, else one SQLite data directory, saying so), and HAProxy
//! started on `deploy/haproxy.cfg` itself (the file the README shows), round robin,
//! health-checked on `/readyz` every 250 ms. Ports are picked free; every process is killed
//! however a test ends (on drop, and by the kernel through `setpriv --pdeathsig` if the test
//! process itself dies), and the directory is removed.

#![allow(dead_code, reason = "each test binary uses part of the harness")]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use consentry_loadgen::client::{Answer, Body, Connection};
use hyper::Method;

/// The HAProxy configuration the README shows.
pub const HAPROXY_CFG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/haproxy.cfg");

/// How often HAProxy checks `/readyz` in the tests.
pub const CHECK_INTER: &str = "250ms";

/// Where the store is.
#[derive(Debug, Clone)]
pub enum Backend {
    /// One PostgreSQL database (a fresh schema), given to every process as `CONSENTRY_STORE`;
    /// each node has a data directory of its own.
    Postgres(String),
    /// SQLite in one data directory every node shares (one machine).
    Sqlite,
}

impl Backend {
    /// PostgreSQL when `CONSENTRY_TEST_POSTGRES` is set (a fresh schema for this test), else a
    /// shared SQLite data directory, saying so.
    pub fn from_env(test: &str) -> Backend {
        match std::env::var("CONSENTRY_TEST_POSTGRES") {
            Ok(url) if !url.trim().is_empty() => Backend::Postgres(fresh_postgres(&url)),
            _ => {
                eprintln!(
                    "CONSENTRY_TEST_POSTGRES is not set: {test} runs its nodes on one shared SQLite data directory"
                );
                Backend::Sqlite
            }
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Backend::Postgres(_))
    }
}

/// A fresh schema of the test database, as an address whose connections use it.
fn fresh_postgres(url: &str) -> String {
    consentry_store_postgres::testing::fresh_schema(url).unwrap_or_else(|e| unreachable!("{e}"))
}

/// How the cluster runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub nodes: Vec<String>,
    /// `--drain-secs` of every node.
    pub drain_secs: u64,
    /// Start HAProxy in front (the tests skip when it is not installed).
    pub balancer: bool,
    /// More `serve` arguments for every node.
    pub serve_args: Vec<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            nodes: vec!["node-a".into(), "node-b".into()],
            drain_secs: 3,
            balancer: true,
            serve_args: Vec::new(),
        }
    }
}

/// One `consentry serve` process.
pub struct Node {
    pub name: String,
    pub data_dir: PathBuf,
    child: Option<Child>,
    pub addr: SocketAddr,
    /// Everything it printed on stdout so far.
    said: Arc<Mutex<Vec<String>>>,
    stderr: PathBuf,
}

impl Node {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn said(&self) -> Vec<String> {
        self.said.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

/// Nodes, HAProxy and the directory they work in; all stopped and removed on drop.
pub struct Cluster {
    pub dir: PathBuf,
    pub backend: Backend,
    pub ledger_root: PathBuf,
    /// The data directory the CLI commands use (with SQLite: the one every node shares).
    pub cli_data_dir: PathBuf,
    pub nodes: Vec<Node>,
    balancer: Option<Child>,
    pub balancer_addr: Option<SocketAddr>,
    pub operator_key: String,
    pub officer_key: String,
    options: Options,
}

/// Whether HAProxy can be run; says so when it cannot.
pub fn haproxy_installed(test: &str) -> bool {
    let found = Command::new("haproxy").arg("-v").stdout(Stdio::null()).stderr(Stdio::null()).status();
    if matches!(found, Ok(status) if status.success()) {
        true
    } else {
        eprintln!("haproxy is not installed: skipping {test} (CI installs it: `apt-get install haproxy`)");
        false
    }
}

fn setpriv_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// `program`, killed by the kernel when the thread that starts it ends (`setpriv
/// --pdeathsig KILL`, which execs it: the child's pid is the program's), where available.
fn guarded(program: &str) -> Command {
    if setpriv_available() {
        let mut command = Command::new("setpriv");
        command.args(["--pdeathsig", "KILL", "--", program]);
        command
    } else {
        Command::new(program)
    }
}

fn consentry_bin() -> &'static str {
    env!("CARGO_BIN_EXE_consentry")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| unreachable!("no free port: {e}"))
}

impl Cluster {
    /// Starts the nodes (and HAProxy), or `None` when HAProxy is wanted but not installed.
    pub fn start(test: &str, options: Options) -> Option<Cluster> {
        if options.balancer && !haproxy_installed(test) {
            return None;
        }
        let backend = Backend::from_env(test);
        let dir = std::env::temp_dir().join(format!("consentry-cluster-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| unreachable!("{}: {e}", dir.display()));
        let ledger_root = dir.join("ledger");
        let cli_data_dir = dir.join("data");
        let mut cluster = Cluster {
            dir,
            backend,
            ledger_root,
            cli_data_dir,
            nodes: Vec::new(),
            balancer: None,
            balancer_addr: None,
            operator_key: String::new(),
            officer_key: String::new(),
            options: options.clone(),
        };
        cluster.operator_key = cluster.make_key("operator", "cluster-operator");
        cluster.officer_key = cluster.make_key("privacy_officer", "cluster-officer");
        for name in &options.nodes {
            let node = cluster.spawn_node(name, "127.0.0.1:0");
            cluster.nodes.push(node);
        }
        if options.balancer {
            cluster.start_balancer();
        }
        Some(cluster)
    }

    /// `consentry` with the cluster's store and ledger root, and nothing else from the
    /// environment.
    pub fn consentry(&self) -> Command {
        self.consentry_with(Command::new(consentry_bin()))
    }

    fn consentry_with(&self, mut command: Command) -> Command {
        command
            .env("RUST_LOG", "warn")
            .env("CONSENTRY_LEDGER_ROOT", &self.ledger_root)
            .env_remove("CONSENTRY_NODE")
            .env_remove("CONSENTRY_DRAIN_SECS")
            .env_remove("CONSENTRY_METRICS_LISTEN")
            .env_remove("CONSENTRY_LOG_FORMAT")
            .env_remove("CONSENTRY_DATA_DIR")
            .env_remove("CONSENTRY_LISTEN")
            .env_remove("CONSENTRY_KEY")
            .env_remove("CONSENTRY_STORE");
        if let Backend::Postgres(url) = &self.backend {
            command.env("CONSENTRY_STORE", url);
        }
        command
    }

    /// Runs a CLI command on the cluster's store and ledger root (`--data-dir` added).
    pub fn cli(&self, args: &[&str]) -> Output {
        self.consentry()
            .args(args)
            .arg("--data-dir")
            .arg(&self.cli_data_dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| unreachable!("cannot run consentry: {e}"))
    }

    fn make_key(&self, role: &str, name: &str) -> String {
        let out = self.dir.join(format!("{name}.key"));
        let made =
            self.cli(&["keys", "create", "--role", role, "--name", name, "--out", &out.to_string_lossy()]);
        assert!(made.status.success(), "keys create: {}", String::from_utf8_lossy(&made.stderr));
        std::fs::read_to_string(&out).unwrap_or_else(|e| unreachable!("{e}")).trim().to_string()
    }

    fn node_data_dir(&self, name: &str) -> PathBuf {
        match self.backend {
            // Nothing but the database and the ledger root is shared.
            Backend::Postgres(_) => self.dir.join(format!("data-{name}")),
            Backend::Sqlite => self.cli_data_dir.clone(),
        }
    }

    fn spawn_node(&self, name: &str, listen: &str) -> Node {
        let data_dir = self.node_data_dir(name);
        let stderr = self.dir.join(format!("{name}.stderr"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr)
            .unwrap_or_else(|e| unreachable!("{}: {e}", stderr.display()));
        let mut child = self
            .consentry_with(guarded(consentry_bin()))
            .arg("serve")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--node", name, "--listen", listen, "--allow-local-webhooks"])
            .args(["--drain-secs", &self.options.drain_secs.to_string()])
            .args(&self.options.serve_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| unreachable!("cannot start consentry serve: {e}"));
        let said = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            let said = said.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split("listening on http://").nth(1) {
                        let _ = tx.send(rest.split_whitespace().next().unwrap_or_default().to_string());
                    }
                    if let Ok(mut said) = said.lock() {
                        said.push(line);
                    }
                }
            });
        }
        let addr = match rx.recv_timeout(Duration::from_secs(60)).ok().and_then(|a| a.parse().ok()) {
            Some(addr) => addr,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                unreachable!(
                    "node {name} did not start: {}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                );
            }
        };
        let node = Node { name: name.to_string(), data_dir, child: Some(child), addr, said, stderr };
        wait_ready(node.addr, &node.name);
        node
    }

    fn start_balancer(&mut self) {
        let config =
            std::fs::canonicalize(HAPROXY_CFG).unwrap_or_else(|e| unreachable!("{HAPROXY_CFG}: {e}"));
        let (first, second) = match (self.nodes.first(), self.nodes.get(1)) {
            (Some(a), Some(b)) => (a.addr.to_string(), b.addr.to_string()),
            (Some(a), None) => (a.addr.to_string(), a.addr.to_string()),
            _ => unreachable!("a balancer needs nodes"),
        };
        // The port is free when picked; if another process takes it first, pick again.
        for _ in 0..5 {
            let listen: SocketAddr =
                format!("127.0.0.1:{}", free_port()).parse().unwrap_or_else(|e| unreachable!("{e}"));
            let log = self.dir.join("haproxy.stderr");
            let log_file = std::fs::File::create(&log).unwrap_or_else(|e| unreachable!("{e}"));
            let mut child = guarded("haproxy")
                .args(["-db", "-f"])
                .arg(&config)
                .env("CONSENTRY_LB_LISTEN", listen.to_string())
                .env("CONSENTRY_NODE_1", &first)
                .env("CONSENTRY_NODE_2", &second)
                .env("CONSENTRY_CHECK_INTER", CHECK_INTER)
                .current_dir(&self.dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .unwrap_or_else(|e| unreachable!("cannot start haproxy: {e}"));
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(20) {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                if get_status(listen, "/readyz") == Some(200) {
                    self.balancer = Some(child);
                    self.balancer_addr = Some(listen);
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            eprintln!(
                "haproxy did not start on {listen}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        unreachable!("haproxy did not start");
    }

    /// HAProxy's address.
    pub fn balancer(&self) -> SocketAddr {
        self.balancer_addr.unwrap_or_else(|| unreachable!("the cluster has no balancer"))
    }

    pub fn node(&self, i: usize) -> &Node {
        self.nodes.get(i).unwrap_or_else(|| unreachable!("no node {i}"))
    }

    /// Sends SIGTERM to node `i` (it drains, seals a checkpoint and exits).
    pub fn terminate(&self, i: usize) {
        let pid = self.node(i).pid().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
    }

    /// SIGKILL: node `i` dies at once, whatever it was doing.
    pub fn kill(&mut self, i: usize) {
        if let Some(child) = self.nodes.get_mut(i).and_then(|n| n.child.as_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for node `i` to exit (at most `within`) and gives its exit status.
    pub fn wait_exit(&mut self, i: usize, within: Duration) -> ExitStatus {
        let name = self.node(i).name.clone();
        let child = self
            .nodes
            .get_mut(i)
            .and_then(|n| n.child.as_mut())
            .unwrap_or_else(|| unreachable!("no node {i}"));
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            assert!(started.elapsed() < within, "node {name} did not exit within {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts node `i` again: same id, data directory and address (so HAProxy takes it back
    /// after two good checks).
    pub fn restart(&mut self, i: usize) {
        let (name, addr) = (self.node(i).name.clone(), self.node(i).addr.to_string());
        self.kill(i);
        let node = self.spawn_node(&name, &addr);
        if let Some(slot) = self.nodes.get_mut(i) {
            *slot = node;
        }
    }

    /// `ledger verify` over every stream.
    pub fn ledger_verify(&self) -> Output {
        self.cli(&["ledger", "verify"])
    }

    /// Every record of the merged ledger: request id → the node whose stream holds it.
    pub fn ledger_requests(&self) -> HashMap<String, String> {
        let shown = self.cli(&["ledger", "show"]);
        assert!(shown.status.success(), "ledger show: {}", String::from_utf8_lossy(&shown.stderr));
        let mut requests = HashMap::new();
        for line in String::from_utf8_lossy(&shown.stdout).lines() {
            let node = line.split(':').next().unwrap_or_default().to_string();
            if let Some(id) = line.split(" request=").nth(1).and_then(|r| r.split(' ').next()) {
                requests.insert(id.to_string(), node);
            }
        }
        requests
    }

    /// What the nodes and HAProxy wrote on stderr (for failure messages).
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            out.push_str(&format!("--- {} stderr:\n{}\n", node.name, node.stderr()));
        }
        out.push_str(&format!(
            "--- haproxy stderr:\n{}\n",
            std::fs::read_to_string(self.dir.join("haproxy.stderr")).unwrap_or_default()
        ));
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(balancer) = self.balancer.as_mut() {
            let _ = balancer.kill();
            let _ = balancer.wait();
        }
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The status of a plain GET on a fresh connection, or `None` when nothing answered.
pub fn get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.split_whitespace().nth(1)?.parse().ok()
}

fn wait_ready(addr: SocketAddr, name: &str) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if get_status(addr, "/readyz") == Some(200) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    unreachable!("node {name} on {addr} never answered /readyz 200");
}

/// A blocking HTTP client over keep-alive connections, one per address.
pub struct Http {
    runtime: tokio::runtime::Runtime,
    connections: HashMap<SocketAddr, Connection>,
}

impl Default for Http {
    fn default() -> Http {
        Http::new()
    }
}

impl Http {
    pub fn new() -> Http {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| unreachable!("runtime: {e}"));
        Http { runtime, connections: HashMap::new() }
    }

    /// One request on `addr`'s keep-alive connection (opened again once if it broke).
    pub fn send(
        &mut self,
        addr: SocketAddr,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Body>,
    ) -> Answer {
        let bytes = body.map(|b| (b.media_type, b.bytes));
        for attempt in 0..2 {
            if !self.connections.contains_key(&addr) {
                let opened = self
                    .runtime
                    .block_on(Connection::open(addr))
                    .unwrap_or_else(|e| unreachable!("cannot connect to {addr}: {e}"));
                self.connections.insert(addr, opened);
            }
            let Some(connection) = self.connections.get_mut(&addr) else { continue };
            let body = bytes.clone().map(|(media_type, bytes)| Body { media_type, bytes });
            match self.runtime.block_on(connection.exchange(method.clone(), path, bearer, body)) {
                Ok(answer) => return answer,
                Err(e) if attempt == 0 => {
                    eprintln!("{method} {path} on {addr}: {e}; connecting again");
                    self.connections.remove(&addr);
                }
                Err(e) => unreachable!("{method} {path} on {addr}: {e}"),
            }
        }
        unreachable!("{method} {path} on {addr}: no answer")
    }

    /// A request that must succeed; its JSON answer (or null when it has no body).
    pub fn ok(
        &mut self,
        addr: SocketAddr,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Body>,
    ) -> serde_json::Value {
        let answer = self.send(addr, method.clone(), path, bearer, body);
        assert!(
            answer.status.is_success(),
            "{method} {path} on {addr}: {} {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
        serde_json::from_slice(&answer.body).unwrap_or(serde_json::Value::Null)
    }
}

/// The file's text, for the README comparison.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| unreachable!("{}: {e}", path.display()))
}
