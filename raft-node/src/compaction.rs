//! When each group builds a snapshot, and so purges the log behind it.
//!
//! A snapshot copies the group's whole state machine, so a build costs time
//! in proportion to the data, and the data only grows (orders are kept).
//! With openraft's own policy, a build every `--snapshot-logs` entries, the
//! share of a node's time spent building would grow with the store's age
//! without bound. On a 2-CPU test host, a build of the orders group took
//! 0.36 s of CPU after 187,000 buys, 1.0 s after 375,000 and 1.4 s after
//! 562,000 (about 2.4 µs per buy kept). With a build every 100,000 entries
//! on every node, that is already 14 µs per entry per node at 562,000 buys,
//! and ten times as much at ten times the orders.
//!
//! So openraft never starts a build on its own
//! ([`openraft::SnapshotPolicy::Never`]). [`pace_snapshots`] starts them, for
//! each group, once both hold:
//!
//! - at least `--snapshot-logs` entries were applied since the last snapshot
//!   (built here or installed from the leader), as before;
//! - since this node's last build ended, [`BUILD_SHARE`]` - 1` times as long
//!   as that build took has passed, so builds take at most `1/BUILD_SHARE`
//!   of the time, whatever the size of the data.
//!
//! A small state builds in milliseconds, so there the count alone decides,
//! as it did. A large one waits longer between builds and its log grows
//! meanwhile, to about the write rate times 19 build times: at 5,000 buys/s
//! and 2.4 µs of build per buy kept, a quarter as many entries as buys kept
//! (more when the CPUs are contended, since the wait follows the build's
//! wall time). The log stays bounded by the state it describes, and builds
//! a fixed share of the time.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::time::Instant;

use crate::node::Node;
use crate::raft::RaftGroup;
use crate::sm::StateMachine;

/// Builds take at most one part in this many of the time.
pub const BUILD_SHARE: u32 = 20;

/// How often each group's need for a snapshot is checked.
const CHECK_EVERY: Duration = Duration::from_millis(50);

/// One group's pacing: when its last build ended, as this task saw it.
#[derive(Debug, Default)]
pub struct Pacer {
    /// Builds counted when last checked.
    builds_seen: u64,
    /// No build may start before this.
    not_before: Option<Instant>,
}

/// What [`Pacer::due`] looks at.
#[derive(Debug, Clone, Copy)]
pub struct GroupState {
    /// The last applied log index.
    pub applied: u64,
    /// The index of the last snapshot, built or installed (0 without one).
    pub snapshot: u64,
    /// Builds finished by this node so far.
    pub builds: u64,
    /// How long the last of them took.
    pub last_build: Duration,
}

impl Pacer {
    /// Whether a build should start at `now`, given the group's state and
    /// `every` (its `--snapshot-logs`).
    pub fn due(&mut self, now: Instant, state: GroupState, every: u64) -> bool {
        if state.builds != self.builds_seen {
            // A build ended since the last check (at most CHECK_EVERY ago).
            self.builds_seen = state.builds;
            self.not_before = Some(now + state.last_build * (BUILD_SHARE - 1));
        }
        if state.applied.saturating_sub(state.snapshot) < every.max(1) {
            return false;
        }
        self.not_before.is_none_or(|t| now >= t)
    }
}

/// Starts each group's snapshot builds as the module docs say, until the
/// node shuts down.
pub async fn pace_snapshots(node: Arc<Node>) {
    let (mut catalog, mut orders) = (Pacer::default(), Pacer::default());
    let catalog_every = node.config.snapshot_logs(bazar_api::Group::Catalog);
    let orders_every = node.config.snapshot_logs(bazar_api::Group::Orders);
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = node.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        check(&node.catalog, &mut catalog, catalog_every).await;
        check(&node.orders, &mut orders, orders_every).await;
    }
}

async fn check<S: StateMachine>(group: &RaftGroup<S>, pacer: &mut Pacer, every: u64) {
    let metrics = group.metrics();
    let stats = group.snapshots().stats();
    let state = GroupState {
        applied: metrics.last_applied.map(|l| l.index).unwrap_or(0),
        snapshot: metrics.snapshot.map(|l| l.index).unwrap_or(0),
        builds: stats.built.load(Relaxed),
        last_build: Duration::from_millis(stats.last_build_millis.load(Relaxed)),
    };
    if pacer.due(Instant::now(), state, every) {
        // A no-op while a build is under way: openraft runs one at a time.
        if let Err(e) = group.raft().trigger().snapshot().await {
            tracing::debug!(group = %S::GROUP, error = %e, "could not start a snapshot build");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(applied: u64, snapshot: u64, builds: u64, last_build_ms: u64) -> GroupState {
        GroupState { applied, snapshot, builds, last_build: Duration::from_millis(last_build_ms) }
    }

    #[test]
    fn a_build_starts_every_so_many_entries_while_builds_are_quick() {
        let mut p = Pacer::default();
        let t = Instant::now();
        assert!(!p.due(t, state(99, 0, 0, 0), 100));
        assert!(p.due(t, state(100, 0, 0, 0), 100));
        // It took 2 ms: the next may start 38 ms after it ended.
        assert!(!p.due(t, state(150, 100, 1, 2), 100));
        assert!(!p.due(t + Duration::from_millis(30), state(200, 100, 1, 2), 100));
        assert!(p.due(t + Duration::from_millis(40), state(200, 100, 1, 2), 100));
    }

    #[test]
    fn a_slow_build_holds_the_next_one_back_for_nineteen_times_as_long() {
        let mut p = Pacer::default();
        let t = Instant::now();
        // A build that took 4 s ended: the next waits 76 s, however far the log runs.
        assert!(!p.due(t, state(500_000, 100_000, 1, 4_000), 100_000));
        assert!(!p.due(t + Duration::from_secs(75), state(900_000, 100_000, 1, 4_000), 100_000));
        assert!(p.due(t + Duration::from_secs(76), state(900_000, 100_000, 1, 4_000), 100_000));
        // An installed snapshot counts as the last one, too.
        assert!(!p.due(t + Duration::from_secs(80), state(900_000, 850_000, 1, 4_000), 100_000));
    }
}
