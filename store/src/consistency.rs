//! Whether a store's records can be trusted: this module owns the rules
//! that decide it, as pure functions over records, and the [`Defect`]s
//! that name what breaks them.
//!
//! A store with any defect is read (listings show the records that are
//! sound and name the rest) but never changed: every writer refuses it
//! with [`StoreError::Inconsistent`](crate::StoreError::Inconsistent),
//! naming every defect. The rules, per file:
//!
//! ```text
//! layers.json / volatile-layers.json   JSON array; each record decodes; valid unique ids; unique names;
//!                                      every parent is a layer; no parent cycle
//! images.json                          JSON array; each record decodes; valid unique ids; unique names;
//!                                      every top layer is a layer
//! containers.json / volatile-...       JSON array; each record decodes; valid unique ids; unique names;
//!                                      every container's layer is a layer
//! mountpoints.json                     JSON array; each record decodes; valid ids
//! ```
//!
//! A `mapped-layers` entry naming no layer is not a defect here: podman
//! leaves one when it dies between deleting a mapped layer and saving
//! images.json. gc decides with what it finds on disk
//! ([`crate::gc`]), as it does for an empty `layers.json` beside layer
//! directories.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::records::{Container, Image, Layer, MountPoint, Record};

/// Something that makes a store's records untrustworthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "defect", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Defect {
    /// A file is not a JSON array of records; none of it is used.
    Unreadable {
        /// The file.
        file: PathBuf,
        /// The parser's description.
        message: String,
    },
    /// A record does not have the expected shape; it is not used.
    BadRecord {
        /// The file.
        file: PathBuf,
        /// Its position in the file's array.
        index: usize,
        /// Its id, if readable.
        id: Option<String>,
        /// The parser's description, naming the field.
        message: String,
    },
    /// A record's id cannot name anything on disk; it is not used.
    InvalidId {
        /// The file.
        file: PathBuf,
        /// Its position in the file's array.
        index: usize,
        /// "layer", "image", "container", "mount point".
        kind: &'static str,
        /// The id.
        id: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Two records share an id; the later one is not used.
    DuplicateId {
        /// The file.
        file: PathBuf,
        /// "layer", "image", "container".
        kind: &'static str,
        /// The id.
        id: String,
    },
    /// Two records share a name.
    DuplicateName {
        /// The file.
        file: PathBuf,
        /// "layer", "image", "container".
        kind: &'static str,
        /// The name.
        name: String,
        /// The first record that has it.
        first: String,
        /// The second.
        second: String,
    },
    /// A layer names a parent that no layer record has.
    MissingParent {
        /// The file.
        file: PathBuf,
        /// The layer.
        layer: String,
        /// The parent it names.
        parent: String,
    },
    /// Following parents leads back: the chain, ending where it loops.
    ParentCycle {
        /// The file.
        file: PathBuf,
        /// The layers of the loop, the first one repeated at the end.
        chain: Vec<String>,
    },
    /// An image's top layer is not a layer record.
    MissingTopLayer {
        /// The file (images.json).
        file: PathBuf,
        /// The image.
        image: String,
        /// The layer it names.
        layer: String,
    },
    /// A container's read-write layer is not a layer record.
    MissingContainerLayer {
        /// The file (containers.json).
        file: PathBuf,
        /// The container.
        container: String,
        /// The layer it names.
        layer: String,
    },
    /// Two containers name the same read-write layer (containers/storage
    /// gives every container its own).
    SharedContainerLayer {
        /// The file (containers.json).
        file: PathBuf,
        /// The layer.
        layer: String,
        /// The first container.
        first: String,
        /// The second.
        second: String,
    },
    /// A reference to another record that cannot be an id at all.
    InvalidReference {
        /// The file.
        file: PathBuf,
        /// The record holding it.
        record: String,
        /// The field ("mapped-layers", ...).
        field: &'static str,
        /// The value.
        value: String,
        /// Why it cannot be an id.
        reason: &'static str,
    },
    /// A `mapped-layers` entry names no layer record, but something on
    /// disk still carries its id (gc's check: the record was lost, not the
    /// layer).
    MappedLayerRecordLost {
        /// The file (images.json).
        file: PathBuf,
        /// The image.
        image: String,
        /// The layer it names.
        layer: String,
        /// What on disk carries the id.
        trace: PathBuf,
    },
    /// A complete layer record whose directory is gone (gc's check).
    LayerDirMissing {
        /// The file (layers.json).
        file: PathBuf,
        /// The layer.
        layer: String,
        /// The directory that should be there.
        dir: PathBuf,
    },
    /// An image or container record with big data whose directory is gone
    /// (gc's check: its id was changed or its directory lost).
    DataDirMissing {
        /// The file (images.json, containers.json).
        file: PathBuf,
        /// "image" or "container".
        kind: &'static str,
        /// The record.
        id: String,
        /// The directory that should be there.
        dir: PathBuf,
    },
    /// `layers.json` holds no layer (empty, `[]` or missing) while the
    /// store plainly has layers (gc's check).
    NoLayerRecords {
        /// The file.
        file: PathBuf,
        /// What shows that layers exist.
        evidence: String,
    },
}

