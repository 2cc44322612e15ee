//! Snapshots: a state machine's data at one applied log id, as a file.
//!
//! A snapshot is built from a RocksDB snapshot taken when openraft asks for a
//! builder. openraft asks on the state-machine task, between two applies, and
//! then builds on another task while applies continue; the RocksDB snapshot
//! pins the data, the applied log id and the membership at that instant, so
//! the file is consistent however long the build takes.
//!
//! Installing one never holds the whole state in memory: the file is checked
//! end to end, kept, and then written in bounded batches under a marker that
//! a restart finishes (see `install`).
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
//! byte of a received snapshot touches the state machine.

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

use super::view::RowDigest;
use super::{
    GroupSnapshot, GroupSnapshotMeta, META_APPLIED, META_INSTALLING, META_MEMBERSHIP, StateMachine, read_applied_state,
};
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

/// Writes while hashing what it writes; [`HashingWriter::finish`] appends
/// the SHA-256 of it all. Snapshot streams and backup files end so.
pub(crate) struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Writes through to `inner`.
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter { inner, hasher: Sha256::new(), written: 0 }
    }

    /// Writes the SHA-256 of everything written so far (not itself hashed)
    /// and flushes; returns the writer and the bytes written, the checksum
    /// included.
    pub(crate) fn finish(mut self) -> io::Result<(W, u64)> {
        let sum = self.hasher.finalize_reset();
        self.inner.write_all(&sum)?;
        self.inner.flush()?;
        Ok((self.inner, self.written + sum.len() as u64))
    }
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
    pub(crate) struct Pinned {
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
    let tmp = snapshots.temp_path("build");
    let mut file = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
    let written = write_stream(pinned.borrow_owner(), pinned.borrow_dependent(), S::GROUP, &mut file)?;
    let file = file.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);

    let meta = written.meta;
    let data = snapshots.publish(&tmp, &meta)?;
    let millis = started.elapsed().as_millis() as u64;
    snapshots.stats.record_build(written.bytes, millis);
    tracing::info!(
        group = %S::GROUP,
        index = meta.last_log_id.as_ref().map(|id| id.index),
        records = written.records,
        bytes = written.bytes,
        millis,
        "built snapshot"
    );
    Ok(GroupSnapshot { meta, snapshot: data })
}

/// What [`write_stream`] wrote.
#[derive(Debug)]
pub(crate) struct Written {
    /// The applied log id and membership of the state written.
    pub meta: GroupSnapshotMeta,
    /// Rows written.
    pub records: u64,
    /// Bytes written, checksum included.
    pub bytes: u64,
    /// The state's digest, as [`super::View::digest`] computes it.
    pub digest: String,
}

/// Writes `group`'s state as `snap` pins it, in the snapshot layout (see the
/// module docs), to `w`. Snapshot files and the sections of a backup are
/// both written by this.
pub(crate) fn write_stream(db: &DB, snap: &DbSnapshot<'_>, group: Group, w: impl Write) -> io::Result<Written> {
    let cf_meta = cf(db, group, Purpose::SmMeta);
    if snap.get_cf(cf_meta, META_INSTALLING).map_err(io_err)?.is_some() {
        return Err(io::Error::new(io::ErrorKind::ResourceBusy, "the state is being replaced by a snapshot install"));
    }
    let (last_log_id, last_membership) = read_applied_state(|k| snap.get_cf(cf_meta, k).map_err(io_err))?;
    let meta = GroupSnapshotMeta { last_log_id, last_membership };

    let mut w = HashingWriter::new(w);
    let mut digest = RowDigest::default();
    w.write_all(MAGIC)?;
    write_chunk(&mut w, &encode(&meta)?)?;
    let mut records = 0u64;
    for item in snap.iterator_cf(cf(db, group, Purpose::Sm), IteratorMode::Start) {
        let (key, value) = item.map_err(io_err)?;
        write_chunk(&mut w, &key)?;
        write_chunk(&mut w, &value)?;
        digest.add(&key, &value);
        records += 1;
    }
    w.write_all(&END_OF_RECORDS.to_le_bytes())?;
    let (_, bytes) = w.finish()?;
    Ok(Written { meta, records, bytes, digest: digest.finish() })
}

/// Records of an installed snapshot are written in RocksDB batches of about
/// this many bytes, so a node's memory does not grow with the snapshot.
pub(crate) const INSTALL_BATCH_BYTES: usize = 8 << 20;

