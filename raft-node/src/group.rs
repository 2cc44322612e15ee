//! One handle on either group: what the node, its admin routes and its
//! metrics do with a group whichever it is, behind [`AnyGroup`], so that
//! they ask [`crate::node::Node::group`] instead of matching on
//! [`Group`] at every call. Code that needs the group's own types (its
//! commands, its event stream, its Raft RPCs) still takes a
//! `RaftGroup<S>`.

use std::collections::BTreeMap;
use std::time::Duration;

use bazar_api::{AddLearnerRequest, ChangeMembershipRequest, Group, GroupHealth, GroupStatus};
use futures::future::BoxFuture;

use crate::error::{Error, Result};
use crate::incarnation::Member;
use crate::membership;
use crate::raft::RaftGroup;
use crate::sm::{NodeId, StateMachine, View};
use crate::stats::RaftCounters;

/// A Raft group of this node, whichever it is.
pub trait AnyGroup: Send + Sync {
    /// Which group.
    fn group(&self) -> Group;
    /// Its counters.
    fn counters(&self) -> &RaftCounters;
    /// Whether this node leads it.
    fn is_leader(&self) -> bool;
    /// Its status, as `GET /cluster` shows it.
    fn status(&self) -> GroupStatus;
    /// Its health, as `GET /health` shows it.
    fn health(&self) -> GroupHealth;
    /// The leader this node knows of.
    fn leader(&self) -> Option<(NodeId, Option<String>)>;
    /// A view of this replica's state machine.
    fn view(&self) -> View<'_>;
    /// The kind of a row of its state machine, by key prefix.
    fn row_kind(&self, prefix: u8) -> &'static str;
    /// Initializes it with `members` as its voters.
    fn initialize(&self, members: BTreeMap<NodeId, Member>) -> BoxFuture<'_, Result<()>>;
    /// See [`membership::add_learner`].
    fn add_learner<'a>(&'a self, req: &'a AddLearnerRequest, timeout: Duration) -> BoxFuture<'a, Result<()>>;
    /// See [`membership::change_membership`].
    fn change_membership<'a>(&'a self, req: &'a ChangeMembershipRequest) -> BoxFuture<'a, Result<()>>;
    /// See [`membership::remove_node`].
    fn remove_node(&self, node_id: NodeId) -> BoxFuture<'_, Result<()>>;
    /// See [`membership::transfer_leadership`].
    fn transfer_leadership(&self, to: Option<NodeId>, timeout: Duration) -> BoxFuture<'_, Result<NodeId>>;
    /// Builds a snapshot of this replica now (openraft then purges the log
    /// behind it) and waits up to `timeout` for it; the build goes on after.
    fn snapshot_now(&self, timeout: Duration) -> BoxFuture<'_, Result<()>>;
}

impl<S: StateMachine> AnyGroup for RaftGroup<S> {
    fn group(&self) -> Group {
        S::GROUP
    }

    fn counters(&self) -> &RaftCounters {
        RaftGroup::counters(self)
    }

    fn is_leader(&self) -> bool {
        RaftGroup::is_leader(self)
    }

    fn status(&self) -> GroupStatus {
        RaftGroup::status(self)
    }

    fn health(&self) -> GroupHealth {
        RaftGroup::health(self)
    }

    fn leader(&self) -> Option<(NodeId, Option<String>)> {
        RaftGroup::leader(self)
    }

    fn view(&self) -> View<'_> {
        RaftGroup::view(self)
    }

    fn row_kind(&self, prefix: u8) -> &'static str {
        S::row_kind(prefix)
    }

    fn initialize(&self, members: BTreeMap<NodeId, Member>) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.raft()
                .initialize(members)
                .await
                .map_err(|e| Error::Conflict(format!("cannot initialize the {} group: {e}", S::GROUP)))
        })
    }

    fn add_learner<'a>(&'a self, req: &'a AddLearnerRequest, timeout: Duration) -> BoxFuture<'a, Result<()>> {
        Box::pin(membership::add_learner(self, req, timeout))
    }

    fn change_membership<'a>(&'a self, req: &'a ChangeMembershipRequest) -> BoxFuture<'a, Result<()>> {
        Box::pin(membership::change_membership(self, req))
    }

    fn remove_node(&self, node_id: NodeId) -> BoxFuture<'_, Result<()>> {
        Box::pin(membership::remove_node(self, node_id))
    }

    fn transfer_leadership(&self, to: Option<NodeId>, timeout: Duration) -> BoxFuture<'_, Result<NodeId>> {
        Box::pin(async move {
            RaftGroup::counters(self).leader_transfers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            membership::transfer_leadership(self, to, timeout).await
        })
    }

    fn snapshot_now(&self, timeout: Duration) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let applied = self.metrics().last_applied.map(|l| l.index).unwrap_or(0);
            self.raft().trigger().snapshot().await.map_err(|f| Error::Unavailable(f.to_string()))?;
            self.raft()
                .wait(Some(timeout))
                .metrics(|m| m.snapshot.as_ref().is_some_and(|s| s.index >= applied), "snapshot built")
                .await
                .map(|_| ())
                .map_err(|e| {
                    Error::Unavailable(format!("the {} snapshot is not built yet ({e}); it goes on", S::GROUP))
                })
        })
    }
}
