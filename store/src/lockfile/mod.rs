//! Lock files shared with containers/storage: this module owns every `*.lock`
//! file of a store, the process-wide handle on each, the in-process
//! reader/writer exclusion, and the 64-byte "last writer" token inside.
//!
//! ```text
//! <graphroot>/storage.lock                      LockKind::Storage
//! <graphroot>/userns.lock                       LockKind::Userns
//! <graphroot>/overlay-layers/layers.lock        LockKind::Layers
//! <runroot>/overlay-layers/mountpoints.lock     LockKind::Mountpoints (nested in Layers)
//! <graphroot>/overlay-images/images.lock        LockKind::Images
//! <graphroot>/overlay-containers/containers.lock  LockKind::Containers
//! ```
//!
//! # Compatibility with containers/storage (`pkg/lockfile`)
//!
//! * The primitive is a classic POSIX record lock, `fcntl(F_SETLKW)` over the
//!   whole file, `F_RDLCK` for readers and `F_WRLCK` for writers. Not
//!   `flock(2)`: the two kinds do not exclude each other, so a flock would not
//!   keep podman out.
//! * POSIX locks belong to the process and are dropped when *any* descriptor
//!   of the file in this process is closed. So [`LockFile::open`] hands out one
//!   shared [`LockFile`] per canonical path, and the token is read and written
//!   with `pread`/`pwrite` on that same descriptor. Never open a lock file
//!   through another API while this process may hold a lock on it.
//! * Deviation: containers/storage opens the file at the first acquisition and
//!   closes it when its in-process count returns to zero. We keep the
//!   descriptor open for the life of the [`LockFile`]; with a single descriptor
//!   per path this changes nothing for other processes. (If the file is
//!   deleted and recreated meanwhile, we keep locking the old inode; nothing in
//!   containers/storage deletes lock files.)
//! * The file is empty until the first write, then exactly 64 bytes. Any other
//!   size means it is not a containers/storage lock file: [`LockError::OddSize`].
//!   Change detection compares bytes like upstream's `ModifiedSince` (an empty
//!   file seen empty before is unchanged; v1.43 calls it changed every time).
//!   The remembered token is per [`LockFile`], shared by all its threads.
//! * A blocked `F_SETLKW` that would close a cycle between processes fails
//!   with `EDEADLK` ([`LockError::Deadlock`]); containers/storage retries
//!   forever instead, so drop your other locks and retry.
//!
//! # Lock order
//!
//! containers/storage takes its locks in this order, and so must we, or a
//! podman running beside us can deadlock with us:
//!
//! `storage.lock` → `userns.lock` → `layers.lock` (with `mountpoints.lock`
//! nested inside) → `images.lock` → `containers.lock`.
//!
//! [`LockKind::order`] numbers them so callers can `debug_assert!` the order.
//!
//! Within one process a writer waits for current holders and new readers wait
//! for a waiting writer (like Go's `sync.RWMutex`), so a thread must not take
//! a second guard on a [`LockFile`] it already holds.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::DirBuilder;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{FlockOperation, Mode, OFlags};

use crate::confined::Dir;
use rustix::io::Errno;

/// Size of the last-writer token that containers/storage keeps in a lock file.
pub const TOKEN_LEN: usize = 64;

/// The on-disk token: `None` for an empty (never written) lock file.
pub type Token = Option<[u8; TOKEN_LEN]>;

/// How a lock file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// `O_RDWR`: shared and exclusive locks, token writes.
    ReadWrite,
    /// `O_RDONLY` (additional read-only stores): shared locks only.
    ReadOnly,
}

