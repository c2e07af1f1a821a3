//! The store's change protocols (incomplete flag, cleanup on failure,
//! deletion safety rules, mount counts) with a directory-only driver. The
//! same operations run on the real overlay driver, against podman, in
//! `driver-overlay` and `cli` tests; this file reaches the failure paths
//! that real drivers rarely take.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use layerstore::config::StoreOptions;
use layerstore::driver::{Driver, DriverError, MountOptions};
use layerstore::ops::{BigData, LayerDiff, NewContainer, NewImage, NewLayer};
use layerstore::records::{decode_file, Layer};
use layerstore::{ImageId, LayerId, Store, StoreError};

/// Layer dirs under `<G>/fake/<id>`; "mounts" are remembered, not made.
struct FakeDriver {
    home: PathBuf,
    mounted: RefCell<BTreeSet<String>>,
    fail_create: bool,
    fail_mount: bool,
    /// `remove` deletes the layer's diff, then fails as a driver that
    /// removed it only in part.
    remove_partly: bool,
}

impl Driver for FakeDriver {
    fn create(
        &self,
        id: &LayerId,
        _parent: Option<&LayerId>,
        _owner: (u32, u32),
    ) -> Result<(), DriverError> {
        if self.fail_create {
            return Err("disk on fire".into());
        }
        fs::create_dir_all(self.home.join(id.as_str()).join("diff"))?;
        Ok(())
    }
    fn remove(&self, id: &LayerId) -> Result<(), DriverError> {
        if self.remove_partly {
            let _ = fs::remove_dir_all(self.home.join(id.as_str()).join("diff"));
            return Err(Box::new(layerstore::driver::PartlyRemoved {
                id: id.to_string(),
                source: "disk on fire".into(),
            }));
        }
        let _ = fs::remove_dir_all(self.home.join(id.as_str()));
        Ok(())
    }
    fn exists(&self, id: &LayerId) -> bool {
        self.home.join(id.as_str()).exists()
    }
    fn set_top_owner(&self, _id: &LayerId, _owner: (u32, u32)) -> Result<(), DriverError> {
        Ok(())
    }
    fn mount(&self, id: &LayerId, _o: &MountOptions) -> Result<PathBuf, DriverError> {
        if self.fail_mount {
            return Err("mount on fire".into());
        }
        self.mounted.borrow_mut().insert(id.to_string());
        Ok(self.mount_point(id))
    }
    fn unmount(&self, id: &LayerId) -> Result<(), DriverError> {
        self.mounted.borrow_mut().remove(id.as_str());
        Ok(())
    }
    fn mount_point(&self, id: &LayerId) -> PathBuf {
        self.home.join(id.as_str()).join("merged")
    }
    fn is_mounted(&self, id: &LayerId) -> bool {
        self.mounted.borrow().contains(id.as_str())
    }

    fn mounted_root(
        &self,
        _id: &LayerId,
    ) -> Result<Option<layerstore::driver::FileIdentity>, DriverError> {
        Ok(None)
    }

