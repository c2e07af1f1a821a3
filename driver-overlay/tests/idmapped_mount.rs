//! Idmapped overlay mounts: a container with a uid/gid mapping sees the
//! image's layers through one idmapped mount of the overlay home, without a
//! chowned copy. Privileged: real user namespaces and mounts.

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use layerstore::config::StoreOptions;
use layerstore::driver::{Driver, MountOptions};
use layerstore::error_chain as anyhow_chain;
use layerstore::idmap::IdMap;
use layerstore_overlay::layout::{LayoutError, MountRequest, OverlayDriver};
use layerstore_overlay::probe::{IdmapVerdict, IDMAPPED_LOWERS_FEATURE};
use layerstore_overlay::sys::IdmapError;
use layerstore_test_support::{require_privileged, run_ok};
use rustix::mount::{unmount, UnmountFlags};

const BASE: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const TOP: &str = "2222222222222222222222222222222222222222222222222222222222222222";
/// The container's layer on `TOP`: the upper of the mapped mounts.
const CTR: &str = "3333333333333333333333333333333333333333333333333333333333333333";

fn m(container_id: u32, host_id: u32, size: u32) -> IdMap {
    IdMap {
        container_id,
        host_id,
        size,
    }
}

/// The non-contiguous map of the brief: uids `0:100000:65536` +
/// `70000:300000:1`, gids `0:100000:65537`.
fn maps() -> (Vec<IdMap>, Vec<IdMap>) {
    (
        vec![m(0, 100000, 65536), m(70000, 300000, 1)],
        vec![m(0, 100000, 65537)],
    )
}

/// A private store in a temp dir; on drop: unmount every layer and the
/// home's bind mount onto itself, then the temp dir goes.
struct Store {
    tmp: tempfile::TempDir,
    driver: OverlayDriver,
}

impl Store {
    fn new() -> Store {
        let tmp = tempfile::tempdir().unwrap();
        let driver = OverlayDriver::new(&StoreOptions {
            graph_root: tmp.path().join("graph"),
            run_root: tmp.path().join("run"),
            driver: "overlay".into(),
            ..Default::default()
        })
        .unwrap();
        fs::create_dir_all(driver.home()).unwrap();
        Store { tmp, driver }
    }

    /// `BASE` (files owned 0:0, 1000:1000, 70000:0, a setuid binary),
    /// `TOP` on it (one more file) and the container layer `CTR` on top.
    fn with_chain() -> Store {
        let s = Store::new();
        let d = &s.driver;
        d.create_layer(&lid(BASE), None, (0, 0)).unwrap();
        let diff = d.diff_path(&lid(BASE));
        fs::create_dir(diff.join("home")).unwrap();
        for (name, owner, mode) in [
            ("root-file", (0, 0), 0o644),
            ("home/user-file", (1000, 1000), 0o600),
            ("odd-file", (70000, 0), 0o644),
            ("setuid", (0, 0), 0o4755),
        ] {
            let p = diff.join(name);
            fs::write(&p, name).unwrap();
            chown(&p, Some(owner.0), Some(owner.1)).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        }
        d.create_layer(&lid(TOP), Some(&lid(BASE)), (0, 0)).unwrap();
        fs::write(d.diff_path(&lid(TOP)).join("top-file"), "top").unwrap();
        d.create_layer(&lid(CTR), Some(&lid(TOP)), (0, 0)).unwrap();
        s
    }

    fn home(&self) -> &Path {
        self.driver.home()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        for id in [CTR, TOP, BASE] {
            let _ = self.driver.unmount(&lid(id));
        }
        let _ = unmount(self.driver.home(), UnmountFlags::DETACH);
    }
}

/// Mount points at or below `dir` in /proc/self/mountinfo.
fn mounts_under(dir: &Path) -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|mp| Path::new(mp).starts_with(dir) && Path::new(mp) != dir)
        .collect()
}

/// The mountinfo line of `target`.
fn mountinfo_line(target: &Path) -> Option<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4).map(Path::new) == Some(target))
        .map(str::to_owned)
}

fn owner(p: &Path) -> (u32, u32) {
    let meta = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (meta.uid(), meta.gid())
}

fn request(read_only: bool) -> MountRequest {
    let (uidmap, gidmap) = maps();
    MountRequest {
        read_only,
        uidmap,
        gidmap,
        ..Default::default()
    }
}

fn assert_mapped_view(merged: &Path) {
    assert_eq!(owner(&merged.join("root-file")), (100000, 100000));
    assert_eq!(owner(&merged.join("home/user-file")), (101000, 101000));
    assert_eq!(owner(&merged.join("odd-file")), (300000, 100000));
    assert_eq!(owner(&merged.join("top-file")), (100000, 100000));
    let setuid = fs::symlink_metadata(merged.join("setuid")).unwrap();
    assert_eq!((setuid.uid(), setuid.mode() & 0o7777), (100000, 0o4755));
}

