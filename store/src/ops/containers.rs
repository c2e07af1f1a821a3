//! Creating and deleting containers as containers/storage does: a
//! read-write layer on the image's top layer, the record in
//! `containers.json` with its maps and labels, and on deletion the layer,
//! the record and the container's directories under graphroot and runroot.

use std::collections::BTreeMap;

use serde_json::Value;

use super::layers::{remove_if_present, NewLayer};
use super::{check_id, random_id};
use crate::driver::Driver;
use crate::error::StoreError;
use crate::gojson::GoTime;
use crate::idmap::IdMap;
use crate::lockfile::{LockFile, LockMode};
use crate::records::{Container, Image};
use crate::snapshot::{check_parents, lookup};
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
    /// The uid mapping the container runs with, recorded as given (empty:
    /// host). The read-write layer is created unmapped, as containers/storage
    /// does when the driver shifts ownership at mount time.
    pub uidmap: Vec<IdMap>,
    /// The gid mapping the container runs with (empty: host).
    pub gidmap: Vec<IdMap>,
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
        let userns = self.graph_lock("userns.lock")?;
        let _userns = if new.uidmap.is_empty() && new.gidmap.is_empty() {
            None
        } else {
            Some(userns.write()?)
        };
        let mut layers = self.layers.begin(check_parents)?;
        let images = self.images.read_shared()?;
        let mut containers = self.containers.begin(|_, _| Ok(()))?;
        let (image_id, top) = match new.image.as_str() {
            "" => (String::new(), None),
            q => {
                let image = lookup::<Image>(&images, q)?;
                let top = (!image.top_layer.is_empty()).then(|| image.top_layer.clone());
                (image.id.clone(), top)
            }
        };
        let id = new_container_id(&containers.records, &new)?;
        let layer = self.create_layer_in(
            &mut layers,
            driver,
            NewLayer {
                parent: top,
                mountlabel: new.mount_label.clone(),
                ..NewLayer::default()
            },
            |_| Ok(None),
        )?;
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
            uidmap: new.uidmap,
            gidmap: new.gidmap,
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
