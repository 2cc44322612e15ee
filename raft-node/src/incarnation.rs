//! Incarnations: telling a member from an amnesiac with the same id.
//!
//! Raft's safety rests on every voter remembering what it acknowledged: its
//! vote and its log. A node whose data directory was lost and that comes back
//! with the same id and address remembers nothing, yet its peers would still
//! count it as the voter it was: it would grant its vote to a candidate
//! missing entries it had acknowledged, and a leader elected that way loses
//! committed writes.
//!
//! The rule that prevents it:
//!
//! - Each data directory gets a random **incarnation** when it is first
//!   opened ([`load_or_create`], stored with a synced write in the same
//!   RocksDB as the log it vouches for). A wiped directory gets a new one.
//! - Every member's incarnation is recorded in the groups' membership
//!   ([`Member`], openraft's node type here), so that all replicas agree on
//!   it: learned from each founding member when the cluster is founded
//!   (`crate::bootstrap`), and from the new node when a learner is added
//!   (`crate::membership::add_learner`), both over the cluster-token route
//!   `GET /raft/identity` ([`Identity`]).
//! - Every Raft RPC (vote, pre-vote, append, snapshot, transfer-leader; both
//!   groups) carries, in the [`HEADER`] header, the incarnation the sender
//!   has on record for its target. The target refuses it with `409` when
//!   that is not its own ([`check`]): no vote granted, no entry
//!   acknowledged. It says so in its log (error level), in `/health` and
//!   `/cluster` (`state_lost`), and names the recovery: `bazar cluster
//!   rejoin <id>` (remove the member, add it back as a learner with its new
//!   incarnation, promote it once caught up). The sender takes the refusal
//!   as a failed RPC and raises the alarm on its side too ([`Alarms`]).
//! - A membership written before incarnations existed has none ("unknown"):
//!   RPCs to such members carry no header and are not checked, so an upgrade
//!   causes no refusal; `bazar cluster rejoin` (or any later add) records it.
//!
//! Compatibility of the stored bytes: memberships are in log entries, in the
//! state machines' metadata and in snapshots, all postcard, which is not
//! self-describing: a field added to the node type would make every stored
//! `BasicNode` undecodable (or worse, misread). So a [`Member`] is encoded
//! for postcard as the one string `BasicNode` was: `addr` alone when the
//! incarnation is unknown (exactly the old bytes, both ways), `addr#hex`
//! otherwise. In JSON it is an object, `{"addr": ..., "incarnation": ...}`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::store::Store;
use crate::types::NodeId;
pub use crate::types::{Incarnation, Member, hex, parse_hex};

/// Header of a Raft RPC: the incarnation (hex) the sender has on record for
/// the target node.
pub const HEADER: &str = "x-bazar-incarnation";
/// Header of a Raft RPC: the sender's node id, so that a refusal can name it.
pub const FROM_HEADER: &str = "x-bazar-from";

/// Key of the incarnation in the database's default column family.
const KEY: &[u8] = b"bazar_incarnation";

/// This node's incarnation: read from `store`, or created (and synced)
/// when the database has none, that is when the data directory is new, or
/// was written by a version without incarnations. Returns it and whether it
/// was created now.
pub fn load_or_create(store: &Store) -> anyhow::Result<(Incarnation, bool)> {
    if let Some(incarnation) = stored(store)? {
        return Ok((incarnation, false));
    }
    let incarnation = loop {
        let i: u64 = rand::random();
        if i != 0 {
            break i;
        }
    };
    save(store, incarnation)?;
    Ok((incarnation, true))
}

/// The incarnation stored in `store`, if any.
pub fn stored(store: &Store) -> anyhow::Result<Option<Incarnation>> {
    match store.db().get(KEY)? {
        None => Ok(None),
        Some(bytes) => {
            let raw: [u8; 8] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| anyhow::anyhow!("stored incarnation has {} bytes", bytes.len()))?;
            Ok(Some(u64::from_be_bytes(raw)))
        }
    }
}

/// Stores `incarnation` as this data directory's, with a synced write:
/// before the node answers any RPC, so that a crash cannot bring it back
/// under another incarnation than the one it showed.
pub fn save(store: &Store, incarnation: Incarnation) -> anyhow::Result<()> {
    let mut opts = rocksdb::WriteOptions::default();
    opts.set_sync(true);
    store.db().put_opt(KEY, incarnation.to_be_bytes(), &opts)?;
    Ok(())
}

