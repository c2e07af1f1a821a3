//! Creating and removing layer directories (`create` / `Remove` of
//! c/storage's overlay driver), all relative to the home's descriptor.
//!
//! ```text
//! <home>/<id>/{diff/, link, work/, merged/, empty/ | lower + lower-layers}
//! <home>/l/<link> -> ../<id>/diff
//! ```

use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use layerstore::confined::Dir;
use layerstore::LayerId;
use rustix::fs::{AtFlags, Gid, Mode, OFlags, Uid};
use rustix::io::Errno;

use super::links::ensure_link_dir;
use super::{
    mountinfo, LayoutError, OverlayDriver, DRIVER_NAME, LINK_DIR, LINK_FILE, LOWER_FILE,
    LOWER_LAYERS_FILE, MAX_LOWER_LAYERS, MOUNT_PROGRAM_FLAG,
};

/// `<home>/.layerstore-trash`: layer directories being deleted. A dotfile,
/// so no tool lists it as a layer.
///
/// It exists only while a deletion is unfinished, and then holds a `link`
/// file ([`TRASH_LINK`]) and an empty `diff` beside the entries, as a
/// layer directory does: containers/storage's repair of lost links
/// (`recreateSymlinks`, run when a mount finds an `l/` link missing) reads
/// the `link` file of every directory in the home and fails on one that
/// has none. It then makes `l/<TRASH_LINK>` point here; emptying the trash
/// removes that link too.
pub(crate) const TRASH_DIR: &str = ".layerstore-trash";

/// The trash's short link name (26 base32 characters, as c/storage's).
pub(crate) const TRASH_LINK: &str = "LAYERSTORETRASHLAYERSTORET";

/// `l/<TRASH_LINK>`'s target.
pub(crate) const TRASH_LINK_TARGET: &str = "../.layerstore-trash/diff";

