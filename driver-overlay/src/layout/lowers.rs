//! Lower chains: which layers lie under a layer, and the directories a
//! mount stacks, in overlayfs order (uppermost first).
//!
//! ```text
//! <id>/lower-layers   "<parent>:<grandparent>:..."        (c/storage >= 1.63; preferred)
//! <id>/lower          "l/<parent link>:l/<gp link>:..."   (every version; resolved via l/)
//! <id>/diff1..diffN   own older uppers, stacked right under <id>/diff
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::links::is_valid_link_name;
use super::{
    validate_id, LayoutError, OverlayDriver, LINK_DIR, LOWER_FILE, LOWER_LAYERS_FILE,
    MAX_LOWER_LAYERS,
};

impl OverlayDriver {
    /// The ids of the layers under `id`, nearest first: from `lower-layers`,
    /// else by resolving each `l/<link>` of `lower` (readlink gives
    /// `../<lower id>/diff`; a lost symlink is looked up through the layers'
    /// `link` files), else none.
    pub fn lower_layer_ids(&self, id: &str) -> Result<Vec<String>, LayoutError> {
        let dir = self.existing_layer_dir(id)?;
        let path = dir.join(LOWER_LAYERS_FILE);
        match read_optional(id, &path)? {
            Some(content) => content
                .split(':')
                .map(|entry| {
                    validate_id(entry)
                        .map(|()| entry.to_owned())
                        .map_err(|_| bad_entry(id, &path, entry))
                })
                .collect(),
            None => self.ids_from_lower_file(id, &dir.join(LOWER_FILE)),
        }
    }

    /// The lower directories of a mount of `id`, uppermost first: its own
    /// `diff1..diffN`, then for each lower layer `L`: `L/diff`,
    /// `L/diff1..`; `<id>/empty` when there is nothing else. Paths are
    /// absolute (`<home>/<L>/diff`, as upstream c/storage mounts them).
    ///
    /// Refuses more than [`MAX_LOWER_LAYERS`] lower layers, and a lower
    /// layer whose `diff` is missing.
    pub fn lower_dirs(&self, id: &str) -> Result<Vec<PathBuf>, LayoutError> {
        let ids = self.lower_layer_ids(id)?;
        if ids.len() > MAX_LOWER_LAYERS {
            return Err(LayoutError::ChainTooDeep {
                id: id.to_owned(),
                depth: ids.len(),
                max: MAX_LOWER_LAYERS,
            });
        }
        let dir = self.layer_dir(id);
        let mut dirs = numbered_diffs(&dir);
        for lower in &ids {
            let lower_dir = self.layer_dir(lower);
            let diff = lower_dir.join("diff");
            if !diff.is_dir() {
                return Err(LayoutError::LowerNotFound {
                    id: id.to_owned(),
                    lower: lower.clone(),
                    path: diff,
                });
            }
            dirs.push(diff);
            dirs.extend(numbered_diffs(&lower_dir));
        }
        if dirs.is_empty() {
            dirs.push(dir.join("empty"));
        }
        Ok(dirs)
    }

    /// Resolve the `l/<link>` entries of a `lower` file to layer ids.
    /// Empty entries are skipped, as v1.43 does.
    fn ids_from_lower_file(&self, id: &str, path: &Path) -> Result<Vec<String>, LayoutError> {
        let Some(content) = read_optional(id, path)? else {
            return Ok(Vec::new());
        };
        let mut ids = Vec::new();
        for entry in content.split(':').filter(|e| !e.is_empty()) {
            let name = entry
                .strip_prefix(LINK_DIR)
                .and_then(|rest| rest.strip_prefix('/'))
                .filter(|name| is_valid_link_name(name))
                .ok_or_else(|| bad_entry(id, path, entry))?;
            let lower = match self.layer_of_link(id, name)? {
                Some(lower) => lower,
                None => self.layer_with_link_name(name)?.ok_or_else(|| {
                    LayoutError::LowerLinkMissing {
                        id: id.to_owned(),
                        link: entry.to_owned(),
                        path: self.home.join(entry),
                    }
                })?,
            };
            ids.push(lower);
        }
        Ok(ids)
    }
}

/// `<dir>/diff1`, `<dir>/diff2`, ... up to the first one missing.
fn numbered_diffs(dir: &Path) -> Vec<PathBuf> {
    (1..)
        .map(|n| dir.join(format!("diff{n}")))
        .take_while(|p| p.exists())
        .collect()
}

/// The file's content, `None` when it does not exist.
fn read_optional(id: &str, path: &Path) -> Result<Option<String>, LayoutError> {
    match fs::read_to_string(path) {
        Ok(content) => Ok(Some(content)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LayoutError::io(id, "read", path, e)),
    }
}

fn bad_entry(id: &str, path: &Path, entry: &str) -> LayoutError {
    LayoutError::BadLowerEntry {
        id: id.to_owned(),
        path: path.to_owned(),
        entry: entry.to_owned(),
    }
}
