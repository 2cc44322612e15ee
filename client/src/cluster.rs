//! The cluster as an operator sees it, and the membership operations built
//! on the nodes' admin calls: what `bazar cluster status | add-node |
//! remove-node | transfer-leader | snapshot` do, and what the operations
//! tests drive.
//!
//! # Finding the cluster
//!
//! [`ClusterAdmin`] starts from seed addresses: nodes, or a frontend (whose
//! `/cluster` lists its nodes). It asks every node it learns of for its
//! `/cluster` (a short deadline per node, all at once), adds the members
//! their memberships name, and repeats until it learns of no new node. A
//! group's leader is the node that says it leads in the highest term; its
//! view (membership, replication progress) is the authoritative one.
//!
//! # What the operations promise
//!
//! - [`ClusterAdmin::add_node`] adds the node as a learner of both groups on
//!   their leaders, waits until it has caught up in both (from a snapshot
//!   when the leader purged the log it needs), then makes it a voter. Each
//!   step checks the current membership first, so running it again after an
//!   interruption finishes the job instead of failing.
//! - [`ClusterAdmin::rejoin`] brings back a node that lost its state (its
//!   data directory is another incarnation than the membership records, so
//!   its peers refuse it): removes the stale member from every group that
//!   records it, then adds the running node as in `add_node`, with its new
//!   incarnation. A group that already records the node's current
//!   incarnation is left alone, so running it again finishes the job, and
//!   running it on a healthy member changes nothing.
//! - [`ClusterAdmin::remove_node`] moves leadership away from the node in
//!   every group it leads, then removes it from both groups. Removing a node
//!   that is not a member does nothing.
//! - Every call that needs the leader re-resolves it and retries through
//!   elections, a membership change already in progress, and unreachable
//!   nodes, until the operation's deadline. None of these calls can apply
//!   twice: membership changes are idempotent by construction.
//!
//! Progress is reported through a callback ([`Progress`]), so that the CLI
//! can print it and tests can log it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::time::Duration;

use bazar_api::{ClusterStatus, ErrorCode, Group, GroupStatus};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::client::Client;
use crate::error::{ClientError, Result};

/// Longest wait for one node's `/cluster` while looking around: a node that
/// does not answer in this time is reported unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// A learner is caught up once it holds every entry the leader had when it
/// was added and trails the leader's log by at most this many entries (under
/// load the leader never stops appending, so "no lag at all" may never come).
pub const CATCH_UP_LAG: u64 = 100;
/// How often progress is polled.
const POLL: Duration = Duration::from_millis(250);

/// The whole cluster: each group as its leader and members see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// Both groups, catalog first.
    pub groups: Vec<GroupView>,
    /// Nodes that were asked but did not answer, with why.
    pub unreachable: Vec<Unreachable>,
}

/// A node that did not answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unreachable {
    /// Its id (0 when known only by address).
    pub node_id: u64,
    /// Its address.
    pub addr: String,
    /// What went wrong.
    pub error: String,
}

/// One group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupView {
    /// Which group.
    pub group: Group,
    /// The leader, if one answered as leader.
    pub leader_id: Option<u64>,
    /// The highest term any member reported.
    pub term: u64,
    /// The leader's last log index (or, leaderless, the highest reported).
    pub last_log_index: Option<u64>,
    /// The leader's commit index.
    pub committed_index: Option<u64>,
    /// The leader's applied index.
    pub applied_index: Option<u64>,
    /// Every member, voters first.
    pub members: Vec<MemberView>,
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// Node id.
    pub node_id: u64,
    /// Address.
    pub addr: String,
    /// Voter (true) or learner (false).
    pub voter: bool,
    /// `leader`, `follower`, `learner`, `candidate`, or `unreachable`.
    pub role: String,
    /// The term it reported.
    pub term: Option<u64>,
    /// Its last log index.
    pub last_log_index: Option<u64>,
    /// Its applied index.
    pub applied_index: Option<u64>,
    /// Its snapshot's last index.
    pub snapshot_index: Option<u64>,
    /// Its purged index.
    pub purged_index: Option<u64>,
    /// On the leader's books: the last index replicated to it.
    pub matched_index: Option<u64>,
    /// On the leader's books: how many entries it is behind.
    pub lag: Option<u64>,
    /// The incarnation the membership records for it (hex), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<String>,
    /// Set when it lost its state (its data directory is another
    /// incarnation): says so and names the recovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_lost: Option<String>,
}

