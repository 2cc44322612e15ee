//! Calls between Bazar's own processes: the nodes' Raft RPCs to each other
//! over pooled HTTP/1.1 connections ([`Pool`]), and the frontend's calls to
//! the nodes multiplexed on one connection per node ([`mux`]).
//!
//! A [`Pool`] keeps idle keep-alive connections per peer address. A call
//! takes one, and the task that makes the call drives the connection itself
//! (hyper's connection future is polled next to the request) until the whole
//! answer is read; then the connection goes back to the pool. A general
//! client (reqwest over hyper-util's pool) runs every connection on a task
//! of its own, so each call wakes that task to write, and it wakes the
//! caller when the answer arrives: two cross-task (often cross-thread)
//! wake-ups per call, which on a busy 2-CPU machine cost more than the HTTP
//! itself. Here a call is woken only by its socket.
//!
//! Calls carry whole bodies in both directions (`Bytes`), which is what RPCs
//! and forwarded API requests need; streams (snapshots, change feeds) use a
//! general client.
//!
//! Stale connections: a peer may close an idle connection (it restarted,
//! say). A connection taken from the pool is checked first, and a request
//! that hyper reports as never written is sent again on another connection,
//! so a restarted peer costs no failed call. A request that may have reached
//! the peer is never sent twice here: whether that is safe is the caller's
//! decision.

pub mod mux;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures::future::{self, Either};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

pub use mux::Mux;

pub use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No connection could be opened: the request was never delivered.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The peer.
        addr: String,
        /// What connecting reported.
        source: io::Error,
    },
    /// No whole answer within the call's timeout; the request may or may not
    /// have been processed.
    #[error("no answer from {addr} within {timeout:?}")]
    Timeout {
        /// The peer.
        addr: String,
        /// The call's timeout.
        timeout: Duration,
    },
    /// The request could not be built (an invalid path or header).
    #[error("invalid request: {0}")]
    Request(#[from] http::Error),
    /// The request cannot be put in a frame (see [`mux`]).
    #[error("invalid request: {0}")]
    Unencodable(#[from] mux::Malformed),
    /// A multiplexed connection closed while the call waited for its
    /// answer; the request may or may not have been processed.
    #[error("{addr}: {reason}")]
    Broken {
        /// The peer.
        addr: String,
        /// Why the connection closed.
        reason: String,
    },
    /// The exchange failed after the connection was open (a reset, an
    /// unparsable answer); the request may or may not have been processed.
    #[error("{addr}: {source}")]
    Failed {
        /// The peer.
        addr: String,
        /// What hyper reported.
        source: hyper::Error,
    },
}

impl Error {
    /// Whether the request was certainly never delivered.
    pub fn is_connect(&self) -> bool {
        matches!(self, Error::Connect { .. })
    }

    /// Whether the call ran out of time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }
}

/// A whole answer.
#[derive(Debug)]
pub struct Response {
    /// HTTP status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

/// A call to make: `method` on `path` (with its query) at a peer.
#[derive(Debug)]
pub struct Call<'a> {
    /// Method.
    pub method: Method,
    /// Origin-form target: the path and the query (`/books/1?consistency=lease`).
    pub path: &'a str,
    /// Headers; `Host` and `Content-Length` are set here.
    pub headers: HeaderMap,
    /// Body (empty for none).
    pub body: Bytes,
}

impl<'a> Call<'a> {
    /// A `GET path` with no headers.
    pub fn get(path: &'a str) -> Self {
        Call { method: Method::GET, path, headers: HeaderMap::new(), body: Bytes::new() }
    }

    /// A `POST path` with `body`.
    pub fn post(path: &'a str, body: Bytes) -> Self {
        Call { method: Method::POST, path, headers: HeaderMap::new(), body }
    }

    /// Adds a header.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }
}

type Driver = http1::Connection<TokioIo<TcpStream>, Full<Bytes>>;

/// One open connection: hyper's request handle and the future that does
/// the connection's reads and writes.
struct Conn {
    send: http1::SendRequest<Full<Bytes>>,
    driver: Driver,
}

impl Conn {
    /// Whether the connection can take a request: lets it notice a close by
    /// the peer (one poll, without waiting), then asks hyper.
    fn usable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(&mut self.driver).poll(&mut cx) {
            Poll::Ready(_) => false,
            Poll::Pending => self.send.is_ready(),
        }
    }
}

/// Limits of a [`Pool`].
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest wait for a new connection to open.
    pub connect_timeout: Duration,
    /// Most idle connections kept per peer.
    pub max_idle_per_peer: usize,
    /// Idle connections older than this are closed rather than reused.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connect_timeout: Duration::from_millis(500),
            max_idle_per_peer: 64,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Idle keep-alive connections, per peer address (`host:port`).
