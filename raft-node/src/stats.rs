//! Counters and latency histograms, recorded by the storage and Raft layers
//! and rendered by `GET /metrics` ([`crate::http::metrics`]).
//!
//! Everything here is lock-free (relaxed atomics): recording happens on hot
//! paths (the WAL sync thread, openraft's core task), reading only when
//! Prometheus scrapes, and a scrape may see one counter a little ahead of
//! another, which Prometheus tolerates by design.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use openraft::metrics::MetricsRecorder;

/// Upper bounds of the latency buckets, in seconds: from 100 µs (a WAL
/// fsync on a fast disk) to 10 s (a request that hit its deadline).
pub const LATENCY_BUCKETS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A latency histogram with the [`LATENCY_BUCKETS`].
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last slot counts those
    /// above the largest bound.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

/// A histogram as read at one instant, in Prometheus' terms.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Cumulative count of observations at or below each bound of [`LATENCY_BUCKETS`].
    pub cumulative: Vec<u64>,
    /// Every observation, seconds added up.
    pub sum_secs: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let slot = LATENCY_BUCKETS.iter().position(|bound| secs <= *bound).unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[slot].fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX), Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    /// The histogram now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0;
        let cumulative = self.buckets[..LATENCY_BUCKETS.len()]
            .iter()
            .map(|b| {
                running += b.load(Relaxed);
                running
            })
            .collect();
        HistogramSnapshot {
            cumulative,
            sum_secs: self.sum_nanos.load(Relaxed) as f64 / 1e9,
            count: self.count.load(Relaxed),
        }
    }
}

/// What openraft reports about one group through its [`MetricsRecorder`]
/// hook, turned into counters. Gauges (term, indexes, state) are read from
/// `Raft::metrics()` at scrape time instead.
#[derive(Debug, Default)]
pub struct RaftCounters {
    /// Entries applied to the state machine.
    pub applied_entries: AtomicU64,
    /// Batches of entries applied.
    pub apply_batches: AtomicU64,
    /// Entries written to the log store.
    pub appended_entries: AtomicU64,
    /// Batches written to the log store.
    pub append_batches: AtomicU64,
    /// Client writes proposed by this node as leader.
    pub proposed_entries: AtomicU64,
    /// Batches those writes were proposed in (see `raft::batch`).
    pub proposal_batches: AtomicU64,
    /// Reads that needed a read index (lease or linearizable), on this node
    /// or, on the leader, for a follower.
    pub read_index_requests: AtomicU64,
    /// Read indexes asked for: one per round of reads waiting together.
    pub read_index_rounds: AtomicU64,
    /// `AppendEntries` RPCs received (as a follower or learner).
    pub append_rpcs: AtomicU64,
    /// Votes handled.
    pub votes: AtomicU64,
    /// Heartbeat rounds sent (as leader).
    pub heartbeats: AtomicU64,
    /// Entries this node saw committed since it started: the sum of the
    /// commit index's increases.
    pub committed_entries: AtomicU64,
    /// Leadership transfers this node started.
    pub leader_transfers: AtomicU64,
    last_committed: AtomicU64,
}

impl MetricsRecorder for RaftCounters {
    fn record_apply_batch(&self, entry_count: u64) {
        self.applied_entries.fetch_add(entry_count, Relaxed);
        self.apply_batches.fetch_add(1, Relaxed);
    }

    fn record_append_batch(&self, entry_count: u64) {
        self.appended_entries.fetch_add(entry_count, Relaxed);
        self.append_batches.fetch_add(1, Relaxed);
    }

    fn record_write_batch(&self, entry_count: u64) {
        self.proposed_entries.fetch_add(entry_count, Relaxed);
        self.proposal_batches.fetch_add(1, Relaxed);
    }

    fn set_current_term(&self, _term: u64) {}

    fn set_last_log_index(&self, _index: u64) {}

    fn set_committed_index(&self, index: u64) {
        // The first report after a start is the commit index found on disk,
        // not new commits: it only sets the baseline.
        let previous = self.last_committed.swap(index, Relaxed);
        if previous != 0 && index > previous {
            self.committed_entries.fetch_add(index - previous, Relaxed);
        }
    }

    fn set_applied_index(&self, _index: u64) {}

    fn set_snapshot_index(&self, _index: u64) {}

    fn set_purged_index(&self, _index: u64) {}

    fn set_server_state(&self, _state: u8) {}

    fn increment_vote(&self) {
        self.votes.fetch_add(1, Relaxed);
    }

    fn increment_heartbeat(&self) {
        self.heartbeats.fetch_add(1, Relaxed);
    }

    fn increment_append(&self) {
        self.append_rpcs.fetch_add(1, Relaxed);
    }
}

/// Resident memory of this process in bytes (Linux `VmRSS`), if known.
pub fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Open file descriptors of this process, if known.
pub fn open_fds() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_keep_the_sum() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(20));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.cumulative[0], 1, "50 µs is in the first bucket");
        assert_eq!(s.cumulative[5], 2, "3 ms is at or below 5 ms");
        assert_eq!(*s.cumulative.last().unwrap(), 2, "20 s is above every bound, counted only in +Inf");
        assert!((s.sum_secs - 20.00305).abs() < 1e-9);
    }

    #[test]
    fn committed_entries_count_increases_after_the_first_report() {
        let c = RaftCounters::default();
        c.set_committed_index(100);
        assert_eq!(c.committed_entries.load(Relaxed), 0, "the index found on disk is a baseline");
        c.set_committed_index(105);
        c.set_committed_index(105);
        c.set_committed_index(110);
        assert_eq!(c.committed_entries.load(Relaxed), 10);
    }

    #[test]
    fn process_memory_is_readable_on_linux() {
        assert!(resident_memory_bytes().unwrap_or(1) > 0);
    }
}

/// What this node's purges of idempotency keys did since it started, for
/// `/metrics` (see [`crate::retention`]).
#[derive(Debug, Default)]
pub struct RetentionStats {
    /// Rounds that purged at least one key.
    pub rounds: AtomicU64,
    /// Reservations this node purged in the catalog, as leader.
    pub reservations_purged: AtomicU64,
    /// Keys this node forgot in the orders, as leader.
    pub keys_forgotten: AtomicU64,
    /// Held through each purge round, and by a backup while it pins the
    /// state (see [`crate::backup`]).
    pub round: tokio::sync::Mutex<()>,
}