impl fmt::Display for Defect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = |p: &Path| p.display().to_string();
        match self {
            Defect::Unreadable { file, message } => {
                write!(f, "{}: not a JSON array of records: {message}", d(file))
            }
            Defect::BadRecord {
                file,
                index,
                id,
                message,
            } => match id {
                Some(id) => write!(f, "{}: record {index} (id {id}): {message}", d(file)),
                None => write!(f, "{}: record {index}: {message}", d(file)),
            },
            Defect::InvalidId {
                file,
                index,
                kind,
                id,
                reason,
            } => write!(
                f,
                "{}: record {index}: invalid {kind} id {id:?}: {reason}",
                d(file)
            ),
            Defect::DuplicateId { file, kind, id } => {
                write!(f, "{}: {kind} id {id} appears twice", d(file))
            }
            Defect::DuplicateName {
                file,
                kind,
                name,
                first,
                second,
            } => write!(
                f,
                "{}: {kind} name {name:?} is used by both {first} and {second}",
                d(file)
            ),
            Defect::MissingParent {
                file,
                layer,
                parent,
            } => write!(
                f,
                "{}: layer {layer} has parent {parent:?}, which is not in the store",
                d(file)
            ),
            Defect::ParentCycle { file, chain } => {
                write!(f, "{}: layer parents loop: {}", d(file), chain.join(" -> "))
            }
            Defect::MissingTopLayer { file, image, layer } => write!(
                f,
                "{}: image {image} has top layer {layer:?}, which is not in the store",
                d(file)
            ),
            Defect::MissingContainerLayer {
                file,
                container,
                layer,
            } => write!(
                f,
                "{}: container {container} has layer {layer:?}, which is not in the store",
                d(file)
            ),
            Defect::SharedContainerLayer {
                file,
                layer,
                first,
                second,
            } => write!(
                f,
                "{}: containers {first} and {second} both have layer {layer}",
                d(file)
            ),
            Defect::InvalidReference {
                file,
                record,
                field,
                value,
                reason,
            } => write!(
                f,
                "{}: {record}: {field} entry {value:?} cannot be a layer id: {reason}",
                d(file)
            ),
            Defect::MappedLayerRecordLost {
                file,
                image,
                layer,
                trace,
            } => write!(
                f,
                "{}: image {image} lists mapped layer {layer}, which has no layer record, \
                 but {} still exists (restore the record, or remove both by hand)",
                d(file),
                d(trace)
            ),
            Defect::LayerDirMissing { file, layer, dir } => write!(
                f,
                "{}: layer {layer} is recorded, but its directory {} does not exist",
                d(file),
                d(dir)
            ),
            Defect::DataDirMissing {
                file,
                kind,
                id,
                dir,
            } => write!(
                f,
                "{}: {kind} {id} has big data, but its directory {} does not exist",
                d(file),
                d(dir)
            ),
            Defect::NoLayerRecords { file, evidence } => {
                write!(f, "{} holds no layer records, but {evidence}", d(file))
            }
        }
    }
}

/// The primary file of each table, named in defects.
#[derive(Debug, Clone, Copy)]
pub struct Files<'a> {
    /// `layers.json`.
    pub layers: &'a Path,
    /// `images.json`.
    pub images: &'a Path,
    /// `containers.json`.
    pub containers: &'a Path,
}

