//! The server under load: a `consentry serve` child process on a loopback address, in a data
//! directory of its own, with an operator key and a privacy-officer key made on the server.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::client::require_loopback;
use crate::LoadError;

/// A running `consentry serve`; killed (and its directory removed) when dropped.
pub struct Server {
    child: Child,
    address: SocketAddr,
    dir: PathBuf,
    /// An operator key (role operator), made on the server.
    pub operator_key: String,
    /// A privacy-officer key, made on the server by the same command line: outside the
    /// operator key's lineage, so it may waive proofs and approve.
    pub officer_key: String,
}

impl Server {
    /// Starts `binary serve` on `listen` (loopback only; port 0 picks one) in a new directory
    /// under `work` that is removed when the server is dropped; `serve_args` are added to the
    /// command line.
    pub fn start(
        binary: &Path,
        work: &Path,
        listen: SocketAddr,
        serve_args: &[String],
    ) -> Result<Server, LoadError> {
        let listen = require_loopback(listen)?;
        let dir = work.join(format!("consentry-load-{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| LoadError::Server(format!("{}: {e}", dir.display())))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| LoadError::Server(format!("{}: {e}", dir.display())))?;
        let data = dir.join("data");
        let operator_key = make_key(binary, &data, &dir.join("operator.key"), "operator", "load-operator")?;
        let officer_key =
            make_key(binary, &data, &dir.join("officer.key"), "privacy_officer", "load-officer")?;
        let mut child = Command::new(binary)
            .arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen")
            .arg(listen.to_string())
            // Developers' webhooks point at a closed loopback port: deliveries fail and retry,
            // and nothing leaves the machine (not even a name lookup).
            .arg("--allow-local-webhooks")
            .args(serve_args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| LoadError::Server(format!("cannot start {}: {e}", binary.display())))?;
        let address = match announced_address(&mut child) {
            Ok(address) => address,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let server = Server { child, address, dir, operator_key, officer_key };
        require_loopback(server.address)?;
        Ok(server)
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How many threads the server process has now (Linux: `/proc/PID/status`).
    pub fn threads(&self) -> Option<u64> {
        process_threads(self.child.id())
    }

    /// Bytes under the server's data directory's ledger.
    pub fn ledger_bytes(&self) -> u64 {
        dir_bytes(&self.dir.join("data").join("ledger"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `Threads:` of `/proc/PID/status`.
pub fn process_threads(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| line.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok())
}

/// CPU time the process has used, user and system, in seconds (Linux: `/proc/PID/stat`,
/// in clock ticks of 1/100 s, as `USER_HZ` is on Linux).
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: count fields after it.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    // Fields 14 and 15 of the line (utime, stime) are the 12th and 13th after the name.
    Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn make_key(binary: &Path, data: &Path, out: &Path, role: &str, name: &str) -> Result<String, LoadError> {
    let made = Command::new(binary)
        .args(["keys", "create", "--role", role, "--name", name, "--out"])
        .arg(out)
        .arg("--data-dir")
        .arg(data)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LoadError::Server(format!("cannot run {}: {e}", binary.display())))?;
    if !made.status.success() {
        return Err(LoadError::Server(format!(
            "`consentry keys create --role {role}` failed: {}",
            String::from_utf8_lossy(&made.stderr).trim()
        )));
    }
    let key =
        std::fs::read_to_string(out).map_err(|e| LoadError::Server(format!("{}: {e}", out.display())))?;
    Ok(key.trim().to_string())
}

/// Reads the server's output until it says where it listens (within a minute); the rest of
/// its output is read and dropped so that it never blocks on a full pipe.
fn announced_address(child: &mut Child) -> Result<SocketAddr, LoadError> {
    let stdout = child.stdout.take().ok_or_else(|| LoadError::Server("no output from the server".into()))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !sent {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let address = rest.split_whitespace().next().unwrap_or_default().to_string();
                    sent = tx.send(address).is_ok();
                }
            }
        }
    });
    let announced = rx
        .recv_timeout(Duration::from_secs(60))
        .map_err(|_| LoadError::Server("the server did not say where it listens within 60 s".into()))?;
    announced
        .parse()
        .map_err(|_| LoadError::Server(format!("the server announced an unreadable address: {announced}")))
}
