//! Snapshots: a state machine's data at one applied log id, as a file.
//!
//! A snapshot is built from a RocksDB snapshot taken when openraft asks for a
//! builder. openraft asks on the state-machine task, between two applies, and
//! then builds on another task while applies continue; the RocksDB snapshot
//! pins the data, the applied log id and the membership at that instant, so
//! the file is consistent however long the build takes.
//!
//! File format (little-endian lengths):
//!
//! ```text
//! "BZRSNAP1"
//! u32 meta_len, meta (postcard SnapshotMeta)
//! repeated: u32 key_len, key, u32 value_len, value
//! u32 0xFFFF_FFFF (end of records)
//! 32-byte SHA-256 of everything above
//! ```
//!
//! Files are written to a temporary name, synced, then renamed, so a file with
//! the final name is always complete. The checksum is verified before any
//! byte of a received snapshot touches the state machine, and installation is
//! one atomic RocksDB batch: a crash during install leaves the old state.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use bazar_api::Group;
use rocksdb::{DB, IteratorMode, SnapshotWithThreadMode, WriteBatch};
use sha2::{Digest as _, Sha256};

use super::{GroupSnapshot, GroupSnapshotMeta, META_APPLIED, META_MEMBERSHIP, StateMachine, read_applied_state};
use crate::store::log::{decode, encode};
use crate::store::{Purpose, Store, cf, io_err};

const MAGIC: &[u8; 8] = b"BZRSNAP1";
const END_OF_RECORDS: u32 = u32::MAX;
/// State-machine keys never start with this byte, so `[0xFF]` bounds them all.
pub(crate) const KEY_UPPER_BOUND: &[u8] = &[0xFF];

/// An open, complete snapshot file: what openraft ships to a lagging follower.
#[derive(Debug)]
pub struct SnapshotData {
    /// Where the file is.
    pub path: PathBuf,
    /// The file, opened for reading. Holding it open keeps the data readable
    /// even if a newer snapshot replaces (unlinks) this one meanwhile.
    pub file: File,
    /// Its size in bytes.
    pub size: u64,
}

impl SnapshotData {
    /// Opens the complete snapshot file at `path`.
    pub fn open(path: PathBuf) -> io::Result<SnapshotData> {
        let file = File::open(&path)?;
        let size = file.metadata()?.len();
        Ok(SnapshotData { path, file, size })
    }
}

/// The directory holding one group's snapshots.
///
/// A build and an install of the same group can finish at the same moment
/// (openraft builds on its own task while the state-machine task installs
/// a snapshot from the leader). Publishing one removes the files older than
/// it, so every step from listing or renaming a file to opening it runs
/// under `files`: a file is never removed between being named and opened,
/// and once open it stays readable after it is unlinked.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    dir: Arc<PathBuf>,
    group: Group,
    stats: Arc<SnapshotStats>,
    files: Arc<std::sync::Mutex<()>>,
}

/// What this node did with snapshots since it started, for `/metrics`.
#[derive(Debug, Default)]
pub struct SnapshotStats {
    /// Snapshots built from the local state machine.
    pub built: AtomicU64,
    /// Size in bytes of the last one built.
    pub last_built_bytes: AtomicU64,
    /// Milliseconds the last build took.
    pub last_build_millis: AtomicU64,
    /// Milliseconds spent building, in total.
    pub build_millis: AtomicU64,
    /// Snapshots received from a leader and installed.
    pub installed: AtomicU64,
    /// Size in bytes of the last one installed.
    pub last_installed_bytes: AtomicU64,
    /// Milliseconds the last installation took (verify and write; not the transfer).
    pub last_install_millis: AtomicU64,
    /// Milliseconds spent installing, in total.
    pub install_millis: AtomicU64,
}

impl SnapshotStats {
    fn record_build(&self, bytes: u64, millis: u64) {
        self.built.fetch_add(1, Relaxed);
        self.last_built_bytes.store(bytes, Relaxed);
        self.last_build_millis.store(millis, Relaxed);
        self.build_millis.fetch_add(millis, Relaxed);
    }

