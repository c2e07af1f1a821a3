//! Metadata speed: decoding and Go-encoding a large `layers.json`, and
//! looking records up in a snapshot. Run with `cargo bench -p layerstore-benches`.

// criterion_group! and criterion_main! generate undocumented items.
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use layerstore::records::{decode_file, encode_file, Layer};
use layerstore::Snapshot;

/// A `layers.json` of `n` chained layers in containers/storage's encoding.
fn layers_json(n: usize) -> Vec<u8> {
    let layers: Vec<Layer> = (0..n)
        .map(|i| Layer {
            id: format!("{i:064x}"),
            parent: if i == 0 {
                String::new()
            } else {
                format!("{:064x}", i - 1)
            },
            diff_digest: format!("sha256:{i:064x}"),
            diff_size: 1_996_800,
            uidset: vec![0, 1000],
            gidset: vec![0, 1000],
            ..Layer::default()
        })
        .collect();
    encode_file(&layers)
}

fn bench(c: &mut Criterion) {
    let bytes = layers_json(10_000);
    c.bench_function("decode layers.json (10k layers)", |b| {
        b.iter(|| decode_file::<Layer>(black_box(&bytes)).unwrap())
    });
    let layers: Vec<Layer> = decode_file(&bytes).unwrap();
    c.bench_function("encode layers.json (10k layers)", |b| {
        b.iter(|| encode_file(black_box(&layers)))
    });
    let snap = Snapshot {
        layers: layers.into(),
        ..Snapshot::default()
    };
    let prefix = format!("{:064x}", 9_999);
    c.bench_function("lookup by unique prefix (10k layers)", |b| {
        b.iter(|| snap.layer(black_box(&prefix[..20])).unwrap().id.len())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
