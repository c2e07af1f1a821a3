//! What the store needs from a graph driver. The store crate knows nothing
//! about overlayfs: `layerstore-overlay` implements [`Driver`] for the
//! per-layer directories under `<graphroot>/overlay/`.

use std::path::{Path, PathBuf};

use crate::idmap::IdMap;

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
}
