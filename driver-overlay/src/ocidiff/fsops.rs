//! Directory-fd primitives for writing a layer: reaching a directory
//! from the layer root one `openat(O_DIRECTORY|O_NOFOLLOW)` at a time (so
//! a symlink an earlier entry planted is never followed), removing a tree,
//! and setting xattrs on objects that cannot be opened (symlinks, device
//! nodes, fifos).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::rc::Rc;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

/// Directory fds kept open along the last path walked.
const MAX_CACHED: usize = 32;

/// Why a walk stopped, at component `index`.
#[derive(Debug)]
pub(crate) struct WalkError {
    /// Index of the component that failed.
    pub index: usize,
    /// What it is.
    pub kind: WalkErrorKind,
}

/// What the failing component is.
#[derive(Debug)]
pub(crate) enum WalkErrorKind {
    /// A symlink.
    Symlink,
    /// Something else that is not a directory.
    NotDir,
    /// Nothing (and the walk was not allowed to create it).
    Missing,
    /// The system refused.
    Io(Errno),
}

/// Opens directories below the layer root, keeping the fds of the last
/// path walked: tar entries come grouped by directory.
pub(crate) struct DirCache {
    root: Rc<OwnedFd>,
    chain: Vec<(Vec<u8>, Rc<OwnedFd>)>,
    /// Directories created for missing parents are chowned to 0:0 like
    /// containers/storage does; whether a failure there is ignored.
    lenient_chown: bool,
}

impl DirCache {
    pub(crate) fn new(root: OwnedFd, lenient_chown: bool) -> Self {
        DirCache {
            root: Rc::new(root),
            chain: Vec::new(),
            lenient_chown,
        }
    }

    /// Forget the cached fds (after removing a directory: a cached fd may
    /// point at it).
    pub(crate) fn clear(&mut self) {
        self.chain.clear();
    }

    /// Open the directory at `comps` below the root; with `create`, missing
    /// directories are made (mode 0755, owner 0:0) like Go's `MkdirAll`.
    pub(crate) fn open(
        &mut self,
        comps: &[Vec<u8>],
        create: bool,
    ) -> Result<Rc<OwnedFd>, WalkError> {
        let common = self
            .chain
            .iter()
            .zip(comps)
            .take_while(|((name, _), c)| name == *c)
            .count();
        self.chain.truncate(common);
        let mut cur = self
            .chain
            .last()
            .map_or_else(|| self.root.clone(), |(_, fd)| fd.clone());
        for (index, comp) in comps.iter().enumerate().skip(common) {
            let fd = Rc::new(
                self.step(cur.as_fd(), comp, create)
                    .map_err(|kind| WalkError { index, kind })?,
            );
            if self.chain.len() == index && index < MAX_CACHED {
                self.chain.push((comp.clone(), fd.clone()));
            }
            cur = fd;
        }
        Ok(cur)
    }

    fn step(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        create: bool,
    ) -> Result<OwnedFd, WalkErrorKind> {
        match open_dir(dir, name) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) if create => {}
            Err(Errno::NOENT) => return Err(WalkErrorKind::Missing),
            Err(e) => return Err(what_is(dir, name, e)),
        }
        match rfs::mkdirat(dir, name, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(WalkErrorKind::Io(e)),
        }
        let fd = open_dir(dir, name).map_err(|e| what_is(dir, name, e))?;
        // Like Go: 0777 minus the umask (0755 with the usual one), fixed
        // here so the result does not depend on our umask.
        rfs::fchmod(&fd, Mode::from_raw_mode(0o755)).map_err(WalkErrorKind::Io)?;
        let root = (Some(rfs::Uid::ROOT), Some(rfs::Gid::ROOT));
        match rfs::fchown(&fd, root.0, root.1) {
            Err(e) if !self.lenient_chown => Err(WalkErrorKind::Io(e)),
            _ => Ok(fd),
        }
    }
}

/// `openat(dir, name, O_DIRECTORY|O_NOFOLLOW)`.
pub(crate) fn open_dir(dir: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rfs::openat(dir, name, flags, Mode::empty())
}

/// Why `name` could not be opened as a directory.
fn what_is(dir: BorrowedFd<'_>, name: &[u8], err: Errno) -> WalkErrorKind {
    match file_type(dir, name) {
        Ok(Some(FileType::Symlink)) => WalkErrorKind::Symlink,
        Ok(Some(FileType::Directory)) => WalkErrorKind::Io(err),
        Ok(Some(_)) => WalkErrorKind::NotDir,
        Ok(None) => WalkErrorKind::Missing,
        Err(e) => WalkErrorKind::Io(e),
    }
}

/// The type of `name` in `dir` without following it; `None` if absent.
pub(crate) fn file_type(dir: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<Option<FileType>> {
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Remove `name` in `dir` and everything below it, never following a
/// symlink. Depth is bounded by the name length limit of `classify`.
pub(crate) fn remove_tree(dir: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<()> {
    let fd = open_dir(dir, name)?;
    let mut children = Vec::new();
    for entry in rfs::Dir::read_from(&fd)? {
        let entry = entry?;
        let child = entry.file_name().to_bytes();
        if child != b"." && child != b".." {
            children.push((child.to_vec(), entry.file_type()));
        }
    }
    for (child, ft) in children {
        let ft = match ft {
            FileType::Unknown => file_type(fd.as_fd(), &child)?.unwrap_or(FileType::Unknown),
            ft => ft,
        };
        if ft == FileType::Directory {
            remove_tree(fd.as_fd(), &child)?;
        } else {
            rfs::unlinkat(&fd, child.as_slice(), AtFlags::empty())?;
        }
    }
    rfs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}

/// `lsetxattr` on `name` in `dir` (not following it), for objects that
/// cannot be opened for `fsetxattr`: through `/proc/self/fd/<dir>/<name>`,
/// whose only component looked up below `dir` is `name` itself.
pub(crate) fn lsetxattr_at(
    dir: BorrowedFd<'_>,
    name: &[u8],
    key: &[u8],
    value: &[u8],
) -> rustix::io::Result<()> {
    let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    path.extend_from_slice(name);
    rfs::lsetxattr(path.as_slice(), key, value, rfs::XattrFlags::empty())
}
