//! [`layerstore::driver::Driver`] for the overlay driver, so the store's
//! create/delete/mount protocols run on real overlay layer directories.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use layerstore::driver::{
    Driver, DriverError, FileIdentity, LinkEntry, MountOptions, MountsInside,
};
use layerstore::gc::{usage_in, Usage};
use layerstore::idmap::{validate, IdMap, IdMappings};
use layerstore::LayerId;

use crate::layout::{LayoutError, MountRequest, OverlayDriver};

impl Driver for OverlayDriver {
    fn create(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        root_owner: (u32, u32),
    ) -> Result<(), DriverError> {
        Ok(self.create_layer(id, parent, root_owner)?)
    }

    fn remove(&self, id: &LayerId) -> Result<(), DriverError> {
        match self.remove_layer(id) {
            Err(e @ LayoutError::PartlyRemoved { .. }) => {
                Err(Box::new(layerstore::driver::PartlyRemoved {
                    id: id.to_string(),
                    source: Box::new(e),
                }))
            }
            other => Ok(other?),
        }
    }

    fn exists(&self, id: &LayerId) -> bool {
        self.layer_exists(id)
    }

    fn set_top_owner(&self, id: &LayerId, owner: (u32, u32)) -> Result<(), DriverError> {
        Ok(OverlayDriver::set_top_owner(self, id, owner)?)
    }

    fn mount(&self, id: &LayerId, options: &MountOptions) -> Result<PathBuf, DriverError> {
        let request = MountRequest {
            read_only: options.read_only,
            options: options.options.clone(),
            mount_label: (!options.mount_label.is_empty()).then(|| options.mount_label.clone()),
            uidmap: options.uidmap.clone(),
            gidmap: options.gidmap.clone(),
        };
        Ok(OverlayDriver::mount(self, id, &request)?)
    }

    fn unmount(&self, id: &LayerId) -> Result<(), DriverError> {
        Ok(OverlayDriver::unmount(self, id)?)
    }

    fn mount_point(&self, id: &LayerId) -> PathBuf {
        OverlayDriver::mount_point(self, id)
    }

    fn is_mounted(&self, id: &LayerId) -> bool {
        self.is_layer_mounted(id)
    }

    fn mounted_root(&self, id: &LayerId) -> Result<Option<FileIdentity>, DriverError> {
        Ok(OverlayDriver::mounted_root(self, id)?)
    }