impl ClusterView {
    /// The view of `group`.
    pub fn group(&self, group: Group) -> Option<&GroupView> {
        self.groups.iter().find(|g| g.group == group)
    }
}

impl GroupView {
    /// The member `node_id`, if it is one.
    pub fn member(&self, node_id: u64) -> Option<&MemberView> {
        self.members.iter().find(|m| m.node_id == node_id)
    }

    /// The ids of the voters.
    pub fn voters(&self) -> BTreeSet<u64> {
        self.members.iter().filter(|m| m.voter).map(|m| m.node_id).collect()
    }

    /// The leader's address, when known.
    pub fn leader_addr(&self) -> Option<&str> {
        let leader = self.leader_id?;
        self.member(leader).map(|m| m.addr.as_str())
    }
}

/// A step of a membership operation, for progress output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Adding the node as a learner.
    AddingLearner {
        /// The group.
        group: Group,
        /// The group's leader.
        leader: u64,
    },
    /// The learner is receiving the log (or a snapshot).
    CatchingUp {
        /// The group.
        group: Group,
        /// Last index replicated to it (`None`: nothing yet; a snapshot may be on its way).
        matched: Option<u64>,
        /// The leader's last log index.
        leader_last: u64,
    },
    /// The learner has caught up.
    CaughtUp {
        /// The group.
        group: Group,
        /// Last index replicated to it.
        matched: u64,
        /// Time since it was added.
        took: Duration,
    },
    /// Making the node a voter.
    Promoting {
        /// The group.
        group: Group,
    },
    /// Moving leadership away from the node.
    TransferringLeadership {
        /// The group.
        group: Group,
        /// The node leaving.
        from: u64,
    },
    /// Leadership moved.
    LeaderIs {
        /// The group.
        group: Group,
        /// The new leader.
        leader: u64,
    },
    /// Removing the node from the group.
    Removing {
        /// The group.
        group: Group,
    },
    /// Nothing to do in this group.
    AlreadyDone {
        /// The group.
        group: Group,
        /// Why.
        what: &'static str,
    },
    /// Removing a member recorded with an incarnation the node no longer has.
    RemovingStale {
        /// The group.
        group: Group,
        /// The incarnation on record (`None`: recorded before incarnations).
        on_record: Option<String>,
        /// The node's incarnation now.
        current: String,
    },
    /// A backup is being received from a node.
    BackingUp {
        /// The node sending it (the orders leader).
        node: u64,
        /// Bytes received so far.
        bytes: u64,
    },
    /// A step failed and is being retried.
    Retrying {
        /// The group.
        group: Group,
        /// The error.
        error: String,
    },
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Progress::AddingLearner { group, leader } => {
                write!(f, "{group}: adding as a learner (leader: node {leader})")
            }
            Progress::CatchingUp { group, matched: None, leader_last } => {
                write!(f, "{group}: catching up: waiting for a snapshot or the first entries (leader at {leader_last})")
            }
            Progress::CatchingUp { group, matched: Some(m), leader_last } => {
                write!(f, "{group}: catching up: {m} of {leader_last} ({} behind)", leader_last.saturating_sub(*m))
            }
            Progress::CaughtUp { group, matched, took } => {
                write!(f, "{group}: caught up at index {matched} after {:.1} s", took.as_secs_f64())
            }
            Progress::Promoting { group } => write!(f, "{group}: promoting to voter"),
            Progress::TransferringLeadership { group, from } => {
                write!(f, "{group}: node {from} leads; transferring leadership")
            }
            Progress::LeaderIs { group, leader } => write!(f, "{group}: node {leader} leads"),
            Progress::Removing { group } => write!(f, "{group}: removing"),
            Progress::AlreadyDone { group, what } => write!(f, "{group}: {what}"),
            Progress::BackingUp { node, bytes } => {
                write!(f, "backup: {:.1} MB received from node {node}", *bytes as f64 / 1e6)
            }
            Progress::RemovingStale { group, on_record, current } => write!(
                f,
                "{group}: removing the stale member (incarnation {} on record, the node is {current})",
                on_record.as_deref().unwrap_or("unknown")
            ),
            Progress::Retrying { group, error } => write!(f, "{group}: retrying after: {error}"),
        }
    }
}

