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

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use crate::config::StoreOptions;
use crate::confined::Dir;
use crate::consistency::{self, check_unique, cross_check, Defect, Files};
use crate::error::StoreError;
use crate::id::id_problem;
use crate::lockfile::{LockFile, LockMode, ReadGuard, Token, WriteGuard};
use crate::records::{
    decode_records_each, encode_records, Container, Image, Layer, MountPoint, Record,
};
use crate::snapshot::{Records, Snapshot, TableRecords};

/// The driver name whose metadata directories we read (`overlay-layers`, ...).
const DRIVER: &str = "overlay";

/// The store's two trusted roots, as configured.
#[derive(Debug, Clone)]
pub(crate) struct Roots {
    pub(crate) graph: PathBuf,
    pub(crate) run: PathBuf,
}

/// Which root a path is beneath.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Root {
    /// The graphroot.
    Graph,
    /// The runroot.
    Run,
}

impl Roots {
    fn path(&self, root: Root) -> &Path {
        match root {
            Root::Graph => &self.graph,
            Root::Run => &self.run,
        }
    }

    /// The root directory, `None` when it does not exist yet.
    pub(crate) fn open(&self, root: Root) -> Result<Option<Dir>, StoreError> {
        let path = self.path(root);
        Dir::open_opt(path).map_err(StoreError::io("opening", path))
    }

    /// The root directory, created (0700, as containers/storage creates
    /// it) when missing.
    pub(crate) fn open_or_create(&self, root: Root) -> Result<Dir, StoreError> {
        let path = self.path(root);
        if let Some(dir) = self.open(root)? {
            return Ok(dir);
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(StoreError::io("creating", path))?;
        Dir::open(path).map_err(StoreError::io("opening", path))
    }
}

/// A path beneath one of the roots.
#[derive(Debug, Clone)]
pub(crate) struct Place {
    root: Root,
    rel: PathBuf,
    /// The absolute path, for messages.
    shown: PathBuf,
}

impl Place {
    fn new(roots: &Roots, root: Root, rel: &str) -> Place {
        Place {
            root,
            rel: PathBuf::from(rel),
            shown: roots.path(root).join(rel),
        }
    }

    fn parent_rel(&self) -> &Path {
        self.rel.parent().unwrap_or(Path::new(""))
    }

