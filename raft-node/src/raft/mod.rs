//! One Raft group on this node, and how requests reach its leader.
//!
//! [`RaftGroup`] wraps openraft's `Raft` handle for one group with what the
//! rest of the node needs:
//! - [`RaftGroup::write`]: propose on this node, which must lead the group;
//! - [`RaftGroup::write_anywhere`]: propose an *idempotent* command wherever
//!   the leader is, retrying through leader changes until a deadline (used by
//!   the buy coordinator and the seeder, never for client writes, whose
//!   retries must go through idempotency keys instead);
//! - [`RaftGroup::linearize`]: make this replica ready for a read at a given
//!   consistency, by fetching a read index from the leader (ReadIndex, or the
//!   leader's lease) and waiting until the local state machine applied it.
//!   This is how followers serve linearizable reads.
//!
//! Concurrent requests share work ([`batch`]): writes proposed together go
//! to openraft as one batch, and reads waiting together share one read
//! index.
//!
//! The server side of the forwarded calls lives in `crate::http::raft`.

pub mod batch;
pub mod network;

use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bazar_api::cluster::{MemberInfo, ReplicationInfo};
use bazar_api::{Consistency, Group, GroupHealth, GroupStatus};
use openraft::Instant as _;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::errors::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::raft::WriteResponse;
use openraft::raft::linearizable_read::{Linearizer, ReadLogId};
use openraft::{Config, LinearizerOption, Raft, RaftMetrics, ReadPolicy};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::sm::{NodeId, RaftSm, SnapshotStore, StateMachine, View};
use crate::stats::RaftCounters;
use crate::store::Store;
use crate::store::log::LogStore;
use crate::watch::EventHub;
use batch::{Proposer, Rounds};
use network::{NetworkFactory, Peers, RpcFailure};

/// What a peer answers to a forwarded write or read-index request.
#[derive(Debug, Serialize, Deserialize)]
pub enum Forwarded<T> {
    /// Done; here is the result.
    Done(T),
    /// The peer does not lead the group.
    NotLeader {
        /// Whom it believes leads.
        leader_id: Option<NodeId>,
    },
    /// The peer could not do it and proposed nothing (no quorum, shutting
    /// down).
    Unavailable(String),
    /// The peer proposed the write, and its outcome is unknown. Kept last:
    /// a peer of an earlier version, which cannot decode it, takes the
    /// answer as lost, which is as unknown.
    Unknown(String),
}

/// The answer to a committed write, with the log index it was committed at.
/// Clients use the index for read-your-writes: a read served at an applied
/// index at or above it reflects the write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Committed<R> {
    /// What the state machine answered.
    pub response: R,
    /// The log index of the write.
    pub index: u64,
}

/// How a read index is obtained from the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(usize)]
pub enum ReadKind {
    /// Confirm leadership with a heartbeat quorum (ReadIndex).
    ReadIndex,
    /// Use the leader's lease when it is fresh; fall back to a heartbeat round.
    Lease,
}

impl ReadKind {
    /// How openraft confirms the leadership for this kind of read; a lease
    /// read trusts a quorum acknowledgement for at most `lease` (on the
    /// leader's clock), and sends a heartbeat at once when the last one is
    /// older.
    fn option(self, lease: Duration) -> LinearizerOption {
        match self {
            ReadKind::ReadIndex => ReadPolicy::ReadIndex.into(),
            // Never openraft's default lease age, its `leader_lease`: that is
            // exactly as long as the followers' promise not to vote, and a
            // leader whose clock runs slow would outlast the promise.
            ReadKind::Lease => LinearizerOption::new(Some(lease), true),
        }
    }
}

/// The Raft handle of one group's state machine.
pub type GroupRaft<S> = Raft<<S as StateMachine>::C, RaftSm<S>>;

/// One Raft group on this node.
pub struct RaftGroup<S: StateMachine> {
    raft: GroupRaft<S>,
    node_id: NodeId,
    store: Store,
    events: Arc<EventHub>,
    snapshots: SnapshotStore,
    peers: Arc<Peers>,
    counters: Arc<RaftCounters>,
    proposer: Proposer<S::C>,
    /// How long a quorum acknowledgement lets this node, as the leader,
    /// serve `lease` reads (see [`crate::config::NodeConfig::read_lease`]).
    read_lease: Duration,
    /// Reads waiting for a read index, by [`ReadKind`].
    reads: [Rounds<Result<ReadLogId<S::C>>>; 2],
    /// This group, for the tasks that serve read rounds.
    me: Weak<RaftGroup<S>>,
}

