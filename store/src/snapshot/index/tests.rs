//! The index answers every question as the snapshot's scans do, over
//! generated snapshots with repeated ids and names, cycles, shared ids
//! between tables, prefixes that are ambiguous and layer ids used as
//! container queries.

use proptest::prelude::*;

use crate::error::StoreError;
use crate::records::{Container, Image, Layer, MountPoint};
use crate::Snapshot;

/// Short ids from a small alphabet, so that prefixes collide.
fn id(i: u8) -> String {
    format!("{:x}{:x}", i % 3, i % 7)
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    let layer = (0u8..21, prop::option::of(0u8..21), prop::option::of(0u8..5));
    let image = (
        0u8..21,
        0u8..21,
        prop::collection::vec(0u8..21, 0..4),
        prop::option::of(0u8..5),
    );
    let container = (0u8..21, 0u8..21, 0u8..21, prop::option::of(0u8..5));
    let mount = (0u8..21, -1i64..3);
    (
        prop::collection::vec(layer, 0..16),
        prop::collection::vec(image, 0..6),
        prop::collection::vec(container, 0..6),
        prop::collection::vec(mount, 0..4),
    )
        .prop_map(|(ls, is, cs, ms)| Snapshot {
            layers: ls
                .into_iter()
                .map(|(i, p, n)| Layer {
                    id: id(i),
                    parent: p.map(id).unwrap_or_default(),
                    names: n.map(|n| vec![format!("n{n}")]).unwrap_or_default(),
                    ..Layer::default()
                })
                .collect::<Vec<_>>()
                .into(),
            images: is
                .into_iter()
                .map(|(i, top, mapped, n)| Image {
                    id: id(i),
                    top_layer: id(top),
                    mapped_layers: mapped.into_iter().map(id).collect(),
                    names: n.map(|n| vec![format!("n{n}")]).unwrap_or_default(),
                    ..Image::default()
                })
                .collect::<Vec<_>>()
                .into(),
            containers: cs
                .into_iter()
                .map(|(i, image, layer, n)| Container {
                    id: id(i),
                    image: id(image),
                    layer: id(layer),
                    names: n.map(|n| vec![format!("n{n}")]).unwrap_or_default(),
                    ..Container::default()
                })
                .collect::<Vec<_>>()
                .into(),
            mounts: ms
                .into_iter()
                .map(|(i, count)| MountPoint {
                    id: id(i),
                    count,
                    ..MountPoint::default()
                })
                .collect(),
            defects: Vec::new(),
        })
}

/// Results compared by what they name: the same record (by address) or
/// the same error.
fn same<T>(a: &Result<&T, StoreError>, b: &Result<&T, StoreError>) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => std::ptr::eq(*a, *b),
        (Err(a), Err(b)) => a.to_string() == b.to_string(),
        _ => false,
    }
}

fn queries() -> Vec<String> {
    let mut q: Vec<String> = (0..21).map(id).collect();
    q.extend((0..3).map(|i| format!("{i:x}")));
    q.extend((0..5).map(|n| format!("n{n}")));
    q.extend(["".to_owned(), "zz".to_owned()]);
    q
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn the_index_answers_as_the_scans_do(snap in snapshot()) {
        let ix = snap.index();
        for q in queries() {
            prop_assert!(same(&ix.layer(&q), &snap.layer(&q)), "layer {q:?}");
            prop_assert!(same(&ix.image(&q), &snap.image(&q)), "image {q:?}");
            prop_assert!(same(&ix.container(&q), &snap.container(&q)), "container {q:?}");
            prop_assert_eq!(ix.layer_users(&q), snap.layer_users(&q), "users of {:?}", q);
            prop_assert_eq!(ix.mount_of(&q).map(|m| m as *const _), snap.mount_of(&q).map(|m| m as *const _));
            let chain = |r: Result<Vec<&Layer>, StoreError>| {
                r.map(|c| c.iter().map(|l| *l as *const Layer).collect::<Vec<_>>()).map_err(|e| e.to_string())
            };
            prop_assert_eq!(chain(ix.layer_chain(&q)), chain(snap.layer_chain(&q)), "chain of {:?}", q);
            let of_image: Vec<&str> = snap.containers.iter().filter(|c| c.image == q).map(|c| c.id.as_str()).collect();
            prop_assert_eq!(ix.containers_of_image(&q), of_image.as_slice());
            prop_assert_eq!(ix.is_mapped_copy(&q), !snap.layer_users(&q).mapped_for_images.is_empty());
        }
    }
}
