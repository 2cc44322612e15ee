//! The addresses a node serves on: one or more TCP listeners (say, one
//! address for clients and one that peers reach it at, see `--listen`)
//! behind one server, so that every route answers on each of them; with
//! TLS (see [`bazar_net::tls`]), every connection is TLS, its handshake run
//! apart so that a slow one holds up no other.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use bazar_net::tls::{Conn, Handshakes, Tls};
use tokio::net::TcpListener;

/// Listeners served as one: a connection accepted on any of them.
pub struct Listeners {
    listeners: Vec<TcpListener>,
    tls: Option<Arc<Tls>>,
    handshakes: Handshakes,
}

/// Whether a connection's client presented a certificate signed by the
/// cluster's CA (always false without TLS): what the Raft routes and the
/// multiplexed connections need under TLS. Handlers read it as
/// `ConnectInfo<PeerCert>`; calls served on a multiplexed connection have
/// none (the connection was checked when it was opened).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCert(pub bool);

impl Connected<IncomingStream<'_, Listeners>> for PeerCert {
    fn connect_info(stream: IncomingStream<'_, Listeners>) -> Self {
        PeerCert(stream.io().peer_verified())
    }
}

impl Listeners {
    /// Binds every address of `addrs`.
    pub async fn bind(addrs: &[SocketAddr]) -> anyhow::Result<Listeners> {
        let mut listeners = Vec::with_capacity(addrs.len());
        for addr in addrs {
            listeners.push(TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?);
        }
        Ok(Listeners::new(listeners))
    }

    fn new(listeners: Vec<TcpListener>) -> Listeners {
        Listeners { listeners, tls: None, handshakes: Handshakes::default() }
    }

    /// Serves TLS with `tls` (when given) on every connection.
    pub fn with_tls(mut self, tls: Option<Arc<Tls>>) -> Listeners {
        self.tls = tls;
        self
    }

    /// The addresses listened on.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().filter_map(|l| l.local_addr().ok()).collect()
    }
}

impl From<TcpListener> for Listeners {
    fn from(listener: TcpListener) -> Self {
        Listeners::new(vec![listener])
    }
}

impl axum::serve::Listener for Listeners {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        let Listeners { listeners, tls, handshakes } = self;
        loop {
            let accept_any = async {
                if listeners.is_empty() {
                    return std::future::pending().await;
                }
                // Each accept retries its own errors (axum's listener does);
                // one left waiting is dropped, which loses no connection.
                let accepts = listeners.iter_mut().map(|l| Box::pin(axum::serve::Listener::accept(l)));
                futures::future::select_all(accepts).await.0
            };
            tokio::select! {
                conn = handshakes.next() => return conn,
                (tcp, addr) = accept_any => {
                    // Nagle's algorithm off on every connection: a multiplexed
                    // connection (the frontend's or a peer's, see
                    // `bazar_net::mux`) already gathers its answers into few
                    // writes, and with Nagle a write behind an unacknowledged
                    // one waits for the peer's delayed ACK (measured: the p99
                    // of linearizable lookups through the frontend 15-17 ms
                    // with it, 8 ms without).
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                    }
                    match tls {
                        Some(tls) => handshakes.start(tls.clone(), tcp, addr),
                        None => return (Conn::Plain(tcp), addr),
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        match self.listeners.first() {
            Some(l) => l.local_addr(),
            None => Err(io::Error::new(io::ErrorKind::AddrNotAvailable, "no listener")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_to_any_address_are_accepted() {
        let addrs: Vec<SocketAddr> = vec!["127.0.0.1:0".parse().unwrap(), "127.0.0.43:0".parse().unwrap()];
        let mut listeners = Listeners::bind(&addrs).await.unwrap();
        let bound = listeners.local_addrs();
        assert_eq!(bound.len(), 2);
        for addr in bound {
            let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (stream, _) = axum::serve::Listener::accept(&mut listeners).await;
            assert_eq!(stream.tcp().local_addr().unwrap(), addr);
        }
    }
}
