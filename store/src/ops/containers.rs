//! Creating and deleting containers as containers/storage does: a
//! read-write layer on the image's top layer, the record in
//! `containers.json` with its maps and labels, and on deletion the layer,
//! the record and the container's directories under graphroot and runroot.

use std::collections::BTreeMap;

use serde_json::Value;

use super::layers::{remove_if_present, NewLayer};
use super::{check_id, random_id};
use crate::driver::Driver;
use crate::error::{driver_error, StoreError};
use crate::gojson::GoTime;
use crate::idmap::{containers_storage_order, root_pair, validate, IdMap, IdMappings};
use crate::lockfile::{LockFile, LockMode};
use crate::mapping::{
    top_layer_for_mapping, Capabilities, Decision, LayerSource, MappingRequest, Presentation,
};
use crate::records::{Container, Image, Layer};
use crate::snapshot::{check_parents, lookup};
use crate::store::Txn;
use crate::Store;

/// What a new container should be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewContainer {
    /// The id; `None` picks a random one.
    pub id: Option<String>,
    /// Names, unique across containers.
    pub names: Vec<String>,
    /// The image (id, name or unique prefix); empty for none.
    pub image: String,
    /// Opaque caller metadata (podman stores JSON here).
    pub metadata: String,
    /// The uid mapping the container runs with (empty: host). Recorded as
    /// podman 4.3.1 (containers/storage v1.43) records it: sorted by host id
    /// when the driver can shift it, as given otherwise.
    pub uidmap: Vec<IdMap>,
    /// The gid mapping the container runs with (empty: host).
    pub gidmap: Vec<IdMap>,
    /// Never copy the image for the mapping: use its top layer, idmapped if
    /// possible, else with its on-disk ownership. See [`crate::mapping`].
    pub no_cache: bool,
    /// SELinux mount label (`flags.MountLabel`, always written).
    pub mount_label: String,
    /// SELinux process label (`flags.ProcessLabel`, always written).
    pub process_label: String,
    /// Mount options (`flags.MountOpts`, written when not empty).
    pub mount_opts: Vec<String>,
}

impl Store {
    /// Create a container and its read-write layer.
    ///
    /// # Locking
    /// Exclusive `userns.lock` when maps are given; exclusive `layers.lock`;
    /// shared `images.lock`; exclusive `containers.lock`.
    pub fn create_container(
        &self,
        driver: &dyn Driver,
        new: NewContainer,
    ) -> Result<Container, StoreError> {
        let mapped = !new.uidmap.is_empty() || !new.gidmap.is_empty();
        if mapped {
            validate(&new.uidmap)?;
            validate(&new.gidmap)?;
            root_pair(&new.uidmap, &new.gidmap)?;
        }
        let userns = self.graph_lock("userns.lock")?;
        let _userns = if mapped { Some(userns.write()?) } else { None };
        let mut layers = self.layers.begin(check_parents)?;
        let mut images = self.images.begin(|_, _| Ok(()))?;
        let mut containers = self.containers.begin(|_, _| Ok(()))?;
        let id = new_container_id(&containers.records, &new)?;
        let shifting = mapped && driver.supports_shifting(&new.uidmap, &new.gidmap);
        // v1.43 sorts the caller's maps in place when its driver can shift.
        let (uidmap, gidmap) = if shifting {
            containers_storage_order(&new.uidmap, &new.gidmap)
        } else {
            (new.uidmap.clone(), new.gidmap.clone())
        };
        let image_id = match new.image.as_str() {
            "" => String::new(),
            q => lookup::<Image>(&images.records, q)?.id.clone(),
        };
        let maps = IdMappings {
            uids: uidmap.clone(),
            gids: gidmap.clone(),
        };
        let layer = match images.records.iter().find(|i| i.id == image_id) {
            // No image: a parentless read-write layer, unmapped when the
            // driver shifts, else owned for the maps.
            None => {
                let recorded = if shifting {
                    IdMappings::default()
                } else {
                    maps
                };
                self.create_rw_layer(&mut layers, driver, None, &new.mount_label, recorded, None)?
            }
            Some(image) => {
                let request = MappingRequest {
                    uidmap: new.uidmap.clone(),
                    gidmap: new.gidmap.clone(),
                    no_cache: new.no_cache,
                };
                let sources = [LayerSource {
                    layers: &layers.records,
                    writable: true,
                }];
                let caps = Capabilities {
                    shifting,
                    image_writable: true,
                };
                let decision = top_layer_for_mapping(image, &sources, &request, caps)?;
                tracing::debug!(?decision, "mapping decision");
                self.stack_container_layer(
                    &mut layers,
                    &mut images,
                    driver,
                    &image_id,
                    decision,
                    &maps,
                    &new.mount_label,
                )?
            }
        };
        let mut flags = BTreeMap::new();
        flags.insert("MountLabel".to_owned(), Value::String(new.mount_label));
        flags.insert("ProcessLabel".to_owned(), Value::String(new.process_label));
        if !new.mount_opts.is_empty() {
            flags.insert(
                "MountOpts".to_owned(),
                new.mount_opts.into_iter().map(Value::String).collect(),
            );
        }
        let container = Container {
            id,
            names: new.names,
            image: image_id,
            layer: layer.id.clone(),
            metadata: new.metadata,
            created: GoTime::now(),
            uidmap,
            gidmap,
            flags,
            ..Container::default()
        };
        containers.records.push(container.clone());
        if let Err(e) = containers.save() {
            let _ = self.remove_layers(&mut layers, driver, std::slice::from_ref(&layer.id));
            return Err(e);
        }
        Ok(container)
    }

