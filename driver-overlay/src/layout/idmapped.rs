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

use std::os::fd::{AsFd, OwnedFd};

use std::path::{Path, PathBuf};

use layerstore::confined::Dir;
use layerstore::idmap::{root_pair, IdMap};
use rustix::fs::{chownat, AtFlags, Gid, Uid};
use rustix::io::Errno;
use rustix::mount::{move_mount, unmount, MoveMountFlags, UnmountFlags};

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

    /// Mount `plan`, whose lowers are beneath `home`, with every lower
    /// seen through one idmapped clone of `home`: detached, or, when
    /// overlayfs refuses that with `EINVAL` (kernels before 6.15 only take
    /// lowers from attached mounts) or `attach` is set, attached on
    /// `<layer>/mapped/0` as c/storage does. Each lower is opened again
    /// beneath the clone, without following symlinks. Either way the clone
    /// is gone when this returns.
    pub(super) fn mount(
        &self,
        plan: &mut Plan<'_>,
        home: &Dir,
        layer: &Dir,
        forced: Option<Method>,
        attach: bool,
    ) -> Result<(), LayoutError> {
        let id = plan.id.as_str();
        let tree = sys::idmapped_clone(home.fd(), Path::new(""), self.userns.as_fd()).map_err(
            |source| LayoutError::Idmap {
                id: id.to_owned(),
                source: Box::new(source),
            },
        )?;
        let home_lowers = std::mem::take(&mut plan.lowers);
        let relative: Vec<PathBuf> = home_lowers
            .iter()
            .map(|l| relative_to(id, home.path(), l.path()))
            .collect::<Result<_, _>>()?;
        let clone = Dir::from_fd(tree, home.path().to_owned());
        if !attach {
            plan.lowers = through(id, &clone, &relative)?;
            match plan.mount(forced) {
                Err(e) if is_einval(&e) => {
                    tracing::debug!(layer = id, error = %e, "overlay refused detached idmapped lowers; attaching them");
                }
                other => return other,
            }
            plan.lowers.clear();
        }
        let attached = Attached::new(id, layer, clone)?;
        plan.lowers = through(id, &attached.root, &relative)?;
        plan.mount(forced)
    }

    /// Own `<layer>/{diff,work,merged}` (the directories themselves) by the
    /// container's root.
    pub(super) fn chown_upper(&self, id: &str, layer: &Dir) -> Result<(), LayoutError> {
        let (uid, gid) = self.root;
        for name in ["diff", "work", "merged"] {
            chownat(
                layer.fd(),
                name,
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| LayoutError::io(id, "chown", layer.display(name), e))?;
        }
        Ok(())
    }
}

/// `lower` as a path relative to `home` (both as they were opened).
fn relative_to(id: &str, home: &Path, lower: &Path) -> Result<PathBuf, LayoutError> {
    lower
        .strip_prefix(home)
        .map(Path::to_path_buf)
        .map_err(|_| LayoutError::BadLowerEntry {
            id: id.to_owned(),
            path: home.to_owned(),
            entry: lower.display().to_string(),
        })
}

/// The lowers at `relative` paths, opened beneath `base` (where a clone of
/// the home can be reached) without following symlinks.
fn through(id: &str, base: &Dir, relative: &[PathBuf]) -> Result<Vec<Dir>, LayoutError> {
    relative
        .iter()
        .map(|rel| {
            base.open_dir(rel).map_err(|e| {
                LayoutError::io(id, "open through the idmapped clone", base.display(rel), e)
            })
        })
        .collect()
}

/// Whether a mount failed with `EINVAL`.
fn is_einval(e: &LayoutError) -> bool {
    matches!(e, LayoutError::Mount { source, .. } if source.raw_os_error() == Some(Errno::INVAL.raw_os_error()))
}

/// The idmapped clone attached on `<layer>/mapped/0` while the overlay is
/// mounted; dropping it detaches it and removes both directories.
struct Attached<'a> {
    layer: &'a Dir,
    /// The attached clone's root, opened through `mapped/0`.
    root: Dir,
}

impl<'a> Attached<'a> {
    fn new(id: &str, layer: &'a Dir, tree: Dir) -> Result<Attached<'a>, LayoutError> {
        for d in ["mapped", "mapped/0"] {
            layer
                .create_dir(d, 0o700)
                .map_err(|e| LayoutError::io(id, "create", layer.display(d), e))?;
        }
        let point = layer
            .open_dir("mapped/0")
            .map_err(|e| LayoutError::io(id, "open", layer.display("mapped/0"), e))?;
        move_mount(
            tree.fd(),
            "",
            point.fd(),
            "",
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
        )
        .map_err(|e| LayoutError::io(id, "attach the idmapped clone on", point.path(), e))?;
        drop(tree);
        let root = layer
            .open_dir("mapped/0")
            .map_err(|e| LayoutError::io(id, "open", layer.display("mapped/0"), e))?;
        Ok(Attached { layer, root })
    }
}

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        let _ = unmount(self.root.proc_path(), UnmountFlags::DETACH);
        let _ = rustix::fs::unlinkat(self.layer.fd(), "mapped/0", AtFlags::REMOVEDIR);
        let _ = rustix::fs::unlinkat(self.layer.fd(), "mapped", AtFlags::REMOVEDIR);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowers_are_relative_to_the_home() {
        let home = Path::new("/g/overlay");
        assert_eq!(
            relative_to("c", home, &home.join("b/diff1")).unwrap(),
            PathBuf::from("b/diff1")
        );
        let err = relative_to("c", home, Path::new("/elsewhere/x/diff")).unwrap_err();
        assert!(matches!(err, LayoutError::BadLowerEntry { .. }), "{err}");
    }

    #[test]
    fn lowers_are_reopened_beneath_the_clone_without_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("a/diff")).unwrap();
        std::fs::create_dir_all(tmp.path().join("victim")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("victim"), tmp.path().join("b")).unwrap();
        let base = Dir::open(tmp.path()).unwrap();
        assert_eq!(
            through("c", &base, &[PathBuf::from("a/diff")])
                .unwrap()
                .len(),
            1
        );
        assert!(through("c", &base, &[PathBuf::from("b")]).is_err());
        assert!(through("c", &base, &[PathBuf::from("../x")]).is_err());
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