    fn read_stack_file(
        &self,
        chain: &[LayerId],
        path: &str,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, DriverError> {
        Ok(OverlayDriver::read_stack_file(self, chain, path, limit)?)
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
        id: &LayerId,
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

    fn layer_mtime(&self, id: &LayerId) -> Option<SystemTime> {
        let home = self.home_dir().ok().flatten()?;
        home.stat(id.as_str()).ok().flatten().map(|m| m.mtime)
    }

    fn layer_dir(&self, id: &LayerId) -> Option<PathBuf> {
        Some(self.home().join(id.as_str()))
    }

    fn layer_usage(&self, id: &LayerId) -> Usage {
        match self.home_dir() {
            Ok(Some(home)) => usage_in(&home, &[Path::new(id.as_str())]),
            _ => Usage::default(),
        }
    }

    fn layers_usage(&self, ids: &[&LayerId]) -> Vec<Usage> {
        let Ok(Some(home)) = self.home_dir() else {
            return vec![Usage::default(); ids.len()];
        };
        // The walks are system calls on cached metadata: one thread per
        // core, each through the same home, each layer measured alone.
        crate::layout::per_layer::map_in_parallel(ids, |id| {
            usage_in(&home, &[Path::new(id.as_str())])
        })
    }

    fn links(&self) -> Result<Vec<LinkEntry>, DriverError> {
        Ok(OverlayDriver::links(self)?)
    }

    fn link_mtime(&self, name: &str) -> Option<SystemTime> {
        OverlayDriver::link_mtime(self, name)
    }

    fn remove_link(&self, name: &str) -> Result<(), DriverError> {
        Ok(OverlayDriver::remove_link(self, name)?)
    }

    fn link_usage(&self, name: &str) -> Usage {
        match self.home_dir() {
            Ok(Some(home)) if crate::layout::is_link_name(name) => {
                usage_in(&home, &[&Path::new("l").join(name)])
            }
            _ => Usage::default(),
        }
    }

    fn trash(&self) -> Result<Vec<String>, DriverError> {
        Ok(self.trash_entries()?)
    }

    fn empty_trash(&self, name: &str) -> Result<(), DriverError> {
        Ok(self.empty_trash_entry(name)?)
    }

    fn trash_usage(&self, name: &str) -> Usage {
        match self.home_dir() {
            Ok(Some(home)) if !name.contains('/') && !name.starts_with('.') => {
                usage_in(&home, &[&Path::new(".layerstore-trash").join(name)])
            }
            _ => Usage::default(),
        }
    }

    fn link_needs_repair(&self, id: &LayerId) -> bool {
        OverlayDriver::link_needs_repair(self, id)
    }

    fn mounts_inside_layers(&self) -> Result<MountsInside, DriverError> {
        Ok(OverlayDriver::mounts_inside_layers(self)?)
    }

    fn stacked_layer_ids(&self, id: &LayerId) -> Result<Vec<LayerId>, DriverError> {
        Ok(OverlayDriver::stacked_layer_ids(self, id)?)
    }

    fn stacked_layer_ids_of(
        &self,
        ids: &[LayerId],
        links: &[LinkEntry],
    ) -> Vec<Result<Vec<LayerId>, DriverError>> {
        let by_name = links_by_name(links);
        // One home for all (each layer's error, when there is none).
        let Ok(home) = self.home_required() else {
            return ids
                .iter()
                .map(|id| Ok(OverlayDriver::stacked_layer_ids(self, id)?))
                .collect();
        };
        crate::layout::per_layer::map_in_parallel(ids, |id| {
            Ok(self.stacked_layer_ids_in(&home, id, Some(&by_name))?)
        })
    }

    fn layer_dirs_stacks_and_link_files(
        &self,
        ids: &[LayerId],
        links: &[LinkEntry],
    ) -> Vec<(Result<Vec<LayerId>, DriverError>, bool)> {
        let by_name = links_by_name(links);
        let Ok(home) = self.home_required() else {
            return ids
                .iter()
                .map(|id| {
                    let stack = OverlayDriver::stacked_layer_ids(self, id);
                    (
                        stack.map_err(Into::into),
                        OverlayDriver::has_link_file(self, id),
                    )
                })
                .collect();
        };
        crate::layout::per_layer::map_in_parallel(ids, |id| {
            let (stack, has_link) = self.stack_and_link_file_in(&home, id, &by_name);
            (stack.map_err(Into::into), has_link)
        })
    }

    fn has_link_file(&self, id: &LayerId) -> bool {
        OverlayDriver::has_link_file(self, id)
    }

    fn have_link_files(&self, ids: &[LayerId]) -> Vec<bool> {
        match self.home_dir() {
            Ok(Some(home)) => crate::layout::per_layer::map_in_parallel(ids, |id| {
                OverlayDriver::has_link_file_in(&home, id)
            }),
            _ => vec![false; ids.len()],
        }
    }

    fn repair_link(&self, id: &LayerId) -> Result<bool, DriverError> {
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

/// Each short link's name and the layer it points to (as read under the
/// caller's locks), for resolving `lower` files without a readlink each.
fn links_by_name(links: &[LinkEntry]) -> std::collections::HashMap<&str, LayerId> {
    links
        .iter()
        .filter_map(|l| Some((l.name.as_str(), LayerId::parse(l.layer.as_deref()?).ok()?)))
        .collect()
}
