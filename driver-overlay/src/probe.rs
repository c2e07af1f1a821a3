//! Runtime kernel feature probes, cached under the runroot exactly as
//! containers/storage caches them, so podman and layerstore share answers.
//!
//! ```text
//! <runroot>/overlay/                      runhome (tmpfs: forgotten at reboot)
//!   idmapped-lower-dir-true               empty file: overlay on idmapped lowers works
//!   idmapped-lower-dir-false              empty file (c/storage: or an error text): it does not
//! <graphroot>/overlay/compat<random>/     the probe's scratch dir, removed when done
//!   lower/probe  lower/ upper/ work/ merged/ [lower-mapped/]
//! ```
//!
//! Whichever cache file exists is authoritative: `-true` is looked at first,
//! then `-false`, as c/storage's `cachedFeatureCheck`. Pre-creating
//! `idmapped-lower-dir-false` (podman's tests do) therefore turns idmapped
//! mounts off for that store, and layerstore honours it too. Not root, or
//! `_CONTAINERS_OVERLAY_DISABLE_IDMAP=yes` in the environment (upstream
//! c/storage's switch): no, without probing or caching.
//!
//! The probe itself ([`OverlayDriver::probe_idmapped_lowers`]) does what a
//! real mapped mount does: a user namespace with the map `0:1000:1`, a
//! detached idmapped clone of `lower` (which holds a root-owned file), an
//! overlay mount on `merged` with that lower through `/proc/self/fd/<n>`
//! (if overlayfs refuses a detached lower with `EINVAL`, as before Linux
//! 6.15, the clone is attached on `lower-mapped` and the mount retried, which
//! is c/storage's own probe), and a `stat` of the file through the overlay,
//! which must show uid 1000. Every mount and directory it made is removed
//! again, on failure too. So `-true` means the same to podman and to us.

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use layerstore::confined::Dir;
use layerstore::idmap::IdMap;
use rustix::fs::{OFlags, CWD};
use rustix::io::Errno;
use rustix::mount::{move_mount, unmount, MountFlags, MoveMountFlags, UnmountFlags};

use crate::layout::{LayoutError, OverlayDriver};
use crate::sys;

/// Feature name of c/storage's cache files.
pub const IDMAPPED_LOWERS_FEATURE: &str = "idmapped-lower-dir";
/// Upstream c/storage's environment switch: `yes` disables idmapped mounts.
pub const DISABLE_IDMAP_ENV: &str = "_CONTAINERS_OVERLAY_DISABLE_IDMAP";
/// The host uid the probe maps container root to.
const PROBE_HOST_ID: u32 = 1000;

/// What one run of the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProbeOutcome {
    /// Whether an overlay mount on an idmapped lower worked and showed the
    /// mapped owner.
    pub supported: bool,
    /// Why not, when `supported` is false (the first failing step, with its
    /// error chain).
    pub reason: Option<String>,
}

/// Where the cached answer comes from, for `doctor`-style reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdmapVerdict {
    /// `_CONTAINERS_OVERLAY_DISABLE_IDMAP=yes`.
    DisabledByEnvironment,
    /// Not running as root: idmapped mounts need CAP_SYS_ADMIN in the
    /// initial user namespace.
    NotRoot,
    /// A cache file in the runhome answered.
    Cached(bool),
    /// The probe ran now and its answer was recorded.
    Probed(bool),
}

impl IdmapVerdict {
    /// The answer.
    pub fn supported(self) -> bool {
        matches!(
            self,
            IdmapVerdict::Cached(true) | IdmapVerdict::Probed(true)
        )
    }
}

impl OverlayDriver {
    /// Whether overlay can be mounted on idmapped lower layers here, i.e.
    /// whether containers with a uid/gid mapping can use the image's layers
    /// without a chowned copy. Cached as c/storage does (see the module
    /// docs); the probe runs at most once per runroot.
    pub fn supports_idmapped_lowers(&self) -> Result<bool, LayoutError> {
        Ok(self.idmapped_lowers_verdict()?.supported())
    }

    /// [`supports_idmapped_lowers`](Self::supports_idmapped_lowers), saying
    /// where the answer came from.
    pub fn idmapped_lowers_verdict(&self) -> Result<IdmapVerdict, LayoutError> {
        let verdict = self.idmapped_lowers_verdict_with(|| {
            let outcome = self.probe_idmapped_lowers();
            if let Some(reason) = &outcome.reason {
                tracing::debug!(%reason, "overlay on idmapped lower layers is not supported");
            }
            outcome.supported
        });
        if let IdmapVerdict::Probed(answer) = verdict {
            self.record_idmapped_lowers(answer)?;
        }
        Ok(verdict)
    }

    /// [`idmapped_lowers_verdict`](Self::idmapped_lowers_verdict) with the
    /// probe supplied by the caller and nothing recorded: the environment
    /// switch, root and the cache answer first, exactly as there; `probe` is
    /// called only when none of them does. `doctor` uses it to predict the
    /// answer without writing the cache.
    pub fn idmapped_lowers_verdict_with(&self, probe: impl FnOnce() -> bool) -> IdmapVerdict {
        let disabled = std::env::var_os(DISABLE_IDMAP_ENV).is_some_and(|v| v == "yes");
        let root = rustix::process::geteuid().is_root();
        verdict_without_probe(disabled, root, || self.cached_idmapped_lowers())
            .unwrap_or_else(|| IdmapVerdict::Probed(probe()))
    }

