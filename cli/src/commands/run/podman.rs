//! `layerstore run` in podman mode (the default): the storage container is
//! made and mounted without a copy, then `podman run --rootfs` runs the
//! container on it, so that every podman run flag, podman's security
//! defaults and podman's lifecycle apply, and the container is podman's.
//!
//! ```text
//! parse podman's command line; refuse what podman would (exit 125)
//! find the image, read its config                         (nothing made yet)
//! create + mount the storage container (idmapped / on-disk / template)
//! podman [store flags] run --runtime=<keyring shim> --cidfile=<userdata>/podman.cid
//!     --label/--annotation io.layerstore.storage-container=<id> ...
//!     --env-file/--label-file <the image's, lowest precedence>
//!     [--entrypoint --workdir --user --stop-signal from the image]
//!     <the caller's flags> --rootfs <mount point> [COMMAND]
//! podman exited: no cidfile -> podman made no container: release at once;
//!   foreground --rm and podman removed its container -> release;
//!   otherwise record podman's container id; gc releases it later.
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use layerstore::gc::{PodmanUse, RunOwner};
use layerstore::records::Image;
use layerstore::Store;
use layerstore_overlay::engine::{Engine, Rootfs, RootfsOptions, RootfsPath};
use layerstore_overlay::launch::Forwarder;
use serde_json::json;

use super::podman_call::{ImageFiles, PodmanCall};
use super::podman_flags::{RunLine, UsageError};
use super::podman_userns::{auto_user_mapped, userns_mode};
use super::{find_or_import_image, image_run_config, ImageRunConfig};
use crate::commands::containers::MappingArgs;
use crate::GlobalArgs;
use layerstore_overlay::launch::user::{check_user_mapped, parse_user, UserSpec};

/// Store flags podman takes after `run` too; layerstore uses them for its
/// store and passes them to podman before `run`.
pub(super) const STORE_FLAGS: &[&str] = &["root", "runroot", "storage-driver", "storage-opt"];

/// Flags podman has that cannot work with a root filesystem layerstore
/// mounts on this host, and why.
const REFUSED: &[(&str, &str)] = &[
    (
        "rootfs",
        "layerstore run makes the root filesystem itself; for a directory of yours, use podman run --rootfs",
    ),
    ("remote", "a remote podman cannot run on this host's mounts"),
    ("url", "a remote podman cannot run on this host's mounts"),
    ("connection", "a remote podman cannot run on this host's mounts"),
    ("identity", "a remote podman cannot run on this host's mounts"),
    ("ssh", "a remote podman cannot run on this host's mounts"),
    (
        "subuidname",
        "give the mapping as --uidmap/--gidmap (layerstore prepares the rootfs for it)",
    ),
    (
        "subgidname",
        "give the mapping as --uidmap/--gidmap (layerstore prepares the rootfs for it)",
    ),
];

/// The podman executable: `podman` on PATH.
fn find_podman() -> anyhow::Result<PathBuf> {
    crate::podman::find().context(
        "podman is not installed (no podman on PATH): install it, or run the container \
         without podman with `layerstore run --direct ...` (layerstore's own launcher)",
    )
}

/// The global flags after `run` applied to `global` (they win, being
/// later on the line).
fn store_args(global: &GlobalArgs, line: &RunLine) -> GlobalArgs {
    let last = |name| line.last(name).map(str::to_owned);
    let mut opts = global.storage_opt.clone();
    opts.extend(line.values("storage-opt").into_iter().map(str::to_owned));
    GlobalArgs {
        root: last("root")
            .map(PathBuf::from)
            .or_else(|| global.root.clone()),
        runroot: last("runroot")
            .map(PathBuf::from)
            .or_else(|| global.runroot.clone()),
        storage_driver: last("storage-driver").or_else(|| global.storage_driver.clone()),
        storage_opt: opts,
        log_level: line
            .last("log-level")
            .map_or_else(|| global.log_level.clone(), str::to_owned),
    }
}

