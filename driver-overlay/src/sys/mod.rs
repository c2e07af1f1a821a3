//! The only module of layerstore allowed `unsafe`: the system calls that
//! neither std nor rustix wraps, behind safe functions.
//!
//! It owns two kernel objects:
//!
//! - **A user namespace for a mapping** ([`user_namespace`]). The kernel
//!   describes an id mapping only as a user namespace; to get one we create a
//!   child process with `clone3(CLONE_NEWUSER | CLONE_PIDFD)`, write its
//!   `/proc/<pid>/uid_map` and `gid_map` from the parent (each map in one
//!   `write`, at most 340 lines and under one page; root needs no `setgroups`
//!   `deny`), open `/proc/<pid>/ns/user`, then kill and reap the child. The
//!   namespace lives on as long as the returned fd. The pidfd comes from the
//!   same `clone3` call, so it always names our child; `/proc/<pid>` is only
//!   trusted after it has been opened *and* the pidfd still reports the child
//!   alive (a zombie keeps its pid until we reap it, but another thread's
//!   `waitpid(-1)` could reap it and let the pid be reused).
//!   We are multi-threaded, so between `clone3` and `_exit` the child only
//!   makes async-signal-safe system calls (`close`, `read`, `_exit`): it
//!   blocks reading a pipe whose write end only the parent holds, so it also
//!   goes away if the parent dies.
//! - **A detached idmapped clone of a directory** ([`idmapped_clone`]):
//!   `open_tree(OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)` makes an anonymous bind
//!   mount that belongs to no mount namespace yet, then
//!   `mount_setattr(fd, "", AT_EMPTY_PATH, {MOUNT_ATTR_IDMAP, userns_fd,
//!   MS_PRIVATE})` idmaps it. Files owned by host id `h` appear owned by
//!   `map(h)` where `map` is the namespace's container → host direction, i.e.
//!   a file owned by container-side 0 in the layer shows as the mapped host
//!   root. It needs `CAP_SYS_ADMIN` in the initial user namespace (root, never
//!   rootless), a user namespace other than the initial one, a filesystem
//!   that supports idmapped mounts (ext4/xfs 5.12, btrfs 5.15, tmpfs 6.3...),
//!   and a mount that is not already idmapped. The clone disappears when its
//!   last fd is closed, unless it was attached with `move_mount`; overlayfs
//!   takes its own private clone of every lower layer, so the fd can be
//!   closed right after the overlay mount.

#![allow(unsafe_code)]

mod idmapped;
mod userns;

pub use idmapped::idmapped_clone;
pub use userns::user_namespace;

use std::io;
use std::path::PathBuf;

use layerstore::idmap::IdMapError;

/// Why a user namespace or an idmapped mount could not be made. Every
/// variant names the maps (podman syntax) or the directory involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdmapError {
    /// A map the kernel would refuse (overlap, zero size, too many extents,
    /// too long), or an empty one.
    #[error("{kind} map {map:?} is not valid")]
    InvalidMap {
        /// `"uid"` or `"gid"`.
        kind: &'static str,
        /// The map, podman syntax.
        map: String,
        /// What is wrong.
        source: IdMapError,
    },
    /// `clone3(CLONE_NEWUSER)` failed (no permission, `user.max_user_namespaces`
    /// reached, kernel without clone3).
    #[error("creating a user namespace for uids {uids:?} gids {gids:?} failed")]
    Spawn {
        /// The uid map, podman syntax.
        uids: String,
        /// The gid map, podman syntax.
        gids: String,
        /// The errno.
        source: io::Error,
    },
    /// Writing `/proc/<pid>/uid_map` or `gid_map`, or opening `ns/user`, failed.
    #[error("setting up the user namespace for uids {uids:?} gids {gids:?}: {action} failed")]
    Namespace {
        /// The uid map, podman syntax.
        uids: String,
        /// The gid map, podman syntax.
        gids: String,
        /// What failed (`write /proc/<pid>/uid_map`, ...).
        action: String,
        /// The errno.
        source: io::Error,
    },
    /// `open_tree(OPEN_TREE_CLONE)` of the directory failed.
    #[error("cloning the mount of {} failed", path.display())]
    OpenTree {
        /// The directory.
        path: PathBuf,
        /// The errno.
        source: io::Error,
    },
    /// `mount_setattr` said `EPERM`: not root in the initial user
    /// namespace, or the mount is already idmapped.
    #[error(
        "idmapping the mount of {} is not permitted (needs root in the initial user namespace and a mount that is not idmapped yet)",
        path.display()
    )]
    NotPermitted {
        /// The directory.
        path: PathBuf,
    },
    /// `mount_setattr` said `EINVAL`/`ENOSYS`/`EOPNOTSUPP`: this kernel or the
    /// directory's filesystem cannot make idmapped mounts.
    #[error("the kernel cannot idmap the mount of {}", path.display())]
    Unsupported {
        /// The directory.
        path: PathBuf,
        /// The errno.
        source: io::Error,
    },
    /// `mount_setattr` failed otherwise.
    #[error("idmapping the mount of {} failed", path.display())]
    SetAttr {
        /// The directory.
        path: PathBuf,
        /// The errno.
        source: io::Error,
    },
}
