//! Reading one file of a layer stack's root filesystem without mounting
//! it: this module owns the merge of the layers' `diff` directories the way
//! overlayfs merges them, for the few files an engine needs before anything
//! is mounted (an image's `/etc/passwd` and `/etc/group`, to size
//! `--userns=auto`), with no privilege and no mount.
//!
//! ```text
//! <graphroot>/overlay/<top>/diff/etc/passwd          looked up top first ...
//! <graphroot>/overlay/<mid>/diff/etc/.wh.group       AUFS whiteout: hides etc/group below
//! <graphroot>/overlay/<mid>/diff/etc/shadow          c 0 0: whiteout (native overlay)
//! <graphroot>/overlay/<base>/diff/etc/               ... down to the base
//! ```
//!
//! The rules, those of overlayfs over the diff directories containers/storage
//! writes (native whiteouts and AUFS ones, as fuse-overlayfs may leave):
//!
//! - Each name is looked up in every layer from the top down. A character
//!   device 0:0, or a `.wh.<name>` entry beside the name, hides it in every
//!   lower layer. Names that start with `.wh.` are markers, never entries.
//! - A non-directory ends the search. A directory merges with the
//!   same-named directories of lower layers while they are directories, up
//!   to and including the first opaque one (`trusted.overlay.opaque=y`,
//!   `user.overlay.opaque=y`, or holding a `.wh..wh..opq` entry). The diff
//!   roots themselves always merge, as overlayfs' root does.
//! - Symlinks on the way, the last component's too, are resolved here,
//!   inside the stack's root filesystem: an absolute target starts again at
//!   its root, `..` never climbs above it, and after [`MAX_SYMLINKS`] links
//!   the file is taken as missing (as `ELOOP` would make it); so it is
//!   after [`MAX_COMPONENTS`] components walked, links expanded, which
//!   bounds the time a hostile image can take.
//!
//! Nothing here trusts the layers: each diff is opened beneath the driver
//! home without following symlinks ([`OverlayDriver::open_diff`]'s way) and
//! every name inside it is opened or examined beneath that diff, one plain
//! component at a time, with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
//! ([`Dir`]) or `*at(AT_SYMLINK_NOFOLLOW)`, so the kernel never follows a
//! link a layer holds and a hostile layer cannot make us read a host file.
//! Names are bytes, not necessarily UTF-8.
//!
//! Not modelled (containers/storage does not write them into image
//! layers): `redirect` and `metacopy` xattrs, and the kernel's xattr
//! whiteouts (`overlay.whiteout` inside an `opaque=x` directory).

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use layerstore::confined::Dir;
use layerstore::LayerId;
use rustix::fs::{AtFlags, FileType, OFlags, StatxFlags};
use rustix::io::Errno;

use super::{LayoutError, OverlayDriver};

/// The most symlinks one lookup follows (Linux's `MAXSYMLINKS`).
pub const MAX_SYMLINKS: usize = 40;

/// The most path components one lookup walks, those of link targets and
/// `..` included: each costs a look into every layer, and callers hold the
/// store's locks, so a hostile image must not make it long. A real
/// `/etc/passwd` takes a handful.
pub const MAX_COMPONENTS: usize = 256;

/// The prefix of AUFS whiteouts.
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// The AUFS opaque-directory marker.
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The xattrs that mark a directory opaque (root's, then rootless').
const OPAQUE_XATTRS: [&str; 2] = ["trusted.overlay.opaque", "user.overlay.opaque"];

