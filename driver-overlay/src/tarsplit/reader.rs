//! Reading tar-split streams ([`EntryReader`], [`read_entries`]) and
//! rebuilding the original tar from them ([`reassemble`]).

use std::collections::HashSet;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use flate2::read::MultiGzDecoder;
use serde::Deserialize;

use super::{clean_path, Crc64, Entry, TarSplitError};

const READ_OP: &str = "reading the tar-split stream";

/// Go's `base64.StdEncoding` as `encoding/json` decodes `[]byte` with it:
/// padding required, non-zero trailing bits tolerated.
const GO_STD_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

/// One line as Go's `storage.Entry` declares it; `position` is ignored,
/// as tar-split's unpacker ignores it.
#[derive(Deserialize)]
struct RawEntry {
    #[serde(rename = "type")]
    kind: Option<i64>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    name_raw: Option<String>,
    #[serde(default)]
    size: Option<i64>,
    #[serde(default)]
    payload: Option<String>,
}

/// An iterator over the entries of a tar-split stream (gzip-compressed, as
/// stored), checking for duplicate file names as tar-split's unpacker does.
///
/// It stops after the first error.
#[derive(Debug)]
pub struct EntryReader<R: Read> {
    input: BufReader<MultiGzDecoder<R>>,
    /// Lines read so far.
    line_no: u64,
    line: Vec<u8>,
    /// Cleaned names of the file entries so far.
    seen: HashSet<Vec<u8>>,
    failed: bool,
}

/// Read the entries of a gzip-compressed tar-split stream lazily.
pub fn entries<R: Read>(input: R) -> EntryReader<R> {
    EntryReader {
        input: BufReader::new(MultiGzDecoder::new(input)),
        line_no: 0,
        line: Vec::new(),
        seen: HashSet::new(),
        failed: false,
    }
}

/// Read all entries of a gzip-compressed tar-split stream.
pub fn read_entries(input: impl Read) -> Result<Vec<Entry>, TarSplitError> {
    entries(input).collect()
}

impl<R: Read> Iterator for EntryReader<R> {
    type Item = Result<Entry, TarSplitError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let result = self.next_entry().transpose();
        if matches!(result, Some(Err(_))) {
            self.failed = true;
        }
        result
    }
}

impl<R: Read> EntryReader<R> {
    fn next_entry(&mut self) -> Result<Option<Entry>, TarSplitError> {
        loop {
            self.line.clear();
            let n = self
                .input
                .read_until(b'\n', &mut self.line)
                .map_err(|source| TarSplitError::Io {
                    op: READ_OP,
                    source,
                })?;
            if n == 0 {
                return Ok(None);
            }
            self.line_no += 1;
            // Go's decoder skips whitespace between values.
            if self.line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let raw: RawEntry =
                serde_json::from_slice(&self.line).map_err(|source| TarSplitError::Json {
                    line: self.line_no,
                    source,
                })?;
            let entry = self.convert(raw)?;
            if let Entry::File { name, .. } = &entry {
                if !self.seen.insert(clean_path(name)) {
                    return Err(TarSplitError::DuplicatePath { name: name.clone() });
                }
            }
            return Ok(Some(entry));
        }
    }

    fn convert(&self, raw: RawEntry) -> Result<Entry, TarSplitError> {
        let payload = match &raw.payload {
            Some(text) => Some(self.base64(text, "payload")?),
            None => None,
        };
        match raw.kind {
            Some(2) => Ok(Entry::Segment(payload.unwrap_or_default())),
            Some(1) => {
                // Like Go's `GetName`: `name_raw` wins when it is not empty.
                let name = match raw.name_raw.as_deref() {
                    Some(text) if !text.is_empty() => self.base64(text, "name_raw")?,
                    _ => raw.name.unwrap_or_default().into_bytes(),
                };
                let size = u64::try_from(raw.size.unwrap_or(0))
                    .map_err(|_| self.invalid(format!("negative size {:?}", raw.size)))?;
                let crc = match payload {
                    None => None,
                    Some(bytes) => Some(<[u8; 8]>::try_from(bytes.as_slice()).map_err(|_| {
                        self.invalid(format!(
                            "file payload has {} bytes, a CRC-64 has 8",
                            bytes.len()
                        ))
                    })?),
                };
                Ok(Entry::File { name, size, crc })
            }
            Some(other) => Err(self.invalid(format!("unknown entry type {other}"))),
            None => Err(self.invalid("entry has no type".to_owned())),
        }
    }

