//! Replicated state machines on RocksDB.
//!
//! A group's business logic (the catalog, the orders) implements the small
//! [`StateMachine`] trait: one deterministic function from a command to a
//! response plus writes. [`RaftSm`] adapts it to openraft's
//! `RaftStateMachine`, and owns everything that is the same for both groups:
//! batching writes, persisting the applied log id and membership atomically
//! with the data, answering clients only after the write, publishing change
//! events, and building and installing snapshots.
//!
//! # The determinism contract
//!
//! `StateMachine::apply` runs on every replica for every committed command and
//! must produce the same response and the same writes everywhere. It may read
//! only through the [`Txn`] it is given, and must not look at clocks, random
//! numbers, the node id, or anything else outside the command and the state.
//! Whatever varies (a timestamp, a new id) is chosen by the proposer and
//! carried in the command, or derived from the state (counters). A failure of
//! the store is returned as `Err` and stops the group; a business outcome (not
//! found, out of stock) is an `Ok` response.
//!
//! # Atomicity
//!
//! The writes of a run of entries are collected in memory ([`Txn`]) and
//! written in one RocksDB batch together with the last applied log id (and the
//! membership, when it changed). A crash leaves the state machine exactly at
//! some applied log id, never between entries; restart replays the log after
//! it. Responses and change events are released only after that batch is
//! written, so a client that got an answer can read its write back.

pub mod snapshot;
mod txn;
mod view;

use std::fmt::{Debug, Display};
use std::io;
use std::marker::PhantomData;
use std::sync::Arc;

use bazar_api::Group;
use futures::{Stream, TryStreamExt};
use openraft::impls::EntryPayload;
use openraft::storage::{ApplyResponder, EntryResponder, RaftStateMachine};
use openraft::{RaftSnapshotBuilder, RaftTypeConfig, Snapshot, StoredMembership};
use rocksdb::WriteBatch;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::store::log::{decode, encode};
use crate::store::{Purpose, Store, io_err};
use crate::types::Member;
pub use crate::types::{GroupEntry, GroupLeaderId, GroupLogId, GroupMembership, GroupSnapshotMeta, NodeId};
use crate::watch::EventHub;
pub use snapshot::{SnapshotData, SnapshotStore};
pub use txn::Txn;
pub use view::View;

/// A snapshot of either group.
pub type GroupSnapshot = Snapshot<GroupLeaderId, NodeId, Member, SnapshotData>;

/// Key of the last applied log id in `{group}_sm_meta`.
pub(crate) const META_APPLIED: &[u8] = b"applied";
/// Key of the last applied membership in `{group}_sm_meta`.
pub(crate) const META_MEMBERSHIP: &[u8] = b"membership";
/// Key in `{group}_sm_meta` present while a snapshot's records are being
/// written: the snapshot's metadata. See [`snapshot::install`].
pub(crate) const META_INSTALLING: &[u8] = b"installing";

/// What applying one command produced.
#[derive(Debug)]
pub struct Applied<R> {
    /// The response for the client that proposed the command.
    pub response: R,
    /// The change-event keys the command touched (see [`bazar_api::events`]).
    pub keys: Vec<String>,
}

/// A group's deterministic business logic. See the module docs for the contract.
pub trait StateMachine: Send + Sync + 'static {
    /// A command in the group's log.
    type Command: Serialize + DeserializeOwned + Debug + Display + Clone + Send + Sync + 'static;
    /// What applying a command returns to its proposer. `Default` answers
    /// entries that carry no command (blank and membership entries).
    type Response: Serialize + DeserializeOwned + Debug + Default + Clone + Send + Sync + 'static;
    /// The group's openraft type configuration.
    type C: RaftTypeConfig<
            D = Self::Command,
            R = Self::Response,
            NodeId = NodeId,
            Node = Member,
            Term = u64,
            LeaderId = GroupLeaderId,
            Entry = GroupEntry<Self::Command>,
        >;
    /// Which group this is.
    const GROUP: Group;

    /// The kind of row whose key starts with `prefix`, as `/admin/digest`
    /// counts them (e.g. `books`, `reservations`).
    fn row_kind(prefix: u8) -> &'static str;

    /// Applies `cmd`, committed at log `index`, reading and writing through `txn`.
    fn apply(txn: &mut Txn<'_>, index: u64, cmd: &Self::Command) -> io::Result<Applied<Self::Response>>;
}

