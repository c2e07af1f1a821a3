//! Test-only helpers for the tar-split tests (the unit tests and
//! `tests/tarsplit_cs.rs`, which includes this file with `#[path]`, so it
//! names the writer through `super::`):
//!
//! - [`disassemble`]: walks a tar held in memory the way tar-split's
//!   raw-accounting tar reader does, and [`write_tarsplit`] feeds the
//!   result to a [`TarSplitWriter`]. The real disassembler lives in
//!   `ocidiff`. Handled: ustar (with prefix), GNU and v7 headers, octal and
//!   base-256 numbers, PAX `x` (path, size) and `g` headers, GNU `L`/`K`
//!   long names. Not handled: sparse files.
//! - [`sample_tar`] and the `append_*` helpers build test tars with the
//!   `tar` crate.

#![allow(dead_code)]

use std::io;
use std::ops::Range;

use super::{Crc64, TarSplitWriter};

const BLOCK: usize = 512;

/// What the tar reader reports, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Raw bytes read since the previous member's content (may be empty).
    Raw(Range<usize>),
    /// A member: its full name, header size and content bytes.
    Member {
        name: Vec<u8>,
        size: u64,
        content: Range<usize>,
    },
    /// End of archive: raw bytes up to and including the zero blocks, and
    /// the remainder after them.
    End {
        raw: Range<usize>,
        remainder: Range<usize>,
    },
}

/// Extension-header state carried to the next real header.
#[derive(Default)]
struct Pending {
    gnu_name: Option<Vec<u8>>,
    pax_path: Option<Vec<u8>>,
    pax_size: Option<u64>,
}

/// Split `tar` into the pieces tar-split's disassembler sees.
pub fn disassemble(tar: &[u8]) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut seg_start = 0;
    let mut pos = 0;
    let mut pending = Pending::default();
    loop {
        let Some(block) = read_block(tar, &mut pos)? else {
            pieces.push(end(tar, seg_start, pos));
            return Ok(pieces);
        };
        if block.iter().all(|&b| b == 0) {
            match read_block(tar, &mut pos)? {
                Some(second) if second.iter().any(|&b| b != 0) => {
                    return Err("zero block followed by a header".into())
                }
                _ => {
                    pieces.push(end(tar, seg_start, pos));
                    return Ok(pieces);
                }
            }
        }
        let kind = block[156];
        let size = parse_number(&block[124..136])?;
        let data = take(tar, pos, size)?;
        match kind {
            b'x' => pending.apply_pax(&tar[data.clone()])?,
            b'L' => pending.gnu_name = Some(c_string(&tar[data.clone()]).to_vec()),
            b'K' => {}
            b'g' => {
                // Returned as a member of size 0 whose header is raw up to
                // the end of its data; the padding goes to the next segment.
                pieces.push(Piece::Raw(seg_start..data.end));
                pieces.push(member(header_name(block), 0, data.end..data.end));
                seg_start = data.end;
            }
            b'S' => return Err("GNU sparse files are not supported".into()),
            _ => {
                let size = pending.pax_size.unwrap_or(size);
                let name = pending.name().unwrap_or_else(|| header_name(block));
                let content_len = if header_only(kind) { 0 } else { size };
                let content = take(tar, pos, content_len)?;
                pieces.push(Piece::Raw(seg_start..pos));
                pieces.push(member(name, size, content.clone()));
                seg_start = content.end;
                pos = content.end + padding(content_len);
                pending = Pending::default();
                continue;
            }
        }
        pos = data.end + padding(size);
    }
}

fn member(name: Vec<u8>, size: u64, content: Range<usize>) -> Piece {
    Piece::Member {
        name,
        size,
        content,
    }
}

fn end(tar: &[u8], seg_start: usize, pos: usize) -> Piece {
    let pos = pos.min(tar.len());
    Piece::End {
        raw: seg_start..pos,
        remainder: pos..tar.len(),
    }
}