/// Why a file of a layer stack could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StackReadError {
    /// The path asked for cannot name a file (it holds a NUL byte).
    #[error("{path:?} is not a file path")]
    InvalidPath {
        /// The path as given.
        path: String,
    },
    /// A layer of the chain has no directory or no `diff`.
    #[error(transparent)]
    Layer(#[from] LayoutError),
    /// The file is larger than the caller allows.
    #[error("layer {layer}: {} ({file} in the image) holds more than {limit} bytes", path.display())]
    TooBig {
        /// The layer the file is in.
        layer: LayerId,
        /// The path asked for.
        file: String,
        /// Where the file is (after resolving symlinks).
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// Examining or reading an entry of a layer failed.
    #[error("layer {layer}: cannot {action} {}", path.display())]
    Io {
        /// The layer.
        layer: LayerId,
        /// What we were doing (`examine`, `open`, `read`).
        action: &'static str,
        /// The entry.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl OverlayDriver {
    /// The bytes of regular file `path` (relative, `/`-separated) as the
    /// root filesystem of the layer stack `chain` (top layer first, then its
    /// parents down to the base) shows it, merged as overlayfs merges it
    /// and with symlinks resolved inside it (whiteouts, opaque directories,
    /// links as the module documents them). `None` when there is no such file or it is not a
    /// regular file (a directory, a device, a dangling or looping link).
    ///
    /// A file of more than `limit` bytes is refused
    /// ([`StackReadError::TooBig`]); a layer without a `diff` is an error
    /// naming it. An empty chain has no files.
    ///
    /// # Locking
    ///
    /// Takes none: the caller holds the store's layer lock (shared is
    /// enough), so that the layers do not change while they are read.
    pub fn read_stack_file(
        &self,
        chain: &[LayerId],
        path: &str,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, StackReadError> {
        if path.contains('\0') {
            return Err(StackReadError::InvalidPath {
                path: path.to_owned(),
            });
        }
        if chain.is_empty() {
            return Ok(None);
        }
        let stack = Stack::open(self, chain, path)?;
        stack.read(limit)
    }

    /// Every diff of `chain`, opened without following symlinks.
    fn open_diffs(&self, chain: &[LayerId]) -> Result<Vec<Dir>, LayoutError> {
        let missing = |id: &LayerId| LayoutError::LayerNotFound {
            id: id.to_string(),
            path: self.layer_dir(id),
        };
        let Some(home) = self.home_dir()? else {
            return Err(missing(&chain[0]));
        };
        let mut diffs = Vec::with_capacity(chain.len());
        for id in chain {
            let layer = self.open_layer_in(&home, id)?;
            match layer.open_dir("diff") {
                Ok(diff) => diffs.push(diff),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(LayoutError::LayerNotFound {
                        id: id.to_string(),
                        path: self.diff_path(id),
                    })
                }
                Err(e) => return Err(LayoutError::io(id.as_str(), "open", self.diff_path(id), e)),
            }
        }
        Ok(diffs)
    }
}

/// One layer's directory at a place of the walk: the layer (index in the
/// chain) and the path beneath its diff (empty: the diff itself).
#[derive(Debug, Clone)]
struct Part {
    layer: usize,
    rel: PathBuf,
}

/// What a name is in a merged directory.
#[derive(Debug)]
enum Found {
    /// Nothing (or hidden by a whiteout).
    Missing,
    /// A directory: the layers' directories that merge into it, top first.
    Dir(Vec<Part>),
    /// A non-directory, in the directory `parent` of the topmost layer
    /// that has the name.
    Other { parent: Part, file_type: FileType },
}

/// What a name is in one layer's directory.
enum Step {
    /// Not there; lower layers may have it.
    Absent,
    /// Hidden, here and in every lower layer.
    Hidden,
    /// A directory; `last` when no lower layer's can merge into it.
    Dir { last: bool },
    /// Anything else.
    Other(FileType),
}

/// The diffs of a chain, and the file asked for.
struct Stack<'a> {
    chain: &'a [LayerId],
    diffs: Vec<Dir>,
    file: &'a str,
}

impl<'a> Stack<'a> {
    fn open(
        driver: &OverlayDriver,
        chain: &'a [LayerId],
        file: &'a str,
    ) -> Result<Self, LayoutError> {
        Ok(Stack {
            chain,
            diffs: driver.open_diffs(chain)?,
            file,
        })
    }

    /// Walk to the file, resolving symlinks, and read it.
    fn read(&self, limit: u64) -> Result<Option<Vec<u8>>, StackReadError> {
        let root = (0..self.diffs.len())
            .map(|layer| Part {
                layer,
                rel: PathBuf::new(),
            })
            .collect();
        // The merged directories from the root to where the walk is.
        let mut levels: Vec<Vec<Part>> = vec![root];
        // The components still to walk, the next one last.
        let mut todo = Vec::new();
        push_components(&mut todo, self.file.as_bytes());
        let mut links = 0;
        let mut walked = 0;
        while let Some(name) = todo.pop() {
            walked += 1;
            if walked > MAX_COMPONENTS {
                return Ok(None);
            }
            if name.as_bytes() == b".." {
                if levels.len() > 1 {
                    levels.pop();
                }
                continue;
            }
            let here = levels.last().map_or(&[][..], Vec::as_slice);
            match self.lookup(here, &name)? {
                Found::Missing => return Ok(None),
                Found::Dir(parts) => levels.push(parts),
                Found::Other {
                    parent,
                    file_type: FileType::Symlink,
                } => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Ok(None);
                    }
                    let target = self.in_dir(&parent, "open", |dir| dir.read_link(&name))?;
                    let Some(target) = target else {
                        return Ok(None);
                    };
                    let target = target.into_os_string().into_vec();
                    if target.starts_with(b"/") {
                        levels.truncate(1);
                    }
                    push_components(&mut todo, &target);
                }
                Found::Other {
                    parent,
                    file_type: FileType::RegularFile,
                } if todo.is_empty() => return self.read_file(&parent, &name, limit),
                // A device, a FIFO, a socket; or a file used as a directory.
                Found::Other { .. } => return Ok(None),
            }
        }
        // The path names a directory (the root, when it is empty).
        Ok(None)
    }

    /// What `name` is in the merged directory made of `level`.
    fn lookup(&self, level: &[Part], name: &OsStr) -> Result<Found, StackReadError> {
        if name.as_bytes().starts_with(WHITEOUT_PREFIX) {
            return Ok(Found::Missing);
        }
        let marker = OsString::from_vec([WHITEOUT_PREFIX, name.as_bytes()].concat());
        let mut dirs = Vec::new();
        for part in level {
            let step = self.in_dir(part, "examine", |dir| look_in(dir, name, &marker))?;
            match step {
                Step::Absent => continue,
                Step::Hidden => break,
                Step::Dir { last } => {
                    dirs.push(Part {
                        layer: part.layer,
                        rel: part.rel.join(name),
                    });
                    if last {
                        break;
                    }
                }
                Step::Other(file_type) if dirs.is_empty() => {
                    return Ok(Found::Other {
                        parent: part.clone(),
                        file_type,
                    })
                }
                // Beneath a directory: hidden by it.
                Step::Other(_) => break,
            }
        }
        Ok(if dirs.is_empty() {
            Found::Missing
        } else {
            Found::Dir(dirs)
        })
    }

    /// Regular file `name` of directory `parent`, at most `limit` bytes.
    fn read_file(
        &self,
        parent: &Part,
        name: &OsStr,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, StackReadError> {
        let rel = parent.rel.join(name);
        let diff = &self.diffs[parent.layer];
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY;
        let fd = match diff.open_file(&rel, flags, 0) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(parent.layer, "open", &rel, e)),
        };
        let st =
            rustix::fs::fstat(&fd).map_err(|e| self.io(parent.layer, "examine", &rel, e.into()))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            // Replaced since it was looked up.
            return Ok(None);
        }
        let too_big = || StackReadError::TooBig {
            layer: self.chain[parent.layer].clone(),
            file: self.file.to_owned(),
            path: diff.display(&rel),
            limit,
        };
        let size = u64::try_from(st.st_size).unwrap_or(0);
        if size > limit {
            return Err(too_big());
        }
        let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        // A file that grows while it is read stops at the limit, too.
        std::fs::File::from(fd)
            .take(limit.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|e| self.io(parent.layer, "read", &rel, e))?;
        if out.len() as u64 > limit {
            return Err(too_big());
        }
        Ok(Some(out))
    }

    /// Run `f` on the directory `part` names, opened beneath its diff.
    fn in_dir<T>(
        &self,
        part: &Part,
        action: &'static str,
        f: impl FnOnce(&Dir) -> io::Result<T>,
    ) -> Result<T, StackReadError> {
        let diff = &self.diffs[part.layer];
        let result = if part.rel.as_os_str().is_empty() {
            f(diff)
        } else {
            diff.open_dir(&part.rel).and_then(|dir| f(&dir))
        };
        result.map_err(|e| self.io(part.layer, action, &part.rel, e))
    }

    fn io(
        &self,
        layer: usize,
        action: &'static str,
        rel: &Path,
        source: io::Error,
    ) -> StackReadError {
        StackReadError::Io {
            layer: self.chain[layer].clone(),
            action,
            path: self.diffs[layer].display(rel),
            source,
        }
    }
}

