//! Doing what an [`Action`] says, relative to the layer root's fd and
//! never through a symlink: parents are reached with
//! `openat(O_DIRECTORY|O_NOFOLLOW)`, objects are created exclusively, and
//! metadata is set with `AT_SYMLINK_NOFOLLOW` or on the object's own fd.
//!
//! Order per object, as containers/storage: create (a non-directory in
//! the way is removed first, a directory in the way of a non-directory is
//! removed with its contents), owner, then mode (chown clears setuid),
//! times, xattrs (after chown, which clears `security.capability`).
//! Directory times are set again once every entry is written.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::rc::Rc;

use rustix::fs::{self as rfs, AtFlags, FileType, Gid, Mode, OFlags, Timestamps, Uid};
use rustix::io::Errno;

use super::classify::{Action, Meta, RelPath};
use super::error::{errno, show, DiffError};
use super::fsops::{self, DirCache, WalkError, WalkErrorKind};
use super::header::Timestamp;
use super::stream::ContentSource;
use super::{ApplyOptions, WhiteoutFormat};

/// How the metadata of an object reached by (dir, name) is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A symlink: owner, times (not clamped, like Go), xattrs.
    Symlink,
    /// Device, fifo, or a hard link to a non-symlink: everything.
    Node,
    /// A hard link to a symlink: owner and xattrs only.
    LinkToSymlink,
}

/// Applies one layer's actions below its root.
pub(crate) struct Applier {
    dirs: DirCache,
    opts: ApplyOptions,
    /// containers/storage's `unshare.IsRootless()`: devices that cannot be
    /// created and xattrs refused with EPERM are skipped.
    rootless: bool,
    /// Directory times, set again at the end.
    dir_times: Vec<(RelPath, Option<Timestamp>, Timestamp)>,
}

impl Applier {
    pub(crate) fn new(root: OwnedFd, opts: &ApplyOptions) -> Self {
        let rootless = !rustix::process::geteuid().is_root()
            || std::env::var_os("_CONTAINERS_USERNS_CONFIGURED").is_some();
        Applier {
            dirs: DirCache::new(root, rootless || opts.ignore_chown_errors),
            opts: opts.clone(),
            rootless,
            dir_times: Vec::new(),
        }
    }

    /// Do what `action` says; `content` is the entry's data.
    pub(crate) fn apply(
        &mut self,
        entry: &str,
        action: &Action,
        content: &mut dyn ContentSource,
    ) -> Result<(), DiffError> {
        match action {
            Action::Skip(_) => Ok(()),
            Action::Dir { path, meta } => self.dir(entry, path, meta),
            Action::File { path, meta } => self.file(entry, path, meta, content),
            Action::Symlink { path, target, meta } => self.symlink(entry, path, target, meta),
            Action::Hardlink { path, target, meta } => self.hardlink(entry, path, target, meta),
            Action::CharDev {
                path,
                major,
                minor,
                meta,
            } => self.node(
                entry,
                path,
                FileType::CharacterDevice,
                rfs::makedev(*major, *minor),
                meta,
            ),
            Action::BlockDev {
                path,
                major,
                minor,
                meta,
            } => self.node(
                entry,
                path,
                FileType::BlockDevice,
                rfs::makedev(*major, *minor),
                meta,
            ),
            Action::Fifo { path, meta } => self.node(entry, path, FileType::Fifo, 0, meta),
            Action::Whiteout { path, uid, gid } => self.whiteout(entry, path, *uid, *gid),
            Action::Opaque { dir } => self.opaque(entry, dir),
        }
    }

    /// Set the directories' times, now that nothing is created in them.
    pub(crate) fn finish(mut self) -> Result<(), DiffError> {
        for (path, atime, mtime) in std::mem::take(&mut self.dir_times) {
            let Ok(fd) = self.dirs.open(&path.0, false) else {
                continue; // replaced by a later entry
            };
            // Go sets the header's atime as is here: none means the epoch.
            let times = Timestamps {
                last_access: clamped(atime.unwrap_or_default()),
                last_modification: clamped(mtime),
            };
            rfs::futimens(&*fd, &times)
                .map_err(io(&show(&path.to_bytes()), "setting the directory times"))?;
        }
        Ok(())
    }

