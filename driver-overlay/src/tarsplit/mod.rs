//! The tar-split metadata of a layer: `<graphroot>/overlay-layers/<id>.tar-split.gz`.
//!
//! This module owns the file format, both directions: [`TarSplitWriter`]
//! encodes entries byte for byte as containers/storage's
//! `github.com/vbatts/tar-split/tar/storage.NewJSONPacker` does,
//! [`read_entries`] / [`EntryReader`] decode them as its `NewJSONUnpacker`
//! does, and [`reassemble`] rebuilds the layer's original tar from the
//! entries plus the layer's files, as `tar/asm.WriteOutputTarStream` does
//! for `containers-storage diff`. Walking a tar stream to produce the
//! entries is the job of the `ocidiff` module; [`Crc64`] is the checksum
//! both sides need.
//!
//! ```text
//! <graphroot>/overlay-layers/
//!   <id>.tar-split.gz    gzip of one JSON entry per line:
//!     {"type":2,"payload":"<base64 raw bytes>","position":0}
//!     {"type":1,"name":"etc/hostname","size":4,"payload":"<base64 CRC-64>","position":1}
//!     {"type":1,"name_raw":"<base64 name>","payload":null,"position":2}
//!     ...
//! ```
//!
//! # The format
//!
//! Each entry is a Go `storage.Entry` encoded by `json.Encoder.Encode`:
//! compact JSON with HTML-safe string escaping and a trailing `\n`; fields
//! in the order `type`, `name` (omitted when empty), `name_raw` (base64,
//! omitted when empty), `size` (omitted when 0), `payload` (base64, `null`
//! when absent, `""` when present but empty), `position` (the entry's
//! index, from 0).
//!
//! - A **segment** (`type` 2) holds raw bytes of the tar that are not file
//!   content: for each member, the padding of the previous member's content,
//!   any PAX (`x`, `g`) or GNU long-name (`L`, `K`) extension headers with
//!   their data, and the member's header block. At the end of the archive:
//!   the last padding and the end-of-archive zero blocks, then whatever
//!   follows them, one entry per read of at most 1 MiB
//!   ([`PADDING_CHUNK_SIZE`]).
//! - A **file** (`type` 1) stands for one tar member, regular or not: its
//!   full name after PAX/GNU long-name processing (in `name` when it is
//!   valid UTF-8, else in `name_raw`), its header size, and for size > 0
//!   the CRC-64 (ISO polynomial, as Go's `hash/crc64`) of its content as 8
//!   big-endian bytes. No two file entries may have the same name after
//!   Go's `filepath.Clean` (`ErrDuplicatePath`), neither when writing nor
//!   when reading.
//! - tar-split before 0.11.4 (containers/storage 1.43, as in Debian 12)
//!   ends every stream with an empty segment, `{"type":2,"payload":"",...}`;
//!   later releases do not ([`TarSplitWriter::empty_segment`]). Readers
//!   accept both.
//!
//! The gzip framing is any valid gzip: containers/storage writes it with
//! pgzip at `BestSpeed` and reads it with a multi-member gzip reader.

mod crc64;
mod reader;
mod writer;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod testtar;

use std::io;

pub use crc64::Crc64;
pub use reader::{entries, read_entries, reassemble, EntryReader};
pub use writer::TarSplitWriter;

/// Suffix of a layer's tar-split file in `<graphroot>/overlay-layers/`.
pub const FILE_SUFFIX: &str = ".tar-split.gz";

/// The largest segment tar-split writes for the bytes after the end of the
/// archive: it reads them in chunks of this size, one entry per read.
pub const PADDING_CHUNK_SIZE: usize = 1024 * 1024;

