//! Scale of the pure parts, on the generated "images x mapped copies"
//! shape (`layerstore_benches::storegen`) at 1,000, 10,000 and 100,000
//! layer records: decoding `layers.json` the way a store load does
//! (record by record, so that one bad record does not hide the rest),
//! building a snapshot's index, and the per-record questions `info` and
//! `layers` ask of every layer. Linear growth means time(100k) /
//! time(10k) near 10. Run with `cargo bench -p layerstore-benches --bench
//! scale`.

// criterion_group! and criterion_main! generate undocumented items.
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use layerstore::records::{decode_records, encode_file, Layer};
use layerstore_benches::storegen::{snapshot, Shape};

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("scale");
    group.sample_size(10);
    for n in SIZES {
        let snap = snapshot(&Shape::from_layers(n));
        let bytes = encode_file(&snap.layers);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(
            BenchmarkId::new("decode layers.json", n),
            &bytes,
            |b, bytes| b.iter(|| decode_records::<Layer>(black_box(bytes)).unwrap().len()),
        );
        // Maps are built when first asked for: one question of each kind
        // builds them all.
        let last = snap.layers.last().map(|l| l.id.clone()).unwrap_or_default();
        group.bench_with_input(BenchmarkId::new("build the index", n), &snap, |b, snap| {
            b.iter(|| {
                let ix = snap.index();
                (
                    ix.layer(black_box(&last[..16])).is_ok(),
                    ix.layer_users(&last).is_empty(),
                    ix.mount_of(&last).is_some(),
                    ix.container(&last).is_ok(),
                )
            })
        });
        group.bench_with_input(
            BenchmarkId::new("users and mount of every layer", n),
            &snap,
            |b, snap| {
                b.iter(|| {
                    let ix = snap.index();
                    snap.layers
                        .iter()
                        .filter(|l| {
                            !ix.layer_users(&l.id).is_empty() || ix.mount_of(&l.id).is_some()
                        })
                        .count()
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("size of every image", n),
            &snap,
            |b, snap| {
                b.iter(|| {
                    let ix = snap.index();
                    snap.images
                        .iter()
                        .filter_map(|i| ix.layer_chain(&i.top_layer).ok())
                        .map(|chain| chain.iter().map(|l| l.diff_size).sum::<i64>())
                        .sum::<i64>()
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
