//! Chown-by-maps speed (`chown::chown_by_maps`) on synthetic trees of 1k,
//! 10k and 100k entries (100 entries per directory: files, a few symlinks
//! and hard links), on a plain directory (no overlay copy-up; see
//! `scripts/bench/chown-vs-containers-storage.sh` for the whole template
//! copy). Needs root (real chown): otherwise it says so and measures nothing.
//! `cargo bench -p layerstore-benches --bench chown`.

// criterion_group! and criterion_main! generate undocumented items.
#![allow(missing_docs)]

use std::fs;
use std::os::unix::fs::{lchown, symlink};
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use layerstore::idmap::IdMappings;
use layerstore_overlay::chown::{chown_by_maps, ChownMaps};

/// `n` entries below `root`: directories of 100 entries each.
fn build_tree(root: &Path, n: usize) {
    let per_dir = 100;
    let mut made = 0;
    let mut d = 0;
    while made < n {
        let dir = root.join(format!("d{d}"));
        fs::create_dir(&dir).unwrap();
        made += 1;
        for i in 0..per_dir.min(n - made) {
            let p = dir.join(format!("e{i}"));
            match i % 50 {
                0 => symlink("e1", &p).unwrap(),
                25 => fs::hard_link(dir.join("e1"), &p).unwrap(),
                _ => fs::write(&p, b"x").unwrap(),
            }
            lchown(&p, Some((i % 3) as u32), Some(0)).unwrap();
            made += 1;
        }
        d += 1;
    }
}

fn bench(c: &mut Criterion) {
    if !rustix::process::geteuid().is_root() {
        eprintln!(
            "chown bench skipped: chown-by-maps needs root (real chown of other users' files)"
        );
        return;
    }
    let forward = ChownMaps::new(
        IdMappings::parse_same("").unwrap(),
        IdMappings::parse_same("0:100000:1000:1000:1000:1:1001:101001:64535").unwrap(),
    );
    let back = ChownMaps::new(
        IdMappings::parse_same("0:100000:1000:1000:1000:1:1001:101001:64535").unwrap(),
        IdMappings::parse_same("").unwrap(),
    );
    let mut group = c.benchmark_group("chown_by_maps");
    group.sample_size(10);
    for n in [1_000usize, 10_000, 100_000] {
        let dir = tempfile::Builder::new()
            .prefix("chown-bench-")
            .tempdir()
            .unwrap();
        build_tree(dir.path(), n);
        group.throughput(Throughput::Elements(n as u64));
        let mut flip = false;
        group.bench_function(format!("{n}-entries"), |b| {
            b.iter(|| {
                flip = !flip;
                let maps = if flip { &forward } else { &back };
                let report = chown_by_maps(dir.path(), maps).unwrap();
                assert_eq!(report.entries as usize, n);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
