//! The node: both groups, the tokens, and the node-wide state handlers share,
//! and what the node does to both groups at once (hand leadership off before
//! it stops).

use std::sync::Arc;
use std::time::Duration;

use bazar_api::{ClusterStatus, Group, GroupStatus, NodeHealth, StateLost};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::buy::NodeCoordinator;
use crate::catalog::Catalog;
use crate::config::NodeConfig;
use crate::error::Result;
use crate::group::AnyGroup;
use crate::incarnation::{self, Incarnation};
use crate::orders::Orders;
use crate::raft::RaftGroup;
use crate::raft::network::Peers;
use crate::sm::NodeId;
use crate::stats::RaftCounters;
use crate::store::Store;

/// Everything a request handler or background task of this node needs.
pub struct Node {
    /// This node's id.
    pub id: NodeId,
    /// Its advertised address.
    pub addr: String,
    /// Its data directory's incarnation (see [`crate::incarnation`]).
    pub incarnation: Incarnation,
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
    /// The buy protocol across both groups (see [`crate::buy`]).
    pub buy: Arc<NodeCoordinator>,
    /// What the retention purge did on this node.
    pub retention: crate::stats::RetentionStats,
    /// The last count of unsettled buys, for `/health`.
    pub unclaimed: tokio::sync::Mutex<Option<(Instant, u64)>>,
    /// Cancelled when the node shuts down; long-lived streams watch it.
    pub shutdown: CancellationToken,
    /// When the process started serving (see [`Node::vote_quarantine_left`]).
    pub started: std::time::Instant,
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

    /// How long after its start a node neither votes nor campaigns: the
    /// followers' promise not to vote (openraft's leader lease, the maximum
    /// election timeout), plus a tenth. A leader's read lease, on a clock
    /// up to `--max-clock-rate-ratio` times slower, lasts at most the
    /// minimum election timeout on this node's clock
    /// ([`crate::config::NodeConfig::read_lease`]), well within it.
    pub fn vote_quarantine(&self) -> Duration {
        let lease = Duration::from_millis(self.config.election_timeout_ms.1);
        lease + lease / 10
    }

    /// While this node is in its vote quarantine, how much of it is left.
    ///
    /// A follower that acknowledged a leader's heartbeat promised not to
    /// vote for another leader within the lease, and the leader serves
    /// `lease` reads on that promise. The promise lives in memory only: a
    /// follower that restarts would vote at once, and a new leader could
    /// commit writes the old one, still within its lease, does not show.
    /// Waiting one lease period after starting keeps the promise whatever
    /// it was (assuming clocks that advance at nearly the same rate).
    pub fn vote_quarantine_left(&self) -> Option<Duration> {
        self.vote_quarantine().checked_sub(self.started.elapsed()).filter(|d| !d.is_zero())
    }

    /// Whether the admin token matches (in constant time).
    pub fn is_admin_token(&self, presented: &str) -> bool {
        constant_time_eq(presented.as_bytes(), self.config.admin_token.as_bytes())
    }

    /// Whether `presented` is the frontend token (in constant time); never
    /// when the node has none.
    pub fn is_frontend_token(&self, presented: &str) -> bool {
        self.config.frontend_token.as_ref().is_some_and(|t| constant_time_eq(presented.as_bytes(), t.as_bytes()))
    }

    /// Whether the cluster token matches (in constant time).
    pub fn is_cluster_token(&self, presented: &str) -> bool {
        constant_time_eq(presented.as_bytes(), self.config.cluster_token.as_bytes())
    }

    /// Each group's status, members that refused this node's RPCs as
    /// another incarnation marked.
    pub fn groups(&self) -> Vec<GroupStatus> {
        let mut groups: Vec<GroupStatus> = Group::ALL.iter().map(|g| self.group(*g).status()).collect();
        for alarm in self.peers.alarms().refusals_by_peers() {
            for m in groups.iter_mut().flat_map(|g| g.members.iter_mut()).filter(|m| m.node_id == alarm.peer) {
                m.state_lost = Some(format!(
                    "state lost: remove and re-add ({}): it is incarnation {}, the membership records {}",
                    incarnation::recovery(alarm.peer),
                    incarnation::hex(alarm.found),
                    incarnation::hex(alarm.expected),
                ));
            }
        }
        groups
    }

    /// `GET /cluster`.
    pub fn cluster_status(&self) -> ClusterStatus {
        ClusterStatus {
            node_id: self.id,
            addr: self.addr.clone(),
            groups: self.groups(),
            incarnation: Some(incarnation::hex(self.incarnation)),
            state_lost: self.state_lost(),
        }
    }

