//! Opening a store and moving its records between disk and memory under
//! containers/storage's locks.
//!
//! ```text
//! <graphroot>/overlay-layers/{layers.json, volatile-layers.json, layers.lock}
//! <graphroot>/overlay-images/{images.json, images.lock}
//! <graphroot>/overlay-containers/{containers.json, volatile-containers.json, containers.lock}
//! <runroot>/overlay-layers/{mountpoints.json, mountpoints.lock}
//! (transient_store = true: volatile-layers.json, containers.lock and
//!  volatile-containers.json live under <runroot> instead)
//! ```
//!
//! Reading never creates anything: a store whose directories do not exist
//! yet reads as empty. Every read takes the shared locks in
//! containers/storage's order (layers, with mountpoints nested, then images,
//! then containers) and reloads a file only when its lock's last-writer
//! token changed (or, for layers, a JSON file's mtime), as podman does.
//! Every write takes the exclusive lock, re-reads the file from disk,
//! applies the change, validates, writes the new token and then replaces the
//! JSON atomically (the upstream, crash-safe order).

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use crate::atomic::write_atomic;
use crate::config::StoreOptions;
use crate::error::StoreError;
use crate::lockfile::{LockFile, LockMode, ReadGuard, Token, WriteGuard};
use crate::records::{decode_file, encode_file, Container, Image, Layer, MountPoint, Record};
use crate::snapshot::{check_parents, check_unique, Snapshot};

/// The driver name whose metadata directories we read (`overlay-layers`, ...).
const DRIVER: &str = "overlay";

/// One JSON file of a table, and whether its records are volatile.
#[derive(Debug, Clone)]
struct DataFile {
    path: PathBuf,
    volatile: bool,
}

/// One lock-protected set of records (layers, images, containers, mounts).
#[derive(Debug)]
pub(crate) struct Table<R> {
    dir: PathBuf,
    lock_path: PathBuf,
    files: Vec<DataFile>,
    /// Whether the files' mtimes also signal changes (layers only).
    watch_mtime: bool,
    lock: OnceLock<Arc<LockFile>>,
    cache: Mutex<Option<Cached<R>>>,
}

#[derive(Debug)]
struct Cached<R> {
    records: Vec<R>,
    mtimes: Vec<Option<SystemTime>>,
    /// The lock's token when the records were read or written; `None` when
    /// they were read without a lock file.
    token: Option<Token>,
}

/// How a table can be read right now.
enum Shared<'a> {
    /// Its directory does not exist: nothing to read.
    Absent,
    /// Its directory exists but the lock file does not (no containers/storage
    /// process ever opened this store): read without locking rather than
    /// create the lock file, so that reading never writes.
    Unlocked,
    /// Read under the shared lock.
    Locked(ReadGuard<'a>),
}

impl<R: Record + Clone> Table<R> {
    fn new(dir: PathBuf, lock_path: PathBuf, files: Vec<DataFile>, watch_mtime: bool) -> Self {
        Table {
            dir,
            lock_path,
            files,
            watch_mtime,
            lock: OnceLock::new(),
            cache: Mutex::new(None),
        }
    }

    /// The primary (stable) JSON file, named in messages.
    fn main_file(&self) -> &Path {
        &self.files[0].path
    }

    fn lockfile(&self) -> Result<&Arc<LockFile>, StoreError> {
        if let Some(l) = self.lock.get() {
            return Ok(l);
        }
        let opened = LockFile::open(&self.lock_path, LockMode::ReadWrite)?;
        Ok(self.lock.get_or_init(|| opened))
    }

