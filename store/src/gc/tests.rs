//! Table tests of the pure plan.

use std::time::{Duration, SystemTime};

use super::*;
use crate::driver::LinkEntry;
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

fn entry(name: &str, secs: u64) -> DiskEntry<LayerId> {
    DiskEntry {
        name: lid(name),
        mtime: t(secs),
    }
}

fn lid(id: &str) -> LayerId {
    LayerId::parse(id).unwrap()
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
        layers: layers.into(),
        images: vec![Image {
            id: "img".into(),
            top_layer: "top".into(),
            mapped_layers: vec!["m1".into(), "m2".into(), "m3".into()],
            ..Image::default()
        }]
        .into(),
        containers: vec![Container {
            id: "podman-ctr".into(),
            layer: "c2".into(),
            metadata: r#"{"image-name":"x","name":"c"}"#.into(),
            ..Container::default()
        }]
        .into(),
        mounts: vec![MountPoint {
            id: "m3".into(),
            path: "/g/overlay/m3/merged".into(),
            count: 1,
            ..MountPoint::default()
        }],
        defects: vec![],
    };
    let facts = Facts {
        now: t(10_000),
        mounted: ["m3".to_owned()].into(),
        all_layer_dirs: ["base", "top", "m1", "m2", "m3", "m4", "c2"]
            .iter()
            .map(|n| n.to_string())
            .collect(),
        ..Facts::default()
    };
    (snap, facts)
}

/// Add container `ours`, made by `layerstore run`, on layer `run-layer`
/// (a child of the template m1).
fn add_run_container(snap: &mut Snapshot, facts: &mut Facts) {
    let mut l = layer("run-layer", "m1");
    l.diff_digest.clear();
    l.flags
        .insert(crate::ops::FLAG_CONTAINER.into(), "ours".into());
    snap.layers.make_mut().push(l);
    facts.all_layer_dirs.insert("run-layer".into());
    snap.containers.make_mut().push(Container {
        id: "ours".into(),
        layer: "run-layer".into(),
        metadata: crate::ops::mark_created_by_layerstore(
            &RunOwner {
                pid: 1,
                start_time: 1,
            }
            .to_metadata(),
        ),
        created: at(1000),
        ..Container::default()
    });
}

/// Add an unrecorded layer directory.
fn stray(facts: &mut Facts, name: &str, secs: u64) {
    facts.all_layer_dirs.insert(name.to_owned());
    facts.layer_dirs.push(entry(name, secs));
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
            id: lid("m1"),
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
        [("m2", "layer c2 is stacked on it"), ("m3", "it is mounted")]
    );
}

#[test]
fn never_a_top_layer_a_parent_a_container_layer_or_a_named_layer() {
    let (mut snap, facts) = store();
    // The top layer listed as mapped (corrupt, but never removed).
    snap.images.make_mut()[0].mapped_layers.push("top".into());
    // A container layer with maps on the top's parent, podman's.
    let mut cl = copy_of("cl", &snap.layers[1]);
    cl.parent = "base".into();
    snap.layers.make_mut().push(cl);
    let mut facts = facts;
    facts
        .all_layer_dirs
        .extend(["cl".to_owned(), "named".to_owned()]);
    snap.containers.make_mut().push(Container {
        id: "other".into(),
        layer: "cl".into(),
        ..Container::default()
    });
    // A named mapped copy: somebody's own layer.
    let mut named = copy_of("named", &snap.layers[1]);
    named.names = vec!["keep-me".into()];
    snap.layers.make_mut().push(named);
    let p = plan(&snap, &facts, Duration::ZERO);
    let removed = p.removed_layers();
    for kept in ["base", "top", "m2", "m3", "c2", "cl", "named"] {
        assert!(!removed.contains(kept), "{kept} must stay: {p:?}");
    }
}

#[test]
fn min_age_protects_young_records_and_debris() {
    let (mut snap, mut facts) = store();
    snap.layers.make_mut()[2].created = at(9_990);
    stray(&mut facts, "stray", 9_999);
    stray(&mut facts, "old-stray", 10);
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
    assert!(p.actions.contains(&Action::LayerDir { id: lid("stray") }));
}

#[test]
fn a_layer_with_a_mount_inside_stays_whatever_mountpoints_json_says() {
    let (snap, mut facts) = store();
    facts.busy_layers = ["m1".to_owned(), "stray".to_owned()].into();
    stray(&mut facts, "stray", 1);
    let p = plan(&snap, &facts, Duration::ZERO);
    assert!(!p.removed_layers().contains("m1"));
    assert!(p
        .skipped
        .iter()
        .any(|s| s.id == "m1" && s.reason.contains("mounted inside")));
    assert!(!p.actions.contains(&Action::LayerDir { id: lid("stray") }));
}

