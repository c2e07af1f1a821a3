//! Layer directories, lower chains and overlay mounts: this module owns what
//! containers/storage's overlay driver keeps under `<graphroot>/overlay/`
//! (the driver "home"), laid out exactly as v1.43 (podman 4.3.1) makes it,
//! plus upstream's (>= 1.63) `lower-layers` file.
//!
//! ```text
//! <graphroot>/overlay/                 home, 0700; a private bind mount of itself
//!   .has-mount-program                 "true" (AUFS whiteouts, fuse-overlayfs) / "false"
//!   l/                                 0755 root:root
//!     <26 base32 chars>                -> ../<id>/diff   (short lowerdir names)
//!   <id>/                              0700, owner = root of the layer's mapping
//!     diff/                            the layer's content; parent's diff mode (else 0555)
//!     link                             "<26 base32 chars>", no newline, 0644
//!     lower                            "l/<parent link>:<parent's lower>" (child layers), 0644
//!     lower-layers                     "<parent id>:<parent's lower ids>" (child layers), 0644
//!     work/  merged/                   0700; merged is the mount point (gone when unmounted)
//!     empty/                           0700, parentless layers only: the lone lowerdir
//!     diff1/ .. diffN/                 older uppers of an ID-mapped copy: lowers of this layer
//! <runroot>/overlay/                   runhome (feature-probe cache; not touched here)
//! ```
//!
//! Owners: `diff`, `work`, `merged` and `empty` take the owner of the
//! parent's *layer directory* (v1.43; upstream takes the parent's `diff`
//! owner, which is the same in every layer c/storage makes), or the layer's
//! own root owner when it has no parent. Modes are set exactly (not filtered
//! by the umask); they equal what c/storage produces under podman's usual
//! umask 022.
//!
//! Mount order of a layer `X` with lowers `L1..Ln` (from `lower-layers`, or
//! from `lower` by resolving its `l/` links):
//! `lowerdir=X/diff1:..:X/diffN:L1/diff:L1/diff1:..:Ln/diff:..`, `upperdir=X/diff`.
//!
//! Reference counting of mounts is the store's business (`mountpoints.json`);
//! this module only refuses to mount an already-mounted `merged`. Locking is
//! the caller's too: every method here expects the store's layer lock to be
//! held (exclusive for anything that changes the home).
//!
//! Nothing here trusts the disk: the home is opened beneath the graphroot
//! and every path inside it beneath the home's descriptor, never through a
//! symlink ([`layerstore::confined::Dir`]); ids are [`LayerId`]s; `link`,
//! `lower` and `lower-layers` contents are parsed into link names and ids
//! before use; mounts name their directories by descriptor
//! (`/proc/self/fd/<n>`), so the kernel never walks a path of the store.
//! One file of a stack's merged view is read without mounting anything
//! ([`OverlayDriver::read_stack_file`], merged as overlayfs merges).

mod create;
mod error;
mod idmap_update;
mod idmapped;
mod links;
mod lowers;
mod mount;
pub(crate) mod mountinfo;
pub(crate) mod per_layer;
mod stackread;
#[cfg(test)]
mod tests;

use std::io;
use std::path::{Path, PathBuf};

use layerstore::config::StoreOptions;
use layerstore::confined::Dir;
use layerstore::LayerId;
use std::os::unix::fs::DirBuilderExt;

pub use error::LayoutError;
pub use mount::MountRequest;
pub use mountinfo::{is_mounted, parse_mounts, MountEntry};
pub use stackread::{StackReadError, MAX_COMPONENTS, MAX_SYMLINKS};

/// The most lower layers a layer may have (upstream c/storage's `maxDepth`;
/// v1.43 allowed 128). Also overlayfs' own stack limit.
pub const MAX_LOWER_LAYERS: usize = 500;

/// Name of the driver's directory under the graphroot and runroot.
const DRIVER_NAME: &str = "overlay";
/// `<home>/l`: the short-link directory.
const LINK_DIR: &str = "l";
/// `<home>/.has-mount-program`.
const MOUNT_PROGRAM_FLAG: &str = ".has-mount-program";
/// `<id>/lower`: `l/<link>` entries.
const LOWER_FILE: &str = "lower";
/// `<id>/lower-layers`: layer ids (c/storage >= 1.63).
const LOWER_LAYERS_FILE: &str = "lower-layers";
/// `<id>/link`: the layer's short link name.
const LINK_FILE: &str = "link";
/// The most read of a driver file (`link`, `lower`, `lower-layers`,
/// `.has-mount-program`): a 500-deep `lower-layers` is 33 KB.
const SMALL_FILE_MAX: u64 = 1 << 20;
/// Names in the home that are not layers (besides dotfiles).
const NOT_LAYERS: [&str; 4] = [LINK_DIR, "staging", "tempdirs", "backingFsBlockDev"];

