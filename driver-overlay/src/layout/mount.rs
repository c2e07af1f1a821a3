//! Mounting a layer on its `merged` directory, and unmounting it (c/storage's
//! overlay `get` / `Put`, without a mount program). With a uid/gid mapping in
//! the [`MountRequest`] the lowers are first rewritten to go through one
//! detached idmapped clone of the home (see [`idmapped`](super::idmapped));
//! every method below then works unchanged on those `/proc/self/fd/<n>/...`
//! paths.
//!
//! ```text
//! <home>                 made a private bind mount of itself first (driver Init)
//! <home>/<id>/merged     overlay: lowerdir=<lower_dirs>,upperdir=<id>/diff,workdir=<id>/work
//!                        read-only: lowerdir=<id>/diff:<lower_dirs>, no upper
//! ```
//!
//! Every directory of a mount (lowers, upper, work and the target
//! `merged`) is first opened beneath the home without following a symlink,
//! and named to the kernel by descriptor, `/proc/self/fd/<n>` (what
//! upstream c/storage's mount helper does for long chains): a symlink in
//! the store can never redirect a mount to a host directory, and nothing
//! is resolved twice. How the options reach the kernel:
//! 1. `mount(2)`, when the data string fits in a page (about 17 bytes per
//!    lower: up to about 200 lowers).
//! 2. The new mount API (`fsopen`, one `fsconfig("lowerdir+", path)` per
//!    lower, `fsmount`, `move_mount`), which has no limit on the number of
//!    lowers besides overlayfs' own 500 (Linux >= 6.8). c/storage v1.43
//!    instead re-execs itself to `chdir` into the home and mount with relative
//!    `l/<link>` paths; a library cannot re-exec, and `chdir` in a thread
//!    changes the cwd of the whole process. Kernels without `lowerdir+`
//!    refuse longer chains with [`LayoutError::MountDataTooLong`].
//!
//! Unmounting detaches `merged` and removes the directory, as v1.43's `Put`
//! does (upstream recreates it empty instead): so a store shared with podman
//! 4.3.1 looks the same whoever unmounted last, and `merged` exists exactly
//! while the layer is mounted (or was never mounted since creation).

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::AtFlags;
use rustix::io::Errno;
use rustix::mount::{
    fsconfig_create, fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, mount_bind,
    mount_change, move_mount, unmount, FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags,
    MountPropagationFlags, MoveMountFlags, UnmountFlags,
};

use layerstore::confined::Dir;
use layerstore::driver::FileIdentity;
use layerstore::idmap::IdMap;
use layerstore::LayerId;

use super::create::mkdir_owned;
use super::idmapped::Mapping;
use super::{LayoutError, OverlayDriver, MOUNT_PROGRAM_FLAG};

/// `mount(2)` copies at most one page of data (including the NUL); 4096 is
/// the smallest page size Linux has, so shorter data fits everywhere.
const LEGACY_DATA_MAX: usize = 4096;
/// How many kernel log messages to collect from a failed fs context.
const KERNEL_LOG_MAX: usize = 16;

/// How to mount a layer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountRequest {
    /// Mount without an upper dir (`lowerdir=<diff>:<lowers>`), read-only.
    /// An `ro` option has the same effect.
    pub read_only: bool,
    /// Mount options, e.g. `["nodev"]`: flags like `nodev`, `nosuid`, `ro`
    /// become mount flags, anything else (`metacopy=on`, `volatile`) goes to
    /// overlayfs. Empty: the driver's default
    /// ([`OverlayDriver::default_mount_options`]).
    pub options: Vec<String>,
    /// SELinux context for the mount (`context="<label>"`).
    pub mount_label: Option<String>,
    /// The container's uid map. With `gidmap`, non-empty: the lower layers
    /// are seen through one idmapped mount of the home
    /// and `diff`/`work`/`merged` are owned by the mapped root. Both empty:
    /// the host mapping. Needs root and a kernel that mounts overlay on
    /// idmapped lowers ([`OverlayDriver::supports_idmapped_lowers`]).
    pub uidmap: Vec<IdMap>,
    /// The container's gid map (see `uidmap`).
    pub gidmap: Vec<IdMap>,
}

/// Which way the mount data reaches the kernel (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    /// `mount(2)`.
    Data,
    /// `fsopen` + `fsconfig("lowerdir+")` + `fsmount` + `move_mount`.
    FsConfig,
}

