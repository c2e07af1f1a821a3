//! Overlay mounts for a container with a uid/gid mapping, without copying
//! the layers: the lower layers are seen through one idmapped mount.
//!
//! ```text
//! <home>                    cloned once, detached: open_tree(OPEN_TREE_CLONE) + mount_setattr(MOUNT_ATTR_IDMAP)
//! /proc/self/fd/<n>/<L>/diff   each lower (and, read-only, the layer's own diff) through that clone
//! <id>/diff  <id>/work      upper and work stay on the plain mount, owned by the mapped root pair
//! <id>/merged               overlay mount point
//! ```
//!
//! Kernel facts this relies on (Linux >= 5.19 for overlayfs on idmapped
//! lowers, checked by [`crate::probe`]):
//! - an overlay mount cannot itself be idmapped, but its lower layers can
//!   be; overlayfs takes a private clone of every lower mount when it is
//!   mounted, so our detached clone's fd is closed right after mounting and
//!   nothing of it stays behind (no `mapped/N` directories, as c/storage
//!   v1.43 leaves, and nothing in `/proc/self/mountinfo`);
//! - overlayfs accepts lowers on a detached (not yet attached) mount only
//!   since Linux 6.15 (`clone_private_mount` used to require a mount in the
//!   caller's namespace, failing with `EINVAL`); on older kernels the clone
//!   is attached on `<id>/mapped/0` for the duration of the mount, as
//!   c/storage does, then detached and the directories removed;
//! - the upper layer is not idmapped: what the container writes lands in
//!   `diff` with host ids, so `diff` (its root, and `work`/`merged`) is owned
//!   by the host ids of the container's root, as upstream c/storage does;
//! - any map the kernel accepts for a user namespace works, contiguous or
//!   not; ids that the map does not cover show as the overflow id (65534).

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use layerstore::idmap::{root_pair, IdMap};
use rustix::fs::{chownat, AtFlags, Gid, Uid, CWD};
use rustix::io::Errno;
use rustix::mount::{move_mount, unmount, MoveMountFlags, UnmountFlags};

use super::create::open_dir;
use super::mount::{Method, Plan};
use super::LayoutError;
use crate::sys::{self, IdmapError};

/// The user namespace for a mount's maps, made before anything on disk is
/// touched (so bad maps change nothing).
pub(super) struct Mapping {
    userns: OwnedFd,
    /// Host `(uid, gid)` of the container's root.
    pub(super) root: (u32, u32),
}

impl Mapping {
    /// `None` for the host mapping (both maps empty); otherwise both maps
    /// must be non-empty and valid.
    pub(super) fn new(
        id: &str,
        uids: &[IdMap],
        gids: &[IdMap],
    ) -> Result<Option<Self>, LayoutError> {
        if uids.is_empty() && gids.is_empty() {
            return Ok(None);
        }
        let idmap = |source| LayoutError::Idmap {
            id: id.to_owned(),
            source: Box::new(source),
        };
        let userns = sys::user_namespace(uids, gids).map_err(idmap)?;
        let root = root_pair(uids, gids).map_err(|source| {
            idmap(IdmapError::InvalidMap {
                kind: "uid/gid",
                map: format!(
                    "{} / {}",
                    layerstore::idmap::format_id_map(uids),
                    layerstore::idmap::format_id_map(gids)
                ),
                source,
            })
        })?;
        Ok(Some(Mapping { userns, root }))
    }

    /// Mount `plan`, whose lowers are absolute paths under `home`, with
    /// every lower seen through one idmapped clone of `home`: detached
    /// (named `/proc/self/fd/<n>/...`), or, when overlayfs refuses that with
    /// `EINVAL` (kernels before 6.15 only take lowers from attached mounts)
    /// or `attach` is set, attached on `<dir>/mapped/0` as c/storage does.
    /// Either way the clone is gone when this returns.
    pub(super) fn mount(
        &self,
        plan: &mut Plan<'_>,
        home: &Path,
        dir: &Path,
        forced: Option<Method>,
        attach: bool,
    ) -> Result<(), LayoutError> {
        let id = plan.id;
        let tree = sys::idmapped_clone(CWD, home, self.userns.as_fd()).map_err(|source| {
            LayoutError::Idmap {
                id: id.to_owned(),
                source: Box::new(source),
            }
        })?;
        let home_lowers = std::mem::take(&mut plan.lowers);
        if !attach {
            let base = PathBuf::from(format!("/proc/self/fd/{}", tree.as_raw_fd()));
            plan.lowers = through(id, home, &base, &home_lowers)?;
            match plan.mount(forced) {
                Err(e) if is_einval(&e) => {
                    tracing::debug!(layer = id, error = %e, "overlay refused detached idmapped lowers; attaching them");
                }
                other => return other,
            }
        }
        let attached = Attached::new(id, dir, tree)?;
        plan.lowers = through(id, home, &attached.path, &home_lowers)?;
        plan.mount(forced)
    }

