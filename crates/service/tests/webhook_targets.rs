//! Where a developer may point its webhook: never at the platform's own network (loopback,
//! private, link-local, metadata, …), however the address is spelled.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use consentry_service::{
    HostResolver, ServerKey, Service, ServiceConfig, ServiceError, SimulatedClock, WebhookTargets,
};
use consentry_store_sqlite::SqliteStore;
use consentry_types::{DeveloperId, Instant};

fn service() -> Service {
    let clock = Arc::new(SimulatedClock::starting_at(Instant::from_secs(1_700_000_000)));
    let store = Arc::new(SqliteStore::in_memory().unwrap_or_else(|e| unreachable!("{e}")));
    Service::new(store, clock, ServerKey::generate(), ServiceConfig::default())
}

fn register(service: &Service, url: &str) -> Result<(), ServiceError> {
    let dev = DeveloperId::parse("acme").unwrap_or_else(|e| unreachable!("{e}"));
    service.put_developer(&dev, "Acme", "p@acme.example", url)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Accepted,
    /// 422: a well-formed URL whose target is refused.
    Refused,
    /// 400: not an absolute http(s) URL at all.
    Malformed,
}

fn outcome(result: &Result<(), ServiceError>) -> Option<Expect> {
    match result {
        Ok(()) => Some(Expect::Accepted),
        Err(ServiceError::Rejected(_)) => Some(Expect::Refused),
        Err(ServiceError::InvalidInput(_)) => Some(Expect::Malformed),
        Err(_) => None,
    }
}

/// Every case that is not as expected, with what happened instead.
fn mismatches(service: &Service, cases: &[(&str, Expect)]) -> Vec<String> {
    cases
        .iter()
        .filter_map(|(url, expected)| {
            let result = register(service, url);
            (outcome(&result) != Some(*expected))
                .then(|| format!("{url}: expected {expected:?}, got {result:?}"))
        })
        .collect()
}

#[test]
fn literal_addresses_of_the_platforms_own_network_are_refused_however_spelled() {
    use Expect::Refused;
    let cases = [
        // Loopback, in every spelling a URL parser accepts.
        ("https://127.0.0.1/hook", Refused),
        ("https://127.0.0.1:8443/hook", Refused),
        ("https://127.1/", Refused),
        ("https://0x7f.1/", Refused),
        ("https://0x7F000001/", Refused),
        ("https://2130706433/", Refused),
        ("https://0177.0.0.1/", Refused),
        ("https://127.0.0.1./", Refused),
        ("https://%31%32%37.0.0.1/", Refused),
        ("https://127.000.000.001/", Refused),
        ("https://[::1]/", Refused),
        ("https://[0:0:0:0:0:0:0:1]/", Refused),
        ("https://[::ffff:127.0.0.1]/", Refused),
        ("https://[::ffff:7f00:1]/", Refused),
        ("https://[::127.0.0.1]/", Refused),
        ("https://[64:ff9b::127.0.0.1]/", Refused),
        ("https://[2002:7f00:1::1]/", Refused),
        ("https://localhost/", Refused),
        ("https://LOCALHOST./", Refused),
        ("https://api.localhost/", Refused),
        // Userinfo tricks: the host is what follows the @.
        ("https://good.example@127.0.0.1/", Refused),
        ("https://good.example:pw@10.0.0.1/", Refused),
        // Unspecified, broadcast, multicast.
        ("https://0.0.0.0/", Refused),
        ("https://0/", Refused),
        ("https://[::]/", Refused),
        ("https://255.255.255.255/", Refused),
        ("https://224.0.0.1/", Refused),
        ("https://[ff02::1]/", Refused),
        // Private (RFC 1918), unique local, carrier-grade NAT.
        ("https://10.0.0.1/", Refused),
        ("https://10.255.255.255/", Refused),
        ("https://172.16.0.1/", Refused),
        ("https://172.31.255.254/", Refused),
        ("https://192.168.1.1/", Refused),
        ("https://[::ffff:192.168.1.1]/", Refused),
        ("https://[fc00::1]/", Refused),
        ("https://[fd12:3456::1]/", Refused),
        ("https://100.64.0.1/", Refused),
        ("https://100.127.255.254/", Refused),
        // Link-local and cloud metadata.
        ("https://169.254.0.1/", Refused),
        ("https://169.254.169.254/latest/meta-data/", Refused),
        ("https://[::ffff:169.254.169.254]/", Refused),
        ("https://[fd00:ec2::254]/", Refused),
        ("https://[fe80::1]/", Refused),
        ("https://100.100.100.200/", Refused),
        ("https://168.63.129.16/", Refused),
        // Documentation, benchmarking and reserved ranges: not anybody's endpoint.
        ("https://192.0.2.1/", Refused),
        ("https://198.51.100.7/", Refused),
        ("https://203.0.113.9/", Refused),
        ("https://198.18.0.1/", Refused),
        ("https://192.0.0.8/", Refused),
        ("https://240.0.0.1/", Refused),
        ("https://[2001:db8::1]/", Refused),
        ("https://[3fff::1]/", Refused),
        ("https://[2001::1]/", Refused),
        ("https://[100::1]/", Refused),
        ("https://[fec0::1]/", Refused),
    ];
    let service = service();
    let wrong = mismatches(&service, &cases);
    assert!(wrong.is_empty(), "{} of {} cases wrong:\n{}", wrong.len(), cases.len(), wrong.join("\n"));
}