    /// No merging: the fake's layers are plain `diff` directories that
    /// these tests never fill with whiteouts, so the topmost layer that has
    /// something at `path` (not following a symlink there) decides.
    fn read_stack_file(
        &self,
        chain: &[LayerId],
        path: &str,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, DriverError> {
        for id in chain {
            let file = self.home.join(id.as_str()).join("diff").join(path);
            match fs::symlink_metadata(&file) {
                Ok(meta) if meta.is_file() && meta.len() > limit => {
                    return Err(format!("{} holds more than {limit} bytes", file.display()).into())
                }
                Ok(meta) if meta.is_file() => return Ok(Some(fs::read(&file)?)),
                Ok(_) => return Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }
}

fn lid(id: &str) -> LayerId {
    LayerId::parse(id).unwrap()
}

fn setup() -> (tempfile::TempDir, Store, FakeDriver) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreOptions {
        graph_root: dir.path().join("g"),
        run_root: dir.path().join("r"),
        driver: "overlay".into(),
        ..StoreOptions::default()
    })
    .unwrap();
    let driver = FakeDriver {
        home: dir.path().join("g/fake"),
        mounted: RefCell::new(BTreeSet::new()),
        fail_create: false,
        fail_mount: false,
        remove_partly: false,
    };
    (dir, store, driver)
}

fn on_disk(store: &Store) -> Vec<Layer> {
    decode_file(&fs::read(store.layers_file()).unwrap()).unwrap()
}

#[test]
fn a_layer_is_recorded_incomplete_until_populated() {
    let (_dir, store, driver) = setup();
    let layer = store
        .create_layer(&driver, NewLayer::default(), |l, id| {
            // While content is written, the saved record says incomplete.
            let saved = on_disk(&store);
            assert!(saved.iter().any(|s| s.id == l.id && s.is_incomplete()));
            fs::write(store.layer_tar_split_path(id), b"x").unwrap();
            Ok(Some(LayerDiff {
                diff_digest: "sha256:abc".into(),
                diff_size: 3,
                uidset: vec![0],
                ..LayerDiff::default()
            }))
        })
        .unwrap();
    let saved = on_disk(&store);
    assert_eq!(saved.len(), 1);
    assert!(!saved[0].is_incomplete());
    assert_eq!(saved[0].diff_digest, "sha256:abc");
    assert_eq!(saved[0].id, layer.id);
    assert!(driver.exists(&lid(&layer.id)));
}

#[test]
fn a_failed_populate_leaves_nothing() {
    let (_dir, store, driver) = setup();
    let mut made = String::new();
    let err = store
        .create_layer(&driver, NewLayer::default(), |l, id| {
            made = l.id.clone();
            fs::write(store.layer_tar_split_path(id), b"partial").unwrap();
            Err(StoreError::Content {
                id: l.id.clone(),
                source: "hostile tar".into(),
            })
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::Content { .. }));
    assert!(on_disk(&store).is_empty());
    assert!(!driver.exists(&lid(&made)));
    assert!(!store.layer_tar_split_path(&lid(&made)).exists());
}

#[test]
fn a_failed_driver_create_leaves_nothing() {
    let (_dir, store, mut driver) = setup();
    driver.fail_create = true;
    let err = store
        .create_layer(&driver, NewLayer::default(), |_, _| Ok(None))
        .unwrap_err();
    assert!(err.to_string().starts_with("creating layer"), "{err}");
    assert!(on_disk(&store).is_empty());
}

#[test]
fn duplicate_ids_names_and_missing_parents_are_refused() {
    let (_dir, store, driver) = setup();
    let named = NewLayer {
        id: Some("a".into()),
        names: vec!["n".into()],
        ..NewLayer::default()
    };
    store
        .create_layer(&driver, named.clone(), |_, _| Ok(None))
        .unwrap();
    let err = store
        .create_layer(&driver, named, |_, _| Ok(None))
        .unwrap_err();
    assert!(matches!(err, StoreError::Exists { .. }), "{err}");
    let err = store
        .create_layer(
            &driver,
            NewLayer {
                names: vec!["n".into()],
                ..NewLayer::default()
            },
            |_, _| Ok(None),
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::NameInUse { .. }), "{err}");
    let err = store
        .create_layer(
            &driver,
            NewLayer {
                parent: Some("nope".into()),
                ..NewLayer::default()
            },
            |_, _| Ok(None),
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    let err = store
        .create_layer(
            &driver,
            NewLayer {
                id: Some("../escape".into()),
                ..NewLayer::default()
            },
            |_, _| Ok(None),
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidId { .. }), "{err}");
    assert_eq!(on_disk(&store).len(), 1);
}

