//! Making a mapped template layer the containers/storage way (spec §4.3), for
//! the fallback of the mapping decision: a layer podman itself reuses for
//! the same maps.
//!
//! 1. The record: a random id, the *template's parent* as parent, no names,
//!    the template's mount label, metadata, digests, sizes, compression,
//!    uidset/gidset and TOC digest; the requested maps; `incomplete`; saved.
//! 2. The driver directory: a driver-level child *of the template*.
//! 3. `update_layer_id_map` from the template's maps to the requested ones
//!    (the chowned copy).
//! 4. The template's tar-split copied, so the layer's diff is the template's
//!    original tar.
//! 5. `incomplete` cleared, saved; then the id appended to the image's
//!    `mapped-layers` (the layer is removed again if that fails).

use std::fs;
use std::io::ErrorKind;

use serde_json::Value;

use super::random_id;
use crate::driver::Driver;
use crate::error::{driver_error, StoreError};
use crate::gojson::GoTime;
use crate::idmap::{root_pair, IdMap, IdMappings};
use crate::records::{Image, Layer, FLAG_INCOMPLETE};
use crate::store::Txn;
use crate::Store;

impl Store {
    /// Make a mapped copy of layer `template` for `maps` and
    /// record it in image `image_id`'s `mapped-layers`. Called with
    /// `layers.lock` and `images.lock` held exclusively (and `userns.lock`).
    pub(crate) fn create_template_in(
        &self,
        layers: &mut Txn<'_, Layer>,
        images: &mut Txn<'_, Image>,
        driver: &dyn Driver,
        image_id: &str,
        template_id: &str,
        maps: &IdMappings,
    ) -> Result<Layer, StoreError> {
        let (uids, gids) = (&maps.uids, &maps.gids);
        let layer = self.create_chowned_child_in(layers, driver, template_id, uids, gids, false)?;
        let Some(image) = images.records.iter_mut().find(|i| i.id == image_id) else {
            self.discard_layers(layers, driver, std::slice::from_ref(&layer.id));
            return Err(StoreError::NotFound {
                kind: "image",
                query: image_id.to_owned(),
            });
        };
        image.mapped_layers.push(layer.id.clone());
        if let Err(e) = images.save() {
            if let Some(image) = images.records.iter_mut().find(|i| i.id == image_id) {
                image.mapped_layers.retain(|l| l != &layer.id);
            }
            self.discard_layers(layers, driver, std::slice::from_ref(&layer.id));
            return Err(e);
        }
        tracing::info!(
            layer = %layer.id,
            template = template_id,
            image = image_id,
            "made a mapped template layer (containers/storage's copy)"
        );
        Ok(layer)
    }

    /// A new layer holding `template`'s files owned for `uidmap`/`gidmap`:
    /// the record of a mapped template (`writable == false`: parent = the
    /// template's parent, the template's digests and tar-split), or a
    /// container's own chowned layer (`writable == true`: parent = the
    /// template, nothing copied), as containers/storage's `create` with a
    /// template layer makes them.
    pub(crate) fn create_chowned_child_in(
        &self,
        txn: &mut Txn<'_, Layer>,
        driver: &dyn Driver,
        template_id: &str,
        uidmap: &[IdMap],
        gidmap: &[IdMap],
        writable: bool,
    ) -> Result<Layer, StoreError> {
        let template = txn
            .records
            .iter()
            .find(|l| l.id == template_id)
            .cloned()
            .ok_or_else(|| StoreError::NotFound {
                kind: "layer",
                query: template_id.to_owned(),
            })?;
        let owner = root_pair(uidmap, gidmap)?;
        let mut id = random_id();
        while txn.records.iter().any(|l| l.id == id) || driver.exists(&id) {
            id = random_id();
        }
        let mut flags = std::collections::BTreeMap::new();
        flags.insert(FLAG_INCOMPLETE.to_owned(), Value::Bool(true));
        let mut layer = if writable {
            Layer {
                id,
                parent: template.id.clone(),
                mountlabel: template.mountlabel.clone(),
                ..Layer::default()
            }
        } else {
            Layer {
                id,
                parent: template.parent.clone(),
                mountlabel: template.mountlabel.clone(),
                metadata: template.metadata.clone(),
                compressed_diff_digest: template.compressed_diff_digest.clone(),
                compressed_size: template.compressed_size,
                diff_digest: template.diff_digest.clone(),
                diff_size: template.diff_size,
                toc_digest: template.toc_digest.clone(),
                compression: template.compression,
                uidset: template.uidset.clone(),
                gidset: template.gidset.clone(),
                ..Layer::default()
            }
        };
        layer.created = GoTime::now();
        layer.uidmap = uidmap.to_vec();
        layer.gidmap = gidmap.to_vec();
        layer.flags = flags;
        self.create_incomplete(txn, driver, layer, |layer| {
            self.fill_chowned_child(driver, &template, layer, owner, writable)
        })
    }

    /// Steps 2-4: the driver directory as the template's child, the chown,
    /// the tar-split copy.
    fn fill_chowned_child(
        &self,
        driver: &dyn Driver,
        template: &Layer,
        layer: &Layer,
        owner: (u32, u32),
        writable: bool,
    ) -> Result<(), StoreError> {
        driver
            .create(&layer.id, Some(&template.id), owner)
            .map_err(driver_error("creating", &layer.id))?;
        let from = IdMappings {
            uids: template.uidmap.clone(),
            gids: template.gidmap.clone(),
        };
        let to = IdMappings {
            uids: layer.uidmap.clone(),
            gids: layer.gidmap.clone(),
        };
        if from != to {
            driver
                .update_layer_id_map(&layer.id, &from, &to, &layer.mountlabel)
                .map_err(driver_error("changing the id mapping of", &layer.id))?;
        }
        if writable {
            return Ok(());
        }
        let source = self.layer_tar_split_path(&template.id);
        let target = self.layer_tar_split_path(&layer.id);
        match fs::copy(&source, &target) {
            Ok(_) => Ok(()),
            // A layer without tar-split (made by `create-layer`, or an
            // older store) has none to copy, as in containers/storage.
            Err(e) if e.kind() == ErrorKind::NotFound && !source.exists() => Ok(()),
            Err(e) => {
                let _ = fs::remove_file(&target);
                Err(StoreError::io("copying tar-split to", &target)(e))
            }
        }
    }
}
