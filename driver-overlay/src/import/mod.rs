//! Importing an image into a store the way podman's image library stores
//! one: each layer applied from its tar into a new overlay layer with its
//! tar-split metadata, layer ids chained from the config's DiffIDs (so a
//! layer podman already has is reused), then the image record with its
//! config and manifest as big data.
//!
//! ```text
//! <graphroot>/overlay/<layer>/diff                    the layer's files
//! <graphroot>/overlay-layers/<layer>.tar-split.gz     to reproduce the tar
//! <graphroot>/overlay-images/<image>/{=<config key>,=<manifest key>,manifest}
//! ```
//!
//! A failure at any point removes the layers this import created: nothing
//! is left behind.

mod generate;
mod names;
mod source;

use std::io::{self, BufWriter, Read};
use std::path::{Path, PathBuf};

use layerstore::ops::{LayerDiff, NewLayer};
use layerstore::records::Layer;
use layerstore::{LayerId, Store, StoreError};

pub use names::normalize_name;
pub use source::Source;

use crate::layout::OverlayDriver;
use crate::ocidiff::{apply_layer_at, ApplyOptions, DiffReport, WhiteoutFormat};
use crate::tarsplit::TarSplitWriter;
use source::LayerBlob;

/// What went wrong importing an image. Each variant names the source, the
/// member or the layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// A file could not be read or written.
    #[error("{op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The source is not what its transport promises.
    #[error("{source_name}: {reason}")]
    Malformed {
        /// The source, or the member of it.
        source_name: String,
        /// What is wrong.
        reason: String,
    },
    /// A member the source's manifest names is missing.
    #[error("{source_name}: {what} is missing")]
    Missing {
        /// The member.
        what: String,
        /// The source.
        source_name: String,
    },
    /// A layer's content does not have the digest the image says it has.
    #[error("layer {index} ({blob}): {what} is {found}, but the image says {expected}")]
    DigestMismatch {
        /// Layer number, from 1 at the bottom.
        index: usize,
        /// Where the layer came from.
        blob: String,
        /// "the blob digest" or "the DiffID".
        what: &'static str,
        /// What the image's manifest or config says.
        expected: String,
        /// What the content hashes to.
        found: String,
    },
    /// An image name that is not a valid reference.
    #[error("invalid image name {name:?}: {reason}")]
    BadName {
        /// The name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// Applying a layer's tar failed.
    #[error("layer {index} ({blob})")]
    Layer {
        /// Layer number, from 1 at the bottom.
        index: usize,
        /// Where the layer came from.
        blob: String,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The store refused a change.
    #[error("updating the store")]
    Store(#[from] StoreError),
}

impl ImportError {
    pub(crate) fn io(
        op: &'static str,
        path: impl AsRef<Path>,
    ) -> impl FnOnce(io::Error) -> ImportError {
        let path = path.as_ref().to_owned();
        move |source| ImportError::Io { op, path, source }
    }

    pub(crate) fn malformed(blob: &source::Blob, e: impl std::fmt::Display) -> ImportError {
        ImportError::Malformed {
            source_name: blob.describe(),
            reason: e.to_string(),
        }
    }
}

/// Progress of an import, for a progress bar. Every method has a no-op
/// default.
pub trait ImportProgress {
    /// Layer `index` (from 0) of `count`, `bytes` long, starts.
    fn start_layer(&self, _index: usize, _count: usize, _bytes: u64) {}
    /// `n` more bytes of the current layer were read.
    fn advance(&self, _n: u64) {}
    /// The current layer is done (`reused`: it was already in the store).
    fn finish_layer(&self, _reused: bool) {}
}

/// No progress reporting.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl ImportProgress for NoProgress {}

/// One imported layer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImportedLayer {
    /// The layer id.
    pub id: String,
    /// Its DiffID.
    pub diff_digest: String,
    /// Whether the store already had it.
    pub reused: bool,
}

/// The outcome of an import.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImportReport {
    /// The image id.
    pub image_id: String,
    /// The image's names after the import.
    pub names: Vec<String>,
    /// The layers, bottom first.
    pub layers: Vec<ImportedLayer>,
    /// Whether the image was already in the store (names were added).
    pub image_reused: bool,
}

/// Import `source` into `store`, naming the image `names` (normalized as
/// podman does; a docker archive's own tags when `names` is empty).
pub fn import_image(
    store: &Store,
    driver: &OverlayDriver,
    source: &Source,
    names: &[String],
    progress: &dyn ImportProgress,
) -> Result<ImportReport, ImportError> {
    let parts = source.parts()?;
    let mut names: Vec<String> = names
        .iter()
        .map(|n| normalize_name(n, "localhost"))
        .collect::<Result<_, _>>()?;
    if names.is_empty() {
        names = parts
            .tags
            .iter()
            .map(|n| normalize_name(n, "docker.io"))
            .collect::<Result<_, _>>()?;
    }
    let diff_ids = generate::config_diff_ids(parts.config.as_deref(), parts.layers.len())?;
    let mut imported: Vec<(ImportedLayer, Layer)> = Vec::new();
    let result = (|| {
        for (i, blob) in parts.layers.iter().enumerate() {
            let parent = imported.last().map(|(l, _)| l.id.clone());
            progress.start_layer(i, parts.layers.len(), blob.blob.size());
            let expected = diff_ids.as_ref().map(|ids| ids[i].as_str());
            let layer = import_layer(store, driver, parent, i + 1, blob, expected, progress)?;
            progress.finish_layer(layer.0.reused);
            imported.push(layer);
        }
        generate::commit_image(store, &parts, &imported, names.clone())
    })();
    match result {
        Ok((image_id, names, image_reused)) => Ok(ImportReport {
            image_id,
            names,
            layers: imported.into_iter().map(|(l, _)| l).collect(),
            image_reused,
        }),
        Err(e) => {
            for (layer, _) in imported.iter().rev().filter(|(l, _)| !l.reused) {
                if let Err(cleanup) = store.delete_layer(driver, &layer.id) {
                    tracing::warn!(
                        "removing layer {} after a failed import: {cleanup:#}",
                        layer.id
                    );
                }
            }
            Err(e)
        }
    }
}

