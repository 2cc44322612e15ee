//! Calls between Bazar's own processes: the frontend's calls to the nodes
//! and the nodes' Raft RPCs to each other, multiplexed on one connection per
//! peer ([`Mux`], see [`mux`]).
//!
//! Calls carry whole bodies in both directions (`Bytes`), which is what RPCs
//! and forwarded API requests need; streams (snapshots, change feeds) use a
//! general client. A request that may have reached the peer is never sent
//! twice here: whether that is safe is the caller's decision.

#![warn(missing_docs)]

pub mod mux;
pub mod tls;

use std::io;
use std::time::Duration;

use bytes::Bytes;

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
    /// Headers.
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

/// Limits of a [`Mux`].
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest wait for a new connection to open and switch protocols.
    pub connect_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { connect_timeout: Duration::from_millis(500) }
    }
}

/// Resolves when the process is asked to stop: on SIGTERM (how scripts and
/// containers stop a server) or Ctrl-C. What the node's and the frontend's
/// `main` serve until.
///
/// # Panics
/// If the SIGTERM handler cannot be installed (no signal support).
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
