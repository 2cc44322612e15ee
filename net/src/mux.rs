//! Many calls at once on one connection per peer.
//!
//! An HTTP/1.1 connection carries one exchange at a time: every call costs
//! its own write and read system calls on both sides and its own HTTP
//! parsing. A [`Mux`] instead keeps one connection per peer
//! and frames each call with an id, so calls made at the same time leave in
//! one write and their answers come back in one read, in whatever order the
//! peer finishes them.
//!
//! The connection starts as HTTP/1.1 (`GET /mux` with `Upgrade:
//! bazar-mux/1`), so it needs no port of its own; after `101 Switching
//! Protocols` both sides speak frames:
//!
//! ```text
//! frame    = length:u32 id:u64 (request | response)   length counts id and what follows
//! request  = method-len:u8 method target-len:u16 target headers body
//! response = status:u16 headers body
//! headers  = count:u16 (name-len:u8 name value-len:u16 value)*
//! body     = every remaining byte of the frame
//! ```
//!
//! Integers are big-endian. A frame holds at most [`MAX_HEADERS`] headers.
//!
//! Hostile bytes: the serving side decides who may upgrade (a node asks for
//! a token, see [`accept`]) and serves each connection within
//! [`ServeLimits`]: a frame longer than its cap is answered `413` from its
//! first twelve bytes and the rest of it is dropped unread into memory; no
//! allocation is sized by an untrusted length or count beyond what has
//! arrived (at most 1 MiB ahead); a frame that is not a valid request is
//! answered `400`; nothing in the decoder panics. Calls in flight per
//! connection are capped, and at the cap the connection is not read until
//! one finishes; answers wait in a queue of the same bound.
//!
//! On the serving side ([`serve`]) each request is
//! handed to a tower service (the node's router) as an ordinary
//! `http::Request`, so routes, extractors, limits and middleware behave as
//! they do over HTTP. Calls carry whole bodies both ways, like the pool's.
//!
//! Failures: a call whose request certainly never left is retried on a new
//! connection; one that may have reached the peer fails with
//! [`Error::Broken`] or [`Error::Timeout`], and whether to send it again is
//! the caller's decision, as with the pool. A connection on which a call
//! timed out without any answer arriving meanwhile is presumed dead (a peer
//! that stopped, a network partition) and closed, so the next call connects
//! afresh instead of waiting on it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Display;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use crate::{Call, Error, Limits, Response};

/// The path a client upgrades on.
pub const PATH: &str = "/mux";
/// The protocol named in the `Upgrade` header.
pub const PROTOCOL: &str = "bazar-mux/1";

/// Largest frame a caller accepts in an answer, and the serving side's cap
/// for peers ([`ServeLimits::PEER`]): as large as the nodes' largest Raft
/// RPC body.
const MAX_FRAME: usize = 512 << 20;
/// Most headers in one frame (HTTP servers commonly allow 100).
pub const MAX_HEADERS: usize = 256;
/// A reader allocates at most this much ahead of the bytes it has received,
/// so a frame's announced length alone allocates nothing large.
const RESERVE_AHEAD: usize = 1 << 20;
/// Most requests a caller sends before its writer has taken them.
const CALL_QUEUE: usize = 4096;
/// A writer gathers queued frames up to about this many bytes per write.
const WRITE_BATCH: usize = 256 << 10;
/// How long a stopping server waits for the answers of calls in flight.
const DRAIN: Duration = Duration::from_secs(5);
/// Longest accepted answer to the upgrade request.
const MAX_HANDSHAKE: usize = 8 << 10;