/// The layer id containers/image gives a layer: its DiffID's hex at the
/// bottom, else the hex sha256 of `<parent id>+<DiffID hex>`.
pub fn chain_id(parent: Option<&str>, diff_id: &str) -> String {
    let hex = diff_id.strip_prefix("sha256:").unwrap_or(diff_id);
    match parent {
        None => hex.to_owned(),
        Some(p) => generate::sha256_hex(format!("{p}+{hex}").as_bytes()),
    }
}

fn import_layer(
    store: &Store,
    driver: &OverlayDriver,
    parent: Option<String>,
    index: usize,
    blob: &LayerBlob,
    expected_diff_id: Option<&str>,
    progress: &dyn ImportProgress,
) -> Result<(ImportedLayer, Layer), ImportError> {
    // With a known DiffID the id is containers/image's chain id, and a
    // layer the store already has is reused. A bare tarball gets a random
    // id (its DiffID is only known once it is applied).
    let id = expected_diff_id.map(|d| chain_id(parent.as_deref(), d));
    if let (Some(id), Some(diff_id)) = (&id, expected_diff_id) {
        let snap = store.snapshot()?;
        if let Some(existing) = snap.layers.iter().find(|l| &l.id == id) {
            if existing.diff_digest == diff_id && !existing.is_incomplete() {
                let imported = ImportedLayer {
                    id: existing.id.clone(),
                    diff_digest: existing.diff_digest.clone(),
                    reused: true,
                };
                return Ok((imported, existing.clone()));
            }
        }
    }
    let new = NewLayer {
        id,
        parent,
        ..NewLayer::default()
    };
    let layer = store.create_layer(driver, new, |layer, id| {
        let r =
            populate(store, driver, id, index, blob, expected_diff_id, progress).map_err(|e| {
                StoreError::Content {
                    id: layer.id.clone(),
                    source: Box::new(e),
                }
            })?;
        Ok(Some(LayerDiff {
            compressed_digest: r.compressed_digest,
            compressed_size: r.compressed_size,
            diff_digest: r.diff_digest,
            diff_size: r.diff_size,
            compression: r.compression.as_cs(),
            uidset: r.uidset,
            gidset: r.gidset,
        }))
    })?;
    let imported = ImportedLayer {
        id: layer.id.clone(),
        diff_digest: layer.diff_digest.clone(),
        reused: false,
    };
    Ok((imported, layer))
}

/// Apply the blob into the layer's diff dir, write its tar-split, check
/// the digests the image promises.
fn populate(
    store: &Store,
    driver: &OverlayDriver,
    id: &LayerId,
    index: usize,
    blob: &LayerBlob,
    expected_diff_id: Option<&str>,
    progress: &dyn ImportProgress,
) -> Result<DiffReport, ImportError> {
    let (file, pending) = store.create_tar_split(id)?;
    let tmp = pending.path();
    let result = (|| -> Result<DiffReport, ImportError> {
        let mut split = TarSplitWriter::new(BufWriter::new(file));
        let whiteout = if driver.whiteout_is_aufs() {
            WhiteoutFormat::Aufs
        } else {
            WhiteoutFormat::Overlay {
                user_xattr: !rustix::process::geteuid().is_root(),
            }
        };
        let options = ApplyOptions {
            whiteout,
            ignore_chown_errors: false,
        };
        let input = Progressed {
            inner: blob.blob.open()?,
            progress,
        };
        let layer_error = |e: Box<dyn std::error::Error + Send + Sync>| ImportError::Layer {
            index,
            blob: blob.blob.describe(),
            source: e,
        };
        let diff = driver.open_diff(id).map_err(|e| layer_error(Box::new(e)))?;
        let report = apply_layer_at(input, diff.into_fd(), &mut split, &options)
            .map_err(|e| layer_error(Box::new(e)))?;
        let file = split
            .finish()
            .map_err(|e| layer_error(Box::new(e)))?
            .into_inner()
            .map_err(|e| ImportError::io("writing", &tmp)(e.into_error()))?;
        file.sync_data().map_err(ImportError::io("writing", &tmp))?;
        check_digests(index, blob, expected_diff_id, &report)?;
        Ok(report)
    })();
    // Dropped uncommitted, the temp file is removed.
    let report = result?;
    pending.commit()?;
    Ok(report)
}

fn check_digests(
    index: usize,
    blob: &LayerBlob,
    expected_diff_id: Option<&str>,
    report: &DiffReport,
) -> Result<(), ImportError> {
    let mismatch = |what, expected: &str, found: &str| ImportError::DigestMismatch {
        index,
        blob: blob.blob.describe(),
        what,
        expected: expected.to_owned(),
        found: found.to_owned(),
    };
    if let Some(d) = &blob.digest {
        if *d != report.compressed_digest {
            return Err(mismatch("the blob digest", d, &report.compressed_digest));
        }
    }
    if let Some(d) = expected_diff_id {
        if d != report.diff_digest {
            return Err(mismatch("the DiffID", d, &report.diff_digest));
        }
    }
    Ok(())
}

/// A reader that reports how much was read.
struct Progressed<'a> {
    inner: Box<dyn Read>,
    progress: &'a dyn ImportProgress,
}

impl Read for Progressed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}
