//! Sets of ids as sorted, disjoint ranges: the `idSet` of containers/storage
//! (`idset.go`), over which `--userns=auto` allocates.
//!
//! Ranges are half-open `[start, end)` in `u64`, so that a range ending at
//! id 4294967295 (podman's documented `containers:2147483647:2147483648`)
//! has an end that fits. Touching ranges merge, as Go's intervalset does.

use std::fmt;
use std::ops::Range;

use crate::idmap::IdMap;

/// One past the highest id.
const ID_END: u64 = 1 << 32;

/// A set of ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdSet {
    /// Sorted, disjoint, non-touching, non-empty.
    ranges: Vec<Range<u64>>,
}

impl IdSet {
    /// The set of the ids in `ranges` (in any order, overlapping or not;
    /// empty ranges are ignored, and ids past 4294967295 do not exist).
    pub fn from_ranges(ranges: impl IntoIterator<Item = Range<u64>>) -> IdSet {
        let mut all: Vec<Range<u64>> = ranges
            .into_iter()
            .map(|r| r.start.min(ID_END)..r.end.min(ID_END))
            .filter(|r| r.start < r.end)
            .collect();
        all.sort_unstable_by_key(|r| r.start);
        let mut merged: Vec<Range<u64>> = Vec::with_capacity(all.len());
        for r in all {
            match merged.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => merged.push(r),
            }
        }
        IdSet { ranges: merged }
    }

    /// The ids `start..end`.
    pub fn span(start: u64, end: u64) -> IdSet {
        IdSet::from_ranges(std::iter::once(start..end))
    }

    /// The host ids of `maps` (`getHostIDs`).
    pub fn host_ids<'a>(maps: impl IntoIterator<Item = &'a IdMap>) -> IdSet {
        IdSet::from_ranges(maps.into_iter().map(|m| {
            let start = u64::from(m.host_id);
            start..start + u64::from(m.size)
        }))
    }

    /// The container ids of `maps` (`getContainerIDs`).
    pub fn container_ids<'a>(maps: impl IntoIterator<Item = &'a IdMap>) -> IdSet {
        IdSet::from_ranges(maps.into_iter().map(|m| {
            let start = u64::from(m.container_id);
            start..start + u64::from(m.size)
        }))
    }

    /// The ranges, sorted.
    pub fn ranges(&self) -> &[Range<u64>] {
        &self.ranges
    }

    /// Number of ids in the set.
    pub fn len(&self) -> u64 {
        self.ranges.iter().map(|r| r.end - r.start).sum()
    }

    /// Whether the set has no ids.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The ids of `self` that are not in `other`.
    pub fn subtract(&self, other: &IdSet) -> IdSet {
        let mut out = Vec::with_capacity(self.ranges.len());
        let mut cut = other.ranges.iter().peekable();
        for r in &self.ranges {
            let mut start = r.start;
            // Skip the ranges of `other` wholly before this one.
            while cut.peek().is_some_and(|c| c.end <= start) {
                cut.next();
            }
            let mut rest = cut.clone();
            while let Some(c) = rest.peek() {
                if c.start >= r.end {
                    break;
                }
                if c.start > start {
                    out.push(start..c.start);
                }
                start = start.max(c.end);
                if c.end >= r.end {
                    break;
                }
                rest.next();
            }
            if start < r.end {
                out.push(start..r.end);
            }
        }
        IdSet { ranges: out }
    }

    /// The intersection of `self` and `other`.
    pub fn intersect(&self, other: &IdSet) -> IdSet {
        self.subtract(&self.subtract(other))
    }

    /// The lowest `n` ids of the set (`findAvailable`), or `None` when it
    /// has fewer.
    pub fn lowest(&self, n: u64) -> Option<IdSet> {
        let mut left = n;
        let mut out = Vec::new();
        for r in &self.ranges {
            if left == 0 {
                break;
            }
            let take = left.min(r.end - r.start);
            out.push(r.start..r.start + take);
            left -= take;
        }
        (left == 0).then_some(IdSet { ranges: out })
    }

    /// Pair the ids of `self` (host side) with those of `container` in
    /// order, as extents (`zip`); stops when either runs out.
    pub fn zip(&self, container: &IdSet) -> Vec<IdMap> {
        let mut out = Vec::new();
        let mut hosts = self.ranges.iter().cloned();
        let mut conts = container.ranges.iter().cloned();
        let (mut h, mut c) = (hosts.next(), conts.next());
        while let (Some(hr), Some(cr)) = (h.as_mut(), c.as_mut()) {
            let n = (hr.end - hr.start).min(cr.end - cr.start);
            // Every id of a set is below 2^32 and a container set lies
            // within a u32 size, so each part fits; were it not, the piece
            // would be left out, never wrapped.
            if let (Ok(container_id), Ok(host_id), Ok(size)) = (
                u32::try_from(cr.start),
                u32::try_from(hr.start),
                u32::try_from(n),
            ) {
                out.push(IdMap {
                    container_id,
                    host_id,
                    size,
                });
            }
            hr.start += n;
            cr.start += n;
            if hr.start == hr.end {
                h = hosts.next();
            }
            if cr.start == cr.end {
                c = conts.next();
            }
        }
        out
    }
}

impl fmt::Display for IdSet {
    /// `start-last` ranges (inclusive), comma-separated; `none` when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ranges.is_empty() {
            return f.write_str("none");
        }
        for (i, r) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if r.end - r.start == 1 {
                write!(f, "{}", r.start)?;
            } else {
                write!(f, "{}-{}", r.start, r.end - 1)?;
            }
        }
        Ok(())
    }
}