/// A frame that does not follow the format.
#[derive(Debug, thiserror::Error)]
#[error("malformed frame: {0}")]
pub struct Malformed(&'static str);

fn malformed(e: Malformed) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

// ---- encoding ----

fn put_headers(out: &mut BytesMut, headers: &HeaderMap) -> Result<(), Malformed> {
    if headers.len() > MAX_HEADERS {
        return Err(Malformed("more than 256 headers"));
    }
    let count = u16::try_from(headers.len()).map_err(|_| Malformed("more than 256 headers"))?;
    out.put_u16(count);
    for (name, value) in headers {
        let n = u8::try_from(name.as_str().len()).map_err(|_| Malformed("a header name longer than 255 bytes"))?;
        let v = u16::try_from(value.len()).map_err(|_| Malformed("a header value longer than 65535 bytes"))?;
        out.put_u8(n);
        out.put_slice(name.as_str().as_bytes());
        out.put_u16(v);
        out.put_slice(value.as_bytes());
    }
    Ok(())
}

/// Starts a frame: room for its length, then the id.
fn begin(out: &mut BytesMut, id: u64) {
    out.put_u32(0);
    out.put_u64(id);
}

/// Ends a frame begun at `start`: writes its length.
fn finish(out: &mut BytesMut, start: usize) -> Result<(), Malformed> {
    let len = out.len() - start - 4;
    if len > MAX_FRAME {
        return Err(Malformed("a frame larger than 512 MiB"));
    }
    out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

fn encode_request(id: u64, call: &Call<'_>) -> Result<Bytes, Malformed> {
    let method = call.method.as_str();
    let m = u8::try_from(method.len()).map_err(|_| Malformed("a method longer than 255 bytes"))?;
    let t = u16::try_from(call.path.len()).map_err(|_| Malformed("a target longer than 65535 bytes"))?;
    let mut out = BytesMut::with_capacity(64 + call.path.len() + call.body.len() + 64 * call.headers.len());
    begin(&mut out, id);
    out.put_u8(m);
    out.put_slice(method.as_bytes());
    out.put_u16(t);
    out.put_slice(call.path.as_bytes());
    put_headers(&mut out, &call.headers)?;
    out.put_slice(&call.body);
    finish(&mut out, 0)?;
    Ok(out.freeze())
}

/// An answer the serving side makes itself: `status` with a plain-text
/// `detail`.
fn error_response(id: u64, status: StatusCode, detail: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(32 + detail.len());
    begin(&mut out, id);
    out.put_u16(status.as_u16());
    out.put_u16(1);
    out.put_u8(12);
    out.put_slice(b"content-type");
    out.put_u16(10);
    out.put_slice(b"text/plain");
    out.put_slice(detail.as_bytes());
    out.put_u8(b'\n');
    let len = u32::try_from(out.len() - 4).unwrap_or(u32::MAX);
    out[..4].copy_from_slice(&len.to_be_bytes());
    out.freeze()
}

fn encode_response(id: u64, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Result<Bytes, Malformed> {
    let mut out = BytesMut::with_capacity(32 + body.len() + 48 * headers.len());
    begin(&mut out, id);
    out.put_u16(status.as_u16());
    put_headers(&mut out, headers)?;
    out.put_slice(body);
    finish(&mut out, 0)?;
    Ok(out.freeze())
}

// ---- decoding ----

fn need(buf: &Bytes, n: usize) -> Result<(), Malformed> {
    if buf.remaining() < n { Err(Malformed("truncated")) } else { Ok(()) }
}

fn take(buf: &mut Bytes, n: usize) -> Result<Bytes, Malformed> {
    need(buf, n)?;
    Ok(buf.split_to(n))
}

fn get_u8(buf: &mut Bytes) -> Result<u8, Malformed> {
    need(buf, 1)?;
    Ok(buf.get_u8())
}

fn get_u16(buf: &mut Bytes) -> Result<u16, Malformed> {
    need(buf, 2)?;
    Ok(buf.get_u16())
}

/// The headers of a frame. The count is untrusted: it is checked against
/// [`MAX_HEADERS`] and against the bytes left (a header takes at least four)
/// before anything is sized by it, and the map grows as headers are read.
fn get_headers(buf: &mut Bytes) -> Result<HeaderMap, Malformed> {
    let count = get_u16(buf)? as usize;
    if count > MAX_HEADERS {
        return Err(Malformed("more than 256 headers"));
    }
    if count.saturating_mul(4) > buf.remaining() {
        return Err(Malformed("truncated"));
    }
    let mut headers = HeaderMap::new();
    for _ in 0..count {
        let n = get_u8(buf)? as usize;
        let name = HeaderName::from_bytes(&take(buf, n)?).map_err(|_| Malformed("an invalid header name"))?;
        let v = get_u16(buf)? as usize;
        let value = HeaderValue::from_maybe_shared(take(buf, v)?).map_err(|_| Malformed("an invalid header value"))?;
        headers.try_append(name, value).map_err(|_| Malformed("too many headers"))?;
    }
    Ok(headers)
}

fn decode_request(mut buf: Bytes) -> Result<http::Request<Full<Bytes>>, Malformed> {
    let m = get_u8(&mut buf)? as usize;
    let method = Method::from_bytes(&take(&mut buf, m)?).map_err(|_| Malformed("an invalid method"))?;
    let t = get_u16(&mut buf)? as usize;
    let target = http::Uri::from_maybe_shared(take(&mut buf, t)?).map_err(|_| Malformed("an invalid target"))?;
    let headers = get_headers(&mut buf)?;
    let mut request = http::Request::new(Full::new(buf));
    *request.method_mut() = method;
    *request.uri_mut() = target;
    *request.headers_mut() = headers;
    Ok(request)
}

fn decode_response(mut buf: Bytes) -> Result<Response, Malformed> {
    let status = StatusCode::from_u16(get_u16(&mut buf)?).map_err(|_| Malformed("an invalid status"))?;
    let headers = get_headers(&mut buf)?;
    Ok(Response { status, headers, body: buf })
}

/// What the start of a read buffer holds.
#[derive(Debug)]
enum Next {
    /// A whole frame: its id and the rest.
    Frame(u64, Bytes),
    /// The start of a frame longer than the cap: its id and the length of
    /// the rest (after the id), which has not been taken off the buffer.
    Oversized(u64, usize),
    /// Not enough bytes yet.
    More,
}

/// Takes the next whole frame off `buf`, refusing frames longer than
/// `max_frame` from their first twelve bytes. Allocates at most
/// [`RESERVE_AHEAD`] beyond what `buf` holds, whatever length a frame
/// announces.
fn next_frame(buf: &mut BytesMut, max_frame: usize) -> Result<Next, Malformed> {
    let Some(head) = buf.first_chunk::<4>() else { return Ok(Next::More) };
    let len = u32::from_be_bytes(*head) as usize;
    if len < 8 {
        return Err(Malformed("a frame without an id"));
    }
    if len > max_frame {
        let Some(id) = buf.get(4..12).and_then(|b| b.first_chunk::<8>()) else { return Ok(Next::More) };
        let id = u64::from_be_bytes(*id);
        buf.advance(12);
        return Ok(Next::Oversized(id, len - 8));
    }
    if buf.len() < 4 + len {
        buf.reserve((4 + len - buf.len()).min(RESERVE_AHEAD));
        return Ok(Next::More);
    }
    buf.advance(4);
    let mut frame = buf.split_to(len).freeze();
    let id = frame.get_u64();
    Ok(Next::Frame(id, frame))
}

/// Reads more of the stream into `buf`; `false` at its end.
async fn fill<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut BytesMut) -> io::Result<bool> {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(64 << 10);
    }
    Ok(reader.read_buf(buf).await? > 0)
}

fn ended_inside_a_frame() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "the stream ended inside a frame")
}

/// Reads answers until the end of the stream, handing each to `on_frame`
/// (the calling side: any frame up to [`MAX_FRAME`]). `buf` may already
/// hold bytes read before.
async fn read_frames<R: AsyncRead + Unpin>(
    mut reader: R,
    mut buf: BytesMut,
    mut on_frame: impl FnMut(u64, Bytes) -> Result<(), Malformed>,
) -> io::Result<()> {
    loop {
        loop {
            match next_frame(&mut buf, MAX_FRAME).map_err(malformed)? {
                Next::Frame(id, frame) => on_frame(id, frame).map_err(malformed)?,
                Next::Oversized(..) => return Err(malformed(Malformed("a frame larger than 512 MiB"))),
                Next::More => break,
            }
        }
        if !fill(&mut reader, &mut buf).await? {
            return if buf.is_empty() { Ok(()) } else { Err(ended_inside_a_frame()) };
        }
    }
}

/// Writes the frames sent on `frames`, as many as are queued per write,
/// until every sender is gone.
async fn write_frames<W: AsyncWrite + Unpin>(mut writer: W, mut frames: mpsc::Receiver<Bytes>) -> io::Result<()> {
    let mut batch = BytesMut::new();
    while let Some(frame) = frames.recv().await {
        match frames.try_recv() {
            // The common case at low load: one frame, written as it is.
            Err(_) => writer.write_all(&frame).await?,
            Ok(next) => {
                batch.extend_from_slice(&frame);
                batch.extend_from_slice(&next);
                while batch.len() < WRITE_BATCH {
                    match frames.try_recv() {
                        Ok(more) => batch.extend_from_slice(&more),
                        Err(_) => break,
                    }
                }
                writer.write_all(&batch).await?;
                batch.clear();
            }
        }
    }
    writer.shutdown().await
}

