//! Creating and deleting layers with containers/storage's `incomplete`
//! protocol: the record is saved flagged `incomplete` first, the driver
//! directory and content are made while `layers.lock` stays held, and the
//! flag is cleared last. A process that dies half-way leaves a record that
//! podman (and `layerstore gc`) deletes. Deletion flags first, then removes.

use serde_json::Value;

use crate::driver::Driver;
use crate::error::{driver_error, StoreError};
use crate::gojson::GoTime;
use crate::id::{ContainerId, LayerId};
use crate::idmap::{root_pair, IdMap};
use crate::records::{Layer, FLAG_INCOMPLETE};
use crate::snapshot::{check_parents, lookup};
use crate::store::Txn;
use crate::Store;

/// The layer flag layerstore sets on a container's read-write layer: the
/// container's id. A layer carrying it whose container record does not
/// exist was left by a `create` or `rm` that was killed, and gc removes it.
/// containers/storage keeps unknown flags as they are.
pub const FLAG_CONTAINER: &str = "layerstore-container";

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
    /// The container whose read-write layer this is ([`FLAG_CONTAINER`]).
    pub container: Option<ContainerId>,
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
    /// Create a layer: record (flagged `incomplete`), driver directory,
    /// then `populate` (e.g. apply a tar into the driver's diff directory
    /// and write the tar-split with [`Store::create_tar_split`]), then the
    /// final record. On any failure everything made is removed again, its
    /// data first (so that a full filesystem gets its space back).
    ///
    /// Refused, with nothing written, when the store's records cannot be
    /// trusted ([`StoreError::Inconsistent`]).
    ///
    /// # Locking
    /// Exclusive `layers.lock` for the whole call, `populate` included;
    /// shared `images.lock` and `containers.lock` for the check.
    pub fn create_layer<F>(
        &self,
        driver: &dyn Driver,
        new: NewLayer,
        populate: F,
    ) -> Result<Layer, StoreError>
    where
        F: FnOnce(&Layer, &LayerId) -> Result<Option<LayerDiff>, StoreError>,
    {
        let mut txn = self.layers.begin(check_parents)?;
        let images = self.images.read_shared()?;
        let containers = self.containers.read_shared()?;
        self.check_held(&txn, None, &images, &containers)?;
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
        F: FnOnce(&Layer, &LayerId) -> Result<Option<LayerDiff>, StoreError>,
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
        F: FnOnce(&Layer, &LayerId) -> Result<Option<LayerDiff>, StoreError>,
    {
        let (layer, parent) = new_record(&txn.records, driver, new)?;
        let owner = match owner {
            Some(owner) => owner,
            None if layer.uidmap.is_empty() && layer.gidmap.is_empty() => (0, 0),
            None => root_pair(&layer.uidmap, &layer.gidmap)?,
        };
        self.create_incomplete(txn, driver, layer, |layer, id| {
            driver
                .create(id, parent.as_ref(), owner)
                .map_err(driver_error("creating", id.as_str()))?;
            if let Some(d) = populate(layer, id)? {
                apply_diff(layer, d);
            }
            Ok(())
        })
    }

    /// containers/storage's `incomplete` protocol for a new `layer` (its
    /// record already flagged): save the record, `fill` the layer (driver
    /// directory, content; it may update the record), clear the flag and
    /// save again. If anything fails, whatever was made is removed, data
    /// first ([`Store::discard_created`]).
    pub(crate) fn create_incomplete<F>(
        &self,
        txn: &mut Txn<'_, Layer>,
        driver: &dyn Driver,
        mut layer: Layer,
        fill: F,
    ) -> Result<Layer, StoreError>
    where
        F: FnOnce(&mut Layer, &LayerId) -> Result<(), StoreError>,
    {
        let id = LayerId::parse(&layer.id)?;
        txn.records.push(layer.clone());
        if let Err(e) = txn.save() {
            txn.records.retain(|l| l.id != layer.id);
            return Err(e);
        }
        let finished = fill(&mut layer, &id).and_then(|()| {
            layer.flags.remove(FLAG_INCOMPLETE);
            if let Some(slot) = txn.records.iter_mut().find(|l| l.id == layer.id) {
                *slot = layer.clone();
            }
            txn.save()
        });
        match finished {
            Ok(()) => Ok(layer),
            Err(e) => {
                self.discard_created(txn, driver, &id);
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
        self.check_held(&layers, Some(&mounts), &images, &containers)?;
        let id = LayerId::parse(&lookup(&layers.records, query)?.id)?;
        let in_use = |reason: String| StoreError::InUse {
            kind: "layer",
            id: id.to_string(),
            reason,
        };
        if let Some(child) = layers.records.iter().find(|l| l.parent == id.as_str()) {
            return Err(in_use(format!("layer {} is stacked on it", child.id)));
        }
        if let Some(img) = images.records.iter().find(|i| i.top_layer == id.as_str()) {
            return Err(in_use(format!("it is the top layer of image {}", img.id)));
        }
        if let Some(c) = containers.records.iter().find(|c| c.layer == id.as_str()) {
            return Err(in_use(format!("it is the layer of container {}", c.id)));
        }
        if driver.is_mounted(&id) {
            return Err(in_use(format!(
                "it is mounted at {}",
                driver.mount_point(&id).display()
            )));
        }
        self.remove_layers(&mut layers, driver, std::slice::from_ref(&id))?;
        let before: usize = images.records.iter().map(|i| i.mapped_layers.len()).sum();
        for image in &mut images.records {
            image.mapped_layers.retain(|m| *m != id.as_str());
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
        Ok(id.into_string())
    }

    /// Remove layers the caller has checked: flag them `incomplete` and
    /// save, remove their driver directories, tar-split files and big data,
    /// then drop the records and save.
    ///
    /// When the driver cannot remove a layer (its directory stays whole:
    /// see [`Driver::remove`]), the layers already removed lose their
    /// records and the others get back the flags they had, so that nothing
    /// is left for podman to trip over; a layer removed only in part stays
    /// flagged incomplete. The error is returned.
    pub(crate) fn remove_layers(
        &self,
        txn: &mut Txn<'_, Layer>,
        driver: &dyn Driver,
        ids: &[LayerId],
    ) -> Result<(), StoreError> {
        let ids_set: std::collections::HashSet<&str> = ids.iter().map(LayerId::as_str).collect();
        let doomed = |l: &Layer| ids_set.contains(l.id.as_str());
        let mut flagged = Vec::new();
        for layer in txn.records.iter_mut().filter(|l| doomed(l)) {
            if !layer.is_incomplete() {
                layer
                    .flags
                    .insert(FLAG_INCOMPLETE.to_owned(), Value::Bool(true));
                flagged.push(layer.id.clone());
            }
        }
        txn.save()?;
        let mut removed = Vec::new();
        for id in ids {
            if let Err(e) = self.remove_layer_data(driver, id) {
                txn.records.retain(|l| !removed.contains(&l.id));
                // A layer whose content is partly gone stays incomplete:
                // podman and gc remove it, nothing uses it.
                if crate::driver::is_partly_removed(&e) {
                    flagged.retain(|f| f != id.as_str());
                }
                unflag(&mut txn.records, &flagged);
                if let Err(save) = txn.save() {
                    tracing::warn!("restoring the records after a failed removal: {save:#}");
                }
                return Err(e);
            }
            removed.push(id.to_string());
        }
        txn.records.retain(|l| !doomed(l));
        txn.save()
    }

    /// Remove a layer's directories, then (best effort: a leftover is
    /// debris gc collects) its tar-split and big data; not its record.
    /// An error means the layer's directory is still whole, unless it is
    /// a [`crate::driver::PartlyRemoved`].
    pub(crate) fn remove_layer_data(
        &self,
        driver: &dyn Driver,
        id: &LayerId,
    ) -> Result<(), StoreError> {
        driver
            .remove(id)
            .map_err(driver_error("removing", id.as_str()))?;
        if let Err(e) = self.remove_layer_files(id) {
            tracing::warn!("layer {id} is removed, but not all of its metadata files: {e:#}");
        }
        Ok(())
    }

    /// Cleanup after a failed create of layer `id` (its record still
    /// flagged `incomplete`): its data first, which needs no space and
    /// gives a full filesystem its space back, then the record. Errors are
    /// logged; the caller reports the original failure. If the record
    /// cannot be saved, it stays flagged `incomplete` with no data, which
    /// podman and `layerstore gc` remove.
    pub(crate) fn discard_created(
        &self,
        txn: &mut Txn<'_, Layer>,
        driver: &dyn Driver,
        id: &LayerId,
    ) {
        if let Err(e) = self.remove_layer_data(driver, id) {
            let e = crate::error::error_chain(&e);
            tracing::warn!("removing the data of layer {id} after a failed create: {e}");
        }
        txn.records.retain(|l| *id != l.id);
        if let Err(e) = txn.save() {
            let e = crate::error::error_chain(&e);
            tracing::warn!(
                "dropping the record of layer {id} after a failed create: {e} \
                 (it stays flagged incomplete; layerstore gc or podman removes it)"
            );
        }
    }
}

/// Take back the `incomplete` flag from the layers in `ids`.
pub(crate) fn unflag(records: &mut [Layer], ids: &[String]) {
    for l in records.iter_mut().filter(|l| ids.contains(&l.id)) {
        l.flags.remove(FLAG_INCOMPLETE);
    }
}

/// The first record of a new layer, checked against the existing ones.
fn new_record(
    existing: &[Layer],
    driver: &dyn Driver,
    new: NewLayer,
) -> Result<(Layer, Option<LayerId>), StoreError> {
    let id = match new.id {
        Some(id) => LayerId::parse(&id)?,
        None => LayerId::random(),
    };
    if existing.iter().any(|l| id == l.id) || driver.exists(&id) {
        return Err(StoreError::Exists {
            kind: "layer",
            id: id.into_string(),
        });
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
        Some(p) => Some(LayerId::parse(&lookup(existing, &p)?.id)?),
        None => None,
    };
    let mut flags = std::collections::BTreeMap::new();
    flags.insert(FLAG_INCOMPLETE.to_owned(), Value::Bool(true));
    if let Some(c) = &new.container {
        flags.insert(FLAG_CONTAINER.to_owned(), Value::String(c.to_string()));
    }
    let layer = Layer {
        id: id.into_string(),
        names: new.names,
        parent: parent.as_ref().map(ToString::to_string).unwrap_or_default(),
        metadata: new.metadata,
        mountlabel: new.mountlabel,
        created: GoTime::now(),
        flags,
        uidmap: new.uidmap,
        gidmap: new.gidmap,
        volatile: new.volatile,
        ..Layer::default()
    };
    Ok((layer, parent))
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
