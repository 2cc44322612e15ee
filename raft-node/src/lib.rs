//! A Bazar replica.
//!
//! One `raft-node` process hosts a member of each of Bazar's two Raft groups
//! (openraft): the **catalog** (books and stock) and the **orders**. Both
//! groups keep their logs and state machines in one RocksDB instance, and one
//! HTTP server carries the client API, the admin API, the change-event stream
//! and both groups' Raft RPCs.
//!
//! Where to find what:
//! - [`store`]: RocksDB, column families, the durable Raft log with group commit;
//! - [`sm`]: the state-machine contract, write batching, snapshots;
//! - [`catalog`], [`orders`]: the two state machines;
//! - [`raft`]: a group on this node, its network, leader forwarding and follower reads;
//! - [`buy`]: the buy protocol across the two groups and pending-order recovery;
//! - [`http`]: the HTTP edge (routes, errors as problem+json, auth, `/watch`, metrics);
//! - [`bootstrap`], [`seed`]: founding a cluster and loading its first books.

pub mod bootstrap;
pub mod buy;
pub mod catalog;
pub mod config;
pub mod error;
pub mod http;
pub mod node;
pub mod orders;
pub mod raft;
pub mod seed;
pub mod sm;
pub mod store;
pub mod watch;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bazar_api::Group;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{Args, NodeConfig};
pub use error::{Error, Result};

use crate::catalog::Catalog;
use crate::node::Node;
use crate::orders::Orders;
use crate::raft::RaftGroup;
use crate::raft::network::Peers;
use crate::store::Store;

/// How long open connections get to finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs a node on `listener` until `shutdown` resolves, then stops serving,
/// lets requests in flight finish (for up to five seconds), and shuts both
/// Raft groups down.
pub async fn run(
    config: NodeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = Store::open(&config.data_dir)?;
    let peers = Peers::new(config.cluster_token.clone());
    let catalog = RaftGroup::<Catalog>::open(
        config.id,
        Arc::new(config.raft_config(Group::Catalog)?),
        store.clone(),
        &config.data_dir,
        peers.clone(),
    )
    .await?;
    let orders = RaftGroup::<Orders>::open(
        config.id,
        Arc::new(config.raft_config(Group::Orders)?),
        store.clone(),
        &config.data_dir,
        peers.clone(),
    )
    .await?;
    let node = Arc::new(Node {
        id: config.id,
        addr: config.advertise.clone(),
        catalog,
        orders,
        store,
        peers,
        config,
        settling: Default::default(),
        http_metrics: Default::default(),
        shutdown: CancellationToken::new(),
    });
    tracing::info!(
        node_id = node.id,
        addr = %node.addr,
        data_dir = %node.config.data_dir.display(),
        "raft node started"
    );

    let background = [tokio::spawn(bootstrap::run(node.clone())), tokio::spawn(buy::resume_pending(node.clone()))];

    let token = node.shutdown.clone();
    let stop = async move {
        shutdown.await;
        tracing::info!("shutting down");
        token.cancel();
    };
    let server = axum::serve(listener, http::app(node.clone())).with_graceful_shutdown(stop);
    let served = tokio::spawn(async move { server.await });
    node.shutdown.cancelled().await;
    match tokio::time::timeout(DRAIN_TIMEOUT, served).await {
        Ok(result) => result??,
        Err(_) => tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing them"),
    }
    for task in background {
        task.abort();
    }
    if let Err(e) = node.catalog.raft().shutdown().await {
        tracing::warn!(error = %e, "stopping the catalog group");
    }
    if let Err(e) = node.orders.raft().shutdown().await {
        tracing::warn!(error = %e, "stopping the orders group");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Sets up logging for a node binary.
pub fn init_tracing(format: config::LogFormat, node_id: u64) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        config::LogFormat::Json => builder.json().flatten_event(true).init(),
        config::LogFormat::Text => builder.init(),
    }
    tracing::debug!(node_id, "logging initialized");
}