// ---- the calling side ----

/// One open connection to a peer.
struct Link {
    frames: mpsc::Sender<Bytes>,
    state: Mutex<LinkState>,
    /// Answers received so far (to tell a slow call from a dead link).
    received: AtomicU64,
}

#[derive(Default)]
struct LinkState {
    next_id: u64,
    waiting: HashMap<u64, oneshot::Sender<Response>>,
    /// Why the link closed, once it has.
    closed: Option<String>,
}

impl Link {
    fn is_open(&self) -> bool {
        self.state.lock().expect("link poisoned").closed.is_none()
    }

    /// A new call's id and where its answer will arrive, unless the link is
    /// closed.
    fn register(&self) -> Option<(u64, oneshot::Receiver<Response>)> {
        let mut state = self.state.lock().expect("link poisoned");
        if state.closed.is_some() {
            return None;
        }
        let id = state.next_id;
        state.next_id += 1;
        let (tx, rx) = oneshot::channel();
        state.waiting.insert(id, tx);
        Some((id, rx))
    }

    fn forget(&self, id: u64) {
        self.state.lock().expect("link poisoned").waiting.remove(&id);
    }

    fn answered(&self, id: u64, frame: Bytes) -> Result<(), Malformed> {
        let response = decode_response(frame)?;
        self.received.fetch_add(1, Ordering::Relaxed);
        let waiter = self.state.lock().expect("link poisoned").waiting.remove(&id);
        // No waiter: the call timed out and left.
        if let Some(waiter) = waiter {
            let _ = waiter.send(response);
        }
        Ok(())
    }

    /// Closes the link: calls waiting on it fail, later ones connect anew.
    fn close(&self, reason: String) {
        let mut state = self.state.lock().expect("link poisoned");
        if state.closed.is_none() {
            state.closed = Some(reason);
        }
        // Dropping the senders wakes every waiting call.
        state.waiting.clear();
    }

    fn reason(&self) -> String {
        self.state.lock().expect("link poisoned").closed.clone().unwrap_or_else(|| "connection closed".into())
    }
}

/// Opens a connection to `addr` and upgrades it. Every failure here happens
/// before any call was sent.
async fn open(
    addr: &str,
    connect_timeout: Duration,
    authorization: Option<&HeaderValue>,
    source: Option<IpAddr>,
    tls: Option<&crate::tls::Tls>,
) -> Result<Arc<Link>, Error> {
    let failed = |source| Error::Connect { addr: addr.to_string(), source };
    let handshake = async {
        let tcp = connect(addr, source).await?;
        tcp.set_nodelay(true)?;
        let mut stream = match tls {
            Some(tls) => tls.connect(addr, tcp).await?,
            None => crate::tls::Conn::Plain(tcp),
        };
        let mut request = BytesMut::with_capacity(256);
        request.put_slice(
            format!("GET {PATH} HTTP/1.1\r\nHost: {addr}\r\nConnection: upgrade\r\nUpgrade: {PROTOCOL}\r\n").as_bytes(),
        );
        if let Some(value) = authorization {
            // A header value holds no CR or LF.
            request.put_slice(b"Authorization: ");
            request.put_slice(value.as_bytes());
            request.put_slice(b"\r\n");
        }
        request.put_slice(b"Content-Length: 0\r\n\r\n");
        stream.write_all(&request).await?;
        let mut buf = BytesMut::with_capacity(1024);
        let head_end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            if buf.len() > MAX_HANDSHAKE {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "the answer to the upgrade is too long"));
            }
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed during the upgrade"));
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let status_line = head.lines().next().unwrap_or_default();
        if !status_line.starts_with("HTTP/1.1 101") {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("the peer did not switch to {PROTOCOL}: {status_line}"),
            ));
        }
        buf.advance(head_end);
        Ok((stream, buf))
    };
    let (stream, leftover) = match tokio::time::timeout(connect_timeout, handshake).await {
        Ok(done) => done.map_err(failed)?,
        Err(_) => return Err(failed(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))),
    };
    let (reader, writer) = tokio::io::split(stream);
    let (frames, queued) = mpsc::channel(CALL_QUEUE);
    let link = Arc::new(Link { frames, state: Mutex::default(), received: AtomicU64::new(0) });
    // Both tasks hold the link weakly: once no caller and no `Mux` holds it,
    // its frame sender is dropped, the writer ends and shuts the connection
    // down, and the peer's close ends the read.
    let writing = Arc::downgrade(&link);
    tokio::spawn(async move {
        if let Err(e) = write_frames(writer, queued).await
            && let Some(link) = writing.upgrade()
        {
            link.close(format!("writing failed: {e}"));
        }
    });
    let reading = Arc::downgrade(&link);
    tokio::spawn(async move {
        let result = read_frames(reader, leftover, |id, frame| match reading.upgrade() {
            Some(link) => link.answered(id, frame),
            None => Ok(()),
        })
        .await;
        if let Some(link) = reading.upgrade() {
            link.close(match result {
                Ok(()) => "the peer closed the connection".into(),
                Err(e) => format!("reading failed: {e}"),
            });
        }
    });
    Ok(link)
}

/// Connects to `addr` (`host:port`), from the local IP `source` when given
/// (trying each of the peer's addresses of the same family in turn).
async fn connect(addr: &str, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let Some(source) = source else { return TcpStream::connect(addr).await };
    let mut last = None;
    for target in tokio::net::lookup_host(addr).await?.filter(|t| t.is_ipv4() == source.is_ipv4()) {
        let socket = if source.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.bind(SocketAddr::new(source, 0))?;
        match socket.connect(target).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::AddrNotAvailable, format!("{addr} has no address in the family of {source}"))
    }))
}

/// A peer's current link, and the lock that lets one call at a time open a
/// new one.
#[derive(Default)]
struct Peer {
    link: Mutex<Option<Arc<Link>>>,
    opening: tokio::sync::Mutex<()>,
}

impl Peer {
    fn current(&self) -> Option<Arc<Link>> {
        self.link.lock().expect("peer poisoned").as_ref().filter(|l| l.is_open()).cloned()
    }
}

/// One multiplexed connection per peer address (`host:port`).
pub struct Mux {
    limits: Limits,
    /// Sent with every upgrade request, when set.
    authorization: Option<HeaderValue>,
    peers: Mutex<HashMap<String, Arc<Peer>>>,
    /// The local IP connections leave from (`None`: the kernel's choice).
    source: Option<IpAddr>,
    /// TLS to the peers, when set (see [`crate::tls`]).
    tls: Option<Arc<crate::tls::Tls>>,
}

