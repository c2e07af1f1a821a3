//! The engine API end to end: image + mapping in, a mounted rootfs out,
//! released without a trace; idmapped where the kernel allows it, as on disk
//! with `no_cache` where it does not, and never a copy in either case.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use layerstore::config::{Overrides, StoreOptions};
use layerstore::idmap::parse_id_map;
use layerstore::StoreError;
use layerstore_overlay::engine::{Engine, EngineError, RootfsOptions};
use layerstore_overlay::import::{import_image, NoProgress, Source};
use layerstore_test_support::images::{docker_archive, layer_tar};
use layerstore_test_support::{require_privileged, PodmanStore};

const IMAGE: &str = "
d etc 0755 0:0
f etc/passwd 0644 0:0 root:x:0:0:root:/root:/bin/sh
d home 0755 0:0
d home/bob 0750 1000:1000
";

fn engine(store: &PodmanStore) -> Engine {
    let options = StoreOptions::load(&Overrides {
        root: Some(store.graph.clone()),
        runroot: Some(store.run.clone()),
        storage_driver: Some("overlay".into()),
        ..Overrides::default()
    })
    .unwrap();
    Engine::open(options).unwrap()
}

/// An engine on a fresh store holding `localhost/small`.
fn small_image(store: &PodmanStore) -> Engine {
    let engine = engine(store);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("small.tar");
    docker_archive(&archive, &[layer_tar(IMAGE)], "localhost/small:latest");
    import_image(
        engine.store(),
        engine.driver(),
        &Source::DockerArchive(archive),
        &[],
        &NoProgress,
    )
    .unwrap();
    engine
}

fn owner(path: &Path) -> (u32, u32) {
    let m = fs::symlink_metadata(path).unwrap();
    (m.uid(), m.gid())
}

fn options(no_cache: bool) -> RootfsOptions {
    RootfsOptions {
        name: Some("engine-test".into()),
        uidmap: parse_id_map("0:200000:65536:70000:270000:1").unwrap(),
        gidmap: parse_id_map("0:200000:65537").unwrap(),
        no_cache,
        ..RootfsOptions::default()
    }
}

fn counts(engine: &Engine) -> (usize, usize) {
    let snap = engine.store().snapshot().unwrap();
    (snap.layers.len(), snap.containers.len())
}

#[test]
#[ignore = "privileged: needs root, overlay and idmapped mounts"]
fn a_new_mapping_is_idmapped_not_copied() {
    require_privileged(&[]);
    let store = PodmanStore::empty();
    let engine = small_image(&store);
    let before = counts(&engine);
    let rootfs = engine
        .prepare("localhost/small:latest", &options(false))
        .unwrap();
    // One new layer: the container's own. The host sees the image's files
    // through the idmapped lower at their mapped ids.
    assert_eq!(counts(&engine), (before.0 + 1, before.1 + 1));
    assert_eq!(owner(&rootfs.path.join("etc/passwd")), (200000, 200000));
    assert_eq!(owner(&rootfs.path.join("home/bob")), (201000, 201000));
    assert_eq!(rootfs.container.uidmap.len(), 2);
    engine.release(&rootfs, true).unwrap();
    assert_eq!(counts(&engine), before);
    assert!(!layerstore_overlay::layout::is_mounted(&rootfs.path));
}

#[test]
#[ignore = "privileged: needs root and overlay mounts"]
fn no_cache_without_idmapped_lowers_uses_the_layer_as_it_is() {
    require_privileged(&[]);
    let store = PodmanStore::empty();
    fs::create_dir_all(store.run.join("overlay")).unwrap();
    fs::write(store.run.join("overlay/idmapped-lower-dir-false"), "").unwrap();
    let engine = small_image(&store);
    let before = counts(&engine);
    let rootfs = engine
        .prepare("localhost/small:latest", &options(true))
        .unwrap();
    assert_eq!(counts(&engine), (before.0 + 1, before.1 + 1));
    assert_eq!(owner(&rootfs.path.join("etc/passwd")), (0, 0));
    // The container's root owns the top of its rootfs, so it can write.
    assert_eq!(owner(&rootfs.path), (200000, 200000));
    engine.release(&rootfs, true).unwrap();
    assert_eq!(counts(&engine), before);

    // Mounting such a container without accepting on-disk ownership is
    // refused (the files would look like nobody's to its root).
    let opts = options(true);
    let c = engine
        .store()
        .create_container(
            engine.driver(),
            layerstore::ops::NewContainer {
                image: "localhost/small:latest".into(),
                uidmap: opts.uidmap.clone(),
                gidmap: opts.gidmap.clone(),
                no_cache: true,
                ..Default::default()
            },
        )
        .unwrap();
    let err = engine
        .store()
        .mount_container(engine.driver(), &c.id, false)
        .unwrap_err();
    assert!(matches!(err, StoreError::MappedMount { .. }), "{err}");
    engine
        .store()
        .delete_container(engine.driver(), &c.id, false)
        .unwrap();
    assert_eq!(counts(&engine), before);
}

#[test]
#[ignore = "privileged: needs root"]
fn bad_requests_make_nothing() {
    require_privileged(&[]);
    let store = PodmanStore::empty();
    let engine = small_image(&store);
    let before = counts(&engine);
    let overlapping = RootfsOptions {
        uidmap: parse_id_map("0:200000:65536:100:300000:5").unwrap(),
        gidmap: parse_id_map("0:200000:65536").unwrap(),
        ..RootfsOptions::default()
    };
    let no_root = RootfsOptions {
        uidmap: parse_id_map("1:200000:65536").unwrap(),
        gidmap: parse_id_map("1:200000:65536").unwrap(),
        ..RootfsOptions::default()
    };
    for (image, opts) in [
        ("localhost/small:latest", &overlapping),
        ("localhost/small:latest", &no_root),
        ("localhost/missing:latest", &options(false)),
    ] {
        let err = engine.prepare(image, opts).unwrap_err();
        assert!(
            matches!(
                err,
                EngineError::Store(StoreError::IdMap(_) | StoreError::NotFound { .. })
            ),
            "{image}: {err:?}"
        );
        assert_eq!(counts(&engine), before, "{image}: {err}");
    }
}

#[test]
#[ignore = "privileged: needs root, overlay and idmapped mounts; runs cargo"]
fn the_example_program_runs() {
    require_privileged(&[]);
    let store = PodmanStore::empty();
    let before = counts(&small_image(&store));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = std::process::Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["run", "--quiet", "--example", "prepare_rootfs", "--"])
        .arg(&store.graph)
        .arg(&store.run)
        .args([
            "localhost/small:latest",
            "0:200000:65536:70000:270000:1",
            "0:200000:65537",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("/etc/passwd: 200000:200000 on the host"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("released"), "{text}");
    assert_eq!(counts(&engine(&store)), before);
}
