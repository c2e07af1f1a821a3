//! The pure decision: whether gc may change the store at all, and what it
//! removes or repairs in a snapshot, given the facts found on disk.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use super::{is_young, Action, Facts, GcPlan, PodmanAnswer, Skipped};
use crate::consistency::Defect;
use crate::id::{ContainerId, ImageId, LayerId};
use crate::ops::FLAG_CONTAINER;
use crate::records::{Container, Layer};
use crate::snapshot::Snapshot;

/// Decide what gc does with `snap`, given `facts` gathered at the same
/// moment, skipping candidates younger than `min_age`.
///
/// When the store has defects ([`store_defects`]) the plan holds them and
/// no action. Otherwise actions come in the order they are applied: record
/// changes first (containers, layers, dangling entries, mounts), then
/// debris, then repairs. No action ever names something a record names,
/// except the records it removes (see the module docs of [`super`]).
pub fn plan(snap: &Snapshot, facts: &Facts, min_age: Duration) -> GcPlan {
    let mut out = GcPlan {
        recorded_layers: snap.layers.len(),
        defects: store_defects(snap, facts),
        ..GcPlan::default()
    };
    if !out.defects.is_empty() {
        return out;
    }
    let ix = Index::new(snap, facts);
    let young = |created: SystemTime| is_young(created, facts.now, min_age);
    let mut going: crate::FastSet<&str> = crate::FastSet::default();

    for c in snap.containers.iter() {
        // Ours only: every mark a run leaves must be there, whatever the
        // facts claim.
        let ours = super::run_owner_of(c, &snap.layers).is_some();
        if let Some(pid) = facts.running_dead_runs.get(&c.id).filter(|_| ours) {
            out.skipped.push(skip(
                "run-container",
                &c.id,
                format!("its run is gone but process {pid} still runs in it"),
            ));
            continue;
        }
        if !ours || !facts.dead_run_containers.contains(&c.id) {
            continue;
        }
        if let Some(reason) = podman_keeps(c, snap, facts) {
            out.skipped.push(skip("run-container", &c.id, reason));
            continue;
        }
        let Ok(id) = ContainerId::parse(&c.id) else {
            continue;
        };
        let layer = ix
            .ids
            .contains(c.layer.as_str())
            .then(|| LayerId::parse(&c.layer).ok())
            .flatten();
        let reason = if young(c.created.0.into()) {
            Some("younger than --min-age".to_owned())
        } else if let Some(l) = &layer {
            ix.stacked_or_top(l.as_str(), &going)
        } else {
            None
        };
        if let Some(reason) = reason {
            out.skipped.push(skip("run-container", &c.id, reason));
            continue;
        }
        let unmount = layer.as_ref().is_some_and(|l| {
            facts.mounted.contains(l.as_str()) || facts.busy_layers.contains(l.as_str())
        });
        if let Some(l) = &layer {
            going.insert(ix.ids.get(l.as_str()).copied().unwrap_or_default());
        }
        out.actions
            .push(Action::RunContainer { id, layer, unmount });
    }

    // Mounts no record counts (a mounter killed before it recorded the
    // mount) are undone first, in the first batch, so that the layers
    // under them can go in this gc too.
    for id in ix.unrecorded.iter().filter(|id| !going.contains(*id)) {
        if let Ok(id) = LayerId::parse(id) {
            out.actions.push(Action::UnrecordedMount { id });
        }
    }

    // Layers, until nothing more can go: a template whose only child is an
    // orphan or a dead run's layer goes in the same gc. Children come
    // before their parents, so a batch never drops a parent's record while
    // its child's stays.
    loop {
        let mut more = false;
        for l in snap.layers.iter() {
            if going.contains(l.id.as_str()) {
                continue;
            }
            let Some((_, make)) = ix.candidate(l) else {
                continue;
            };
            if ix.layer_in_use(&l.id, &going).is_some() || young(l.created.0.into()) {
                continue;
            }
            let Ok(id) = LayerId::parse(&l.id) else {
                continue;
            };
            going.insert(&l.id);
            out.actions.push(make(id));
            more = true;
        }
        if !more {
            break;
        }
    }
    for l in snap.layers.iter() {
        if going.contains(l.id.as_str()) {
            continue;
        }
        let Some((kind, _)) = ix.candidate(l) else {
            continue;
        };
        let reason = ix
            .layer_in_use(&l.id, &going)
            .or_else(|| young(l.created.0.into()).then(|| "younger than --min-age".to_owned()));
        if let Some(reason) = reason {
            out.skipped.push(skip(kind, &l.id, reason));
        }
    }

    for image in snap.images.iter() {
        for m in &image.mapped_layers {
            if !ix.ids.contains(m.as_str()) && !facts.mapped_traces.contains_key(m) {
                if let Ok(image) = ImageId::parse(&image.id) {
                    out.actions.push(Action::DanglingMappedEntry {
                        image,
                        layer: m.clone(),
                    });
                }
            }
        }
    }

    for m in &snap.mounts {
        if going.contains(m.id.as_str()) || !ix.ids.contains(m.id.as_str()) {
            continue;
        }
        if m.count <= 0 || m.path.is_empty() || !facts.mounted.contains(&m.id) {
            if let Ok(id) = LayerId::parse(&m.id) {
                out.actions.push(Action::StaleMount {
                    id,
                    path: m.path.clone(),
                });
            }
        }
    }

    let lost = lost_container(snap, facts);
    debris(&ix, facts, min_age, lost.as_deref(), &mut out);

    for id in &facts.broken_links {
        if ix.ids.contains(id.as_str()) && !going.contains(id.as_str()) {
            out.actions.push(Action::RepairLink { id: id.clone() });
        }
    }
    out
}