/// base <- top, image "img" on top with a manifest, container "c" on it.
fn populated() -> (tempfile::TempDir, Store, FakeDriver, String, String) {
    let (dir, store, driver) = setup();
    let base = store
        .create_layer(&driver, NewLayer::default(), |_, _| Ok(None))
        .unwrap();
    let top = store
        .create_layer(
            &driver,
            NewLayer {
                parent: Some(base.id.clone()),
                ..NewLayer::default()
            },
            |_, _| Ok(None),
        )
        .unwrap();
    store
        .create_image(NewImage {
            id: "img".into(),
            names: vec!["localhost/x:1".into()],
            top_layer: top.id.clone(),
            big_data: vec![BigData {
                key: "manifest".into(),
                data: b"{}".to_vec(),
                digest: None,
            }],
            ..NewImage::default()
        })
        .unwrap();
    (dir, store, driver, base.id, top.id)
}

#[test]
fn images_and_containers_keep_their_layers() {
    let (_dir, store, driver, base, top) = populated();
    let err = store.delete_layer(&driver, &top).unwrap_err();
    assert!(err.to_string().contains("top layer of image img"), "{err}");
    let err = store.delete_layer(&driver, &base).unwrap_err();
    assert!(err.to_string().contains("stacked on it"), "{err}");
    let c = store
        .create_container(
            &driver,
            NewContainer {
                names: vec!["web".into()],
                image: "localhost/x:1".into(),
                ..NewContainer::default()
            },
        )
        .unwrap();
    let snap = store.snapshot().unwrap();
    assert_eq!(snap.layer(&c.layer).unwrap().parent, top);
    assert_eq!(c.flags["MountLabel"], "");
    let err = store.delete_image(&driver, "img").unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("container {} uses it", c.id)),
        "{err}"
    );
    let err = store
        .create_container(
            &driver,
            NewContainer {
                names: vec!["web".into()],
                image: "img".into(),
                ..NewContainer::default()
            },
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::NameInUse { .. }), "{err}");
    store.delete_container(&driver, "web", false).unwrap();
    assert!(!driver.exists(&lid(&c.layer)));
    let removed = store.delete_image(&driver, "img").unwrap();
    assert_eq!(removed, [top, base]);
    let snap = store.snapshot().unwrap();
    assert!(snap.layers.is_empty() && snap.images.is_empty() && snap.containers.is_empty());
    assert!(!store.image_dir(&ImageId::parse("img").unwrap()).exists());
}

#[test]
fn mounts_are_counted() {
    let (_dir, store, driver, _base, top) = populated();
    let opts = MountOptions::default();
    let p1 = store.mount_layer(&driver, &top, &opts).unwrap();
    let p2 = store.mount_layer(&driver, &top, &opts).unwrap();
    assert_eq!(p1, p2);
    assert_eq!(store.snapshot().unwrap().mount_of(&top).unwrap().count, 2);
    let err = store.delete_image(&driver, "img").unwrap_err();
    assert!(err.to_string().contains("is mounted"), "{err}");
    assert_eq!(store.unmount_layer(&driver, &top, false).unwrap(), 1);
    assert!(driver.is_mounted(&lid(&top)));
    assert_eq!(store.unmount_layer(&driver, &top, false).unwrap(), 0);
    assert!(!driver.is_mounted(&lid(&top)));
    assert!(matches!(
        store.unmount_layer(&driver, &top, false),
        Err(StoreError::NotMounted { .. })
    ));
    // A stale record (not really mounted) is mounted again, count 1.
    store.mount_layer(&driver, &top, &opts).unwrap();
    driver.unmount(&lid(&top)).unwrap();
    store.mount_layer(&driver, &top, &opts).unwrap();
    assert_eq!(store.snapshot().unwrap().mount_of(&top).unwrap().count, 1);
}

