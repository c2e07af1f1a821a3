//! The `l/` short links: generating a layer's link name, resolving a link
//! back to its layer, and repairing a lost link (what c/storage's
//! `recreateSymlinks` does for one layer).
//!
//! ```text
//! <home>/l/<name>  -> ../<id>/diff     symlink, one per layer
//! <home>/<id>/link    "<name>"         no newline, 0644
//! ```

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use rustix::fs::{Mode, OFlags, CWD};
use rustix::io::Errno;
use rustix::rand::{getrandom, GetRandomFlags};

use super::{validate_id, LayoutError, OverlayDriver, LINK_DIR, LINK_FILE};

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

/// The layer id in a link target `../<id>/diff`, if it has that form.
pub(crate) fn layer_of_link_target(target: &str) -> Option<&str> {
    let id = target.strip_prefix("../")?.strip_suffix("/diff")?;
    validate_id(id).is_ok().then_some(id)
}

impl OverlayDriver {
    /// Make sure layer `id`'s short link exists: recreate a missing
    /// `l/<link>` from the `link` file, or, when the `link` file is lost,
    /// rewrite it from an `l/` symlink that points to the layer (or from a
    /// new name when there is none). Returns whether anything was repaired.
    ///
    /// An `l/<link>` that points to another layer is reported as
    /// [`LayoutError::LinkConflict`], never overwritten.
    pub fn repair_link(&self, id: &str) -> Result<bool, LayoutError> {
        let dir = self.existing_layer_dir(id)?;
        let link_dir = self.home.join(LINK_DIR);
        ensure_link_dir(&link_dir)?;
        let expected = format!("../{id}/diff");
        let name = match self.read_link_file(id)? {
            Some(name) => name,
            None => {
                let name = match self.find_link_pointing_to(id)? {
                    Some(name) => name,
                    None => self.create_link(id)?,
                };
                write_replace(id, &dir, LINK_FILE, name.as_bytes())?;
                tracing::info!(layer = id, link = %name, "rewrote the layer's link file");
                return Ok(true);
            }
        };
        let path = link_dir.join(&name);
        match fs::read_link(&path) {
            Ok(target) if target.as_os_str() == expected.as_str() => Ok(false),
            Ok(target) => Err(LayoutError::LinkConflict {
                id: id.to_owned(),
                path,
                target: target.to_string_lossy().into_owned(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::os::unix::fs::symlink(&expected, &path)
                    .map_err(|e| LayoutError::io(id, "create symlink", &path, e))?;
                tracing::info!(layer = id, link = %name, "recreated the layer's l/ link");
                Ok(true)
            }
            Err(e) => Err(LayoutError::io(id, "read symlink", path, e)),
        }
    }

    /// Layers (directories of the home) with a mount point inside them,
    /// from one read of the mount table.
    pub fn layers_with_mounts(&self) -> Result<Vec<String>, LayoutError> {
        let home = fs::canonicalize(&self.home).unwrap_or_else(|_| self.home.clone());
        let points = super::mountinfo::mount_points()
            .map_err(|e| LayoutError::home_io("read the mount table for", &self.home, e))?;
        let mut ids: Vec<String> = points
            .iter()
            .filter_map(|p| p.strip_prefix(&home).ok())
            .filter_map(|rel| rel.components().next())
            .filter_map(|c| c.as_os_str().to_str())
            .filter(|id| *id != LINK_DIR && validate_id(id).is_ok())
            .map(str::to_owned)
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// Whether `<id>/link` exists (one `statat` relative to a home fd
    /// opened once per driver would be cheaper still; a plain lstat of
    /// `<home>/<id>/link` is what this does).
    pub fn has_link_file(&self, id: &str) -> bool {
        validate_id(id).is_ok() && fs::symlink_metadata(self.layer_dir(id).join(LINK_FILE)).is_ok()
    }

    /// Whether [`OverlayDriver::repair_link`] would change anything for
    /// layer `id`: its `link` file or its `l/<link>` symlink is missing.
    /// Unreadable or conflicting state is not "missing" (repair would
    /// refuse it).
    pub fn link_needs_repair(&self, id: &str) -> bool {
        if !self.layer_exists(id) {
            return false;
        }
        match self.read_link_file(id) {
            Ok(Some(name)) => matches!(
                fs::symlink_metadata(self.home.join(LINK_DIR).join(name)),
                Err(e) if e.kind() == io::ErrorKind::NotFound
            ),
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// The name in `<id>/link` (trailing newlines trimmed, as c/storage's
    /// repair does), or `None` when the file is missing.
    pub(crate) fn read_link_file(&self, id: &str) -> Result<Option<String>, LayoutError> {
        let path = self.layer_dir(id).join(LINK_FILE);
        let content = match fs::read_to_string(&path) {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(LayoutError::io(id, "read", path, e)),
        };
        let name = content.trim_end_matches('\n');
        if !is_valid_link_name(name) {
            return Err(LayoutError::BadLowerEntry {
                id: id.to_owned(),
                path,
                entry: content,
            });
        }
        Ok(Some(name.to_owned()))
    }

    /// Create `l/<new name>` -> `../<id>/diff`, retrying on a name clash;
    /// returns the name.
    pub(crate) fn create_link(&self, id: &str) -> Result<String, LayoutError> {
        let target = format!("../{id}/diff");
        let mut attempts = 0;
        loop {
            let name = generate_link_name()?;
            let path = self.home.join(LINK_DIR).join(&name);
            match rustix::fs::symlinkat(target.as_str(), CWD, &path) {
                Ok(()) => return Ok(name),
                Err(Errno::EXIST) if attempts < 3 => attempts += 1,
                Err(e) => return Err(LayoutError::io(id, "create symlink", path, e)),
            }
        }
    }

    /// The layer `l/<name>` points to, following the symlink (`None` when
    /// the symlink is missing).
    pub(crate) fn layer_of_link(
        &self,
        id: &str,
        name: &str,
    ) -> Result<Option<String>, LayoutError> {
        let path = self.home.join(LINK_DIR).join(name);
        match fs::read_link(&path) {
            Ok(target) => {
                let target = target.to_string_lossy();
                match layer_of_link_target(&target) {
                    Some(lower) => Ok(Some(lower.to_owned())),
                    None => Err(LayoutError::LinkConflict {
                        id: id.to_owned(),
                        path,
                        target: target.into_owned(),
                    }),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(LayoutError::io(id, "read symlink", path, e)),
        }
    }

    /// The layer whose `link` file says `name` (used when `l/<name>` is
    /// lost: the `link` files are the authority c/storage rebuilds from).
    pub(crate) fn layer_with_link_name(&self, name: &str) -> Result<Option<String>, LayoutError> {
        for layer in self.list_layers()? {
            if validate_id(&layer).is_err() {
                continue;
            }
            if matches!(self.read_link_file(&layer), Ok(Some(n)) if n == name) {
                return Ok(Some(layer));
            }
        }
        Ok(None)
    }

    /// An `l/` symlink pointing to `../<id>/diff`, if any.
    fn find_link_pointing_to(&self, id: &str) -> Result<Option<String>, LayoutError> {
        let link_dir = self.home.join(LINK_DIR);
        let expected = format!("../{id}/diff");
        let entries =
            fs::read_dir(&link_dir).map_err(|e| LayoutError::io(id, "list", &link_dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| LayoutError::io(id, "list", &link_dir, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if is_valid_link_name(&name)
                && fs::read_link(entry.path()).is_ok_and(|t| t.as_os_str() == expected.as_str())
            {
                return Ok(Some(name));
            }
        }
        Ok(None)
    }
}

/// Create `<home>/l` (0755) if it is missing.
pub(crate) fn ensure_link_dir(link_dir: &std::path::Path) -> Result<(), LayoutError> {
    match rustix::fs::mkdirat(CWD, link_dir, Mode::from_raw_mode(0o755)) {
        Ok(()) => rustix::fs::chmod(link_dir, Mode::from_raw_mode(0o755))
            .map_err(|e| LayoutError::home_io("chmod", link_dir, e)),
        Err(Errno::EXIST) => Ok(()),
        Err(e) => Err(LayoutError::home_io("create", link_dir, e)),
    }
}

/// Replace `<dir>/<name>` with `data` (mode 0644) through a temp file and
/// rename, so a reader never sees a half-written file.
pub(crate) fn write_replace(
    id: &str,
    dir: &std::path::Path,
    name: &str,
    data: &[u8],
) -> Result<(), LayoutError> {
    let tmp: PathBuf = dir.join(format!(".tmp-{name}"));
    let result = write_new(&tmp, data).and_then(|()| fs::rename(&tmp, dir.join(name)));
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(LayoutError::io(id, "write", dir.join(name), e));
    }
    Ok(())
}

/// Write a new file (`O_EXCL`, or truncating a leftover temp), mode 0644.
fn write_new(path: &std::path::Path, data: &[u8]) -> io::Result<()> {
    let fd: OwnedFd = rustix::fs::open(
        path,
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o644))?;
    io::Write::write_all(&mut fs::File::from(fd), data)
}
