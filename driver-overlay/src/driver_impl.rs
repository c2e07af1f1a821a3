//! [`layerstore::driver::Driver`] for the overlay driver, so the store's
//! create/delete/mount protocols run on real overlay layer directories.

use std::path::{Path, PathBuf};

use layerstore::driver::{Driver, DriverError, MountOptions};
use layerstore::idmap::{validate, IdMap, IdMappings};

use crate::layout::{MountRequest, OverlayDriver};

impl Driver for OverlayDriver {
    fn create(
        &self,
        id: &str,
        parent: Option<&str>,
        root_owner: (u32, u32),
    ) -> Result<(), DriverError> {
        Ok(self.create_layer(id, parent, root_owner)?)
    }

    fn remove(&self, id: &str) -> Result<(), DriverError> {
        Ok(self.remove_layer(id)?)
    }

    fn exists(&self, id: &str) -> bool {
        self.layer_exists(id)
    }

    fn diff_path(&self, id: &str) -> Result<PathBuf, DriverError> {
        Ok(OverlayDriver::diff_path(self, id)?)
    }

    fn mount(&self, id: &str, options: &MountOptions) -> Result<PathBuf, DriverError> {
        let request = MountRequest {
            read_only: options.read_only,
            options: options.options.clone(),
            mount_label: (!options.mount_label.is_empty()).then(|| options.mount_label.clone()),
            uidmap: options.uidmap.clone(),
            gidmap: options.gidmap.clone(),
        };
        Ok(OverlayDriver::mount(self, id, &request)?)
    }

    fn unmount(&self, id: &str) -> Result<(), DriverError> {
        Ok(OverlayDriver::unmount(self, id)?)
    }

    fn is_mounted(&self, path: &Path) -> bool {
        OverlayDriver::is_mounted(self, path)
    }

    /// Upstream c/storage (>= v1.59) native overlay: the host mapping
    /// always; any other valid map (contiguous or not) when running as root
    /// on a store without AUFS whiteouts whose kernel mounts overlay on
    /// idmapped lowers ([`OverlayDriver::supports_idmapped_lowers`]).
    fn supports_shifting(&self, uidmap: &[IdMap], gidmap: &[IdMap]) -> bool {
        self.supports_shifting_with(uidmap, gidmap, || match self.supports_idmapped_lowers() {
            Ok(answer) => answer,
            Err(e) => {
                tracing::debug!(error = %e, "cannot tell whether idmapped lowers work; assuming not");
                false
            }
        })
    }

    fn update_layer_id_map(
        &self,
        id: &str,
        to_container: &IdMappings,
        to_host: &IdMappings,
        mount_label: &str,
    ) -> Result<(), DriverError> {
        OverlayDriver::update_layer_id_map(self, id, to_container, to_host, Some(mount_label))?;
        Ok(())
    }

    fn list_layers(&self) -> Result<Vec<String>, DriverError> {
        Ok(OverlayDriver::list_layers(self)?)
    }

    fn layer_dir(&self, id: &str) -> Option<PathBuf> {
        crate::layout::validate_id(id).ok()?;
        Some(self.home().join(id))
    }

    fn link_dir(&self) -> Option<PathBuf> {
        Some(self.home().join("l"))
    }

    fn link_needs_repair(&self, id: &str) -> bool {
        OverlayDriver::link_needs_repair(self, id)
    }

    fn layers_with_mounts(&self) -> Result<Vec<String>, DriverError> {
        Ok(OverlayDriver::layers_with_mounts(self)?)
    }

    fn has_link_file(&self, id: &str) -> bool {
        OverlayDriver::has_link_file(self, id)
    }

    fn repair_link(&self, id: &str) -> Result<bool, DriverError> {
        Ok(OverlayDriver::repair_link(self, id)?)
    }
}

impl OverlayDriver {
    /// [`Driver::supports_shifting`] with the answer to "does overlay on
    /// idmapped lowers work here?" supplied by the caller (called only when
    /// the maps themselves allow shifting). `supports_shifting` passes the
    /// cached probe; `doctor` passes a prediction that writes nothing, so the
    /// two cannot disagree about the rest of the rule.
    pub fn supports_shifting_with(
        &self,
        uidmap: &[IdMap],
        gidmap: &[IdMap],
        idmapped_lowers: impl FnOnce() -> bool,
    ) -> bool {
        if uidmap.is_empty() && gidmap.is_empty() {
            return true;
        }
        if uidmap.is_empty() || gidmap.is_empty() || self.whiteout_is_aufs() {
            return false;
        }
        if validate(uidmap).is_err() || validate(gidmap).is_err() {
            return false;
        }
        idmapped_lowers()
    }
}