#[test]
#[ignore = "privileged: needs root for user namespaces and idmapped mounts"]
fn idmapped_mount_non_contiguous_map() {
    require_privileged(&[]);
    let s = Store::with_chain();
    let d = &s.driver;
    let merged = d.mount(&lid(CTR), &request(false)).unwrap();
    let merged = fs::canonicalize(merged).unwrap();

    assert_mapped_view(&merged);
    // The layers themselves are untouched.
    let base_diff = d.diff_path(&lid(BASE));
    assert_eq!(owner(&base_diff.join("root-file")), (0, 0));
    assert_eq!(owner(&base_diff.join("home/user-file")), (1000, 1000));
    // Upper and work belong to the mapped root; writes land with host ids.
    let top_dir = s.home().join(CTR);
    assert_eq!(owner(&top_dir.join("diff")), (100000, 100000));
    assert_eq!(owner(&top_dir.join("work")), (100000, 100000));
    assert_eq!(owner(&merged), (100000, 100000));
    fs::write(merged.join("written"), "x").unwrap();
    assert_eq!(
        owner(&top_dir.join("diff/written")),
        (0, 0),
        "written by host root"
    );

    // It really is an overlay whose lowers come through an idmapped mount
    // that is attached nowhere.
    let line = mountinfo_line(&merged).expect("merged is a mount point");
    assert!(line.contains(" - overlay overlay "), "{line}");
    let fs_mounts = mounts_under(&fs::canonicalize(s.home()).unwrap());
    assert_eq!(
        fs_mounts,
        vec![merged.display().to_string()],
        "only merged is mounted"
    );

    d.unmount(&lid(CTR)).unwrap();
    assert!(mounts_under(&fs::canonicalize(s.home()).unwrap()).is_empty());
    assert!(!merged.exists());
    assert!(!top_dir.join("mapped").exists(), "no mapped/N dirs");
    let mut names: Vec<String> = fs::read_dir(&top_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["diff", "link", "lower", "lower-layers", "work"]);
    // Nothing of ours stays in the mount table at all.
    let all = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!all.contains(CTR), "{all}");
}

