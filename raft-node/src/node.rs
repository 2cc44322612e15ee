//! The node: both groups, the tokens, and the node-wide state handlers share.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bazar_api::{ClusterStatus, Group, GroupStatus, NodeHealth};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use crate::config::NodeConfig;
use crate::http::metrics::HttpMetrics;
use crate::orders::Orders;
use crate::raft::RaftGroup;
use crate::raft::network::Peers;
use crate::sm::NodeId;
use crate::store::Store;

/// Everything a request handler or background task of this node needs.
pub struct Node {
    /// This node's id.
    pub id: NodeId,
    /// Its advertised address.
    pub addr: String,
    /// The catalog group.
    pub catalog: Arc<RaftGroup<Catalog>>,
    /// The orders group.
    pub orders: Arc<RaftGroup<Orders>>,
    /// The database both groups live in.
    pub store: Store,
    /// HTTP clients for the peers.
    pub peers: Arc<Peers>,
    /// The resolved configuration.
    pub config: NodeConfig,
    /// Orders some task of this node is settling right now (see [`crate::buy`]).
    pub settling: Mutex<HashSet<u64>>,
    /// Request counters and latencies.
    pub http_metrics: HttpMetrics,
    /// Cancelled when the node shuts down; long-lived streams watch it.
    pub shutdown: CancellationToken,
}

impl Node {
    /// The deadline of a request starting now.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.config.request_timeout
    }

    /// The request timeout.
    pub fn request_timeout(&self) -> Duration {
        self.config.request_timeout
    }

    /// Whether the admin token matches (in constant time).
    pub fn is_admin_token(&self, presented: &str) -> bool {
        constant_time_eq(presented.as_bytes(), self.config.admin_token.as_bytes())
    }

    /// Whether the cluster token matches (in constant time).
    pub fn is_cluster_token(&self, presented: &str) -> bool {
        constant_time_eq(presented.as_bytes(), self.config.cluster_token.as_bytes())
    }

    /// Each group's status.
    pub fn groups(&self) -> Vec<GroupStatus> {
        vec![self.catalog.status(), self.orders.status()]
    }

    /// `GET /cluster`.
    pub fn cluster_status(&self) -> ClusterStatus {
        ClusterStatus { node_id: self.id, addr: self.addr.clone(), groups: self.groups() }
    }

    /// `GET /health`.
    pub async fn health(&self) -> NodeHealth {
        let initialized = self.catalog.raft().is_initialized().await.unwrap_or(false)
            && self.orders.raft().is_initialized().await.unwrap_or(false);
        let catalog_seeded = Catalog::is_seeded(&self.catalog.view()).unwrap_or(false);
        let leaders = [
            (Group::Catalog, self.catalog.leader().map(|(id, _)| id)),
            (Group::Orders, self.orders.leader().map(|(id, _)| id)),
        ]
        .into_iter()
        .collect();
        let groups =
            [(Group::Catalog, self.catalog.health()), (Group::Orders, self.orders.health())].into_iter().collect();
        NodeHealth { status: "ok".into(), node_id: self.id, initialized, catalog_seeded, leaders, groups }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison_needs_exact_match() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
