//! Tar header blocks and their extensions (PAX records, GNU long names)
//! parsed into one [`Header`] per entry, the way Go's `archive/tar` (and
//! tar-split's fork of it, which containers/storage reads layers with)
//! interprets them. Pure: bytes in, values out.

/// Size of a tar block.
pub(crate) const BLOCK: usize = 512;

/// Largest PAX or GNU long-name extension accepted (Go's limit).
pub(crate) const MAX_EXTENSION: u64 = 1 << 20;

/// A point in time as a tar header gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Timestamp {
    /// Seconds since the epoch (may be negative).
    pub sec: i64,
    /// Nanoseconds, `0..1_000_000_000`.
    pub nsec: u32,
}

impl Timestamp {
    /// Whole seconds.
    pub fn from_secs(sec: i64) -> Timestamp {
        Timestamp { sec, nsec: 0 }
    }
}

/// One tar entry's header after PAX and GNU extensions were merged in.
/// Numbers are kept as parsed (possibly out of range); `classify` checks
/// them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    /// Type flag (`b'0'`, `b'5'`, ...; a legacy `\0` is already mapped).
    pub typeflag: u8,
    /// Full name as bytes (USTAR prefix, PAX `path` or GNU `L` applied).
    pub name: Vec<u8>,
    /// Link target as bytes (PAX `linkpath` or GNU `K` applied).
    pub link_name: Vec<u8>,
    /// Mode field, permission and type bits as written.
    pub mode: i64,
    /// Owner (PAX `uid` overrides the header field).
    pub uid: i64,
    /// Group (PAX `gid` overrides the header field).
    pub gid: i64,
    /// Size field (PAX `size` overrides it).
    pub size: i64,
    /// Modification time (PAX `mtime` gives sub-second precision).
    pub mtime: Timestamp,
    /// Access time, when the header has one (PAX `atime`, GNU field).
    pub atime: Option<Timestamp>,
    /// Device major number.
    pub dev_major: i64,
    /// Device minor number.
    pub dev_minor: i64,
    /// Extended attributes (`SCHILY.xattr.*`, `LIBARCHIVE.xattr.*`), in
    /// archive order, names unique.
    pub xattrs: Records,
    /// GNU sparse-file PAX records were present.
    pub sparse: bool,
}

impl Header {
    /// Whether the type has no content even when the size field says so
    /// (Go's `isHeaderOnlyType`).
    pub fn header_only(&self) -> bool {
        matches!(self.typeflag, b'1' | b'2' | b'3' | b'4' | b'5' | b'6')
    }
}

/// PAX records or extended attributes: (name, value) as bytes.
pub type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// Extensions collected from `x`, `L` and `K` blocks for the next entry.
#[derive(Debug, Default)]
pub(crate) struct Extensions {
    pub pax: Records,
    pub long_name: Option<Vec<u8>>,
    pub long_link: Option<Vec<u8>>,
}

/// A field up to its first NUL (Go's `parseString`).
pub(crate) fn c_string(field: &[u8]) -> &[u8] {
    field
        .iter()
        .position(|b| *b == 0)
        .map_or(field, |n| &field[..n])
}

/// A numeric field: octal text, or GNU base-256 when the high bit is set.
fn numeric(field: &[u8]) -> Result<i64, &'static str> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        return base256(field).ok_or("numeric field overflows");
    }
    let text = c_string(trim(field));
    if text.is_empty() {
        return Ok(0);
    }
    let text = std::str::from_utf8(text).map_err(|_| "numeric field is not octal")?;
    let v = u64::from_str_radix(text, 8).map_err(|_| "numeric field is not octal")?;
    Ok(v as i64)
}

fn trim(field: &[u8]) -> &[u8] {
    let pad = |b: &u8| *b == b' ' || *b == 0;
    let start = field.iter().position(|b| !pad(b)).unwrap_or(field.len());
    let end = field.iter().rposition(|b| !pad(b)).map_or(start, |e| e + 1);
    &field[start..end]
}

fn base256(field: &[u8]) -> Option<i64> {
    let inv = if field[0] & 0x40 != 0 { 0xff } else { 0 };
    let mut x: u64 = 0;
    for (i, byte) in field.iter().enumerate() {
        let mut c = byte ^ inv;
        if i == 0 {
            c &= 0x7f;
        }
        if x >> 56 != 0 {
            return None;
        }
        x = (x << 8) | u64::from(c);
    }
    if x >> 63 != 0 {
        return None;
    }
    Some(if inv == 0xff { !(x as i64) } else { x as i64 })
}