/// Mount options split the way c/storage's `mount.ParseOptions` splits them.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ParsedOptions {
    /// Mount flags (`MS_*`).
    pub(crate) flags: MountFlags,
    /// Whether `ro` was given.
    pub(crate) read_only: bool,
    /// Options for overlayfs itself (`key` or `key=value`).
    pub(crate) fs_options: Vec<String>,
}

/// Everything one mount needs, opened.
pub(super) struct Plan<'a> {
    pub(super) id: &'a LayerId,
    /// `merged`, opened: the mount goes on it by descriptor.
    target: Dir,
    /// Lower dirs, uppermost first (read-only mounts: the layer's diff first).
    pub(super) lowers: Vec<Dir>,
    /// `(upperdir, workdir)` for read-write mounts.
    upper: Option<(Dir, Dir)>,
    options: ParsedOptions,
    label: Option<&'a str>,
}

/// Why the new mount API did not mount.
enum FsConfigFailure {
    /// The kernel lacks `fsopen` or overlayfs' `lowerdir+`: try another way.
    Unsupported,
    /// A real failure.
    Failed(LayoutError),
}

impl OverlayDriver {
    /// Mount layer `id` with its lower layers on `<id>/merged` and return
    /// that path. First makes `<home>` a private bind mount of itself (unless
    /// `overlay.skip_mount_home` is set), as c/storage's driver does; creates
    /// `merged` (and a missing `diff`) when needed.
    ///
    /// With `uidmap`/`gidmap` in `req`, the lowers are seen through one
    /// idmapped clone of the home, closed again before this returns, and
    /// `diff`, `work` and `merged` are owned by the mapped root (the
    /// `layout::idmapped` module docs tell the kernel facts); bad maps are
    /// [`LayoutError::Idmap`] and change nothing. Check
    /// [`supports_idmapped_lowers`](Self::supports_idmapped_lowers) first.
    ///
    /// No reference counting: mounting an already-mounted layer is
    /// [`LayoutError::AlreadyMounted`]. Stores that need a mount program
    /// (`.has-mount-program` = `true`) are refused.
    pub fn mount(&self, id: &LayerId, req: &MountRequest) -> Result<PathBuf, LayoutError> {
        self.mount_with(id, req, None, false)
    }

    /// [`mount`](Self::mount), optionally forcing one [`Method`] and, for
    /// mapped mounts, the attached idmapped clone (tests).
    pub(crate) fn mount_with(
        &self,
        id: &LayerId,
        req: &MountRequest,
        forced: Option<Method>,
        attach_idmap: bool,
    ) -> Result<PathBuf, LayoutError> {
        self.open_layer(id)?;
        if self.aufs_whiteouts {
            return Err(LayoutError::MountProgramRequired {
                id: id.to_string(),
                flag_file: self.home.join(MOUNT_PROGRAM_FLAG),
            });
        }
        let requested = if req.options.is_empty() {
            &self.default_mount_options
        } else {
            &req.options
        };
        let mut options = parse_options(id.as_str(), requested)?;
        if !rustix::process::geteuid().is_root()
            && !options.fs_options.iter().any(|o| o == "userxattr")
        {
            options.fs_options.push("userxattr".to_owned());
        }
        let read_only = req.read_only || options.read_only;
        if read_only {
            options.flags |= MountFlags::RDONLY;
        }
        let target_path = self.mount_point(id);
        if self.is_layer_mounted(id) {
            return Err(LayoutError::AlreadyMounted {
                id: id.to_string(),
                path: target_path,
            });
        }
        // Bad maps are refused here, before anything on disk changes.
        let mapping = Mapping::new(id.as_str(), &req.uidmap, &req.gidmap)?;
        self.ensure_home_private(&self.home_required()?)?;
        // Everything is opened after the home's bind mount, through it: a
        // descriptor opened before would reach the mount underneath, which
        // the bind mount hides.
        let home = self.home_required()?;
        let layer = self.open_layer(id)?;
        let mut lowers = self.open_lower_dirs(id)?;
        prepare_layer_dirs(id.as_str(), &layer, &lowers)?;

        let open = |name: &str| {
            layer
                .open_dir(name)
                .map_err(|e| LayoutError::io(id.as_str(), "open", layer.display(name), e))
        };
        let upper = if read_only {
            lowers.insert(0, open("diff")?);
            None
        } else {
            Some((open("diff")?, open("work")?))
        };
        if let Some(mapping) = &mapping {
            if !read_only {
                mapping.chown_upper(id.as_str(), &layer)?;
            }
        }
        let mut plan = Plan {
            id,
            target: open("merged")?,
            lowers,
            upper,
            options,
            label: req.mount_label.as_deref(),
        };
        match &mapping {
            Some(mapping) => mapping.mount(&mut plan, &home, &layer, forced, attach_idmap)?,
            None => plan.mount(forced)?,
        }
        tracing::debug!(layer = %id, target = ?target_path, idmapped = mapping.is_some(), "mounted layer");
        Ok(target_path)
    }

