//! `--userns=auto` allocation speed with 1,000 containers in the store: the
//! pure choice ([`layerstore::userns::allocate`]) over the maps those
//! containers record (podman-like 65,536-id ranges, every tenth one
//! non-contiguous), and the sizing step that reads the image's
//! `/etc/passwd` and `/etc/group` from its layer directories (a 5-layer
//! image, no mount). Run with `cargo bench -p layerstore-benches --bench
//! userns`; target: allocation at most 1 ms.

// criterion_group! and criterion_main! generate undocumented items.
#![allow(missing_docs)]

use std::fs;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use layerstore::config::StoreOptions;
use layerstore::idmap::IdMap;
use layerstore::records::{Container, Layer};
use layerstore::userns::{
    allocate, needed_size, size_from_layers, size_from_user_files, AutoUserNs, AutoUserNsConfig,
    Available, IdSet, ImageNeeds,
};
use layerstore::LayerId;
use layerstore_overlay::layout::OverlayDriver;

const CONTAINERS: u32 = 1000;
const BASE: u32 = 100_000;
const SIZE: u32 = 65_536;

fn m(container_id: u32, host_id: u32, size: u32) -> IdMap {
    IdMap {
        container_id,
        host_id,
        size,
    }
}

/// 1,000 containers, each with its own 65,536 ids from the subordinate
/// range; every tenth split in two extents, one in twenty with a hole
/// left by a removed container before it.
fn containers() -> Vec<Container> {
    (0..CONTAINERS)
        .filter(|n| n % 20 != 7)
        .map(|n| {
            let host = BASE + n * SIZE;
            let uidmap = if n % 10 == 3 {
                vec![m(0, host, 1000), m(1000, host + 1000, SIZE - 1000)]
            } else {
                vec![m(0, host, SIZE)]
            };
            Container {
                id: format!("{n:064x}"),
                gidmap: uidmap.clone(),
                uidmap,
                ..Container::default()
            }
        })
        .collect()
}

fn available() -> Available {
    let ids = IdSet::span(
        u64::from(BASE),
        u64::from(BASE) + 2 * u64::from(CONTAINERS * SIZE),
    );
    Available {
        uids: ids.clone(),
        gids: ids,
        owner: "containers".into(),
        subuid: "/etc/subuid".into(),
        subgid: "/etc/subgid".into(),
        rootless: false,
    }
}

/// A 5-layer image on disk whose top layer holds /etc/passwd and
/// /etc/group, the lower ones other files.
fn image(root: &std::path::Path) -> (OverlayDriver, Vec<LayerId>) {
    let driver = OverlayDriver::new(&StoreOptions {
        graph_root: root.join("graph"),
        run_root: root.join("run"),
        driver: "overlay".into(),
        ..Default::default()
    })
    .unwrap();
    fs::create_dir_all(driver.home()).unwrap();
    let owner = rustix::process::geteuid().as_raw();
    let group = rustix::process::getegid().as_raw();
    let mut chain = Vec::new();
    let mut parent: Option<LayerId> = None;
    for n in 0..5u32 {
        let id = LayerId::parse(&format!("{:064x}", n + 1)).unwrap();
        driver
            .create_layer(&id, parent.as_ref(), (owner, group))
            .unwrap();
        let etc = driver.diff_path(&id).join("etc");
        fs::create_dir_all(&etc).unwrap();
        fs::write(etc.join(format!("file{n}")), "x").unwrap();
        if n == 4 {
            let mut passwd = String::from("root:x:0:0:root:/root:/bin/sh\n");
            for u in 1..40 {
                passwd.push_str(&format!(
                    "user{u}:x:{}:{}::/home/u{u}:/bin/sh\n",
                    u * 50,
                    u * 50
                ));
            }
            passwd.push_str("nobody:x:65534:65534::/:/bin/false\n");
            fs::write(etc.join("passwd"), passwd).unwrap();
            fs::write(
                etc.join("group"),
                "root:x:0:\nstaff:x:50:\nnogroup:x:65534:\n",
            )
            .unwrap();
        }
        chain.insert(0, id.clone());
        parent = Some(id);
    }
    (driver, chain)
}

fn bench(c: &mut Criterion) {
    let recorded = containers();
    let avail = available();
    let auto = AutoUserNs::default();
    let config = AutoUserNsConfig::default();
    c.bench_function("userns=auto allocate (1,000 containers, pure)", |b| {
        b.iter(|| {
            let used = recorded
                .iter()
                .map(|c| (c.uidmap.as_slice(), c.gidmap.as_slice()));
            black_box(allocate(SIZE, &auto, &avail, used).unwrap())
        })
    });
    let dir = tempfile::tempdir().unwrap();
    let (driver, chain) = image(dir.path());
    let layers: Vec<Layer> = (0..5)
        .map(|n| Layer {
            uidset: vec![0, n * 10],
            gidset: vec![0],
            ..Layer::default()
        })
        .collect();
    c.bench_function(
        "userns=auto size and allocate (5-layer image on disk, 1,000 containers)",
        |b| {
            b.iter(|| {
                let passwd = driver
                    .read_stack_file(&chain, "etc/passwd", 1 << 24)
                    .unwrap();
                let group = driver
                    .read_stack_file(&chain, "etc/group", 1 << 24)
                    .unwrap();
                let from_image = ImageNeeds {
                    files: size_from_layers(&layers),
                    users: size_from_user_files(passwd.as_deref(), group.as_deref()),
                };
                let size = needed_size(&auto, &config, Some(from_image)).unwrap();
                let used = recorded
                    .iter()
                    .map(|c| (c.uidmap.as_slice(), c.gidmap.as_slice()));
                black_box(allocate(size, &auto, &avail, used).unwrap())
            })
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
