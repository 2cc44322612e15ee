//! Consistent read views of a state machine.

use std::io;

use rocksdb::{ColumnFamily, DB, Direction, IteratorMode, ReadOptions, SnapshotWithThreadMode};
use serde::de::DeserializeOwned;
use sha2::{Digest as _, Sha256};

use super::{META_APPLIED, META_INSTALLING};
use crate::store::log::decode;
use crate::store::{Purpose, Store, io_err};
use bazar_api::Group;

/// A point-in-time view of one group's state machine: every read through it,
/// and the applied index it reports, come from the same RocksDB snapshot, so
/// an answer and the `X-Bazar-Index` sent with it always agree.
pub struct View<'a> {
    snap: SnapshotWithThreadMode<'a, DB>,
    cf: &'a ColumnFamily,
    cf_meta: &'a ColumnFamily,
}

impl<'a> View<'a> {
    /// A view of `group` in `store` as of now.
    pub fn new(store: &'a Store, group: Group) -> View<'a> {
        View {
            snap: store.db().snapshot(),
            cf: store.cf(group, Purpose::Sm),
            cf_meta: store.cf(group, Purpose::SmMeta),
        }
    }

    /// The highest log index applied in this view (0 before the first).
    ///
    /// Fails with [`io::ErrorKind::ResourceBusy`] while a snapshot is being
    /// installed: the state is then part old, part new, and nothing may be
    /// answered from it.
    pub fn applied_index(&self) -> io::Result<u64> {
        if self.snap.get_pinned_cf(self.cf_meta, META_INSTALLING).map_err(io_err)?.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::ResourceBusy,
                "this replica is installing a snapshot from its leader; ask another replica",
            ));
        }
        let raw = self.snap.get_pinned_cf(self.cf_meta, META_APPLIED).map_err(io_err)?;
        let applied = match raw {
            Some(b) => super::decode_applied(&b)?,
            None => None,
        };
        Ok(applied.map(|id| id.index).unwrap_or(0))
    }

    /// The decoded value at `key`.
    pub fn get<T: DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        match self.snap.get_pinned_cf(self.cf, key).map_err(io_err)? {
            Some(v) => decode(&v).map(Some),
            None => Ok(None),
        }
    }

    /// The value at `key`, decoded by `decode` (see [`super::Txn::get_with`]).
    pub fn get_with<T>(&self, key: &[u8], decode: impl FnOnce(&[u8]) -> io::Result<T>) -> io::Result<Option<T>> {
        match self.snap.get_pinned_cf(self.cf, key).map_err(io_err)? {
            Some(v) => decode(&v).map(Some),
            None => Ok(None),
        }
    }

    /// SHA-256 over every key and value of the state machine, in key order
    /// (each length-prefixed), as hex. Replicas at the same applied index
    /// have the same digest.
    pub fn digest(&self) -> io::Result<String> {
        Ok(self.digest_and_rows(|_| "all")?.0)
    }

    /// The [`View::digest`], and the rows and bytes (keys plus values) by
    /// the kind `kind` names from a key's first byte, in one pass.
    pub fn digest_and_rows(
        &self,
        kind: impl Fn(u8) -> &'static str,
    ) -> io::Result<(String, std::collections::BTreeMap<String, bazar_api::RowCount>)> {
        let mut digest = RowDigest::default();
        let mut rows = std::collections::BTreeMap::<String, bazar_api::RowCount>::new();
        for item in self.snap.iterator_cf(self.cf, IteratorMode::Start) {
            let (key, value) = item.map_err(io_err)?;
            let count = rows.entry(kind(key.first().copied().unwrap_or(0)).to_string()).or_default();
            count.rows += 1;
            count.bytes += (key.len() + value.len()) as u64;
            digest.add(&key, &value);
        }
        Ok((digest.finish(), rows))
    }

    /// Visits the keys starting with `prefix` that sort after `start` (which
    /// must itself start with `prefix`), in order, until `visit` returns false.
    ///
    /// The iterator is bounded above by the prefix's successor, so RocksDB
    /// stops at the end of the prefix instead of stepping over whatever
    /// follows it, deleted rows included.
    pub fn scan(
        &self,
        prefix: &[u8],
        start: &[u8],
        mut visit: impl FnMut(&[u8], &[u8]) -> io::Result<bool>,
    ) -> io::Result<()> {
        let mut opts = ReadOptions::default();
        if let Some(end) = successor(prefix) {
            opts.set_iterate_upper_bound(end);
        }
        let iter = self.snap.iterator_cf_opt(self.cf, opts, IteratorMode::From(start, Direction::Forward));
        for item in iter {
            let (key, value) = item.map_err(io_err)?;
            if !key.starts_with(prefix) {
                break;
            }
            if !visit(&key, &value)? {
                break;
            }
        }
        Ok(())
    }
}

/// The digest of a state machine's rows, fed in key order: SHA-256 over
/// each key and value, length-prefixed, as hex. [`View::digest`] and a
/// backup's manifest (see [`crate::backup`]) both compute it, so they can
/// be compared.
#[derive(Default)]
pub(crate) struct RowDigest(Sha256);

impl RowDigest {
    /// Adds the next row.
    pub(crate) fn add(&mut self, key: &[u8], value: &[u8]) {
        self.0.update((key.len() as u64).to_le_bytes());
        self.0.update(key);
        self.0.update((value.len() as u64).to_le_bytes());
        self.0.update(value);
    }

    /// The digest of the rows added, as hex.
    pub(crate) fn finish(self) -> String {
        bazar_api::backup::hex(&self.0.finalize())
    }
}

/// The smallest key greater than every key starting with `prefix`, if any.
pub(crate) fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::successor;

    #[test]
    fn the_successor_of_a_prefix_bounds_exactly_its_keys() {
        assert_eq!(successor(b"t"), Some(b"u".to_vec()));
        assert_eq!(successor(b"tab\0"), Some(b"tab\x01".to_vec()));
        assert_eq!(successor(&[b'a', 0xFF]), Some(b"b".to_vec()));
        assert_eq!(successor(&[0xFF, 0xFF]), None);
    }
}
