//! The processes that still run in a container a killed `layerstore run`
//! started: found by the kernel's own accounts, never by anything a record
//! or a runtime's state file says.
//!
//! Two ways, either one enough:
//!
//! - the container's cgroup, `<hierarchy>/layerstore/<id>` in every cgroup
//!   hierarchy mounted under `/sys/fs/cgroup` (the `cgroupsPath`
//!   `/layerstore/<id>` `layerstore run` gives the runtime), and the
//!   cgroups below it;
//! - every process whose root directory is the root of the container
//!   layer's mount (`/proc/<pid>/root` has the mount's device and inode:
//!   the runtime's `pivot_root` makes the mount the container's `/`).
//!
//! Nothing here kills: gc only keeps such a container's storage, and the
//! CLI's gc kills them first ([`run_processes`] again, per pid, through a
//! pidfd).

use std::fs;
use std::path::{Path, PathBuf};

use crate::driver::{Driver, FileIdentity};
use crate::id::{ContainerId, LayerId};

/// The parent cgroup of `layerstore run`'s containers: a container's
/// `cgroupsPath` is `/<RUN_CGROUP_PARENT>/<id>`.
pub const RUN_CGROUP_PARENT: &str = "layerstore";

/// Where cgroup hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// How deep below a container's cgroup its processes are looked for.
const MAX_CGROUP_DEPTH: usize = 8;

/// The container's cgroup in every hierarchy where it exists: the unified
/// hierarchy at `/sys/fs/cgroup` itself, and each v1 (or hybrid
/// `unified`) hierarchy mounted below it.
pub fn run_cgroups(container: &ContainerId) -> Vec<PathBuf> {
    let root = Path::new(CGROUP_ROOT);
    let mut bases = vec![root.to_owned()];
    if let Ok(entries) = fs::read_dir(root) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                bases.push(e.path());
            }
        }
    }
    bases
        .into_iter()
        .map(|b| b.join(RUN_CGROUP_PARENT).join(container.as_str()))
        .filter(|p| p.join("cgroup.procs").is_file())
        .collect()
}

/// The processes in `cgroup` and in the cgroups below it.
fn cgroup_processes(cgroup: &Path, depth: usize, out: &mut Vec<u32>) {
    if let Ok(text) = fs::read_to_string(cgroup.join("cgroup.procs")) {
        out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    if depth >= MAX_CGROUP_DEPTH {
        return;
    }
    if let Ok(entries) = fs::read_dir(cgroup) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                cgroup_processes(&e.path(), depth + 1, out);
            }
        }
    }
}

/// Whether process `pid` runs in container `container` right now: it is
/// in one of the container's cgroups, or its root is `root` (the
/// container layer's mount root). For checking a pid again once a pidfd
/// holds it, so that a recycled pid is never signalled.
pub fn runs_in(pid: u32, container: &ContainerId, root: Option<FileIdentity>) -> bool {
    let rooted = root.is_some_and(|root| {
        rustix::fs::stat(format!("/proc/{pid}/root"))
            .is_ok_and(|st| FileIdentity::of_stat(&st) == root)
    });
    rooted
        || run_cgroups(container).iter().any(|cgroup| {
            let mut pids = Vec::new();
            cgroup_processes(cgroup, 0, &mut pids);
            pids.contains(&pid)
        })
}

/// The container's cgroups and those below them, deepest first (the order
/// they can be removed in).
pub fn run_cgroup_tree(container: &ContainerId) -> Vec<PathBuf> {
    fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
        if depth < MAX_CGROUP_DEPTH {
            if let Ok(entries) = fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        walk(&e.path(), depth + 1, out);
                    }
                }
            }
        }
        out.push(dir.to_owned());
    }
    let mut out = Vec::new();
    for cgroup in run_cgroups(container) {
        walk(&cgroup, 0, &mut out);
    }
    out
}

/// The processes whose root directory is `root` (a mount's root).
pub fn processes_rooted_at(root: FileIdentity) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        // stat follows the magic link to the process's root; a process
        // that has exited (or is a zombie) has none.
        if let Ok(st) = rustix::fs::stat(format!("/proc/{pid}/root")) {
            if FileIdentity::of_stat(&st) == root {
                out.push(pid);
            }
        }
    }
    out
}

/// The processes still running in container `container` (layer `layer`,
/// when it has one): its cgroups' and those rooted in its layer's mount.
/// Sorted, each once; the caller's own process never among them.
pub fn run_processes(
    driver: &dyn Driver,
    container: &ContainerId,
    layer: Option<&LayerId>,
) -> Vec<u32> {
    let mut out = Vec::new();
    for cgroup in run_cgroups(container) {
        cgroup_processes(&cgroup, 0, &mut out);
    }
    if let Some(layer) = layer {
        match driver.mounted_root(layer) {
            Ok(Some(root)) => out.extend(processes_rooted_at(root)),
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(layer = %layer, error = %e, "cannot tell what the layer's mount root is")
            }
        }
    }
    let me = std::process::id();
    out.retain(|&p| p != me && p != 0);
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_rooted_in_a_directory_is_found_by_its_root() {
        // Every process here is rooted at `/`: this one among them.
        let st = rustix::fs::stat("/").unwrap();
        let rooted = processes_rooted_at(FileIdentity::of_stat(&st));
        assert!(rooted.contains(&std::process::id()), "{rooted:?}");
        // No process is rooted in a fresh directory.
        let dir = tempfile::tempdir().unwrap();
        let st = rustix::fs::stat(dir.path()).unwrap();
        assert_eq!(
            processes_rooted_at(FileIdentity::of_stat(&st)),
            Vec::<u32>::new()
        );
    }

    #[test]
    fn a_container_without_a_cgroup_has_none() {
        let id = ContainerId::random();
        assert_eq!(run_cgroups(&id), Vec::<PathBuf>::new());
    }
}
