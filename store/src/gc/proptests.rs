//! Property tests of the pure plan: over generated snapshots and disk
//! facts (sound, broken and hostile), a plan never names anything outside
//! the store, never removes what a record names or what stays in use, and
//! does nothing at all in a store with defects.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime};

use proptest::prelude::*;

use super::*;
use crate::consistency::{cross_check, Files};
use crate::id::id_problem;
use crate::idmap::IdMap;
use crate::records::{Container, Image, Layer, MountPoint, FLAG_INCOMPLETE};
use crate::Snapshot;

const MAP: IdMap = IdMap {
    container_id: 0,
    host_id: 100000,
    size: 65536,
};

/// Names drawn from: valid ids, and strings no record may hold.
fn name(i: usize) -> String {
    const HOSTILE: [&str; 6] = ["..", "../x", "/abs", ".hidden", "a:b", "l"];
    if i >= 100 {
        HOSTILE[i % HOSTILE.len()].to_owned()
    } else {
        format!("id{i}")
    }
}

#[derive(Debug, Clone)]
struct Gen {
    layers: Vec<(usize, Option<usize>, bool, bool, bool)>,
    images: Vec<(usize, usize, Vec<usize>)>,
    containers: Vec<(usize, usize, bool, bool)>,
    mounts: Vec<(usize, i64)>,
    extra_dirs: Vec<usize>,
    debris: Vec<usize>,
    mounted: Vec<usize>,
    busy: Vec<usize>,
    stacked: Vec<usize>,
    lowers_unknown: bool,
    traces: Vec<usize>,
    young: Vec<usize>,
    hostile: bool,
}

