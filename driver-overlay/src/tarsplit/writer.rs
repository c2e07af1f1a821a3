//! [`TarSplitWriter`]: encode entries exactly as tar-split's JSON packer
//! (`json.Encoder.Encode` of a `storage.Entry`) and gzip them.

use std::collections::HashSet;
use std::io::Write;

use base64::Engine as _;
use flate2::write::GzEncoder;
use flate2::Compression;
use layerstore::gojson::write_go_string;

use super::{clean_path, TarSplitError, PADDING_CHUNK_SIZE};

/// `storage.FileType`.
const FILE_TYPE: u8 = 1;
/// `storage.SegmentType`.
const SEGMENT_TYPE: u8 = 2;

const WRITE_OP: &str = "writing the tar-split stream";

/// Writes a `<id>.tar-split.gz` stream: gzip of one Go-encoded JSON entry
/// per line, positions counted from 0.
///
/// Feed it what a tar reader sees, in order: for each member,
/// [`segment`](Self::segment) with the raw bytes read since the previous
/// member's content, then [`file`](Self::file); at the end,
/// [`segment`](Self::segment) with the bytes read up to the end-of-archive
/// blocks, [`trailer`](Self::trailer) with anything after them, and
/// [`empty_segment`](Self::empty_segment) when matching tar-split < 0.11.4.
/// Then [`finish`](Self::finish).
#[derive(Debug)]
pub struct TarSplitWriter<W: Write> {
    out: GzEncoder<W>,
    /// Position of the next entry.
    position: u64,
    /// Cleaned names of the file entries written so far.
    seen: HashSet<Vec<u8>>,
    /// Scratch buffer for one encoded line.
    line: Vec<u8>,
}

impl<W: Write> TarSplitWriter<W> {
    /// A writer that gzips the entries into `out` (fastest level, as
    /// containers/storage's pgzip `BestSpeed`).
    pub fn new(out: W) -> TarSplitWriter<W> {
        TarSplitWriter {
            out: GzEncoder::new(out, Compression::fast()),
            position: 0,
            seen: HashSet::new(),
            line: Vec::new(),
        }
    }

    /// Add a segment of raw tar bytes; nothing is written when `raw` is
    /// empty (the disassembler skips empty raw reads).
    pub fn segment(&mut self, raw: &[u8]) -> Result<(), TarSplitError> {
        if raw.is_empty() {
            return Ok(());
        }
        self.line.clear();
        encode_segment(&mut self.line, raw, self.position);
        self.emit()
    }

    /// Add the empty segment (`"payload":""`) with which tar-split before
    /// 0.11.4 (containers/storage 1.43, Debian 12's podman) ends every
    /// stream: its trailing read loop records the final empty read too.
    /// Newer tar-split omits it; readers accept both.
    pub fn empty_segment(&mut self) -> Result<(), TarSplitError> {
        self.line.clear();
        encode_segment(&mut self.line, &[], self.position);
        self.emit()
    }

    /// Add the bytes that follow the end-of-archive blocks, as tar-split's
    /// trailing read loop does when each read returns a full chunk: one
    /// segment per [`PADDING_CHUNK_SIZE`] bytes. Nothing for an empty slice.
    pub fn trailer(&mut self, remainder: &[u8]) -> Result<(), TarSplitError> {
        for chunk in remainder.chunks(PADDING_CHUNK_SIZE) {
            self.segment(chunk)?;
        }
        Ok(())
    }

    /// Add a file entry for a tar member: its full `name`, the `size` in its
    /// header and, when `size > 0`, the CRC-64 of its content.
    ///
    /// A name equal to an earlier one after Go's `filepath.Clean` (`./a`
    /// and `a`) is refused with [`TarSplitError::DuplicatePath`] and
    /// nothing is written, as tar-split refuses it.
    pub fn file(
        &mut self,
        name: &[u8],
        size: u64,
        crc: Option<[u8; 8]>,
    ) -> Result<(), TarSplitError> {
        if !self.seen.insert(clean_path(name)) {
            return Err(TarSplitError::DuplicatePath {
                name: name.to_vec(),
            });
        }
        self.line.clear();
        encode_file(&mut self.line, name, size, crc, self.position);
        self.emit()
    }

    /// Finish the gzip stream and return the underlying writer.
    pub fn finish(self) -> Result<W, TarSplitError> {
        self.out.finish().map_err(|source| TarSplitError::Io {
            op: WRITE_OP,
            source,
        })
    }

    fn emit(&mut self) -> Result<(), TarSplitError> {
        self.out
            .write_all(&self.line)
            .map_err(|source| TarSplitError::Io {
                op: WRITE_OP,
                source,
            })?;
        self.position += 1;
        Ok(())
    }
}

/// Append `{"type":2,"payload":"<base64>","position":N}\n`.
pub(super) fn encode_segment(buf: &mut Vec<u8>, raw: &[u8], position: u64) {
    buf.extend_from_slice(b"{\"type\":");
    push_number(buf, u64::from(SEGMENT_TYPE));
    buf.extend_from_slice(b",\"payload\":");
    push_base64(buf, raw);
    end_entry(buf, position);
}

/// Append a file entry: `name` when it is valid UTF-8 (and not empty),
/// else `name_raw`; `size` unless 0; `payload` `null` without a CRC.
pub(super) fn encode_file(
    buf: &mut Vec<u8>,
    name: &[u8],
    size: u64,
    crc: Option<[u8; 8]>,
    position: u64,
) {
    buf.extend_from_slice(b"{\"type\":");
    push_number(buf, u64::from(FILE_TYPE));
    match std::str::from_utf8(name) {
        Ok("") => {}
        Ok(text) => {
            buf.extend_from_slice(b",\"name\":");
            write_go_string(buf, text);
        }
        Err(_) => {
            buf.extend_from_slice(b",\"name_raw\":");
            push_base64(buf, name);
        }
    }
    if size != 0 {
        buf.extend_from_slice(b",\"size\":");
        push_number(buf, size);
    }
    buf.extend_from_slice(b",\"payload\":");
    match crc {
        Some(crc) => push_base64(buf, &crc),
        None => buf.extend_from_slice(b"null"),
    }
    end_entry(buf, position);
}

/// Append `,"position":N}\n`.
fn end_entry(buf: &mut Vec<u8>, position: u64) {
    buf.extend_from_slice(b",\"position\":");
    push_number(buf, position);
    buf.extend_from_slice(b"}\n");
}

fn push_number(buf: &mut Vec<u8>, n: u64) {
    buf.extend_from_slice(n.to_string().as_bytes());
}

/// A Go `[]byte` value: standard base64 with padding, in quotes.
fn push_base64(buf: &mut Vec<u8>, data: &[u8]) {
    let start = buf.len() + 1;
    let len = base64::encoded_len(data.len(), true).expect("a slice's base64 length fits usize");
    buf.push(b'"');
    buf.resize(start + len, 0);
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(data, &mut buf[start..])
        .expect("the buffer was sized with encoded_len");
    debug_assert_eq!(written, len);
    buf.push(b'"');
}