/// What `name` is in one layer's directory `dir`; `marker` is its AUFS
/// whiteout (`.wh.<name>`).
fn look_in(dir: &Dir, name: &OsStr, marker: &OsStr) -> io::Result<Step> {
    let Some((file_type, rdev)) = entry_at(dir, name)? else {
        return Ok(if entry_at(dir, marker)?.is_some() {
            Step::Hidden
        } else {
            Step::Absent
        });
    };
    Ok(match file_type {
        FileType::CharacterDevice if rdev == (0, 0) => Step::Hidden,
        FileType::Directory => {
            let child = dir.open_dir(name)?;
            let last = is_opaque(&child)? || entry_at(dir, marker)?.is_some();
            Step::Dir { last }
        }
        other => Step::Other(other),
    })
}

/// Whether directory `dir` hides what lower layers have at its place.
fn is_opaque(dir: &Dir) -> io::Result<bool> {
    for key in OPAQUE_XATTRS {
        let mut buf = [0u8; 8];
        match rustix::fs::fgetxattr(dir.fd(), key, &mut buf[..]) {
            Ok(n) if &buf[..n] == b"y" => return Ok(true),
            // Absent, unsupported, unreadable (trusted.* without
            // CAP_SYS_ADMIN reads as absent) or longer than "y".
            Ok(_) | Err(Errno::NODATA | Errno::NOTSUP | Errno::RANGE) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(entry_at(dir, OsStr::new(OPAQUE_MARKER))?.is_some())
}

/// The type and device number of entry `name` (one plain component) of
/// `dir`, not following it; `None` when there is none.
fn entry_at(dir: &Dir, name: &OsStr) -> io::Result<Option<(FileType, (u32, u32))>> {
    match rustix::fs::statx(dir.fd(), name, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::TYPE) {
        Ok(st) => Ok(Some((
            FileType::from_raw_mode(st.stx_mode.into()),
            (st.stx_rdev_major, st.stx_rdev_minor),
        ))),
        // A `.wh.` marker of a 255-byte name cannot exist.
        Err(Errno::NOENT | Errno::NAMETOOLONG) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Push the components of `path` (bytes, `/`-separated) onto `todo` so
/// that the first is popped first; empty and `.` components are dropped.
fn push_components(todo: &mut Vec<OsString>, path: &[u8]) {
    let parts = path
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".");
    let start = todo.len();
    todo.extend(parts.map(|c| OsString::from_vec(c.to_vec())));
    todo[start..].reverse();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_pop_in_order_and_drop_empty_and_dot() {
        let mut todo = vec![OsString::from("after")];
        push_components(&mut todo, b"/a//./b\xff/../c/");
        let popped: Vec<_> = std::iter::from_fn(|| todo.pop()).collect();
        let want: Vec<OsString> = [&b"a"[..], b"b\xff", b"..", b"c", b"after"]
            .iter()
            .map(|c| OsString::from_vec(c.to_vec()))
            .collect();
        assert_eq!(popped, want);
    }
}
