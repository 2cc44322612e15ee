//! What a disk keeps through a power cut: the state behind the lazyfs mount.
//!
//! The backing directory always holds the *live* state, what programs see
//! through the mount. Next to it the model remembers what was made durable,
//! and [`Model::power_cut`] turns the backing directory back into exactly
//! that. What counts as durable, per kind of change:
//!
//! | change | durable once | on a power cut before that |
//! |---|---|---|
//! | file data (`write`, `truncate`, `fallocate` that punches or zeroes) | `fsync`/`fdatasync` of that file | the file's bytes and size are those of its last sync (empty if never synced) |
//! | a name (`create`, `mkdir`, `symlink`, `rename`, `unlink`, `rmdir`) | `fsync` of the directory holding it, or `fsync` of the file or directory it names | the directory's entries are those of its last sync |
//!
//! So a file created and never synced, in a directory never synced, is gone;
//! a rename over an old file that neither directory nor file sync made
//! durable leaves the old file in place; an unlinked file whose directory
//! was not synced comes back with its synced data. Syncing a file also makes
//! the names leading to it durable (its entry, and its parent's up to the
//! root), as a journaling file system such as ext4 does when it commits the
//! transaction that created them; the rest of those directories' changes
//! wait for their own sync. A rename is atomic: an inode has at most one
//! durable name, and making the new one durable drops the old one.
//! Metadata (modes, owners, times) and symlink targets are not modelled:
//! they are kept as they are. Hard links are refused (`EPERM`).
//!
//! How it is kept cheap enough for a database: data is never copied on
//! `fsync`. Before a write overwrites bytes that were synced, the old bytes
//! are read and kept in memory (once per byte, the first time); a sync drops
//! them. Appending past the synced size costs nothing: the cut only
//! truncates. Unlinked inodes are moved to a hidden directory in the backing
//! root ([`GRAVEYARD`]) rather than deleted, as long as a durable name or an
//! open handle still needs them.
//!
//! The model holds no lock of its own: the FUSE adapter serialises calls.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Inode number of the root directory (FUSE's).
pub const ROOT: u64 = 1;
/// Hidden directory in the backing root holding unlinked inodes.
pub const GRAVEYARD: &str = ".lazyfs-graveyard";
/// Hidden directory in the backing root used while a power cut rebuilds the tree.
pub const STAGE: &str = ".lazyfs-stage";

/// The kind of an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
}

#[derive(Debug, Default)]
struct FileState {
    /// Size at the last sync (0 for a file never synced).
    synced_size: u64,
    /// Bytes of `[0, synced_size)` overwritten since the last sync, as they
    /// were then: disjoint ranges by offset.
    undo: BTreeMap<u64, Vec<u8>>,
    /// Handles open on it.
    open: u32,
}

#[derive(Debug, Default)]
struct DirState {
    /// Entries as programs see them.
    live: BTreeMap<OsString, u64>,
    /// Entries as of the last sync of this directory (or of the inodes
    /// they name).
    durable: BTreeMap<OsString, u64>,
}

#[derive(Debug)]
enum Body {
    File(FileState),
    Dir(DirState),
    Symlink,
}

#[derive(Debug)]
struct Inode {
    /// Where programs see it; `None` once unlinked (it is in the graveyard).
    parent: Option<(u64, OsString)>,
    /// Its durable name, if any.
    durable_parent: Option<(u64, OsString)>,
    body: Body,
}

impl Inode {
    fn kind(&self) -> Kind {
        match self.body {
            Body::File(_) => Kind::File,
            Body::Dir(_) => Kind::Dir,
            Body::Symlink => Kind::Symlink,
        }
    }
}

/// What a power cut undid.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CutReport {
    /// Files whose data went back to their last sync.
    pub files_reverted: usize,
    /// Bytes past the synced sizes that were dropped.
    pub bytes_dropped: u64,
    /// Inodes that vanished (never durably named).
    pub inodes_lost: usize,
    /// Inodes that came back under a name they had lost since the last sync.
    pub names_restored: usize,
    /// Each file whose data went back, with its durable path and the bytes
    /// past its synced size that were dropped.
    pub reverted: Vec<(PathBuf, u64)>,
}

/// The live tree in the backing directory plus what is durable of it.
#[derive(Debug)]
pub struct Model {
    root: PathBuf,
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    handles: HashMap<u64, (u64, File)>,
    next_fh: u64,
}

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