/// A run's start and end each take every lock once: create and mount in
/// one section, unmount and delete in one. A mount that fails deletes the
/// container before the locks are released.
#[test]
fn a_run_takes_each_lock_once_at_start_and_once_at_end() {
    use layerstore::lockfile::locks_taken_on_this_thread as taken;
    let (_dir, store, mut driver, _base, top) = populated();
    let new = || NewContainer {
        names: vec!["run".into()],
        ..NewContainer::default()
    };
    // Every lock file there, as on any store podman has used (a missing
    // one makes a writer look at the records first, creating nothing).
    store
        .mount_layer(&driver, &top, &MountOptions::default())
        .unwrap();
    store.unmount_layer(&driver, &top, false).unwrap();
    let warm = store.create_container(&driver, new()).unwrap();
    store.delete_container(&driver, &warm.id, false).unwrap();
    let before = taken();
    let (c, path, _) = store
        .create_and_mount_container(
            &driver,
            new(),
            |images, new| {
                new.image = layerstore::snapshot::lookup(images, "localhost/x:1")?
                    .id
                    .clone();
                Ok(())
            },
            false,
        )
        .unwrap();
    // userns (shared), storage, layers, mountpoints, images, containers.
    assert_eq!(taken() - before, 6);
    assert_eq!(path, driver.mount_point(&lid(&c.layer)));
    assert!(driver.is_mounted(&lid(&c.layer)));
    let snap = store.snapshot().unwrap();
    assert_eq!(snap.mount_of(&c.layer).unwrap().count, 1);
    assert_eq!(snap.layer(&c.layer).unwrap().parent, top);
    assert_eq!(snap.container("run").unwrap().image, "img");

    let before = taken();
    store.unmount_and_delete_container(&driver, "run").unwrap();
    assert_eq!(taken() - before, 6);
    assert!(!driver.is_mounted(&lid(&c.layer)) && !driver.exists(&lid(&c.layer)));
    let snap = store.snapshot().unwrap();
    assert!(snap.containers.is_empty() && snap.mounts.is_empty());
    assert_eq!(snap.layers.len(), 2);

    // With maps: userns exclusive instead of shared, still once each.
    let before = taken();
    let (mapped, _, _) = store
        .create_and_mount_container(
            &driver,
            NewContainer {
                image: "img".into(),
                uidmap: vec![layerstore::idmap::IdMap {
                    container_id: 0,
                    host_id: 100_000,
                    size: 65536,
                }],
                gidmap: vec![layerstore::idmap::IdMap {
                    container_id: 0,
                    host_id: 100_000,
                    size: 65536,
                }],
                no_cache: true,
                ..new()
            },
            |_, _| Ok(()),
            true,
        )
        .unwrap();
    assert_eq!(taken() - before, 6);
    store
        .unmount_and_delete_container(&driver, &mapped.id)
        .unwrap();

    // resolve failing: nothing is created.
    let err = store
        .create_and_mount_container(
            &driver,
            new(),
            |images, _| layerstore::snapshot::lookup(images, "nosuch").map(|_| ()),
            false,
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    assert_eq!(store.snapshot().unwrap().layers.len(), 2);

    // A failed mount: the container and its layer are gone again.
    driver.fail_mount = true;
    let err = store
        .create_and_mount_container(
            &driver,
            NewContainer {
                image: "img".into(),
                ..new()
            },
            |_, _| Ok(()),
            false,
        )
        .unwrap_err();
    let chain = layerstore::error_chain(&err);
    assert!(chain.contains("mount on fire"), "{chain}");
    let snap = store.snapshot().unwrap();
    assert!(snap.containers.is_empty() && snap.mounts.is_empty());
    assert_eq!(snap.layers.len(), 2);
    assert_eq!(fs::read_dir(&driver.home).unwrap().count(), 2);
}

/// A store whose records cannot be trusted, without lock files (a bare
/// one): the run's writers refuse it before creating anything.
#[test]
fn run_writers_refuse_an_untrusted_store_without_creating_lock_files() {
    let (dir, store, driver) = setup();
    let layers = store.layers_file().to_owned();
    fs::create_dir_all(layers.parent().unwrap()).unwrap();
    fs::write(&layers, b"{not json").unwrap();
    let listing = |d: &std::path::Path| -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = walk(d);
        out.sort();
        out
    };
    fn walk(d: &std::path::Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in fs::read_dir(d).into_iter().flatten().flatten() {
            out.push(e.path());
            if e.file_type().unwrap().is_dir() {
                out.extend(walk(&e.path()));
            }
        }
        out
    }
    let before = listing(dir.path());
    let err = store
        .create_and_mount_container(&driver, NewContainer::default(), |_, _| Ok(()), false)
        .unwrap_err();
    assert!(matches!(err, StoreError::Inconsistent { .. }), "{err}");
    let err = store
        .unmount_and_delete_container(&driver, "x")
        .unwrap_err();
    assert!(matches!(err, StoreError::Inconsistent { .. }), "{err}");
    let err = store.mount_container(&driver, "x", true).unwrap_err();
    assert!(matches!(err, StoreError::Inconsistent { .. }), "{err}");
    let err = store.delete_container(&driver, "x", true).unwrap_err();
    assert!(matches!(err, StoreError::Inconsistent { .. }), "{err}");
    assert_eq!(listing(dir.path()), before);
}

