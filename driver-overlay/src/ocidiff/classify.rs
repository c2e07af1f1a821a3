//! What one tar entry asks for, decided from its header alone: the
//! normalised path, the kind of object, its metadata, and whether it is a
//! whiteout. Pure; the `apply` module does what the [`Action`] says.

use super::error::{show, DiffError};
use super::header::{Header, Records, Timestamp};
use super::WhiteoutFormat;

/// Longest entry name accepted: a longer path could not be opened by
/// anyone reading the layer later (`PATH_MAX`).
pub const MAX_NAME: usize = 4095;

/// Prefix of AUFS whiteout names.
pub const WHITEOUT_PREFIX: &[u8] = b".wh.";

/// Name of the AUFS opaque-directory marker.
pub const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// A path inside the layer: components that are never empty, `.` or
/// `..`; no components means the layer root.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RelPath(pub Vec<Vec<u8>>);

impl RelPath {
    /// The parent components and the last one (`None` for the root).
    pub fn split_last(&self) -> Option<(&[u8], &[Vec<u8>])> {
        self.0
            .split_last()
            .map(|(last, parent)| (last.as_slice(), parent))
    }

    /// The path as bytes, components joined with `/`.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.join(&b'/')
    }
}

/// Owner, permissions, times and xattrs to give a new object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Meta {
    /// Owner (the id in the tar header; layers are applied unmapped).
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Permission bits including setuid, setgid and sticky (`0o7777`).
    pub mode: u32,
    /// Modification time.
    pub mtime: Timestamp,
    /// Access time, if the header has one.
    pub atime: Option<Timestamp>,
    /// Extended attributes to set, `security.selinux` already dropped.
    pub xattrs: Records,
}

/// Why an entry writes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// The layer root (`./`, `/`): containers/storage ignores it.
    Root,
    /// A PAX global header (`g`): Go reports it as an entry and ignores it.
    GlobalHeader,
}

/// What to do for one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing (the content, if any, is still read for tar-split).
    Skip(Skip),
    /// A directory; an existing directory only gets the metadata.
    Dir {
        /// Where.
        path: RelPath,
        /// Metadata.
        meta: Meta,
    },
    /// A regular file with the entry's content.
    File {
        /// Where.
        path: RelPath,
        /// Metadata.
        meta: Meta,
    },
    /// A symbolic link; the target is stored as is, never followed.
    Symlink {
        /// Where.
        path: RelPath,
        /// The link's content, as bytes.
        target: Vec<u8>,
        /// Metadata (no mode: symlinks have none).
        meta: Meta,
    },
    /// A hard link to an earlier entry of this layer.
    Hardlink {
        /// Where.
        path: RelPath,
        /// The existing entry.
        target: RelPath,
        /// Metadata.
        meta: Meta,
    },
    /// A character device.
    CharDev {
        /// Where.
        path: RelPath,
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
        /// Metadata.
        meta: Meta,
    },
    /// A block device.
    BlockDev {
        /// Where.
        path: RelPath,
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
        /// Metadata.
        meta: Meta,
    },
    /// A named pipe.
    Fifo {
        /// Where.
        path: RelPath,
        /// Metadata.
        meta: Meta,
    },
    /// Overlay format: `dir/.wh.<name>` becomes a 0/0 character device
    /// with mode 0 at `dir/<name>`, owned by the header's ids.
    Whiteout {
        /// The hidden name.
        path: RelPath,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
    },
    /// Overlay format: `dir/.wh..wh..opq` marks `dir` opaque.
    Opaque {
        /// The directory (possibly the root).
        dir: RelPath,
    },
}

/// Normalise an entry name: leading `/` and `./` dropped, `.` and empty
/// components removed, `..` resolved lexically. Like Go's
/// `filepath.Clean` + `Join(dest, name)`: `..` above the root is clamped
/// for absolute names (`/../x` is `x`) and an error for relative ones.
/// `Ok(None)` is the root itself.
pub fn normalize(raw: &[u8]) -> Result<Option<RelPath>, &'static str> {
    if raw.is_empty() {
        return Err("empty name");
    }
    if raw.len() > MAX_NAME {
        return Err("longer than 4095 bytes");
    }
    let absolute = raw[0] == b'/';
    let mut parts: Vec<Vec<u8>> = Vec::new();
    for comp in raw.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                if parts.pop().is_none() && !absolute {
                    return Err("`..` leads outside the layer");
                }
            }
            c => parts.push(c.to_vec()),
        }
    }
    Ok((!parts.is_empty()).then_some(RelPath(parts)))
}

