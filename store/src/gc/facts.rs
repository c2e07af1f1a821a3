//! What gc needs to know beyond the records: which directories and files
//! exist, which mounts are live, which `layerstore run` processes are gone,
//! and how much a path holds. Everything is read through confined
//! directories ([`crate::confined::Dir`]) and the driver; nothing follows a
//! symlink.
//!
//! System calls per layer (what a dry run costs on a large store): one
//! `getdents` entry per layer directory and per `l/` link, one `readlinkat`
//! per link, one `statx` of `<id>/link` per recorded layer some link points
//! to; a `statx` (mtime) only for what no record names; `lower-layers` of
//! every layer only when some unrecorded layer directory is a candidate.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{is_temp_name, MetaDir};
use crate::confined::Dir;
use crate::driver::{Driver, LinkEntry};
use crate::error::{driver_error, StoreError};
use crate::id::{ContainerId, ImageId, LayerId};
use crate::snapshot::Snapshot;
use crate::store::Root;
use crate::Store;

/// A directory entry gc may remove, with its modification time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskEntry<T = String> {
    /// The name (a layer, image or container id, or a file name).
    pub name: T,
    /// Its mtime (not following symlinks).
    pub mtime: SystemTime,
}

/// For each layer some layer directories' own files say they stack on,
/// those directories ([`Facts::stacked_on`]). Each directory's name is held
/// once, however many layers it stacks on (a layer of a deep image stacks
/// on every layer below it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StackedOn {
    /// The directories that stack on something, each once.
    stackers: Vec<String>,
    /// Layer -> positions in `stackers`, in the order added.
    by_lower: HashMap<String, Vec<u32>>,
}

impl StackedOn {
    /// Directory `stacker` stacks on each of `lowers`.
    pub fn add(&mut self, stacker: String, lowers: impl IntoIterator<Item = String>) {
        let at = u32::try_from(self.stackers.len()).expect("fewer than 2^32 layer directories");
        let mut any = false;
        for lower in lowers {
            self.by_lower.entry(lower).or_default().push(at);
            any = true;
        }
        if any {
            self.stackers.push(stacker);
        }
    }

    /// The directories that stack on `lower`, in the order added (none:
    /// empty).
    pub fn get(&self, lower: &str) -> impl Iterator<Item = &str> + '_ {
        self.by_lower
            .get(lower)
            .into_iter()
            .flatten()
            .map(|&at| self.stackers[at as usize].as_str())
    }

    /// Whether any directory stacks on `lower`.
    pub fn contains_key(&self, lower: &str) -> bool {
        self.by_lower.contains_key(lower)
    }
}

impl FromIterator<(String, Vec<String>)> for StackedOn {
    fn from_iter<I: IntoIterator<Item = (String, Vec<String>)>>(iter: I) -> Self {
        let mut out = StackedOn::default();
        for (lower, stackers) in iter {
            for stacker in stackers {
                out.add(stacker, [lower.clone()]);
            }
        }
        out
    }
}

