//! `layerstore run`: a podman-run-like launcher on a rootfs that costs no
//! copy for a new mapping.
//!
//! ```text
//! validate flags, maps, user, runtime, image      (nothing made yet)
//! create the container in the store               (podman ps --external lists it)
//! mount its rootfs                                 idmapped / on-disk / template
//! <runroot>/overlay-containers/<id>/userdata/config.json   the OCI bundle
//! <runtime> --root <runroot>/layerstore-runtime create --no-new-keyring ...
//! <runtime> start; wait for the container's init (we are its subreaper)
//! <runtime> delete; unmount; with --rm: remove the container and its layer
//! ```
//!
//! The runtime's `create` and `start` are separate so that a runtime that
//! cannot start the container (Debian's crun on a hybrid cgroup host) is an
//! error naming the runtime and its message, not an exit code that looks
//! like the container's. SIGINT, SIGTERM and SIGHUP are forwarded to the
//! container's init. Cleanup runs on every path after the container was
//! created.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use clap::{Args, ValueEnum};
use layerstore::gc::RunOwner;
use layerstore::idmap::{format_id_map, IdMap};
use layerstore::ops::big_data_file_name;
use layerstore::records::Image;
use layerstore::Store;
use layerstore_overlay::engine::{Engine, Rootfs, RootfsOptions};
use layerstore_overlay::import::{import_image, NoProgress, Source};
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxIdMappingBuilder, LinuxNamespace,
    LinuxNamespaceBuilder, LinuxNamespaceType, Mount, MountBuilder, PosixRlimitBuilder,
    PosixRlimitType, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use rustix::process::{Pid, Signal, WaitOptions};
use serde_json::{json, Value};

use super::containers::{find_image, MappingArgs};
use crate::GlobalArgs;

/// Exit code for a failure of `layerstore run` itself (as podman's 125).
pub const EXIT_RUN_FAILURE: u8 = 125;
/// Exit code when the command cannot be invoked (as podman's 126).
pub const EXIT_CANNOT_INVOKE: u8 = 126;
/// Exit code when the command is not found (as podman's 127).
pub const EXIT_NOT_FOUND: u8 = 127;

/// The flags `layerstore run` passes to `<runtime> create` about session
/// keyrings: `--no-new-keyring` unless `--keyring` was given. `doctor`
/// reports from this function, so its claim cannot drift from what `run`
/// does.
pub fn runtime_keyring_args(keyring: bool) -> &'static [&'static str] {
    if keyring {
        &[]
    } else {
        &["--no-new-keyring"]
    }
}

/// The container's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Network {
    /// A new network namespace with only a loopback device.
    None,
    /// The host's network namespace.
    Host,
}

/// Flags of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The container's user namespace mapping.
    #[command(flatten)]
    pub mapping: MappingArgs,
    /// The user the command runs as: UID[:GID] or NAME[:GROUP] from the
    /// image's /etc/passwd and /etc/group (default: the image's User, else 0).
    #[arg(long, short = 'u', value_name = "UID[:GID]")]
    pub user: Option<String>,
    /// Remove the container and its layer when it exits.
    #[arg(long)]
    pub rm: bool,
    /// A name for the container.
    #[arg(long)]
    pub name: Option<String>,
    /// The OCI runtime: runc, crun or a path (default: runc, else crun).
    #[arg(long, value_name = "runc|crun|PATH")]
    pub runtime: Option<String>,
    /// An environment variable for the command (several allowed).
    #[arg(long = "env", short = 'e', value_name = "K=V")]
    pub env: Vec<String>,
    /// The command's working directory (default: the image's, else /).
    #[arg(long, short = 'w', value_name = "DIR")]
    pub workdir: Option<String>,
    /// The container's network.
    #[arg(long, value_enum, default_value_t = Network::None)]
    pub network: Network,
    /// Let the runtime give the container its own session keyring (by
    /// default `--no-new-keyring` is passed: each new keyring counts against
    /// the kernel's per-uid key quota until it is garbage-collected).
    #[arg(long)]
    pub keyring: bool,
    /// The image: id, name, unique id prefix, or oci-archive:PATH /
    /// docker-archive:PATH (imported on first use).
    pub image: String,
    /// The command and its arguments (default: the image's Entrypoint and Cmd).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `layerstore run`: returns the container's exit code, or 125/126/127 for