/// The overlay driver's per-layer directories and mounts of one store.
#[derive(Debug, Clone)]
pub struct OverlayDriver {
    graph_root: PathBuf,
    run_root: PathBuf,
    home: PathBuf,
    runhome: PathBuf,
    aufs_whiteouts: bool,
    default_mount_options: Vec<String>,
    skip_mount_home: bool,
}

impl OverlayDriver {
    /// The driver of the store `options` describe. Reads
    /// `<home>/.has-mount-program` (absent: native overlay); creates nothing.
    ///
    /// Refuses a configured `mount_program` (fuse-overlayfs): not supported
    /// yet.
    pub fn new(options: &StoreOptions) -> Result<Self, LayoutError> {
        if let Some(program) = options.mount_program() {
            return Err(LayoutError::MountProgramUnsupported { program });
        }
        let home = options.graph_root.join(DRIVER_NAME);
        let runhome = options.run_root.join(DRIVER_NAME);
        let flag = home.join(MOUNT_PROGRAM_FLAG);
        let read_flag = || -> io::Result<Option<Vec<u8>>> {
            let Some(graph) = Dir::open_opt(&options.graph_root)? else {
                return Ok(None);
            };
            graph.read_opt_limited(
                Path::new(DRIVER_NAME).join(MOUNT_PROGRAM_FLAG),
                SMALL_FILE_MAX,
            )
        };
        let aufs_whiteouts = match read_flag() {
            Ok(Some(bytes)) => {
                let content = String::from_utf8_lossy(&bytes);
                match content.trim() {
                    "true" => true,
                    "false" => false,
                    other => {
                        return Err(LayoutError::BadMountProgramFlag {
                            path: flag,
                            content: other.to_owned(),
                        })
                    }
                }
            }
            Ok(None) => false,
            Err(e) => return Err(LayoutError::home_io("read", flag, e)),
        };
        let default_mount_options = options
            .mount_options()
            .unwrap_or("nodev")
            .split(',')
            .filter(|o| !o.is_empty())
            .map(str::to_owned)
            .collect();
        let skip_mount_home = match options.driver_option("skip_mount_home") {
            None => false,
            Some(v) => parse_go_bool(v).ok_or_else(|| LayoutError::BadDriverOption {
                key: "skip_mount_home",
                value: v.to_owned(),
            })?,
        };
        Ok(OverlayDriver {
            graph_root: options.graph_root.clone(),
            run_root: options.run_root.clone(),
            home,
            runhome,
            aufs_whiteouts,
            default_mount_options,
            skip_mount_home,
        })
    }

    /// `<graphroot>/overlay`.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// `<runroot>/overlay`.
    pub fn runhome(&self) -> &Path {
        &self.runhome
    }

    /// Whether layers of this store hold AUFS whiteouts (`.wh.` files), i.e.
    /// `.has-mount-program` says `true`; otherwise whiteouts are `c 0 0`
    /// devices and opaque dirs carry `trusted.overlay.opaque=y`.
    pub fn whiteout_is_aufs(&self) -> bool {
        self.aufs_whiteouts
    }

    /// The options a mount gets when the request names none: the store's
    /// `overlay.mountopt`, else `nodev`.
    pub fn default_mount_options(&self) -> &[String] {
        &self.default_mount_options
    }

    /// `<home>/<id>/diff`, the layer's own content (for messages; reach it
    /// with [`OverlayDriver::open_diff`]).
    pub fn diff_path(&self, id: &LayerId) -> PathBuf {
        self.layer_dir(id).join("diff")
    }

    /// The layer's `diff`, opened without following any symlink.
    pub fn open_diff(&self, id: &LayerId) -> Result<Dir, LayoutError> {
        let layer = self.open_layer(id)?;
        layer
            .open_dir("diff")
            .map_err(|e| LayoutError::io(id.as_str(), "open", self.diff_path(id), e))
    }

    /// Whether `<home>/<id>` is a directory (not a symlink).
    pub fn layer_exists(&self, id: &LayerId) -> bool {
        matches!(self.home_dir(), Ok(Some(home)) if home.stat(id.as_str()).ok().flatten().is_some_and(|m| m.is_dir()))
    }

    /// The layer directories in the home, sorted: every directory except
    /// `l`, `staging`, `tempdirs`, quota files and dotfiles (as upstream's
    /// `ListLayers`), by name as found (valid ids or not). A missing home
    /// has no layers.
    pub fn list_layers(&self) -> Result<Vec<String>, LayoutError> {
        let Some(home) = self.home_dir()? else {
            return Ok(Vec::new());
        };
        let entries = home
            .entries()
            .map_err(|e| LayoutError::home_io("list", &self.home, e))?;
        let mut layers = Vec::new();
        for entry in entries {
            let is_dir = match entry.file_type {
                rustix::fs::FileType::Directory => true,
                rustix::fs::FileType::Unknown => home
                    .stat(&entry.name)
                    .map_err(|e| LayoutError::home_io("examine", home.display(&entry.name), e))?
                    .is_some_and(|m| m.is_dir()),
                _ => false,
            };
            let Ok(name) = entry.name.into_string() else {
                tracing::debug!(home = ?self.home, "skipping non-UTF-8 name in overlay home");
                continue;
            };
            if is_dir && !name.starts_with('.') && !NOT_LAYERS.contains(&name.as_str()) {
                layers.push(name);
            }
        }
        layers.sort();
        Ok(layers)
    }

