//! Mounting layers with reference counts in `mountpoints.json`, as
//! containers/storage does: a layer mounted twice is mounted once with a
//! count of two; a recorded mount that is no longer mounted is stale and
//! mounted again. A recorded mount path is never trusted: whether a layer
//! is mounted, and where, is the driver's answer for the layer's own mount
//! point.

use std::path::PathBuf;

use crate::driver::{Driver, MountOptions};
use crate::error::{driver_error, StoreError};
use crate::id::LayerId;
use crate::records::{Container, Layer, MountPoint};
use crate::snapshot::{check_parents, lookup};
use crate::store::Txn;
use crate::Store;

impl Store {
    /// Mount a layer (or count one more user of its mount); returns the
    /// mount point.
    ///
    /// # Locking
    /// Shared `userns.lock`; exclusive `storage.lock`, `layers.lock` and,
    /// nested, `mountpoints.lock`; shared `images.lock` and
    /// `containers.lock` (the records checked).
    pub fn mount_layer(
        &self,
        driver: &dyn Driver,
        query: &str,
        options: &MountOptions,
    ) -> Result<PathBuf, StoreError> {
        self.in_storage_section(|| {
            let (layers, mut mounts, _) = self.lock_for_mount()?;
            let id = LayerId::parse(&lookup(&layers.records, query)?.id)?;
            self.mount_in(driver, &mut mounts, &id, options)
        })
    }

    /// Run `section` holding what every mount and unmount holds first:
    /// shared `userns.lock`, then exclusive `storage.lock`. userns.lock
    /// comes first because containers/storage's `--userns=auto` create
    /// takes it before layers.lock and then storage.lock: the two never
    /// wait for each other. A store whose records cannot be trusted is
    /// refused before a missing lock file is created.
    pub(crate) fn in_storage_section<T>(
        &self,
        section: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.refuse_untrusted_before_locking(&["userns.lock", "storage.lock"])?;
        let userns = self.graph_lock("userns.lock")?;
        let _userns = userns.read()?;
        let graph = self.graph_lock("storage.lock")?;
        let _graph = graph.write()?;
        section()
    }

    /// [`Store::mount_layer`] of `id` with the locks held.
    pub(crate) fn mount_in(
        &self,
        driver: &dyn Driver,
        mounts: &mut Txn<'_, MountPoint>,
        id: &LayerId,
        options: &MountOptions,
    ) -> Result<PathBuf, StoreError> {
        let id = id.clone();
        if let Some(m) = mounts
            .records
            .iter_mut()
            .find(|m| id == m.id && m.count > 0)
        {
            if driver.is_mounted(&id) {
                m.count += 1;
                mounts.save()?;
                return Ok(driver.mount_point(&id));
            }
        }
        let path = driver
            .mount(&id, options)
            .map_err(driver_error("mounting", id.as_str()))?;
        mounts.records.retain(|m| id != m.id);
        mounts.records.push(MountPoint {
            id: id.to_string(),
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

    /// Exclusive `layers.lock` and `mountpoints.lock`, the store checked
    /// (images and containers read shared; the containers returned).
    fn lock_for_mount(&self) -> Result<MountLocks<'_>, StoreError> {
        let layers = self.layers.begin(check_parents)?;
        let mounts = self.mounts.begin(|_, _| Ok(()))?;
        let images = self.images.read_shared()?;
        let containers = self.containers.read_shared()?;
        self.check_held(&layers, Some(&mounts), &images, &containers)?;
        Ok((layers, mounts, containers.records))
    }

    /// Drop one user of a layer's mount (all of them with `force`),
    /// unmounting it when none is left. Returns how many users remain. A
    /// layer mounted without a record (its mounter was killed) is simply
    /// unmounted.
    ///
    /// # Locking
    /// As [`Store::mount_layer`].
    pub fn unmount_layer(
        &self,
        driver: &dyn Driver,
        query: &str,
        force: bool,
    ) -> Result<i64, StoreError> {
        self.in_storage_section(|| {
            let (layers, mut mounts, _) = self.lock_for_mount()?;
            let id = LayerId::parse(&lookup(&layers.records, query)?.id)?;
            self.unmount_in(driver, &mut mounts, &id, force)
        })
    }

    /// [`Store::unmount_layer`] of `id` with the locks held.
    pub(crate) fn unmount_in(
        &self,
        driver: &dyn Driver,
        mounts: &mut Txn<'_, MountPoint>,
        id: &LayerId,
        force: bool,
    ) -> Result<i64, StoreError> {
        let id = id.clone();
        let recorded = mounts
            .records
            .iter_mut()
            .find(|m| id == m.id && m.count > 0);
        match recorded {
            None if !driver.is_mounted(&id) => {
                return Err(StoreError::NotMounted {
                    id: id.into_string(),
                })
            }
            Some(m) if m.count > 1 && !force => {
                m.count -= 1;
                let left = m.count;
                mounts.save()?;
                return Ok(left);
            }
            _ => {}
        }
        if driver.is_mounted(&id) {
            driver
                .unmount(&id)
                .map_err(driver_error("unmounting", id.as_str()))?;
        }
        let before = mounts.records.len();
        mounts.records.retain(|m| id != m.id);
        if mounts.records.len() != before {
            mounts.save()?;
        }
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
    /// As [`Store::mount_layer`] (the container found in the records read
    /// under those locks: each lock once).
    pub fn mount_container(
        &self,
        driver: &dyn Driver,
        query: &str,
        on_disk_ok: bool,
    ) -> Result<(Container, PathBuf), StoreError> {
        self.in_storage_section(|| {
            let (layers, mut mounts, containers) = self.lock_for_mount()?;
            let container = lookup(&containers, query)?.clone();
            let layer = lookup(&layers.records, &container.layer)?;
            let options = container_mount_options(driver, &container, layer, on_disk_ok)?;
            let id = LayerId::parse(&layer.id)?;
            let path = self.mount_in(driver, &mut mounts, &id, &options)?;
            Ok((container, path))
        })
    }
}

/// The locks and records of a mount: `layers` and `mountpoints` held
/// exclusively, and the container records read under a shared lock.
type MountLocks<'a> = (
    Txn<'a, Layer>,
    Txn<'a, MountPoint>,
    crate::snapshot::Records<Container>,
);

/// How container `container` (whose read-write layer is `layer`) is
/// mounted: its label and options, and its maps when the driver shifts
/// them. Refused ([`StoreError::MappedMount`]) when the files would keep
/// their on-disk owners and `on_disk_ok` is not given.
pub(crate) fn container_mount_options(
    driver: &dyn Driver,
    container: &Container,
    layer: &Layer,
    on_disk_ok: bool,
) -> Result<MountOptions, StoreError> {
    let mut idmap = (Vec::new(), Vec::new());
    if (!container.uidmap.is_empty() || !container.gidmap.is_empty()) && !layer.is_mapped() {
        if driver.supports_shifting(&container.uidmap, &container.gidmap) {
            idmap = (container.uidmap.clone(), container.gidmap.clone());
        } else if !on_disk_ok {
            return Err(StoreError::MappedMount {
                id: container.id.clone(),
            });
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
    Ok(MountOptions {
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
    })
}
