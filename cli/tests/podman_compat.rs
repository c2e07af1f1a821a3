//! layerstore against a store the real podman 4.3.1 built (images imported
//! from local tarballs, a multi-layer build, containers with and without
//! maps, mapped template layers, a mounted container): its listings agree
//! with `containers-storage` and `podman`, and rewriting every metadata file
//! changes no byte and nothing podman sees.

use std::collections::BTreeSet;
use std::fs;

use layerstore::config::StoreOptions;
use layerstore::Store;
use layerstore_test_support::{require_privileged, run_ok, PodmanStore};
use serde_json::Value;

const LAYERSTORE: &str = env!("CARGO_BIN_EXE_layerstore");
const TOOLS: &[&str] = &["podman", "containers-storage", "runc", "busybox"];

fn layerstore(store: &PodmanStore, args: &[&str]) -> Vec<u8> {
    run_ok(store.layerstore(LAYERSTORE).args(args)).stdout
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("valid JSON")
}

/// podman's `ps` JSON without its relative-time texts ("2 seconds ago").
fn absolute(mut v: Value) -> Value {
    for c in v.as_array_mut().expect("an array") {
        let c = c.as_object_mut().expect("an object");
        c.remove("CreatedAt");
        c.remove("Status");
    }
    v
}

fn ids(v: &Value, key: &str) -> BTreeSet<String> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|r| r[key].as_str().expect("an id").to_owned())
        .collect()
}

#[test]
#[ignore = "privileged: needs root, podman, containers-storage and runc"]
fn listings_agree_with_containers_storage_and_podman() {
    require_privileged(TOOLS);
    let store = PodmanStore::build();
    for what in ["layers", "images", "containers"] {
        let ours = layerstore(&store, &[what, "--json"]);
        let theirs = run_ok(store.containers_storage().args([what, "--json"])).stdout;
        // Same records, same keys, same values: containers-storage prints the
        // Go structs, we print the records.
        assert_eq!(json(&ours), json(&theirs), "{what} --json differs");
        assert!(
            !json(&ours).as_array().unwrap().is_empty(),
            "no {what} in the fixture store"
        );
        // The table has a header and one row per record.
        let table = layerstore(&store, &[what]);
        let rows = String::from_utf8(table).unwrap().lines().count();
        assert_eq!(
            rows,
            json(&ours).as_array().unwrap().len() + 1,
            "{what} table rows"
        );
    }

    // The fixture has what the mapping work is about.
    let layers = json(&layerstore(&store, &["layers", "--json"]));
    assert!(layers
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l.get("uidmap").is_some()));
    let images = json(&layerstore(&store, &["images", "--json"]));
    assert!(images
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i.get("mapped-layers").is_some()));

    // podman sees the same images, with the same names.
    let podman = json(&run_ok(store.podman().args(["images", "--all", "--format", "json"])).stdout);
    assert_eq!(ids(&podman, "Id"), ids(&images, "id"));
    let podman_names: BTreeSet<String> = podman
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["Names"].as_array().cloned().unwrap_or_default())
        .map(|n| n.as_str().unwrap().to_owned())
        .collect();
    let our_names: BTreeSet<String> = images
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["names"].as_array().cloned().unwrap_or_default())
        .map(|n| n.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(podman_names, our_names);

    // And the same containers (podman ps --external lists storage's records).
    let ps = json(
        &run_ok(
            store
                .podman()
                .args(["ps", "-a", "--external", "--format", "json"]),
        )
        .stdout,
    );
    let containers = json(&layerstore(&store, &["containers", "--json"]));
    assert_eq!(ids(&ps, "Id"), ids(&containers, "id"));

    // info counts what the listings list.
    let info = json(&layerstore(&store, &["info", "--json"]));
    assert_eq!(info["layers"], layers.as_array().unwrap().len());
    assert_eq!(info["images"], images.as_array().unwrap().len());
    assert!(info["mounted_layers"].as_u64().unwrap() >= 1);
}

#[test]
#[ignore = "privileged: needs root, podman, containers-storage and runc"]
fn rewriting_a_live_podman_store_changes_no_byte() {
    require_privileged(TOOLS);
    let store = PodmanStore::build();
    let files = [
        store.graph.join("overlay-layers/layers.json"),
        store.graph.join("overlay-images/images.json"),
        store.graph.join("overlay-containers/containers.json"),
        store.run.join("overlay-layers/mountpoints.json"),
    ];
    let before: Vec<Vec<u8>> = files.iter().map(|f| fs::read(f).unwrap()).collect();
    let podman_before = run_ok(
        store
            .podman()
            .args(["ps", "-a", "--external", "--format", "json"]),
    )
    .stdout;
    let cs_before = run_ok(store.containers_storage().args(["layers", "--json"])).stdout;

    let ls = Store::open(StoreOptions {
        graph_root: store.graph.clone(),
        run_root: store.run.clone(),
        driver: "overlay".into(),
        ..StoreOptions::default()
    })
    .unwrap();
    let snap = ls.snapshot().unwrap();
    ls.modify_layers(|_| Ok(())).unwrap();
    ls.modify_mounts(|_| Ok(())).unwrap();
    ls.modify_images(|_| Ok(())).unwrap();
    ls.modify_containers(|_| Ok(())).unwrap();

    for (f, b) in files.iter().zip(&before) {
        assert!(
            &fs::read(f).unwrap() == b,
            "{} changed on rewrite",
            f.display()
        );
    }
    assert_eq!(ls.snapshot().unwrap(), snap);
    // podman and containers-storage reload (new tokens) and see the same store.
    let podman_after = run_ok(
        store
            .podman()
            .args(["ps", "-a", "--external", "--format", "json"]),
    )
    .stdout;
    assert_eq!(
        absolute(json(&podman_after)),
        absolute(json(&podman_before))
    );
    let cs_after = run_ok(store.containers_storage().args(["layers", "--json"])).stdout;
    assert_eq!(cs_after, cs_before);
    // podman still runs a container from the rewritten store.
    let out = run_ok(store.podman().args([
        "run",
        "--rm",
        "--pull=never",
        "localhost/base:latest",
        "cat",
        "/home/user/hello.txt",
    ]));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello from user 1000"
    );
}
