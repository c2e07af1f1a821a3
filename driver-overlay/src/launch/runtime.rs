//! The runtime side of a launch: finding the runtime, the bundle,
//! `<runtime> run --detach`, waiting as the init's subreaper (signals:
//! [`super::signals`]) and cleanup (what a killed launch leaves:
//! [`super::reap`]).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{invalid, refuse, Context};
use crate::engine::{Engine, Rootfs};
use rustix::process::Pid;
use serde_json::Value;

use super::reap::{remove_runtime_state, state_root, STATE_DIR};
use super::signals::{forward_signals, wait_exit_code};
use super::spec::{build_spec, SpecInput};
use super::user::{check_user_mapped, resolve_names, UserSpec};

/// The runtime could not create or start the container.
#[derive(Debug)]
pub struct RuntimeFailure {
    /// The runtime's name (runc, crun, the file name of a path).
    pub runtime: String,
    /// What it was asked to do (`run`).
    pub step: &'static str,
    /// The container's id.
    pub container: String,
    /// The runtime's last error (from its JSON log), else its exit status.
    pub message: String,
}

impl std::fmt::Display for RuntimeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "OCI runtime {} failed to {} container {}: {}",
            self.runtime, self.step, self.container, self.message
        )
    }
}

impl std::error::Error for RuntimeFailure {}

impl RuntimeFailure {
    /// podman's exit code for it: 127 when the command was not found, 126
    /// when it could not be invoked, else 125.
    pub fn exit_code(&self) -> u8 {
        let m = self.message.to_ascii_lowercase();
        if m.contains("executable file not found") || m.contains("no such file or directory") {
            EXIT_NOT_FOUND
        } else if m.contains("permission denied") {
            EXIT_CANNOT_INVOKE
        } else {
            EXIT_RUN_FAILURE
        }
    }
}

/// Find the OCI runtime: a path, a name on PATH, or runc then crun.
pub fn resolve_runtime(requested: Option<&str>) -> super::Result<PathBuf> {
    let executable = |p: &Path| {
        fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let on_path = |name: &str| {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .map(|dir| dir.join(name))
            .find(|p| executable(p))
    };
    match requested {
        Some(r) if r.contains('/') => {
            let p = PathBuf::from(r);
            if executable(&p) {
                Ok(p)
            } else {
                refuse!("--runtime {r}: no executable file there")
            }
        }
        Some(name) => on_path(name).ok_or_else(|| invalid!("--runtime {name}: not found in PATH")),
        None => on_path("runc")
            .or_else(|| on_path("crun"))
            .ok_or_else(|| invalid!("no OCI runtime found: neither runc nor crun is in PATH")),
    }
}

/// Exit code for a failure to run the container (as podman's 125).
pub const EXIT_RUN_FAILURE: u8 = 125;
/// Exit code when the command cannot be invoked (as podman's 126).
pub const EXIT_CANNOT_INVOKE: u8 = 126;
/// Exit code when the command is not found (as podman's 127).
pub const EXIT_NOT_FOUND: u8 = 127;

/// The flags given to `<runtime> run` about session keyrings:
/// `--no-new-keyring` unless `keyring`. `layerstore doctor` reports from
/// this function, so its claim cannot drift from what the launcher does.
pub fn runtime_keyring_args(keyring: bool) -> &'static [&'static str] {
    if keyring {
        &[]
    } else {
        &["--no-new-keyring"]
    }
}

/// What to run in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchRequest {
    /// The command and its arguments (not empty).
    pub argv: Vec<String>,
    /// `KEY=VALUE` environment, as the process gets it (see
    /// [`super::spec::merged_env`]).
    pub env: Vec<String>,
    /// The working directory (absolute).
    pub cwd: String,
    /// The user; `None`: root.
    pub user: Option<UserSpec>,
    /// The network namespace.
    pub network: super::Network,
    /// Let the runtime give the container a new session keyring.
    pub keyring: bool,
}

