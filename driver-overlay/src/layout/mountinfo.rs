//! Reading `/proc/self/mountinfo`: is a path a mount point, and what is
//! mounted below a directory.
//!
//! ```text
//! 36 35 98:0 /mnt1 /mnt/parent\040dir rw,noatime master:1 - ext4 /dev/root rw
//!                  ^ field 5: the mount point, with space, tab, newline
//!                    and backslash written as \040 \011 \012 \134
//! ```

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// Whether `path` is a mount point right now (in this process's mount
/// namespace): an exact match of its canonical path with a mount point in
/// `/proc/self/mountinfo`. A path that does not exist is not mounted.
pub fn is_mounted(path: &Path) -> bool {
    let Ok(path) = fs::canonicalize(path) else {
        return false;
    };
    match mount_points() {
        Ok(points) => points.contains(&path),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read {MOUNTINFO}");
            false
        }
    }
}

/// Mount points at or below `dir`, deepest first. Empty when `dir` does not
/// exist.
pub(crate) fn mount_points_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let dir = match fs::canonicalize(dir) {
        Ok(dir) => dir,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut under: Vec<PathBuf> = mount_points()?
        .into_iter()
        .filter(|p| p.starts_with(&dir))
        .collect();
    under.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    Ok(under)
}

/// Every mount point in `/proc/self/mountinfo`, in table order.
pub(crate) fn mount_points() -> io::Result<Vec<PathBuf>> {
    Ok(parse_mount_points(&fs::read(MOUNTINFO)?))
}

/// The decoded mount points (field 5) of a mountinfo table.
pub(crate) fn parse_mount_points(table: &[u8]) -> Vec<PathBuf> {
    table
        .split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .map(|field| PathBuf::from(OsString::from_vec(decode_octal_escapes(field))))
        .collect()
}

/// One line of a mountinfo table: where, what filesystem, from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Field 5, decoded.
    pub mount_point: PathBuf,
    /// The first field after the ` - ` separator (`ext4`, `fuse.sshfs`, `virtiofs`).
    pub fs_type: String,
    /// The field after the type (the device or the virtiofs tag), decoded.
    pub source: String,
}

/// The mounts of a mountinfo table, in table order; malformed lines skipped.
pub fn parse_mounts(table: &[u8]) -> Vec<MountEntry> {
    table
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
            let point = fields.get(4)?;
            let dash = fields.iter().position(|f| *f == b"-")?;
            let fs_type = fields.get(dash + 1)?;
            let source = fields.get(dash + 2).copied().unwrap_or_default();
            Some(MountEntry {
                mount_point: PathBuf::from(OsString::from_vec(decode_octal_escapes(point))),
                fs_type: String::from_utf8_lossy(&decode_octal_escapes(fs_type)).into_owned(),
                source: String::from_utf8_lossy(&decode_octal_escapes(source)).into_owned(),
            })
        })
        .collect()
}

/// The mounts in `/proc/self/mountinfo`.
pub(crate) fn mounts() -> io::Result<Vec<MountEntry>> {
    Ok(parse_mounts(&fs::read(MOUNTINFO)?))
}

/// Undo the kernel's `\ooo` escapes (`mangle` in fs/proc_namespace.c).
pub(crate) fn decode_octal_escapes(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' {
            let digits = field.get(i + 1..i + 4);
            if let Some(value) = digits.and_then(octal_byte) {
                out.push(value);
                i += 4;
                continue;
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

fn octal_byte(digits: &[u8]) -> Option<u8> {
    digits.iter().try_fold(0u8, |acc, &d| {
        if (b'0'..=b'7').contains(&d) {
            acc.checked_mul(8)?.checked_add(d - b'0')
        } else {
            None
        }
    })
}
