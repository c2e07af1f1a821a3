//! `layerstore run`: a podman-run-like launcher on a rootfs that costs no
//! copy for a new mapping.
//!
//! ```text
//! validate flags, maps, user, runtime, image      (nothing made yet)
//! create the container in the store               (podman ps --external lists it)
//! mount its rootfs                                 idmapped / on-disk / template
//! <runroot>/overlay-containers/<id>/userdata/config.json   the OCI bundle
//! <runtime> --root <runroot>/layerstore-runtime run --detach --no-new-keyring ...
//! wait for the container's init (we are its subreaper)
//! its runtime state and cgroups removed (`<runtime> delete` only when the
//! init was not reaped); unmount; with --rm: remove the container and layer
//! ```
//!
//! The runtime runs detached, so that a runtime that cannot start the
//! container (Debian's crun on a hybrid cgroup host) is an error naming the
//! runtime and its message from its log, not an exit code that looks like
//! the container's: the command's code comes from its init. SIGINT, SIGTERM
//! and SIGHUP are forwarded to the container's init. Cleanup runs on every
//! path after the container was created.
//!
//! Without `--direct`, podman runs the container instead (see `podman`).

pub(crate) mod podman;
mod podman_call;
mod podman_conf;
mod podman_flags;
mod podman_userns;
mod shim;
mod targets;

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Parser, ValueEnum};
use layerstore::gc::RunOwner;
use layerstore::ops::big_data_file_name;
use layerstore::records::Image;
use layerstore::userns::AutoUserNs;
use layerstore::{ImageId, Store, StoreError};
use layerstore_overlay::engine::{Engine, RootfsOptions};
use layerstore_overlay::import::{import_image, NoProgress, Source};
use layerstore_overlay::layout::OverlayDriver;
use serde_json::{json, Value};

use super::containers::{find_image_in, MappingArgs};
use crate::GlobalArgs;
use layerstore_overlay::launch::user::{check_user_mapped, parse_user, UserSpec};
use layerstore_overlay::launch::{
    confinement, merged_env, resolve_runtime, Launch, LaunchError, LaunchRequest,
};
pub(crate) use layerstore_overlay::launch::{
    reap_dead_runs, runtime_keyring_args, EXIT_RUN_FAILURE,
};
pub use shim::shim_main;

/// The container's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Network {
    /// A new network namespace with only a loopback device.
    None,
    /// The host's network namespace.
    Host,
}

/// `layerstore run`: everything after `run`, parsed by [`run`] (podman's
/// flags in podman mode, [`RunArgs`] with `--direct`).
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct RunCommand {
    /// [LAYERSTORE FLAGS] [PODMAN RUN FLAGS] IMAGE [COMMAND [ARG...]]
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<String>,
}

/// `layerstore run --direct`, parsed alone.
#[derive(Debug, Parser)]
#[command(name = "layerstore run --direct", no_binary_name = true)]
struct DirectCli {
    #[command(flatten)]
    args: RunArgs,
}

/// Flags of `run --direct` (layerstore's own launcher).
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

const HELP: &str = "\
Run a command in a new container of an image, without a copy for a new mapping.

Usage: layerstore [GLOBAL FLAGS] run [LAYERSTORE FLAGS] [PODMAN RUN FLAGS] IMAGE [COMMAND [ARG...]]

By default podman runs the container (podman run --rootfs on the prepared root
filesystem): every podman run flag works, and the container is podman's.

Layerstore flags:
      --nocache   Never copy the image for the mapping: idmapped where the
                  kernel allows, else files keep their on-disk owners
      --keyring   Let the runtime give the container a new session keyring
                  (default: none, as containers.conf keyring = false)
      --direct    Run without podman, with layerstore's own launcher
                  (see layerstore run --direct --help)

The mapping is podman's --uidmap/--gidmap, or --userns=auto[:OPTIONS]: host ids
of the container's own from the containers entries of /etc/subuid and
/etc/subgid (docs/userns.md). Which flags layerstore reads and which it passes
to podman: docs/run.md. Exit code: podman's (125 when
layerstore run itself fails).
";