/// A container on its way through the runtime; cleaned up by
/// [`Launch::cleanup`] on every path.
pub struct Launch<'a> {
    engine: &'a Engine,
    rootfs: Rootfs,
    runtime: PathBuf,
    state_root: PathBuf,
    created: bool,
    /// The runtime started the container (a container that never ran is
    /// removed even without `remove`: nothing of the failed run stays).
    started: bool,
    /// The container's init was waited for and reaped.
    reaped: bool,
    remove: bool,
    /// Capabilities and seccomp filter (read before the container was
    /// made).
    confinement: super::confinement::Confinement,
}

impl<'a> Launch<'a> {
    /// A launch of `rootfs` (from [`Engine::prepare`]) with `runtime`;
    /// `remove`: the container and its layer go at [`Launch::cleanup`].
    pub fn new(
        engine: &'a Engine,
        rootfs: Rootfs,
        runtime: PathBuf,
        confinement: super::confinement::Confinement,
        remove: bool,
    ) -> Launch<'a> {
        Launch {
            state_root: state_root(engine.store()),
            engine,
            rootfs,
            runtime,
            created: false,
            started: false,
            reaped: false,
            remove,
            confinement,
        }
    }
}

impl Launch<'_> {
    fn id(&self) -> &str {
        &self.rootfs.container.id
    }

    fn runtime_name(&self) -> String {
        self.runtime.file_name().map_or_else(
            || self.runtime.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }

    /// The bundle's path below the runroot.
    fn bundle_rel(&self) -> PathBuf {
        Path::new("overlay-containers")
            .join(self.id())
            .join("userdata")
    }

    fn bundle(&self) -> PathBuf {
        self.engine
            .store()
            .options()
            .run_root
            .join(self.bundle_rel())
    }

    fn runtime_cmd(&self) -> Command {
        let mut cmd = Command::new(&self.runtime);
        cmd.arg("--root").arg(&self.state_root);
        cmd
    }

    /// Bundle, `<runtime> run --detach`, wait: the container's exit code
    /// (128 + N when its init was killed by signal N).
    pub fn run(&mut self, request: &LaunchRequest) -> super::Result<u8> {
        let (uidmap, gidmap) = (
            self.rootfs.container.uidmap.clone(),
            self.rootfs.container.gidmap.clone(),
        );
        let (uid, gid) = match &request.user {
            None => (0, 0),
            Some(UserSpec::Ids(uid, gid)) => (*uid, gid.unwrap_or(*uid)),
            Some(UserSpec::Names(name, group)) => {
                let ids = resolve_names(&self.rootfs.path, name, group.as_deref())?;
                check_user_mapped(ids.0, ids.1, &uidmap, &gidmap)?;
                ids
            }
        };
        let bundle_dir = self.bundle();
        let spec = build_spec(&SpecInput {
            rootfs: &self.rootfs.path,
            hostname: &self.id()[..12],
            argv: request.argv.clone(),
            env: request.env.clone(),
            cwd: request.cwd.clone(),
            uid,
            gid,
            uidmap: &uidmap,
            gidmap: &gidmap,
            network: request.network,
            cgroups_path: format!("/{}/{}", layerstore::gc::RUN_CGROUP_PARENT, self.id()),
            capabilities: &self.confinement.capabilities,
            seccomp: self.confinement.seccomp.clone(),
            bundle: &bundle_dir,
        })?;
        let bundle = self.write_bundle(&spec)?;
        let forward = forward_signals()?;
        let pid = match self.create(&bundle, request.keyring) {
            Ok(pid) => pid,
            Err(e) => {
                forward.stop();
                return Err(e);
            }
        };
        self.started = true;
        forward.target(pid);
        let code = wait_exit_code(pid);
        forward.stop();
        // The init is reaped: every process of its pid namespace is gone
        // with it, so what `delete` would do is ours to do.
        self.reaped = code.is_ok();
        code
    }

    /// `<bundle>/config.json` and the etc files it binds, and the runtime's
    /// state directory, made beneath the runroot without following any
    /// symlink.
    fn write_bundle(&self, spec: &oci_spec::runtime::Spec) -> super::Result<PathBuf> {
        let bundle = self.bundle();
        let run = self.engine.store().run_dir_created()?;
        let rel = self.bundle_rel();
        let dir = run
            .create_dir_all(&rel, 0o700)
            .with_context(|| format!("creating the bundle directory {}", bundle.display()))?;
        let states = run
            .create_dir_all(STATE_DIR, 0o700)
            .with_context(|| format!("creating {}", self.state_root.display()))?;
        // The runtime runs as root on what these hold (its state's hooks
        // at `delete`, the bundle's config): nobody else may write them.
        for (d, shown) in [
            (&run, run.path().to_owned()),
            (
                &run.open_dir("overlay-containers")?,
                run.path().join("overlay-containers"),
            ),
            (
                &run.open_dir(Path::new("overlay-containers").join(self.id()))?,
                bundle.parent().map(Path::to_owned).unwrap_or_default(),
            ),
            (&dir, bundle.clone()),
            (&states, self.state_root.clone()),
        ] {
            private_to_us(d, &shown)?;
        }
        safe_ancestors(&run.proc_path(), run.path())?;
        super::etc_files::write(&dir, spec)?;
        super::etc_files::make_mount_points(&self.rootfs.path, spec)?;
        let data = serde_json::to_vec_pretty(spec)?;
        dir.write_atomic("config.json", &data, false)
            .with_context(|| format!("writing {}", bundle.join("config.json").display()))?;
        Ok(bundle)
    }

    /// `<runtime> run --detach` (create and start in one runtime process),
    /// as the subreaper of the init it leaves behind; the init's pid. A
    /// runtime that fails says so in its log, never in an exit code the
    /// command could have given: the command's code comes from waiting for
    /// the init.
    fn create(&mut self, bundle: &Path, keyring: bool) -> super::Result<Pid> {
        // The container's init is orphaned when `create` returns: become
        // its subreaper so that we can wait for it.
        rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
            .context("becoming a child subreaper")?;
        let pid_file = bundle.join("pidfile");
        let log_file = bundle.join("runtime.log");
        if let Ok(run) = self.engine.store().run_dir_created() {
            if let Ok(bundle) = run.open_dir(self.bundle_rel()) {
                let _ = bundle.remove_file("pidfile");
            }
        }
        let mut create = self.runtime_cmd();
        create
            .arg("--log")
            .arg(&log_file)
            .arg("--log-format")
            .arg("json")
            .arg("run")
            .arg("--detach")
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(&pid_file)
            .args(runtime_keyring_args(keyring))
            .arg(self.id());
        tracing::debug!(?create, "creating the container");
        let status = create
            .status()
            .with_context(|| format!("running {}", self.runtime.display()))?;
        // Whatever happened, the runtime may hold state for this id now.
        self.created = true;
        if !status.success() {
            return Err(self.failure("run", status.to_string()).into());
        }
        let pid_text = self
            .read_bundle_file("pidfile", 64)
            .with_context(|| format!("reading the runtime's pid file {}", pid_file.display()))?;
        let pid_text = String::from_utf8_lossy(&pid_text);
        let pid = pid_text
            .trim()
            .parse::<i32>()
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| {
                invalid!(
                    "the runtime's pid file {} holds {pid_text:?}",
                    pid_file.display()
                )
            })?;
        // The init is ours to signal only if it is our child (we are its
        // subreaper): a pid file rewritten by someone else names another.
        let parent = fs::read_to_string(format!("/proc/{}/stat", pid.as_raw_nonzero()))
            .ok()
            .and_then(|stat| {
                let rest = stat[stat.rfind(')')? + 1..].to_owned();
                rest.split_whitespace().nth(1)?.parse::<u32>().ok()
            });
        if parent != Some(std::process::id()) {
            refuse!(
                "the runtime's pid file {} names pid {pid:?}, which is not the container's init \
                 (not a child of this run)",
                pid_file.display()
            );
        }
        Ok(pid)
    }

    /// A file of the bundle, read beneath the runroot without following a
    /// symlink or waiting on a FIFO, at most `max` bytes.
    fn read_bundle_file(&self, name: &str, max: u64) -> super::Result<Vec<u8>> {
        let run = self.engine.store().run_dir_created()?;
        Ok(run.open_dir(self.bundle_rel())?.read_limited(name, max)?)
    }

    /// A [`RuntimeFailure`] with the runtime's last error from its log.
    /// The runtime's last error in `runtime.log`, else `status`.
    fn failure(&self, step: &'static str, status: String) -> RuntimeFailure {
        let message = self
            .read_bundle_file("runtime.log", 4 << 20)
            .ok()
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .and_then(|text| {
                text.lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .filter(|v| v["level"] == "error")
                    .filter_map(|v| v["msg"].as_str().map(str::to_owned))
                    .next_back()
            })
            .unwrap_or(status);
        RuntimeFailure {
            runtime: self.runtime_name(),
            step,
            container: self.id().to_owned(),
            message,
        }
    }

    /// Runtime state, mount, and with `--rm` the container: removed on
    /// every path.
    pub fn cleanup(&mut self) -> super::Result<()> {
        // A container whose init was reaped needs no runtime process to
        // go: its state and cgroups are removed below (one runtime start
        // saved per run). Otherwise the runtime deletes what it made.
        if self.created && !self.reaped {
            let out = self
                .runtime_cmd()
                .arg("delete")
                .arg("--force")
                .arg(self.id())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output();
            match out {
                Ok(o) if !o.status.success() => tracing::debug!(
                    stderr = %String::from_utf8_lossy(&o.stderr),
                    "runtime delete failed (the container may never have been created)"
                ),
                Err(e) => tracing::warn!("running the runtime's delete: {e}"),
                Ok(_) => {}
            }
        }
        // What a runtime that failed half-way left of its state goes too.
        if let Ok(id) = layerstore::ContainerId::parse(self.id()) {
            remove_runtime_state(self.engine.store(), &id);
        }
        self.engine
            .release(&self.rootfs, self.remove || !self.started)
            .with_context(|| format!("releasing container {}", self.id()))
    }
}

