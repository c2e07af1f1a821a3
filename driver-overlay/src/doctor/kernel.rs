//! Kernel versions with known bugs or missing features, as warnings naming
//! the fixed versions (distributions backport fixes, so the running kernel is
//! probed where possible and versions only warn).
//!
//! ```text
//! /proc/sys/kernel/osrelease  6.1.0-18-amd64, 5.14.0-362.8.1.el9_3.x86_64, 6.18.44-fc-v669
//! /proc/version            "... (Debian 6.1.76-1) ...": Debian's real upstream version
//! /proc/self/mountinfo     the filesystems under the graphroot and runroot (virtiofs? fuse? tmpfs?)
//! ```

use std::cmp::Ordering;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use layerstore::config::StoreOptions;
use serde_json::json;

use super::{Area, Check, Status};
use crate::layout::mountinfo::{self, MountEntry};

/// A kernel version `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelVersion {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch level (stable release; 0 when absent).
    pub patch: u32,
}

impl KernelVersion {
    /// `major.minor.patch`.
    pub const fn new(major: u32, minor: u32, patch: u32) -> KernelVersion {
        KernelVersion {
            major,
            minor,
            patch,
        }
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The version at the start of a release string, whatever distribution
/// suffix follows (`6.1.0-18-amd64` -> 6.1.0, `5.14.0-362.8.1.el9_3.x86_64`
/// -> 5.14.0, `6.18.44-fc-v669` -> 6.18.44, `6.8-rc1` -> 6.8.0).
pub fn parse_release(release: &str) -> Option<KernelVersion> {
    let numeric: String = release
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut parts = numeric.split('.').filter(|p| !p.is_empty());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    Some(KernelVersion::new(major, minor, patch))
}

/// Debian's release strings carry the ABI (`6.1.0-18`), not the stable
/// version; `/proc/version` names it last: `... PREEMPT_DYNAMIC Debian
/// 6.1.76-1 (2024-02-01)` (an earlier `(Debian 12.2.0-14)` is gcc's).
pub fn debian_upstream(proc_version: &str) -> Option<KernelVersion> {
    let (_, rest) = proc_version.rsplit_once("Debian ")?;
    parse_release(rest)
}

/// The version to compare: Debian's upstream version when `/proc/version`
/// names one, else the release's.
pub fn effective_version(release: &str, proc_version: &str) -> Option<KernelVersion> {
    debian_upstream(proc_version).or_else(|| parse_release(release))
}

/// When a known issue matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relevance {
    /// On any host.
    Always,
    /// When the store or a container mount sits on virtiofs or FUSE.
    Fuse,
    /// When the store sits on tmpfs.
    Tmpfs,
}

/// A row of the kernel table (`/work/shared/spec/host-checks.md`).
#[derive(Debug, Clone, Copy)]
pub struct KnownIssue {
    /// Check id (`kernel.<name>`).
    pub id: &'static str,
    /// What goes wrong.
    pub what: &'static str,
    /// First affected version.
    pub from: KernelVersion,
    /// First fixed mainline version.
    pub fixed: KernelVersion,
    /// Stable releases that carry the fix (same major.minor, this patch or later).
    pub backports: &'static [KernelVersion],
    /// The fix, in words.
    pub fix: &'static str,
    /// When it matters.
    pub relevance: Relevance,
}

impl KnownIssue {
    /// Whether `v` has the bug.
    pub fn affects(&self, v: KernelVersion) -> bool {
        v >= self.from
            && v < self.fixed
            && !self.backports.iter().any(|b| {
                b.major == v.major && b.minor == v.minor && v.patch.cmp(&b.patch) != Ordering::Less
            })
    }
}

const fn v(major: u32, minor: u32, patch: u32) -> KernelVersion {
    KernelVersion::new(major, minor, patch)
}

/// Stable releases with the FUSE submount fix.
const FUSE_SUBMOUNT_BACKPORTS: &[KernelVersion] = &[v(6, 6, 8), v(6, 1, 70), v(5, 15, 146)];

/// The table, in host-checks.md's order.
pub fn known_issues() -> Vec<KnownIssue> {
    vec![
        KnownIssue {
            id: "kernel.fuse-submount",
            what: "FUSE/virtiofs submount lookup-count bug (c4d361f66ac9): after memory pressure evicts the parent's inode, a submount in a container returns EBADF for every access (Kata guests with virtiofs shares, after an OOM)",
            from: v(5, 10, 0),
            fixed: v(6, 7, 0),
            backports: FUSE_SUBMOUNT_BACKPORTS,
            fix: "a kernel >= 6.7, or stable 6.6.8 / 6.1.70 / 5.15.146 (in a Kata guest: the guest kernel)",
            relevance: Relevance::Fuse,
        },
        KnownIssue {
            id: "kernel.overlay-copyup-uid",
            what: "overlayfs copy-up of a file with an unmapped uid/gid in a user-namespace mount (4f11ada10d0a, CVE-2023-0386): a setuid file can be smuggled in",
            from: v(5, 11, 0),
            fixed: v(6, 2, 0),
            backports: &[],
            fix: "a kernel >= 6.2 (stable kernels got backports: check your distribution's changelog for CVE-2023-0386)",
            relevance: Relevance::Always,
        },
        KnownIssue {
            id: "kernel.idmapped-mounts",
            what: "no idmapped mounts at all: every new mapping costs a template copy",
            from: v(0, 0, 0),
            fixed: v(5, 12, 0),
            backports: &[],
            fix: "a kernel >= 5.12 (>= 5.19 for overlay on idmapped lower layers)",
            relevance: Relevance::Always,
        },
        KnownIssue {
            id: "kernel.overlay-idmapped-lowers",
            what: "overlay cannot use idmapped lower layers: the copy path is the only way",
            from: v(0, 0, 0),
            fixed: v(5, 19, 0),
            backports: &[],
            fix: "a kernel >= 5.19",
            relevance: Relevance::Always,
        },
        KnownIssue {
            id: "kernel.idmapped-tmpfs",
            what: "tmpfs cannot be idmapped: a store on tmpfs copies for every new mapping",
            from: v(0, 0, 0),
            fixed: v(6, 3, 0),
            backports: &[],
            fix: "a kernel >= 6.3, or the store on ext4/xfs/btrfs",
            relevance: Relevance::Tmpfs,
        },
        KnownIssue {
            id: "kernel.idmapped-fuse",
            what: "FUSE/virtiofs cannot be idmapped: a store there copies for every new mapping",
            from: v(0, 0, 0),
            fixed: v(6, 12, 0),
            backports: &[],
            fix: "a kernel >= 6.12 whose FUSE server opts in to idmapped mounts",
            relevance: Relevance::Fuse,
        },
        KnownIssue {
            id: "kernel.open-tree-attr",
            what: "open_tree_attr could re-idmap an already idmapped detached mount",
            from: v(6, 15, 0),
            fixed: v(6, 18, 0),
            backports: &[],
            fix: "a kernel >= 6.18 (or a 6.15-6.17 stable kernel with the backport)",
            relevance: Relevance::Always,
        },
    ]
}

/// What the store sits on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreFilesystems {
    /// `(path, filesystem type)` for the graphroot, the runroot, and every
    /// mount below either (container rootfs mounts, bind mounts).
    pub mounts: Vec<(PathBuf, String)>,
}

