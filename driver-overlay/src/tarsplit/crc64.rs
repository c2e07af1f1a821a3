//! [`Crc64`]: the file checksum in tar-split entries, Go's `hash/crc64`
//! with the ISO table (CRC-64/GO-ISO: reflected polynomial
//! `0xD800000000000000`, initial value and final xor all ones).

use std::io;

/// The ISO polynomial, bit-reversed (`crc64.ISO` in Go).
const POLY_ISO: u64 = 0xD800_0000_0000_0000;

/// Slicing-by-8 tables: `TABLES[0]` is the classic byte table, `TABLES[k]`
/// advances a byte that is followed by `k` more bytes.
static TABLES: [[u64; 256]; 8] = make_tables();

const fn make_tables() -> [[u64; 256]; 8] {
    let mut t = [[0u64; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u64;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLY_ISO
            } else {
                crc >> 1
            };
            bit += 1;
        }
        t[0][i] = crc;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[k - 1][i];
            t[k][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            i += 1;
        }
        k += 1;
    }
    t
}

/// A running CRC-64 as tar-split computes it for file content.
///
/// `Crc64::new()` is the checksum of no bytes; [`update`](Self::update)
/// feeds more; [`finish`](Self::finish) gives the 8 big-endian bytes that
/// go into a file entry's payload. It also implements [`io::Write`], so
/// `io::copy` can feed it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Crc64 {
    /// The checksum of the bytes so far (final form, as Go's `Sum64`).
    value: u64,
}

impl Crc64 {
    /// The checksum of no bytes.
    pub fn new() -> Crc64 {
        Crc64::default()
    }

    /// Feed `data`.
    pub fn update(&mut self, data: &[u8]) {
        let mut crc = !self.value;
        let mut chunks = data.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            crc ^= u64::from_le_bytes(word);
            crc = TABLES[7][(crc & 0xff) as usize]
                ^ TABLES[6][((crc >> 8) & 0xff) as usize]
                ^ TABLES[5][((crc >> 16) & 0xff) as usize]
                ^ TABLES[4][((crc >> 24) & 0xff) as usize]
                ^ TABLES[3][((crc >> 32) & 0xff) as usize]
                ^ TABLES[2][((crc >> 40) & 0xff) as usize]
                ^ TABLES[1][((crc >> 48) & 0xff) as usize]
                ^ TABLES[0][(crc >> 56) as usize];
        }
        for &b in chunks.remainder() {
            crc = TABLES[0][usize::from((crc as u8) ^ b)] ^ (crc >> 8);
        }
        self.value = !crc;
    }

    /// The checksum so far as a number (Go's `Sum64`).
    pub fn value(&self) -> u64 {
        self.value
    }

    /// The checksum so far as 8 big-endian bytes (Go's `Sum(nil)`), the
    /// form stored in tar-split file entries.
    pub fn finish(&self) -> [u8; 8] {
        self.value.to_be_bytes()
    }

    /// The checksum of `data` in one call.
    pub fn checksum(data: &[u8]) -> [u8; 8] {
        let mut crc = Crc64::new();
        crc.update(data);
        crc.finish()
    }
}

impl io::Write for Crc64 {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
