//! Lower chains: which layers lie under a layer, and the directories a
//! mount stacks, in overlayfs order (uppermost first), each opened beneath
//! the home without following a symlink.
//!
//! ```text
//! <id>/lower-layers   "<parent>:<grandparent>:..."        (c/storage >= 1.63; preferred)
//! <id>/lower          "l/<parent link>:l/<gp link>:..."   (every version; resolved via l/)
//! <id>/diff1..diffN   own older uppers, stacked right under <id>/diff
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use layerstore::confined::Dir;
use layerstore::LayerId;

use super::links::is_valid_link_name;
use super::{
    LayoutError, OverlayDriver, LINK_DIR, LINK_FILE, LOWER_FILE, LOWER_LAYERS_FILE,
    MAX_LOWER_LAYERS,
};

impl OverlayDriver {
    /// The ids of the layers under `id`, nearest first: from `lower-layers`,
    /// else by resolving each `l/<link>` of `lower` (readlink gives
    /// `../<lower id>/diff`; a lost symlink is looked up through the layers'
    /// `link` files), else none. Every entry must be a valid id or link
    /// name ([`LayoutError::BadLowerEntry`]).
    ///
    /// When both files are there and `lower` resolves, they must name the
    /// same layers ([`LayoutError::LowerFilesDisagree`]): containers/storage
    /// v1.43 mounts what `lower` says and later versions what
    /// `lower-layers` says, so a layer whose files disagree is mounted
    /// differently by the two, and by neither here. A `lower` whose links
    /// are lost does not count against a readable `lower-layers` (later
    /// versions would mount it).
    pub fn lower_layer_ids(&self, id: &LayerId) -> Result<Vec<LayerId>, LayoutError> {
        let layer = self.open_layer(id)?;
        let Some(ids) = self.ids_from_lower_layers_file(id, &layer)? else {
            return self.ids_from_lower_file(id, &layer);
        };
        // A `lower` that is there but empty says "no lower layers" to
        // v1.43: that disagrees too.
        let has_lower = layer
            .stat(LOWER_FILE)
            .map_err(|e| LayoutError::io(id.as_str(), "examine", layer.display(LOWER_FILE), e))?
            .is_some();
        match self.ids_from_lower_file(id, &layer) {
            Ok(from_lower) if has_lower && from_lower != ids => {
                Err(LayoutError::LowerFilesDisagree {
                    id: id.to_string(),
                    lower_layers: join_ids(&ids),
                    lower: join_ids(&from_lower),
                    path: layer.path().to_owned(),
                })
            }
            Ok(_) | Err(LayoutError::LowerLinkMissing { .. }) => Ok(ids),
            Err(e) => Err(e),
        }
    }

    /// Every layer `id` stacks on by either of its files (`lower-layers`
    /// and `lower`), nearest first, each once: what a version of
    /// containers/storage may mount under it, so what gc must keep while
    /// `id` stays. Either file failing to read or resolve is an error.
    pub fn stacked_layer_ids(&self, id: &LayerId) -> Result<Vec<LayerId>, LayoutError> {
        self.stacked_layer_ids_in(&self.home_required()?, id, None)
    }

    /// [`OverlayDriver::stacked_layer_ids`] through a `home` the caller
    /// opened (one open for many layers), resolving `l/` names through
    /// `links` (name to layer, as [`OverlayDriver::links`] read them under
    /// the same locks) instead of a readlink each; a name not there is
    /// read as usual. Only files are read through `home`, no mount is
    /// looked at, so a home bind-mounted since it was opened changes
    /// nothing.
    pub fn stacked_layer_ids_in(
        &self,
        home: &Dir,
        id: &LayerId,
        links: Option<&HashMap<&str, LayerId>>,
    ) -> Result<Vec<LayerId>, LayoutError> {
        let layer = self.open_layer_in(home, id)?;
        self.stacked_in_layer(home, id, &layer, links)
    }

    /// [`OverlayDriver::stacked_layer_ids_in`] of the opened `layer`.
    fn stacked_in_layer(
        &self,
        home: &Dir,
        id: &LayerId,
        layer: &Dir,
        links: Option<&HashMap<&str, LayerId>>,
    ) -> Result<Vec<LayerId>, LayoutError> {
        let mut ids = self
            .ids_from_lower_layers_file(id, layer)?
            .unwrap_or_default();
        for lower in self.ids_from_lower_file_in(home, id, layer, links)? {
            if !ids.contains(&lower) {
                ids.push(lower);
            }
        }
        Ok(ids)
    }

    /// [`OverlayDriver::stacked_layer_ids_in`] and whether the layer has
    /// its `link` file ([`OverlayDriver::has_link_file_in`]), the layer
    /// directory opened once for both.
    pub(crate) fn stack_and_link_file_in(
        &self,
        home: &Dir,
        id: &LayerId,
        links: &HashMap<&str, LayerId>,
    ) -> (Result<Vec<LayerId>, LayoutError>, bool) {
        let layer = match self.open_layer_in(home, id) {
            Ok(layer) => layer,
            Err(e) => return (Err(e), false),
        };
        let has_link = layer.stat(LINK_FILE).ok().flatten().is_some();
        (
            self.stacked_in_layer(home, id, &layer, Some(links)),
            has_link,
        )
    }

    /// The ids of a `lower-layers` file; `None` when it is missing or
    /// empty (a create killed before it wrote the ids: `lower` decides).
    fn ids_from_lower_layers_file(
        &self,
        id: &LayerId,
        layer: &Dir,
    ) -> Result<Option<Vec<LayerId>>, LayoutError> {
        let path = layer.display(LOWER_LAYERS_FILE);
        match read_optional(id, layer, LOWER_LAYERS_FILE)? {
            Some(content) if !content.is_empty() => content
                .split(':')
                .map(|entry| LayerId::parse(entry).map_err(|_| bad_entry(id, &path, entry)))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            _ => Ok(None),
        }
    }