/// Why gc must not touch the store at all: the snapshot's defects, and
/// what only the disk shows. An empty list: the store can be trusted.
pub fn store_defects(snap: &Snapshot, facts: &Facts) -> Vec<Defect> {
    let mut out = snap.defects.clone();
    let files = &facts.files;
    if snap.layers.is_empty() {
        let evidence = if let Some(dir) = facts.all_layer_dirs.iter().min() {
            Some(format!(
                "{} layer directories exist (e.g. {})",
                facts.all_layer_dirs.len(),
                files.home.join(dir).display()
            ))
        } else if let Some(i) = snap.images.iter().find(|i| !i.top_layer.is_empty()) {
            Some(format!("image {} names top layer {}", i.id, i.top_layer))
        } else {
            snap.containers
                .first()
                .map(|c| format!("container {} names layer {}", c.id, c.layer))
        };
        if let Some(evidence) = evidence {
            out.push(Defect::NoLayerRecords {
                file: files.layers.clone(),
                evidence,
            });
        }
    }
    for l in snap.layers.iter() {
        if !l.is_incomplete() && !facts.all_layer_dirs.contains(&l.id) {
            out.push(Defect::LayerDirMissing {
                file: files.layers.clone(),
                layer: l.id.clone(),
                dir: files.home.join(&l.id),
            });
        }
    }
    for i in snap.images.iter() {
        if !i.big_data_names.is_empty() && !facts.all_data_dirs.contains(&format!("i/{}", i.id)) {
            out.push(Defect::DataDirMissing {
                file: files.images.clone(),
                kind: "image",
                id: i.id.clone(),
                dir: files.graph.join("overlay-images").join(&i.id),
            });
        }
    }
    for c in snap.containers.iter() {
        if !c.big_data_names.is_empty() && !facts.all_data_dirs.contains(&format!("c/{}", c.id)) {
            out.push(Defect::DataDirMissing {
                file: files.containers.clone(),
                kind: "container",
                id: c.id.clone(),
                dir: files.graph.join("overlay-containers").join(&c.id),
            });
        }
    }
    for i in snap.images.iter() {
        for m in &i.mapped_layers {
            if let Some(trace) = facts.mapped_traces.get(m) {
                out.push(Defect::MappedLayerRecordLost {
                    file: files.images.clone(),
                    image: i.id.clone(),
                    layer: m.clone(),
                    trace: trace.clone(),
                });
            }
        }
    }
    out
}

/// Why storage container `c`, handed to podman by `layerstore run`, must
/// stay although its run is gone: podman uses it, or podman's answer does
/// not show that it does not. `None`: not handed to podman, or released.
fn podman_keeps(c: &Container, snap: &Snapshot, facts: &Facts) -> Option<String> {
    let marker = super::PodmanUse::from_metadata(&c.metadata)?;
    let view = match &facts.podman {
        PodmanAnswer::NotAsked => {
            return Some("podman was not asked whether a container of its uses it".to_owned())
        }
        PodmanAnswer::Failed(why) => {
            return Some(format!(
                "podman could not be asked whether a container of its uses it: {why}"
            ))
        }
        PodmanAnswer::Answered(view) => view,
    };
    if !view.dead_before.contains(&c.id) {
        return Some("its run ended after podman was asked; the next gc decides".to_owned());
    }
    if let Some(user) = view.storage_users.get(&c.id) {
        return Some(format!("podman container {user} uses it"));
    }
    // podman keeps a storage container of its own (same id, an empty
    // layer) for each --rootfs container, in this store whatever podman's
    // database and configuration: while it or its directory is there, so is
    // podman's container, whatever podman ps said.
    // (A run killed before it noted the id: the gc command reads podman's
    // cidfile into `storage_users`.)
    let recorded = marker.container.as_str();
    if !recorded.is_empty()
        && (view.ids.contains(recorded)
            || snap.containers.iter().any(|o| o.id == recorded)
            || facts.all_data_dirs.contains(&format!("c/{recorded}")))
    {
        return Some(format!("podman container {recorded} still exists"));
    }
    None
}