fn gen() -> impl Strategy<Value = Gen> {
    let idx = || prop_oneof![9 => 0usize..24, 1 => 100usize..106];
    (
        prop::collection::vec(
            (
                0usize..24,
                prop::option::of(0usize..24),
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
            ),
            0..20,
        ),
        prop::collection::vec((0usize..6, idx(), prop::collection::vec(idx(), 0..4)), 0..4),
        prop::collection::vec((0usize..6, idx(), any::<bool>(), any::<bool>()), 0..5),
        prop::collection::vec((idx(), -1i64..3), 0..4),
        prop::collection::vec(0usize..30, 0..6),
        prop::collection::vec(0usize..30, 0..6),
        (
            prop::collection::vec(0usize..24, 0..4),
            prop::collection::vec(0usize..30, 0..3),
            prop::collection::vec(0usize..30, 0..3),
            any::<bool>(),
            prop::collection::vec(0usize..24, 0..3),
            prop::collection::vec(0usize..24, 0..3),
            prop::bool::weighted(0.2),
        ),
    )
        .prop_map(
            |(layers, images, containers, mounts, extra_dirs, debris, rest)| Gen {
                layers,
                images,
                containers,
                mounts,
                extra_dirs,
                debris,
                mounted: rest.0,
                busy: rest.1,
                stacked: rest.2,
                lowers_unknown: rest.3,
                traces: rest.4,
                young: rest.5,
                hostile: rest.6,
            },
        )
}

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// The snapshot and facts `g` describes; defects as the store computes them.
fn build(g: &Gen) -> (Snapshot, Facts) {
    let now = 10_000;
    // Layer i may stack on any layer before it: the graph is a DAG unless
    // the case is hostile (then references may dangle, loop, or be
    // strings no record may hold).
    let mut layers: Vec<Layer> = Vec::new();
    for (n, &(i, parent, incomplete, mapped, flagged)) in g.layers.iter().enumerate() {
        let id = format!("id{n}");
        let parent = match parent {
            Some(p) if g.hostile && p % 5 == 0 => name(p + 100 * (p % 2)),
            Some(p) if g.hostile && p % 5 == 1 => format!("id{}", n + p),
            Some(p) if n > 0 => format!("id{}", p % n),
            _ => String::new(),
        };
        let mut l = Layer {
            id,
            parent,
            diff_digest: format!("sha256:{}", i % 3),
            created: crate::gojson::GoTime(
                chrono::DateTime::<chrono::Utc>::from(t(if g.young.contains(&i) {
                    now
                } else {
                    1
                }))
                .fixed_offset(),
            ),
            ..Layer::default()
        };
        if incomplete && i % 3 == 0 {
            l.flags
                .insert(FLAG_INCOMPLETE.into(), serde_json::Value::Bool(true));
        }
        if mapped {
            l.uidmap = vec![MAP];
            l.gidmap = vec![MAP];
        }
        if flagged {
            l.flags.insert(
                crate::ops::FLAG_CONTAINER.into(),
                serde_json::Value::String(format!("ctr{}", i % 4)),
            );
        }
        layers.push(l);
    }
    let count = layers.len().max(1);
    let pick = |i: usize| {
        if g.hostile && i >= 100 {
            name(i)
        } else {
            format!("id{}", i % count)
        }
    };
    let images: Vec<Image> = g
        .images
        .iter()
        .enumerate()
        .map(|(n, (_, top, mapped))| Image {
            id: format!("img{n}"),
            top_layer: if layers.is_empty() {
                String::new()
            } else {
                pick(*top)
            },
            mapped_layers: mapped.iter().map(|m| pick(*m)).collect(),
            ..Image::default()
        })
        .collect();
    let containers: Vec<Container> = g
        .containers
        .iter()
        .enumerate()
        .filter(|_| !layers.is_empty())
        .map(|(n, (_, layer, ours, _))| Container {
            id: format!("ctr{n}"),
            layer: pick(*layer),
            metadata: if *ours {
                crate::ops::mark_created_by_layerstore(
                    &RunOwner {
                        pid: 1,
                        start_time: 1,
                    }
                    .to_metadata(),
                )
            } else {
                r#"{"name":"podman"}"#.into()
            },
            ..Container::default()
        })
        .collect();
    // Most of a run's containers carry every mark (their layer's flag names
    // them); the others lack the flag, and must count as podman's.
    for (n, c) in containers.iter().enumerate() {
        if n % 3 != 0 && RunOwner::from_metadata(&c.metadata).is_some() {
            if let Some(l) = layers.iter_mut().find(|l| l.id == c.layer) {
                l.flags.insert(
                    crate::ops::FLAG_CONTAINER.into(),
                    serde_json::Value::String(c.id.clone()),
                );
            }
        }
    }
    let mounts: Vec<MountPoint> = g
        .mounts
        .iter()
        .map(|(i, count)| MountPoint {
            id: pick(*i),
            path: format!("/g/overlay/{}/merged", pick(*i)),
            count: *count,
            ..MountPoint::default()
        })
        .collect();
    let files = Files {
        layers: std::path::Path::new("layers.json"),
        images: std::path::Path::new("images.json"),
        containers: std::path::Path::new("containers.json"),
    };
    let mut defects = cross_check(files, &layers, &images, &containers);
    for l in &layers {
        if let Some(reason) = id_problem(&l.id) {
            defects.push(crate::consistency::Defect::InvalidId {
                file: "layers.json".into(),
                index: 0,
                kind: "layer",
                id: l.id.clone(),
                reason,
            });
        }
    }
    let mounts = crate::consistency::mounts_of_layers(mounts, &layers);
    let mut all_layer_dirs: HashSet<String> = layers.iter().map(|l| l.id.clone()).collect();
    let recorded = all_layer_dirs.clone();
    let entry = |n: String| DiskEntry {
        name: LayerId::parse(&n).unwrap(),
        mtime: t(if n.ends_with('7') { now } else { 1 }),
    };
    let mut layer_dirs = Vec::new();
    for &d in &g.extra_dirs {
        let n = format!("dir{d}");
        if all_layer_dirs.insert(n.clone()) {
            layer_dirs.push(entry(n));
        }
    }
    let debris: Vec<String> = g
        .debris
        .iter()
        .map(|d| name(*d))
        .filter(|n| !recorded.contains(n) && id_problem(n).is_none())
        .collect();
    let facts = Facts {
        now: t(now),
        all_layer_dirs,
        layer_dirs,
        tar_splits: debris.iter().cloned().map(entry).collect(),
        layer_data_dirs: debris.iter().cloned().map(entry).collect(),
        image_dirs: g
            .debris
            .iter()
            .map(|d| DiskEntry {
                name: crate::id::ImageId::parse(&format!("img{d}")).unwrap(),
                mtime: t(1),
            })
            .collect(),
        mounted: g.mounted.iter().map(|i| format!("id{i}")).collect(),
        busy_layers: g.busy.iter().map(|i| format!("dir{i}")).collect(),
        stacked_on: g
            .stacked
            .iter()
            .map(|i| (format!("id{i}"), vec![format!("dir{}", i + 1)]))
            .chain(
                g.stacked
                    .iter()
                    .map(|i| (format!("dir{i}"), vec![format!("id{i}")])),
            )
            .collect(),
        unreadable_lowers: if g.lowers_unknown {
            vec!["dir0".into()]
        } else {
            vec![]
        },
        dead_run_containers: g
            .containers
            .iter()
            .enumerate()
            .filter(|(_, c)| c.3)
            .map(|(n, _)| format!("ctr{n}"))
            .collect(),
        mapped_traces: g
            .traces
            .iter()
            .map(|i| {
                let n = format!("id{i}");
                let path = std::path::PathBuf::from("/g/overlay").join(&n);
                (n, path)
            })
            .collect(),
        ..Facts::default()
    };
    let snap = Snapshot {
        layers: layers.into(),
        images: images.into(),
        containers: containers.into(),
        mounts,
        defects,
    };
    (snap, facts)
}

