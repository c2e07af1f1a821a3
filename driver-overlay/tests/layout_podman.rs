//! The layout module against the real containers-storage (v1.43, as under
//! podman 4.3.1): layer directories we make are the ones c/storage makes and
//! mounts, and we mount what c/storage made. Privileged: real mounts.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use layerstore::config::StoreOptions;
use layerstore_overlay::layout::{is_mounted, LayoutError, MountRequest, OverlayDriver};
use layerstore_test_support::{require_privileged, run_ok, PodmanStore};

fn driver(store: &PodmanStore) -> OverlayDriver {
    OverlayDriver::new(&StoreOptions {
        graph_root: store.graph.clone(),
        run_root: store.run.clone(),
        driver: "overlay".into(),
        ..Default::default()
    })
    .unwrap()
}

fn stdout_line(cmd: &mut Command) -> String {
    let out = run_ok(cmd);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .expect("the command printed something")
        .trim()
        .to_owned()
}

/// `containers-storage create-layer [parent]`; returns the new id.
fn cs_create(store: &PodmanStore, parent: Option<&str>) -> String {
    stdout_line(store.containers_storage().arg("create-layer").args(parent))
}

fn read(path: impl AsRef<Path>) -> String {
    fs::read_to_string(path.as_ref())
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.as_ref().display()))
}

fn write(path: impl AsRef<Path>, content: &str) {
    fs::write(path.as_ref(), content)
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.as_ref().display()));
}

/// Mount points at or below `dir` in /proc/self/mountinfo.
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    read("/proc/self/mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|mp| Path::new(mp).starts_with(&dir))
        .map(str::to_owned)
        .collect()
}

/// `name -> (type, mode, uid, gid)` of a layer directory's entries.
fn entries(dir: &Path) -> BTreeMap<String, (char, u32, u32, u32)> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = fs::symlink_metadata(e.path()).unwrap();
            let kind = if m.is_dir() {
                'd'
            } else if m.file_type().is_symlink() {
                'l'
            } else {
                'f'
            };
            let name = e.file_name().into_string().unwrap();
            (name, (kind, m.mode() & 0o7777, m.uid(), m.gid()))
        })
        .collect()
}

/// Unmounts a layer with our driver on drop.
struct OurMount<'a>(&'a OverlayDriver, &'a str);

impl Drop for OurMount<'_> {
    fn drop(&mut self) {
        let _ = self.0.unmount(&lid(self.1));
    }
}

/// Unmounts a layer with containers-storage on drop.
struct CsMount<'a>(&'a PodmanStore, &'a str);

impl Drop for CsMount<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .containers_storage()
            .args(["unmount", self.1])
            .output();
    }
}

#[test]
#[ignore = "privileged: needs root, containers-storage, podman"]
fn layout_our_grandchild_matches_c_storage_and_it_mounts_it() {
    require_privileged(&["containers-storage"]);
    let store = PodmanStore::empty();
    let base = cs_create(&store, None);
    let child = cs_create(&store, Some(&base));
    let sibling = cs_create(&store, Some(&child));
    // A layer record made by c/storage whose directory we replace by ours.
    let ours = cs_create(&store, Some(&child));
    let d = driver(&store);
    let home = d.home().to_owned();
    let links_before = fs::read_dir(home.join("l")).unwrap().count();
    d.remove_layer(&lid(&ours)).unwrap();
    assert!(!home.join(&ours).exists());
    assert_eq!(
        fs::read_dir(home.join("l")).unwrap().count(),
        links_before - 1
    );
    d.create_layer(&lid(&ours), Some(&lid(&child)), (0, 0))
        .unwrap();

    // Same entries, owners and modes as c/storage's sibling, plus lower-layers.
    let mut our_entries = entries(&home.join(&ours));
    let lower_layers = our_entries
        .remove("lower-layers")
        .expect("lower-layers written");
    assert_eq!(lower_layers, ('f', 0o644, 0, 0));
    assert_eq!(our_entries, entries(&home.join(&sibling)));
    let dir_meta = |id: &str| {
        let m = fs::metadata(home.join(id)).unwrap();
        (m.mode() & 0o7777, m.uid(), m.gid())
    };
    assert_eq!(dir_meta(&ours), dir_meta(&sibling));
    assert_eq!(
        read(home.join(&ours).join("lower")),
        read(home.join(&sibling).join("lower"))
    );
    assert_eq!(
        read(home.join(&ours).join("lower-layers")),
        format!("{child}:{base}")
    );
    for id in [&ours, &sibling] {
        let link = read(home.join(id).join("link"));
        assert_eq!(link.len(), 26);
        assert_eq!(
            fs::read_link(home.join("l").join(&link)).unwrap(),
            PathBuf::from(format!("../{id}/diff"))
        );
    }

    // c/storage mounts our layer with all three diffs.
    let layers = [
        (&base, "from-base"),
        (&child, "from-child"),
        (&ours, "from-ours"),
    ];
    for (id, name) in layers {
        write(home.join(id).join("diff").join(name), id);
        write(home.join(id).join("diff/f"), id);
    }
    let merged = PathBuf::from(stdout_line(
        store.containers_storage().args(["mount", &ours]),
    ));
    let _guard = CsMount(&store, &ours);
    assert_eq!(merged, home.join(&ours).join("merged"));
    for (id, name) in layers {
        assert_eq!(read(merged.join(name)), *id);
    }
    assert_eq!(read(merged.join("f")), ours);
    assert!(is_mounted(&merged));
    run_ok(store.containers_storage().args(["unmount", &ours]));
    assert!(!is_mounted(&merged));
    assert!(!merged.exists(), "v1.43 removes merged on unmount");
}

