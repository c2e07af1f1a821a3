//! `/proc/locks`, read so that a lock held throughout is not missed.
//!
//! `/proc/locks` is a seq_file: one `read(2)` returns at most a page of lines,
//! and the next call walks the kernel's lock list afresh from the line index
//! reached so far. When other processes drop locks between two calls, lines
//! shift and one can be skipped; on a busy host (a parallel test run, a
//! list longer than a page) a lock that is held the whole time can be absent
//! from one reading. A line that is present is always real, so
//! [`holds_posix_write_lock`] rereads before it answers "no".

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// One line of `/proc/locks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcLock {
    /// `POSIX`, `FLOCK`, `OFDLCK`, `LEASE`...
    pub class: String,
    /// `READ` or `WRITE`.
    pub access: String,
    /// The owning pid (`-1` for OFD locks).
    pub pid: i64,
    /// The inode number of the locked file.
    pub ino: u64,
    /// The whole line, for messages.
    pub line: String,
}

/// The locks in one reading of `/proc/locks` (see the module docs: a
/// reading can miss a line when the list changes meanwhile).
pub fn proc_locks() -> Vec<ProcLock> {
    parse(&std::fs::read_to_string("/proc/locks").expect("read /proc/locks"))
}

fn parse(text: &str) -> Vec<ProcLock> {
    text.lines()
        .filter_map(|line| {
            // "1: POSIX  ADVISORY  WRITE 1234 00:2d:5678 0 EOF", and blocked
            // waiters as "1: -> POSIX ...".
            let f: Vec<&str> = line.split_whitespace().collect();
            let f = if f.get(1) == Some(&"->") {
                return None;
            } else {
                f
            };
            if f.len() < 6 {
                return None;
            }
            Some(ProcLock {
                class: f[1].to_owned(),
                access: f[3].to_owned(),
                pid: f[4].parse().ok()?,
                ino: f[5].rsplit(':').next()?.parse().ok()?,
                line: line.to_owned(),
            })
        })
        .collect()
}

/// Whether `pid` holds a POSIX write lock on the file at `path`.
///
/// Meant for a lock that is held throughout the call: a "no" is only given
/// after 100 readings that all lack it, so a line skipped by one reading
/// does not turn into a false "no".
pub fn holds_posix_write_lock(pid: u32, path: &Path) -> bool {
    let ino = std::fs::metadata(path).expect("stat lock file").ino();
    (0..100).any(|_| {
        proc_locks().iter().any(|l| {
            l.class == "POSIX" && l.access == "WRITE" && l.pid == i64::from(pid) && l.ino == ino
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_waiters() {
        let text = "1: POSIX  ADVISORY  WRITE 1234 00:2d:5678 0 EOF\n\
                    1: -> POSIX  ADVISORY  WRITE 99 00:2d:5678 0 EOF\n\
                    2: OFDLCK ADVISORY  READ  -1 08:01:42 0 EOF\n";
        let locks = parse(text);
        assert_eq!(locks.len(), 2);
        assert_eq!((locks[0].pid, locks[0].ino), (1234, 5678));
        assert_eq!(locks[0].access, "WRITE");
        assert_eq!((locks[1].class.as_str(), locks[1].pid), ("OFDLCK", -1));
    }
}
