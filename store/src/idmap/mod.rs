//! UID/GID maps: the `uidmap`/`gidmap` extents of containers/storage (`pkg/idtools`).
//!
//! This module owns the [`IdMap`] record as it is stored in `layers.json` and
//! `containers.json` (keys `container_id`, `host_id`, `size`), podman's
//! `container:host:size[:...]` command-line syntax, validation against the
//! kernel's `/proc/<pid>/uid_map` limits (340 extents, one write under 4096
//! bytes), id translation as Go does it (`RawToHost`, `RawToContainer`,
//! `GetRootUIDGID`, `ToHostOverflow`), and the contiguity check together with the
//! reordering that v1.43's `canUseShifting` leaves in the maps it records.
//!
//! Everything is pure except [`overflow_uid`] and [`overflow_gid`], which read
//! `/proc/sys/kernel/overflowuid` and `overflowgid`. Nothing in a store is touched.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Most extents the kernel accepts in one `uid_map`/`gid_map` write.
pub const MAX_EXTENTS: usize = 340;

/// A `uid_map`/`gid_map` write must be shorter than this (one page).
pub const MAX_PROC_MAP_BYTES: usize = 4096;

/// Overflow id used when `/proc/sys/kernel/overflow{uid,gid}` cannot be read.
pub const DEFAULT_OVERFLOW_ID: u32 = 65534;

/// One extent: `size` consecutive ids starting at `container_id` inside the user
/// namespace correspond to those starting at `host_id` outside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdMap {
    /// First id of the extent inside the container.
    pub container_id: u32,
    /// First id of the extent on the host.
    pub host_id: u32,
    /// Number of ids in the extent.
    pub size: u32,
}

/// The uid and gid maps of a layer or container. An empty vector means the host
/// (identity) mapping.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct IdMappings {
    /// Extents for user ids.
    pub uids: Vec<IdMap>,
    /// Extents for group ids.
    pub gids: Vec<IdMap>,
}

impl IdMappings {
    /// The same map for uids and gids, from podman's `c:h:s[:c:h:s...]`
    /// text; empty text is the host mapping.
    pub fn parse_same(text: &str) -> Result<IdMappings, IdMapError> {
        let maps = if text.is_empty() {
            Vec::new()
        } else {
            parse_id_map(text)?
        };
        Ok(IdMappings {
            uids: maps.clone(),
            gids: maps,
        })
    }
}

/// Errors from parsing, validating and resolving uid/gid maps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdMapError {
    /// The map text was empty.
    #[error("empty uid/gid map: expected container:host:size[:container:host:size...]")]
    Empty,
    /// The map text is not `container:host:size` triples of decimal u32.
    #[error("invalid uid/gid map {input:?}: field {position} {text:?}: {reason}")]
    Syntax {
        /// The whole text given.
        input: String,
        /// 1-based number of the offending `:`-separated field.
        position: usize,
        /// The offending field (or the incomplete trailing fields).
        text: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An extent of size 0.
    #[error("uid/gid map extent {extent} has size 0")]
    ZeroSize {
        /// The offending extent.
        extent: IdMap,
    },
    /// An extent reaching past id 4294967295.
    #[error("uid/gid map extent {extent} runs past id 4294967295 on the {side} side")]
    Overflow {
        /// The offending extent.
        extent: IdMap,
        /// `"container"` or `"host"`.
        side: &'static str,
    },
    /// Two extents share ids.
    #[error("uid/gid map extents {first} and {second} overlap on the {side} side")]
    Overlap {
        /// `"container"` or `"host"`.
        side: &'static str,
        /// The earlier extent in the map.
        first: IdMap,
        /// The later extent in the map.
        second: IdMap,
    },
    /// More extents than the kernel accepts.
    #[error("uid/gid map has {count} extents, the kernel accepts at most {max}")]
    TooManyExtents {
        /// Extents in the map.
        count: usize,
        /// The limit, [`MAX_EXTENTS`].
        max: usize,
    },
    /// The `/proc` map text does not fit one page.
    #[error(
        "uid/gid map is {bytes} bytes as /proc uid_map text, the kernel needs fewer than {max}"
    )]
    TooLong {
        /// Length of [`format_proc_map`]'s output.
        bytes: usize,
        /// The limit, [`MAX_PROC_MAP_BYTES`].
        max: usize,
    },
    /// A container id has no host id in the map.
    #[error("container {kind} {id} is not mapped to any host {kind}")]
    Unmapped {
        /// `"uid"` or `"gid"`.
        kind: &'static str,
        /// The container id.
        id: u32,
    },
}

impl fmt::Display for IdMap {
    /// Podman syntax: `container:host:size`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.container_id, self.host_id, self.size)
    }
}