/// failures as podman does.
pub fn run(global: &GlobalArgs, args: &RunArgs) -> ExitCode {
    match run_inner(global, args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            let code = e
                .downcast_ref::<RuntimeFailure>()
                .map_or(EXIT_RUN_FAILURE, RuntimeFailure::exit_code);
            ExitCode::from(code)
        }
    }
}

/// The runtime could not create or start the container.
#[derive(Debug)]
struct RuntimeFailure {
    runtime: String,
    step: &'static str,
    container: String,
    message: String,
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
    fn exit_code(&self) -> u8 {
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

/// `--user` as given.
#[derive(Debug, Clone, PartialEq, Eq)]
enum UserSpec {
    Ids(u32, Option<u32>),
    Names(String, Option<String>),
}

fn parse_user(text: &str) -> anyhow::Result<UserSpec> {
    let (user, group) = match text.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (text, None),
    };
    if user.is_empty() || group == Some("") {
        bail!("--user {text:?}: expected UID[:GID] or NAME[:GROUP]");
    }
    match (user.parse::<u32>(), group.map(str::parse::<u32>)) {
        (Ok(uid), None) => Ok(UserSpec::Ids(uid, None)),
        (Ok(uid), Some(Ok(gid))) => Ok(UserSpec::Ids(uid, Some(gid))),
        _ => Ok(UserSpec::Names(user.to_owned(), group.map(str::to_owned))),
    }
}

/// Check that `uid`/`gid` are mapped in the container's user namespace.
fn check_user_mapped(uid: u32, gid: u32, uidmap: &[IdMap], gidmap: &[IdMap]) -> anyhow::Result<()> {
    if !uidmap.is_empty() && layerstore::idmap::to_host(uid, uidmap).is_none() {
        bail!(
            "--user: uid {uid} is outside the container's uid map {}",
            format_id_map(uidmap)
        );
    }
    if !gidmap.is_empty() && layerstore::idmap::to_host(gid, gidmap).is_none() {
        bail!(
            "--user: gid {gid} is outside the container's gid map {}",
            format_id_map(gidmap)
        );
    }
    Ok(())
}

/// Find the OCI runtime: a path, a name on PATH, or runc then crun.
fn resolve_runtime(requested: Option<&str>) -> anyhow::Result<PathBuf> {
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
                bail!("--runtime {r}: no executable file there")
            }
        }
        Some(name) => on_path(name).ok_or_else(|| anyhow!("--runtime {name}: not found in PATH")),
        None => on_path("runc")
            .or_else(|| on_path("crun"))
            .ok_or_else(|| anyhow!("no OCI runtime found: neither runc nor crun is in PATH")),
    }
}

/// What the image's config says about running it.
#[derive(Debug, Default)]
struct ImageRunConfig {
    env: Vec<String>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    workdir: String,
    user: String,
}

fn image_run_config(store: &Store, image: &Image) -> anyhow::Result<ImageRunConfig> {
    let key = format!("sha256:{}", image.id);
    if !image.big_data_names.contains(&key) {
        return Ok(ImageRunConfig::default());
    }
    let path = store.image_dir(&image.id).join(big_data_file_name(&key));
    let bytes =
        fs::read(&path).with_context(|| format!("reading image config {}", path.display()))?;
    let value: Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("image config {} is not JSON", path.display()))?;
    let config = &value["config"];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(ImageRunConfig {
        env: strings(&config["Env"]),
        entrypoint: strings(&config["Entrypoint"]),
        cmd: strings(&config["Cmd"]),
        workdir: config["WorkingDir"].as_str().unwrap_or_default().to_owned(),
        user: config["User"].as_str().unwrap_or_default().to_owned(),
    })
}