/// The entries of the trash that are not deletions.
const TRASH_OWN: [&str; 2] = [LINK_FILE, "diff"];

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
    /// Refuses an existing layer directory, a missing parent (or one
    /// without a `link` file, or reached through a symlink) and a chain
    /// deeper than [`MAX_LOWER_LAYERS`]. On any error, nothing is left
    /// behind.
    pub fn create_layer(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        root_owner: (u32, u32),
    ) -> Result<(), LayoutError> {
        let plan = parent.map(|p| self.parent_plan(id, p)).transpose()?;
        let dir = self.layer_dir(id);
        let home = self.ensure_home()?;
        match rustix::fs::mkdirat(home.fd(), id.as_str(), Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                return Err(LayoutError::LayerExists {
                    id: id.to_string(),
                    path: dir,
                })
            }
            Err(e) => return Err(LayoutError::io(id.as_str(), "create", dir, e)),
        }
        let mut guard = CreateGuard {
            home: &home,
            id,
            link: None,
            done: false,
        };
        let layer = home
            .open_dir(id.as_str())
            .map_err(|e| LayoutError::io(id.as_str(), "open", &dir, e))?;
        set_owner_mode(layer.fd(), root_owner, 0o700)
            .map_err(|e| LayoutError::io(id.as_str(), "set owner and mode of", &dir, e))?;

        let (owner, diff_mode) = plan
            .as_ref()
            .map_or((root_owner, DEFAULT_DIFF_MODE), |p| (p.owner, p.diff_mode));
        mkdir_owned(id.as_str(), &layer, "diff", diff_mode, owner)?;
        let link = self.create_link(&home, id)?;
        guard.link = Some(link.clone());
        write_new_at(id.as_str(), &layer, LINK_FILE, link.as_bytes())?;
        mkdir_owned(id.as_str(), &layer, "work", 0o700, owner)?;
        mkdir_owned(id.as_str(), &layer, "merged", 0o700, owner)?;
        match &plan {
            None => mkdir_owned(id.as_str(), &layer, "empty", 0o700, owner)?,
            Some(plan) => {
                write_new_at(id.as_str(), &layer, LOWER_FILE, plan.lower.as_bytes())?;
                write_new_at(
                    id.as_str(),
                    &layer,
                    LOWER_LAYERS_FILE,
                    plan.lower_layers.as_bytes(),
                )?;
            }
        }
        guard.done = true;
        tracing::debug!(layer = %id, parent = ?parent.map(LayerId::as_str), link = %link, "created layer directory");
        Ok(())
    }

    /// Remove layer `id`'s `l/` link and directory, tolerating missing
    /// pieces (as c/storage's `Remove`). Refuses while anything is mounted
    /// inside the layer directory (its `merged`, a leaked `mapped/N`): the
    /// removal never crosses a mount, follows a symlink or leaves the
    /// layer's directory.
    ///
    /// The directory is first renamed into `<home>/.layerstore-trash/`, in
    /// one step: when that fails nothing has changed (the error says why),
    /// and once it succeeds the layer is gone even if deleting the trash
    /// entry fails half-way (logged; `layerstore gc` empties the trash).
    /// On a filesystem too full to make the trash the directory is removed
    /// in place; if that stops half way the error is
    /// [`LayoutError::PartlyRemoved`] (the layer must stay incomplete).
    ///
    /// The `l/<link>` symlink is only removed when it points to this layer.
    pub fn remove_layer(&self, id: &LayerId) -> Result<(), LayoutError> {
        let Some(home) = self.home_dir()? else {
            return Ok(());
        };
        let dir = self.layer_dir(id);
        match home.stat(id.as_str()) {
            Ok(None) => {
                // Already in the trash (a removal killed before it took
                // the link): the l/ link that still points here goes.
                if let Ok(Some(name)) = self.find_link_pointing_to(&home, id) {
                    self.remove_own_link(&home, id, &name)?;
                }
                return Ok(());
            }
            Ok(Some(_)) => {}
            Err(e) => return Err(LayoutError::io(id.as_str(), "examine", dir, e)),
        }
        if let Some(mounted) = mountinfo::mount_points_under(&dir)
            .map_err(|e| LayoutError::io(id.as_str(), "read mount table for", &dir, e))?
            .into_iter()
            .next()
        {
            return Err(LayoutError::LayerMounted {
                id: id.to_string(),
                path: mounted,
            });
        }
        let link = match self.read_link_file(&home, id) {
            Ok(Some(link)) => Some(link),
            // No `link` file, or an empty or broken one (a create killed
            // before or while writing it): an l/ link may point here all
            // the same, and only such a link is removed.
            Ok(None) => self.find_link_pointing_to(&home, id).unwrap_or(None),
            Err(e) => {
                tracing::debug!(layer = %id, error = %e, "the layer's link file is broken; looking for its l/ link by target");
                self.find_link_pointing_to(&home, id).unwrap_or(None)
            }
        };
        if let Err(e) = self.make_trash(&home) {
            let full = matches!(Errno::from_io_error(&e), Some(Errno::NOSPC | Errno::DQUOT));
            if !full {
                return Err(LayoutError::io(
                    id.as_str(),
                    "create",
                    home.display(TRASH_DIR),
                    e,
                ));
            }
            // A full filesystem has no block for the trash: removing in
            // place is what frees space (a removal killed half way leaves a
            // partial layer directory, which gc removes as the unrecorded
            // or incomplete layer it then is).
            tracing::warn!(layer = %id, error = %e, "no room for the trash: removing the layer directory in place");
            let removed = home.remove_tree(Path::new(id.as_str()));
            // What the failed attempt made of the trash goes too (a trash
            // without its link file would trip podman's link repair).
            self.remove_trash_if_empty(&home);
            if let Err(source) = removed {
                return Err(LayoutError::PartlyRemoved {
                    id: id.to_string(),
                    path: dir,
                    source,
                });
            }
            if let Some(name) = link {
                if let Err(e) = self.remove_own_link(&home, id, &name) {
                    tracing::warn!(layer = %id, error = %e, "the layer's l/ link stays (gc removes it)");
                }
            }
            return Ok(());
        }
        let trash =
            Path::new(TRASH_DIR).join(format!("{id}-{}", super::links::generate_link_name()?));
        home.rename(id.as_str(), &trash)
            .map_err(|e| LayoutError::io(id.as_str(), "move to the trash", &dir, e))?;
        if let Some(name) = link {
            if let Err(e) = self.remove_own_link(&home, id, &name) {
                tracing::warn!(layer = %id, error = %e, "the layer's l/ link stays (gc removes it)");
            }
        }
        match home.remove_tree(&trash) {
            // An empty trash leaves nothing behind.
            Ok(_) => self.remove_trash_if_empty(&home),
            Err(e) => {
                tracing::warn!(layer = %id, path = ?home.display(&trash), error = %e, "the removed layer's files stay in the trash (layerstore gc empties it)")
            }
        }
        tracing::debug!(layer = %id, "removed layer directory");
        Ok(())
    }

    /// What the trash (`<home>/.layerstore-trash/`) holds: layer
    /// directories whose deletion did not finish.
    pub fn trash_entries(&self) -> Result<Vec<String>, LayoutError> {
        let Some(home) = self.home_dir()? else {
            return Ok(Vec::new());
        };
        let Some(trash) = home
            .open_dir_same_mount(TRASH_DIR)
            .map_err(|e| LayoutError::home_io("open", home.display(TRASH_DIR), e))?
        else {
            return Ok(Vec::new());
        };
        let entries = trash
            .entries()
            .map_err(|e| LayoutError::home_io("list", trash.path(), e))?;
        Ok(entries
            .into_iter()
            .filter_map(|e| e.name.into_string().ok())
            .filter(|n| !n.contains('/') && n != "." && n != "..")
            .filter(|n| !TRASH_OWN.contains(&n.as_str()))
            .collect())
    }

    /// The trash with its `link` file and `diff` (see [`TRASH_DIR`]).
    ///
    /// Whatever else stands at those names (a file or symlink where a
    /// directory belongs, a `link` with other content) is ours to replace:
    /// the names are layerstore's, and a trash that cannot be made would
    /// block every removal.
    fn make_trash(&self, home: &Dir) -> std::io::Result<()> {
        if home.stat(TRASH_DIR)?.is_some_and(|m| !m.is_dir()) {
            home.remove_file(TRASH_DIR)?;
        }
        home.create_dir_all(TRASH_DIR, 0o700)?;
        let trash = home
            .open_dir_same_mount(TRASH_DIR)?
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
        if trash.stat("diff")?.is_some_and(|m| !m.is_dir()) {
            trash.remove_file("diff")?;
        }
        trash.create_dir("diff", 0o700)?;
        let link_ok = trash.stat(LINK_FILE)?.is_some_and(|m| m.is_file())
            && trash.read_limited(LINK_FILE, 64).ok().as_deref() == Some(TRASH_LINK.as_bytes());
        if !link_ok {
            trash.write_atomic(LINK_FILE, TRASH_LINK.as_bytes(), false)?;
        }
        Ok(())
    }

    /// Remove the trash, its `link`, `diff` and `l/` link, when it holds no
    /// deletion any more.
    fn remove_trash_if_empty(&self, home: &Dir) {
        let Ok(Some(trash)) = home.open_dir_same_mount(TRASH_DIR) else {
            return;
        };
        let Ok(entries) = trash.entries() else {
            return;
        };
        if entries
            .iter()
            .any(|e| !TRASH_OWN.iter().any(|own| e.name == *own))
        {
            return;
        }
        let link = Path::new(LINK_DIR).join(TRASH_LINK);
        if matches!(home.read_link(&link), Ok(Some(t)) if t == Path::new(TRASH_LINK_TARGET)) {
            let _ = home.remove_file(&link);
        }
        let _ = trash.remove_file(LINK_FILE);
        let _ = trash.remove_tree("diff");
        let _ = rustix::fs::unlinkat(home.fd(), TRASH_DIR, AtFlags::REMOVEDIR);
    }

    /// Delete trash entry `name` (never across a mount or a symlink).
    pub fn empty_trash_entry(&self, name: &str) -> Result<(), LayoutError> {
        if name.is_empty()
            || name.contains('/')
            || name == "."
            || name == ".."
            || TRASH_OWN.contains(&name)
        {
            return Err(LayoutError::BadLowerEntry {
                id: String::new(),
                path: self.home.join(TRASH_DIR),
                entry: name.to_owned(),
            });
        }
        let Some(home) = self.home_dir()? else {
            return Ok(());
        };
        let rel = Path::new(TRASH_DIR).join(name);
        home.remove_tree(&rel)
            .map_err(|e| LayoutError::home_io("remove", home.display(&rel), e))?;
        self.remove_trash_if_empty(&home);
        Ok(())
    }

    /// Give `<id>/diff` (the top of the layer's content) to `owner`.
    pub fn set_top_owner(&self, id: &LayerId, owner: (u32, u32)) -> Result<(), LayoutError> {
        let layer = self.open_layer(id)?;
        rustix::fs::chownat(
            layer.fd(),
            "diff",
            Some(Uid::from_raw(owner.0)),
            Some(Gid::from_raw(owner.1)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| LayoutError::io(id.as_str(), "chown", self.diff_path(id), e))
    }

    /// Everything `create_layer` needs from `parent`, or why it cannot be.
    fn parent_plan(&self, id: &LayerId, parent: &LayerId) -> Result<ParentPlan, LayoutError> {
        let parent_dir = self.layer_dir(parent);
        let missing = |path: &Path| LayoutError::ParentNotFound {
            id: id.to_string(),
            parent: parent.to_string(),
            path: path.to_owned(),
        };
        let home = self.home_dir()?.ok_or_else(|| missing(&parent_dir))?;
        let layer = match home.open_dir(parent.as_str()) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing(&parent_dir)),
            Err(e) => return Err(LayoutError::io(id.as_str(), "open", &parent_dir, e)),
        };
        let dir_meta = layer
            .stat_self()
            .map_err(|e| LayoutError::io(id.as_str(), "examine", &parent_dir, e))?;
        let diff_meta = match layer.stat("diff") {
            Ok(Some(m)) if m.is_dir() => m,
            Ok(_) => return Err(missing(&parent_dir.join("diff"))),
            Err(e) => {
                return Err(LayoutError::io(
                    id.as_str(),
                    "examine",
                    parent_dir.join("diff"),
                    e,
                ))
            }
        };
        let link = self
            .read_link_file(&home, parent)?
            .ok_or_else(|| missing(&parent_dir.join(LINK_FILE)))?;

        let mut lower = format!("{LINK_DIR}/{link}");
        let parent_lower = parent_dir.join(LOWER_FILE);
        match layer.read_opt_limited(LOWER_FILE, super::SMALL_FILE_MAX) {
            Ok(Some(rest)) if !rest.is_empty() => {
                let rest = String::from_utf8(rest).map_err(|_| LayoutError::BadLowerEntry {
                    id: parent.to_string(),
                    path: parent_lower.clone(),
                    entry: "(not UTF-8)".into(),
                })?;
                lower.push(':');
                lower.push_str(&rest);
            }
            Ok(_) => {}
            Err(e) => return Err(LayoutError::io(id.as_str(), "read", parent_lower, e)),
        }
        let parent_ids = self.lower_layer_ids(parent)?;
        if parent_ids.len() + 1 > MAX_LOWER_LAYERS {
            return Err(LayoutError::ChainTooDeep {
                id: id.to_string(),
                depth: parent_ids.len() + 1,
                max: MAX_LOWER_LAYERS,
            });
        }
        let lower_layers = std::iter::once(parent.as_str())
            .chain(parent_ids.iter().map(LayerId::as_str))
            .collect::<Vec<_>>()
            .join(":");
        Ok(ParentPlan {
            owner: (dir_meta.uid, dir_meta.gid),
            diff_mode: diff_meta.mode & 0o777,
            lower,
            lower_layers,
        })
    }

    /// The home, created when missing (0700, with `.has-mount-program` =
    /// `false`, as c/storage's first `Init` leaves it), with `l/`.
    pub(crate) fn ensure_home(&self) -> Result<Dir, LayoutError> {
        let home = self.home_dir_created()?;
        ensure_link_dir(&home)?;
        Ok(home)
    }

    /// The home, created when missing (0700, with `.has-mount-program` =
    /// `false`), without `l/`.
    pub(crate) fn home_dir_created(&self) -> Result<Dir, LayoutError> {
        let home = match self.home_dir()? {
            Some(home) => home,
            None => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(self.graph_root())
                    .map_err(|e| LayoutError::home_io("create", self.graph_root(), e))?;
                let graph = Dir::open(self.graph_root())
                    .map_err(|e| LayoutError::home_io("open", self.graph_root(), e))?;
                graph
                    .create_dir(DRIVER_NAME, 0o700)
                    .map_err(|e| LayoutError::home_io("create", &self.home, e))?;
                let home = graph
                    .open_dir(DRIVER_NAME)
                    .map_err(|e| LayoutError::home_io("open", &self.home, e))?;
                rustix::fs::fchmod(home.fd(), Mode::from_raw_mode(0o700))
                    .map_err(|e| LayoutError::home_io("chmod", &self.home, e))?;
                let flag = self.home.join(MOUNT_PROGRAM_FLAG);
                match home.open_file(
                    MOUNT_PROGRAM_FLAG,
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
                    0o600,
                ) {
                    Ok(fd) => std::fs::File::from(fd)
                        .write_all(b"false")
                        .map_err(|e| LayoutError::home_io("write", &flag, e))?,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(LayoutError::home_io("create", &flag, e)),
                }
                home
            }
        };
        Ok(home)
    }

    /// Remove `l/<name>` if it points to this layer.
    fn remove_own_link(&self, home: &Dir, id: &LayerId, name: &str) -> Result<(), LayoutError> {
        let rel = Path::new(LINK_DIR).join(name);
        let path = home.display(&rel);
        match home.read_link(&rel) {
            Ok(Some(target)) if target.as_os_str() == format!("../{id}/diff").as_str() => home
                .remove_file(&rel)
                .map(|_| ())
                .map_err(|e| LayoutError::io(id.as_str(), "remove", path, e)),
            Ok(Some(target)) => {
                tracing::warn!(layer = %id, link = ?path, ?target, "l/ link belongs to another layer; kept");
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) if e.raw_os_error() == Some(Errno::INVAL.raw_os_error()) => {
                tracing::warn!(layer = %id, link = ?path, "l/ entry is not a symlink; kept");
                Ok(())
            }
            Err(e) => Err(LayoutError::io(id.as_str(), "read symlink", path, e)),
        }
    }
}