pub struct Pool {
    limits: Limits,
    idle: Mutex<HashMap<String, Vec<(Conn, Instant)>>>,
}

impl Default for Pool {
    fn default() -> Self {
        Pool::new(Limits::default())
    }
}

/// What one attempt on one connection gave.
// A connection is large, but an `Attempt` lives for one call on the stack:
// moving it is cheaper than a heap allocation per call.
#[allow(clippy::large_enum_variant)]
enum Attempt {
    /// A whole answer, and the connection when it can be reused.
    Answered(Response, Option<Conn>),
    /// hyper did not write the request (the connection was closed first):
    /// here it is back, to send on another connection.
    NotSent(http::Request<Full<Bytes>>),
    /// Failed after the request may have been written.
    Failed(hyper::Error),
}

impl Pool {
    /// An empty pool.
    pub fn new(limits: Limits) -> Self {
        Pool { limits, idle: Mutex::new(HashMap::new()) }
    }

    /// Makes `call` at `addr` (`host:port`) and reads the whole answer, all
    /// within `timeout`.
    pub async fn call(&self, addr: &str, call: Call<'_>, timeout: Duration) -> Result<Response, Error> {
        let mut request = http::Request::builder().method(call.method).uri(call.path).body(Full::new(call.body))?;
        *request.headers_mut() = call.headers;
        request.headers_mut().insert(header::HOST, HeaderValue::from_str(addr).map_err(http::Error::from)?);
        match tokio::time::timeout(timeout, self.exchange(addr, request)).await {
            Ok(answer) => answer,
            Err(_) => Err(Error::Timeout { addr: addr.to_string(), timeout }),
        }
    }

    async fn exchange(&self, addr: &str, mut request: http::Request<Full<Bytes>>) -> Result<Response, Error> {
        loop {
            let (conn, reused) = match self.take_idle(addr) {
                Some(conn) => (conn, true),
                None => (self.connect(addr).await?, false),
            };
            match attempt(conn, request).await {
                Attempt::Answered(response, conn) => {
                    if let Some(conn) = conn {
                        self.put_idle(addr, conn);
                    }
                    return Ok(response);
                }
                // A pooled connection the peer had closed: the request never
                // left, so it goes out on the next one (at worst a new one).
                Attempt::NotSent(again) if reused => request = again,
                Attempt::NotSent(_) => {
                    let source = io::Error::new(io::ErrorKind::ConnectionAborted, "closed before the request was sent");
                    return Err(Error::Connect { addr: addr.to_string(), source });
                }
                Attempt::Failed(source) => return Err(Error::Failed { addr: addr.to_string(), source }),
            }
        }
    }

    fn take_idle(&self, addr: &str) -> Option<Conn> {
        loop {
            let (mut conn, since) = self.idle.lock().expect("pool poisoned").get_mut(addr)?.pop()?;
            if since.elapsed() < self.limits.idle_timeout && conn.usable() {
                return Some(conn);
            }
        }
    }

    fn put_idle(&self, addr: &str, conn: Conn) {
        let mut idle = self.idle.lock().expect("pool poisoned");
        // The peer's list exists after its first call: no key is allocated
        // on the way back from every later one.
        let conns = match idle.get_mut(addr) {
            Some(conns) => conns,
            None => idle.entry(addr.to_string()).or_default(),
        };
        if conns.len() < self.limits.max_idle_per_peer {
            conns.push((conn, Instant::now()));
        }
    }

    async fn connect(&self, addr: &str) -> Result<Conn, Error> {
        let failed = |source| Error::Connect { addr: addr.to_string(), source };
        let stream = match tokio::time::timeout(self.limits.connect_timeout, TcpStream::connect(addr)).await {
            Ok(stream) => stream.map_err(failed)?,
            Err(_) => return Err(failed(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))),
        };
        stream.set_nodelay(true).map_err(failed)?;
        let (send, driver) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Error::Failed { addr: addr.to_string(), source: e })?;
        Ok(Conn { send, driver })
    }
}