/// Reads a snapshot stream from `r`: hands its metadata to `on_meta`, each
/// record to `on_record`, in order, and checks the checksum at its end
/// (`mismatch` is the error if it differs). Returns the number of records.
fn read_stream<R: Read>(
    r: &mut R,
    on_meta: impl FnOnce(GroupSnapshotMeta) -> io::Result<()>,
    mut on_record: impl FnMut(Vec<u8>, Vec<u8>) -> io::Result<()>,
    mismatch: &str,
) -> io::Result<u64> {
    let mut r = HashingReader { inner: r, hasher: Sha256::new() };
    on_meta(read_meta(&mut r)?)?;
    let mut records = 0u64;
    loop {
        let key_len = read_len(&mut r)?;
        if key_len == END_OF_RECORDS {
            break;
        }
        let key = read_chunk(&mut r, key_len)?;
        let value_len = read_len(&mut r)?;
        let value = read_chunk(&mut r, value_len)?;
        on_record(key, value)?;
        records += 1;
    }
    let computed = r.hasher.finalize();
    let mut expected = [0u8; 32];
    r.inner.read_exact(&mut expected)?;
    if computed.as_slice() != expected {
        return Err(io::Error::new(io::ErrorKind::InvalidData, mismatch.to_string()));
    }
    Ok(records)
}

/// Checks a snapshot file from end to end: its magic, that its metadata is
/// `meta`, every record's framing and the checksum. Reads the file through
/// a shared offset, so it rewinds first and after.
fn verify(file: &File, meta: &GroupSnapshotMeta) -> io::Result<()> {
    let mut file_ref = file;
    io::Seek::seek(&mut file_ref, io::SeekFrom::Start(0))?;
    let mut r = BufReader::with_capacity(1 << 20, file);
    let same_meta = |file_meta: GroupSnapshotMeta| {
        if file_meta == *meta {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("snapshot file is for {:?}, expected {:?}", file_meta.last_log_id, meta.last_log_id),
            ))
        }
    };
    read_stream(&mut r, same_meta, |_, _| Ok(()), "snapshot checksum mismatch")?;
    if r.read(&mut [0u8; 1])? != 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "snapshot file has bytes after its checksum"));
    }
    io::Seek::seek(&mut file_ref, io::SeekFrom::Start(0))?;
    Ok(())
}

/// Replaces the state machine of `S::GROUP` with the snapshot in `data`.
///
/// The file is checked end to end (checksum included) before any byte of it
/// touches the state machine, then kept as the current snapshot, then written
/// in batches of [`INSTALL_BATCH_BYTES`]: memory stays bounded whatever the
/// snapshot's size. While the batches are written, `{group}_sm_meta` holds
/// an `installing` marker naming the snapshot: reads of the state machine
/// refuse to answer from the partial state, and a node that restarts with
/// the marker present finishes the install from the kept file before its
/// Raft starts ([`resume_install`]).
pub(crate) fn install<S: StateMachine>(
    store: &Store,
    snapshots: &SnapshotStore,
    meta: &GroupSnapshotMeta,
    data: SnapshotData,
) -> io::Result<()> {
    install_in_batches::<S>(store, snapshots, meta, data, INSTALL_BATCH_BYTES, &mut |_| Ok(())).map(|_| ())
}

/// What an install wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Installed {
    /// Records written.
    pub records: u64,
    /// RocksDB batches the records were written in.
    pub batches: u64,
    /// Bytes (keys and values) in the largest batch.
    pub largest_batch_bytes: usize,
}

/// [`install`] with the batch size given, calling `after_batch` with each
/// batch's number once it is written (a test's crash point).
pub(crate) fn install_in_batches<S: StateMachine>(
    store: &Store,
    snapshots: &SnapshotStore,
    meta: &GroupSnapshotMeta,
    data: SnapshotData,
    batch_bytes: usize,
    after_batch: &mut dyn FnMut(u64) -> io::Result<()>,
) -> io::Result<Installed> {
    let started = std::time::Instant::now();
    let size = data.size;
    verify(&data.file, meta)?;
    let kept = keep(snapshots, meta, data)?;
    let installed = write_records::<S>(store, meta, &kept, batch_bytes, after_batch)?;
    let millis = started.elapsed().as_millis() as u64;
    snapshots.stats.record_install(size, millis);
    tracing::info!(
        group = %S::GROUP,
        index = meta.last_log_id.as_ref().map(|id| id.index),
        records = installed.records,
        batches = installed.batches,
        bytes = size,
        millis,
        "installed snapshot"
    );
    Ok(installed)
}

