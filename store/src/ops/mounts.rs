//! Mounting layers with reference counts in `mountpoints.json`, as
//! containers/storage does: a layer mounted twice is mounted once with a
//! count of two; a recorded mount that is no longer mounted is stale and
//! mounted again.

use std::path::PathBuf;

use crate::driver::{Driver, MountOptions};
use crate::error::{driver_error, StoreError};
use crate::records::{Container, MountPoint};
use crate::snapshot::{check_parents, lookup};
use crate::Store;

impl Store {
    /// Mount a layer (or count one more user of its mount); returns the
    /// mount point.
    ///
    /// # Locking
    /// Exclusive `storage.lock`, `layers.lock` and, nested,
    /// `mountpoints.lock`.
    pub fn mount_layer(
        &self,
        driver: &dyn Driver,
        query: &str,
        options: &MountOptions,
    ) -> Result<PathBuf, StoreError> {
        let graph = self.graph_lock("storage.lock")?;
        let _graph = graph.write()?;
        let layers = self.layers.begin(check_parents)?;
        let mut mounts = self.mounts.begin(|_, _| Ok(()))?;
        let id = lookup(&layers.records, query)?.id.clone();
        if let Some(m) = mounts
            .records
            .iter_mut()
            .find(|m| m.id == id && m.count > 0)
        {
            if driver.is_mounted(m.path.as_ref()) {
                m.count += 1;
                let path = PathBuf::from(&m.path);
                mounts.save()?;
                return Ok(path);
            }
        }
        let path = driver
            .mount(&id, options)
            .map_err(driver_error("mounting", &id))?;
        mounts.records.retain(|m| m.id != id);
        mounts.records.push(MountPoint {
            id: id.clone(),
            path: path.to_string_lossy().into_owned(),
            count: 1,
            ..MountPoint::default()
        });
        if let Err(e) = mounts.save() {
            let _ = driver.unmount(&id);
            return Err(e);
        }
        Ok(path)
    }

    /// Drop one user of a layer's mount (all of them with `force`),
    /// unmounting it when none is left. Returns how many users remain.
    ///
    /// # Locking
    /// As [`Store::mount_layer`].
    pub fn unmount_layer(
        &self,
        driver: &dyn Driver,
        query: &str,
        force: bool,
    ) -> Result<i64, StoreError> {
        let graph = self.graph_lock("storage.lock")?;
        let _graph = graph.write()?;
        let layers = self.layers.begin(check_parents)?;
        let mut mounts = self.mounts.begin(|_, _| Ok(()))?;
        let id = lookup(&layers.records, query)?.id.clone();
        let Some(m) = mounts
            .records
            .iter_mut()
            .find(|m| m.id == id && m.count > 0)
        else {
            return Err(StoreError::NotMounted { id });
        };
        if m.count > 1 && !force {
            m.count -= 1;
            let left = m.count;
            mounts.save()?;
            return Ok(left);
        }
        if driver.is_mounted(m.path.as_ref()) {
            driver
                .unmount(&id)
                .map_err(driver_error("unmounting", &id))?;
        }
        mounts.records.retain(|m| m.id != id);
        mounts.save()?;
        Ok(0)
    }

    /// Mount a container's layer with the container's mount options and
    /// label. A container with a uid/gid mapping is mounted
    /// * as it is when its layer is recorded with maps (a template's copy:
    ///   files already owned for the container);
    /// * with idmapped lower layers when the driver can shift its maps;
    /// * as it is, files keeping their on-disk owners, only when
    ///   `on_disk_ok` (the `no_cache` choice); otherwise
    ///   [`StoreError::MappedMount`].
    ///
    /// # Locking
    /// Shared `containers.lock` and `layers.lock` to find the container and
    /// its layer, then as [`Store::mount_layer`].
    pub fn mount_container(
        &self,
        driver: &dyn Driver,
        query: &str,
        on_disk_ok: bool,
    ) -> Result<(Container, PathBuf), StoreError> {
        let container = lookup(&self.containers.read_shared()?, query)?.clone();
        let mut idmap = (Vec::new(), Vec::new());
        if !container.uidmap.is_empty() || !container.gidmap.is_empty() {
            let layers = self.layers.read_shared()?;
            let layer = lookup(&layers, &container.layer)?;
            if !layer.is_mapped() {
                if driver.supports_shifting(&container.uidmap, &container.gidmap) {
                    idmap = (container.uidmap.clone(), container.gidmap.clone());
                } else if !on_disk_ok {
                    return Err(StoreError::MappedMount { id: container.id });
                }
            }
        }
        let str_flag = |key: &str| {
            container
                .flags
                .get(key)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let options = MountOptions {
            mount_label: str_flag("MountLabel"),
            options: container
                .flags
                .get("MountOpts")
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            uidmap: idmap.0,
            gidmap: idmap.1,
            ..MountOptions::default()
        };
        let path = self.mount_layer(driver, &container.layer, &options)?;
        Ok((container, path))
    }
}
