//! Loading and saving metadata files gives back the same bytes: for the
//! files podman 4.3.1 wrote (captured under `testdata/podman-4.3.1/`) and for
//! hand-written records in the current upstream shape, unknown keys included.

use std::fs;
use std::path::{Path, PathBuf};

use layerstore::config::StoreOptions;
use layerstore::records::{decode_file, encode_file, Container, Image, Layer, MountPoint, Record};
use layerstore::Store;
use layerstore_test_support::testdata;

fn round_trip<R: Record>(path: &Path) {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let records: Vec<R> =
        decode_file(&bytes).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
    let again = encode_file(&records);
    assert!(
        again == bytes,
        "{} changed on rewrite:\n  was: {}\n  now: {}",
        path.display(),
        String::from_utf8_lossy(&bytes),
        String::from_utf8_lossy(&again)
    );
}

/// Every store fixture: (graphroot, runroot).
fn fixture_stores() -> Vec<(PathBuf, PathBuf)> {
    let mut stores = vec![(
        testdata("upstream-1.63/graph"),
        testdata("upstream-1.63/run"),
    )];
    let podman = testdata("podman-4.3.1");
    for entry in fs::read_dir(&podman).expect("testdata/podman-4.3.1 exists") {
        let dir = entry.unwrap().path();
        if dir.join("graphroot").is_dir() {
            stores.push((dir.join("graphroot"), dir.join("runroot")));
        }
    }
    assert!(stores.len() >= 2, "no podman fixture store found");
    stores
}

#[test]
fn every_fixture_file_round_trips_byte_for_byte() {
    let mut files = 0;
    for (g, r) in fixture_stores() {
        for (path, kind) in [
            (g.join("overlay-layers/layers.json"), "layer"),
            (g.join("overlay-layers/volatile-layers.json"), "layer"),
            (g.join("overlay-images/images.json"), "image"),
            (g.join("overlay-containers/containers.json"), "container"),
            (
                g.join("overlay-containers/volatile-containers.json"),
                "container",
            ),
            (r.join("overlay-layers/mountpoints.json"), "mount"),
        ] {
            if !path.exists() {
                continue;
            }
            files += 1;
            match kind {
                "layer" => round_trip::<Layer>(&path),
                "image" => round_trip::<Image>(&path),
                "container" => round_trip::<Container>(&path),
                _ => round_trip::<MountPoint>(&path),
            }
        }
    }
    assert!(files >= 10, "only {files} fixture files found");
}

#[test]
fn upstream_shape_fields_are_read() {
    let bytes = fs::read(testdata("upstream-1.63/graph/overlay-layers/layers.json")).unwrap();
    let layers: Vec<Layer> = decode_file(&bytes).unwrap();
    assert!(layers.iter().any(|l| l.toc_digest.starts_with("sha256:")));
    assert!(layers
        .iter()
        .any(|l| l.extra.contains_key("future-layer-field")));
    assert!(layers.iter().any(|l| l.is_incomplete() && l.is_mapped()));
}

/// Copy a fixture store into a temp dir (files only; no locks are needed).
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn options(g: &Path, r: &Path) -> StoreOptions {
    StoreOptions {
        graph_root: g.to_owned(),
        run_root: r.to_owned(),
        driver: "overlay".into(),
        ..StoreOptions::default()
    }
}

#[test]
fn store_rewrite_keeps_bytes_and_bumps_tokens() {
    for (g0, r0) in fixture_stores() {
        let tmp = tempfile::tempdir().unwrap();
        let (g, r) = (tmp.path().join("g"), tmp.path().join("r"));
        copy_tree(&g0, &g);
        copy_tree(&r0, &r);
        let files = [
            g.join("overlay-layers/layers.json"),
            g.join("overlay-layers/volatile-layers.json"),
            g.join("overlay-images/images.json"),
            g.join("overlay-containers/containers.json"),
            g.join("overlay-containers/volatile-containers.json"),
            r.join("overlay-layers/mountpoints.json"),
        ];
        let before: Vec<Option<Vec<u8>>> = files.iter().map(|f| fs::read(f).ok()).collect();
        let lock = g.join("overlay-images/images.lock");
        let token_before = fs::read(&lock).ok();

        let store = Store::open(options(&g, &r)).unwrap();
        let snap = store.snapshot().unwrap();
        assert!(!snap.layers.is_empty() && !snap.images.is_empty());
        store.modify_layers(|_| Ok(())).unwrap();
        store.modify_mounts(|_| Ok(())).unwrap();
        store.modify_images(|_| Ok(())).unwrap();
        store.modify_containers(|_| Ok(())).unwrap();

        let after: Vec<Option<Vec<u8>>> = files.iter().map(|f| fs::read(f).ok()).collect();
        for ((f, b), a) in files.iter().zip(&before).zip(&after) {
            assert!(b == a, "{} changed on a no-op rewrite", f.display());
        }
        let token_after = fs::read(&lock).unwrap();
        assert_eq!(token_after.len(), 64, "the token is 64 bytes");
        assert_ne!(
            Some(token_after),
            token_before,
            "the token changes on every save"
        );
        assert_eq!(store.snapshot().unwrap(), snap);
    }
}