/// Refuse a directory the runtime would trust that someone else owns or
/// can write (a runroot directory made by another user, or 0777).
fn private_to_us(dir: &layerstore::confined::Dir, shown: &Path) -> super::Result<()> {
    let meta = dir
        .stat_self()
        .with_context(|| format!("examining {}", shown.display()))?;
    let me = rustix::process::geteuid().as_raw();
    if meta.uid != me || meta.mode & 0o022 != 0 {
        refuse!(
            "{} is owned by uid {} with mode {:o}: the runtime would trust what others can write \
             there; it must be owned by uid {me} and writable by it alone",
            shown.display(),
            meta.uid,
            meta.mode
        );
    }
    Ok(())
}

/// Refuse a runroot below a directory someone else could rename it out of
/// (the runtime is handed paths, not descriptors): every directory above
/// it must be owned by root or by us, and writable by others only when
/// sticky (as /tmp is).
fn safe_ancestors(fd_path: &Path, shown: &Path) -> super::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let real = fs::read_link(fd_path).with_context(|| format!("resolving {}", shown.display()))?;
    let me = rustix::process::geteuid().as_raw();
    for dir in real.ancestors().skip(1) {
        let meta =
            fs::symlink_metadata(dir).with_context(|| format!("examining {}", dir.display()))?;
        let sticky = meta.mode() & 0o1000 != 0;
        if (meta.uid() != 0 && meta.uid() != me) || (meta.mode() & 0o022 != 0 && !sticky) {
            refuse!(
                "the runroot {} is below {} (uid {}, mode {:o}), which others could change: \
                 the runtime would trust paths through it",
                shown.display(),
                dir.display(),
                meta.uid(),
                meta.mode() & 0o7777
            );
        }
    }
    Ok(())
}