fn run_inner(global: &GlobalArgs, args: &RunArgs) -> anyhow::Result<u8> {
    // Everything that can be checked before touching the store.
    let (uidmap, gidmap) = args.mapping.maps()?;
    for kv in &args.env {
        if !kv.contains('=') || kv.starts_with('=') {
            bail!("--env {kv:?}: expected KEY=VALUE");
        }
    }
    let user = args.user.as_deref().map(parse_user).transpose()?;
    if let Some(UserSpec::Ids(uid, gid)) = &user {
        check_user_mapped(*uid, gid.unwrap_or(*uid), &uidmap, &gidmap)?;
    }
    if let Some(dir) = &args.workdir {
        if !dir.starts_with('/') {
            bail!("--workdir {dir:?}: must be an absolute path");
        }
    }
    let runtime = resolve_runtime(args.runtime.as_deref())?;
    let (store, driver) = global.open_store_and_driver()?;

    let image_id =
        if args.image.starts_with("oci-archive:") || args.image.starts_with("docker-archive:") {
            import_image(
                &store,
                &driver,
                &Source::parse(&args.image),
                &[],
                &NoProgress,
            )
            .with_context(|| format!("importing {}", args.image))?
            .image_id
        } else {
            let snap = store.snapshot()?;
            find_image(&snap, &args.image)
                .with_context(|| {
                    format!(
                        "image {} is not in the store at {}",
                        args.image,
                        store.options().graph_root.display()
                    )
                })?
                .id
                .clone()
        };
    let image = store.snapshot()?.image(&image_id)?.clone();
    let config = image_run_config(&store, &image)?;
    let argv: Vec<String> = if args.command.is_empty() {
        config
            .entrypoint
            .iter()
            .chain(&config.cmd)
            .cloned()
            .collect()
    } else {
        config
            .entrypoint
            .iter()
            .chain(&args.command)
            .cloned()
            .collect()
    };
    if argv.is_empty() {
        bail!(
            "no command given, and image {} has no Entrypoint or Cmd",
            image.names.first().unwrap_or(&image.id)
        );
    }
    let user = match user {
        Some(u) => Some(u),
        None if !config.user.is_empty() => Some(
            parse_user(&config.user)
                .with_context(|| format!("the image's User {:?}", config.user))?,
        ),
        None => None,
    };
    if let Some(UserSpec::Ids(uid, gid)) = &user {
        check_user_mapped(*uid, gid.unwrap_or(*uid), &uidmap, &gidmap)?;
    }

    let metadata = json!({
        "image-name": image.names.first().cloned().unwrap_or_default(),
        "image-id": image.id,
        "name": args.name.clone().unwrap_or_default(),
        RunOwner::METADATA_KEY: RunOwner::current().to_metadata_value(),
    });
    let engine = Engine::new(store, driver);
    let rootfs = engine.prepare(
        &image.id,
        &RootfsOptions {
            name: args.name.clone(),
            uidmap: uidmap.clone(),
            gidmap: gidmap.clone(),
            no_cache: args.mapping.nocache,
            metadata: metadata.to_string(),
            ..RootfsOptions::default()
        },
    )?;
    let mut launch = Launch {
        engine: &engine,
        rootfs,
        runtime,
        state_root: engine.store().options().run_root.join("layerstore-runtime"),
        created: false,
        started: false,
        remove: args.rm,
    };
    let result = launch.run(args, &config, argv, user, &uidmap, &gidmap);
    let cleanup = launch.cleanup();
    match (result, cleanup) {
        (Ok(code), Ok(())) => Ok(code),
        (Ok(_), Err(e)) => Err(e),
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(c)) => Err(e.context(format!("and cleaning up failed too: {c:#}"))),
    }
}