/// `layerstore run`: returns the container's exit code, or 125/126/127 for
/// failures as podman does.
pub fn run(global: &GlobalArgs, cmd: &RunCommand) -> ExitCode {
    let line = podman_flags::parse(&cmd.args);
    let direct = match &line {
        Ok(l) => l.is_set("direct"),
        Err(_) => cmd.args.iter().any(|a| a == "--direct"),
    };
    let level = line
        .as_ref()
        .ok()
        .and_then(|l| l.last("log-level"))
        .unwrap_or(&global.log_level);
    crate::init_logging(level);
    let result = if direct {
        let rest = cmd.args.iter().filter(|a| *a != "--direct");
        match DirectCli::try_parse_from(rest) {
            Ok(d) => run_inner(global, &d.args),
            Err(e) if !e.use_stderr() => {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                let _ = e.print();
                return ExitCode::from(EXIT_RUN_FAILURE);
            }
        }
    } else {
        match line {
            Ok(l) if l.is_set("help") => {
                print!("{HELP}");
                return ExitCode::SUCCESS;
            }
            Ok(l) => podman::run(global, &l),
            Err(e) => Err(e.into()),
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if let Some(usage) = e.downcast_ref::<podman_flags::UsageError>() {
                // As podman prints it.
                eprintln!(
                    "Error: {}",
                    crate::output::printable_lines(&usage.to_string())
                );
                return ExitCode::from(EXIT_RUN_FAILURE);
            }
            eprintln!(
                "error: {}",
                crate::output::printable_lines(&format!("{e:#}"))
            );
            let code = e
                .downcast_ref::<LaunchError>()
                .and_then(LaunchError::runtime_failure)
                .map_or(EXIT_RUN_FAILURE, |f| f.exit_code());
            ExitCode::from(code)
        }
    }
}

/// The doctor's checks of what podman mode needs on the host: the OCI hook
/// in podman's hooks directories, and the boot unit that remounts.
pub(crate) fn podman_mode_checks() -> Vec<layerstore_overlay::doctor::Check> {
    use layerstore_overlay::doctor::{Area, Check, Status};
    let mut out = Vec::new();
    let hook = match podman_conf::load() {
        Ok(conf) => {
            let dirs: Vec<String> = conf
                .hooks_dirs()
                .iter()
                .map(|d| d.display().to_string())
                .collect();
            let dirs = if dirs.is_empty() {
                "none (rootless podman reads hooks only from containers.conf hooks_dir)".to_owned()
            } else {
                dirs.join(", ")
            };
            if conf.has_layerstore_hook() {
                Check::new(
                    "run.oci-hook",
                    Area::Run,
                    Status::Ok,
                    format!("layerstore's OCI hook is in podman's hooks directories ({dirs})"),
                    "",
                )
            } else {
                Check::new(
                    "run.oci-hook",
                    Area::Run,
                    Status::Warn,
                    format!("no layerstore OCI hook in podman's hooks directories ({dirs})"),
                    "the containers layerstore run hands podman then have /etc/hosts and /etc/hostname owned by nobody inside, and a start after a reboot before `layerstore remount` runs on an empty directory",
                )
                .fix("layerstore oci-hook --print-config > /etc/containers/oci/hooks.d/layerstore.json (or install contrib/oci-hooks.d/layerstore.json)")
            }
        }
        Err(e) => Check::new(
            "run.oci-hook",
            Area::Run,
            Status::Warn,
            format!("podman's containers.conf cannot be read: {e:#}"),
            "layerstore run reads it to find podman's runtime and hooks",
        ),
    };
    out.push(hook);
    let unit = "layerstore-remount.service";
    let installed = [
        "/etc/systemd/system",
        "/usr/lib/systemd/system",
        "/lib/systemd/system",
    ]
    .iter()
    .map(|d| std::path::Path::new(d).join(unit))
    .find(|p| p.is_file());
    let enabled = std::path::Path::new("/etc/systemd/system/multi-user.target.wants")
        .join(unit)
        .exists();
    out.push(match (installed, enabled) {
        (Some(p), true) => Check::new("run.remount-unit", Area::Run, Status::Ok, format!("{} is installed and enabled", p.display()), ""),
        (found, _) => Check::new(
            "run.remount-unit",
            Area::Run,
            Status::Warn,
            match found {
                Some(p) => format!("{} is installed but not enabled", p.display()),
                None => format!("{unit} is not installed"),
            },
            "after a reboot the root filesystems layerstore run handed podman are not mounted: podman cannot start those containers until `layerstore remount` runs",
        )
        .fix(format!("install contrib/systemd/{unit} to /etc/systemd/system/ and `systemctl enable {unit}` (or run `layerstore remount` at boot before podman starts containers)")),
    });
    out
}

