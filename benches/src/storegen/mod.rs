//! A generator of large, realistic containers/storage overlay stores, for
//! benchmarks: what a busy podman 4.3.1 host (containers/storage v1.43)
//! accumulates, written straight to disk without running podman.
//!
//! The shape is "images x mapped copies": each image is a pulled two-layer
//! chain (base, top) with [`Shape::mapped_per_image`] ID-mapped copies of
//! its top layer (podman's templates for containers with a user namespace
//! mapping, listed in the image's `mapped-layers`) and
//! [`Shape::containers_per_image`] containers, every other one on a mapped
//! copy. The defaults make 200 layer records per image.
//!
//! Records are byte-for-byte what containers/storage writes (encoded by
//! [`layerstore::records`]); directories are what its overlay driver
//! leaves after the layers were made (and the containers ran and stopped):
//!
//! ```text
//! <root>/graph/                            0700
//!   storage.lock userns.lock               empty (never written)
//!   mounts/ tmp/                           0700, empty
//!   overlay/                               0700
//!     .has-mount-program                   "false"
//!     l/<LINK>                             -> ../<id>/diff, one per layer
//!     <id>/                                0700, owner: root of the layer's mapping
//!       link                               <LINK>: 26 chars A-Z2-7
//!       diff/                              0555, empty
//!       work/                              0700 (0555 for a mapped copy)
//!       merged/ empty/                     0700; image layers (empty/: base only)
//!       lower                              l/<LINK>:l/<LINK>...: the driver's parents,
//!                                          nearest first (a mapped copy's is its
//!                                          template, the top layer)
//!       diff1/                             0555, mapped copies: the chowned copy-up
//!       work/work/                         0000 root, container layers (they ran)
//!   overlay-layers/layers.json layers.lock
//!   overlay-images/images.json images.lock
//!   overlay-images/<id>/                   big data: config, manifest, signature
//!   overlay-containers/containers.json containers.lock
//!   overlay-containers/<id>/userdata/      0700, empty
//! <root>/run/overlay-layers/               0700, empty
//! ```
//!
//! Not written: tar-split files (nothing that lists, checks or plans reads
//! them), layer content, the runroot's probe cache and `mountpoints.json`
//! (containers/storage makes both when it opens the store).
//!
//! Everything is a function of the [`Shape`]: two runs write the same
//! bytes, and [`records`] returns the records [`generate`] writes.

mod disk;
mod plan;
#[cfg(test)]
mod tests;

use std::io;
use std::path::{Path, PathBuf};

use layerstore::records::{Container, Image, Layer};
use layerstore::Snapshot;

/// Layer records per image in [`Shape::default`] and [`Shape::from_layers`].
pub const LAYERS_PER_IMAGE: usize = 200;

/// How many images, mapped copies and containers a generated store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Images, each a base and a top layer.
    pub images: usize,
    /// Mapped copies of each image's top layer.
    pub mapped_per_image: usize,
    /// The first this many images have one more mapped copy (so that
    /// [`Shape::from_layers`] hits its total exactly).
    pub extra_mapped: usize,
    /// Containers per image, each with its own read-write layer: even ones
    /// on the top layer (host mapping), odd ones on a mapped copy (its
    /// mapping).
    pub containers_per_image: usize,
}

impl Default for Shape {
    /// One image of 200 layer records: base, top, 196 mapped copies and
    /// 2 containers.
    fn default() -> Shape {
        Shape {
            images: 1,
            mapped_per_image: LAYERS_PER_IMAGE - 4,
            extra_mapped: 0,
            containers_per_image: 2,
        }
    }
}

impl Shape {
    /// A store of exactly `layers` layer records (at least 2), about
    /// [`LAYERS_PER_IMAGE`] per image, 2 containers per image:
    /// `from_layers(1_000_000)` is 5,000 images of 196 mapped copies.
    pub fn from_layers(layers: usize) -> Shape {
        let layers = layers.max(2);
        let images = layers.div_ceil(LAYERS_PER_IMAGE);
        let per_image = layers / images;
        let containers_per_image = per_image.saturating_sub(2).min(2);
        Shape {
            images,
            mapped_per_image: per_image - 2 - containers_per_image,
            extra_mapped: layers % images,
            containers_per_image,
        }
    }

    /// Mapped copies of image `i`.
    pub fn mapped_copies(&self, i: usize) -> usize {
        self.mapped_per_image + usize::from(i < self.extra_mapped)
    }

    /// Layer records of image `i`: base, top, mapped copies, containers'.
    pub fn image_layers(&self, i: usize) -> usize {
        2 + self.mapped_copies(i) + self.containers_per_image
    }

    /// Layer records of all images before image `i`.
    pub fn layers_before(&self, i: usize) -> usize {
        i * (2 + self.mapped_per_image + self.containers_per_image) + i.min(self.extra_mapped)
    }

    /// Layer records in the store.
    pub fn layers(&self) -> usize {
        self.layers_before(self.images)
    }

    /// Containers in the store.
    pub fn containers(&self) -> usize {
        self.images * self.containers_per_image
    }
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// The graphroot (`<root>/graph`).
    pub graph: PathBuf,
    /// The runroot (`<root>/run`).
    pub run: PathBuf,
    /// Layer records.
    pub layers: usize,
    /// Image records.
    pub images: usize,
    /// Container records.
    pub containers: usize,
    /// The name of one image (`localhost/img0:latest`).
    pub image_name: String,
    /// The name of one container (`ctr0-0`, on image 0's top layer), if
    /// the store has containers.
    pub container_name: Option<String>,
    /// Size of `layers.json` in bytes.
    pub layers_json_bytes: u64,
    /// Whether the layer directories of mapped layers were given their
    /// mapping's owner (only as root; otherwise the caller owns them).
    pub chowned: bool,
}

/// Write a store of `shape` under `root` (`root/graph`, `root/run`), which
/// must not hold a `graph` or `run` yet. The directory tree is made by a
/// few threads while the record files are written.
pub fn generate(root: &Path, shape: &Shape) -> io::Result<Generated> {
    disk::write(root, shape)
}

/// The records [`generate`] writes for `shape`, in file order, without
/// touching the disk.
pub fn records(shape: &Shape) -> (Vec<Layer>, Vec<Image>, Vec<Container>) {
    let mut layers = Vec::with_capacity(shape.layers());
    let mut images = Vec::with_capacity(shape.images);
    let mut containers = Vec::with_capacity(shape.containers());
    for i in 0..shape.images {
        let plan = plan::image(shape, i);
        layers.extend(plan.layers.into_iter().map(|l| l.record));
        images.push(plan.image);
        containers.extend(plan.containers);
    }
    (layers, images, containers)
}

/// A [`Snapshot`] of the records of `shape` (no mounts, no defects), as
/// [`layerstore::Store::snapshot`] would return for a generated store.
pub fn snapshot(shape: &Shape) -> Snapshot {
    let (layers, images, containers) = records(shape);
    Snapshot {
        layers: layers.into(),
        images: images.into(),
        containers: containers.into(),
        ..Snapshot::default()
    }
}
