//! Backups of both groups from a running cluster, and new clusters seeded
//! from one.
//!
//! # Taking one (`GET /admin/backup`)
//! The orders leader serves it (any other node answers `not_leader`). It
//! holds the retention lock, so that no purge round runs while it reads
//! (see below), and then:
//!
//! 1. confirms, with a read-index round in each group, that its replicas
//!    hold every entry committed before the request (`linearizable`);
//! 2. pins one RocksDB snapshot of both groups;
//! 3. confirms with one more round that it still leads the orders group in
//!    the term it started in, so no other node ran a purge meanwhile;
//!
//! and streams both groups' state from the pinned snapshot, in the layout
//! [`bazar_api::backup`] describes, with each group's applied log id, row
//! count and digest in the manifest. Nothing waits on the stream: writes go
//! on while it is sent.
//!
//! # Why the two groups may be read a moment apart
//! A buy touches both groups (see [`crate::buy`]), so the two states can
//! show one buy at different steps: placed but not reserved, reserved but
//! not placed, settled but not claimed. Those are the states a crash leaves
//! too, and the orders leader of the restored cluster settles them as it
//! settles a crashed coordinator's buys. The one pair of states the
//! protocol cannot meet is a key forgotten by the orders while its
//! reservation is still in the catalog (see [`crate::retention`]); purge
//! rounds run only on the orders leader, under the lock held here, in the
//! term checked in step 3.
//!
//! # Restoring one (`bazar-node --restore FILE`)
//! Every founding member of the new cluster starts with the same file and
//! the same `--initial-cluster`. A node whose data directory is new checks
//! the whole file ([`bazar_api::backup::verify`], then each section's own
//! checksum as it is read) and writes, for each group:
//! - the state, in bounded batches under the install marker (see
//!   `crate::sm::snapshot::install`), at the backup's applied log id;
//! - a membership of the new founding members, all voters, at that log id;
//! - a log that starts after it: purged up to it, committed up to it, and
//!   a vote in its term, so the first election is in the next term and
//!   every log index, and every fence stored with an index, goes on from
//!   where the backup stopped.
//!
//! Each node's incarnation is derived from the backup's checksum, the
//! founding members and its id, so every member can write every other's
//! into the membership without asking it; a node that later loses its
//! data gets a random one, as always, and is refused as the member it was.
//! A node with data ignores `--restore`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use bazar_api::backup::{FORMAT, GroupBackup, MAGIC, Manifest};
use bazar_api::{Consistency, Group};
use bytes::Bytes;
use openraft::{Membership, StoredMembership};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::incarnation::{Incarnation, Member};
use crate::node::Node;
use crate::sm::snapshot::{HashingWriter, INSTALL_BATCH_BYTES, Pinned, finish_install, replace_state, write_stream};
use crate::sm::{GroupSnapshotMeta, META_APPLIED, NodeId};
use crate::store::{Purpose, Store, io_err};

/// The groups in the order a backup holds them.
const ORDER: [Group; 2] = [Group::Orders, Group::Catalog];

/// Chunks of the stream sent to the client.
const CHUNK: usize = 256 << 10;

