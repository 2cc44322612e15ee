//! The addresses a node serves on: one or more TCP listeners (say, one
//! address for clients and one that peers reach it at, see `--listen`)
//! behind one server, so that every route answers on each of them.

use std::io;
use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream};

/// Listeners served as one: a connection accepted on any of them.
pub struct Listeners(Vec<TcpListener>);

impl Listeners {
    /// Binds every address of `addrs`.
    pub async fn bind(addrs: &[SocketAddr]) -> anyhow::Result<Listeners> {
        let mut listeners = Vec::with_capacity(addrs.len());
        for addr in addrs {
            listeners.push(TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?);
        }
        Ok(Listeners(listeners))
    }

    /// The addresses listened on.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.0.iter().filter_map(|l| l.local_addr().ok()).collect()
    }
}

impl From<TcpListener> for Listeners {
    fn from(listener: TcpListener) -> Self {
        Listeners(vec![listener])
    }
}

impl axum::serve::Listener for Listeners {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        if self.0.is_empty() {
            return std::future::pending().await;
        }
        // Each accept retries its own errors (axum's listener does); one
        // left waiting is dropped, which loses no connection.
        let accepts = self.0.iter_mut().map(|l| Box::pin(axum::serve::Listener::accept(l)));
        futures::future::select_all(accepts).await.0
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        match self.0.first() {
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
            let _client = TcpStream::connect(addr).await.unwrap();
            let (stream, _) = axum::serve::Listener::accept(&mut listeners).await;
            assert_eq!(stream.local_addr().unwrap(), addr);
        }
    }
}