    /// The cached answer, if a cache file exists (`-true` first).
    pub fn cached_idmapped_lowers(&self) -> Option<bool> {
        let runhome = self.runhome_dir().ok().flatten()?;
        [true, false].into_iter().find(|&answer| {
            runhome
                .stat(cache_name(answer))
                .ok()
                .flatten()
                .is_some_and(|m| m.is_file())
        })
    }

    /// Run the probe now, without reading or writing the cache (for a
    /// doctor command). Needs root; creates and removes a scratch directory
    /// under the driver home (creating the home if it is missing).
    pub fn probe_idmapped_lowers(&self) -> ProbeOutcome {
        match self.home_dir_created() {
            Ok(home) => outcome(probe(&home)),
            Err(e) => outcome(Err(format!("opening the overlay home: {e}"))),
        }
    }

    /// Create the empty cache file (and the runhome, 0700), never through
    /// a symlink.
    fn record_idmapped_lowers(&self, answer: bool) -> Result<(), LayoutError> {
        let runhome = self.runhome_created()?;
        let name = cache_name(answer);
        runhome
            .open_file(&name, OFlags::WRONLY | OFlags::CREATE, 0o644)
            .map_err(|e| LayoutError::home_io("create", runhome.display(&name), e))?;
        Ok(())
    }
}

/// `idmapped-lower-dir-true` / `-false`.
fn cache_name(answer: bool) -> String {
    format!("{IDMAPPED_LOWERS_FEATURE}-{answer}")
}

fn outcome(result: Result<(), String>) -> ProbeOutcome {
    match result {
        Ok(()) => ProbeOutcome {
            supported: true,
            reason: None,
        },
        Err(reason) => ProbeOutcome {
            supported: false,
            reason: Some(reason),
        },
    }
}

/// The probe of [`OverlayDriver::probe_idmapped_lowers`] with its scratch
/// directory under `dir` (created if missing) instead of the driver home,
/// for callers that must not create the home. Needs root.
pub fn probe_idmapped_lowers_in(dir: &Path) -> ProbeOutcome {
    let opened = fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|()| Dir::open(dir));
    match opened {
        Ok(dir) => outcome(probe(&dir)),
        Err(e) => outcome(Err(format!("create {}: {e}", dir.display()))),
    }
}

/// The answer when no probe is needed, in c/storage's order: the
/// environment switch, then root, then the cache; `None`: probe.
fn verdict_without_probe(
    disabled: bool,
    root: bool,
    cached: impl FnOnce() -> Option<bool>,
) -> Option<IdmapVerdict> {
    if disabled {
        Some(IdmapVerdict::DisabledByEnvironment)
    } else if !root {
        Some(IdmapVerdict::NotRoot)
    } else {
        cached().map(IdmapVerdict::Cached)
    }
}

/// Removes the scratch dir (after detaching `merged`) when dropped.
struct Scratch<'a> {
    parent: &'a Dir,
    name: String,
    /// `/proc/self/fd/<n>` of the scratch dir: it is reached by descriptor.
    path: PathBuf,
    _dir: Dir,
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        let _ = unmount(self.path.join("merged"), UnmountFlags::DETACH);
        let _ = unmount(self.path.join("lower-mapped"), UnmountFlags::DETACH);
        if let Err(e) = self.parent.remove_tree(&self.name) {
            tracing::warn!(path = ?self.parent.display(&self.name), error = %e, "could not remove the probe's scratch dir");
        }
    }
}

