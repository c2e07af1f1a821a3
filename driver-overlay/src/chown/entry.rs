//! What chown-by-maps does to one entry, relative to its directory's fd:
//! re-link a hard link seen before, or translate the owner, `lchown`,
//! restore setuid/setgid, rewrite `security.capability` and POSIX ACLs.

use std::collections::HashMap;
use std::ffi::{CStr, OsStr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rustix::fs::{self as rfs, AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Uid};
use rustix::io::Errno;

use super::translate::{remap_acl, remap_capability, ChownMaps, XattrProblem};
use super::ChownError;

const CAPABILITY: &str = "security.capability";
const ACLS: [&str; 2] = ["system.posix_acl_access", "system.posix_acl_default"];
/// Temporary name a hard link is created under before it replaces the entry.
const RELINK_TMP: &CStr = c".layerstore-chown-relink";

/// Where an inode was first seen: parent relative to the root, and name.
pub(crate) type FirstPath = (PathBuf, Vec<u8>);

/// State shared by the workers of one run.
pub(crate) struct Ctx<'a> {
    pub maps: &'a ChownMaps,
    /// The tree's root (hard-link sources are opened beneath it).
    pub root: BorrowedFd<'a>,
    /// `(st_dev, st_ino)` of multiply-linked files -> (parent relative to
    /// the root, name) of the first path seen.
    pub links: Mutex<HashMap<(u64, u64), FirstPath>>,
    pub entries: AtomicU64,
    pub changed: AtomicU64,
}

/// Where the entry's metadata calls go.
enum Target<'a> {
    /// A directory, opened (`O_DIRECTORY|O_NOFOLLOW`).
    Dir(BorrowedFd<'a>),
    /// Anything else: `name` in directory `dir`, never followed.
    At { dir: BorrowedFd<'a>, name: &'a CStr },
}

impl Ctx<'_> {
    /// Process entry `name` of the directory `dir` (at `dir_rel` below the
    /// root). Returns the opened directory when the entry is one.
    pub(crate) fn entry(
        &self,
        dir: BorrowedFd<'_>,
        dir_rel: &Path,
        name: &CStr,
    ) -> Result<Option<OwnedFd>, ChownError> {
        let path = || dir_rel.join(OsStr::from_bytes(name.to_bytes()));
        let st = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| ChownError::io("lstat", path(), e))?;
        self.entries.fetch_add(1, Ordering::Relaxed);
        let file_type = FileType::from_raw_mode(st.st_mode);
        if file_type == FileType::Directory {
            let fd = super::open_dir(dir, name).map_err(|e| ChownError::io("open", path(), e))?;
            self.apply(Target::Dir(fd.as_fd()), &st, file_type, &path)?;
            return Ok(Some(fd));
        }
        let key = (st.st_dev, st.st_ino);
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((first_dir, first_name)) = links.get(&key) {
            self.relink(first_dir, first_name, dir, name)
                .map_err(|e| ChownError::io("re-create the hard link", path(), e))?;
            self.changed.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
        // Keep the lock while a multiply-linked file is chowned, so a later
        // path of it links to the chowned (copied-up) inode.
        let _held = if st.st_nlink > 1 {
            links.insert(key, (dir_rel.to_path_buf(), name.to_bytes().to_vec()));
            Some(links)
        } else {
            drop(links);
            None
        };
        self.apply(Target::At { dir, name }, &st, file_type, &path)?;
        Ok(None)
    }

    /// Replace `name` in `dir` by a hard link to the first path of its
    /// inode: link under a temporary name, then rename over (atomic; when
    /// both already are the same inode the rename does nothing and the
    /// temporary name is removed).
    fn relink(
        &self,
        first_dir: &Path,
        first_name: &[u8],
        dir: BorrowedFd<'_>,
        name: &CStr,
    ) -> rustix::io::Result<()> {
        let rel = if first_dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            first_dir
        };
        let parent = rfs::openat2(
            self.root,
            rel,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )?;
        rfs::linkat(&parent, first_name, dir, RELINK_TMP, AtFlags::empty())?;
        if let Err(e) = rfs::renameat(dir, RELINK_TMP, dir, name) {
            let _ = rfs::unlinkat(dir, RELINK_TMP, AtFlags::empty());
            return Err(e);
        }
        match rfs::unlinkat(dir, RELINK_TMP, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Translate and write the owner, then restore what the chown cleared.
    fn apply(
        &self,
        target: Target<'_>,
        st: &rfs::Stat,
        file_type: FileType,
        path: &dyn Fn() -> PathBuf,
    ) -> Result<(), ChownError> {
        let (uid, gid) =
            self.maps
                .owner(st.st_uid, st.st_gid)
                .map_err(|u| ChownError::UnmappedOwner {
                    path: path(),
                    uid: u.uid,
                    gid: u.gid,
                })?;
        let owner_changed = (uid, gid) != (st.st_uid, st.st_gid);
        let is_symlink = file_type == FileType::Symlink;
        // Symlinks carry neither capabilities nor ACLs.
        let xattrs = if is_symlink {
            Xattrs::default()
        } else {
            self.read_xattrs(&target, owner_changed, path)?
        };
        let mut wrote = false;
        if owner_changed {
            target
                .chown(uid, gid)
                .map_err(|e| ChownError::io("lchown", path(), e))?;
            wrote = true;
            let special = st.st_mode & (libc::S_ISUID | libc::S_ISGID);
            if !is_symlink && special != 0 {
                target
                    .chmod(st.st_mode & 0o7777)
                    .map_err(|e| ChownError::io("restore setuid/setgid bits of", path(), e))?;
            }
        }
        for (name, value) in &xattrs.writes {
            target
                .set_xattr(name, value)
                .map_err(|e| ChownError::io(set_action(name), path(), e))?;
            wrote = true;
        }
        if wrote {
            self.changed.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The capability and ACL values to write after the chown.
    fn read_xattrs(
        &self,
        target: &Target<'_>,
        owner_changed: bool,
        path: &dyn Fn() -> PathBuf,
    ) -> Result<Xattrs, ChownError> {
        let names = target
            .list_xattrs()
            .map_err(|e| ChownError::io("list xattrs of", path(), e))?;
        let has = |wanted: &str| names.split(|b| *b == 0).any(|n| n == wanted.as_bytes());
        let problem = |xattr: &'static str, p: XattrProblem| match p {
            XattrProblem::Malformed => ChownError::MalformedXattr {
                path: path(),
                xattr,
            },
            XattrProblem::Unmapped { kind, id } => ChownError::UnmappedXattrId {
                path: path(),
                xattr,
                kind,
                id,
            },
        };
        let mut out = Xattrs::default();
        if has(CAPABILITY) {
            if let Some(old) = target
                .get_xattr(CAPABILITY)
                .map_err(|e| ChownError::io("read security.capability of", path(), e))?
            {
                let new = remap_capability(&old, self.maps).map_err(|p| problem(CAPABILITY, p))?;
                // The chown clears the capability: write it back in any case.
                if owner_changed || new != old {
                    out.writes.push((CAPABILITY, new));
                }
            }
        }
        for acl in ACLS {
            if !has(acl) {
                continue;
            }
            let Some(old) = target
                .get_xattr(acl)
                .map_err(|e| ChownError::io("read POSIX ACL of", path(), e))?
            else {
                continue;
            };
            if let Some(new) = remap_acl(&old, self.maps).map_err(|p| problem(acl, p))? {
                out.writes.push((acl, new));
            }
        }
        Ok(out)
    }
}

fn set_action(name: &str) -> &'static str {
    if name == CAPABILITY {
        "restore security.capability of"
    } else {
        "write POSIX ACL of"
    }
}

