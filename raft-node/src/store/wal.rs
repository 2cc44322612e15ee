//! Group commit of the write-ahead log.
//!
//! Log appends are written to RocksDB without sync (so they are readable at
//! once, as openraft requires), then queued here with their completion
//! callback. One thread syncs the WAL and completes every callback that was
//! queued before the sync began. While a sync is running, new appends of both
//! groups pile up and share the next sync: under load, one `fsync` covers many
//! appends, and with no load an append waits for exactly one `fsync`.
//!
//! A failed sync is reported to every waiting callback; openraft treats that
//! as a storage error and stops the group, which is the only safe reaction.
//!
//! The syncer measures what `/metrics` reports about durability: how long
//! each `fsync` takes, and how long each append waits from being queued (just
//! after its unsynced RocksDB write, which takes microseconds) until it is
//! durable, which is the disk's share of a write's latency.

use std::io;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Instant;

use rocksdb::DB;

use crate::stats::Histogram;

/// Called once the WAL holding an append is durable (or failed to sync).
pub type SyncCallback = Box<dyn FnOnce(io::Result<()>) + Send>;

/// Handle to the syncing thread. Cloning shares the thread.
#[derive(Clone)]
pub struct WalSyncer {
    // Declared first, so dropped first: once the last handle's sender is
    // gone, the thread's loop ends and `thread` can join it.
    tx: mpsc::Sender<(Instant, SyncCallback)>,
    stats: Arc<SyncStats>,
    _thread: Arc<Joiner>,
}

/// Joins the syncing thread when the last handle is dropped. The thread holds
/// a reference to the database; joining it means the database is closed (if
/// that was the last reference) before the store is gone, and never by a
/// thread racing the process's exit.
struct Joiner(std::sync::Mutex<Option<std::thread::JoinHandle<()>>>);

impl Drop for Joiner {
    fn drop(&mut self) {
        if let Some(handle) = self.0.lock().ok().and_then(|mut h| h.take()) {
            let _ = handle.join();
        }
    }
}

/// Counters of the syncer, for `/metrics`.
#[derive(Default)]
pub struct SyncStats {
    /// Number of `fsync`s done.
    pub syncs: std::sync::atomic::AtomicU64,
    /// Number of callbacks completed.
    pub callbacks: std::sync::atomic::AtomicU64,
    /// Total microseconds spent syncing.
    pub sync_micros: std::sync::atomic::AtomicU64,
    /// Duration of each `fsync` of the WAL.
    pub sync_latency: Histogram,
    /// Time from queueing each append to its completion: the wait for the
    /// sync under way, if any, plus the sync that covers it.
    pub append_latency: Histogram,
}

impl WalSyncer {
    /// Starts the syncing thread. It exits once every handle is dropped.
    /// With `sync` false (the planted bug `no-fsync`) it only flushes the
    /// WAL to the operating system and reports that as durable.
    pub fn spawn(db: Arc<DB>, sync: bool) -> WalSyncer {
        let (tx, rx) = mpsc::channel::<(Instant, SyncCallback)>();
        let stats = Arc::new(SyncStats::default());
        let thread_stats = stats.clone();
        let handle = std::thread::Builder::new()
            .name("wal-sync".into())
            .spawn(move || sync_loop(db, rx, thread_stats, sync))
            .expect("spawning the WAL sync thread");
        WalSyncer { tx, stats, _thread: Arc::new(Joiner(std::sync::Mutex::new(Some(handle)))) }
    }

    /// Queues `callback` to run once everything written so far is durable.
    pub fn after_sync(&self, callback: SyncCallback) {
        if let Err(mpsc::SendError((_, cb))) = self.tx.send((Instant::now(), callback)) {
            cb(Err(io::Error::other("WAL sync thread has stopped")));
        }
    }

    /// The syncer's counters.
    pub fn stats(&self) -> &SyncStats {
        &self.stats
    }
}

fn sync_loop(db: Arc<DB>, rx: mpsc::Receiver<(Instant, SyncCallback)>, stats: Arc<SyncStats>, sync: bool) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut batch: Vec<(Instant, SyncCallback)> = Vec::new();
    // Block for the first waiter, then take everyone already queued: all of
    // them wrote before this point, so one sync covers them all.
    while let Ok(first) = rx.recv() {
        batch.push(first);
        batch.extend(rx.try_iter());
        let started = Instant::now();
        let result = db.flush_wal(sync);
        let done = Instant::now();
        let took = done - started;
        stats.syncs.fetch_add(1, Relaxed);
        stats.sync_micros.fetch_add(took.as_micros() as u64, Relaxed);
        stats.sync_latency.observe(took);
        stats.callbacks.fetch_add(batch.len() as u64, Relaxed);
        for (queued, cb) in batch.drain(..) {
            stats.append_latency.observe(done.saturating_duration_since(queued));
            cb(result.as_ref().map(|_| ()).map_err(|e| io::Error::other(e.to_string())));
        }
    }
}