/// The defects between tables (each table's own are found when it is
/// loaded): parents, parent cycles, top layers and container layers.
pub fn cross_check(
    files: Files<'_>,
    layers: &[Layer],
    images: &[Image],
    containers: &[Container],
) -> Vec<Defect> {
    let ids: crate::FastSet<&str> = layers.iter().map(|l| l.id.as_str()).collect();
    let mut out = Vec::new();
    for l in layers {
        if !l.parent.is_empty() && !ids.contains(l.parent.as_str()) {
            out.push(Defect::MissingParent {
                file: files.layers.to_owned(),
                layer: l.id.clone(),
                parent: l.parent.clone(),
            });
        }
    }
    for chain in parent_cycles(layers) {
        out.push(Defect::ParentCycle {
            file: files.layers.to_owned(),
            chain,
        });
    }
    out.extend(image_references(files, images));
    for i in images {
        if !i.top_layer.is_empty() && !ids.contains(i.top_layer.as_str()) {
            out.push(Defect::MissingTopLayer {
                file: files.images.to_owned(),
                image: i.id.clone(),
                layer: i.top_layer.clone(),
            });
        }
    }
    out.extend(shared_container_layers(files, containers));
    for c in containers {
        if !ids.contains(c.layer.as_str()) {
            out.push(Defect::MissingContainerLayer {
                file: files.containers.to_owned(),
                container: c.id.clone(),
                layer: c.layer.clone(),
            });
        }
    }
    out
}

/// The defects of images.json that need no other table: `mapped-layers`
/// entries that cannot name a layer.
pub fn image_references(files: Files<'_>, images: &[Image]) -> Vec<Defect> {
    let mut out = Vec::new();
    for i in images {
        for m in &i.mapped_layers {
            if let Some(reason) = crate::id::id_problem(m) {
                out.push(Defect::InvalidReference {
                    file: files.images.to_owned(),
                    record: format!("image {}", i.id),
                    field: "mapped-layers",
                    value: m.clone(),
                    reason,
                });
            }
        }
    }
    out
}

/// The defects of containers.json that need no other table: two
/// containers naming one layer.
pub fn shared_container_layers(files: Files<'_>, containers: &[Container]) -> Vec<Defect> {
    let mut out = Vec::new();
    let mut owner: crate::FastMap<&str, &str> = crate::FastMap::default();
    for c in containers {
        if let Some(first) = owner.insert(c.layer.as_str(), c.id.as_str()) {
            out.push(Defect::SharedContainerLayer {
                file: files.containers.to_owned(),
                layer: c.layer.clone(),
                first: first.to_owned(),
                second: c.id.clone(),
            });
        }
    }
    out
}

/// Every loop of parent links, each once, as the chain of ids around it
/// with its first id repeated at the end. O(layers).
pub fn parent_cycles(layers: &[Layer]) -> Vec<Vec<String>> {
    let parent: crate::FastMap<&str, &str> = layers
        .iter()
        .filter(|l| !l.parent.is_empty())
        .map(|l| (l.id.as_str(), l.parent.as_str()))
        .collect();
    // 0: unvisited, 1: on the current path, 2: done.
    let mut state: crate::FastMap<&str, u8> = crate::FastMap::default();
    let mut cycles = Vec::new();
    for l in layers {
        let mut path: Vec<&str> = Vec::new();
        let mut cur = Some(l.id.as_str());
        while let Some(id) = cur {
            match state.get(id).copied().unwrap_or(0) {
                2 => break,
                1 => {
                    let start = path.iter().position(|p| *p == id).unwrap_or(0);
                    let mut chain: Vec<String> =
                        path[start..].iter().map(|s| (*s).to_owned()).collect();
                    chain.push(id.to_owned());
                    cycles.push(chain);
                    break;
                }
                _ => {
                    state.insert(id, 1);
                    path.push(id);
                    cur = parent.get(id).copied();
                }
            }
        }
        for p in path {
            state.insert(p, 2);
        }
    }
    cycles
}