/// The next 512-byte block, or None at a clean end of input.
fn read_block<'a>(tar: &'a [u8], pos: &mut usize) -> Result<Option<&'a [u8]>, String> {
    if *pos >= tar.len() {
        return Ok(None);
    }
    let block = tar
        .get(*pos..*pos + BLOCK)
        .ok_or_else(|| format!("truncated block at {pos}"))?;
    *pos += BLOCK;
    Ok(Some(block))
}

fn take(tar: &[u8], pos: usize, len: u64) -> Result<Range<usize>, String> {
    let end = pos + usize::try_from(len).map_err(|e| e.to_string())?;
    if end > tar.len() {
        return Err(format!("member data at {pos} runs past the end"));
    }
    Ok(pos..end)
}

fn padding(len: u64) -> usize {
    let len = usize::try_from(len).expect("test tars are small");
    (BLOCK - len % BLOCK) % BLOCK
}

/// Go's `isHeaderOnlyType`: members whose size field carries no content.
fn header_only(kind: u8) -> bool {
    matches!(kind, b'1' | b'2' | b'3' | b'4' | b'5' | b'6')
}

fn c_string(field: &[u8]) -> &[u8] {
    field.split(|&b| b == 0).next().unwrap_or_default()
}

/// Octal (space/NUL terminated) or base-256 numeric field.
fn parse_number(field: &[u8]) -> Result<u64, String> {
    if field[0] & 0x80 != 0 {
        let mut n = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            n = (n << 8) | u64::from(b);
        }
        return Ok(n);
    }
    let text = std::str::from_utf8(field).map_err(|e| e.to_string())?;
    let text = text.trim_matches(|c| c == ' ' || c == '\0');
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8).map_err(|e| format!("bad number {text:?}: {e}"))
}

/// The name in a header block, with the ustar prefix when it is ustar.
fn header_name(block: &[u8]) -> Vec<u8> {
    let name = c_string(&block[0..100]);
    let is_ustar = &block[257..263] == b"ustar\0" && &block[263..265] == b"00";
    let prefix = c_string(&block[345..500]);
    if is_ustar && !prefix.is_empty() {
        [prefix, b"/", name].concat()
    } else {
        name.to_vec()
    }
}

impl Pending {
    /// The name overrides in Go's order: GNU long name over PAX path.
    fn name(&self) -> Option<Vec<u8>> {
        self.gnu_name.clone().or_else(|| self.pax_path.clone())
    }

    fn apply_pax(&mut self, mut records: &[u8]) -> Result<(), String> {
        while !records.is_empty() {
            let space = records
                .iter()
                .position(|&b| b == b' ')
                .ok_or("PAX record without length")?;
            let len: usize = std::str::from_utf8(&records[..space])
                .map_err(|e| e.to_string())?
                .parse()
                .map_err(|e| format!("PAX length: {e}"))?;
            let record = &records[space + 1..len - 1];
            let eq = record.iter().position(|&b| b == b'=').ok_or("PAX =")?;
            let (key, value) = (&record[..eq], &record[eq + 1..]);
            match key {
                b"path" => self.pax_path = Some(value.to_vec()),
                b"size" => {
                    let text = std::str::from_utf8(value).map_err(|e| e.to_string())?;
                    self.pax_size = Some(text.parse().map_err(|e| format!("PAX size: {e}"))?);
                }
                _ => {}
            }
            records = &records[len..];
        }
        Ok(())
    }
}