#[test]
#[ignore = "privileged: needs root for user namespaces and idmapped mounts"]
fn idmapped_mount_read_only_and_through_the_trait() {
    require_privileged(&[]);
    let s = Store::with_chain();
    let d = &s.driver;
    let merged = d.mount(&lid(CTR), &request(true)).unwrap();
    assert_mapped_view(&merged);
    let err = fs::write(merged.join("nope"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(30), "EROFS: {err}");
    assert_eq!(
        owner(&s.home().join(CTR).join("diff")),
        (0, 0),
        "ro: diff not re-owned"
    );
    d.unmount(&lid(CTR)).unwrap();

    let (uidmap, gidmap) = maps();
    assert!(Driver::supports_shifting(d, &uidmap, &gidmap));
    assert!(Driver::supports_shifting(d, &[], &[]));
    assert!(!Driver::supports_shifting(d, &uidmap, &[]));
    let options = MountOptions {
        uidmap,
        gidmap,
        ..Default::default()
    };
    let merged = Driver::mount(d, &lid(CTR), &options).unwrap();
    assert_mapped_view(&merged);
    Driver::unmount(d, &lid(CTR)).unwrap();
    assert!(mounts_under(&fs::canonicalize(s.home()).unwrap()).is_empty());
}

#[test]
#[ignore = "privileged: needs root for user namespaces and idmapped mounts"]
fn idmapped_mount_long_chain() {
    require_privileged(&[]);
    let s = Store::new();
    let d = &s.driver;
    let mut parent: Option<String> = None;
    for i in 0..80u64 {
        let id = format!("{:064x}", 0xabc0_0000_u64 + i);
        d.create_layer(&lid(&id), parent.as_deref().map(lid).as_ref(), (0, 0))
            .unwrap();
        let f = d.diff_path(&lid(&id)).join(format!("f{i}"));
        fs::write(&f, "x").unwrap();
        chown(&f, Some(i as u32), Some(0)).unwrap();
        parent = Some(id);
    }
    let ctr = format!("{:064x}", 0xc7c7_u64);
    d.create_layer(&lid(&ctr), parent.as_deref().map(lid).as_ref(), (0, 0))
        .unwrap();
    let merged = d.mount(&lid(&ctr), &request(false)).unwrap();
    for i in 0..80u32 {
        assert_eq!(owner(&merged.join(format!("f{i}"))), (100000 + i, 100000));
    }
    d.unmount(&lid(&ctr)).unwrap();
    assert!(mounts_under(&fs::canonicalize(s.home()).unwrap()).is_empty());
}

#[test]
#[ignore = "privileged: needs root for user namespaces and idmapped mounts"]
fn idmapped_mount_bad_maps_mount_nothing() {
    require_privileged(&[]);
    let s = Store::with_chain();
    let d = &s.driver;
    let many: Vec<IdMap> = (0..341).map(|i| m(i * 2, 100000 + i * 2, 1)).collect();
    let cases: Vec<(&str, Vec<IdMap>, Vec<IdMap>, &str)> = vec![
        (
            "overlap",
            vec![m(0, 100000, 100), m(50, 200000, 10)],
            vec![m(0, 100000, 100)],
            "overlap",
        ),
        ("empty uid map", vec![], vec![m(0, 100000, 100)], "empty"),
        ("too many extents", many.clone(), many, "341 extents"),
    ];
    for (what, uidmap, gidmap, needle) in cases {
        let req = MountRequest {
            uidmap,
            gidmap,
            ..Default::default()
        };
        let err = d.mount(&lid(CTR), &req).unwrap_err();
        let invalid_map = match &err {
            LayoutError::Idmap { source, .. } => matches!(**source, IdmapError::InvalidMap { .. }),
            _ => false,
        };
        assert!(invalid_map, "{what}: {err:?}");
        let chain = anyhow_chain(&err);
        assert!(chain.contains(needle), "{what}: {chain}");
        assert!(chain.contains(CTR), "{what}: {chain}");
        assert!(!s.home().join(CTR).join("merged").exists() || mounts_under(s.home()).is_empty());
        assert!(
            mounts_under(&fs::canonicalize(s.home()).unwrap()).is_empty(),
            "{what}"
        );
    }
    assert_eq!(
        owner(&s.home().join(CTR).join("diff")),
        (0, 0),
        "nothing re-owned"
    );
}

#[test]
#[ignore = "privileged: needs root for user namespaces and idmapped mounts"]
fn probe_caches_like_containers_storage() {
    require_privileged(&[]);
    let s = Store::new();
    let d = &s.driver;
    let runhome = d.runhome().to_owned();
    let cache = |answer: bool| runhome.join(format!("{IDMAPPED_LOWERS_FEATURE}-{answer}"));

    let outcome = d.probe_idmapped_lowers();
    assert!(outcome.supported, "{:?}", outcome.reason);
    assert!(!cache(true).exists(), "the uncached probe records nothing");

    assert_eq!(
        d.idmapped_lowers_verdict().unwrap(),
        IdmapVerdict::Probed(true)
    );
    assert_eq!(
        fs::read(cache(true)).unwrap(),
        b"",
        "empty file, as c/storage writes it"
    );
    assert_eq!(
        d.idmapped_lowers_verdict().unwrap(),
        IdmapVerdict::Cached(true)
    );
    // The scratch dir is gone and nothing stayed mounted.
    let leftovers: Vec<PathBuf> = fs::read_dir(s.home())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(mounts_under(&fs::canonicalize(s.home()).unwrap()).is_empty());

    // A pre-created -false file (podman's tests do this) wins.
    let s2 = Store::new();
    let d2 = &s2.driver;
    fs::create_dir_all(d2.runhome()).unwrap();
    fs::write(
        d2.runhome()
            .join(format!("{IDMAPPED_LOWERS_FEATURE}-false")),
        "",
    )
    .unwrap();
    assert!(!d2.supports_idmapped_lowers().unwrap());
    let (uidmap, gidmap) = maps();
    assert!(!Driver::supports_shifting(d2, &uidmap, &gidmap));
    assert!(Driver::supports_shifting(d2, &[], &[]));
    assert!(!d2
        .runhome()
        .join(format!("{IDMAPPED_LOWERS_FEATURE}-true"))
        .exists());
}

#[test]
#[ignore = "privileged: needs root and nsenter (util-linux)"]
fn container_in_user_namespace_sees_root() {
    require_privileged(&["nsenter", "stat"]);
    let s = Store::with_chain();
    let d = &s.driver;
    let merged = d.mount(&lid(CTR), &request(false)).unwrap();
    // A runtime opens the rootfs before entering the user namespace; nsenter
    // resolves the path after, so let the mapped root search the 0700
    // directories above `merged`.
    let mut dir = s.home().join(CTR);
    while dir.starts_with(s.tmp.path()) {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o711)).unwrap();
        dir.pop();
    }
    // A process in a user namespace with the same maps (what the runtime
    // makes for the container) sees the image's original owners.
    let (uidmap, gidmap) = maps();
    let userns = layerstore_overlay::sys::user_namespace(&uidmap, &gidmap).unwrap();
    let ns_path = format!("/proc/{}/fd/{}", std::process::id(), userns.as_raw_fd());
    let out = run_ok(
        Command::new("nsenter")
            .arg(format!("--user={ns_path}"))
            .args(["stat", "-c", "%u:%g"])
            .arg(merged.join("root-file"))
            .arg(merged.join("home/user-file"))
            .arg(merged.join("odd-file"))
            .arg(merged.join("setuid")),
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let owners: Vec<&str> = text.lines().collect();
    assert_eq!(owners, ["0:0", "1000:1000", "70000:0", "0:0"], "{text}");
    // What the container writes lands in the upper with host ids.
    run_ok(
        Command::new("nsenter")
            .arg(format!("--user={ns_path}"))
            .args(["touch"])
            .arg(merged.join("from-container")),
    );
    assert_eq!(
        owner(&s.home().join(CTR).join("diff/from-container")),
        (100000, 100000)
    );
    d.unmount(&lid(CTR)).unwrap();
}

/// A layer id for a test.
fn lid(id: &str) -> layerstore::LayerId {
    layerstore::LayerId::parse(id).unwrap()
}
