//! What killed launchers leave: the runtime state under the runroot, the
//! cgroups, processes still running in a container whose launcher is gone.
//!
//! ```text
//! <runroot>/layerstore-runtime/<id>/     the OCI runtime's state of a launch
//! /sys/fs/cgroup/<ctl>/layerstore/<id>/  the container's cgroups
//! ```

use std::fs;
use std::io;
use std::path::PathBuf;

use rustix::process::{Pid, Signal};

/// `<runroot>/layerstore-runtime`: the OCI runtime's state of `run`'s
/// containers.
pub fn state_root(store: &layerstore::Store) -> PathBuf {
    store.options().run_root.join(STATE_DIR)
}

/// The runtime state directory's name under the runroot.
pub(crate) const STATE_DIR: &str = "layerstore-runtime";

/// How long the processes of one dead run get to die after SIGKILL.
const REAP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// End what dead `layerstore run`s (owner killed, marker left) left
/// behind outside the store's records, so that gc can then unmount and
/// remove their storage: every process still running in the container
/// (found in its cgroups and by its root, never from a state file; each
/// checked again through a pidfd before SIGKILL, so a recycled pid is
/// never signalled), then the runtime's state directory
/// `<runroot>/layerstore-runtime/<id>` (removed beneath the runroot, never
/// through a symlink) and the container's empty cgroups. Returns the
/// containers reaped; failures are logged, and a container whose processes
/// outlive the deadline is left for gc to keep.
///
/// No program is run: a runtime's state file is written by whoever can
/// write the runroot, and `runc delete` would run the hooks it names.
/// Only containers this tool made count (the run marker, the create mark
/// and, when it has one, its layer's container flag), and nothing is done
/// on a store with defects (gc refuses it anyway).
pub fn reap_dead_runs(
    store: &layerstore::Store,
    driver: &dyn layerstore::driver::Driver,
) -> Vec<String> {
    let Ok(snap) = store.snapshot() else {
        return Vec::new();
    };
    if !snap.defects.is_empty() {
        return Vec::new();
    }
    let mut reaped = Vec::new();
    for c in snap.containers.iter() {
        let Some(owner) = layerstore::gc::run_owner_of(c, &snap.layers) else {
            continue;
        };
        if owner.is_alive() {
            continue;
        }
        let Ok(id) = layerstore::ContainerId::parse(&c.id) else {
            continue;
        };
        let layer = layerstore::LayerId::parse(&c.layer).ok();
        match end_processes(driver, &id, layer.as_ref()) {
            Ok(0) => {}
            Ok(n) => tracing::info!(container = %id, "killed {n} processes a dead run left"),
            Err(left) => {
                tracing::warn!(
                    container = %id,
                    "processes {left:?} still run in it after SIGKILL; its storage stays"
                );
                continue;
            }
        }
        if remove_runtime_state(store, &id) {
            reaped.push(id.into_string());
        }
    }
    // State no container record names (a runtime that failed half-way in
    // a run that then removed its container): gone once nothing runs in
    // its cgroups. A run always records its container before it starts
    // the runtime, so none of these belongs to a run in progress.
    for name in state_dirs(store) {
        // Only names a run gives its containers (64 hex digits).
        if name.len() != 64 || !name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            continue;
        }
        let Ok(id) = layerstore::ContainerId::parse(&name) else {
            continue;
        };
        if snap.containers.iter().any(|c| c.id == name) {
            continue;
        }
        if !layerstore::gc::run_processes(driver, &id, None).is_empty() {
            tracing::warn!(container = %id, "runtime state without a container record, but processes run in its cgroup; kept");
            continue;
        }
        if remove_runtime_state(store, &id) {
            reaped.push(id.into_string());
        }
    }
    reaped
}