impl Default for Mux {
    fn default() -> Self {
        Mux::new(Limits::default())
    }
}

impl Mux {
    /// No connections yet; of `limits`, the connect timeout applies.
    pub fn new(limits: Limits) -> Self {
        Mux { limits, authorization: None, peers: Mutex::default(), source: None, tls: None }
    }

    /// The same, sending `authorization` (as the `Authorization` header) with
    /// each upgrade request: a serving node admits only callers with a token.
    pub fn with_authorization(mut self, authorization: HeaderValue) -> Self {
        self.authorization = Some(authorization);
        self
    }

    /// Opens every connection over TLS with `tls` (when given), presenting
    /// its certificate.
    pub fn with_tls(mut self, tls: Option<Arc<crate::tls::Tls>>) -> Self {
        self.tls = tls;
        self
    }

    /// Opens every connection from the local IP `source` (a node's own
    /// peer address, so that a firewall can tell its traffic from others'
    /// on one host).
    pub fn from_source(mut self, source: Option<IpAddr>) -> Self {
        self.source = source;
        self
    }

    fn peer(&self, addr: &str) -> Arc<Peer> {
        let mut peers = self.peers.lock().expect("mux poisoned");
        match peers.get(addr) {
            Some(peer) => peer.clone(),
            None => peers.entry(addr.to_string()).or_default().clone(),
        }
    }

    async fn link(&self, addr: &str) -> Result<Arc<Link>, Error> {
        let peer = self.peer(addr);
        if let Some(link) = peer.current() {
            return Ok(link);
        }
        let _opening = peer.opening.lock().await;
        if let Some(link) = peer.current() {
            return Ok(link);
        }
        let link =
            open(addr, self.limits.connect_timeout, self.authorization.as_ref(), self.source, self.tls.as_deref())
                .await?;
        *peer.link.lock().expect("peer poisoned") = Some(link.clone());
        Ok(link)
    }

    /// Makes `call` at `addr` and waits for its whole answer, all within
    /// `timeout`.
    pub async fn call(&self, addr: &str, call: Call<'_>, timeout: Duration) -> Result<Response, Error> {
        if http::uri::PathAndQuery::try_from(call.path).is_err() || !call.path.starts_with('/') {
            return Err(Error::Unencodable(Malformed("the target is not an origin-form path and query")));
        }
        let deadline = Instant::now() + timeout;
        let timed_out = || Error::Timeout { addr: addr.to_string(), timeout };
        // A link that closes between being picked and taking the request has
        // not sent it: the request goes out on a new one, once.
        for _ in 0..2 {
            let link = match tokio::time::timeout_at(deadline, self.link(addr)).await {
                Ok(link) => link?,
                Err(_) => return Err(timed_out()),
            };
            let Some((id, answer)) = link.register() else { continue };
            let frame = encode_request(id, &call).map_err(|e| {
                link.forget(id);
                Error::Unencodable(e)
            })?;
            let before = link.received.load(Ordering::Relaxed);
            match tokio::time::timeout_at(deadline, link.frames.send(frame)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    // The writer stopped (it failed): the request never left.
                    link.close("the connection's writer stopped".into());
                    continue;
                }
                Err(_) => {
                    // Still queued behind others when time ran out: it never left.
                    link.forget(id);
                    return Err(timed_out());
                }
            }
            return match tokio::time::timeout_at(deadline, answer).await {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(_)) => Err(Error::Broken { addr: addr.to_string(), reason: link.reason() }),
                Err(_) => {
                    link.forget(id);
                    if link.received.load(Ordering::Relaxed) == before {
                        link.close(format!("no answer within {timeout:?}"));
                    }
                    Err(timed_out())
                }
            };
        }
        let source =
            io::Error::new(io::ErrorKind::ConnectionAborted, "the connection closed before the request was sent");
        Err(Error::Connect { addr: addr.to_string(), source })
    }
}

// ---- the serving side ----

/// What the serving side admits on one connection.
///
/// A caller is served frame by frame, each as its own task: `max_in_flight`
/// bounds those tasks, and the queue of answers waiting for the writer holds
/// as many, so a caller that sends faster than it is answered (or stops
/// reading its answers) is no longer read from until answers have left.
/// Memory per connection is then at most about `max_frame` times
/// (`max_in_flight` + 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServeLimits {
    /// Longest frame (id and request) accepted. A longer one is answered
    /// `413` from its first twelve bytes, and the rest of it is read and
    /// dropped without being kept.
    pub max_frame: usize,
    /// Most requests being served at once.
    pub max_in_flight: usize,
}

impl ServeLimits {
    /// For the other nodes (holders of the cluster token): Raft appends as
    /// large as the nodes' Raft body limit.
    pub const PEER: ServeLimits = ServeLimits { max_frame: MAX_FRAME, max_in_flight: 1024 };
    /// For frontends: client requests (a 64 KiB body, a target and a few
    /// headers) fit with room to spare.
    pub const CLIENT: ServeLimits = ServeLimits { max_frame: 256 << 10, max_in_flight: 512 };
}

/// Answers a request for [`PATH`]: when it asks to upgrade to [`PROTOCOL`],
/// `101 Switching Protocols`, and the upgraded connection is then served
/// with `service` within `limits` (see [`serve`]) on a task of its own;
/// otherwise `400`. Whether the caller may upgrade at all (its token) is
/// for the server to decide before calling this.
/// The server must support upgrades (`axum::serve` does), and should set
/// `TCP_NODELAY` on its connections: answers leave as they are gathered,
/// and behind Nagle's algorithm a write waits for the peer's delayed ACK
/// whenever an earlier one is unacknowledged.
pub fn accept<ReqB, S, B>(
    mut request: http::Request<ReqB>,
    service: S,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> http::Response<Full<Bytes>>
where
    S: Service<http::Request<Full<Bytes>>, Response = http::Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Display,
{
    if !asks_to_upgrade(request.headers()) {
        let mut refused = http::Response::new(Full::new(Bytes::from(format!("expected Upgrade: {PROTOCOL}\n"))));
        *refused.status_mut() = StatusCode::BAD_REQUEST;
        return refused;
    }
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => serve(TokioIo::new(upgraded), BytesMut::new(), service, limits, shutdown).await,
            Err(e) => tracing::debug!(error = %e, "mux upgrade failed"),
        }
    });
    let mut switching = http::Response::new(Full::new(Bytes::new()));
    *switching.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    switching.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("upgrade"));
    switching.headers_mut().insert(http::header::UPGRADE, HeaderValue::from_static(PROTOCOL));
    switching
}

