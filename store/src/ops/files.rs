//! The per-record files and directories of the store's metadata tables,
//! reached only through validated ids and confined directories:
//!
//! ```text
//! <graphroot>/overlay-layers/<LayerId>.tar-split.gz
//! <graphroot>/overlay-layers/<LayerId>/           layer big data
//! <graphroot>/overlay-images/<ImageId>/<key>      image big data
//! <graphroot>/overlay-containers/<ContainerId>/   container data
//! <runroot>/overlay-containers/<ContainerId>/     container run data
//! ```
//!
//! Removals never follow a symlink and never cross a mount
//! ([`Dir::remove_tree`]).

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, OFlags};

use crate::confined::Dir;
use crate::error::StoreError;
use crate::id::{ContainerId, ImageId, LayerId};
use crate::store::Root;
use crate::Store;

/// `overlay-layers`, the layers' metadata directory under the graphroot.
pub(crate) const LAYERS_DIR: &str = "overlay-layers";
/// `overlay-images`.
pub(crate) const IMAGES_DIR: &str = "overlay-images";
/// `overlay-containers` (under the graphroot and the runroot).
pub(crate) const CONTAINERS_DIR: &str = "overlay-containers";

/// The file name of a layer's tar-split.
pub fn tar_split_name(id: &LayerId) -> String {
    format!("{id}.tar-split.gz")
}

/// A tar-split being written: a temp file beside its final name, renamed
/// over it by [`TarSplitTemp::commit`], removed when dropped uncommitted.
#[derive(Debug)]
pub struct TarSplitTemp {
    dir: Dir,
    tmp: OsString,
    name: String,
    committed: bool,
}

impl TarSplitTemp {
    /// The temp file's path, for messages.
    pub fn path(&self) -> PathBuf {
        self.dir.display(&self.tmp)
    }

    /// Rename the (written and synced) temp file to its final name and
    /// sync the directory.
    pub fn commit(mut self) -> Result<(), StoreError> {
        let shown = self.dir.display(&self.name);
        rustix::fs::renameat(self.dir.fd(), &self.tmp, self.dir.fd(), self.name.as_str())
            .map_err(|e| StoreError::io("renaming to", &shown)(e.into()))?;
        self.committed = true;
        rustix::fs::fsync(self.dir.fd()).map_err(|e| StoreError::io("syncing", &shown)(e.into()))
    }
}

impl Drop for TarSplitTemp {
    fn drop(&mut self) {
        if !self.committed {
            let _ = rustix::fs::unlinkat(self.dir.fd(), &self.tmp, AtFlags::empty());
        }
    }
}

impl Store {
    fn meta_path(&self, root: Root, dir: &str, name: &str) -> PathBuf {
        let base = match root {
            Root::Graph => &self.roots.graph,
            Root::Run => &self.roots.run,
        };
        base.join(dir).join(name)
    }

    /// A metadata directory (`overlay-layers`, ...), `None` when it (or its
    /// root) does not exist.
    pub(crate) fn meta_dir(&self, root: Root, dir: &str) -> Result<Option<Dir>, StoreError> {
        let Some(base) = self.roots.open(root)? else {
            return Ok(None);
        };
        let shown = base.display(dir);
        base.open_dir_opt(dir)
            .map_err(StoreError::io("opening", shown))
    }

    /// A metadata directory, created (0700) when missing.
    pub(crate) fn meta_dir_created(&self, root: Root, dir: &str) -> Result<Dir, StoreError> {
        let base = self.roots.open_or_create(root)?;
        let shown = base.display(dir);
        base.create_dir_all(dir, 0o700)
            .map_err(StoreError::io("creating", shown))
    }

    /// Where a layer's tar-split metadata lives (for messages; reach it
    /// through [`Store::read_tar_split`] and [`Store::create_tar_split`]).
    pub fn layer_tar_split_path(&self, id: &LayerId) -> PathBuf {
        self.meta_path(Root::Graph, LAYERS_DIR, &tar_split_name(id))
    }

    /// Where a layer's big-data items live (for messages).
    pub fn layer_data_dir(&self, id: &LayerId) -> PathBuf {
        self.meta_path(Root::Graph, LAYERS_DIR, id.as_str())
    }

    /// Where an image's big data lives (for messages).
    pub fn image_dir(&self, id: &ImageId) -> PathBuf {
        self.meta_path(Root::Graph, IMAGES_DIR, id.as_str())
    }

    /// A container's data directory under the graphroot (for messages).
    pub fn container_dir(&self, id: &ContainerId) -> PathBuf {
        self.meta_path(Root::Graph, CONTAINERS_DIR, id.as_str())
    }

    /// A container's run directory under the runroot (for messages).
    pub fn container_run_dir(&self, id: &ContainerId) -> PathBuf {
        self.meta_path(Root::Run, CONTAINERS_DIR, id.as_str())
    }