    /// Whether this node refused a peer's RPCs recently because the peer
    /// knows it as another incarnation: it lost its state.
    pub fn state_lost(&self) -> Option<StateLost> {
        let alarm = self.peers.alarms().refusals().into_iter().max_by_key(|a| a.count)?;
        let recovery = incarnation::recovery(self.id);
        Some(StateLost {
            message: format!(
                "state lost: remove and re-add ({recovery}): node {} knows this node as incarnation {}, \
                 its data directory is incarnation {}; it refuses to vote or acknowledge as that member",
                alarm.peer,
                incarnation::hex(alarm.expected),
                incarnation::hex(alarm.found),
            ),
            recovery,
            incarnation: incarnation::hex(self.incarnation),
            on_record: incarnation::hex(alarm.expected),
            noticed_by: alarm.peer,
            group: alarm.group,
        })
    }

    /// The handle on `group`, whichever it is.
    pub fn group(&self, group: Group) -> &dyn AnyGroup {
        match group {
            Group::Catalog => &*self.catalog,
            Group::Orders => &*self.orders,
        }
    }

    /// The counters of `group`.
    pub fn counters(&self, group: Group) -> &RaftCounters {
        self.group(group).counters()
    }

    /// Whether this node leads `group`.
    pub fn leads(&self, group: Group) -> bool {
        self.group(group).is_leader()
    }

    /// Hands leadership of `group` to `to` (by default the most up-to-date
    /// live voter) and waits up to `timeout` for another node to lead; see
    /// [`crate::membership::transfer_leadership`].
    pub async fn transfer_leadership(&self, group: Group, to: Option<NodeId>, timeout: Duration) -> Result<NodeId> {
        self.group(group).transfer_leadership(to, timeout).await
    }

    /// Before stopping: for each group this node leads, hands leadership to
    /// an up-to-date voter, both groups at once, waiting at most
    /// `--shutdown-handoff-ms`. The HTTP server must still be serving, since
    /// peers reach this node's Raft through it.
    ///
    /// Without this, a stopping leader's followers notice only after an
    /// election timeout, and writes wait that long; with it, they wait for
    /// one vote. A failed hand-off is logged and the node stops anyway.
    pub async fn hand_off_leadership(&self) {
        let timeout = self.config.shutdown_handoff;
        if timeout.is_zero() {
            return;
        }
        let hand_off = |group: Group| async move {
            if !self.leads(group) {
                return;
            }
            if let Err(e) = self.transfer_leadership(group, None, timeout).await {
                tracing::warn!(group = %group, error = %e, "could not hand leadership off before stopping");
            }
        };
        futures::future::join(hand_off(Group::Catalog), hand_off(Group::Orders)).await;
    }

    /// Buys not known to be settled (`unclaimed_buys` of `/health`): a count
    /// at most [`UNCLAIMED_MAX_AGE`] old unless `fresh`. Counting scans
    /// both groups' sets, so unauthenticated probes, however many, scan at
    /// most a few times a second; concurrent callers share one scan. A
    /// storage error is an error, never a count.
    pub async fn unclaimed_buys(&self, fresh: bool) -> Result<u64> {
        let mut last = self.unclaimed.lock().await;
        if let Some((at, count)) = *last
            && !fresh
            && at.elapsed() < UNCLAIMED_MAX_AGE
        {
            return Ok(count);
        }
        let unavailable =
            |e: std::io::Error| crate::error::Error::Unavailable(format!("cannot count unsettled buys: {e}"));
        let count = Catalog::unclaimed_count(&self.catalog.view(), 1_000_000).map_err(unavailable)?
            + Orders::pending_count(&self.orders.view(), 1_000_000).map_err(unavailable)?;
        *last = Some((Instant::now(), count));
        Ok(count)
    }

    /// `GET /health`; a storage error is an error (`503`), not a healthy
    /// answer with made-up values. `fresh`: see [`Node::unclaimed_buys`].
    pub async fn health(&self, fresh: bool) -> Result<NodeHealth> {
        let initialized = self.catalog.raft().is_initialized().await.unwrap_or(false)
            && self.orders.raft().is_initialized().await.unwrap_or(false);
        let catalog_seeded = Catalog::is_seeded(&self.catalog.view())
            .map_err(|e| crate::error::Error::Unavailable(format!("cannot read whether the catalog is seeded: {e}")))?;
        let leaders = Group::ALL.iter().map(|g| (*g, self.group(*g).leader().map(|(id, _)| id))).collect();
        let groups = Group::ALL.iter().map(|g| (*g, self.group(*g).health())).collect();
        let unclaimed_buys = self.unclaimed_buys(fresh).await?;
        Ok(NodeHealth {
            status: "ok".into(),
            node_id: self.id,
            initialized,
            catalog_seeded,
            leaders,
            groups,
            unclaimed_buys,
            incarnation: Some(incarnation::hex(self.incarnation)),
            state_lost: self.state_lost(),
        })
    }
}

/// Oldest count of unsettled buys `/health` answers with.
pub const UNCLAIMED_MAX_AGE: Duration = Duration::from_millis(250);

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
