//! What gc needs to know beyond the records: which directories and files
//! exist, which mounts are live, which `layerstore run` processes are gone,
//! and how much a path holds.

use std::collections::HashSet;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustix::fs::{Mode, OFlags};

use super::RunOwner;
use crate::driver::Driver;
use crate::error::{driver_error, StoreError};
use crate::snapshot::Snapshot;
use crate::Store;

/// A directory entry gc may remove, with its modification time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskEntry {
    /// The name (a layer or image id, or an `l/` link name).
    pub name: String,
    /// Its mtime (not following symlinks).
    pub mtime: SystemTime,
}

/// The facts [`super::plan`] decides on, gathered at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// The time the facts were gathered.
    pub now: SystemTime,
    /// Layer directories in the driver's home that no layer record names
    /// (only those need an mtime).
    pub layer_dirs: Vec<DiskEntry>,
    /// `overlay-layers/<id>.tar-split.gz` files no layer record names, by id.
    pub tar_splits: Vec<DiskEntry>,
    /// `overlay-layers/<id>/` directories no layer record names.
    pub layer_data_dirs: Vec<DiskEntry>,
    /// `overlay-images/<id>/` directories no image record names.
    pub image_dirs: Vec<DiskEntry>,
    /// `.tmp-*` files of atomic writes in the metadata directories (name:
    /// the full path).
    pub temp_files: Vec<DiskEntry>,
    /// `l/` links and the layer each points to (`../<id>/diff`); links to
    /// existing layers carry no real mtime.
    pub links: Vec<(DiskEntry, Option<String>)>,
    /// Recorded layers whose short link needs repair.
    pub broken_links: Vec<String>,
    /// Recorded mount paths that are mounted right now.
    pub mounted: HashSet<String>,
    /// Layers with something mounted inside their directory (from the
    /// mount table, whatever `mountpoints.json` says).
    pub busy_layers: HashSet<String>,
    /// Containers with a `layerstore run` marker whose process is gone.
    pub dead_run_containers: HashSet<String>,
}