    /// The content of layer `id`'s tar-split, `None` when it has none.
    pub fn read_tar_split(&self, id: &LayerId) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(dir) = self.meta_dir(Root::Graph, LAYERS_DIR)? else {
            return Ok(None);
        };
        let name = tar_split_name(id);
        dir.read_opt(&name)
            .map_err(StoreError::io("reading", dir.display(&name)))
    }

    /// Whether layer `id` has a tar-split file.
    pub fn has_tar_split(&self, id: &LayerId) -> Result<bool, StoreError> {
        let Some(dir) = self.meta_dir(Root::Graph, LAYERS_DIR)? else {
            return Ok(false);
        };
        let name = tar_split_name(id);
        Ok(dir
            .stat(&name)
            .map_err(StoreError::io("reading", dir.display(&name)))?
            .is_some())
    }

    /// Start writing layer `id`'s tar-split: a new temp file
    /// (`.tmp-<id>.tar-split.gz`, mode 0600) to write and sync, then
    /// [`TarSplitTemp::commit`].
    pub fn create_tar_split(&self, id: &LayerId) -> Result<(File, TarSplitTemp), StoreError> {
        let dir = self.meta_dir_created(Root::Graph, LAYERS_DIR)?;
        let name = tar_split_name(id);
        let tmp = OsString::from(format!(".tmp-{name}"));
        let shown = dir.display(&tmp);
        // A leftover of an earlier, killed attempt.
        let _ = rustix::fs::unlinkat(dir.fd(), &tmp, AtFlags::empty());
        let fd = dir
            .open_file(
                Path::new(&tmp),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
                0o600,
            )
            .map_err(StoreError::io("creating", &shown))?;
        Ok((
            File::from(fd),
            TarSplitTemp {
                dir,
                tmp,
                name,
                committed: false,
            },
        ))
    }

    /// Copy layer `from`'s tar-split to layer `to` (a mapped template's
    /// copy); nothing when `from` has none.
    pub(crate) fn copy_tar_split(&self, from: &LayerId, to: &LayerId) -> Result<(), StoreError> {
        let Some(data) = self.read_tar_split(from)? else {
            return Ok(());
        };
        let dir = self.meta_dir_created(Root::Graph, LAYERS_DIR)?;
        let name = tar_split_name(to);
        dir.write_atomic(&name, &data, true)
            .map_err(StoreError::io("writing", dir.display(&name)))
    }

    /// Remove layer `id`'s tar-split and big-data directory (missing ones
    /// are fine).
    pub(crate) fn remove_layer_files(&self, id: &LayerId) -> Result<(), StoreError> {
        let Some(dir) = self.meta_dir(Root::Graph, LAYERS_DIR)? else {
            return Ok(());
        };
        for name in [tar_split_name(id), id.as_str().to_owned()] {
            dir.remove_tree(&name)
                .map_err(StoreError::io("removing", dir.display(&name)))?;
        }
        Ok(())
    }

    /// Remove image `id`'s big-data directory.
    pub(crate) fn remove_image_dir(&self, id: &ImageId) -> Result<(), StoreError> {
        self.remove_meta_tree(Root::Graph, IMAGES_DIR, id.as_str())
    }

    /// Remove container `id`'s directories under the graphroot and the
    /// runroot.
    pub(crate) fn remove_container_dirs(&self, id: &ContainerId) -> Result<(), StoreError> {
        self.remove_meta_tree(Root::Graph, CONTAINERS_DIR, id.as_str())?;
        self.remove_meta_tree(Root::Run, CONTAINERS_DIR, id.as_str())
    }

    /// Remove `<root>/<dir>/<name>` (a tree or a file).
    pub(crate) fn remove_meta_tree(
        &self,
        root: Root,
        dir: &str,
        name: &str,
    ) -> Result<(), StoreError> {
        let Some(d) = self.meta_dir(root, dir)? else {
            return Ok(());
        };
        d.remove_tree(name)
            .map_err(StoreError::io("removing", d.display(name)))?;
        Ok(())
    }

    /// One big-data item of image `id`, `None` when it is not there.
    pub fn read_image_big_data(
        &self,
        id: &ImageId,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(dir) = self.meta_dir(Root::Graph, IMAGES_DIR)? else {
            return Ok(None);
        };
        let rel = Path::new(id.as_str()).join(super::big_data_file_name(key));
        dir.read_opt(&rel)
            .map_err(StoreError::io("reading", dir.display(&rel)))
    }

    /// Write image `id`'s big-data items (atomically, 0600) into its
    /// directory, created when missing.
    pub(crate) fn write_image_big_data(
        &self,
        id: &ImageId,
        items: &[(String, &[u8])],
    ) -> Result<(), StoreError> {
        let images = self.meta_dir_created(Root::Graph, IMAGES_DIR)?;
        let dir = images
            .create_dir_all(id.as_str(), 0o700)
            .map_err(StoreError::io("creating", images.display(id.as_str())))?;
        for (name, data) in items {
            dir.write_atomic(name, data, true)
                .map_err(StoreError::io("writing", dir.display(name)))?;
        }
        Ok(())
    }
}