/// A created container on its way through the runtime; cleaned up by
/// [`Launch::cleanup`] on every path.
struct Launch<'a> {
    engine: &'a Engine,
    rootfs: Rootfs,
    runtime: PathBuf,
    state_root: PathBuf,
    created: bool,
    /// The runtime started the container (a container that never ran is
    /// removed even without `--rm`: nothing of the failed run stays).
    started: bool,
    remove: bool,
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

    fn bundle(&self) -> PathBuf {
        self.engine
            .store()
            .options()
            .run_root
            .join("overlay-containers")
            .join(self.id())
            .join("userdata")
    }

    fn runtime_cmd(&self) -> Command {
        let mut cmd = Command::new(&self.runtime);
        cmd.arg("--root").arg(&self.state_root);
        cmd
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        args: &RunArgs,
        config: &ImageRunConfig,
        argv: Vec<String>,
        user: Option<UserSpec>,
        uidmap: &[IdMap],
        gidmap: &[IdMap],
    ) -> anyhow::Result<u8> {
        let (uid, gid) = match user {
            None => (0, 0),
            Some(UserSpec::Ids(uid, gid)) => (uid, gid.unwrap_or(uid)),
            Some(UserSpec::Names(name, group)) => {
                let ids = resolve_names(&self.rootfs.path, &name, group.as_deref())?;
                check_user_mapped(ids.0, ids.1, uidmap, gidmap)?;
                ids
            }
        };
        let spec = build_spec(&SpecInput {
            rootfs: &self.rootfs.path,
            hostname: &self.id()[..12],
            argv,
            env: merged_env(&config.env, &args.env),
            cwd: args
                .workdir
                .clone()
                .or_else(|| (!config.workdir.is_empty()).then(|| config.workdir.clone()))
                .unwrap_or_else(|| "/".to_owned()),
            uid,
            gid,
            uidmap,
            gidmap,
            network: args.network,
            cgroups_path: format!("/layerstore/{}", self.id()),
        })?;
        let bundle = self.bundle();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&bundle)
            .with_context(|| format!("creating the bundle directory {}", bundle.display()))?;
        let config_path = bundle.join("config.json");
        let data = serde_json::to_vec_pretty(&spec)?;
        layerstore::atomic::write_atomic(&config_path, &data, false)
            .with_context(|| format!("writing {}", config_path.display()))?;
        fs::create_dir_all(&self.state_root)
            .with_context(|| format!("creating {}", self.state_root.display()))?;

        // The container's init is orphaned when `create` returns: become
        // its subreaper so that we can wait for it.
        rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
            .context("becoming a child subreaper")?;
        let pid_file = bundle.join("pidfile");
        let log_file = bundle.join("runtime.log");
        let _ = fs::remove_file(&pid_file);
        let mut create = self.runtime_cmd();
        create
            .arg("--log")
            .arg(&log_file)
            .arg("--log-format")
            .arg("json")
            .arg("create")
            .arg("--bundle")
            .arg(&bundle)
            .arg("--pid-file")
            .arg(&pid_file);
        create.args(runtime_keyring_args(args.keyring));
        create.arg(self.id());
        tracing::debug!(?create, "creating the container");
        let status = create
            .status()
            .with_context(|| format!("running {}", self.runtime.display()))?;
        // Whatever happened, the runtime may hold state for this id now.
        self.created = true;
        if !status.success() {
            return Err(self.failure("create", &log_file, status.to_string()).into());
        }
        let pid_text = fs::read_to_string(&pid_file)
            .with_context(|| format!("reading the runtime's pid file {}", pid_file.display()))?;
        let pid = pid_text
            .trim()
            .parse::<i32>()
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| {
                anyhow!(
                    "the runtime's pid file {} holds {pid_text:?}",
                    pid_file.display()
                )
            })?;
        let forward = forward_signals(pid)?;
        let mut start = self.runtime_cmd();
        start.arg("start").arg(self.id()).stdin(Stdio::null());
        let output = start
            .output()
            .with_context(|| format!("running {}", self.runtime.display()))?;
        if !output.status.success() {
            forward.stop();
            let _ = rustix::process::kill_process(pid, Signal::KILL);
            let _ = rustix::process::waitpid(Some(pid), WaitOptions::empty());
            let message = String::from_utf8_lossy(&output.stderr).trim().to_owned();
            return Err(RuntimeFailure {
                runtime: self.runtime_name(),
                step: "start",
                container: self.id().to_owned(),
                message,
            }
            .into());
        }
        self.started = true;
        let code = wait_exit_code(pid);
        forward.stop();
        code
    }

    /// A [`RuntimeFailure`] with the runtime's last error from its log.
    fn failure(&self, step: &'static str, log: &Path, status: String) -> RuntimeFailure {
        let message = fs::read_to_string(log)
            .ok()
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
    fn cleanup(&mut self) -> anyhow::Result<()> {
        if self.created {
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
        self.engine
            .release(&self.rootfs, self.remove || !self.started)
            .with_context(|| format!("releasing container {}", self.id()))
    }
}

/// Forwards SIGINT, SIGTERM and SIGHUP to `pid` until stopped.
struct Forwarder {
    handle: signal_hook::iterator::Handle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Forwarder {
    fn stop(mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn forward_signals(pid: Pid) -> anyhow::Result<Forwarder> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("installing signal handlers")?;
    let handle = signals.handle();
    let target = Arc::new(AtomicI32::new(pid.as_raw_nonzero().get()));
    let thread = std::thread::spawn(move || {
        for sig in signals.forever() {
            let Some(signal) = Signal::from_named_raw(sig) else {
                continue;
            };
            if let Some(pid) = Pid::from_raw(target.load(Ordering::Relaxed)) {
                tracing::debug!(sig, "forwarding signal to the container");
                let _ = rustix::process::kill_process(pid, signal);
            }
        }
    });
    Ok(Forwarder {
        handle,
        thread: Some(thread),
    })
}

/// Wait for the container's init; its exit code, or 128 + the signal.
fn wait_exit_code(pid: Pid) -> anyhow::Result<u8> {
    loop {
        match rustix::process::waitpid(Some(pid), WaitOptions::empty()) {
            Ok(Some((_, status))) => {
                if let Some(code) = status.exit_status() {
                    return Ok(code as u8);
                }
                if let Some(sig) = status.terminating_signal() {
                    return Ok(128u8.wrapping_add(sig as u8));
                }
            }
            Ok(None) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(io::Error::from(e)).context("waiting for the container"),
        }
    }
}

/// The image's environment with `--env` values replacing same-named ones,
/// and a default PATH if none is set.
fn merged_env(image: &[String], given: &[String]) -> Vec<String> {
    let key = |kv: &str| kv.split_once('=').map_or(kv, |(k, _)| k).to_owned();
    let mut env: Vec<String> = Vec::new();
    for kv in image.iter().chain(given) {
        let k = key(kv);
        env.retain(|e| key(e) != k);
        env.push(kv.clone());
    }
    if !env.iter().any(|e| key(e) == "PATH") {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
        );
    }
    if !env.iter().any(|e| key(e) == "container") {
        env.push("container=layerstore".to_owned());
    }
    env
}

/// Names from the image's /etc/passwd and /etc/group, read without
/// following links out of the rootfs.
fn resolve_names(rootfs: &Path, user: &str, group: Option<&str>) -> anyhow::Result<(u32, u32)> {
    let read = |rel: &str| -> anyhow::Result<String> {
        use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
        let root = rustix::fs::open(
            rootfs,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("opening the rootfs {}", rootfs.display()))?;
        let fd = openat2(
            &root,
            rel,
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
        .with_context(|| format!("opening /{rel} in the container"))?;
        let mut text = String::new();
        io::Read::read_to_string(&mut fs::File::from(fd), &mut text)
            .with_context(|| format!("reading /{rel} in the container"))?;
        Ok(text)
    };
    let find = |text: &str, name: &str, field: usize| -> Option<(u32, Option<u32>)> {
        text.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.first() == Some(&name) && f.len() > field)
                .then(|| Some((f[2].parse().ok()?, f.get(3).and_then(|g| g.parse().ok()))))
                .flatten()
                .filter(|_| field >= 2)
        })
    };
    let (uid, primary) = match user.parse::<u32>() {
        Ok(uid) => (uid, None),
        Err(_) => {
            let passwd = read("etc/passwd")?;
            let (uid, gid) = find(&passwd, user, 3)
                .ok_or_else(|| anyhow!("--user: no user {user:?} in the image's /etc/passwd"))?;
            (uid, gid)
        }
    };
    let gid = match group {
        None => primary.unwrap_or(uid),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let groups = read("etc/group")?;
                find(&groups, g, 2)
                    .ok_or_else(|| anyhow!("--user: no group {g:?} in the image's /etc/group"))?
                    .0
            }
        },
    };
    Ok((uid, gid))
}