/// How [`ClusterAdmin::add_node`] behaves.
#[derive(Debug, Clone, Copy)]
pub struct AddNodeOptions {
    /// Make the node a voter once caught up (otherwise it stays a learner).
    pub promote: bool,
    /// Longest time for the whole operation, catching up included.
    pub deadline: Duration,
}

impl Default for AddNodeOptions {
    fn default() -> Self {
        AddNodeOptions { promote: true, deadline: Duration::from_secs(600) }
    }
}

/// Cluster-wide administration through any node (or frontend).
#[derive(Debug, Clone)]
pub struct ClusterAdmin {
    client: Client,
    seeds: Vec<String>,
}

impl ClusterAdmin {
    /// Administration starting from `seeds` (node or frontend addresses),
    /// with `client`'s admin token and timeout.
    pub fn new(client: Client, seeds: Vec<String>) -> ClusterAdmin {
        ClusterAdmin { client, seeds }
    }

    fn at(&self, addr: &str) -> Result<Client> {
        self.client.with_base_url(addr)
    }

    /// Asks every node it can find for its `/cluster`: by node id, the
    /// status or why it did not answer; and by id, the addresses.
    async fn survey(&self) -> Result<(BTreeMap<u64, ClusterStatus>, Vec<Unreachable>)> {
        let probe = |addr: String| {
            let client = self.at(&addr).map(|c| c.with_timeout(PROBE_TIMEOUT.min(self.client.timeout())));
            async move {
                let answer = match client {
                    Ok(c) => c.cluster().await,
                    Err(e) => Err(e),
                };
                (addr, answer)
            }
        };
        let mut statuses: BTreeMap<u64, ClusterStatus> = BTreeMap::new();
        let mut unreachable = Vec::new();
        let mut asked: BTreeSet<String> = BTreeSet::new();
        let mut ids: BTreeMap<String, u64> = BTreeMap::new();
        let mut to_ask: Vec<String> = self.seeds.clone();
        while !to_ask.is_empty() {
            asked.extend(to_ask.iter().cloned());
            let answers = futures::future::join_all(to_ask.drain(..).map(probe)).await;
            let mut learnt: BTreeMap<u64, String> = BTreeMap::new();
            for (addr, answer) in answers {
                match answer {
                    Ok(value) => {
                        if let Ok(status) = serde_json::from_value::<ClusterStatus>(value.clone()) {
                            for g in &status.groups {
                                learnt.extend(g.members.iter().map(|m| (m.node_id, m.addr.clone())));
                            }
                            learnt.insert(status.node_id, status.addr.clone());
                            statuses.insert(status.node_id, status);
                        } else if let Some(replicas) = value.get("replicas").and_then(|r| r.as_array()) {
                            // A frontend: its nodes.
                            for r in replicas {
                                if let (Some(id), Some(a)) = (r["node_id"].as_u64(), r["addr"].as_str()) {
                                    learnt.insert(id, a.to_string());
                                }
                            }
                        } else {
                            unreachable.push(Unreachable {
                                node_id: 0,
                                addr,
                                error: "answered /cluster with neither a node's nor a frontend's status".into(),
                            });
                        }
                    }
                    Err(e) => unreachable.push(Unreachable {
                        node_id: ids.get(&addr).copied().unwrap_or(0),
                        addr,
                        error: e.to_string(),
                    }),
                }
            }
            for (id, addr) in learnt {
                ids.entry(addr.clone()).or_insert(id);
                let known = statuses.contains_key(&id);
                if !known && asked.insert(addr.clone()) {
                    to_ask.push(addr);
                }
            }
        }
        // A node may be listed under the seed address it was given and under
        // its advertised one; one answer is enough.
        unreachable.retain(|u| u.node_id == 0 || !statuses.contains_key(&u.node_id));
        unreachable.retain(|u| !statuses.values().any(|s| s.addr == u.addr));
        if statuses.is_empty() {
            let why: Vec<String> = unreachable.iter().map(|u| format!("{}: {}", u.addr, u.error)).collect();
            return Err(ClientError::Transport {
                kind: crate::error::TransportKind::Connect,
                detail: format!("no node answered ({})", why.join("; ")),
            });
        }
        Ok((statuses, unreachable))
    }

    /// Both groups as their leaders and members see them now.
    pub async fn status(&self) -> Result<ClusterView> {
        let (statuses, unreachable) = self.survey().await?;
        Ok(build_view(&statuses, unreachable))
    }

