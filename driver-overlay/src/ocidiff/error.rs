//! [`DiffError`]: everything that can go wrong applying a layer tar.

use std::io;
use std::path::PathBuf;

use crate::tarsplit::TarSplitError;

/// Why a layer could not be applied. Variants about one tar entry name it
/// (`entry`, as the tar spells it, non-UTF-8 bytes shown as U+FFFD).
///
/// After any error the layer's `diff` directory is in an unspecified
/// state and the caller deletes it; nothing outside `diff` was touched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiffError {
    /// The blob is compressed with something containers/storage can
    /// read but layerstore does not (bzip2, xz).
    #[error("unsupported compression {format}: layerstore reads plain, gzip and zstd layers")]
    UnsupportedCompression {
        /// `"bzip2"` or `"xz"`.
        format: &'static str,
    },
    /// Reading or decompressing the blob failed.
    #[error("reading the layer blob")]
    Read {
        /// The reader's or decompressor's error.
        source: io::Error,
    },
    /// The (decompressed) stream ends in the middle of something.
    #[error(
        "the layer is truncated: it ends in the middle of {what}{}",
        at_entry(entry)
    )]
    Truncated {
        /// What was being read: "a header", "the content", ...
        what: &'static str,
        /// The entry whose content or header was cut, if known.
        entry: Option<String>,
    },
    /// A header block that is not a tar header (bad checksum, bad
    /// number, oversized extension): also what garbage input gives.
    #[error("invalid tar header at offset {offset} of the uncompressed stream: {reason}")]
    BadHeader {
        /// Byte offset of the block in the uncompressed stream.
        offset: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An entry name (or hard link target) that cannot be placed in the
    /// layer: empty, too long, or escaping the root with `..`.
    #[error("entry {entry:?}: invalid path: {reason}")]
    InvalidPath {
        /// The entry.
        entry: String,
        /// Why.
        reason: &'static str,
    },
    /// A tar entry type layers never contain (sparse, volume label, ...).
    #[error("entry {entry:?}: unsupported tar entry type {typeflag:?}")]
    UnsupportedType {
        /// The entry.
        entry: String,
        /// The header's type flag.
        typeflag: char,
    },
    /// A header value layerstore cannot apply (owner or device number out
    /// of range, empty symlink target, ...).
    #[error("entry {entry:?}: {reason}")]
    BadEntry {
        /// The entry.
        entry: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A parent of the entry is a symlink an earlier entry created;
    /// layerstore never writes through symlinks.
    #[error("entry {entry:?}: path component {component:?} is a symlink")]
    SymlinkInPath {
        /// The entry.
        entry: String,
        /// The parent path that is a symlink.
        component: String,
    },
    /// A parent of the entry is a file, device, ... not a directory.
    #[error("entry {entry:?}: path component {component:?} is not a directory")]
    NotADirectory {
        /// The entry.
        entry: String,
        /// The parent path that is not a directory.
        component: String,
    },
    /// A hard link whose target is missing (not an earlier entry of this
    /// layer), a directory, or behind a symlink.
    #[error("entry {entry:?}: invalid hard link to {target:?}: {reason}")]
    HardlinkTarget {
        /// The hard link entry.
        entry: String,
        /// Its target as the tar spells it.
        target: String,
        /// Why.
        reason: &'static str,
    },
    /// A whiteout for a name this same layer already contains.
    #[error(
        "entry {entry:?}: whiteout for {target:?}, which an earlier entry of this layer created"
    )]
    WhiteoutConflict {
        /// The whiteout entry (`.wh.<name>`).
        entry: String,
        /// The name it hides.
        target: String,
    },
    /// Two entries with the same path (tar-split cannot record that).
    #[error("entry {entry:?} appears more than once in the layer")]
    DuplicatePath {
        /// The entry.
        entry: String,
    },
    /// Writing the tar-split metadata failed.
    #[error("writing the tar-split metadata")]
    TarSplit {
        /// The writer's error.
        source: TarSplitError,
    },
    /// A filesystem operation on an entry failed.
    #[error("entry {entry:?}: {op}")]
    Io {
        /// What was being done ("creating the file", "setting the owner").
        op: &'static str,
        /// The entry.
        entry: String,
        /// The system's error.
        source: io::Error,
    },
    /// Setting an extended attribute failed (other than the filesystem
    /// not supporting it, which is only warned about).
    #[error("entry {entry:?}: setting xattr {name:?}")]
    Xattr {
        /// The entry.
        entry: String,
        /// The attribute.
        name: String,
        /// The system's error.
        source: io::Error,
    },
    /// The layer's `diff` directory could not be opened.
    #[error("opening the layer directory {}", path.display())]
    OpenDiff {
        /// The directory.
        path: PathBuf,
        /// The system's error.
        source: io::Error,
    },
    /// The blob's digest is not the one the caller expected.
    #[error("layer digest mismatch: expected {expected}, found {found}")]
    DigestMismatch {
        /// The digest the caller expected.
        expected: String,
        /// The digest of the bytes read.
        found: String,
    },
}

fn at_entry(entry: &Option<String>) -> String {
    entry
        .as_ref()
        .map_or(String::new(), |e| format!(" of entry {e:?}"))
}

/// An entry name for messages, like `Path::display`: bytes that are not
/// UTF-8 become U+FFFD.
pub(crate) fn show(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

/// An [`io::Error`] from a rustix errno.
pub(crate) fn errno(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}