    fn name(&self) -> &OsStr {
        self.rel.file_name().unwrap_or_default()
    }
}

/// One JSON file of a table, and whether its records are volatile.
#[derive(Debug, Clone)]
struct DataFile {
    place: Place,
    volatile: bool,
}

/// Records as read from a table's files, with what was wrong with them
/// (records that did not decode or had invalid ids are not in `records`).
#[derive(Debug, Clone)]
pub(crate) struct Loaded<R> {
    /// Shared with the table's cache and the snapshots made from it.
    pub(crate) records: Records<R>,
    pub(crate) defects: Vec<Defect>,
}

impl<R> Default for Loaded<R> {
    fn default() -> Self {
        Loaded {
            records: Records::default(),
            defects: Vec::new(),
        }
    }
}

/// One lock-protected set of records (layers, images, containers, mounts).
#[derive(Debug)]
pub(crate) struct Table<R> {
    roots: Roots,
    dir: Place,
    lock_place: Place,
    files: Vec<DataFile>,
    /// Whether the files' mtimes also signal changes (layers only).
    watch_mtime: bool,
    lock: OnceLock<Arc<LockFile>>,
    cache: Mutex<Option<Cached<R>>>,
}

#[derive(Debug)]
struct Cached<R> {
    loaded: Loaded<R>,
    mtimes: Vec<Option<SystemTime>>,
    /// The lock's token when the records were read or written; `None` when
    /// they were read without a lock file.
    token: Option<Token>,
}

/// Shared locks held until dropped (see [`Store::snapshot_held`]).
pub(crate) struct SharedGuards<'a> {
    _held: [Shared<'a>; 3],
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
    fn new(
        roots: &Roots,
        dir: Place,
        lock_place: Place,
        files: Vec<DataFile>,
        watch_mtime: bool,
    ) -> Self {
        Table {
            roots: roots.clone(),
            dir,
            lock_place,
            files,
            watch_mtime,
            lock: OnceLock::new(),
            cache: Mutex::new(None),
        }
    }

    /// The primary (stable) JSON file, named in messages.
    fn main_file(&self) -> &Path {
        &self.files[0].place.shown
    }

    /// The directory holding `place`, `None` when it (or its root) does
    /// not exist; never through a symlink.
    fn parent_dir(&self, place: &Place) -> Result<Option<Dir>, StoreError> {
        let Some(root) = self.roots.open(place.root)? else {
            return Ok(None);
        };
        let parent = place.parent_rel();
        if parent.as_os_str().is_empty() {
            return Ok(Some(root));
        }
        root.open_dir_opt(parent).map_err(StoreError::io(
            "opening",
            place.shown.parent().unwrap_or(&place.shown),
        ))
    }

    /// The directory holding `place`, created (0700) when missing.
    fn parent_dir_created(&self, place: &Place) -> Result<Dir, StoreError> {
        let root = self.roots.open_or_create(place.root)?;
        let parent = place.parent_rel();
        if parent.as_os_str().is_empty() {
            return Ok(root);
        }
        let shown = place.shown.parent().unwrap_or(&place.shown);
        root.create_dir_all(parent, 0o700)
            .map_err(StoreError::io("creating", shown))
    }

    fn lockfile(&self) -> Result<&Arc<LockFile>, StoreError> {
        if let Some(l) = self.lock.get() {
            return Ok(l);
        }
        let dir = self.parent_dir_created(&self.lock_place)?;
        let opened = LockFile::open_in(&dir, self.lock_place.name(), LockMode::ReadWrite)?;
        Ok(self.lock.get_or_init(|| opened))
    }

    /// Whether the table's lock file exists: taking the lock would not
    /// create it.
    fn lock_present(&self) -> Result<bool, StoreError> {
        if self.lock.get().is_some() {
            return Ok(true);
        }
        let Some(dir) = self.parent_dir(&self.lock_place)? else {
            return Ok(false);
        };
        Ok(dir
            .stat(self.lock_place.name())
            .map_err(StoreError::io("reading", &self.lock_place.shown))?
            .is_some())
    }

    /// Take the shared lock if there is anything to lock.
    fn lock_shared(&self) -> Result<Shared<'_>, StoreError> {
        if self.lock.get().is_none() {
            let Some(root) = self.roots.open(self.dir.root)? else {
                return Ok(Shared::Absent);
            };
            let exists = root
                .stat(&self.dir.rel)
                .map_err(StoreError::io("reading", &self.dir.shown))?;
            if exists.is_none() {
                return Ok(Shared::Absent);
            }
            let lock_dir = self.parent_dir(&self.lock_place)?;
            let lock_exists = match &lock_dir {
                Some(d) => d
                    .stat(self.lock_place.name())
                    .map_err(StoreError::io("reading", &self.lock_place.shown))?
                    .is_some(),
                None => false,
            };
            if !lock_exists {
                return Ok(Shared::Unlocked);
            }
        }
        Ok(Shared::Locked(self.lockfile()?.read()?))
    }

    /// The records as `lock_shared` allows reading them.
    pub(crate) fn read_shared(&self) -> Result<Loaded<R>, StoreError> {
        let shared = self.lock_shared()?;
        self.read_with(&shared)
    }

    /// The records, read under `shared` (from [`Table::lock_shared`]).
    fn read_with(&self, shared: &Shared<'_>) -> Result<Loaded<R>, StoreError> {
        match shared {
            Shared::Absent => Ok(Loaded::default()),
            Shared::Unlocked => Ok(self.load(None)?.loaded),
            Shared::Locked(guard) => self.current(guard),
        }
    }