/// The facts [`super::plan`] decides on, gathered at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// The time the facts were gathered.
    pub now: SystemTime,
    /// Every directory in the driver's home, by name as found.
    pub all_layer_dirs: HashSet<String>,
    /// Layer directories no layer record names, with valid ids (only those
    /// need an mtime).
    pub layer_dirs: Vec<DiskEntry<LayerId>>,
    /// Directories of the home whose names are not valid ids: never
    /// touched, reported.
    pub odd_names: Vec<String>,
    /// `overlay-layers/<id>.tar-split.gz` files no layer record names.
    pub tar_splits: Vec<DiskEntry<LayerId>>,
    /// `overlay-layers/<id>/` directories no layer record names.
    pub layer_data_dirs: Vec<DiskEntry<LayerId>>,
    /// `overlay-images/<id>/` directories no image record names.
    pub image_dirs: Vec<DiskEntry<ImageId>>,
    /// Every directory in `overlay-images` and (graphroot)
    /// `overlay-containers`, by name as found.
    pub all_data_dirs: HashSet<String>,
    /// `.tmp-*` files of atomic writes in the metadata directories.
    pub temp_files: Vec<(MetaDir, DiskEntry)>,
    /// `l/` links and the layer each points to; links to existing layers
    /// carry no real mtime.
    pub links: Vec<LinkEntry>,
    /// The driver's trash: removed layers whose deletion did not finish.
    pub trash: Vec<String>,
    /// Recorded layers whose short link needs repair.
    pub broken_links: Vec<LayerId>,
    /// Layers whose mount point is mounted right now (recorded or not).
    pub mounted: HashSet<String>,
    /// Layers with something other than their mount point mounted inside
    /// their directory (from the mount table, whatever `mountpoints.json`
    /// says).
    pub busy_layers: HashSet<String>,
    /// Containers with a `layerstore run` marker whose process is gone
    /// and in which no process runs any more.
    pub dead_run_containers: HashSet<String>,
    /// Containers with a `layerstore run` marker whose process is gone
    /// but in which processes still run ([`super::run_processes`]): one
    /// of them, by container. gc keeps them.
    pub running_dead_runs: HashMap<String, u32>,
    /// For each layer some layer directory's own files (`lower-layers`,
    /// `lower`) say it stacks on: the directories that do. Records may lie
    /// (a damaged `parent`); the driver's files are what a mount uses, so
    /// gc never removes a layer another layer directory stacks on. Read
    /// only when something could be removed.
    pub stacked_on: StackedOn,
    /// Layer directories whose lower files could not be read (then no
    /// layer and no layer directory is removed: what stacks on them is
    /// unknown).
    pub unreadable_lowers: Vec<String>,
    /// For each `mapped-layers` entry naming no layer: what on disk still
    /// carries its id, if anything.
    pub mapped_traces: HashMap<String, PathBuf>,
    /// podman's answer about its containers ([`super::GcOptions::podman`]).
    pub podman: super::PodmanAnswer,
    /// Paths named in defects.
    pub files: FactFiles,
}

/// The store's paths that gc's own defects name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactFiles {
    /// `layers.json`.
    pub layers: PathBuf,
    /// `images.json`.
    pub images: PathBuf,
    /// The driver's home (`<graphroot>/overlay`).
    pub home: PathBuf,
    /// `containers.json`.
    pub containers: PathBuf,
    /// The graphroot.
    pub graph: PathBuf,
}

impl Default for FactFiles {
    fn default() -> Self {
        FactFiles {
            layers: PathBuf::from("layers.json"),
            images: PathBuf::from("images.json"),
            home: PathBuf::from("overlay"),
            containers: PathBuf::from("containers.json"),
            graph: PathBuf::new(),
        }
    }
}

impl Default for Facts {
    fn default() -> Self {
        Facts {
            now: SystemTime::UNIX_EPOCH,
            all_layer_dirs: HashSet::new(),
            layer_dirs: Vec::new(),
            odd_names: Vec::new(),
            tar_splits: Vec::new(),
            layer_data_dirs: Vec::new(),
            image_dirs: Vec::new(),
            all_data_dirs: HashSet::new(),
            temp_files: Vec::new(),
            links: Vec::new(),
            trash: Vec::new(),
            broken_links: Vec::new(),
            mounted: HashSet::new(),
            busy_layers: HashSet::new(),
            dead_run_containers: HashSet::new(),
            running_dead_runs: HashMap::new(),
            stacked_on: StackedOn::default(),
            unreadable_lowers: Vec::new(),
            mapped_traces: HashMap::new(),
            podman: super::PodmanAnswer::NotAsked,
            files: FactFiles::default(),
        }
    }
}

