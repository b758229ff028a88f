//! The id of one serving node: it names the node's ledger stream (a directory), its
//! checkpoints, and the leases it holds in the store, so it is kept to a charset that is safe
//! as a file name on every file system and in a log line.

use std::fmt;

/// The longest node id.
pub const MAX_NODE_ID: usize = 63;

/// Names a node id may not take: directories a ledger root or a ledger stream already uses.
const RESERVED: &[&str] = &["damaged"];

/// A node id was empty, too long, reserved, or had characters outside `[a-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid node id {text:?}: use 1 to 63 characters from a-z 0-9 _ -, starting with a letter or digit{}", if *.reserved { " (and not a name the ledger uses itself)" } else { "" })]
pub struct InvalidNodeId {
    pub text: String,
    pub reserved: bool,
}

/// One serving node's id, e.g. `web-1`: lowercase letters, digits, `_` and `-`, starting
/// with a letter or digit, at most 63 characters (no dot, no slash: it is a directory name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(String);

impl NodeId {
    pub fn parse(text: &str) -> Result<NodeId, InvalidNodeId> {
        let shaped = !text.is_empty()
            && text.len() <= MAX_NODE_ID
            && text.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'));
        let reserved = RESERVED.contains(&text);
        if shaped && !reserved {
            Ok(NodeId(text.to_string()))
        } else {
            Err(InvalidNodeId { text: text.chars().take(80).collect(), reserved })
        }
    }

    /// The id a node takes from its host name when none is given: the first label
    /// (`web-1.example.com` is `web-1`), lowercased, every other character made `-`, cut to
    /// 63 characters; `node` when nothing usable is left.
    pub fn from_host_name(host: &str) -> NodeId {
        let label = host.trim().split('.').next().unwrap_or_default();
        let mut id: String =
            label
                .chars()
                .map(|c| c.to_ascii_lowercase())
                .map(|c| {
                    if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' {
                        c
                    } else {
                        '-'
                    }
                })
                .take(MAX_NODE_ID)
                .collect();
        while id.starts_with(['-', '_']) {
            id.remove(0);
        }
        NodeId::parse(&id).unwrap_or_else(|_| NodeId("node".to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_that_are_not_plain_directory_names_are_refused() {
        for bad in
            ["", ".", "..", "../x", "a/b", "a.b", "A", "-a", "_a", "a b", "é", "damaged", &"a".repeat(64)]
        {
            assert!(NodeId::parse(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["a", "web-1", "0", "node_7", &"a".repeat(63)] {
            assert_eq!(NodeId::parse(good).map(|n| n.to_string()), Ok(good.to_string()));
        }
    }

    #[test]
    fn host_names_become_their_first_label() {
        let from = |host: &str| NodeId::from_host_name(host).to_string();
        assert_eq!(from("web-1.example.com"), "web-1");
        assert_eq!(from("Web1"), "web1");
        assert_eq!(from("ip-10-0-0-7.ec2.internal"), "ip-10-0-0-7");
        assert_eq!(from("my host!"), "my-host-");
        assert_eq!(from(""), "node");
        assert_eq!(from("..."), "node");
        assert_eq!(from("---"), "node");
        assert_eq!(from("damaged"), "node");
        assert_eq!(from(&"x".repeat(100)).len(), 63);
    }

    proptest! {
        #[test]
        fn any_host_name_gives_a_valid_id(host in "\\PC{0,80}") {
            let id = NodeId::from_host_name(&host);
            prop_assert_eq!(NodeId::parse(id.as_str()), Ok(id.clone()));
        }
    }
}
