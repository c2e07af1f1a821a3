//! Layer apply speed: `ocidiff::apply_layer` (tar -> overlay diff dir +
//! tar-split) on the Debian minbase rootfs tar that
//! `scripts/bench/debian-rootfs.sh` caches, or, when it is absent, on a
//! generated tar of 5,000 small files. Run as root (owners, devices):
//! `cargo bench -p layerstore-benches --bench ocidiff`.

// criterion_group! and criterion_main! generate undocumented items.
#![allow(missing_docs)]

use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use layerstore_overlay::ocidiff::{apply_layer, ApplyOptions, WhiteoutFormat};
use layerstore_overlay::tarsplit::TarSplitWriter;

fn debian_tar() -> Option<PathBuf> {
    let cache = std::env::var_os("LAYERSTORE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/layerstore")))?;
    let tar = cache.join("debian-minbase.tar");
    tar.exists().then_some(tar)
}

/// A tar of `n` small files in 50 directories.
fn generated_tar(n: usize) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for d in 0..50 {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, format!("dir{d}"), &[][..]).unwrap();
    }
    for i in 0..n {
        let data = vec![b'x'; 100 + i % 4000];
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, format!("dir{}/file{i}", i % 50), data.as_slice())
            .unwrap();
    }
    b.into_inner().unwrap()
}

fn bench(c: &mut Criterion) {
    let (name, bytes) = match debian_tar() {
        Some(p) => ("debian-minbase", std::fs::read(p).unwrap()),
        None => ("generated-5k-files", generated_tar(5000)),
    };
    let options = ApplyOptions {
        whiteout: WhiteoutFormat::Overlay { user_xattr: false },
        ignore_chown_errors: false,
    };
    let mut group = c.benchmark_group("ocidiff");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(30));
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function(format!("apply_layer {name}"), |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                std::fs::create_dir(dir.path().join("diff")).unwrap();
                dir
            },
            |dir| {
                let mut split = TarSplitWriter::new(std::io::sink());
                apply_layer(
                    bytes.as_slice(),
                    &dir.path().join("diff"),
                    &mut split,
                    &options,
                )
                .unwrap();
                split.finish().unwrap();
                dir
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