/// Files and directories no record names.
/// A graphroot `overlay-containers/<name>` directory that no container
/// record names and no layer's container flag accounts for, if any: a
/// container whose record is gone, whose layer's record may be gone with
/// it (records dropped consistently), so whose layer directory would look
/// like debris. The first such name, in order.
fn lost_container(snap: &Snapshot, facts: &Facts) -> Option<String> {
    let known: crate::FastSet<&str> = snap
        .containers
        .iter()
        .map(|c| c.id.as_str())
        .chain(
            snap.layers
                .iter()
                .filter_map(|l| l.flags.get(FLAG_CONTAINER)?.as_str()),
        )
        .collect();
    let mut lost: Vec<&str> = facts
        .all_data_dirs
        .iter()
        .filter_map(|n| n.strip_prefix("c/"))
        .filter(|n| !known.contains(n))
        .collect();
    lost.sort_unstable();
    lost.first().map(|n| (*n).to_owned())
}

fn debris(
    ix: &Index<'_>,
    facts: &Facts,
    min_age: Duration,
    lost_container: Option<&str>,
    out: &mut GcPlan,
) {
    let old = |mtime: SystemTime| !is_young(mtime, facts.now, min_age);
    let mut keep = |kind: &'static str, name: &str, reason: &str| {
        out.skipped.push(skip(kind, name, reason.to_owned()));
    };
    // A directory another one stacks on stays, and with it what a record
    // for it would need again (its tar-split and data).
    let stacker = |name: &str| {
        facts
            .stacked_on
            .get(name)
            .next()
            .map(|s| format!("layer directory {s} stacks on it"))
    };
    let lost_dir = lost_container.map(|c| {
        format!(
            "overlay-containers/{c} has no container record: its container's layer may have \
             lost its record too (remove that directory if it is debris)"
        )
    });
    let mut actions = Vec::new();
    for e in &facts.layer_dirs {
        let name = e.name.as_str();
        let stacked = stacker(name);
        let reason = if ix.named_layers.contains(name) {
            Some("a record names it")
        } else if let Some(s) = &stacked {
            Some(s.as_str())
        } else if facts.unreadable_lowers.iter().any(|u| u.as_str() != name) {
            Some("the lower files of some layer directories cannot be read")
        } else if let Some(c) = &lost_dir {
            Some(c.as_str())
        } else if facts.busy_layers.contains(name) {
            Some("something is mounted inside it")
        } else if !old(e.mtime) {
            Some("younger than --min-age")
        } else {
            None
        };
        match reason {
            Some(r) => keep("layer-dir", name, r),
            None => actions.push(Action::LayerDir { id: e.name.clone() }),
        }
    }
    for name in &facts.odd_names {
        keep(
            "layer-dir",
            name,
            "its name is not a valid layer id (look at it by hand)",
        );
    }
    for (entries, kind, make) in [
        (
            &facts.tar_splits,
            "tar-split",
            (|id| Action::TarSplit { id }) as fn(LayerId) -> Action,
        ),
        (&facts.layer_data_dirs, "layer-data", |id| {
            Action::LayerData { id }
        }),
    ] {
        for e in entries {
            if ix.named_layers.contains(e.name.as_str()) {
                keep(kind, e.name.as_str(), "a record names it");
            } else if let Some(s) = stacker(e.name.as_str()) {
                keep(kind, e.name.as_str(), &s);
            } else if !old(e.mtime) {
                keep(kind, e.name.as_str(), "younger than --min-age");
            } else {
                actions.push(make(e.name.clone()));
            }
        }
    }
    for e in &facts.image_dirs {
        if ix.named_images.contains(e.name.as_str()) {
            keep("image-dir", e.name.as_str(), "a record names it");
        } else if !old(e.mtime) {
            keep("image-dir", e.name.as_str(), "younger than --min-age");
        } else {
            actions.push(Action::ImageDir { id: e.name.clone() });
        }
    }
    for (dir, e) in &facts.temp_files {
        if old(e.mtime) {
            actions.push(Action::TempFile {
                dir: *dir,
                name: e.name.clone(),
            });
        } else {
            keep("temp-file", &e.name, "younger than --min-age");
        }
    }
    for name in &facts.trash {
        actions.push(Action::Trash { name: name.clone() });
    }
    for link in &facts.links {
        let alive = link
            .layer
            .as_deref()
            .is_some_and(|t| ix.ids.contains(t) || facts.all_layer_dirs.contains(t));
        if alive {
            continue;
        }
        if old(link.mtime) {
            actions.push(Action::DanglingLink {
                name: link.name.clone(),
            });
        } else {
            keep("dangling-link", &link.name, "younger than --min-age");
        }
    }
    out.actions.extend(actions);
}

