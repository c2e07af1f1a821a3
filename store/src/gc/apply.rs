//! Applying a gc plan under podman's locks.
//!
//! # Locking
//! `<graphroot>/layerstore-gc.lock` (our own `flock`, never one of
//! podman's files) for the whole run, so overlapping runs do not collide.
//! Then, per batch: exclusive `layers.lock`, nested exclusive
//! `mountpoints.lock`, exclusive `images.lock`, exclusive `containers.lock`
//! — containers/storage's order. Every batch re-reads the files, re-gathers
//! the facts and re-plans; only actions both plans agree on are applied,
//! and a store that has become untrustworthy meanwhile stops the run before
//! the batch writes anything. The locks are released between batches so
//! podman is never kept waiting for long.
//!
//! # Never wedged
//! The whole plan is checked before the first write: the store's defects
//! and the share of unrecorded layer directories refuse it outright, and
//! every action names only validated ids, so no action can fail for a bad
//! name half-way. A failure at any step (a full disk, a busy mount) leaves
//! the records as the finished steps left them, which the next gc
//! completes.
//!
//! # Crash safety
//! Within a batch the writes happen in this order, so that a `kill -9` at
//! any instant leaves a store podman 4.3.1 accepts and the next gc finishes:
//! 1. `images.json` without the doomed layers in `mapped-layers`. (A
//!    dangling entry makes podman's `rmi` leak the image's layers: v1.43
//!    `DeleteImage` removes the image record, then deletes the listed
//!    layers and stops at the unknown one; podman 4.3.1 still reports
//!    success (observed). An unlisted mapped copy is harmless, and the
//!    next gc finds it again.)
//! 2. `layers.json` with the doomed layers flagged `incomplete` (podman
//!    deletes such layers itself when it next loads the store for writing).
//! 3. `containers.json` without the dead `layerstore run` containers.
//! 4. Unmounts of what dead runs and killed mounters left mounted; the
//!    layers' directories, tar-split files and big data; the containers'
//!    directories.
//! 5. `layers.json` without the records, `mountpoints.json` without their
//!    (and stale) entries.
//! 6. Debris nobody names, dangling links; then link repairs.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use rustix::fs::OFlags;
use serde_json::Value;

use super::{plan, usage_in, Action, Facts, GcOptions, GcPlan, GcReport, Skipped, Usage};
use crate::confined::Dir;
use crate::driver::Driver;
use crate::error::{driver_error, StoreError};
use crate::id::LayerId;
use crate::ops::{tar_split_name, CONTAINERS_DIR, IMAGES_DIR, LAYERS_DIR};
use crate::records::{Container, FLAG_INCOMPLETE};
use crate::snapshot::{check_parents, Snapshot};
use crate::store::Root;
use crate::Store;

/// Name of gc's own lock file under the graphroot.
pub const GC_LOCK_FILE: &str = "layerstore-gc.lock";

/// gc's own lock: an exclusive `flock` on `<graphroot>/layerstore-gc.lock`,
/// held until dropped. podman never takes it, and we never `flock` podman's
/// lock files (that would not exclude podman anyway).
#[derive(Debug)]
pub struct GcLock {
    _file: File,
    path: PathBuf,
}

impl GcLock {
    /// Take the lock without waiting: `Ok(None)` when another gc holds it.
    /// The lock file is opened in the graphroot without following a
    /// symlink.
    pub fn try_acquire(graph_root: &Path) -> Result<Option<GcLock>, StoreError> {
        let path = graph_root.join(GC_LOCK_FILE);
        let dir = Dir::open(graph_root).map_err(StoreError::io("opening", graph_root))?;
        let fd = dir
            .open_file(GC_LOCK_FILE, OFlags::RDWR | OFlags::CREATE, 0o600)
            .map_err(StoreError::io("opening", &path))?;
        let file = File::from(fd);
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(GcLock { _file: file, path })),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(StoreError::io("locking", &path)(e.into())),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Refuse a plan gc must not carry out.
fn refuse(plan: &GcPlan, options: &GcOptions) -> Result<(), StoreError> {
    if !plan.defects.is_empty() {
        return Err(StoreError::Inconsistent {
            defects: plan.defects.clone(),
        });
    }
    if plan.exceeds_unrecorded_share() && !options.force {
        return Err(StoreError::GcTooMuch {
            unrecorded: plan.unrecorded_layer_dirs(),
            recorded: plan.recorded_layers,
        });
    }
    Ok(())
}

impl Store {
    /// Plan a gc over the current records and disk, without changing
    /// anything. Refused like [`Store::gc`] when the store cannot be
    /// trusted or the plan removes too many unrecorded layer directories.
    ///
    /// # Locking
    /// Shared `layers.lock` (with `mountpoints.lock` nested while it is
    /// read), `images.lock`, `containers.lock` while reading the records
    /// and looking at the disk.
    pub fn gc_plan(&self, driver: &dyn Driver, options: &GcOptions) -> Result<GcPlan, StoreError> {
        // The disk is looked at under the same shared locks as the
        // records: a podman deleting a layer meanwhile would otherwise
        // look like a record without its directory.
        let (snap, _locked) = self.snapshot_held()?;
        let mut facts = Facts::gather(self, driver, &snap)?;
        facts.podman = options.podman.clone();
        let planned = plan(&snap, &facts, options.min_age);
        refuse(&planned, options)?;
        Ok(planned)
    }

