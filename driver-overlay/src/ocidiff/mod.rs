//! Applying an OCI/Docker layer tar into a layer's `diff` directory the
//! way containers/storage's overlay driver does (`layers.go`
//! `applyDiffWithOptions` + `pkg/archive` `Unpack`), while recording what
//! podman needs to reproduce the exact tar later.
//!
//! ```text
//! <graphroot>/overlay/<id>/diff/               the entries, fd-relative, never through a symlink
//!   dir/<name>      c--------- 0,0             `dir/.wh.<name>` (overlay whiteout format)
//!   dir             trusted.overlay.opaque=y   `dir/.wh..wh..opq` (user.overlay.* rootless)
//! <graphroot>/overlay-layers/<id>.tar-split.gz the caller's TarSplitWriter: every non-content
//!                                              byte of the tar, plus name/size/CRC of each entry
//! ```
//!
//! The blob is read once, as a stream: plain, gzip or zstd (by magic
//! bytes), hashed before and after decompression, entries written as they
//! arrive. Memory does not grow with the layer size.
//!
//! - [`classify`](classify::classify): pure, header -> [`Action`].
//! - `apply`: the effects, relative to the root's directory fd.
//!
//! Hostile input is refused with a [`DiffError`] naming the entry; the
//! caller deletes the layer. Nothing is ever written outside `diff`.

mod apply;
pub mod classify;
mod error;
mod fsops;
pub mod header;
mod stream;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags};

pub use classify::{classify, Action, Meta, RelPath, Skip};
pub use error::DiffError;
pub use header::{Header, Timestamp};

use crate::tarsplit::{TarSplitError, TarSplitWriter};
use error::{errno, show};
use stream::{Hashing, RawEntry, TarStream};

/// How whiteouts are stored in `diff` (the store's `.has-mount-program`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutFormat {
    /// Native overlay: character devices 0/0 and the `opaque` xattr.
    Overlay {
        /// Rootless: `user.overlay.*` instead of `trusted.overlay.*`.
        user_xattr: bool,
    },
    /// A mount program (fuse-overlayfs): `.wh.*` files kept as they are.
    Aufs,
}

/// A blob's compression, as containers/storage records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// The value of `"compression"` in `layers.json` (`archive.Compression`:
    /// 0 uncompressed, 2 gzip, 4 zstd).
    pub fn as_cs(&self) -> i64 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 2,
            Compression::Zstd => 4,
        }
    }
}

/// How to apply a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Whiteout format of the store.
    pub whiteout: WhiteoutFormat,
    /// Warn instead of failing when an owner cannot be set.
    pub ignore_chown_errors: bool,
}

/// What applying a layer found: the values of its `layers.json` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffReport {
    /// `sha256:<hex>` of the blob as read.
    pub compressed_digest: String,
    /// Bytes of the blob.
    pub compressed_size: i64,
    /// `sha256:<hex>` of the whole uncompressed stream (the DiffID).
    pub diff_digest: String,
    /// Bytes of the uncompressed stream.
    pub diff_size: i64,
    /// The blob's compression.
    pub compression: Compression,
    /// Sorted unique uids of the tar headers, `.wh.*` entries left out.
    pub uidset: Vec<u32>,
    /// Sorted unique gids, likewise.
    pub gidset: Vec<u32>,
    /// Number of entries (headers after extensions were merged).
    pub entries: u64,
}

/// Apply one layer tar (plain, gzip or zstd, detected by magic bytes;
/// bzip2 and xz are refused) into the empty directory `diff`, writing its
/// tar-split metadata to `tar_split`.
///
/// Every byte of the blob is read, also after the end of the archive,
/// and counted in the digests and sizes; the bytes after the archive end
/// go into tar-split segments so the exact stream can be rebuilt.
pub fn apply_layer<R: Read, W: Write>(
    input: R,
    diff: &Path,
    tar_split: &mut TarSplitWriter<W>,
    opts: &ApplyOptions,
) -> Result<DiffReport, DiffError> {
    apply_layer_at(input, open_root(diff)?, tar_split, opts)
}

