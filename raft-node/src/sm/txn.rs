//! The write overlay a state machine applies commands through.

use std::collections::BTreeMap;
use std::io;

use rocksdb::{ColumnFamily, DB, WriteBatch};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::store::io_err;
use crate::store::log::{decode, encode};

/// Reads see the database plus every write made earlier in the same batch of
/// entries; writes stay in memory until [`super::RaftSm`] commits them in one
/// RocksDB batch. A `BTreeMap` keeps the writes in key order, which keeps the
/// resulting batch deterministic.
pub struct Txn<'a> {
    db: &'a DB,
    cf: &'a ColumnFamily,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    bytes: usize,
}

impl<'a> Txn<'a> {
    /// An empty overlay over column family `cf` of `db`.
    pub fn new(db: &'a DB, cf: &'a ColumnFamily) -> Self {
        Txn { db, cf, writes: BTreeMap::new(), bytes: 0 }
    }

    /// The raw value at `key`.
    pub fn get(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        match self.writes.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.db.get_cf(self.cf, key).map_err(io_err),
        }
    }

    /// Whether `key` holds a value.
    pub fn contains(&self, key: &[u8]) -> io::Result<bool> {
        match self.writes.get(key) {
            Some(v) => Ok(v.is_some()),
            None => Ok(self.db.get_pinned_cf(self.cf, key).map_err(io_err)?.is_some()),
        }
    }

    /// The decoded value at `key`.
    pub fn get_value<T: DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        match self.writes.get(key) {
            Some(Some(v)) => decode(v).map(Some),
            Some(None) => Ok(None),
            None => match self.db.get_pinned_cf(self.cf, key).map_err(io_err)? {
                Some(v) => decode(&v).map(Some),
                None => Ok(None),
            },
        }
    }

    /// The value at `key`, decoded by `decode`: for rows stored in more than
    /// one layout over the versions (see [`crate::compat`]).
    pub fn get_with<T>(&self, key: &[u8], decode: impl FnOnce(&[u8]) -> io::Result<T>) -> io::Result<Option<T>> {
        match self.writes.get(key) {
            Some(Some(v)) => decode(v).map(Some),
            Some(None) => Ok(None),
            None => match self.db.get_pinned_cf(self.cf, key).map_err(io_err)? {
                Some(v) => decode(&v).map(Some),
                None => Ok(None),
            },
        }
    }

    /// Stores raw bytes at `key`.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.bytes += key.len() + value.len();
        self.writes.insert(key, Some(value));
    }

    /// Stores the encoded `value` at `key`.
    pub fn put_value<T: Serialize>(&mut self, key: Vec<u8>, value: &T) -> io::Result<()> {
        let value = encode(value)?;
        self.put(key, value);
        Ok(())
    }

    /// Removes `key`.
    pub fn delete(&mut self, key: Vec<u8>) {
        self.bytes += key.len();
        self.writes.insert(key, None);
    }

    /// Moves the counter at `floor_key` (`start` when absent) up past the
    /// positions below `next` whose row, `row(position)`, is gone, and
    /// stores it if it moved. A set of rows keyed by increasing positions
    /// keeps such a floor so that scans start after the rows deleted from
    /// its front (RocksDB would otherwise step over every one of them).
    pub fn raise_floor(
        &mut self,
        floor_key: &[u8],
        start: u64,
        next: u64,
        row: impl Fn(u64) -> Vec<u8>,
    ) -> io::Result<()> {
        let was = self.get_value::<u64>(floor_key)?.unwrap_or(start);
        let mut floor = was;
        while floor < next && !self.contains(&row(floor))? {
            floor += 1;
        }
        if floor != was {
            self.put_value(floor_key.to_vec(), &floor)?;
        }
        Ok(())
    }

    /// Bytes written so far (approximate).
    pub fn size_bytes(&self) -> usize {
        self.bytes
    }

    /// Moves the writes into `batch`.
    pub(crate) fn write_into(self, batch: &mut WriteBatch) {
        for (key, value) in self.writes {
            match value {
                Some(v) => batch.put_cf(self.cf, key, v),
                None => batch.delete_cf(self.cf, key),
            }
        }
    }
}
