//! The error type of the store: opening, loading, validating, looking up and
//! saving a containers/storage store.

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::lockfile::LockError;

/// What went wrong with a store. Every variant names the file, record or
/// argument involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The storage configuration could not be read.
    #[error("reading the storage configuration")]
    Config(#[from] ConfigError),
    /// A lock file could not be opened, locked or read.
    #[error("locking the store")]
    Lock(#[from] LockError),
    /// The configured driver is not overlay.
    #[error("storage driver {driver:?} is not supported: layerstore works on overlay stores only")]
    UnsupportedDriver {
        /// The configured driver.
        driver: String,
    },
    /// The graphroot holds another driver's store and no overlay store.
    #[error(
        "{} holds a store of storage driver {driver:?} ({}), not an overlay store; \
         layerstore works on overlay stores only",
        graph_root.display(),
        dir.display()
    )]
    ForeignDriver {
        /// The graphroot.
        graph_root: PathBuf,
        /// The other driver's name.
        driver: String,
        /// The directory that shows it.
        dir: PathBuf,
    },
    /// A filesystem operation failed.
    #[error("{op} {}", path.display())]
    Io {
        /// What was being done ("reading", "listing", ...).
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A metadata file is not valid JSON of the expected shape.
    #[error("{}: {}{message}", path.display(), record_label(*index, id.as_deref()))]
    Decode {
        /// The file.
        path: PathBuf,
        /// Index of the offending record, if the array parsed.
        index: Option<usize>,
        /// Id of the offending record, if readable.
        id: Option<String>,
        /// The parser's description, with line and column.
        message: String,
    },
    /// Two records in one store share an id.
    #[error("{}: {kind} id {id} appears twice", path.display())]
    DuplicateId {
        /// The file.
        path: PathBuf,
        /// "layer", "image", "container".
        kind: &'static str,
        /// The repeated id.
        id: String,
    },
    /// Two records in one store share a name.
    #[error("{}: {kind} name {name:?} is used by both {first} and {second}", path.display())]
    DuplicateName {
        /// The file.
        path: PathBuf,
        /// "layer", "image", "container".
        kind: &'static str,
        /// The repeated name.
        name: String,
        /// Id of the first record that has it.
        first: String,
        /// Id of the second record that has it.
        second: String,
    },
    /// A layer names a parent that no layer record has.
    #[error("{}: layer {id} has parent {parent}, which is not in the store", path.display())]
    MissingParent {
        /// The file.
        path: PathBuf,
        /// The layer.
        id: String,
        /// The missing parent.
        parent: String,
    },
    /// Following a layer's parents leads back to itself.
    #[error("layer parents loop: {}", chain.join(" -> "))]
    ParentCycle {
        /// The layers of the loop, the first one repeated at the end.
        chain: Vec<String>,
    },
    /// The store's records cannot be trusted: nothing is changed.
    #[error(
        "refusing to change the store: its records cannot be trusted \
         (fix or restore them, then retry){}",
        crate::consistency::describe(defects, 50)
    )]
    Inconsistent {
        /// Everything found wrong.
        defects: Vec<crate::consistency::Defect>,
    },
    /// No record matches.
    #[error("{kind} {query:?} not found")]
    NotFound {
        /// "layer", "image", "container".
        kind: &'static str,
        /// What was looked up.
        query: String,
    },
    /// The driver failed.
    #[error("{op} layer {id}")]
    Driver {
        /// What was being done ("creating", "mounting", ...).
        op: &'static str,
        /// The layer.
        id: String,
        /// The driver's error.
        source: crate::driver::DriverError,
    },
    /// Populating a new layer's content failed.
    #[error("writing the content of layer {id}")]
    Content {
        /// The layer.
        id: String,
        /// Why.
        source: crate::driver::DriverError,
    },
    /// A record cannot be removed or changed because something uses it.
    #[error("{kind} {id} is in use: {reason}")]
    InUse {
        /// "layer", "image", "container".
        kind: &'static str,
        /// The record.
        id: String,
        /// Who uses it.
        reason: String,
    },
    /// A record belongs to another tool (podman); layerstore leaves it to
    /// that tool unless forced.
    #[error("{kind} {id} was not created by layerstore: remove it with `{remedy}` (or force the removal)")]
    NotOurs {
        /// "container".
        kind: &'static str,
        /// The record.
        id: String,
        /// The command that removes it.
        remedy: String,
    },
    /// A record with this id already exists.
    #[error("{kind} {id} already exists")]
    Exists {
        /// "layer", "image", "container".
        kind: &'static str,
        /// The id.
        id: String,
    },
    /// A name is already used by another record of this kind.
    #[error("{kind} name {name:?} is already used by {owner}")]
    NameInUse {
        /// "layer", "container".
        kind: &'static str,
        /// The name.
        name: String,
        /// The record that has it.
        owner: String,
    },
    /// The layer is not mounted.
    #[error("layer {id} is not mounted")]
    NotMounted {
        /// The layer.
        id: String,
    },
    /// The container runs with a uid/gid mapping on an unmapped layer, the
    /// driver cannot idmap it here, and the caller did not accept on-disk
    /// ownership.
    #[error("container {id} runs with a uid/gid mapping, but its layers cannot be idmapped on this host; mount it accepting on-disk ownership (--nocache) instead")]
    MappedMount {
        /// The container.
        id: String,
    },
    /// A step failed and undoing it failed too: the container named is
    /// left behind (gc removes a run's container once its owner is gone;
    /// `layerstore rm --force` removes it).
    #[error(
        "{}; and container {container} could not be removed again: {}",
        error_chain(cause.as_ref()),
        error_chain(cleanup.as_ref())
    )]
    CleanupFailed {
        /// The container left behind.
        container: String,
        /// What failed first.
        cause: Box<StoreError>,
        /// Why removing the container failed.
        cleanup: Box<StoreError>,
    },
    /// An ID map is invalid or does not map what is needed.
    #[error("invalid id mapping")]
    IdMap(#[from] crate::idmap::IdMapError),
    /// No layer of the image can serve the requested mapping.
    #[error(transparent)]
    Mapping(#[from] crate::mapping::MappingError),
    /// `--userns=auto` could not choose a mapping.
    #[error(transparent)]
    AutoUserNs(Box<crate::userns::AutoUserNsError>),
    /// An id (given by the caller, or read from a record) cannot name
    /// anything on disk.
    #[error(transparent)]
    InvalidId(#[from] crate::id::InvalidId),
    /// gc would remove more unrecorded layer directories than it may
    /// without being forced: the store may have lost its records.
    #[error(
        "refusing to remove {unrecorded} layer directories that no record names \
         ({recorded} layers are recorded): the store may have lost its records; \
         check layers.json, then force gc if they really are debris"
    )]
    GcTooMuch {
        /// Unrecorded layer directories the plan removes.
        unrecorded: usize,
        /// Layer records in the store.
        recorded: usize,
    },
    /// Another `layerstore gc` holds gc's lock on this store.
    #[error("another layerstore gc is running on this store (it holds {})", path.display())]
    GcBusy {
        /// The lock file.
        path: PathBuf,
    },
    /// An id prefix matches more than one record.
    #[error("{kind} {query:?} is ambiguous: it matches {}", matches.join(", "))]
    Ambiguous {
        /// "layer", "image", "container".
        kind: &'static str,
        /// What was looked up.
        query: String,
        /// The ids it matches.
        matches: Vec<String>,
    },
}

/// Build a [`StoreError::Driver`].
impl From<crate::userns::AutoUserNsError> for StoreError {
    fn from(e: crate::userns::AutoUserNsError) -> StoreError {
        StoreError::AutoUserNs(Box::new(e))
    }
}

/// `e: source: source...` in one line, for logs and reports.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        text.push_str(": ");
        text.push_str(&s.to_string());
        next = s.source();
    }
    text
}

pub(crate) fn driver_error(
    op: &'static str,
    id: &str,
) -> impl FnOnce(crate::driver::DriverError) -> StoreError {
    let id = id.to_owned();
    move |source| StoreError::Driver { op, id, source }
}

fn record_label(index: Option<usize>, id: Option<&str>) -> String {
    match (index, id) {
        (Some(i), Some(id)) => format!("record {i} (id {id}): "),
        (Some(i), None) => format!("record {i}: "),
        _ => String::new(),
    }
}

impl StoreError {
    /// Build an [`StoreError::Io`] for `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| StoreError::Io { op, path, source }
    }
}
