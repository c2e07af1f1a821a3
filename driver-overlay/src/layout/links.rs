//! The `l/` short links: generating a layer's link name, resolving a link
//! back to its layer, and repairing a lost link (what c/storage's
//! `recreateSymlinks` does for one layer).
//!
//! ```text
//! <home>/l/<name>  -> ../<id>/diff     symlink, one per layer
//! <home>/<id>/link    "<name>"         no newline, 0644
//! ```

use std::path::Path;
use std::time::SystemTime;

use layerstore::confined::Dir;
use layerstore::driver::LinkEntry;
use layerstore::LayerId;
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;
use rustix::rand::{getrandom, GetRandomFlags};

use super::{LayoutError, OverlayDriver, LINK_DIR, LINK_FILE};

/// Length of a link name (c/storage's `idLength`).
pub(crate) const LINK_LEN: usize = 26;
/// Random bytes behind a link name: `(26 * 5 + 7) / 8`.
const LINK_RANDOM_BYTES: usize = (LINK_LEN * 5).div_ceil(8);
/// RFC 4648 base32 alphabet (Go's `base32.StdEncoding`).
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// The first 26 characters of the base32 encoding of `bytes`, as
/// c/storage's `generateID(26)` takes them.
pub(crate) fn link_name_from_bytes(bytes: &[u8; LINK_RANDOM_BYTES]) -> String {
    (0..LINK_LEN)
        .map(|i| {
            let bit = i * 5;
            let hi = u16::from(bytes[bit / 8]);
            let lo = bytes.get(bit / 8 + 1).copied().map_or(0, u16::from);
            let window = (hi << 8) | lo;
            char::from(BASE32[usize::from((window >> (11 - bit % 8)) & 31)])
        })
        .collect()
}

/// A fresh random link name: 26 base32 characters from 17 random bytes.
pub(crate) fn generate_link_name() -> Result<String, LayoutError> {
    let mut bytes = [0u8; LINK_RANDOM_BYTES];
    let mut filled = 0;
    while filled < bytes.len() {
        match getrandom(&mut bytes[filled..], GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(LayoutError::Random { source: e.into() }),
        }
    }
    Ok(link_name_from_bytes(&bytes))
}

/// Whether `name` may be used as `l/<name>`: a plain path component that
/// cannot break a `lower` file or a lowerdir list. c/storage only ever
/// makes 26 base32 characters; we accept any safe name it might read.
pub(crate) fn is_valid_link_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', ':', ',', '\\'])
        && !name.chars().any(char::is_control)
}

/// Whether `name` is one entry of `l/` as a directory listing gives it (a
/// single path component): what gc may look at and remove, even when it is
/// no valid link name.
fn is_entry_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

/// The layer id in a link target `../<id>/diff`, if it has that form.
pub(crate) fn layer_of_link_target(target: &str) -> Option<LayerId> {
    let id = target.strip_prefix("../")?.strip_suffix("/diff")?;
    LayerId::parse(id).ok()
}

impl OverlayDriver {
    /// Make sure layer `id`'s short link exists: recreate a missing
    /// `l/<link>` from the `link` file, or, when the `link` file is lost,
    /// rewrite it from an `l/` symlink that points to the layer (or from a
    /// new name when there is none). Returns whether anything was repaired.
    ///
    /// An `l/<link>` that points to another layer (or is not a symlink) is
    /// reported as [`LayoutError::LinkConflict`], never overwritten.
    pub fn repair_link(&self, id: &LayerId) -> Result<bool, LayoutError> {
        let layer = self.open_layer(id)?;
        let home = self.home_required()?;
        ensure_link_dir(&home)?;
        let expected = format!("../{id}/diff");
        let name = match self.read_link_file(&home, id)? {
            Some(name) => name,
            None => {
                let name = match self.find_link_pointing_to(&home, id)? {
                    Some(name) => name,
                    None => self.create_link(&home, id)?,
                };
                write_replace(id.as_str(), &layer, LINK_FILE, name.as_bytes())?;
                tracing::info!(layer = %id, link = %name, "rewrote the layer's link file");
                return Ok(true);
            }
        };
        let rel = Path::new(LINK_DIR).join(&name);
        let path = home.display(&rel);
        match home.read_link(&rel) {
            Ok(Some(target)) if target.as_os_str() == expected.as_str() => Ok(false),
            Ok(Some(target)) => Err(LayoutError::LinkConflict {
                id: id.to_string(),
                path,
                target: target.to_string_lossy().into_owned(),
            }),
            Ok(None) => {
                home.symlink(&expected, &rel)
                    .map_err(|e| LayoutError::io(id.as_str(), "create symlink", &path, e))?;
                tracing::info!(layer = %id, link = %name, "recreated the layer's l/ link");
                Ok(true)
            }
            Err(e) if e.raw_os_error() == Some(Errno::INVAL.raw_os_error()) => {
                Err(LayoutError::LinkConflict {
                    id: id.to_string(),
                    path,
                    target: "(not a symlink)".into(),
                })
            }
            Err(e) => Err(LayoutError::io(id.as_str(), "read symlink", path, e)),
        }
    }