/// Flush the collected writes once they exceed this many bytes, so that a long
/// catch-up (or a million-book seed) never builds one giant batch.
const FLUSH_BYTES: usize = 16 << 20;
/// Flush after this many entries with waiting clients, so they are answered promptly.
const FLUSH_RESPONDERS: usize = 4096;

/// openraft's view of a group's state machine.
pub struct RaftSm<S: StateMachine> {
    store: Store,
    snapshots: SnapshotStore,
    events: Arc<EventHub>,
    _s: PhantomData<S>,
}

impl<S: StateMachine> RaftSm<S> {
    /// The state machine of group `S::GROUP` in `store`, with snapshots under `snapshots`.
    pub fn new(store: Store, snapshots: SnapshotStore, events: Arc<EventHub>) -> Self {
        RaftSm { store, snapshots, events, _s: PhantomData }
    }
}

/// Reads the applied log id and membership through `get` (a view of `{group}_sm_meta`).
pub(crate) fn read_applied_state(
    get: impl Fn(&[u8]) -> io::Result<Option<Vec<u8>>>,
) -> io::Result<(Option<GroupLogId>, GroupMembership)> {
    let applied = match get(META_APPLIED)? {
        Some(bytes) => decode_applied(&bytes)?,
        None => None,
    };
    let membership = get(META_MEMBERSHIP)?.map(|b| decode(&b)).transpose()?.unwrap_or_default();
    Ok((applied, membership))
}

/// Decodes the stored applied log id (an `Option<LogId>`, as openraft hands it over).
pub(crate) fn decode_applied(bytes: &[u8]) -> io::Result<Option<GroupLogId>> {
    decode::<Option<GroupLogId>>(bytes)
}

/// Writes collected so far, with what must be released once they are durable.
struct Pending<S: StateMachine> {
    last_applied: Option<GroupLogId>,
    membership: Option<GroupMembership>,
    responders: Vec<(ApplyResponder<S::C>, S::Response)>,
    events: Vec<bazar_api::WatchEvent>,
}

impl<S: StateMachine> Pending<S> {
    fn new() -> Self {
        Pending { last_applied: None, membership: None, responders: Vec::new(), events: Vec::new() }
    }
}

impl<S: StateMachine> RaftSm<S> {
    /// Writes the collected batch, then answers clients and publishes events.
    fn commit(&self, txn: Txn<'_>, pending: &mut Pending<S>) -> io::Result<()> {
        let Some(last_applied) = pending.last_applied else {
            return Ok(());
        };
        let mut batch = WriteBatch::default();
        txn.write_into(&mut batch);
        let meta = self.store.cf(S::GROUP, Purpose::SmMeta);
        batch.put_cf(meta, META_APPLIED, encode(&Some(last_applied))?);
        if let Some(m) = pending.membership.take() {
            batch.put_cf(meta, META_MEMBERSHIP, encode(&m)?);
        }
        self.store.db().write(batch).map_err(io_err)?;

        for (responder, response) in pending.responders.drain(..) {
            responder.send(response);
        }
        self.events.publish(last_applied.index, pending.events.drain(..));
        Ok(())
    }
}

impl<S: StateMachine> RaftStateMachine<S::C> for RaftSm<S> {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = snapshot::Builder<S>;

