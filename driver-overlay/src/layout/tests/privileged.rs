//! Privileged unit tests: each mount method (`mount(2)` with every
//! directory named `/proc/self/fd/<n>`, the new mount API with
//! `lowerdir+`) forced on a chain whose absolute lowerdir would not fit in
//! a page.

use std::fs;

use layerstore::config::StoreOptions;

use super::read;
use crate::layout::mount::Method;
use crate::layout::{is_mounted, MountRequest, OverlayDriver};

/// A chain of `n` layers with 64-hex ids made by `create_layer`, a file
/// `f` in every diff naming its layer and a file `only<i>` in each;
/// returns the ids, bottom first.
fn long_chain(d: &OverlayDriver, n: usize) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for i in 0..n {
        let id = format!("{:064x}", 0xabcdef_u64 * 1_000_003 + i as u64);
        d.create_layer(&lid(&id), ids.last().map(|p| lid(p)).as_ref(), (0, 0))
            .unwrap();
        let diff = d.diff_path(&lid(&id));
        fs::write(diff.join("f"), &id).unwrap();
        fs::write(diff.join(format!("only{i}")), "").unwrap();
        ids.push(id);
    }
    ids
}

/// Unmounts on drop, so a failed assertion leaves nothing mounted.
struct Unmount<'a>(&'a OverlayDriver, &'a str);

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        let _ = self.0.unmount(&lid(self.1));
    }
}

fn mount_long_chain_with(method: Method, n: usize) {
    layerstore_test_support::require_privileged(&[]);
    let store = layerstore_test_support::PodmanStore::empty();
    let opts = StoreOptions {
        graph_root: store.graph.clone(),
        run_root: store.run.clone(),
        driver: "overlay".into(),
        ..Default::default()
    };
    let d = OverlayDriver::new(&opts).unwrap();
    let ids = long_chain(&d, n);
    let top = ids.last().unwrap();
    let merged = d
        .mount_with(&lid(top), &MountRequest::default(), Some(method), false)
        .unwrap();
    let _guard = Unmount(&d, top);
    assert!(is_mounted(&merged));
    assert_eq!(read(merged.join("f")), *top);
    for i in 0..n {
        assert!(merged.join(format!("only{i}")).exists(), "only{i}");
    }
    fs::write(merged.join("new"), "x").unwrap();
    assert!(d.diff_path(&lid(top)).join("new").exists());
    d.unmount(&lid(top)).unwrap();
    assert!(!is_mounted(&merged));
    assert!(!merged.exists());
}

#[test]
#[ignore = "privileged: needs root"]
fn privileged_mount_with_fsconfig_lowerdir_plus() {
    mount_long_chain_with(Method::FsConfig, 60);
}

#[test]
#[ignore = "privileged: needs root"]
fn privileged_mount_data_names_a_long_chain_by_descriptor() {
    // 60 absolute lowerdirs do not fit in a page; 60 /proc/self/fd names do.
    mount_long_chain_with(Method::Data, 60);
}

/// Each method with an idmapped mount: a container layer on a chain of `n`,
/// lowers through the detached idmapped clone of the home.
fn idmapped_chain_with(method: Method, n: usize, attach: bool) {
    use std::os::unix::fs::MetadataExt;

    use layerstore::idmap::IdMap;

    layerstore_test_support::require_privileged(&[]);
    let store = layerstore_test_support::PodmanStore::empty();
    let opts = StoreOptions {
        graph_root: store.graph.clone(),
        run_root: store.run.clone(),
        driver: "overlay".into(),
        ..Default::default()
    };
    let d = OverlayDriver::new(&opts).unwrap();
    let ids = long_chain(&d, n);
    let ctr = format!("{:064x}", 0xc7c7_u64);
    d.create_layer(&lid(&ctr), ids.last().map(|p| lid(p)).as_ref(), (0, 0))
        .unwrap();
    let map = |host_id| {
        vec![IdMap {
            container_id: 0,
            host_id,
            size: 65536,
        }]
    };
    let req = MountRequest {
        uidmap: map(200_000),
        gidmap: map(300_000),
        ..Default::default()
    };
    let merged = d
        .mount_with(&lid(&ctr), &req, Some(method), attach)
        .unwrap();
    let _guard = Unmount(&d, &ctr);
    for i in 0..n {
        let meta = fs::metadata(merged.join(format!("only{i}"))).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (200_000, 300_000), "only{i}");
    }
    d.unmount(&lid(&ctr)).unwrap();
    assert!(!merged.exists());
    let layer = store.graph.join("overlay").join(&ctr);
    assert!(!layer.join("mapped").exists(), "no mapped/ dir left");
}

