//! Applying a gc plan under podman's locks.
//!
//! # Locking
//! `<graphroot>/layerstore-gc.lock` (our own `flock`, never one of
//! podman's files) for the whole run, so overlapping runs do not collide.
//! Then, per batch: exclusive `layers.lock`, nested exclusive
//! `mountpoints.lock`, exclusive `images.lock`, exclusive `containers.lock`
//! — containers/storage's order. Every batch re-reads the files, re-gathers
//! the facts and re-plans; only actions both plans agree on are applied.
//! The locks are released between batches so podman is never kept waiting
//! for long.
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
//! 4. The layers' directories, tar-split files and big data.
//! 5. `layers.json` without the records, `mountpoints.json` without their
//!    (and stale) entries.
//! 6. Debris nobody names, dangling links; then link repairs.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{plan, usage, Action, Facts, GcOptions, GcPlan, GcReport, Skipped, Usage};
use crate::driver::Driver;
use crate::error::{driver_error, StoreError};
use crate::ops::remove_if_present;
use crate::records::{Container, FLAG_INCOMPLETE};
use crate::snapshot::{check_parents, Snapshot};
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
    pub fn try_acquire(graph_root: &Path) -> Result<Option<GcLock>, StoreError> {
        let path = graph_root.join(GC_LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::CLOEXEC.bits() as i32)
            .open(&path)
            .map_err(StoreError::io("opening", &path))?;
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

impl Store {
    /// Plan a gc over the current records and disk, without changing
    /// anything.
    ///
    /// # Locking
    /// Shared `layers.lock` (with `mountpoints.lock`), `images.lock`,
    /// `containers.lock` while reading the records, as [`Store::snapshot`].
    pub fn gc_plan(&self, driver: &dyn Driver, options: &GcOptions) -> Result<GcPlan, StoreError> {
        let snap = self.snapshot()?;
        let facts = Facts::gather(self, driver, &snap)?;
        Ok(plan(&snap, &facts, options.min_age))
    }

    /// Run gc: plan, then (unless `options.dry_run`) apply the plan in
    /// batches. A dry run reports exactly the plan, with what each action
    /// would free measured now.
    ///
    /// Fails with [`StoreError::GcBusy`] when another gc runs on this store.
    ///
    /// # Locking
    /// See the module documentation: gc's own lock for the whole run (not
    /// in a dry run), podman's locks per batch.
    pub fn gc(&self, driver: &dyn Driver, options: &GcOptions) -> Result<GcReport, StoreError> {
        // Plan first: a store we cannot read fails here, before anything
        // (even our lock file) is created.
        let planned = self.gc_plan(driver, options)?;
        let _lock = if options.dry_run {
            None
        } else {
            let lock = GcLock::try_acquire(&self.options().graph_root)?;
            Some(lock.ok_or_else(|| StoreError::GcBusy {
                path: self.options().graph_root.join(GC_LOCK_FILE),
            })?)
        };
        let mut report = GcReport {
            dry_run: options.dry_run,
            skipped: planned.skipped.clone(),
            ..GcReport::default()
        };
        if options.dry_run {
            for action in planned.actions {
                let used = self.action_usage(driver, &action);
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
        let snap = Snapshot {
            layers: layers.records.clone(),
            images: images.records.clone(),
            containers: containers.records.clone(),
            mounts: mounts.records.clone(),
        };
        let facts = Facts::gather(self, driver, &snap)?;
        let fresh: HashSet<Action> = plan(&snap, &facts, options.min_age)
            .actions
            .into_iter()
            .collect();

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
        let doomed: HashSet<String> = batch
            .iter()
            .filter_map(Action::removed_layer)
            .map(str::to_owned)
            .collect();

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
            image
                .mapped_layers
                .retain(|m| !doomed.contains(m) && !dangling.contains(&(id.as_str(), m.as_str())));
            images_changed |= image.mapped_layers.len() != before;
        }
        if images_changed {
            images.save()?;
        }
        // 2. Flag the doomed layers incomplete.
        let mut flagged = false;
        for layer in layers.records.iter_mut().filter(|l| doomed.contains(&l.id)) {
            if !layer.is_incomplete() {
                layer
                    .flags
                    .insert(FLAG_INCOMPLETE.to_owned(), Value::Bool(true));
                flagged = true;
            }
        }
        if flagged {
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
        // 4. Layer content, then 5. the records.
        let mut freed: Vec<(Action, Usage)> = Vec::new();
        for action in &batch {
            let Some(id) = action.removed_layer() else {
                continue;
            };
            let used = self.action_usage(driver, action);
            driver.remove(id).map_err(driver_error("removing", id))?;
            remove_if_present(&self.layer_tar_split_path(id))?;
            remove_if_present(&self.layer_data_dir(id))?;
            freed.push((action.clone(), used));
        }
        for c in &dead {
            let o = self.options();
            remove_if_present(&o.graph_root.join("overlay-containers").join(&c.id))?;
            remove_if_present(&o.run_root.join("overlay-containers").join(&c.id))?;
            if !doomed.contains(&c.layer) {
                freed.push((
                    Action::RunContainer {
                        id: c.id.clone(),
                        layer: None,
                    },
                    Usage::default(),
                ));
            }
        }
        if !doomed.is_empty() {
            layers.records.retain(|l| !doomed.contains(&l.id));
            layers.save()?;
        }
        let stale: HashSet<&str> = batch
            .iter()
            .filter_map(|a| match a {
                Action::StaleMount { id, .. } => Some(id.as_str()),
                _ => None,
            })
            .collect();
        let before = mounts.records.len();
        mounts
            .records
            .retain(|m| !doomed.contains(&m.id) && !stale.contains(m.id.as_str()));
        if mounts.records.len() != before {
            mounts.save()?;
        }
        // 6. Debris and repairs.
        for action in batch {
            let used = match &action {
                Action::MappedLayer { .. }
                | Action::IncompleteLayer { .. }
                | Action::RunContainer { .. } => continue,
                Action::StaleMount { .. } | Action::DanglingMappedEntry { .. } => Usage::default(),
                _ => {
                    let used = self.action_usage(driver, &action);
                    self.remove_debris(driver, &action)?;
                    used
                }
            };
            freed.push((action, used));
        }
        for (action, used) in freed {
            report.push(action, used);
        }
        Ok((rest, heavy))
    }

    /// Remove one piece of debris (or repair a link).
    fn remove_debris(&self, driver: &dyn Driver, action: &Action) -> Result<(), StoreError> {
        match action {
            Action::LayerDir { id } => driver.remove(id).map_err(driver_error("removing", id)),
            Action::TarSplit { id } => remove_if_present(&self.layer_tar_split_path(id)),
            Action::LayerData { id } => remove_if_present(&self.layer_data_dir(id)),
            Action::ImageDir { id } => remove_if_present(&self.image_dir(id)),
            Action::TempFile { path } => remove_if_present(Path::new(path)),
            Action::DanglingLink { name } => match driver.link_dir() {
                Some(dir) => {
                    let path = dir.join(name);
                    match fs::remove_file(&path) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            Err(StoreError::io("removing", path)(e))
                        }
                        _ => Ok(()),
                    }
                }
                None => Ok(()),
            },
            Action::RepairLink { id } => driver
                .repair_link(id)
                .map(|_| ())
                .map_err(driver_error("repairing the link of", id)),
            _ => Ok(()),
        }
    }

    /// What carrying out `action` frees, measured now.
    fn action_usage(&self, driver: &dyn Driver, action: &Action) -> Usage {
        let layer_paths = |id: &str| {
            let mut paths: Vec<PathBuf> = driver.layer_dir(id).into_iter().collect();
            paths.push(self.layer_tar_split_path(id));
            paths.push(self.layer_data_dir(id));
            paths
        };
        let o = self.options();
        let paths = match action {
            Action::MappedLayer { id, .. } | Action::IncompleteLayer { id, .. } => layer_paths(id),
            Action::RunContainer { id, layer } => {
                let mut paths = layer.as_deref().map(layer_paths).unwrap_or_default();
                paths.push(o.graph_root.join("overlay-containers").join(id));
                paths.push(o.run_root.join("overlay-containers").join(id));
                paths
            }
            Action::LayerDir { id } => driver.layer_dir(id).into_iter().collect(),
            Action::TarSplit { id } => vec![self.layer_tar_split_path(id)],
            Action::LayerData { id } => vec![self.layer_data_dir(id)],
            Action::ImageDir { id } => vec![self.image_dir(id)],
            Action::TempFile { path } => vec![PathBuf::from(path)],
            Action::DanglingLink { name } => driver
                .link_dir()
                .map(|d| d.join(name))
                .into_iter()
                .collect(),
            Action::StaleMount { .. }
            | Action::DanglingMappedEntry { .. }
            | Action::RepairLink { .. } => Vec::new(),
        };
        usage(&paths)
    }
}

/// Whether an action removes a whole tree (counted against the batch size).
fn is_heavy(action: &Action) -> bool {
    matches!(
        action,
        Action::MappedLayer { .. }
            | Action::IncompleteLayer { .. }
            | Action::RunContainer { .. }
            | Action::LayerDir { .. }
            | Action::LayerData { .. }
            | Action::ImageDir { .. }
    )
}
