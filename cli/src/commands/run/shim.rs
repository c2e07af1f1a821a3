//! The OCI runtime layerstore hands podman: the real runtime, with
//! `--no-new-keyring` added to `create` and `run`, so that the containers
//! `layerstore run` gives podman join no new session keyring, as
//! containers.conf `keyring = false` would do for all of podman's.
//!
//! podman records the runtime's path in the container's config and uses it
//! for every later `start`, `stop`, `exec`, `kill` and `rm`, so the shim
//! lives where podman can find it after a reboot, in the graphroot:
//!
//! ```text
//! <graphroot>/layerstore/oci-runtimes/<16 hex of the real path>/
//!     <name>  -> the layerstore executable   (podman's --runtime; podman
//!                                              knows runc/crun by this name)
//!     target  -> the real runtime
//! ```
//!
//! Invoked under that path, `layerstore` is the shim ([`shim_main`]): it
//! reads `target` next to the name it was run by and executes it.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use sha2::{Digest, Sha256};

/// The shims' directory, under the graphroot.
pub(crate) const SHIM_DIR: &str = "layerstore/oci-runtimes";

/// The runtime's global flags that take a value (runc's and crun's), when
/// not given as `--flag=value`.
const VALUE_FLAGS: &[&str] = &[
    "--log",
    "--log-format",
    "--log-level",
    "--root",
    "--criu",
    "--rootless",
    "--cgroup-manager",
];

/// The runtime's arguments with `--no-new-keyring` after `create` or
/// `run`, unless it is already there. Anything else is unchanged.
pub(crate) fn with_no_new_keyring(args: Vec<OsString>) -> Vec<OsString> {
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_bytes();
        if a.first() != Some(&b'-') {
            break;
        }
        let takes_value = VALUE_FLAGS.iter().any(|f| a == f.as_bytes());
        i += if takes_value { 2 } else { 1 };
    }
    let Some(sub) = args.get(i) else {
        return args;
    };
    if sub != "create" && sub != "run" {
        return args;
    }
    if args[i + 1..].iter().any(|a| a == "--no-new-keyring") {
        return args;
    }
    let mut out = args;
    out.insert(i + 1, OsString::from("--no-new-keyring"));
    out
}

/// Whether `argv0` names a shim (a path inside a [`SHIM_DIR`]).
fn shim_target(argv0: &OsStr) -> Option<PathBuf> {
    let path = Path::new(argv0);
    let dir = path.parent()?;
    let marker = format!("/{SHIM_DIR}/");
    let shown = dir.as_os_str().as_bytes();
    if !shown.windows(marker.len()).any(|w| w == marker.as_bytes()) {
        return None;
    }
    std::fs::read_link(dir.join("target")).ok()
}

/// When this process was started as a shim: run the real runtime (never
/// returns unless it cannot be run). `None`: not a shim.
pub fn shim_main() -> Option<std::process::ExitCode> {
    let mut args = std::env::args_os();
    let argv0 = args.next()?;
    let target = shim_target(&argv0)?;
    let args = with_no_new_keyring(args.collect());
    let err = std::process::Command::new(&target).args(args).exec();
    eprintln!(
        "layerstore OCI runtime shim: running {}: {err}",
        crate::output::printable(&target.display().to_string())
    );
    Some(std::process::ExitCode::from(1))
}