    fn base64(&self, text: &str, field: &str) -> Result<Vec<u8>, TarSplitError> {
        GO_STD_BASE64
            .decode(text)
            .map_err(|e| self.invalid(format!("{field} is not valid base64: {e}")))
    }

    fn invalid(&self, message: String) -> TarSplitError {
        TarSplitError::Decode {
            line: self.line_no,
            message,
        }
    }
}

/// Rebuild the original tar from a gzip-compressed tar-split stream,
/// writing it to `out`; returns the number of bytes written.
///
/// Segments are written verbatim. For each file entry with `size > 0`,
/// `open_file(name)` provides the content (for a layer: the file under its
/// `diff`, or a lower layer's); exactly `size` bytes are copied and their
/// CRC-64 checked against the entry, as tar-split's assembler does. A file
/// that is shorter or longer than `size` is an error too (tar-split would
/// copy it whole and then fail its checksum). Entries of size 0 (links,
/// directories, empty files) are never opened.
///
/// Names come from the file as written, e.g. `./etc/hosts`, `etc/hosts` or
/// even `../x`: `open_file` must resolve them inside the layer itself
/// (relative to a directory fd, not following symlinks out of it).
pub fn reassemble<R, F, W>(tarsplit: R, mut open_file: F, mut out: W) -> Result<u64, TarSplitError>
where
    R: Read,
    F: FnMut(&[u8]) -> io::Result<Box<dyn Read>>,
    W: Write,
{
    let mut written = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    for entry in entries(tarsplit) {
        match entry? {
            Entry::Segment(raw) => {
                write_out(&mut out, &raw)?;
                written += raw.len() as u64;
            }
            Entry::File { size: 0, .. } => {}
            Entry::File { name, size, crc } => {
                let mut file = open_file(&name).map_err(|source| TarSplitError::OpenFile {
                    name: name.clone(),
                    source,
                })?;
                let sum = copy_content(&name, size, &mut file, &mut out, &mut buf)?;
                if crc != Some(sum) {
                    return Err(TarSplitError::CrcMismatch { name });
                }
                written += size;
            }
        }
    }
    out.flush().map_err(|source| TarSplitError::Io {
        op: "writing the reassembled tar",
        source,
    })?;
    Ok(written)
}

/// Copy exactly `size` bytes of `name` from `file` to `out`; return their
/// CRC-64. Fails if the file has fewer or more bytes.
fn copy_content(
    name: &[u8],
    size: u64,
    file: &mut dyn Read,
    out: &mut impl Write,
    buf: &mut [u8],
) -> Result<[u8; 8], TarSplitError> {
    let mut crc = Crc64::new();
    let mut copied = 0u64;
    while copied < size {
        let want = usize::try_from(size - copied).map_or(buf.len(), |left| left.min(buf.len()));
        let n = read_some(name, file, &mut buf[..want])?;
        if n == 0 {
            return Err(TarSplitError::ShortFile {
                name: name.to_vec(),
                expected: size,
                found: copied,
            });
        }
        crc.update(&buf[..n]);
        write_out(out, &buf[..n])?;
        copied += n as u64;
    }
    if read_some(name, file, &mut buf[..1])? != 0 {
        return Err(TarSplitError::LongFile {
            name: name.to_vec(),
            expected: size,
        });
    }
    Ok(crc.finish())
}

fn read_some(name: &[u8], file: &mut dyn Read, buf: &mut [u8]) -> Result<usize, TarSplitError> {
    loop {
        match file.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(TarSplitError::ReadFile {
                    name: name.to_vec(),
                    source,
                })
            }
        }
    }
}

fn write_out(out: &mut impl Write, data: &[u8]) -> Result<(), TarSplitError> {
    out.write_all(data).map_err(|source| TarSplitError::Io {
        op: "writing the reassembled tar",
        source,
    })
}