#[test]
#[ignore = "privileged: needs root, containers-storage, podman"]
fn layout_we_mount_c_storage_layers_with_diffn_in_order() {
    require_privileged(&["containers-storage"]);
    let store = PodmanStore::empty();
    let base = cs_create(&store, None);
    let mid = cs_create(&store, Some(&base));
    let top = cs_create(&store, Some(&mid));
    let d = driver(&store);
    let home = d.home().to_owned();
    assert!(
        !home.join(&top).join("lower-layers").exists(),
        "v1.43 writes only lower"
    );
    assert_eq!(
        d.lower_layer_ids(&lid(&top)).unwrap(),
        [mid.clone(), base.clone()]
    );

    let dir = |id: &str, sub: &str| home.join(id).join(sub);
    write(dir(&base, "diff/f"), "base");
    write(dir(&base, "diff/g"), "base");
    write(dir(&base, "diff/only-base"), "");
    fs::create_dir(dir(&mid, "diff1")).unwrap();
    write(dir(&mid, "diff1/f"), "mid1");
    write(dir(&mid, "diff1/h"), "mid1");
    fs::set_permissions(dir(&mid, "diff1"), fs::Permissions::from_mode(0o555)).unwrap();
    write(dir(&mid, "diff/g"), "mid");
    write(dir(&mid, "diff/h"), "mid");
    write(dir(&top, "diff/top"), "top");
    assert_eq!(
        d.lower_dirs(&lid(&top)).unwrap(),
        [dir(&mid, "diff"), dir(&mid, "diff1"), dir(&base, "diff")]
    );

    let merged = d.mount(&lid(&top), &MountRequest::default()).unwrap();
    let guard = OurMount(&d, &top);
    assert!(is_mounted(&home), "home is a (private) mount point");
    assert!(is_mounted(&merged));
    // diff1 of mid lies below mid's diff and above base.
    assert_eq!(read(merged.join("f")), "mid1");
    assert_eq!(read(merged.join("g")), "mid");
    assert_eq!(read(merged.join("h")), "mid");
    assert!(merged.join("only-base").exists());
    assert_eq!(read(merged.join("top")), "top");
    write(merged.join("written"), "through the mount");
    assert_eq!(read(dir(&top, "diff/written")), "through the mount");

    let err = d.mount(&lid(&top), &MountRequest::default()).unwrap_err();
    assert!(matches!(err, LayoutError::AlreadyMounted { .. }), "{err}");
    let err = d.remove_layer(&lid(&top)).unwrap_err();
    assert!(matches!(err, LayoutError::LayerMounted { .. }), "{err}");

    d.unmount(&lid(&top)).unwrap();
    drop(guard);
    assert!(
        mounts_under(&home.join(&top)).is_empty(),
        "nothing left mounted"
    );
    assert!(!merged.exists(), "merged removed, as v1.43 does");

    // A layer's own diff1 is its lower.
    let mid_merged = d.mount(&lid(&mid), &MountRequest::default()).unwrap();
    let guard = OurMount(&d, &mid);
    assert_eq!(read(mid_merged.join("f")), "mid1");
    assert_eq!(read(mid_merged.join("h")), "mid");
    d.unmount(&lid(&mid)).unwrap();
    drop(guard);

    // Read-only: the layer's diff is the top lower; nothing can be written.
    let req = MountRequest {
        read_only: true,
        ..Default::default()
    };
    let merged = d.mount(&lid(&top), &req).unwrap();
    let guard = OurMount(&d, &top);
    assert_eq!(read(merged.join("written")), "through the mount");
    assert_eq!(read(merged.join("f")), "mid1");
    let err = fs::write(merged.join("nope"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(30), "EROFS: {err}");
    d.unmount(&lid(&top)).unwrap();
    drop(guard);
    assert!(mounts_under(&home.join(&top)).is_empty());

    // c/storage sees the same view after we are done.
    let cs_merged = PathBuf::from(stdout_line(
        store.containers_storage().args(["mount", &top]),
    ));
    let _cs = CsMount(&store, &top);
    assert_eq!(read(cs_merged.join("f")), "mid1");
    assert_eq!(read(cs_merged.join("h")), "mid");
    assert_eq!(read(cs_merged.join("written")), "through the mount");
    run_ok(store.containers_storage().args(["unmount", &top]));
}

#[test]
#[ignore = "privileged: needs root, containers-storage, podman"]
fn layout_chain_longer_than_a_page_mounts() {
    require_privileged(&["containers-storage"]);
    let store = PodmanStore::empty();
    let d = driver(&store);
    let mut ids: Vec<String> = Vec::new();
    for i in 0..60u64 {
        let id = format!("{:064x}", 0x5eed_0000_u64 + i * 7919);
        d.create_layer(&lid(&id), ids.last().map(|p| lid(p)).as_ref(), (0, 0))
            .unwrap();
        let diff = d.diff_path(&lid(&id));
        write(diff.join(format!("layer{i}")), &id);
        write(diff.join("f"), &id);
        ids.push(id);
    }
    let top = ids.last().unwrap();
    let lowers = d.lower_dirs(&lid(top)).unwrap();
    assert_eq!(lowers.len(), 59);
    let lowerdir_len: usize = lowers.iter().map(|p| p.as_os_str().len() + 1).sum();
    assert!(
        lowerdir_len > 4096,
        "absolute lowerdir is {lowerdir_len} bytes"
    );

    assert!(
        !is_mounted(d.home()),
        "nobody has bind-mounted the home yet"
    );
    let merged = d.mount(&lid(top), &MountRequest::default()).unwrap();
    let guard = OurMount(&d, top);
    assert!(
        is_mounted(d.home()),
        "we made the home a private bind mount"
    );
    assert_eq!(read(merged.join("f")), *top);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(read(merged.join(format!("layer{i}"))), *id);
    }
    d.unmount(&lid(top)).unwrap();
    drop(guard);
    assert!(mounts_under(&d.home().join(top)).is_empty());
    assert!(!merged.exists());
}