    /// The parent directory's fd (created if missing) and the last name.
    fn parent<'p>(
        &mut self,
        entry: &str,
        path: &'p RelPath,
    ) -> Result<(Rc<OwnedFd>, &'p [u8]), DiffError> {
        let (name, parent) = path
            .split_last()
            .expect("classify never gives the root here");
        let fd = self
            .dirs
            .open(parent, true)
            .map_err(|e| walk_error(entry, parent, e))?;
        Ok((fd, name))
    }

    /// Clear the way for a new object at `name`; returns whether a
    /// directory stays (`keep_dir` and one is there).
    fn make_room(
        &mut self,
        entry: &str,
        dir: BorrowedFd<'_>,
        name: &[u8],
        keep_dir: bool,
    ) -> Result<bool, DiffError> {
        match fsops::file_type(dir, name).map_err(io(entry, "inspecting the existing entry"))? {
            None => Ok(false),
            Some(FileType::Directory) if keep_dir => Ok(true),
            Some(FileType::Directory) => {
                self.dirs.clear();
                fsops::remove_tree(dir, name)
                    .map_err(io(entry, "removing the directory it replaces"))?;
                Ok(false)
            }
            Some(_) => {
                rfs::unlinkat(dir, name, AtFlags::empty())
                    .map_err(io(entry, "removing the entry it replaces"))?;
                Ok(false)
            }
        }
    }

    fn dir(&mut self, entry: &str, path: &RelPath, meta: &Meta) -> Result<(), DiffError> {
        let (parent, name) = self.parent(entry, path)?;
        if !self.make_room(entry, parent.as_fd(), name, true)? {
            rfs::mkdirat(&*parent, name, Mode::from_raw_mode(0o700))
                .map_err(io(entry, "creating the directory"))?;
        }
        let fd =
            fsops::open_dir(parent.as_fd(), name).map_err(io(entry, "opening the directory"))?;
        self.set_meta_fd(entry, fd.as_fd(), meta)?;
        self.dir_times.push((path.clone(), meta.atime, meta.mtime));
        Ok(())
    }

    fn file(
        &mut self,
        entry: &str,
        path: &RelPath,
        meta: &Meta,
        content: &mut dyn ContentSource,
    ) -> Result<(), DiffError> {
        let (parent, name) = self.parent(entry, path)?;
        self.make_room(entry, parent.as_fd(), name, false)?;
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rfs::openat(&*parent, name, flags, Mode::from_raw_mode(0o600))
            .map_err(io(entry, "creating the file"))?;
        let mut file = File::from(fd);
        content.copy_to(&mut |chunk| {
            file.write_all(chunk).map_err(|source| DiffError::Io {
                op: "writing the file",
                entry: entry.to_owned(),
                source,
            })
        })?;
        self.set_meta_fd(entry, file.as_fd(), meta)
    }

    fn symlink(
        &mut self,
        entry: &str,
        path: &RelPath,
        target: &[u8],
        meta: &Meta,
    ) -> Result<(), DiffError> {
        let (parent, name) = self.parent(entry, path)?;
        self.make_room(entry, parent.as_fd(), name, false)?;
        rfs::symlinkat(target, &*parent, name).map_err(io(entry, "creating the symlink"))?;
        self.set_meta_at(entry, parent.as_fd(), name, meta, Kind::Symlink)
    }

    fn hardlink(
        &mut self,
        entry: &str,
        path: &RelPath,
        target: &RelPath,
        meta: &Meta,
    ) -> Result<(), DiffError> {
        let (parent, name) = self.parent(entry, path)?;
        self.make_room(entry, parent.as_fd(), name, false)?;
        let (tname, _) = target
            .split_last()
            .expect("classify never gives the root here");
        let (tdir, kind) = self.link_target(entry, target)?;
        rfs::linkat(&*tdir, tname, &*parent, name, AtFlags::empty())
            .map_err(io(entry, "creating the hard link"))?;
        self.set_meta_at(entry, parent.as_fd(), name, meta, kind)
    }

    /// The directory of a hard link's target, reached without following
    /// symlinks, and how to treat the link: the target must be an existing
    /// non-directory of this layer.
    fn link_target(
        &mut self,
        entry: &str,
        target: &RelPath,
    ) -> Result<(Rc<OwnedFd>, Kind), DiffError> {
        const MISSING: &str =
            "the target does not exist (it must be an earlier entry of this layer)";
        let bad = |reason| DiffError::HardlinkTarget {
            entry: entry.to_owned(),
            target: show(&target.to_bytes()),
            reason,
        };
        let (tname, tparent) = target
            .split_last()
            .expect("classify never gives the root here");
        let tdir = self.dirs.open(tparent, false).map_err(|e| match e.kind {
            WalkErrorKind::Symlink => bad("a parent of the target is a symlink"),
            WalkErrorKind::NotDir => bad("a parent of the target is not a directory"),
            WalkErrorKind::Missing => bad(MISSING),
            WalkErrorKind::Io(e) => io(entry, "opening the target's directory")(e),
        })?;
        let kind = match fsops::file_type(tdir.as_fd(), tname)
            .map_err(io(entry, "inspecting the target"))?
        {
            None => return Err(bad(MISSING)),
            Some(FileType::Directory) => return Err(bad("the target is a directory")),
            Some(FileType::Symlink) => Kind::LinkToSymlink,
            Some(_) => Kind::Node,
        };
        Ok((tdir, kind))
    }

    fn node(
        &mut self,
        entry: &str,
        path: &RelPath,
        ft: FileType,
        dev: u64,
        meta: &Meta,
    ) -> Result<(), DiffError> {
        let (parent, name) = self.parent(entry, path)?;
        self.make_room(entry, parent.as_fd(), name, false)?;
        // Permissions (setuid & co. too) are set after the chown below.
        match rfs::mknodat(
            &*parent,
            name,
            ft,
            Mode::from_raw_mode(meta.mode & 0o777),
            dev,
        ) {
            Ok(()) => {}
            // containers/storage does not create devices in a user namespace.
            Err(Errno::PERM) if self.rootless && ft != FileType::Fifo => {
                tracing::debug!(entry, "not creating a device node without privileges");
                return Ok(());
            }
            Err(e) => return Err(io(entry, "creating the node")(e)),
        }
        self.set_meta_at(entry, parent.as_fd(), name, meta, Kind::Node)
    }

    fn whiteout(
        &mut self,
        entry: &str,
        path: &RelPath,
        uid: u32,
        gid: u32,
    ) -> Result<(), DiffError> {
        let (name, parent_path) = path.split_last().expect("a whiteout names something");
        let parent = match self.dirs.open(parent_path, true) {
            Ok(fd) => fd,
            // Go ignores ENOTDIR: `.wh.foo` then `foo/.wh.bar` (foo is a whiteout).
            Err(WalkError {
                kind: WalkErrorKind::NotDir,
                ..
            }) => return Ok(()),
            Err(e) => return Err(walk_error(entry, parent_path, e)),
        };
        match rfs::mknodat(&*parent, name, FileType::CharacterDevice, Mode::empty(), 0) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                return Err(DiffError::WhiteoutConflict {
                    entry: entry.to_owned(),
                    target: show(&path.to_bytes()),
                })
            }
            Err(e) => return Err(io(entry, "creating the whiteout")(e)),
        }
        let owner = Meta {
            uid,
            gid,
            ..Meta::default()
        };
        self.chown_at(entry, parent.as_fd(), name, &owner)
    }

    fn opaque(&mut self, entry: &str, dir: &RelPath) -> Result<(), DiffError> {
        let fd = self
            .dirs
            .open(&dir.0, true)
            .map_err(|e| walk_error(entry, &dir.0, e))?;
        let user = matches!(
            self.opts.whiteout,
            WhiteoutFormat::Overlay { user_xattr: true }
        );
        let key = if user {
            "user.overlay.opaque"
        } else {
            "trusted.overlay.opaque"
        };
        rfs::fsetxattr(&*fd, key, b"y", rfs::XattrFlags::empty())
            .map_err(io(entry, "marking the directory opaque"))
    }

    fn set_meta_fd(&self, entry: &str, fd: BorrowedFd<'_>, meta: &Meta) -> Result<(), DiffError> {
        // Like Go's `SafeLchown`: no chown when the owner is already right
        // (a chown would drop `security.capability`, e.g. via a hard link).
        let st = rfs::fstat(fd).map_err(io(entry, "inspecting the new entry"))?;
        if (st.st_uid, st.st_gid) != (meta.uid, meta.gid) {
            let r = rfs::fchown(
                fd,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
            );
            self.chown_result(entry, r)?;
        }
        rfs::fchmod(fd, Mode::from_raw_mode(meta.mode)).map_err(io(entry, "setting the mode"))?;
        rfs::futimens(fd, &times(meta, true)).map_err(io(entry, "setting the times"))?;
        for (key, value) in &meta.xattrs {
            let r = rfs::fsetxattr(fd, key.as_slice(), value, rfs::XattrFlags::empty());
            self.xattr_result(entry, key, r)?;
        }
        Ok(())
    }

    fn set_meta_at(
        &self,
        entry: &str,
        dir: BorrowedFd<'_>,
        name: &[u8],
        meta: &Meta,
        kind: Kind,
    ) -> Result<(), DiffError> {
        self.chown_at(entry, dir, name, meta)?;
        if kind == Kind::Node {
            // `name` was just created here by us and is not a symlink.
            let mode = Mode::from_raw_mode(meta.mode);
            rfs::chmodat(dir, name, mode, AtFlags::empty())
                .map_err(io(entry, "setting the mode"))?;
        }
        if kind != Kind::LinkToSymlink {
            let t = times(meta, kind == Kind::Node);
            rfs::utimensat(dir, name, &t, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(io(entry, "setting the times"))?;
        }
        for (key, value) in &meta.xattrs {
            self.xattr_result(entry, key, fsops::lsetxattr_at(dir, name, key, value))?;
        }
        Ok(())
    }

    /// `lchown` unless the owner is already right (Go's `SafeLchown`).
    fn chown_at(
        &self,
        entry: &str,
        dir: BorrowedFd<'_>,
        name: &[u8],
        meta: &Meta,
    ) -> Result<(), DiffError> {
        let st = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io(entry, "inspecting the new entry"))?;
        if (st.st_uid, st.st_gid) == (meta.uid, meta.gid) {
            return Ok(());
        }
        let (uid, gid) = (Some(Uid::from_raw(meta.uid)), Some(Gid::from_raw(meta.gid)));
        self.chown_result(
            entry,
            rfs::chownat(dir, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW),
        )
    }

    fn chown_result(&self, entry: &str, r: rustix::io::Result<()>) -> Result<(), DiffError> {
        match r {
            Err(e) if self.opts.ignore_chown_errors => {
                tracing::warn!(entry, error = %e, "ignoring a chown error (ignore_chown_errors)");
                Ok(())
            }
            r => r.map_err(io(entry, "setting the owner")),
        }
    }

    /// Like Go: xattrs the filesystem does not support are skipped with a
    /// warning, and so are EPERM refusals when rootless.
    fn xattr_result(
        &self,
        entry: &str,
        key: &[u8],
        r: rustix::io::Result<()>,
    ) -> Result<(), DiffError> {
        match r {
            Ok(()) => Ok(()),
            Err(e) if e == Errno::OPNOTSUPP || (e == Errno::PERM && self.rootless) => {
                tracing::warn!(entry, xattr = %show(key), error = %e, "ignoring an xattr the filesystem refuses");
                Ok(())
            }
            Err(e) => Err(DiffError::Xattr {
                entry: entry.to_owned(),
                name: show(key),
                source: errno(e),
            }),
        }
    }
}