impl StoreFilesystems {
    /// Whether any of them is virtiofs or FUSE.
    pub fn on_fuse(&self) -> bool {
        self.mounts.iter().any(|(_, t)| is_fuse(t))
    }

    /// Whether the graphroot (the first entry) is tmpfs.
    pub fn graphroot_on_tmpfs(&self) -> bool {
        self.mounts.first().is_some_and(|(_, t)| t == "tmpfs")
    }
}

/// Whether a mountinfo filesystem type is FUSE or virtiofs.
pub fn is_fuse(fs_type: &str) -> bool {
    fs_type == "virtiofs"
        || fs_type == "fuse"
        || fs_type == "fuseblk"
        || fs_type.starts_with("fuse.")
}

/// The filesystems of `graph_root` and `run_root` (the mount holding each:
/// the longest mount point that is a prefix of its canonical path) and of
/// every mount below them, from a mountinfo table. Pure.
pub fn store_filesystems(
    mounts: &[MountEntry],
    graph_root: &Path,
    run_root: &Path,
) -> StoreFilesystems {
    let holding = |path: &Path| {
        mounts
            .iter()
            .filter(|m| path.starts_with(&m.mount_point))
            .max_by_key(|m| m.mount_point.as_os_str().len())
            .map(|m| (path.to_path_buf(), m.fs_type.clone()))
    };
    let mut out: Vec<(PathBuf, String)> = [graph_root, run_root]
        .into_iter()
        .filter_map(holding)
        .collect();
    for m in mounts {
        let below = |root: &Path| m.mount_point.starts_with(root) && m.mount_point != root;
        if below(graph_root) || below(run_root) {
            out.push((m.mount_point.clone(), m.fs_type.clone()));
        }
    }
    StoreFilesystems { mounts: out }
}

