//! The ID-mapped template copy we make (`update_layer_id_map`) against the
//! one podman 4.3.1 (containers/storage v1.43) made for the same image and
//! maps, in a real podman store.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use layerstore::config::StoreOptions;
use layerstore::idmap::{root_pair, IdMap, IdMappings};
use layerstore_overlay::layout::OverlayDriver;
use layerstore_test_support::images::tree_listing;
use layerstore_test_support::{require_privileged, PodmanStore};
use serde_json::Value;

fn records(path: &Path) -> Vec<Value> {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

fn by_id<'a>(list: &'a [Value], id: &str) -> &'a Value {
    list.iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no record {id}"))
}

fn id_maps(v: &Value) -> Vec<IdMap> {
    serde_json::from_value(v.clone()).unwrap_or_default()
}

/// `mode owner` of an entry of the layer directory, or "absent".
fn describe(p: &Path) -> String {
    match fs::symlink_metadata(p) {
        Ok(m) => format!("{:o} {}:{}", m.mode(), m.uid(), m.gid()),
        Err(_) => "absent".into(),
    }
}

#[test]
#[ignore = "privileged: builds a podman store, mounts overlay, chowns"]
fn our_template_copy_matches_podmans() {
    require_privileged(&["podman", "containers-storage", "runc", "busybox"]);
    let store = PodmanStore::build();
    let g = &store.graph;
    let layers = records(&g.join("overlay-layers/layers.json"));
    let images = records(&g.join("overlay-images/images.json"));
    let containers = records(&g.join("overlay-containers/containers.json"));
    let ctr = containers
        .iter()
        .find(|c| {
            c["names"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n == "noncontig")
        })
        .expect("container noncontig");
    let ctr_layer = by_id(&layers, ctr["layer"].as_str().unwrap());
    let theirs = ctr_layer["parent"].as_str().unwrap();
    let image = by_id(&images, ctr["image"].as_str().unwrap());
    assert!(
        image["mapped-layers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == theirs),
        "{theirs} is a mapped layer of the image"
    );
    let template = image["layer"].as_str().unwrap();
    let mapped = by_id(&layers, theirs);
    let maps = IdMappings {
        uids: id_maps(&mapped["uidmap"]),
        gids: id_maps(&mapped["gidmap"]),
    };
    assert!(!maps.uids.is_empty() && !maps.gids.is_empty());
    let template_maps = by_id(&layers, template);
    let to_container = IdMappings {
        uids: id_maps(&template_maps["uidmap"]),
        gids: id_maps(&template_maps["gidmap"]),
    };

    let driver = OverlayDriver::new(&StoreOptions {
        graph_root: g.clone(),
        run_root: store.run.clone(),
        driver: "overlay".into(),
        driver_options: vec!["overlay.mountopt=nodev".into()],
        ..Default::default()
    })
    .unwrap();
    let ours = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    driver
        .create_layer(
            &lid(ours),
            Some(&lid(template)),
            root_pair(&maps.uids, &maps.gids).unwrap(),
        )
        .unwrap();
    let report = driver
        .update_layer_id_map(&lid(ours), &to_container, &maps, None)
        .unwrap();

    let home = driver.home();
    let (our_dir, their_dir) = (home.join(ours), home.join(theirs));
    let ours_listing = tree_listing(&our_dir.join("diff1"));
    let theirs_listing = tree_listing(&their_dir.join("diff1"));
    assert_eq!(report.entries as usize, theirs_listing.len());
    assert_eq!(ours_listing, theirs_listing);
    // diff1's own root: c/storage leaves it as created (the template's
    // owner, 0:0; checked with `containers-storage create-container` alone),
    // podman 4.3.1's store shows 200000:200000 because libpod changes it
    // after the copy was made (when the container is set up), not the copy.
    assert_eq!(describe(&our_dir.join("diff1")), "40555 0:0");
    for name in ["", "diff", "diff2", "work", "merged", "empty"] {
        assert_eq!(
            describe(&our_dir.join(name)),
            describe(&their_dir.join(name)),
            "{name}"
        );
    }
    assert_eq!(
        fs::read_dir(our_dir.join("diff")).unwrap().count(),
        0,
        "new diff is empty"
    );
    assert_eq!(
        fs::read_to_string(our_dir.join("lower")).unwrap(),
        fs::read_to_string(their_dir.join("lower")).unwrap(),
        "a driver-level child of the template, like c/storage's"
    );
    assert!(!layerstore_overlay::layout::is_mounted(
        &our_dir.join("merged")
    ));
    driver.remove_layer(&lid(ours)).unwrap();
}

/// A layer id for a test.
fn lid(id: &str) -> layerstore::LayerId {
    layerstore::LayerId::parse(id).unwrap()
}