/// What goes into the OCI config.
struct SpecInput<'a> {
    rootfs: &'a Path,
    hostname: &'a str,
    argv: Vec<String>,
    env: Vec<String>,
    cwd: String,
    uid: u32,
    gid: u32,
    uidmap: &'a [IdMap],
    gidmap: &'a [IdMap],
    network: Network,
    cgroups_path: String,
}

/// podman's default capabilities.
const CAPABILITIES: [Capability; 11] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::NetBindService,
    Capability::Setfcap,
    Capability::Setgid,
    Capability::Setpcap,
    Capability::Setuid,
    Capability::SysChroot,
];

fn build_spec(input: &SpecInput<'_>) -> anyhow::Result<Spec> {
    let caps: std::collections::HashSet<Capability> = CAPABILITIES.into_iter().collect();
    let root_caps = if input.uid == 0 {
        caps.clone()
    } else {
        Default::default()
    };
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(root_caps.clone())
        .permitted(root_caps)
        .inheritable(std::collections::HashSet::new())
        .ambient(std::collections::HashSet::new())
        .build()?;
    // Never more than the caller has: runc would fail to raise a hard limit
    // without CAP_SYS_RESOURCE, and a lower one is all we may ask for.
    let mut rlimits = Vec::new();
    for (resource, typ) in [
        (
            rustix::process::Resource::Nofile,
            PosixRlimitType::RlimitNofile,
        ),
        (
            rustix::process::Resource::Nproc,
            PosixRlimitType::RlimitNproc,
        ),
    ] {
        let current = rustix::process::getrlimit(resource);
        let hard = current.maximum.unwrap_or(u64::MAX);
        let soft = current.current.unwrap_or(hard);
        rlimits.push(
            PosixRlimitBuilder::default()
                .typ(typ)
                .hard(hard)
                .soft(soft)
                .build()?,
        );
    }
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(input.argv.clone())
        .env(input.env.clone())
        .cwd(input.cwd.clone())
        .user(
            UserBuilder::default()
                .uid(input.uid)
                .gid(input.gid)
                .build()?,
        )
        .capabilities(capabilities)
        .rlimits(rlimits)
        .no_new_privileges(false)
        .build()?;
    let mapped = !input.uidmap.is_empty();
    let mut namespaces: Vec<LinuxNamespace> = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
    ]
    .into_iter()
    .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
    .collect::<Result<_, _>>()?;
    if input.network == Network::None {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .build()?,
        );
    }
    let to_oci = |maps: &[IdMap]| -> anyhow::Result<Vec<_>> {
        maps.iter()
            .map(|m| {
                Ok(LinuxIdMappingBuilder::default()
                    .container_id(m.container_id)
                    .host_id(m.host_id)
                    .size(m.size)
                    .build()?)
            })
            .collect()
    };
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces.clone())
        .cgroups_path(PathBuf::from(&input.cgroups_path))
        .masked_paths(default_masked_paths())
        .readonly_paths(default_readonly_paths());
    if mapped {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::User)
                .build()?,
        );
        linux = linux
            .namespaces(namespaces)
            .uid_mappings(to_oci(input.uidmap)?)
            .gid_mappings(to_oci(input.gidmap)?);
    }
    let spec = SpecBuilder::default()
        .version("1.0.2-dev")
        .root(
            RootBuilder::default()
                .path(input.rootfs)
                .readonly(false)
                .build()?,
        )
        .hostname(input.hostname)
        .process(process)
        .mounts(mounts(input)?)
        .linux(linux.build()?)
        .build()?;
    Ok(spec)
}

