//! Chown-by-maps: re-own every entry of a directory tree from one id
//! mapping to another, as containers/storage's `ChownPathByMaps` does when
//! it makes an ID-mapped template copy of a layer (spec §5.2), but
//! without its gaps.
//!
//! For each entry below the root (the root itself keeps its owner, as in Go):
//! - a multiply-linked file whose `(st_dev, st_ino)` was seen before is
//!   replaced by a hard link to the first path (overlay copy-up breaks hard
//!   links; the first path's chown already did the work);
//! - otherwise the owner goes through `to_container` (an unmappable pair is an
//!   error unless it is 0:0) and then `to_host` with Go's `ToHostOverflow`
//!   (unmappable container ids become the overflow ids);
//! - on a change: `lchown`, setuid/setgid restored (the chown clears them),
//!   `security.capability` restored, a v3 capability's `rootid` translated
//!   like a uid (Go keeps the stale one);
//! - `ACL_USER`/`ACL_GROUP` entries of `system.posix_acl_access` and
//!   `system.posix_acl_default` translated like owners (Go leaves them).
//!
//! Symlinks are `lchown`ed and never followed. Everything is relative to
//! directory fds (`openat(O_NOFOLLOW|O_DIRECTORY)`, `fchownat(AT_SYMLINK_NOFOLLOW)`,
//! xattrs through `/proc/self/fd/<dir>/<name>`), so no path in the tree can
//! lead outside it. Directories are processed by a pool of
//! 2 × `available_parallelism` threads sharing a queue of open directory fds.

mod entry;
mod error;
#[cfg(test)]
mod tests;
mod translate;

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

use rustix::fs::{Dir, Mode, OFlags, CWD};

pub use error::ChownError;
pub use translate::ChownMaps;

use entry::Ctx;

/// Queued directories beyond which a worker descends into a subdirectory
/// itself instead of queueing it, so open fds stay bounded (podman's
/// default `nofile` is 1024).
const MAX_QUEUED_DIRS: usize = 128;
/// Worker stack size: inline descent recurses once per directory level.
const WORKER_STACK: usize = 8 << 20;

/// What a chown-by-maps run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChownReport {
    /// Entries visited below the root.
    pub entries: u64,
    /// Entries written: owner changed, xattrs rewritten, or re-linked.
    pub changed: u64,
}

/// Re-own the tree at `root` from `maps.to_container` to `maps.to_host`
/// (see the module docs). Stops at the first error, which names the entry;
/// entries already processed stay changed.
pub fn chown_by_maps(root: &Path, maps: &ChownMaps) -> Result<ChownReport, ChownError> {
    let fd = rustix::fs::openat(
        CWD,
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ChownError::io("open", root.to_path_buf(), e))?;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get() * 2);
    chown_by_maps_fd(fd, root, maps, workers)
}

/// [`chown_by_maps`] on an open directory, with `workers` threads (at least
/// one); `display` is the root's name in errors.
pub fn chown_by_maps_fd(
    root: OwnedFd,
    display: &Path,
    maps: &ChownMaps,
    workers: usize,
) -> Result<ChownReport, ChownError> {
    let first = Job {
        dir: rustix::fs::openat(
            &root,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ChownError::io("open", display.to_path_buf(), e))?,
        rel: PathBuf::new(),
    };
    let pool = Pool {
        ctx: Ctx {
            maps,
            root: root.as_fd(),
            links: Mutex::new(HashMap::new()),
            entries: AtomicU64::new(0),
            changed: AtomicU64::new(0),
        },
        display,
        state: Mutex::new(State {
            jobs: vec![first],
            pending: 1,
            error: None,
        }),
        wake: Condvar::new(),
    };
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for _ in 0..workers.max(1) {
            let spawned = std::thread::Builder::new()
                .name("chown-by-maps".into())
                .stack_size(WORKER_STACK)
                .spawn_scoped(s, || pool.work());
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) if handles.is_empty() => {
                    pool.fail(ChownError::Spawn { source: e });
                }
                Err(e) => tracing::debug!(error = %e, "fewer chown workers than planned"),
            }
        }
    });
    let state = pool.state.into_inner().unwrap_or_else(|e| e.into_inner());
    if let Some(e) = state.error {
        return Err(e);
    }
    Ok(ChownReport {
        entries: pool.ctx.entries.load(Ordering::Relaxed),
        changed: pool.ctx.changed.load(Ordering::Relaxed),
    })
}

/// A directory to read: its fd and its path relative to the root.
struct Job {
    dir: OwnedFd,
    rel: PathBuf,
}

struct State {
    jobs: Vec<Job>,
    /// Jobs queued or being processed.
    pending: usize,
    error: Option<ChownError>,
}

struct Pool<'a> {
    ctx: Ctx<'a>,
    display: &'a Path,
    state: Mutex<State>,
    wake: Condvar,
}

impl Pool<'_> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fail(&self, error: ChownError) {
        let mut state = self.lock();
        state.error.get_or_insert(error);
        self.wake.notify_all();
    }

    /// Take jobs until the tree is done or an error stopped the run.
    fn work(&self) {
        loop {
            let job = {
                let mut state = self.lock();
                loop {
                    if state.error.is_some() || state.pending == 0 {
                        return;
                    }
                    if let Some(job) = state.jobs.pop() {
                        break job;
                    }
                    state = self.wake.wait(state).unwrap_or_else(|e| e.into_inner());
                }
            };
            let result = self.directory(job);
            let mut state = self.lock();
            state.pending -= 1;
            if let Err(e) = result {
                state.error.get_or_insert(e);
            }
            if state.pending == 0 || state.error.is_some() {
                self.wake.notify_all();
            }
        }
    }

    /// Process every entry of one directory; queue its subdirectories, or
    /// descend into them here when the queue is long.
    fn directory(&self, job: Job) -> Result<(), ChownError> {
        let names = read_names(&job.dir)
            .map_err(|e| ChownError::io("read directory", self.display.join(&job.rel), e))?;
        for name in names {
            if self.lock().error.is_some() {
                return Ok(());
            }
            let sub = self.ctx.entry(job.dir.as_fd(), &job.rel, &name)?;
            let Some(dir) = sub else { continue };
            let rel = job.rel.join(std::ffi::OsStr::from_bytes(name.as_bytes()));
            let sub_job = Job { dir, rel };
            let mut state = self.lock();
            if state.jobs.len() < MAX_QUEUED_DIRS {
                state.jobs.push(sub_job);
                state.pending += 1;
                self.wake.notify_one();
            } else {
                drop(state);
                self.directory(sub_job)?;
            }
        }
        Ok(())
    }
}

/// The names in a directory, without `.` and `..`.
fn read_names(dir: &OwnedFd) -> rustix::io::Result<Vec<CString>> {
    let mut reader = Dir::read_from(dir)?;
    let mut names = Vec::new();
    while let Some(entry) = reader.read() {
        let name = entry?.file_name().to_owned();
        if name.as_bytes() != b"." && name.as_bytes() != b".." {
            names.push(name);
        }
    }
    Ok(names)
}

/// `openat(dir, name, O_RDONLY|O_DIRECTORY|O_NOFOLLOW|O_CLOEXEC)`.
pub(crate) fn open_dir(dir: BorrowedFd<'_>, name: &std::ffi::CStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}
