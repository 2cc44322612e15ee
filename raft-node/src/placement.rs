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

/// Moves the catalog's leadership to the orders leader while this node leads
/// the catalog. Runs until the node shuts down.
pub async fn colocate_leaders(node: Arc<Node>) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // (catalog term, orders leader) last seen, and since when.
    let mut seen: Option<((u64, Option<u64>), Instant)> = None;
    let mut last_handoff: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = tick.tick() => {}
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
