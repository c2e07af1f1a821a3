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
//! layer directories, tar-split files, layer big-data dirs and image
//! big-data dirs no record names; `.tmp-*` files of interrupted atomic
//! writes; `l/` links to nothing; `mountpoints.json`
//! entries whose path is not mounted; `mapped-layers` entries naming no
//! layer; containers `layerstore run` made whose process is gone, with their
//! layers. Repaired: a recorded layer's missing `l/` link.
//!
//! Never removed: an image's top layer, a layer with a child, anything
//! mounted, podman's containers or their layers, anything younger than
//! `min_age`, anything outside the primary (read-write) store.

mod apply;
mod facts;
mod owner;
mod plan;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use serde::Serialize;

pub use apply::{GcLock, GC_LOCK_FILE};
pub use facts::{usage, DiskEntry, Facts, Usage};
pub use owner::{start_time_of, RunOwner};
pub use plan::plan;

/// How gc decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcOptions {
    /// Skip candidates younger than this (record `created`, or the mtime of
    /// a directory or file no record names).
    pub min_age: Duration,
    /// Only report what would be done.
    pub dry_run: bool,
    /// At most this many layers (or debris trees) are removed under one
    /// hold of the locks; podman waits for the locks meanwhile.
    pub batch: usize,
    /// How long one hold of the locks should last: the number of removals
    /// per hold adapts to how long the previous ones took (at least one,
    /// at most `batch`).
    pub hold: Duration,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            min_age: Duration::ZERO,
            dry_run: false,
            batch: 64,
            hold: Duration::from_millis(250),
        }
    }
}

/// One thing gc removes or repairs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Action {
    /// A mapped copy of an image's top layer nothing uses.
    MappedLayer {
        /// The layer.
        id: String,
        /// Images whose `mapped-layers` list it.
        images: Vec<String>,
    },
    /// A layer left flagged `incomplete` by a process that died.
    IncompleteLayer {
        /// The layer.
        id: String,
        /// Images whose `mapped-layers` list it.
        images: Vec<String>,
    },
    /// A container `layerstore run` made whose process is gone.
    RunContainer {
        /// The container.
        id: String,
        /// Its read-write layer, if the record still exists.
        layer: Option<String>,
    },
    /// `<graphroot>/overlay/<id>` without a layer record.
    LayerDir {
        /// The directory's name.
        id: String,
    },
    /// `overlay-layers/<id>.tar-split.gz` without a layer record.
    TarSplit {
        /// The layer id in the name.
        id: String,
    },
    /// `overlay-layers/<id>/` (layer big data) without a layer record.
    LayerData {
        /// The directory's name.
        id: String,
    },
    /// `overlay-images/<id>/` (image big data) without an image record.
    ImageDir {
        /// The directory's name.
        id: String,
    },
    /// A `.tmp-*` file an atomic write left behind when its writer died
    /// (in `overlay-layers`, `overlay-images`, `overlay-containers` or the
    /// runroot's `overlay-layers`, under whose locks it is removed).
    TempFile {
        /// Its path.
        path: String,
    },
    /// `overlay/l/<name>` pointing to a layer that does not exist.
    DanglingLink {
        /// The link's name.
        name: String,
    },
    /// A `mountpoints.json` entry whose path is not mounted.
    StaleMount {
        /// The layer.
        id: String,
        /// The recorded mount point.
        path: String,
    },
    /// A `mapped-layers` entry naming no layer. podman 4.3.1's `rmi` of
    /// such an image removes the record, stops deleting layers at the
    /// unknown entry and still reports success: the image's layers leak.
    DanglingMappedEntry {
        /// The image.
        image: String,
        /// The missing layer.
        layer: String,
    },
    /// A recorded layer whose `l/` link (or `link` file) is missing:
    /// recreated as containers/storage would.
    RepairLink {
        /// The layer.
        id: String,
    },
}

impl Action {
    /// The short name of the kind, as in the JSON output.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::MappedLayer { .. } => "mapped-layer",
            Action::IncompleteLayer { .. } => "incomplete-layer",
            Action::RunContainer { .. } => "run-container",
            Action::LayerDir { .. } => "layer-dir",
            Action::TarSplit { .. } => "tar-split",
            Action::LayerData { .. } => "layer-data",
            Action::ImageDir { .. } => "image-dir",
            Action::TempFile { .. } => "temp-file",
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
            | Action::RunContainer { id, .. }
            | Action::LayerDir { id }
            | Action::TarSplit { id }
            | Action::LayerData { id }
            | Action::ImageDir { id }
            | Action::StaleMount { id, .. }
            | Action::RepairLink { id } => id,
            Action::DanglingLink { name } => name,
            Action::TempFile { path } => path,
            Action::DanglingMappedEntry { layer, .. } => layer,
        }
    }

    /// The layer records this action removes.
    pub fn removed_layer(&self) -> Option<&str> {
        match self {
            Action::MappedLayer { id, .. } | Action::IncompleteLayer { id, .. } => Some(id),
            Action::RunContainer { layer, .. } => layer.as_deref(),
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
}

impl GcPlan {
    /// The layers the plan removes.
    pub fn removed_layers(&self) -> HashSet<&str> {
        self.actions
            .iter()
            .filter_map(Action::removed_layer)
            .collect()
    }
}

/// One done (or, in a dry run, planned) action and what it freed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Done {
    /// The action.
    #[serde(flatten)]
    pub action: Action,
    /// Bytes of disk space freed (allocated blocks of unique inodes).
    pub bytes: u64,
    /// Inodes freed.
    pub inodes: u64,
}

/// What a gc run did (or would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// Layer records removed.
    pub layers_removed: u64,
    /// Bytes freed.
    pub bytes_freed: u64,
    /// Inodes freed.
    pub inodes_freed: u64,
    /// Each action.
    pub done: Vec<Done>,
    /// Candidates left alone.
    pub skipped: Vec<Skipped>,
}

impl GcReport {
    fn push(&mut self, action: Action, usage: Usage) {
        if action.removed_layer().is_some() {
            self.layers_removed += 1;
        }
        self.bytes_freed += usage.bytes;
        self.inodes_freed += usage.inodes;
        self.done.push(Done {
            action,
            bytes: usage.bytes,
            inodes: usage.inodes,
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
