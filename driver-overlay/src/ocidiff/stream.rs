//! The layer blob as a stream: compression detected by magic bytes,
//! sha256 and byte counts over the blob and over the decompressed tar,
//! and a block reader that hands out one entry at a time. Bytes that are
//! not file content (headers, extensions, padding, the end-of-archive
//! blocks and anything after them) are kept for the tar-split segments;
//! content is passed through in chunks and never held whole, so memory
//! does not grow with the layer.

use std::io::{self, BufRead, BufReader, Read};

use sha2::{Digest, Sha256};

use super::error::{show, DiffError};
use super::header::{self, Extensions, Header, BLOCK, MAX_EXTENSION};
use super::Compression;
use crate::tarsplit::{Crc64, PADDING_CHUNK_SIZE};

/// Read buffer for the decompressed stream.
const BUF: usize = 128 * 1024;

/// A reader that counts, and hashes unless told not to, what passes
/// through it.
pub(crate) struct Hashing<R> {
    inner: R,
    hasher: Option<Sha256>,
    count: u64,
}

impl<R: Read> Hashing<R> {
    pub(crate) fn new(inner: R, hash: bool) -> Self {
        Hashing {
            inner,
            hasher: hash.then(Sha256::new),
            count: 0,
        }
    }

    /// `"sha256:<hex>"` (if hashing) and the bytes read so far.
    pub(crate) fn finish(self) -> (Option<String>, u64) {
        let digest = self.hasher.map(|h| {
            let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
            format!("sha256:{hex}")
        });
        (digest, self.count)
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        self.count += n as u64;
        Ok(n)
    }
}

/// Read up to 10 bytes, enough for every magic number.
pub(crate) fn read_head(r: &mut impl Read) -> Result<Vec<u8>, DiffError> {
    let mut head = Vec::with_capacity(10);
    r.take(10)
        .read_to_end(&mut head)
        .map_err(|source| DiffError::Read { source })?;
    Ok(head)
}

/// The compression of a blob from its first bytes (the magic numbers
/// containers/storage's `DetectCompression` checks).
pub(crate) fn detect(head: &[u8]) -> Result<Compression, DiffError> {
    if head.starts_with(&[0x1f, 0x8b, 0x08]) {
        Ok(Compression::Gzip)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Compression::Zstd)
    } else if head.starts_with(b"BZh") {
        Err(DiffError::UnsupportedCompression { format: "bzip2" })
    } else if head.starts_with(&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]) {
        Err(DiffError::UnsupportedCompression { format: "xz" })
    } else {
        Ok(Compression::None)
    }
}

/// The decompressed stream of `src`.
pub(crate) fn decoder<'a, R: Read + 'a>(
    c: Compression,
    src: R,
) -> Result<Box<dyn Read + 'a>, DiffError> {
    Ok(match c {
        Compression::None => Box::new(src),
        // Go's gzip reader reads concatenated members too.
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(src)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(src).map_err(|source| DiffError::Read { source })?,
        ),
    })
}

/// One entry as read from the stream.
#[derive(Debug)]
pub(crate) struct RawEntry {
    /// The header, extensions merged.
    pub header: Header,
    /// Raw bytes since the previous entry's content: its padding, the
    /// extension blocks and this header block (one tar-split segment).
    pub raw: Vec<u8>,
    /// Content bytes that follow (0 for header-only types).
    pub content_len: u64,
}

/// Reads a decompressed tar stream one entry at a time.
pub(crate) struct TarStream<R: Read> {
    r: BufReader<Hashing<R>>,
    /// Offset in the decompressed stream.
    offset: u64,
    /// Non-content bytes not yet handed out.
    pending: Vec<u8>,
    /// Content of the current entry not read yet.
    remaining: u64,
    /// Padding after the current entry's content.
    pad: usize,
    /// The current entry's name, for messages.
    current: Option<String>,
}

impl<R: Read> TarStream<R> {
    /// Read the tar stream `r`, hashing it if `hash` (not needed when it
    /// is the blob itself, already hashed).
    pub(crate) fn new(r: R, hash: bool) -> Self {
        TarStream {
            r: BufReader::with_capacity(BUF, Hashing::new(r, hash)),
            offset: 0,
            pending: Vec::new(),
            remaining: 0,
            pad: 0,
            current: None,
        }
    }