/// What a request waited for in a group, for its `Server-Timing`.
#[derive(Debug, Clone, Copy)]
enum Step {
    Commit,
    ForwardedCommit,
    ReadIndex,
    Lease,
    WaitIndex,
}

/// The `Server-Timing` description of `what` in `group`.
fn step(group: Group, what: Step) -> &'static str {
    match (group, what) {
        (Group::Catalog, Step::Commit) => "catalog commit",
        (Group::Orders, Step::Commit) => "orders commit",
        (Group::Catalog, Step::ForwardedCommit) => "catalog commit via its leader",
        (Group::Orders, Step::ForwardedCommit) => "orders commit via its leader",
        (Group::Catalog, Step::ReadIndex) => "catalog read index",
        (Group::Orders, Step::ReadIndex) => "orders read index",
        (Group::Catalog, Step::Lease) => "catalog lease read",
        (Group::Orders, Step::Lease) => "orders lease read",
        (Group::Catalog, Step::WaitIndex) => "catalog wait for min_index",
        (Group::Orders, Step::WaitIndex) => "orders wait for min_index",
    }
}

/// Pause between retries while a group has no usable leader.
const RETRY_MIN: Duration = Duration::from_millis(10);
const RETRY_MAX: Duration = Duration::from_millis(200);
/// How long one shared read-index round may take before its reads retry.
const READ_ROUND_TIMEOUT: Duration = Duration::from_secs(1);

impl<S: StateMachine> RaftGroup<S> {
    /// Opens group `S::GROUP` on `store` and starts its Raft; as its leader,
    /// it serves `lease` reads for `read_lease` after a quorum acknowledged it.
    pub async fn open(
        node_id: NodeId,
        config: Arc<Config>,
        read_lease: Duration,
        store: Store,
        data_dir: &Path,
        peers: Arc<Peers>,
    ) -> anyhow::Result<Arc<RaftGroup<S>>> {
        let snapshots = SnapshotStore::open(data_dir.join("snapshots").join(S::GROUP.as_str()), S::GROUP)?;
        crate::sm::snapshot::resume_install::<S>(&store, &snapshots)?;
        let applied = View::new(&store, S::GROUP).applied_index()?;
        let events = Arc::new(EventHub::new(applied));
        let sm = RaftSm::<S>::new(store.clone(), snapshots.clone(), events.clone());
        let log = LogStore::<S::C>::new(store.clone(), S::GROUP);
        let network = NetworkFactory::<S>::new(peers.clone(), node_id);
        let raft = Raft::new(node_id, config, network, log, sm).await?;
        let counters = Arc::new(RaftCounters::default());
        raft.set_metrics_recorder(Some(counters.clone())).await?;
        let proposer = Proposer::start(raft.clone());
        Ok(Arc::new_cyclic(|me| RaftGroup {
            raft,
            node_id,
            store,
            events,
            snapshots,
            peers,
            counters,
            proposer,
            read_lease,
            reads: Default::default(),
            me: me.clone(),
        }))
    }

    /// What openraft reported about this group, and the work shared by
    /// concurrent requests.
    pub fn counters(&self) -> &Arc<RaftCounters> {
        &self.counters
    }

    /// The openraft handle.
    pub fn raft(&self) -> &GroupRaft<S> {
        &self.raft
    }

    /// The change-event hub.
    pub fn events(&self) -> &Arc<EventHub> {
        &self.events
    }

    /// The snapshot directory.
    pub fn snapshots(&self) -> &SnapshotStore {
        &self.snapshots
    }

