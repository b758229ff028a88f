//! Where webhooks may be sent: a developer's endpoint must be a public https address, never
//! the platform's own network (loopback, private, link-local, cloud metadata, …), however the
//! URL spells it. Checked when a developer registers the URL and again, after resolving the
//! host, at every delivery (the deliverer then connects to exactly the addresses checked).
//!
//! URLs are read with the `url` crate (the WHATWG parser browsers use), so `0x7f.1`,
//! `2130706433`, `127.1`, `%31%32%37.0.0.1` and `127.0.0.1.` are all the address 127.0.0.1,
//! and `good.example@127.0.0.1` is the host 127.0.0.1. Addresses are judged with the standard
//! library's IP types; IPv4 addresses embedded in IPv6 (mapped, NAT64, 6to4) are judged as
//! the IPv4 address they reach.
//!
//! Name resolution is behind [`HostResolver`], which the service is given: this crate does no
//! network I/O of its own. Without a resolver, names are not looked up at registration and
//! cannot be delivered to (a `dns_failed` delivery), so a forgotten resolver fails closed.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use url::{Host, Url};

use crate::{Service, ServiceError, ServiceResult};

/// Resolves a host name to the addresses a connection would go to.
pub trait HostResolver: Send + Sync {
    /// Every address `host` resolves to now (for a connection to `port`).
    fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<IpAddr>>;
}

/// Why a webhook URL is not a target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Not an absolute http(s) URL (a 400 at registration).
    #[error("{0}")]
    Malformed(String),
    /// A well-formed URL whose target is refused (a 422 at registration).
    #[error("{0}")]
    Refused(String),
    /// The host name does not resolve, or there is no resolver.
    #[error("the webhook host does not resolve")]
    Unresolved,
}

/// A webhook URL checked for one delivery: connect only to `addresses`, on `port`, while
/// sending `url` (its host stays the Host header and the TLS server name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedTarget {
    /// The URL as parsed and normalized.
    pub url: String,
    pub port: u16,
    /// Every address the host resolved to, each one checked.
    pub addresses: Vec<IpAddr>,
}

/// The rule for webhook targets, and the resolver it looks names up with.
#[derive(Clone)]
pub struct WebhookTargets {
    allow_local: bool,
    resolver: Option<Arc<dyn HostResolver>>,
}

impl fmt::Debug for WebhookTargets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookTargets")
            .field("allow_local", &self.allow_local)
            .field("resolver", &self.resolver.is_some())
            .finish()
    }
}

impl Default for WebhookTargets {
    fn default() -> WebhookTargets {
        WebhookTargets::strict()
    }
}

/// What a parsed URL names as its host.
enum Target {
    Address(IpAddr),
    Name(String),
}

impl WebhookTargets {
    /// Public https endpoints only, and no resolver (names cannot be delivered to).
    pub fn strict() -> WebhookTargets {
        WebhookTargets { allow_local: false, resolver: None }
    }

    /// Names are resolved with `resolver`, at registration and at each delivery.
    pub fn with_resolver(mut self, resolver: Arc<dyn HostResolver>) -> WebhookTargets {
        self.resolver = Some(resolver);
        self
    }

    /// For local development, tests and the demo: also allow loopback addresses, the name
    /// `localhost`, and plain `http://`. Private, link-local and metadata addresses stay refused.
    pub fn allow_local(mut self, allow: bool) -> WebhookTargets {
        self.allow_local = allow;
        self
    }

    pub fn allows_local(&self) -> bool {
        self.allow_local
    }

    /// The check made when a developer registers `raw`: the URL is well formed, and neither its
    /// literal address nor any address its name resolves to now is refused. A name that does
    /// not resolve now is accepted: every delivery checks it again.
    pub fn check_registration(&self, raw: &str) -> Result<(), TargetError> {
        let (url, target) = self.parse(raw)?;
        match target {
            Target::Address(address) => self.check_address(address, None),
            Target::Name(name) => {
                self.check_name(&name)?;
                let port = url.port_or_known_default().unwrap_or(443);
                let resolved = match &self.resolver {
                    Some(resolver) => resolver.resolve(&name, port).unwrap_or_default(),
                    None => Vec::new(),
                };
                resolved.into_iter().try_for_each(|address| self.check_address(address, Some(&name)))
            }
        }
    }