    /// Own `<dir>/{diff,work,merged}` (the directories themselves) by the
    /// container's root.
    pub(super) fn chown_upper(&self, id: &str, dir: &Path) -> Result<(), LayoutError> {
        let dir_fd = open_dir(CWD, dir).map_err(|e| LayoutError::io(id, "open", dir, e))?;
        let (uid, gid) = self.root;
        for name in ["diff", "work", "merged"] {
            chownat(
                &dir_fd,
                name,
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| LayoutError::io(id, "chown", dir.join(name), e))?;
        }
        Ok(())
    }
}

/// `lowers` (absolute, under `home`) as the same paths under `base`
/// (where a clone of `home` can be reached).
fn through(
    id: &str,
    home: &Path,
    base: &Path,
    lowers: &[PathBuf],
) -> Result<Vec<PathBuf>, LayoutError> {
    lowers
        .iter()
        .map(|lower| {
            let relative = lower
                .strip_prefix(home)
                .map_err(|_| LayoutError::BadLowerEntry {
                    id: id.to_owned(),
                    path: home.to_owned(),
                    entry: lower.display().to_string(),
                })?;
            Ok(base.join(relative))
        })
        .collect()
}

/// Whether a mount failed with `EINVAL`.
fn is_einval(e: &LayoutError) -> bool {
    matches!(e, LayoutError::Mount { source, .. } if source.raw_os_error() == Some(Errno::INVAL.raw_os_error()))
}

/// The idmapped clone attached on `<layer>/mapped/0` while the overlay is
/// mounted; dropping it detaches it and removes both directories.
struct Attached {
    path: PathBuf,
}

impl Attached {
    fn new(id: &str, dir: &Path, tree: OwnedFd) -> Result<Attached, LayoutError> {
        let mapped = dir.join("mapped");
        let path = mapped.join("0");
        for d in [&mapped, &path] {
            match fs::DirBuilder::new().mode(0o700).create(d) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(LayoutError::io(id, "create", d, e)),
            }
        }
        let attached = Attached { path };
        move_mount(
            tree.as_fd(),
            "",
            CWD,
            &attached.path,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .map_err(|e| LayoutError::io(id, "attach the idmapped clone on", &attached.path, e))?;
        Ok(attached)
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let _ = unmount(&self.path, UnmountFlags::DETACH);
        let _ = fs::remove_dir(&self.path);
        if let Some(mapped) = self.path.parent() {
            let _ = fs::remove_dir(mapped);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowers_go_through_the_clone() {
        let home = Path::new("/g/overlay");
        let lowers = vec![
            home.join("c/diff1"),
            home.join("b/diff"),
            home.join("a/diff"),
            home.join("a/empty"),
        ];
        let lowers = through("c", home, Path::new("/proc/self/fd/7"), &lowers).unwrap();
        assert_eq!(
            lowers,
            [
                "/proc/self/fd/7/c/diff1",
                "/proc/self/fd/7/b/diff",
                "/proc/self/fd/7/a/diff",
                "/proc/self/fd/7/a/empty"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn a_lower_outside_the_home_is_refused() {
        let lowers = vec![PathBuf::from("/elsewhere/x/diff")];
        let err = through(
            "c",
            Path::new("/g/overlay"),
            Path::new("/proc/self/fd/7"),
            &lowers,
        )
        .unwrap_err();
        assert!(matches!(err, LayoutError::BadLowerEntry { .. }), "{err}");
    }

    #[test]
    fn bad_maps_are_refused_before_anything_is_made() {
        let m = |c, h, s| IdMap {
            container_id: c,
            host_id: h,
            size: s,
        };
        assert!(
            Mapping::new("x", &[], &[]).unwrap().is_none(),
            "host mapping"
        );
        for (uids, gids, needle) in [
            (vec![], vec![m(0, 1000, 1)], "uid map \"\""),
            (vec![m(0, 1000, 1)], vec![], "gid map \"\""),
            (
                vec![m(0, 1000, 10), m(5, 5000, 10)],
                vec![m(0, 1000, 1)],
                "0:1000:10:5:5000:10",
            ),
            (vec![m(0, 1000, 0)], vec![m(0, 1000, 1)], "size 0"),
        ] {
            let Err(err) = Mapping::new("x", &uids, &gids) else {
                panic!("{uids:?} {gids:?} accepted");
            };
            let mut text = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            assert!(text.contains(needle), "{text}");
        }
    }
}