    /// The lower directories of a mount of `id`, uppermost first (for
    /// messages and tests; mounts open each of them beneath the home).
    pub fn lower_dirs(&self, id: &LayerId) -> Result<Vec<PathBuf>, LayoutError> {
        Ok(self
            .open_lower_dirs(id)?
            .iter()
            .map(|d| d.path().to_owned())
            .collect())
    }

    /// The lower directories of a mount of `id`, opened, uppermost first:
    /// its own `diff1..diffN`, then for each lower layer `L`: `L/diff`,
    /// `L/diff1..`; `<id>/empty` when there is nothing else.
    ///
    /// Refuses more than [`MAX_LOWER_LAYERS`] lower layers, and a lower
    /// layer whose `diff` is missing (or a symlink).
    pub(crate) fn open_lower_dirs(&self, id: &LayerId) -> Result<Vec<Dir>, LayoutError> {
        let ids = self.lower_layer_ids(id)?;
        if ids.len() > MAX_LOWER_LAYERS {
            return Err(LayoutError::ChainTooDeep {
                id: id.to_string(),
                depth: ids.len(),
                max: MAX_LOWER_LAYERS,
            });
        }
        let home = self.home_required()?;
        let layer = self.open_layer(id)?;
        let mut dirs = numbered_diffs(id, &layer)?;
        for lower in &ids {
            let not_found = || LayoutError::LowerNotFound {
                id: id.to_string(),
                lower: lower.to_string(),
                path: home.display(Path::new(lower.as_str()).join("diff")),
            };
            let lower_dir = home.open_dir(lower.as_str()).map_err(|_| not_found())?;
            let diff = lower_dir.open_dir("diff").map_err(|_| not_found())?;
            dirs.push(diff);
            dirs.extend(numbered_diffs(id, &lower_dir)?);
        }
        if dirs.is_empty() {
            let empty = layer
                .open_dir("empty")
                .map_err(|e| LayoutError::io(id.as_str(), "open", layer.display("empty"), e))?;
            dirs.push(empty);
        }
        Ok(dirs)
    }

    /// Resolve the `l/<link>` entries of a `lower` file to layer ids.
    /// Empty entries are skipped, as v1.43 does.
    fn ids_from_lower_file(&self, id: &LayerId, layer: &Dir) -> Result<Vec<LayerId>, LayoutError> {
        self.ids_from_lower_file_in(&self.home_required()?, id, layer, None)
    }

    /// [`Self::ids_from_lower_file`] through `home`, names looked up in
    /// `links` first.
    fn ids_from_lower_file_in(
        &self,
        home: &Dir,
        id: &LayerId,
        layer: &Dir,
        links: Option<&HashMap<&str, LayerId>>,
    ) -> Result<Vec<LayerId>, LayoutError> {
        let Some(content) = read_optional(id, layer, LOWER_FILE)? else {
            return Ok(Vec::new());
        };
        let path = layer.display(LOWER_FILE);
        let mut ids = Vec::new();
        for entry in content.split(':').filter(|e| !e.is_empty()) {
            let name = entry
                .strip_prefix(LINK_DIR)
                .and_then(|rest| rest.strip_prefix('/'))
                .filter(|name| is_valid_link_name(name))
                .ok_or_else(|| bad_entry(id, &path, entry))?;
            if let Some(lower) = links.and_then(|l| l.get(name)) {
                ids.push(lower.clone());
                continue;
            }
            let lower = match self.layer_of_link(home, id, name)? {
                Some(lower) => lower,
                None => self.layer_with_link_name(home, name)?.ok_or_else(|| {
                    LayoutError::LowerLinkMissing {
                        id: id.to_string(),
                        link: entry.to_owned(),
                        path: home.display(entry),
                    }
                })?,
            };
            ids.push(lower);
        }
        Ok(ids)
    }
}

/// `<layer>/diff1`, `<layer>/diff2`, ... up to the first one missing, each
/// opened (a `diffN` that is a symlink ends the list, as a missing one does).
fn numbered_diffs(id: &LayerId, layer: &Dir) -> Result<Vec<Dir>, LayoutError> {
    let mut out = Vec::new();
    for n in 1.. {
        let name = format!("diff{n}");
        match layer.stat(&name) {
            Ok(Some(m)) if m.is_dir() => {}
            Ok(_) => break,
            Err(e) => {
                return Err(LayoutError::io(
                    id.as_str(),
                    "examine",
                    layer.display(&name),
                    e,
                ))
            }
        }
        let dir = layer
            .open_dir(&name)
            .map_err(|e| LayoutError::io(id.as_str(), "open", layer.display(&name), e))?;
        out.push(dir);
    }
    Ok(out)
}

/// The file's content, `None` when it does not exist.
fn read_optional(id: &LayerId, layer: &Dir, name: &str) -> Result<Option<String>, LayoutError> {
    let path = layer.display(name);
    match layer.read_opt_limited(name, super::SMALL_FILE_MAX) {
        Ok(Some(bytes)) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| bad_entry(id, &path, "(not UTF-8)")),
        Ok(None) => Ok(None),
        Err(e) => Err(LayoutError::io(id.as_str(), "read", path, e)),
    }
}

fn join_ids(ids: &[LayerId]) -> String {
    ids.iter()
        .map(LayerId::as_str)
        .collect::<Vec<_>>()
        .join(":")
}

fn bad_entry(id: &LayerId, path: &Path, entry: &str) -> LayoutError {
    LayoutError::BadLowerEntry {
        id: id.to_string(),
        path: path.to_owned(),
        entry: entry.to_owned(),
    }
}
