//! The store's records against its directories, read-only.
//!
//! ```text
//! <graphroot>/overlay-layers/layers.json        the layer records
//! <graphroot>/overlay-layers/<id>.tar-split.gz  for every layer with a diff-digest
//! <graphroot>/overlay/<id>/                     one per record, none without one
//! <graphroot>/overlay/<id>/link                 "<name>": l/<name> must exist
//! <graphroot>/overlay/l/<name>                  -> ../<id>/diff, which must exist
//! ```
//!
//! Checks: `store.records` (every record has its directory, every directory
//! a record, no `incomplete` layer), `store.links` (the `l/` symlinks and
//! `link` files), `store.tar-split`.

use std::collections::BTreeSet;

use layerstore::snapshot::Snapshot;
use layerstore::{LayerId, Store};
use serde_json::json;

use super::{Area, Check, Status};
use crate::layout::OverlayDriver;

/// What is inconsistent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    /// Layer records without a directory.
    pub records_without_dir: Vec<String>,
    /// Layer directories without a record.
    pub dirs_without_record: Vec<String>,
    /// Layers flagged `incomplete`.
    pub incomplete: Vec<String>,
    /// `l/<name>` symlinks whose target does not exist.
    pub dangling_links: Vec<String>,
    /// Layers whose `link` file names a missing `l/<name>` (or have no `link` file).
    pub missing_links: Vec<String>,
    /// Layers with a diff-digest but no tar-split file.
    pub missing_tar_split: Vec<String>,
}

/// Compare the records with the directories. Reads only, never through a
/// symlink.
pub fn find(store: &Store, driver: &OverlayDriver, snap: &Snapshot) -> Findings {
    let records: BTreeSet<&str> = snap.layers.iter().map(|l| l.id.as_str()).collect();
    let dirs: BTreeSet<String> = driver
        .list_layers()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut f = Findings::default();
    for layer in snap.layers.iter() {
        let Ok(id) = LayerId::parse(&layer.id) else {
            continue;
        };
        if !dirs.contains(&layer.id) {
            f.records_without_dir.push(layer.id.clone());
            continue;
        }
        if layer.is_incomplete() {
            f.incomplete.push(layer.id.clone());
        }
        if driver.link_needs_repair(&id) {
            f.missing_links.push(layer.id.clone());
        }
        if !layer.diff_digest.is_empty()
            && !layer.is_incomplete()
            && !store.has_tar_split(&id).unwrap_or(true)
        {
            f.missing_tar_split.push(layer.id.clone());
        }
    }
    f.dirs_without_record = dirs
        .iter()
        .filter(|d| !records.contains(d.as_str()))
        .cloned()
        .collect();
    let mut dangling: Vec<String> = driver
        .links()
        .unwrap_or_default()
        .into_iter()
        .filter(|l| !l.layer.as_ref().is_some_and(|t| dirs.contains(t)))
        .map(|l| l.name)
        .collect();
    dangling.sort();
    f.dangling_links = dangling;
    f
}

/// Whether the records can be trusted at all: every defect, or ok.
fn trust(snap: &Snapshot) -> Check {
    if snap.defects.is_empty() {
        return Check::new(
            "store.trust",
            Area::Store,
            Status::Ok,
            "every record is readable, has a valid id, and names only records that exist",
            "layerstore changes only stores whose records it can trust",
        );
    }
    let text: Vec<String> = snap.defects.iter().map(ToString::to_string).collect();
    Check::new(
        "store.trust",
        Area::Store,
        Status::Fail,
        format!("{} defect(s): {}", text.len(), text.join("; ")),
        "a store whose records are broken or contradict each other is refused by every layerstore command that changes it (gc included); podman may misbehave on it too",
    )
    .fix("restore the named files from a backup, or repair the named records by hand; then run layerstore doctor again")
    .facts(json!({ "defects": snap.defects }))
}

/// Every store check.
pub fn checks(store: &Store, driver: &OverlayDriver, snap: &Snapshot) -> Vec<Check> {
    let f = find(store, driver, snap);
    let short = |ids: &[String]| {
        ids.iter()
            .map(|i| i.chars().take(12).collect::<String>())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let records = if !f.records_without_dir.is_empty() {
        Check::new(
            "store.records",
            Area::Store,
            Status::Fail,
            format!(
                "{} layer record(s) without a directory: {}",
                f.records_without_dir.len(),
                short(&f.records_without_dir)
            ),
            "images and containers on these layers cannot be mounted (podman fails the same way)",
        )
        .fix("remove the images/containers that use them (podman rmi -f / rm -f), then re-pull or re-import")
    } else if !f.dirs_without_record.is_empty() || !f.incomplete.is_empty() {
        let mut parts = Vec::new();
        if !f.dirs_without_record.is_empty() {
            parts.push(format!(
                "{} directory(ies) without a record: {}",
                f.dirs_without_record.len(),
                short(&f.dirs_without_record)
            ));
        }
        if !f.incomplete.is_empty() {
            parts.push(format!("{} incomplete layer(s): {}", f.incomplete.len(), short(&f.incomplete)));
        }
        Check::new(
            "store.records",
            Area::Store,
            Status::Warn,
            parts.join("; "),
            "leftovers of interrupted operations: they hold inodes and space that nothing uses",
        )
        .fix("layerstore gc (or podman's next start removes incomplete layers); orphan directories are safe to remove once no process uses the store")
    } else {
        Check::new(
            "store.records",
            Area::Store,
            Status::Ok,
            format!("{} layer records, each with its directory; no stray directories", snap.layers.len()),
            "records and directories agree",
        )
    }
    .facts(json!({
        "layers": snap.layers.len(),
        "records_without_dir": f.records_without_dir,
        "dirs_without_record": f.dirs_without_record,
        "incomplete": f.incomplete,
    }));
    let links = if f.dangling_links.is_empty() && f.missing_links.is_empty() {
        Check::new(
            "store.links",
            Area::Store,
            Status::Ok,
            "every l/ link resolves and every layer's link exists",
            "overlay mounts name lower layers through l/",
        )
    } else {
        Check::new(
            "store.links",
            Area::Store,
            Status::Warn,
            format!(
                "{} dangling l/ link(s) {}; {} layer(s) without their l/ link {}",
                f.dangling_links.len(),
                f.dangling_links.join(", "),
                f.missing_links.len(),
                short(&f.missing_links)
            ),
            "a layer whose l/ link is missing cannot serve as a lower layer until it is recreated; dangling links are leftovers",
        )
        .fix("mounting the layer with podman or layerstore recreates a missing link; dangling l/ entries can be removed")
    }
    .facts(json!({ "dangling": f.dangling_links, "missing": f.missing_links }));
    let tar_split = if f.missing_tar_split.is_empty() {
        Check::new(
            "store.tar-split",
            Area::Store,
            Status::Ok,
            "every layer with a diff-digest has its tar-split",
            "podman push/save reproduce layers byte for byte from it",
        )
    } else {
        Check::new(
            "store.tar-split",
            Area::Store,
            Status::Warn,
            format!(
                "{} layer(s) with a diff-digest but no tar-split: {}",
                f.missing_tar_split.len(),
                short(&f.missing_tar_split)
            ),
            "podman push/save of images on these layers fails or produces different digests",
        )
        .fix("re-import the images that use them")
    }
    .facts(json!({ "missing": f.missing_tar_split }));
    vec![trust(snap), records, links, tar_split]
}
