//! Table tests of the pure plan.

use std::time::{Duration, SystemTime};

use super::*;
use crate::gojson::GoTime;
use crate::idmap::IdMap;
use crate::records::{Container, Image, Layer, MountPoint, FLAG_INCOMPLETE};
use crate::Snapshot;

const MAP: IdMap = IdMap {
    container_id: 0,
    host_id: 100000,
    size: 65536,
};

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn at(secs: u64) -> GoTime {
    GoTime(chrono::DateTime::<chrono::Utc>::from(t(secs)).fixed_offset())
}

fn layer(id: &str, parent: &str) -> Layer {
    Layer {
        id: id.into(),
        parent: parent.into(),
        diff_digest: format!("sha256:{id}"),
        created: at(1000),
        ..Layer::default()
    }
}

/// A mapped copy of `top` (same parent and digest, with maps).
fn copy_of(id: &str, top: &Layer) -> Layer {
    Layer {
        id: id.into(),
        parent: top.parent.clone(),
        diff_digest: top.diff_digest.clone(),
        uidmap: vec![MAP],
        gidmap: vec![MAP],
        created: at(1000),
        ..Layer::default()
    }
}

fn entry(name: &str, secs: u64) -> DiskEntry {
    DiskEntry {
        name: name.into(),
        mtime: t(secs),
    }
}

/// base <- top (image img, mapped m1 m2 m3); m2 has a container layer c2
/// (podman's container); m3 is mounted; m4 is an unlisted copy.
fn store() -> (Snapshot, Facts) {
    let base = layer("base", "");
    let top = layer("top", "base");
    let mut layers = vec![base, top.clone()];
    for m in ["m1", "m2", "m3", "m4"] {
        layers.push(copy_of(m, &top));
    }
    let mut c2 = layer("c2", "m2");
    c2.diff_digest.clear();
    layers.push(c2);
    let snap = Snapshot {
        layers,
        images: vec![Image {
            id: "img".into(),
            top_layer: "top".into(),
            mapped_layers: vec!["m1".into(), "m2".into(), "m3".into()],
            ..Image::default()
        }],
        containers: vec![Container {
            id: "podman-ctr".into(),
            layer: "c2".into(),
            metadata: r#"{"image-name":"x","name":"c"}"#.into(),
            ..Container::default()
        }],
        mounts: vec![MountPoint {
            id: "m3".into(),
            path: "/g/overlay/m3/merged".into(),
            count: 1,
            ..MountPoint::default()
        }],
    };
    let facts = Facts {
        now: t(10_000),
        mounted: ["/g/overlay/m3/merged".to_owned()].into(),
        layer_dirs: ["base", "top", "m1", "m2", "m3", "m4", "c2"]
            .iter()
            .map(|n| entry(n, 1000))
            .collect(),
        ..Facts::default()
    };
    (snap, facts)
}

fn kinds(plan: &GcPlan) -> Vec<(String, String)> {
    plan.actions
        .iter()
        .map(|a| (a.kind().to_owned(), a.subject().to_owned()))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, s)| (k.to_string(), s.to_string()))
        .collect()
}

#[test]
fn orphaned_templates_go_used_ones_stay() {
    let (snap, facts) = store();
    let p = plan(&snap, &facts, Duration::ZERO);
    assert_eq!(
        kinds(&p),
        pairs(&[("mapped-layer", "m1"), ("mapped-layer", "m4")])
    );
    assert_eq!(
        p.actions[0],
        Action::MappedLayer {
            id: "m1".into(),
            images: vec!["img".into()]
        }
    );
    let skipped: Vec<(&str, &str)> = p
        .skipped
        .iter()
        .map(|s| (s.id.as_str(), s.reason.as_str()))
        .collect();
    assert_eq!(
        skipped,
        [
            ("m2", "layer c2 is stacked on it"),
            ("m3", "it is mounted at /g/overlay/m3/merged")
        ]
    );
}

#[test]
fn never_a_top_layer_a_parent_a_container_layer_or_a_named_layer() {
    let (mut snap, facts) = store();
    // The top layer listed as mapped (corrupt, but never removed).
    snap.images[0].mapped_layers.push("top".into());
    // A container layer with maps on the top's parent, podman's.
    let mut cl = copy_of("cl", &snap.layers[1]);
    cl.parent = "base".into();
    snap.layers.push(cl);
    snap.containers.push(Container {
        id: "other".into(),
        layer: "cl".into(),
        ..Container::default()
    });
    // A named mapped copy: somebody's own layer.
    let mut named = copy_of("named", &snap.layers[1]);
    named.names = vec!["keep-me".into()];
    snap.layers.push(named);
    let p = plan(&snap, &facts, Duration::ZERO);
    let removed = p.removed_layers();
    for kept in ["base", "top", "m2", "m3", "c2", "cl", "named"] {
        assert!(!removed.contains(kept), "{kept} must stay: {p:?}");
    }
}