/// Keeps a checked snapshot file as the current snapshot and returns it
/// open: a received (temporary) file is moved into place; any other file is
/// copied, unless it already is the current one.
fn keep(snapshots: &SnapshotStore, meta: &GroupSnapshotMeta, data: SnapshotData) -> io::Result<SnapshotData> {
    let current = {
        let _files = snapshots.files.lock().unwrap_or_else(|e| e.into_inner());
        snapshots.complete()?.pop()
    };
    if data.path.extension().is_some_and(|e| e == "tmp") && data.path.parent() == Some(snapshots.dir.as_path()) {
        snapshots.publish(&data.path, meta)
    } else if current.as_deref() != Some(data.path.as_path()) {
        let tmp = snapshots.temp_path("installed");
        fs::copy(&data.path, &tmp)?;
        File::open(&tmp)?.sync_all()?;
        snapshots.publish(&tmp, meta)
    } else {
        Ok(data)
    }
}

/// Writes the records of the checked snapshot file `data` over the state
/// machine, under the `installing` marker; the last batch sets the applied
/// log id and membership and removes the marker.
fn write_records<S: StateMachine>(
    store: &Store,
    meta: &GroupSnapshotMeta,
    data: &SnapshotData,
    batch_bytes: usize,
    after_batch: &mut dyn FnMut(u64) -> io::Result<()>,
) -> io::Result<Installed> {
    let mut file = &data.file;
    io::Seek::seek(&mut file, io::SeekFrom::Start(0))?;
    let mut r = BufReader::with_capacity(1 << 20, file);
    let same_log_id = |file_meta: &GroupSnapshotMeta| {
        if file_meta.last_log_id == meta.last_log_id {
            Ok(meta.clone())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("snapshot stream is for {:?}, expected {:?}", file_meta.last_log_id, meta.last_log_id),
            ))
        }
    };
    let (mut last, installed, meta) = replace_state(store, S::GROUP, &mut r, same_log_id, batch_bytes, after_batch)?;
    finish_install(store, S::GROUP, &meta, &mut last)?;
    store.db().write(last).map_err(io_err)?;
    Ok(installed)
}

/// Replaces `group`'s state machine with the snapshot stream in `r`. The
/// stream's metadata goes through `to_install`, which checks it and says
/// what the state will be installed as; then one batch sets the
/// `installing` marker to that and clears the state, and the records follow
/// in batches of about `batch_bytes`. Returns the last batch unwritten, for
/// the caller to complete (see [`finish_install`]) and write, with what was
/// written and the metadata installed. The stream's checksum is checked at
/// its end: whatever was written stays under the marker if it differs.
pub(crate) fn replace_state(
    store: &Store,
    group: Group,
    r: &mut impl Read,
    to_install: impl FnOnce(&GroupSnapshotMeta) -> io::Result<GroupSnapshotMeta>,
    batch_bytes: usize,
    after_batch: &mut dyn FnMut(u64) -> io::Result<()>,
) -> io::Result<(WriteBatch, Installed, GroupSnapshotMeta)> {
    let cf_sm = store.cf(group, Purpose::Sm);
    let cf_meta = store.cf(group, Purpose::SmMeta);
    let mut installed = Installed { records: 0, batches: 0, largest_batch_bytes: 0 };
    let mut meta = None;
    let mut batch = WriteBatch::default();
    let mut bytes = 0usize;
    let begin = |file_meta: GroupSnapshotMeta| {
        let into = to_install(&file_meta)?;
        let mut begin = WriteBatch::default();
        begin.put_cf(cf_meta, META_INSTALLING, encode(&into)?);
        begin.delete_range_cf(cf_sm, &[][..], KEY_UPPER_BOUND);
        store.db().write(begin).map_err(io_err)?;
        meta = Some(into);
        Ok(())
    };
    let record = |key: Vec<u8>, value: Vec<u8>| {
        bytes += key.len() + value.len();
        batch.put_cf(cf_sm, key, value);
        installed.records += 1;
        if bytes >= batch_bytes {
            store.db().write(std::mem::take(&mut batch)).map_err(io_err)?;
            installed.batches += 1;
            installed.largest_batch_bytes = installed.largest_batch_bytes.max(bytes);
            bytes = 0;
            after_batch(installed.batches)?;
        }
        Ok(())
    };
    // The stream was checked before the first write; a difference now means
    // it changed on disk since. The marker stays: the node does not run on.
    read_stream(r, begin, record, "snapshot changed while it was installed")?;
    installed.batches += 1;
    installed.largest_batch_bytes = installed.largest_batch_bytes.max(bytes);
    let meta = meta.expect("read_stream hands over the metadata before it returns");
    Ok((batch, installed, meta))
}

