//! `layerstore oci-hook`: the precreate OCI hook that stops podman from
//! starting a container `layerstore run` handed it while its root
//! filesystem is not mounted (after a reboot, before `layerstore remount`
//! ran), with a message that says what to do, instead of a container on
//! an empty directory.
//!
//! podman runs precreate hooks (its own stage, configured in its hooks
//! directories) on every start, before it asks the runtime to create the
//! container, with the container's OCI config on stdin; the hook prints
//! the config podman goes on with. This one finds the storage container
//! the config's annotations name (`io.layerstore.storage-container`, with
//! the store's paths beside it), checks that it is mounted at the config's
//! root path, and prints the config unchanged.
//!
//! It does not mount: podman 4.3.1 has already looked into the root
//! filesystem by then (it creates `/etc/mtab` and reads `/etc/passwd`
//! there before it runs precreate hooks), so a mount made this late would
//! start the container with what podman saw in the empty directory.
//!
//! `layerstore oci-hook --print-config` prints the hook's configuration for
//! podman's hooks directories (`/usr/share/containers/oci/hooks.d/`, or
//! containers.conf `hooks_dir`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use layerstore::config::{Overrides, StoreOptions};
use layerstore::{ContainerId, LayerId, Store};
use layerstore_overlay::layout::OverlayDriver;
use serde_json::Value;

/// The annotation naming the storage container.
pub(crate) const ANNOTATION_CONTAINER: &str = "io.layerstore.storage-container";
/// The annotation holding the store's graphroot.
pub(crate) const ANNOTATION_GRAPHROOT: &str = "io.layerstore.graphroot";
/// The annotation holding the store's runroot.
pub(crate) const ANNOTATION_RUNROOT: &str = "io.layerstore.runroot";
/// The annotation holding the store's driver.
pub(crate) const ANNOTATION_DRIVER: &str = "io.layerstore.storage-driver";
/// The annotation holding the driver's options (a JSON list).
pub(crate) const ANNOTATION_OPTS: &str = "io.layerstore.storage-opts";

/// The hook's last argument: podman's message for a failed hook shows the
/// arguments only (the hook's stderr goes to podman's debug log).
pub(crate) const HINT: &str = "--if-this-fails=the-rootfs-is-not-mounted:run-layerstore-remount";

/// The most of an OCI config the hook reads.
const MAX_CONFIG: u64 = 16 << 20;

/// Flags of `oci-hook`.
#[derive(Debug, Args)]
pub struct OciHookArgs {
    /// Print the hook's configuration for podman's hooks directory instead.
    #[arg(long)]
    pub print_config: bool,
    /// Ignored: what podman shows when the hook fails.
    #[arg(long, hide = true)]
    pub if_this_fails: Option<String>,
}

/// The hook's configuration (OCI hooks schema 1.0.0) for this executable.
pub fn hook_config(exe: &Path) -> Value {
    serde_json::json!({
        "version": "1.0.0",
        "hook": {
            "path": exe,
            // podman shows a failed hook by its arguments only: they say
            // what to do.
            "args": ["layerstore", "oci-hook", HINT],
        },
        "when": {
            "annotations": {
                "^io\\.layerstore\\.storage-container$": "^[0-9a-f]{64}$",
            },
        },
        "stages": ["precreate"],
    })
}

/// `layerstore oci-hook`.
pub fn run(args: &OciHookArgs) -> anyhow::Result<()> {
    if args.print_config {
        let exe = std::env::current_exe().context("finding the layerstore executable")?;
        println!("{}", serde_json::to_string_pretty(&hook_config(&exe))?);
        return Ok(());
    }
    let mut config = Vec::new();
    std::io::stdin()
        .take(MAX_CONFIG + 1)
        .read_to_end(&mut config)
        .context("reading the OCI config from stdin")?;
    if config.len() as u64 > MAX_CONFIG {
        bail!("the OCI config on stdin is larger than {MAX_CONFIG} bytes");
    }
    let spec: Value =
        serde_json::from_slice(&config).context("the OCI config on stdin is not JSON")?;
    ensure_mounted(&spec)?;
    std::io::stdout()
        .write_all(&config)
        .context("writing the OCI config to stdout")?;
    Ok(())
}

/// The host id container id 0 maps to in `maps` (an OCI `uidMappings` /
/// `gidMappings` list); `None` without a mapping or when 0 is unmapped.
fn host_root(maps: &Value) -> Option<u32> {
    maps.as_array()?.iter().find_map(|m| {
        let c = m.get("containerID")?.as_u64()?;
        let h = m.get("hostID")?.as_u64()?;
        let n = m.get("size")?.as_u64()?;
        (c == 0 && n > 0).then(|| u32::try_from(h).ok()).flatten()
    })
}

