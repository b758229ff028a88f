//! One HTTP/1.1 keep-alive connection to a loopback server, on hyper's client.

use std::net::SocketAddr;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

use crate::LoadError;

/// Refuses every address outside the loopback range: this tool sends traffic to this machine
/// only.
pub fn require_loopback(address: SocketAddr) -> Result<SocketAddr, LoadError> {
    if address.ip().is_loopback() {
        Ok(address)
    } else {
        Err(LoadError::NotLoopback(address.to_string()))
    }
}

/// A request body and its media type.
pub struct Body {
    pub media_type: &'static str,
    pub bytes: Vec<u8>,
}

impl Body {
    pub fn json(value: &serde_json::Value) -> Body {
        Body { media_type: "application/json", bytes: value.to_string().into_bytes() }
    }

    pub fn form(pairs: &[(&str, &str)]) -> Body {
        let text = form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
        Body { media_type: "application/x-www-form-urlencoded", bytes: text.into_bytes() }
    }

    pub fn text(text: &str) -> Body {
        Body { media_type: "text/plain", bytes: text.as_bytes().to_vec() }
    }
}

/// A whole answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    /// `x-request-id`: the id the response's ledger record carries.
    pub request_id: Option<String>,
    pub body: Bytes,
}

/// A keep-alive connection; requests on it go one at a time.
pub struct Connection {
    address: SocketAddr,
    sender: SendRequest<Full<Bytes>>,
}

impl Connection {
    /// Connects to a loopback `address` (any other is refused before a packet is sent).
    pub async fn open(address: SocketAddr) -> Result<Connection, LoadError> {
        let address = require_loopback(address)?;
        let stream = tokio::net::TcpStream::connect(address).await.map_err(LoadError::Connect)?;
        stream.set_nodelay(true).map_err(LoadError::Connect)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(LoadError::Http)?;
        tokio::spawn(async move {
            // Ends when the connection closes; a broken connection shows in the next request.
            let _ = connection.await;
        });
        Ok(Connection { address, sender })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Sends one request and reads the whole answer. `bearer` goes in `Authorization`.
    pub async fn send(
        &mut self,
        method: Method,
        path_and_query: &str,
        bearer: Option<&str>,
        body: Option<Body>,
    ) -> Result<(StatusCode, Bytes), LoadError> {
        let answer = self.exchange(method, path_and_query, bearer, body).await?;
        Ok((answer.status, answer.body))
    }

    /// [`Connection::send`], keeping the answer's headers (`x-request-id`: the id its ledger
    /// record carries).
    pub async fn exchange(
        &mut self,
        method: Method,
        path_and_query: &str,
        bearer: Option<&str>,
        body: Option<Body>,
    ) -> Result<Answer, LoadError> {
        let mut request =
            Request::builder().method(method).uri(path_and_query).header(hyper::header::HOST, "127.0.0.1");
        if let Some(bearer) = bearer {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {bearer}"));
        }
        let bytes = match body {
            Some(body) => {
                request = request.header(hyper::header::CONTENT_TYPE, body.media_type);
                Bytes::from(body.bytes)
            }
            None => Bytes::new(),
        };
        let request = request.body(Full::new(bytes)).map_err(|e| LoadError::Request(e.to_string()))?;
        self.sender.ready().await.map_err(LoadError::Http)?;
        let response = self.sender.send_request(request).await.map_err(LoadError::Http)?;
        let status = response.status();
        let request_id =
            response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = response.into_body().collect().await.map_err(LoadError::Http)?.to_bytes();
        Ok(Answer { status, request_id, body })
    }

    /// Sends a request that must succeed (2xx) and returns its JSON answer.
    pub async fn expect_json(
        &mut self,
        method: Method,
        path_and_query: &str,
        bearer: Option<&str>,
        body: Option<Body>,
    ) -> Result<serde_json::Value, LoadError> {
        let (status, bytes) = self.send(method.clone(), path_and_query, bearer, body).await?;
        if !status.is_success() {
            return Err(LoadError::Refused {
                request: format!("{method} {path_and_query}"),
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes).chars().take(300).collect(),
            });
        }
        Ok(serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_are_targets() {
        for ok in ["127.0.0.1:80", "127.3.4.5:8080", "[::1]:443"] {
            let address: SocketAddr = ok.parse().unwrap_or_else(|e| unreachable!("{e}"));
            assert!(require_loopback(address).is_ok(), "{ok}");
        }
        for refused in
            ["10.0.0.1:80", "192.168.1.1:80", "0.0.0.0:8080", "8.8.8.8:53", "[::]:80", "[fe80::1]:80"]
        {
            let address: SocketAddr = refused.parse().unwrap_or_else(|e| unreachable!("{e}"));
            assert!(
                matches!(require_loopback(address), Err(LoadError::NotLoopback(_))),
                "{refused} must be refused"
            );
        }
    }
}
