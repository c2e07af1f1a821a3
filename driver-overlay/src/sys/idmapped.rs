//! [`idmapped_clone`]: a detached, idmapped bind mount of a directory.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::io::Errno;
use rustix::mount::{open_tree, OpenTreeFlags};

use super::IdmapError;

/// `MOUNT_ATTR_IDMAP` from `<linux/mount.h>`.
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr` (`MOUNT_ATTR_SIZE_VER0`, 32 bytes).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A detached clone of the mount at `dirfd`/`path` (an empty `path`: at
/// `dirfd` itself; not recursive: mounts below it are left out), idmapped
/// with the user namespace `userns` and made private. The clone lives until
/// the returned fd is closed; name it `/proc/self/fd/<fd>` or use it as a
/// `*at` dirfd.
pub fn idmapped_clone(
    dirfd: impl AsFd,
    path: &Path,
    userns: BorrowedFd<'_>,
) -> Result<OwnedFd, IdmapError> {
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if path.as_os_str().is_empty() {
        flags |= OpenTreeFlags::AT_EMPTY_PATH;
    }
    let tree = open_tree(dirfd, path, flags).map_err(|e| IdmapError::OpenTree {
        path: path.to_owned(),
        source: e.into(),
    })?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: libc::MS_PRIVATE,
        userns_fd: userns.as_raw_fd() as u64,
    };
    mount_setattr(tree.as_fd(), &attr).map_err(|e| match e {
        Errno::PERM => IdmapError::NotPermitted {
            path: path.to_owned(),
        },
        Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP => IdmapError::Unsupported {
            path: path.to_owned(),
            source: e.into(),
        },
        _ => IdmapError::SetAttr {
            path: path.to_owned(),
            source: e.into(),
        },
    })?;
    Ok(tree)
}

/// `int mount_setattr(int dirfd, const char *pathname, unsigned int flags,
/// struct mount_attr *attr, size_t size);` on the mount `fd` itself
/// (`pathname = ""`, `AT_EMPTY_PATH`)
/// (<https://man7.org/linux/man-pages/man2/mount_setattr.2.html>).
fn mount_setattr(fd: BorrowedFd<'_>, attr: &MountAttr) -> Result<(), Errno> {
    // SAFETY: `fd` is a live fd, the path is a NUL-terminated empty string,
    // and `attr` points to a valid `struct mount_attr` of the size passed,
    // which the kernel only reads.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            std::ptr::from_ref(attr),
            std::mem::size_of::<MountAttr>(),
        )
    };
    if ret < 0 {
        let err = io::Error::last_os_error();
        return Err(Errno::from_io_error(&err).unwrap_or(Errno::IO));
    }
    Ok(())
}