    /// Delete a container that is not mounted: its layer, its record and
    /// its directories.
    ///
    /// # Locking
    /// Exclusive `layers.lock`; shared `mountpoints.lock` (nested);
    /// exclusive `containers.lock`.
    pub fn delete_container(&self, driver: &dyn Driver, query: &str) -> Result<String, StoreError> {
        let mut layers = self.layers.begin(check_parents)?;
        let mounts = self.mounts.read_shared()?;
        let mut containers = self.containers.begin(|_, _| Ok(()))?;
        let container = lookup(&containers.records, query)?.clone();
        if let Some(m) = mounts
            .iter()
            .find(|m| m.id == container.layer && m.count > 0)
        {
            if driver.is_mounted(m.path.as_ref()) {
                return Err(StoreError::InUse {
                    kind: "container",
                    id: container.id,
                    reason: format!("its layer is mounted at {}", m.path),
                });
            }
        }
        if let Some(child) = layers.records.iter().find(|l| l.parent == container.layer) {
            return Err(StoreError::InUse {
                kind: "container",
                id: container.id,
                reason: format!("layer {} is stacked on its layer", child.id),
            });
        }
        if layers.records.iter().any(|l| l.id == container.layer) {
            self.remove_layers(&mut layers, driver, std::slice::from_ref(&container.layer))?;
        }
        containers.records.retain(|c| c.id != container.id);
        containers.save()?;
        let o = self.options();
        remove_if_present(&o.graph_root.join("overlay-containers").join(&container.id))?;
        remove_if_present(&o.run_root.join("overlay-containers").join(&container.id))?;
        Ok(container.id)
    }