    /// Run gc: plan, then (unless `options.dry_run`) apply the plan in
    /// batches. A dry run reports exactly the plan, with what each action
    /// would free measured now when `options.sizes` is set (a walk of
    /// every tree it would remove), unmeasured (`None`) otherwise.
    ///
    /// Fails with [`StoreError::Inconsistent`] (nothing done) when the
    /// store's records cannot be trusted, with [`StoreError::GcTooMuch`]
    /// when the plan removes more unrecorded layer directories than
    /// [`super::MAX_UNRECORDED_SHARE`] allows and `options.force` is not
    /// set, and with [`StoreError::GcBusy`] when another gc runs on this
    /// store.
    ///
    /// # Locking
    /// See the module documentation: gc's own lock for the whole run (not
    /// in a dry run), podman's locks per batch.
    pub fn gc(&self, driver: &dyn Driver, options: &GcOptions) -> Result<GcReport, StoreError> {
        // Plan first: a store we cannot read or trust fails here, before
        // anything (even our lock file) is created.
        let planned = self.gc_plan(driver, options)?;
        let _lock = if options.dry_run {
            None
        } else {
            let lock = GcLock::try_acquire(&self.options().graph_root)?;
            Some(lock.ok_or_else(|| StoreError::GcBusy {
                path: self.options().graph_root.join(GC_LOCK_FILE),
            })?)
        };
        let measured = !options.dry_run || options.sizes;
        let mut report = GcReport {
            skipped: planned.skipped.clone(),
            ..GcReport::new(options.dry_run, measured)
        };
        if options.dry_run {
            let used = if measured {
                self.actions_usage(driver, &planned.actions)
                    .into_iter()
                    .map(Some)
                    .collect()
            } else {
                vec![None; planned.actions.len()]
            };
            for (action, used) in planned.actions.into_iter().zip(used) {
                report.push(action, used);
            }
            return Ok(report);
        }
        let mut remaining = planned.actions;
        let mut limit = 4;
        while !remaining.is_empty() {
            let started = std::time::Instant::now();
            let (rest, heavy) = self.gc_batch(driver, options, limit, remaining, &mut report)?;
            remaining = rest;
            if heavy > 0 {
                let per_item = started.elapsed() / heavy as u32;
                let fits = options.hold.as_nanos() / per_item.as_nanos().max(1);
                limit = usize::try_from(fits)
                    .unwrap_or(usize::MAX)
                    .clamp(1, options.batch.max(1));
            }
        }
        Ok(report)
    }

