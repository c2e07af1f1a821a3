//! Creating and removing layer directories (`create` / `Remove` of
//! c/storage's overlay driver).
//!
//! ```text
//! <home>/<id>/{diff/, link, work/, merged/, empty/ | lower + lower-layers}
//! <home>/l/<link> -> ../<id>/diff
//! ```

use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rustix::fs::{Gid, Mode, OFlags, Uid, CWD};
use rustix::io::Errno;

use super::links::ensure_link_dir;
use super::{
    mountinfo, validate_id, LayoutError, OverlayDriver, LINK_DIR, LINK_FILE, LOWER_FILE,
    LOWER_LAYERS_FILE, MAX_LOWER_LAYERS, MOUNT_PROGRAM_FLAG,
};

/// Mode of a parentless layer's `diff` (c/storage's `defaultPerms`).
const DEFAULT_DIFF_MODE: u32 = 0o555;

/// What a child layer takes from its parent, all read before anything is
/// created.
struct ParentPlan {
    /// Owner of the parent's layer directory (v1.43's owner for the child's
    /// `diff`, `work`, `merged`).
    owner: (u32, u32),
    /// Permission bits of the parent's `diff`.
    diff_mode: u32,
    /// Content of the child's `lower` file.
    lower: String,
    /// Content of the child's `lower-layers` file.
    lower_layers: String,
}

impl OverlayDriver {
    /// Create layer `id`'s directory on top of `parent`, as c/storage v1.43's
    /// overlay `create` does, plus upstream's `lower-layers` file. The layer
    /// directory is owned by `root_owner` (the root of the layer's mapping);
    /// the home and `l/` are created if missing.
    ///
    /// Refuses an invalid id, an existing layer directory, a missing parent
    /// (or one without a `link` file) and a chain deeper than
    /// [`MAX_LOWER_LAYERS`]. On any error, nothing is left behind.
    pub fn create_layer(
        &self,
        id: &str,
        parent: Option<&str>,
        root_owner: (u32, u32),
    ) -> Result<(), LayoutError> {
        validate_id(id)?;
        let plan = parent.map(|p| self.parent_plan(id, p)).transpose()?;
        let dir = self.layer_dir(id);
        if fs::symlink_metadata(&dir).is_ok() {
            return Err(LayoutError::LayerExists {
                id: id.to_owned(),
                path: dir,
            });
        }
        self.ensure_home()?;
        match rustix::fs::mkdirat(CWD, &dir, Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                return Err(LayoutError::LayerExists {
                    id: id.to_owned(),
                    path: dir,
                })
            }
            Err(e) => return Err(LayoutError::io(id, "create", dir, e)),
        }
        let mut guard = CreateGuard {
            driver: self,
            id,
            link: None,
            done: false,
        };
        let dir_fd = open_dir(CWD, &dir).map_err(|e| LayoutError::io(id, "open", &dir, e))?;
        set_owner_mode(&dir_fd, root_owner, 0o700)
            .map_err(|e| LayoutError::io(id, "set owner and mode of", &dir, e))?;

