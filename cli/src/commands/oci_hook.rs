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
//! the store's paths beside it), checks that the config's root path, a
//! layer's mount point in that graphroot, is mounted (without reading the
//! store's records: it runs on every start), gives podman's generated
//! files to the container's root, and prints the config unchanged.
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
use layerstore::confined::Dir;
use layerstore::{ContainerId, LayerId};
use serde_json::Value;

/// The annotation naming the storage container.
pub(crate) const ANNOTATION_CONTAINER: &str = "io.layerstore.storage-container";
/// The annotation holding the store's graphroot.
pub(crate) const ANNOTATION_GRAPHROOT: &str = "io.layerstore.graphroot";
/// The annotation holding the store's runroot.
pub(crate) const ANNOTATION_RUNROOT: &str = "io.layerstore.runroot";

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
            .map(PathBuf::from)
            .with_context(|| format!("the OCI config has no annotation {key}"))
    };
    let graph = need(ANNOTATION_GRAPHROOT)?;
    let run_root = need(ANNOTATION_RUNROOT)?;
    let root_path = spec
        .get("root")
        .and_then(|r| r.get("path"))
        .and_then(Value::as_str)
        .map(PathBuf::from)
        .context("the OCI config has no root.path")?;
    // <graphroot>/overlay/<layer>/merged, the overlay driver's mount point;
    // no records are read (this runs on every start).
    let home = graph.join("overlay");
    let layer = root_path
        .parent()
        .filter(|_| root_path.file_name().is_some_and(|n| n == "merged"))
        .filter(|p| p.parent() == Some(home.as_path()))
        .and_then(|p| p.file_name())
        .and_then(|n| LayerId::parse(&n.to_string_lossy()).ok())
        .with_context(|| {
            format!(
                "the container's root {} is not a layer's mount point in {}",
                root_path.display(),
                home.display()
            )
        })?;
    let homedir = Dir::open(&home).with_context(|| format!("opening {}", home.display()))?;
    let mounted = homedir
        .open_dir_opt(layer.as_str())
        .with_context(|| format!("opening {}", home.join(layer.as_str()).display()))?
        .map(|d| d.is_mount_point("merged"))
        .transpose()
        .with_context(|| format!("looking at {}", root_path.display()))?
        .unwrap_or(false);
    if !mounted {
        bail!(
            "the root filesystem of this container (storage container {id}) is not mounted at \
             {}: run `layerstore remount` (layerstore-remount.service runs it at boot), then \
             start the container again",
            root_path.display()
        );
    }
    give_files_to_the_container_root(spec, &run_root, &root_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(graph: &Path, root: &str) -> Value {
        serde_json::json!({
            "root": {"path": root},
            "annotations": {
                ANNOTATION_CONTAINER: "c".repeat(64),
                ANNOTATION_GRAPHROOT: graph,
                ANNOTATION_RUNROOT: graph.join("run"),
            },
        })
    }

    #[test]
    fn only_a_mounted_layer_mount_point_of_the_graphroot_passes() {
        let dir = tempfile::tempdir().unwrap();
        let g = dir.path();
        let layer = "a".repeat(64);
        std::fs::create_dir_all(g.join("overlay").join(&layer).join("merged")).unwrap();
        // Not ours: passed through untouched.
        assert!(ensure_mounted(&serde_json::json!({"root": {"path": "/x"}})).is_ok());
        // Ours, not mounted: refused, naming the fix.
        let merged = g.join("overlay").join(&layer).join("merged");
        let e = ensure_mounted(&spec(g, &merged.display().to_string())).unwrap_err();
        assert!(format!("{e:#}").contains("layerstore remount"), "{e:#}");
        // A root that is not a layer's mount point of that graphroot.
        for bad in [
            format!("{}/overlay/{layer}/diff", g.display()),
            format!("{}/overlay/../overlay/{layer}/merged", g.display()),
            "/etc".to_owned(),
        ] {
            let e = ensure_mounted(&spec(g, &bad)).unwrap_err();
            assert!(
                format!("{e:#}").contains("is not a layer's mount point"),
                "{bad}: {e:#}"
            );
        }
        // A bad storage container id is named.
        let mut s = spec(g, &merged.display().to_string());
        s["annotations"][ANNOTATION_CONTAINER] = Value::String("../x".into());
        assert!(format!("{:#}", ensure_mounted(&s).unwrap_err()).contains(ANNOTATION_CONTAINER));
    }

    #[test]
    fn host_root_is_container_root_in_the_maps() {
        let maps = serde_json::json!([
            {"containerID": 1000, "hostID": 5, "size": 1},
            {"containerID": 0, "hostID": 100000, "size": 1000},
        ]);
        assert_eq!(host_root(&maps), Some(100000));
        assert_eq!(host_root(&serde_json::json!([])), None);
        assert_eq!(host_root(&Value::Null), None);
    }
}
