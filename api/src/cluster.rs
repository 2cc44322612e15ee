//! Cluster status, digests and admin requests.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::Group;

/// Answer of a node's `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeHealth {
    /// `ok` while the node serves.
    pub status: String,
    /// This node's id.
    pub node_id: u64,
    /// Whether both groups have been initialized.
    pub initialized: bool,
    /// Whether the catalog has been loaded with its initial books.
    pub catalog_seeded: bool,
    /// Each group's leader as this node sees it.
    pub leaders: BTreeMap<Group, Option<u64>>,
    /// Each group's progress on this node.
    #[serde(default)]
    pub groups: BTreeMap<Group, GroupHealth>,
    /// Buys this replica does not know to be settled yet: stock
    /// reservations whose order is not known to be settled, plus pending
    /// orders. Buys in flight, or interrupted ones that the orders leader
    /// will settle. Zero once everything settled.
    #[serde(default)]
    pub unclaimed_buys: u64,
    /// The incarnation of this node's data directory (hex): a new one
    /// whenever the directory was created anew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<String>,
    /// Set while this node refuses its peers' Raft RPCs because they know it
    /// as another incarnation: it lost its state and must be re-added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_lost: Option<StateLost>,
}

/// A node that lost its state (its data directory is not the one its peers
/// know): it neither votes nor acknowledges as the member it was, until it
/// is removed and added back (`recovery`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateLost {
    /// What happened, in a sentence, with the recovery.
    pub message: String,
    /// The one command that brings the node back.
    pub recovery: String,
    /// The node's incarnation now (hex).
    pub incarnation: String,
    /// The incarnation its peers have on record (hex).
    pub on_record: String,
    /// The peer whose RPC was refused last.
    pub noticed_by: u64,
    /// The group of that RPC.
    pub group: Group,
}

/// One group's progress on one node, as reported by `/health`: enough for a
/// frontend to route writes and to bound the staleness of what it caches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupHealth {
    /// The leader as this node sees it.
    pub leader_id: Option<u64>,
    /// Current term.
    pub term: u64,
    /// Whether this node leads the group.
    pub is_leader: bool,
    /// Highest index known committed by a quorum.
    pub committed_index: u64,
    /// Highest index applied to this node's state machine.
    pub applied_index: u64,
    /// On the leader: milliseconds since a quorum last acknowledged its
    /// leadership. A leader cut off from its quorum stops refreshing this,
    /// so its commit index can be trusted only while this is small.
    pub quorum_ack_age_ms: Option<u64>,
}

/// A member of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Node id.
    pub node_id: u64,
    /// Address of the node's HTTP server.
    pub addr: String,
    /// Voter (true) or learner (false).
    pub voter: bool,
    /// The incarnation the membership records for it (hex; absent when it
    /// was recorded before incarnations existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<String>,
    /// Set when it refused this node's Raft RPCs recently because it is
    /// another incarnation: `state lost: remove and re-add (...)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_lost: Option<String>,
}

/// Replication progress of one follower, as seen by the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationInfo {
    /// Follower id.
    pub node_id: u64,
    /// Highest index known to be replicated to it.
    pub matched_index: Option<u64>,
    /// Entries it is behind the leader's last log index.
    pub lag: u64,
}

/// One group's state on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    /// Which group.
    pub group: Group,
    /// Leader, Follower, Candidate or Learner.
    pub state: String,
    /// Current term.
    pub term: u64,
    /// The leader as this node sees it.
    pub leader_id: Option<u64>,
    /// Last index in this node's log.
    pub last_log_index: Option<u64>,
    /// Highest index known committed.
    pub committed_index: Option<u64>,
    /// Highest index applied to the state machine.
    pub applied_index: Option<u64>,
    /// Last index covered by the current snapshot.
    pub snapshot_index: Option<u64>,
    /// Last index purged from the log.
    pub purged_index: Option<u64>,
    /// Members of the group.
    pub members: Vec<MemberInfo>,
    /// On the leader: each follower's progress.
    pub replication: Option<Vec<ReplicationInfo>>,
}

/// Answer of a node's `GET /cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The answering node.
    pub node_id: u64,
    /// Its advertised address.
    pub addr: String,
    /// Both groups as it sees them.
    pub groups: Vec<GroupStatus>,
    /// The incarnation of its data directory (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<String>,
    /// Set while it lost its state (see [`NodeHealth::state_lost`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_lost: Option<StateLost>,
}

/// Answer of `GET /admin/digest?group=G`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// Which group.
    pub group: Group,
    /// The answering node.
    pub node_id: u64,
    /// The applied index the digest was computed at.
    pub applied_index: u64,
    /// Hex SHA-256 over the state machine's data, in key order.
    pub digest: String,
    /// Rows and bytes (keys plus values) of the state machine, by kind of
    /// row (`books`, `reservations`, `orders`, `idempotency_keys`, ...),
    /// counted in the same pass.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rows: BTreeMap<String, RowCount>,
}

/// How many rows of one kind a state machine holds, and their size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowCount {
    /// Rows.
    pub rows: u64,
    /// Bytes of their keys and values.
    pub bytes: u64,
}

/// Body of `POST /admin/{group}/add-learner`: a node to replicate the group
/// to, without a vote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddLearnerRequest {
    /// The new node's id.
    pub node_id: u64,
    /// The address (host:port) its peers reach it at.
    pub addr: String,
    /// Answer only once the learner has caught up with the leader. An
    /// operator tool should rather answer at once and watch the learner's
    /// lag in `GET /cluster`, which it can report as progress and bound by
    /// its own deadline.
    #[serde(default = "default_true")]
    pub blocking: bool,
}

fn default_true() -> bool {
    true
}

/// Body of `POST /admin/{group}/change-membership`: the voters after the
/// change. New voters must be learners already.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeMembershipRequest {
    /// Every voter after the change.
    pub voters: std::collections::BTreeSet<u64>,
    /// Keep removed voters as learners (they keep receiving the log).
    #[serde(default)]
    pub retain: bool,
}

/// Body of `POST /admin/{group}/remove-node`: a voter or learner to drop
/// from the group. The group's leader cannot remove itself: transfer
/// leadership first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveNodeRequest {
    /// The node to remove.
    pub node_id: u64,
}

/// Body of `POST /admin/{group}/transfer-leader`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferLeaderRequest {
    /// The voter to hand leadership to; by default the most up-to-date
    /// other voter.
    #[serde(default)]
    pub to: Option<u64>,
}

/// Body of `POST /admin/init`: the initial voters of both groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitRequest {
    /// Node id to address.
    pub members: BTreeMap<u64, String>,
}