#[test]
fn public_https_endpoints_are_accepted_and_other_urls_are_malformed_or_refused() {
    use Expect::{Accepted, Malformed, Refused};
    let cases = [
        ("https://acme.example/hook", Accepted),
        ("https://Acme.Example:8443/hooks/consentry?v=1", Accepted),
        ("https://93.184.215.14/hook", Accepted),
        ("https://8.8.8.8:8443/x", Accepted),
        ("https://[2606:4700:4700::1111]/hook", Accepted),
        ("https://[::ffff:8.8.8.8]/hook", Accepted),
        ("https://172.32.0.1/", Accepted),
        ("https://100.128.0.1/", Accepted),
        // Plain http is refused unless local webhooks are allowed.
        ("http://acme.example/hook", Refused),
        ("HTTP://acme.example/hook", Refused),
        // Credentials in the URL would be sent along: refused.
        ("https://user:secret@acme.example/hook", Refused),
        ("ftp://acme.example/hook", Malformed),
        ("javascript:alert(1)", Malformed),
        ("acme.example/hook", Malformed),
        ("https://", Malformed),
        ("https://exa mple.com/", Malformed),
        ("https://[::1/", Malformed),
        ("https://256.256.256.256/", Malformed),
        ("", Malformed),
    ];
    let service = service();
    let wrong = mismatches(&service, &cases);
    assert!(wrong.is_empty(), "{} of {} cases wrong:\n{}", wrong.len(), cases.len(), wrong.join("\n"));
}

/// Answers from a fixed table, as a DNS server under test would.
struct Table(HashMap<&'static str, Vec<IpAddr>>);

impl HostResolver for Table {
    fn resolve(&self, host: &str, _port: u16) -> std::io::Result<Vec<IpAddr>> {
        self.0
            .get(host)
            .cloned()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such name"))
    }
}

fn resolving(targets: WebhookTargets, table: &[(&'static str, &[&str])]) -> Service {
    let table = table
        .iter()
        .map(|(name, addresses)| {
            (*name, addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()).collect::<Vec<_>>())
        })
        .collect();
    service().with_webhook_targets(targets.with_resolver(Arc::new(Table(table))))
}

#[test]
fn names_that_resolve_to_the_platforms_own_network_are_refused_at_registration() {
    use Expect::{Accepted, Refused};
    let service = resolving(
        WebhookTargets::strict(),
        &[
            ("public.example", &["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]),
            ("internal.acme.example", &["10.0.0.5"]),
            ("metadata.google.internal", &["169.254.169.254"]),
            ("mostly-public.example", &["93.184.215.14", "127.0.0.1"]),
            ("mapped.example", &["::ffff:192.168.0.1"]),
            ("ula.example", &["fd00:ec2::254"]),
            ("localhost", &["93.184.215.14"]),
        ],
    );
    let cases = [
        ("https://public.example/hook", Accepted),
        ("https://PUBLIC.example./hook", Accepted),
        ("https://internal.acme.example/hook", Refused),
        ("https://INTERNAL.acme.example./hook", Refused),
        ("https://internal%2Eacme.example/hook", Refused),
        ("https://metadata.google.internal/computeMetadata/v1/", Refused),
        // One bad address among good ones is enough to refuse.
        ("https://mostly-public.example/hook", Refused),
        ("https://mapped.example/hook", Refused),
        ("https://ula.example/hook", Refused),
        // localhost is loopback whatever a resolver says.
        ("https://localhost/hook", Refused),
        // Does not resolve now: accepted, and checked again at every delivery.
        ("https://not-yet.example/hook", Accepted),
    ];
    let wrong = mismatches(&service, &cases);
    assert!(wrong.is_empty(), "{} of {} cases wrong:\n{}", wrong.len(), cases.len(), wrong.join("\n"));
    // The reason is said plainly.
    assert_eq!(
        register(&service, "https://internal.acme.example/hook"),
        Err(ServiceError::Rejected(
            "webhook_url's host internal.acme.example resolves to 10.0.0.5, a private address: webhooks go only to public addresses".into()
        ))
    );
    assert_eq!(
        register(&service, "https://0x7f.1/"),
        Err(ServiceError::Rejected(
            "webhook_url points at 127.0.0.1, a loopback address: webhooks go only to public addresses"
                .into()
        ))
    );
}

#[test]
fn allowing_local_webhooks_allows_loopback_and_http_and_nothing_else() {
    use Expect::{Accepted, Refused};
    let service = resolving(
        WebhookTargets::strict().allow_local(true),
        &[("localhost", &["127.0.0.1", "::1"]), ("intranet.example", &["192.168.1.10"])],
    );
    let cases = [
        ("http://127.0.0.1:8080/hook", Accepted),
        ("http://localhost:3000/hook", Accepted),
        ("https://[::1]:8443/hook", Accepted),
        ("http://[::ffff:127.0.0.1]/", Accepted),
        ("http://acme.example/hook", Accepted),
        ("http://0.0.0.0:8080/", Refused),
        ("http://10.0.0.1/", Refused),
        ("http://169.254.169.254/latest/meta-data/", Refused),
        ("http://[fe80::1]/", Refused),
        ("http://intranet.example/", Refused),
        ("http://[64:ff9b::7f00:1]/", Refused),
    ];
    let wrong = mismatches(&service, &cases);
    assert!(wrong.is_empty(), "{} of {} cases wrong:\n{}", wrong.len(), cases.len(), wrong.join("\n"));
}
