//! Filesystem access confined to a directory: this module owns how every
//! file and directory inside a store is reached. A [`Dir`] is an open
//! directory (the graphroot, the runroot, or one beneath them); paths given
//! to it are relative, resolved beneath it, and never through a symlink:
//!
//! ```text
//! Dir::open("<graphroot>")                 the configured root (trusted: may itself be a symlink)
//!   .open_dir("overlay")                   openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)
//!   .remove_tree("<id>")                   fd-relative, never follows a symlink, never crosses a mount
//! ```
//!
//! Without `openat2` (Linux < 5.6) each component is opened with
//! `O_NOFOLLOW` instead. Relative paths may hold only plain components (no
//! `..`, no root), which is checked before any system call. The last
//! component of [`Dir::stat`], [`Dir::read_link`], [`Dir::remove_file`]
//! and [`Dir::remove_tree`] is never followed either.
//!
//! Errors are `std::io::Error`s; [`Dir::display`] names the path for
//! messages.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, StatxFlags};
use rustix::io::Errno;

/// 0: unknown, 1: openat2 works, 2: ENOSYS (component walk).
static OPENAT2: AtomicU8 = AtomicU8::new(0);

/// The most [`Dir::read`] reads: record files of the largest stores are
/// far smaller; a bigger one (a sparse file) is refused, not allocated.
pub const MAX_READ: u64 = 1 << 30;

/// An open directory; everything below it is reached through it.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// What [`Dir::stat`] tells about an entry (from `statx`, not following).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Directory, regular file, symlink, ...
    pub file_type: FileType,
    /// Permission bits and set-id/sticky bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    /// Device and inode.
    pub dev: (u32, u32),
    /// Inode number.
    pub ino: u64,
    /// Link count.
    pub nlink: u32,
    /// Modification time.
    pub mtime: SystemTime,
    /// The mount's id, where the kernel tells it (Linux >= 5.8).
    pub mnt_id: Option<u64>,
    /// Whether the entry is the root of a mount (where the kernel tells it).
    pub mount_root: Option<bool>,
}

impl Meta {
    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        self.file_type == FileType::Directory
    }

    /// Whether it is a regular file.
    pub fn is_file(&self) -> bool {
        self.file_type == FileType::RegularFile
    }

    /// Whether it is a symlink.
    pub fn is_symlink(&self) -> bool {
        self.file_type == FileType::Symlink
    }

    fn from_statx(st: &rustix::fs::Statx) -> Meta {
        let mnt_id = st.stx_mask & StatxFlags::MNT_ID.bits() != 0;
        let root_known = st
            .stx_attributes_mask
            .contains(rustix::fs::StatxAttributes::MOUNT_ROOT);
        Meta {
            file_type: FileType::from_raw_mode(st.stx_mode.into()),
            mode: u32::from(st.stx_mode) & 0o7777,
            uid: st.stx_uid,
            gid: st.stx_gid,
            size: st.stx_size,
            blocks: st.stx_blocks,
            dev: (st.stx_dev_major, st.stx_dev_minor),
            ino: st.stx_ino,
            nlink: st.stx_nlink,
            mtime: timestamp(st.stx_mtime.tv_sec, st.stx_mtime.tv_nsec),
            mnt_id: mnt_id.then_some(st.stx_mnt_id),
            mount_root: root_known.then(|| {
                st.stx_attributes
                    .contains(rustix::fs::StatxAttributes::MOUNT_ROOT)
            }),
        }
    }

    /// Whether `self` lies on another mount than `other`.
    fn other_mount_than(&self, other: &Meta) -> bool {
        match (self.mnt_id, other.mnt_id) {
            (Some(a), Some(b)) => a != b,
            _ => self.dev != other.dev,
        }
    }
}

fn timestamp(sec: i64, nsec: u32) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::from_nanos(nsec.into())
    }
}

/// One directory entry: its name and type (from the directory itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name (bytes; may not be UTF-8).
    pub name: OsString,
    /// The type, as `getdents` reports it (`Unknown` on some filesystems).
    pub file_type: FileType,
}

