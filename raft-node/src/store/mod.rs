//! The node's single RocksDB instance.
//!
//! Both Raft groups live in one database so that they share one write-ahead
//! log: a single `fsync` of that WAL makes the appends of both groups durable
//! at once. Each group owns four column families, named `{group}_{purpose}`:
//!
//! | column family | holds | written by |
//! |---|---|---|
//! | `{g}_log` | Raft log entries, keyed by big-endian index | [`log::LogStore`] |
//! | `{g}_raft` | vote, committed log id, last purged log id | [`log::LogStore`] |
//! | `{g}_sm` | the state machine's data (books, orders, ...) | [`crate::sm`] |
//! | `{g}_sm_meta` | last applied log id and membership of the state machine | [`crate::sm`] |
//!
//! Durability contract: log appends are written without sync and reported
//! durable to openraft only after [`WalSyncer`] has synced the WAL; votes are
//! written with `sync = true` before `save_vote` returns. State-machine writes
//! are never synced on their own: they can always be rebuilt from the log, and
//! since every write goes through the same sequential WAL, a state-machine
//! write that survived a crash implies that every log append before it did too.

pub mod log;
mod wal;

use std::path::Path;
use std::sync::Arc;

use bazar_api::Group;
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DB, Options};

pub use wal::WalSyncer;

/// Memory for memtables, all column families together.
const MEMTABLE_BUDGET: usize = 64 << 20;
/// Memory for cached SST blocks, shared by all column families.
const BLOCK_CACHE_BYTES: usize = 64 << 20;

/// What a column family of a group is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Raft log entries.
    Log,
    /// Raft metadata: vote, committed, purged.
    Raft,
    /// State-machine data.
    Sm,
    /// State-machine metadata: applied log id, membership.
    SmMeta,
}

impl Purpose {
    const ALL: [Purpose; 4] = [Purpose::Log, Purpose::Raft, Purpose::Sm, Purpose::SmMeta];

    fn suffix(self) -> &'static str {
        match self {
            Purpose::Log => "log",
            Purpose::Raft => "raft",
            Purpose::Sm => "sm",
            Purpose::SmMeta => "sm_meta",
        }
    }
}

/// Name of a group's column family.
pub fn cf_name(group: Group, purpose: Purpose) -> String {
    format!("{}_{}", group.as_str(), purpose.suffix())
}

/// The opened database plus the WAL syncer shared by both groups.
#[derive(Clone)]
pub struct Store {
    db: Arc<DB>,
    wal: WalSyncer,
    /// Whether writes that must be durable are synced (always, but for the
    /// planted bug `no-fsync`).
    sync: bool,
}

impl Store {
    /// Opens (creating if needed) the database under `dir`.
    pub fn open(dir: &Path) -> anyhow::Result<Store> {
        Store::open_with(dir, true)
    }

    /// Opens the database under `dir` for the planted bug `no-fsync`: the
    /// WAL is never synced and votes are written without sync, so what is
    /// reported durable is only in the operating system's cache.
    pub fn open_unsynced(dir: &Path) -> anyhow::Result<Store> {
        Store::open_with(dir, false)
    }

    fn open_with(dir: &Path, sync: bool) -> anyhow::Result<Store> {
        std::fs::create_dir_all(dir)?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Bound the WAL so recovery after a crash replays little: once the WAL
        // passes this size, RocksDB flushes the memtables it pins.
        opts.set_max_total_wal_size(256 << 20);
        opts.set_keep_log_file_num(4);
        opts.increase_parallelism(2);
        // One memory budget for the memtables of all eight column families
        // (RocksDB's default is 64 MB for each, twice over). Smaller
        // memtables also flush sooner, which keeps rows deleted by the state
        // machines (claims, log purges) from piling up in memory.
        opts.set_db_write_buffer_size(MEMTABLE_BUDGET);
        let block_cache = rocksdb::Cache::new_lru_cache(BLOCK_CACHE_BYTES);

        let cfs = Group::ALL.iter().flat_map(|&g| {
            let block_cache = block_cache.clone();
            Purpose::ALL.iter().map(move |&p| {
                let mut cf_opts = Options::default();
                let mut table = rocksdb::BlockBasedOptions::default();
                table.set_block_cache(&block_cache);
                match p {
                    Purpose::Log | Purpose::Sm => cf_opts.set_write_buffer_size(MEMTABLE_BUDGET / 4),
                    Purpose::Raft | Purpose::SmMeta => cf_opts.set_write_buffer_size(1 << 20),
                }
                cf_opts.set_max_write_buffer_number(2);
                if p == Purpose::Sm {
                    cf_opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
                    // Most point reads of the state machines miss: a buy
                    // looks up its new idempotency key, and applying it
                    // reads rows it is about to create. Bloom filters (about
                    // 1% false positives) answer most misses without
                    // searching the memtables or reading each level's blocks.
                    table.set_bloom_filter(10.0, false);
                    cf_opts.set_memtable_prefix_bloom_ratio(0.02);
                    cf_opts.set_memtable_whole_key_filtering(true);
                }
                cf_opts.set_block_based_table_factory(&table);
                ColumnFamilyDescriptor::new(cf_name(g, p), cf_opts)
            })
        });
        let db = DB::open_cf_descriptors(&opts, dir.join("rocksdb"), cfs)
            .map_err(|e| anyhow::anyhow!("opening RocksDB under {}: {e}", dir.display()))?;
        let db = Arc::new(db);
        let wal = WalSyncer::spawn(db.clone(), sync);
        Ok(Store { db, wal, sync })
    }

    /// The database.
    pub fn db(&self) -> &Arc<DB> {
        &self.db
    }

    /// Whether writes that must be durable are synced (false only under the
    /// planted bug `no-fsync`).
    pub fn syncs(&self) -> bool {
        self.sync
    }

    /// The WAL syncer.
    pub fn wal(&self) -> &WalSyncer {
        &self.wal
    }

    /// A group's column family. Every family is created at open, so this
    /// cannot fail for a store built by [`Store::open`].
    pub fn cf(&self, group: Group, purpose: Purpose) -> &ColumnFamily {
        cf(&self.db, group, purpose)
    }

    /// Approximate on-disk size of the live SST files of a group's column family.
    pub fn cf_size_bytes(&self, group: Group, purpose: Purpose) -> u64 {
        self.db
            .property_int_value_cf(self.cf(group, purpose), "rocksdb.total-sst-files-size")
            .ok()
            .flatten()
            .unwrap_or(0)
    }
}

/// A group's column family in `db`.
pub fn cf(db: &DB, group: Group, purpose: Purpose) -> &ColumnFamily {
    db.cf_handle(&cf_name(group, purpose))
        .unwrap_or_else(|| panic!("column family {} missing", cf_name(group, purpose)))
}

/// Big-endian encoding of a u64, so that byte order equals numeric order.
pub fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// Decodes a big-endian u64 from the first eight bytes of `b`.
pub fn from_be(b: &[u8]) -> Option<u64> {
    b.get(..8).map(|s| u64::from_be_bytes(s.try_into().expect("eight bytes")))
}

/// Wraps any error as an `io::Error`, the error type of openraft's storage traits.
pub fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}
