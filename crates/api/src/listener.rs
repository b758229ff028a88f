//! Serving on a socket. hyper answers some requests itself, before any route sees them: 400
//! for malformed HTTP/1.1, 414 for a URI longer than 64 KiB, 431 for headers larger than its
//! buffer; always with an empty body and `connection: close`. [`ProblemIo`] rewrites exactly
//! those answers into problem+json on their way out, so that every error a client gets is
//! problem+json, whoever gave it.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::http::StatusCode;
use axum::Router;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::problem::ApiError;

/// Serves `router` on `listener` until `shutdown` completes, with the peer address of each
/// request as `ConnectInfo` and hyper's own answers turned into problem+json.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    use axum::serve::ListenerExt as _;
    // `tap_io` changes nothing; axum provides the peer address as connect info for any
    // listener wrapped so.
    let listener = ProblemListener(listener).tap_io(|_| {});
    axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}

/// A TCP listener whose connections are [`ProblemIo`].
pub struct ProblemListener(pub TcpListener);

impl axum::serve::Listener for ProblemListener {
    type Io = ProblemIo<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, address) = axum::serve::Listener::accept(&mut self.0).await;
        (ProblemIo::new(stream), address)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// A connection whose outgoing bytes pass through unchanged, except hyper's own answers to
/// requests it could not read, which become problem+json.
pub struct ProblemIo<T> {
    inner: T,
    /// A rewritten answer not yet written, and how much of it was.
    pending: Vec<u8>,
    sent: usize,
}

impl<T> ProblemIo<T> {
    pub fn new(inner: T) -> ProblemIo<T> {
        ProblemIo { inner, pending: Vec::new(), sent: 0 }
    }
}

