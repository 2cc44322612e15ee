//! Following one group's change stream (`GET /watch` on some node).
//!
//! The follower subscribes from the cache's `stream_index`, so a reconnect
//! (to the same node or another) replays exactly what was missed, or gets a
//! `reset` that flushes the group. It reconnects when the stream breaks or
//! goes silent, and moves to another node when the one it follows falls
//! behind the leader's commit index for longer than the staleness bound.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use bazar_api::{Group, WatchEvent};
use futures::StreamExt;
use tokio::time::Instant;

use crate::Frontend;

/// How long a stream may be silent (heartbeats come every ~100 ms) before it
/// is considered broken.
const IDLE_TIMEOUT: Duration = Duration::from_secs(1);

/// Where a group's stream stands, for `/cluster`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StreamStatus {
    /// The node followed, if connected.
    pub node: Option<u64>,
    /// Connections made so far.
    pub connects: u64,
    /// The last error, if any.
    pub last_error: Option<String>,
}

/// Shared status of a group's follower.
pub type SharedStatus = Arc<Mutex<StreamStatus>>;

/// Follows `group`'s change stream until shutdown.
pub async fn follow(front: Arc<Frontend>, group: Group, status: SharedStatus) {
    let mut turn = 0usize;
    let mut pause = Duration::from_millis(50);
    loop {
        if front.shutdown.is_cancelled() {
            return;
        }
        // Rotate over healthy replicas, so a lagging one is left.
        let healthy: Vec<_> = front.replicas.all().iter().filter(|r| r.is_healthy()).cloned().collect();
        let pool = if healthy.is_empty() { front.replicas.all().to_vec() } else { healthy };
        let replica = pool[turn % pool.len()].clone();
        turn += 1;

        let from = front.cache.status(group).stream_index;
        let client = front.node_client(&replica.base, IDLE_TIMEOUT);
        let outcome = tokio::select! {
            _ = front.shutdown.cancelled() => return,
            r = client.watch(group, from) => r,
        };
        let mut events = match outcome {
            Ok(events) => events,
            Err(e) => {
                {
                    let mut s = status.lock().expect("status poisoned");
                    s.node = None;
                    s.last_error = Some(format!("node {}: {e}", replica.id));
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
                continue;
            }
        };
        {
            let mut s = status.lock().expect("status poisoned");
            s.node = Some(replica.id);
            s.connects += 1;
        }
        tracing::info!(%group, node = replica.id, from, "following change stream");
        pause = Duration::from_millis(50);
        let mut last_fresh = Instant::now();
        let ended = loop {
            let next = tokio::select! {
                _ = front.shutdown.cancelled() => return,
                n = events.next() => n,
            };
            match next {
                Some(Ok(WatchEvent::Applied { index, keys })) => front.cache.applied(group, index, &keys),
                Some(Ok(WatchEvent::Heartbeat { applied_index, .. })) => {
                    front.cache.heartbeat(group, applied_index, &front.replicas.samples(group));
                    if front.cache.is_fresh(group) {
                        last_fresh = Instant::now();
                    } else if last_fresh.elapsed() > front.config.max_staleness {
                        break format!("node {} is behind the leader", replica.id);
                    }
                }
                Some(Ok(WatchEvent::Reset { applied_index, reason })) => {
                    tracing::warn!(%group, node = replica.id, applied_index, %reason, "change stream reset: cache flushed");
                    front.cache.reset(group, applied_index);
                }
                Some(Err(e)) => break format!("node {}: {e}", replica.id),
                None => break format!("node {} closed the stream", replica.id),
            }
        };
        tracing::warn!(%group, reason = %ended, "change stream lost; reconnecting");
        {
            let mut s = status.lock().expect("status poisoned");
            s.node = None;
            s.last_error = Some(ended);
        }
    }
}