    fn record_install(&self, bytes: u64, millis: u64) {
        self.installed.fetch_add(1, Relaxed);
        self.last_installed_bytes.store(bytes, Relaxed);
        self.last_install_millis.store(millis, Relaxed);
        self.install_millis.fetch_add(millis, Relaxed);
    }
}

impl SnapshotStore {
    /// Snapshots of `group` under `dir` (created if missing). Leftover
    /// temporary files from a crash are removed.
    pub fn open(dir: PathBuf, group: Group) -> io::Result<SnapshotStore> {
        fs::create_dir_all(&dir)?;
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                let _ = fs::remove_file(&path);
            }
        }
        Ok(SnapshotStore { dir: Arc::new(dir), group, stats: Arc::default(), files: Arc::default() })
    }

    /// The group these snapshots belong to.
    pub fn group(&self) -> Group {
        self.group
    }

    /// Counts and sizes of the snapshots built and installed since start.
    pub fn stats(&self) -> &SnapshotStats {
        &self.stats
    }

    /// A fresh temporary path in this directory, for a snapshot being written
    /// or received.
    pub fn temp_path(&self, what: &str) -> PathBuf {
        let nonce: u64 = rand::random();
        self.dir.join(format!("{what}-{nonce:016x}.tmp"))
    }

    fn final_path(&self, index: u64, term: u64, leader: u64) -> PathBuf {
        // Zero-padded index first, so that name order is log order.
        self.dir.join(format!("{index:020}-{term}-{leader}.snap"))
    }

    /// Paths of the complete snapshots, newest last.
    fn complete(&self) -> io::Result<Vec<PathBuf>> {
        let mut paths: Vec<PathBuf> = fs::read_dir(&*self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "snap"))
            .collect();
        paths.sort();
        Ok(paths)
    }

    /// The newest complete snapshot, if any.
    pub fn current(&self) -> io::Result<Option<GroupSnapshot>> {
        let data = {
            let _files = self.files.lock().unwrap_or_else(|e| e.into_inner());
            let Some(path) = self.complete()?.pop() else {
                return Ok(None);
            };
            SnapshotData::open(path)?
        };
        let meta = read_meta(&mut BufReader::new(&data.file))?;
        // Reading the header moved the shared file offset; rewind for the sender.
        let mut file = &data.file;
        io::Seek::seek(&mut file, io::SeekFrom::Start(0))?;
        Ok(Some(GroupSnapshot { meta, snapshot: data }))
    }

    /// Moves a complete snapshot file into place, opens it, and removes the
    /// snapshots older than it (a newer one, published meanwhile, stays and
    /// remains the current snapshot).
    fn publish(&self, tmp: &Path, meta: &GroupSnapshotMeta) -> io::Result<SnapshotData> {
        let (index, term, leader) = match &meta.last_log_id {
            Some(id) => (id.index, id.leader_id.term, id.leader_id.node_id),
            None => (0, 0, 0),
        };
        let path = self.final_path(index, term, leader);
        let _files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        fs::rename(tmp, &path)?;
        File::open(&*self.dir)?.sync_all()?;
        let data = SnapshotData::open(path.clone())?;
        for old in self.complete()? {
            if old < path {
                let _ = fs::remove_file(old);
            }
        }
        Ok(data)
    }

    /// Total bytes of the complete snapshots on disk.
    pub fn size_bytes(&self) -> u64 {
        self.complete().unwrap_or_default().iter().filter_map(|p| fs::metadata(p).ok()).map(|m| m.len()).sum()
    }
}

/// Writes records while hashing them.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads records while hashing them.
struct HashingReader<R: Read> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn write_chunk(w: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len()).map_err(|_| io_err("snapshot record too large"))?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(bytes)
}

fn read_len(r: &mut impl Read) -> io::Result<u32> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    Ok(u32::from_le_bytes(len))
}

fn read_chunk(r: &mut impl Read, len: u32) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

fn read_meta(r: &mut impl Read) -> io::Result<GroupSnapshotMeta> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a Bazar snapshot file"));
    }
    let len = read_len(r)?;
    decode(&read_chunk(r, len)?)
}

/// Builds a snapshot from the state pinned when it was created.
pub struct Builder<S: StateMachine> {
    pinned: Pinned,
    snapshots: SnapshotStore,
    _s: PhantomData<S>,
}

