//! What the store needs from a graph driver. The store crate knows nothing
//! about overlayfs: `layerstore-overlay` implements [`Driver`] for the
//! per-layer directories under `<graphroot>/overlay/`.
//!
//! Every method takes validated ids ([`LayerId`]); names found on disk
//! that are not valid ids are reported as such and never acted on.

use std::path::PathBuf;
use std::time::SystemTime;

use crate::id::LayerId;
use crate::idmap::{IdMap, IdMappings};

/// A driver's error, boxed so that each driver keeps its own typed errors.
pub type DriverError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A removal that failed after deleting part of the layer's content (a
/// driver that could not first move the directory aside in one step): the
/// layer can no longer be used, only removed.
#[derive(Debug, thiserror::Error)]
#[error("layer {id} was removed only in part")]
pub struct PartlyRemoved {
    /// The layer.
    pub id: String,
    /// Why the removal stopped.
    #[source]
    pub source: DriverError,
}

/// Whether `e`, or an error it wraps, is a [`PartlyRemoved`].
pub fn is_partly_removed(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if e.downcast_ref::<PartlyRemoved>().is_some() {
            return true;
        }
        next = e.source();
    }
    false
}

/// How to mount a layer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountOptions {
    /// Mount read-only (no upper dir).
    pub read_only: bool,
    /// Mount options (`nodev`, ...); empty: the store's configured default.
    pub options: Vec<String>,
    /// SELinux mount label, if any.
    pub mount_label: String,
    /// The uid mapping the mount is for (empty: host).
    pub uidmap: Vec<IdMap>,
    /// The gid mapping the mount is for (empty: host).
    pub gidmap: Vec<IdMap>,
}

/// A short link of the driver (overlay: `<home>/l/<name>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkEntry {
    /// The link's name.
    pub name: String,
    /// The layer it points to (`../<id>/diff`), when it has that form.
    pub layer: Option<String>,
    /// The link's own mtime, where the caller looked it up
    /// ([`Driver::link_mtime`]); `UNIX_EPOCH` otherwise.
    pub mtime: SystemTime,
}

/// The mounts found inside layer directories, by layer (names as found).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountsInside {
    /// Layers whose own mount point (overlay: `<id>/merged`) is mounted.
    pub mount_point: Vec<String>,
    /// Layers with any other mount inside their directory (a leaked
    /// `mapped/N`, a bind mount): gc never removes them.
    pub other: Vec<String>,
}

/// A file's identity: its device and inode number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    /// Device (major, minor).
    pub dev: (u32, u32),
    /// Inode number.
    pub ino: u64,
}

impl FileIdentity {
    /// The identity in a `stat` result.
    pub fn of_stat(st: &rustix::fs::Stat) -> FileIdentity {
        FileIdentity {
            dev: (rustix::fs::major(st.st_dev), rustix::fs::minor(st.st_dev)),
            ino: st.st_ino,
        }
    }
}

