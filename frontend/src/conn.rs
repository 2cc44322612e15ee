//! The frontend's connections: the HTTP parser's own refusals as problem
//! documents.
//!
//! When a request head cannot be parsed at all (not HTTP, a target over
//! 64 KiB, a head over about 400 KiB, more than 100 headers), the HTTP
//! library answers by itself with a bodiless `400`, `414` or `431` and
//! closes the connection; no route or middleware sees the request.
//! [`ProblemListener`] wraps each accepted connection so that such an answer
//! leaves with the same status and a problem document instead. It is
//! recognized as what it is: a `4xx` head with `content-length: 0` at the
//! start of a write, which the routes never send (every error answer of
//! theirs carries a problem document, see `routes::as_problems`). Everything
//! else passes through untouched.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bazar_api::{ErrorCode, PROBLEM_CONTENT_TYPE, Problem};
use bytes::{Buf, BytesMut};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use bazar_net::tls::{Conn, Handshakes, Tls};
use tokio::net::TcpListener;

/// A TCP listener whose connections answer the parser's refusals with
/// problem documents; with TLS, every connection is TLS, its handshake run
/// apart so that a slow one holds up no other.
pub struct ProblemListener {
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    handshakes: Handshakes,
}

impl ProblemListener {
    /// Serves `listener`, over TLS with `tls` when given.
    pub fn new(listener: TcpListener, tls: Option<Arc<Tls>>) -> ProblemListener {
        ProblemListener { listener, tls, handshakes: Handshakes::default() }
    }
}

impl axum::serve::Listener for ProblemListener {
    type Io = ProblemIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (ProblemIo, SocketAddr) {
        let ProblemListener { listener, tls, handshakes } = self;
        loop {
            tokio::select! {
                (inner, addr) = handshakes.next() => return (ProblemIo { inner, pending: BytesMut::new() }, addr),
                (tcp, addr) = axum::serve::Listener::accept(listener) => match tls {
                    Some(tls) => handshakes.start(tls.clone(), tcp, addr),
                    None => return (ProblemIo { inner: Conn::Plain(tcp), pending: BytesMut::new() }, addr),
                },
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// An accepted connection (see the module doc).
pub struct ProblemIo {
    inner: Conn,
    /// The rewritten refusal, still to be written.
    pending: BytesMut,
}

impl ProblemIo {
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

/// The problem answer replacing `written`, when it is a bodiless refusal.
pub fn rewrite(written: &[u8]) -> Option<BytesMut> {
    if !written.starts_with(b"HTTP/1.1 4") || !written.ends_with(b"\r\n\r\n") || written.len() > 1024 {
        return None;
    }
    let head = std::str::from_utf8(written).ok()?.to_ascii_lowercase();
    if !head.contains("\r\ncontent-length: 0\r\n") {
        return None;
    }
    let status: u16 = head.get(9..12)?.parse().ok()?;
    let detail = match status {
        400 => "the request is not valid HTTP/1.1",
        414 => "the request target is longer than the HTTP parser accepts (64 KiB)",
        431 => "the request head is larger than the HTTP parser accepts (about 400 KiB, or more than 100 headers)",
        _ => "the request was refused by the HTTP parser",
    };
    let body = serde_json::to_vec(&Problem::new(ErrorCode::InvalidInput, detail).with_status(status)).ok()?;
    let reason = axum::http::StatusCode::from_u16(status).ok()?.canonical_reason().unwrap_or("Refused");
    let mut out = BytesMut::with_capacity(160 + body.len());
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {status} {reason}\r\nconnection: close\r\ncontent-type: {PROBLEM_CONTENT_TYPE}\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(&body);
    Some(out)
}

impl AsyncRead for ProblemIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ProblemIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        if let Some(answer) = rewrite(buf) {
            this.pending = answer;
            // Taken whole; what is left of the answer leaves on the next
            // write, flush or shutdown.
            if let Poll::Ready(Err(e)) = this.drain(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bodiless_refusals_are_rewritten() {
        let bare = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let answer = rewrite(bare).unwrap();
        let text = String::from_utf8(answer.to_vec()).unwrap();
        assert!(text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{text}");
        assert!(text.contains("content-type: application/problem+json\r\n"), "{text}");
        let body: Problem = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!((body.status, body.code), (431, ErrorCode::InvalidInput));
        // An answer of the routes, with a body, and one that is not a refusal.
        assert!(rewrite(b"HTTP/1.1 404 Not Found\r\ncontent-length: 120\r\n\r\n").is_none());
        assert!(rewrite(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(rewrite(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{}").is_none());
    }

    #[tokio::test]
    async fn a_request_head_that_is_not_http_gets_a_problem() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let server = tokio::spawn(async move { axum::serve(ProblemListener::new(listener, None), app).await });
        let heads = [
            (b"GARBAGE\r\n\r\n".to_vec(), 400),
            (format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000)).into_bytes(), 414),
            (format!("GET / HTTP/1.1\r\nHost: x\r\n{}\r\n", "X-A: b\r\n".repeat(150)).into_bytes(), 431),
        ];
        for (head, status) in heads {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.write_all(&head).await.unwrap();
            let mut back = Vec::new();
            stream.read_to_end(&mut back).await.unwrap();
            let text = String::from_utf8_lossy(&back);
            assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
            assert!(text.contains("application/problem+json"), "{text}");
            let body: Problem = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
            assert_eq!(body.status, status);
        }
        let mut ok = tokio::net::TcpStream::connect(addr).await.unwrap();
        ok.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut back = Vec::new();
        ok.read_to_end(&mut back).await.unwrap();
        assert!(String::from_utf8_lossy(&back).ends_with("ok"));
        server.abort();
    }
}
