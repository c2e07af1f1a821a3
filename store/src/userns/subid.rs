//! Subordinate id ranges: `/etc/subuid` and `/etc/subgid` (`subuid(5)`),
//! read as shadow's libsubid reads them for containers/storage.
//!
//! Each line is `OWNER:START:COUNT`; OWNER is a user name or a numeric uid.
//! Several lines of one owner combine. Empty lines and `#` comments are
//! skipped; a malformed line of another owner is skipped too (it is not
//! ours to judge), but a malformed line of the owner asked for is an error
//! naming the file and line, since it would silently change the result.

use std::io;
use std::path::{Path, PathBuf};

use super::idset::IdSet;

/// Why a subordinate id file gave no usable ranges.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubIdError {
    /// The file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A line of the owner is not `OWNER:START:COUNT` with decimal
    /// numbers, or runs past id 4294967295.
    #[error("{}:{line}: {text:?} is not {owner}:START:COUNT ({reason})", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
        /// The owner asked for.
        owner: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Who the ranges are for: a name, and the uid whose number may stand for
/// it in the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The user name (`containers` for root's `--userns=auto`).
    pub name: String,
    /// The user's uid, when the name is a user's.
    pub uid: Option<u32>,
}

impl Owner {
    fn matches(&self, field: &str) -> bool {
        field == self.name || self.uid.is_some_and(|u| field == u.to_string())
    }
}

/// The ranges `owner` has in the subordinate id file text `text` (read from
/// `path`, named in errors).
pub fn parse(text: &str, path: &Path, owner: &Owner) -> Result<IdSet, SubIdError> {
    let mut ranges = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split(':');
        let name = fields.next().unwrap_or_default();
        if !owner.matches(name) {
            continue;
        }
        let malformed = |reason| SubIdError::Malformed {
            path: path.to_owned(),
            line: i + 1,
            text: line.to_owned(),
            owner: owner.name.clone(),
            reason,
        };
        let (Some(start), Some(count), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(malformed("three fields"));
        };
        let start: u32 = start
            .parse()
            .map_err(|_| malformed("START is not a number from 0 to 4294967295"))?;
        let count: u32 = count
            .parse()
            .map_err(|_| malformed("COUNT is not a number from 0 to 4294967295"))?;
        let end = u64::from(start) + u64::from(count);
        if end > 1 << 32 {
            return Err(malformed("the range runs past id 4294967295"));
        }
        ranges.push(u64::from(start)..end);
    }
    Ok(IdSet::from_ranges(ranges))
}

/// [`parse`] of the file at `path`; a missing file has no ranges.
pub fn read(path: &Path, owner: &Owner) -> Result<IdSet, SubIdError> {
    match std::fs::read(path) {
        Ok(bytes) => parse(&String::from_utf8_lossy(&bytes), path, owner),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(IdSet::default()),
        Err(source) => Err(SubIdError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}