/// Pins both groups' state for a backup, as the module docs describe, and
/// returns the stream of the backup file.
pub async fn stream(node: Arc<Node>) -> Result<mpsc::Receiver<io::Result<Bytes>>> {
    if !node.orders.is_leader() {
        return Err(node.orders.not_leader());
    }
    let round = node.retention.round.lock().await;
    let term = node.orders.metrics().current_term;
    let deadline = node.deadline();
    node.orders.linearize(Consistency::Linearizable, deadline).await?;
    node.catalog.linearize(Consistency::Linearizable, deadline).await?;
    let pinned = Pinned::new(node.store.db().clone(), |db| db.snapshot());
    node.orders.linearize(Consistency::Linearizable, deadline).await?;
    if node.orders.metrics().current_term != term || !node.orders.is_leader() {
        return Err(Error::Unavailable("the orders group changed leaders during the backup; take it again".into()));
    }
    drop(round);

    let (tx, rx) = mpsc::channel(8);
    let node_id = node.id;
    tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter { tx: tx.clone(), buf: Vec::with_capacity(CHUNK) };
        match write_backup(&pinned, node_id, &mut out).and_then(|m| out.flush().map(|()| m)) {
            Ok(manifest) => {
                let sizes: Vec<String> = manifest
                    .groups
                    .iter()
                    .map(|g| format!("{} at {}: {} rows", g.group, g.applied_index, g.rows))
                    .collect();
                tracing::info!(groups = %sizes.join(", "), "sent a backup");
            }
            Err(e) => {
                tracing::warn!(error = %e, "a backup stopped before its end");
                let _ = tx.blocking_send(Err(e));
            }
        }
    });
    Ok(rx)
}

/// Writes a backup of both groups as `pinned` holds them to `w`.
pub(crate) fn write_backup(pinned: &Pinned, node_id: NodeId, w: impl Write) -> io::Result<Manifest> {
    let db = pinned.borrow_owner();
    let snap = pinned.borrow_dependent();
    let mut w = HashingWriter::new(w);
    w.write_all(MAGIC)?;
    let mut groups = Vec::new();
    for group in ORDER {
        let written = write_stream(db, snap, group, &mut w)?;
        let Some(applied) = written.meta.last_log_id else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the {group} group has applied nothing yet"),
            ));
        };
        groups.push(GroupBackup {
            group,
            applied_index: applied.index,
            applied_term: applied.leader_id.term,
            rows: written.records,
            bytes: written.bytes,
            digest: written.digest,
        });
    }
    let manifest = Manifest {
        format: FORMAT,
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        node_id,
        groups,
    };
    let json = serde_json::to_vec(&manifest).map_err(io_err)?;
    w.write_all(&json)?;
    w.write_all(&(json.len() as u32).to_le_bytes())?;
    w.finish()?;
    Ok(manifest)
}

/// Sends what is written to it in chunks over a channel, waiting while the
/// channel is full: the backup is read as fast as the client takes it.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(buf);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client stopped reading the backup"))
    }
}

/// Key (default column family) present while a restore is under way.
const RESTORING: &[u8] = b"restoring";

