//! lazyfs: a FUSE file system that loses what was not synced when the power
//! is cut, for testing what a node keeps through a power loss.
//!
//! `kill -9` keeps the page cache: whatever a process wrote survives it, so
//! a missing `fsync` is invisible to a crash test. lazyfs (named after the
//! tool Jepsen uses for the same purpose) is mounted over a node's data
//! directory, passes every operation through to a backing directory, and
//! remembers what was made durable ([`model`] says exactly what, per kind of
//! change). A power cut (`SIGUSR1` to the `bazar-lazyfs` process, once the
//! programs using the mount are dead) unmounts it and turns the backing
//! directory into what a disk would hold after losing power: unsynced data
//! and names are gone. The process then exits; mounting a new one over the
//! same backing directory is "the machine boots again". `SIGTERM` or
//! `SIGINT` unmount cleanly, keeping everything (a clean shutdown flushes).
//!
//! [`LazyFsProc`] runs the binary for a test harness, and always unmounts
//! and stops it, also when the test fails.

pub mod model;

use std::ffi::OsStr;
use std::fs::Metadata;
use std::io::{self, Write as _};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use model::{Kind, Model};

/// Set to `1` to let a power-loss test pass without running when this host
/// cannot mount FUSE file systems (it says why).
pub const ALLOW_SKIP: &str = "BAZAR_SKIP_POWERLOSS";

/// How long the kernel may cache names and attributes. Every change goes
/// through this file system, so the caches never go stale while mounted; a
/// power cut unmounts, which drops them.
const TTL: Duration = Duration::from_secs(1);

/// The FUSE side: translates kernel requests into [`Model`] calls. The
/// model is `None` once the power was cut or the mount shut down: any
/// request still arriving then fails with `EIO`, as a dead disk would.
pub struct LazyFs {
    model: Arc<Mutex<Option<Model>>>,
}