/// The files podman makes for the container, owned by the container's
/// root as podman owns them for its own containers. podman 4.3.1 records
/// no id mappings for a `--rootfs` container, so it leaves its generated
/// `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`, `/run/.containerenv`
/// (in its run directory) and the `/etc/mtab` link it makes in the rootfs
/// owned by the host's root, which the container sees as nobody. Only
/// files below `<runroot>/overlay-containers/` that are regular, have one
/// link and belong to the host's root are changed, reached without
/// following symlinks; the mtab link only while the host's root owns it.
fn give_files_to_the_container_root(
    spec: &Value,
    run_root: &Path,
    rootfs: &Path,
) -> anyhow::Result<()> {
    use layerstore::confined::Dir;
    use rustix::fs::{AtFlags, OFlags};
    let linux = &spec["linux"];
    let (Some(uid), Some(gid)) = (
        host_root(&linux["uidMappings"]),
        host_root(&linux["gidMappings"]),
    ) else {
        return Ok(());
    };
    if uid == 0 && gid == 0 {
        return Ok(());
    }
    let owner = (
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    );
    let podman_dir = run_root.join("overlay-containers");
    let run =
        Dir::open(&podman_dir).with_context(|| format!("opening {}", podman_dir.display()))?;
    let mounts = spec["mounts"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    for m in mounts {
        let dest = m["destination"].as_str().unwrap_or_default();
        if !matches!(
            dest,
            "/etc/hosts" | "/etc/hostname" | "/etc/resolv.conf" | "/run/.containerenv"
        ) {
            continue;
        }
        let Some(rel) = m["source"]
            .as_str()
            .and_then(|s| Path::new(s).strip_prefix(&podman_dir).ok())
        else {
            continue;
        };
        let fd = match run.open_file(rel, OFlags::PATH, 0) {
            Ok(fd) => fd,
            Err(_) => continue,
        };
        let st = rustix::fs::fstat(&fd)?;
        let regular =
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile;
        if regular && st.st_nlink == 1 && st.st_uid == 0 {
            // An O_PATH descriptor: chown through its /proc name.
            rustix::fs::chownat(
                rustix::fs::CWD,
                format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd)),
                owner.0,
                owner.1,
                AtFlags::empty(),
            )
            .with_context(|| {
                format!(
                    "giving {} to the container's root",
                    run.display(rel).display()
                )
            })?;
        }
    }
    let root = Dir::open(rootfs).with_context(|| format!("opening {}", rootfs.display()))?;
    if let Ok(Some(etc)) = root.open_dir_opt("etc") {
        if let Ok(Some(meta)) = etc.stat("mtab") {
            if meta.is_symlink() && meta.uid == 0 {
                rustix::fs::chownat(
                    etc.fd(),
                    "mtab",
                    owner.0,
                    owner.1,
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .with_context(|| {
                    format!(
                        "giving {} to the container's root",
                        etc.display("mtab").display()
                    )
                })?;
            }
        }
    }
    Ok(())
}

fn annotation<'a>(spec: &'a Value, key: &str) -> Option<&'a str> {
    spec.get("annotations")?.get(key)?.as_str()
}

/// Mount the storage container `spec` names, if it is not mounted.
fn ensure_mounted(spec: &Value) -> anyhow::Result<()> {
    let Some(id) = annotation(spec, ANNOTATION_CONTAINER) else {
        // Not one of ours: podman goes on as it would without the hook.
        return Ok(());
    };
    let id =
        ContainerId::parse(id).with_context(|| format!("annotation {ANNOTATION_CONTAINER}"))?;
    let need = |key: &str| {
        annotation(spec, key)
            .filter(|v| !v.is_empty())
            .with_context(|| format!("the OCI config has no annotation {key}"))
    };
    let opts: Vec<String> = match annotation(spec, ANNOTATION_OPTS) {
        Some(text) => serde_json::from_str(text)
            .with_context(|| format!("annotation {ANNOTATION_OPTS}: not a JSON list of strings"))?,
        None => Vec::new(),
    };
    let overrides = Overrides {
        root: Some(PathBuf::from(need(ANNOTATION_GRAPHROOT)?)),
        runroot: Some(PathBuf::from(need(ANNOTATION_RUNROOT)?)),
        storage_driver: Some(need(ANNOTATION_DRIVER)?.to_owned()),
        // One empty option clears the configured ones: exactly these.
        storage_opts: if opts.is_empty() {
            vec![String::new()]
        } else {
            opts
        },
    };
    let root_path = spec
        .get("root")
        .and_then(|r| r.get("path"))
        .and_then(Value::as_str)
        .context("the OCI config has no root.path")?;
    let options = StoreOptions::load(&overrides)?;
    let graph = options.graph_root.clone();
    let store = Store::open(options.clone())
        .with_context(|| format!("opening the store at {}", graph.display()))?;
    let driver = OverlayDriver::new(&options)
        .with_context(|| format!("opening the overlay driver of {}", graph.display()))?;
    let snap = store.snapshot()?;
    let container = snap
        .containers
        .iter()
        .find(|c| c.id == id.as_str())
        .with_context(|| {
            format!(
                "storage container {id} is not in the store at {}: its root filesystem is gone (podman rm this container)",
                graph.display()
            )
        })?;
    layerstore::gc::PodmanUse::from_metadata(&container.metadata).with_context(|| {
        format!("storage container {id} was not made by layerstore run for podman")
    })?;
    let layer = LayerId::parse(&container.layer)?;
    let mount_point = layerstore::driver::Driver::mount_point(&driver, &layer);
    if Path::new(root_path) != mount_point {
        bail!(
            "the container's root {root_path} is not storage container {id}'s mount point {}",
            mount_point.display()
        );
    }
    drop(snap);
    if layerstore::driver::Driver::is_mounted(&driver, &layer) {
        give_files_to_the_container_root(spec, &options.run_root, &mount_point)?;
        return Ok(());
    }
    bail!(
        "the root filesystem of this container (storage container {id}) is not mounted at \
         {root_path}: run `layerstore remount` (layerstore-remount.service runs it at boot), \
         then start the container again"
    )
}