/// Errors from opening, locking and reading or writing lock files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// The lock file or its directory could not be created or opened.
    #[error("opening lock file {}", path.display())]
    Open {
        /// The lock file.
        path: PathBuf,
        /// What the kernel said.
        source: io::Error,
    },
    /// `fcntl` refused to take or release the lock.
    #[error("locking {}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// What the kernel said.
        source: io::Error,
    },
    /// The kernel found that waiting would deadlock with another process.
    #[error("waiting for {} would deadlock with another process", path.display())]
    Deadlock {
        /// The lock file.
        path: PathBuf,
    },
    /// Reading or writing the last-writer token failed.
    #[error("reading or writing the last-writer token of {}", path.display())]
    Token {
        /// The lock file.
        path: PathBuf,
        /// What the kernel said.
        source: io::Error,
    },
    /// The file is neither empty nor 64 bytes: not a containers/storage lock.
    #[error("{} is {size} bytes, not a containers/storage lock file (0 or 64 bytes)", path.display())]
    OddSize {
        /// The lock file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
    },
    /// A write lock was requested on a lock file opened read-only.
    #[error("{} is opened read-only and cannot be write-locked", path.display())]
    ReadOnly {
        /// The lock file.
        path: PathBuf,
    },
    /// This process already has the lock file open in the other mode.
    #[error("{} is already open in this process as {existing:?}", path.display())]
    ModeMismatch {
        /// The lock file.
        path: PathBuf,
        /// The mode it is open with.
        existing: LockMode,
    },
}

/// The lock files of a store, in containers/storage's acquisition order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LockKind {
    /// `<graphroot>/storage.lock`: graph driver, mount vs. shutdown.
    Storage,
    /// `<graphroot>/userns.lock`: allocation of host ID ranges.
    Userns,
    /// `<graphroot>/overlay-layers/layers.lock`: layers.json and layer dirs.
    Layers,
    /// `<runroot>/overlay-layers/mountpoints.lock`: mountpoints.json.
    Mountpoints,
    /// `<graphroot>/overlay-images/images.lock`: images.json.
    Images,
    /// `<graphroot>/overlay-containers/containers.lock`: containers.json.
    Containers,
}

impl LockKind {
    /// Rank in the lock order: take a lock only while holding lower ranks.
    pub const fn order(self) -> u8 {
        self as u8
    }

    /// The file name of this lock inside its directory.
    pub const fn file_name(self) -> &'static str {
        match self {
            LockKind::Storage => "storage.lock",
            LockKind::Userns => "userns.lock",
            LockKind::Layers => "layers.lock",
            LockKind::Mountpoints => "mountpoints.lock",
            LockKind::Images => "images.lock",
            LockKind::Containers => "containers.lock",
        }
    }
}

/// Who holds the lock inside this process.
#[derive(Debug, Default)]
struct Holders {
    readers: usize,
    writer: bool,
    writers_waiting: usize,
    /// The first reader is taking the `fcntl` lock; later readers wait for it.
    acquiring: bool,
}

/// One lock file, opened once per process; see the [module docs](self).
#[derive(Debug)]
pub struct LockFile {
    path: PathBuf,
    mode: LockMode,
    /// `Some` until [`Drop`], which closes it under the registry lock.
    fd: Option<OwnedFd>,
    holders: Mutex<Holders>,
    changed: Condvar,
    /// The token last read or written by this process; `None`: never looked.
    last_seen: Mutex<Option<Token>>,
}

/// Process-wide map from canonical path to the open [`LockFile`].
struct Registry {
    files: Mutex<HashMap<PathBuf, Weak<LockFile>>>,
    /// Signalled when a [`LockFile`] has closed its descriptor.
    closed: Condvar,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Registry {
        files: Mutex::new(HashMap::new()),
        closed: Condvar::new(),
    })
}

