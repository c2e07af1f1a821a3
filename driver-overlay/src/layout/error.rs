//! [`LayoutError`]: what can go wrong with layer directories and mounts.

use std::io;
use std::path::PathBuf;

/// Why a layer-directory or mount operation failed.
///
/// Every variant names the layer (when there is one) and the path involved.
/// Bad input (an unsafe id, a missing parent, an over-deep chain) is
/// reported before anything is changed on disk.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// The store is configured with a FUSE mount program (fuse-overlayfs).
    #[error(
        "mount_program {} is configured: layer stores that need fuse-overlayfs are not supported yet",
        program.display()
    )]
    MountProgramUnsupported {
        /// The configured program.
        program: PathBuf,
    },
    /// The store's `.has-mount-program` says `true`: its layers use AUFS
    /// whiteouts and can only be mounted with fuse-overlayfs.
    #[error(
        "layer {id}: {} says this store needs a mount program (fuse-overlayfs), which is not supported yet",
        flag_file.display()
    )]
    MountProgramRequired {
        /// The layer that was to be mounted.
        id: String,
        /// `<home>/.has-mount-program`.
        flag_file: PathBuf,
    },
    /// `.has-mount-program` holds something other than a boolean.
    #[error("{}: expected \"true\" or \"false\", found {content:?}", path.display())]
    BadMountProgramFlag {
        /// The flag file.
        path: PathBuf,
        /// What it holds.
        content: String,
    },
    /// A driver option has a value we cannot use.
    #[error("storage option overlay.{key}={value:?} is not valid")]
    BadDriverOption {
        /// The option (without the `overlay.` prefix).
        key: &'static str,
        /// Its value.
        value: String,
    },
    /// A layer id that is not a safe single path component.
    #[error("layer id {id:?} is not valid: {reason}")]
    InvalidLayerId {
        /// The id as given.
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `create_layer` was asked for a layer whose directory already exists.
    #[error("layer {id}: {} already exists", path.display())]
    LayerExists {
        /// The layer.
        id: String,
        /// Its directory.
        path: PathBuf,
    },
    /// The layer's directory does not exist.
    #[error("layer {id}: {} does not exist", path.display())]
    LayerNotFound {
        /// The layer.
        id: String,
        /// Its directory.
        path: PathBuf,
    },
    /// The parent given to `create_layer` has no directory (or no `link`).
    #[error("cannot create layer {id}: parent layer {parent} is missing {}", path.display())]
    ParentNotFound {
        /// The layer to create.
        id: String,
        /// The parent.
        parent: String,
        /// What is missing.
        path: PathBuf,
    },
    /// The lower chain is longer than overlayfs and containers/storage allow.
    #[error("layer {id}: {depth} lower layers exceed the maximum of {max}")]
    ChainTooDeep {
        /// The layer.
        id: String,
        /// How many lower layers it has (or would have).
        depth: usize,
        /// The limit (containers/storage's `maxDepth`).
        max: usize,
    },
    /// An entry of a `lower` / `lower-layers` file, or a `link` file, is
    /// malformed.
    #[error("layer {id}: {}: bad entry {entry:?}", path.display())]
    BadLowerEntry {
        /// The layer whose file it is.
        id: String,
        /// The file.
        path: PathBuf,
        /// The offending entry.
        entry: String,
    },
    /// A `l/<link>` named by a `lower` file resolves to no layer.
    #[error("layer {id}: lower {link} resolves to no layer ({} is missing)", path.display())]
    LowerLinkMissing {
        /// The layer whose `lower` file names it.
        id: String,
        /// The `l/<name>` entry.
        link: String,
        /// The missing symlink.
        path: PathBuf,
    },
    /// A layer's `lower-layers` and `lower` files name different layers.
    #[error(
        "layer {id}: {}/lower-layers names {lower_layers} but its lower file names {lower}; \
         refusing a layer whose two lower files disagree",
        path.display()
    )]
    LowerFilesDisagree {
        /// The layer.
        id: String,
        /// The ids `lower-layers` names, `:`-separated.
        lower_layers: String,
        /// The ids `lower` resolves to, `:`-separated.
        lower: String,
        /// The layer's directory.
        path: PathBuf,
    },
    /// A lower layer's `diff` directory is missing.
    #[error("layer {id}: lower layer {lower} has no {}", path.display())]
    LowerNotFound {
        /// The layer being resolved.
        id: String,
        /// The lower layer.
        lower: String,
        /// Its missing `diff`.
        path: PathBuf,
    },
    /// `l/<link>` exists but points at another layer.
    #[error("layer {id}: {} points to {target:?}, not to this layer's diff", path.display())]
    LinkConflict {
        /// The layer.
        id: String,
        /// The symlink.
        path: PathBuf,
        /// Where it points.
        target: String,
    },
    /// The layer's directory was being removed in place (no room for the
    /// trash) and the removal stopped half way.
    #[error("layer {id}: removing {} in place stopped half way", path.display())]
    PartlyRemoved {
        /// The layer.
        id: String,
        /// Its directory.
        path: PathBuf,
        /// Why it stopped.
        source: std::io::Error,
    },
    /// Removal refused: something is mounted inside the layer's directory.
    #[error("layer {id}: {} is mounted; unmount it before removing the layer", path.display())]
    LayerMounted {
        /// The layer.
        id: String,
        /// The mount point.
        path: PathBuf,
    },
    /// The layer's `merged` is already a mount point.
    #[error("layer {id}: {} is already mounted", path.display())]
    AlreadyMounted {
        /// The layer.
        id: String,
        /// Its `merged` dir.
        path: PathBuf,
    },
    /// `merged` is still a mount point after the unmount (stacked mounts).
    #[error("layer {id}: {} is still mounted after unmounting it", path.display())]
    StillMounted {
        /// The layer.
        id: String,
        /// Its `merged` dir.
        path: PathBuf,
    },
    /// A mount option that makes no sense for an overlay layer mount
    /// (`bind`, propagation flags, `remount`, ...).
    #[error("layer {id}: mount option {option:?} is not supported for layer mounts")]
    InvalidMountOption {
        /// The layer.
        id: String,
        /// The option.
        option: String,
    },
    /// No way to pass the mount options to the kernel: the lower list is too
    /// long for `mount(2)` and the kernel lacks overlayfs' `lowerdir+`.
    #[error(
        "layer {id}: overlay mount data for {lowers} lower layers is {len} bytes, over the {max}-byte limit of this kernel's mount(2) (no lowerdir+ support)"
    )]
    MountDataTooLong {
        /// The layer.
        id: String,
        /// Number of lower directories.
        lowers: usize,
        /// Shortest mount data we could build.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The overlay mount itself failed.
    #[error("layer {id}: mounting overlay on {} ({method}) failed{}", target.display(), kernel_note(kernel_log))]
    Mount {
        /// The layer.
        id: String,
        /// Its `merged` dir.
        target: PathBuf,
        /// `mount(2)`, `fsconfig <key>`, `fsmount`, ...
        method: String,
        /// Messages the kernel left in the filesystem context (new mount API).
        kernel_log: Vec<String>,
        /// The errno.
        source: io::Error,
    },
    /// The user namespace or the idmapped mount for a mapped mount could
    /// not be made (bad maps, no permission, unsupported filesystem).
    #[error("layer {id}: cannot present the layers with the requested id mapping")]
    Idmap {
        /// The layer.
        id: String,
        /// What failed.
        source: Box<crate::sys::IdmapError>,
    },
    /// Unmounting the layer failed.
    #[error("layer {id}: unmounting {} failed", target.display())]
    Unmount {
        /// The layer.
        id: String,
        /// Its `merged` dir.
        target: PathBuf,
        /// The errno.
        source: io::Error,
    },
    /// Making `<home>` a private bind mount of itself failed.
    #[error("making {} a private mount failed", path.display())]
    HomePrivate {
        /// The driver home.
        path: PathBuf,
        /// The errno.
        source: io::Error,
    },
    /// The random link name could not be generated.
    #[error("reading random bytes for a layer link name failed")]
    Random {
        /// The errno.
        source: io::Error,
    },
    /// The new mapping has no host id for container root.
    #[error("layer {id}: the new id mapping has no root pair")]
    RootPair {
        /// The layer.
        id: String,
        /// Why.
        source: layerstore::idmap::IdMapError,
    },
    /// Chown-by-maps over the mounted layer failed.
    #[error("layer {id}: changing the id mapping of its content failed")]
    Chown {
        /// The layer.
        id: String,
        /// Why.
        source: crate::chown::ChownError,
    },
    /// Any other file-system operation failed.
    #[error("{}cannot {action} {}", layer_prefix(id), path.display())]
    Io {
        /// The layer, when the operation concerns one.
        id: Option<String>,
        /// What we were doing (`create`, `read`, `remove`, ...).
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

fn layer_prefix(id: &Option<String>) -> String {
    match id {
        Some(id) => format!("layer {id}: "),
        None => String::new(),
    }
}

fn kernel_note(log: &[String]) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!(" (kernel: {})", log.join("; "))
    }
}

impl LayoutError {
    /// An [`LayoutError::Io`] about layer `id`.
    pub(crate) fn io(
        id: &str,
        action: &'static str,
        path: impl Into<PathBuf>,
        source: impl Into<io::Error>,
    ) -> Self {
        LayoutError::Io {
            id: Some(id.to_owned()),
            action,
            path: path.into(),
            source: source.into(),
        }
    }

    /// An [`LayoutError::Io`] about the driver home, not one layer.
    pub(crate) fn home_io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: impl Into<io::Error>,
    ) -> Self {
        LayoutError::Io {
            id: None,
            action,
            path: path.into(),
            source: source.into(),
        }
    }
}