impl Model {
    /// Takes over `root`: everything in it now is durable (the disk as it
    /// was at mount time). Leftovers of an earlier run's hidden directories
    /// are deleted.
    pub fn load(root: &Path) -> io::Result<Model> {
        for hidden in [GRAVEYARD, STAGE] {
            let p = root.join(hidden);
            if p.exists() {
                fs::remove_dir_all(&p)?;
            }
        }
        let mut model = Model {
            root: root.to_path_buf(),
            inodes: HashMap::new(),
            next_ino: ROOT + 1,
            handles: HashMap::new(),
            next_fh: 1,
        };
        model.inodes.insert(ROOT, Inode { parent: None, durable_parent: None, body: Body::Dir(DirState::default()) });
        let mut queue = VecDeque::from([ROOT]);
        while let Some(dir) = queue.pop_front() {
            let path = model.path(dir);
            let mut entries = Vec::new();
            for entry in fs::read_dir(&path)? {
                let entry = entry?;
                entries.push((entry.file_name(), entry.file_type()?, entry.metadata()?.len()));
            }
            for (name, ty, len) in entries {
                let body = if ty.is_dir() {
                    Body::Dir(DirState::default())
                } else if ty.is_file() {
                    Body::File(FileState { synced_size: len, ..FileState::default() })
                } else if ty.is_symlink() {
                    Body::Symlink
                } else {
                    continue;
                };
                let ino = model.next_ino;
                model.next_ino += 1;
                let link = Some((dir, name.clone()));
                let is_dir = ty.is_dir();
                model.inodes.insert(ino, Inode { parent: link.clone(), durable_parent: link, body });
                let d = model.dir_mut(dir)?;
                d.live.insert(name.clone(), ino);
                d.durable.insert(name, ino);
                if is_dir {
                    queue.push_back(ino);
                }
            }
        }
        fs::DirBuilder::new().mode(0o700).create(model.root.join(GRAVEYARD))?;
        Ok(model)
    }

    /// Where inode `ino` is in the backing directory now.
    pub fn path(&self, ino: u64) -> PathBuf {
        match self.inodes.get(&ino).and_then(|i| i.parent.as_ref()) {
            Some((parent, name)) => self.path(*parent).join(name),
            None if ino == ROOT => self.root.clone(),
            None => self.root.join(GRAVEYARD).join(ino.to_string()),
        }
    }

    fn inode(&self, ino: u64) -> io::Result<&Inode> {
        self.inodes.get(&ino).ok_or_else(|| errno(libc::ENOENT))
    }

    fn dir(&self, ino: u64) -> io::Result<&DirState> {
        match &self.inode(ino)?.body {
            Body::Dir(d) => Ok(d),
            _ => Err(errno(libc::ENOTDIR)),
        }
    }

    fn dir_mut(&mut self, ino: u64) -> io::Result<&mut DirState> {
        match self.inodes.get_mut(&ino).map(|i| &mut i.body) {
            Some(Body::Dir(d)) => Ok(d),
            Some(_) => Err(errno(libc::ENOTDIR)),
            None => Err(errno(libc::ENOENT)),
        }
    }

    fn file_mut(&mut self, ino: u64) -> io::Result<&mut FileState> {
        match self.inodes.get_mut(&ino).map(|i| &mut i.body) {
            Some(Body::File(f)) => Ok(f),
            Some(Body::Dir(_)) => Err(errno(libc::EISDIR)),
            Some(Body::Symlink) => Err(errno(libc::EINVAL)),
            None => Err(errno(libc::ENOENT)),
        }
    }

    /// The kind of inode `ino`.
    pub fn kind(&self, ino: u64) -> io::Result<Kind> {
        Ok(self.inode(ino)?.kind())
    }