/// What `layerstore run` refuses before anything is made.
fn refuse(line: &RunLine) -> Result<(), UsageError> {
    if line.image.is_empty() {
        return Err(UsageError(
            "requires at least 1 arg(s), only received 0".to_owned(),
        ));
    }
    for (flag, why) in REFUSED {
        if line.given(flag) {
            return Err(UsageError(format!("--{flag}: {why}")));
        }
    }
    // layerstore's labels and annotations are layerstore's: the hook and gc
    // trust them.
    let ours = |kv: &str| kv.starts_with("io.layerstore.");
    for (flag, kv) in line
        .list_values("annotation")
        .into_iter()
        .map(|kv| ("annotation", kv))
        .chain(
            line.values("label")
                .into_iter()
                .map(|kv| ("label", kv.to_owned())),
        )
    {
        if ours(&kv) {
            return Err(UsageError(format!(
                "--{flag} {kv}: io.layerstore.* {flag}s are layerstore's own"
            )));
        }
    }
    for var in ["CONTAINER_HOST", "CONTAINER_CONNECTION"] {
        if std::env::var_os(var).is_some_and(|v| !v.is_empty()) {
            return Err(UsageError(format!(
                "{var} is set: a remote podman cannot run on this host's mounts"
            )));
        }
    }
    if let Some(userns) = line.last("userns") {
        let auto = userns == "auto" || userns.starts_with("auto:");
        if !(matches!(userns, "" | "host") || auto) {
            return Err(UsageError(format!(
                "--userns={userns}: not supported by layerstore run; use host, auto[:OPTIONS] or --uidmap/--gidmap"
            )));
        }
        if line.given("uidmap") || line.given("gidmap") {
            return Err(UsageError(
                "--userns and --uidmap/--gidmap/--subuidname/--subgidname are mutually exclusive"
                    .to_owned(),
            ));
        }
    }
    Ok(())
}