fn lock_ignoring_poison<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LockFile {
    /// Opens (creating it 0644, and missing parent directories 0700, like
    /// containers/storage does in both modes) the lock file at `path`, or
    /// returns the instance this process already has for the same canonical
    /// path.
    ///
    /// Fails with [`LockError::ModeMismatch`] if it is already open in the other
    /// mode, and with [`LockError::OddSize`] if the file is not 0 or 64 bytes.
    ///
    /// # Locking
    ///
    /// Takes no file lock.
    pub fn open(path: &Path, mode: LockMode) -> Result<Arc<LockFile>, LockError> {
        let open_err = |source| LockError::Open {
            path: path.to_path_buf(),
            source,
        };
        let name = path
            .file_name()
            .ok_or_else(|| open_err(io::Error::from(io::ErrorKind::InvalidInput)))?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if !parent.exists() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(open_err)?;
        }
        let dir = Dir::open(parent).map_err(open_err)?;
        Self::open_in(&dir, name, mode)
    }

    /// [`LockFile::open`] of the lock file `name` in the open directory
    /// `dir` (inside a store: reached through [`Dir`], never through a
    /// symlink). The lock file itself must be a regular file, not a symlink.
    ///
    /// # Locking
    ///
    /// Takes no file lock.
    pub fn open_in(dir: &Dir, name: &OsStr, mode: LockMode) -> Result<Arc<LockFile>, LockError> {
        let shown = dir.display(name);
        let real_dir = std::fs::read_link(dir.proc_path()).map_err(|source| LockError::Open {
            path: shown.clone(),
            source,
        })?;
        let key = real_dir.join(name);
        Self::open_keyed(key, mode, || open_lock_fd(dir, name, &shown, mode))
    }

    fn open_keyed(
        key: PathBuf,
        mode: LockMode,
        open_fd: impl FnOnce() -> Result<OwnedFd, LockError>,
    ) -> Result<Arc<LockFile>, LockError> {
        let reg = registry();
        let mut files = lock_ignoring_poison(&reg.files);
        let existing = loop {
            match files.get(&key).map(Weak::upgrade) {
                None => break None,
                Some(Some(found)) => break Some(found),
                // Being dropped: wait until its descriptor is closed, or closing
                // it would release the locks taken through our new descriptor.
                Some(None) => {
                    files = reg
                        .closed
                        .wait(files)
                        .unwrap_or_else(PoisonError::into_inner)
                }
            }
        };
        if let Some(found) = existing {
            // The guard must go first: dropping `found` may need the registry.
            drop(files);
            if found.mode != mode {
                return Err(LockError::ModeMismatch {
                    path: key,
                    existing: found.mode,
                });
            }
            return Ok(found);
        }
        let fd = open_fd()?;
        let lock = Arc::new(LockFile {
            path: key.clone(),
            mode,
            fd: Some(fd),
            holders: Mutex::new(Holders::default()),
            changed: Condvar::new(),
            last_seen: Mutex::new(None),
        });
        files.insert(key, Arc::downgrade(&lock));
        Ok(lock)
    }

    /// The canonical path of the lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The mode the lock file was opened with.
    pub fn mode(&self) -> LockMode {
        self.mode
    }

    /// Takes a shared lock, waiting for writers in this and other processes.
    ///
    /// # Locking
    ///
    /// This lock file, shared (`F_RDLCK`), until the guard is dropped.
    pub fn read(&self) -> Result<ReadGuard<'_>, LockError> {
        self.lock_shared(true)?;
        Ok(ReadGuard { lock: self })
    }

    /// Takes a shared lock if that is possible without waiting.
    ///
    /// Returns `None` if a thread of this process or another process holds
    /// (or, in this process, waits for) the exclusive lock.
    ///
    /// # Locking
    ///
    /// This lock file, shared (`F_RDLCK`, non-blocking), until the guard is
    /// dropped.
    pub fn try_read(&self) -> Result<Option<ReadGuard<'_>>, LockError> {
        // Not `then_some`: it would build, and so drop and release, a guard.
        let taken = self.lock_shared(false)?;
        Ok(taken.then(|| ReadGuard { lock: self }))
    }

    /// Takes the exclusive lock, waiting for all other holders.
    ///
    /// # Locking
    ///
    /// This lock file, exclusive (`F_WRLCK`), until the guard is dropped.
    pub fn write(&self) -> Result<WriteGuard<'_>, LockError> {
        self.lock_exclusive(true)?;
        Ok(WriteGuard { lock: self })
    }

    /// Takes the exclusive lock if that is possible without waiting.
    ///
    /// Returns `None` if any thread of this process or another process holds it.
    ///
    /// # Locking
    ///
    /// This lock file, exclusive (`F_WRLCK`, non-blocking), until the guard is
    /// dropped.
    pub fn try_write(&self) -> Result<Option<WriteGuard<'_>>, LockError> {
        let taken = self.lock_exclusive(false)?;
        Ok(taken.then(|| WriteGuard { lock: self }))
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.fd
            .as_ref()
            .expect("lock fd is open until drop")
            .as_fd()
    }

    fn holders(&self) -> MutexGuard<'_, Holders> {
        lock_ignoring_poison(&self.holders)
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, Holders>) -> MutexGuard<'a, Holders> {
        self.changed
            .wait(guard)
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// In-process shared acquisition; the first reader takes the file lock.
    fn lock_shared(&self, block: bool) -> Result<bool, LockError> {
        let mut h = self.holders();
        while h.writer || h.writers_waiting > 0 || h.acquiring {
            if !block {
                return Ok(false);
            }
            h = self.wait(h);
        }
        h.readers += 1;
        if h.readers > 1 {
            return Ok(true);
        }
        h.acquiring = true;
        drop(h);
        let op = if block {
            FlockOperation::LockShared
        } else {
            FlockOperation::NonBlockingLockShared
        };
        let res = self.fcntl(op);
        let mut h = self.holders();
        h.acquiring = false;
        if !matches!(res, Ok(true)) {
            h.readers -= 1;
        }
        self.changed.notify_all();
        res
    }

    /// In-process exclusive acquisition, then the file lock.
    fn lock_exclusive(&self, block: bool) -> Result<bool, LockError> {
        if self.mode == LockMode::ReadOnly {
            return Err(LockError::ReadOnly {
                path: self.path.clone(),
            });
        }
        let mut h = self.holders();
        if h.writer || h.readers > 0 {
            if !block {
                return Ok(false);
            }
            h.writers_waiting += 1;
            while h.writer || h.readers > 0 {
                h = self.wait(h);
            }
            h.writers_waiting -= 1;
        }
        h.writer = true;
        drop(h);
        let op = if block {
            FlockOperation::LockExclusive
        } else {
            FlockOperation::NonBlockingLockExclusive
        };
        let res = self.fcntl(op);
        if !matches!(res, Ok(true)) {
            self.holders().writer = false;
            self.changed.notify_all();
        }
        res
    }

    /// `fcntl(F_SETLK[W])` on our descriptor, retried when interrupted.
    fn fcntl_retrying(&self, op: FlockOperation) -> rustix::io::Result<()> {
        loop {
            match rustix::fs::fcntl_lock(self.fd(), op) {
                Err(Errno::INTR) => continue,
                res => return res,
            }
        }
    }

    /// Takes the process-level lock; `Ok(false)` if a non-blocking try failed.
    fn fcntl(&self, op: FlockOperation) -> Result<bool, LockError> {
        let nonblocking = matches!(
            op,
            FlockOperation::NonBlockingLockShared | FlockOperation::NonBlockingLockExclusive
        );
        let path = || self.path.clone();
        let asked = std::time::Instant::now();
        match self.fcntl_retrying(op) {
            Ok(()) => {
                TAKEN.with(|n| n.set(n.get() + 1));
                // What benchmarks of parallel starts add up.
                tracing::trace!(
                    lock = %self.path.display(),
                    waited_us = asked.elapsed().as_micros() as u64,
                    "lock taken"
                );
                Ok(true)
            }
            Err(Errno::AGAIN | Errno::ACCESS) if nonblocking => Ok(false),
            Err(Errno::DEADLK) => Err(LockError::Deadlock { path: path() }),
            Err(e) => Err(LockError::Lock {
                path: path(),
                source: e.into(),
            }),
        }
    }

    /// Releases the process-level lock. Called with `holders` locked, so that
    /// no other thread can take the file lock before we drop ours.
    fn unlock_fd(&self) {
        if let Err(e) = self.fcntl_retrying(FlockOperation::Unlock) {
            tracing::warn!(path = %self.path.display(), error = %e, "unlocking lock file failed");
        }
    }

    fn unlock_shared(&self) {
        let mut h = self.holders();
        h.readers -= 1;
        if h.readers == 0 {
            self.unlock_fd();
        }
        self.changed.notify_all();
    }

    fn unlock_exclusive(&self) {
        let mut h = self.holders();
        h.writer = false;
        self.unlock_fd();
        self.changed.notify_all();
    }

    /// Reads the on-disk token with `pread` on our descriptor.
    fn read_token(&self) -> Result<Token, LockError> {
        let mut buf = [0u8; TOKEN_LEN + 1];
        let mut n = 0;
        while n < buf.len() {
            match rustix::io::pread(self.fd(), &mut buf[n..], n as u64) {
                Ok(0) => break,
                Ok(got) => n += got,
                Err(Errno::INTR) => continue,
                Err(e) => return Err(self.token_error(e.into())),
            }
        }
        match n {
            0 => Ok(None),
            TOKEN_LEN => {
                let mut token = [0u8; TOKEN_LEN];
                token.copy_from_slice(&buf[..TOKEN_LEN]);
                Ok(Some(token))
            }
            _ => {
                let size = rustix::fs::fstat(self.fd()).map_or(n as u64, |st| st.st_size as u64);
                Err(LockError::OddSize {
                    path: self.path.clone(),
                    size,
                })
            }
        }
    }

    fn modified(&self) -> Result<bool, LockError> {
        let current = self.read_token()?;
        let mut seen = lock_ignoring_poison(&self.last_seen);
        let modified = seen.as_ref() != Some(&current);
        *seen = Some(current);
        Ok(modified)
    }

    fn record_write(&self) -> Result<(), LockError> {
        let token = new_token().map_err(|e| self.token_error(e))?;
        let written = loop {
            match rustix::io::pwrite(self.fd(), &token, 0) {
                Err(Errno::INTR) => continue,
                res => break res.map_err(|e| self.token_error(e.into()))?,
            }
        };
        if written != TOKEN_LEN {
            let msg = format!("short write: {written} of {TOKEN_LEN} bytes");
            return Err(self.token_error(io::Error::new(io::ErrorKind::WriteZero, msg)));
        }
        *lock_ignoring_poison(&self.last_seen) = Some(Some(token));
        Ok(())
    }

    fn token_error(&self, source: io::Error) -> LockError {
        LockError::Token {
            path: self.path.clone(),
            source,
        }
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        let reg = registry();
        let mut files = lock_ignoring_poison(&reg.files);
        let me: *const LockFile = self;
        if files.get(&self.path).is_some_and(|w| w.as_ptr() == me) {
            files.remove(&self.path);
        }
        // Close while holding the registry, then wake a waiting `open`.
        drop(self.fd.take());
        reg.closed.notify_all();
    }
}

