//! The API for container engines: an image and a uid/gid mapping in, a
//! container with a mounted root filesystem out, and its release.
//!
//! [`Engine::prepare`] records the container in the store (so podman lists
//! it with `podman ps --external`) on the layer the mapping decision picks
//! ([`layerstore::mapping`]): the image's own top layer, idmapped, whenever
//! the kernel allows, so a new mapping costs no copy; with
//! [`RootfsOptions::no_cache`] also where it does not (files keep their
//! on-disk owners); a containers/storage-compatible template only as the
//! fallback. [`Engine::release`] unmounts and, if asked, deletes the
//! container and its layer. Both take podman's locks in podman's order.
//!
//! ```no_run
//! use layerstore::config::{Overrides, StoreOptions};
//! use layerstore::idmap::parse_id_map;
//! use layerstore_overlay::engine::{Engine, RootfsOptions};
//!
//! let engine = Engine::open(StoreOptions::load(&Overrides::default())?)?;
//! let options = RootfsOptions {
//!     name: Some("worker-17".into()),
//!     // Non-contiguous: root and most ids at 200000, uid 1000 kept as is.
//!     uidmap: parse_id_map("0:200000:1000:1000:1000:1:1001:201001:64535")?,
//!     gidmap: parse_id_map("0:200000:65536")?,
//!     ..RootfsOptions::default()
//! };
//! let rootfs = engine.prepare("localhost/debian:latest", &options)?;
//! println!("rootfs of {} at {}", rootfs.container.id, rootfs.path.display());
//! // ... write an OCI bundle whose root is `rootfs.path` and run it ...
//! engine.release(&rootfs, true)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The same as a program to run (as root) on a store of yours:
//! `cargo run -p layerstore-overlay --example prepare_rootfs -- GRAPHROOT
//! RUNROOT IMAGE UIDMAP GIDMAP [--nocache]`
//! (`driver-overlay/examples/prepare_rootfs.rs`; the tests run it).

use std::path::PathBuf;

use layerstore::config::StoreOptions;
use layerstore::idmap::{root_pair, IdMap};
use layerstore::mapping::{Decision, Presentation};
use layerstore::ops::NewContainer;
use layerstore::records::Container;
use layerstore::userns::{AutoUserNs, Available};
use layerstore::{Store, StoreError};

use crate::layout::{LayoutError, OverlayDriver};

/// Let the container's root (`owner`, host ids) reach `rootfs`: every
/// directory from `/` down to the rootfs' parent that it could not search
/// gets `--x` for all (mode | 0o111), as podman's `makeAccessible` does for
/// containers with a user namespace (their runtime resolves the rootfs path
/// as the container's root). Podman leaves the graphroot, runroot, overlay
/// home and layer directories 0711 this way; nothing becomes readable.
pub fn make_accessible(rootfs: &std::path::Path, owner: (u32, u32)) -> Result<(), StoreError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut dir = rootfs.parent();
    while let Some(d) = dir {
        let meta = std::fs::metadata(d).map_err(StoreError::io("inspecting", d))?;
        let mode = meta.mode();
        let searchable = (meta.uid() == owner.0 && mode & 0o100 != 0)
            || (meta.gid() == owner.1 && mode & 0o010 != 0)
            || mode & 0o001 != 0;
        if !searchable {
            let new = (mode | 0o111) & 0o7777;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(new))
                .map_err(StoreError::io("making searchable", d))?;
            tracing::debug!(dir = %d.display(), mode = format!("{new:o}"), "made searchable for the container root");
        }
        dir = d.parent();
    }
    Ok(())
}

/// Errors of the engine API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The overlay driver could not be opened.
    #[error(transparent)]
    Driver(#[from] LayoutError),
    /// Preparing failed, and so did removing what was made.
    #[error("{cause}; removing container {container} afterwards failed too")]
    Cleanup {
        /// The container left behind.
        container: String,
        /// Why preparing failed.
        cause: Box<EngineError>,
        /// Why it could not be removed.
        #[source]
        source: Box<EngineError>,
    },
}

/// How the container's root filesystem should be made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RootfsOptions {
    /// The container's name (unique in the store).
    pub name: Option<String>,
    /// The container's uid map (empty: the host mapping).
    pub uidmap: Vec<IdMap>,
    /// The container's gid map (empty: the host mapping).
    pub gidmap: Vec<IdMap>,
    /// `--userns=auto`: a mapping of its own, chosen as podman chooses it
    /// (replacing `uidmap`/`gidmap`; see [`layerstore::userns`]) from the
    /// subordinate ids the store's configuration names.
    pub auto_userns: Option<AutoUserNs>,
    /// Never copy the image for the mapping (see [`layerstore::mapping`]).
    pub no_cache: bool,
    /// Opaque metadata kept in the container record.
    pub metadata: String,
    /// SELinux mount label.
    pub mount_label: String,
}

/// Which way [`Engine::prepare`] made the root filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RootfsPath {
    /// No mapping: the image's layers as they are.
    Host,
    /// The image's own layers, idmapped for the mapping: no copy.
    Idmapped,
    /// The image's own layers as they are, files keeping their on-disk
    /// owners (`no_cache` where idmapped mounts are impossible): no copy.
    OnDisk,
    /// A mapped template, as containers/storage makes them (a copy,
    /// reused when one for the same mapping exists).
    Template,
}