#[test]
fn incomplete_layers_go_unless_something_stands_on_them() {
    let (mut snap, mut facts) = store();
    facts
        .all_layer_dirs
        .extend(["inc2".to_owned(), "on-inc2".to_owned()]);
    let mut inc = layer("inc", "base");
    inc.flags
        .insert(FLAG_INCOMPLETE.into(), serde_json::Value::Bool(true));
    snap.layers.make_mut().push(inc.clone());
    let mut inc_parent = inc.clone();
    inc_parent.id = "inc2".into();
    snap.layers.make_mut().push(inc_parent);
    snap.layers.make_mut().push(layer("on-inc2", "inc2"));
    snap.images.make_mut()[0].mapped_layers.push("inc".into());
    let p = plan(&snap, &facts, Duration::ZERO);
    assert!(p.actions.contains(&Action::IncompleteLayer {
        id: lid("inc"),
        images: vec!["img".into()]
    }));
    assert!(!p.removed_layers().contains("inc2"));
}

#[test]
fn debris_links_mounts_and_dangling_entries() {
    let (mut snap, mut facts) = store();
    snap.images.make_mut()[0].mapped_layers.push("gone".into());
    snap.mounts.push(MountPoint {
        id: "top".into(),
        path: "/g/overlay/top/merged".into(),
        count: 2,
        ..MountPoint::default()
    });
    let hex = "ab".repeat(32);
    facts.tar_splits = vec![entry(&hex, 1)];
    facts.layer_data_dirs = vec![entry(&hex, 1)];
    facts.image_dirs = vec![DiskEntry {
        name: ImageId::parse(&hex).unwrap(),
        mtime: t(1),
    }];
    stray(&mut facts, &hex, 1);
    let link = |name: &str, layer: &str| LinkEntry {
        name: name.into(),
        layer: Some(layer.into()),
        mtime: t(1),
    };
    facts.links = vec![
        link("AAAA", "top"),
        link("BBBB", &hex),
        link("CCCC", "nothing"),
    ];
    facts.broken_links = vec![lid("base"), lid("m1")];
    facts.temp_files = vec![(
        MetaDir::GraphLayers,
        DiskEntry {
            name: ".tmp-layers.json123".into(),
            mtime: t(1),
        },
    )];
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
        ("temp-file", ".tmp-layers.json123"),
        ("dangling-link", "CCCC"),
        ("repair-link", "base"),
    ]);
    assert_eq!(got, want);
}

#[test]
fn dead_layerstore_run_containers_go_with_their_layers_and_mounts() {
    let (mut snap, mut facts) = store();
    add_run_container(&mut snap, &mut facts);
    facts.dead_run_containers = ["ours".to_owned()].into();
    let p = plan(&snap, &facts, Duration::ZERO);
    // The container and its layer go, and with them m1, its parent.
    assert_eq!(
        p.actions[0],
        Action::RunContainer {
            id: ContainerId::parse("ours").unwrap(),
            layer: Some(lid("run-layer")),
            unmount: false,
        }
    );
    assert!(p.removed_layers().contains("m1"));
    // Mounted by the dead run (recorded or not): unmounted, then removed.
    facts.mounted.insert("run-layer".into());
    let p = plan(&snap, &facts, Duration::ZERO);
    assert!(matches!(
        &p.actions[0],
        Action::RunContainer { unmount: true, .. }
    ));
    assert!(!p
        .actions
        .iter()
        .any(|a| matches!(a, Action::UnrecordedMount { .. })));
    // podman's container is never touched, even if "dead" is claimed.
    facts.dead_run_containers.insert("podman-ctr".into());
    let p = plan(&snap, &facts, Duration::ZERO);
    assert!(!p.removed_layers().contains("c2"));
    assert!(!p.actions.iter().any(|a| a.subject() == "podman-ctr"));
}

