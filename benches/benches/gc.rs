//! gc speed: the pure plan over 10,000 layer records, a dry run that reads
//! a 10,000-layer store from disk, and a real gc of a store holding 1,000
//! mapped templates. Run with `cargo bench -p layerstore-benches --bench gc`
//! (the on-disk benches need root: layer directories are chowned).

// criterion_group! and criterion_main! generate undocumented items.
#![allow(missing_docs)]

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use layerstore::config::StoreOptions;
use layerstore::gc::{plan, Facts, GcOptions};
use layerstore::idmap::IdMap;
use layerstore::ops::NewLayer;
use layerstore::records::{encode_file, Image, Layer};
use layerstore::{Snapshot, Store};
use layerstore_overlay::layout::OverlayDriver;

const IMAGES: usize = 100;
/// Per image: a base and a top layer, and this many mapped copies; 100
/// images make 10,000 layer records.
const MAPPED_PER_IMAGE: usize = 98;

fn id(kind: u8, image: usize, n: usize) -> String {
    format!("{kind:02x}{image:030x}{n:032x}")
}

fn maps(n: usize) -> Vec<IdMap> {
    vec![IdMap {
        container_id: 0,
        host_id: 100_000 + n as u32 * 65_536,
        size: 65_536,
    }]
}

/// 100 images of 2 layers, each with 98 mapped copies: 10,000 layers.
/// Every tenth copy has a container layer stacked on it (kept).
fn snapshot() -> Snapshot {
    let mut snap = Snapshot::default();
    for i in 0..IMAGES {
        let base = id(1, i, 0);
        let top = id(2, i, 0);
        let digest = format!("sha256:{top}");
        snap.layers.make_mut().push(Layer {
            id: base.clone(),
            ..Layer::default()
        });
        snap.layers.make_mut().push(Layer {
            id: top.clone(),
            parent: base.clone(),
            diff_digest: digest.clone(),
            ..Layer::default()
        });
        let mut image = Image {
            id: id(9, i, 0),
            top_layer: top.clone(),
            ..Image::default()
        };
        for n in 0..MAPPED_PER_IMAGE {
            let m = id(3, i, n);
            snap.layers.make_mut().push(Layer {
                id: m.clone(),
                parent: base.clone(),
                diff_digest: digest.clone(),
                uidmap: maps(n),
                gidmap: maps(n),
                ..Layer::default()
            });
            image.mapped_layers.push(m);
        }
        snap.images.make_mut().push(image);
    }
    snap
}

fn facts(snap: &Snapshot) -> Facts {
    let now = std::time::SystemTime::now();
    Facts {
        now,
        all_layer_dirs: snap.layers.iter().map(|l| l.id.clone()).collect(),
        ..Facts::default()
    }
}

/// Write `snap`'s records under `root` as a store with a layer directory,
/// `link` file and `l/` link per layer (what a dry run looks at).
fn write_store(root: &Path, snap: &Snapshot) -> Store {
    let g = root.join("graph");
    for d in [
        "overlay-layers",
        "overlay-images",
        "overlay-containers",
        "overlay/l",
    ] {
        fs::create_dir_all(g.join(d)).unwrap();
    }
    fs::create_dir_all(root.join("run/overlay-layers")).unwrap();
    fs::write(
        g.join("overlay-layers/layers.json"),
        encode_file(&snap.layers),
    )
    .unwrap();
    fs::write(
        g.join("overlay-images/images.json"),
        encode_file(&snap.images),
    )
    .unwrap();
    for (n, l) in snap.layers.iter().enumerate() {
        let dir = g.join("overlay").join(&l.id);
        fs::create_dir_all(dir.join("diff")).unwrap();
        let link = format!("{n:026}");
        fs::write(dir.join("link"), &link).unwrap();
        std::os::unix::fs::symlink(format!("../{}/diff", l.id), g.join("overlay/l").join(&link))
            .unwrap();
    }
    open(root)
}

fn open(root: &Path) -> Store {
    let options = StoreOptions {
        graph_root: root.join("graph"),
        run_root: root.join("run"),
        driver: "overlay".into(),
        ..StoreOptions::default()
    };
    Store::open(options).unwrap()
}

/// A store with one image whose top layer holds `files` files, and
/// `templates` mapped copies of it, each a layer directory with its own
/// copy of the files (as podman's chowned copies are).
fn store_with_templates(root: &Path, templates: usize, files: usize) -> (Store, OverlayDriver) {
    let store = open(root);
    let driver = OverlayDriver::new(store.options()).unwrap();
    let fill = |diff: &Path| {
        for f in 0..files {
            let dir = diff.join(format!("d{}", f % 16));
            fs::create_dir_all(&dir).unwrap();
            fs::write(
                dir.join(format!("f{f}")),
                b"content of a file in the image\n",
            )
            .unwrap();
        }
    };
    let top = store
        .create_layer(&driver, NewLayer::default(), |_, id| {
            fill(&driver.diff_path(id));
            Ok(None)
        })
        .unwrap();
    let image = store
        .create_image(layerstore::ops::NewImage {
            id: format!("{:064x}", 1),
            top_layer: top.id.clone(),
            ..Default::default()
        })
        .unwrap();
    let mut mapped = Vec::new();
    for n in 0..templates {
        let new = NewLayer {
            uidmap: maps(n),
            gidmap: maps(n),
            ..NewLayer::default()
        };
        let l = store
            .create_layer(&driver, new, |_, id| {
                fill(&driver.diff_path(id));
                Ok(None)
            })
            .unwrap();
        mapped.push(l.id);
    }
    store
        .modify_images(|images| {
            images
                .iter_mut()
                .find(|i| i.id == image.id)
                .unwrap()
                .mapped_layers = mapped;
            Ok(())
        })
        .unwrap();
    (store, driver)
}

fn bench(c: &mut Criterion) {
    let snap = snapshot();
    assert_eq!(snap.layers.len(), 10_000);
    let f = facts(&snap);
    c.bench_function("gc plan (10k layer records, pure)", |b| {
        b.iter(|| {
            plan(black_box(&snap), black_box(&f), Duration::ZERO)
                .actions
                .len()
        })
    });
    if !rustix::process::geteuid().is_root() {
        eprintln!("not root: skipping the on-disk gc benches");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = write_store(dir.path(), &snap);
    let driver = OverlayDriver::new(store.options()).unwrap();
    let options = GcOptions {
        dry_run: true,
        ..GcOptions::default()
    };
    c.bench_function("snapshot from disk (10k layer records)", |b| {
        b.iter(|| store.snapshot().unwrap().layers.len())
    });
    c.bench_function("gc dry-run plan from disk (10k layer records)", |b| {
        b.iter(|| store.gc_plan(&driver, &options).unwrap().actions.len())
    });
    drop(dir);

    let mut group = c.benchmark_group("gc apply");
    group.sample_size(10);
    group.bench_function("gc of 1,000 templates (100 files each)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let (store, driver) = store_with_templates(dir.path(), 1_000, 100);
                let started = Instant::now();
                let report = store.gc(&driver, &GcOptions::default()).unwrap();
                total += started.elapsed();
                assert_eq!(report.layers_removed, 1_000);
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
