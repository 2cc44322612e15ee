//! A node's outgoing peer connections leave from its peer IP
//! (`--peer-source-ip`, or the advertised IP when the node listens on it):
//! both the multiplexed connection of Raft RPCs and forwarded calls, and the
//! HTTP client of snapshots and the bootstrap.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bazar_node::raft::network::Peers;
use tokio::net::TcpListener;

/// Accepts one connection on `listener` and returns where it came from.
async fn next_source(listener: &TcpListener) -> SocketAddr {
    let (_stream, from) = tokio::time::timeout(Duration::from_secs(5), listener.accept()).await.unwrap().unwrap();
    from
}

#[tokio::test]
async fn rpcs_and_streams_to_peers_leave_from_the_peer_ip() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let source: IpAddr = "127.0.0.44".parse().unwrap();
    let peers = Peers::new("token".into(), Some(source), None);

    // An RPC: the multiplexed connection (the listener never upgrades it).
    let rpc = peers.call::<_, ()>(&addr, "/raft/catalog/vote", &1u64, Duration::from_millis(300));
    let (from, _) = tokio::join!(next_source(&listener), rpc);
    assert_eq!(from.ip(), source);

    // A stream: the HTTP client.
    let request = peers.client(&addr).get(format!("http://{addr}/")).timeout(Duration::from_millis(300)).send();
    let (from, _) = tokio::join!(next_source(&listener), request);
    assert_eq!(from.ip(), source);

    // Without a source IP the system picks 127.0.0.1 for a loopback peer.
    let plain = Peers::new("token".into(), None, None);
    let rpc = plain.call::<_, ()>(&addr, "/raft/catalog/vote", &1u64, Duration::from_millis(300));
    let (from, _) = tokio::join!(next_source(&listener), rpc);
    assert_eq!(from.ip(), IpAddr::from([127, 0, 0, 1]));
}
