//! Changing who is in a group and who leads it: the node's side of
//! `bazar cluster add-node`, `remove-node` and rolling restarts.
//!
//! Everything here runs on the group's leader and goes through openraft:
//!
//! - [`add_learner`] first asks the node who it is ([`identify`]: its id and
//!   the incarnation of its data directory, recorded in the membership; see
//!   [`crate::incarnation`]), and refuses id 0, an address that is not
//!   host:port, a node that does not answer, and a member's id answered by
//!   another incarnation.
//! - [`add_learner`], [`change_membership`], [`remove_node`]: openraft's two-step membership
//!   change (a learner first receives the log, or a snapshot when the log it
//!   needs was purged; then a joint configuration makes it a voter, or drops
//!   a voter). Errors are sorted into what a caller should do next: go to the
//!   leader (`NotLeader`), wait and retry (`Unavailable`: a change already in
//!   progress, a leader that has not committed in its term yet), or fix the
//!   request (`Conflict`, `InvalidInput`).
//! - [`transfer_leadership`]: hands leadership to an up-to-date voter. The
//!   leader stops accepting writes, tells the target its last log id, and the
//!   target, once its log holds that id, starts an election at once instead
//!   of after an election timeout. Writes pause for one round trip and one
//!   vote, not for an election timeout, which is what makes a rolling restart
//!   nearly free ([`crate::run`] hands off on SIGTERM).
//! - [`successor`]: which voter should take over.
//!
//! If a transfer does not complete (the target died meanwhile), the old
//! leader stays out of service until the others elect a leader after their
//! election timeout: a failed transfer costs what a crash of the leader
//! costs, never more.

use std::collections::BTreeSet;
use std::time::Duration;

use bazar_api::{AddLearnerRequest, ChangeMembershipRequest};
use openraft::errors::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, Instant as _};

use crate::error::{Error, Result};
use crate::incarnation::{self, Incarnation, Member};
use crate::raft::RaftGroup;
use crate::raft::network::Peers;
use crate::sm::{NodeId, StateMachine};

/// A follower that has not acknowledged the leader for this long is taken
/// for down and never chosen as a successor.
const SUCCESSOR_MAX_SILENCE: Duration = Duration::from_millis(1_000);

/// How long [`identify`] keeps trying a node that does not answer yet (it
/// may have been started a moment ago).
pub const IDENTIFY_TIMEOUT: Duration = Duration::from_secs(3);