impl Facts {
    /// Look at the store's directories, mounts and processes. The caller
    /// holds the locks that make `snap` current.
    pub fn gather(
        store: &Store,
        driver: &dyn Driver,
        snap: &Snapshot,
    ) -> Result<Facts, StoreError> {
        let now = SystemTime::now();
        let layer_ids: HashSet<&str> = snap.layers.iter().map(|l| l.id.as_str()).collect();
        let image_ids: HashSet<&str> = snap.images.iter().map(|i| i.id.as_str()).collect();

        // The home's directories split once into valid ids (moved, not
        // copied: at 100,000 layers every copy of the list is megabytes)
        // and the rest.
        let mut dir_ids: Vec<LayerId> = Vec::new();
        let mut odd_dirs: Vec<String> = Vec::new();
        for name in driver
            .list_layers()
            .map_err(driver_error("listing", "(all)"))?
        {
            match LayerId::parse(&name) {
                Ok(id) => dir_ids.push(id),
                Err(_) => odd_dirs.push(name),
            }
        }
        let mut layer_dirs = Vec::new();
        for id in dir_ids.iter().filter(|id| !layer_ids.contains(id.as_str())) {
            if let Some(mtime) = driver.layer_mtime(id) {
                layer_dirs.push(DiskEntry {
                    name: id.clone(),
                    mtime,
                });
            }
        }
        let odd_names: Vec<String> = odd_dirs
            .iter()
            .filter(|n| !layer_ids.contains(n.as_str()))
            .cloned()
            .collect();

        let mut tar_splits = Vec::new();
        let mut layer_data_dirs = Vec::new();
        if let Some(dir) = store.meta_dir(Root::Graph, crate::ops::LAYERS_DIR)? {
            for (name, is_dir) in list(&dir)? {
                if is_dir && is_hex_id(&name) && !layer_ids.contains(name.as_str()) {
                    layer_data_dirs.extend(entry(&dir, &name, LayerId::parse(&name).ok()));
                } else if let Some(id) = name.strip_suffix(".tar-split.gz") {
                    if !is_dir && is_hex_id(id) && !layer_ids.contains(id) {
                        tar_splits.extend(entry(&dir, &name, LayerId::parse(id).ok()));
                    }
                }
            }
        }
        let mut image_dirs = Vec::new();
        let mut all_data_dirs = HashSet::new();
        if let Some(dir) = store.meta_dir(Root::Graph, crate::ops::IMAGES_DIR)? {
            for (name, is_dir) in list(&dir)? {
                if is_dir {
                    all_data_dirs.insert(format!("i/{name}"));
                }
                if is_dir && is_hex_id(&name) && !image_ids.contains(name.as_str()) {
                    image_dirs.extend(entry(&dir, &name, ImageId::parse(&name).ok()));
                }
            }
        }
        // Container directories are never debris by themselves (podman's
        // hold its runtime files, and a container record whose id was
        // damaged would make them look unowned): only an orphan layer's flag
        // or a dead run's marker names the ones gc removes.
        if let Some(dir) = store.meta_dir(Root::Graph, crate::ops::CONTAINERS_DIR)? {
            for (name, is_dir) in list(&dir)? {
                if is_dir {
                    all_data_dirs.insert(format!("c/{name}"));
                }
            }
        }
        let mut temp_files = Vec::new();
        for meta in MetaDir::ALL {
            let (root, name) = meta.place();
            if let Some(dir) = store.meta_dir(root, name)? {
                for (name, is_dir) in list(&dir)? {
                    if !is_dir && is_temp_name(&name) {
                        let e = entry(&dir, &name, Some(name.clone()));
                        temp_files.extend(e.map(|e| (meta, e)));
                    }
                }
            }
        }

        let dirs: HashSet<&str> = dir_ids
            .iter()
            .map(LayerId::as_str)
            .chain(odd_dirs.iter().map(String::as_str))
            .collect();
        let mut links = driver
            .links()
            .map_err(driver_error("listing the links of", "(all)"))?;
        for link in &mut links {
            // Links to live layers are kept whatever their age: no stat.
            let live = link
                .layer
                .as_deref()
                .is_some_and(|t| layer_ids.contains(t) || dirs.contains(t));
            if !live {
                link.mtime = driver.link_mtime(&link.name).unwrap_or(now);
            }
        }
        let linked: HashSet<&str> = links.iter().filter_map(|l| l.layer.as_deref()).collect();
        // A layer some l/ link points to needs at most its `link` file
        // (one stat); only layers without any link get the full check.
        // In the records' order (a stat each, through one home).
        // (Linked layers by their record's position: the id is copied
        // only for a link file found missing.)
        let mut unlinked = Vec::new();
        let mut linked_at: Vec<usize> = Vec::new();
        for (n, l) in snap.layers.iter().enumerate() {
            if l.is_incomplete() || !dirs.contains(l.id.as_str()) {
                continue;
            }
            if linked.contains(l.id.as_str()) {
                if LayerId::parse(&l.id).is_ok() {
                    linked_at.push(n);
                }
                continue;
            }
            let Ok(id) = LayerId::parse(&l.id) else {
                continue;
            };
            if driver.link_needs_repair(&id) {
                unlinked.push((n, id));
            }
        }
        drop(linked);
        drop(dirs);
        let inside = driver
            .mounts_inside_layers()
            .map_err(driver_error("reading the mount table for", "(all)"))?;
        let busy_layers: HashSet<String> = inside.other.into_iter().collect();
        let mut mounted = HashSet::new();
        let candidates = snap
            .mounts
            .iter()
            .map(|m| m.id.as_str())
            .chain(inside.mount_point.iter().map(String::as_str));
        for id in candidates {
            if let Ok(id) = LayerId::parse(id) {
                if driver.is_mounted(&id) {
                    mounted.insert(id.into_string());
                }
            }
        }
        let mut dead_run_containers = HashSet::new();
        let mut running_dead_runs = HashMap::new();
        for c in snap.containers.iter() {
            if super::run_owner_of(c, &snap.layers).is_none_or(|o| o.is_alive()) {
                continue;
            }
            let Ok(id) = ContainerId::parse(&c.id) else {
                continue;
            };
            let layer = LayerId::parse(&c.layer).ok();
            match super::run_processes(driver, &id, layer.as_ref()).first() {
                Some(&pid) => {
                    running_dead_runs.insert(c.id.clone(), pid);
                }
                None => {
                    dead_run_containers.insert(c.id.clone());
                }
            }
        }

        let mut stacked_on = StackedOn::default();
        let mut unreadable_lowers = Vec::new();
        let removable = !layer_dirs.is_empty()
            || !dead_run_containers.is_empty()
            || snap.layers.iter().any(|l| {
                l.is_incomplete()
                    || l.is_mapped()
                    || l.flags.contains_key(crate::ops::FLAG_CONTAINER)
            });
        // What each layer directory stacks on (only when something could
        // be removed) and, in the same look at each directory, whether a
        // linked layer still has its `link` file.
        let present: Vec<bool> = if removable {
            let looked = driver.layer_dirs_stacks_and_link_files(&dir_ids, &links);
            let mut has_link: HashMap<&str, bool> = HashMap::with_capacity(dir_ids.len());
            for (id, (stack, has)) in dir_ids.iter().zip(looked) {
                has_link.insert(id.as_str(), has);
                match stack {
                    Ok(lowers) => {
                        stacked_on.add(id.to_string(), lowers.into_iter().map(LayerId::into_string))
                    }
                    Err(e) => {
                        tracing::debug!(layer = %id, error = %e, "cannot read what the layer stacks on");
                        unreadable_lowers.push(id.to_string());
                    }
                }
            }
            linked_at
                .iter()
                .map(|&n| {
                    has_link
                        .get(snap.layers[n].id.as_str())
                        .copied()
                        .unwrap_or(false)
                })
                .collect()
        } else {
            driver.have_link_files(
                &linked_at
                    .iter()
                    .filter_map(|&n| LayerId::parse(&snap.layers[n].id).ok())
                    .collect::<Vec<_>>(),
            )
        };
        let mut broken: Vec<(usize, LayerId)> = linked_at
            .into_iter()
            .zip(present)
            .filter(|(_, has)| !has)
            .filter_map(|(n, _)| Some((n, LayerId::parse(&snap.layers[n].id).ok()?)))
            .chain(unlinked)
            .collect();
        broken.sort_unstable_by_key(|(n, _)| *n);
        let broken_links: Vec<LayerId> = broken.into_iter().map(|(_, id)| id).collect();

        let mut mapped_traces = HashMap::new();
        for image in snap.images.iter() {
            for m in &image.mapped_layers {
                if layer_ids.contains(m.as_str()) {
                    continue;
                }
                if let Some(trace) = trace_of(store, driver, m)? {
                    mapped_traces.insert(m.clone(), trace);
                }
            }
        }

        Ok(Facts {
            now,
            all_layer_dirs: dir_ids
                .into_iter()
                .map(LayerId::into_string)
                .chain(odd_dirs)
                .collect(),
            layer_dirs,
            odd_names,
            tar_splits,
            layer_data_dirs,
            image_dirs,
            all_data_dirs,
            temp_files,
            links,
            trash: driver
                .trash()
                .map_err(driver_error("listing the trash of", "(all)"))?,
            broken_links,
            mounted,
            busy_layers,
            dead_run_containers,
            running_dead_runs,
            stacked_on,
            unreadable_lowers,
            mapped_traces,
            podman: super::PodmanAnswer::NotAsked,
            files: FactFiles {
                layers: store.files().layers.to_owned(),
                images: store.files().images.to_owned(),
                home: store.options().graph_root.join("overlay"),
                containers: store.files().containers.to_owned(),
                graph: store.options().graph_root.clone(),
            },
        })
    }
}

