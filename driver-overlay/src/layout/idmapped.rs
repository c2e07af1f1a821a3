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
//! lowers; detached lowers as used here need a kernel whose overlayfs
//! accepts layers from a not-yet-attached mount, which [`crate::probe`]
//! checks):
//! - an overlay mount cannot itself be idmapped, but its lower layers can
//!   be; overlayfs takes a private clone of every lower mount when it is
//!   mounted, so our detached clone's fd is closed right after mounting and
//!   nothing of it stays behind (no `mapped/N` directories, as c/storage
//!   v1.43 leaves, and nothing in `/proc/self/mountinfo`);
//! - the upper layer is not idmapped: what the container writes lands in
//!   `diff` with host ids, so `diff` (its root, and `work`/`merged`) is owned
//!   by the host ids of the container's root, as upstream c/storage does;
//! - any map the kernel accepts for a user namespace works, contiguous or
//!   not; ids that the map does not cover show as the overflow id (65534).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use layerstore::idmap::{root_pair, IdMap};
use rustix::fs::{chownat, AtFlags, Gid, Uid, CWD};

use super::create::open_dir;
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
            source,
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

    /// A detached idmapped clone of `home`, and `lowers` (absolute paths
    /// under `home`) rewritten to go through it.
    pub(super) fn idmap_lowers(
        &self,
        id: &str,
        home: &Path,
        lowers: &mut [PathBuf],
    ) -> Result<OwnedFd, LayoutError> {
        let tree = sys::idmapped_clone(CWD, home, self.userns.as_fd()).map_err(|source| {
            LayoutError::Idmap {
                id: id.to_owned(),
                source,
            }
        })?;
        let base = PathBuf::from(format!("/proc/self/fd/{}", tree.as_raw_fd()));
        for lower in lowers.iter_mut() {
            let relative = lower
                .strip_prefix(home)
                .map_err(|_| LayoutError::BadLowerEntry {
                    id: id.to_owned(),
                    path: home.to_owned(),
                    entry: lower.display().to_string(),
                })?;
            *lower = base.join(relative);
        }
        Ok(tree)
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
