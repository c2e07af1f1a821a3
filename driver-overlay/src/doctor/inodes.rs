//! Inode headroom: an image store runs out of inodes while `df -h` still
//! shows free space, and every template copy costs one inode per entry.
//!
//! ```text
//! statvfs(<graphroot>)                      f_files, f_ffree
//! <graphroot>/overlay/<template>/diff, diff1..N    entries a template holds
//! <graphroot>/overlay/<top layer>/diff, diff1..N   entries a new template would copy
//! ```
//!
//! Checks: `inodes.free` (warn under [`WARN_FREE_PERCENT`]% free, fail under
//! [`FAIL_FREE_PERCENT`]% or when not one more template of the largest image
//! fits), `inodes.templates` (the mapped templates and what they hold) and
//! `inodes.headroom` (free inodes / the largest image top layer's entries:
//! how many more distinct mappings fit if each costs a template).

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use layerstore::snapshot::Snapshot;
use layerstore::Store;
use serde_json::json;

use super::idmap::{MappingPath, RunPath};
use super::{Area, Check, Status};
use crate::layout::OverlayDriver;

/// Free-inode share (percent) under which `inodes.free` warns.
pub const WARN_FREE_PERCENT: u64 = 15;
/// Free-inode share (percent) under which `inodes.free` fails.
pub const FAIL_FREE_PERCENT: u64 = 5;
/// Fewer further templates than this make `inodes.headroom` warn when new
/// mappings take the template path.
pub const WARN_TEMPLATES_LEFT: u64 = 20;

/// Inode counts of a filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InodeUsage {
    /// Total inodes (0: the filesystem allocates them dynamically, e.g. btrfs).
    pub total: u64,
    /// Free inodes.
    pub free: u64,
}

impl InodeUsage {
    /// `statvfs` of `path`.
    pub fn of(path: &Path) -> io::Result<InodeUsage> {
        let st = rustix::fs::statvfs(path)?;
        Ok(InodeUsage {
            total: st.f_files,
            free: st.f_ffree,
        })
    }

    /// The status at the thresholds, given the entries of the largest image
    /// top layer (a template of it must still fit).
    pub fn status(&self, largest_image: u64) -> Status {
        if self.total == 0 {
            Status::Ok
        } else if self.free * 100 < self.total * FAIL_FREE_PERCENT || self.free < largest_image {
            Status::Fail
        } else if self.free * 100 < self.total * WARN_FREE_PERCENT {
            Status::Warn
        } else {
            Status::Ok
        }
    }
}

/// Count the distinct inodes below `dir` (the entries of a layer's `diff`;
/// `dir` itself included, hard links counted once). A missing `dir` holds 0.
pub fn count_entries(dir: &Path, seen: &mut HashSet<(u64, u64)>) -> io::Result<u64> {
    let meta = match fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut count = u64::from(seen.insert((meta.dev(), meta.ino())));
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d)? {
            let entry = entry?;
            let m = entry.metadata()?;
            if seen.insert((m.dev(), m.ino())) {
                count += 1;
            }
            if m.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(count)
}

/// The inodes of a layer's own content: `diff` and `diff1..N`, counted
/// through the driver's home without following symlinks or leaving it. An
/// id that is not valid holds nothing that is counted.
pub fn layer_entries(driver: &OverlayDriver, id: &str) -> io::Result<u64> {
    let Ok(id) = layerstore::LayerId::parse(id) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid layer id {id:?}"),
        ));
    };
    let home = match driver.home_dir() {
        Ok(Some(home)) => home,
        Ok(None) => return Ok(0),
        Err(e) => return Err(io::Error::other(e.to_string())),
    };
    let mut rels = vec![Path::new(id.as_str()).join("diff")];
    for n in 1.. {
        let rel = Path::new(id.as_str()).join(format!("diff{n}"));
        if !home.stat(&rel)?.is_some_and(|m| m.is_dir()) {
            break;
        }
        rels.push(rel);
    }
    let rels: Vec<&Path> = rels.iter().map(|p| p.as_path()).collect();
    Ok(layerstore::gc::usage_in(&home, &rels).inodes)
}