/// What `GET /raft/identity` answers: who is at this address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Its node id.
    pub node_id: NodeId,
    /// Its incarnation, hex.
    pub incarnation: String,
    /// Whether both of its groups have a membership.
    pub initialized: bool,
}

/// The outcome of checking an RPC's expected incarnation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The sender has no incarnation on record (or sent none): not checked.
    Unknown,
    /// It matches this node's.
    Match,
    /// The sender has another incarnation on record: this node is not the
    /// member it believes, and must not answer as it.
    Mismatch {
        /// What the sender has on record.
        expected: Incarnation,
    },
}

/// Checks the [`HEADER`] value of an RPC (`None`: absent) against `mine`.
/// An unparsable value counts as a mismatch: refusing is the safe side.
pub fn check(header: Option<&str>, mine: Incarnation) -> Check {
    match header {
        None => Check::Unknown,
        Some(h) => match parse_hex(h) {
            Some(expected) if expected == mine => Check::Match,
            Some(expected) => Check::Mismatch { expected },
            None => Check::Mismatch { expected: 0 },
        },
    }
}

/// The command that brings a node that lost its state back.
pub fn recovery(node_id: NodeId) -> String {
    format!("bazar cluster rejoin {node_id}")
}

/// How often a repeated refusal is logged again (heartbeats would flood the log).
const LOG_EVERY: Duration = Duration::from_secs(5);
/// A refusal older than this is no longer reported: the peer stopped
/// sending, or the node was re-added meanwhile.
const REPORT_FOR: Duration = Duration::from_secs(30);

/// One refusal: who, what was expected, what was found.
#[derive(Debug, Clone, Copy)]
struct Refusal {
    group: bazar_api::Group,
    expected: Incarnation,
    found: Incarnation,
    first: Instant,
    last: Instant,
    logged: Instant,
    count: u64,
}

/// The incarnation alarms of a node, on both sides of the RPCs: the
/// refusals it made (it lost its state: `/health` says so), and the
/// refusals its peers answered (a member lost its state: `/cluster` says so
/// next to that member). Keyed by the other node's id.
#[derive(Debug, Default)]
pub struct Alarms {
    refused: Mutex<HashMap<NodeId, Refusal>>,
    refused_by: Mutex<HashMap<NodeId, Refusal>>,
    /// RPCs this node refused.
    pub refused_total: std::sync::atomic::AtomicU64,
    /// RPCs peers refused because this node had another incarnation on record.
    pub refused_by_peers_total: std::sync::atomic::AtomicU64,
}

/// An alarm to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alarm {
    /// The other node.
    pub peer: NodeId,
    /// The group of the last refused RPC.
    pub group: bazar_api::Group,
    /// The incarnation on record in the membership.
    pub expected: Incarnation,
    /// The incarnation the node actually has.
    pub found: Incarnation,
    /// RPCs refused so far.
    pub count: u64,
}

fn note(
    map: &Mutex<HashMap<NodeId, Refusal>>,
    peer: NodeId,
    group: bazar_api::Group,
    expected: u64,
    found: u64,
) -> Option<u64> {
    let now = Instant::now();
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    let r = map.entry(peer).or_insert(Refusal {
        group,
        expected,
        found,
        first: now,
        last: now,
        logged: now - LOG_EVERY * 2,
        count: 0,
    });
    if r.expected != expected || r.found != found {
        r.first = now;
        r.logged = now - LOG_EVERY * 2;
    }
    r.group = group;
    r.expected = expected;
    r.found = found;
    r.last = now;
    r.count += 1;
    if r.logged.elapsed() >= LOG_EVERY {
        r.logged = now;
        Some(r.count)
    } else {
        None
    }
}

fn report(map: &Mutex<HashMap<NodeId, Refusal>>) -> Vec<Alarm> {
    let map = map.lock().unwrap_or_else(|p| p.into_inner());
    let mut alarms: Vec<Alarm> = map
        .iter()
        .filter(|(_, r)| r.last.elapsed() < REPORT_FOR)
        .map(|(peer, r)| Alarm { peer: *peer, group: r.group, expected: r.expected, found: r.found, count: r.count })
        .collect();
    alarms.sort_by_key(|a| a.peer);
    alarms
}