/// The probe, with its scratch dir in `parent`; the error is the reason,
/// with its chain.
fn probe(parent: &Dir) -> Result<(), String> {
    let text = |what: &str, e: &dyn std::error::Error| {
        let mut reason = format!("{what}: {e}");
        let mut source = e.source();
        while let Some(s) = source {
            reason.push_str(&format!(": {s}"));
            source = s.source();
        }
        reason
    };
    let name = format!("compat{}", random_suffix());
    let shown = parent.display(&name);
    match parent.create_dir(&name, 0o700) {
        Ok(true) => {}
        Ok(false) => return Err(format!("{} exists already", shown.display())),
        Err(e) => return Err(text(&format!("create {}", shown.display()), &e)),
    }
    let dir = parent
        .open_dir(&name)
        .map_err(|e| text(&format!("open {}", shown.display()), &e))?;
    let scratch = Scratch {
        parent,
        name,
        path: dir.proc_path(),
        _dir: dir,
    };
    let dir = &scratch.path;
    for name in ["lower", "upper", "work", "merged"] {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(dir.join(name))
            .map_err(|e| text(&format!("create {}/{name}", shown.display()), &e))?;
    }
    fs::write(dir.join("lower/probe"), b"")
        .map_err(|e| text(&format!("create {}/lower/probe", shown.display()), &e))?;

    let map = [IdMap {
        container_id: 0,
        host_id: PROBE_HOST_ID,
        size: 1,
    }];
    let userns = sys::user_namespace(&map, &map).map_err(|e| text("user namespace", &e))?;
    let lower = sys::idmapped_clone(CWD, &dir.join("lower"), userns.as_fd())
        .map_err(|e| text("idmapped mount", &e))?;
    let merged = dir.join("merged");
    let detached = PathBuf::from(format!("/proc/self/fd/{}", lower.as_raw_fd()));
    match mount_overlay(dir, &detached) {
        Err(Errno::INVAL) => {
            // Overlayfs before Linux 6.15 takes lowers only from attached
            // mounts: attach the clone as c/storage does, and try again.
            let attached = dir.join("lower-mapped");
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&attached)
                .map_err(|e| text("create lower-mapped", &e))?;
            move_mount(
                lower.as_fd(),
                "",
                CWD,
                &attached,
                MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
            )
            .map_err(|e| text("attach the idmapped mount", &io::Error::from(e)))?;
            mount_overlay(dir, &attached).map_err(|e| {
                text(
                    "overlay mount on an (attached) idmapped lower",
                    &io::Error::from(e),
                )
            })?;
        }
        other => {
            other.map_err(|e| text("overlay mount on an idmapped lower", &io::Error::from(e)))?
        }
    }
    drop(lower);
    let owner = fs::symlink_metadata(merged.join("probe"))
        .map_err(|e| text("stat through the overlay", &e))?
        .uid();
    if owner != PROBE_HOST_ID {
        return Err(format!(
            "the overlay shows a root-owned lower file as uid {owner}, not the mapped {PROBE_HOST_ID}"
        ));
    }
    drop(scratch);
    Ok(())
}

/// Mount `<dir>/merged`: overlay of `lower` with `<dir>/upper`, `<dir>/work`.
fn mount_overlay(dir: &Path, lower: &Path) -> Result<(), Errno> {
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        dir.join("upper").display(),
        dir.join("work").display()
    );
    let data = std::ffi::CString::new(data).map_err(|_| Errno::INVAL)?;
    rustix::mount::mount(
        "overlay",
        dir.join("merged"),
        "overlay",
        MountFlags::empty(),
        data.as_c_str(),
    )
}

/// 16 hex digits from getrandom, for the scratch dir name.
fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    let _ = rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty());
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use layerstore::config::StoreOptions;

    fn driver(root: &Path) -> OverlayDriver {
        OverlayDriver::new(&StoreOptions {
            graph_root: root.join("graph"),
            run_root: root.join("run"),
            driver: "overlay".into(),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn cache_files_are_named_like_containers_storage() {
        let tmp = tempfile::tempdir().unwrap();
        let d = driver(tmp.path());
        assert_eq!(d.cached_idmapped_lowers(), None);
        fs::create_dir_all(tmp.path().join("run/overlay")).unwrap();
        fs::write(tmp.path().join("run/overlay/idmapped-lower-dir-false"), "").unwrap();
        assert_eq!(d.cached_idmapped_lowers(), Some(false));
        // Both present: -true wins, as cachedFeatureCheck looks at it first.
        fs::write(tmp.path().join("run/overlay/idmapped-lower-dir-true"), "").unwrap();
        assert_eq!(d.cached_idmapped_lowers(), Some(true));
    }

    #[test]
    fn record_creates_an_empty_file() {
        let tmp = tempfile::tempdir().unwrap();
        let d = driver(tmp.path());
        d.record_idmapped_lowers(false).unwrap();
        let file = tmp.path().join("run/overlay/idmapped-lower-dir-false");
        assert_eq!(fs::read(file).unwrap(), b"");
        assert_eq!(d.cached_idmapped_lowers(), Some(false));
    }

    #[test]
    fn what_answers_before_the_probe() {
        let never = || -> Option<bool> { panic!("the cache must not be read") };
        let cases = [
            (
                true,
                true,
                Some(true),
                Some(IdmapVerdict::DisabledByEnvironment),
            ),
            (true, false, None, Some(IdmapVerdict::DisabledByEnvironment)),
            (false, false, Some(true), Some(IdmapVerdict::NotRoot)),
            (false, true, Some(false), Some(IdmapVerdict::Cached(false))),
            (false, true, Some(true), Some(IdmapVerdict::Cached(true))),
            (false, true, None, None),
        ];
        for (disabled, root, cached, expected) in cases {
            let got = if disabled || !root {
                verdict_without_probe(disabled, root, never)
            } else {
                verdict_without_probe(disabled, root, || cached)
            };
            assert_eq!(
                got, expected,
                "disabled={disabled} root={root} cached={cached:?}"
            );
        }
    }

    #[test]
    fn verdicts() {
        assert!(IdmapVerdict::Cached(true).supported());
        assert!(IdmapVerdict::Probed(true).supported());
        assert!(!IdmapVerdict::Probed(false).supported());
        assert!(!IdmapVerdict::NotRoot.supported());
        assert!(!IdmapVerdict::DisabledByEnvironment.supported());
    }
}