    /// The check made at each delivery: resolves the host once and checks every address; the
    /// caller connects to those addresses and no others.
    pub fn resolve_for_delivery(&self, raw: &str) -> Result<CheckedTarget, TargetError> {
        let (url, target) = self.parse(raw)?;
        let port = url.port_or_known_default().unwrap_or(443);
        let (addresses, name) = match target {
            Target::Address(address) => (vec![address], None),
            Target::Name(name) => {
                self.check_name(&name)?;
                let resolver = self.resolver.as_ref().ok_or(TargetError::Unresolved)?;
                let addresses = resolver.resolve(&name, port).map_err(|_| TargetError::Unresolved)?;
                (addresses, Some(name))
            }
        };
        if addresses.is_empty() {
            return Err(TargetError::Unresolved);
        }
        let mut checked: Vec<IpAddr> = Vec::with_capacity(addresses.len());
        for address in addresses {
            self.check_address(address, name.as_deref())?;
            let address = address.to_canonical();
            if !checked.contains(&address) {
                checked.push(address);
            }
        }
        Ok(CheckedTarget { url: url.to_string(), port, addresses: checked })
    }

    fn parse(&self, raw: &str) -> Result<(Url, Target), TargetError> {
        let malformed = || TargetError::Malformed("webhook_url must be an absolute https URL".into());
        let url = Url::parse(raw).map_err(|_| malformed())?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_local => {}
            "http" => {
                return Err(TargetError::Refused(
                    "webhook_url must use https (plain http only with local webhooks allowed)".into(),
                ))
            }
            _ => return Err(malformed()),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(TargetError::Refused("webhook_url must not contain a user name or password".into()));
        }
        let target = match url.host() {
            Some(Host::Ipv4(address)) => Target::Address(IpAddr::V4(address)),
            Some(Host::Ipv6(address)) => Target::Address(IpAddr::V6(address)),
            // A trailing dot only says the name is absolute; the resolver is asked without it.
            Some(Host::Domain(name)) if !name.trim_end_matches('.').is_empty() => {
                Target::Name(name.trim_end_matches('.').to_string())
            }
            _ => return Err(malformed()),
        };
        Ok((url, target))
    }

    /// `localhost` and its subdomains are loopback by definition (RFC 6761), whatever DNS says.
    fn check_name(&self, name: &str) -> Result<(), TargetError> {
        if !self.allow_local && (name == "localhost" || name.ends_with(".localhost")) {
            return Err(TargetError::Refused(format!(
                "webhook_url's host {name} is a loopback name: webhooks go only to public addresses"
            )));
        }
        Ok(())
    }

    fn check_address(&self, address: IpAddr, name: Option<&str>) -> Result<(), TargetError> {
        match refused_address(address, self.allow_local) {
            None => Ok(()),
            Some(why) => Err(TargetError::Refused(match name {
                Some(name) => format!(
                    "webhook_url's host {name} resolves to {address}, {why}: webhooks go only to public addresses"
                ),
                None => {
                    format!("webhook_url points at {address}, {why}: webhooks go only to public addresses")
                }
            })),
        }
    }
}

const LOOPBACK: &str = "a loopback address";
const METADATA: &str = "a cloud metadata address";

/// Cloud instance metadata and platform endpoints: AWS, GCP, Azure, OpenStack
/// (169.254.169.254), AWS ECS (169.254.170.2), Alibaba (100.100.100.200), Azure's wire server
/// (168.63.129.16, a public address), Oracle (192.0.0.192).
const METADATA_V4: [Ipv4Addr; 5] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 170, 2),
    Ipv4Addr::new(100, 100, 100, 200),
    Ipv4Addr::new(168, 63, 129, 16),
    Ipv4Addr::new(192, 0, 0, 192),
];

/// AWS's IPv6 instance metadata endpoint.
const METADATA_V6: [Ipv6Addr; 1] = [Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)];