/// Sends `request` on `conn` and reads the whole answer, polling the
/// connection's driver in this task meanwhile.
async fn attempt(conn: Conn, request: http::Request<Full<Bytes>>) -> Attempt {
    let Conn { mut send, driver } = conn;
    let exchange = pin!(async move {
        let answer = async {
            // A connection that closed before taking the request never sent it.
            if future::poll_fn(|cx| send.poll_ready(cx)).await.is_err() {
                return Err(Ok(request));
            }
            let response = send.try_send_request(request).await.map_err(|mut e| match e.take_message() {
                Some(request) => Ok(request),
                None => Err(e.into_error()),
            })?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map_err(Err)?.to_bytes();
            Ok::<_, Result<_, hyper::Error>>(Response { status: parts.status, headers: parts.headers, body })
        }
        .await;
        (answer, send)
    });
    let (answer, conn) = match future::select(exchange, driver).await {
        Either::Left(((answer, send), driver)) => (answer, Some(Conn { send, driver })),
        // The connection ended first (the peer closed it, or it broke), and
        // `select` dropped its driver: the exchange now learns how it ended.
        // A peer that answers and then closes (`Connection: close`) still
        // gave a whole answer.
        Either::Right((_, exchange)) => (exchange.await.0, None),
    };
    match answer {
        Ok(response) => Attempt::Answered(response, conn),
        Err(Ok(request)) => Attempt::NotSent(request),
        Err(Err(e)) => Attempt::Failed(e),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::Router;
    use axum::extract::ConnectInfo;
    use axum::routing::{get, post};
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;

    use super::*;

    /// A server that answers `/peer` with the caller's address, `/echo` with
    /// the body it got, and `/slow` after a second.
    async fn serve(listener: TcpListener) -> JoinHandle<()> {
        let app = Router::new()
            .route("/peer", get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }))
            .route("/echo", post(|body: Bytes| async move { ([("x-echo", "yes")], body) }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    "late"
                }),
            );
        tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap();
        })
    }

    async fn server() -> (String, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        (addr, serve(listener).await)
    }

    const T: Duration = Duration::from_secs(10);

    async fn peer(pool: &Pool, addr: &str) -> String {
        let answer = pool.call(addr, Call::get("/peer"), T).await.unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        String::from_utf8(answer.body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn answers_whole_and_reuses_the_connection() {
        let (addr, _server) = server().await;
        let pool = Pool::default();
        let body = Bytes::from(vec![7u8; 100_000]);
        let call = Call::post("/echo", body.clone())
            .header(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        let answer = pool.call(&addr, call, T).await.unwrap();
        assert_eq!((answer.status, answer.body), (StatusCode::OK, body));
        assert_eq!(answer.headers.get("x-echo").unwrap(), "yes");
        let first = peer(&pool, &addr).await;
        assert_eq!(peer(&pool, &addr).await, first, "the second call went over the same connection");
    }

    #[tokio::test]
    async fn concurrent_calls_each_get_their_own_answer() {
        let (addr, _server) = server().await;
        let pool = Pool::default();
        let calls = (0..32u8).map(|i| {
            let (pool, addr) = (&pool, &addr);
            async move { pool.call(addr, Call::post("/echo", Bytes::from(vec![i; 1000])), T).await.unwrap().body }
        });
        let bodies = future::join_all(calls).await;
        for (i, body) in bodies.into_iter().enumerate() {
            assert_eq!(body, Bytes::from(vec![i as u8; 1000]));
        }
    }

    #[tokio::test]
    async fn a_restarted_peer_costs_no_failed_call() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = serve(listener).await;
        let pool = Pool::default();
        let before = peer(&pool, &addr.to_string()).await;
        // The peer goes away with the pooled connection, and comes back on
        // the same port.
        server.abort();
        let _ = server.await;
        let server = serve(TcpListener::bind(addr).await.unwrap()).await;
        let after = peer(&pool, &addr.to_string()).await;
        assert_ne!(after, before, "a new connection");
        server.abort();
    }

    #[tokio::test]
    async fn a_closed_port_is_a_connect_error() {
        let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let e = Pool::default().call(&port.to_string(), Call::get("/peer"), T).await.unwrap_err();
        assert!(e.is_connect(), "{e}");
    }

    #[tokio::test]
    async fn a_slow_answer_times_out_and_its_connection_is_not_reused() {
        let (addr, _server) = server().await;
        let pool = Pool::default();
        let first = peer(&pool, &addr).await;
        let e = pool.call(&addr, Call::get("/slow"), Duration::from_millis(100)).await.unwrap_err();
        assert!(e.is_timeout(), "{e}");
        let next = peer(&pool, &addr).await;
        assert_ne!(next, first, "the timed-out connection was dropped, not pooled");
    }

    #[tokio::test]
    async fn an_invalid_target_is_refused_before_connecting() {
        let e = Pool::default().call("127.0.0.1:1", Call::get("no spaces allowed"), T).await.unwrap_err();
        assert!(matches!(e, Error::Request(_)), "{e}");
    }
}