/// Completes the last batch of an install: the applied log id and the
/// membership of `meta`, and the marker removed.
pub(crate) fn finish_install(
    store: &Store,
    group: Group,
    meta: &GroupSnapshotMeta,
    batch: &mut WriteBatch,
) -> io::Result<()> {
    let cf_meta = store.cf(group, Purpose::SmMeta);
    batch.put_cf(cf_meta, META_APPLIED, encode(&meta.last_log_id)?);
    batch.put_cf(cf_meta, META_MEMBERSHIP, encode(&meta.last_membership)?);
    batch.delete_cf(cf_meta, META_INSTALLING);
    Ok(())
}

/// Finishes a snapshot install that a crash interrupted: when group
/// `S::GROUP`'s `installing` marker is present, writes the snapshot it names
/// again from the kept file. Runs before the group's Raft starts; a node
/// whose file is gone cannot run with half a state machine and says so.
pub(crate) fn resume_install<S: StateMachine>(store: &Store, snapshots: &SnapshotStore) -> io::Result<()> {
    let cf_meta = store.cf(S::GROUP, Purpose::SmMeta);
    let Some(raw) = store.db().get_cf(cf_meta, META_INSTALLING).map_err(io_err)? else {
        return Ok(());
    };
    let meta: GroupSnapshotMeta = decode(&raw)?;
    let current = snapshots.current()?;
    let Some(current) = current.filter(|c| c.meta == meta) else {
        return Err(io::Error::other(format!(
            "the {} group was installing the snapshot at {:?} when the node stopped, and that snapshot's file \
             is gone from {}; remove this node's data folder and add the node to the cluster again (or, if it was \
             being seeded from a backup, start it again with the same --restore FILE)",
            S::GROUP,
            meta.last_log_id,
            snapshots.dir.display()
        )));
    };
    tracing::warn!(group = %S::GROUP, index = meta.last_log_id.as_ref().map(|id| id.index), "finishing an interrupted snapshot install");
    verify(&current.snapshot.file, &meta)?;
    write_records::<S>(store, &meta, &current.snapshot, INSTALL_BATCH_BYTES, &mut |_| Ok(()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use openraft::LogId;

    use super::*;
    use crate::catalog::Catalog;
    use crate::sm::GroupLeaderId;
    use crate::sm::testing::TestDb;

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

    /// A leader's catalog of `rows` rows of about 1 kB at applied index
    /// `index`, built into a snapshot under `dir`.
    async fn catalog_snapshot(rows: u32, index: u64, dir: &Path) -> (TestDb, GroupSnapshot) {
        let mut leader = TestDb::new();
        for i in 0..rows {
            leader.put_raw::<Catalog>(format!("b{i:08}").into_bytes(), vec![i as u8; 1000]);
        }
        set_applied(&leader, index);
        let snapshots = SnapshotStore::open(dir.join("leader"), Group::Catalog).unwrap();
        let snapshot = Builder::<Catalog>::new(leader.store.clone(), snapshots).build().await.unwrap();
        (leader, snapshot)
    }

    fn set_applied(db: &TestDb, index: u64) {
        let cf = db.store.cf(Group::Catalog, Purpose::SmMeta);
        db.store.db().put_cf(cf, META_APPLIED, encode(&meta(index).last_log_id).unwrap()).unwrap();
    }

    /// A follower with rows the snapshot does not have, at an older index.
    fn stale_follower() -> TestDb {
        let mut follower = TestDb::new();
        for i in 0..50u32 {
            follower.put_raw::<Catalog>(format!("z{i}").into_bytes(), b"stale".to_vec());
        }
        set_applied(&follower, 7);
        follower
    }

    fn digest(db: &TestDb) -> String {
        db.view::<Catalog>().digest().unwrap()
    }

    /// Installing never builds one batch of the whole state: the records go
    /// in batches of the bound, and the result is the leader's state.
    #[tokio::test]
    async fn a_snapshot_installs_in_batches_of_bounded_size() {
        let dir = tempfile::tempdir().unwrap();
        let (leader, snapshot) = catalog_snapshot(4000, 900, dir.path()).await;
        let follower = stale_follower();
        let theirs = SnapshotStore::open(dir.path().join("follower"), Group::Catalog).unwrap();
        let data = SnapshotData::open(snapshot.snapshot.path.clone()).unwrap();
        let bound = 100_000;
        let installed =
            install_in_batches::<Catalog>(&follower.store, &theirs, &snapshot.meta, data, bound, &mut |_| Ok(()))
                .unwrap();
        assert_eq!(installed.records, 4000);
        assert!(installed.batches >= 40, "{installed:?}");
        assert!(
            installed.largest_batch_bytes < bound + 1100,
            "a batch holds at most one record over the bound: {installed:?}"
        );
        assert_eq!(digest(&follower), digest(&leader));
        assert_eq!(follower.view::<Catalog>().applied_index().unwrap(), 900);
        assert_eq!(theirs.current().unwrap().unwrap().meta, snapshot.meta, "the installed file is kept");
    }

    /// A crash between two batches leaves part of the snapshot written.
    /// Reads refuse the partial state, and the restart finishes the install
    /// from the kept file.
    #[tokio::test]
    async fn an_install_interrupted_between_batches_is_finished_on_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (leader, snapshot) = catalog_snapshot(3000, 500, dir.path()).await;
        let follower = stale_follower();
        let theirs = SnapshotStore::open(dir.path().join("follower"), Group::Catalog).unwrap();
        let data = SnapshotData::open(snapshot.snapshot.path.clone()).unwrap();
        let crash = install_in_batches::<Catalog>(&follower.store, &theirs, &snapshot.meta, data, 100_000, &mut |n| {
            if n == 5 { Err(io::Error::other("power cut")) } else { Ok(()) }
        });
        assert_eq!(crash.unwrap_err().to_string(), "power cut");
        let read = follower.view::<Catalog>().applied_index().unwrap_err();
        assert_eq!(read.kind(), io::ErrorKind::ResourceBusy, "{read}");

        let reopened = SnapshotStore::open(dir.path().join("follower"), Group::Catalog).unwrap();
        resume_install::<Catalog>(&follower.store, &reopened).unwrap();
        assert_eq!(digest(&follower), digest(&leader));
        assert_eq!(follower.view::<Catalog>().applied_index().unwrap(), 500);
        resume_install::<Catalog>(&follower.store, &reopened).unwrap();
        assert_eq!(digest(&follower), digest(&leader), "with no install to finish, a restart changes nothing");
    }

    /// A snapshot damaged in transit is refused before any byte of it is
    /// written: the follower keeps its state and can still answer.
    #[tokio::test]
    async fn a_corrupt_snapshot_is_refused_before_it_touches_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let (_leader, snapshot) = catalog_snapshot(3000, 500, dir.path()).await;
        let follower = stale_follower();
        let before = digest(&follower);
        let theirs = SnapshotStore::open(dir.path().join("follower"), Group::Catalog).unwrap();
        let damaged = theirs.temp_path("incoming");
        let mut bytes = fs::read(&snapshot.snapshot.path).unwrap();
        let last_record = bytes.len() - 32 - 4 - 10;
        bytes[last_record] ^= 1;
        fs::write(&damaged, &bytes).unwrap();
        let err =
            install::<Catalog>(&follower.store, &theirs, &snapshot.meta, SnapshotData::open(damaged.clone()).unwrap())
                .unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        assert_eq!(digest(&follower), before);
        assert_eq!(follower.view::<Catalog>().applied_index().unwrap(), 7);
        assert!(theirs.current().unwrap().is_none(), "a damaged file is not kept");

        bytes.truncate(bytes.len() / 2);
        fs::write(&damaged, &bytes).unwrap();
        let err = install::<Catalog>(&follower.store, &theirs, &snapshot.meta, SnapshotData::open(damaged).unwrap())
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
        assert_eq!(digest(&follower), before);
    }

    /// An interrupted install whose file is gone cannot be finished: the node
    /// says what to do instead of running with half a state machine.
    #[tokio::test]
    async fn an_interrupted_install_without_its_file_stops_the_node_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let (_leader, snapshot) = catalog_snapshot(500, 500, dir.path()).await;
        let follower = stale_follower();
        let theirs = SnapshotStore::open(dir.path().join("follower"), Group::Catalog).unwrap();
        let data = SnapshotData::open(snapshot.snapshot.path.clone()).unwrap();
        install_in_batches::<Catalog>(&follower.store, &theirs, &snapshot.meta, data, 10_000, &mut |_| {
            Err(io::Error::other("power cut"))
        })
        .unwrap_err();
        fs::remove_dir_all(dir.path().join("follower")).unwrap();
        let reopened = SnapshotStore::open(dir.path().join("follower"), Group::Catalog).unwrap();
        let err = resume_install::<Catalog>(&follower.store, &reopened).unwrap_err().to_string();
        assert!(err.contains("remove this node's data folder"), "{err}");
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
