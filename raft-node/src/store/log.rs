//! The durable Raft log of one group ([`RaftLogStorage`] on RocksDB).
//!
//! Entries live in `{group}_log` keyed by big-endian index; the vote, the
//! committed log id and the last purged log id live in `{group}_raft`. Values
//! are postcard-encoded.
//!
//! What openraft relies on, and how it holds here:
//! - `append` returns once the entries are readable (a non-synced RocksDB
//!   write) and reports them durable through the callback only after the WAL
//!   was synced ([`super::WalSyncer`]). Openraft acknowledges an entry to the
//!   leader, and the leader counts it toward commit, only after that callback.
//! - `save_vote` returns only after a synced write: a node never forgets a
//!   vote it granted, so it can never vote twice in one term.
//! - `truncate_after` and `purge` remove entries from one end only, so no
//!   crash can leave a hole; purge records `last_purged` first, so entries at
//!   or below it are ignored even if their deletion was lost.

use std::fmt::Debug;
use std::io;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};

use bazar_api::Group;
use openraft::alias::{LogIdOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader, RaftTypeConfig};
use rocksdb::{ColumnFamily, Direction, IteratorMode, WriteBatch, WriteOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Purpose, Store, be, from_be, io_err};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// Adds to `batch` the log state of a group seeded from a backup at
/// `log_id` (see [`crate::backup`]): no entries, purged and committed up to
/// `log_id`, and a vote in its term (not granted to anyone who could lead
/// it again: a node restored does not resume a leadership).
pub(crate) fn write_restored(
    store: &Store,
    group: Group,
    batch: &mut WriteBatch,
    log_id: crate::types::GroupLogId,
) -> io::Result<()> {
    let raft = store.cf(group, Purpose::Raft);
    let vote =
        openraft::impls::Vote::<crate::types::GroupLeaderId>::new(log_id.leader_id.term, log_id.leader_id.node_id);
    batch.delete_range_cf(store.cf(group, Purpose::Log), be(0), be(u64::MAX));
    batch.put_cf(raft, KEY_VOTE, encode(&vote)?);
    batch.put_cf(raft, KEY_COMMITTED, encode(&Some(log_id))?);
    batch.put_cf(raft, KEY_LAST_PURGED, encode(&log_id)?);
    Ok(())
}

/// The Raft log of one group. Cheap to clone: clones share the database.
pub struct LogStore<C: RaftTypeConfig> {
    store: Store,
    group: Group,
    _c: PhantomData<C>,
}

impl<C: RaftTypeConfig> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        LogStore { store: self.store.clone(), group: self.group, _c: PhantomData }
    }
}

impl<C: RaftTypeConfig> LogStore<C> {
    /// The log of `group` in `store`.
    pub fn new(store: Store, group: Group) -> Self {
        LogStore { store, group, _c: PhantomData }
    }

    fn cf_log(&self) -> &ColumnFamily {
        self.store.cf(self.group, Purpose::Log)
    }

    fn cf_raft(&self) -> &ColumnFamily {
        self.store.cf(self.group, Purpose::Raft)
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        let bytes = self.store.db().get_pinned_cf(self.cf_raft(), key).map_err(io_err)?;
        bytes.map(|b| decode(&b)).transpose()
    }

    fn put_meta<T: Serialize>(&self, key: &[u8], value: &T, sync: bool) -> io::Result<()> {
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf_raft(), key, encode(value)?);
        self.store.db().write_opt(batch, &opts).map_err(io_err)
    }
}

/// Postcard-encodes a value for storage.
pub fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(io_err)
}

/// Decodes a stored postcard value.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    postcard::from_bytes(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

impl<C: RaftTypeConfig> RaftLogReader<C> for LogStore<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<C::Entry>> {
        let start = match range.start_bound() {
            Bound::Included(&x) => x,
            Bound::Excluded(&x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let mut entries = Vec::new();
        let iter = self.store.db().iterator_cf(self.cf_log(), IteratorMode::From(&be(start), Direction::Forward));
        for item in iter {
            let (key, value) = item.map_err(io_err)?;
            let index = from_be(&key).ok_or_else(|| io_err("malformed log key"))?;
            if !range.contains(&index) {
                break;
            }
            let entry: C::Entry = decode(&value)?;
            debug_assert_eq!(entry.index(), index);
            entries.push(entry);
        }
        Ok(entries)
    }

    async fn read_vote(&mut self) -> io::Result<Option<VoteOf<C>>> {
        self.get_meta(KEY_VOTE)
    }
}

impl<C: RaftTypeConfig> RaftLogStorage<C> for LogStore<C> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> io::Result<LogState<C>> {
        let last = self.store.db().iterator_cf(self.cf_log(), IteratorMode::End).next();
        let last_log_id = match last {
            None => None,
            Some(item) => {
                let (_, value) = item.map_err(io_err)?;
                Some(decode::<C::Entry>(&value)?.log_id())
            }
        };
        let last_purged_log_id: Option<LogIdOf<C>> = self.get_meta(KEY_LAST_PURGED)?;
        let last_log_id = last_log_id.or_else(|| last_purged_log_id.clone());
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> io::Result<()> {
        let this = self.clone();
        let vote = vote.clone();
        // A synced write: the vote must be on disk before we answer the candidate.
        let sync = this.store.syncs();
        tokio::task::spawn_blocking(move || this.put_meta(KEY_VOTE, &vote, sync)).await.map_err(io_err)?
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> io::Result<()> {
        // Not synced: losing it only means re-learning the commit index from
        // the leader; it lets a restarted node re-apply committed entries
        // without waiting for one.
        self.put_meta(KEY_COMMITTED, &committed, false)
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogIdOf<C>>> {
        Ok(self.get_meta::<Option<LogIdOf<C>>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> io::Result<()>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put_cf(self.cf_log(), be(entry.index()), encode(&entry)?);
        }
        self.store.db().write(batch).map_err(io_err)?;
        self.store.wal().after_sync(Box::new(move |res| callback.io_completed(res)));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> io::Result<()> {
        let from = last_log_id.map(|id| id.index() + 1).unwrap_or(0);
        tracing::debug!(group = %self.group, from, "truncating log");
        self.store.db().delete_range_cf(self.cf_log(), be(from), be(u64::MAX)).map_err(io_err)?;
        // delete_range excludes its end key.
        self.store.db().delete_cf(self.cf_log(), be(u64::MAX)).map_err(io_err)
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> io::Result<()> {
        tracing::debug!(group = %self.group, upto = log_id.index(), "purging log");
        self.put_meta(KEY_LAST_PURGED, &log_id, false)?;
        self.store.db().delete_range_cf(self.cf_log(), be(0), be(log_id.index() + 1)).map_err(io_err)
    }
}