/// `DiffError::Io` for `entry` doing `op`.
fn io<'a>(entry: &'a str, op: &'static str) -> impl Fn(Errno) -> DiffError + 'a {
    move |e| DiffError::Io {
        op,
        entry: entry.to_owned(),
        source: errno(e),
    }
}

fn walk_error(entry: &str, comps: &[Vec<u8>], e: WalkError) -> DiffError {
    let component = show(&comps[..=e.index].join(&b'/'));
    let entry = entry.to_owned();
    match e.kind {
        WalkErrorKind::Symlink => DiffError::SymlinkInPath { entry, component },
        WalkErrorKind::NotDir => DiffError::NotADirectory { entry, component },
        WalkErrorKind::Missing => DiffError::Io {
            op: "opening a parent directory",
            entry,
            source: errno(Errno::NOENT),
        },
        WalkErrorKind::Io(e) => DiffError::Io {
            op: "opening a parent directory",
            entry,
            source: errno(e),
        },
    }
}

/// Go's `Chtimes` moves times before the epoch to the epoch.
fn clamped(t: Timestamp) -> rfs::Timespec {
    let t = if t.sec < 0 { Timestamp::default() } else { t };
    rfs::Timespec {
        tv_sec: t.sec,
        tv_nsec: t.nsec.into(),
    }
}

fn exact(t: Timestamp) -> rfs::Timespec {
    rfs::Timespec {
        tv_sec: t.sec,
        tv_nsec: t.nsec.into(),
    }
}

/// Access time never before the modification time (as containers/storage).
fn times(meta: &Meta, clamp: bool) -> Timestamps {
    let atime = meta.atime.filter(|a| *a > meta.mtime).unwrap_or(meta.mtime);
    let conv = if clamp { clamped } else { exact };
    Timestamps {
        last_access: conv(atime),
        last_modification: conv(meta.mtime),
    }
}