    /// Take the shared lock if there is anything to lock.
    fn lock_shared(&self) -> Result<Shared<'_>, StoreError> {
        for (path, missing) in [
            (&self.dir, Shared::Absent),
            (&self.lock_path, Shared::Unlocked),
        ] {
            match fs::metadata(path) {
                Err(e) if e.kind() == ErrorKind::NotFound && self.lock.get().is_none() => {
                    return Ok(missing)
                }
                Err(e) if e.kind() != ErrorKind::NotFound => {
                    return Err(StoreError::io("reading", path)(e))
                }
                _ => {}
            }
        }
        Ok(Shared::Locked(self.lockfile()?.read()?))
    }

    /// The records as `lock_shared` allows reading them.
    pub(crate) fn read_shared(&self) -> Result<Vec<R>, StoreError> {
        match self.lock_shared()? {
            Shared::Absent => Ok(Vec::new()),
            Shared::Unlocked => Ok(self.load(None)?.records),
            Shared::Locked(guard) => self.current(&guard),
        }
    }

    fn mtimes(&self) -> Vec<Option<SystemTime>> {
        self.files
            .iter()
            .map(|f| fs::metadata(&f.path).and_then(|m| m.modified()).ok())
            .collect()
    }

    /// Read and decode every file of the table; ids and names must be unique.
    fn load(&self, token: Option<Token>) -> Result<Cached<R>, StoreError> {
        let mtimes = self.mtimes();
        let mut records: Vec<R> = Vec::new();
        for file in &self.files {
            let bytes = match fs::read(&file.path) {
                Ok(b) => b,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io("reading", &file.path)(e)),
            };
            let decoded: Vec<R> = decode_file(&bytes).map_err(|e| StoreError::Decode {
                path: file.path.clone(),
                index: e.index,
                id: e.id,
                message: e.message,
            })?;
            for mut r in decoded {
                // The first occurrence of an id wins, as in containers/storage.
                if file.volatile && records.iter().any(|seen| seen.id() == r.id()) {
                    continue;
                }
                r.set_volatile(file.volatile);
                records.push(r);
            }
        }
        check_unique(self.main_file(), &records)?;
        Ok(Cached {
            records,
            mtimes,
            token,
        })
    }

    /// The records, reloaded if a writer (another process, or another
    /// `Store` in this one) changed them since this table last looked: the
    /// lock's token differs, or (layers) a JSON file's mtime does.
    fn current(&self, guard: &ReadGuard<'_>) -> Result<Vec<R>, StoreError> {
        let token = guard.token()?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let stale = match cache.as_ref() {
            None => true,
            Some(c) => c.token != Some(token) || (self.watch_mtime && c.mtimes != self.mtimes()),
        };
        if stale {
            *cache = Some(self.load(Some(token))?);
        }
        Ok(cache
            .as_ref()
            .map(|c| c.records.clone())
            .unwrap_or_default())
    }

    /// Take the exclusive lock and read the records from disk (never from
    /// the cache: another writer may have changed them).
    pub(crate) fn begin(
        &self,
        validate: fn(&Path, &[R]) -> Result<(), StoreError>,
    ) -> Result<Txn<'_, R>, StoreError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(StoreError::io("creating", &self.dir))?;
        let guard = self.lockfile()?.write()?;
        let records = self.load(None)?.records;
        Ok(Txn {
            table: self,
            guard,
            records,
            validate,
        })
    }

    /// Change the records under the exclusive lock and save them.
    ///
    /// `validate` runs on the result before anything is written; on any
    /// error nothing changes on disk.
    fn modify<T>(
        &self,
        change: impl FnOnce(&mut Vec<R>) -> Result<T, StoreError>,
        validate: fn(&Path, &[R]) -> Result<(), StoreError>,
    ) -> Result<T, StoreError> {
        let mut txn = self.begin(validate)?;
        let out = change(&mut txn.records)?;
        txn.save()?;
        Ok(out)
    }
}

/// One table's records under its exclusive lock, held until the
/// transaction is dropped; [`Txn::save`] may be called several times (the
/// `incomplete` protocol saves a record, works, then saves again).
pub(crate) struct Txn<'a, R: Record + Clone> {
    table: &'a Table<R>,
    guard: WriteGuard<'a>,
    /// The records; change them, then [`Txn::save`].
    pub(crate) records: Vec<R>,
    validate: fn(&Path, &[R]) -> Result<(), StoreError>,
}

impl<R: Record + Clone> Txn<'_, R> {
    /// Validate and write the records: new token first, then each JSON
    /// file atomically (the upstream, crash-safe order).
    pub(crate) fn save(&mut self) -> Result<(), StoreError> {
        let table = self.table;
        check_unique(table.main_file(), &self.records)?;
        (self.validate)(table.main_file(), &self.records)?;
        self.guard.record_write()?;
        for file in &table.files {
            let mine: Vec<R> = self
                .records
                .iter()
                .filter(|r| r.is_volatile() == file.volatile)
                .cloned()
                .collect();
            if file.volatile && mine.is_empty() && !file.path.exists() {
                continue;
            }
            write_atomic(&file.path, &encode_file(&mine), !file.volatile)
                .map_err(StoreError::io("writing", &file.path))?;
        }
        let cached = Cached {
            records: self.records.clone(),
            mtimes: table.mtimes(),
            token: Some(self.guard.token()?),
        };
        *table.cache.lock().unwrap_or_else(|p| p.into_inner()) = Some(cached);
        Ok(())
    }
}

/// An open containers/storage store (overlay driver).
#[derive(Debug)]
pub struct Store {
    options: StoreOptions,
    pub(crate) layers: Table<Layer>,
    pub(crate) mounts: Table<MountPoint>,
    pub(crate) images: Table<Image>,
    pub(crate) containers: Table<Container>,
}