/// Every inode check.
pub fn checks(
    store: &Store,
    driver: &OverlayDriver,
    snap: &Snapshot,
    run_path: &RunPath,
) -> Vec<Check> {
    let root = &store.options().graph_root;
    let mut errors = Vec::new();
    let mut count = |id: &str| match layer_entries(driver, id) {
        Ok(n) => n,
        Err(e) => {
            errors.push(format!("{id}: {e}"));
            0
        }
    };
    // Templates: layers some image lists in mapped-layers.
    let mut templates: BTreeMap<String, (u64, Vec<String>)> = BTreeMap::new();
    for image in snap.images.iter() {
        for id in &image.mapped_layers {
            if snap.layers.iter().any(|l| &l.id == id) {
                let name = image
                    .names
                    .first()
                    .cloned()
                    .unwrap_or_else(|| short(&image.id));
                templates.entry(id.clone()).or_default().1.push(name);
            }
        }
    }
    for (id, entry) in templates.iter_mut() {
        entry.0 = count(id);
    }
    let mut largest: Option<(String, u64)> = None;
    for image in snap.images.iter() {
        if image.top_layer.is_empty() {
            continue;
        }
        let n = count(&image.top_layer);
        if largest.as_ref().is_none_or(|(_, m)| n > *m) {
            let name = image
                .names
                .first()
                .cloned()
                .unwrap_or_else(|| short(&image.id));
            largest = Some((name, n));
        }
    }
    // A store not created yet: the filesystem it will be created on.
    let usage = InodeUsage::of(&super::existing_ancestor(root));
    vec![
        free_check(root, &usage, largest.as_ref().map_or(0, |l| l.1)),
        templates_check(&templates, &errors),
        headroom_check(&usage, largest.as_ref(), run_path),
    ]
}

fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

fn free_check(root: &Path, usage: &io::Result<InodeUsage>, largest: u64) -> Check {
    let usage = match usage {
        Ok(u) => u,
        Err(e) => {
            return Check::new(
                "inodes.free",
                Area::Inodes,
                Status::Warn,
                format!("cannot statvfs {}: {e}", root.display()),
                "inode headroom cannot be checked",
            )
        }
    };
    let status = usage.status(largest);
    let facts = json!({ "graphroot": root, "total": usage.total, "free": usage.free });
    if usage.total == 0 {
        return Check::new(
            "inodes.free",
            Area::Inodes,
            Status::Ok,
            format!(
                "{}: the filesystem allocates inodes dynamically",
                root.display()
            ),
            "no fixed inode limit to run out of",
        )
        .facts(facts);
    }
    let percent = usage.free * 100 / usage.total;
    let seen = format!(
        "{}: {} of {} inodes free ({percent}%)",
        root.display(),
        usage.free,
        usage.total
    );
    let check = Check::new(
        "inodes.free",
        Area::Inodes,
        status,
        seen,
        match status {
            Status::Ok => format!("more than {WARN_FREE_PERCENT}% free"),
            _ => format!(
                "when inodes run out, imports, container creation and writes fail with \"No space left on device\" although `df -h` shows free space (warn under {WARN_FREE_PERCENT}%, fail under {FAIL_FREE_PERCENT}% or when a template of the largest image, {largest} entries, no longer fits)"
            ),
        },
    )
    .facts(facts);
    if status == Status::Ok {
        check
    } else {
        check.fix("see `df -i`; remove unused images and their templates (podman rmi, layerstore rmi), `layerstore gc`; avoid templates with idmapped mounts or --nocache; a filesystem made with more inodes (mkfs.ext4 -i) or one that allocates them dynamically (xfs, btrfs)")
    }
}

