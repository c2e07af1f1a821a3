//! `gc`: reclaim orphaned ID-mapped template layers and store debris from a
//! store podman keeps using.
//!
//! containers/storage never removes a mapped template (a chowned copy of an
//! image's top layer, listed in the image's `mapped-layers`) except by
//! deleting the image, so every mapping ever used keeps a full copy of the
//! image. This module owns deciding what can go and making it go, touching:
//!
//! ```text
//! <graphroot>/layerstore-gc.lock                 our own flock: one gc at a time
//! <graphroot>/overlay/<id>/  overlay/l/<link>     layer directories and short links
//! <graphroot>/overlay-layers/{layers.json,<id>.tar-split.gz,<id>/}
//! <graphroot>/overlay-images/{images.json,<id>/}  mapped-layers entries, image big-data dirs
//! <graphroot>/overlay-containers/{containers.json,<id>/}   layerstore run's own containers
//! <runroot>/overlay-layers/mountpoints.json       stale mount records
//! <runroot>/overlay-containers/<id>/
//! ```
//!
//! Split as everything else here: [`plan`] is a pure function of a
//! [`Snapshot`](crate::Snapshot) and the [`Facts`] gathered from disk; [`crate::Store::gc`]
//! gathers them, plans, and (unless it is a dry run) applies the plan under
//! podman's locks in podman's order, re-planning under the locks and acting
//! only on what both plans agree on.
//!
//! Removed: mapped layers (listed in `mapped-layers`, or an unnamed mapped
//! copy of an image's top layer that a crash left unlisted) that no layer
//! has as parent and that are not mounted; layers flagged `incomplete`;
//! containers' layers whose container record is gone (a killed `create` or
//! `rm` of layerstore's); layer directories, tar-split files, layer big-data
//! dirs and image big-data dirs no record names; `.tmp-*`
//! files of interrupted atomic writes; `l/` links to nothing;
//! `mountpoints.json` entries whose layer is not mounted; mounts of a layer
//! that no mount record counts (a killed mounter's); `mapped-layers`
//! entries naming no layer and nothing on disk; containers `layerstore run`
//! made whose process is gone, with their mounts and layers. Repaired: a
//! recorded layer's missing `l/` link.
//!
//! Never removed: an image's top layer, a layer with a child, anything
//! mounted, podman's containers or their layers, anything a record names,
//! anything younger than `min_age`, anything outside the primary
//! (read-write) store.
//!
//! Refused outright, with nothing written: a store whose records cannot be
//! trusted ([`crate::consistency`], plus what only the disk shows: a
//! complete layer record without its directory, an empty `layers.json`
//! beside layer directories, a `mapped-layers` entry whose layer record is
//! gone while its files are not), and, unless forced, a plan that would
//! remove more unrecorded layer directories than [`MAX_UNRECORDED_SHARE`]
//! allows.

mod apply;
mod facts;
mod owner;
mod plan;
mod procs;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::consistency::Defect;
use crate::id::{ContainerId, ImageId, LayerId};

pub use apply::{GcLock, GC_LOCK_FILE};
pub use facts::{usage_in, DiskEntry, FactFiles, Facts, Usage};
pub use owner::{run_owner_of, start_time_of, PodmanUse, RunOwner};
pub use plan::{plan, store_defects};
pub use procs::{
    processes_rooted_at, run_cgroup_processes, run_cgroup_tree, run_cgroups, run_processes,
    runs_in, RUN_CGROUP_PARENT,
};

/// Unless forced, gc refuses a plan that removes more than
/// [`MAX_UNRECORDED_FLOOR`] unrecorded layer directories *and* more than
/// this fraction (1/4) of the layers recorded: a store that lost records
/// (a truncated or replaced `layers.json`) looks exactly like one full of
/// debris.
pub const MAX_UNRECORDED_SHARE: (usize, usize) = (1, 4);

/// See [`MAX_UNRECORDED_SHARE`].
pub const MAX_UNRECORDED_FLOOR: usize = 10;