fn default_masked_paths() -> Vec<String> {
    [
        "/proc/acpi",
        "/proc/asound",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/sys/firmware",
        "/sys/devices/virtual/powercap",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn default_readonly_paths() -> Vec<String> {
    [
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sys",
        "/proc/sysrq-trigger",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn mounts(input: &SpecInput<'_>) -> anyhow::Result<Vec<Mount>> {
    let mount = |dest: &str, typ: &str, source: &str, options: &[&str]| -> anyhow::Result<Mount> {
        Ok(MountBuilder::default()
            .destination(dest)
            .typ(typ)
            .source(source)
            .options(options.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
            .build()?)
    };
    let mapped = !input.uidmap.is_empty();
    // gid=5 (tty) only when the container can see gid 5.
    let tty_mapped = !mapped || layerstore::idmap::to_host(5, input.gidmap).is_some();
    let mut pts = vec![
        "nosuid",
        "noexec",
        "newinstance",
        "ptmxmode=0666",
        "mode=0620",
    ];
    if tty_mapped {
        pts.push("gid=5");
    }
    let mut list = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount("/dev/pts", "devpts", "devpts", &pts)?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
    ];
    if mapped && input.network == Network::Host {
        // sysfs cannot be mounted in a user namespace that does not own the
        // network namespace: bind the host's, read-only.
        list.push(mount(
            "/sys",
            "bind",
            "/sys",
            &["rbind", "nosuid", "noexec", "nodev", "ro"],
        )?);
    } else {
        list.push(mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?);
        list.push(mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        )?);
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_parse() {
        assert_eq!(parse_user("1000").unwrap(), UserSpec::Ids(1000, None));
        assert_eq!(parse_user("1000:5").unwrap(), UserSpec::Ids(1000, Some(5)));
        assert_eq!(
            parse_user("www-data").unwrap(),
            UserSpec::Names("www-data".into(), None)
        );
        assert!(parse_user("").is_err());
        assert!(parse_user("1:").is_err());
    }

    #[test]
    fn users_must_be_mapped() {
        let maps = layerstore::idmap::parse_id_map("0:200000:65536").unwrap();
        assert!(check_user_mapped(1000, 1000, &maps, &maps).is_ok());
        let e = check_user_mapped(70000, 0, &maps, &maps).unwrap_err();
        assert!(e.to_string().contains("uid 70000 is outside"), "{e}");
        assert!(check_user_mapped(70000, 70000, &[], &[]).is_ok());
    }

    #[test]
    fn env_merges_like_podman() {
        let env = merged_env(
            &["PATH=/bin".into(), "A=1".into()],
            &["A=2".into(), "B=3".into()],
        );
        assert_eq!(env, ["PATH=/bin", "A=2", "B=3", "container=layerstore"]);
        assert!(merged_env(&[], &[])[0].starts_with("PATH=/usr/local/sbin"));
    }

    #[test]
    fn spec_has_the_maps_and_no_higher_limits() {
        let maps =
            layerstore::idmap::parse_id_map("0:200000:1000:1000:1000:1:1001:201001:64535").unwrap();
        let gids = layerstore::idmap::parse_id_map("0:200000:65536").unwrap();
        let spec = build_spec(&SpecInput {
            rootfs: Path::new("/r"),
            hostname: "abc",
            argv: vec!["/bin/true".into()],
            env: vec![],
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            uidmap: &maps,
            gidmap: &gids,
            network: Network::None,
            cgroups_path: "/layerstore/x".into(),
        })
        .unwrap();
        let v = serde_json::to_value(&spec).unwrap();
        assert_eq!(v["linux"]["uidMappings"].as_array().unwrap().len(), 3);
        assert_eq!(v["linux"]["uidMappings"][1]["hostID"], 1000);
        let nss: Vec<&str> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert!(nss.contains(&"user") && nss.contains(&"network"), "{nss:?}");
        let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        let limits = v["process"]["rlimits"].as_array().unwrap();
        let n = limits
            .iter()
            .find(|l| l["type"] == "RLIMIT_NOFILE")
            .unwrap();
        assert_eq!(n["hard"].as_u64(), Some(nofile.maximum.unwrap_or(u64::MAX)));
    }
}
