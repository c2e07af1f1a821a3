//! Deleting a container: its record, its directories and its layer, in
//! that order (see [`super::containers`]), alone or at the end of a run
//! together with the unmount.

use serde_json::Value;

use super::containers::is_created_by_layerstore;
use super::layers::FLAG_CONTAINER;
use crate::driver::Driver;
use crate::error::StoreError;
use crate::id::{ContainerId, LayerId};
use crate::records::{Container, Layer};
use crate::snapshot::{check_parents, lookup};
use crate::store::Txn;
use crate::Store;

impl Store {
    /// Delete a container that is not mounted: its record, its
    /// directories and its layer, in that order (the crash-safe order of
    /// `super::containers`).
    /// Only containers layerstore created ([`is_created_by_layerstore`])
    /// unless `force`: podman's are podman's ([`StoreError::NotOurs`]).
    ///
    /// # Locking
    /// Exclusive `layers.lock`; shared `mountpoints.lock` (nested); shared
    /// `images.lock`; exclusive `containers.lock`.
    pub fn delete_container(
        &self,
        driver: &dyn Driver,
        query: &str,
        force: bool,
    ) -> Result<String, StoreError> {
        self.refuse_untrusted_before_locking(&[])?;
        let mut layers = self.layers.begin(check_parents)?;
        let mounts = self.mounts.read_shared()?;
        let images = self.images.read_shared()?;
        let mut containers = self.containers.begin(|_, _| Ok(()))?;
        self.check_held(&layers, Some(&mounts), &images, &containers)?;
        self.delete_held(driver, &mut layers, &mut containers, query, force)
    }

    /// Unmount container `query`'s layer (every user of its mount; fine
    /// when it is not mounted) and delete the container as
    /// [`Store::delete_container`] with `force`, in one locked section:
    /// the end of a run, each lock taken once.
    ///
    /// # Locking
    /// Shared `userns.lock`; exclusive `storage.lock`, `layers.lock`,
    /// `mountpoints.lock`; shared `images.lock`; exclusive
    /// `containers.lock`.
    pub fn unmount_and_delete_container(
        &self,
        driver: &dyn Driver,
        query: &str,
    ) -> Result<String, StoreError> {
        self.in_storage_section(|| {
            let mut layers = self.layers.begin(check_parents)?;
            let mut mounts = self.mounts.begin(|_, _| Ok(()))?;
            let images = self.images.read_shared()?;
            let mut containers = self.containers.begin(|_, _| Ok(()))?;
            self.check_held(&layers, Some(&mounts), &images, &containers)?;
            let layer = LayerId::parse(&lookup(&containers.records, query)?.layer)?;
            match self.unmount_in(driver, &mut mounts, &layer, true) {
                Ok(_) | Err(StoreError::NotMounted { .. }) => {}
                Err(e) => return Err(e),
            }
            self.delete_held(driver, &mut layers, &mut containers, query, true)
        })
    }

    /// [`Store::delete_container`] with its locks held.
    pub(super) fn delete_held(
        &self,
        driver: &dyn Driver,
        layers: &mut Txn<'_, Layer>,
        containers: &mut Txn<'_, Container>,
        query: &str,
        force: bool,
    ) -> Result<String, StoreError> {
        let container = lookup(&containers.records, query)?.clone();
        let id = ContainerId::parse(&container.id)?;
        let layer_id = LayerId::parse(&container.layer)?;
        if !force && !is_created_by_layerstore(&container) {
            return Err(StoreError::NotOurs {
                kind: "container",
                id: id.into_string(),
                remedy: format!("podman rm {}", container.id),
            });
        }
        if driver.is_mounted(&layer_id) {
            return Err(StoreError::InUse {
                kind: "container",
                id: id.into_string(),
                reason: format!(
                    "its layer is mounted at {}",
                    driver.mount_point(&layer_id).display()
                ),
            });
        }
        if let Some(child) = layers.records.iter().find(|l| l.parent == container.layer) {
            return Err(StoreError::InUse {
                kind: "container",
                id: id.into_string(),
                reason: format!("layer {} is stacked on its layer", child.id),
            });
        }
        // 1. The layer names its container, so that a kill after the next
        // step leaves a layer gc recognises.
        let layer = layers.records.iter_mut().find(|l| l.id == container.layer);
        if let Some(layer) = layer {
            if layer.flags.get(FLAG_CONTAINER).and_then(Value::as_str) != Some(id.as_str()) {
                layer
                    .flags
                    .insert(FLAG_CONTAINER.to_owned(), Value::String(id.to_string()));
                layers.save()?;
            }
        }
        // 2. The record, 3. its directories, 4. the layer.
        containers.records.retain(|c| c.id != container.id);
        containers.save()?;
        self.remove_container_dirs(&id)?;
        self.remove_layers(layers, driver, std::slice::from_ref(&layer_id))?;
        Ok(id.into_string())
    }
}