/// How gc decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcOptions {
    /// Skip candidates younger than this (record `created`, or the mtime of
    /// a directory or file no record names).
    pub min_age: Duration,
    /// Only report what would be done.
    pub dry_run: bool,
    /// In a dry run, measure what each action would free (a walk of every
    /// tree it would remove: the cost of a dry run on a large store). A
    /// run that removes always measures what it frees.
    pub sizes: bool,
    /// At most this many layers (or debris trees) are removed under one
    /// hold of the locks; podman waits for the locks meanwhile.
    pub batch: usize,
    /// How long one hold of the locks should last: the number of removals
    /// per hold adapts to how long the previous ones took (at least one,
    /// at most `batch`).
    pub hold: Duration,
    /// Remove unrecorded layer directories even beyond
    /// [`MAX_UNRECORDED_SHARE`] (never anything a record names, and never
    /// in a store with defects).
    pub force: bool,
    /// What podman said about its containers, for the storage containers
    /// `layerstore run` handed it (the library runs no program: the caller
    /// asks podman).
    pub podman: PodmanAnswer,
}

/// podman's answer to "which of your containers use which storage
/// container", asked after the runs of the storage containers in
/// `dead_before` were seen gone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodmanContainers {
    /// The ids of all of podman's containers.
    pub ids: HashSet<String>,
    /// Storage container id -> the podman container whose label
    /// (`io.layerstore.storage-container`) names it.
    pub storage_users: HashMap<String, String>,
    /// The storage containers whose run was already gone when podman was
    /// asked: only these may be released on this answer.
    pub dead_before: HashSet<String>,
}

/// Whether podman was asked about its containers, and what it said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PodmanAnswer {
    /// Not asked: storage containers handed to podman all stay.
    #[default]
    NotAsked,
    /// Asking failed (podman missing, or its answer unreadable): they stay.
    Failed(String),
    /// podman's answer.
    Answered(PodmanContainers),
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            min_age: Duration::ZERO,
            dry_run: false,
            sizes: false,
            batch: 64,
            hold: Duration::from_millis(250),
            podman: PodmanAnswer::NotAsked,
            force: false,
        }
    }
}

/// A metadata directory where interrupted atomic writes leave `.tmp-*`
/// files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum MetaDir {
    /// `<graphroot>/overlay-layers`.
    #[serde(rename = "graphroot/overlay-layers")]
    GraphLayers,
    /// `<graphroot>/overlay-images`.
    #[serde(rename = "graphroot/overlay-images")]
    GraphImages,
    /// `<graphroot>/overlay-containers`.
    #[serde(rename = "graphroot/overlay-containers")]
    GraphContainers,
    /// `<runroot>/overlay-layers`.
    #[serde(rename = "runroot/overlay-layers")]
    RunLayers,
    /// `<runroot>/overlay-containers`.
    #[serde(rename = "runroot/overlay-containers")]
    RunContainers,
}

impl MetaDir {
    /// Every one of them.
    pub const ALL: [MetaDir; 5] = [
        MetaDir::GraphLayers,
        MetaDir::GraphImages,
        MetaDir::GraphContainers,
        MetaDir::RunLayers,
        MetaDir::RunContainers,
    ];

    pub(crate) fn place(self) -> (crate::store::Root, &'static str) {
        use crate::store::Root;
        match self {
            MetaDir::GraphLayers => (Root::Graph, crate::ops::LAYERS_DIR),
            MetaDir::GraphImages => (Root::Graph, crate::ops::IMAGES_DIR),
            MetaDir::GraphContainers => (Root::Graph, crate::ops::CONTAINERS_DIR),
            MetaDir::RunLayers => (Root::Run, crate::ops::LAYERS_DIR),
            MetaDir::RunContainers => (Root::Run, crate::ops::CONTAINERS_DIR),
        }
    }

    /// `graphroot/overlay-layers`, ...
    pub fn describe(self) -> &'static str {
        match self {
            MetaDir::GraphLayers => "graphroot/overlay-layers",
            MetaDir::GraphImages => "graphroot/overlay-images",
            MetaDir::GraphContainers => "graphroot/overlay-containers",
            MetaDir::RunLayers => "runroot/overlay-layers",
            MetaDir::RunContainers => "runroot/overlay-containers",
        }
    }
}

/// Whether `name` can be a temp file of an atomic write: `.tmp-` and then
/// anything but `/` (a single directory entry).
pub fn is_temp_name(name: &str) -> bool {
    name.len() > ".tmp-".len() && name.starts_with(".tmp-") && !name.contains(['/', '\0'])
}