/// IPv4 ranges that are not a developer's public endpoint (IANA special-purpose registry),
/// most specific first.
const REFUSED_V4: [([u8; 4], u32, &str); 16] = [
    ([0, 0, 0, 0], 8, "an unspecified (\"this network\") address"),
    ([10, 0, 0, 0], 8, "a private address"),
    ([100, 64, 0, 0], 10, "a shared (carrier-grade NAT) address"),
    ([127, 0, 0, 0], 8, LOOPBACK),
    ([169, 254, 0, 0], 16, "a link-local address"),
    ([172, 16, 0, 0], 12, "a private address"),
    ([192, 0, 0, 0], 24, "an address reserved for protocol assignments"),
    ([192, 0, 2, 0], 24, "an address reserved for documentation"),
    ([192, 88, 99, 0], 24, "a deprecated 6to4 relay address"),
    ([192, 168, 0, 0], 16, "a private address"),
    ([198, 18, 0, 0], 15, "an address reserved for benchmarking"),
    ([198, 51, 100, 0], 24, "an address reserved for documentation"),
    ([203, 0, 113, 0], 24, "an address reserved for documentation"),
    ([224, 0, 0, 0], 4, "a multicast address"),
    ([255, 255, 255, 255], 32, "the broadcast address"),
    ([240, 0, 0, 0], 4, "a reserved address"),
];

/// IPv6 ranges refused besides everything outside global unicast (2000::/3).
const REFUSED_V6: [(u128, u32, &str); 10] = [
    (0, 96, "a deprecated IPv4-compatible address"),
    (0x0064_ff9b_0001 << 80, 48, "a local-use NAT64 address"),
    (0x0100 << 112, 64, "a discard-only address"),
    (0x2001 << 112, 23, "an address reserved for protocol assignments"),
    (0x2001_0db8 << 96, 32, "an address reserved for documentation"),
    (0x3fff << 112, 20, "an address reserved for documentation"),
    (0xfc00 << 112, 7, "a private (unique local) address"),
    (0xfe80 << 112, 10, "a link-local address"),
    (0xfec0 << 112, 10, "a deprecated site-local address"),
    (0xff00 << 112, 8, "a multicast address"),
];

fn in_v4(address: Ipv4Addr, network: [u8; 4], prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix.min(32)).unwrap_or(0);
    u32::from(address) & mask == u32::from(Ipv4Addr::from(network)) & mask
}

fn in_v6(address: Ipv6Addr, network: u128, prefix: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - prefix.min(128)).unwrap_or(0);
    u128::from(address) & mask == network & mask
}

/// Why `address` may not receive webhooks (`None`: it may). With `allow_loopback`, loopback
/// addresses (127.0.0.0/8, ::1 and their mapped forms) are allowed; nothing else is.
pub fn refused_address(address: IpAddr, allow_loopback: bool) -> Option<&'static str> {
    match address {
        IpAddr::V4(v4) => refused_v4(v4, allow_loopback),
        IpAddr::V6(v6) => refused_v6(v6, allow_loopback),
    }
}

fn refused_v4(address: Ipv4Addr, allow_loopback: bool) -> Option<&'static str> {
    if METADATA_V4.contains(&address) {
        return Some(METADATA);
    }
    if allow_loopback && address.is_loopback() {
        return None;
    }
    REFUSED_V4.iter().find(|(network, prefix, _)| in_v4(address, *network, *prefix)).map(|(_, _, why)| *why)
}

fn refused_v6(address: Ipv6Addr, allow_loopback: bool) -> Option<&'static str> {
    // ::ffff:a.b.c.d reaches a.b.c.d.
    if let Some(v4) = address.to_ipv4_mapped() {
        return refused_v4(v4, allow_loopback);
    }
    if address.is_loopback() {
        return (!allow_loopback).then_some(LOOPBACK);
    }
    if address.is_unspecified() {
        return Some("the unspecified address");
    }
    if METADATA_V6.contains(&address) {
        return Some(METADATA);
    }
    let bits = u128::from(address);
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) reach the IPv4 address they embed; through a
    // gateway, so even loopback is refused there.
    if in_v6(address, 0x0064_ff9b << 96, 96) {
        return refused_v4(Ipv4Addr::from((bits & 0xffff_ffff) as u32), false);
    }
    if in_v6(address, 0x2002 << 112, 16) {
        return refused_v4(Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32), false);
    }
    if let Some((_, _, why)) =
        REFUSED_V6.iter().find(|(network, prefix, _)| in_v6(address, *network, *prefix))
    {
        return Some(why);
    }
    if !in_v6(address, 0x2000 << 112, 3) {
        return Some("not a global unicast address");
    }
    None
}

