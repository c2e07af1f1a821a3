//! Idmapped rootfs preparation: what a container with a new uid/gid mapping
//! costs when the layers are idmapped instead of copied. One iteration = a
//! user-namespace fd for the mapping + a detached idmapped mount of the
//! overlay home + the overlay mount of the container layer on it + unmount
//! (`OverlayDriver::mount` with maps, then `unmount`). Measured on a
//! single-layer image of 1k, 10k and 100k entries: the time must not grow
//! with the tree (target: under 5 ms). Needs root; otherwise it says why
//! and measures nothing.
//! `cargo bench -p layerstore-benches --bench idmap_mount`.

// criterion_group! and criterion_main! generate undocumented items.
#![allow(missing_docs)]

use std::fs;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use layerstore::config::StoreOptions;
use layerstore::idmap::IdMap;
use layerstore_overlay::layout::{MountRequest, OverlayDriver};

const IMAGE: &str = "1000000000000000000000000000000000000000000000000000000000000001";
const CTR: &str = "2000000000000000000000000000000000000000000000000000000000000002";

/// A store in `root` whose image layer holds `entries` entries (100 files
/// per directory), plus an empty container layer on it.
fn store(root: &Path, entries: usize) -> OverlayDriver {
    let driver = OverlayDriver::new(&StoreOptions {
        graph_root: root.join("graph"),
        run_root: root.join("run"),
        driver: "overlay".into(),
        ..Default::default()
    })
    .unwrap();
    fs::create_dir_all(driver.home()).unwrap();
    driver.create_layer(IMAGE, None, (0, 0)).unwrap();
    let diff = driver.diff_path(IMAGE).unwrap();
    let dirs = entries.div_ceil(101);
    let mut made = 0;
    'outer: for d in 0..dirs {
        let dir = diff.join(format!("d{d}"));
        fs::create_dir(&dir).unwrap();
        made += 1;
        for f in 0..100 {
            if made >= entries {
                break 'outer;
            }
            fs::write(dir.join(format!("f{f}")), b"x").unwrap();
            made += 1;
        }
    }
    driver.create_layer(CTR, Some(IMAGE), (0, 0)).unwrap();
    driver
}

/// A different mapping each time: container ids 0..65536 at a moving base.
fn request(k: u32) -> MountRequest {
    let base = 100_000 + (k % 4096) * 65_536;
    let map = |size| {
        vec![IdMap {
            container_id: 0,
            host_id: base,
            size,
        }]
    };
    MountRequest {
        uidmap: map(65_536),
        gidmap: map(65_536),
        ..Default::default()
    }
}

fn bench(c: &mut Criterion) {
    if !rustix::process::geteuid().is_root() {
        eprintln!("idmap_mount: skipped: user namespaces with arbitrary maps and idmapped mounts need root");
        return;
    }
    let mut group = c.benchmark_group("idmapped rootfs preparation");
    group
        .sample_size(50)
        .measurement_time(Duration::from_secs(10));
    for entries in [1_000, 10_000, 100_000] {
        let tmp = tempfile::tempdir().unwrap();
        let driver = store(tmp.path(), entries);
        let mut k = 0u32;
        group.bench_with_input(BenchmarkId::from_parameter(entries), &entries, |b, _| {
            b.iter(|| {
                k = k.wrapping_add(1);
                let merged = driver.mount(CTR, &request(k)).unwrap();
                std::hint::black_box(&merged);
                driver.unmount(CTR).unwrap();
            })
        });
        let _ = rustix::mount::unmount(driver.home(), rustix::mount::UnmountFlags::DETACH);
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