        let (owner, diff_mode) = plan
            .as_ref()
            .map_or((root_owner, DEFAULT_DIFF_MODE), |p| (p.owner, p.diff_mode));
        mkdir_owned(id, &dir_fd, &dir, "diff", diff_mode, owner)?;
        let link = self.create_link(id)?;
        guard.link = Some(link.clone());
        write_new_at(id, &dir_fd, &dir, LINK_FILE, link.as_bytes())?;
        mkdir_owned(id, &dir_fd, &dir, "work", 0o700, owner)?;
        mkdir_owned(id, &dir_fd, &dir, "merged", 0o700, owner)?;
        match &plan {
            None => mkdir_owned(id, &dir_fd, &dir, "empty", 0o700, owner)?,
            Some(plan) => {
                write_new_at(id, &dir_fd, &dir, LOWER_FILE, plan.lower.as_bytes())?;
                write_new_at(
                    id,
                    &dir_fd,
                    &dir,
                    LOWER_LAYERS_FILE,
                    plan.lower_layers.as_bytes(),
                )?;
            }
        }
        guard.done = true;
        tracing::debug!(layer = id, parent, link = %link, "created layer directory");
        Ok(())
    }

    /// Remove layer `id`'s `l/` link and directory, tolerating missing
    /// pieces (as c/storage's `Remove`). Refuses while anything is mounted
    /// inside the layer directory (its `merged`, a leaked `mapped/N`): a
    /// recursive delete would go through the mount.
    ///
    /// The `l/<link>` symlink is only removed when it points to this layer.
    pub fn remove_layer(&self, id: &str) -> Result<(), LayoutError> {
        validate_id(id)?;
        let dir = self.layer_dir(id);
        if let Err(e) = fs::symlink_metadata(&dir) {
            if e.kind() == io::ErrorKind::NotFound {
                return Ok(());
            }
            return Err(LayoutError::io(id, "examine", dir, e));
        }
        if let Some(mounted) = mountinfo::mount_points_under(&dir)
            .map_err(|e| LayoutError::io(id, "read mount table for", &dir, e))?
            .into_iter()
            .next()
        {
            return Err(LayoutError::LayerMounted {
                id: id.to_owned(),
                path: mounted,
            });
        }
        match self.read_link_file(id) {
            Ok(Some(name)) => self.remove_own_link(id, &name)?,
            Ok(None) => {}
            Err(e) => tracing::debug!(layer = id, error = %e, "not removing the layer's l/ link"),
        }
        remove_tree(&dir).map_err(|e| LayoutError::io(id, "remove", &dir, e))?;
        tracing::debug!(layer = id, "removed layer directory");
        Ok(())
    }

    /// Everything `create_layer` needs from `parent`, or why it cannot be.
    fn parent_plan(&self, id: &str, parent: &str) -> Result<ParentPlan, LayoutError> {
        validate_id(parent)?;
        let parent_dir = self.layer_dir(parent);
        let missing = |path: &Path| LayoutError::ParentNotFound {
            id: id.to_owned(),
            parent: parent.to_owned(),
            path: path.to_owned(),
        };
        let stat = |path: &Path| match fs::metadata(path) {
            Ok(m) => Ok(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(missing(path)),
            Err(e) => Err(LayoutError::io(id, "examine", path, e)),
        };
        let dir_meta = stat(&parent_dir)?;
        let diff_meta = stat(&parent_dir.join("diff"))?;
        let link = self
            .read_link_file(parent)?
            .ok_or_else(|| missing(&parent_dir.join(LINK_FILE)))?;

        let mut lower = format!("{LINK_DIR}/{link}");
        let parent_lower = parent_dir.join(LOWER_FILE);
        match fs::read_to_string(&parent_lower) {
            Ok(rest) if !rest.is_empty() => {
                lower.push(':');
                lower.push_str(&rest);
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(LayoutError::io(id, "read", parent_lower, e)),
        }
        let parent_ids = self.lower_layer_ids(parent)?;
        if parent_ids.len() + 1 > MAX_LOWER_LAYERS {
            return Err(LayoutError::ChainTooDeep {
                id: id.to_owned(),
                depth: parent_ids.len() + 1,
                max: MAX_LOWER_LAYERS,
            });
        }
        let lower_layers = std::iter::once(parent)
            .chain(parent_ids.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(":");
        Ok(ParentPlan {
            owner: (dir_meta.uid(), dir_meta.gid()),
            diff_mode: diff_meta.mode() & 0o777,
            lower,
            lower_layers,
        })
    }

    /// Create the home (0700, with `.has-mount-program` = `false`, as
    /// c/storage's first `Init` leaves it) and `l/` when missing.
    fn ensure_home(&self) -> Result<(), LayoutError> {
        match fs::symlink_metadata(&self.home) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(LayoutError::home_io(
                    "use as the overlay home",
                    &self.home,
                    io::Error::from(io::ErrorKind::NotADirectory),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&self.home)
                    .and_then(|()| {
                        fs::set_permissions(&self.home, fs::Permissions::from_mode(0o700))
                    })
                    .map_err(|e| LayoutError::home_io("create", &self.home, e))?;
                let flag = self.home.join(MOUNT_PROGRAM_FLAG);
                fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&flag)
                    .and_then(|mut f| f.write_all(b"false"))
                    .map_err(|e| LayoutError::home_io("create", &flag, e))?;
            }
            Err(e) => return Err(LayoutError::home_io("examine", &self.home, e)),
        }
        ensure_link_dir(&self.home.join(LINK_DIR))
    }

    /// Remove `l/<name>` if it points to this layer.
    fn remove_own_link(&self, id: &str, name: &str) -> Result<(), LayoutError> {
        let path = self.home.join(LINK_DIR).join(name);
        match fs::read_link(&path) {
            Ok(target) if target.as_os_str() == format!("../{id}/diff").as_str() => {
                match fs::remove_file(&path) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(LayoutError::io(id, "remove", path, e)),
                }
            }
            Ok(target) => {
                tracing::warn!(layer = id, link = ?path, ?target, "l/ link belongs to another layer; kept");
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(LayoutError::io(id, "read symlink", path, e)),
        }
    }
}