#[test]
fn auto_userns_containers_get_disjoint_maps_and_failures_write_nothing() {
    use layerstore::userns::{AutoUserNs, Available, IdSet};
    let (_dir, store, driver, _base, _top) = populated();
    let available = Available {
        uids: IdSet::span(300_000, 302_500),
        gids: IdSet::span(300_000, 310_000),
        owner: "containers".into(),
        subuid: "/etc/subuid".into(),
        subgid: "/etc/subgid".into(),
        rootless: false,
    };
    let auto = |size: u32| NewContainer {
        image: "img".into(),
        no_cache: true,
        auto_userns: Some((
            AutoUserNs {
                size: Some(size),
                ..AutoUserNs::default()
            },
            available.clone(),
        )),
        ..NewContainer::default()
    };
    let a = store.create_container(&driver, auto(1000)).unwrap();
    let b = store.create_container(&driver, auto(1000)).unwrap();
    let text = |m: &[layerstore::idmap::IdMap]| layerstore::idmap::format_id_map(m);
    assert_eq!(
        (text(&a.uidmap), text(&a.gidmap)),
        ("0:300000:1000".into(), "0:300000:1000".into())
    );
    assert_eq!(text(&b.uidmap), "0:301000:1000");
    let records = || fs::read(store.containers_file()).unwrap();
    let before = (records(), fs::read(store.layers_file()).unwrap());
    // 500 uids left: exhausted; maps and auto together: refused.
    let err = store.create_container(&driver, auto(1000)).unwrap_err();
    assert!(err.to_string().contains("needs 1000 uids"), "{err}");
    let mut both = auto(10);
    both.uidmap = vec![layerstore::idmap::IdMap {
        container_id: 0,
        host_id: 1,
        size: 1,
    }];
    let err = store.create_container(&driver, both).unwrap_err();
    assert!(err.to_string().contains("cannot be combined"), "{err}");
    assert_eq!(before, (records(), fs::read(store.layers_file()).unwrap()));
    // A removed container's ids are free again.
    store.delete_container(&driver, &a.id, false).unwrap();
    let c = store.create_container(&driver, auto(1000)).unwrap();
    assert_eq!(text(&c.uidmap), "0:300000:1000");
}

#[test]
fn a_layer_removed_only_in_part_stays_incomplete_and_the_others_get_their_flags_back() {
    let (_dir, store, mut driver) = setup();
    let plain = store
        .create_layer(&driver, NewLayer::default(), |_, _| Ok(None))
        .unwrap();
    driver.remove_partly = true;
    let err = store.delete_layer(&driver, &plain.id).unwrap_err();
    assert!(layerstore::driver::is_partly_removed(&err), "{err}");
    // Still recorded, but flagged incomplete: podman and gc remove it,
    // nothing mounts a layer whose files are partly gone.
    let saved = on_disk(&store);
    let layer = saved.iter().find(|l| l.id == plain.id).unwrap();
    assert!(layer.is_incomplete(), "{layer:?}");
    driver.remove_partly = false;
    store.delete_layer(&driver, &plain.id).unwrap();
    assert!(on_disk(&store).is_empty());
}