    /// Layers (directories of the home) with a mount point inside them,
    /// from one read of the mount table.
    pub fn layers_with_mounts(&self) -> Result<Vec<String>, LayoutError> {
        let inside = self.mounts_inside_layers()?;
        let mut ids: Vec<String> = inside.mount_point.into_iter().chain(inside.other).collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// What is mounted inside the layer directories: their `merged`, or
    /// anything else, from one read of the mount table.
    pub fn mounts_inside_layers(&self) -> Result<layerstore::driver::MountsInside, LayoutError> {
        let mut out = layerstore::driver::MountsInside::default();
        let Some(home_dir) = self.home_dir()? else {
            return Ok(out);
        };
        // Where the home really is (not what a symlink on the way says).
        let home = std::fs::read_link(home_dir.proc_path()).unwrap_or_else(|_| self.home.clone());
        let points = super::mountinfo::mount_points()
            .map_err(|e| LayoutError::home_io("read the mount table for", &self.home, e))?;
        for rel in points.iter().filter_map(|p| p.strip_prefix(&home).ok()) {
            let mut parts = rel.components().map(|c| c.as_os_str());
            let Some(id) = parts.next().and_then(|c| c.to_str()) else {
                continue;
            };
            if id == LINK_DIR || LayerId::parse(id).is_err() {
                continue;
            }
            let rest: Vec<_> = parts.collect();
            if rest.len() == 1 && rest[0] == "merged" {
                out.mount_point.push(id.to_owned());
            } else {
                out.other.push(id.to_owned());
            }
        }
        for list in [&mut out.mount_point, &mut out.other] {
            list.sort();
            list.dedup();
        }
        Ok(out)
    }

    /// Whether `<id>/link` exists (one `statx`, not following it).
    pub fn has_link_file(&self, id: &LayerId) -> bool {
        matches!(self.home_dir(), Ok(Some(home)) if Self::has_link_file_in(&home, id))
    }

    /// [`OverlayDriver::has_link_file`] through a home the caller opened.
    pub(crate) fn has_link_file_in(home: &Dir, id: &LayerId) -> bool {
        home.stat(Path::new(id.as_str()).join(LINK_FILE))
            .ok()
            .flatten()
            .is_some()
    }

    /// Whether [`OverlayDriver::repair_link`] would change anything for
    /// layer `id`: its `link` file or its `l/<link>` symlink is missing.
    /// Unreadable or conflicting state is not "missing" (repair would
    /// refuse it).
    pub fn link_needs_repair(&self, id: &LayerId) -> bool {
        let Ok(Some(home)) = self.home_dir() else {
            return false;
        };
        if !home
            .stat(id.as_str())
            .ok()
            .flatten()
            .is_some_and(|m| m.is_dir())
        {
            return false;
        }
        match self.read_link_file(&home, id) {
            Ok(Some(name)) => matches!(home.stat(Path::new(LINK_DIR).join(name)), Ok(None)),
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// The name in `<id>/link` (trailing newlines trimmed, as c/storage's
    /// repair does), or `None` when the file is missing. A name that is not
    /// a plain `l/` entry name is [`LayoutError::BadLowerEntry`].
    pub(crate) fn read_link_file(
        &self,
        home: &Dir,
        id: &LayerId,
    ) -> Result<Option<String>, LayoutError> {
        let rel = Path::new(id.as_str()).join(LINK_FILE);
        let path = home.display(&rel);
        let content = match home.read_opt_limited(&rel, super::SMALL_FILE_MAX) {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(None),
            Err(e) => return Err(LayoutError::io(id.as_str(), "read", path, e)),
        };
        let content = String::from_utf8_lossy(&content).into_owned();
        let name = content.trim_end_matches('\n');
        if !is_valid_link_name(name) {
            return Err(LayoutError::BadLowerEntry {
                id: id.to_string(),
                path,
                entry: content,
            });
        }
        Ok(Some(name.to_owned()))
    }

    /// Create `l/<new name>` -> `../<id>/diff`, retrying on a name clash;
    /// returns the name.
    pub(crate) fn create_link(&self, home: &Dir, id: &LayerId) -> Result<String, LayoutError> {
        let target = format!("../{id}/diff");
        let mut attempts = 0;
        loop {
            let name = generate_link_name()?;
            let rel = Path::new(LINK_DIR).join(&name);
            match home.symlink(&target, &rel) {
                Ok(()) => return Ok(name),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempts < 3 => {
                    attempts += 1
                }
                Err(e) => {
                    return Err(LayoutError::io(
                        id.as_str(),
                        "create symlink",
                        home.display(&rel),
                        e,
                    ))
                }
            }
        }
    }

    /// The layer `l/<name>` points to, reading the symlink (`None` when the
    /// symlink is missing).
    pub(crate) fn layer_of_link(
        &self,
        home: &Dir,
        id: &LayerId,
        name: &str,
    ) -> Result<Option<LayerId>, LayoutError> {
        let rel = Path::new(LINK_DIR).join(name);
        let path = home.display(&rel);
        match home.read_link(&rel) {
            Ok(Some(target)) => {
                let target = target.to_string_lossy();
                match layer_of_link_target(&target) {
                    Some(lower) => Ok(Some(lower)),
                    None => Err(LayoutError::LinkConflict {
                        id: id.to_string(),
                        path,
                        target: target.into_owned(),
                    }),
                }
            }
            Ok(None) => Ok(None),
            Err(e) => Err(LayoutError::io(id.as_str(), "read symlink", path, e)),
        }
    }

    /// The layer whose `link` file says `name` (used when `l/<name>` is
    /// lost: the `link` files are the authority c/storage rebuilds from).
    pub(crate) fn layer_with_link_name(
        &self,
        home: &Dir,
        name: &str,
    ) -> Result<Option<LayerId>, LayoutError> {
        for layer in self.list_layers()? {
            let Ok(layer) = LayerId::parse(&layer) else {
                continue;
            };
            if matches!(self.read_link_file(home, &layer), Ok(Some(n)) if n == name) {
                return Ok(Some(layer));
            }
        }
        Ok(None)
    }

    /// An `l/` symlink pointing to `../<id>/diff`, if any.
    pub(crate) fn find_link_pointing_to(
        &self,
        home: &Dir,
        id: &LayerId,
    ) -> Result<Option<String>, LayoutError> {
        let expected = format!("../{id}/diff");
        let links = match home.open_dir(LINK_DIR) {
            Ok(l) => l,
            Err(e) => {
                return Err(LayoutError::io(
                    id.as_str(),
                    "open",
                    home.display(LINK_DIR),
                    e,
                ))
            }
        };
        let entries = links
            .entries()
            .map_err(|e| LayoutError::io(id.as_str(), "list", links.path(), e))?;
        for entry in entries {
            let Ok(name) = entry.name.into_string() else {
                continue;
            };
            if is_valid_link_name(&name)
                && links
                    .read_link(&name)
                    .ok()
                    .flatten()
                    .is_some_and(|t| t.as_os_str() == expected.as_str())
            {
                return Ok(Some(name));
            }
        }
        Ok(None)
    }

    /// Every `l/` entry and the layer it points to, resolved relative to
    /// the `l/` directory's descriptor (mtimes are not looked up).
    pub fn links(&self) -> Result<Vec<LinkEntry>, LayoutError> {
        let Some(home) = self.home_dir()? else {
            return Ok(Vec::new());
        };
        let Some(links) = home
            .open_dir_opt(LINK_DIR)
            .map_err(|e| LayoutError::home_io("open", home.display(LINK_DIR), e))?
        else {
            return Ok(Vec::new());
        };
        let entries = links
            .entries()
            .map_err(|e| LayoutError::home_io("list", links.path(), e))?;
        let names: Vec<String> = entries
            .into_iter()
            .filter_map(|entry| entry.name.into_string().ok())
            .collect();
        // One readlinkat per link relative to the l/ fd, spread over the
        // cores. (The targets of podman's links are too long for ext4's
        // inline symlinks, so each reads a block: on a large store most
        // of a dry run's system time.)
        let read = |name: &String| -> Option<LinkEntry> {
            let target = rustix::fs::readlinkat(links.fd(), name.as_str(), Vec::new()).ok()?;
            let target = target.to_string_lossy();
            // The trash's own link is the trash's while the trash exists.
            if name == super::create::TRASH_LINK
                && target == super::create::TRASH_LINK_TARGET
                && matches!(home.stat(super::create::TRASH_DIR), Ok(Some(m)) if m.is_dir())
            {
                return None;
            }
            Some(LinkEntry {
                name: name.clone(),
                layer: layer_of_link_target(&target).map(LayerId::into_string),
                mtime: SystemTime::UNIX_EPOCH,
            })
        };
        let mut out: Vec<LinkEntry> = super::per_layer::map_in_parallel(&names, read)
            .into_iter()
            .flatten()
            .collect();
        out.shrink_to_fit();
        Ok(out)
    }

    /// The mtime of `l/<name>`, if it exists.
    pub fn link_mtime(&self, name: &str) -> Option<SystemTime> {
        if !is_entry_name(name) {
            return None;
        }
        let home = self.home_dir().ok().flatten()?;
        home.stat(Path::new(LINK_DIR).join(name))
            .ok()
            .flatten()
            .map(|m| m.mtime)
    }

    /// Remove `l/<name>` if it is a symlink (never what it points to).
    pub fn remove_link(&self, name: &str) -> Result<(), LayoutError> {
        // Any entry of l/: a dangling symlink with an odd name (A:B) is
        // debris like any other.
        if !is_entry_name(name) {
            return Err(LayoutError::BadLowerEntry {
                id: String::new(),
                path: self.home.join(LINK_DIR),
                entry: name.to_owned(),
            });
        }
        let Some(home) = self.home_dir()? else {
            return Ok(());
        };
        let rel = Path::new(LINK_DIR).join(name);
        match home.stat(&rel) {
            Ok(Some(m)) if m.is_symlink() => home
                .remove_file(&rel)
                .map(|_| ())
                .map_err(|e| LayoutError::home_io("remove", home.display(&rel), e)),
            Ok(_) => Ok(()),
            Err(e) => Err(LayoutError::home_io("examine", home.display(&rel), e)),
        }
    }
}

/// Create `<home>/l` (0755) if it is missing.
pub(crate) fn ensure_link_dir(home: &Dir) -> Result<(), LayoutError> {
    let path = home.display(LINK_DIR);
    match rustix::fs::mkdirat(home.fd(), LINK_DIR, Mode::from_raw_mode(0o755)) {
        Ok(()) => rustix::fs::chmodat(
            home.fd(),
            LINK_DIR,
            Mode::from_raw_mode(0o755),
            AtFlags::empty(),
        )
        .map_err(|e| LayoutError::home_io("chmod", path, e)),
        Err(Errno::EXIST) => match home.stat(LINK_DIR) {
            Ok(Some(m)) if m.is_dir() => Ok(()),
            Ok(_) => Err(LayoutError::home_io(
                "use as the link directory",
                path,
                std::io::Error::from(std::io::ErrorKind::NotADirectory),
            )),
            Err(e) => Err(LayoutError::home_io("examine", path, e)),
        },
        Err(e) => Err(LayoutError::home_io("create", path, e)),
    }
}

/// Replace `<layer>/<name>` with `data` (mode 0644) through a temp file
/// and rename, so a reader never sees a half-written file.
pub(crate) fn write_replace(
    id: &str,
    layer: &Dir,
    name: &str,
    data: &[u8],
) -> Result<(), LayoutError> {
    let tmp = format!(".tmp-{name}");
    let result = (|| -> std::io::Result<()> {
        let _ = rustix::fs::unlinkat(layer.fd(), tmp.as_str(), AtFlags::empty());
        let fd = layer.open_file(
            Path::new(&tmp),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
            0o644,
        )?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o644))?;
        std::io::Write::write_all(&mut std::fs::File::from(fd), data)?;
        layer.rename(&tmp, name)
    })();
    if let Err(e) = result {
        let _ = rustix::fs::unlinkat(layer.fd(), tmp.as_str(), AtFlags::empty());
        return Err(LayoutError::io(id, "write", layer.display(name), e));
    }
    Ok(())
}
