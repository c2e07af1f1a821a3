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

use serde_json::Value;

use super::layers::FLAG_CONTAINER;
use crate::driver::Driver;
use crate::error::{driver_error, StoreError};
use crate::gojson::GoTime;
use crate::id::{ContainerId, LayerId};
use crate::idmap::{root_pair, IdMappings};
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
        let layer = self.create_chowned_child_in(layers, driver, template_id, maps, None)?;
        let layer_id = LayerId::parse(&layer.id)?;
        let Some(image) = images.records.iter_mut().find(|i| i.id == image_id) else {
            let _ = self.remove_layers(layers, driver, std::slice::from_ref(&layer_id));
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
            // If this fails too, the template stays unlisted: gc finds it
            // as an unlisted copy of the image's top layer.
            let _ = self.remove_layers(layers, driver, std::slice::from_ref(&layer_id));
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

    /// A new layer holding `template`'s files owned for `maps`: the record
    /// of a mapped template (`container == None`: parent = the template's
    /// parent, the template's digests and tar-split), or container
    /// `container`'s own chowned layer (parent = the template, nothing
    /// copied), as containers/storage's `create` with a template layer
    /// makes them.
    pub(crate) fn create_chowned_child_in(
        &self,
        txn: &mut Txn<'_, Layer>,
        driver: &dyn Driver,
        template_id: &str,
        maps: &IdMappings,
        container: Option<&ContainerId>,
    ) -> Result<Layer, StoreError> {
        let (uidmap, gidmap) = (&maps.uids, &maps.gids);
        let writable = container.is_some();
        let template = txn
            .records
            .iter()
            .find(|l| l.id == template_id)
            .cloned()
            .ok_or_else(|| StoreError::NotFound {
                kind: "layer",
                query: template_id.to_owned(),
            })?;
        let template_id = LayerId::parse(&template.id)?;
        let owner = root_pair(uidmap, gidmap)?;
        let mut id = LayerId::random();
        while txn.records.iter().any(|l| id == l.id) || driver.exists(&id) {
            id = LayerId::random();
        }
        let id = id.into_string();
        let mut flags = std::collections::BTreeMap::new();
        flags.insert(FLAG_INCOMPLETE.to_owned(), Value::Bool(true));
        if let Some(c) = container {
            flags.insert(FLAG_CONTAINER.to_owned(), Value::String(c.to_string()));
        }
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
        self.create_incomplete(txn, driver, layer, |layer, id| {
            self.fill_chowned_child(
                driver,
                (&template, &template_id),
                (layer, id),
                owner,
                writable,
            )
        })
    }

    /// Steps 2-4: the driver directory as the template's child, the chown,
    /// the tar-split copy.
    fn fill_chowned_child(
        &self,
        driver: &dyn Driver,
        (template, template_id): (&Layer, &LayerId),
        (layer, id): (&Layer, &LayerId),
        owner: (u32, u32),
        writable: bool,
    ) -> Result<(), StoreError> {
        driver
            .create(id, Some(template_id), owner)
            .map_err(driver_error("creating", id.as_str()))?;
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
                .update_layer_id_map(id, &from, &to, &layer.mountlabel)
                .map_err(driver_error("changing the id mapping of", id.as_str()))?;
        }
        if writable {
            return Ok(());
        }
        // A layer without tar-split (made by `create-layer`, or an older
        // store) has none to copy, as in containers/storage.
        self.copy_tar_split(template_id, id)
    }
}