impl LazyFs {
    /// A file system over `model`, shared with whoever will cut the power.
    pub fn new(model: Arc<Mutex<Option<Model>>>) -> LazyFs {
        LazyFs { model }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Model>> {
        // A panic inside a request left the model as it was between two
        // calls at worst: keep serving.
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the model; `EIO` once the power is off.
    fn with<T>(&self, f: impl FnOnce(&mut Model) -> io::Result<T>) -> Result<T, Errno> {
        match self.lock().as_mut() {
            Some(model) => f(model).map_err(Errno::from),
            None => Err(Errno::EIO),
        }
    }

    fn entry(&self, model: &Model, ino: u64) -> io::Result<FileAttr> {
        let kind = model.kind(ino)?;
        Ok(attr(ino, &model.metadata(ino)?, kind))
    }
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
    }
}

fn time(secs: i64, nanos: i64) -> SystemTime {
    let t = Duration::new(secs.unsigned_abs(), nanos.clamp(0, 999_999_999) as u32);
    if secs >= 0 { UNIX_EPOCH + t } else { UNIX_EPOCH - t }
}

fn attr(ino: u64, m: &Metadata, kind: Kind) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: m.len(),
        blocks: m.blocks(),
        atime: time(m.atime(), m.atime_nsec()),
        mtime: time(m.mtime(), m.mtime_nsec()),
        ctime: time(m.ctime(), m.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind: file_type(kind),
        perm: (m.mode() & 0o7777) as u16,
        nlink: if kind == Kind::Dir { 2 } else { 1 },
        uid: m.uid(),
        gid: m.gid(),
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn c_path(path: &Path) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn timespec(t: Option<TimeOrNow>) -> libc::timespec {
    match t {
        None => libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
        Some(TimeOrNow::Now) => libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_NOW },
        Some(TimeOrNow::SpecificTime(t)) => {
            let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
            libc::timespec { tv_sec: d.as_secs() as libc::time_t, tv_nsec: d.subsec_nanos() as libc::c_long }
        }
    }
}

impl Filesystem for LazyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.with(|m| {
            let ino = m.lookup(parent.0, name)?;
            self.entry(m, ino)
        }) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.with(|m| self.entry(m, ino.0)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.with(|m| {
            let ino = ino.0;
            if let Some(size) = size {
                m.truncate(ino, fh.map(|f| f.0), size)?;
            }
            if let Some(mode) = mode {
                m.chmod(ino, mode)?;
            }
            if uid.is_some() || gid.is_some() {
                std::os::unix::fs::lchown(m.path(ino), uid, gid)?;
            }
            if atime.is_some() || mtime.is_some() {
                let path = c_path(&m.path(ino))?;
                let times = [timespec(atime), timespec(mtime)];
                // SAFETY: utimensat(2) with a valid C path and two timespecs we own.
                let rc = unsafe {
                    libc::utimensat(libc::AT_FDCWD, path.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW)
                };
                if rc != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            self.entry(m, ino)
        }) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.with(|m| m.readlink(ino.0)) {
            Ok(target) => reply.data(std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str())),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(Errno::EPERM);
        }
        match self.with(|m| {
            let (ino, fh) = m.create(parent.0, name, mode & !umask)?;
            m.release(fh)?;
            self.entry(m, ino)
        }) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        match self.with(|m| {
            let ino = m.mkdir(parent.0, name, mode & !umask)?;
            self.entry(m, ino)
        }) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.with(|m| m.unlink(parent.0, name)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.with(|m| m.rmdir(parent.0, name)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(&self, _req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        match self.with(|m| {
            let ino = m.symlink(parent.0, link_name, target)?;
            self.entry(m, ino)
        }) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
            return reply.error(Errno::EINVAL);
        }
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        match self.with(|m| m.rename(parent.0, name, newparent.0, newname, no_replace)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.with(|m| {
            let fh = m.open(ino.0)?;
            // The kernel turns O_TRUNC into a setattr unless told it handles
            // it; handle it anyway, in case.
            if flags.0 & libc::O_TRUNC != 0 {
                m.truncate(ino.0, Some(fh), 0)?;
            }
            Ok(fh)
        }) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.with(|m| m.read(fh.0, offset, size as usize)) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.with(|m| m.write(fh.0, offset, data)) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        // close(2) makes nothing durable.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        match self.with(|m| m.release(fh.0)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match self.with(|m| m.fsync(ino.0)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.with(|m| m.entries(ino.0).map(|_| ())) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let listing = self.with(|m| {
            let mut all = vec![
                (INodeNo(ino.0), FileType::Directory, OsStr::new(".").to_os_string()),
                (INodeNo(m.parent_of(ino.0)), FileType::Directory, OsStr::new("..").to_os_string()),
            ];
            all.extend(m.entries(ino.0)?.into_iter().map(|(name, i, k)| (INodeNo(i), file_type(k), name)));
            Ok(all)
        });
        match listing {
            Ok(all) => {
                for (i, (child, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
                    if reply.add(child, (i + 1) as u64, kind, &name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match self.with(|m| m.fsyncdir(ino.0)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.with(|m| m.statfs()) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        match self.with(|m| m.kind(ino.0)) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match self.with(|m| {
            let (ino, fh) = m.create(parent.0, name, mode & !umask)?;
            Ok((self.entry(m, ino)?, fh))
        }) {
            Ok((a, fh)) => reply.created(&TTL, &a, Generation(0), FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        match self.with(|m| m.fallocate(fh.0, offset, length, mode)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}

/// Why power cuts cannot be simulated on this host, if they cannot: FUSE
/// mounts need root (or a setuid `fusermount3`) and `/dev/fuse`.
pub fn available() -> Result<(), String> {
    // SAFETY: geteuid(2) reads the effective user id and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("power-loss tests mount a FUSE file system, which needs root".into());
    }
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/fuse") {
        return Err(format!("power-loss tests need /dev/fuse: {e}"));
    }
    Ok(())
}

/// For a test that needs power cuts: `true` when this host can mount
/// lazyfs; otherwise `false` after saying why if skipping was asked for
/// with [`ALLOW_SKIP`], and a panic (a failed test) if it was not.
pub fn required() -> bool {
    match available() {
        Ok(()) => true,
        Err(why) if std::env::var(ALLOW_SKIP).is_ok_and(|v| v == "1") => {
            eprintln!("SKIPPED (asked for with {ALLOW_SKIP}=1): {why}");
            false
        }
        Err(why) => panic!("cannot run a power-loss test: {why}; or set {ALLOW_SKIP}=1 to skip it"),
    }
}

/// Serves lazyfs over `backing` at `mountpoint` until a signal: `SIGUSR1`
/// cuts the power (returns what the cut undid), `SIGTERM` or `SIGINT`
/// unmount cleanly (returns `None`). Prints `mounted` on stdout once the
/// mount is in place. What the `bazar-lazyfs` binary runs.
pub fn serve(backing: &Path, mountpoint: &Path) -> io::Result<Option<model::CutReport>> {
    // Block the signals before any thread starts, so that every thread
    // inherits the mask and only sigwait below receives them.
    // SAFETY: plain signal-set manipulation on a set we own.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGUSR1, libc::SIGTERM, libc::SIGINT] {
            libc::sigaddset(&mut set, sig);
        }
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
        set
    };
    let shared = Arc::new(Mutex::new(Some(Model::load(backing)?)));
    let mut config = fuser::Config::default();
    config.mount_options = vec![fuser::MountOption::FSName("lazyfs".into()), fuser::MountOption::RW];
    config.n_threads = Some(2);
    let session = fuser::spawn_mount(LazyFs::new(shared.clone()), mountpoint, &config)?;
    println!("mounted {} over {}", mountpoint.display(), backing.display());
    io::stdout().flush()?;
    let mount_c = c_path(mountpoint)?;
    let sig = loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: sigwait(3) on the set blocked above, into an int we own.
        if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
            continue;
        }
        // Unmount first, so that nothing touches the backing directory
        // while it is rewritten. A mount still in use cannot be cut: say so
        // and keep serving (the harness kills the node first).
        // SAFETY: umount2(2) with a valid C path.
        if unsafe { libc::umount2(mount_c.as_ptr(), 0) } == 0 {
            break sig;
        }
        let e = io::Error::last_os_error();
        eprintln!("lazyfs: cannot unmount {} ({e}); still serving", mountpoint.display());
    };
    session.join()?;
    let model = shared.lock().unwrap_or_else(|e| e.into_inner()).take();
    let Some(model) = model else { return Ok(None) };
    if sig == libc::SIGUSR1 { model.power_cut().map(Some) } else { model.shut_down().map(|()| None) }
}

/// Whether `path` is a mount point now (per `/proc/self/mountinfo`).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let wanted = path.to_string_lossy().replace(' ', "\\040");
    info.lines().any(|l| l.split(' ').nth(4) == Some(wanted.as_str()))
}

/// Unmounts `path` lazily if it is still mounted (a lazyfs that died), with
/// `fusermount3 -u -z`, falling back to umount2(MNT_DETACH).
pub fn force_unmount(path: &Path) {
    if !is_mounted(path) {
        return;
    }
    let ok = Command::new("fusermount3")
        .args(["-u", "-z"])
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok && let Ok(c) = c_path(path) {
        // SAFETY: umount2(2) with a valid C path.
        unsafe {
            libc::umount2(c.as_ptr(), libc::MNT_DETACH);
        }
    }
}

/// A running `bazar-lazyfs` process mounted over a directory. Dropping it
/// stops it (`SIGTERM`, then `SIGKILL` by its pid) and unmounts whatever is
/// left, lazily if need be.
pub struct LazyFsProc {
    binary: PathBuf,
    backing: PathBuf,
    mountpoint: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl LazyFsProc {
    /// Mounts lazyfs (the `bazar-lazyfs` binary at `binary`) at
    /// `mountpoint` over `backing`, both created if missing, logging to
    /// `log`; returns once mounted.
    pub fn mount(binary: &Path, backing: &Path, mountpoint: &Path, log: &Path) -> io::Result<LazyFsProc> {
        std::fs::create_dir_all(backing)?;
        std::fs::create_dir_all(mountpoint)?;
        let mut p = LazyFsProc {
            binary: binary.to_path_buf(),
            backing: backing.canonicalize()?,
            // As /proc/self/mountinfo shows it.
            mountpoint: mountpoint.canonicalize()?,
            log: log.to_path_buf(),
            child: None,
        };
        p.start()?;
        Ok(p)
    }

    fn start(&mut self) -> io::Result<()> {
        force_unmount(&self.mountpoint);
        std::fs::create_dir_all(&self.backing)?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new(&self.binary)
            .arg("--backing")
            .arg(&self.backing)
            .arg(&self.mountpoint)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !is_mounted(&self.mountpoint) {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Err(io::Error::other(format!(
                    "bazar-lazyfs exited ({status}) before mounting {}; see {}",
                    self.mountpoint.display(),
                    self.log.display()
                )));
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "lazyfs not mounted at {} within 10 s",
                    self.mountpoint.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Where it is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Sends `sig` and waits (bounded) for the process to exit.
    fn stop_with(&mut self, sig: i32, timeout: Duration) -> io::Result<()> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        crate::signal(child.id(), sig);
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                force_unmount(&self.mountpoint);
                return Err(io::Error::other(format!("bazar-lazyfs did not exit within {timeout:?}")));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        force_unmount(&self.mountpoint);
        if !status.success() {
            return Err(io::Error::other(format!("bazar-lazyfs exited with {status}; see {}", self.log.display())));
        }
        Ok(())
    }

    /// Cuts the power: every write and name not synced is lost, and the
    /// mount goes away. The programs using it must be dead already.
    pub fn power_cut(&mut self) -> io::Result<()> {
        self.stop_with(libc::SIGUSR1, Duration::from_secs(30))
    }

    /// Powers the "machine" on again: mounts a fresh lazyfs over the
    /// backing directory as the cut left it. A no-op while mounted.
    pub fn power_on(&mut self) -> io::Result<()> {
        if let Some(child) = &mut self.child
            && child.try_wait()?.is_none()
        {
            return Ok(());
        }
        self.child = None;
        self.start()
    }

    /// Unmounts cleanly, keeping everything written.
    pub fn unmount(mut self) -> io::Result<()> {
        self.stop_with(libc::SIGTERM, Duration::from_secs(30))
    }
}

impl Drop for LazyFsProc {
    fn drop(&mut self) {
        let _ = self.stop_with(libc::SIGTERM, Duration::from_secs(10));
        force_unmount(&self.mountpoint);
    }
}