type DbSnapshot<'a> = SnapshotWithThreadMode<'a, DB>;

self_cell::self_cell!(
    /// A RocksDB snapshot together with the database handle it borrows from,
    /// so it can outlive the call that took it.
    struct Pinned {
        owner: Arc<DB>,
        #[covariant]
        dependent: DbSnapshot,
    }
);

impl<S: StateMachine> Builder<S> {
    /// Pins the current state of group `S::GROUP`.
    pub fn new(store: Store, snapshots: SnapshotStore) -> Self {
        let pinned = Pinned::new(store.db().clone(), |db| db.snapshot());
        Builder { pinned, snapshots, _s: PhantomData }
    }

    /// Writes the pinned state to a new snapshot file and makes it current.
    pub async fn build(&mut self) -> io::Result<GroupSnapshot> {
        // Take the pinned view for this build and pin a fresh one, in case
        // openraft asks this builder again.
        let db = self.pinned.borrow_owner().clone();
        let pinned = std::mem::replace(&mut self.pinned, Pinned::new(db, |db| db.snapshot()));
        let snapshots = self.snapshots.clone();
        tokio::task::spawn_blocking(move || build_file::<S>(&pinned, &snapshots)).await.map_err(io_err)?
    }
}

fn build_file<S: StateMachine>(pinned: &Pinned, snapshots: &SnapshotStore) -> io::Result<GroupSnapshot> {
    let started = std::time::Instant::now();
    let db: &DB = pinned.borrow_owner();
    let snap = pinned.borrow_dependent();
    let cf_meta = cf(db, S::GROUP, Purpose::SmMeta);
    let (last_log_id, last_membership) = read_applied_state(|k| snap.get_cf(cf_meta, k).map_err(io_err))?;
    let meta = GroupSnapshotMeta { last_log_id, last_membership };

    let tmp = snapshots.temp_path("build");
    let file = File::create(&tmp)?;
    let mut w = HashingWriter { inner: BufWriter::with_capacity(1 << 20, file), hasher: Sha256::new(), written: 0 };
    w.write_all(MAGIC)?;
    write_chunk(&mut w, &encode(&meta)?)?;
    let mut records = 0u64;
    for item in snap.iterator_cf(cf(db, S::GROUP, Purpose::Sm), IteratorMode::Start) {
        let (key, value) = item.map_err(io_err)?;
        write_chunk(&mut w, &key)?;
        write_chunk(&mut w, &value)?;
        records += 1;
    }
    w.write_all(&END_OF_RECORDS.to_le_bytes())?;
    let digest = w.hasher.finalize_reset();
    let written = w.written;
    let mut file = w.inner.into_inner().map_err(|e| e.into_error())?;
    file.write_all(&digest)?;
    file.sync_all()?;
    drop(file);

    let data = snapshots.publish(&tmp, &meta)?;
    let millis = started.elapsed().as_millis() as u64;
    snapshots.stats.record_build(written + 32, millis);
    tracing::info!(
        group = %S::GROUP,
        index = meta.last_log_id.as_ref().map(|id| id.index),
        records,
        bytes = written + 32,
        millis,
        "built snapshot"
    );
    Ok(GroupSnapshot { meta, snapshot: data })
}