/// The image `query` names (id, name, unique prefix), or imported from
/// `oci-archive:PATH` / `docker-archive:PATH` on first use.
fn find_or_import_image(
    store: &Store,
    driver: &OverlayDriver,
    query: &str,
) -> anyhow::Result<Image> {
    if query.starts_with("oci-archive:") || query.starts_with("docker-archive:") {
        let id = import_image(store, driver, &Source::parse(query), &[], &NoProgress)
            .with_context(|| format!("importing {query}"))?
            .image_id;
        return Ok(store.snapshot()?.image(&id)?.clone());
    }
    // images.json alone (one shared lock): the container is created under
    // every lock, with every record checked, right after.
    let images = store.image_records()?;
    if !images.defects.is_empty() {
        return Err(StoreError::Inconsistent {
            defects: images.defects,
        }
        .into());
    }
    Ok(find_image_in(&images.records, query)
        .with_context(|| {
            format!(
                "image {query} is not in the store at {}",
                store.options().graph_root.display()
            )
        })?
        .clone())
}

/// What the image's config says about running it.
#[derive(Debug, Default)]
struct ImageRunConfig {
    pub(super) env: Vec<String>,
    pub(super) entrypoint: Vec<String>,
    pub(super) cmd: Vec<String>,
    pub(super) workdir: String,
    pub(super) user: String,
    pub(super) stop_signal: String,
    pub(super) labels: BTreeMap<String, String>,
}

fn image_run_config(store: &Store, image: &Image) -> anyhow::Result<ImageRunConfig> {
    let key = format!("sha256:{}", image.id);
    if !image.big_data_names.contains(&key) {
        return Ok(ImageRunConfig::default());
    }
    let id = ImageId::parse(&image.id)?;
    let path = store.image_dir(&id).join(big_data_file_name(&key));
    let bytes = store
        .read_image_big_data(&id, &key)?
        .with_context(|| format!("image config {} is missing", path.display()))?;
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
        stop_signal: config["StopSignal"].as_str().unwrap_or_default().to_owned(),
        labels: podman_call::labels_of(config),
    })
}

fn run_inner(global: &GlobalArgs, args: &RunArgs) -> anyhow::Result<u8> {
    // Everything that can be checked before touching the store.
    let mut request = args.mapping.request()?;
    let (uidmap, gidmap) = (request.uids.clone(), request.gids.clone());
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
    // containers.conf and the seccomp profile, before anything is made.
    let confinement = confinement::load()?;
    let (store, driver) = global.open_store_and_driver()?;
    // One look at the records (each lock taken once) finds the image.
    let image = find_or_import_image(&store, &driver, &args.image)?;
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
    if let Some(auto) = &mut request.auto {
        // podman sizes an automatic namespace for the user it runs.
        let spec = args.user.as_deref().unwrap_or(&config.user);
        auto.initial_size = AutoUserNs::initial_size_for_user(spec);
    }

    let owner = RunOwner::current();
    let metadata = json!({
        "image-name": image.names.first().cloned().unwrap_or_default(),
        "image-id": image.id,
        "name": args.name.clone().unwrap_or_default(),
        RunOwner::METADATA_KEY: owner.to_metadata_value(),
    });
    let engine = Engine::new(store, driver);
    let rootfs = engine.prepare(
        &image.id,
        &RootfsOptions {
            name: args.name.clone(),
            uidmap: uidmap.clone(),
            gidmap: gidmap.clone(),
            auto_userns: request.auto.clone(),
            no_cache: args.mapping.nocache,
            metadata: metadata.to_string(),
            ..RootfsOptions::default()
        },
    )?;
    if let (Some(_), Some(UserSpec::Ids(uid, gid))) = (&request.auto, &user) {
        let c = &rootfs.container;
        if let Err(e) = check_user_mapped(*uid, gid.unwrap_or(*uid), &c.uidmap, &c.gidmap) {
            let e = anyhow::Error::from(e);
            return Err(match engine.release(&rootfs, true) {
                Ok(()) => e,
                Err(r) => e.context(format!(
                    "and releasing storage container {} failed too: {r:#}",
                    rootfs.container.id
                )),
            });
        }
    }
    let mut launch = Launch::new(&engine, rootfs, runtime, confinement, args.rm);
    let request = LaunchRequest {
        argv,
        env: merged_env(&config.env, &args.env),
        cwd: args
            .workdir
            .clone()
            .or_else(|| (!config.workdir.is_empty()).then(|| config.workdir.clone()))
            .unwrap_or_else(|| "/".to_owned()),
        user,
        network: match args.network {
            Network::None => layerstore_overlay::launch::Network::None,
            Network::Host => layerstore_overlay::launch::Network::Host,
        },
        keyring: args.keyring,
    };
    let result = launch.run(&request).map_err(anyhow::Error::from);
    let cleanup = launch.cleanup().map_err(anyhow::Error::from);
    match (result, cleanup) {
        (Ok(code), Ok(())) => Ok(code),
        (Ok(_), Err(e)) => Err(e),
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(c)) => Err(e.context(format!("and cleaning up failed too: {c:#}"))),
    }
}