/// `path` canonicalized, or its nearest existing ancestor's canonical path
/// joined with the rest (a store not created yet).
fn canonical(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut p = path;
    loop {
        if let Ok(c) = fs::canonicalize(p) {
            return rest.iter().rev().fold(c, |acc: PathBuf, c| acc.join(c));
        }
        match (p.parent(), p.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                p = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// Every kernel check.
pub fn checks(options: &StoreOptions) -> Vec<Check> {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_owned())
        .unwrap_or_default();
    let proc_version = fs::read_to_string("/proc/version").unwrap_or_default();
    let filesystems = match mountinfo::mounts() {
        Ok(m) => store_filesystems(
            &m,
            &canonical(&options.graph_root),
            &canonical(&options.run_root),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read /proc/self/mountinfo");
            StoreFilesystems::default()
        }
    };
    version_checks(&release, &proc_version, &filesystems)
}

/// The kernel checks for a release string, `/proc/version` and the store's
/// filesystems. Pure.
pub fn version_checks(release: &str, proc_version: &str, fs: &StoreFilesystems) -> Vec<Check> {
    let version = effective_version(release, proc_version);
    let mut checks = vec![release_check(release, version, fs)];
    let Some(v) = version else {
        return checks;
    };
    for issue in known_issues() {
        let relevant = match issue.relevance {
            Relevance::Always => true,
            Relevance::Fuse => fs.on_fuse(),
            Relevance::Tmpfs => fs.graphroot_on_tmpfs(),
        };
        let facts = json!({
            "version": v.to_string(),
            "affected_from": issue.from.to_string(),
            "fixed": issue.fixed.to_string(),
            "backports": issue.backports.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "relevant": relevant,
            "affected": issue.affects(v),
        });
        let check = if !issue.affects(v) {
            Check::new(
                issue.id,
                Area::Kernel,
                Status::Ok,
                format!("{v}: not affected (fixed in {})", issue.fixed),
                issue.what,
            )
        } else if !relevant {
            let needs = match issue.relevance {
                Relevance::Fuse => "the store and its mounts are not on virtiofs/FUSE",
                _ => "the store is not on tmpfs",
            };
            Check::new(
                issue.id,
                Area::Kernel,
                Status::Ok,
                format!("{v} is affected, but {needs}"),
                issue.what,
            )
        } else {
            Check::new(
                issue.id,
                Area::Kernel,
                Status::Warn,
                format!("{v} is affected (fixed in {})", issue.fixed),
                issue.what,
            )
            .fix(issue.fix)
        };
        checks.push(check.facts(facts));
    }
    checks
}

fn release_check(release: &str, version: Option<KernelVersion>, fs: &StoreFilesystems) -> Check {
    let mounts: Vec<String> = fs
        .mounts
        .iter()
        .map(|(p, t)| format!("{} ({t})", p.display()))
        .collect();
    let facts = json!({
        "release": release,
        "version": version.map(|v| v.to_string()),
        "store_filesystems": fs.mounts.iter().map(|(p, t)| json!({"path": p, "type": t})).collect::<Vec<_>>(),
        "on_fuse": fs.on_fuse(),
    });
    match version {
        Some(v) => Check::new(
            "kernel.release",
            Area::Kernel,
            Status::Ok,
            format!("{release} (compared as {v}); store on {}", mounts.join(", ")),
            "distributions backport fixes: version warnings below may be false alarms, and the probes above are authoritative",
        ),
        None => Check::new(
            "kernel.release",
            Area::Kernel,
            Status::Warn,
            format!("cannot read a version from release {release:?}"),
            "the known-bug table cannot be checked",
        ),
    }
    .facts(facts)
}

#[cfg(test)]
mod tests;