/// A relative path of plain components only.
fn check_rel(rel: &Path) -> io::Result<()> {
    if rel.as_os_str().is_empty() {
        return Err(invalid(rel, "is empty"));
    }
    for c in rel.components() {
        if !matches!(c, Component::Normal(_)) {
            return Err(invalid(rel, "is not a plain relative path"));
        }
    }
    Ok(())
}

fn invalid(rel: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("path {:?} {what}", rel.display().to_string()),
    )
}

/// Split `rel` into its parent (possibly empty) and last component.
fn split(rel: &Path) -> io::Result<(&Path, &OsStr)> {
    check_rel(rel)?;
    let name = rel
        .file_name()
        .ok_or_else(|| invalid(rel, "has no last component"))?;
    Ok((rel.parent().unwrap_or(Path::new("")), name))
}

fn not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

impl Dir {
    /// Open the directory at `path`, following symlinks in `path` itself:
    /// for the configured graphroot and runroot, which the operator chose.
    pub fn open(path: &Path) -> io::Result<Dir> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Dir {
            fd,
            path: path.to_owned(),
        })
    }

    /// A directory from an open descriptor (a detached mount's root, say),
    /// named `path` in messages.
    pub fn from_fd(fd: OwnedFd, path: PathBuf) -> Dir {
        Dir { fd, path }
    }

    /// [`Dir::open`], `None` when the directory does not exist.
    pub fn open_opt(path: &Path) -> io::Result<Option<Dir>> {
        match Dir::open(path) {
            Ok(d) => Ok(Some(d)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The path the directory was opened as (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `self.path()/rel`, for messages.
    pub fn display(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }

    /// The directory's descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// `/proc/self/fd/<n>`: a name for exactly this directory that the
    /// kernel resolves without looking at its path again (for `mount(2)`).
    pub fn proc_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// The descriptor, owned.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// A second handle on the same directory.
    pub fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir {
            fd: self.fd.try_clone()?,
            path: self.path.clone(),
        })
    }

    /// Open `rel` beneath this directory without following any symlink.
    pub fn open_beneath(&self, rel: &Path, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
        check_rel(rel)?;
        let flags = flags | OFlags::CLOEXEC;
        if OPENAT2.load(Ordering::Relaxed) != 2 {
            let resolve =
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            for _ in 0..8 {
                match rustix::fs::openat2(&self.fd, rel, flags, mode, resolve) {
                    Err(Errno::NOSYS) => {
                        OPENAT2.store(2, Ordering::Relaxed);
                        break;
                    }
                    // A rename raced with the lookup: try again.
                    Err(Errno::AGAIN) => continue,
                    // A symlink on the way.
                    Err(Errno::LOOP) | Err(Errno::XDEV) => {
                        return Err(symlink_error(&self.path.join(rel)))
                    }
                    other => {
                        OPENAT2.store(1, Ordering::Relaxed);
                        return other.map_err(io::Error::from);
                    }
                }
            }
            if OPENAT2.load(Ordering::Relaxed) != 2 {
                return Err(Errno::AGAIN.into());
            }
        }
        self.walk(rel, flags, mode)
    }

    /// The `O_NOFOLLOW` component walk for kernels without `openat2`.
    fn walk(&self, rel: &Path, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
        let mut parts: Vec<&OsStr> = rel.iter().collect();
        let last = parts.pop().unwrap_or_default();
        let mut cur: Option<OwnedFd> = None;
        for part in parts {
            let base = cur.as_ref().map_or(self.fd.as_fd(), |f| f.as_fd());
            let next = rustix::fs::openat(
                base,
                part,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| match e {
                Errno::NOTDIR | Errno::LOOP => symlink_error(&self.path.join(rel)),
                e => e.into(),
            })?;
            cur = Some(next);
        }
        let base = cur.as_ref().map_or(self.fd.as_fd(), |f| f.as_fd());
        rustix::fs::openat(base, last, flags | OFlags::NOFOLLOW, mode).map_err(|e| match e {
            Errno::LOOP => symlink_error(&self.path.join(rel)),
            e => e.into(),
        })
    }

    /// The directory `rel` beneath this one (no symlinks on the way).
    pub fn open_dir(&self, rel: impl AsRef<Path>) -> io::Result<Dir> {
        let rel = rel.as_ref();
        let fd = self.open_beneath(rel, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
        Ok(Dir {
            fd,
            path: self.path.join(rel),
        })
    }

    /// The directory `rel` beneath this one as an `O_PATH` descriptor: good
    /// for naming it (`/proc/self/fd/N` to unmount it, `*at` calls), not
    /// for listing it. Opening it asks nothing of the filesystem mounted
    /// there (no permission check), so a hung FUSE server cannot hang it.
    pub fn open_dir_path(&self, rel: impl AsRef<Path>) -> io::Result<Dir> {
        let rel = rel.as_ref();
        let fd = self.open_beneath(rel, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())?;
        Ok(Dir {
            fd,
            path: self.path.join(rel),
        })
    }

    /// [`Dir::open_dir_opt`], refusing a directory on another mount than
    /// this one (a mount point at `rel` or on the way): for directories
    /// whose contents are deleted (a trash, a runtime's state).
    pub fn open_dir_same_mount(&self, rel: impl AsRef<Path>) -> io::Result<Option<Dir>> {
        let rel = rel.as_ref();
        let Some(dir) = self.open_dir_opt(rel)? else {
            return Ok(None);
        };
        let (meta, own) = (dir.stat_self()?, self.stat_self()?);
        if meta.other_mount_than(&own) || meta.mount_root == Some(true) {
            return Err(mount_point_error(&self.path.join(rel)));
        }
        Ok(Some(dir))
    }

    /// [`Dir::open_dir`], `None` when it does not exist.
    pub fn open_dir_opt(&self, rel: impl AsRef<Path>) -> io::Result<Option<Dir>> {
        match self.open_dir(rel) {
            Ok(d) => Ok(Some(d)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The parent directory of `rel`'s last component, and that component.
    fn parent_of<'a>(&self, rel: &'a Path) -> io::Result<(Option<Dir>, &'a OsStr)> {
        let (parent, name) = split(rel)?;
        if parent.as_os_str().is_empty() {
            Ok((None, name))
        } else {
            Ok((Some(self.open_dir(parent)?), name))
        }
    }

    /// [`Dir::parent_of`], `None` when the parent does not exist (then
    /// neither does `rel`).
    fn existing_parent_of<'a>(
        &self,
        rel: &'a Path,
    ) -> io::Result<Option<(Option<Dir>, &'a OsStr)>> {
        match self.parent_of(rel) {
            Ok(p) => Ok(Some(p)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Create directory `rel` (mode `mode`, umask applies) if it is
    /// missing; its parent must exist. Returns whether it was created.
    pub fn create_dir(&self, rel: impl AsRef<Path>, mode: u32) -> io::Result<bool> {
        let rel = rel.as_ref();
        let (parent, name) = self.parent_of(rel)?;
        let base = parent.as_ref().map_or(self.fd(), Dir::fd);
        match rustix::fs::mkdirat(base, name, Mode::from_raw_mode(mode)) {
            Ok(()) => Ok(true),
            Err(Errno::EXIST) => {
                match rustix::fs::statx(base, name, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::TYPE) {
                    Ok(st)
                        if FileType::from_raw_mode(st.stx_mode.into()) == FileType::Directory =>
                    {
                        Ok(false)
                    }
                    Ok(_) => Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!(
                            "{} exists and is not a directory",
                            self.path.join(rel).display()
                        ),
                    )),
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Create `rel` and its missing parents (each `mode`), and open it.
    pub fn create_dir_all(&self, rel: impl AsRef<Path>, mode: u32) -> io::Result<Dir> {
        let rel = rel.as_ref();
        check_rel(rel)?;
        let mut sofar = PathBuf::new();
        for part in rel.iter() {
            sofar.push(part);
            self.create_dir(&sofar, mode)?;
        }
        self.open_dir(rel)
    }

    /// Open file `rel` (with `flags`; `O_NOFOLLOW` is implied).
    pub fn open_file(
        &self,
        rel: impl AsRef<Path>,
        flags: OFlags,
        mode: u32,
    ) -> io::Result<OwnedFd> {
        self.open_beneath(rel.as_ref(), flags, Mode::from_raw_mode(mode))
    }

    /// The content of regular file `rel`, at most [`MAX_READ`] bytes.
    pub fn read(&self, rel: impl AsRef<Path>) -> io::Result<Vec<u8>> {
        self.read_limited(rel, MAX_READ)
    }

    /// The content of regular file `rel`, refused when it holds more than
    /// `max` bytes. Anything else at `rel` (a FIFO, a device) is refused
    /// without blocking: the open does not wait for a writer.
    pub fn read_limited(&self, rel: impl AsRef<Path>, max: u64) -> io::Result<Vec<u8>> {
        let (mut file, size) = self.open_regular(rel, max)?;
        // As large as `fstat` said, in one read when it comes whole (no
        // second read to meet the end). Reading stops once that many bytes
        // came: a file that grew after the `fstat` is read as it was then,
        // unless the growth came in the same reads (then it is read on, up
        // to the limit). Our files are replaced by rename, never grown.
        let want = usize::try_from(size.min(max)).unwrap_or(usize::MAX);
        let mut out = vec![0u8; want + 1];
        let mut n = 0;
        while n < out.len() {
            match io::Read::read(&mut file, &mut out[n..]) {
                Ok(0) => break,
                Ok(r) => n += r,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if n == want {
                break;
            }
        }
        let grew = n == out.len();
        out.truncate(n);
        if grew {
            let rest = (max + 1).saturating_sub(n as u64);
            io::Read::read_to_end(&mut io::Read::take(file, rest), &mut out)?;
        }
        if out.len() as u64 > max {
            return Err(too_big(out.len() as u64, max));
        }
        Ok(out)
    }

    /// Regular file `rel` opened for reading, with its size, to be read as
    /// a stream (at most `max` bytes: take that many); refused as
    /// [`Dir::read_limited`] refuses. `None` when it does not exist.
    pub fn open_regular_opt(
        &self,
        rel: impl AsRef<Path>,
        max: u64,
    ) -> io::Result<Option<(std::fs::File, u64)>> {
        match self.open_regular(rel, max) {
            Ok(f) => Ok(Some(f)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn open_regular(&self, rel: impl AsRef<Path>, max: u64) -> io::Result<(std::fs::File, u64)> {
        let rel = rel.as_ref();
        let fd = self.open_file(rel, OFlags::RDONLY | OFlags::NONBLOCK, 0)?;
        let st = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "it is not a regular file",
            ));
        }
        let size = st.st_size.max(0) as u64;
        if size > max {
            return Err(too_big(size, max));
        }
        Ok((std::fs::File::from(fd), size))
    }

    /// [`Dir::read`], `None` when the file does not exist.
    pub fn read_opt(&self, rel: impl AsRef<Path>) -> io::Result<Option<Vec<u8>>> {
        self.read_opt_limited(rel, MAX_READ)
    }

    /// [`Dir::read_limited`], `None` when the file does not exist.
    pub fn read_opt_limited(&self, rel: impl AsRef<Path>, max: u64) -> io::Result<Option<Vec<u8>>> {
        match self.read_limited(rel, max) {
            Ok(b) => Ok(Some(b)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// What `rel` is, not following it; `None` when it does not exist.
    pub fn stat(&self, rel: impl AsRef<Path>) -> io::Result<Option<Meta>> {
        let rel = rel.as_ref();
        let Some((parent, name)) = self.existing_parent_of(rel)? else {
            return Ok(None);
        };
        let base = parent.as_ref().map_or(self.fd(), Dir::fd);
        stat_at(base, name)
    }

    /// Whether entry `rel` is the root of a mount (a mount point), not
    /// following it.
    pub fn is_mount_point(&self, rel: impl AsRef<Path>) -> io::Result<bool> {
        let rel = rel.as_ref();
        let Some(meta) = self.stat(rel)? else {
            return Ok(false);
        };
        if let Some(root) = meta.mount_root {
            return Ok(root);
        }
        let parent = match rel.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(p) => self.open_dir(p)?.stat_self()?,
            None => self.stat_self()?,
        };
        Ok(meta.other_mount_than(&parent))
    }

    /// What this directory itself is.
    pub fn stat_self(&self) -> io::Result<Meta> {
        fd_meta(&self.fd)
    }

    /// The target of symlink `rel`; `None` when it does not exist.
    pub fn read_link(&self, rel: impl AsRef<Path>) -> io::Result<Option<PathBuf>> {
        let rel = rel.as_ref();
        let Some((parent, name)) = self.existing_parent_of(rel)? else {
            return Ok(None);
        };
        let base = parent.as_ref().map_or(self.fd(), Dir::fd);
        match rustix::fs::readlinkat(base, name, Vec::new()) {
            Ok(t) => Ok(Some(PathBuf::from(OsStr::from_bytes(t.as_bytes())))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Create symlink `rel` -> `target` (the target is not looked at).
    pub fn symlink(&self, target: impl AsRef<Path>, rel: impl AsRef<Path>) -> io::Result<()> {
        let rel = rel.as_ref();
        let (parent, name) = self.parent_of(rel)?;
        let base = parent.as_ref().map_or(self.fd(), Dir::fd);
        Ok(rustix::fs::symlinkat(target.as_ref(), base, name)?)
    }

    /// Every entry of this directory except `.` and `..`.
    pub fn entries(&self) -> io::Result<Vec<Entry>> {
        let mut out = Vec::new();
        for entry in rustix::fs::Dir::read_from(&self.fd)? {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            out.push(Entry {
                name: OsStr::from_bytes(name).to_owned(),
                file_type: entry.file_type(),
            });
        }
        Ok(out)
    }

    /// Rename `from` to `to` (both beneath this directory).
    pub fn rename(&self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<()> {
        let (from_parent, from_name) = self.parent_of(from.as_ref())?;
        let (to_parent, to_name) = self.parent_of(to.as_ref())?;
        let from_base = from_parent.as_ref().map_or(self.fd(), Dir::fd);
        let to_base = to_parent.as_ref().map_or(self.fd(), Dir::fd);
        Ok(rustix::fs::renameat(
            from_base, from_name, to_base, to_name,
        )?)
    }

    /// Remove the file or symlink `rel` (never a directory, never what a
    /// symlink points to). Returns whether it existed.
    pub fn remove_file(&self, rel: impl AsRef<Path>) -> io::Result<bool> {
        let rel = rel.as_ref();
        let Some((parent, name)) = self.existing_parent_of(rel)? else {
            return Ok(false);
        };
        let base = parent.as_ref().map_or(self.fd(), Dir::fd);
        // Never a file of another mount (a bind mount on the way).
        if let Some(meta) = stat_at(base, name)? {
            if meta.other_mount_than(&self.stat_self()?) || meta.mount_root == Some(true) {
                return Err(mount_point_error(&self.path.join(rel)));
            }
        }
        match rustix::fs::unlinkat(base, name, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(Errno::ISDIR) => Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{} is a directory", self.path.join(rel).display()),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Remove `rel` and, if it is a directory, everything in it: relative
    /// to directory descriptors, never following a symlink (a symlink is
    /// removed itself), and never across a mount: a mount point at `rel` or
    /// anywhere below it stops the removal with an error naming it, before
    /// anything on that mount is touched. Directories that are not writable
    /// (a 0555 `diff` of a rootless store) are made writable first. Returns
    /// whether `rel` existed.
    pub fn remove_tree(&self, rel: impl AsRef<Path>) -> io::Result<bool> {
        let rel = rel.as_ref();
        let Some((parent, name)) = self.existing_parent_of(rel)? else {
            return Ok(false);
        };
        let base = parent.as_ref().map_or(self.fd(), Dir::fd);
        let Some(meta) = stat_at(base, name)? else {
            return Ok(false);
        };
        let parent_meta = fd_meta_at(base)?;
        let shown = self.path.join(rel);
        // On this directory's own mount, whatever it is: not below a mount
        // on the way (`rel`'s parent a mount point) either.
        let own = self.stat_self()?;
        if meta.other_mount_than(&parent_meta)
            || meta.other_mount_than(&own)
            || meta.mount_root == Some(true)
        {
            return Err(mount_point_error(&shown));
        }
        if !meta.is_dir() {
            unlink_at(base, name, AtFlags::empty())?;
            return Ok(true);
        }
        let fd = rustix::fs::openat(
            base,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        remove_contents(fd, &meta, &shown)?;
        unlink_at(base, name, AtFlags::REMOVEDIR)?;
        Ok(true)
    }

    /// Hand what `rel` is, and when it is a directory everything below it
    /// on the same mount, to `count`: not following symlinks, not entering
    /// other mounts, iteratively with a bounded number of descriptors (see
    /// [`Dir::remove_tree`]). `Ok(false)` when `rel` does not exist.
    pub fn walk_tree(
        &self,
        rel: impl AsRef<Path>,
        count: &mut dyn FnMut(&Meta),
    ) -> io::Result<bool> {
        let rel = rel.as_ref();
        let Some((parent, name)) = self.existing_parent_of(rel)? else {
            return Ok(false);
        };
        let base = parent.as_ref().map_or(self.fd(), Dir::fd);
        let Some(meta) = stat_at(base, name)? else {
            return Ok(false);
        };
        count(&meta);
        if !meta.is_dir() || meta.mount_root == Some(true) {
            return Ok(true);
        }
        let fd = open_dir_at(base, name)?;
        let opened = fd_meta(&fd)?;
        if opened.dev != meta.dev || opened.ino != meta.ino {
            return Ok(true);
        }
        traverse(fd, &opened, &self.path.join(rel), &mut Measure(count))?;
        Ok(true)
    }

    /// Replace file `rel` with `data` atomically (see
    /// [`crate::atomic::write_atomic_at`]); its directory must exist.
    pub fn write_atomic(&self, rel: impl AsRef<Path>, data: &[u8], sync: bool) -> io::Result<()> {
        let (parent, name) = self.parent_of(rel.as_ref())?;
        let dir = parent.as_ref().unwrap_or(self);
        crate::atomic::write_atomic_at(dir.fd(), name, data, sync)
    }
}

fn statx_mask() -> StatxFlags {
    StatxFlags::TYPE
        | StatxFlags::MODE
        | StatxFlags::UID
        | StatxFlags::GID
        | StatxFlags::SIZE
        | StatxFlags::BLOCKS
        | StatxFlags::INO
        | StatxFlags::NLINK
        | StatxFlags::MTIME
        | StatxFlags::MNT_ID
}

fn stat_at(base: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<Meta>> {
    // DONT_SYNC: what the kernel has cached; a FUSE server that hangs (a
    // hostile mount on a layer's `merged`) is never asked.
    match rustix::fs::statx(
        base,
        name,
        AtFlags::SYMLINK_NOFOLLOW | AtFlags::STATX_DONT_SYNC,
        statx_mask(),
    ) {
        Ok(st) => Ok(Some(Meta::from_statx(&st))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `unlinkat`, making the directory writable once on `EACCES`.
fn unlink_at(base: BorrowedFd<'_>, name: &OsStr, flags: AtFlags) -> io::Result<()> {
    match rustix::fs::unlinkat(base, name, flags) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(Errno::ACCESS) | Err(Errno::PERM) if make_writable(base) => {
            match rustix::fs::unlinkat(base, name, flags) {
                Ok(()) | Err(Errno::NOENT) => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Add owner rwx to directory `fd`; whether that changed anything.
fn too_big(size: u64, max: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("it holds {size} bytes, more than the {max} this reads"),
    )
}

fn make_writable(fd: BorrowedFd<'_>) -> bool {
    let Ok(st) = rustix::fs::fstat(fd) else {
        return false;
    };
    let mode = st.st_mode & 0o7777;
    if mode & 0o700 == 0o700 {
        return false;
    }
    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode | 0o700)).is_ok()
}

/// How many directories of the way down a traversal keeps open; the
/// others are reopened through `..` (and checked to be the same directory)
/// on the way back up. Depth is then bounded by memory, not by
/// descriptors.
const OPEN_LEVELS: usize = 16;

/// One directory on the way down a traversal.
struct Level {
    /// Open, unless it is more than [`OPEN_LEVELS`] above the bottom.
    fd: Option<OwnedFd>,
    meta: Meta,
    /// What is still to be visited in it.
    left: Vec<OsString>,
}

impl Level {
    fn new(fd: OwnedFd, meta: Meta) -> io::Result<Level> {
        // getdents on the level's own descriptor (its position is never
        // used again): no second descriptor to list through.
        let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); 32 << 10];
        let mut dir = rustix::fs::RawDir::new(&fd, &mut buf);
        let mut left = Vec::new();
        while let Some(entry) = dir.next() {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                left.push(OsStr::from_bytes(name).to_owned());
            }
        }
        Ok(Level {
            fd: Some(fd),
            meta,
            left,
        })
    }
}

/// `top`, then the names on the way down, then `name` (for messages only;
/// a very deep one is shortened in the middle).
fn shown_path(top: &Path, names: &[OsString], name: &OsStr) -> PathBuf {
    let mut out = top.to_path_buf();
    let all: Vec<&OsStr> = names
        .iter()
        .map(OsString::as_os_str)
        .chain([name])
        .collect();
    if all.len() > 12 {
        for n in &all[..4] {
            out.push(n);
        }
        out.push(format!("...{} more...", all.len() - 8));
        for n in &all[all.len() - 4..] {
            out.push(n);
        }
    } else {
        for n in all {
            out.push(n);
        }
    }
    out
}

/// What a traversal does at each step ([`traverse`]).
trait Visit {
    /// Directory `fd` is about to be listed.
    fn entering(&mut self, _fd: BorrowedFd<'_>, _meta: &Meta) {}
    /// Entry `name` of directory `dir`, with what it is and whether it is
    /// on another mount than the top (or the root of a mount). Returns
    /// whether to descend into it (only ever done for a directory on the
    /// top's mount).
    fn entry(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        meta: &Meta,
        other_mount: bool,
        shown: &dyn Fn() -> PathBuf,
    ) -> io::Result<bool>;
    /// Whether a directory may be descended into without the identity
    /// `statx` of the opened descriptor: for a visit that only counts (a
    /// directory swapped between its `statx` and its open is counted as
    /// found; the `statx` by name, which never asks a FUSE server, still
    /// decides whether it is on another mount).
    fn skips_identity_check(&self) -> bool {
        false
    }
    /// Directory `name` of `parent` has been visited to the end.
    fn left(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        shown: &dyn Fn() -> PathBuf,
    ) -> io::Result<()>;
}

/// Visit everything inside directory `dir` (whose [`Meta`] is `top`),
/// depth first, without recursion: the memory a traversal takes grows
/// with the tree's depth only by the names on the way down, and at most
/// [`OPEN_LEVELS`] descriptors are open, however deep the tree. Nothing is
/// followed: no symlink, and no directory that is not the one just looked
/// at (checked by device and inode after the open).
fn traverse(dir: OwnedFd, top: &Meta, shown: &Path, visit: &mut dyn Visit) -> io::Result<()> {
    visit.entering(dir.as_fd(), top);
    let mut levels = vec![Level::new(dir, *top)?];
    // The name of each level below the top, in its parent.
    let mut names: Vec<OsString> = Vec::new();
    loop {
        let depth = levels.len();
        let next = levels
            .last_mut()
            .expect("at least the top level")
            .left
            .pop();
        let Some(name) = next else {
            let done = levels.pop().expect("a level");
            let Some(parent) = levels.last_mut() else {
                return Ok(());
            };
            let name = names.pop().expect("a level below the top has a name");
            if parent.fd.is_none() {
                let below = done.fd.as_ref().expect("the bottom level is open");
                let fd = open_dir_at(below.as_fd(), OsStr::new(".."))?;
                let meta = fd_meta(&fd)?;
                if meta.dev != parent.meta.dev || meta.ino != parent.meta.ino {
                    return Err(io::Error::other(format!(
                        "{} moved while it was being walked",
                        shown_path(shown, &names, &name).display()
                    )));
                }
                parent.fd = Some(fd);
            }
            drop(done);
            let parent_fd = parent.fd.as_ref().expect("reopened").as_fd();
            visit.left(parent_fd, &name, &|| shown_path(shown, &names, &name))?;
            continue;
        };
        let level = levels.last().expect("at least the top level");
        let fd = level.fd.as_ref().expect("the bottom level is open").as_fd();
        let Some(meta) = stat_at(fd, &name)? else {
            continue;
        };
        let other_mount = meta.other_mount_than(top) || meta.mount_root == Some(true);
        let shown_here = || shown_path(shown, &names, &name);
        let descend = visit.entry(fd, &name, &meta, other_mount, &shown_here)?;
        if !descend || !meta.is_dir() || other_mount {
            continue;
        }
        let child = open_dir_at(fd, &name).map_err(|e| with_path(e, "opening", &shown_here()))?;
        let opened = if visit.skips_identity_check() {
            meta
        } else {
            fd_meta(&child)?
        };
        if opened.dev != meta.dev || opened.ino != meta.ino || opened.other_mount_than(top) {
            return Err(io::Error::other(format!(
                "{} changed while it was being walked",
                shown_here().display()
            )));
        }
        visit.entering(child.as_fd(), &opened);
        let next = Level::new(child, opened).map_err(|e| with_path(e, "listing", &shown_here()))?;
        if depth >= OPEN_LEVELS {
            levels[depth - OPEN_LEVELS].fd = None;
        }
        levels.push(next);
        names.push(name);
    }
}

fn open_dir_at(base: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        base,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

fn fd_meta(fd: &OwnedFd) -> io::Result<Meta> {
    fd_meta_at(fd.as_fd())
}

fn fd_meta_at(fd: BorrowedFd<'_>) -> io::Result<Meta> {
    Ok(Meta::from_statx(&rustix::fs::statx(
        fd,
        "",
        AtFlags::EMPTY_PATH | AtFlags::STATX_DONT_SYNC,
        statx_mask(),
    )?))
}

/// Removal: files unlinked, directories emptied then removed; a mount
/// anywhere stops it before anything on that mount is touched.
struct Remove;

impl Visit for Remove {
    fn entering(&mut self, fd: BorrowedFd<'_>, meta: &Meta) {
        if meta.mode & 0o700 != 0o700 {
            make_writable(fd);
        }
    }

    fn entry(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        meta: &Meta,
        other_mount: bool,
        shown: &dyn Fn() -> PathBuf,
    ) -> io::Result<bool> {
        if other_mount {
            return Err(mount_point_error(&shown()));
        }
        if meta.is_dir() {
            return Ok(true);
        }
        unlink_at(dir, name, AtFlags::empty()).map_err(|e| with_path(e, "removing", &shown()))?;
        Ok(false)
    }

    fn left(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        shown: &dyn Fn() -> PathBuf,
    ) -> io::Result<()> {
        unlink_at(parent, name, AtFlags::REMOVEDIR).map_err(|e| with_path(e, "removing", &shown()))
    }
}

/// Remove everything inside directory `dir` (see [`traverse`]).
fn remove_contents(dir: OwnedFd, top: &Meta, shown: &Path) -> io::Result<()> {
    traverse(dir, top, shown, &mut Remove)
}

/// Measuring: every entry on the top's mount is handed to `count`;
/// other mounts are skipped.
struct Measure<'a>(&'a mut dyn FnMut(&Meta));

impl Visit for Measure<'_> {
    fn skips_identity_check(&self) -> bool {
        true
    }

    fn entry(
        &mut self,
        _dir: BorrowedFd<'_>,
        _name: &OsStr,
        meta: &Meta,
        other_mount: bool,
        _shown: &dyn Fn() -> PathBuf,
    ) -> io::Result<bool> {
        if other_mount {
            return Ok(false);
        }
        (self.0)(meta);
        Ok(meta.is_dir())
    }

    fn left(
        &mut self,
        _parent: BorrowedFd<'_>,
        _name: &OsStr,
        _shown: &dyn Fn() -> PathBuf,
    ) -> io::Result<()> {
        Ok(())
    }
}

fn with_path(e: io::Error, op: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{op} {}: {e}", path.display()))
}

fn mount_point_error(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::ResourceBusy,
        format!(
            "{} is a mount point: not removing anything on another mount",
            path.display()
        ),
    )
}

fn symlink_error(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{} goes through a symlink (or leaves the store): refusing to follow it",
            path.display()
        ),
    )
}

#[cfg(test)]
mod tests;