/// Run the container through podman; podman's exit code.
pub(super) fn run(global: &GlobalArgs, line: &RunLine) -> anyhow::Result<u8> {
    refuse(line)?;
    let podman = find_podman()?;
    let store_args = store_args(global, line);
    let keyring = line.is_set("keyring");
    let conf = super::podman_conf::load()?;
    let mapping = MappingArgs {
        userns: userns_mode(line, std::env::var("PODMAN_USERNS").ok().as_deref(), &conf)?,
        uidmap: line.list_values("uidmap"),
        gidmap: line.list_values("gidmap"),
        nocache: line.is_set("nocache"),
    };
    let mut request = mapping.request()?;
    let (uidmap, gidmap) = (request.uids.clone(), request.gids.clone());
    let given_user = line.last("user").map(parse_user).transpose()?;
    if let Some(UserSpec::Ids(uid, gid)) = &given_user {
        check_user_mapped(*uid, gid.unwrap_or(*uid), &uidmap, &gidmap)?;
    }
    let real_runtime = (!keyring)
        .then(|| conf.runtime(line.last("runtime")))
        .transpose()?;

    if !conf.has_layerstore_hook() {
        let dirs: Vec<String> = conf
            .hooks_dirs()
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        tracing::warn!(
            "podman's hooks directories ({}) hold no layerstore hook: the files podman makes \
             (/etc/hosts, /etc/hostname) stay the host root's, and a start before `layerstore \
             remount` is not refused; install it with `layerstore oci-hook --print-config > \
             /etc/containers/oci/hooks.d/layerstore.json` (docs/run.md)",
            if dirs.is_empty() {
                "none".to_owned()
            } else {
                dirs.join(", ")
            }
        );
    }
    let (store, driver) = store_args.open_store_and_driver()?;
    let image: Image = find_or_import_image(&store, &driver, &line.image)?;
    let config = image_run_config(&store, &image)?;
    if line.command.is_empty()
        && !line.given("entrypoint")
        && config.entrypoint.is_empty()
        && config.cmd.is_empty()
    {
        bail!(
            "no command given, and image {} has no Entrypoint or Cmd",
            image.names.first().unwrap_or(&image.id)
        );
    }
    if let (None, Ok(UserSpec::Ids(uid, gid))) = (&given_user, parse_user(&config.user)) {
        check_user_mapped(uid, gid.unwrap_or(uid), &uidmap, &gidmap)
            .with_context(|| format!("the image's User {:?}", config.user))?;
    }
    if let Some(auto) = &mut request.auto {
        // podman sizes an automatic namespace for the user it runs, and
        // from the host's files the caller mounts over the image's.
        let spec = line.last("user").unwrap_or(&config.user);
        auto.initial_size = layerstore::userns::AutoUserNs::initial_size_for_user(spec);
        let (passwd, group) = super::targets::user_file_overrides(line);
        auto.passwd = passwd.as_deref().and_then(super::targets::read_user_file);
        auto.group = group.as_deref().and_then(super::targets::read_user_file);
    }

    let marker = PodmanUse {
        nocache: mapping.nocache,
        container: String::new(),
        cidfile: caller_cidfile(line)?,
    };
    let metadata = json!({
        "image-name": image.names.first().cloned().unwrap_or_default(),
        "image-id": image.id,
        "name": line.last("name").unwrap_or_default(),
        RunOwner::METADATA_KEY: RunOwner::current().to_metadata_value(),
    });
    let engine = Engine::new(store, driver);
    let rootfs = engine.prepare(
        &image.id,
        &RootfsOptions {
            uidmap,
            gidmap,
            auto_userns: request.auto.clone(),
            no_cache: mapping.nocache,
            metadata: marker.put_into(&metadata.to_string()),
            ..RootfsOptions::default()
        },
    )?;
    let result = auto_user_mapped(&request, &rootfs, line, &config)
        .and_then(|()| ready_for_podman(&rootfs, line, &config))
        // After the create: a store the create refused gets no shim either.
        .and_then(|()| {
            real_runtime
                .map(|real| super::shim::install(engine.store(), &real))
                .transpose()
        })
        .and_then(|runtime| {
            tracing::info!(
                container = %rootfs.container.id,
                path = rootfs.how.as_str(),
                rootfs = %rootfs.path.display(),
                "handing the root filesystem to podman"
            );
            hand_to_podman(
                &engine,
                &rootfs,
                &podman,
                &store_args,
                line,
                &config,
                runtime,
            )
        });
    match result {
        Ok((code, Some(podman_id))) if podman_id.is_empty() => Ok(code),
        Ok((code, Some(podman_id))) => {
            if let Err(e) = record_podman_container(engine.store(), &rootfs, &podman_id) {
                tracing::warn!(container = %rootfs.container.id, "recording podman container {podman_id}: {e:#}");
            }
            Ok(code)
        }
        Ok((code, None)) => {
            engine
                .release(&rootfs, true)
                .with_context(|| format!("releasing storage container {}", rootfs.container.id))?;
            Ok(code)
        }
        Err(e) => match engine.release(&rootfs, true) {
            Ok(()) => Err(e),
            Err(c) => Err(e.context(format!(
                "and releasing storage container {} failed too: {c:#}",
                rootfs.container.id
            ))),
        },
    }
}

/// What podman would otherwise make or miss in the root filesystem: the
/// image's working directory (podman makes an image's, and only checks a
/// `--workdir`, which it gets here), and with on-disk owners the mount
/// targets the runtime could not create.
fn ready_for_podman(
    rootfs: &Rootfs,
    line: &RunLine,
    config: &ImageRunConfig,
) -> anyhow::Result<()> {
    let owner = layerstore::idmap::root_pair(&rootfs.container.uidmap, &rootfs.container.gidmap)
        .unwrap_or((0, 0));
    if !line.given("workdir") && !config.workdir.is_empty() {
        super::targets::make_workdir(&rootfs.path, &config.workdir, owner)?;
    }
    if rootfs.how == RootfsPath::OnDisk {
        super::targets::precreate(&rootfs.path, line)?;
    }
    Ok(())
}