    /// `<home>/<id>`, for messages.
    fn layer_dir(&self, id: &LayerId) -> PathBuf {
        self.home.join(id.as_str())
    }

    /// The home, opened beneath the graphroot without following symlinks;
    /// `None` when it does not exist yet.
    pub(crate) fn home_dir(&self) -> Result<Option<Dir>, LayoutError> {
        let Some(graph) = Dir::open_opt(&self.graph_root)
            .map_err(|e| LayoutError::home_io("open", &self.graph_root, e))?
        else {
            return Ok(None);
        };
        graph
            .open_dir_opt(DRIVER_NAME)
            .map_err(|e| LayoutError::home_io("open", &self.home, e))
    }

    /// The home, which must exist.
    pub(crate) fn home_required(&self) -> Result<Dir, LayoutError> {
        self.home_dir()?.ok_or_else(|| {
            LayoutError::home_io("open", &self.home, io::Error::from(io::ErrorKind::NotFound))
        })
    }

    /// `<home>/<id>`, which must exist as a directory (not a symlink).
    pub(crate) fn open_layer(&self, id: &LayerId) -> Result<Dir, LayoutError> {
        let Some(home) = self.home_dir()? else {
            return Err(LayoutError::LayerNotFound {
                id: id.to_string(),
                path: self.layer_dir(id),
            });
        };
        self.open_layer_in(&home, id)
    }

    /// [`OverlayDriver::open_layer`] through a home the caller opened.
    pub(crate) fn open_layer_in(&self, home: &Dir, id: &LayerId) -> Result<Dir, LayoutError> {
        let not_found = || LayoutError::LayerNotFound {
            id: id.to_string(),
            path: self.layer_dir(id),
        };
        // One open, never following: missing (ENOENT), a file (ENOTDIR) or
        // a symlink (refused by `open_dir` as InvalidData; ELOOP where the
        // kernel says so itself) is "not found", as a stat first said.
        match home.open_dir(id.as_str()) {
            Ok(dir) => Ok(dir),
            Err(e)
                if e.kind() == std::io::ErrorKind::InvalidData
                    || matches!(
                        e.raw_os_error(),
                        Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP)
                    ) =>
            {
                Err(not_found())
            }
            Err(e) => Err(LayoutError::io(id.as_str(), "open", self.layer_dir(id), e)),
        }
    }

    /// The runhome (`<runroot>/overlay`), opened beneath the runroot
    /// without following symlinks and created when missing.
    pub(crate) fn runhome_created(&self) -> Result<Dir, LayoutError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.run_root)
            .map_err(|e| LayoutError::home_io("create", &self.run_root, e))?;
        let run = Dir::open(&self.run_root)
            .map_err(|e| LayoutError::home_io("open", &self.run_root, e))?;
        run.create_dir_all(DRIVER_NAME, 0o700)
            .map_err(|e| LayoutError::home_io("create", &self.runhome, e))
    }

    /// The runhome, `None` when it does not exist.
    pub(crate) fn runhome_dir(&self) -> Result<Option<Dir>, LayoutError> {
        let Some(run) = Dir::open_opt(&self.run_root)
            .map_err(|e| LayoutError::home_io("open", &self.run_root, e))?
        else {
            return Ok(None);
        };
        run.open_dir_opt(DRIVER_NAME)
            .map_err(|e| LayoutError::home_io("open", &self.runhome, e))
    }

    /// The graphroot (trusted: the configured path).
    pub(crate) fn graph_root(&self) -> &Path {
        &self.graph_root
    }
}

/// Whether `name` can be an `l/` entry (a plain name that cannot break a
/// `lower` file or a lowerdir list).
pub fn is_link_name(name: &str) -> bool {
    links::is_valid_link_name(name)
}

/// Parse `id` as a layer id (see [`layerstore::id`]).
pub fn parse_id(id: &str) -> Result<LayerId, LayoutError> {
    LayerId::parse(id).map_err(|e| LayoutError::InvalidLayerId {
        id: e.id,
        reason: e.reason,
    })
}

/// Check that `id` can name a layer directory (see [`layerstore::id`]).
pub fn validate_id(id: &str) -> Result<(), LayoutError> {
    parse_id(id).map(|_| ())
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}