/// The names in `<runroot>/layerstore-runtime/`.
fn state_dirs(store: &layerstore::Store) -> Vec<String> {
    let Ok(Some(run)) = store.run_dir() else {
        return Vec::new();
    };
    let Ok(Some(states)) = run.open_dir_same_mount(STATE_DIR) else {
        return Vec::new();
    };
    states
        .entries()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| e.name.into_string().ok())
        .collect()
}

/// Remove container `id`'s runtime state (`<runroot>/layerstore-runtime/<id>`,
/// beneath the runroot, never through a symlink) and its cgroups, deepest
/// first. Returns whether anything was removed; failures are logged.
pub(crate) fn remove_runtime_state(
    store: &layerstore::Store,
    id: &layerstore::ContainerId,
) -> bool {
    let mut done = false;
    match store.run_dir() {
        Ok(Some(run)) => match run.open_dir_same_mount(STATE_DIR) {
            Ok(Some(states)) => match states.remove_tree(id.as_str()) {
                Ok(removed) => done |= removed,
                Err(e) => tracing::warn!(
                    container = %id,
                    "removing {}: {e}",
                    states.display(id.as_str()).display()
                ),
            },
            Ok(None) => {}
            Err(e) => tracing::warn!(
                container = %id,
                "opening {}: {e}",
                run.display(STATE_DIR).display()
            ),
        },
        Ok(None) => {}
        Err(e) => tracing::warn!("opening the runroot: {e}"),
    }
    for cgroup in layerstore::gc::run_cgroup_tree(id) {
        // A cgroup whose last task just exited can be busy for a moment.
        let mut tries = 0;
        loop {
            match fs::remove_dir(&cgroup) {
                Ok(()) => done = true,
                Err(e)
                    if e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error())
                        && tries < 10 =>
                {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(container = %id, "removing cgroup {}: {e}", cgroup.display())
                }
            }
            break;
        }
    }
    done
}

/// SIGKILL every process of the container until none is left; returns how
/// many were signalled, or the processes still running in it at the
/// deadline. Only processes in the container's cgroups *and* rooted in the
/// container layer's mount here are signalled
/// ([`layerstore::gc::runs_in`]): the cgroup path is the same for every
/// store, so a hostile store naming another store's container never gets
/// that container killed. Any other process found in the container keeps
/// it (with a warning), and is never signalled.
fn end_processes(
    driver: &dyn layerstore::driver::Driver,
    id: &layerstore::ContainerId,
    layer: Option<&layerstore::LayerId>,
) -> Result<usize, Vec<u32>> {
    let root = layer.and_then(|l| driver.mounted_root(l).ok().flatten());
    let deadline = std::time::Instant::now() + REAP_DEADLINE;
    let mut signalled = 0;
    loop {
        let killable: Vec<u32> = match root {
            Some(root) => layerstore::gc::run_cgroup_processes(id)
                .into_iter()
                .filter(|&pid| layerstore::gc::runs_in(pid, id, root))
                .collect(),
            None => Vec::new(),
        };
        if killable.is_empty() {
            let left = layerstore::gc::run_processes(driver, id, layer);
            return if left.is_empty() {
                Ok(signalled)
            } else {
                Err(left)
            };
        }
        if std::time::Instant::now() > deadline {
            return Err(killable);
        }
        for pid in killable {
            let Some(raw) = Pid::from_raw(pid as i32) else {
                continue;
            };
            // The pidfd pins the process; then it is checked again, so a
            // pid recycled since the look above is left alone.
            let fd = match rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty()) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::SRCH) => continue,
                Err(e) => {
                    tracing::warn!(pid, error = %e, "cannot open a pidfd");
                    continue;
                }
            };
            let Some(root) = root else { continue };
            if !layerstore::gc::runs_in(pid, id, root) {
                tracing::debug!(pid, "left the container before the kill");
                continue;
            }
            match rustix::process::pidfd_send_signal(&fd, Signal::KILL) {
                Ok(()) => signalled += 1,
                Err(e) => tracing::warn!(pid, error = %e, "SIGKILL failed"),
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