/// Run podman; its exit code and, when the storage container stays in
/// use, podman's container id (`None`: release it now; empty: it stays,
/// podman's id unknown).
fn hand_to_podman(
    engine: &Engine,
    rootfs: &Rootfs,
    podman: &Path,
    store_args: &GlobalArgs,
    line: &RunLine,
    config: &ImageRunConfig,
    runtime: Option<PathBuf>,
) -> anyhow::Result<(u8, Option<String>)> {
    let store = engine.store();
    let sid = layerstore::ContainerId::parse(&rootfs.container.id)?;
    let caller_cidfile = line.last("cidfile").map(PathBuf::from);
    let own_cidfile = caller_cidfile
        .is_none()
        .then(|| userdata_dir(store, &sid).map(|_| own_cidfile(store, &sid)))
        .transpose()?;
    let files = ImageFiles::of(config)?;
    let call = PodmanCall {
        store_flags: crate::podman::store_flags(store_args),
        line,
        config,
        storage: rootfs,
        store,
        runtime,
        cidfile: own_cidfile.clone(),
        env_file: files.env.as_ref().map(|(_, p)| p.clone()),
        label_file: files.labels.as_ref().map(|(_, p)| p.clone()),
        leftovers: files.leftovers.clone(),
    };
    let argv = call.argv();
    tracing::debug!(?argv, "running podman");
    // Installed first: a signal that comes while podman starts reaches it.
    let forwarder = podman_forwarder()?;
    let mut child = match Command::new(podman).args(&argv).spawn() {
        Ok(child) => child,
        Err(e) => {
            forwarder.stop();
            return Err(e).with_context(|| format!("running {}", podman.display()));
        }
    };
    drop(files);
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        forwarder.target(pid);
    }
    let status = child.wait().context("waiting for podman");
    forwarder.stop();
    let status = status?;
    let code = match (
        status.code(),
        std::os::unix::process::ExitStatusExt::signal(&status),
    ) {
        (Some(c), _) => c as u8,
        (None, Some(sig)) => 128u8.wrapping_add(sig as u8),
        (None, None) => super::EXIT_RUN_FAILURE,
    };
    let user = podman_user(store, store_args, &sid, caller_cidfile.as_deref());
    let foreground_rm = line.is_set("rm") && !line.is_set("detach");
    match user {
        Some(id)
            if foreground_rm && !id.is_empty() && !podman_container_dir(store, &id).exists() =>
        {
            tracing::info!(podman = %id, "podman removed its container: releasing the storage container");
            Ok((code, None))
        }
        user => Ok((code, user)),
    }
}

/// After podman exited: the podman container on storage container `sid`,
/// from its cidfile (the caller's, else ours); `None`: podman made none,
/// release the storage. No id in the cidfile (`--cidfile=`, or the file
/// taken away) and podman cannot be asked: `Some("")`, the storage stays
/// for gc to decide.
fn podman_user(
    store: &Store,
    store_args: &GlobalArgs,
    sid: &layerstore::ContainerId,
    caller_cidfile: Option<&Path>,
) -> Option<String> {
    let written = match caller_cidfile {
        Some(path) => read_cidfile(path),
        None => read_own_cidfile(store, sid),
    };
    if written.is_some() {
        return written;
    }
    match crate::podman::containers(store_args) {
        Ok(view) => {
            let user = view.storage_users.get(sid.as_str()).cloned();
            if user.is_none() {
                tracing::info!("podman made no container: releasing the storage container");
            }
            user
        }
        Err(e) => {
            tracing::warn!(
                container = %sid,
                "no container id in podman's cidfile, and podman could not be asked whether it \
                 made a container: the storage container stays for gc to decide: {e:#}"
            );
            Some(String::new())
        }
    }
}

/// The caller's `--cidfile`, absolute (podman resolves it in this
/// directory), for the marker: gc reads podman's id there when the run died
/// before it could note it. Empty: none given.
fn caller_cidfile(line: &RunLine) -> anyhow::Result<String> {
    let Some(path) = line.last("cidfile").filter(|p| !p.is_empty()) else {
        return Ok(String::new());
    };
    let path = std::path::absolute(path).with_context(|| format!("--cidfile {path}"))?;
    Ok(path.display().to_string())
}

/// The cidfile `layerstore run` gives podman when the caller gives none:
/// in the storage container's own run directory.
pub(crate) fn own_cidfile(store: &Store, id: &layerstore::ContainerId) -> PathBuf {
    store.options().run_root.join(own_cidfile_rel(id))
}

fn own_cidfile_rel(id: &layerstore::ContainerId) -> PathBuf {
    Path::new("overlay-containers")
        .join(id.as_str())
        .join("userdata/podman.cid")
}