    /// A consistent view of the local replica's state machine.
    pub fn view(&self) -> View<'_> {
        View::new(&self.store, S::GROUP)
    }

    /// A copy of the current Raft metrics.
    pub fn metrics(&self) -> RaftMetrics<S::C> {
        self.raft.metrics().borrow_watched().clone()
    }

    /// Whether this node currently leads the group.
    pub fn is_leader(&self) -> bool {
        self.raft.as_leader().is_ok()
    }

    /// The address of a member, from the current membership.
    pub fn addr_of(&self, id: NodeId) -> Option<String> {
        self.member(id).map(|n| n.addr)
    }

    /// A member as the current membership records it.
    pub fn member(&self, id: NodeId) -> Option<crate::incarnation::Member> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        m.membership_config.membership().get_node(&id).cloned()
    }

    /// The peers this group's RPCs go to.
    pub fn peers(&self) -> &Arc<Peers> {
        &self.peers
    }

    /// The leader as this node sees it, with its address when known.
    pub fn leader(&self) -> Option<(NodeId, Option<String>)> {
        let id = self.raft.metrics().borrow_watched().current_leader?;
        Some((id, self.addr_of(id)))
    }

    /// The error telling a client to go to the leader.
    pub fn not_leader(&self) -> Error {
        let (leader_id, leader_addr) = match self.leader() {
            Some((id, addr)) if id != self.node_id => (Some(id), addr),
            _ => (None, None),
        };
        Error::NotLeader { group: S::GROUP, leader_id, leader_addr }
    }

    /// Proposes `cmd` on this node, which must lead the group, and waits until
    /// it is committed and applied, or until `deadline`.
    ///
    /// `NotLeader` means nothing was proposed. `OutcomeUnknown` means the
    /// entry was proposed and may still commit.
    ///
    /// Writes proposed at the same time are batched ([`batch::Proposer`]).
    pub async fn write(&self, cmd: S::Command, deadline: Instant) -> Result<Committed<S::Response>> {
        let started = Instant::now();
        let outcome = tokio::time::timeout_at(deadline, self.proposer.propose(cmd)).await;
        crate::timing::record("raft", step(S::GROUP, Step::Commit), started.elapsed());
        let stopped = || Error::OutcomeUnknown(format!("the {} group stopped", S::GROUP));
        match outcome {
            Err(_) => Err(Error::OutcomeUnknown(format!(
                "the {} group did not commit the write in time; its outcome is unknown",
                S::GROUP
            ))),
            Ok(Err(_closed)) => Err(stopped()),
            Ok(Ok(Ok(Ok(WriteResponse { log_id, response })))) => Ok(Committed { response, index: log_id.index }),
            Ok(Ok(Ok(Err(ClientWriteError::ForwardToLeader(f))))) => Err(Error::NotLeader {
                group: S::GROUP,
                leader_id: f.leader_id.filter(|id| *id != self.node_id),
                leader_addr: f.leader_node.map(|n| n.addr),
            }),
            Ok(Ok(Ok(Err(ClientWriteError::LogEntryDiscarded(_))))) => Err(Error::OutcomeUnknown(format!(
                "the {} group changed leader while the write was in flight; its outcome is unknown",
                S::GROUP
            ))),
            Ok(Ok(Ok(Err(e)))) => Err(Error::Internal(e.to_string())),
            Ok(Ok(Err(f))) => Err(Error::OutcomeUnknown(format!("the {} group stopped: {f}", S::GROUP))),
        }
    }

    /// Proposes an idempotent command wherever the leader is, retrying
    /// through elections and lost answers until `deadline`. Only for commands
    /// whose re-application is harmless (reservations keyed by order, seeds).
    /// Once an attempt may have been applied, a failure is `OutcomeUnknown`
    /// whatever the last attempt said.
    pub async fn write_anywhere(&self, cmd: S::Command, deadline: Instant) -> Result<Committed<S::Response>> {
        let mut pause = RETRY_MIN;
        let mut maybe_applied = false;
        loop {
            let attempt = if self.is_leader() {
                self.write(cmd.clone(), deadline).await
            } else {
                self.forward_write(&cmd, deadline).await
            };
            maybe_applied |= matches!(attempt, Err(Error::OutcomeUnknown(_)));
            match attempt {
                Err(Error::NotLeader { .. } | Error::Unavailable(_) | Error::OutcomeUnknown(_))
                    if Instant::now() + pause < deadline =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RETRY_MAX);
                }
                Err(e @ (Error::NotLeader { .. } | Error::Unavailable(_))) if maybe_applied => {
                    return Err(Error::OutcomeUnknown(format!("{e}, after an attempt whose outcome is unknown")));
                }
                other => return other,
            }
        }
    }

    async fn forward_write(&self, cmd: &S::Command, deadline: Instant) -> Result<Committed<S::Response>> {
        let Some((leader, Some(addr))) = self.leader().filter(|(id, _)| *id != self.node_id) else {
            return Err(self.not_leader());
        };
        let path = format!("/raft/{}/write", S::GROUP);
        let timeout = deadline.saturating_duration_since(Instant::now());
        let started = Instant::now();
        let answer = self.peers.call::<_, Forwarded<Committed<S::Response>>>(&addr, &path, cmd, timeout).await;
        crate::timing::record("raft", step(S::GROUP, Step::ForwardedCommit), started.elapsed());
        match answer {
            Ok(Forwarded::Done(r)) => Ok(r),
            Ok(Forwarded::NotLeader { leader_id }) => {
                Err(Error::NotLeader { group: S::GROUP, leader_id, leader_addr: None })
            }
            Ok(Forwarded::Unavailable(m)) => Err(Error::Unavailable(m)),
            Ok(Forwarded::Unknown(m)) => Err(Error::OutcomeUnknown(m)),
            // Sent, perhaps received and proposed: the answer is what was lost.
            Err(e) => Err(Error::OutcomeUnknown(format!("forwarding to leader {leader} at {addr}: {e}"))),
        }
    }

    /// Answers a write forwarded by a peer.
    pub async fn serve_forwarded_write(&self, cmd: S::Command, deadline: Instant) -> Forwarded<Committed<S::Response>> {
        match self.write(cmd, deadline).await {
            Ok(r) => Forwarded::Done(r),
            Err(Error::NotLeader { leader_id, .. }) => Forwarded::NotLeader { leader_id },
            Err(Error::Unavailable(m)) => Forwarded::Unavailable(m),
            Err(e) => Forwarded::Unknown(e.to_string()),
        }
    }

    /// Makes this replica ready to serve a read at `consistency`: afterwards
    /// the local state machine reflects every write acknowledged before the
    /// call (for `lease` and `linearizable`; `cached` returns at once).
    pub async fn linearize(&self, consistency: Consistency, deadline: Instant) -> Result<()> {
        let (kind, what) = match consistency {
            Consistency::Cached => return Ok(()),
            Consistency::Lease => (ReadKind::Lease, Step::Lease),
            Consistency::Linearizable => (ReadKind::ReadIndex, Step::ReadIndex),
        };
        let started = Instant::now();
        let linearized = self.linearize_as(kind, deadline).await;
        crate::timing::record("raft", step(S::GROUP, what), started.elapsed());
        linearized
    }

    async fn linearize_as(&self, kind: ReadKind, deadline: Instant) -> Result<()> {
        let mut pause = RETRY_MIN;
        let read_log_id = loop {
            match self.shared_read_log_id(kind, deadline).await {
                Ok(id) => break id,
                Err(Error::NotLeader { .. } | Error::Unavailable(_)) if Instant::now() + pause < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RETRY_MAX);
                }
                Err(Error::NotLeader { .. }) => {
                    return Err(Error::Unavailable(format!("the {} group has no leader", S::GROUP)));
                }
                Err(e) => return Err(e),
            }
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        match Linearizer::new(self.node_id, read_log_id, None).try_await_ready(&self.raft, Some(remaining)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(state)) => Err(Error::Unavailable(format!(
                "this replica of the {} group did not catch up with the leader in time ({state})",
                S::GROUP
            ))),
            Err(fatal) => Err(Error::Unavailable(format!("the {} group stopped: {fatal}", S::GROUP))),
        }
    }

    /// Waits until the local state machine has applied `index`, or `deadline`.
    ///
    /// An index the group's log has not reached is refused at once: no
    /// answer can have carried it, since every answer's index was committed,
    /// and waiting for it could only end at the deadline. Telling costs a
    /// read-index round, and only when this replica is behind `index`.
    pub async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<()> {
        let started = Instant::now();
        let waited = self.wait_applied_inner(index, deadline).await;
        crate::timing::record("raft", step(S::GROUP, Step::WaitIndex), started.elapsed());
        waited
    }

    async fn wait_applied_inner(&self, index: u64, deadline: Instant) -> Result<()> {
        let applied = |m: &RaftMetrics<S::C>| m.last_applied.as_ref().map(|l| l.index).unwrap_or(0);
        if applied(&self.raft.metrics().borrow_watched()) >= index {
            return Ok(());
        }
        match self.shared_read_log_id(ReadKind::ReadIndex, deadline).await {
            Ok(read) if index > read.index() => {
                return Err(Error::InvalidInput(format!(
                    "min_index {index} is beyond the {} group's log (its leader has committed up to {}): pass an \
                     index taken from an answer's X-Bazar-Index",
                    S::GROUP,
                    read.index()
                )));
            }
            // Reached, or no leader to ask: waiting decides (503 at the deadline).
            Ok(_) | Err(Error::NotLeader { .. } | Error::Unavailable(_)) => {}
            Err(e) => return Err(e),
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        match self.raft.wait(Some(remaining)).applied_index_at_least(Some(index), "min_index").await {
            Ok(_) => Ok(()),
            Err(openraft::metrics::WaitError::Timeout(..)) => Err(Error::Unavailable(format!(
                "this replica of the {} group has not applied index {index} yet",
                S::GROUP
            ))),
            Err(e) => Err(Error::Unavailable(format!("the {} group stopped: {e}", S::GROUP))),
        }
    }

    /// A read index for a read that arrived before this call, shared with
    /// the reads waiting at the same time ([`batch::Rounds`]): from this
    /// node if it leads the group, otherwise from the leader.
    pub async fn shared_read_log_id(&self, kind: ReadKind, deadline: Instant) -> Result<ReadLogId<S::C>> {
        let rounds = &self.reads[kind as usize];
        let (answer, start) = rounds.join();
        if start && let Some(me) = self.me.upgrade() {
            tokio::spawn(async move {
                let rounds = &me.reads[kind as usize];
                let served = rounds
                    .serve(|reads| {
                        me.counters.read_index_requests.fetch_add(reads as u64, Relaxed);
                        me.read_log_id_now(kind)
                    })
                    .await;
                me.counters.read_index_rounds.fetch_add(served, Relaxed);
            });
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(Error::Unavailable(format!("the {} group's read round was abandoned", S::GROUP))),
            Err(_) => Err(Error::Unavailable(format!("no read index from the {} group's leader in time", S::GROUP))),
        }
    }

    /// One read index, asked now: from this node if it leads, otherwise from
    /// the leader.
    async fn read_log_id_now(&self, kind: ReadKind) -> Result<ReadLogId<S::C>> {
        let deadline = Instant::now() + READ_ROUND_TIMEOUT;
        let attempt = async {
            if self.is_leader() {
                self.local_read_log_id(kind).await
            } else {
                self.remote_read_log_id(kind, deadline).await
            }
        };
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(answer) => answer,
            Err(_) => Err(Error::Unavailable(format!("the {} group gave no read index in time", S::GROUP))),
        }
    }

    /// A read index from this node, as the leader.
    pub async fn local_read_log_id(&self, kind: ReadKind) -> Result<ReadLogId<S::C>> {
        match self.raft.get_read_linearizer(kind.option(self.read_lease)).await {
            Ok(linearizer) => Ok(*linearizer.read_log_id()),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(_))) => Err(self.not_leader()),
            Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(q))) => {
                Err(Error::Unavailable(format!("the {} leader cannot reach a quorum: {q}", S::GROUP)))
            }
            Err(RaftError::Fatal(f)) => Err(Error::Unavailable(format!("the {} group stopped: {f}", S::GROUP))),
        }
    }

    async fn remote_read_log_id(&self, kind: ReadKind, deadline: Instant) -> Result<ReadLogId<S::C>> {
        let Some((leader, Some(addr))) = self.leader().filter(|(id, _)| *id != self.node_id) else {
            return Err(self.not_leader());
        };
        let path = format!("/raft/{}/read-index", S::GROUP);
        let timeout = deadline.saturating_duration_since(Instant::now());
        match self.peers.call::<_, Forwarded<ReadLogId<S::C>>>(&addr, &path, &kind, timeout).await {
            Ok(Forwarded::Done(id)) => Ok(id),
            Ok(Forwarded::NotLeader { leader_id }) => {
                Err(Error::NotLeader { group: S::GROUP, leader_id, leader_addr: None })
            }
            Ok(Forwarded::Unavailable(m) | Forwarded::Unknown(m)) => Err(Error::Unavailable(m)),
            Err(RpcFailure::Unreachable(m)) => {
                Err(Error::Unavailable(format!("leader {leader} at {addr} is unreachable: {m}")))
            }
            Err(e) => Err(Error::Unavailable(format!("asking leader {leader} at {addr} for a read index: {e}"))),
        }
    }

    /// Resolves when this group's Raft core has stopped (its metrics
    /// channel closes): after `shutdown`, or on a fatal error.
    pub async fn stopped(&self) {
        let mut metrics = self.raft.metrics();
        while metrics.changed().await.is_ok() {}
    }

    /// This group's progress, for `/health`.
    pub fn health(&self) -> GroupHealth {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let is_leader = m.state.is_leader();
        GroupHealth {
            leader_id: m.current_leader,
            term: m.current_term,
            is_leader,
            committed_index: m.cluster_committed.as_ref().map(|l| l.index).unwrap_or(0),
            applied_index: m.last_applied.as_ref().map(|l| l.index).unwrap_or(0),
            quorum_ack_age_ms: commit_sample_age(
                is_leader,
                m.cluster_committed.as_ref().map(|c| c.committed_leader_id().term),
                m.current_term,
                m.last_quorum_acked.as_ref().map(|acked| acked.elapsed()),
            ),
        }
    }

    /// This group's state as this node sees it.
    pub fn status(&self) -> GroupStatus {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| MemberInfo {
                node_id: *id,
                addr: node.addr.clone(),
                voter: voters.contains(id),
                incarnation: node.incarnation.map(crate::incarnation::hex),
                state_lost: None,
            })
            .collect();
        let last = m.last_log_index.unwrap_or(0);
        let replication = m.replication.as_ref().map(|r| {
            r.iter()
                .map(|(id, matched)| {
                    let matched_index = matched.as_ref().map(|l| l.index);
                    ReplicationInfo {
                        node_id: *id,
                        matched_index,
                        lag: last.saturating_sub(matched_index.unwrap_or(0)),
                    }
                })
                .collect()
        });
        GroupStatus {
            group: S::GROUP,
            state: format!("{:?}", m.state),
            term: m.current_term,
            leader_id: m.current_leader,
            last_log_index: m.last_log_index,
            committed_index: m.cluster_committed.as_ref().map(|l| l.index),
            applied_index: m.last_applied.as_ref().map(|l| l.index),
            snapshot_index: m.snapshot.as_ref().map(|l| l.index),
            purged_index: m.purged.as_ref().map(|l| l.index),
            members,
            replication,
        }
    }
}