/// Whether a request asks to upgrade to [`PROTOCOL`].
pub fn asks_to_upgrade(headers: &HeaderMap) -> bool {
    headers.get(http::header::UPGRADE).is_some_and(|v| v.as_bytes() == PROTOCOL.as_bytes())
}

/// Serves calls arriving on `io` (a connection already upgraded; `read`
/// holds whatever was read from it past the upgrade request) with
/// `service`, each as its own task, within `limits`, until the caller
/// closes the connection or `shutdown` completes; then answers the calls in
/// flight (for at most a few seconds) and closes. A frame that is not a
/// valid request is answered `400` and one longer than `limits.max_frame`
/// `413`, and the connection carries on; bytes that are not frames at all
/// (a length below eight) end it.
pub async fn serve<IO, S, B>(
    io: IO,
    read: BytesMut,
    service: S,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()>,
) where
    IO: AsyncRead + AsyncWrite + Send + 'static,
    S: Service<http::Request<Full<Bytes>>, Response = http::Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Display,
{
    let in_flight = limits.max_in_flight.max(1);
    let (mut reader, writer) = tokio::io::split(io);
    let (frames, queued) = mpsc::channel(in_flight);
    let mut writer = tokio::spawn(write_frames(writer, queued));
    let permits = Arc::new(Semaphore::new(in_flight));
    // The reading future owns the only other sender: once reading stops,
    // the writer ends as soon as every call in flight has sent its answer.
    let reading = async move {
        let mut buf = read;
        // Bytes of an oversized frame still to drop.
        let mut skip = 0usize;
        loop {
            if skip > 0 {
                let n = skip.min(buf.len());
                buf.advance(n);
                skip -= n;
            }
            while skip == 0 {
                match next_frame(&mut buf, limits.max_frame).map_err(malformed)? {
                    Next::More => break,
                    Next::Oversized(id, rest) => {
                        let detail = format!("a frame longer than {} bytes", limits.max_frame);
                        if frames.send(error_response(id, StatusCode::PAYLOAD_TOO_LARGE, &detail)).await.is_err() {
                            return Ok(());
                        }
                        let n = rest.min(buf.len());
                        buf.advance(n);
                        skip = rest - n;
                    }
                    Next::Frame(id, frame) => {
                        // At the cap, stop reading until a call finishes.
                        let Ok(permit) = permits.clone().acquire_owned().await else { return Ok(()) };
                        let request = match decode_request(frame) {
                            Ok(request) => request,
                            // A whole frame whose request is not valid HTTP:
                            // refused, and the connection carries on.
                            Err(e) => {
                                if frames
                                    .send(error_response(id, StatusCode::BAD_REQUEST, &e.to_string()))
                                    .await
                                    .is_err()
                                {
                                    return Ok(());
                                }
                                continue;
                            }
                        };
                        tokio::spawn(answer(id, request, service.clone(), frames.clone(), permit));
                    }
                }
            }
            if !fill(&mut reader, &mut buf).await? {
                return if buf.is_empty() && skip == 0 { Ok(()) } else { Err(ended_inside_a_frame()) };
            }
        }
    };
    tokio::select! {
        result = reading => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "mux connection ended");
            }
        }
        () = shutdown => {}
    }
    if tokio::time::timeout(DRAIN, &mut writer).await.is_err() {
        writer.abort();
    }
}