/// Whether `store` may be seeded by `--restore`: it is new (no group has
/// applied anything), or a restore that a crash interrupted left it, which
/// is then done again from the start. The caller also checks that it has no
/// incarnation yet.
pub fn restorable(store: &Store) -> io::Result<bool> {
    let db = store.db();
    if db.get(RESTORING).map_err(io_err)?.is_some() {
        return Ok(true);
    }
    for group in Group::ALL {
        if db.get_cf(store.cf(group, Purpose::SmMeta), META_APPLIED).map_err(io_err)?.is_some() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Ends a restore: stores the node's incarnation, then removes the marker
/// that lets an interrupted restore start over.
pub fn finish(store: &Store, incarnation: Incarnation) -> anyhow::Result<()> {
    crate::incarnation::save(store, incarnation)?;
    let mut opts = rocksdb::WriteOptions::default();
    opts.set_sync(true);
    store.db().delete_opt(RESTORING, &opts)?;
    Ok(())
}

/// Seeds `store`, a new data directory, from the backup at `path`, as node
/// `node_id` of a new cluster of `members` (see the module docs). Returns
/// the backup's manifest and this node's incarnation, for [`finish`].
pub fn restore(
    store: &Store,
    path: &Path,
    node_id: NodeId,
    members: &BTreeMap<NodeId, String>,
) -> anyhow::Result<(Manifest, Incarnation)> {
    let mut file = File::open(path).map_err(|e| anyhow::anyhow!("--restore {}: {e}", path.display()))?;
    let manifest =
        bazar_api::backup::verify(&mut file).map_err(|e| anyhow::anyhow!("--restore {}: {e}", path.display()))?;
    let checksum = {
        let mut sum = [0u8; 32];
        file.seek(SeekFrom::End(-32))?;
        file.read_exact(&mut sum)?;
        sum
    };
    let incarnations: BTreeMap<NodeId, Incarnation> =
        members.keys().map(|&id| (id, derived_incarnation(&checksum, members, id))).collect();
    let nodes: BTreeMap<NodeId, Member> =
        members.iter().map(|(&id, addr)| (id, Member::new(addr.clone(), Some(incarnations[&id])))).collect();

    let mut opts = rocksdb::WriteOptions::default();
    opts.set_sync(true);
    store.db().put_opt(RESTORING, path.display().to_string(), &opts)?;
    file.seek(SeekFrom::Start(MAGIC.len() as u64))?;
    let mut r = BufReader::with_capacity(1 << 20, file);
    for section in &manifest.groups {
        restore_group(store, section, &mut (&mut r).take(section.bytes), &nodes)
            .map_err(|e| anyhow::anyhow!("--restore {}: the {} section: {e}", path.display(), section.group))?;
    }
    for group in Group::ALL {
        if manifest.group(group).is_none() {
            anyhow::bail!("--restore {}: the backup has no {group} section", path.display());
        }
    }
    store.db().flush_wal(true)?;
    Ok((manifest, incarnations[&node_id]))
}

/// Writes one group's section: its state, the new membership and the log
/// state that continues after it.
fn restore_group(
    store: &Store,
    section: &GroupBackup,
    r: &mut impl Read,
    nodes: &BTreeMap<NodeId, Member>,
) -> io::Result<()> {
    let group = section.group;
    let voters = nodes.keys().copied().collect();
    let membership = Membership::new(vec![voters], nodes.clone()).map_err(io_err)?;
    // The applied log id (with its leader) is in the section's own meta:
    // checked against the manifest, it is where the new log goes on from.
    let at_backup = |meta: &GroupSnapshotMeta| match meta.last_log_id {
        Some(log_id) if log_id.index == section.applied_index && log_id.leader_id.term == section.applied_term => {
            Ok(GroupSnapshotMeta {
                last_log_id: Some(log_id),
                last_membership: StoredMembership::new(Some(log_id), membership),
            })
        }
        other => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the section is at {other:?}, the manifest says index {}", section.applied_index),
        )),
    };
    let (mut last, installed, meta) = replace_state(store, group, r, at_backup, INSTALL_BATCH_BYTES, &mut |_| Ok(()))?;
    let log_id = meta.last_log_id.expect("checked above");
    if installed.records != section.rows {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} rows, the manifest says {}", installed.records, section.rows),
        ));
    }
    finish_install(store, group, &meta, &mut last)?;
    crate::store::log::write_restored(store, group, &mut last, log_id)?;
    store.db().write(last).map_err(io_err)?;
    tracing::info!(%group, index = log_id.index, term = log_id.leader_id.term, rows = installed.records, "restored");
    Ok(())
}

/// Node `id`'s incarnation in a cluster restored from the backup whose
/// checksum is `checksum`, founded by `members`: the same on every member.
fn derived_incarnation(checksum: &[u8; 32], members: &BTreeMap<NodeId, String>, id: NodeId) -> Incarnation {
    let mut h = Sha256::new();
    h.update(b"bazar restore incarnation");
    h.update(checksum);
    for (member, addr) in members {
        h.update(member.to_le_bytes());
        h.update((addr.len() as u64).to_le_bytes());
        h.update(addr.as_bytes());
    }
    h.update(id.to_le_bytes());
    let bytes = h.finalize();
    let i = u64::from_be_bytes(bytes[..8].try_into().expect("eight bytes"));
    if i == 0 { 1 } else { i }
}
