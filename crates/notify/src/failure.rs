//! Why a delivery failed, as a class (and the HTTP status where there is one): what is
//! recorded in the outbox and shown to platform roles. Never the transport's own words, which
//! would describe the network behind the endpoint (open ports, internal names, TLS details).

use std::fmt;

/// A failed delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryFailure {
    /// The URL, or an address its host resolved to, is not a permitted target.
    RefusedTarget,
    /// The host name did not resolve.
    DnsFailed,
    /// No TCP connection could be made.
    ConnectFailed,
    /// Connecting, sending or reading the status took longer than the timeout.
    Timeout,
    /// The TLS handshake failed (certificate, protocol, or not TLS at all).
    TlsFailed,
    /// The connection broke after it was made.
    ConnectionLost,
    /// The answer was not HTTP.
    BadResponse,
    /// A 3xx answer: redirects are never followed.
    RedirectRefused(u16),
    Http4xx(u16),
    Http5xx(u16),
    /// A status outside 2xx–5xx.
    HttpOther(u16),
    /// The developer was deleted after the event was queued.
    DeveloperGone,
    /// The queued payload is not a JSON object (never sent).
    InvalidPayload,
}

impl DeliveryFailure {
    /// The class, e.g. `timeout` or `http_5xx`.
    pub fn class(self) -> &'static str {
        match self {
            DeliveryFailure::RefusedTarget => "refused_target",
            DeliveryFailure::DnsFailed => "dns_failed",
            DeliveryFailure::ConnectFailed => "connect_failed",
            DeliveryFailure::Timeout => "timeout",
            DeliveryFailure::TlsFailed => "tls_failed",
            DeliveryFailure::ConnectionLost => "connection_lost",
            DeliveryFailure::BadResponse => "bad_response",
            DeliveryFailure::RedirectRefused(_) => "redirect_refused",
            DeliveryFailure::Http4xx(_) => "http_4xx",
            DeliveryFailure::Http5xx(_) => "http_5xx",
            DeliveryFailure::HttpOther(_) => "http_other",
            DeliveryFailure::DeveloperGone => "developer_gone",
            DeliveryFailure::InvalidPayload => "invalid_payload",
        }
    }

    /// The HTTP status the endpoint answered, if it answered.
    pub fn status(self) -> Option<u16> {
        match self {
            DeliveryFailure::RedirectRefused(status)
            | DeliveryFailure::Http4xx(status)
            | DeliveryFailure::Http5xx(status)
            | DeliveryFailure::HttpOther(status) => Some(status),
            _ => None,
        }
    }

    /// The failure for an HTTP status, or `None` for 2xx (delivered).
    pub fn from_status(status: u16) -> Option<DeliveryFailure> {
        match status {
            200..=299 => None,
            300..=399 => Some(DeliveryFailure::RedirectRefused(status)),
            400..=499 => Some(DeliveryFailure::Http4xx(status)),
            500..=599 => Some(DeliveryFailure::Http5xx(status)),
            _ => Some(DeliveryFailure::HttpOther(status)),
        }
    }

    /// Whether the failure is the endpoint's (so its other events wait too), rather than this
    /// one event's.
    pub(crate) fn is_the_endpoints(self) -> bool {
        self != DeliveryFailure::InvalidPayload
    }
}

/// The recorded form: the class, then the status code where there is one (`http_5xx 503`).
impl fmt::Display for DeliveryFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status() {
            Some(status) => write!(f, "{} {status}", self.class()),
            None => f.write_str(self.class()),
        }
    }
}