/// [`apply_layer`] into the open directory `root` (a layer's `diff`
/// reached without following symlinks).
pub fn apply_layer_at<R: Read, W: Write>(
    input: R,
    root: OwnedFd,
    tar_split: &mut TarSplitWriter<W>,
    opts: &ApplyOptions,
) -> Result<DiffReport, DiffError> {
    let mut blob = Hashing::new(input, true);
    let head = stream::read_head(&mut blob)?;
    let compression = stream::detect(&head)?;
    let decoded = stream::decoder(compression, io::Cursor::new(head).chain(&mut blob))?;
    // A plain tar is the blob: one hash serves as both digests.
    let mut tar = TarStream::new(decoded, compression != Compression::None);
    let mut applier = apply::Applier::new(root, opts);
    let mut ids = IdSets::default();
    let mut entries = 0;
    while let Some(entry) = tar.next_entry()? {
        entries += 1;
        ids.record(&entry.header);
        apply_entry(&mut tar, &mut applier, tar_split, entry, opts)?;
    }
    let (diff_digest, diff_size) = tar.finish(|raw| segment(tar_split, raw))?;
    // tar-split before 0.11.4 (containers/storage 1.43) ends with an empty
    // segment; newer readers accept it.
    tar_split
        .empty_segment()
        .map_err(|source| DiffError::TarSplit { source })?;
    applier.finish()?;
    io::copy(&mut blob, &mut io::sink()).map_err(|source| DiffError::Read { source })?;
    let (compressed_digest, compressed_size) = blob.finish();
    let compressed_digest = compressed_digest.expect("the blob is hashed");
    let diff_digest = diff_digest.unwrap_or_else(|| compressed_digest.clone());
    Ok(DiffReport {
        compressed_digest,
        compressed_size: compressed_size as i64,
        diff_digest,
        diff_size: diff_size as i64,
        compression,
        uidset: ids.uids.into_iter().collect(),
        gidset: ids.gids.into_iter().collect(),
        entries,
    })
}

/// Check the blob's digest against the one the caller expected (from a
/// manifest): [`DiffError::DigestMismatch`] when they differ.
pub fn verify_digest(report: &DiffReport, expected: &str) -> Result<(), DiffError> {
    if report.compressed_digest == expected {
        return Ok(());
    }
    Err(DiffError::DigestMismatch {
        expected: expected.to_owned(),
        found: report.compressed_digest.clone(),
    })
}

fn open_root(diff: &Path) -> Result<OwnedFd, DiffError> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    rustix::fs::open(diff, flags, Mode::empty()).map_err(|e| DiffError::OpenDiff {
        path: diff.to_owned(),
        source: errno(e),
    })
}

/// One entry: its raw bytes to tar-split, its action to disk, its
/// content through to the file (and the CRC to tar-split).
fn apply_entry<R: Read, W: Write>(
    tar: &mut TarStream<R>,
    applier: &mut apply::Applier,
    tar_split: &mut TarSplitWriter<W>,
    entry: RawEntry,
    opts: &ApplyOptions,
) -> Result<(), DiffError> {
    segment(tar_split, &entry.raw)?;
    let name = show(&entry.header.name);
    let action = classify(&entry.header, &opts.whiteout)?;
    let mut content = tar.content();
    applier.apply(&name, &action, &mut content)?;
    let crc = content.finish()?;
    tar_split
        .file(&entry.header.name, entry.content_len, crc)
        .map_err(|e| match e {
            TarSplitError::DuplicatePath { .. } => DiffError::DuplicatePath { entry: name },
            source => DiffError::TarSplit { source },
        })
}

fn segment<W: Write>(tar_split: &mut TarSplitWriter<W>, raw: &[u8]) -> Result<(), DiffError> {
    tar_split
        .segment(raw)
        .map_err(|source| DiffError::TarSplit { source })
}

/// uidset/gidset as containers/storage collects them: every header's ids
/// except those of entries whose base name starts with `.wh.`.
#[derive(Debug, Default)]
struct IdSets {
    uids: BTreeSet<u32>,
    gids: BTreeSet<u32>,
}

impl IdSets {
    fn record(&mut self, h: &Header) {
        if !classify::raw_base(&h.name).starts_with(classify::WHITEOUT_PREFIX) {
            // Go converts with uint32(), wrapping out-of-range values.
            self.uids.insert(h.uid as u32);
            self.gids.insert(h.gid as u32);
        }
    }
}