/// Xattrs to write back, in order.
#[derive(Default)]
struct Xattrs {
    writes: Vec<(&'static str, Vec<u8>)>,
}

impl Target<'_> {
    fn chown(&self, uid: u32, gid: u32) -> rustix::io::Result<()> {
        let (u, g) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
        match self {
            Target::Dir(fd) => rfs::fchown(fd, u, g),
            Target::At { dir, name } => rfs::chownat(dir, *name, u, g, AtFlags::SYMLINK_NOFOLLOW),
        }
    }

    /// `chmod` without following a symlink: non-directories are opened
    /// `O_PATH|O_NOFOLLOW`, checked, and changed through `/proc/self/fd`.
    fn chmod(&self, mode: u32) -> rustix::io::Result<()> {
        let mode = Mode::from_raw_mode(mode);
        match self {
            Target::Dir(fd) => rfs::fchmod(fd, mode),
            Target::At { dir, name } => {
                let fd = rfs::openat(
                    dir,
                    *name,
                    OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                if FileType::from_raw_mode(rfs::fstat(&fd)?.st_mode) == FileType::Symlink {
                    return Err(Errno::LOOP);
                }
                rfs::chmod(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str(), mode)
            }
        }
    }

    /// `/proc/self/fd/<dir>/<name>`: only `name` is looked up below `dir`.
    fn proc_path(dir: &BorrowedFd<'_>, name: &CStr) -> Vec<u8> {
        let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
        path.extend_from_slice(name.to_bytes());
        path
    }

    /// The NUL-separated xattr names (empty where xattrs are unsupported).
    fn list_xattrs(&self) -> rustix::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; 256];
        loop {
            let r = match self {
                Target::Dir(fd) => rfs::flistxattr(fd, &mut buf[..]),
                Target::At { dir, name } => {
                    rfs::llistxattr(Self::proc_path(dir, name).as_slice(), &mut buf[..])
                }
            };
            match r {
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(buf);
                }
                Err(Errno::RANGE) => buf.resize(buf.len() * 4, 0),
                Err(Errno::NOTSUP) => return Ok(Vec::new()),
                Err(e) => return Err(e),
            }
        }
    }

    /// An xattr's value; `None` when absent or unreadable the way Go
    /// tolerates (`ENOTSUP`, `EOVERFLOW`).
    fn get_xattr(&self, key: &str) -> rustix::io::Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; 256];
        loop {
            let r = match self {
                Target::Dir(fd) => rfs::fgetxattr(fd, key, &mut buf[..]),
                Target::At { dir, name } => {
                    rfs::lgetxattr(Self::proc_path(dir, name).as_slice(), key, &mut buf[..])
                }
            };
            match r {
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(Some(buf));
                }
                Err(Errno::RANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
                Err(Errno::NODATA | Errno::NOTSUP | Errno::OVERFLOW) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    fn set_xattr(&self, key: &str, value: &[u8]) -> rustix::io::Result<()> {
        let flags = rfs::XattrFlags::empty();
        match self {
            Target::Dir(fd) => rfs::fsetxattr(fd, key, value, flags),
            Target::At { dir, name } => {
                rfs::lsetxattr(Self::proc_path(dir, name).as_slice(), key, value, flags)
            }
        }
    }
}