/// Feed `pieces` of `tar` to a [`TarSplitWriter`] like tar-split's
/// disassembler; `empty_segment` adds the final empty segment of
/// tar-split < 0.11.4. Returns the gzip-compressed tar-split.
pub fn write_tarsplit(tar: &[u8], empty_segment: bool) -> Vec<u8> {
    let pieces = disassemble(tar).expect("the test tar is valid");
    let mut w = TarSplitWriter::new(Vec::new());
    for piece in pieces {
        match piece {
            Piece::Raw(range) => w.segment(&tar[range]).unwrap(),
            Piece::Member {
                name,
                size,
                content,
            } => {
                let crc = (size > 0).then(|| Crc64::checksum(&tar[content]));
                w.file(&name, size, crc).unwrap();
            }
            Piece::End { raw, remainder } => {
                w.segment(&tar[raw]).unwrap();
                w.trailer(&tar[remainder]).unwrap();
                if empty_segment {
                    w.empty_segment().unwrap();
                }
            }
        }
    }
    w.finish().unwrap()
}

/// A PAX extended header (`x` or `g`) with `records`.
pub fn append_pax(
    b: &mut tar::Builder<Vec<u8>>,
    kind: tar::EntryType,
    name: &str,
    records: &[(&str, &str)],
) {
    let mut data = Vec::new();
    for (k, v) in records {
        let body = format!(" {k}={v}\n");
        let mut len = body.len() + 1;
        while format!("{len}{body}").len() != len {
            len += 1;
        }
        data.extend_from_slice(format!("{len}{body}").as_bytes());
    }
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    b.append_data(&mut h, name, data.as_slice()).unwrap();
}

pub fn append_file(b: &mut tar::Builder<Vec<u8>>, mut h: tar::Header, name: &[u8], data: &[u8]) {
    use std::os::unix::ffi::OsStrExt;
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.set_size(data.len() as u64);
    b.append_data(&mut h, std::ffi::OsStr::from_bytes(name), data)
        .unwrap();
}

pub fn append_special(
    b: &mut tar::Builder<Vec<u8>>,
    kind: tar::EntryType,
    name: &str,
    target: Option<&str>,
) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(0o755);
    h.set_size(0);
    match target {
        Some(t) => b.append_link(&mut h, name, t).unwrap(),
        None => b.append_data(&mut h, name, io::empty()).unwrap(),
    }
}

/// A tar with every kind of member tar-split must handle, followed by
/// `trailer` after the end-of-archive blocks.
pub fn sample_tar(trailer: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    append_pax(
        &mut b,
        tar::EntryType::XGlobalHeader,
        "pax_global_header",
        &[("comment", "hi")],
    );
    append_special(&mut b, tar::EntryType::Directory, "d/", None);
    append_file(&mut b, tar::Header::new_ustar(), b"d/hello", b"hello\n");
    append_file(&mut b, tar::Header::new_gnu(), b"d/empty", b"");
    append_special(&mut b, tar::EntryType::Symlink, "d/link", Some("hello"));
    append_special(&mut b, tar::EntryType::Link, "d/hard", Some("d/hello"));
    let gnu_long = format!("d/{}", "x".repeat(120));
    append_file(&mut b, tar::Header::new_gnu(), gnu_long.as_bytes(), b"long");
    let ustar_long = format!("{}/{}", "p".repeat(80), "q".repeat(60));
    append_file(
        &mut b,
        tar::Header::new_ustar(),
        ustar_long.as_bytes(),
        b"prefixed",
    );
    let long_target = format!("../{}", "t".repeat(150));
    append_special(
        &mut b,
        tar::EntryType::Symlink,
        "d/longlink",
        Some(&long_target),
    );
    append_pax(
        &mut b,
        tar::EntryType::XHeader,
        "PaxHeader",
        &[("path", "d/pax-ñame<&>"), ("size", "3")],
    );
    append_file(&mut b, tar::Header::new_ustar(), b"d/short", b"pax");
    append_file(&mut b, tar::Header::new_gnu(), b"d/caf\xe9", b"latin1");
    let big: Vec<u8> = (0..(1 << 20) + 3).map(|i: u32| (i % 251) as u8).collect();
    append_file(&mut b, tar::Header::new_gnu(), b"./big", &big);
    let mut tar = b.into_inner().unwrap();
    tar.extend_from_slice(trailer);
    tar
}
