//! `layerstore`: read and write the on-disk format of containers/storage
//! (overlay driver) side by side with podman, under podman's own locks.
//!
//! The crate owns everything under a store's graphroot and runroot except the
//! per-layer directories of the overlay driver:
//!
//! ```text
//! <graphroot>/storage.lock  userns.lock
//! <graphroot>/overlay-layers/{layers.json,volatile-layers.json,layers.lock,<id>.tar-split.gz}
//! <graphroot>/overlay-images/{images.json,images.lock,<id>/}
//! <graphroot>/overlay-containers/{containers.json,volatile-containers.json,containers.lock,<id>/}
//! <runroot>/overlay-layers/{mountpoints.json,mountpoints.lock}
//! ```
//!
//! Start with [`Store::open`] and [`Store::snapshot`]:
//!
//! ```no_run
//! use layerstore::config::{Overrides, StoreOptions};
//! use layerstore::Store;
//!
//! let options = StoreOptions::load(&Overrides::default())?;
//! let store = Store::open(options)?;
//! let snap = store.snapshot()?;
//! for image in &snap.images {
//!     let chain = snap.image_layer_chain(image)?;
//!     println!("{} {:?}: {} layers", image.id, image.names, chain.len());
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod atomic;
pub mod config;
pub mod confined;
pub mod consistency;
pub mod driver;
mod error;
pub mod gc;
pub mod gojson;
pub mod id;
pub mod idmap;
pub mod lockfile;
pub mod mapping;
pub mod ops;
pub mod records;
pub mod snapshot;
mod store;
pub mod userns;

pub use error::{error_chain, StoreError};
pub use id::{ContainerId, ImageId, InvalidId, LayerId};
pub use snapshot::{Index, LayerUsers, Records, Snapshot, TableRecords};
pub use store::Store;

/// Hash maps and sets over ids and names: a fast seeded hash (foldhash)
/// instead of SipHash, which was a sixth of `info`'s time at 100,000
/// records. Seeded per process, so crafted ids cannot aim at collisions
/// known in advance.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// See [`FastMap`].
pub(crate) type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