/// Ids unique (a repeated id: the later record is dropped) and names
/// unique, for one table's records as read from `file`.
pub fn check_unique<R: Record>(file: &Path, records: &mut Vec<R>) -> Vec<Defect> {
    let mut out = Vec::new();
    // Which records repeat an earlier id, found without copying the ids.
    let repeated: Vec<bool> = {
        let mut seen: crate::FastSet<&str> =
            crate::FastSet::with_capacity_and_hasher(records.len(), Default::default());
        records.iter().map(|r| !seen.insert(r.id())).collect()
    };
    let mut index = 0;
    records.retain(|r| {
        let keep = !repeated[index];
        index += 1;
        if !keep {
            out.push(Defect::DuplicateId {
                file: file.to_owned(),
                kind: R::KIND,
                id: r.id().to_owned(),
            });
        }
        keep
    });
    let mut names: crate::FastMap<&str, &str> = crate::FastMap::default();
    for r in records.iter() {
        for name in r.names() {
            if let Some(first) = names.insert(name, r.id()) {
                out.push(Defect::DuplicateName {
                    file: file.to_owned(),
                    kind: R::KIND,
                    name: name.clone(),
                    first: first.to_owned(),
                    second: r.id().to_owned(),
                });
            }
        }
    }
    out
}

/// Mount records: only their ids are checked (a record of a layer that
/// does not exist is ignored, as containers/storage ignores it).
pub fn mounts_of_layers(mounts: Vec<MountPoint>, layers: &[Layer]) -> Vec<MountPoint> {
    let ids: crate::FastSet<&str> = layers.iter().map(|l| l.id.as_str()).collect();
    mounts
        .into_iter()
        .filter(|m| ids.contains(m.id.as_str()))
        .collect()
}

/// A list of defects for a message: one per line, at most `max`, then a
/// count of the rest.
pub fn describe(defects: &[Defect], max: usize) -> String {
    let mut out = String::new();
    for d in defects.iter().take(max) {
        out.push_str("\n  - ");
        out.push_str(&d.to_string());
    }
    if defects.len() > max {
        out.push_str(&format!("\n  - and {} more", defects.len() - max));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(id: &str, parent: &str) -> Layer {
        Layer {
            id: id.into(),
            parent: parent.into(),
            ..Layer::default()
        }
    }

    fn files() -> Files<'static> {
        Files {
            layers: Path::new("layers.json"),
            images: Path::new("images.json"),
            containers: Path::new("containers.json"),
        }
    }

    #[test]
    fn cycles_are_found_once_with_their_chain() {
        let layers = vec![
            layer("a", "b"),
            layer("b", "a"),
            layer("c", "c"),
            layer("d", "a"),
            layer("e", ""),
        ];
        let mut cycles = parent_cycles(&layers);
        cycles.sort();
        assert_eq!(cycles, [vec!["a", "b", "a"], vec!["c", "c"]]);
        assert!(parent_cycles(&[layer("x", ""), layer("y", "x")]).is_empty());
    }

    #[test]
    fn references_to_missing_layers_are_defects() {
        let layers = vec![layer("base", ""), layer("child", "gone")];
        let images = vec![Image {
            id: "img".into(),
            top_layer: "lost".into(),
            mapped_layers: vec!["also-lost".into()],
            ..Image::default()
        }];
        let containers = vec![Container {
            id: "ctr".into(),
            layer: "".into(),
            ..Container::default()
        }];
        let defects = cross_check(files(), &layers, &images, &containers);
        let text: Vec<String> = defects.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "layers.json: layer child has parent \"gone\", which is not in the store",
                "images.json: image img has top layer \"lost\", which is not in the store",
                "containers.json: container ctr has layer \"\", which is not in the store",
            ]
        );
    }

    #[test]
    fn duplicates_keep_the_first_record() {
        let mut layers = vec![layer("a", ""), layer("a", "x"), layer("b", "")];
        layers[2].names = vec!["n".into()];
        layers[0].names = vec!["n".into()];
        let defects = check_unique(Path::new("layers.json"), &mut layers);
        assert_eq!(layers.len(), 2);
        assert_eq!(layers[0].parent, "");
        assert_eq!(defects.len(), 2);
        assert!(describe(&defects, 1).contains("and 1 more"));
    }
}
