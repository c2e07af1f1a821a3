//! Idmapped mounts and the path a new mapping takes.
//!
//! ```text
//! /proc/filesystems                              overlay registered?
//! <graphroot>/overlay/compat<random>/            the real probe's scratch dir (removed)
//! <runroot>/overlay/idmapped-lower-dir-{true,false}   the probe cache podman and run read
//! /sys/module/overlay/parameters/metacopy        Y/N
//! <graphroot>/overlay/.has-mount-program         "true": AUFS whiteouts, no shifting
//! ```
//!
//! `idmap.run-path` is computed by the run path's own code: the verdict of
//! [`OverlayDriver::idmapped_lowers_verdict_with`] (environment switch, root,
//! cache, then the probe that just ran, as `run` would probe), fed to
//! [`OverlayDriver::supports_shifting_with`] (the body of
//! `Driver::supports_shifting`) and then to
//! [`top_layer_for_mapping`] for
//! a sample non-contiguous mapping no template matches.

use std::fs;

use layerstore::idmap::IdMap;
use layerstore::mapping::{
    top_layer_for_mapping, Capabilities, Decision, LayerSource, MappingRequest, Presentation,
};
use layerstore::records::{Image, Layer};
use layerstore::Store;
use serde::Serialize;
use serde_json::json;

use super::{Area, Check, DoctorOptions, Status};
use crate::layout::OverlayDriver;
use crate::probe::{probe_idmapped_lowers_in, IdmapVerdict, ProbeOutcome, DISABLE_IDMAP_ENV};

/// `/sys/module/overlay/parameters/metacopy`.
pub const METACOPY_PARAMETER: &str = "/sys/module/overlay/parameters/metacopy";

/// How a container's rootfs is made for a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MappingPath {
    /// The image's layers, mounted idmapped: no copy, no inodes.
    Idmapped,
    /// The image's layers as they are on disk (`--nocache` without
    /// idmapped mounts): no copy, files keep their host owners.
    OnDisk,
    /// A chowned copy of the image's top layer (one inode per entry), kept
    /// in the image's `mapped-layers`.
    Template,
}

impl MappingPath {
    /// `idmapped`, `on-disk` or `template`.
    pub fn as_str(self) -> &'static str {
        match self {
            MappingPath::Idmapped => "idmapped",
            MappingPath::OnDisk => "on-disk",
            MappingPath::Template => "template",
        }
    }
}

/// What `layerstore run` (and `create`) does for a mapping no template of
/// the image matches yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RunPath {
    /// Without `--nocache`.
    pub new_mapping: MappingPath,
    /// With `--nocache`.
    pub no_cache: MappingPath,
}

/// The idmap checks and the run path they found.
#[derive(Debug, Clone)]
pub struct IdmapChecks {
    /// `idmap.*` checks.
    pub checks: Vec<Check>,
    /// The path for a new mapping.
    pub run_path: RunPath,
}

/// The sample mapping the run path is computed for: non-contiguous (uid
/// 70000 mapped alone), the case containers/storage v1.43 always copies.
pub fn sample_maps() -> (Vec<IdMap>, Vec<IdMap>) {
    let m = |container_id, host_id, size| IdMap {
        container_id,
        host_id,
        size,
    };
    (
        vec![m(0, 1_000_000, 65536), m(70000, 1_070_000, 1)],
        vec![m(0, 1_000_000, 65537)],
    )
}

/// The path [`top_layer_for_mapping`] picks for a new mapping when the driver
/// can (or cannot) shift it. Pure.
pub fn run_path(shifting: bool) -> RunPath {
    let (uidmap, gidmap) = sample_maps();
    let top = Layer {
        id: "doctor-sample-top".into(),
        ..Default::default()
    };
    let image = Image {
        id: "doctor-sample-image".into(),
        top_layer: top.id.clone(),
        ..Default::default()
    };
    let layers = [top];
    let sources = [LayerSource {
        layers: &layers,
        writable: true,
    }];
    let caps = Capabilities {
        shifting,
        image_writable: true,
    };
    let path = |no_cache| {
        let request = MappingRequest {
            uidmap: uidmap.clone(),
            gidmap: gidmap.clone(),
            no_cache,
        };
        match top_layer_for_mapping(&image, &sources, &request, caps) {
            Ok(Decision::Use {
                presentation: Presentation::Idmapped | Presentation::Host,
                ..
            }) => MappingPath::Idmapped,
            Ok(Decision::Use {
                presentation: Presentation::OnDisk,
                ..
            }) => MappingPath::OnDisk,
            _ => MappingPath::Template,
        }
    };
    RunPath {
        new_mapping: path(false),
        no_cache: path(true),
    }
}