impl Default for Facts {
    fn default() -> Self {
        Facts {
            now: SystemTime::UNIX_EPOCH,
            layer_dirs: Vec::new(),
            tar_splits: Vec::new(),
            layer_data_dirs: Vec::new(),
            image_dirs: Vec::new(),
            temp_files: Vec::new(),
            links: Vec::new(),
            broken_links: Vec::new(),
            mounted: HashSet::new(),
            busy_layers: HashSet::new(),
            dead_run_containers: HashSet::new(),
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
        let g = &store.options().graph_root;
        let r = &store.options().run_root;
        let layer_ids: HashSet<&str> = snap.layers.iter().map(|l| l.id.as_str()).collect();
        let image_ids: HashSet<&str> = snap.images.iter().map(|i| i.id.as_str()).collect();
        // Only entries no record names need their mtime (one stat each).
        let entry = |dir: &Path, name: String| {
            mtime(&dir.join(&name)).map(|mtime| DiskEntry { name, mtime })
        };
        let all_dirs = driver
            .list_layers()
            .map_err(driver_error("listing", "(all)"))?;
        let mut layer_dirs = Vec::new();
        for id in &all_dirs {
            if layer_ids.contains(id.as_str()) {
                continue;
            }
            if let Some(e) = driver.layer_dir(id).and_then(|dir| {
                mtime(&dir).map(|mtime| DiskEntry {
                    name: id.clone(),
                    mtime,
                })
            }) {
                layer_dirs.push(e);
            }
        }
        let mut tar_splits = Vec::new();
        let mut layer_data_dirs = Vec::new();
        let mut temp_files = Vec::new();
        let layers_dir = g.join("overlay-layers");
        for (name, is_dir) in list(&layers_dir)? {
            if is_dir && is_hex_id(&name) && !layer_ids.contains(name.as_str()) {
                layer_data_dirs.extend(entry(&layers_dir, name));
            } else if let Some(id) = name.strip_suffix(".tar-split.gz") {
                if !is_dir && is_hex_id(id) && !layer_ids.contains(id) {
                    let id = id.to_owned();
                    tar_splits
                        .extend(entry(&layers_dir, name).map(|e| DiskEntry { name: id, ..e }));
                }
            }
        }
        let images_dir = g.join("overlay-images");
        let mut image_dirs = Vec::new();
        for (name, is_dir) in list(&images_dir)? {
            if is_dir && is_hex_id(&name) && !image_ids.contains(name.as_str()) {
                image_dirs.extend(entry(&images_dir, name));
            }
        }
        for dir in [
            layers_dir.clone(),
            images_dir.clone(),
            g.join("overlay-containers"),
            r.join("overlay-layers"),
            r.join("overlay-containers"),
        ] {
            for (name, is_dir) in list(&dir)? {
                if !is_dir && name.starts_with(".tmp-") {
                    let path = dir.join(&name).to_string_lossy().into_owned();
                    temp_files.extend(entry(&dir, name).map(|e| DiskEntry { name: path, ..e }));
                }
            }
        }
        let dirs: HashSet<&str> = all_dirs.iter().map(String::as_str).collect();
        let mut links = Vec::new();
        if let Some(link_dir) = driver.link_dir() {
            // One directory fd, names resolved relative to it: 10,000
            // readlinks cost a third of what full paths do.
            let dir_fd = match rustix::fs::open(
                &link_dir,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => Some(fd),
                Err(rustix::io::Errno::NOENT) => None,
                Err(e) => return Err(StoreError::io("opening", &link_dir)(e.into())),
            };
            let names = if dir_fd.is_some() {
                list(&link_dir)?
            } else {
                Vec::new()
            };
            let targets = match dir_fd.as_ref() {
                Some(fd) => read_links(fd, names),
                None => Vec::new(),
            };
            for (name, id) in targets {
                // Links to live layers are kept whatever their age: no stat.
                let mtime = if layer_ids.contains(id.as_str()) || dirs.contains(id.as_str()) {
                    SystemTime::UNIX_EPOCH
                } else {
                    match mtime(&link_dir.join(&name)) {
                        Some(m) => m,
                        None => continue,
                    }
                };
                links.push((DiskEntry { name, mtime }, Some(id)));
            }
        }
        let linked: HashSet<&str> = links.iter().filter_map(|(_, t)| t.as_deref()).collect();
        // A layer some l/ link points to needs at most its `link` file
        // (one stat); only layers without any link get the full check.
        let broken_links = snap
            .layers
            .iter()
            .filter(|l| !l.is_incomplete() && dirs.contains(l.id.as_str()))
            .filter(|l| {
                if linked.contains(l.id.as_str()) {
                    !driver.has_link_file(&l.id)
                } else {
                    driver.link_needs_repair(&l.id)
                }
            })
            .map(|l| l.id.clone())
            .collect();
        let mounted = snap
            .mounts
            .iter()
            .filter(|m| !m.path.is_empty() && driver.is_mounted(Path::new(&m.path)))
            .map(|m| m.path.clone())
            .collect();
        let busy_layers = driver
            .layers_with_mounts()
            .map_err(driver_error("reading the mount table for", "(all)"))?
            .into_iter()
            .collect();
        let dead_run_containers = snap
            .containers
            .iter()
            .filter(|c| RunOwner::from_metadata(&c.metadata).is_some_and(|o| !o.is_alive()))
            .map(|c| c.id.clone())
            .collect();
        Ok(Facts {
            now,
            layer_dirs,
            tar_splits,
            layer_data_dirs,
            image_dirs,
            temp_files,
            links,
            broken_links,
            mounted,
            busy_layers,
            dead_run_containers,
        })
    }
}

/// `(name, layer id)` of every link in the directory `dir` that points to
/// `../<id>/diff`, resolved relative to the directory's fd. (The targets
/// of podman's links are too long for ext4's inline symlinks, so each
/// readlink reads a block: this is most of a dry run's time on a large
/// store. Spreading it over threads did not help on a busy 2-core host.)
fn read_links(dir: &rustix::fd::OwnedFd, names: Vec<(String, bool)>) -> Vec<(String, String)> {
    names
        .into_iter()
        .filter_map(|(name, _)| {
            let target = rustix::fs::readlinkat(dir, name.as_str(), Vec::new()).ok()?;
            let target = target.to_string_lossy();
            let id = target
                .strip_prefix("../")?
                .strip_suffix("/diff")?
                .to_owned();
            Some((name, id))
        })
        .collect()
}

/// 64 lowercase hex digits: the ids containers/storage generates (and the
/// only names gc treats as debris outside the driver's home).
fn is_hex_id(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn mtime(path: &Path) -> Option<SystemTime> {
    fs::symlink_metadata(path).and_then(|m| m.modified()).ok()
}

/// `(name, is_dir)` of every UTF-8-named entry of `dir` (none when it does
/// not exist), from the directory itself (no stat per entry).
fn list(dir: &Path) -> Result<Vec<(String, bool)>, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io("listing", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(StoreError::io("listing", dir))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
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

/// What the trees at `paths` hold, not following symlinks. Missing or
/// unreadable parts count as nothing.
pub fn usage(paths: &[PathBuf]) -> Usage {
    let mut seen = HashSet::new();
    let mut total = Usage::default();
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(path) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if seen.insert((meta.dev(), meta.ino())) {
            total.inodes += 1;
            total.bytes += meta.blocks() * 512;
        }
        if meta.is_dir() {
            if let Ok(entries) = fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        }
    }
    total
}
