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
//! CLI's gc first kills what is in the container's cgroups *and* rooted in
//! its layer's mount ([`runs_in`], each pid checked again through a
//! pidfd). A process found one way only is never signalled: it keeps the
//! container.

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

/// The processes in the container's cgroups (and those below them): the
/// only ones gc ever signals.
pub fn run_cgroup_processes(container: &ContainerId) -> Vec<u32> {
    let mut out = Vec::new();
    for cgroup in run_cgroups(container) {
        cgroup_processes(&cgroup, 0, &mut out);
    }
    let me = std::process::id();
    out.retain(|&p| p != me && p != 0);
    out.sort_unstable();
    out.dedup();
    out
}

/// Whether gc may signal process `pid` for container `container`: it is in
/// one of the container's cgroups *and* its root is `root`, the root of the
/// container layer's mount in this store. The cgroup alone is not enough:
/// its path is the same for every store, and a hostile store could name
/// another store's container; the root alone is not either (a podman
/// container's process never runs in layerstore's cgroup). Checked again
/// once a pidfd holds the pid, so a recycled pid is never signalled.
pub fn runs_in(pid: u32, container: &ContainerId, root: FileIdentity) -> bool {
    root_of(pid) == Some(root) && run_cgroup_processes(container).contains(&pid)
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

/// The identity of process `pid`'s root directory. The magic link is
/// followed without asking the filesystem there for anything
/// (`AT_STATX_DONT_SYNC`, device and inode only, which the kernel has at
/// hand): a process rooted in a FUSE filesystem whose server hangs must
/// not hang gc. `None` for a process that has exited (or is a zombie).
fn root_of(pid: u32) -> Option<FileIdentity> {
    let st = rustix::fs::statx(
        rustix::fs::CWD,
        format!("/proc/{pid}/root"),
        rustix::fs::AtFlags::STATX_DONT_SYNC,
        rustix::fs::StatxFlags::INO,
    )
    .ok()?;
    Some(FileIdentity {
        dev: (st.stx_dev_major, st.stx_dev_minor),
        ino: st.stx_ino,
    })
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
        if root_of(pid) == Some(root) {
            out.push(pid);
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
    let mut out = run_cgroup_processes(container);
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

    /// A process rooted in a FUSE filesystem whose server is stopped: the
    /// scan of roots returns (a stat that asked the filesystem would wait
    /// for the server forever).
    #[test]
    #[ignore = "privileged: needs root, fuse-overlayfs and busybox-static"]
    fn a_root_on_a_frozen_fuse_filesystem_does_not_hang_the_scan() {
        use std::process::{Command, Stdio};
        layerstore_test_support::require_privileged(&[
            "fuse-overlayfs",
            "busybox",
            "chroot",
            "pgrep",
        ]);
        let tmp = tempfile::tempdir().unwrap();
        let [lower, upper, work, mnt] = ["lower", "upper", "work", "mnt"].map(|d| {
            let p = tmp.path().join(d);
            fs::create_dir(&p).unwrap();
            p
        });
        let busybox = layerstore_test_support::which("busybox").unwrap();
        fs::copy(&busybox, lower.join("busybox")).unwrap();
        layerstore_test_support::mount_fuse_overlay(&lower, &upper, &work, &mnt);
        struct Cleanup {
            mnt: PathBuf,
            pids: Vec<u32>,
        }
        impl Drop for Cleanup {
            fn drop(&mut self) {
                for pid in &self.pids {
                    let _ = Command::new("kill")
                        .args(["-CONT", &pid.to_string()])
                        .status();
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                }
                let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
            }
        }
        let mut cleanup = Cleanup {
            mnt: mnt.clone(),
            pids: Vec::new(),
        };
        let mut rooted = Command::new("chroot")
            .arg(&mnt)
            .args(["/busybox", "sleep", "1000"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        cleanup.pids.push(rooted.id());
        // The FUSE server: the fuse-overlayfs process serving `mnt`.
        let out = Command::new("pgrep")
            .args(["-f", &format!("fuse-overlayfs.*{}", mnt.display())])
            .output()
            .unwrap();
        let server: u32 = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .expect("the fuse-overlayfs server")
            .parse()
            .unwrap();
        cleanup.pids.push(server);
        // Until the chrooted process runs, its root is not the mount yet.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mnt_root = rustix::fs::stat(&mnt).unwrap();
        while !processes_rooted_at(FileIdentity::of_stat(&mnt_root)).contains(&rooted.id()) {
            assert!(
                std::time::Instant::now() < deadline,
                "never saw the chrooted process"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(Command::new("kill")
            .args(["-STOP", &server.to_string()])
            .status()
            .unwrap()
            .success());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(processes_rooted_at(FileIdentity::of_stat(&mnt_root)));
        });
        let found = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the scan of roots hangs on the frozen FUSE filesystem");
        assert!(found.contains(&rooted.id()), "{found:?}");
        drop(cleanup);
        let _ = rooted.wait();
    }
}