    /// The container's read-write layer where `decision` puts it (making
    /// the template first for [`Decision::CreateTemplate`]); `maps` are the
    /// container's, in the order they are recorded.
    #[allow(clippy::too_many_arguments)]
    fn stack_container_layer(
        &self,
        layers: &mut Txn<'_, Layer>,
        images: &mut Txn<'_, Image>,
        driver: &dyn Driver,
        image_id: &str,
        decision: Decision,
        maps: &IdMappings,
        mount_label: &str,
    ) -> Result<Layer, StoreError> {
        let host = IdMappings::default;
        match decision {
            Decision::Use {
                layer,
                presentation,
            } => {
                let (recorded, top_owner) = match presentation {
                    Presentation::Host | Presentation::Idmapped => (host(), None),
                    // Files keep their owners; the container's root owns
                    // the top of its rootfs so it can write to `/`.
                    Presentation::OnDisk => (host(), Some(root_pair(&maps.uids, &maps.gids)?)),
                    // Same maps as the layer below, so nothing is chowned.
                    Presentation::Owned => {
                        let below = layers.records.iter().find(|l| l.id == layer);
                        let below = below.expect("decided on a recorded layer");
                        let recorded = IdMappings {
                            uids: below.uidmap.clone(),
                            gids: below.gidmap.clone(),
                        };
                        (recorded, None)
                    }
                };
                self.create_rw_layer(
                    layers,
                    driver,
                    Some(layer),
                    mount_label,
                    recorded,
                    top_owner,
                )
            }
            // The template stays, as with podman: it serves the next
            // container with these maps.
            Decision::CreateTemplate { template, .. } => {
                let t =
                    self.create_template_in(layers, images, driver, image_id, &template, maps)?;
                self.create_rw_layer(layers, driver, Some(t.id), mount_label, maps.clone(), None)
            }
            Decision::CopyIntoContainerLayer { template } => self
                .create_chowned_child_in(layers, driver, &template, &maps.uids, &maps.gids, true),
        }
    }

    /// The container's read-write layer on `parent`, recorded with `maps`.
    /// Its root is owned by the maps' root; with `top_owner`, its `diff`
    /// (the top of the rootfs, which a driver gives its parent's owner) is
    /// owned by `top_owner` instead.
    fn create_rw_layer(
        &self,
        layers: &mut Txn<'_, Layer>,
        driver: &dyn Driver,
        parent: Option<String>,
        mount_label: &str,
        maps: IdMappings,
        top_owner: Option<(u32, u32)>,
    ) -> Result<Layer, StoreError> {
        let new = NewLayer {
            parent,
            mountlabel: mount_label.to_owned(),
            uidmap: maps.uids,
            gidmap: maps.gids,
            ..NewLayer::default()
        };
        self.create_layer_owned_in(layers, driver, new, top_owner, |layer| {
            if let Some((uid, gid)) = top_owner {
                let diff = driver
                    .diff_path(&layer.id)
                    .map_err(driver_error("finding the diff of", &layer.id))?;
                rustix::fs::chown(
                    &diff,
                    Some(rustix::fs::Uid::from_raw(uid)),
                    Some(rustix::fs::Gid::from_raw(gid)),
                )
                .map_err(|e| StoreError::io("changing the owner of", &diff)(e.into()))?;
            }
            Ok(None)
        })
    }

    /// A lock file directly under the graphroot (`storage.lock`,
    /// `userns.lock`), created as containers/storage creates it.
    pub(crate) fn graph_lock(&self, name: &str) -> Result<std::sync::Arc<LockFile>, StoreError> {
        Ok(LockFile::open(
            &self.options().graph_root.join(name),
            LockMode::ReadWrite,
        )?)
    }
}

fn new_container_id(existing: &[Container], new: &NewContainer) -> Result<String, StoreError> {
    let id = match &new.id {
        Some(id) => {
            check_id("container", id)?;
            id.clone()
        }
        None => random_id(),
    };
    if existing.iter().any(|c| c.id == id) {
        return Err(StoreError::Exists {
            kind: "container",
            id,
        });
    }
    for name in &new.names {
        if let Some(owner) = existing.iter().find(|c| c.names.contains(name)) {
            return Err(StoreError::NameInUse {
                kind: "container",
                name: name.clone(),
                owner: owner.id.clone(),
            });
        }
    }
    Ok(id)
}