    /// Unmount layer `id`'s `merged` (`umount2(MNT_DETACH)`, also detaching
    /// leaked `mapped/N` idmapped mounts) and remove the `merged` directory,
    /// as c/storage v1.43's `Put`. A layer that is not mounted is fine.
    /// Every mount is named by descriptor: a symlink in the layer
    /// directory can never make this unmount anything else.
    pub fn unmount(&self, id: &LayerId) -> Result<(), LayoutError> {
        let layer = self.open_layer(id)?;
        let target = self.mount_point(id);
        if let Ok(Some(mapped)) = layer.open_dir_opt("mapped") {
            for entry in mapped.entries().unwrap_or_default() {
                if mapped.is_mount_point(&entry.name).unwrap_or(false) {
                    if let Ok(point) = mapped.open_dir_path(&entry.name) {
                        let _ = unmount(point.proc_path(), UnmountFlags::DETACH);
                    }
                }
            }
        }
        let mounted = layer.is_mount_point("merged").unwrap_or(false);
        if mounted {
            // O_PATH: nothing is asked of what is mounted there (a hung
            // FUSE server would hang a real open).
            let point = layer
                .open_dir_path("merged")
                .map_err(|e| LayoutError::io(id.as_str(), "open", &target, e))?;
            match unmount(point.proc_path(), UnmountFlags::DETACH) {
                Ok(()) | Err(Errno::INVAL) | Err(Errno::NOENT) => {}
                Err(e) => {
                    return Err(LayoutError::Unmount {
                        id: id.to_string(),
                        target,
                        source: e.into(),
                    })
                }
            }
        }
        if layer.is_mount_point("merged").unwrap_or(false) {
            return Err(LayoutError::StillMounted {
                id: id.to_string(),
                path: target,
            });
        }
        match rustix::fs::unlinkat(layer.fd(), "merged", AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(Errno::NOTEMPTY) | Err(Errno::EXIST) => {
                tracing::debug!(layer = %id, path = ?target, "merged is not empty; kept");
            }
            Err(Errno::NOTDIR) => {
                tracing::warn!(layer = %id, path = ?target, "merged is not a directory; kept");
            }
            Err(e) => return Err(LayoutError::io(id.as_str(), "remove", target, e)),
        }
        tracing::debug!(layer = %id, "unmounted layer");
        Ok(())
    }

    /// `<home>/<id>/merged`, where the layer is mounted when it is.
    pub fn mount_point(&self, id: &LayerId) -> PathBuf {
        self.home.join(id.as_str()).join("merged")
    }

    /// Whether the layer's `merged` is a mount point right now (looked at
    /// through the layer's directory, not following symlinks).
    pub fn is_layer_mounted(&self, id: &LayerId) -> bool {
        match self.open_layer(id) {
            Ok(layer) => layer.is_mount_point("merged").unwrap_or(false),
            Err(_) => false,
        }
    }

    /// The root of the layer's mount (device and inode), when `merged` is
    /// a mount point right now.
    pub fn mounted_root(&self, id: &LayerId) -> Result<Option<FileIdentity>, LayoutError> {
        let layer = self.open_layer(id)?;
        let merged = layer.display("merged");
        let io = |e| LayoutError::io(id.as_str(), "examine", merged.clone(), e);
        if !layer.is_mount_point("merged").map_err(io)? {
            return Ok(None);
        }
        // The lookup of `merged` crosses into the mount: this is its root.
        Ok(layer.stat("merged").map_err(io)?.map(|m| FileIdentity {
            dev: m.dev,
            ino: m.ino,
        }))
    }

