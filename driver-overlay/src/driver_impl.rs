//! [`layerstore::driver::Driver`] for the overlay driver, so the store's
//! create/delete/mount protocols run on real overlay layer directories.

use std::path::{Path, PathBuf};

use layerstore::driver::{Driver, DriverError, MountOptions};

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
        if !options.uidmap.is_empty() || !options.gidmap.is_empty() {
            return Err("idmapped overlay mounts are not supported yet".into());
        }
        let request = MountRequest {
            read_only: options.read_only,
            options: options.options.clone(),
            mount_label: (!options.mount_label.is_empty()).then(|| options.mount_label.clone()),
        };
        Ok(OverlayDriver::mount(self, id, &request)?)
    }

    fn unmount(&self, id: &str) -> Result<(), DriverError> {
        Ok(OverlayDriver::unmount(self, id)?)
    }

    fn is_mounted(&self, path: &Path) -> bool {
        OverlayDriver::is_mounted(self, path)
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
