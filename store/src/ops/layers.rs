//! Creating and deleting layers with containers/storage's `incomplete`
//! protocol: the record is saved flagged `incomplete` first, the driver
//! directory and content are made while `layers.lock` stays held, and the
//! flag is cleared last. A process that dies half-way leaves a record that
//! podman (and `layerstore gc`) deletes. Deletion flags first, then removes.

use std::fs;
use std::io::ErrorKind;
use std::path::PathBuf;

use serde_json::Value;

use super::{check_id, random_id};
use crate::driver::Driver;
use crate::error::{driver_error, StoreError};
use crate::gojson::GoTime;
use crate::idmap::{root_pair, IdMap};
use crate::records::{Layer, FLAG_INCOMPLETE};
use crate::snapshot::{check_parents, lookup};
use crate::store::Txn;
use crate::Store;

/// What a new layer should be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewLayer {
    /// The id; `None` picks a random one.
    pub id: Option<String>,
    /// Parent layer (id, name or unique prefix); `None` for a base layer.
    pub parent: Option<String>,
    /// Names, unique across layers.
    pub names: Vec<String>,
    /// Opaque caller metadata.
    pub metadata: String,
    /// SELinux mount label.
    pub mountlabel: String,
    /// Ownership mapping of the layer's files (empty: host).
    pub uidmap: Vec<IdMap>,
    /// Ownership mapping of the layer's files (empty: host).
    pub gidmap: Vec<IdMap>,
    /// Record it in `volatile-layers.json` (upstream stores only).
    pub volatile: bool,
}

/// What populating a layer from a tar found, recorded in its record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerDiff {
    /// `sha256:` digest of the blob as given.
    pub compressed_digest: String,
    /// Size of the blob as given.
    pub compressed_size: i64,
    /// `sha256:` digest of the uncompressed tar (the DiffID).
    pub diff_digest: String,
    /// Size of the uncompressed tar.
    pub diff_size: i64,
    /// Compression as containers/storage numbers it (0 none, 2 gzip, 4 zstd).
    pub compression: i64,
    /// Container-side uids in the tar headers.
    pub uidset: Vec<u32>,
    /// Container-side gids in the tar headers.
    pub gidset: Vec<u32>,
}

impl Store {
    /// Where a layer's tar-split metadata lives.
    pub fn layer_tar_split_path(&self, id: &str) -> PathBuf {
        self.options()
            .graph_root
            .join("overlay-layers")
            .join(format!("{id}.tar-split.gz"))
    }

    /// Where a layer's big-data items live.
    pub fn layer_data_dir(&self, id: &str) -> PathBuf {
        self.options().graph_root.join("overlay-layers").join(id)
    }

    /// Create a layer: record (flagged `incomplete`), driver directory,
    /// then `populate` (e.g. apply a tar into the driver's diff directory
    /// and write [`Store::layer_tar_split_path`]), then the final record.
    /// On any failure everything made is removed again.
    ///
    /// # Locking
    /// Exclusive `layers.lock` for the whole call, `populate` included.
    pub fn create_layer<F>(
        &self,
        driver: &dyn Driver,
        new: NewLayer,
        populate: F,
    ) -> Result<Layer, StoreError>
    where
        F: FnOnce(&Layer) -> Result<Option<LayerDiff>, StoreError>,
    {
        let mut txn = self.layers.begin(check_parents)?;
        self.create_layer_in(&mut txn, driver, new, populate)
    }

    pub(crate) fn create_layer_in<F>(
        &self,
        txn: &mut Txn<'_, Layer>,
        driver: &dyn Driver,
        new: NewLayer,
        populate: F,
    ) -> Result<Layer, StoreError>
    where
        F: FnOnce(&Layer) -> Result<Option<LayerDiff>, StoreError>,
    {
        self.create_layer_owned_in(txn, driver, new, None, populate)
    }

    /// [`create_layer_in`](Self::create_layer_in) with the layer's root
    /// owned by `owner` instead of the root of its maps.
    pub(crate) fn create_layer_owned_in<F>(
        &self,
        txn: &mut Txn<'_, Layer>,
        driver: &dyn Driver,
        new: NewLayer,
        owner: Option<(u32, u32)>,
        populate: F,
    ) -> Result<Layer, StoreError>
    where
        F: FnOnce(&Layer) -> Result<Option<LayerDiff>, StoreError>,
    {
        let layer = new_record(&txn.records, driver, new)?;
        let owner = match owner {
            Some(owner) => owner,
            None if layer.uidmap.is_empty() && layer.gidmap.is_empty() => (0, 0),
            None => root_pair(&layer.uidmap, &layer.gidmap)?,
        };
        self.create_incomplete(txn, driver, layer, |layer| {
            let parent = (!layer.parent.is_empty()).then_some(layer.parent.as_str());
            driver
                .create(&layer.id, parent, owner)
                .map_err(driver_error("creating", &layer.id))?;
            if let Some(d) = populate(layer)? {
                apply_diff(layer, d);
            }
            Ok(())
        })
    }

    /// containers/storage's `incomplete` protocol for a new `layer` (its
    /// record already flagged): save the record, `fill` the layer (driver
    /// directory, content; it may update the record), clear the flag and
    /// save again. If anything fails, whatever was made is removed.
    pub(crate) fn create_incomplete<F>(
        &self,
        txn: &mut Txn<'_, Layer>,
        driver: &dyn Driver,
        mut layer: Layer,
        fill: F,
    ) -> Result<Layer, StoreError>
    where
        F: FnOnce(&mut Layer) -> Result<(), StoreError>,
    {
        txn.records.push(layer.clone());
        if let Err(e) = txn.save() {
            txn.records.retain(|l| l.id != layer.id);
            return Err(e);
        }
        let finished = fill(&mut layer).and_then(|()| {
            layer.flags.remove(FLAG_INCOMPLETE);
            if let Some(slot) = txn.records.iter_mut().find(|l| l.id == layer.id) {
                *slot = layer.clone();
            }
            txn.save()
        });
        match finished {
            Ok(()) => Ok(layer),
            Err(e) => {
                self.discard_layers(txn, driver, std::slice::from_ref(&layer.id));
                Err(e)
            }
        }
    }