/// One thing gc removes or repairs. Every id in it is validated: an action
/// can only name something beneath the store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Action {
    /// A mapped copy of an image's top layer nothing uses.
    MappedLayer {
        /// The layer.
        id: LayerId,
        /// Images whose `mapped-layers` list it.
        images: Vec<String>,
    },
    /// A layer left flagged `incomplete` by a process that died.
    IncompleteLayer {
        /// The layer.
        id: LayerId,
        /// Images whose `mapped-layers` list it.
        images: Vec<String>,
    },
    /// A container's read-write layer made by layerstore whose container
    /// record is gone (a `create` or `rm` killed half-way): removed with
    /// the directories of the container its flag names.
    OrphanLayer {
        /// The layer.
        id: LayerId,
        /// The container its flag names.
        container: String,
    },
    /// A container `layerstore run` made whose process is gone: unmounted
    /// if its layer is mounted, then removed with its layer.
    RunContainer {
        /// The container.
        id: ContainerId,
        /// Its read-write layer, if the record still exists.
        layer: Option<LayerId>,
        /// Whether its layer is mounted (by the dead run) and is unmounted.
        unmount: bool,
    },
    /// A layer mounted on its mount point without any mount record: its
    /// mounter was killed between mounting and recording. Unmounted.
    UnrecordedMount {
        /// The layer.
        id: LayerId,
    },
    /// `<graphroot>/overlay/<id>` without a layer record.
    LayerDir {
        /// The directory's name.
        id: LayerId,
    },
    /// `overlay-layers/<id>.tar-split.gz` without a layer record.
    TarSplit {
        /// The layer id in the name.
        id: LayerId,
    },
    /// `overlay-layers/<id>/` (layer big data) without a layer record.
    LayerData {
        /// The directory's name.
        id: LayerId,
    },
    /// `overlay-images/<id>/` (image big data) without an image record.
    ImageDir {
        /// The directory's name.
        id: ImageId,
    },
    /// A `.tmp-*` file an atomic write left behind when its writer died,
    /// removed under the locks of the directory's table.
    TempFile {
        /// The directory.
        dir: MetaDir,
        /// The file's name.
        name: String,
    },
    /// A removed layer's files whose deletion did not finish (overlay:
    /// `<home>/.layerstore-trash/<name>`).
    Trash {
        /// The trash entry.
        name: String,
    },
    /// `overlay/l/<name>` pointing to a layer that does not exist.
    DanglingLink {
        /// The link's name.
        name: String,
    },
    /// A `mountpoints.json` entry whose layer is not mounted.
    StaleMount {
        /// The layer.
        id: LayerId,
        /// The recorded mount point.
        path: String,
    },
    /// A `mapped-layers` entry naming no layer, and nothing on disk with
    /// its id (podman leaves one when it dies between deleting a mapped
    /// layer and saving images.json). podman 4.3.1's `rmi` of such an image
    /// removes the record, stops deleting layers at the unknown entry and
    /// still reports success: the image's layers leak.
    DanglingMappedEntry {
        /// The image.
        image: ImageId,
        /// The missing layer.
        layer: String,
    },
    /// A recorded layer whose `l/` link (or `link` file) is missing:
    /// recreated as containers/storage would.
    RepairLink {
        /// The layer.
        id: LayerId,
    },
}

impl Action {
    /// The short name of the kind, as in the JSON output.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::MappedLayer { .. } => "mapped-layer",
            Action::IncompleteLayer { .. } => "incomplete-layer",
            Action::OrphanLayer { .. } => "orphan-layer",
            Action::RunContainer { .. } => "run-container",
            Action::UnrecordedMount { .. } => "unrecorded-mount",
            Action::LayerDir { .. } => "layer-dir",
            Action::TarSplit { .. } => "tar-split",
            Action::LayerData { .. } => "layer-data",
            Action::ImageDir { .. } => "image-dir",
            Action::TempFile { .. } => "temp-file",
            Action::Trash { .. } => "trash",
            Action::DanglingLink { .. } => "dangling-link",
            Action::StaleMount { .. } => "stale-mount",
            Action::DanglingMappedEntry { .. } => "dangling-mapped-entry",
            Action::RepairLink { .. } => "repair-link",
        }
    }

    /// The id (or name) the action is about.
    pub fn subject(&self) -> &str {
        match self {
            Action::MappedLayer { id, .. }
            | Action::IncompleteLayer { id, .. }
            | Action::OrphanLayer { id, .. }
            | Action::UnrecordedMount { id }
            | Action::LayerDir { id }
            | Action::TarSplit { id }
            | Action::LayerData { id }
            | Action::StaleMount { id, .. }
            | Action::RepairLink { id } => id.as_str(),
            Action::RunContainer { id, .. } => id.as_str(),
            Action::ImageDir { id } => id.as_str(),
            Action::DanglingLink { name }
            | Action::TempFile { name, .. }
            | Action::Trash { name } => name,
            Action::DanglingMappedEntry { layer, .. } => layer,
        }
    }

    /// The layer record this action removes.
    pub fn removed_layer(&self) -> Option<&LayerId> {
        match self {
            Action::MappedLayer { id, .. }
            | Action::IncompleteLayer { id, .. }
            | Action::OrphanLayer { id, .. } => Some(id),
            Action::RunContainer { layer, .. } => layer.as_ref(),
            _ => None,
        }
    }
}