    /// A client for the current leader of `group`.
    async fn leader(&self, group: Group) -> Result<(u64, Client)> {
        let view = self.status().await?;
        let g = view.group(group).expect("both groups are in a view");
        match (g.leader_id, g.leader_addr()) {
            (Some(id), Some(addr)) => Ok((id, self.at(addr)?)),
            _ => Err(no_leader(group)),
        }
    }

    /// Runs `op` on `group`'s leader, re-resolving the leader and retrying
    /// through elections, changes in progress and unreachable nodes until
    /// `deadline`.
    async fn on_leader<T, F, Fut>(
        &self,
        group: Group,
        deadline: Instant,
        progress: &mut (dyn FnMut(&Progress) + Send),
        mut op: F,
    ) -> Result<T>
    where
        F: FnMut(u64, Client) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut pause = Duration::from_millis(100);
        loop {
            let attempt = match self.leader(group).await {
                Ok((id, client)) => op(id, client).await,
                Err(e) => Err(e),
            };
            match attempt {
                Err(e) if retryable(&e) && Instant::now() + pause < deadline => {
                    progress(&Progress::Retrying { group, error: e.to_string() });
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                other => return other,
            }
        }
    }

    /// Adds node `node_id` at `addr` (started empty, and running) to both
    /// groups: as a learner, then, once it has caught up in both, as a voter.
    /// See the module docs.
    pub async fn add_node(
        &self,
        node_id: u64,
        addr: &str,
        options: AddNodeOptions,
        progress: &mut (dyn FnMut(&Progress) + Send),
    ) -> Result<ClusterView> {
        let deadline = Instant::now() + options.deadline;
        let view = self.status().await?;
        let current = self.incarnation_of(node_id, addr, deadline).await?;
        for group in Group::ALL {
            let g = view.group(group).expect("both groups");
            if let Some(m) = g.member(node_id)
                && m.addr != addr
            {
                return Err(ClientError::Invalid(format!(
                    "node {node_id} is already a member of the {group} group at {}; remove it first",
                    m.addr
                )));
            }
            if let Some(m) = g.member(node_id)
                && m.incarnation.as_deref() != Some(current.as_str())
            {
                return Err(ClientError::Invalid(format!(
                    "node {node_id} is a member of the {group} group as incarnation {}, but it is incarnation \
                     {current} now: it lost its state; run `bazar cluster rejoin {node_id}`",
                    m.incarnation.as_deref().unwrap_or("unknown")
                )));
            }
        }
        // Learners in both groups first, so that both catch up at once.
        let mut added_at = BTreeMap::new();
        for group in Group::ALL {
            let g = view.group(group).expect("both groups");
            if g.member(node_id).is_some() {
                progress(&Progress::AlreadyDone { group, what: "already a member" });
            } else {
                progress(&Progress::AddingLearner { group, leader: g.leader_id.unwrap_or(0) });
                self.on_leader(group, deadline, progress, |_, client| async move {
                    client.add_learner(group, node_id, addr, false).await
                })
                .await?;
            }
            added_at.insert(group, Instant::now());
        }
        for group in Group::ALL {
            self.wait_caught_up(group, node_id, added_at[&group], deadline, progress).await?;
        }
        if options.promote {
            for group in Group::ALL {
                self.promote(group, node_id, deadline, progress).await?;
            }
        }
        self.status().await
    }