impl Store {
    /// Open the store `options` describe. Nothing is created or written.
    ///
    /// Fails when the driver is not overlay, when the graphroot holds only
    /// another driver's store, or when the graphroot cannot be read.
    pub fn open(options: StoreOptions) -> Result<Store, StoreError> {
        if options.driver != DRIVER {
            return Err(StoreError::UnsupportedDriver {
                driver: options.driver.clone(),
            });
        }
        check_graph_root(&options.graph_root)?;
        let g = &options.graph_root;
        let r = &options.run_root;
        let volatile_home = if options.transient_store { r } else { g };
        let file = |path: PathBuf, volatile| DataFile { path, volatile };
        let layers = Table::new(
            g.join("overlay-layers"),
            g.join("overlay-layers/layers.lock"),
            vec![
                file(g.join("overlay-layers/layers.json"), false),
                file(
                    volatile_home.join("overlay-layers/volatile-layers.json"),
                    true,
                ),
            ],
            true,
        );
        let mounts = Table::new(
            r.join("overlay-layers"),
            r.join("overlay-layers/mountpoints.lock"),
            vec![file(r.join("overlay-layers/mountpoints.json"), false)],
            false,
        );
        let images = Table::new(
            g.join("overlay-images"),
            g.join("overlay-images/images.lock"),
            vec![file(g.join("overlay-images/images.json"), false)],
            false,
        );
        let containers = Table::new(
            g.join("overlay-containers"),
            volatile_home.join("overlay-containers/containers.lock"),
            vec![
                file(g.join("overlay-containers/containers.json"), false),
                file(
                    volatile_home.join("overlay-containers/volatile-containers.json"),
                    true,
                ),
            ],
            false,
        );
        Ok(Store {
            options,
            layers,
            mounts,
            images,
            containers,
        })
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    /// Path of `layers.json`.
    pub fn layers_file(&self) -> &Path {
        self.layers.main_file()
    }

    /// Path of `images.json`.
    pub fn images_file(&self) -> &Path {
        self.images.main_file()
    }

    /// Path of `containers.json`.
    pub fn containers_file(&self) -> &Path {
        self.containers.main_file()
    }

    /// Path of `mountpoints.json`.
    pub fn mountpoints_file(&self) -> &Path {
        self.mounts.main_file()
    }

    /// A consistent view of all records.
    ///
    /// # Locking
    /// Shared: `layers.lock`, then `mountpoints.lock` (nested), then
    /// `images.lock`, then `containers.lock`; all released on return.
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let layers_guard = self.layers.lock_shared()?;
        let layers = match &layers_guard {
            Shared::Absent => Vec::new(),
            Shared::Unlocked => self.layers.load(None)?.records,
            Shared::Locked(g) => self.layers.current(g)?,
        };
        check_parents(self.layers.main_file(), &layers)?;
        let mounts = self.mounts.read_shared()?;
        let images = self.images.read_shared()?;
        let containers = self.containers.read_shared()?;
        drop(layers_guard);
        let mounts = mounts
            .into_iter()
            .filter(|m| layers.iter().any(|l| l.id == m.id))
            .collect();
        Ok(Snapshot {
            layers,
            images,
            containers,
            mounts,
        })
    }

    /// Change the layer records and save them.
    ///
    /// # Locking
    /// Exclusive `layers.lock` for the whole call; the file is re-read after
    /// locking. Takes no other lock: callers that also change images or
    /// containers must call this first (the containers/storage lock order).
    pub fn modify_layers<T>(
        &self,
        change: impl FnOnce(&mut Vec<Layer>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.layers.modify(change, check_parents)
    }

    /// Change the image records and save them.
    ///
    /// # Locking
    /// Exclusive `images.lock` for the whole call; the file is re-read after
    /// locking.
    pub fn modify_images<T>(
        &self,
        change: impl FnOnce(&mut Vec<Image>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.images.modify(change, |_, _| Ok(()))
    }

    /// Change the container records and save them.
    ///
    /// # Locking
    /// Exclusive `containers.lock` for the whole call; the file is re-read
    /// after locking.
    pub fn modify_containers<T>(
        &self,
        change: impl FnOnce(&mut Vec<Container>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.containers.modify(change, |_, _| Ok(()))
    }

    /// Change the mount records and save them.
    ///
    /// # Locking
    /// Exclusive `mountpoints.lock`; callers hold `layers.lock` around it,
    /// as containers/storage nests the two.
    pub fn modify_mounts<T>(
        &self,
        change: impl FnOnce(&mut Vec<MountPoint>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.mounts.modify(change, |_, _| Ok(()))
    }
}

/// Refuse a graphroot we cannot read, or one that holds only another
/// driver's store (`<G>/vfs-layers` and no `<G>/overlay-layers`).
fn check_graph_root(graph_root: &Path) -> Result<(), StoreError> {
    let entries = match fs::read_dir(graph_root) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io("reading store directory", graph_root)(e)),
    };
    let mut foreign = None;
    for entry in entries {
        let entry = entry.map_err(StoreError::io("reading store directory", graph_root))?;
        let name = entry.file_name();
        let Some(driver) = name.to_str().and_then(|n| n.strip_suffix("-layers")) else {
            continue;
        };
        if driver == DRIVER {
            return Ok(());
        }
        foreign.get_or_insert((driver.to_owned(), entry.path()));
    }
    match foreign {
        Some((driver, dir)) => Err(StoreError::ForeignDriver {
            graph_root: graph_root.to_owned(),
            driver,
            dir,
        }),
        None => Ok(()),
    }
}
