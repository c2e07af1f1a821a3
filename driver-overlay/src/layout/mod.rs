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

mod create;
mod error;
mod idmap_update;
mod idmapped;
mod links;
mod lowers;
mod mount;
pub(crate) mod mountinfo;
#[cfg(test)]
mod tests;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use layerstore::config::StoreOptions;

pub use error::LayoutError;
pub use mount::MountRequest;
pub use mountinfo::{is_mounted, parse_mounts, MountEntry};

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
/// Names in the home that are not layers (besides dotfiles).
const NOT_LAYERS: [&str; 4] = [LINK_DIR, "staging", "tempdirs", "backingFsBlockDev"];

/// The overlay driver's per-layer directories and mounts of one store.
#[derive(Debug, Clone)]
pub struct OverlayDriver {
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
        let aufs_whiteouts = match fs::read(&flag) {
            Ok(bytes) => {
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
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
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

    /// `<home>/<id>/diff`, the layer's own content.
    pub fn diff_path(&self, id: &str) -> Result<PathBuf, LayoutError> {
        validate_id(id)?;
        Ok(self.layer_dir(id).join("diff"))
    }

    /// Whether `<home>/<id>` is a directory (false for an invalid id).
    pub fn layer_exists(&self, id: &str) -> bool {
        validate_id(id).is_ok()
            && fs::symlink_metadata(self.layer_dir(id)).is_ok_and(|m| m.is_dir())
    }

    /// The layer directories in the home, sorted: every directory except
    /// `l`, `staging`, `tempdirs`, quota files and dotfiles (as upstream's
    /// `ListLayers`). A missing home has no layers.
    pub fn list_layers(&self) -> Result<Vec<String>, LayoutError> {
        let entries = match fs::read_dir(&self.home) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(LayoutError::home_io("list", &self.home, e)),
        };
        let mut layers = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| LayoutError::home_io("list", &self.home, e))?;
            let is_dir = entry
                .file_type()
                .map_err(|e| LayoutError::home_io("examine", entry.path(), e))?
                .is_dir();
            let Ok(name) = entry.file_name().into_string() else {
                tracing::debug!(path = ?entry.path(), "skipping non-UTF-8 name in overlay home");
                continue;
            };
            if is_dir && !name.starts_with('.') && !NOT_LAYERS.contains(&name.as_str()) {
                layers.push(name);
            }
        }
        layers.sort();
        Ok(layers)
    }

    /// `<home>/<id>`; `id` must have been validated.
    fn layer_dir(&self, id: &str) -> PathBuf {
        self.home.join(id)
    }

    /// `<home>/<id>`, which must exist as a directory.
    fn existing_layer_dir(&self, id: &str) -> Result<PathBuf, LayoutError> {
        validate_id(id)?;
        let dir = self.layer_dir(id);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => Ok(dir),
            Ok(_) => Err(LayoutError::LayerNotFound {
                id: id.to_owned(),
                path: dir,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(LayoutError::LayerNotFound {
                id: id.to_owned(),
                path: dir,
            }),
            Err(e) => Err(LayoutError::io(id, "examine", dir, e)),
        }
    }
}

/// Check that `id` can name a layer directory: one path component, no
/// separator of the `lower`/`lower-layers` files or of mount options, not a
/// dotfile and not one of the home's other entries.
pub fn validate_id(id: &str) -> Result<(), LayoutError> {
    let reason = if id.is_empty() {
        Some("it is empty")
    } else if id.len() > 255 {
        Some("it is longer than 255 bytes")
    } else if id.starts_with('.') {
        Some("it starts with '.'")
    } else if id.contains('/') {
        Some("it contains '/'")
    } else if id.contains([':', ',', '\\']) {
        Some("it contains ':', ',' or '\\' (separators in lower files and mount options)")
    } else if id.chars().any(char::is_control) {
        Some("it contains a control character")
    } else if NOT_LAYERS.contains(&id) {
        Some("it is the name of another entry in the overlay home")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(LayoutError::InvalidLayerId {
            id: id.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}
