//! Leader placement: the catalog's leadership follows the orders leader.
//!
//! Every buy is coordinated by the orders leader, and its reservation is a
//! catalog write: when the two groups are led by the same node, that write is
//! proposed locally instead of being forwarded over HTTP to another node. So
//! the catalog leader hands its leadership to the orders leader, when that
//! node is a caught-up catalog voter, both leaderships have been stable for a
//! while, and no hand-off happened recently. A hand-off is a Raft leadership
//! transfer: the target campaigns at once, without waiting for an election
//! timeout, and writes refused meanwhile are retried by their proposers.
//!
//! The other way round, when the two leaders cannot reach each other (a
//! partition that leaves both with a majority through a third node), no
//! buy can reserve its stock, and the catalog leader's hand-off cannot
//! reach its target. So an orders leader that has not heard from the
//! catalog leader's node for `CUT_OFF_AFTER` hands the *orders*
//! leadership to a caught-up voter it does hear from: that node forwards
//! the reservations, and the catalog's leadership then follows it.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::node::Node;

/// How often placement is checked.
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// How long both leaderships must have been stable before a hand-off.
const STABLE_FOR: Duration = Duration::from_secs(2);
/// Least time between two hand-offs from this node.
const COOLDOWN: Duration = Duration::from_secs(10);
/// How long an orders leader goes without an acknowledgement from the
/// catalog leader's node before it moves the orders leadership away.
const CUT_OFF_AFTER: Duration = Duration::from_secs(1);
/// How recent an acknowledgement makes a node a reachable target.
const REACHABLE_WITHIN: Duration = Duration::from_millis(500);

/// Moves the catalog's leadership to the orders leader while this node leads
/// the catalog. Runs until the node shuts down.
pub async fn colocate_leaders(node: Arc<Node>) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // (catalog term, orders leader) last seen, and since when.
    let mut seen: Option<((u64, Option<u64>), Instant)> = None;
    let mut last_handoff: Option<Instant> = None;
    // Orders term led by this node, and since when.
    let mut leading_orders: Option<(u64, Instant)> = None;
    let mut last_reroute: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if node.orders.is_leader() {
            let term = node.orders.metrics().current_term;
            let since = match leading_orders {
                Some((t, since)) if t == term => since,
                _ => leading_orders.insert((term, Instant::now())).1,
            };
            if since.elapsed() >= CUT_OFF_AFTER
                && last_reroute.is_none_or(|t| t.elapsed() >= COOLDOWN)
                && let Some(target) = reroute_target(&node)
            {
                tracing::info!(
                    group = "orders",
                    to = target,
                    "the catalog leader is unreachable: handing orders leadership to a node that reaches it"
                );
                last_reroute = Some(Instant::now());
                if let Err(e) = node.orders.raft().trigger().transfer_leader(target).await {
                    tracing::warn!(group = "orders", to = target, error = %e, "leadership hand-off failed");
                }
                continue;
            }
        } else {
            leading_orders = None;
        }
        if !node.catalog.is_leader() {
            seen = None;
            continue;
        }
        let catalog = node.catalog.metrics();
        let orders_leader = node.orders.leader().map(|(id, _)| id);
        let state = (catalog.current_term, orders_leader);
        let since = match seen {
            Some((s, since)) if s == state => since,
            _ => {
                seen = Some((state, Instant::now()));
                continue;
            }
        };
        let Some(target) = orders_leader.filter(|id| *id != node.id) else { continue };
        if since.elapsed() < STABLE_FOR || last_handoff.is_some_and(|t| t.elapsed() < COOLDOWN) {
            continue;
        }
        let voter = catalog.membership_config.membership().voter_ids().any(|id| id == target);
        let last = catalog.last_log_index.unwrap_or(0);
        let caught_up = catalog
            .replication
            .as_ref()
            .and_then(|r| r.get(&target).cloned().flatten())
            .is_some_and(|matched| matched.index >= last);
        if !voter || !caught_up {
            continue;
        }
        tracing::info!(group = "catalog", to = target, "handing catalog leadership to the orders leader");
        last_handoff = Some(Instant::now());
        if let Err(e) = node.catalog.raft().trigger().transfer_leader(target).await {
            tracing::warn!(group = "catalog", to = target, error = %e, "leadership hand-off failed");
        }
    }
}

/// On the orders leader, when another node leads the catalog and has
/// acknowledged nothing of the orders group for [`CUT_OFF_AFTER`]: a
/// (nearly) caught-up orders voter other than both that acknowledged within
/// [`REACHABLE_WITHIN`], to hand the orders leadership to.
fn reroute_target(node: &Node) -> Option<u64> {
    use openraft::Instant as _;

    let (catalog_leader, _) = node.catalog.leader()?;
    if catalog_leader == node.id {
        return None;
    }
    let orders = node.orders.metrics();
    let acked = orders.heartbeat.as_ref()?;
    let age = |id: u64| acked.get(&id).copied().flatten().map(|t| t.elapsed());
    if age(catalog_leader).is_some_and(|a| a < CUT_OFF_AFTER) {
        return None;
    }
    let last = orders.last_log_index.unwrap_or(0);
    let replication = orders.replication.as_ref()?;
    orders.membership_config.membership().voter_ids().find(|id| {
        *id != node.id
            && *id != catalog_leader
            && age(*id).is_some_and(|a| a < REACHABLE_WITHIN)
            // Nearly caught up: the target of a transfer waits for the rest.
            && replication.get(id).cloned().flatten().is_some_and(|m| m.index + 100 >= last)
    })
}