fn templates_check(templates: &BTreeMap<String, (u64, Vec<String>)>, errors: &[String]) -> Check {
    let total: u64 = templates.values().map(|t| t.0).sum();
    let facts = json!({
        "count": templates.len(),
        "inodes": total,
        "templates": templates.iter().map(|(id, (n, images))| json!({
            "layer": id, "inodes": n, "images": images,
        })).collect::<Vec<_>>(),
        "errors": errors,
    });
    if !errors.is_empty() {
        return Check::new(
            "inodes.templates",
            Area::Inodes,
            Status::Warn,
            format!("cannot count some layers: {}", errors.join("; ")),
            "the inode figures below are low",
        )
        .facts(facts);
    }
    let seen = if templates.is_empty() {
        "no mapped templates".to_owned()
    } else {
        let list = templates
            .iter()
            .map(|(id, (n, images))| format!("{} ({n}, {})", short(id), images.join(",")))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "{} mapped template(s) hold {total} inodes: {list}",
            templates.len()
        )
    };
    Check::new(
        "inodes.templates",
        Area::Inodes,
        Status::Ok,
        seen,
        "a template (an ID-mapped copy of an image's top layer, in the image's mapped-layers) stays until its image is removed; podman reuses it for the same mapping",
    )
    .facts(facts)
}

fn headroom_check(
    usage: &io::Result<InodeUsage>,
    largest: Option<&(String, u64)>,
    run_path: &RunPath,
) -> Check {
    let (Ok(usage), Some((image, entries))) = (usage, largest) else {
        return Check::new(
            "inodes.headroom",
            Area::Inodes,
            Status::Ok,
            "no images",
            "nothing to copy",
        );
    };
    let fits = if *entries == 0 || usage.total == 0 {
        None
    } else {
        Some(usage.free / entries)
    };
    let facts = json!({
        "largest_image": image,
        "largest_top_layer_entries": entries,
        "templates_that_fit": fits,
        "new_mapping": run_path.new_mapping,
    });
    let fits_text = fits.map_or("unlimited".to_owned(), |n| n.to_string());
    let seen = format!(
        "{fits_text} more distinct mappings fit as templates of the largest image ({image}, {entries} top-layer entries); a new mapping here takes the {} path",
        run_path.new_mapping.as_str()
    );
    let low = fits.is_some_and(|n| n < WARN_TEMPLATES_LEFT);
    if low && run_path.new_mapping == MappingPath::Template {
        Check::new(
            "inodes.headroom",
            Area::Inodes,
            Status::Warn,
            seen,
            format!("fewer than {WARN_TEMPLATES_LEFT} new mappings fit before inodes run out"),
        )
        .fix("make idmapped mounts work (see idmap.*) or run with --nocache; remove unused images")
        .facts(facts)
    } else {
        Check::new(
            "inodes.headroom",
            Area::Inodes,
            Status::Ok,
            seen,
            "with idmapped mounts a new mapping costs no inodes; the figure matters for podman and the template path",
        )
        .facts(facts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_thresholds() {
        let u = |total, free| InodeUsage { total, free };
        assert_eq!(u(1000, 500).status(10), Status::Ok);
        assert_eq!(u(1000, 149).status(10), Status::Warn);
        assert_eq!(u(1000, 49).status(10), Status::Fail);
        assert_eq!(u(1000, 500).status(600), Status::Fail);
        assert_eq!(u(0, 0).status(600), Status::Ok);
    }

    #[test]
    fn counts_entries_once_per_inode() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("diff");
        fs::create_dir_all(d.join("etc/sub")).unwrap();
        fs::write(d.join("etc/a"), "a").unwrap();
        fs::hard_link(d.join("etc/a"), d.join("etc/sub/b")).unwrap();
        std::os::unix::fs::symlink("a", d.join("etc/l")).unwrap();
        let mut seen = HashSet::new();
        // diff, etc, etc/sub, etc/a (= etc/sub/b), etc/l
        assert_eq!(count_entries(&d, &mut seen).unwrap(), 5);
        assert_eq!(
            count_entries(&tmp.path().join("none"), &mut seen).unwrap(),
            0
        );
    }
}