/// Serves one request and queues its answer; `permit` is its place among
/// the calls in flight, given back once the answer is queued.
async fn answer<S, B>(
    id: u64,
    request: http::Request<Full<Bytes>>,
    service: S,
    frames: mpsc::Sender<Bytes>,
    permit: OwnedSemaphorePermit,
) where
    S: Service<http::Request<Full<Bytes>>, Response = http::Response<B>, Error = Infallible>,
    B: Body<Data = Bytes>,
    B::Error: Display,
{
    let Ok(response) = service.oneshot(request).await;
    let (parts, body) = response.into_parts();
    let frame = match body.collect().await {
        Ok(body) => encode_response(id, parts.status, &parts.headers, &body.to_bytes()).unwrap_or_else(|e| {
            error_response(id, StatusCode::INTERNAL_SERVER_ERROR, &format!("the answer cannot be framed: {e}"))
        }),
        Err(e) => error_response(id, StatusCode::INTERNAL_SERVER_ERROR, &format!("the answer's body failed: {e}")),
    };
    // The writer is gone when the connection failed: nobody to tell.
    let _ = frames.send(frame).await;
    drop(permit);
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::Router;
    use axum::routing::{get, post};
    use futures::future;
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;
    use tokio_util::sync::CancellationToken;

    use super::*;

    /// A server whose routes answer `/echo` with the body (and a header),
    /// `/slow` after a second and `/status/{n}` with status `n`, over HTTP
    /// and multiplexed; `stop` ends its multiplexed connections.
    async fn serve_on(listener: TcpListener, stop: CancellationToken) -> JoinHandle<()> {
        let routes = Router::new()
            .route("/echo", post(|body: Bytes| async move { ([("x-echo", "yes")], body) }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    "late"
                }),
            )
            .route(
                "/status/{n}",
                get(|axum::extract::Path(n): axum::extract::Path<u16>| async move { StatusCode::from_u16(n).unwrap() }),
            );
        let served = routes.clone();
        let app = routes.route(
            PATH,
            get(move |request: axum::extract::Request| {
                let (served, stopping) = (served.clone(), stop.clone().cancelled_owned());
                async move { accept(request, served, ServeLimits::PEER, stopping) }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() })
    }

    async fn server() -> (SocketAddr, JoinHandle<()>, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        (addr, serve_on(listener, stop.clone()).await, stop)
    }

    const T: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn concurrent_calls_share_one_connection_and_get_their_own_answers() {
        let (addr, _server, _stop) = server().await;
        let (mux, addr) = (Mux::default(), addr.to_string());
        let calls = (0..200u32).map(|i| {
            let (mux, addr) = (&mux, &addr);
            async move {
                let body = Bytes::from(i.to_string().repeat(1 + i as usize % 50));
                let answer = mux.call(addr, Call::post("/echo", body.clone()), T).await.unwrap();
                assert_eq!((answer.status, answer.headers["x-echo"].to_str().unwrap()), (StatusCode::OK, "yes"));
                assert_eq!(answer.body, body);
            }
        });
        future::join_all(calls).await;
        let status = mux.call(&addr, Call::get("/status/409"), T).await.unwrap();
        assert_eq!(status.status, StatusCode::CONFLICT);
        assert_eq!(mux.peers.lock().unwrap().len(), 1);
        let link = mux.peer(&addr).current().expect("an open link");
        assert_eq!(link.received.load(Ordering::Relaxed), 201, "every call went over the one link");
    }

    #[tokio::test]
    async fn a_stopped_peer_breaks_its_calls_and_a_restarted_one_is_reconnected() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = serve_on(listener, stop.clone()).await;
        let mux = Mux::default();
        let first = mux.call(&addr.to_string(), Call::post("/echo", Bytes::from_static(b"1")), T).await.unwrap();
        assert_eq!(first.body, "1");
        server.abort();
        let _ = server.await;
        stop.cancel();
        // The old link closes as the peer does; the next call connects anew.
        let server = serve_on(TcpListener::bind(addr).await.unwrap(), CancellationToken::new()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let again = mux.call(&addr.to_string(), Call::post("/echo", Bytes::from_static(b"2")), T).await.unwrap();
        assert_eq!(again.body, "2");
        server.abort();
    }

    #[tokio::test]
    async fn a_call_in_flight_when_the_peer_stops_is_answered_first() {
        let (addr, _server, stop) = server().await;
        let mux = Mux::default();
        let addr = addr.to_string();
        mux.call(&addr, Call::post("/echo", Bytes::new()), T).await.unwrap();
        let slow = mux.call(&addr, Call::get("/slow"), T);
        let stopping = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            stop.cancel();
        };
        let (answer, ()) = tokio::join!(slow, stopping);
        assert_eq!(answer.unwrap().body, "late");
        // Then the connection closed: the next call needs a new one, which
        // the server (still up for HTTP) upgrades again.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(mux.peer(&addr).current().is_none());
    }

    #[tokio::test]
    async fn a_silent_peer_times_out_and_its_link_is_dropped() {
        let (addr, _server, _stop) = server().await;
        let mux = Mux::default();
        let addr = addr.to_string();
        let e = mux.call(&addr, Call::get("/slow"), Duration::from_millis(100)).await.unwrap_err();
        assert!(e.is_timeout(), "{e}");
        assert!(mux.peer(&addr).current().is_none(), "a link that answered nothing is presumed dead");
        let answer = mux.call(&addr, Call::post("/echo", Bytes::from_static(b"x")), T).await.unwrap();
        assert_eq!(answer.body, "x");
    }

    #[tokio::test]
    async fn an_invalid_request_is_refused_and_the_connection_carries_on() {
        let (addr, _server, _stop) = server().await;
        let (mux, addr) = (Mux::default(), addr.to_string());
        let e = mux.call(&addr, Call::get("no spaces allowed"), T).await.unwrap_err();
        assert!(matches!(e, Error::Unencodable(_)), "{e}");
        mux.call(&addr, Call::post("/echo", Bytes::new()), T).await.unwrap();
        // A frame that reaches the peer with an invalid header name.
        let link = mux.peer(&addr).current().unwrap();
        let (id, answer) = link.register().unwrap();
        let mut frame = BytesMut::new();
        begin(&mut frame, id);
        frame.put_u8(3);
        frame.put_slice(b"GET");
        frame.put_u16(5);
        frame.put_slice(b"/echo");
        frame.put_u16(1);
        frame.put_u8(3);
        frame.put_slice(b"a b");
        frame.put_u16(1);
        frame.put_slice(b"x");
        finish(&mut frame, 0).unwrap();
        link.frames.send(frame.freeze()).await.unwrap();
        let refused = answer.await.unwrap();
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
        assert!(String::from_utf8_lossy(&refused.body).contains("header name"), "{refused:?}");
        let after = mux.call(&addr, Call::post("/echo", Bytes::from_static(b"ok")), T).await.unwrap();
        assert_eq!(after.body, "ok");
        assert!(Arc::ptr_eq(&link, &mux.peer(&addr).current().unwrap()), "the same connection");
    }

    #[tokio::test]
    async fn a_peer_that_does_not_upgrade_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let plain = Router::new().route("/echo", post(|body: Bytes| async move { body }));
        let server = tokio::spawn(async move { axum::serve(listener, plain).await.unwrap() });
        let e = Mux::default().call(&addr.to_string(), Call::get("/echo"), T).await.unwrap_err();
        assert!(e.is_connect(), "{e}");
        assert!(e.to_string().contains("did not switch"), "{e}");
        server.abort();
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let e = Mux::default().call(&closed.to_string(), Call::get("/echo"), T).await.unwrap_err();
        assert!(e.is_connect(), "{e}");
    }

    #[tokio::test]
    async fn connections_leave_from_the_source_ip() {
        // Any 127/8 address is local on Linux: the server sees the source.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // The upgrade sees the connection's peer; calls on it are answered with it.
        let app = Router::new().route(
            PATH,
            get(
                |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
                 request: axum::extract::Request| async move {
                    let from = peer.ip().to_string();
                    let served = Router::new().route("/from", get(move || async move { from }));
                    accept(request, served, ServeLimits::PEER, future::pending())
                },
            ),
        );
        let server = tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap()
        });
        let source: IpAddr = "127.0.0.42".parse().unwrap();
        let mux = Mux::default().from_source(Some(source));
        let answer = mux.call(&addr.to_string(), Call::get("/from"), T).await.unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body, "127.0.0.42");
        let plain = Mux::default().call(&addr.to_string(), Call::get("/from"), T).await.unwrap();
        assert_eq!(plain.body, "127.0.0.1");
        let v6 = Mux::default().from_source(Some("::1".parse().unwrap()));
        let e = v6.call(&addr.to_string(), Call::get("/from"), T).await.unwrap_err();
        assert!(e.is_connect(), "{e}");
        server.abort();
    }

    fn call<'a>(path: &'a str, body: &'static [u8]) -> Call<'a> {
        Call::post(path, Bytes::from_static(body))
            .header(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(HeaderName::from_static("idempotency-key"), HeaderValue::from_static("k-1"))
    }

    #[test]
    fn a_request_decodes_as_it_was_encoded() {
        let frame = encode_request(42, &call("/books/3/buy?x=1", b"{\"quantity\":2}")).unwrap();
        let mut buf = BytesMut::from(&frame[..]);
        let Next::Frame(id, payload) = next_frame(&mut buf, MAX_FRAME).unwrap() else { panic!("a whole frame") };
        assert!(buf.is_empty());
        assert_eq!(id, 42);
        let request = decode_request(payload).unwrap();
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.uri(), "/books/3/buy?x=1");
        assert_eq!(request.headers()["content-type"], "application/json");
        assert_eq!(request.headers()["idempotency-key"], "k-1");
    }

    #[test]
    fn frames_split_anywhere_are_taken_whole() {
        let mut stream = BytesMut::new();
        for id in 0..3 {
            let mut headers = HeaderMap::new();
            headers.insert("x-bazar-index", HeaderValue::from(id * 10));
            stream.extend_from_slice(&encode_response(id, StatusCode::CREATED, &headers, b"body").unwrap());
        }
        let whole = stream.freeze();
        for cut in 0..whole.len() {
            let mut buf = BytesMut::from(&whole[..cut]);
            let mut got = Vec::new();
            while let Next::Frame(id, f) = next_frame(&mut buf, MAX_FRAME).unwrap() {
                got.push((id, f));
            }
            buf.extend_from_slice(&whole[cut..]);
            while let Next::Frame(id, f) = next_frame(&mut buf, MAX_FRAME).unwrap() {
                got.push((id, f));
            }
            assert_eq!(got.len(), 3, "cut at {cut}");
            for (i, (id, payload)) in got.into_iter().enumerate() {
                assert_eq!(id, i as u64);
                let r = decode_response(payload).unwrap();
                assert_eq!((r.status, &r.body[..]), (StatusCode::CREATED, &b"body"[..]));
                assert_eq!(r.headers["x-bazar-index"], (i * 10).to_string().as_str());
            }
        }
    }

    #[test]
    fn bad_frames_are_refused() {
        let mut huge = BytesMut::from(&((MAX_FRAME as u32) + 1).to_be_bytes()[..]);
        assert!(matches!(next_frame(&mut huge, MAX_FRAME), Ok(Next::More)), "the id is not there yet");
        huge.extend_from_slice(&7u64.to_be_bytes());
        assert!(matches!(next_frame(&mut huge, MAX_FRAME), Ok(Next::Oversized(7, n)) if n == MAX_FRAME - 7));
        let mut no_id = BytesMut::from(&[0u8, 0, 0, 2, 1, 2][..]);
        assert!(next_frame(&mut no_id, MAX_FRAME).is_err());
        // A header count promising more than the frame holds.
        let truncated = Bytes::from_static(&[0, 200, 0, 5]);
        assert!(decode_response(truncated).is_err());
        let bad_status = Bytes::from_static(&[0, 7, 0, 0]);
        assert!(decode_response(bad_status).is_err());
    }

    #[test]
    fn an_untrusted_header_count_allocates_nothing_and_cannot_panic() {
        // The 17-byte frame that used to reach `HeaderMap::with_capacity(65535)`:
        // a response with a header count of 0xFFFF and nothing after it.
        let mut frame = BytesMut::from(&[0u8, 0, 0, 12][..]);
        frame.extend_from_slice(&1u64.to_be_bytes());
        frame.extend_from_slice(&[0, 200, 0xFF, 0xFF, 0]);
        let Next::Frame(_, payload) = next_frame(&mut frame, MAX_FRAME).unwrap() else { panic!("a whole frame") };
        assert!(decode_response(payload).is_err());
        // A count above the cap, with bytes enough to back it.
        let mut many = BytesMut::new();
        many.put_u16(300);
        for _ in 0..300 {
            many.put_u8(1);
            many.put_u8(b'a');
            many.put_u16(0);
        }
        let e = get_headers(&mut many.freeze()).unwrap_err();
        assert!(e.to_string().contains("256 headers"), "{e}");
        // As many headers as allowed, all with the same name, decode.
        let mut same = BytesMut::new();
        same.put_u16(MAX_HEADERS as u16);
        for _ in 0..MAX_HEADERS {
            same.put_u8(1);
            same.put_u8(b'a');
            same.put_u16(1);
            same.put_u8(b'x');
        }
        assert_eq!(get_headers(&mut same.freeze()).unwrap().len(), MAX_HEADERS);
    }

    #[test]
    fn an_announced_length_alone_allocates_little() {
        let mut buf = BytesMut::from(&((MAX_FRAME as u32) - 1).to_be_bytes()[..]);
        buf.extend_from_slice(&[0; 8]);
        assert!(matches!(next_frame(&mut buf, MAX_FRAME), Ok(Next::More)));
        assert!(buf.capacity() <= RESERVE_AHEAD + 64, "reserved {} bytes", buf.capacity());
    }

    /// Serves `routes` on one end of an in-memory connection within `limits`;
    /// the other end is returned.
    fn served(routes: Router, limits: ServeLimits, pipe: usize) -> tokio::io::DuplexStream {
        let (ours, theirs) = tokio::io::duplex(pipe);
        tokio::spawn(serve(theirs, BytesMut::new(), routes, limits, future::pending::<()>()));
        ours
    }

    fn raw_request(id: u64, method: &str, target: &str, body: &[u8]) -> Bytes {
        let call = Call {
            method: Method::from_bytes(method.as_bytes()).unwrap(),
            path: target,
            headers: HeaderMap::new(),
            body: Bytes::copy_from_slice(body),
        };
        encode_request(id, &call).unwrap()
    }

    async fn read_answer(io: &mut tokio::io::DuplexStream, buf: &mut BytesMut) -> (u64, Response) {
        loop {
            if let Next::Frame(id, frame) = next_frame(buf, MAX_FRAME).unwrap() {
                return (id, decode_response(frame).unwrap());
            }
            assert!(io.read_buf(buf).await.unwrap() > 0, "the connection closed");
        }
    }

    #[tokio::test]
    async fn an_oversized_frame_is_refused_unread_and_the_connection_carries_on() {
        let limits = ServeLimits { max_frame: 4096, max_in_flight: 8 };
        let routes = Router::new().route("/echo", post(|body: Bytes| async move { body }));
        let mut io = served(routes, limits, 64 << 10);
        // 100 MB announced: refused from its head, its bytes dropped as they come.
        let mut head = BytesMut::new();
        head.put_u32(100_000_000);
        head.put_u64(9);
        io.write_all(&head).await.unwrap();
        let mut buf = BytesMut::new();
        let (id, answer) = read_answer(&mut io, &mut buf).await;
        assert_eq!((id, answer.status), (9, StatusCode::PAYLOAD_TOO_LARGE));
        let (mut r, mut w) = tokio::io::split(io);
        let writing = tokio::spawn(async move {
            let chunk = vec![0xAB; 1 << 20];
            for _ in 0..(100_000_000 - 8) / chunk.len() {
                w.write_all(&chunk).await.unwrap();
            }
            w.write_all(&chunk[..(100_000_000 - 8) % chunk.len()]).await.unwrap();
            w.write_all(&raw_request(10, "POST", "/echo", b"after")).await.unwrap();
            w
        });
        let mut rest = BytesMut::new();
        let answer = loop {
            if let Next::Frame(id, frame) = next_frame(&mut rest, MAX_FRAME).unwrap() {
                break (id, decode_response(frame).unwrap());
            }
            assert!(r.read_buf(&mut rest).await.unwrap() > 0);
        };
        assert_eq!((answer.0, answer.1.status, &answer.1.body[..]), (10, StatusCode::OK, &b"after"[..]));
        writing.await.unwrap();
    }

    #[tokio::test]
    async fn calls_in_flight_and_queued_answers_are_capped_per_connection() {
        use std::sync::atomic::AtomicUsize;
        let limits = ServeLimits { max_frame: 4096, max_in_flight: 4 };
        let (running, most, started) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (r, m, s) = (running.clone(), most.clone(), started.clone());
        let routes = Router::new().route(
            "/work",
            get(move || {
                let (r, m, s) = (r.clone(), m.clone(), s.clone());
                async move {
                    s.fetch_add(1, Ordering::SeqCst);
                    let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                    m.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    r.fetch_sub(1, Ordering::SeqCst);
                    // 64 KiB answers: a few fill the writer's batch.
                    vec![b'x'; 64 << 10]
                }
            }),
        );
        let io = served(routes, limits, 4096);
        let (mut reader, mut writer) = tokio::io::split(io);
        // A caller that sends 1000 calls and reads no answer.
        let sending = tokio::spawn(async move {
            for id in 0..1000 {
                writer.write_all(&raw_request(id, "GET", "/work", b"")).await.unwrap();
            }
        });
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(most.load(Ordering::SeqCst) <= 4, "at most 4 at once, saw {}", most.load(Ordering::SeqCst));
        // Served, then stuck: answers queued (4), in the writer's batch
        // (256 KiB: 4) and in the pipe, plus those holding a permit (4).
        let stuck = started.load(Ordering::SeqCst);
        assert!(stuck <= 16, "{stuck} calls served while the caller read nothing");
        assert!(!sending.is_finished(), "the server stopped reading");
        // Reading the answers lets everything through.
        let mut buf = BytesMut::new();
        let mut got = 0;
        while got < 1000 {
            if let Next::Frame(_, frame) = next_frame(&mut buf, MAX_FRAME).unwrap() {
                assert_eq!(decode_response(frame).unwrap().status, StatusCode::OK);
                got += 1;
                continue;
            }
            assert!(reader.read_buf(&mut buf).await.unwrap() > 0);
        }
        sending.await.unwrap();
        assert!(most.load(Ordering::SeqCst) <= 4);
    }

    #[tokio::test]
    async fn malformed_and_truncated_frames_never_stop_the_server() {
        let limits = ServeLimits::CLIENT;
        let routes = Router::new().route("/echo", post(|body: Bytes| async move { body }));
        // A malformed request: refused 400, the connection carries on.
        let mut io = served(routes.clone(), limits, 64 << 10);
        let mut bad = BytesMut::new();
        bad.put_u32(8 + 5);
        bad.put_u64(3);
        bad.put_slice(&[0, 0, 0, 0xFF, 0xFF]);
        io.write_all(&bad).await.unwrap();
        io.write_all(&raw_request(4, "POST", "/echo", b"fine")).await.unwrap();
        let mut buf = BytesMut::new();
        let (id, answer) = read_answer(&mut io, &mut buf).await;
        assert_eq!((id, answer.status), (3, StatusCode::BAD_REQUEST));
        let (id, answer) = read_answer(&mut io, &mut buf).await;
        assert_eq!((id, answer.status, &answer.body[..]), (4, StatusCode::OK, &b"fine"[..]));
        // A stream that ends inside a frame, or is not frames at all: that
        // connection ends, nothing else does.
        let mut cut = served(routes.clone(), limits, 64 << 10);
        cut.write_all(&raw_request(5, "POST", "/echo", b"cut")[..10]).await.unwrap();
        drop(cut);
        let mut junk = served(routes, limits, 64 << 10);
        junk.write_all(&[0, 0, 0, 1, 0xFF]).await.unwrap();
        let mut rest = Vec::new();
        assert_eq!(junk.read_to_end(&mut rest).await.unwrap(), 0, "closed without an answer");
    }
}