    async fn applied_state(&mut self) -> io::Result<(Option<GroupLogId>, GroupMembership)> {
        let db = self.store.db();
        let cf = self.store.cf(S::GROUP, Purpose::SmMeta);
        read_applied_state(|k| db.get_cf(cf, k).map_err(io_err))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: Stream<Item = io::Result<EntryResponder<S::C>>> + Unpin + openraft::OptionalSend,
    {
        let store = self.store.clone();
        let mut txn = Txn::new(store.db(), store.cf(S::GROUP, Purpose::Sm));
        let mut pending = Pending::<S>::new();

        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id;
            let index = log_id.index;
            let response = match entry.payload {
                EntryPayload::Blank => S::Response::default(),
                EntryPayload::Normal(cmd) => {
                    let applied = S::apply(&mut txn, index, &cmd)?;
                    if !applied.keys.is_empty() {
                        pending.events.push(bazar_api::WatchEvent::Applied { index, keys: applied.keys });
                    }
                    applied.response
                }
                EntryPayload::Membership(m) => {
                    pending.membership = Some(StoredMembership::new(Some(log_id), m));
                    S::Response::default()
                }
            };
            pending.last_applied = Some(log_id);
            if let Some(responder) = responder {
                pending.responders.push((responder, response));
            }
            if txn.size_bytes() >= FLUSH_BYTES || pending.responders.len() >= FLUSH_RESPONDERS {
                let full = std::mem::replace(&mut txn, Txn::new(store.db(), store.cf(S::GROUP, Purpose::Sm)));
                self.commit(full, &mut pending)?;
            }
        }
        self.commit(txn, &mut pending)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        snapshot::Builder::new(self.store.clone(), self.snapshots.clone())
    }

    async fn install_snapshot(&mut self, meta: &GroupSnapshotMeta, snapshot: SnapshotData) -> io::Result<()> {
        let store = self.store.clone();
        let snapshots = self.snapshots.clone();
        let meta = meta.clone();
        let index = meta.last_log_id.as_ref().map(|id| id.index).unwrap_or(0);
        tokio::task::spawn_blocking(move || snapshot::install::<S>(&store, &snapshots, &meta, snapshot))
            .await
            .map_err(io_err)??;
        self.events.reset(index, "installed a snapshot from the leader");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<GroupSnapshot>> {
        let snapshots = self.snapshots.clone();
        tokio::task::spawn_blocking(move || snapshots.current()).await.map_err(io_err)?
    }
}

impl<S: StateMachine> RaftSnapshotBuilder<S::C> for snapshot::Builder<S> {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> io::Result<GroupSnapshot> {
        self.build().await
    }
}

/// Applying commands to state machines directly, without Raft, for tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A temporary database to apply commands to, one log index at a time.
    pub struct TestDb {
        _dir: tempfile::TempDir,
        pub store: Store,
        index: u64,
    }

    impl TestDb {
        pub fn new() -> TestDb {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = Store::open(dir.path()).expect("open store");
            TestDb { _dir: dir, store, index: 0 }
        }

        /// The index of the last entry applied (of either group: one counter).
        pub fn index(&self) -> u64 {
            self.index
        }

        /// Applies `cmd` as the next log entry of `S` and commits it.
        pub fn apply<S: StateMachine>(&mut self, cmd: S::Command) -> Applied<S::Response> {
            self.index += 1;
            let mut txn = Txn::new(self.store.db(), self.store.cf(S::GROUP, Purpose::Sm));
            let applied = S::apply(&mut txn, self.index, &cmd).expect("apply");
            let mut batch = WriteBatch::default();
            txn.write_into(&mut batch);
            self.store.db().write(batch).expect("write");
            applied
        }

        /// Writes raw bytes at `key` of `S`'s state machine, as an earlier
        /// version may have left them.
        pub fn put_raw<S: StateMachine>(&mut self, key: Vec<u8>, value: Vec<u8>) {
            let cf = self.store.cf(S::GROUP, Purpose::Sm);
            self.store.db().put_cf(cf, key, value).expect("put");
        }

        /// A view of group `S`.
        pub fn view<S: StateMachine>(&self) -> View<'_> {
            View::new(&self.store, S::GROUP)
        }
    }
}