    fn mtimes(&self) -> Vec<Option<SystemTime>> {
        self.files
            .iter()
            .map(|f| {
                let dir = self.parent_dir(&f.place).ok().flatten()?;
                dir.stat(f.place.name()).ok().flatten().map(|m| m.mtime)
            })
            .collect()
    }

    /// Read and decode every file of the table. A file that is not a JSON
    /// array, a record that does not decode or has an invalid id, a
    /// repeated id or name: each is a [`Defect`], and only sound records
    /// are kept.
    fn load(&self, token: Option<Token>) -> Result<Cached<R>, StoreError> {
        let mtimes = self.mtimes();
        let mut records: Vec<R> = Vec::new();
        let mut defects = Vec::new();
        // Ids read so far, once a volatile file is read: the first
        // occurrence of an id wins, as in containers/storage.
        let mut seen: Option<HashSet<String>> = None;
        for file in &self.files {
            if file.volatile && seen.is_none() {
                seen = Some(records.iter().map(|r| r.id().to_owned()).collect());
            }
            let Some(dir) = self.parent_dir(&file.place)? else {
                continue;
            };
            // Parsed as it is read: the file's bytes are never all in
            // memory beside its records.
            let (reader, _) =
                match dir.open_regular_opt(file.place.name(), crate::confined::MAX_READ) {
                    Ok(Some(f)) => f,
                    Ok(None) => continue,
                    // Not a regular file, or too big to be one of ours: the
                    // file is broken, not the machine.
                    Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                        defects.push(Defect::Unreadable {
                            file: file.place.shown.clone(),
                            message: e.to_string(),
                        });
                        continue;
                    }
                    Err(e) => return Err(StoreError::io("reading", &file.place.shown)(e)),
                };
            let limited = std::io::Read::take(reader, crate::confined::MAX_READ);
            // Each record checked and kept as it is decoded: the file's
            // records are never held twice.
            let before = (records.len(), defects.len());
            let shown = &file.place.shown;
            let outcome = decode_records_each::<R>(limited, |at, result| {
                let mut r = match result {
                    Ok(r) => r,
                    Err(e) => {
                        defects.push(Defect::BadRecord {
                            file: shown.clone(),
                            index: at,
                            id: e.id,
                            message: e.message,
                        });
                        return;
                    }
                };
                if let Some(reason) = id_problem(r.id()) {
                    defects.push(Defect::InvalidId {
                        file: shown.clone(),
                        index: at,
                        kind: R::KIND,
                        id: r.id().to_owned(),
                        reason,
                    });
                    return;
                }
                if let Some(seen) = seen.as_mut().filter(|_| file.volatile) {
                    if !seen.insert(r.id().to_owned()) {
                        return;
                    }
                }
                r.set_volatile(file.volatile);
                records.push(r);
            })
            .map_err(StoreError::io("reading", shown))?;
            if let Err(e) = outcome {
                // Not a JSON array: none of its elements count.
                records.truncate(before.0);
                defects.truncate(before.1);
                if file.volatile {
                    seen = Some(records.iter().map(|r| r.id().to_owned()).collect());
                }
                defects.push(Defect::Unreadable {
                    file: shown.clone(),
                    message: e.message,
                });
            }
        }
        // Exactly as long as it is: a vector grown by doubling holds up to
        // twice the records' size for as long as the records live.
        records.shrink_to_fit();
        defects.extend(check_unique(self.main_file(), &mut records));
        Ok(Cached {
            loaded: Loaded {
                records: records.into(),
                defects,
            },
            mtimes,
            token,
        })
    }

    /// The records, reloaded if a writer (another process, or another
    /// `Store` in this one) changed them since this table last looked: the
    /// lock's token differs, or (layers) a JSON file's mtime does.
    fn current(&self, guard: &ReadGuard<'_>) -> Result<Loaded<R>, StoreError> {
        let token = guard.token()?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let stale = match cache.as_ref() {
            None => true,
            Some(c) => c.token != Some(token) || (self.watch_mtime && c.mtimes != self.mtimes()),
        };
        if stale {
            *cache = Some(self.load(Some(token))?);
        }
        Ok(cache.as_ref().map(|c| c.loaded.clone()).unwrap_or_default())
    }

    /// Take the exclusive lock and read the records from disk (never from
    /// the cache: another writer may have changed them).
    pub(crate) fn begin(
        &self,
        validate: fn(&Path, &[R]) -> Result<(), StoreError>,
    ) -> Result<Txn<'_, R>, StoreError> {
        let root = self.roots.open_or_create(self.dir.root)?;
        root.create_dir_all(&self.dir.rel, 0o700)
            .map_err(StoreError::io("creating", &self.dir.shown))?;
        let guard = self.lockfile()?.write()?;
        let Loaded { records, defects } = self.load(None)?.loaded;
        // Just read, so not shared: no copy.
        let records = records.into_vec();
        Ok(Txn {
            table: self,
            guard,
            records,
            defects,
            validate,
        })
    }

    /// Change the records under the exclusive lock and save them; refused
    /// when the table has defects.
    ///
    /// `validate` runs on the result before anything is written; on any
    /// error nothing changes on disk.
    fn modify<T>(
        &self,
        change: impl FnOnce(&mut Vec<R>) -> Result<T, StoreError>,
        validate: fn(&Path, &[R]) -> Result<(), StoreError>,
    ) -> Result<T, StoreError> {
        let mut txn = self.begin(validate)?;
        if !txn.defects.is_empty() {
            return Err(StoreError::Inconsistent {
                defects: std::mem::take(&mut txn.defects),
            });
        }
        let out = change(&mut txn.records)?;
        txn.save()?;
        Ok(out)
    }
}