/// Removes a half-created layer (directory and `l/` link) unless `done`.
struct CreateGuard<'a> {
    home: &'a Dir,
    id: &'a LayerId,
    link: Option<String>,
    done: bool,
}

impl Drop for CreateGuard<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Some(link) = &self.link {
            let rel = Path::new(LINK_DIR).join(link);
            if let Err(e) = self.home.remove_file(&rel) {
                tracing::error!(layer = %self.id, path = ?self.home.display(&rel), error = %e, "cleaning up a failed layer creation");
            }
        }
        if let Err(e) = self.home.remove_tree(self.id.as_str()) {
            tracing::error!(layer = %self.id, path = ?self.home.display(self.id.as_str()), error = %e, "cleaning up a failed layer creation");
        }
    }
}

/// `openat(dir, name, O_RDONLY|O_DIRECTORY|O_NOFOLLOW)`.
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

fn set_owner_mode(fd: impl AsFd, owner: (u32, u32), mode: u32) -> rustix::io::Result<()> {
    rustix::fs::fchown(
        &fd,
        Some(Uid::from_raw(owner.0)),
        Some(Gid::from_raw(owner.1)),
    )?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
}

/// `mkdirat` + exact owner and mode, relative to the layer's directory.
pub(super) fn mkdir_owned(
    id: &str,
    dir: &Dir,
    name: &str,
    mode: u32,
    owner: (u32, u32),
) -> Result<(), LayoutError> {
    let path = dir.display(name);
    rustix::fs::mkdirat(dir.fd(), name, Mode::from_raw_mode(mode))
        .map_err(|e| LayoutError::io(id, "create", &path, e))?;
    let fd = open_dir(dir.fd(), name).map_err(|e| LayoutError::io(id, "open", &path, e))?;
    set_owner_mode(&fd, owner, mode)
        .map_err(|e| LayoutError::io(id, "set owner and mode of", &path, e))
}

/// Write a new file (0644) in the layer's directory.
fn write_new_at(id: &str, dir: &Dir, name: &str, data: &[u8]) -> Result<(), LayoutError> {
    let path = dir.display(name);
    let write = || -> io::Result<()> {
        let fd = dir.open_file(
            OsStr::new(name),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
            0o644,
        )?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o644))?;
        std::fs::File::from(fd).write_all(data)
    };
    write().map_err(|e| LayoutError::io(id, "write", path, e))
}

use std::os::unix::fs::DirBuilderExt;