/// What on disk carries layer id `id` (its directory, tar-split or big
/// data), if anything. An id that is not valid carries nothing.
fn trace_of(store: &Store, driver: &dyn Driver, id: &str) -> Result<Option<PathBuf>, StoreError> {
    let Ok(id) = LayerId::parse(id) else {
        return Ok(None);
    };
    if driver.exists(&id) {
        return Ok(driver
            .layer_dir(&id)
            .or_else(|| Some(PathBuf::from(id.as_str()))));
    }
    if store.has_tar_split(&id)? {
        return Ok(Some(store.layer_tar_split_path(&id)));
    }
    if let Some(dir) = store.meta_dir(Root::Graph, crate::ops::LAYERS_DIR)? {
        if dir
            .stat(id.as_str())
            .map_err(StoreError::io("reading", dir.display(id.as_str())))?
            .is_some()
        {
            return Ok(Some(store.layer_data_dir(&id)));
        }
    }
    Ok(None)
}

/// The entry `name` of `dir` as a [`DiskEntry`] of `value` (none when
/// `value` is `None` or the entry vanished).
fn entry<T>(dir: &Dir, name: &str, value: Option<T>) -> Option<DiskEntry<T>> {
    let value = value?;
    let meta = dir.stat(name).ok().flatten()?;
    Some(DiskEntry {
        name: value,
        mtime: meta.mtime,
    })
}