impl Alarms {
    /// This node (`me`, incarnation `mine`) refused an RPC of `group` from
    /// `from`, which has `expected` on record. Logs at error level, at most
    /// every few seconds per peer.
    pub fn refused(&self, me: NodeId, group: bazar_api::Group, from: NodeId, expected: Incarnation, mine: Incarnation) {
        self.refused_total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(count) = note(&self.refused, from, group, expected, mine) {
            tracing::error!(
                node_id = me,
                group = %group,
                from,
                on_record = %hex(expected),
                mine = %hex(mine),
                refused = count,
                recovery = %recovery(me),
                "STATE LOST: node {me} has incarnation {} but node {from} has it on record as incarnation {}: \
                 this data directory is not the one the cluster knows (wiped or replaced), so this node \
                 refuses to vote or acknowledge as the member it was. Recovery, on any node: `{}` \
                 (removes node {me} from both groups, adds it back as a learner, promotes it once caught up)",
                hex(mine),
                hex(expected),
                recovery(me),
            );
        }
    }

    /// Peer `peer` refused an RPC of `group` from this node: the membership
    /// has `expected` on record, the peer has `found`.
    pub fn refused_by(&self, group: bazar_api::Group, peer: NodeId, expected: Incarnation, found: Incarnation) {
        self.refused_by_peers_total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(count) = note(&self.refused_by, peer, group, expected, found) {
            tracing::error!(
                group = %group,
                peer,
                on_record = %hex(expected),
                found = %hex(found),
                refused = count,
                recovery = %recovery(peer),
                "STATE LOST on node {peer}: it answers with incarnation {} but the membership has incarnation {}: \
                 it lost its data and does not count as a member (the group runs without its redundancy). \
                 Recovery: `{}`",
                hex(found),
                hex(expected),
                recovery(peer),
            );
        }
    }

    /// A Raft RPC to `peer` succeeded: whatever it refused before is over.
    pub fn accepted_by(&self, peer: NodeId) {
        let mut map = self.refused_by.lock().unwrap_or_else(|p| p.into_inner());
        if !map.is_empty() {
            map.remove(&peer);
        }
    }

    /// This node accepted a checked RPC: a peer has its own incarnation on
    /// record, so it was re-added meanwhile. What other peers (a follower
    /// with an older membership, which sends nothing more once the leader
    /// is back) refused before is stale, and forgotten too.
    pub fn accepted_from(&self) {
        let mut map = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        if !map.is_empty() {
            map.clear();
        }
    }

    /// The recent refusals this node made, by sender.
    pub fn refusals(&self) -> Vec<Alarm> {
        report(&self.refused)
    }

    /// The recent refusals peers answered this node, by peer.
    pub fn refusals_by_peers(&self) -> Vec<Alarm> {
        report(&self.refused_by)
    }

