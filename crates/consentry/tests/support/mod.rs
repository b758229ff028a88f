//! What the command's integration tests share: running `consentry` and starting a server.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The `consentry` binary under test, with a quiet log and no configuration from the environment.
pub fn consentry() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_consentry"));
    command
        .env("RUST_LOG", "error")
        .env("CONSENTRY_NODE", "test-node")
        .env("CONSENTRY_DRAIN_SECS", "0")
        .env_remove("CONSENTRY_METRICS_LISTEN")
        .env_remove("CONSENTRY_LOG_FORMAT")
        .env_remove("CONSENTRY_LEDGER_ROOT")
        .env_remove("CONSENTRY_DATA_DIR")
        .env_remove("CONSENTRY_LISTEN")
        .env_remove("CONSENTRY_ALLOW_LOCAL_WEBHOOKS")
        .env_remove("CONSENTRY_KEY")
        .env_remove("CONSENTRY_STORE")
        .env_remove("CONSENTRY_POOL_SIZE");
    command
}

/// Starts `consentry serve` on a free port; returns the child, its address, and what it said
/// before it was listening.
pub fn start_server(dir: &Path) -> (Child, String, Vec<String>) {
    start_server_with(dir, &[])
}

/// `start_server` with these environment variables set.
pub fn start_server_with(dir: &Path, env: &[(&str, &str)]) -> (Child, String, Vec<String>) {
    let mut child = consentry()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", dir.to_str().unwrap_or_default()])
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| unreachable!("{e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| unreachable!("no stdout"));
    let mut lines = BufReader::new(stdout).lines();
    let mut said = Vec::new();
    let mut addr = None;
    for line in lines.by_ref().take(5).map_while(Result::ok) {
        if let Some(rest) = line.split("listening on http://").nth(1) {
            addr = rest.split_whitespace().next().map(String::from);
            break;
        }
        said.push(line);
    }
    let addr = addr.unwrap_or_else(|| unreachable!("the server did not start: {said:?}"));
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr, said)
}