/// Asks the node at `addr` who it is (`GET /raft/identity`, cluster token)
/// and returns its incarnation, after checking that it is node `node_id`.
/// A node that does not answer within [`IDENTIFY_TIMEOUT`], or answers as
/// another id, is `InvalidInput`: the caller must start the right node first.
pub async fn identify(peers: &Peers, node_id: NodeId, addr: &str) -> Result<Incarnation> {
    let deadline = std::time::Instant::now() + IDENTIFY_TIMEOUT;
    loop {
        match peers.identity(addr, Duration::from_secs(1)).await {
            Ok(who) if who.node_id != node_id => {
                return Err(Error::InvalidInput(format!(
                    "the node at {addr} is node {}, not node {node_id}",
                    who.node_id
                )));
            }
            Ok(who) => {
                return incarnation::parse_hex(&who.incarnation).ok_or_else(|| {
                    Error::InvalidInput(format!("node {node_id} at {addr} answered an unreadable incarnation"))
                });
            }
            Err(e) if std::time::Instant::now() >= deadline => {
                return Err(Error::InvalidInput(format!(
                    "node {node_id} at {addr} does not answer ({e}): start it (empty, with --id {node_id} \
                     and the same cluster token) before adding it"
                )));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Checks that `addr` is a host:port: a DNS name or IP address (IPv6 in
/// brackets) and a non-zero port.
pub fn check_addr(addr: &str) -> Result<()> {
    let bad = || Error::InvalidInput(format!("addr {addr:?} is not host:port"));
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    if port.parse::<u16>().map_err(|_| bad())? == 0 {
        return Err(bad());
    }
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':');
    if host.is_empty() || !host.chars().all(allowed) {
        return Err(bad());
    }
    Ok(())
}

/// Adds `req.node_id` as a learner of `g` (which this node must lead), with
/// the incarnation it answers at `req.addr` (see [`identify`]), so that the
/// membership records which data directory is the member.
///
/// Re-adding a member at the same address and incarnation is a harmless
/// no-op, so an interrupted `add-node` can simply be run again; a member at
/// another address must be removed first, and so must one of another
/// incarnation (it lost its state: `bazar cluster rejoin` does both).
///
/// With `req.blocking`, answers once the learner holds every entry up to the
/// one that added it, or `Unavailable` after `timeout` (it stays a learner
/// and keeps catching up).
pub async fn add_learner<S: StateMachine>(g: &RaftGroup<S>, req: &AddLearnerRequest, timeout: Duration) -> Result<()> {
    if !g.is_leader() {
        return Err(g.not_leader());
    }
    let group = S::GROUP;
    let id = req.node_id;
    if id == 0 {
        return Err(Error::InvalidInput("node_id 0 is not a node id (ids start at 1)".into()));
    }
    check_addr(&req.addr)?;
    let incarnation = identify(g.peers(), id, &req.addr).await?;
    let member = Member::new(req.addr.clone(), Some(incarnation));
    let target = match g.member(id) {
        Some(existing) if existing.addr != req.addr => {
            return Err(Error::Conflict(format!(
                "node {id} is already a member of the {group} group at {}; remove it before adding it at {}",
                existing.addr, req.addr
            )));
        }
        Some(existing) if existing.incarnation != Some(incarnation) => {
            return Err(Error::Conflict(format!(
                "node {id} is a member of the {group} group as {existing}, but the node at {} is incarnation {}: \
                 it lost its state (or was replaced) and cannot take that member's place; remove it and add it \
                 back: {}",
                req.addr,
                incarnation::hex(incarnation),
                incarnation::recovery(id)
            )));
        }
        Some(_) => g.metrics().membership_config.log_id().as_ref().map(|l| l.index).unwrap_or(0),
        None => {
            tracing::info!(group = %group, node_id = id, member = %member, "adding a learner");
            g.raft()
                .add_learner(id, member, false)
                .await
                .map_err(|e| write_error(g, e, &format!("adding learner {id}")))?
                .log_id
                .index
        }
    };
    if !req.blocking {
        return Ok(());
    }
    // openraft's own blocking mode stops waiting once the learner is within
    // `replication_lag_threshold` entries, which a young group's whole log
    // is: wait until the learner holds the entry that added it instead.
    let caught_up = g
        .raft()
        .wait(Some(timeout))
        .metrics(
            |m| {
                let matched = m.replication.as_ref().and_then(|r| r.get(&id).cloned().flatten());
                matched.is_some_and(|l| l.index >= target) || m.replication.is_none()
            },
            "learner caught up",
        )
        .await;
    match caught_up {
        Ok(m) if m.replication.is_some() => Ok(()),
        Ok(_) => Err(g.not_leader()),
        Err(e) => Err(Error::OutcomeUnknown(format!(
            "node {id} is a learner of the {group} group but has not caught up within {timeout:?} ({e}); \
             it keeps catching up: watch its lag in GET /cluster"
        ))),
    }
}

/// Makes `req.voters` the voters of `g` (which this node must lead).
pub async fn change_membership<S: StateMachine>(g: &RaftGroup<S>, req: &ChangeMembershipRequest) -> Result<()> {
    if !g.is_leader() {
        return Err(g.not_leader());
    }
    if req.voters.is_empty() {
        return Err(Error::InvalidInput("voters must not be empty".into()));
    }
    tracing::info!(group = %S::GROUP, voters = ?req.voters, retain = req.retain, "changing the voters");
    g.raft()
        .change_membership(req.voters.clone(), req.retain)
        .await
        .map(|_| ())
        .map_err(|e| write_error(g, e, "changing the voters"))
}

/// Removes `node_id`, a voter or a learner, from `g` (which this node must
/// lead, and which must not be `node_id` itself: a leader that removed
/// itself would leave its group leaderless for an election timeout, so the
/// caller transfers leadership first). Removing a non-member is a no-op.
pub async fn remove_node<S: StateMachine>(g: &RaftGroup<S>, node_id: NodeId) -> Result<()> {
    if !g.is_leader() {
        return Err(g.not_leader());
    }
    let group = S::GROUP;
    let m = g.metrics();
    if node_id == m.id {
        return Err(Error::Conflict(format!(
            "node {node_id} leads the {group} group: transfer leadership first (POST /admin/{group}/transfer-leader)"
        )));
    }
    let membership = m.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    if voters.contains(&node_id) {
        let rest: BTreeSet<NodeId> = voters.iter().copied().filter(|id| *id != node_id).collect();
        tracing::info!(group = %group, node_id, voters = ?rest, "removing a voter");
        g.raft()
            .change_membership(rest, false)
            .await
            .map(|_| ())
            .map_err(|e| write_error(g, e, &format!("removing voter {node_id}")))
    } else if membership.get_node(&node_id).is_some() {
        tracing::info!(group = %group, node_id, "removing a learner");
        g.raft()
            .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([node_id])), false)
            .await
            .map(|_| ())
            .map_err(|e| write_error(g, e, &format!("removing learner {node_id}")))
    } else {
        Ok(())
    }
}

fn write_error<S: StateMachine>(g: &RaftGroup<S>, e: RaftError<S::C, ClientWriteError<S::C>>, doing: &str) -> Error {
    let group = S::GROUP;
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => g.not_leader(),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(
            e @ (ChangeMembershipError::InProgress(_) | ChangeMembershipError::UncommittedLeaderLog(_)),
        )) => Error::Unavailable(format!("{doing} in the {group} group: {e}; retry shortly")),
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)) => Error::OutcomeUnknown(format!(
            "{doing} in the {group} group: the leader changed meanwhile; check the membership and retry"
        )),
        RaftError::APIError(e) => Error::Conflict(format!("{doing} in the {group} group: {e}")),
        RaftError::Fatal(f) => Error::Unavailable(format!("the {group} group stopped: {f}")),
    }
}