#[test]
fn a_containers_layer_whose_container_is_gone_is_an_orphan() {
    let (mut snap, mut facts) = store();
    let mut l = layer("left", "top");
    l.flags.insert(
        crate::ops::FLAG_CONTAINER.into(),
        serde_json::Value::String("gone-ctr".into()),
    );
    snap.layers.make_mut().push(l.clone());
    // The same flag on a layer whose container exists: kept.
    let mut kept = l.clone();
    kept.id = "kept".into();
    snap.layers.make_mut().push(kept);
    snap.containers.make_mut().push(Container {
        id: "gone-ctr-2".into(),
        layer: "kept".into(),
        ..Container::default()
    });
    facts.all_layer_dirs.extend(["left".into(), "kept".into()]);
    let p = plan(&snap, &facts, Duration::ZERO);
    assert!(p.actions.contains(&Action::OrphanLayer {
        id: lid("left"),
        container: "gone-ctr".into()
    }));
    assert!(!p.removed_layers().contains("kept"));
    // Mounted without a record (a killed mounter): unmounted first, then
    // removed in the same gc.
    facts.mounted.insert("left".into());
    let p = plan(&snap, &facts, Duration::ZERO);
    let unmount = p
        .actions
        .iter()
        .position(|a| *a == Action::UnrecordedMount { id: lid("left") })
        .expect("unmounted");
    let remove = p
        .actions
        .iter()
        .position(|a| a.removed_layer().is_some_and(|l| *l == "left"))
        .expect("removed");
    assert!(unmount < remove, "{p:?}");
    // With a record, the mount is someone's: kept, and so is the layer.
    snap.mounts.push(MountPoint {
        id: "left".into(),
        path: "/g/overlay/left/merged".into(),
        count: 1,
        ..MountPoint::default()
    });
    let p = plan(&snap, &facts, Duration::ZERO);
    assert!(!p.removed_layers().contains("left"));
    assert!(!p.actions.iter().any(|a| a.kind() == "unrecorded-mount"));
}

#[test]
fn a_template_whose_only_child_goes_goes_in_the_same_gc_after_it() {
    let (mut snap, mut facts) = store();
    let top = snap.layers[1].clone();
    snap.layers.make_mut().push(copy_of("m5", &top));
    snap.images.make_mut()[0].mapped_layers.push("m5".into());
    let mut orphan = layer("orphan", "m5");
    orphan.flags.insert(
        crate::ops::FLAG_CONTAINER.into(),
        serde_json::Value::String("killed-create".into()),
    );
    snap.layers.make_mut().push(orphan);
    facts.all_layer_dirs.extend(["m5".into(), "orphan".into()]);
    let p = plan(&snap, &facts, Duration::ZERO);
    let order: Vec<&str> = p
        .actions
        .iter()
        .filter_map(Action::removed_layer)
        .map(LayerId::as_str)
        .collect();
    let at = |id| {
        order
            .iter()
            .position(|o| *o == id)
            .unwrap_or_else(|| panic!("{id} stays: {p:?}"))
    };
    assert!(at("orphan") < at("m5"), "the child first: {order:?}");
    assert!(!p.skipped.iter().any(|s| s.id == "m5"), "{p:?}");
    // m2 stays: podman's container layer c2 is stacked on it.
    assert!(!order.contains(&"m2"));
}

#[test]
fn untrustworthy_stores_get_no_actions_and_every_reason() {
    // layers.json empty beside directories and images that name layers.
    let (mut snap, facts) = store();
    snap.layers.make_mut().clear();
    snap.containers.make_mut().clear();
    snap.mounts.clear();
    let p = plan(&snap, &facts, Duration::ZERO);
    assert!(p.actions.is_empty());
    let text: Vec<String> = p.defects.iter().map(ToString::to_string).collect();
    assert!(
        text.iter().any(|t| t.contains("holds no layer records")),
        "{text:?}"
    );
    // A record whose directory is gone (a mutated id).
    let (mut snap, mut facts) = store();
    snap.layers.make_mut()[5].id = "m4x".into();
    facts.layer_dirs.push(entry("m4", 1));
    let p = plan(&snap, &facts, Duration::ZERO);
    assert!(p.actions.is_empty(), "{p:?}");
    assert!(p
        .defects
        .iter()
        .any(|d| d.to_string().contains("m4x is recorded, but its directory")));
    // A mapped entry whose layer record is gone while its directory is not.
    let (mut snap, mut facts) = store();
    snap.layers.make_mut().retain(|l| l.id != "m1");
    facts
        .mapped_traces
        .insert("m1".into(), "/g/overlay/m1".into());
    let p = plan(&snap, &facts, Duration::ZERO);
    assert!(p.actions.is_empty());
    assert!(p.defects[0].to_string().contains("still exists"));
    // The snapshot's own defects.
    let (mut snap, facts) = store();
    snap.defects.push(crate::consistency::Defect::ParentCycle {
        file: "layers.json".into(),
        chain: vec!["a".into(), "a".into()],
    });
    let p = plan(&snap, &facts, Duration::ZERO);
    assert!(p.actions.is_empty());
    assert_eq!(p.defects.len(), 1);
}

