//! Creating and deleting containers as containers/storage does: a
//! read-write layer on the image's top layer, the record in
//! `containers.json` with its maps and labels, and on deletion the layer,
//! the record and the container's directories under graphroot and runroot.
//!
//! Crash safety: the container's layer carries [`FLAG_CONTAINER`] (the
//! container's id) from its creation on. Creating saves the layer, then the
//! container record; deleting drops the container record first, then the
//! layer. Killed in between, either leaves a layer whose container does not
//! exist, which `layerstore gc` removes; never a container whose layer is
//! gone (which podman cannot start, and which makes gc refuse the store).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use super::layers::NewLayer;
use super::mounts::container_mount_options;
use crate::driver::Driver;
use crate::error::{driver_error, StoreError};
use crate::gojson::GoTime;
use crate::id::{ContainerId, LayerId};
use crate::idmap::{
    containers_storage_order, format_id_map, root_pair, validate, IdMap, IdMappings,
};
use crate::lockfile::{LockFile, LockMode};
use crate::mapping::{
    top_layer_for_mapping, Capabilities, Decision, LayerSource, MappingRequest, Presentation,
};
use crate::records::{Container, Image, Layer, MountPoint};
use crate::snapshot::{check_parents, layer_chain, lookup};
use crate::store::{Held, Txn};
use crate::userns::{self, AutoUserNs, Available};
use crate::Store;

/// The key layerstore puts in the metadata object of every container it
/// creates (`{"layerstore":{"version":"0.1.0"}, ...}`); `layerstore rm`
/// removes only such containers (and `layerstore run`'s), unless forced.
pub const CREATED_KEY: &str = "layerstore";

/// `metadata` with layerstore's mark added: an empty string becomes
/// `{"layerstore":{...}}`, a JSON object gets the key; anything else (not
/// JSON, not an object) is returned unchanged and cannot carry the mark.
pub fn mark_created_by_layerstore(metadata: &str) -> String {
    let mark = serde_json::json!({ "version": env!("CARGO_PKG_VERSION") });
    let mut object = if metadata.trim().is_empty() {
        serde_json::Map::new()
    } else {
        match serde_json::from_str::<Value>(metadata) {
            Ok(Value::Object(o)) => o,
            _ => return metadata.to_owned(),
        }
    };
    object.insert(CREATED_KEY.to_owned(), mark);
    Value::Object(object).to_string()
}

/// Whether container `c` was created by layerstore (its metadata carries
/// [`CREATED_KEY`]; `layerstore run`'s owner marker alone does not count).
pub fn is_created_by_layerstore(c: &Container) -> bool {
    match serde_json::from_str::<Value>(&c.metadata) {
        Ok(Value::Object(o)) => o.contains_key(CREATED_KEY),
        _ => false,
    }
}

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
    /// `--userns=auto`: choose the maps (replacing `uidmap`/`gidmap`) from
    /// these subordinate ids, under `userns.lock` and with every
    /// container's recorded maps in view (see [`crate::userns`]).
    pub auto_userns: Option<(AutoUserNs, Available)>,
}

/// Most bytes of an image's `/etc/passwd` or `/etc/group` read for
/// `--userns=auto` sizing.
pub const USER_FILE_LIMIT: u64 = 16 << 20;

/// What `image` needs of a user namespace: the ids owning its files (its
/// layers' records) and those its `/etc/passwd` and `/etc/group` name
/// (read through its layers, or the caller's host files for them).
fn image_needs(
    driver: &dyn Driver,
    auto: &AutoUserNs,
    image: &Image,
    layers: &[Layer],
) -> Result<userns::ImageNeeds, StoreError> {
    let chain = layer_chain(layers, &image.top_layer)?;
    let ids: Vec<LayerId> = chain
        .iter()
        .map(|l| LayerId::parse(&l.id))
        .collect::<Result<_, _>>()?;
    let read = |host: &Option<Vec<u8>>, path: &str| match host {
        Some(bytes) => Ok(Some(bytes.clone())),
        None if ids.is_empty() => Ok(None),
        None => driver
            .read_stack_file(&ids, path, USER_FILE_LIMIT)
            .map_err(driver_error(
                "reading /etc of the image's top",
                &image.top_layer,
            )),
    };
    let passwd = read(&auto.passwd, "etc/passwd")?;
    let group = read(&auto.group, "etc/group")?;
    Ok(userns::ImageNeeds {
        files: userns::size_from_layers(chain.iter().copied()),
        users: userns::size_from_user_files(passwd.as_deref(), group.as_deref()),
    })
}