    /// Delete a layer nothing uses, and drop it from images'
    /// `mapped-layers`.
    ///
    /// # Locking
    /// Exclusive `layers.lock`; shared `mountpoints.lock` (nested);
    /// exclusive `images.lock`; shared `containers.lock`.
    pub fn delete_layer(&self, driver: &dyn Driver, query: &str) -> Result<String, StoreError> {
        let mut layers = self.layers.begin(check_parents)?;
        let mounts = self.mounts.read_shared()?;
        let mut images = self.images.begin(|_, _| Ok(()))?;
        let containers = self.containers.read_shared()?;
        let id = lookup(&layers.records, query)?.id.clone();
        let in_use = |reason: String| StoreError::InUse {
            kind: "layer",
            id: id.clone(),
            reason,
        };
        if let Some(child) = layers.records.iter().find(|l| l.parent == id) {
            return Err(in_use(format!("layer {} is stacked on it", child.id)));
        }
        if let Some(img) = images.records.iter().find(|i| i.top_layer == id) {
            return Err(in_use(format!("it is the top layer of image {}", img.id)));
        }
        if let Some(c) = containers.iter().find(|c| c.layer == id) {
            return Err(in_use(format!("it is the layer of container {}", c.id)));
        }
        if let Some(m) = mounts.iter().find(|m| m.id == id && m.count > 0) {
            if driver.is_mounted(m.path.as_ref()) {
                return Err(in_use(format!("it is mounted at {}", m.path)));
            }
        }
        self.remove_layers(&mut layers, driver, std::slice::from_ref(&id))?;
        let before: usize = images.records.iter().map(|i| i.mapped_layers.len()).sum();
        for image in &mut images.records {
            image.mapped_layers.retain(|m| *m != id);
        }
        if images
            .records
            .iter()
            .map(|i| i.mapped_layers.len())
            .sum::<usize>()
            != before
        {
            images.save()?;
        }
        Ok(id)
    }

    /// Remove layers the caller has checked: flag them `incomplete` and
    /// save, remove their driver directories, tar-split files and big data,
    /// then drop the records and save.
    pub(crate) fn remove_layers(
        &self,
        txn: &mut Txn<'_, Layer>,
        driver: &dyn Driver,
        ids: &[String],
    ) -> Result<(), StoreError> {
        for layer in txn.records.iter_mut().filter(|l| ids.contains(&l.id)) {
            layer
                .flags
                .insert(FLAG_INCOMPLETE.to_owned(), Value::Bool(true));
        }
        txn.save()?;
        for id in ids {
            driver.remove(id).map_err(driver_error("removing", id))?;
            remove_if_present(&self.layer_tar_split_path(id))?;
            remove_if_present(&self.layer_data_dir(id))?;
        }
        txn.records.retain(|l| !ids.contains(&l.id));
        txn.save()
    }

    /// Best-effort cleanup after a failed create: errors are logged, the
    /// caller reports the original failure.
    pub(crate) fn discard_layers(
        &self,
        txn: &mut Txn<'_, Layer>,
        driver: &dyn Driver,
        ids: &[String],
    ) {
        if let Err(e) = self.remove_layers(txn, driver, ids) {
            tracing::warn!("cleaning up layer(s) {ids:?} after a failed create: {e:#}");
        }
    }
}

/// The first record of a new layer, checked against the existing ones.
fn new_record(existing: &[Layer], driver: &dyn Driver, new: NewLayer) -> Result<Layer, StoreError> {
    let id = match new.id {
        Some(id) => {
            check_id("layer", &id)?;
            id
        }
        None => random_id(),
    };
    if existing.iter().any(|l| l.id == id) || driver.exists(&id) {
        return Err(StoreError::Exists { kind: "layer", id });
    }
    for name in &new.names {
        if let Some(owner) = existing.iter().find(|l| l.names.contains(name)) {
            return Err(StoreError::NameInUse {
                kind: "layer",
                name: name.clone(),
                owner: owner.id.clone(),
            });
        }
    }
    let parent = match new.parent {
        Some(p) => lookup(existing, &p)?.id.clone(),
        None => String::new(),
    };
    let mut flags = std::collections::BTreeMap::new();
    flags.insert(FLAG_INCOMPLETE.to_owned(), Value::Bool(true));
    Ok(Layer {
        id,
        names: new.names,
        parent,
        metadata: new.metadata,
        mountlabel: new.mountlabel,
        created: GoTime::now(),
        flags,
        uidmap: new.uidmap,
        gidmap: new.gidmap,
        volatile: new.volatile,
        ..Layer::default()
    })
}

fn apply_diff(layer: &mut Layer, d: LayerDiff) {
    layer.compressed_diff_digest = d.compressed_digest;
    layer.compressed_size = d.compressed_size;
    layer.diff_digest = d.diff_digest;
    layer.diff_size = d.diff_size;
    layer.compression = d.compression;
    layer.uidset = d.uidset;
    layer.gidset = d.gidset;
}

/// Remove a file or directory tree; a missing one is fine.
pub(crate) fn remove_if_present(path: &std::path::Path) -> Result<(), StoreError> {
    let result = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
    };
    result.map_err(StoreError::io("removing", path))
}