impl<T: AsyncWrite + Unpin> ProblemIo<T> {
    /// Writes what is pending of a rewritten answer.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(rest) = self.pending.get(self.sent..).filter(|rest| !rest.is_empty()) {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ProblemIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ProblemIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.drain(cx))?;
        match automatic_answer(buf) {
            // What comes before it leaves first, so the answer is always found at the start.
            Some((0, rewritten)) => {
                self.pending = rewritten;
                self.sent = 0;
                if let Poll::Ready(Err(e)) = self.drain(cx) {
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Ok(buf.len()))
            }
            Some((start, _)) => Pin::new(&mut self.inner).poll_write(cx, buf.get(..start).unwrap_or(buf)),
            None => Pin::new(&mut self.inner).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Where in `buf` hyper's own answer to an unreadable request starts, and its problem+json
/// form. hyper's answer is the last thing written on its connection: a status line of 400, 414
/// or 431 and exactly the headers `connection: close`, `content-length: 0` and `date`, ending
/// `buf`. No answer of the application looks so: its errors all have a body, and no JSON body
/// holds a raw line break.
fn automatic_answer(buf: &[u8]) -> Option<(usize, Vec<u8>)> {
    let head_end = buf.len().checked_sub(4).filter(|&end| buf.get(end..) == Some(b"\r\n\r\n"))?;
    let start = buf.windows(9).enumerate().rev().find_map(|(at, window)| {
        (at <= head_end && (window == b"HTTP/1.1 " || window == b"HTTP/1.0 ")).then_some(at)
    })?;
    let head = std::str::from_utf8(buf.get(start..head_end)?).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let code: u16 = status_line.get(9..12)?.parse().ok()?;
    let (slug, detail) = match code {
        400 => ("malformed-request", "the request is not well-formed HTTP/1.1"),
        414 => ("uri-too-long", "the URI is longer than the server reads (64 KiB)"),
        431 => ("headers-too-large", "the request's headers are larger than the server reads"),
        _ => return None,
    };
    let (mut close, mut empty, mut date) = (false, false, None);
    for line in lines {
        match line.split_once(": ")? {
            ("connection", "close") => close = true,
            ("content-length", "0") => empty = true,
            ("date", value) => date = Some(value),
            _ => return None,
        }
    }
    let date = date.filter(|_| close && empty)?;
    let status = StatusCode::from_u16(code).ok()?;
    let body = serde_json::to_vec(&ApiError::new(status, slug, detail).problem).ok()?;
    let mut answer = format!(
        "{}\r\ncontent-type: application/problem+json\r\nconnection: close\r\ncontent-length: {}\r\ndate: {date}\r\n\r\n",
        status_line,
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    Some((start, answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `each` bytes per call.
    struct Short {
        written: Vec<u8>,
        each: usize,
    }

    impl AsyncWrite for Short {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.each);
            self.written.extend_from_slice(buf.get(..n).unwrap_or_default());
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Writes `buf` as hyper does (again and again until all is taken), then flushes.
    fn through(buf: &[u8], each: usize) -> Vec<u8> {
        let mut io = ProblemIo::new(Short { written: Vec::new(), each });
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut rest = buf;
        while !rest.is_empty() {
            match Pin::new(&mut io).poll_write(&mut cx, rest) {
                Poll::Ready(Ok(n)) if n > 0 => rest = rest.get(n..).unwrap_or_default(),
                other => unreachable!("{other:?}"),
            }
        }
        assert!(matches!(Pin::new(&mut io).poll_flush(&mut cx), Poll::Ready(Ok(()))));
        io.inner.written
    }

    const DATE: &str = "date: Fri, 27 Nov 2026 07:11:34 GMT";

    fn hyper_answer(status: &str) -> String {
        format!("HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: 0\r\n{DATE}\r\n\r\n")
    }

    fn body_of(written: &[u8]) -> serde_json::Value {
        let text = String::from_utf8_lossy(written);
        let body = text.rsplit("\r\n\r\n").next().unwrap_or_default();
        serde_json::from_str(body).unwrap_or_default()
    }

    #[test]
    fn hypers_own_answers_become_problem_json() {
        for (status, code) in [
            ("414 URI Too Long", 414),
            ("431 Request Header Fields Too Large", 431),
            ("400 Bad Request", 400),
        ] {
            for each in [1, 7, 4096] {
                let written = through(hyper_answer(status).as_bytes(), each);
                let text = String::from_utf8_lossy(&written).to_string();
                assert!(text.starts_with(&format!("HTTP/1.1 {status}\r\n")), "{text}");
                assert!(text.contains("content-type: application/problem+json\r\n"), "{text}");
                assert!(text.contains("connection: close\r\n") && text.contains(DATE), "{text}");
                let body = body_of(&written);
                assert_eq!(body["status"], code, "{text}");
                let length = format!("content-length: {}\r\n", body.to_string().len());
                assert!(text.contains(&length), "{text}");
            }
        }
    }

    #[test]
    fn an_answer_before_hypers_leaves_unchanged_and_first() {
        let earlier = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok";
        let both = format!("{earlier}{}", hyper_answer("400 Bad Request"));
        for each in [1, 5, 4096] {
            let written = through(both.as_bytes(), each);
            let text = String::from_utf8_lossy(&written).to_string();
            assert!(text.starts_with(earlier), "{text}");
            assert_eq!(body_of(&written)["status"], 400, "{text}");
        }
    }

    #[test]
    fn the_applications_answers_pass_unchanged() {
        let answers = [
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 2\r\n\r\n{}".to_string(),
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\ndate: x\r\n\r\n".to_string(),
            "HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\ncontent-type: text/plain\r\n\r\n".to_string(),
            format!("HTTP/1.1 500 Internal Server Error\r\nconnection: close\r\ncontent-length: 0\r\n{DATE}\r\n\r\n"),
            format!("{}trailing", hyper_answer("414 URI Too Long")),
        ];
        for answer in answers {
            assert_eq!(through(answer.as_bytes(), 3), answer.as_bytes(), "{answer}");
        }
    }
}