    /// Whether peer `peer` refused this node's RPCs recently.
    pub fn peer_lost(&self, peer: NodeId) -> Option<Alarm> {
        self.refusals_by_peers().into_iter().find(|a| a.peer == peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::BasicNode;

    #[test]
    fn the_check_accepts_a_match_and_unknown_and_refuses_a_mismatch() {
        let mine = 0x1234_5678_9abc_def0;
        assert_eq!(check(None, mine), Check::Unknown);
        assert_eq!(check(Some(&hex(mine)), mine), Check::Match);
        assert_eq!(check(Some(&hex(7)), mine), Check::Mismatch { expected: 7 });
        assert_eq!(check(Some("garbage"), mine), Check::Mismatch { expected: 0 }, "unparsable refuses");
    }

    #[test]
    fn a_basic_node_written_by_the_old_type_decodes_as_a_member_of_unknown_incarnation() {
        // The bytes every existing log entry, state-machine meta and
        // snapshot holds: openraft's BasicNode in postcard.
        let old = postcard::to_allocvec(&BasicNode::new("127.0.0.1:7001")).unwrap();
        let m: Member = postcard::from_bytes(&old).unwrap();
        assert_eq!(m, Member::new("127.0.0.1:7001", None));
        // And a member of unknown incarnation is written as those very bytes.
        assert_eq!(postcard::to_allocvec(&m).unwrap(), old);
    }

    #[test]
    fn old_memberships_snapshot_metas_and_log_entries_decode_with_the_new_node_type() {
        use openraft::{Membership, StoredMembership};
        use std::collections::{BTreeMap, BTreeSet};
        type Lid = crate::sm::GroupLeaderId;
        let nodes: BTreeMap<u64, BasicNode> =
            (1..=3).map(|id| (id, BasicNode::new(format!("127.0.0.1:700{id}")))).collect();
        let old = Membership::<u64, BasicNode>::new(vec![BTreeSet::from([1, 2, 3])], nodes).unwrap();
        let old = StoredMembership::<Lid, u64, BasicNode>::new(None, old);
        let bytes = postcard::to_allocvec(&old).unwrap();
        let new: StoredMembership<Lid, u64, Member> = postcard::from_bytes(&bytes).unwrap();
        let m = new.membership();
        assert_eq!(m.voter_ids().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(m.get_node(&2), Some(&Member::new("127.0.0.1:7002", None)));

        // A snapshot's metadata, as in a snapshot file and the state machine's meta.
        let log_id = openraft::LogId::new(Lid { term: 3, node_id: 1 }, 42);
        let meta = openraft::SnapshotMeta::<Lid, u64, BasicNode> {
            last_log_id: Some(log_id),
            last_membership: StoredMembership::new(Some(log_id), old.membership().clone()),
        };
        let bytes = postcard::to_allocvec(&meta).unwrap();
        let new: crate::sm::GroupSnapshotMeta = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(new.last_log_id, Some(log_id));
        assert_eq!(new.last_membership.membership().get_node(&3), Some(&Member::new("127.0.0.1:7003", None)));

        // A membership entry of the log, followed by a command entry.
        type OldEntry =
            openraft::impls::Entry<Lid, openraft::EntryPayload<crate::orders::OrdersCommand, u64, BasicNode>>;
        let entry = OldEntry { log_id, payload: openraft::EntryPayload::Membership(old.membership().clone()) };
        let bytes = postcard::to_allocvec(&entry).unwrap();
        let new: crate::sm::GroupEntry<crate::orders::OrdersCommand> = postcard::from_bytes(&bytes).unwrap();
        match new.payload {
            openraft::EntryPayload::Membership(m) => {
                assert_eq!(m.get_node(&1), Some(&Member::new("127.0.0.1:7001", None)));
                assert_eq!(m.voter_ids().count(), 3);
            }
            other => panic!("decoded as {other:?}"),
        }
    }

    #[test]
    fn a_member_round_trips_in_postcard_and_json() {
        let m = Member::new("node-2.bazar:7000", Some(0xfeed));
        let bytes = postcard::to_allocvec(&m).unwrap();
        assert_eq!(postcard::from_bytes::<Member>(&bytes).unwrap(), m);
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json, serde_json::json!({"addr": "node-2.bazar:7000", "incarnation": "000000000000feed"}));
        assert_eq!(serde_json::from_value::<Member>(json).unwrap(), m);
        let old_json = serde_json::json!({"addr": "h:1"});
        assert_eq!(serde_json::from_value::<Member>(old_json).unwrap(), Member::new("h:1", None));
    }

    #[test]
    fn a_new_store_gets_an_incarnation_once_and_a_wiped_one_another() {
        let dir = tempfile::tempdir().unwrap();
        let first = {
            let store = Store::open(dir.path()).unwrap();
            let (i, created) = load_or_create(&store).unwrap();
            assert!(created && i != 0);
            assert_eq!(load_or_create(&store).unwrap(), (i, false));
            i
        };
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(load_or_create(&store).unwrap(), (first, false), "kept across restarts");
        drop(store);
        std::fs::remove_dir_all(dir.path()).unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (again, created) = load_or_create(&store).unwrap();
        assert!(created);
        assert_ne!(again, first, "a wiped directory is another incarnation");
    }

    #[test]
    fn alarms_are_reported_until_accepted() {
        let a = Alarms::default();
        a.refused(2, bazar_api::Group::Orders, 3, 1, 2);
        a.refused(2, bazar_api::Group::Orders, 3, 1, 2);
        assert_eq!(
            a.refusals(),
            vec![Alarm { peer: 3, group: bazar_api::Group::Orders, expected: 1, found: 2, count: 2 }]
        );
        a.accepted_from();
        assert!(a.refusals().is_empty());
        a.refused_by(bazar_api::Group::Catalog, 2, 1, 5);
        assert_eq!(a.peer_lost(2).map(|x| x.found), Some(5));
        a.accepted_by(2);
        assert!(a.peer_lost(2).is_none());
    }
}