    fn truncated(&self, what: &'static str) -> DiffError {
        DiffError::Truncated {
            what,
            entry: self.current.clone(),
        }
    }

    fn read_error(&self, e: io::Error, what: &'static str) -> DiffError {
        match e.kind() {
            io::ErrorKind::UnexpectedEof => self.truncated(what),
            _ => DiffError::Read { source: e },
        }
    }

    /// Append exactly `n` bytes to `pending`.
    fn take_raw(&mut self, n: usize, what: &'static str) -> Result<(), DiffError> {
        let mut left = n;
        while left > 0 {
            let buf = match fill(&mut self.r) {
                Ok(buf) => buf,
                Err(e) => return Err(self.read_error(e, what)),
            };
            if buf.is_empty() {
                return Err(self.truncated(what));
            }
            let k = buf.len().min(left);
            self.pending.extend_from_slice(&buf[..k]);
            self.r.consume(k);
            left -= k;
        }
        self.offset += n as u64;
        Ok(())
    }

    /// The next block, or `None` at a clean end of the stream.
    fn block(&mut self, what: &'static str) -> Result<Option<[u8; BLOCK]>, DiffError> {
        match fill(&mut self.r) {
            Ok([]) => return Ok(None),
            Ok(_) => {}
            Err(e) => return Err(self.read_error(e, what)),
        }
        let start = self.pending.len();
        self.take_raw(BLOCK, what)?;
        let mut block = [0u8; BLOCK];
        block.copy_from_slice(&self.pending[start..]);
        Ok(Some(block))
    }

    /// Read the next entry's header, or `None` at the end of the archive
    /// (two zero blocks, one zero block then the end, or the end right at
    /// a header boundary: Go accepts all three).
    pub(crate) fn next_entry(&mut self) -> Result<Option<RawEntry>, DiffError> {
        debug_assert_eq!(
            self.remaining, 0,
            "content of the previous entry not consumed"
        );
        let pad = std::mem::take(&mut self.pad);
        self.take_raw(pad, "the padding after a file")?;
        self.current = None;
        let mut ext = Extensions::default();
        loop {
            let offset = self.offset;
            let Some(block) = self.block("a header")? else {
                return Ok(None);
            };
            if block.iter().all(|b| *b == 0) {
                return match self.block("the end-of-archive marker")? {
                    Some(b) if b.iter().any(|b| *b != 0) => Err(DiffError::BadHeader {
                        offset,
                        reason: "a zero block followed by data",
                    }),
                    _ => Ok(None),
                };
            }
            let bad = |reason| DiffError::BadHeader { offset, reason };
            let mut h = header::parse_block(&block).map_err(bad)?;
            match h.typeflag {
                b'x' | b'g' => {
                    let data = self.special(&h, offset)?;
                    let records = header::parse_pax(&data).map_err(bad)?;
                    if h.typeflag == b'x' {
                        ext.pax = records;
                        self.take_raw(padding(data.len() as u64), "an extension header")?;
                        continue;
                    }
                    // A global header is an entry of its own for Go (size
                    // 0, its padding read with the next header); its
                    // records are not applied to later entries.
                    let name = std::mem::take(&mut h.name);
                    let g = Header {
                        typeflag: b'g',
                        name,
                        ..Header::default()
                    };
                    let entry = self.entry(g, 0);
                    self.pad = padding(data.len() as u64);
                    return Ok(Some(entry));
                }
                b'L' | b'K' => {
                    let data = self.special(&h, offset)?;
                    self.take_raw(padding(data.len() as u64), "an extension header")?;
                    let value = header::c_string(&data).to_vec();
                    match h.typeflag {
                        b'L' => ext.long_name = Some(value),
                        _ => ext.long_link = Some(value),
                    }
                }
                _ => {
                    header::merge(&mut h, std::mem::take(&mut ext)).map_err(bad)?;
                    let len = if h.header_only() { 0 } else { h.size as u64 };
                    return Ok(Some(self.entry(h, len)));
                }
            }
        }
    }