/// A table's records as a writer holds them (exclusively, [`Txn`], or read
/// under the shared lock, [`Loaded`]), with their defects.
pub(crate) trait Held<R> {
    /// The sound records.
    fn records(&self) -> &[R];
    /// What was wrong with the files.
    fn defects(&self) -> &[Defect];
}

impl<R> Held<R> for Loaded<R> {
    fn records(&self) -> &[R] {
        &self.records
    }
    fn defects(&self) -> &[Defect] {
        &self.defects
    }
}

impl<R: Record + Clone> Held<R> for Txn<'_, R> {
    fn records(&self) -> &[R] {
        &self.records
    }
    fn defects(&self) -> &[Defect] {
        &self.defects
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
    /// What was wrong with the files when they were read: a writer refuses
    /// to save over any of it.
    pub(crate) defects: Vec<Defect>,
    validate: fn(&Path, &[R]) -> Result<(), StoreError>,
}

impl<R: Record + Clone> Txn<'_, R> {
    /// Validate and write the records: new token first, then each JSON
    /// file atomically (the upstream, crash-safe order). Refused while the
    /// files read had defects (their records would be lost).
    pub(crate) fn save(&mut self) -> Result<(), StoreError> {
        let table = self.table;
        if !self.defects.is_empty() {
            return Err(StoreError::Inconsistent {
                defects: self.defects.clone(),
            });
        }
        crate::snapshot::check_unique(table.main_file(), &self.records)?;
        (self.validate)(table.main_file(), &self.records)?;
        self.guard.record_write()?;
        for file in &table.files {
            let mine = || {
                self.records
                    .iter()
                    .filter(|r| r.is_volatile() == file.volatile)
            };
            let dir = match table.parent_dir(&file.place)? {
                Some(d) => d,
                None if file.volatile && mine().next().is_none() => continue,
                None => table.parent_dir_created(&file.place)?,
            };
            let exists = dir
                .stat(file.place.name())
                .map_err(StoreError::io("reading", &file.place.shown))?
                .is_some();
            if file.volatile && mine().next().is_none() && !exists {
                continue;
            }
            dir.write_atomic(file.place.name(), &encode_records(mine()), !file.volatile)
                .map_err(StoreError::io("writing", &file.place.shown))?;
        }
        let cached = Cached {
            loaded: Loaded {
                records: self.records.clone().into(),
                defects: Vec::new(),
            },
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
    pub(crate) roots: Roots,
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
        let roots = Roots {
            graph: options.graph_root.clone(),
            run: options.run_root.clone(),
        };
        let volatile_home = if options.transient_store {
            Root::Run
        } else {
            Root::Graph
        };
        let place = |root, rel: &str| Place::new(&roots, root, rel);
        let file = |place: Place, volatile| DataFile { place, volatile };
        let layers = Table::new(
            &roots,
            place(Root::Graph, "overlay-layers"),
            place(Root::Graph, "overlay-layers/layers.lock"),
            vec![
                file(place(Root::Graph, "overlay-layers/layers.json"), false),
                file(
                    place(volatile_home, "overlay-layers/volatile-layers.json"),
                    true,
                ),
            ],
            true,
        );
        let mounts = Table::new(
            &roots,
            place(Root::Run, "overlay-layers"),
            place(Root::Run, "overlay-layers/mountpoints.lock"),
            vec![file(
                place(Root::Run, "overlay-layers/mountpoints.json"),
                false,
            )],
            false,
        );
        let images = Table::new(
            &roots,
            place(Root::Graph, "overlay-images"),
            place(Root::Graph, "overlay-images/images.lock"),
            vec![file(
                place(Root::Graph, "overlay-images/images.json"),
                false,
            )],
            false,
        );
        let containers = Table::new(
            &roots,
            place(Root::Graph, "overlay-containers"),
            place(volatile_home, "overlay-containers/containers.lock"),
            vec![
                file(
                    place(Root::Graph, "overlay-containers/containers.json"),
                    false,
                ),
                file(
                    place(volatile_home, "overlay-containers/volatile-containers.json"),
                    true,
                ),
            ],
            false,
        );
        Ok(Store {
            options,
            roots,
            layers,
            mounts,
            images,
            containers,
        })
    }

    /// The graphroot, opened (`None` when it does not exist yet). Every
    /// path inside the store is reached through it (or the runroot's)
    /// without following a symlink.
    pub fn graph_dir(&self) -> Result<Option<Dir>, StoreError> {
        self.roots.open(Root::Graph)
    }

    /// The runroot, opened (`None` when it does not exist yet).
    pub fn run_dir(&self) -> Result<Option<Dir>, StoreError> {
        self.roots.open(Root::Run)
    }

    /// The runroot, opened, created (0700) when missing.
    pub fn run_dir_created(&self) -> Result<Dir, StoreError> {
        self.roots.open_or_create(Root::Run)
    }

    /// The files defects are reported against.
    pub fn files(&self) -> Files<'_> {
        Files {
            layers: self.layers.main_file(),
            images: self.images.main_file(),
            containers: self.containers.main_file(),
        }
    }

    /// Refuse to change the store unless the tables a writer holds (read
    /// under their locks, exclusive or shared) are sound and agree with
    /// each other; `mounts`, when the writer read them, are checked too.
    pub(crate) fn check_held(
        &self,
        layers: &dyn Held<Layer>,
        mounts: Option<&dyn Held<MountPoint>>,
        images: &dyn Held<Image>,
        containers: &dyn Held<Container>,
    ) -> Result<(), StoreError> {
        let mut defects: Vec<Defect> = Vec::new();
        defects.extend_from_slice(layers.defects());
        defects.extend_from_slice(mounts.map_or(&[][..], |m| m.defects()));
        defects.extend_from_slice(images.defects());
        defects.extend_from_slice(containers.defects());
        defects.extend(cross_check(
            self.files(),
            layers.records(),
            images.records(),
            containers.records(),
        ));
        if defects.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Inconsistent { defects })
        }
    }

    /// For a writer about to take its locks without a look at the records
    /// first: taking a lock whose file does not exist yet creates it, so
    /// when any of them (the tables' and `graph_locks` in the graphroot) is
    /// missing, a store whose records cannot be trusted is refused first,
    /// from a read that creates nothing. On a store podman has used every
    /// lock file exists and nothing is read here.
    pub(crate) fn refuse_untrusted_before_locking(
        &self,
        graph_locks: &[&str],
    ) -> Result<(), StoreError> {
        let graph_present = match self.roots.open(Root::Graph)? {
            Some(graph) => graph_locks
                .iter()
                .all(|name| matches!(graph.stat(name), Ok(Some(_)))),
            None => false,
        };
        if graph_present
            && self.layers.lock_present()?
            && self.mounts.lock_present()?
            && self.images.lock_present()?
            && self.containers.lock_present()?
        {
            return Ok(());
        }
        self.snapshot()?.check()
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

    /// A view of all records: the sound ones, and
    /// [`Snapshot::defects`] naming the rest and any contradiction between
    /// them (check [`Snapshot::check`] before acting on the records).
    ///
    /// # Locking
    /// Shared: `layers.lock`, then `mountpoints.lock` (nested), then
    /// `images.lock`, then `containers.lock`; all released on return.
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        Ok(self.snapshot_held()?.0)
    }

    /// [`Store::snapshot`], with the shared locks of layers, images and
    /// containers still held by the returned guards (for a caller that
    /// looks at the disk too, so that no writer changes it meanwhile).
    pub(crate) fn snapshot_held(&self) -> Result<(Snapshot, SharedGuards<'_>), StoreError> {
        let layers_guard = self.layers.lock_shared()?;
        let layers = self.layers.read_with(&layers_guard)?;
        let mounts = self.mounts.read_shared()?;
        let images_guard = self.images.lock_shared()?;
        let images = self.images.read_with(&images_guard)?;
        let containers_guard = self.containers.lock_shared()?;
        let containers = self.containers.read_with(&containers_guard)?;
        let mut defects = layers.defects;
        defects.extend(mounts.defects);
        defects.extend(images.defects);
        defects.extend(containers.defects);
        defects.extend(cross_check(
            self.files(),
            &layers.records,
            &images.records,
            &containers.records,
        ));
        let mounts = consistency::mounts_of_layers(mounts.records.to_vec(), &layers.records);
        let snap = Snapshot {
            layers: layers.records,
            images: images.records,
            containers: containers.records,
            mounts,
            defects,
        };
        Ok((
            snap,
            SharedGuards {
                _held: [layers_guard, images_guard, containers_guard],
            },
        ))
    }

    /// The image records alone, without layers.json: images.json's own
    /// defects and its `mapped-layers` entries that cannot name a layer,
    /// but not whether its top layers exist ([`Store::snapshot`] says).
    ///
    /// # Locking
    /// Shared `images.lock`, released on return.
    pub fn image_records(&self) -> Result<TableRecords<Image>, StoreError> {
        let images = self.images.read_shared()?;
        let mut defects = images.defects;
        defects.extend(consistency::image_references(self.files(), &images.records));
        Ok(TableRecords {
            records: images.records,
            defects,
        })
    }

    /// The container records alone, without layers.json or images.json:
    /// their own defects and two containers naming one layer, but not
    /// whether the layers and images they name exist ([`Store::snapshot`]
    /// says).
    ///
    /// # Locking
    /// Shared `containers.lock`, released on return.
    pub fn container_records(&self) -> Result<TableRecords<Container>, StoreError> {
        let containers = self.containers.read_shared()?;
        let mut defects = containers.defects;
        defects.extend(consistency::shared_container_layers(
            self.files(),
            &containers.records,
        ));
        Ok(TableRecords {
            records: containers.records,
            defects,
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
        self.layers.modify(change, crate::snapshot::check_parents)
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