/// 64 lowercase hex digits: the ids containers/storage generates (and the
/// only names gc treats as debris outside the driver's home).
fn is_hex_id(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `(name, is_dir)` of every UTF-8-named entry of `dir`, from the directory
/// itself (no stat per entry, except where the filesystem does not say).
fn list(dir: &Dir) -> Result<Vec<(String, bool)>, StoreError> {
    let entries = dir
        .entries()
        .map_err(StoreError::io("listing", dir.path()))?;
    let mut out = Vec::new();
    for e in entries {
        let Ok(name) = e.name.into_string() else {
            continue;
        };
        let is_dir = match e.file_type {
            rustix::fs::FileType::Directory => true,
            rustix::fs::FileType::Unknown => {
                dir.stat(&name).ok().flatten().is_some_and(|m| m.is_dir())
            }
            _ => false,
        };
        out.push((name, is_dir));
    }
    Ok(out)
}

/// Disk space and inodes held by some paths.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Allocated bytes (`st_blocks * 512`) of the distinct inodes.
    pub bytes: u64,
    /// Distinct inodes (hard links counted once).
    pub inodes: u64,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Usage) {
        self.bytes += other.bytes;
        self.inodes += other.inodes;
    }
}

/// What the trees at `rels` beneath `dir` hold, not following symlinks and
/// not descending into other mounts ([`Dir::walk_tree`]: iterative, with a
/// bounded number of descriptors, however deep a container made a tree).
/// Missing or unreadable parts count as nothing. (Hard links are counted
/// once within one call.)
pub fn usage_in(dir: &Dir, rels: &[&Path]) -> Usage {
    let mut seen = HashSet::new();
    let mut total = Usage::default();
    for rel in rels {
        let mut count = |meta: &crate::confined::Meta| {
            // Only files with other links can be met twice.
            if meta.is_dir() || meta.nlink <= 1 || seen.insert((meta.dev, meta.ino)) {
                total.inodes += 1;
                total.bytes += meta.blocks * 512;
            }
        };
        if let Err(e) = dir.walk_tree(rel, &mut count) {
            tracing::debug!(path = ?dir.display(rel), error = %e, "measuring stopped early");
        }
    }
    total
}