/// The podman container id in the storage container's own cidfile, read
/// beneath the runroot without following a symlink or waiting on a FIFO.
pub(crate) fn read_own_cidfile(store: &Store, id: &layerstore::ContainerId) -> Option<String> {
    let run = store.run_dir().ok()??;
    let bytes = run.read_opt_limited(own_cidfile_rel(id), 256).ok()??;
    cidfile_id(&String::from_utf8_lossy(&bytes))
}

/// `<runroot>/overlay-containers/<id>/userdata`, created if missing (the
/// storage container's own run directory: removed with it).
fn userdata_dir(store: &Store, id: &layerstore::ContainerId) -> anyhow::Result<PathBuf> {
    let rel = Path::new("overlay-containers")
        .join(id.as_str())
        .join("userdata");
    let run = store.run_dir_created()?;
    run.create_dir_all(&rel, 0o700)
        .with_context(|| format!("creating {}", store.options().run_root.join(&rel).display()))?;
    Ok(store.options().run_root.join(rel))
}

/// The directory podman keeps a `--rootfs` container's files in
/// (`<graphroot>/overlay-containers/<id>/`); podman removes it with the
/// container.
pub(crate) fn podman_container_dir(store: &Store, podman_id: &str) -> PathBuf {
    store
        .options()
        .graph_root
        .join("overlay-containers")
        .join(podman_id)
}

/// The podman container id in the caller's cidfile (an absolute path
/// given to `--cidfile`, and recorded for gc), if it holds one. Only a
/// regular file is read: a FIFO must not block gc.
pub(crate) fn read_cidfile(path: &Path) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    file.take(256).read_to_string(&mut text).ok()?;
    cidfile_id(&text)
}

/// The container id a cidfile holds: 64 hex digits, nothing else.
fn cidfile_id(text: &str) -> Option<String> {
    let id = text.trim();
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
}

/// Note podman's container in the storage container's marker.
fn record_podman_container(store: &Store, rootfs: &Rootfs, podman_id: &str) -> anyhow::Result<()> {
    store.modify_containers(|records| {
        if let Some(c) = records.iter_mut().find(|c| c.id == rootfs.container.id) {
            let mut marker = PodmanUse::from_metadata(&c.metadata).unwrap_or_default();
            marker.container = podman_id.to_owned();
            c.metadata = marker.put_into(&c.metadata);
        }
        Ok(())
    })?;
    Ok(())
}

/// Forwards SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2 to podman, which proxies
/// them to the container. SIGINT and SIGQUIT are ignored meanwhile, as
/// `system(3)` does: from a terminal they reach podman directly (it is in
/// the same process group), and a second copy would reach the container
/// twice.
fn podman_forwarder() -> anyhow::Result<Forwarder> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
    Ok(Forwarder::install(
        &[SIGTERM, SIGHUP, SIGUSR1, SIGUSR2],
        &[SIGINT, SIGQUIT],
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidfiles_hold_one_id() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cid");
        let id = "a".repeat(64);
        std::fs::write(&p, format!("{id}\n")).unwrap();
        assert_eq!(read_cidfile(&p), Some(id));
        std::fs::write(&p, "../../etc").unwrap();
        assert_eq!(read_cidfile(&p), None);
        assert_eq!(read_cidfile(&dir.path().join("none")), None);
    }

    #[test]
    fn refused_flags_name_themselves() {
        let line = |s: &str| {
            super::super::podman_flags::parse(&s.split(' ').map(str::to_owned).collect::<Vec<_>>())
                .unwrap()
        };
        assert!(refuse(&line("--rootfs img"))
            .unwrap_err()
            .0
            .contains("--rootfs"));
        assert!(refuse(&line("--userns=keep-id img"))
            .unwrap_err()
            .0
            .contains("--userns=keep-id"));
        assert!(refuse(&line("--userns=auto --uidmap 0:1:1 img"))
            .unwrap_err()
            .0
            .contains("mutually exclusive"));
        assert!(refuse(&line("--userns=auto img")).is_ok());
        assert!(refuse(&line("--userns=auto:size=10,uidmapping=0:1:1 img")).is_ok());
        assert!(refuse(&line("--rm"))
            .unwrap_err()
            .0
            .contains("requires at least 1 arg"));
        assert!(refuse(&line("--userns=host img")).is_ok());
        assert!(refuse(&line("--uidmap 0:1:1 img")).is_ok());
    }
}
