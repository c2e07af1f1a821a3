//! What the store needs from a graph driver. The store crate knows nothing
//! about overlayfs: `layerstore-overlay` implements [`Driver`] for the
//! per-layer directories under `<graphroot>/overlay/`.

use std::path::{Path, PathBuf};

use crate::idmap::{IdMap, IdMappings};

/// A driver's error, boxed so that each driver keeps its own typed errors.
pub type DriverError = Box<dyn std::error::Error + Send + Sync + 'static>;

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

/// The per-layer storage of a store.
pub trait Driver {
    /// Create the layer's directories on top of `parent`'s, the layer's
    /// root owned by `root_owner`.
    fn create(
        &self,
        id: &str,
        parent: Option<&str>,
        root_owner: (u32, u32),
    ) -> Result<(), DriverError>;
    /// Remove the layer's directories (tolerating missing pieces).
    fn remove(&self, id: &str) -> Result<(), DriverError>;
    /// Whether the layer's directory exists.
    fn exists(&self, id: &str) -> bool;
    /// Where the layer's own content lives (overlay: `<id>/diff`).
    fn diff_path(&self, id: &str) -> Result<PathBuf, DriverError>;
    /// Mount the layer with its lower layers; returns the mount point.
    fn mount(&self, id: &str, options: &MountOptions) -> Result<PathBuf, DriverError>;
    /// Unmount the layer.
    fn unmount(&self, id: &str) -> Result<(), DriverError>;
    /// Whether `path` is a mount point right now.
    fn is_mounted(&self, path: &Path) -> bool;
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
        id: &str,
        to_container: &IdMappings,
        to_host: &IdMappings,
        mount_label: &str,
    ) -> Result<(), DriverError> {
        let _ = (to_container, to_host, mount_label);
        Err(format!("this driver cannot change the id mapping of layer {id}").into())
    }
    /// The layer directories that exist (overlay: every directory in the
    /// home except `l`, `staging`, `tempdirs`, dotfiles), recorded or not.
    fn list_layers(&self) -> Result<Vec<String>, DriverError> {
        Ok(Vec::new())
    }
    /// The directory holding everything of layer `id` (overlay:
    /// `<home>/<id>`), for measuring it; `None` if the driver has no such
    /// single directory.
    fn layer_dir(&self, id: &str) -> Option<PathBuf> {
        let _ = id;
        None
    }
    /// The directory of short links to layers (overlay: `<home>/l`), if
    /// the driver keeps one.
    fn link_dir(&self) -> Option<PathBuf> {
        None
    }
    /// Whether layer `id`'s short link (or the file naming it) is missing,
    /// so that [`Driver::repair_link`] would recreate it.
    fn link_needs_repair(&self, id: &str) -> bool {
        let _ = id;
        false
    }
    /// Layers with anything mounted inside their directory right now
    /// (whatever `mountpoints.json` says), from one look at the mount
    /// table. gc never removes them.
    fn layers_with_mounts(&self) -> Result<Vec<String>, DriverError> {
        Ok(Vec::new())
    }
    /// Whether layer `id` has the file naming its short link (overlay:
    /// `<id>/link`); drivers without short links say `true`.
    fn has_link_file(&self, id: &str) -> bool {
        let _ = id;
        true
    }
    /// Recreate layer `id`'s short link as containers/storage would;
    /// returns whether anything was repaired.
    fn repair_link(&self, id: &str) -> Result<bool, DriverError> {
        let _ = id;
        Ok(false)
    }
}