fn skip(kind: &'static str, id: &str, reason: String) -> Skipped {
    Skipped {
        kind,
        id: id.to_owned(),
        reason,
    }
}

/// A layer-removing action for a layer id.
type MakeAction<'a> = Box<dyn Fn(LayerId) -> Action + 'a>;

/// Who uses what, computed once per plan.
struct Index<'a> {
    ids: crate::FastSet<&'a str>,
    /// Every layer id any record names (ids, parents, top layers, mapped
    /// entries, container layers, mount records).
    named_layers: crate::FastSet<&'a str>,
    /// Every image id any record names.
    named_images: crate::FastSet<&'a str>,
    /// Layer -> its child layers.
    children: crate::FastMap<&'a str, Vec<&'a str>>,
    /// Layer -> the image whose top layer it is.
    top_of: crate::FastMap<&'a str, &'a str>,
    /// Layer -> the container whose read-write layer it is.
    container_of: crate::FastMap<&'a str, &'a str>,
    /// Layer -> images listing it in `mapped-layers`.
    mapped_of: crate::FastMap<&'a str, Vec<&'a str>>,
    /// Layers mounted right now (by mount point) with a mount record.
    mounted: crate::FastSet<&'a str>,
    /// Layers mounted right now without any mount record: unmounted by gc.
    unrecorded: Vec<&'a str>,
    /// Layers with something else mounted inside their directory.
    busy: &'a HashSet<String>,
    /// Layer -> the layer directories whose files say they stack on it.
    stacked_on: &'a super::facts::StackedOn,
    /// Layer directories whose lower files could not be read.
    unreadable_lowers: &'a [String],
    /// Images' top layers by (parent, diff digest): the ids.
    tops: crate::FastMap<(&'a str, &'a str), Vec<&'a str>>,
}

impl<'a> Index<'a> {
    fn new(snap: &'a Snapshot, facts: &'a Facts) -> Self {
        let by_id: crate::FastMap<&str, &Layer> =
            snap.layers.iter().map(|l| (l.id.as_str(), l)).collect();
        let mut mapped_of: crate::FastMap<&str, Vec<&str>> = crate::FastMap::default();
        for image in snap.images.iter() {
            for m in &image.mapped_layers {
                mapped_of
                    .entry(m.as_str())
                    .or_default()
                    .push(image.id.as_str());
            }
        }
        let mut named_layers: crate::FastSet<&str> = crate::FastSet::default();
        for l in snap.layers.iter() {
            named_layers.insert(&l.id);
            named_layers.insert(&l.parent);
        }
        for i in snap.images.iter() {
            named_layers.insert(&i.top_layer);
            named_layers.extend(i.mapped_layers.iter().map(String::as_str));
        }
        for c in snap.containers.iter() {
            named_layers.insert(&c.layer);
        }
        for m in &snap.mounts {
            named_layers.insert(&m.id);
        }
        let mut named_images: crate::FastSet<&str> =
            snap.images.iter().map(|i| i.id.as_str()).collect();
        named_images.extend(snap.containers.iter().map(|c| c.image.as_str()));
        Index {
            ids: by_id.keys().copied().collect(),
            named_layers,
            named_images,
            children: {
                let mut children: crate::FastMap<&str, Vec<&str>> = crate::FastMap::default();
                for l in snap.layers.iter().filter(|l| !l.parent.is_empty()) {
                    children
                        .entry(l.parent.as_str())
                        .or_default()
                        .push(l.id.as_str());
                }
                children
            },
            top_of: snap
                .images
                .iter()
                .map(|i| (i.top_layer.as_str(), i.id.as_str()))
                .collect(),
            container_of: snap
                .containers
                .iter()
                .map(|c| (c.layer.as_str(), c.id.as_str()))
                .collect(),
            mapped_of,
            mounted: facts
                .mounted
                .iter()
                .map(String::as_str)
                .filter(|id| snap.mounts.iter().any(|m| m.id == *id && m.count > 0))
                .collect(),
            unrecorded: {
                let mut u: Vec<&str> = facts
                    .mounted
                    .iter()
                    .map(String::as_str)
                    .filter(|id| by_id.contains_key(id))
                    .filter(|id| !snap.mounts.iter().any(|m| m.id == *id && m.count > 0))
                    .collect();
                u.sort_unstable();
                u
            },
            busy: &facts.busy_layers,
            stacked_on: &facts.stacked_on,
            unreadable_lowers: &facts.unreadable_lowers,
            tops: {
                let mut tops: crate::FastMap<(&str, &str), Vec<&str>> = crate::FastMap::default();
                for t in snap
                    .images
                    .iter()
                    .filter_map(|i| by_id.get(i.top_layer.as_str()).copied())
                {
                    tops.entry((t.parent.as_str(), t.diff_digest.as_str()))
                        .or_default()
                        .push(t.id.as_str());
                }
                tops
            },
        }
    }