/// A shared lock on a [`LockFile`], released on drop.
#[derive(Debug)]
#[must_use = "the lock is released when the guard is dropped"]
pub struct ReadGuard<'a> {
    lock: &'a LockFile,
}

/// The exclusive lock on a [`LockFile`], released on drop.
#[derive(Debug)]
#[must_use = "the lock is released when the guard is dropped"]
pub struct WriteGuard<'a> {
    lock: &'a LockFile,
}

macro_rules! guard_common {
    ($guard:ident) => {
        impl $guard<'_> {
            /// The locked file.
            pub fn lock_file(&self) -> &LockFile {
                self.lock
            }

            /// Whether another writer changed the token since this process last
            /// looked at or wrote it; always `true` the first time. Remembers
            /// the current token.
            ///
            /// # Locking
            ///
            /// Needs the lock this guard holds; takes no other lock.
            pub fn modified(&self) -> Result<bool, LockError> {
                self.lock.modified()
            }

            /// The token now on disk (`None`: empty file), without remembering it.
            ///
            /// # Locking
            ///
            /// Needs the lock this guard holds; takes no other lock.
            pub fn token(&self) -> Result<Token, LockError> {
                self.lock.read_token()
            }
        }
    };
}

guard_common!(ReadGuard);
guard_common!(WriteGuard);

