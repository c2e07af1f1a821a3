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

mod confinement;
mod etc_files;
mod launch;
mod seccomp;
mod spec;
mod user;

use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use layerstore::gc::RunOwner;
use layerstore::ops::big_data_file_name;
use layerstore::records::Image;
use layerstore::{ImageId, Store};
use layerstore_overlay::engine::{Engine, RootfsOptions};
use layerstore_overlay::import::{import_image, NoProgress, Source};
use serde_json::{json, Value};

use super::containers::{find_image, MappingArgs};
use crate::GlobalArgs;
pub(crate) use launch::reap_dead_runs;
use launch::{resolve_runtime, state_root, Launch, RuntimeFailure};
use user::{check_user_mapped, parse_user, UserSpec};

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
            eprintln!(
                "error: {}",
                crate::output::printable_lines(&format!("{e:#}"))
            );
            let code = e
                .downcast_ref::<RuntimeFailure>()
                .map_or(EXIT_RUN_FAILURE, RuntimeFailure::exit_code);
            ExitCode::from(code)
        }
    }
}

/// What the image's config says about running it.
#[derive(Debug, Default)]
struct ImageRunConfig {
    pub(super) env: Vec<String>,
    pub(super) entrypoint: Vec<String>,
    pub(super) cmd: Vec<String>,
    pub(super) workdir: String,
    pub(super) user: String,
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
    // One look at the records (each lock taken once) finds the image.
    let snap = store.snapshot()?;
    snap.check()?;
    let image =
        if args.image.starts_with("oci-archive:") || args.image.starts_with("docker-archive:") {
            drop(snap);
            let id = import_image(
                &store,
                &driver,
                &Source::parse(&args.image),
                &[],
                &NoProgress,
            )
            .with_context(|| format!("importing {}", args.image))?
            .image_id;
            store.snapshot()?.image(&id)?.clone()
        } else {
            find_image(&snap, &args.image)
                .with_context(|| {
                    format!(
                        "image {} is not in the store at {}",
                        args.image,
                        store.options().graph_root.display()
                    )
                })?
                .clone()
        };
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
            no_cache: args.mapping.nocache,
            metadata: metadata.to_string(),
            ..RootfsOptions::default()
        },
    )?;
    let mut launch = Launch {
        engine: &engine,
        rootfs,
        runtime,
        state_root: state_root(engine.store()),
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