    /// The inode named `name` in directory `parent`.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> io::Result<u64> {
        self.dir(parent)?.live.get(name).copied().ok_or_else(|| errno(libc::ENOENT))
    }

    /// The backing file's metadata (not following a symlink).
    pub fn metadata(&self, ino: u64) -> io::Result<fs::Metadata> {
        self.inode(ino)?;
        fs::symlink_metadata(self.path(ino))
    }

    /// The entries of directory `ino`, in name order.
    pub fn entries(&self, ino: u64) -> io::Result<Vec<(OsString, u64, Kind)>> {
        let dir = self.dir(ino)?;
        Ok(dir
            .live
            .iter()
            .filter_map(|(name, child)| Some((name.clone(), *child, self.inodes.get(child)?.kind())))
            .collect())
    }

    /// The live parent of `ino` (the root is its own).
    pub fn parent_of(&self, ino: u64) -> u64 {
        self.inodes.get(&ino).and_then(|i| i.parent.as_ref()).map_or(ROOT, |(p, _)| *p)
    }

    fn check_new_name(&self, parent: u64, name: &OsStr) -> io::Result<()> {
        if parent == ROOT && (name == GRAVEYARD || name == STAGE) {
            return Err(errno(libc::EACCES));
        }
        if self.dir(parent)?.live.contains_key(name) {
            return Err(errno(libc::EEXIST));
        }
        Ok(())
    }

    fn add(&mut self, parent: u64, name: &OsStr, body: Body) -> io::Result<u64> {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, Inode { parent: Some((parent, name.to_os_string())), durable_parent: None, body });
        self.dir_mut(parent)?.live.insert(name.to_os_string(), ino);
        Ok(ino)
    }

    /// Creates the regular file `name` in `parent` and opens it; returns the
    /// inode and the handle.
    pub fn create(&mut self, parent: u64, name: &OsStr, mode: u32) -> io::Result<(u64, u64)> {
        self.check_new_name(parent, name)?;
        let path = self.path(parent).join(name);
        let file = OpenOptions::new().read(true).write(true).create_new(true).mode(mode & 0o7777).open(&path)?;
        let ino = self.add(parent, name, Body::File(FileState::default()))?;
        Ok((ino, self.register(ino, file)?))
    }

    /// Creates the directory `name` in `parent`.
    pub fn mkdir(&mut self, parent: u64, name: &OsStr, mode: u32) -> io::Result<u64> {
        self.check_new_name(parent, name)?;
        fs::DirBuilder::new().mode(mode & 0o7777).create(self.path(parent).join(name))?;
        self.add(parent, name, Body::Dir(DirState::default()))
    }

    /// Creates the symlink `name` in `parent`, pointing at `target`.
    pub fn symlink(&mut self, parent: u64, name: &OsStr, target: &Path) -> io::Result<u64> {
        self.check_new_name(parent, name)?;
        std::os::unix::fs::symlink(target, self.path(parent).join(name))?;
        self.add(parent, name, Body::Symlink)
    }

    /// Where a symlink points.
    pub fn readlink(&self, ino: u64) -> io::Result<PathBuf> {
        fs::read_link(self.path(ino))
    }

    /// Moves inode `ino` out of the live tree into the graveyard.
    fn bury(&mut self, ino: u64) -> io::Result<()> {
        let from = self.path(ino);
        let to = self.root.join(GRAVEYARD).join(ino.to_string());
        fs::rename(&from, &to)?;
        if let Some((parent, name)) = self.inodes.get_mut(&ino).and_then(|i| i.parent.take()) {
            self.dir_mut(parent)?.live.remove(&name);
        }
        self.collect(ino)
    }

    /// Deletes an unlinked file that nothing needs any more: no durable
    /// name, no open handle. (Directories wait for the cut or the unmount.)
    fn collect(&mut self, ino: u64) -> io::Result<()> {
        let Some(inode) = self.inodes.get(&ino) else { return Ok(()) };
        let unneeded = inode.parent.is_none()
            && inode.durable_parent.is_none()
            && match &inode.body {
                Body::File(f) => f.open == 0,
                Body::Symlink => true,
                Body::Dir(_) => false,
            };
        if unneeded {
            fs::remove_file(self.path(ino))?;
            self.inodes.remove(&ino);
        }
        Ok(())
    }

    /// Removes the non-directory `name` from `parent`.
    pub fn unlink(&mut self, parent: u64, name: &OsStr) -> io::Result<()> {
        let ino = self.lookup(parent, name)?;
        if self.kind(ino)? == Kind::Dir {
            return Err(errno(libc::EISDIR));
        }
        self.bury(ino)
    }

    /// Removes the empty directory `name` from `parent`.
    pub fn rmdir(&mut self, parent: u64, name: &OsStr) -> io::Result<()> {
        let ino = self.lookup(parent, name)?;
        if !self.dir(ino)?.live.is_empty() {
            return Err(errno(libc::ENOTEMPTY));
        }
        self.bury(ino)
    }

    /// Renames `parent/name` to `new_parent/new_name`, replacing what is
    /// there (unless `no_replace`), as rename(2) does.
    pub fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        no_replace: bool,
    ) -> io::Result<()> {
        let ino = self.lookup(parent, name)?;
        if new_parent == ROOT && (new_name == GRAVEYARD || new_name == STAGE) {
            return Err(errno(libc::EACCES));
        }
        self.dir(new_parent)?;
        // A directory cannot move into itself or below.
        let mut up = new_parent;
        while up != ROOT {
            if up == ino {
                return Err(errno(libc::EINVAL));
            }
            up = self.parent_of(up);
        }
        if let Some(old) = self.dir(new_parent)?.live.get(new_name).copied() {
            if old == ino {
                return Ok(());
            }
            if no_replace {
                return Err(errno(libc::EEXIST));
            }
            match (self.kind(ino)? == Kind::Dir, self.kind(old)? == Kind::Dir) {
                (true, false) => return Err(errno(libc::ENOTDIR)),
                (false, true) => return Err(errno(libc::EISDIR)),
                (true, true) if !self.dir(old)?.live.is_empty() => return Err(errno(libc::ENOTEMPTY)),
                _ => {}
            }
            // The replaced inode keeps its durable name until a sync says
            // otherwise: to the graveyard with it.
            self.bury(old)?;
        }
        fs::rename(self.path(ino), self.path(new_parent).join(new_name))?;
        self.dir_mut(parent)?.live.remove(name);
        self.dir_mut(new_parent)?.live.insert(new_name.to_os_string(), ino);
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.parent = Some((new_parent, new_name.to_os_string()));
        }
        Ok(())
    }

    fn register(&mut self, ino: u64, file: File) -> io::Result<u64> {
        self.file_mut(ino)?.open += 1;
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, (ino, file));
        Ok(fh)
    }

    /// Opens regular file `ino` (always for reading and writing underneath:
    /// what the caller may do was checked by the kernel).
    pub fn open(&mut self, ino: u64) -> io::Result<u64> {
        self.file_mut(ino)?;
        let file = OpenOptions::new().read(true).write(true).open(self.path(ino))?;
        self.register(ino, file)
    }

    /// Closes a handle. Closing syncs nothing.
    pub fn release(&mut self, fh: u64) -> io::Result<()> {
        if let Some((ino, _)) = self.handles.remove(&fh) {
            if let Ok(f) = self.file_mut(ino) {
                f.open = f.open.saturating_sub(1);
            }
            self.collect(ino)?;
        }
        Ok(())
    }

    fn handle(&self, fh: u64) -> io::Result<&(u64, File)> {
        self.handles.get(&fh).ok_or_else(|| errno(libc::EBADF))
    }

    /// Reads up to `size` bytes at `offset`.
    pub fn read(&self, fh: u64, offset: u64, size: usize) -> io::Result<Vec<u8>> {
        let (_, file) = self.handle(fh)?;
        let mut buf = vec![0; size];
        let mut filled = 0;
        while filled < size {
            match file.read_at(&mut buf[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(filled);
        Ok(buf)
    }

    /// A file of inode `ino` to act on: a handle's if given, else opened.
    fn file_for(&self, ino: u64, fh: Option<u64>) -> io::Result<File> {
        match fh.and_then(|fh| self.handles.get(&fh)) {
            Some((_, file)) => file.try_clone(),
            None => OpenOptions::new().read(true).write(true).open(self.path(ino)),
        }
    }

    /// Keeps the synced bytes of `[start, end)` that are about to change.
    fn save(&mut self, ino: u64, file: &File, start: u64, end: u64) -> io::Result<()> {
        let state = self.file_mut(ino)?;
        let end = end.min(state.synced_size);
        if start >= end {
            return Ok(());
        }
        // The parts of [start, end) no saved range covers yet.
        let mut missing = Vec::new();
        let mut at = start;
        let first = state.undo.range(..=start).next_back().map(|(k, _)| *k).unwrap_or(start);
        for (&off, bytes) in state.undo.range(first..end) {
            let stop = off + bytes.len() as u64;
            if stop <= at {
                continue;
            }
            if off > at {
                missing.push((at, off));
            }
            at = at.max(stop);
            if at >= end {
                break;
            }
        }
        if at < end {
            missing.push((at, end));
        }
        for (a, b) in missing {
            let mut old = vec![0; (b - a) as usize];
            // Every synced byte not saved yet is still in the file: only a
            // truncation shortens it, and that saves what it cuts.
            file.read_exact_at(&mut old, a)?;
            state.undo.insert(a, old);
        }
        Ok(())
    }

    /// Writes `data` at `offset` through handle `fh`.
    pub fn write(&mut self, fh: u64, offset: u64, data: &[u8]) -> io::Result<usize> {
        let (ino, file) = self.handle(fh)?;
        let (ino, file) = (*ino, file.try_clone()?);
        self.save(ino, &file, offset, offset + data.len() as u64)?;
        file.write_all_at(data, offset)?;
        Ok(data.len())
    }

    /// Sets the size of file `ino` (through `fh` if given).
    pub fn truncate(&mut self, ino: u64, fh: Option<u64>, size: u64) -> io::Result<()> {
        let file = self.file_for(ino, fh)?;
        let synced = self.file_mut(ino)?.synced_size;
        self.save(ino, &file, size, synced)?;
        file.set_len(size)
    }

    /// fallocate(2) on handle `fh`. Allocating (with or without keeping
    /// the size) changes no byte; punching a hole or zeroing a range does,
    /// and saves what it overwrites first. Other modes are refused.
    pub fn fallocate(&mut self, fh: u64, offset: u64, length: u64, mode: i32) -> io::Result<()> {
        let allowed = libc::FALLOC_FL_KEEP_SIZE | libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE;
        if mode & !allowed != 0 {
            return Err(errno(libc::EOPNOTSUPP));
        }
        let (ino, file) = self.handle(fh)?;
        let (ino, file) = (*ino, file.try_clone()?);
        if mode & (libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE) != 0 {
            self.save(ino, &file, offset, offset.saturating_add(length))?;
        }
        let (off, len) = (
            i64::try_from(offset).map_err(|_| errno(libc::EINVAL))?,
            i64::try_from(length).map_err(|_| errno(libc::EINVAL))?,
        );
        // SAFETY: fallocate(2) on a descriptor this model owns; no memory is passed.
        let rc = unsafe { libc::fallocate(std::os::fd::AsRawFd::as_raw_fd(&file), mode, off, len) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// `fsync`/`fdatasync` of a file: its data, and the names leading to it.
    pub fn fsync(&mut self, ino: u64) -> io::Result<()> {
        let len = fs::symlink_metadata(self.path(ino))?.len();
        let state = self.file_mut(ino)?;
        state.synced_size = len;
        state.undo.clear();
        self.persist_name(ino)
    }

    /// `fsync` of a directory: its entries as they are now, and the names
    /// leading to it.
    pub fn fsyncdir(&mut self, ino: u64) -> io::Result<()> {
        let dir = self.dir(ino)?;
        let live: Vec<(OsString, u64)> = dir.live.iter().map(|(n, i)| (n.clone(), *i)).collect();
        let gone: Vec<OsString> =
            dir.durable.iter().filter(|(n, i)| dir.live.get(*n) != Some(*i)).map(|(n, _)| n.clone()).collect();
        for name in gone {
            self.drop_durable(ino, &name)?;
        }
        for (name, child) in live {
            self.make_durable(ino, &name, child)?;
        }
        self.persist_name(ino)
    }

    /// Removes the durable entry `name` of `dir`.
    fn drop_durable(&mut self, dir: u64, name: &OsStr) -> io::Result<()> {
        if let Some(old) = self.dir_mut(dir)?.durable.remove(name) {
            if let Some(inode) = self.inodes.get_mut(&old)
                && inode.durable_parent.as_ref().is_some_and(|(d, n)| *d == dir && n == name)
            {
                inode.durable_parent = None;
            }
            self.collect(old)?;
        }
        Ok(())
    }

    /// Makes `dir/name -> ino` durable, dropping the old durable name of
    /// `ino` (a rename is atomic) and what `dir/name` named before.
    fn make_durable(&mut self, dir: u64, name: &OsStr, ino: u64) -> io::Result<()> {
        let target = (dir, name.to_os_string());
        let current = self.inode(ino)?.durable_parent.clone();
        if current.as_ref() == Some(&target) {
            return Ok(());
        }
        if let Some((old_dir, old_name)) = current {
            self.dir_mut(old_dir)?.durable.remove(&old_name);
        }
        self.drop_durable(dir, name)?;
        self.dir_mut(dir)?.durable.insert(name.to_os_string(), ino);
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.durable_parent = Some(target);
        }
        Ok(())
    }

    /// Makes the live name of `ino` and of each directory above it durable.
    fn persist_name(&mut self, ino: u64) -> io::Result<()> {
        let mut at = ino;
        while let Some((parent, name)) = self.inodes.get(&at).and_then(|i| i.parent.clone()) {
            self.make_durable(parent, &name, at)?;
            at = parent;
        }
        Ok(())
    }

    /// Statistics of the backing file system.
    pub fn statfs(&self) -> io::Result<libc::statvfs> {
        let path = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(self.root.as_os_str()))
            .map_err(|_| errno(libc::EINVAL))?;
        // SAFETY: statvfs(2) fills the zeroed struct we own from a valid C string.
        unsafe {
            let mut st: libc::statvfs = std::mem::zeroed();
            if libc::statvfs(path.as_ptr(), &mut st) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(st)
        }
    }

    /// Sets the permission bits of `ino`.
    pub fn chmod(&self, ino: u64, mode: u32) -> io::Result<()> {
        fs::set_permissions(self.path(ino), fs::Permissions::from_mode(mode & 0o7777))
    }

    /// Every inode reachable from the root through durable entries, with
    /// its durable path (relative to the root), parents before children.
    fn durable_tree(&self) -> Vec<(u64, PathBuf)> {
        let mut out = Vec::new();
        let mut queue = VecDeque::from([(ROOT, PathBuf::new())]);
        while let Some((ino, path)) = queue.pop_front() {
            if let Some(Inode { body: Body::Dir(d), .. }) = self.inodes.get(&ino) {
                for (name, child) in &d.durable {
                    queue.push_back((*child, path.join(name)));
                }
            }
            out.push((ino, path));
        }
        out
    }

    /// The power cut: turns the backing directory into what was durable.
    /// The mount must be gone (nothing may use the backing directory).
    pub fn power_cut(mut self) -> io::Result<CutReport> {
        let mut report = CutReport::default();
        self.handles.clear();
        let tree = self.durable_tree();
        let reachable: std::collections::HashSet<u64> = tree.iter().map(|(i, _)| *i).collect();
        report.inodes_lost = self.inodes.keys().filter(|i| !reachable.contains(i)).count();

        // Data first, where each file is now.
        for (ino, tree_path) in &tree {
            let path = self.path(*ino);
            let Some(Inode { body: Body::File(state), parent, durable_parent }) = self.inodes.get(ino) else {
                continue;
            };
            if parent != durable_parent {
                report.names_restored += 1;
            }
            let len = fs::symlink_metadata(&path)?.len();
            if state.undo.is_empty() && len == state.synced_size {
                continue;
            }
            report.files_reverted += 1;
            report.bytes_dropped += len.saturating_sub(state.synced_size);
            report.reverted.push((tree_path.clone(), len.saturating_sub(state.synced_size)));
            let file = OpenOptions::new().write(true).open(&path)?;
            for (off, bytes) in &state.undo {
                file.write_all_at(bytes, *off)?;
            }
            file.set_len(state.synced_size)?;
        }

        // Then the names: every durable inode to the stage (deepest first,
        // so that a directory moves only after what it holds), everything
        // else deleted, and the durable tree rebuilt from the stage.
        let stage = self.root.join(STAGE);
        fs::DirBuilder::new().mode(0o700).create(&stage)?;
        let mut moves: Vec<(usize, u64, PathBuf)> = tree
            .iter()
            .filter(|(ino, _)| *ino != ROOT)
            .map(|(ino, _)| {
                let p = self.path(*ino);
                (p.components().count(), *ino, p)
            })
            .collect();
        moves.sort_by_key(|m| std::cmp::Reverse(m.0));
        for (_, ino, from) in &moves {
            fs::rename(from, stage.join(ino.to_string()))?;
        }
        for entry in fs::read_dir(&self.root)? {
            let entry = entry?;
            if entry.file_name() != STAGE {
                remove_any(&entry.path())?;
            }
        }
        for (_, ino, _) in &moves {
            let staged = stage.join(ino.to_string());
            if fs::symlink_metadata(&staged)?.is_dir() {
                for leftover in fs::read_dir(&staged)? {
                    remove_any(&leftover?.path())?;
                }
            }
        }
        for (ino, path) in &tree {
            if *ino != ROOT {
                fs::rename(stage.join(ino.to_string()), self.root.join(path))?;
            }
        }
        fs::remove_dir(&stage)?;
        self.inodes.clear();
        Ok(report)
    }

    /// A clean unmount: the live tree stays as it is (like a shutdown that
    /// writes everything back); unlinked inodes are deleted.
    pub fn shut_down(mut self) -> io::Result<()> {
        self.handles.clear();
        let graveyard = self.root.join(GRAVEYARD);
        if graveyard.exists() {
            fs::remove_dir_all(graveyard)?;
        }
        Ok(())
    }
}

fn remove_any(path: &Path) -> io::Result<()> {
    if fs::symlink_metadata(path)?.is_dir() { fs::remove_dir_all(path) } else { fs::remove_file(path) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(root: &Path, rel: &str) -> Option<String> {
        fs::read_to_string(root.join(rel)).ok()
    }

    /// A backing directory holding `pre` ("synced at mount") and the model over it.
    fn setup() -> (tempfile::TempDir, Model) {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::write(dir.path().join("pre"), "0123456789").expect("pre");
        let model = Model::load(dir.path()).expect("load");
        (dir, model)
    }

    fn write_file(m: &mut Model, parent: u64, name: &str, data: &[u8], sync: bool) -> u64 {
        let (ino, fh) = m.create(parent, OsStr::new(name), 0o644).expect("create");
        m.write(fh, 0, data).expect("write");
        if sync {
            m.fsync(ino).expect("fsync");
        }
        m.release(fh).expect("release");
        ino
    }

    #[test]
    fn unsynced_writes_are_lost_and_synced_ones_kept() {
        let (dir, mut m) = setup();
        write_file(&mut m, ROOT, "new-unsynced", b"lost", false);
        write_file(&mut m, ROOT, "new-synced", b"kept", true);
        let pre = m.lookup(ROOT, OsStr::new("pre")).expect("pre");
        let fh = m.open(pre).expect("open");
        m.write(fh, 2, b"AB").expect("write");
        m.write(fh, 8, b"CDEFG").expect("write past the end");
        assert_eq!(read(dir.path(), "pre").as_deref(), Some("01AB4567CDEFG"));
        let report = m.power_cut().expect("cut");
        assert_eq!(read(dir.path(), "new-unsynced"), None);
        assert_eq!(read(dir.path(), "new-synced").as_deref(), Some("kept"));
        assert_eq!(read(dir.path(), "pre").as_deref(), Some("0123456789"));
        assert_eq!(report.inodes_lost, 1);
        assert_eq!(report.files_reverted, 1);
        assert_eq!(report.bytes_dropped, 3);
        assert!(!dir.path().join(GRAVEYARD).exists() && !dir.path().join(STAGE).exists());
    }

    #[test]
    fn a_sync_keeps_what_was_written_before_it_only() {
        let (dir, mut m) = setup();
        let pre = m.lookup(ROOT, OsStr::new("pre")).expect("pre");
        let fh = m.open(pre).expect("open");
        m.write(fh, 0, b"abc").expect("write");
        m.fsync(pre).expect("fsync");
        m.write(fh, 1, b"XXXXXXXXXXXXXXX").expect("overwrite and extend");
        m.truncate(pre, Some(fh), 2).expect("truncate");
        m.write(fh, 5, b"Y").expect("write after a hole");
        m.power_cut().expect("cut");
        assert_eq!(read(dir.path(), "pre").as_deref(), Some("abc3456789"));
    }

    #[test]
    fn a_truncation_never_synced_is_undone() {
        let (dir, mut m) = setup();
        let pre = m.lookup(ROOT, OsStr::new("pre")).expect("pre");
        m.truncate(pre, None, 0).expect("truncate");
        let fh = m.open(pre).expect("open");
        m.write(fh, 0, b"new").expect("write");
        m.power_cut().expect("cut");
        assert_eq!(read(dir.path(), "pre").as_deref(), Some("0123456789"));
    }

    #[test]
    fn a_rename_over_a_file_needs_a_directory_sync() {
        // The pattern of RocksDB's CURRENT: write a temporary file, sync it,
        // rename it over the old one, sync the directory.
        for dir_synced in [false, true] {
            let (dir, mut m) = setup();
            write_file(&mut m, ROOT, "pre.tmp", b"replacement", true);
            m.rename(ROOT, OsStr::new("pre.tmp"), ROOT, OsStr::new("pre"), false).expect("rename");
            if dir_synced {
                m.fsyncdir(ROOT).expect("fsyncdir");
            }
            assert_eq!(read(dir.path(), "pre").as_deref(), Some("replacement"));
            m.power_cut().expect("cut");
            if dir_synced {
                assert_eq!(read(dir.path(), "pre").as_deref(), Some("replacement"));
                assert_eq!(read(dir.path(), "pre.tmp"), None);
            } else {
                assert_eq!(read(dir.path(), "pre").as_deref(), Some("0123456789"));
                assert_eq!(read(dir.path(), "pre.tmp").as_deref(), Some("replacement"));
            }
        }
    }

    #[test]
    fn syncing_a_renamed_file_makes_its_new_name_durable_and_drops_the_old() {
        let (dir, mut m) = setup();
        let pre = m.lookup(ROOT, OsStr::new("pre")).expect("pre");
        m.rename(ROOT, OsStr::new("pre"), ROOT, OsStr::new("moved"), false).expect("rename");
        m.fsync(pre).expect("fsync");
        m.power_cut().expect("cut");
        assert_eq!(read(dir.path(), "pre"), None);
        assert_eq!(read(dir.path(), "moved").as_deref(), Some("0123456789"));
    }

    #[test]
    fn an_unlink_without_a_directory_sync_comes_back_with_its_synced_data() {
        let (dir, mut m) = setup();
        write_file(&mut m, ROOT, "log", b"synced", true);
        let log = m.lookup(ROOT, OsStr::new("log")).expect("log");
        let fh = m.open(log).expect("open");
        m.write(fh, 6, b" and not").expect("append");
        m.release(fh).expect("release");
        m.unlink(ROOT, OsStr::new("log")).expect("unlink");
        m.unlink(ROOT, OsStr::new("pre")).expect("unlink");
        assert_eq!(read(dir.path(), "log"), None);
        m.fsyncdir(ROOT).expect("fsyncdir");
        // After the directory sync, "pre" is gone for good; "log" too.
        let (dir2, mut m2) = setup();
        write_file(&mut m2, ROOT, "log", b"synced", true);
        m2.unlink(ROOT, OsStr::new("log")).expect("unlink");
        m2.power_cut().expect("cut");
        assert_eq!(read(dir2.path(), "log").as_deref(), Some("synced"));
        m.power_cut().expect("cut");
        assert_eq!(read(dir.path(), "log"), None);
        assert_eq!(read(dir.path(), "pre"), None);
    }

    #[test]
    fn new_directories_and_their_files_vanish_unless_something_in_them_was_synced() {
        let (dir, mut m) = setup();
        let lost = m.mkdir(ROOT, OsStr::new("lost"), 0o755).expect("mkdir");
        write_file(&mut m, lost, "x", b"x", false);
        let kept = m.mkdir(ROOT, OsStr::new("kept"), 0o755).expect("mkdir");
        let sub = m.mkdir(kept, OsStr::new("sub"), 0o755).expect("mkdir");
        write_file(&mut m, sub, "y", b"y", true);
        write_file(&mut m, sub, "z", b"z", false);
        let synced_dir = m.mkdir(ROOT, OsStr::new("empty-synced"), 0o755).expect("mkdir");
        m.fsyncdir(synced_dir).expect("fsyncdir");
        m.power_cut().expect("cut");
        assert!(!dir.path().join("lost").exists());
        assert_eq!(read(dir.path(), "kept/sub/y").as_deref(), Some("y"));
        assert!(!dir.path().join("kept/sub/z").exists());
        assert!(dir.path().join("empty-synced").is_dir());
    }

    #[test]
    fn a_file_created_in_a_synced_directory_but_never_synced_is_empty() {
        let (dir, mut m) = setup();
        write_file(&mut m, ROOT, "named", b"data", false);
        m.fsyncdir(ROOT).expect("fsyncdir");
        m.power_cut().expect("cut");
        assert_eq!(read(dir.path(), "named").as_deref(), Some(""));
    }

    #[test]
    fn a_clean_shutdown_keeps_everything_and_deletes_the_graveyard() {
        let (dir, mut m) = setup();
        write_file(&mut m, ROOT, "unsynced", b"kept", false);
        m.unlink(ROOT, OsStr::new("pre")).expect("unlink");
        m.shut_down().expect("shut down");
        assert_eq!(read(dir.path(), "unsynced").as_deref(), Some("kept"));
        assert_eq!(read(dir.path(), "pre"), None);
        assert!(!dir.path().join(GRAVEYARD).exists());
    }
}