/// Every idmap check.
pub fn checks(store: &Store, driver: &OverlayDriver, options: &DoctorOptions) -> IdmapChecks {
    let root = rustix::process::geteuid().is_root();
    let probe = (options.probe && root).then(|| {
        if driver.home().is_dir() {
            driver.probe_idmapped_lowers()
        } else {
            probe_idmapped_lowers_in(&std::env::temp_dir())
        }
    });
    let verdict =
        driver.idmapped_lowers_verdict_with(|| probe.as_ref().is_some_and(|p| p.supported));
    let (uidmap, gidmap) = sample_maps();
    let shifting = driver.supports_shifting_with(&uidmap, &gidmap, || verdict.supported());
    let run_path = run_path(shifting);
    let checks = vec![
        overlay_check(),
        probe_check(driver, probe.as_ref(), verdict, root),
        metacopy_check(store),
        mount_program_check(driver),
        run_path_check(run_path, verdict, driver.whiteout_is_aufs()),
    ];
    IdmapChecks { checks, run_path }
}

fn overlay_check() -> Check {
    let registered = fs::read_to_string("/proc/filesystems")
        .map(|t| {
            t.lines()
                .any(|l| l.split_whitespace().last() == Some("overlay"))
        })
        .unwrap_or(false);
    let module = std::path::Path::new("/sys/module/overlay").exists();
    if registered || module {
        Check::new(
            "idmap.overlay",
            Area::Idmap,
            Status::Ok,
            "overlayfs is available",
            "the store's layers are mounted with overlayfs",
        )
    } else {
        Check::new(
            "idmap.overlay",
            Area::Idmap,
            Status::Fail,
            "overlay is not in /proc/filesystems and its module is not loaded",
            "no layer can be mounted: every container start fails",
        )
        .fix("modprobe overlay (and add it to /etc/modules-load.d/)")
    }
    .facts(json!({ "available": registered || module }))
}

fn probe_check(
    driver: &OverlayDriver,
    probe: Option<&ProbeOutcome>,
    verdict: IdmapVerdict,
    root: bool,
) -> Check {
    let cached = driver.cached_idmapped_lowers();
    let facts = json!({
        "probe": probe.map(|p| p.supported),
        "probe_error": probe.and_then(|p| p.reason.clone()),
        "cache": cached,
        "cache_dir": driver.runhome(),
        "verdict": format!("{verdict:?}"),
    });
    let check = |status, seen: String, why: &str| {
        Check::new("idmap.probe", Area::Idmap, status, seen, why).facts(facts.clone())
    };
    if verdict == IdmapVerdict::DisabledByEnvironment {
        return check(
            Status::Warn,
            format!("{DISABLE_IDMAP_ENV}=yes is set"),
            "idmapped mounts are switched off: every new mapping costs a template copy",
        )
        .fix(format!("unset {DISABLE_IDMAP_ENV}"));
    }
    if !root {
        return check(
            Status::Warn,
            "not running as root: the probe did not run".into(),
            "idmapped mounts need CAP_SYS_ADMIN in the initial user namespace; rootless stores always copy",
        )
        .fix("run doctor as root to probe the kernel");
    }
    let Some(probe) = probe else {
        return check(
            Status::Ok,
            format!("probe skipped; cache: {}", cache_text(cached)),
            "the cache answers for podman and layerstore",
        );
    };
    let seen = match (&probe.reason, probe.supported) {
        (_, true) => {
            "overlay on an idmapped lower works (a root-owned file shows the mapped uid)".to_owned()
        }
        (Some(reason), false) => format!("overlay on an idmapped lower fails: {reason}"),
        (None, false) => "overlay on an idmapped lower fails".to_owned(),
    };
    match cached {
        Some(c) if c != probe.supported => check(
            Status::Warn,
            format!("{seen}; but the cache says {}", cache_text(cached)),
            "podman and layerstore follow the cache, not the kernel",
        )
        .fix(format!(
            "remove {}/idmapped-lower-dir-{c} (it is re-probed on next use; podman's tests pre-create -false on purpose)",
            driver.runhome().display()
        )),
        _ if probe.supported => check(
            Status::Ok,
            format!("{seen}; cache: {}", cache_text(cached)),
            "containers with any mapping can use the image's layers without a copy",
        ),
        _ => check(
            Status::Warn,
            seen,
            "every new mapping costs a chowned template copy of the image (one inode per entry, kept until the image is removed)",
        )
        .fix("a kernel >= 5.19 with a filesystem that supports idmapped mounts under the graphroot (ext4, xfs, btrfs; tmpfs >= 6.3); or layerstore run --nocache (no copy, files keep their host owners)"),
    }
}