#[cfg(test)]
mod props {
    //! The decoder against arbitrary bytes: no panic, and no allocation
    //! sized by anything but the bytes received.
    use proptest::prelude::*;

    use super::*;

    fn valid_request(id: u64, body: Vec<u8>) -> Bytes {
        let call = Call::post("/books/1/buy?x=1", Bytes::from(body))
            .header(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        encode_request(id, &call).unwrap_or_default()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic_nor_allocate_much(bytes in proptest::collection::vec(any::<u8>(), 0..2048), cap in 8usize..1 << 20) {
            let mut buf = BytesMut::from(&bytes[..]);
            loop {
                match next_frame(&mut buf, cap) {
                    Ok(Next::Frame(_, frame)) => {
                        let _ = decode_request(frame.clone());
                        let _ = decode_response(frame);
                    }
                    Ok(Next::Oversized(_, _)) => {}
                    Ok(Next::More) | Err(_) => break,
                }
                prop_assert!(buf.capacity() <= bytes.len() + RESERVE_AHEAD);
            }
            prop_assert!(buf.capacity() <= bytes.len() + RESERVE_AHEAD);
            let payload = Bytes::from(bytes);
            let _ = decode_request(payload.clone());
            let _ = decode_response(payload.clone());
            let _ = get_headers(&mut payload.clone());
        }

        #[test]
        fn a_truncated_or_corrupted_frame_is_refused_not_a_panic(body in proptest::collection::vec(any::<u8>(), 0..512), cut in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let whole = valid_request(7, body);
            let cut = cut.index(whole.len());
            let mut buf = BytesMut::from(&whole[..cut]);
            prop_assert!(matches!(next_frame(&mut buf, MAX_FRAME), Ok(Next::More) | Err(_)));
            // Past the length and id, any byte of the request may be wrong.
            let mut corrupted = BytesMut::from(&whole[..]);
            let at = 12 + flip.index(whole.len() - 12);
            corrupted[at] = byte;
            if let Ok(Next::Frame(_, frame)) = next_frame(&mut corrupted, MAX_FRAME) {
                let _ = decode_request(frame.slice(..).clone());
                // And every prefix of the request.
                for end in 0..frame.len() {
                    let _ = decode_request(frame.slice(..end));
                }
            }
        }
    }
}