/// Replaces the state machine of `S::GROUP` with the snapshot in `data`,
/// after checking its checksum, in one atomic batch; then keeps the file as
/// the current snapshot.
pub(crate) fn install<S: StateMachine>(
    store: &Store,
    snapshots: &SnapshotStore,
    meta: &GroupSnapshotMeta,
    data: SnapshotData,
) -> io::Result<()> {
    let started = std::time::Instant::now();
    let cf_sm = store.cf(S::GROUP, Purpose::Sm);
    let cf_meta = store.cf(S::GROUP, Purpose::SmMeta);
    let mut batch = WriteBatch::default();
    batch.delete_range_cf(cf_sm, &[][..], KEY_UPPER_BOUND);

    let mut r = HashingReader { inner: BufReader::with_capacity(1 << 20, &data.file), hasher: Sha256::new() };
    let file_meta = read_meta(&mut r)?;
    if file_meta != *meta {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("snapshot file is for {:?}, expected {:?}", file_meta.last_log_id, meta.last_log_id),
        ));
    }
    let mut records = 0u64;
    loop {
        let key_len = read_len(&mut r)?;
        if key_len == END_OF_RECORDS {
            break;
        }
        let key = read_chunk(&mut r, key_len)?;
        let value_len = read_len(&mut r)?;
        let value = read_chunk(&mut r, value_len)?;
        batch.put_cf(cf_sm, key, value);
        records += 1;
    }
    let computed = r.hasher.finalize();
    let mut expected = [0u8; 32];
    r.inner.read_exact(&mut expected)?;
    if computed.as_slice() != expected {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "snapshot checksum mismatch"));
    }

    batch.put_cf(cf_meta, META_APPLIED, encode(&meta.last_log_id)?);
    batch.put_cf(cf_meta, META_MEMBERSHIP, encode(&meta.last_membership)?);
    store.db().write(batch).map_err(io_err)?;

    // Keep the installed file as our current snapshot: a received (temporary)
    // file is moved into place; any other file is copied, unless it already is.
    let current = {
        let _files = snapshots.files.lock().unwrap_or_else(|e| e.into_inner());
        snapshots.complete()?.pop()
    };
    if data.path.extension().is_some_and(|e| e == "tmp") && data.path.parent() == Some(snapshots.dir.as_path()) {
        snapshots.publish(&data.path, meta)?;
    } else if current.as_deref() != Some(data.path.as_path()) {
        let tmp = snapshots.temp_path("installed");
        fs::copy(&data.path, &tmp)?;
        File::open(&tmp)?.sync_all()?;
        snapshots.publish(&tmp, meta)?;
    }
    let millis = started.elapsed().as_millis() as u64;
    snapshots.stats.record_install(data.size, millis);
    tracing::info!(
        group = %S::GROUP,
        index = meta.last_log_id.as_ref().map(|id| id.index),
        records,
        bytes = data.size,
        millis,
        "installed snapshot"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use openraft::LogId;

    use super::*;
    use crate::sm::GroupLeaderId;

    fn meta(index: u64) -> GroupSnapshotMeta {
        let leader = GroupLeaderId { term: 1, node_id: 1 };
        GroupSnapshotMeta { last_log_id: Some(LogId::new(leader, index)), last_membership: Default::default() }
    }

    /// Publishes a file that starts like a snapshot of `index` (what
    /// `current` reads of it).
    fn publish(store: &SnapshotStore, index: u64) -> io::Result<SnapshotData> {
        let tmp = store.temp_path("test");
        let mut file = File::create(&tmp)?;
        file.write_all(MAGIC)?;
        write_chunk(&mut file, &encode(&meta(index))?)?;
        drop(file);
        store.publish(&tmp, &meta(index))
    }

    /// What happened on a node under faults: an install of a newer snapshot
    /// from the leader and a build of an older one finished together, and
    /// the install's clean-up removed the built file before the build
    /// opened it. openraft takes the build's error for a storage failure
    /// and stops the group on that node for good.
    #[test]
    fn a_build_and_an_install_finishing_together_never_lose_the_file_they_publish() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(dir.path().to_path_buf(), Group::Catalog).unwrap();
        let installs = {
            let store = store.clone();
            std::thread::spawn(move || -> io::Result<()> {
                for i in 0..300u64 {
                    publish(&store, 1_000_000 + i * 2)?;
                }
                Ok(())
            })
        };
        let readers = {
            let store = store.clone();
            std::thread::spawn(move || -> io::Result<u64> {
                let mut seen = 0;
                for _ in 0..300 {
                    if store.current()?.is_some() {
                        seen += 1;
                    }
                }
                Ok(seen)
            })
        };
        for i in 0..300u64 {
            // Older than every install: removed as soon as an install runs.
            let data = publish(&store, 1 + i).expect("a built snapshot can be opened once published");
            assert!(data.size > 8);
        }
        installs.join().unwrap().expect("installs publish");
        readers.join().unwrap().expect("the current snapshot can always be opened");
        let newest = store.current().unwrap().expect("a snapshot");
        assert_eq!(newest.meta, meta(1_000_000 + 299 * 2));
    }
}
