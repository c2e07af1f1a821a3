//! The pure decision: what gc removes or repairs in a snapshot, given the
//! facts found on disk.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use super::{is_young, Action, Facts, GcPlan, Skipped};
use crate::records::Layer;
use crate::snapshot::Snapshot;

/// Decide what gc does with `snap`, given `facts` gathered at the same
/// moment, skipping candidates younger than `min_age`.
///
/// Actions come in the order they are applied: record changes first
/// (containers, mapped and incomplete layers, dangling entries, stale
/// mounts), then debris, then repairs.
pub fn plan(snap: &Snapshot, facts: &Facts, min_age: Duration) -> GcPlan {
    let ix = Index::new(snap, facts);
    let mut out = GcPlan::default();
    let young = |created: SystemTime| is_young(created, facts.now, min_age);
    let mut going: HashSet<&str> = HashSet::new();

    for c in &snap.containers {
        // Ours only: the marker must be there, whatever the facts claim.
        let ours = super::RunOwner::from_metadata(&c.metadata).is_some();
        if !ours || !facts.dead_run_containers.contains(&c.id) {
            continue;
        }
        let layer = ix
            .ids
            .contains(c.layer.as_str())
            .then_some(c.layer.as_str());
        let reason = if young(c.created.0.into()) {
            Some("younger than --min-age".to_owned())
        } else if let Some(l) = layer {
            ix.layer_in_use(l, false)
        } else {
            None
        };
        if let Some(reason) = reason {
            out.skipped.push(skip("run-container", &c.id, reason));
            continue;
        }
        going.extend(layer);
        out.actions.push(Action::RunContainer {
            id: c.id.clone(),
            layer: layer.map(str::to_owned),
        });
    }

    for l in &snap.layers {
        if going.contains(l.id.as_str()) {
            continue;
        }
        let incomplete = l.is_incomplete();
        let listed = ix.mapped_of.get(l.id.as_str());
        if !incomplete && listed.is_none() && !ix.is_unlisted_copy(l) {
            continue;
        }
        let kind = if incomplete {
            "incomplete-layer"
        } else {
            "mapped-layer"
        };
        let reason = ix
            .layer_in_use(&l.id, true)
            .or_else(|| young(l.created.0.into()).then(|| "younger than --min-age".to_owned()));
        if let Some(reason) = reason {
            out.skipped.push(skip(kind, &l.id, reason));
            continue;
        }
        let images = listed.cloned().unwrap_or_default();
        going.insert(&l.id);
        out.actions.push(if incomplete {
            Action::IncompleteLayer {
                id: l.id.clone(),
                images,
            }
        } else {
            Action::MappedLayer {
                id: l.id.clone(),
                images,
            }
        });
    }

    for image in &snap.images {
        for m in &image.mapped_layers {
            if !ix.ids.contains(m.as_str()) {
                out.actions.push(Action::DanglingMappedEntry {
                    image: image.id.clone(),
                    layer: m.clone(),
                });
            }
        }
    }

    for m in &snap.mounts {
        if going.contains(m.id.as_str()) || !ix.ids.contains(m.id.as_str()) {
            continue;
        }
        if m.count <= 0 || m.path.is_empty() || !facts.mounted.contains(&m.path) {
            out.actions.push(Action::StaleMount {
                id: m.id.clone(),
                path: m.path.clone(),
            });
        }
    }

    debris(&ix, facts, min_age, &mut out);

    for id in &facts.broken_links {
        if ix.ids.contains(id.as_str()) && !going.contains(id.as_str()) {
            out.actions.push(Action::RepairLink { id: id.clone() });
        }
    }
    out
}