/// Parses podman's `container:host:size[:container:host:size...]` syntax (Go
/// `idtools.ParseIDMap`); several `--uidmap` arguments may be joined with `:`.
/// Only syntax is checked here: call [`validate`] for sizes, overlaps and limits.
pub fn parse_id_map(s: &str) -> Result<Vec<IdMap>, IdMapError> {
    if s.is_empty() {
        return Err(IdMapError::Empty);
    }
    let syntax = |position: usize, text: &str, reason| IdMapError::Syntax {
        input: s.to_owned(),
        position,
        text: text.to_owned(),
        reason,
    };
    let fields: Vec<&str> = s.split(':').collect();
    let mut numbers = Vec::with_capacity(fields.len());
    for (i, field) in fields.iter().enumerate() {
        numbers.push(parse_field(field).map_err(|reason| syntax(i + 1, field, reason))?);
    }
    let whole = fields.len() - fields.len() % 3;
    if whole != fields.len() {
        let rest = fields[whole..].join(":");
        return Err(syntax(
            whole + 1,
            &rest,
            "incomplete triple, expected container:host:size",
        ));
    }
    let maps = numbers.chunks_exact(3).map(|t| IdMap {
        container_id: t[0],
        host_id: t[1],
        size: t[2],
    });
    Ok(maps.collect())
}

/// One decimal u32 without sign or spaces (like Go's `strconv.ParseUint`).
fn parse_field(field: &str) -> Result<u32, &'static str> {
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if field.is_empty() {
        return Err("empty field (stray ':'?)");
    }
    if field.strip_prefix('-').is_some_and(digits) {
        return Err("negative ids are not allowed");
    }
    if !digits(field) {
        return Err("not a decimal number");
    }
    field.parse().map_err(|_| "larger than 4294967295")
}

/// Podman syntax for a whole map, extents joined with `:`; the inverse of
/// [`parse_id_map`] (an empty map gives `""`, which does not parse).
pub fn format_id_map(maps: &[IdMap]) -> String {
    let parts: Vec<String> = maps.iter().map(IdMap::to_string).collect();
    parts.join(":")
}

/// The text written to `/proc/<pid>/uid_map` or `gid_map`: one
/// `"{container} {host} {size}\n"` line per extent.
pub fn format_proc_map(maps: &[IdMap]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.size))
        .collect()
}

/// Checks that the kernel would accept `maps` as a `uid_map`/`gid_map`: at most
/// [`MAX_EXTENTS`] extents, no empty extent, none running past id 2^32-1 (that
/// is `start + size <= 2^32`), no overlap on either side, and the
/// [`format_proc_map`] text shorter than [`MAX_PROC_MAP_BYTES`]. An empty map (host
/// mapping) is valid.
pub fn validate(maps: &[IdMap]) -> Result<(), IdMapError> {
    if maps.len() > MAX_EXTENTS {
        return Err(IdMapError::TooManyExtents {
            count: maps.len(),
            max: MAX_EXTENTS,
        });
    }
    maps.iter().try_for_each(check_extent)?;
    check_overlap(maps, "container", |m| m.container_id)?;
    check_overlap(maps, "host", |m| m.host_id)?;
    let bytes = format_proc_map(maps).len();
    if bytes >= MAX_PROC_MAP_BYTES {
        return Err(IdMapError::TooLong {
            bytes,
            max: MAX_PROC_MAP_BYTES,
        });
    }
    Ok(())
}

fn check_extent(extent: &IdMap) -> Result<(), IdMapError> {
    if extent.size == 0 {
        return Err(IdMapError::ZeroSize { extent: *extent });
    }
    for (side, start) in [("container", extent.container_id), ("host", extent.host_id)] {
        if u64::from(start) + u64::from(extent.size) > 1 << 32 {
            return Err(IdMapError::Overflow {
                extent: *extent,
                side,
            });
        }
    }
    Ok(())
}

/// Reports the first overlapping pair in map order (at most 340², so quadratic is fine).
fn check_overlap(
    maps: &[IdMap],
    side: &'static str,
    start: impl Fn(&IdMap) -> u32,
) -> Result<(), IdMapError> {
    let range = |m: &IdMap| (u64::from(start(m)), u64::from(start(m)) + u64::from(m.size));
    for (i, first) in maps.iter().enumerate() {
        let (a0, a1) = range(first);
        for second in &maps[i + 1..] {
            let (b0, b1) = range(second);
            if a0 < b1 && b0 < a1 {
                return Err(IdMapError::Overlap {
                    side,
                    first: *first,
                    second: *second,
                });
            }
        }
    }
    Ok(())
}

/// Host id of container id `id` (Go `RawToHost`): identity for an empty map, else
/// the first extent containing `id`; `None` when no extent does.
pub fn to_host(id: u32, maps: &[IdMap]) -> Option<u32> {
    if maps.is_empty() {
        return Some(id);
    }
    maps.iter()
        .find_map(|m| translate(id, m.container_id, m.host_id, m.size))
}

/// Container id of host id `id` (Go `RawToContainer`), symmetric to [`to_host`].
pub fn to_container(id: u32, maps: &[IdMap]) -> Option<u32> {
    if maps.is_empty() {
        return Some(id);
    }
    maps.iter()
        .find_map(|m| translate(id, m.host_id, m.container_id, m.size))
}