impl RootfsPath {
    fn of(decision: Option<&Decision>, mapped: bool) -> RootfsPath {
        match decision {
            None if mapped => RootfsPath::Idmapped,
            None => RootfsPath::Host,
            Some(Decision::Use { presentation, .. }) => match presentation {
                Presentation::Host => RootfsPath::Host,
                Presentation::Idmapped => RootfsPath::Idmapped,
                Presentation::OnDisk => RootfsPath::OnDisk,
                Presentation::Owned => RootfsPath::Template,
            },
            Some(_) => RootfsPath::Template,
        }
    }

    /// The word for it in messages: host, idmapped, on-disk, template.
    pub fn as_str(self) -> &'static str {
        match self {
            RootfsPath::Host => "host",
            RootfsPath::Idmapped => "idmapped",
            RootfsPath::OnDisk => "on-disk",
            RootfsPath::Template => "template",
        }
    }
}

/// A prepared, mounted container root filesystem.
#[derive(Debug, Clone, PartialEq)]
pub struct Rootfs {
    /// The container record as saved.
    pub container: Container,
    /// Where its root filesystem is mounted.
    pub path: PathBuf,
    /// Which way it was made.
    pub how: RootfsPath,
}

/// A store and its overlay driver, for engines.
#[derive(Debug)]
pub struct Engine {
    store: Store,
    driver: OverlayDriver,
}

impl Engine {
    /// Open the store described by `options` and its overlay driver.
    pub fn open(options: StoreOptions) -> Result<Engine, EngineError> {
        let driver = OverlayDriver::new(&options)?;
        Ok(Engine {
            store: Store::open(options)?,
            driver,
        })
    }

    /// An engine over an already opened store and driver.
    pub fn new(store: Store, driver: OverlayDriver) -> Engine {
        Engine { store, driver }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The overlay driver.
    pub fn driver(&self) -> &OverlayDriver {
        &self.driver
    }

    /// Create a container of `image` (id, full name or unique id prefix)
    /// with `options`' mapping and mount its root filesystem. If mounting
    /// fails, the container is removed again. With
    /// [`RootfsOptions::auto_userns`], the chosen maps are the container's
    /// (`Rootfs::container.uidmap`/`gidmap`).
    ///
    /// # Locking
    /// As [`Store::create_and_mount_container`]: each lock once.
    pub fn prepare(&self, image: &str, options: &RootfsOptions) -> Result<Rootfs, EngineError> {
        let auto_userns = match &options.auto_userns {
            Some(auto) => Some((
                auto.clone(),
                Available::read(&self.store.options().auto_userns).map_err(StoreError::from)?,
            )),
            None => None,
        };
        // Created and mounted under one set of locks (a failed mount
        // removes the container again before they are released).
        let (container, path, decision) = self.store.create_and_mount_container(
            &self.driver,
            NewContainer {
                names: options.name.iter().cloned().collect(),
                image: image.to_owned(),
                metadata: options.metadata.clone(),
                uidmap: options.uidmap.clone(),
                gidmap: options.gidmap.clone(),
                no_cache: options.no_cache,
                mount_label: options.mount_label.clone(),
                auto_userns,
                ..NewContainer::default()
            },
            |_, _| Ok(()),
            options.no_cache,
        )?;
        let mapped = !container.uidmap.is_empty() || !container.gidmap.is_empty();
        let how = RootfsPath::of(decision.as_ref(), mapped);
        tracing::info!(container = %container.id, path = how.as_str(), "root filesystem prepared");
        let accessible = if mapped {
            root_pair(&container.uidmap, &container.gidmap)
                .map_err(StoreError::from)
                .and_then(|owner| make_accessible(&path, owner))
        } else {
            Ok(())
        };
        let rootfs = Rootfs {
            container,
            path,
            how,
        };
        match accessible {
            Ok(()) => Ok(rootfs),
            Err(e) => match self.release(&rootfs, true) {
                Ok(()) => Err(e.into()),
                Err(source) => Err(EngineError::Cleanup {
                    container: rootfs.container.id,
                    cause: Box::new(e.into()),
                    source: Box::new(source),
                }),
            },
        }
    }

    /// Unmount `rootfs` (dropping every user of the mount) and, with
    /// `remove`, delete the container and its read-write layer (the one
    /// [`Engine::prepare`] made, whatever its metadata says). A rootfs that
    /// is no longer mounted is fine.
    ///
    /// # Locking
    /// With `remove`, as [`Store::unmount_and_delete_container`] (each lock
    /// once); without, as [`Store::unmount_layer`].
    pub fn release(&self, rootfs: &Rootfs, remove: bool) -> Result<(), EngineError> {
        if remove {
            self.store
                .unmount_and_delete_container(&self.driver, &rootfs.container.id)?;
            return Ok(());
        }
        match self
            .store
            .unmount_layer(&self.driver, &rootfs.container.layer, true)
        {
            Ok(_) | Err(StoreError::NotMounted { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