impl Service {
    /// The same service, judging webhook targets by `targets` (the default is
    /// [`WebhookTargets::strict`]).
    pub fn with_webhook_targets(mut self, targets: WebhookTargets) -> Service {
        self.webhook_targets = targets;
        self
    }

    /// The rule webhook URLs are judged by, at registration and at delivery.
    pub fn webhook_targets(&self) -> &WebhookTargets {
        &self.webhook_targets
    }

    /// Checks a developer's webhook URL at registration: 400 if it is not an http(s) URL, 422
    /// if its target is refused.
    pub(crate) fn check_webhook_url(&self, value: &str) -> ServiceResult<()> {
        match self.webhook_targets.check_registration(value) {
            Ok(()) => Ok(()),
            Err(TargetError::Malformed(why)) => Err(ServiceError::InvalidInput(why)),
            Err(TargetError::Refused(why)) => Err(ServiceError::Rejected(why)),
            Err(TargetError::Unresolved) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v6_embedding(v4: Ipv4Addr) -> [Ipv6Addr; 3] {
        let bits = u128::from(u32::from(v4));
        [
            v4.to_ipv6_mapped(),
            Ipv6Addr::from((0x0064_ff9b << 96) | bits),
            Ipv6Addr::from((0x2002 << 112) | (bits << 80)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4_096))]

        /// An IPv4 address is judged the same however IPv6 embeds it.
        #[test]
        fn embedded_ipv4_is_judged_as_the_ipv4_address(raw in any::<u32>()) {
            let v4 = Ipv4Addr::from(raw);
            let [mapped, nat64, six_to_four] = v6_embedding(v4);
            let direct = refused_v4(v4, false);
            prop_assert_eq!(refused_v6(mapped, false), direct);
            prop_assert_eq!(refused_v6(nat64, false).is_some(), direct.is_some());
            prop_assert_eq!(refused_v6(six_to_four, false).is_some(), direct.is_some());
        }

        /// Allowing loopback allows exactly loopback, nothing else.
        #[test]
        fn allowing_loopback_changes_only_loopback(raw in any::<u32>(), raw6 in any::<u128>()) {
            let v4 = Ipv4Addr::from(raw);
            let changed = refused_v4(v4, true) != refused_v4(v4, false);
            prop_assert_eq!(changed, v4.is_loopback() && !METADATA_V4.contains(&v4));
            let v6 = Ipv6Addr::from(raw6);
            let changed = refused_v6(v6, true) != refused_v6(v6, false);
            prop_assert_eq!(changed, v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|m| m.is_loopback()));
        }

        /// Whatever the standard library calls private, loopback, link-local, multicast,
        /// broadcast, documentation or unspecified is refused.
        #[test]
        fn what_std_knows_as_special_is_refused(raw in any::<u32>(), raw6 in any::<u128>()) {
            let v4 = Ipv4Addr::from(raw);
            let special = v4.is_private() || v4.is_loopback() || v4.is_link_local() || v4.is_multicast()
                || v4.is_broadcast() || v4.is_documentation() || v4.is_unspecified();
            if special {
                prop_assert!(refused_v4(v4, false).is_some(), "{v4}");
            }
            let v6 = Ipv6Addr::from(raw6);
            let special = v6.is_loopback() || v6.is_multicast() || v6.is_unspecified()
                || v6.is_unique_local() || v6.is_unicast_link_local();
            if special {
                prop_assert!(refused_v6(v6, false).is_some(), "{v6}");
            }
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for address in
            ["93.184.215.14", "8.8.8.8", "1.1.1.1", "172.32.0.1", "2606:4700:4700::1111", "2a00:1450::1"]
        {
            let address: IpAddr = address.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            assert_eq!(refused_address(address, false), None, "{address}");
        }
    }

    #[test]
    fn metadata_addresses_are_named_and_stay_refused_with_local_allowed() {
        for address in ["169.254.169.254", "::ffff:169.254.169.254", "fd00:ec2::254", "100.100.100.200"] {
            let address: IpAddr = address.parse().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
            assert_eq!(refused_address(address, true), Some(METADATA), "{address}");
        }
    }
}