/// `to + (id - from)` if `id` lies in `[from, from + size)`; an extent whose target
/// would pass u32 (invalid, see [`validate`]) does not match.
fn translate(id: u32, from: u32, to: u32, size: u32) -> Option<u32> {
    let offset = id.checked_sub(from)?;
    if offset >= size {
        return None;
    }
    to.checked_add(offset)
}

/// The host `(uid, gid)` of container root (Go `GetRootUIDGID`): for each map, a
/// single extent of size 1 gives its `host_id` whatever its container id;
/// otherwise container id 0 is translated with [`to_host`].
pub fn root_pair(uids: &[IdMap], gids: &[IdMap]) -> Result<(u32, u32), IdMapError> {
    Ok((root_id(uids, "uid")?, root_id(gids, "gid")?))
}

fn root_id(maps: &[IdMap], kind: &'static str) -> Result<u32, IdMapError> {
    match maps {
        [only] if only.size == 1 => Ok(only.host_id),
        _ => to_host(0, maps).ok_or(IdMapError::Unmapped { kind, id: 0 }),
    }
}

/// The kernel's overflow uid (`/proc/sys/kernel/overflowuid`), 65534 if unreadable.
pub fn overflow_uid() -> u32 {
    read_overflow(Path::new("/proc/sys/kernel/overflowuid"))
}

/// The kernel's overflow gid (`/proc/sys/kernel/overflowgid`), 65534 if unreadable.
pub fn overflow_gid() -> u32 {
    read_overflow(Path::new("/proc/sys/kernel/overflowgid"))
}

fn read_overflow(path: &Path) -> u32 {
    let read = std::fs::read_to_string(path).map_err(|e| e.to_string());
    match read.and_then(|s| s.trim().parse().map_err(|_| format!("bad value {s:?}"))) {
        Ok(id) => id,
        Err(reason) => {
            tracing::debug!(path = %path.display(), %reason, "using default overflow id 65534");
            DEFAULT_OVERFLOW_ID
        }
    }
}

/// Container `(uid, gid)` to host ids the way chown-by-maps does (Go
/// `IDMappings.ToHostOverflow`), unmapped ids becoming `overflow` (see
/// [`overflow_uid`]). Go's quirk is kept: the result starts as the root pair, and
/// an id numerically equal to the *host* root id is left as it is instead of being
/// translated. If the root pair cannot be resolved, every id is translated.
pub fn to_host_overflow(pair: (u32, u32), m: &IdMappings, overflow: (u32, u32)) -> (u32, u32) {
    // Go's GetRootUIDGID yields (-1, -1) on error, which no id equals.
    let root = root_pair(&m.uids, &m.gids).ok();
    (
        host_or_overflow(pair.0, root.map(|r| r.0), &m.uids, overflow.0),
        host_or_overflow(pair.1, root.map(|r| r.1), &m.gids, overflow.1),
    )
}

fn host_or_overflow(id: u32, root: Option<u32>, maps: &[IdMap], overflow: u32) -> u32 {
    match root {
        Some(root) if root == id => root,
        _ => to_host(id, maps).unwrap_or(overflow),
    }
}

/// Whether the extents form one block on both sides (Go `idtools.IsContiguous`):
/// sorted by host id each extent starts where the previous ends, and likewise
/// sorted by container id. Fewer than two extents are contiguous. Unlike Go, the
/// caller's slice is not reordered (see [`containers_storage_order`] for that).
pub fn is_contiguous(maps: &[IdMap]) -> bool {
    go_is_contiguous(&mut maps.to_vec())
}

/// Go's `IsContiguous` with its in-place sorting. Go's sort is unstable, but order
/// only differs from this stable sort among equal keys, which a map that passes
/// [`validate`] cannot have (equal starts with nonzero sizes overlap).
fn go_is_contiguous(maps: &mut [IdMap]) -> bool {
    if maps.len() < 2 {
        return true;
    }
    maps.sort_by_key(|m| m.host_id);
    if !adjacent(maps, |m| m.host_id) {
        return false;
    }
    maps.sort_by_key(|m| m.container_id);
    adjacent(maps, |m| m.container_id)
}

fn adjacent(maps: &[IdMap], start: impl Fn(&IdMap) -> u32) -> bool {
    maps.windows(2)
        .all(|w| u64::from(start(&w[1])) == u64::from(start(&w[0])) + u64::from(w[0].size))
}

/// The uid and gid maps in the order v1.43 records them when its
/// `canUseShifting` runs (only when `driver.SupportsShifting()` is true; upstream
/// only with a mount program): `IsContiguous(uidmap)` sorts the uid map in place,
/// by host id, then (if the host ids are adjacent) by container id; only if the uid
/// map is fully contiguous is the gid map put through the same. Spec §4.1.
pub fn containers_storage_order(uids: &[IdMap], gids: &[IdMap]) -> (Vec<IdMap>, Vec<IdMap>) {
    let (mut uids, mut gids) = (uids.to_vec(), gids.to_vec());
    if go_is_contiguous(&mut uids) {
        go_is_contiguous(&mut gids);
    }
    (uids, gids)
}

#[cfg(test)]
mod tests;