/// Whether the stored checksum matches (unsigned or signed byte sum, as
/// Go accepts both).
fn checksum_ok(block: &[u8; BLOCK]) -> bool {
    let Ok(stored) = numeric(&block[148..156]) else {
        return false;
    };
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { *b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    stored == unsigned || stored == signed
}

/// Parse one header block (not all zeros).
pub(crate) fn parse_block(block: &[u8; BLOCK]) -> Result<Header, &'static str> {
    if !checksum_ok(block) {
        return Err("bad header checksum (not a tar stream?)");
    }
    let raw = tar::Header::from_byte_slice(block);
    let old = raw.as_old();
    let mut h = Header {
        typeflag: old.linkflag[0],
        name: c_string(&old.name).to_vec(),
        link_name: c_string(&old.linkname).to_vec(),
        mode: numeric(&old.mode)?,
        uid: numeric(&old.uid)?,
        gid: numeric(&old.gid)?,
        size: numeric(&old.size)?,
        mtime: Timestamp::from_secs(numeric(&old.mtime)?),
        ..Header::default()
    };
    if let Some(ustar) = raw.as_ustar() {
        h.dev_major = numeric(&ustar.dev_major)?;
        h.dev_minor = numeric(&ustar.dev_minor)?;
        // Schily's star format keeps times after a 131-byte prefix.
        let star = &block[508..512] == b"tar\0";
        let prefix = c_string(&ustar.prefix[..if star { 131 } else { 155 }]);
        if !prefix.is_empty() {
            h.name = [prefix, b"/", &h.name].concat();
        }
    } else if let Some(gnu) = raw.as_gnu() {
        h.dev_major = numeric(&gnu.dev_major)?;
        h.dev_minor = numeric(&gnu.dev_minor)?;
        if gnu.atime[0] != 0 {
            h.atime = Some(Timestamp::from_secs(numeric(&gnu.atime)?));
        }
    }
    Ok(h)
}

/// Parse the records of a PAX extended header (`"<len> <key>=<value>\n"`,
/// by length, so values may hold any byte).
pub(crate) fn parse_pax(mut data: &[u8]) -> Result<Records, &'static str> {
    const BAD: &str = "malformed PAX record";
    let mut out = Vec::new();
    // Trailing NULs pad some writers' records (Go tolerates them too).
    while !data.is_empty() && data.iter().any(|b| *b != 0) {
        let sp = data.iter().position(|b| *b == b' ').ok_or(BAD)?;
        let len: usize = std::str::from_utf8(&data[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(BAD)?;
        if len < sp + 3 || len > data.len() || data[len - 1] != b'\n' {
            return Err(BAD);
        }
        let record = &data[sp + 1..len - 1];
        let eq = record.iter().position(|b| *b == b'=').ok_or(BAD)?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        let nul_free = |v: &[u8]| !v.contains(&0);
        let value_checked = matches!(key, b"path" | b"linkpath" | b"uname" | b"gname");
        if key.is_empty() || !nul_free(key) || (value_checked && !nul_free(value)) {
            return Err(BAD);
        }
        out.push((key.to_vec(), value.to_vec()));
        data = &data[len..];
    }
    Ok(out)
}

/// A PAX time: `[-]seconds[.fraction]`.
pub(crate) fn parse_pax_time(v: &[u8]) -> Option<Timestamp> {
    let s = std::str::from_utf8(v).ok()?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let sec: i64 = secs.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let nsec: i64 = digits.parse().ok()?;
    let total = if secs.starts_with('-') { -nsec } else { nsec };
    let t = Timestamp {
        sec: sec + total.div_euclid(1_000_000_000),
        nsec: total.rem_euclid(1_000_000_000) as u32,
    };
    Some(t)
}

/// Merge extensions into an entry's header (Go's `mergePAX`, then the GNU
/// long names, then the legacy `\0` type).
pub(crate) fn merge(h: &mut Header, ext: Extensions) -> Result<(), &'static str> {
    let mut libarchive = Vec::new();
    for (key, value) in ext.pax {
        let int = |v: &[u8]| -> Result<i64, &'static str> {
            std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or("invalid number in a PAX record")
        };
        let time = |v: &[u8]| parse_pax_time(v).ok_or("invalid time in a PAX record");
        match key.as_slice() {
            b"path" => h.name = value,
            b"linkpath" => h.link_name = value,
            b"uid" => h.uid = int(&value)?,
            b"gid" => h.gid = int(&value)?,
            b"size" => h.size = int(&value)?,
            b"mtime" => h.mtime = time(&value)?,
            b"atime" => h.atime = Some(time(&value)?),
            k if k.starts_with(b"SCHILY.xattr.") => set_xattr(h, k[13..].to_vec(), value),
            k if k.starts_with(b"LIBARCHIVE.xattr.") => libarchive.push((k[17..].to_vec(), value)),
            k if k.starts_with(b"GNU.sparse.") => h.sparse = true,
            _ => {}
        }
    }
    // libarchive's spelling: URL-encoded name, base64 value. SCHILY wins.
    for (name, value) in libarchive {
        let name = percent_decode(&name).ok_or("invalid LIBARCHIVE.xattr name")?;
        if !h.xattrs.iter().any(|(n, _)| *n == name) {
            let value = base64_decode(&value).ok_or("invalid LIBARCHIVE.xattr value")?;
            set_xattr(h, name, value);
        }
    }
    if let Some(name) = ext.long_name.filter(|n| !n.is_empty()) {
        h.name = name;
    }
    if let Some(link) = ext.long_link.filter(|n| !n.is_empty()) {
        h.link_name = link;
    }
    if h.typeflag == 0 {
        h.typeflag = if h.name.ends_with(b"/") { b'5' } else { b'0' };
    }
    if h.size < 0 && !h.header_only() {
        return Err("negative size");
    }
    Ok(())
}

fn set_xattr(h: &mut Header, name: Vec<u8>, value: Vec<u8>) {
    match h.xattrs.iter_mut().find(|(n, _)| *n == name) {
        Some(slot) => slot.1 = value,
        None => h.xattrs.push((name, value)),
    }
}

fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hex = std::str::from_utf8(s.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

fn base64_decode(v: &[u8]) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    use base64::Engine;
    STANDARD
        .decode(v)
        .or_else(|_| STANDARD_NO_PAD.decode(v))
        .ok()
}