/// The shim for `real` in `store`'s graphroot, made or refreshed (it must
/// point at this executable and at `real`); the path to give podman as
/// `--runtime`.
pub(crate) fn install(store: &layerstore::Store, real: &Path) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the layerstore executable")?;
    let name = real
        .file_name()
        .with_context(|| format!("OCI runtime {} has no file name", real.display()))?;
    let digest = Sha256::digest(real.as_os_str().as_bytes());
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let rel = Path::new(SHIM_DIR).join(&hash);
    let graph = store.options().graph_root.clone();
    let path = graph.join(&rel).join(name);
    let root = store
        .graph_dir()?
        .with_context(|| format!("the graphroot {} does not exist", graph.display()))?;
    let dir = root
        .create_dir_all(&rel, 0o755)
        .with_context(|| format!("creating {}", graph.join(&rel).display()))?;
    let put = |link: &OsStr, to: &Path| -> anyhow::Result<()> {
        if dir.read_link(link)?.as_deref() == Some(to) {
            return Ok(());
        }
        // A name of this process's own: parallel runs install the same
        // shim side by side, and the rename makes either one's link whole.
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut tmp = OsString::from(format!(".tmp-{}-{n}-", std::process::id()));
        tmp.push(link);
        let _ = dir.remove_file(&tmp);
        dir.symlink(to, &tmp)?;
        if let Err(e) = dir.rename(&tmp, link) {
            let _ = dir.remove_file(&tmp);
            return Err(e.into());
        }
        Ok(())
    };
    put(name, &exe)
        .and_then(|()| put(OsStr::new("target"), real))
        .with_context(|| format!("installing the OCI runtime shim {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<OsString> {
        s.split(' ').map(OsString::from).collect()
    }

    #[test]
    fn keyring_flag_goes_after_create_and_run_only() {
        assert_eq!(
            with_no_new_keyring(args("--root /r --log-format=json --systemd-cgroup create --bundle b id")),
            args("--root /r --log-format=json --systemd-cgroup create --no-new-keyring --bundle b id")
        );
        assert_eq!(
            with_no_new_keyring(args("--log /l run -d id")),
            args("--log /l run --no-new-keyring -d id")
        );
        for same in [
            "start id",
            "--root /r delete --force id",
            "create --no-new-keyring id",
            "--version",
        ] {
            assert_eq!(with_no_new_keyring(args(same)), args(same), "{same}");
        }
        // A value that looks like a subcommand is skipped with its flag.
        assert_eq!(
            with_no_new_keyring(args("--root create start id")),
            args("--root create start id")
        );
    }

    #[test]
    fn parallel_first_installs_all_succeed_and_agree() {
        let real = Path::new("/usr/bin/runc");
        for _ in 0..30 {
            let dir = tempfile::tempdir().unwrap();
            let graph = dir.path().join("g");
            std::fs::create_dir(&graph).unwrap();
            let store = layerstore::Store::open(layerstore::config::StoreOptions {
                graph_root: graph,
                run_root: dir.path().join("r"),
                driver: "overlay".into(),
                ..Default::default()
            })
            .unwrap();
            // Eight runs install the same shim at the same moment.
            let start = std::sync::Barrier::new(8);
            let paths: Vec<PathBuf> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..8)
                    .map(|_| {
                        s.spawn(|| {
                            start.wait();
                            install(&store, real).unwrap()
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert!(paths.windows(2).all(|w| w[0] == w[1]));
            let shim_dir = paths[0].parent().unwrap();
            assert_eq!(std::fs::read_link(shim_dir.join("target")).unwrap(), real);
            let left: Vec<_> = std::fs::read_dir(shim_dir)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .filter(|n| n.to_string_lossy().starts_with(".tmp-"))
                .collect();
            assert!(left.is_empty(), "{left:?}");
        }
    }

    #[test]
    fn only_paths_in_a_shim_directory_are_shims() {
        assert_eq!(shim_target(OsStr::new("/usr/bin/layerstore")), None);
        assert_eq!(shim_target(OsStr::new("runc")), None);
        let dir = tempfile::tempdir().unwrap();
        let shim_dir = dir.path().join(SHIM_DIR).join("0123456789abcdef");
        std::fs::create_dir_all(&shim_dir).unwrap();
        std::os::unix::fs::symlink("/usr/sbin/runc", shim_dir.join("target")).unwrap();
        assert_eq!(
            shim_target(shim_dir.join("runc").as_os_str()),
            Some(PathBuf::from("/usr/sbin/runc"))
        );
    }
}