#[test]
fn unrecorded_dirs_a_record_or_a_layer_names_stay() {
    let (mut snap, mut facts) = store();
    let named = "ef".repeat(32);
    let lower = "fa".repeat(32);
    let free = "aa".repeat(32);
    for n in [&named, &lower, &free] {
        stray(&mut facts, n, 1);
    }
    // A mount record names `named` (its layer record is gone: ignored by
    // the snapshot, but still a name).
    snap.mounts.push(MountPoint {
        id: named.clone(),
        path: String::new(),
        count: 1,
        ..MountPoint::default()
    });
    facts.stacked_on.add("id-somewhere".into(), [lower.clone()]);
    let p = plan(&snap, &facts, Duration::ZERO);
    let dirs: Vec<&str> = p
        .actions
        .iter()
        .filter(|a| a.kind() == "layer-dir")
        .map(Action::subject)
        .collect();
    assert_eq!(dirs, [free.as_str()]);
    facts.unreadable_lowers = vec!["id-odd".into()];
    let p = plan(&snap, &facts, Duration::ZERO);
    assert_eq!(p.unrecorded_layer_dirs(), 0);
}

#[test]
fn too_many_unrecorded_dirs_need_force() {
    let (snap, mut facts) = store();
    for i in 0..11 {
        stray(&mut facts, &format!("{i:064x}"), 1);
    }
    let p = plan(&snap, &facts, Duration::ZERO);
    assert_eq!(p.unrecorded_layer_dirs(), 11);
    assert_eq!(p.recorded_layers, 7);
    assert!(p.exceeds_unrecorded_share());
    let mut few = p.clone();
    few.actions.truncate(few.actions.len() - 1);
    assert!(!few.exceeds_unrecorded_share(), "10 is the floor");
    let mut big = p.clone();
    big.recorded_layers = 44;
    assert!(!big.exceeds_unrecorded_share(), "11 of 44 is a quarter");
    big.recorded_layers = 43;
    assert!(big.exceeds_unrecorded_share());
}

#[test]
fn a_container_directory_without_a_record_keeps_layer_directories() {
    // podman's container record and its layer's record both dropped: its
    // layer directory looks like debris, but its data directory is left.
    let (mut snap, mut facts) = store();
    stray(&mut facts, "lost-layer", 1);
    facts.all_data_dirs.insert("c/podman-ctr".into());
    facts.all_data_dirs.insert("c/lost-ctr".into());
    let p = plan(&snap, &facts, Duration::ZERO);
    assert!(
        !p.actions.iter().any(|a| a.subject() == "lost-layer"),
        "{p:?}"
    );
    let kept = p.skipped.iter().find(|s| s.id == "lost-layer").unwrap();
    assert!(
        kept.reason.contains("overlay-containers/lost-ctr"),
        "{kept:?}"
    );
    // A container directory an orphan layer's flag names is accounted for.
    let mut orphan = layer("orphan", "");
    orphan
        .flags
        .insert(crate::ops::FLAG_CONTAINER.into(), "lost-ctr".into());
    snap.layers.make_mut().push(orphan);
    facts.all_layer_dirs.insert("orphan".into());
    let p = plan(&snap, &facts, Duration::ZERO);
    assert!(p
        .actions
        .iter()
        .any(|a| a.kind() == "layer-dir" && a.subject() == "lost-layer"));
    assert!(p
        .actions
        .iter()
        .any(|a| a.kind() == "orphan-layer" && a.subject() == "orphan"));
}

#[test]
fn a_dead_run_whose_processes_still_run_is_kept() {
    let (mut snap, mut facts) = store();
    add_run_container(&mut snap, &mut facts);
    facts.running_dead_runs.insert("ours".into(), 4242);
    let p = plan(&snap, &facts, Duration::ZERO);
    assert!(!p
        .actions
        .iter()
        .any(|a| a.subject() == "ours" || a.subject() == "run-layer"));
    let kept = p.skipped.iter().find(|s| s.id == "ours").unwrap();
    assert!(kept.reason.contains("process 4242"), "{kept:?}");
    // Its parent template stays too: a child is stacked on it.
    assert!(!p.removed_layers().contains("m1"));
}