    /// Make `<home>` a private bind mount of itself, as c/storage's
    /// `mount.MakePrivate(home)`: bind it onto itself unless it already is a
    /// mount point (podman may have done it), then set it private. The
    /// home is named by descriptor.
    fn ensure_home_private(&self, home: &Dir) -> Result<(), LayoutError> {
        if self.skip_mount_home {
            return Ok(());
        }
        let fail = |e: Errno| LayoutError::HomePrivate {
            path: self.home.clone(),
            source: e.into(),
        };
        let is_root = home
            .stat_self()
            .ok()
            .and_then(|m| m.mount_root)
            .unwrap_or(false);
        if !is_root {
            mount_bind(home.proc_path(), home.proc_path()).map_err(fail)?;
            tracing::debug!(home = ?self.home, "bind-mounted the overlay home onto itself");
        }
        // Through a fresh descriptor: the bind mount is above the old one.
        let home = self.home_required()?;
        mount_change(home.proc_path(), MountPropagationFlags::PRIVATE).map_err(fail)
    }
}

impl Plan<'_> {
    /// Mount, choosing the [`Method`] unless one is forced.
    pub(super) fn mount(&self, forced: Option<Method>) -> Result<(), LayoutError> {
        let data = self.data();
        let method = match forced {
            Some(method) => method,
            None if data.len() < LEGACY_DATA_MAX => Method::Data,
            None => Method::FsConfig,
        };
        match method {
            Method::Data if data.len() >= LEGACY_DATA_MAX => Err(LayoutError::MountDataTooLong {
                id: self.id.to_string(),
                lowers: self.lowers.len(),
                len: data.len(),
                max: LEGACY_DATA_MAX - 1,
            }),
            Method::Data => self.mount_data(data, "mount(2)"),
            Method::FsConfig => match self.mount_fsconfig() {
                Ok(()) => Ok(()),
                Err(FsConfigFailure::Failed(e)) => Err(e),
                Err(FsConfigFailure::Unsupported) => Err(LayoutError::MountDataTooLong {
                    id: self.id.to_string(),
                    lowers: self.lowers.len(),
                    len: data.len(),
                    max: LEGACY_DATA_MAX - 1,
                }),
            },
        }
    }

    /// The `mount(2)` data: `lowerdir=..[,upperdir=..,workdir=..][,opts][,context=".."]`,
    /// every directory as `/proc/self/fd/<n>`.
    fn data(&self) -> Vec<u8> {
        let mut data = b"lowerdir=".to_vec();
        for (i, lower) in self.lowers.iter().enumerate() {
            if i > 0 {
                data.push(b':');
            }
            push_escaped(&mut data, &lower.proc_path());
        }
        if let Some((upper, work)) = &self.upper {
            data.extend_from_slice(b",upperdir=");
            push_escaped(&mut data, &upper.proc_path());
            data.extend_from_slice(b",workdir=");
            push_escaped(&mut data, &work.proc_path());
        }
        for option in &self.options.fs_options {
            data.push(b',');
            data.extend_from_slice(option.as_bytes());
        }
        if let Some(label) = self.label {
            data.extend_from_slice(format!(",context=\"{label}\"").as_bytes());
        }
        data
    }

    fn mount_data(&self, data: Vec<u8>, method: &str) -> Result<(), LayoutError> {
        let data = CString::new(data).map_err(|_| LayoutError::InvalidMountOption {
            id: self.id.to_string(),
            option: "an option containing NUL".to_owned(),
        })?;
        tracing::debug!(layer = %self.id, method, data = ?data, "mounting overlay");
        rustix::mount::mount(
            "overlay",
            self.target.proc_path(),
            "overlay",
            self.options.flags,
            data.as_c_str(),
        )
        .map_err(|e| self.error(method, Vec::new(), e))
    }

    /// Mount with the new mount API, one `lowerdir+` per lower.
    fn mount_fsconfig(&self) -> Result<(), FsConfigFailure> {
        let fs = match fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC) {
            Ok(fs) => fs,
            Err(Errno::NOSYS) => return Err(FsConfigFailure::Unsupported),
            Err(e) => return Err(FsConfigFailure::Failed(self.error("fsopen", Vec::new(), e))),
        };
        let failed =
            |what: String, e: Errno| FsConfigFailure::Failed(self.error(&what, kernel_log(&fs), e));
        fsconfig_set_string(&fs, "source", "overlay")
            .map_err(|e| failed("fsconfig source=overlay".to_owned(), e))?;
        for (i, lower) in self.lowers.iter().enumerate() {
            if let Err(e) = fsconfig_set_string(&fs, "lowerdir+", lower.proc_path()) {
                let log = kernel_log(&fs);
                let unknown = log.is_empty() || log.iter().any(|m| m.contains("Unknown parameter"));
                if i == 0 && e == Errno::INVAL && unknown {
                    return Err(FsConfigFailure::Unsupported);
                }
                let what = format!("fsconfig lowerdir+={}", lower.path().display());
                return Err(FsConfigFailure::Failed(self.error(&what, log, e)));
            }
        }
        if let Some((upper, work)) = &self.upper {
            fsconfig_set_string(&fs, "upperdir", upper.proc_path())
                .map_err(|e| failed(format!("fsconfig upperdir={}", upper.path().display()), e))?;
            fsconfig_set_string(&fs, "workdir", work.proc_path())
                .map_err(|e| failed(format!("fsconfig workdir={}", work.path().display()), e))?;
        }
        for option in &self.options.fs_options {
            let result = match option.split_once('=') {
                Some((key, value)) => fsconfig_set_string(&fs, key, value),
                None => fsconfig_set_flag(&fs, option.as_str()),
            };
            result.map_err(|e| failed(format!("fsconfig {option}"), e))?;
        }
        for (flag, name) in [
            (MountFlags::SYNCHRONOUS, "sync"),
            (MountFlags::DIRSYNC, "dirsync"),
        ] {
            if self.options.flags.contains(flag) {
                fsconfig_set_flag(&fs, name).map_err(|e| failed(format!("fsconfig {name}"), e))?;
            }
        }
        if let Some(label) = self.label {
            fsconfig_set_string(&fs, "context", label)
                .map_err(|e| failed(format!("fsconfig context={label}"), e))?;
        }
        fsconfig_create(&fs).map_err(|e| failed("fsconfig create".to_owned(), e))?;
        let mnt = fsmount(
            &fs,
            FsMountFlags::FSMOUNT_CLOEXEC,
            mount_attrs(self.options.flags),
        )
        .map_err(|e| failed("fsmount".to_owned(), e))?;
        tracing::debug!(
            layer = %self.id,
            lowers = self.lowers.len(),
            "mounting overlay with fsconfig"
        );
        move_mount(
            mnt.as_fd(),
            "",
            self.target.fd(),
            "",
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
        )
        .map_err(|e| failed("move_mount".to_owned(), e))
    }

    fn error(&self, method: &str, kernel_log: Vec<String>, e: Errno) -> LayoutError {
        LayoutError::Mount {
            id: self.id.to_string(),
            target: self.target.path().to_owned(),
            method: method.to_owned(),
            kernel_log,
            source: e.into(),
        }
    }
}