/// The quorum-acknowledgement age a group reports in `/health`, from which
/// frontends take *commit samples* ("every write acknowledged before
/// now − age has an index at or below the committed index"): only a leader
/// has one, and only once it has committed an entry of its own term. Before
/// that, a new leader's committed index can lag writes its predecessor
/// acknowledged (Raft §5.4.2: it learns the commit point by committing in
/// its term), and a sample would let a frontend serve cached answers older
/// than its staleness bound.
fn commit_sample_age(
    is_leader: bool,
    committed_term: Option<u64>,
    current_term: u64,
    since_quorum_ack: Option<Duration>,
) -> Option<u64> {
    if !is_leader || committed_term != Some(current_term) {
        return None;
    }
    since_quorum_ack.map(|age| age.as_millis() as u64)
}

#[cfg(test)]
mod sample_tests {
    use super::*;

    #[test]
    fn a_new_leader_gives_no_commit_sample_until_it_commits_in_its_term() {
        let acked = Some(Duration::from_millis(30));
        // Elected in term 5, its committed index still from term 4: it may
        // be behind writes the term-4 leader acknowledged.
        assert_eq!(commit_sample_age(true, Some(4), 5, acked), None);
        assert_eq!(commit_sample_age(true, None, 5, acked), None);
        assert_eq!(commit_sample_age(true, Some(5), 5, acked), Some(30));
        assert_eq!(commit_sample_age(false, Some(5), 5, acked), None);
        assert_eq!(commit_sample_age(true, Some(5), 5, None), None);
    }
}