/// Files and directories no record names.
fn debris(ix: &Index<'_>, facts: &Facts, min_age: Duration, out: &mut GcPlan) {
    let mut consider =
        |entries: &[super::DiskEntry], known: &dyn Fn(&str) -> bool, make: fn(String) -> Action| {
            for e in entries {
                if known(&e.name) {
                    continue;
                }
                let action = make(e.name.clone());
                if is_young(e.mtime, facts.now, min_age) {
                    out.skipped.push(skip(
                        action.kind(),
                        &e.name,
                        "younger than --min-age".into(),
                    ));
                } else {
                    out.actions.push(action);
                }
            }
        };
    let layer_known = |id: &str| ix.ids.contains(id);
    let image_known = |id: &str| ix.image_ids.contains(id);
    let layer_dir_known = |id: &str| ix.ids.contains(id) || ix.busy.contains(id);
    consider(&facts.layer_dirs, &layer_dir_known, |id| Action::LayerDir {
        id,
    });
    consider(&facts.tar_splits, &layer_known, |id| Action::TarSplit {
        id,
    });
    consider(&facts.layer_data_dirs, &layer_known, |id| {
        Action::LayerData { id }
    });
    consider(&facts.image_dirs, &image_known, |id| Action::ImageDir {
        id,
    });
    consider(&facts.temp_files, &|_| false, |path| Action::TempFile {
        path,
    });
    let dirs: HashSet<&str> = facts.layer_dirs.iter().map(|e| e.name.as_str()).collect();
    for (entry, target) in &facts.links {
        let alive = target
            .as_deref()
            .is_some_and(|t| ix.ids.contains(t) || dirs.contains(t));
        if alive {
            continue;
        }
        let action = Action::DanglingLink {
            name: entry.name.clone(),
        };
        if is_young(entry.mtime, facts.now, min_age) {
            out.skipped.push(skip(
                action.kind(),
                &entry.name,
                "younger than --min-age".into(),
            ));
        } else {
            out.actions.push(action);
        }
    }
}

fn skip(kind: &'static str, id: &str, reason: String) -> Skipped {
    Skipped {
        kind,
        id: id.to_owned(),
        reason,
    }
}

/// Who uses what, computed once per plan.
struct Index<'a> {
    ids: HashSet<&'a str>,
    image_ids: HashSet<&'a str>,
    /// Layer -> a child layer.
    child: HashMap<&'a str, &'a str>,
    /// Layer -> the image whose top layer it is.
    top_of: HashMap<&'a str, &'a str>,
    /// Layer -> the container whose read-write layer it is.
    container_of: HashMap<&'a str, &'a str>,
    /// Layer -> images listing it in `mapped-layers`.
    mapped_of: HashMap<&'a str, Vec<String>>,
    /// Layer -> where it is mounted right now.
    mounted: HashMap<&'a str, &'a str>,
    /// Layers with a mount inside their directory.
    busy: HashSet<String>,
    tops: Vec<&'a Layer>,
}

impl<'a> Index<'a> {
    fn new(snap: &'a Snapshot, facts: &Facts) -> Self {
        let by_id: HashMap<&str, &Layer> = snap.layers.iter().map(|l| (l.id.as_str(), l)).collect();
        let mut mapped_of: HashMap<&str, Vec<String>> = HashMap::new();
        for image in &snap.images {
            for m in &image.mapped_layers {
                mapped_of
                    .entry(m.as_str())
                    .or_default()
                    .push(image.id.clone());
            }
        }
        Index {
            ids: by_id.keys().copied().collect(),
            image_ids: snap.images.iter().map(|i| i.id.as_str()).collect(),
            child: snap
                .layers
                .iter()
                .filter(|l| !l.parent.is_empty())
                .map(|l| (l.parent.as_str(), l.id.as_str()))
                .collect(),
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
            mounted: snap
                .mounts
                .iter()
                .filter(|m| m.count > 0 && facts.mounted.contains(&m.path))
                .map(|m| (m.id.as_str(), m.path.as_str()))
                .collect(),
            busy: facts.busy_layers.clone(),
            tops: snap
                .images
                .iter()
                .filter_map(|i| by_id.get(i.top_layer.as_str()).copied())
                .collect(),
        }
    }

    /// Why layer `id` must stay, if it must. `check_container`: also keep a
    /// container's layer (off for the layer of the container being removed).
    fn layer_in_use(&self, id: &str, check_container: bool) -> Option<String> {
        if let Some(child) = self.child.get(id) {
            return Some(format!("layer {child} is stacked on it"));
        }
        if let Some(image) = self.top_of.get(id) {
            return Some(format!("it is the top layer of image {image}"));
        }
        if check_container {
            if let Some(c) = self.container_of.get(id) {
                return Some(format!("it is the layer of container {c}"));
            }
        }
        if let Some(path) = self.mounted.get(id) {
            return Some(format!("it is mounted at {path}"));
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
                .iter()
                .any(|t| t.id != l.id && t.parent == l.parent && t.diff_digest == l.diff_digest)
    }
}