#[test]
fn a_change_by_another_writer_is_seen() {
    let tmp = tempfile::tempdir().unwrap();
    let (g, r) = (tmp.path().join("g"), tmp.path().join("r"));
    copy_tree(&testdata("upstream-1.63/graph"), &g);
    copy_tree(&testdata("upstream-1.63/run"), &r);
    let reader = Store::open(options(&g, &r)).unwrap();
    let writer = Store::open(options(&g, &r)).unwrap();
    assert_eq!(reader.snapshot().unwrap().images[0].names.len(), 2);
    writer
        .modify_images(|images| {
            images[0].names.push("localhost/added:1".into());
            Ok(())
        })
        .unwrap();
    let snap = reader.snapshot().unwrap();
    assert_eq!(
        snap.image("localhost/added:1").unwrap().id,
        snap.images[0].id
    );
}

#[test]
fn a_failed_change_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (g, r) = (tmp.path().join("g"), tmp.path().join("r"));
    copy_tree(&testdata("upstream-1.63/graph"), &g);
    copy_tree(&testdata("upstream-1.63/run"), &r);
    let store = Store::open(options(&g, &r)).unwrap();
    store.snapshot().unwrap();
    let path = g.join("overlay-layers/layers.json");
    let before = fs::read(&path).unwrap();
    let lock_before = fs::read(g.join("overlay-layers/layers.lock")).unwrap();
    // A duplicate name is refused before anything is written.
    let err = store
        .modify_layers(|layers| {
            let name = "dup".to_string();
            layers[0].names.push(name.clone());
            layers[1].names.push(name);
            Ok(())
        })
        .unwrap_err();
    assert!(err.to_string().contains("\"dup\""), "{err}");
    // A dangling parent too.
    let err = store
        .modify_layers(|layers| {
            layers[0].parent = "gone".into();
            Ok(())
        })
        .unwrap_err();
    assert!(err.to_string().contains("gone"), "{err}");
    assert_eq!(fs::read(&path).unwrap(), before);
    assert_eq!(
        fs::read(g.join("overlay-layers/layers.lock")).unwrap(),
        lock_before
    );
}

#[test]
fn a_file_that_stops_being_json_half_way_gives_none_of_its_records() {
    let tmp = tempfile::tempdir().unwrap();
    let (g, r) = (tmp.path().join("g"), tmp.path().join("r"));
    copy_tree(&testdata("upstream-1.63/graph"), &g);
    copy_tree(&testdata("upstream-1.63/run"), &r);
    let file = g.join("overlay-containers/containers.json");
    let sound: Vec<Container> = decode_file(&fs::read(&file).unwrap()).unwrap();
    assert!(!sound.is_empty());
    // The sound records, a record that does not decode, then the file
    // ends inside an element.
    let mut text = encode_file(&sound);
    let end = text.iter().rposition(|b| *b == b']').unwrap();
    text.truncate(end);
    text.extend_from_slice(br#",{"id": 5},{"id": "abc"#);
    fs::write(&file, &text).unwrap();

    let snap = Store::open(options(&g, &r)).unwrap().snapshot().unwrap();
    // (Only volatile-containers.json's own records are left.)
    assert!(
        snap.containers
            .iter()
            .all(|c| c.volatile && sound.iter().all(|s| s.id != c.id)),
        "{:?}",
        snap.containers
    );
    let about: Vec<String> = snap
        .defects
        .iter()
        .map(|d| d.to_string())
        .filter(|d| d.contains("containers.json"))
        .collect();
    assert_eq!(
        about.len(),
        1,
        "one defect for the file, none per element: {about:?}"
    );
    assert!(!snap.layers.is_empty(), "the other files still count");
}