#[test]
#[ignore = "privileged: needs root"]
fn privileged_idmapped_mount_with_mount_data() {
    idmapped_chain_with(Method::Data, 5, false);
}

#[test]
#[ignore = "privileged: needs root"]
fn privileged_idmapped_mount_with_fsconfig_lowerdir_plus() {
    idmapped_chain_with(Method::FsConfig, 60, false);
}

#[test]
#[ignore = "privileged: needs root"]
fn privileged_idmapped_mount_data_names_a_long_chain_by_descriptor() {
    idmapped_chain_with(Method::Data, 60, false);
}

/// The fallback for kernels whose overlayfs refuses detached lowers
/// (before 6.15): the clone attached on `<id>/mapped/0` while mounting.
#[test]
#[ignore = "privileged: needs root"]
fn privileged_idmapped_mount_attached_fallback() {
    idmapped_chain_with(Method::FsConfig, 60, true);
    idmapped_chain_with(Method::Data, 5, true);
}

/// A layer id for a test.
fn lid(id: &str) -> layerstore::LayerId {
    layerstore::LayerId::parse(id).unwrap()
}

/// A store on a tmpfs of 64 inodes holding layer `n` (its id).
fn layer_on_a_small_tmpfs(n: u64) -> (layerstore_test_support::PodmanStore, OverlayDriver, String) {
    let store = layerstore_test_support::PodmanStore::on_tmpfs("16m,nr_inodes=64");
    let opts = StoreOptions {
        graph_root: store.graph.clone(),
        run_root: store.run.clone(),
        driver: "overlay".into(),
        ..Default::default()
    };
    fs::create_dir_all(&store.graph).unwrap();
    let d = OverlayDriver::new(&opts).unwrap();
    let id = format!("{n:064x}");
    d.create_layer(&lid(&id), None, (0, 0)).unwrap();
    (store, d, id)
}

#[test]
#[ignore = "privileged: mounts a tmpfs with few inodes"]
fn a_layer_is_removed_in_place_when_the_filesystem_is_too_full_for_the_trash() {
    layerstore_test_support::require_privileged(&[]);
    // A filesystem with no inode to spare: the trash cannot be made.
    let (store, d, id) = layer_on_a_small_tmpfs(77);
    let diff = d.diff_path(&lid(&id));
    let mut n = 0;
    while fs::write(diff.join(format!("f{n}")), "x").is_ok() {
        n += 1;
    }
    assert!(n > 0);
    assert!(
        fs::create_dir(store.graph.join("probe")).is_err(),
        "not full"
    );
    d.remove_layer(&lid(&id)).unwrap();
    assert!(!d.layer_exists(&lid(&id)));
    // The space is back.
    fs::create_dir(store.graph.join("probe")).unwrap();
}

#[test]
#[ignore = "privileged: mounts a tmpfs with few inodes, sets an immutable file"]
fn an_in_place_removal_that_stops_half_way_says_so_and_leaves_no_trash() {
    layerstore_test_support::require_privileged(&["chattr"]);
    let (_store, d, id) = layer_on_a_small_tmpfs(78);
    let diff = d.diff_path(&lid(&id));
    fs::create_dir(diff.join("usr")).unwrap();
    let keep = diff.join("usr/keep");
    fs::write(&keep, "x").unwrap();
    let chattr = |flag: &str| {
        layerstore_test_support::run_ok(std::process::Command::new("chattr").arg(flag).arg(&keep))
    };
    chattr("+i");
    struct Mutable<'a>(&'a dyn Fn(&str) -> std::process::Output);
    impl Drop for Mutable<'_> {
        fn drop(&mut self) {
            (self.0)("-i");
        }
    }
    let _mutable = Mutable(&chattr);
    let mut n = 0;
    while fs::write(diff.join(format!("f{n}")), "x").is_ok() {
        n += 1;
    }
    // Through the trait, as the store calls it: a partial removal, said so.
    let e = layerstore::driver::Driver::remove(&d, &lid(&id)).unwrap_err();
    assert!(layerstore::driver::is_partly_removed(e.as_ref()), "{e}");
    assert!(keep.exists());
    assert!(
        !d.home().join(".layerstore-trash").exists(),
        "a trash without its link file stayed"
    );
}
