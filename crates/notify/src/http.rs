//! The one HTTP request consentry makes: a webhook POST to a target already checked, over a
//! connection to exactly the addresses checked (no second DNS lookup, so a name cannot rebind
//! between check and connect), with the URL's host as Host header and TLS server name, no
//! redirects, no proxy from the environment, and one timeout for connect, send and status.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use consentry_service::{CheckedTarget, HostResolver};

use crate::failure::DeliveryFailure;

/// Resolves names with the operating system's resolver (`getaddrinfo`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl HostResolver for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<IpAddr>> {
        Ok((host, port).to_socket_addrs()?.map(|address| address.ip()).collect())
    }
}

/// POSTs `body` to `target` and returns the status the endpoint answered (any status).
pub(crate) fn post(
    target: &CheckedTarget,
    headers: &[(&str, String)],
    body: &str,
    timeout: Duration,
) -> Result<u16, DeliveryFailure> {
    if target.addresses.is_empty() {
        return Err(DeliveryFailure::DnsFailed);
    }
    let addresses: Vec<SocketAddr> =
        target.addresses.iter().map(|address| SocketAddr::new(*address, target.port)).collect();
    let agent = ureq::AgentBuilder::new()
        .timeout(timeout)
        .timeout_connect(timeout)
        .redirects(0)
        .try_proxy_from_env(false)
        .max_idle_connections(0)
        .user_agent("consentry-webhooks")
        // ureq asks for the host's addresses only here: it gets the checked ones.
        .resolver(move |_: &str| -> io::Result<Vec<SocketAddr>> { Ok(addresses.clone()) })
        .build();
    let mut request = agent.post(&target.url);
    for (name, value) in headers {
        request = request.set(name, value);
    }
    match request.send_string(body) {
        Ok(response) => Ok(response.status()),
        Err(ureq::Error::Status(status, _)) => Ok(status),
        Err(ureq::Error::Transport(transport)) => Err(classify(&transport)),
    }
}

/// The class of a transport failure.
fn classify(transport: &ureq::Transport) -> DeliveryFailure {
    if timed_out(transport) {
        return DeliveryFailure::Timeout;
    }
    match transport.kind() {
        ureq::ErrorKind::Dns => DeliveryFailure::DnsFailed,
        // ureq 2 names a failed handshake so (rtls.rs); pinned by a test.
        ureq::ErrorKind::ConnectionFailed if transport.message() == Some("tls connection init failed") => {
            DeliveryFailure::TlsFailed
        }
        ureq::ErrorKind::ConnectionFailed => DeliveryFailure::ConnectFailed,
        ureq::ErrorKind::BadStatus | ureq::ErrorKind::BadHeader => DeliveryFailure::BadResponse,
        ureq::ErrorKind::Io => DeliveryFailure::ConnectionLost,
        ureq::ErrorKind::TooManyRedirects => DeliveryFailure::RedirectRefused(0),
        ureq::ErrorKind::InvalidUrl
        | ureq::ErrorKind::UnknownScheme
        | ureq::ErrorKind::InsecureRequestHttpsOnly => DeliveryFailure::RefusedTarget,
        _ => DeliveryFailure::ConnectFailed,
    }
}

/// Whether any error in the chain is an I/O timeout.
fn timed_out(transport: &ureq::Transport) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(transport);
    while let Some(error) = cause {
        if let Some(io) = error.downcast_ref::<io::Error>() {
            if matches!(io.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) {
                return true;
            }
        }
        cause = error.source();
    }
    false
}