impl Store {
    /// Create a container and its read-write layer. The container's
    /// metadata gets layerstore's mark ([`mark_created_by_layerstore`]).
    /// Refused, with nothing written, when the store's records cannot be
    /// trusted.
    ///
    /// # Locking
    /// Exclusive `userns.lock` when maps or `auto_userns` are given (held
    /// until the record is saved); exclusive `layers.lock`;
    /// shared `mountpoints.lock`; exclusive `images.lock` (for a template's
    /// `mapped-layers` entry); exclusive `containers.lock`.
    pub fn create_container(
        &self,
        driver: &dyn Driver,
        new: NewContainer,
    ) -> Result<Container, StoreError> {
        self.create_container_decided(driver, new).map(|(c, _)| c)
    }

    /// [`Store::create_container`], also saying which layer the mapping
    /// decision chose and how it is presented (`None`: no image, a
    /// parentless layer).
    ///
    /// # Locking
    /// As [`Store::create_container`].
    pub fn create_container_decided(
        &self,
        driver: &dyn Driver,
        new: NewContainer,
    ) -> Result<(Container, Option<Decision>), StoreError> {
        self.create_container_resolved(driver, new, |_, _| Ok(()))
    }

    /// [`Store::create_container_decided`] for a caller that names the
    /// image by what the records say: `resolve` is given the image records
    /// under the same locks the container is created under and completes
    /// `new` (its `image`, its `metadata`), so the records are read once
    /// and each lock is taken once. The maps and everything else of `new`
    /// are as given; `resolve` failing creates nothing.
    ///
    /// # Locking
    /// As [`Store::create_container`]; `resolve` runs with every lock
    /// held (it must not call back into the store).
    pub fn create_container_resolved(
        &self,
        driver: &dyn Driver,
        new: NewContainer,
        resolve: impl FnOnce(&[Image], &mut NewContainer) -> Result<(), StoreError>,
    ) -> Result<(Container, Option<Decision>), StoreError> {
        let (container, decision, _) = self.create_locked(driver, new, resolve, None)?;
        Ok((container, decision))
    }

    /// [`Store::create_container_resolved`] and then
    /// [`Store::mount_container`] of the new container in the same locked
    /// section: the container's root filesystem ready, with each lock
    /// taken once. If mounting fails, the container is deleted again
    /// before the locks are released.
    ///
    /// # Locking
    /// `userns.lock` (exclusive when maps or `auto_userns` are given,
    /// else shared); exclusive `storage.lock`, `layers.lock`,
    /// `mountpoints.lock`, `images.lock` and `containers.lock`, in that
    /// order; `resolve` runs with every lock held (it must not call back
    /// into the store).
    pub fn create_and_mount_container(
        &self,
        driver: &dyn Driver,
        new: NewContainer,
        resolve: impl FnOnce(&[Image], &mut NewContainer) -> Result<(), StoreError>,
        on_disk_ok: bool,
    ) -> Result<(Container, PathBuf, Option<Decision>), StoreError> {
        let (container, decision, path) =
            self.create_locked(driver, new, resolve, Some(on_disk_ok))?;
        let path = path.expect("mounted when asked to");
        Ok((container, path, decision))
    }