/// Every string any record holds, as an id or a reference.
fn named(snap: &Snapshot) -> HashSet<String> {
    let mut out = HashSet::new();
    for l in snap.layers.iter() {
        out.insert(l.id.clone());
        out.insert(l.parent.clone());
    }
    for i in snap.images.iter() {
        out.insert(i.id.clone());
        out.insert(i.top_layer.clone());
        out.extend(i.mapped_layers.iter().cloned());
    }
    for c in snap.containers.iter() {
        out.insert(c.id.clone());
        out.insert(c.layer.clone());
        out.insert(c.image.clone());
    }
    for m in &snap.mounts {
        out.insert(m.id.clone());
    }
    out
}

fn check(snap: &Snapshot, facts: &Facts, p: &GcPlan) -> Result<(), TestCaseError> {
    if !p.defects.is_empty() {
        prop_assert!(p.actions.is_empty(), "actions despite defects: {p:?}");
        return Ok(());
    }
    prop_assert!(snap.defects.is_empty());
    let names = named(snap);
    let removed: Vec<&str> = p
        .actions
        .iter()
        .filter_map(Action::removed_layer)
        .map(LayerId::as_str)
        .collect();
    let removed_set: HashSet<&str> = removed.iter().copied().collect();
    let dead_ctrs: HashSet<&str> = p
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::RunContainer { id, .. } => Some(id.as_str()),
            _ => None,
        })
        .collect();
    let recorded_mounted: HashSet<&str> = snap
        .mounts
        .iter()
        .filter(|m| m.count > 0 && facts.mounted.contains(&m.id))
        .map(|m| m.id.as_str())
        .collect();
    let position: BTreeMap<&str, usize> =
        removed.iter().enumerate().map(|(n, l)| (*l, n)).collect();
    for l in &removed {
        prop_assert!(id_problem(l).is_none(), "removes an invalid id {l}");
        prop_assert!(
            !snap.images.iter().any(|i| i.top_layer == *l),
            "removes top layer {l}: {p:?}"
        );
        for c in snap.containers.iter().filter(|c| c.layer == *l) {
            prop_assert!(
                dead_ctrs.contains(c.id.as_str()),
                "removes {l}, the layer of {}",
                c.id
            );
        }
        for child in snap.layers.iter().filter(|c| c.parent == *l) {
            prop_assert!(
                removed_set.contains(child.id.as_str()),
                "removes {l} under {}",
                child.id
            );
            prop_assert!(
                position[child.id.as_str()] < position[l],
                "parent {l} before child"
            );
        }
        let by_dead_run = snap
            .containers
            .iter()
            .any(|c| c.layer == *l && dead_ctrs.contains(c.id.as_str()));
        prop_assert!(
            facts.unreadable_lowers.is_empty(),
            "removes {l} though lowers are unknown"
        );
        for stacker in facts.stacked_on.get(l) {
            prop_assert!(
                removed_set.contains(stacker),
                "removes {l}, which {stacker} stacks on"
            );
        }
        if !by_dead_run {
            prop_assert!(!recorded_mounted.contains(l), "removes mounted {l}");
            prop_assert!(!facts.busy_layers.contains(*l), "removes busy {l}");
        }
    }
    for a in &p.actions {
        match a {
            Action::LayerDir { id } => {
                prop_assert!(!names.contains(id.as_str()), "removes named dir {id}");
                prop_assert!(!facts.stacked_on.contains_key(id.as_str()));
                prop_assert!(!facts.busy_layers.contains(id.as_str()));
                prop_assert!(facts.unreadable_lowers.iter().all(|u| u == id.as_str()));
            }
            Action::TarSplit { id } | Action::LayerData { id } => {
                prop_assert!(!names.contains(id.as_str()), "removes named {id}: {a:?}")
            }
            Action::ImageDir { id } => prop_assert!(!names.contains(id.as_str())),
            Action::RunContainer { id, .. } => {
                let c = snap
                    .containers
                    .iter()
                    .find(|c| c.id == id.as_str())
                    .unwrap();
                prop_assert!(super::run_owner_of(c, &snap.layers).is_some());
                prop_assert!(facts.dead_run_containers.contains(id.as_str()));
            }
            Action::TempFile { name, .. } => prop_assert!(is_temp_name(name)),
            Action::DanglingLink { name } | Action::Trash { name } => {
                prop_assert!(!name.contains('/'))
            }
            _ => {}
        }
        prop_assert!(
            !a.subject().contains('/') || matches!(a, Action::DanglingMappedEntry { .. }),
            "a path in {a:?}"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn plans_never_reach_outside_the_store_or_what_records_name(g in gen()) {
        let (snap, facts) = build(&g);
        let p = plan(&snap, &facts, Duration::from_secs(60));
        check(&snap, &facts, &p)?;
        let p = plan(&snap, &facts, Duration::ZERO);
        check(&snap, &facts, &p)?;
    }
}

#[test]
fn generated_stores_are_often_sound_and_busy() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut sound, mut with_removals, mut with_debris) = (0, 0, 0);
    for _ in 0..500 {
        let g = gen().new_tree(&mut runner).unwrap().current();
        let (snap, facts) = build(&g);
        let p = plan(&snap, &facts, Duration::ZERO);
        if p.defects.is_empty() {
            sound += 1;
            with_removals += usize::from(p.actions.iter().any(|a| a.removed_layer().is_some()));
            with_debris += usize::from(p.actions.iter().any(|a| a.kind() == "layer-dir"));
        }
    }
    // The generator must exercise the interesting paths, not only refusals.
    eprintln!("{sound} sound, {with_removals} removing layers, {with_debris} removing debris");
    assert!(sound > 100, "{sound} sound stores of 500");
    assert!(with_removals > 30, "{with_removals} plans removing layers");
    assert!(with_debris > 30, "{with_debris} plans removing debris");
}
