//! Changing the id mapping of a layer's content: c/storage v1.43 overlay's
//! `UpdateLayerIDMap`, which makes an ID-mapped template copy (spec §4.3).
//!
//! ```text
//! <home>/<id>/  (a driver-level child of the template: lower = l/<template>:...)
//!   merged/     mounted read-write without idmapping (+ overlayfs `volatile`,
//!               then one syncfs), chowned by maps (overlayfs copies every
//!               entry up into diff/), unmounted (removed)
//!   diff  -> diff1, diff1 -> diff2, ...   older uppers shift up
//!   diff/       recreated empty: old diff's mode (0555), owner = new root pair
//!   work/       recreated: 0555, owner = new root pair
//! ```

use layerstore::idmap::{root_pair, IdMappings};
use layerstore::LayerId;

use super::create::mkdir_owned;
use super::{LayoutError, MountRequest, OverlayDriver};
use crate::chown::{chown_by_maps_fd, ChownMaps, ChownReport};

/// c/storage's `defaultPerms` (also the mode of the recreated `work`).
const DEFAULT_PERMS: u32 = 0o555;

impl OverlayDriver {
    /// Re-own layer `id` from `to_container` (the template's maps) to
    /// `to_host` (the new maps), as c/storage v1.43's overlay
    /// `UpdateLayerIDMap`: mount it (read-write, the store's mount options,
    /// no idmapping), chown-by-maps over `merged` (see [`crate::chown`]),
    /// unmount, rotate `diff` to `diff1` (an existing `diffN` moves to
    /// `diffN+1` first), and recreate an empty `diff` (old `diff`'s mode)
    /// and `work` (0555) owned by the root pair of `to_host`.
    ///
    /// The caller created `id` as a child of the template
    /// ([`create_layer`](Self::create_layer)) and holds the store's layer
    /// lock exclusively. On a failed mount or chown nothing stays mounted;
    /// entries already copied up stay in `diff`.
    pub fn update_layer_id_map(
        &self,
        id: &LayerId,
        to_container: &IdMappings,
        to_host: &IdMappings,
        mount_label: Option<&str>,
    ) -> Result<ChownReport, LayoutError> {
        self.open_layer(id)?;
        let root =
            root_pair(&to_host.uids, &to_host.gids).map_err(|source| LayoutError::RootPair {
                id: id.to_string(),
                source,
            })?;
        let merged = self.mount_for_chown(id, mount_label)?;
        let maps = ChownMaps::new(to_container.clone(), to_host.clone());
        // The mount, reached through the layer's directory (not by path),
        // opened after mounting: the first mount of a store bind-mounts the
        // home onto itself, which hides what was opened before.
        let layer = self.open_layer(id)?;
        let chowned = layer
            .open_dir("merged")
            .map_err(|e| crate::chown::ChownError::io("open", merged.clone(), e))
            .and_then(|m| {
                let workers = std::thread::available_parallelism().map_or(2, |n| n.get() * 2);
                chown_by_maps_fd(m.into_fd(), &merged, &maps, workers)
            });
        let unmounted = self.unmount(id);
        let report = match (chowned, unmounted) {
            (Ok(report), Ok(())) => report,
            (Err(source), unmounted) => {
                if let Err(e) = unmounted {
                    tracing::error!(layer = %id, error = %e, "unmounting after a failed chown");
                }
                return Err(LayoutError::Chown {
                    id: id.to_string(),
                    source,
                });
            }
            (Ok(_), Err(e)) => return Err(e),
        };
        // The volatile mount skipped overlayfs' fsync of every copied-up
        // file; one syncfs makes the whole copy durable before it is used.
        let diff = layer
            .open_dir("diff")
            .map_err(|e| LayoutError::io(id.as_str(), "open", layer.display("diff"), e))?;
        rustix::fs::syncfs(diff.fd())
            .map_err(|e| LayoutError::io(id.as_str(), "sync", diff.path(), e))?;
        let perms = diff.stat_self().map_or(DEFAULT_PERMS, |m| m.mode & 0o7777);
        drop(diff);
        tracing::debug!(
            layer = %id,
            entries = report.entries,
            changed = report.changed,
            "chowned layer by maps"
        );

        let numbered = |n: usize| {
            if n == 0 {
                "diff".to_owned()
            } else {
                format!("diff{n}")
            }
        };
        let mut free = 0;
        while layer.stat(numbered(free)).ok().flatten().is_some() {
            free += 1;
        }
        for n in (1..=free).rev() {
            layer.rename(numbered(n - 1), numbered(n)).map_err(|e| {
                LayoutError::io(id.as_str(), "rotate", layer.display(numbered(n - 1)), e)
            })?;
        }
        layer
            .remove_tree("work")
            .map_err(|e| LayoutError::io(id.as_str(), "remove", layer.display("work"), e))?;
        mkdir_owned(id.as_str(), &layer, "work", DEFAULT_PERMS, root)?;
        mkdir_owned(id.as_str(), &layer, "diff", perms, root)?;
        Ok(report)
    }

    /// Mount `id` read-write for the chown with the store's options plus
    /// overlayfs' `volatile` (Linux >= 5.10): copy-up then skips its
    /// `fsync` of every copied-up file, which is most of c/storage's time;
    /// the caller syncs the filesystem once instead. The `work/incompat/volatile`
    /// marker that `volatile` leaves goes with `work`, which is recreated.
    /// Without `volatile` support, a plain mount.
    fn mount_for_chown(
        &self,
        id: &LayerId,
        mount_label: Option<&str>,
    ) -> Result<std::path::PathBuf, LayoutError> {
        let mut options = self.default_mount_options().to_vec();
        options.push("volatile".to_owned());
        let mut request = MountRequest {
            read_only: false,
            options,
            mount_label: mount_label.filter(|l| !l.is_empty()).map(str::to_owned),
            // Never idmapped: the chown walks the files as they are on disk.
            ..MountRequest::default()
        };
        match self.mount(id, &request) {
            Err(LayoutError::Mount { source, .. })
                if source.raw_os_error() == Some(libc::EINVAL) =>
            {
                tracing::debug!(
                    layer = %id,
                    "overlayfs refused volatile; mounting without it"
                );
                request.options.pop();
                self.mount(id, &request)
            }
            other => other,
        }
    }
}