    async fn wait_caught_up(
        &self,
        group: Group,
        node_id: u64,
        added: Instant,
        deadline: Instant,
        progress: &mut (dyn FnMut(&Progress) + Send),
    ) -> Result<()> {
        let mut target = None;
        let mut last_report = Instant::now() - Duration::from_secs(60);
        loop {
            let (_, leader) = match self.leader(group).await {
                Ok(l) => l,
                Err(e) if retryable(&e) && Instant::now() < deadline => {
                    tokio::time::sleep(POLL).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let answer = leader.cluster_status().await;
            if let Ok(status) = answer
                && let Some(g) = status.groups.iter().find(|g| g.group == group)
                && let Some(replication) = &g.replication
            {
                let leader_last = g.last_log_index.unwrap_or(0);
                let target = *target.get_or_insert(leader_last);
                let matched = replication.iter().find(|r| r.node_id == node_id).and_then(|r| r.matched_index);
                if let Some(m) = matched
                    && m >= target
                    && leader_last.saturating_sub(m) <= CATCH_UP_LAG
                {
                    progress(&Progress::CaughtUp { group, matched: m, took: added.elapsed() });
                    return Ok(());
                }
                if !replication.iter().any(|r| r.node_id == node_id) {
                    return Err(ClientError::Invalid(format!(
                        "node {node_id} is no longer a learner of the {group} group (removed meanwhile?)"
                    )));
                }
                if last_report.elapsed() >= Duration::from_secs(1) {
                    progress(&Progress::CatchingUp { group, matched, leader_last });
                    last_report = Instant::now();
                }
            }
            if Instant::now() > deadline {
                return Err(ClientError::timeout(format!(
                    "node {node_id} did not catch up with the {group} group in time; it stays a learner \
                     (run add-node again to keep waiting)"
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn promote(
        &self,
        group: Group,
        node_id: u64,
        deadline: Instant,
        progress: &mut (dyn FnMut(&Progress) + Send),
    ) -> Result<()> {
        let view = self.status().await?;
        let g = view.group(group).expect("both groups");
        if g.member(node_id).is_some_and(|m| m.voter) {
            progress(&Progress::AlreadyDone { group, what: "already a voter" });
            return Ok(());
        }
        progress(&Progress::Promoting { group });
        self.on_leader(group, deadline, progress, |_, client| async move {
            // The voters as the leader has them now, not as they were.
            let status = client.cluster_status().await?;
            let mut voters: BTreeSet<u64> = status
                .groups
                .iter()
                .find(|g| g.group == group)
                .map(|g| g.members.iter().filter(|m| m.voter).map(|m| m.node_id).collect())
                .unwrap_or_default();
            if !voters.insert(node_id) {
                return Ok(status);
            }
            client.change_membership(group, voters, false).await
        })
        .await
        .map(|_| ())
    }

    /// The incarnation (hex) node `node_id` reports at `addr` now, retrying
    /// until `deadline` while it does not answer (it may be starting).
    async fn incarnation_of(&self, node_id: u64, addr: &str, deadline: Instant) -> Result<String> {
        let client = self.at(addr)?.with_timeout(PROBE_TIMEOUT.min(self.client.timeout()));
        loop {
            match client.cluster_status().await {
                Ok(s) if s.node_id != node_id => {
                    return Err(ClientError::Invalid(format!(
                        "the node at {addr} is node {}, not node {node_id}",
                        s.node_id
                    )));
                }
                Ok(s) => {
                    return s.incarnation.ok_or_else(|| {
                        ClientError::Invalid(format!(
                            "node {node_id} at {addr} reports no incarnation: upgrade it first"
                        ))
                    });
                }
                Err(e) if retryable(&e) && Instant::now() + POLL < deadline => tokio::time::sleep(POLL).await,
                Err(e) => return Err(e),
            }
        }
    }

    /// Brings back node `node_id` after it lost its state (started again
    /// with an empty data directory, same id and address, or at `addr`):
    /// removes the member its peers still record from each group, then adds
    /// the running node as a learner with its new incarnation, waits until
    /// it has caught up and makes it a voter (unless `options.promote` is
    /// off). See the module docs.
    pub async fn rejoin(
        &self,
        node_id: u64,
        addr: Option<&str>,
        options: AddNodeOptions,
        progress: &mut (dyn FnMut(&Progress) + Send),
    ) -> Result<ClusterView> {
        let deadline = Instant::now() + options.deadline;
        let view = self.status().await?;
        let recorded = view.groups.iter().find_map(|g| g.member(node_id)).map(|m| m.addr.clone());
        let addr = match (addr, recorded) {
            (Some(a), _) => a.to_string(),
            (None, Some(a)) => a,
            (None, None) => {
                return Err(ClientError::Invalid(format!(
                    "node {node_id} is a member of neither group: give its address (--addr)"
                )));
            }
        };
        let current = self.incarnation_of(node_id, &addr, deadline).await?;
        for group in Group::ALL {
            let view = self.status().await?;
            let g = view.group(group).expect("both groups");
            let Some(m) = g.member(node_id) else {
                progress(&Progress::AlreadyDone { group, what: "no stale member" });
                continue;
            };
            if m.incarnation.as_deref() == Some(current.as_str()) && m.addr == addr {
                progress(&Progress::AlreadyDone { group, what: "a member with its current incarnation" });
                continue;
            }
            progress(&Progress::RemovingStale { group, on_record: m.incarnation.clone(), current: current.clone() });
            self.remove_from(group, node_id, deadline, progress).await?;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.add_node(node_id, &addr, AddNodeOptions { deadline: remaining, ..options }, progress).await
    }

    /// Removes node `node_id` from both groups, moving leadership away from
    /// it first where it leads. See the module docs.
    pub async fn remove_node(
        &self,
        node_id: u64,
        deadline: Duration,
        progress: &mut (dyn FnMut(&Progress) + Send),
    ) -> Result<ClusterView> {
        let deadline = Instant::now() + deadline;
        for group in Group::ALL {
            let view = self.status().await?;
            let g = view.group(group).expect("both groups");
            if g.member(node_id).is_none() {
                progress(&Progress::AlreadyDone { group, what: "not a member" });
                continue;
            }
            self.remove_from(group, node_id, deadline, progress).await?;
        }
        self.status().await
    }

    /// Removes member `node_id` from `group`, moving leadership away from
    /// it first if it leads.
    async fn remove_from(
        &self,
        group: Group,
        node_id: u64,
        deadline: Instant,
        progress: &mut (dyn FnMut(&Progress) + Send),
    ) -> Result<()> {
        let view = self.status().await?;
        let g = view.group(group).expect("both groups");
        if g.voters() == BTreeSet::from([node_id]) {
            return Err(ClientError::Invalid(format!(
                "node {node_id} is the only voter of the {group} group; it cannot be removed"
            )));
        }
        if g.leader_id == Some(node_id) {
            progress(&Progress::TransferringLeadership { group, from: node_id });
            let leader = self.transfer_leader(group, None, deadline, progress).await?;
            progress(&Progress::LeaderIs { group, leader });
        }
        progress(&Progress::Removing { group });
        self.on_leader(group, deadline, progress, |leader, client| async move {
            if leader == node_id {
                // Leadership came back (or never left): move it again.
                client.transfer_leader(group, None).await?;
                return Err(ClientError::Problem(Box::new(bazar_api::Problem::unavailable(
                    format!("node {node_id} still led the {group} group; leadership moved again"),
                    1,
                ))));
            }
            client.remove_node(group, node_id).await
        })
        .await
        .map(|_| ())
    }

    /// Hands leadership of `group` to `to` (by default the most up-to-date
    /// live voter); returns the new leader.
    pub async fn transfer_leader(
        &self,
        group: Group,
        to: Option<u64>,
        deadline: Instant,
        progress: &mut (dyn FnMut(&Progress) + Send),
    ) -> Result<u64> {
        self.on_leader(group, deadline, progress, |leader, client| async move {
            if to == Some(leader) {
                return Ok(leader);
            }
            let status = client.transfer_leader(group, to).await?;
            let new = status.groups.iter().find(|g| g.group == group).and_then(|g| g.leader_id);
            match new {
                Some(new) if new != leader => Ok(new),
                _ => Err(no_leader(group)),
            }
        })
        .await
    }

    /// Builds a snapshot of `group` on every member that answers, now;
    /// returns each node's answer.
    pub async fn snapshot(&self, group: Group) -> Result<Vec<(u64, Result<GroupStatus>)>> {
        let (statuses, _) = self.survey().await?;
        let view = build_view(&statuses, Vec::new());
        let members: Vec<(u64, String)> = view
            .group(group)
            .map(|g| {
                g.members.iter().filter(|m| m.role != "unreachable").map(|m| (m.node_id, m.addr.clone())).collect()
            })
            .unwrap_or_default();
        let calls = members.into_iter().map(|(id, addr)| async move {
            let answer = match self.at(&addr) {
                Ok(c) => c.snapshot(group).await.and_then(|s| {
                    s.groups
                        .into_iter()
                        .find(|g| g.group == group)
                        .ok_or_else(|| ClientError::Decode(format!("node {id} answered without the {group} group")))
                }),
                Err(e) => Err(e),
            };
            (id, answer)
        });
        Ok(futures::future::join_all(calls).await)
    }
}

impl ClusterAdmin {
    /// Takes a backup of both groups from the orders leader into `path`
    /// (see `GET /admin/backup`): written to `path.partial`, checked whole
    /// (checksum, manifest), then renamed to `path`. Retries through
    /// elections until `deadline`. Returns the backup's manifest.
    pub async fn backup(
        &self,
        path: &std::path::Path,
        deadline: Instant,
        progress: &mut (dyn FnMut(&Progress) + Send),
    ) -> Result<bazar_api::backup::Manifest> {
        let partial = {
            let mut name = path.as_os_str().to_owned();
            name.push(".partial");
            std::path::PathBuf::from(name)
        };
        let io = |what: &str, e: std::io::Error| ClientError::Invalid(format!("{what} {}: {e}", partial.display()));
        let progress = std::sync::Mutex::new(progress);
        let taken = self
            .on_leader(Group::Orders, deadline, &mut |p| (progress.lock().unwrap())(p), |node, client| {
                let partial = partial.clone();
                let progress = &progress;
                async move {
                    let mut file = tokio::fs::File::create(&partial).await.map_err(|e| io("creating", e))?;
                    let mut shown = Instant::now();
                    let mut on_bytes = |bytes: u64| {
                        if shown.elapsed() >= Duration::from_secs(2) {
                            shown = Instant::now();
                            (progress.lock().unwrap())(&Progress::BackingUp { node, bytes });
                        }
                    };
                    client.backup(&mut file, &mut on_bytes).await?;
                    file.sync_all().await.map_err(|e| io("syncing", e))?;
                    Ok(())
                }
            })
            .await;
        if let Err(e) = taken {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
        let checked = partial.clone();
        let manifest = tokio::task::spawn_blocking(move || {
            let mut file = std::fs::File::open(&checked)?;
            bazar_api::backup::verify(&mut file).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        })
        .await
        .map_err(|e| ClientError::Invalid(e.to_string()))?;
        let manifest = match manifest {
            Ok(m) => m,
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                return Err(ClientError::Decode(format!("the backup received does not check out: {e}")));
            }
        };
        std::fs::rename(&partial, path).map_err(|e| io("renaming", e))?;
        Ok(manifest)
    }
}

fn no_leader(group: Group) -> ClientError {
    ClientError::Problem(Box::new(bazar_api::Problem::unavailable(
        format!("the {group} group has no leader that answers right now"),
        1,
    )))
}

/// Whether an admin call may succeed if simply tried again (on the leader
/// of the moment): no leader, a change already in progress, a node down.
fn retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Problem(p) => matches!(p.code, ErrorCode::Unavailable | ErrorCode::NotLeader),
        ClientError::Transport { .. } => true,
        ClientError::Status { status, .. } => *status >= 500,
        ClientError::Decode(_) | ClientError::Invalid(_) => false,
    }
}

fn role_of(state: &str) -> &'static str {
    match state {
        "Leader" => "leader",
        "Follower" => "follower",
        "Candidate" => "candidate",
        "Learner" => "learner",
        _ => "unknown",
    }
}

/// Puts the nodes' answers together (see the module docs).
fn build_view(statuses: &BTreeMap<u64, ClusterStatus>, unreachable: Vec<Unreachable>) -> ClusterView {
    let groups = Group::ALL
        .iter()
        .map(|&group| {
            let views: Vec<(u64, &GroupStatus)> = statuses
                .iter()
                .filter_map(|(id, s)| s.groups.iter().find(|g| g.group == group).map(|g| (*id, g)))
                .collect();
            let leader = views
                .iter()
                .filter(|(_, g)| g.state == "Leader")
                .max_by_key(|(id, g)| (g.term, std::cmp::Reverse(*id)))
                .copied();
            // Leaderless: trust whoever has seen the most.
            let authority = leader.or_else(|| views.iter().max_by_key(|(_, g)| (g.term, g.last_log_index)).copied());
            let term = views.iter().map(|(_, g)| g.term).max().unwrap_or(0);
            let Some((_, auth)) = authority else {
                return GroupView {
                    group,
                    leader_id: None,
                    term,
                    last_log_index: None,
                    committed_index: None,
                    applied_index: None,
                    members: Vec::new(),
                };
            };
            let mut members: Vec<MemberView> = auth
                .members
                .iter()
                .map(|m| {
                    let own = views.iter().find(|(id, _)| *id == m.node_id).map(|(_, g)| *g);
                    let progress = auth.replication.as_ref().and_then(|r| r.iter().find(|r| r.node_id == m.node_id));
                    MemberView {
                        node_id: m.node_id,
                        addr: m.addr.clone(),
                        voter: m.voter,
                        role: own.map_or("unreachable", |g| role_of(&g.state)).to_string(),
                        term: own.map(|g| g.term),
                        last_log_index: own.and_then(|g| g.last_log_index),
                        applied_index: own.and_then(|g| g.applied_index),
                        snapshot_index: own.and_then(|g| g.snapshot_index),
                        purged_index: own.and_then(|g| g.purged_index),
                        matched_index: progress.and_then(|p| p.matched_index),
                        lag: progress.map(|p| p.lag),
                        incarnation: m.incarnation.clone(),
                        // What the leader saw (its RPCs refused), or what
                        // the node itself says.
                        state_lost: m.state_lost.clone().or_else(|| {
                            statuses.get(&m.node_id).and_then(|s| s.state_lost.as_ref()).map(|l| l.message.clone())
                        }),
                    }
                })
                .collect();
            members.sort_by_key(|m| (!m.voter, m.node_id));
            GroupView {
                group,
                leader_id: leader.map(|(id, _)| id),
                term,
                last_log_index: auth.last_log_index,
                committed_index: auth.committed_index,
                applied_index: auth.applied_index,
                members,
            }
        })
        .collect();
    ClusterView { groups, unreachable }
}

#[cfg(test)]
mod tests {
    use bazar_api::cluster::{MemberInfo, ReplicationInfo};

    use super::*;

    fn member(node_id: u64, voter: bool) -> MemberInfo {
        MemberInfo { node_id, addr: format!("h:{node_id}"), voter, incarnation: None, state_lost: None }
    }

    fn group_status(state: &str, term: u64, last: u64, replication: Option<Vec<(u64, u64)>>) -> GroupStatus {
        GroupStatus {
            group: Group::Catalog,
            state: state.into(),
            term,
            leader_id: Some(2),
            last_log_index: Some(last),
            committed_index: Some(last),
            applied_index: Some(last),
            snapshot_index: None,
            purged_index: None,
            members: vec![member(1, true), member(2, true), member(4, false)],
            replication: replication.map(|r| {
                r.into_iter()
                    .map(|(node_id, m)| ReplicationInfo { node_id, matched_index: Some(m), lag: last - m })
                    .collect()
            }),
        }
    }

    fn status(id: u64, g: GroupStatus) -> (u64, ClusterStatus) {
        let mut orders = g.clone();
        orders.group = Group::Orders;
        let groups = vec![g, orders];
        (id, ClusterStatus { node_id: id, addr: format!("h:{id}"), groups, incarnation: None, state_lost: None })
    }

    #[test]
    fn the_leader_in_the_highest_term_is_the_authority_and_reports_lag() {
        let statuses = BTreeMap::from([
            status(1, group_status("Follower", 3, 90, None)),
            status(2, group_status("Leader", 3, 100, Some(vec![(1, 90), (4, 40)]))),
            // A deposed leader that has not heard of term 3 yet.
            status(4, group_status("Leader", 2, 50, Some(vec![]))),
        ]);
        let view = build_view(&statuses, vec![]);
        let g = view.group(Group::Catalog).unwrap();
        assert_eq!(g.leader_id, Some(2));
        assert_eq!(g.term, 3);
        assert_eq!(g.last_log_index, Some(100));
        assert_eq!(g.voters(), BTreeSet::from([1, 2]));
        let learner = g.member(4).unwrap();
        assert!(!learner.voter);
        assert_eq!((learner.matched_index, learner.lag), (Some(40), Some(60)));
        assert_eq!(g.member(1).unwrap().role, "follower");
        assert_eq!(g.leader_addr(), Some("h:2"));
    }

    #[test]
    fn members_that_did_not_answer_are_unreachable() {
        let statuses = BTreeMap::from([status(2, group_status("Leader", 3, 100, Some(vec![(1, 100), (4, 100)])))]);
        let view = build_view(&statuses, vec![]);
        let g = view.group(Group::Orders).unwrap();
        assert_eq!(g.member(1).unwrap().role, "unreachable");
        assert_eq!(g.member(1).unwrap().lag, Some(0));
        assert_eq!(g.members.iter().map(|m| m.node_id).collect::<Vec<_>>(), vec![1, 2, 4], "voters first");
    }

    #[test]
    fn progress_reads_like_a_sentence() {
        let p = Progress::CatchingUp { group: Group::Catalog, matched: Some(40), leader_last: 100 };
        assert_eq!(p.to_string(), "catalog: catching up: 40 of 100 (60 behind)");
        let p = Progress::TransferringLeadership { group: Group::Orders, from: 3 };
        assert_eq!(p.to_string(), "orders: node 3 leads; transferring leadership");
    }
}