    /// Take the locks, re-plan, apply up to `limit` heavy actions of
    /// `remaining` that the new plan agrees on; return the rest and how
    /// many heavy actions were applied.
    fn gc_batch(
        &self,
        driver: &dyn Driver,
        options: &GcOptions,
        limit: usize,
        remaining: Vec<Action>,
        report: &mut GcReport,
    ) -> Result<(Vec<Action>, usize), StoreError> {
        let mut layers = self.layers.begin(check_parents)?;
        let mut mounts = self.mounts.begin(|_, _| Ok(()))?;
        let mut images = self.images.begin(|_, _| Ok(()))?;
        let mut containers = self.containers.begin(|_, _| Ok(()))?;
        let mut defects = Vec::new();
        for d in [
            &layers.defects,
            &mounts.defects,
            &images.defects,
            &containers.defects,
        ] {
            defects.extend(d.iter().cloned());
        }
        defects.extend(crate::consistency::cross_check(
            self.files(),
            &layers.records,
            &images.records,
            &containers.records,
        ));
        let snap = Snapshot {
            mounts: crate::consistency::mounts_of_layers(mounts.records.clone(), &layers.records),
            layers: layers.records.clone().into(),
            images: images.records.clone().into(),
            containers: containers.records.clone().into(),
            defects,
        };
        let mut facts = Facts::gather(self, driver, &snap)?;
        facts.podman = options.podman.clone();
        let fresh = plan(&snap, &facts, options.min_age);
        if !fresh.defects.is_empty() {
            return Err(StoreError::Inconsistent {
                defects: fresh.defects,
            });
        }
        let fresh: HashSet<Action> = fresh.actions.into_iter().collect();

        let mut batch = Vec::new();
        let mut heavy = 0;
        let mut rest = Vec::new();
        for action in remaining {
            if heavy >= limit.max(1) {
                rest.push(action);
            } else if fresh.contains(&action) {
                heavy += usize::from(is_heavy(&action));
                batch.push(action);
            } else {
                report.skipped.push(Skipped {
                    kind: action.kind(),
                    id: action.subject().to_owned(),
                    reason: "changed since it was planned".into(),
                });
            }
        }
        let doomed: HashSet<&LayerId> = batch.iter().filter_map(Action::removed_layer).collect();
        let doomed_str: HashSet<&str> = doomed.iter().map(|l| l.as_str()).collect();

        // 1. mapped-layers entries.
        let dangling: HashSet<(&str, &str)> = batch
            .iter()
            .filter_map(|a| match a {
                Action::DanglingMappedEntry { image, layer } => {
                    Some((image.as_str(), layer.as_str()))
                }
                _ => None,
            })
            .collect();
        let mut images_changed = false;
        for image in &mut images.records {
            let before = image.mapped_layers.len();
            let id = image.id.clone();
            image.mapped_layers.retain(|m| {
                !doomed_str.contains(m.as_str()) && !dangling.contains(&(id.as_str(), m.as_str()))
            });
            images_changed |= image.mapped_layers.len() != before;
        }
        if images_changed {
            images.save()?;
        }
        // 2. Flag the doomed layers incomplete.
        let mut flagged: Vec<String> = Vec::new();
        for layer in layers
            .records
            .iter_mut()
            .filter(|l| doomed_str.contains(l.id.as_str()))
        {
            if !layer.is_incomplete() {
                layer
                    .flags
                    .insert(FLAG_INCOMPLETE.to_owned(), Value::Bool(true));
                flagged.push(layer.id.clone());
            }
        }
        if !flagged.is_empty() {
            layers.save()?;
        }
        // 3. Dead `layerstore run` containers' records.
        let dead_ids: HashSet<&str> = batch
            .iter()
            .filter_map(|a| match a {
                Action::RunContainer { id, .. } => Some(id.as_str()),
                _ => None,
            })
            .collect();
        let dead: Vec<Container> = containers
            .records
            .iter()
            .filter(|c| dead_ids.contains(c.id.as_str()))
            .cloned()
            .collect();
        if !dead.is_empty() {
            containers
                .records
                .retain(|c| !dead_ids.contains(c.id.as_str()));
            containers.save()?;
        }
        // 4. Unmounts, layer content, containers' directories.
        let mut freed: Vec<(Action, Option<Usage>)> = Vec::new();
        for action in &batch {
            let unmount = match action {
                Action::RunContainer {
                    layer: Some(l),
                    unmount: true,
                    ..
                } => Some(l),
                Action::UnrecordedMount { id } => Some(id),
                _ => None,
            };
            if let Some(id) = unmount {
                driver
                    .unmount(id)
                    .map_err(driver_error("unmounting", id.as_str()))?;
            }
        }
        // A layer the driver cannot remove keeps its directory whole: it
        // and the ones not tried yet get their flags back and their
        // records stay, so podman finds nothing to trip over; the run stops
        // after the records are saved.
        let mut removed: HashSet<&str> = HashSet::new();
        let mut failure = None;
        let mut partly = None;
        for action in &batch {
            let Some(id) = action.removed_layer() else {
                continue;
            };
            let used = self.action_usage(driver, action);
            if let Err(e) = self.remove_layer_data(driver, id) {
                // Removed only in part: it stays flagged incomplete.
                if crate::driver::is_partly_removed(&e) {
                    partly = Some(id.as_str());
                }
                failure = Some(e);
                break;
            }
            removed.insert(id.as_str());
            freed.push((action.clone(), Some(used)));
        }
        for action in batch.iter().filter(|a| {
            a.removed_layer()
                .is_none_or(|l| removed.contains(l.as_str()))
        }) {
            match action {
                Action::RunContainer { id, layer, .. } => {
                    self.remove_container_dirs(id)?;
                    if layer.is_none() {
                        freed.push((action.clone(), Some(Usage::default())));
                    }
                }
                // The container the orphan's flag names has no record (the
                // plan checked): what its directories hold goes with it.
                Action::OrphanLayer { container, .. } => {
                    if let Ok(c) = crate::id::ContainerId::parse(container) {
                        if !containers.records.iter().any(|r| r.id == c.as_str()) {
                            self.remove_container_dirs(&c)?;
                        }
                    }
                }
                _ => {}
            }
        }
        if !doomed.is_empty() {
            layers.records.retain(|l| !removed.contains(l.id.as_str()));
            let kept: Vec<String> = flagged
                .into_iter()
                .filter(|l| !removed.contains(l.as_str()) && partly != Some(l.as_str()))
                .collect();
            crate::ops::unflag(&mut layers.records, &kept);
            layers.save()?;
        }
        let unmounted: HashSet<&str> = batch
            .iter()
            .filter_map(|a| match a {
                Action::StaleMount { id, .. } | Action::UnrecordedMount { id } => Some(id.as_str()),
                _ => None,
            })
            .collect();
        let before = mounts.records.len();
        mounts
            .records
            .retain(|m| !removed.contains(m.id.as_str()) && !unmounted.contains(m.id.as_str()));
        if mounts.records.len() != before {
            mounts.save()?;
        }
        if let Some(e) = failure {
            for (action, used) in freed {
                report.push(action, used);
            }
            return Err(e);
        }
        // 6. Debris and repairs.
        for action in batch {
            let used = match &action {
                Action::MappedLayer { .. }
                | Action::IncompleteLayer { .. }
                | Action::OrphanLayer { .. }
                | Action::RunContainer { .. } => continue,
                Action::StaleMount { .. }
                | Action::UnrecordedMount { .. }
                | Action::DanglingMappedEntry { .. } => Usage::default(),
                _ => {
                    let used = self.action_usage(driver, &action);
                    self.remove_debris(driver, &action)?;
                    used
                }
            };
            freed.push((action, Some(used)));
        }
        for (action, used) in freed {
            report.push(action, used);
        }
        Ok((rest, heavy))
    }