/// Removes a half-created layer (directory and `l/` link) unless `done`.
struct CreateGuard<'a> {
    driver: &'a OverlayDriver,
    id: &'a str,
    link: Option<String>,
    done: bool,
}

impl Drop for CreateGuard<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Some(link) = &self.link {
            let path = self.driver.home.join(LINK_DIR).join(link);
            if let Err(e) = fs::remove_file(&path) {
                tracing::error!(layer = self.id, path = ?path, error = %e, "cleaning up a failed layer creation");
            }
        }
        let dir = self.driver.layer_dir(self.id);
        if let Err(e) = remove_tree(&dir) {
            tracing::error!(layer = self.id, path = ?dir, error = %e, "cleaning up a failed layer creation");
        }
    }
}

pub(super) fn open_dir(
    dirfd: impl AsFd,
    name: impl rustix::path::Arg,
) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dirfd,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn set_owner_mode(fd: &OwnedFd, owner: (u32, u32), mode: u32) -> rustix::io::Result<()> {
    rustix::fs::fchown(
        fd,
        Some(Uid::from_raw(owner.0)),
        Some(Gid::from_raw(owner.1)),
    )?;
    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))
}

/// `mkdirat` + exact owner and mode, relative to the layer's directory fd.
pub(super) fn mkdir_owned(
    id: &str,
    dir_fd: &OwnedFd,
    dir: &Path,
    name: &str,
    mode: u32,
    owner: (u32, u32),
) -> Result<(), LayoutError> {
    let path = dir.join(name);
    rustix::fs::mkdirat(dir_fd, name, Mode::from_raw_mode(mode))
        .map_err(|e| LayoutError::io(id, "create", &path, e))?;
    let fd = open_dir(dir_fd, name).map_err(|e| LayoutError::io(id, "open", &path, e))?;
    set_owner_mode(&fd, owner, mode)
        .map_err(|e| LayoutError::io(id, "set owner and mode of", &path, e))
}

/// Write a new file (0644) in the layer's directory.
fn write_new_at(
    id: &str,
    dir_fd: &OwnedFd,
    dir: &Path,
    name: &str,
    data: &[u8],
) -> Result<(), LayoutError> {
    let path = dir.join(name);
    let write = || -> io::Result<()> {
        let fd = rustix::fs::openat(
            dir_fd,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o644))?;
        fs::File::from(fd).write_all(data)
    };
    write().map_err(|e| LayoutError::io(id, "write", path, e))
}

/// `rm -rf`, also when (as non-root) directories like a 0555 `diff` are not
/// writable: on `EACCES` it makes every directory owner-writable and retries.
fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            make_dirs_writable(path)?;
            fs::remove_dir_all(path)
        }
        Err(e) => Err(e),
    }
}

fn make_dirs_writable(path: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if !meta.is_dir() {
        return Ok(());
    }
    fs::set_permissions(
        path,
        fs::Permissions::from_mode(meta.mode() & 0o7777 | 0o700),
    )?;
    for entry in fs::read_dir(path)? {
        make_dirs_writable(&entry?.path())?;
    }
    Ok(())
}