    /// Create (and, with `mount`, mount: `Some(on_disk_ok)`) a container
    /// under one set of locks.
    fn create_locked(
        &self,
        driver: &dyn Driver,
        new: NewContainer,
        resolve: impl FnOnce(&[Image], &mut NewContainer) -> Result<(), StoreError>,
        mount: Option<bool>,
    ) -> Result<(Container, Option<Decision>, Option<PathBuf>), StoreError> {
        let mut new = new;
        let auto = new.auto_userns.take();
        if auto.is_some() && (!new.uidmap.is_empty() || !new.gidmap.is_empty()) {
            return Err(userns::AutoUserNsError::WithMaps.into());
        }
        let mapped = auto.is_some() || checked_maps(&new)?;
        let graph_locks: &[&str] = match mount {
            Some(_) => &["userns.lock", "storage.lock"],
            None => &["userns.lock"],
        };
        self.refuse_untrusted_before_locking(graph_locks)?;
        let userns = self.graph_lock("userns.lock")?;
        // Exclusive to choose or record maps; shared to mount (see
        // `Store::mount_layer`: before storage.lock, always).
        let (_userns_w, _userns_r) = match (mapped, mount) {
            (true, _) => (Some(userns.write()?), None),
            (false, Some(_)) => (None, Some(userns.read()?)),
            (false, None) => (None, None),
        };
        let graph = match mount {
            Some(_) => Some(self.graph_lock("storage.lock")?),
            None => None,
        };
        let _graph = match &graph {
            Some(g) => Some(g.write()?),
            None => None,
        };
        let mut layers = self.layers.begin(check_parents)?;
        // Exclusive only to mount: a create alone reads the mounts.
        let (mut mounts_txn, mounts_read) = match mount {
            Some(_) => (Some(self.mounts.begin(|_, _| Ok(()))?), None),
            None => (None, Some(self.mounts.read_shared()?)),
        };
        let mut images = self.images.begin(|_, _| Ok(()))?;
        let mut containers = self.containers.begin(|_, _| Ok(()))?;
        let mounts: &dyn Held<MountPoint> = match (&mounts_txn, &mounts_read) {
            (Some(txn), _) => txn,
            (None, Some(read)) => read,
            (None, None) => unreachable!("the mounts are read one way or the other"),
        };
        self.check_held(&layers, Some(mounts), &images, &containers)?;
        resolve(&images.records, &mut new)?;
        let (container, layer, decided) = self.create_held(
            driver,
            (&mut layers, &mut images, &mut containers),
            new,
            auto,
        )?;
        let (Some(on_disk_ok), Some(mounts)) = (mount, mounts_txn.as_mut()) else {
            return Ok((container, decided, None));
        };
        let mounted = (|| {
            let id = LayerId::parse(&layer.id)?;
            let options = container_mount_options(driver, &container, &layer, on_disk_ok)?;
            self.mount_in(driver, mounts, &id, &options)
        })();
        match mounted {
            Ok(path) => Ok((container, decided, Some(path))),
            // Not left behind: deleted before the locks are released.
            Err(e) => {
                match self.delete_held(driver, &mut layers, &mut containers, &container.id, true) {
                    Ok(_) => Err(e),
                    Err(cleanup) => Err(StoreError::CleanupFailed {
                        container: container.id,
                        cause: Box::new(e),
                        cleanup: Box::new(cleanup),
                    }),
                }
            }
        }
    }

    /// The container record and its read-write layer, made and saved with
    /// the create's locks held (its maps chosen first for `auto`).
    #[allow(clippy::type_complexity)]
    fn create_held(
        &self,
        driver: &dyn Driver,
        (layers, images, containers): (
            &mut Txn<'_, Layer>,
            &mut Txn<'_, Image>,
            &mut Txn<'_, Container>,
        ),
        mut new: NewContainer,
        auto: Option<(AutoUserNs, Available)>,
    ) -> Result<(Container, Layer, Option<Decision>), StoreError> {
        let mut decided = None;
        let mut mapped = auto.is_some() || checked_maps(&new)?;
        let id = new_container_id(&containers.records, &new)?;
        if let Some((auto, available)) = &auto {
            let image = match new.image.as_str() {
                "" => None,
                q => Some((
                    lookup::<Image>(&images.records, q)?,
                    layers.records.as_slice(),
                )),
            };
            let maps = self.auto_maps(driver, (auto, available), image, &containers.records)?;
            new.uidmap = maps.uids;
            new.gidmap = maps.gids;
            mapped = checked_maps(&new)?;
        }
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
                self.create_rw_layer(layers, driver, &id, None, &new.mount_label, recorded, None)?
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
                decided = Some(decision.clone());
                self.stack_container_layer(
                    layers,
                    images,
                    driver,
                    &id,
                    (&image_id, decision),
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
            id: id.to_string(),
            names: new.names,
            image: image_id,
            layer: layer.id.clone(),
            metadata: mark_created_by_layerstore(&new.metadata),
            created: GoTime::now(),
            uidmap,
            gidmap,
            flags,
            ..Container::default()
        };
        containers.records.push(container.clone());
        if let Err(e) = containers.save() {
            // If this fails too, the layer's FLAG_CONTAINER names a
            // container that does not exist: gc removes it.
            if let Ok(layer_id) = LayerId::parse(&layer.id) {
                let _ = self.remove_layers(layers, driver, &[layer_id]);
            }
            return Err(e);
        }
        Ok((container, layer, decided))
    }