    /// Remove one piece of debris (or repair a link).
    fn remove_debris(&self, driver: &dyn Driver, action: &Action) -> Result<(), StoreError> {
        match action {
            Action::LayerDir { id } => driver
                .remove(id)
                .map_err(driver_error("removing", id.as_str())),
            Action::TarSplit { id } => {
                self.remove_meta_tree(Root::Graph, LAYERS_DIR, &tar_split_name(id))
            }
            Action::LayerData { id } => self.remove_meta_tree(Root::Graph, LAYERS_DIR, id.as_str()),
            Action::ImageDir { id } => self.remove_image_dir(id),
            Action::TempFile { dir, name } => {
                let (root, dir_name) = dir.place();
                if let Some(d) = self.meta_dir(root, dir_name)? {
                    d.remove_file(name)
                        .map_err(StoreError::io("removing", d.display(name)))?;
                }
                Ok(())
            }
            Action::DanglingLink { name } => driver
                .remove_link(name)
                .map_err(driver_error("removing the link", name)),
            Action::Trash { name } => driver
                .empty_trash(name)
                .map_err(driver_error("emptying the trash entry", name)),
            Action::RepairLink { id } => driver
                .repair_link(id)
                .map(|_| ())
                .map_err(driver_error("repairing the link of", id.as_str())),
            _ => Ok(()),
        }
    }

    /// What carrying out `action` frees, measured now (never following a
    /// symlink, never leaving the store).
    fn action_usage(&self, driver: &dyn Driver, action: &Action) -> Usage {
        let mut dirs = MetaDirs::default();
        self.action_usage_with(driver, action, &mut dirs, &mut |id| driver.layer_usage(id))
    }

    /// [`Store::action_usage`] of every action (a dry run's report): the
    /// layer directories measured in one batch ([`Driver::layers_usage`]),
    /// each metadata directory opened once.
    fn actions_usage(&self, driver: &dyn Driver, actions: &[Action]) -> Vec<Usage> {
        let ids: Vec<&LayerId> = actions.iter().filter_map(measured_layer).collect();
        let measured: std::collections::HashMap<&LayerId, Usage> =
            ids.iter().copied().zip(driver.layers_usage(&ids)).collect();
        let mut dirs = MetaDirs::default();
        actions
            .iter()
            .map(|action| {
                self.action_usage_with(driver, action, &mut dirs, &mut |id| {
                    measured
                        .get(id)
                        .copied()
                        .unwrap_or_else(|| driver.layer_usage(id))
                })
            })
            .collect()
    }