/// The per-layer storage of a store.
pub trait Driver {
    /// Create the layer's directories on top of `parent`'s, the layer's
    /// root owned by `root_owner`.
    fn create(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        root_owner: (u32, u32),
    ) -> Result<(), DriverError>;
    /// Remove the layer's directories (tolerating missing pieces), never
    /// across a mount and never through a symlink. An error means the
    /// directory is whole, unless it is a [`PartlyRemoved`]: then part of
    /// its content is gone, and the layer must stay flagged incomplete.
    fn remove(&self, id: &LayerId) -> Result<(), DriverError>;
    /// Whether the layer's directory exists.
    fn exists(&self, id: &LayerId) -> bool;
    /// Give the top of the layer's own content (overlay: `<id>/diff`) to
    /// `owner` (the container root of a layer used with on-disk owners).
    fn set_top_owner(&self, id: &LayerId, owner: (u32, u32)) -> Result<(), DriverError>;
    /// Mount the layer with its lower layers; returns the mount point.
    fn mount(&self, id: &LayerId, options: &MountOptions) -> Result<PathBuf, DriverError>;
    /// Unmount the layer.
    fn unmount(&self, id: &LayerId) -> Result<(), DriverError>;
    /// Where the layer is mounted when it is (overlay: `<id>/merged`).
    fn mount_point(&self, id: &LayerId) -> PathBuf;
    /// Whether the layer's mount point is mounted right now (looked at
    /// without following symlinks; a recorded mount path is never trusted).
    fn is_mounted(&self, id: &LayerId) -> bool;
    /// The root directory of the layer's mount, when it is mounted (what
    /// a process that runs in it has as `/proc/<pid>/root`).
    fn mounted_root(&self, id: &LayerId) -> Result<Option<FileIdentity>, DriverError>;
    /// The bytes of the regular file at `path` (relative, `/`-separated, e.g.
    /// `etc/passwd`) as the root filesystem of the layer stack `chain` (top layer
    /// first, then its parents down to the base) shows it: the layers merged as
    /// overlayfs merges them (whiteouts, opaque directories), symlinks resolved
    /// inside that root filesystem, never outside it. `Ok(None)` when there is no
    /// such file or it is not a regular file (a directory, a device, a dangling or
    /// looping link). More than `limit` bytes is an error naming the file.
    fn read_stack_file(
        &self,
        chain: &[LayerId],
        path: &str,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, DriverError>;
    /// Whether the driver can present layers to a container with these
    /// maps without copying them (overlay: root, native overlay, and the
    /// kernel mounts overlay on idmapped lower layers; any map, contiguous
    /// or not). containers/storage >= v1.59 `SupportsShifting(uidmap, gidmap)`.
    /// Empty maps (the host mapping) need no shifting: `true`.
    fn supports_shifting(&self, uidmap: &[IdMap], gidmap: &[IdMap]) -> bool {
        let _ = (uidmap, gidmap);
        false
    }
    /// Re-own every entry of layer `id` (which was created as a child of its
    /// template) from `to_container` maps into `to_host` maps, the
    /// containers/storage way (`UpdateLayerIDMap`): mount it without
    /// idmapping, chown-by-maps over the merged tree (copying everything up),
    /// unmount, rotate `diff` to `diff1` and leave an empty `diff` and a
    /// fresh `work` owned by the new root pair.
    fn update_layer_id_map(
        &self,
        id: &LayerId,
        to_container: &IdMappings,
        to_host: &IdMappings,
        mount_label: &str,
    ) -> Result<(), DriverError> {
        let _ = (to_container, to_host, mount_label);
        Err(format!("this driver cannot change the id mapping of layer {id}").into())
    }
    /// The names of the layer directories that exist (overlay: every
    /// directory in the home except `l`, `staging`, `tempdirs`, dotfiles),
    /// recorded or not, valid ids or not.
    fn list_layers(&self) -> Result<Vec<String>, DriverError> {
        Ok(Vec::new())
    }
    /// The mtime of layer `id`'s directory, if it exists.
    fn layer_mtime(&self, id: &LayerId) -> Option<SystemTime> {
        let _ = id;
        None
    }
    /// The directory holding everything of layer `id` (overlay:
    /// `<home>/<id>`), for messages and measuring.
    fn layer_dir(&self, id: &LayerId) -> Option<PathBuf> {
        let _ = id;
        None
    }
    /// What the directories of layer `id` hold (bytes, inodes), measured
    /// without following symlinks or leaving the driver's home.
    fn layer_usage(&self, id: &LayerId) -> crate::gc::Usage {
        let _ = id;
        crate::gc::Usage::default()
    }
    /// [`Driver::layer_usage`] of each of `ids`, in order: for a caller
    /// measuring many layers at once (a driver may open its home once and
    /// measure on every core).
    fn layers_usage(&self, ids: &[&LayerId]) -> Vec<crate::gc::Usage> {
        ids.iter().map(|id| self.layer_usage(id)).collect()
    }
    /// The driver's short links, if it keeps any (mtimes not looked up).
    fn links(&self) -> Result<Vec<LinkEntry>, DriverError> {
        Ok(Vec::new())
    }
    /// The mtime of short link `name`, if it exists.
    fn link_mtime(&self, name: &str) -> Option<SystemTime> {
        let _ = name;
        None
    }
    /// Remove short link `name` (not what it points to).
    fn remove_link(&self, name: &str) -> Result<(), DriverError> {
        let _ = name;
        Ok(())
    }
    /// What short link `name` holds (bytes, inodes).
    fn link_usage(&self, name: &str) -> crate::gc::Usage {
        let _ = name;
        crate::gc::Usage::default()
    }
    /// Leftovers of removals that did not finish (overlay: the entries of
    /// `<home>/.layerstore-trash`); no record names them.
    fn trash(&self) -> Result<Vec<String>, DriverError> {
        Ok(Vec::new())
    }
    /// Delete trash entry `name`.
    fn empty_trash(&self, name: &str) -> Result<(), DriverError> {
        let _ = name;
        Ok(())
    }
    /// What trash entry `name` holds.
    fn trash_usage(&self, name: &str) -> crate::gc::Usage {
        let _ = name;
        crate::gc::Usage::default()
    }
    /// Whether layer `id`'s short link (or the file naming it) is missing,
    /// so that [`Driver::repair_link`] would recreate it.
    fn link_needs_repair(&self, id: &LayerId) -> bool {
        let _ = id;
        false
    }
    /// What is mounted inside the layer directories right now (whatever
    /// `mountpoints.json` says), from one look at the mount table.
    fn mounts_inside_layers(&self) -> Result<MountsInside, DriverError> {
        Ok(MountsInside::default())
    }
    /// Every layer a layer directory stacks on according to any of the
    /// driver's own files (overlay: `lower-layers` and `lower`, which
    /// different versions of containers/storage mount by), nearest first;
    /// gc never removes a directory another layer stacks on.
    fn stacked_layer_ids(&self, id: &LayerId) -> Result<Vec<LayerId>, DriverError> {
        let _ = id;
        Ok(Vec::new())
    }
    /// [`Driver::stacked_layer_ids`] of each of `ids`, in order, where the
    /// caller already has the short links (`links`, from [`Driver::links`]
    /// under the same locks): a driver may resolve names through them
    /// instead of reading each link again.
    fn stacked_layer_ids_of(
        &self,
        ids: &[LayerId],
        links: &[LinkEntry],
    ) -> Vec<Result<Vec<LayerId>, DriverError>> {
        let _ = links;
        ids.iter().map(|id| self.stacked_layer_ids(id)).collect()
    }
    /// Whether layer `id` has the file naming its short link (overlay:
    /// `<id>/link`); drivers without short links say `true`.
    fn has_link_file(&self, id: &LayerId) -> bool {
        let _ = id;
        true
    }
    /// [`Driver::has_link_file`] of each of `ids`, in order (a driver may
    /// open what they share once).
    fn have_link_files(&self, ids: &[LayerId]) -> Vec<bool> {
        ids.iter().map(|id| self.has_link_file(id)).collect()
    }
    /// [`Driver::stacked_layer_ids_of`] and [`Driver::have_link_files`] of
    /// the same `ids`, in order: a driver may look into each layer
    /// directory once for both.
    fn layer_dirs_stacks_and_link_files(
        &self,
        ids: &[LayerId],
        links: &[LinkEntry],
    ) -> Vec<(Result<Vec<LayerId>, DriverError>, bool)> {
        self.stacked_layer_ids_of(ids, links)
            .into_iter()
            .zip(self.have_link_files(ids))
            .collect()
    }
    /// Recreate layer `id`'s short link as containers/storage would;
    /// returns whether anything was repaired.
    fn repair_link(&self, id: &LayerId) -> Result<bool, DriverError> {
        let _ = id;
        Ok(false)
    }
}
