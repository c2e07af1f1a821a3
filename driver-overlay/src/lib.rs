//! The overlay driver of layerstore: what containers/storage's overlay
//! driver keeps under `<graphroot>/overlay/`.
//!
//! ```text
//! <graphroot>/overlay/
//!   .has-mount-program     "true"/"false": whiteout format of the store
//!   l/<26 base32>          -> ../<id>/diff   (short names for lowerdir=)
//!   <id>/{diff,link,lower,lower-layers,work,merged,empty,diff1..N}
//! ```
//!
//! - [`tarsplit`]: the tar-split metadata (`<id>.tar-split.gz`) that lets
//!   containers/storage reproduce a layer's original tar byte for byte.
//! - [`ocidiff`]: apply an OCI/Docker layer tar into a layer's `diff`.
//! - [`layout`]: layer directories, lower chains and overlay mounts.
//! - [`chown`]: chown-by-maps, for ID-mapped template copies of layers.
//! - [`import`]: images from docker/OCI archives, OCI layouts and tarballs.
//! - [`engine`]: image + mapping in, mounted container rootfs out (for engines).
//! - [`probe`]: kernel feature probes (overlay on idmapped lower layers),
//!   cached under the runroot as containers/storage caches them.
//! - [`doctor`]: host checks (key quotas, inodes, idmapped mounts, kernel
//!   versions, store consistency) for `layerstore doctor` and engines.
//! - [`sys`]: the only `unsafe` code: user-namespace fds for id maps and
//!   detached idmapped mounts.

pub use layerstore;

pub mod chown;
pub mod doctor;
mod driver_impl;
pub mod engine;
pub mod import;
pub mod launch;
pub mod layout;
pub mod ocidiff;
pub mod probe;
pub mod sys;
pub mod tarsplit;