/// One decoded tar-split entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// Raw bytes of the tar stream (headers, padding), to be copied verbatim.
    Segment(Vec<u8>),
    /// A tar member; its content (if `size > 0`) comes from the layer's files.
    File {
        /// The member's full name as the tar reader saw it (e.g. `./etc/hosts`).
        name: Vec<u8>,
        /// The size in the member's header.
        size: u64,
        /// CRC-64 of the content (big-endian), present when `size > 0`.
        crc: Option<[u8; 8]>,
    },
}

/// Why reading, writing or reassembling tar-split data failed.
///
/// Names are tar member names as bytes; messages show them lossily.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TarSplitError {
    /// Reading or writing the tar-split stream or the reassembled tar failed.
    #[error("{op}")]
    Io {
        /// What was being done, e.g. "writing the tar-split stream".
        op: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// Two file entries have the same name after Go's `filepath.Clean`;
    /// tar-split (and so containers/storage) refuses such archives.
    #[error(
        "duplicate path {} in the tar stream (tar-split does not support duplicates)",
        show(name)
    )]
    DuplicatePath {
        /// The second entry's name, as given.
        name: Vec<u8>,
    },
    /// A line of the tar-split stream is not valid JSON for an entry.
    #[error("tar-split line {line} is not a valid entry")]
    Json {
        /// 1-based line number in the uncompressed stream.
        line: u64,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// A line of the tar-split stream is JSON but not a usable entry.
    #[error("tar-split line {line}: {message}")]
    Decode {
        /// 1-based line number in the uncompressed stream.
        line: u64,
        /// What is wrong with it.
        message: String,
    },
    /// The layer file for a file entry could not be opened.
    #[error("opening {} to reassemble the tar", show(name))]
    OpenFile {
        /// The entry's name.
        name: Vec<u8>,
        /// The error from the file opener.
        source: io::Error,
    },
    /// Reading the layer file for a file entry failed.
    #[error("reading {} to reassemble the tar", show(name))]
    ReadFile {
        /// The entry's name.
        name: Vec<u8>,
        /// The underlying error.
        source: io::Error,
    },
    /// A layer file is shorter than its entry's size.
    #[error(
        "{} has {found} bytes, the tar-split entry expects {expected}",
        show(name)
    )]
    ShortFile {
        /// The entry's name.
        name: Vec<u8>,
        /// The size in the entry.
        expected: u64,
        /// The bytes the file had.
        found: u64,
    },
    /// A layer file is longer than its entry's size.
    #[error(
        "{} is longer than the {expected} bytes its tar-split entry expects",
        show(name)
    )]
    LongFile {
        /// The entry's name.
        name: Vec<u8>,
        /// The size in the entry.
        expected: u64,
    },
    /// A layer file's content does not match the CRC-64 in its entry (or the
    /// entry has none although its size is not 0).
    #[error("{} does not match the checksum in its tar-split entry", show(name))]
    CrcMismatch {
        /// The entry's name.
        name: Vec<u8>,
    },
}

/// A tar member name for messages: quoted, lossy for non-UTF-8 bytes.
fn show(name: &[u8]) -> String {
    match std::str::from_utf8(name) {
        Ok(s) => format!("{s:?}"),
        Err(_) => format!("\"{}\"", name.escape_ascii()),
    }
}

/// Go's `filepath.Clean` on Unix, on bytes: the key under which tar-split
/// detects duplicate names. `./a`, `a/`, `b/../a` and `a//` all become `a`;
/// the empty name becomes `.`.
fn clean_path(name: &[u8]) -> Vec<u8> {
    let rooted = name.first() == Some(&b'/');
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in name.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => match parts.last() {
                Some(last) if *last != b".." => {
                    parts.pop();
                }
                // `/..` is `/`; a relative path keeps leading `..`.
                _ if rooted => {}
                _ => parts.push(part),
            },
            _ => parts.push(part),
        }
    }
    let mut out = Vec::with_capacity(name.len());
    if rooted {
        out.push(b'/');
    }
    out.extend_from_slice(&parts.join(&b'/'));
    if out.is_empty() {
        out.push(b'.');
    }
    out
}