#[test]
fn a_run_marker_without_the_other_marks_is_podmans() {
    // podman's container with a run marker written into its metadata; then
    // with layerstore's create mark too; then with a flag naming another
    // container: never a run's container.
    let marker = RunOwner {
        pid: 1,
        start_time: 1,
    }
    .to_metadata();
    let marked = crate::ops::mark_created_by_layerstore(&marker);
    for (metadata, flag) in [
        (marker.clone(), Some("podman-ctr")),
        (marked.clone(), None),
        (marked.clone(), Some("someone-else")),
    ] {
        let (mut snap, mut facts) = store();
        snap.containers.make_mut()[0].metadata = metadata.clone();
        if let Some(flag) = flag {
            let c2 = snap
                .layers
                .make_mut()
                .iter_mut()
                .find(|l| l.id == "c2")
                .unwrap();
            c2.flags
                .insert(crate::ops::FLAG_CONTAINER.into(), flag.into());
        }
        assert_eq!(run_owner_of(&snap.containers[0], &snap.layers), None);
        facts.dead_run_containers.insert("podman-ctr".into());
        let p = plan(&snap, &facts, Duration::ZERO);
        assert!(
            !p.actions
                .iter()
                .any(|a| a.subject() == "podman-ctr" || a.subject() == "c2"),
            "{metadata} {flag:?}: {p:?}"
        );
    }
}

#[test]
fn a_storage_container_handed_to_podman_goes_only_when_podman_says_none_uses_it() {
    let podman_id = "p".repeat(64);
    let (mut snap, mut facts) = store();
    add_run_container(&mut snap, &mut facts);
    let ours = &mut snap.containers.make_mut()[1];
    assert_eq!(ours.id, "ours");
    ours.metadata = PodmanUse {
        container: podman_id.clone(),
        ..PodmanUse::default()
    }
    .put_into(&ours.metadata);
    facts.dead_run_containers = ["ours".to_owned()].into();
    let goes = |facts: &Facts, snap: &Snapshot| {
        plan(snap, facts, Duration::ZERO)
            .actions
            .iter()
            .any(|a| matches!(a, Action::RunContainer { id, .. } if id.as_str() == "ours"))
    };
    let reason = |facts: &Facts, snap: &Snapshot| {
        let p = plan(snap, facts, Duration::ZERO);
        p.skipped
            .iter()
            .find(|s| s.id == "ours")
            .map(|s| s.reason.clone())
            .unwrap_or_default()
    };
    // Not asked, or asking failed: it stays, and gc says why.
    assert!(!goes(&facts, &snap));
    assert!(reason(&facts, &snap).contains("not asked"));
    facts.podman = PodmanAnswer::Failed("podman is not on PATH".into());
    assert!(!goes(&facts, &snap));
    assert!(reason(&facts, &snap).contains("podman is not on PATH"));
    // Asked before the run was seen gone: the next gc decides.
    let mut view = PodmanContainers::default();
    facts.podman = PodmanAnswer::Answered(view.clone());
    assert!(!goes(&facts, &snap));
    assert!(reason(&facts, &snap).contains("after podman was asked"));
    view.dead_before.insert("ours".into());
    // A podman container's label names it.
    let mut used = view.clone();
    used.storage_users.insert("ours".into(), "q".repeat(64));
    facts.podman = PodmanAnswer::Answered(used);
    assert!(!goes(&facts, &snap));
    assert!(reason(&facts, &snap).contains(&format!("podman container {} uses it", "q".repeat(64))));
    // The podman container it recorded: listed, its storage record (podman
    // makes one per --rootfs container) or its directory left.
    let mut listed = view.clone();
    listed.ids.insert(podman_id.clone());
    facts.podman = PodmanAnswer::Answered(listed);
    assert!(!goes(&facts, &snap));
    facts.podman = PodmanAnswer::Answered(view.clone());
    snap.containers.make_mut().push(Container {
        id: podman_id.clone(),
        layer: "c2".into(),
        ..Container::default()
    });
    assert!(!goes(&facts, &snap), "podman's own storage record keeps it");
    snap.containers.make_mut().pop();
    facts.all_data_dirs.insert(format!("c/{podman_id}"));
    assert!(
        !goes(&facts, &snap),
        "podman's container directory keeps it"
    );
    facts.all_data_dirs.clear();
    // None of that: released.
    assert!(goes(&facts, &snap));
}