    /// Whether `l` is a candidate for removal, and as what.
    fn candidate(&self, l: &Layer) -> Option<(&'static str, MakeAction<'_>)> {
        let listed = self.mapped_of.get(l.id.as_str());
        // The images' ids copied only into the action made.
        let images = move || {
            listed
                .map(|v| v.iter().map(|i| (*i).to_owned()).collect())
                .unwrap_or_default()
        };
        if l.is_incomplete() {
            return Some((
                "incomplete-layer",
                Box::new(move |id| Action::IncompleteLayer {
                    id,
                    images: images(),
                }),
            ));
        }
        if listed.is_some() || self.is_unlisted_copy(l) {
            return Some((
                "mapped-layer",
                Box::new(move |id| Action::MappedLayer {
                    id,
                    images: images(),
                }),
            ));
        }
        let owner = l.flags.get(FLAG_CONTAINER)?.as_str()?.to_owned();
        if self.container_of.contains_key(l.id.as_str()) {
            return None;
        }
        Some((
            "orphan-layer",
            Box::new(move |id| Action::OrphanLayer {
                id,
                container: owner.clone(),
            }),
        ))
    }

    /// Why layer `id` must stay because of other layers (a child, by
    /// record or by the driver's own files, that is not `going` too) or an
    /// image, if it must.
    fn stacked_or_top(&self, id: &str, going: &crate::FastSet<&str>) -> Option<String> {
        let staying = self
            .children
            .get(id)
            .and_then(|c| c.iter().find(|c| !going.contains(*c)));
        if let Some(child) = staying {
            return Some(format!("layer {child} is stacked on it"));
        }
        let on_disk = self
            .stacked_on
            .get(id)
            .find(|c| !going.contains(c) && *c != id);
        if let Some(dir) = on_disk {
            return Some(format!(
                "layer directory {dir} stacks on it (its lower files say so)"
            ));
        }
        // A directory whose lower files cannot be read may stack on
        // anything, unless it goes too.
        let unknown = self
            .unreadable_lowers
            .iter()
            .find(|u| u.as_str() != id && !going.contains(u.as_str()));
        if let Some(dir) = unknown {
            return Some(format!(
                "the lower files of layer directory {dir} cannot be read, so what stacks on this layer is unknown"
            ));
        }
        if let Some(image) = self.top_of.get(id) {
            return Some(format!("it is the top layer of image {image}"));
        }
        None
    }

    /// Why layer `id` must stay, if it must (children in `going` go with
    /// it).
    fn layer_in_use(&self, id: &str, going: &crate::FastSet<&str>) -> Option<String> {
        if let Some(reason) = self.stacked_or_top(id, going) {
            return Some(reason);
        }
        if let Some(c) = self.container_of.get(id) {
            return Some(format!("it is the layer of container {c}"));
        }
        if self.mounted.contains(id) {
            return Some("it is mounted".to_owned());
        }
        if self.busy.contains(id) {
            return Some("something is mounted inside its directory".to_owned());
        }
        None
    }

    /// An unnamed layer carrying maps with the same parent and content as
    /// an image's top layer: a mapped template whose `mapped-layers` entry
    /// was dropped (or never written) before a crash.
    fn is_unlisted_copy(&self, l: &Layer) -> bool {
        l.is_mapped()
            && l.names.is_empty()
            && !l.diff_digest.is_empty()
            && self
                .tops
                .get(&(l.parent.as_str(), l.diff_digest.as_str()))
                .is_some_and(|ids| ids.iter().any(|t| *t != l.id))
    }
}