    /// `--userns=auto`'s maps for a container of `image` (see
    /// [`crate::userns`]): sized by the rules over what the image needs,
    /// chosen against every container's recorded maps. The caller holds
    /// `userns.lock` and the store's locks.
    fn auto_maps(
        &self,
        driver: &dyn Driver,
        (auto, available): (&AutoUserNs, &Available),
        image: Option<(&Image, &[Layer])>,
        containers: &[Container],
    ) -> Result<IdMappings, StoreError> {
        let needs = match (auto.size, image) {
            (None, Some((image, layers))) => Some(image_needs(driver, auto, image, layers)?),
            _ => None,
        };
        let size = userns::needed_size(auto, &self.options().auto_userns, needs)?;
        let used = containers
            .iter()
            .map(|c| (c.uidmap.as_slice(), c.gidmap.as_slice()));
        let maps = userns::allocate(size, auto, available, used)?;
        tracing::debug!(
            size,
            uidmap = %format_id_map(&maps.uids),
            gidmap = %format_id_map(&maps.gids),
            "--userns=auto"
        );
        Ok(maps)
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
        container: &ContainerId,
        (image_id, decision): (&str, Decision),
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
                    container,
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
                self.create_rw_layer(
                    layers,
                    driver,
                    container,
                    Some(t.id),
                    mount_label,
                    maps.clone(),
                    None,
                )
            }
            Decision::CopyIntoContainerLayer { template } => {
                self.create_chowned_child_in(layers, driver, &template, maps, Some(container))
            }
        }
    }

    /// The container's read-write layer on `parent`, recorded with `maps`.
    /// Its root is owned by the maps' root; with `top_owner`, its `diff`
    /// (the top of the rootfs, which a driver gives its parent's owner) is
    /// owned by `top_owner` instead.
    #[allow(clippy::too_many_arguments)]
    fn create_rw_layer(
        &self,
        layers: &mut Txn<'_, Layer>,
        driver: &dyn Driver,
        container: &ContainerId,
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
            container: Some(container.clone()),
            ..NewLayer::default()
        };
        self.create_layer_owned_in(layers, driver, new, top_owner, |_, id| {
            if let Some(owner) = top_owner {
                driver.set_top_owner(id, owner).map_err(driver_error(
                    "changing the owner of the top of",
                    id.as_str(),
                ))?;
            }
            Ok(None)
        })
    }

    /// A lock file directly under the graphroot (`storage.lock`,
    /// `userns.lock`), created as containers/storage creates it.
    pub(crate) fn graph_lock(&self, name: &str) -> Result<std::sync::Arc<LockFile>, StoreError> {
        let graph = self.roots.open_or_create(crate::store::Root::Graph)?;
        Ok(LockFile::open_in(
            &graph,
            std::ffi::OsStr::new(name),
            LockMode::ReadWrite,
        )?)
    }
}

/// Whether `new` has maps, validated (each a valid map, root mapped).
fn checked_maps(new: &NewContainer) -> Result<bool, StoreError> {
    let mapped = !new.uidmap.is_empty() || !new.gidmap.is_empty();
    if mapped {
        validate(&new.uidmap)?;
        validate(&new.gidmap)?;
        root_pair(&new.uidmap, &new.gidmap)?;
    }
    Ok(mapped)
}

fn new_container_id(existing: &[Container], new: &NewContainer) -> Result<ContainerId, StoreError> {
    let id = match &new.id {
        Some(id) => ContainerId::parse(id)?,
        None => ContainerId::random(),
    };
    if existing.iter().any(|c| id == c.id) {
        return Err(StoreError::Exists {
            kind: "container",
            id: id.into_string(),
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