/// A candidate gc left alone, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// What it would have been.
    pub kind: &'static str,
    /// Its id or name.
    pub id: String,
    /// Why it stays.
    pub reason: String,
}

/// What gc will do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcPlan {
    /// The removals and repairs, in the order they are applied.
    pub actions: Vec<Action>,
    /// Candidates left alone.
    pub skipped: Vec<Skipped>,
    /// Why the store must not be changed at all (the records' defects and
    /// what the disk adds to them): when not empty, gc does nothing.
    pub defects: Vec<Defect>,
    /// Layer records in the store (for [`MAX_UNRECORDED_SHARE`]).
    pub recorded_layers: usize,
}

impl GcPlan {
    /// The layers the plan removes.
    pub fn removed_layers(&self) -> HashSet<&str> {
        self.actions
            .iter()
            .filter_map(Action::removed_layer)
            .map(LayerId::as_str)
            .collect()
    }

    /// How many unrecorded layer directories the plan removes.
    pub fn unrecorded_layer_dirs(&self) -> usize {
        self.actions
            .iter()
            .filter(|a| matches!(a, Action::LayerDir { .. }))
            .count()
    }

    /// Whether the plan removes more unrecorded layer directories than
    /// [`MAX_UNRECORDED_SHARE`] allows without force.
    pub fn exceeds_unrecorded_share(&self) -> bool {
        let n = self.unrecorded_layer_dirs();
        let (num, den) = MAX_UNRECORDED_SHARE;
        n > MAX_UNRECORDED_FLOOR && n * den > self.recorded_layers * num
    }
}

/// One done (or, in a dry run, planned) action and what it freed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Done {
    /// The action.
    #[serde(flatten)]
    pub action: Action,
    /// Bytes of disk space freed (allocated blocks of unique inodes);
    /// `None` in a dry run that measured nothing ([`GcOptions::sizes`]).
    pub bytes: Option<u64>,
    /// Inodes freed; `None` when not measured.
    pub inodes: Option<u64>,
}

/// What a gc run did (or would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// Layer records removed.
    pub layers_removed: u64,
    /// Bytes freed; `None` in a dry run that measured nothing
    /// ([`GcOptions::sizes`]).
    pub bytes_freed: Option<u64>,
    /// Inodes freed; `None` when not measured.
    pub inodes_freed: Option<u64>,
    /// Each action.
    pub done: Vec<Done>,
    /// Candidates left alone.
    pub skipped: Vec<Skipped>,
}

impl GcReport {
    /// An empty report of a run that measures (`measured`) or not.
    fn new(dry_run: bool, measured: bool) -> GcReport {
        GcReport {
            dry_run,
            bytes_freed: measured.then_some(0),
            inodes_freed: measured.then_some(0),
            ..GcReport::default()
        }
    }

    /// Note one action and what it freed (`None`: not measured).
    fn push(&mut self, action: Action, usage: Option<Usage>) {
        if action.removed_layer().is_some() {
            self.layers_removed += 1;
        }
        if let Some(u) = usage {
            self.bytes_freed = self.bytes_freed.map(|b| b + u.bytes);
            self.inodes_freed = self.inodes_freed.map(|i| i + u.inodes);
        }
        self.done.push(Done {
            action,
            bytes: usage.map(|u| u.bytes),
            inodes: usage.map(|u| u.inodes),
        });
    }
}

/// Whether a record made at `created` is younger than `min_age` at `now`.
pub(crate) fn is_young(created: SystemTime, now: SystemTime, min_age: Duration) -> bool {
    !min_age.is_zero()
        && now
            .duration_since(created)
            .map(|age| age < min_age)
            .unwrap_or(true)
}