    fn entry(&mut self, header: Header, content_len: u64) -> RawEntry {
        self.remaining = content_len;
        self.pad = padding(content_len);
        self.current = Some(show(&header.name));
        RawEntry {
            header,
            raw: std::mem::take(&mut self.pending),
            content_len,
        }
    }

    /// The data of an extension entry, kept raw too.
    fn special(&mut self, h: &Header, offset: u64) -> Result<Vec<u8>, DiffError> {
        if h.size < 0 || h.size as u64 > MAX_EXTENSION {
            return Err(DiffError::BadHeader {
                offset,
                reason: "extension header larger than 1 MiB",
            });
        }
        let len = h.size as usize;
        let start = self.pending.len();
        self.take_raw(len, "an extension header")?;
        Ok(self.pending[start..].to_vec())
    }

    /// The current entry's content, read in chunks by [`Content`].
    pub(crate) fn content(&mut self) -> Content<'_, R> {
        let size = self.remaining;
        Content {
            tar: self,
            crc: Crc64::new(),
            size,
        }
    }

    /// After the last entry: hand every remaining byte of the stream to
    /// `segment`, as tar-split does: first what was read up to the end of
    /// the archive (padding, zero blocks), then whatever follows in chunks
    /// of at most 1 MiB. Returns the stream's digest (if hashed) and size.
    pub(crate) fn finish(
        mut self,
        mut segment: impl FnMut(&[u8]) -> Result<(), DiffError>,
    ) -> Result<(Option<String>, u64), DiffError> {
        segment(&std::mem::take(&mut self.pending))?;
        let mut chunk = Vec::new();
        loop {
            let buf = match fill(&mut self.r) {
                Ok(buf) => buf,
                Err(e) => return Err(self.read_error(e, "the data after the archive")),
            };
            if buf.is_empty() {
                break;
            }
            let n = buf.len().min(PADDING_CHUNK_SIZE - chunk.len());
            chunk.extend_from_slice(&buf[..n]);
            self.r.consume(n);
            if chunk.len() == PADDING_CHUNK_SIZE {
                segment(&chunk)?;
                chunk.clear();
            }
        }
        segment(&chunk)?;
        Ok(self.r.into_inner().finish())
    }
}

/// The buffered bytes, refilled when empty; empty at the end.
fn fill<R: Read>(r: &mut BufReader<R>) -> io::Result<&[u8]> {
    loop {
        match r.fill_buf() {
            Ok(_) => return Ok(r.buffer()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Bytes of padding after `len` bytes of content.
fn padding(len: u64) -> usize {
    ((BLOCK as u64 - len % BLOCK as u64) % BLOCK as u64) as usize
}

/// Where an entry's content goes: something that accepts chunks.
pub(crate) trait ContentSource {
    /// Pass the rest of the content to `sink`, chunk by chunk.
    fn copy_to(
        &mut self,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), DiffError>,
    ) -> Result<(), DiffError>;
}

/// The content of the current entry, with its CRC-64 for tar-split.
pub(crate) struct Content<'a, R: Read> {
    tar: &'a mut TarStream<R>,
    crc: Crc64,
    size: u64,
}

impl<R: Read> ContentSource for Content<'_, R> {
    fn copy_to(
        &mut self,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), DiffError>,
    ) -> Result<(), DiffError> {
        while self.tar.remaining > 0 {
            let want = usize::try_from(self.tar.remaining).unwrap_or(usize::MAX);
            let buf = match fill(&mut self.tar.r) {
                Ok(buf) if !buf.is_empty() => buf,
                Ok(_) => return Err(self.tar.truncated("the content")),
                Err(e) => return Err(self.tar.read_error(e, "the content")),
            };
            let n = buf.len().min(want);
            let chunk = &buf[..n];
            self.crc.update(chunk);
            sink(chunk)?;
            self.tar.r.consume(n);
            self.tar.remaining -= n as u64;
            self.tar.offset += n as u64;
        }
        Ok(())
    }
}

impl<R: Read> Content<'_, R> {
    /// Skip what the sink did not read; the CRC for tar-split (`None` for
    /// an empty entry).
    pub(crate) fn finish(mut self) -> Result<Option<[u8; 8]>, DiffError> {
        self.copy_to(&mut |_| Ok(()))?;
        Ok((self.size > 0).then(|| self.crc.finish()))
    }
}