/// The voter best placed to lead `g` next, as seen by its leader: among the
/// other voters that acknowledged the leader recently, the one whose log
/// matches furthest (ties go to the lowest id). `None` if this node does not
/// lead or no other voter qualifies.
pub fn successor<S: StateMachine>(g: &RaftGroup<S>) -> Option<NodeId> {
    let m = g.metrics();
    let me = m.id;
    let voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().filter(|id| *id != me).collect();
    let replication = m.replication.as_ref()?;
    let heartbeat = m.heartbeat.as_ref();
    voters
        .into_iter()
        .filter(|id| {
            let acked = heartbeat.and_then(|h| h.get(id)).and_then(|t| t.as_ref());
            acked.is_some_and(|t| t.elapsed() < SUCCESSOR_MAX_SILENCE)
        })
        .map(|id| (replication.get(&id).cloned().flatten().map(|l| l.index), id))
        // Furthest match first, then lowest id.
        .max_by(|(a, ida), (b, idb)| a.cmp(b).then(idb.cmp(ida)))
        .map(|(_, id)| id)
}

/// Hands leadership of `g` to `to` (by default the [`successor`]) and waits
/// up to `timeout` until another node leads. Returns the new leader.
pub async fn transfer_leadership<S: StateMachine>(
    g: &RaftGroup<S>,
    to: Option<NodeId>,
    timeout: Duration,
) -> Result<NodeId> {
    let group = S::GROUP;
    if !g.is_leader() {
        return Err(g.not_leader());
    }
    let me = g.metrics().id;
    let target = match to {
        Some(id) => {
            let m = g.metrics();
            if id == me {
                return Ok(me);
            }
            if !m.membership_config.membership().voter_ids().any(|v| v == id) {
                return Err(Error::InvalidInput(format!("node {id} is not a voter of the {group} group")));
            }
            id
        }
        None => successor(g).ok_or_else(|| {
            Error::Conflict(format!("no other voter of the {group} group is up and can take over leadership"))
        })?,
    };
    let started = std::time::Instant::now();
    tracing::info!(group = %group, to = target, "transferring leadership");
    g.raft().trigger().transfer_leader(target).await.map_err(|f| Error::Unavailable(f.to_string()))?;
    let moved =
        g.raft().wait(Some(timeout)).metrics(|m| m.current_leader.is_some_and(|l| l != me), "leadership moved").await;
    match moved {
        Ok(m) => {
            let leader = m.current_leader.unwrap_or(target);
            tracing::info!(
                group = %group,
                leader,
                millis = started.elapsed().as_millis() as u64,
                "leadership transferred"
            );
            Ok(leader)
        }
        Err(e) => Err(Error::Unavailable(format!(
            "leadership of the {group} group did not move to node {target} within {timeout:?} ({e}); \
             the other voters elect a leader after their election timeout"
        ))),
    }
}