impl WriteGuard<'_> {
    /// Writes a fresh 64-byte token at offset 0 so that every other process
    /// (podman included) reloads the data this lock protects, and remembers
    /// it so that our own [`modified`](Self::modified) does not report it.
    ///
    /// # Locking
    ///
    /// Needs the exclusive lock this guard holds; takes no other lock.
    pub fn record_write(&self) -> Result<(), LockError> {
        self.lock.record_write()
    }
}

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
        self.lock.unlock_shared();
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        self.lock.unlock_exclusive();
    }
}

/// A new token: LE unix nanos, LE per-process counter, LE pid, 44 random bytes.
fn new_token() -> io::Result<[u8; TOKEN_LEN]> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed) + 1;
    let mut token = [0u8; TOKEN_LEN];
    token[0..8].copy_from_slice(&nanos.to_le_bytes());
    token[8..16].copy_from_slice(&count.to_le_bytes());
    token[16..20].copy_from_slice(&std::process::id().to_le_bytes());
    fill_random(&mut token[20..])?;
    Ok(token)
}

/// Fills `buf` from `getrandom(2)`.
fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// `openat(dir, name, O_RDWR|O_CREAT|O_NOFOLLOW|O_CLOEXEC, 0644)`
/// (`O_RDONLY` for read-only), then the type and size checks.
fn open_lock_fd(
    dir: &Dir,
    name: &OsStr,
    shown: &Path,
    mode: LockMode,
) -> Result<OwnedFd, LockError> {
    let access = match mode {
        LockMode::ReadWrite => OFlags::RDWR,
        LockMode::ReadOnly => OFlags::RDONLY,
    };
    let open_err = |source: io::Error| LockError::Open {
        path: shown.to_path_buf(),
        source,
    };
    let fd = rustix::fs::openat(
        dir.fd(),
        name,
        // NONBLOCK: a FIFO planted in place of a lock file must not hang
        // the open; it is refused below.
        access | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::from_raw_mode(0o644),
    )
    .map_err(|e| match e {
        Errno::LOOP => open_err(io::Error::new(
            io::ErrorKind::InvalidData,
            "it is a symlink; refusing to follow it",
        )),
        e => open_err(e.into()),
    })?;
    let st = rustix::fs::fstat(&fd).map_err(|e| open_err(e.into()))?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(open_err(io::Error::new(
            io::ErrorKind::InvalidData,
            "it is not a regular file",
        )));
    }
    if st.st_nlink != 1 {
        // A hard link to a file elsewhere: the token written on every
        // write lock would land in that file.
        return Err(open_err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "it has {} hard links; a lock file has exactly one",
                st.st_nlink
            ),
        )));
    }
    rustix::fs::fcntl_setfl(&fd, OFlags::empty()).map_err(|e| open_err(e.into()))?;
    let size = st.st_size as u64;
    if size != 0 && size != TOKEN_LEN as u64 {
        return Err(LockError::OddSize {
            path: shown.to_path_buf(),
            size,
        });
    }
    Ok(fd)
}

thread_local! {
    static TAKEN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many file locks (`fcntl` read or write locks, each acquisition once)
/// this thread has taken since it started: for tests and benchmarks that
/// count what an operation locks.
pub fn locks_taken_on_this_thread() -> u64 {
    TAKEN.with(std::cell::Cell::get)
}

#[cfg(test)]
mod tests;
