//! This node's id: `--node` (or `CONSENTRY_NODE`), else derived from the host name. It names
//! the node's ledger stream and the leases it takes in the store.

use anyhow::{Context, Result};
use consentry_types::NodeId;

/// The host's name as the kernel has it (empty when it cannot be read).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default()
}

/// The node id given, checked, or the one the host name gives.
pub fn node_id(given: Option<&str>) -> Result<NodeId> {
    match given {
        Some(text) => NodeId::parse(text).context("bad --node"),
        None => Ok(NodeId::from_host_name(&host_name())),
    }
}