fn cache_text(cached: Option<bool>) -> String {
    match cached {
        Some(answer) => format!("idmapped-lower-dir-{answer}"),
        None => "none yet".into(),
    }
}

fn metacopy_check(store: &Store) -> Check {
    let module = fs::read_to_string(METACOPY_PARAMETER)
        .ok()
        .map(|v| v.trim() == "Y");
    let mountopt = store.options().mount_options().map(str::to_owned);
    let store_on = mountopt
        .as_deref()
        .map(|o| o.split(',').any(|x| x == "metacopy=on"));
    let effective = store_on.unwrap_or(false) || (module == Some(true) && store_on.is_none());
    Check::new(
        "idmap.metacopy",
        Area::Idmap,
        Status::Ok,
        format!(
            "metacopy: module default {}, store mountopt {}",
            match module {
                Some(true) => "Y",
                Some(false) => "N",
                None => "unknown",
            },
            mountopt.as_deref().unwrap_or("(none)")
        ),
        "with metacopy=on a template copies metadata only (no data blocks), but still costs one inode per entry",
    )
    .facts(json!({ "module": module, "mountopt": mountopt, "effective": effective }))
}

fn mount_program_check(driver: &OverlayDriver) -> Check {
    let facts = json!({ "aufs_whiteouts": driver.whiteout_is_aufs() });
    if driver.whiteout_is_aufs() {
        Check::new(
            "idmap.mount-program",
            Area::Idmap,
            Status::Warn,
            format!(
                "{}/.has-mount-program says true (a fuse-overlayfs store, AUFS whiteouts)",
                driver.home().display()
            ),
            "such a store cannot shift mappings: every new mapping costs a template copy",
        )
        .fix("use a native overlay store (a new graphroot) for containers with mappings")
        .facts(facts)
    } else {
        Check::new(
            "idmap.mount-program",
            Area::Idmap,
            Status::Ok,
            "native overlay store (no .has-mount-program, or false)",
            "whiteouts are overlay's own, so layers can be idmapped",
        )
        .facts(facts)
    }
}

fn run_path_check(path: RunPath, verdict: IdmapVerdict, aufs: bool) -> Check {
    let facts = json!({
        "new_mapping": path.new_mapping,
        "no_cache": path.no_cache,
        "verdict": format!("{verdict:?}"),
        "aufs_whiteouts": aufs,
    });
    let seen = format!(
        "layerstore run with a new mapping: {}; with --nocache: {}",
        path.new_mapping.as_str(),
        path.no_cache.as_str()
    );
    if path.new_mapping == MappingPath::Idmapped {
        Check::new(
            "idmap.run-path",
            Area::Idmap,
            Status::Ok,
            seen,
            "a new mapping costs no copy and no inodes",
        )
        .facts(facts)
    } else {
        Check::new(
            "idmap.run-path",
            Area::Idmap,
            Status::Warn,
            seen,
            "each new mapping makes a template: a chowned copy of the image's top layer, one inode per entry, kept until the image is removed",
        )
        .fix("fix what idmap.probe / idmap.mount-program report, or use --nocache (the image's layers as on disk)")
        .facts(facts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_path_follows_the_mapping_decision() {
        assert_eq!(
            run_path(true),
            RunPath {
                new_mapping: MappingPath::Idmapped,
                no_cache: MappingPath::Idmapped
            }
        );
        assert_eq!(
            run_path(false),
            RunPath {
                new_mapping: MappingPath::Template,
                no_cache: MappingPath::OnDisk
            }
        );
    }

    #[test]
    fn the_sample_maps_are_valid_and_not_contiguous() {
        let (u, g) = sample_maps();
        layerstore::idmap::validate(&u).unwrap();
        layerstore::idmap::validate(&g).unwrap();
        assert!(!layerstore::idmap::is_contiguous(&u));
    }
}