/// Split mount options into flags and overlayfs options, as c/storage's
/// `mount.ParseOptions`; refuse bind, remount and propagation flags, which
/// have no meaning for a new overlay mount, and obsolete `mand`.
pub(crate) fn parse_options(id: &str, options: &[String]) -> Result<ParsedOptions, LayoutError> {
    let mut parsed = ParsedOptions {
        flags: MountFlags::empty(),
        read_only: false,
        fs_options: Vec::new(),
    };
    for option in options {
        let (set, flag) = match option.as_str() {
            "" | "defaults" | "nomand" => continue,
            "ro" => {
                parsed.read_only = true;
                (true, MountFlags::RDONLY)
            }
            "rw" => (false, MountFlags::RDONLY),
            "nosuid" => (true, MountFlags::NOSUID),
            "suid" => (false, MountFlags::NOSUID),
            "nodev" => (true, MountFlags::NODEV),
            "dev" => (false, MountFlags::NODEV),
            "noexec" => (true, MountFlags::NOEXEC),
            "exec" => (false, MountFlags::NOEXEC),
            "sync" => (true, MountFlags::SYNCHRONOUS),
            "async" => (false, MountFlags::SYNCHRONOUS),
            "dirsync" => (true, MountFlags::DIRSYNC),
            "noatime" => (true, MountFlags::NOATIME),
            "atime" => (false, MountFlags::NOATIME),
            "nodiratime" => (true, MountFlags::NODIRATIME),
            "diratime" => (false, MountFlags::NODIRATIME),
            "relatime" => (true, MountFlags::RELATIME),
            "norelatime" => (false, MountFlags::RELATIME),
            "strictatime" => (true, MountFlags::STRICTATIME),
            "nostrictatime" => (false, MountFlags::STRICTATIME),
            "mand" | "bind" | "rbind" | "remount" | "move" | "private" | "rprivate" | "shared"
            | "rshared" | "slave" | "rslave" | "unbindable" | "runbindable" => {
                return Err(LayoutError::InvalidMountOption {
                    id: id.to_owned(),
                    option: option.clone(),
                })
            }
            _ => {
                parsed.fs_options.push(option.clone());
                continue;
            }
        };
        parsed.flags.set(flag, set);
    }
    Ok(parsed)
}