/// The last element of a raw name like Go's `path.Base` (trailing slashes
/// ignored): used for the `.wh.` test of uidset/gidset.
pub fn raw_base(raw: &[u8]) -> &[u8] {
    let end = raw.iter().rposition(|b| *b != b'/').map_or(0, |e| e + 1);
    let trimmed = &raw[..end];
    let start = trimmed
        .iter()
        .rposition(|b| *b == b'/')
        .map_or(0, |s| s + 1);
    &trimmed[start..]
}

/// Decide what one entry does.
pub fn classify(h: &Header, whiteout: &WhiteoutFormat) -> Result<Action, DiffError> {
    let entry = || show(&h.name);
    let invalid = |reason| DiffError::InvalidPath {
        entry: entry(),
        reason,
    };
    if h.typeflag == b'g' {
        return Ok(Action::Skip(Skip::GlobalHeader));
    }
    let Some(path) = normalize(&h.name).map_err(invalid)? else {
        return Ok(Action::Skip(Skip::Root));
    };
    if matches!(whiteout, WhiteoutFormat::Overlay { .. }) {
        if let Some(action) = overlay_whiteout(h, &path)? {
            return Ok(action);
        }
    }
    let bad = |reason| DiffError::BadEntry {
        entry: entry(),
        reason,
    };
    if h.sparse {
        return Err(bad("sparse files are not supported"));
    }
    let meta = meta(h).map_err(bad)?;
    let device = |h: &Header| -> Result<(u32, u32), DiffError> {
        let n = |v: i64| u32::try_from(v).map_err(|_| bad("device number out of range"));
        Ok((n(h.dev_major)?, n(h.dev_minor)?))
    };
    Ok(match h.typeflag {
        b'0' => Action::File { path, meta },
        b'5' => Action::Dir { path, meta },
        b'2' if h.link_name.is_empty() => return Err(bad("symlink with an empty target")),
        b'2' => Action::Symlink {
            path,
            target: h.link_name.clone(),
            meta,
        },
        b'1' => {
            let target = normalize(&h.link_name)
                .map_err(|reason| hardlink_error(h, reason))?
                .ok_or_else(|| hardlink_error(h, "it is the layer root"))?;
            Action::Hardlink { path, target, meta }
        }
        b'3' => {
            let (major, minor) = device(h)?;
            Action::CharDev {
                path,
                major,
                minor,
                meta,
            }
        }
        b'4' => {
            let (major, minor) = device(h)?;
            Action::BlockDev {
                path,
                major,
                minor,
                meta,
            }
        }
        b'6' => Action::Fifo { path, meta },
        other => {
            return Err(DiffError::UnsupportedType {
                entry: entry(),
                typeflag: char::from(other),
            })
        }
    })
}

fn hardlink_error(h: &Header, reason: &'static str) -> DiffError {
    DiffError::HardlinkTarget {
        entry: show(&h.name),
        target: show(&h.link_name),
        reason,
    }
}

/// `.wh..wh..opq` and `.wh.<name>` in the overlay format (any entry type,
/// as in containers/storage).
fn overlay_whiteout(h: &Header, path: &RelPath) -> Result<Option<Action>, DiffError> {
    let Some((base, parent)) = path.split_last() else {
        return Ok(None);
    };
    if base == OPAQUE_MARKER {
        return Ok(Some(Action::Opaque {
            dir: RelPath(parent.to_vec()),
        }));
    }
    let Some(hidden) = base.strip_prefix(WHITEOUT_PREFIX) else {
        return Ok(None);
    };
    if matches!(hidden, b"" | b"." | b"..") {
        return Err(DiffError::InvalidPath {
            entry: show(&h.name),
            reason: "whiteout without a name",
        });
    }
    let bad = |reason| DiffError::BadEntry {
        entry: show(&h.name),
        reason,
    };
    let mut hidden_path = parent.to_vec();
    hidden_path.push(hidden.to_vec());
    Ok(Some(Action::Whiteout {
        path: RelPath(hidden_path),
        uid: id(h.uid).map_err(bad)?,
        gid: id(h.gid).map_err(bad)?,
    }))
}

fn id(v: i64) -> Result<u32, &'static str> {
    u32::try_from(v)
        .ok()
        .filter(|v| *v != u32::MAX)
        .ok_or("owner or group id out of range")
}

fn meta(h: &Header) -> Result<Meta, &'static str> {
    if h.xattrs
        .iter()
        .any(|(name, _)| name.is_empty() || name.contains(&0))
    {
        return Err("invalid xattr name");
    }
    Ok(Meta {
        uid: id(h.uid)?,
        gid: id(h.gid)?,
        mode: (h.mode & 0o7777) as u32,
        mtime: h.mtime,
        atime: h.atime,
        xattrs: h
            .xattrs
            .iter()
            .filter(|(name, _)| name.as_slice() != b"security.selinux")
            .cloned()
            .collect(),
    })
}
