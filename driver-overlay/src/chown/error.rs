//! [`ChownError`]: why chown-by-maps stopped.

use std::io;
use std::path::PathBuf;

/// Why chown-by-maps failed. Every variant names the entry (relative to the
/// tree's root for entries inside it); the walk stops at the first error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChownError {
    /// The owner of an entry has no container id in `to_container` (and is
    /// not 0:0), as Go's "mapping host ID pair ... to container".
    #[error("mapping host ID pair {uid}:{gid} of {} to container: not in the layer's id map", path.display())]
    UnmappedOwner {
        /// The entry.
        path: PathBuf,
        /// Its on-disk uid.
        uid: u32,
        /// Its on-disk gid.
        gid: u32,
    },
    /// An id inside an xattr (ACL entry, capability root id) has no
    /// container id in `to_container`.
    #[error("mapping host {kind} {id} in {xattr} of {} to container: not in the layer's id map", path.display())]
    UnmappedXattrId {
        /// The entry.
        path: PathBuf,
        /// The xattr.
        xattr: &'static str,
        /// `"uid"` or `"gid"`.
        kind: &'static str,
        /// The on-disk id.
        id: u32,
    },
    /// An ACL or capability xattr that does not decode.
    #[error("{}: malformed {xattr} value", path.display())]
    MalformedXattr {
        /// The entry.
        path: PathBuf,
        /// The xattr.
        xattr: &'static str,
    },
    /// A system call on an entry failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What we were doing (`lchown`, `read directory`, ...).
        action: &'static str,
        /// The entry.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A worker thread could not be started.
    #[error("cannot start a chown worker thread")]
    Spawn {
        /// The error.
        source: io::Error,
    },
}

impl ChownError {
    pub(crate) fn io(action: &'static str, path: PathBuf, source: impl Into<io::Error>) -> Self {
        ChownError::Io {
            action,
            path,
            source: source.into(),
        }
    }
}