    fn action_usage_with(
        &self,
        driver: &dyn Driver,
        action: &Action,
        dirs: &mut MetaDirs,
        layer_dir: &mut dyn FnMut(&LayerId) -> Usage,
    ) -> Usage {
        let mut meta = |root: Root, dir: &'static str, names: &[&str]| -> Usage {
            match dirs.get(self, root, dir) {
                Some(d) => {
                    let rels: Vec<&Path> = names.iter().map(Path::new).collect();
                    usage_in(d, &rels)
                }
                None => Usage::default(),
            }
        };
        let mut layer =
            |id: &LayerId, meta: &mut dyn FnMut(Root, &'static str, &[&str]) -> Usage| {
                let mut u = layer_dir(id);
                u += meta(Root::Graph, LAYERS_DIR, &[&tar_split_name(id), id.as_str()]);
                u
            };
        match action {
            Action::MappedLayer { id, .. } | Action::IncompleteLayer { id, .. } => {
                layer(id, &mut meta)
            }
            Action::OrphanLayer { id, container } => {
                let mut u = layer(id, &mut meta);
                if crate::id::id_problem(container).is_none() {
                    u += meta(Root::Graph, CONTAINERS_DIR, &[container.as_str()]);
                    u += meta(Root::Run, CONTAINERS_DIR, &[container.as_str()]);
                }
                u
            }
            Action::RunContainer { id, layer: l, .. } => {
                let mut u = match l {
                    Some(l) => layer(l, &mut meta),
                    None => Usage::default(),
                };
                u += meta(Root::Graph, CONTAINERS_DIR, &[id.as_str()]);
                u += meta(Root::Run, CONTAINERS_DIR, &[id.as_str()]);
                u
            }
            Action::LayerDir { id } => layer_dir(id),
            Action::TarSplit { id } => meta(Root::Graph, LAYERS_DIR, &[&tar_split_name(id)]),
            Action::LayerData { id } => meta(Root::Graph, LAYERS_DIR, &[id.as_str()]),
            Action::ImageDir { id } => meta(Root::Graph, IMAGES_DIR, &[id.as_str()]),
            Action::TempFile { dir, name } => {
                let (root, dir_name) = dir.place();
                meta(root, dir_name, &[name])
            }
            Action::DanglingLink { name } => driver.link_usage(name),
            Action::Trash { name } => driver.trash_usage(name),
            Action::StaleMount { .. }
            | Action::UnrecordedMount { .. }
            | Action::DanglingMappedEntry { .. }
            | Action::RepairLink { .. } => Usage::default(),
        }
    }
}

/// The layer whose driver directory an action's measurement walks.
fn measured_layer(action: &Action) -> Option<&LayerId> {
    match action {
        Action::MappedLayer { id, .. }
        | Action::IncompleteLayer { id, .. }
        | Action::OrphanLayer { id, .. }
        | Action::LayerDir { id } => Some(id),
        Action::RunContainer { layer, .. } => layer.as_ref(),
        _ => None,
    }
}

/// Metadata directories opened once for many measurements (a missing or
/// unopenable one measures as nothing, as before).
#[derive(Default)]
struct MetaDirs(Vec<((Root, &'static str), Option<Dir>)>);

impl MetaDirs {
    fn get(&mut self, store: &Store, root: Root, dir: &'static str) -> Option<&Dir> {
        let at = match self.0.iter().position(|(k, _)| *k == (root, dir)) {
            Some(at) => at,
            None => {
                self.0
                    .push(((root, dir), store.meta_dir(root, dir).ok().flatten()));
                self.0.len() - 1
            }
        };
        self.0[at].1.as_ref()
    }
}

/// Whether an action removes a whole tree (counted against the batch size).
fn is_heavy(action: &Action) -> bool {
    matches!(
        action,
        Action::MappedLayer { .. }
            | Action::IncompleteLayer { .. }
            | Action::OrphanLayer { .. }
            | Action::RunContainer { .. }
            | Action::LayerDir { .. }
            | Action::LayerData { .. }
            | Action::ImageDir { .. }
            | Action::Trash { .. }
    )
}