/// The `MOUNT_ATTR_*` equivalents of the per-mount `MS_*` flags.
fn mount_attrs(flags: MountFlags) -> MountAttrFlags {
    let mut attrs = MountAttrFlags::empty();
    for (flag, attr) in [
        (MountFlags::RDONLY, MountAttrFlags::MOUNT_ATTR_RDONLY),
        (MountFlags::NOSUID, MountAttrFlags::MOUNT_ATTR_NOSUID),
        (MountFlags::NODEV, MountAttrFlags::MOUNT_ATTR_NODEV),
        (MountFlags::NOEXEC, MountAttrFlags::MOUNT_ATTR_NOEXEC),
        (
            MountFlags::NODIRATIME,
            MountAttrFlags::MOUNT_ATTR_NODIRATIME,
        ),
        (MountFlags::NOATIME, MountAttrFlags::MOUNT_ATTR_NOATIME),
        (
            MountFlags::STRICTATIME,
            MountAttrFlags::MOUNT_ATTR_STRICTATIME,
        ),
    ] {
        if flags.contains(flag) {
            attrs |= attr;
        }
    }
    attrs
}

/// Escape `\`, `:` and `,` in a path for overlayfs' option parser.
pub(crate) fn push_escaped(data: &mut Vec<u8>, path: &Path) {
    for &b in path.as_os_str().as_bytes() {
        if matches!(b, b'\\' | b':' | b',') {
            data.push(b'\\');
        }
        data.push(b);
    }
}

/// The messages the kernel left in a filesystem context (`read(fs_fd)`).
fn kernel_log(fs: &OwnedFd) -> Vec<String> {
    let mut log = Vec::new();
    let mut buf = [0u8; 1024];
    while log.len() < KERNEL_LOG_MAX {
        match rustix::io::read(fs, &mut buf) {
            Ok(n) if n > 0 => log.push(String::from_utf8_lossy(&buf[..n]).trim_end().to_owned()),
            _ => break,
        }
    }
    log
}

/// Before mounting: a missing `diff` is recreated (mode of the first lower,
/// else 0555) and a missing `merged` created (0700), both owned like the
/// layer directory; the kernel's `volatile` marker from an earlier mount is
/// removed (overlayfs refuses to remount a volatile upper otherwise).
fn prepare_layer_dirs(id: &str, layer: &Dir, lowers: &[Dir]) -> Result<(), LayoutError> {
    let meta = layer
        .stat_self()
        .map_err(|e| LayoutError::io(id, "examine", layer.path(), e))?;
    let owner = (meta.uid, meta.gid);
    let missing = |name: &str| -> Result<bool, LayoutError> {
        match layer.stat(name) {
            Ok(None) => Ok(true),
            Ok(Some(m)) if m.is_dir() => Ok(false),
            Ok(Some(_)) => Err(LayoutError::io(
                id,
                "use as a directory",
                layer.display(name),
                std::io::Error::from(std::io::ErrorKind::NotADirectory),
            )),
            Err(e) => Err(LayoutError::io(id, "examine", layer.display(name), e)),
        }
    };
    if missing("diff")? {
        let mode = lowers
            .iter()
            .filter(|l| !l.path().ends_with("empty"))
            .find_map(|l| l.stat_self().ok())
            .map_or(0o555, |m| m.mode & 0o777);
        mkdir_owned(id, layer, "diff", mode, owner)?;
    }
    if missing("merged")? {
        mkdir_owned(id, layer, "merged", 0o700, owner)?;
    }
    let volatile = "work/work/incompat/volatile";
    layer
        .remove_tree(volatile)
        .map(|_| ())
        .map_err(|e| LayoutError::io(id, "remove", layer.display(volatile), e))
}