#[test]
fn min_age_protects_young_records_and_debris() {
    let (mut snap, mut facts) = store();
    snap.layers[2].created = at(9_990);
    facts.layer_dirs.push(entry("stray", 9_999));
    facts.layer_dirs.push(entry("old-stray", 10));
    let p = plan(&snap, &facts, Duration::from_secs(60));
    assert_eq!(
        kinds(&p),
        pairs(&[("mapped-layer", "m4"), ("layer-dir", "old-stray")])
    );
    assert!(p
        .skipped
        .iter()
        .any(|s| s.id == "m1" && s.reason.contains("min-age")));
    assert!(p.skipped.iter().any(|s| s.id == "stray"));
    // Without --min-age both go.
    let p = plan(&snap, &facts, Duration::ZERO);
    assert!(p.removed_layers().contains("m1"));
    assert!(p.actions.contains(&Action::LayerDir { id: "stray".into() }));
}

#[test]
fn a_layer_with_a_mount_inside_stays_whatever_mountpoints_json_says() {
    let (snap, mut facts) = store();
    facts.busy_layers = ["m1".to_owned(), "stray".to_owned()].into();
    facts.layer_dirs.push(entry("stray", 1));
    let p = plan(&snap, &facts, Duration::ZERO);
    assert!(!p.removed_layers().contains("m1"));
    assert!(p
        .skipped
        .iter()
        .any(|s| s.id == "m1" && s.reason.contains("mounted inside")));
    assert!(!p.actions.contains(&Action::LayerDir { id: "stray".into() }));
}

#[test]
fn incomplete_layers_go_unless_something_stands_on_them() {
    let (mut snap, facts) = store();
    let mut inc = layer("inc", "base");
    inc.flags
        .insert(FLAG_INCOMPLETE.into(), serde_json::Value::Bool(true));
    snap.layers.push(inc.clone());
    let mut inc_parent = inc.clone();
    inc_parent.id = "inc2".into();
    snap.layers.push(inc_parent);
    snap.layers.push(layer("on-inc2", "inc2"));
    snap.images[0].mapped_layers.push("inc".into());
    let p = plan(&snap, &facts, Duration::ZERO);
    assert!(p.actions.contains(&Action::IncompleteLayer {
        id: "inc".into(),
        images: vec!["img".into()]
    }));
    assert!(!p.removed_layers().contains("inc2"));
}

#[test]
fn debris_links_mounts_and_dangling_entries() {
    let (mut snap, mut facts) = store();
    snap.images[0].mapped_layers.push("gone".into());
    snap.mounts.push(MountPoint {
        id: "top".into(),
        path: "/g/overlay/top/merged".into(),
        count: 2,
        ..MountPoint::default()
    });
    let hex = "ab".repeat(32);
    facts.tar_splits = vec![entry("top", 1), entry(&hex, 1)];
    facts.layer_data_dirs = vec![entry(&hex, 1)];
    facts.image_dirs = vec![entry("img", 1), entry(&hex, 1)];
    facts.layer_dirs.push(entry(&hex, 1));
    facts.links = vec![
        (entry("AAAA", 1), Some("top".into())),
        (entry("BBBB", 1), Some(hex.clone())),
        (entry("CCCC", 1), Some("nothing".into())),
    ];
    facts.broken_links = vec!["base".into(), "m1".into()];
    facts.temp_files = vec![entry("/g/overlay-layers/.tmp-layers.json123", 1)];
    let p = plan(&snap, &facts, Duration::ZERO);
    let got = kinds(&p);
    let want = pairs(&[
        ("mapped-layer", "m1"),
        ("mapped-layer", "m4"),
        ("dangling-mapped-entry", "gone"),
        ("stale-mount", "top"),
        ("layer-dir", &hex),
        ("tar-split", &hex),
        ("layer-data", &hex),
        ("image-dir", &hex),
        ("temp-file", "/g/overlay-layers/.tmp-layers.json123"),
        ("dangling-link", "CCCC"),
        ("repair-link", "base"),
    ]);
    assert_eq!(got, want);
}

#[test]
fn dead_layerstore_run_containers_go_with_their_layers() {
    let (mut snap, mut facts) = store();
    let mut l = layer("run-layer", "m1");
    l.diff_digest.clear();
    snap.layers.push(l);
    snap.containers.push(Container {
        id: "ours".into(),
        layer: "run-layer".into(),
        metadata: RunOwner {
            pid: 1,
            start_time: 1,
        }
        .to_metadata(),
        created: at(1000),
        ..Container::default()
    });
    facts.dead_run_containers = ["ours".to_owned()].into();
    let p = plan(&snap, &facts, Duration::ZERO);
    // The container and its layer go; m1 (its parent) stays this round.
    assert_eq!(
        p.actions[0],
        Action::RunContainer {
            id: "ours".into(),
            layer: Some("run-layer".into())
        }
    );
    assert!(!p.removed_layers().contains("m1"));
    // podman's container is never touched, even if "dead" is claimed.
    facts.dead_run_containers.insert("podman-ctr".into());
    let p = plan(&snap, &facts, Duration::ZERO);
    assert!(!p.removed_layers().contains("c2"));
    assert!(!p.actions.iter().any(|a| a.subject() == "podman-ctr"));
}