#[test]
#[ignore = "privileged: needs root, containers-storage, podman"]
fn layout_repair_link_lets_c_storage_mount_again() {
    require_privileged(&["containers-storage"]);
    let store = PodmanStore::empty();
    let base = cs_create(&store, None);
    let child = cs_create(&store, Some(&base));
    let d = driver(&store);
    let home = d.home().to_owned();
    write(home.join(&base).join("diff/from-base"), "base");

    let link = read(home.join(&base).join("link"));
    let symlink = home.join("l").join(&link);
    fs::remove_file(&symlink).unwrap();
    // Still resolvable through the link files...
    assert_eq!(d.lower_layer_ids(&lid(&child)).unwrap(), vec![base.clone()]);
    // ...and repaired exactly as c/storage would.
    assert!(d.repair_link(&lid(&base)).unwrap());
    assert_eq!(
        fs::read_link(&symlink).unwrap(),
        PathBuf::from(format!("../{base}/diff"))
    );
    assert!(
        !d.repair_link(&lid(&base)).unwrap(),
        "nothing left to repair"
    );

    let merged = PathBuf::from(stdout_line(
        store.containers_storage().args(["mount", &child]),
    ));
    let _cs = CsMount(&store, &child);
    assert_eq!(read(merged.join("from-base")), "base");
    run_ok(store.containers_storage().args(["unmount", &child]));
    assert!(mounts_under(&home.join(&child)).is_empty());
}

/// A layer id for a test.
fn lid(id: &str) -> layerstore::LayerId {
    layerstore::LayerId::parse(id).unwrap()
}
