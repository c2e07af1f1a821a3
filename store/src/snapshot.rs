//! An in-memory view of a store's records, and the questions asked of it:
//! lookups by id, name or unique id prefix, an image's layer chain, and who
//! uses a layer. Everything here is pure; [`crate::Store`] fills a
//! [`Snapshot`] under the store's read locks, with the records that are
//! sound and the [`Defect`]s that name the rest.

use std::path::Path;
use std::sync::Arc;

use crate::consistency::Defect;
use crate::error::StoreError;
use crate::records::{Container, Image, Layer, MountPoint, Record};

mod index;
pub use index::Index;

/// The records of a store, read under its locks at one moment.
///
/// The record lists are [`Records`], shared with the store's cache and
/// other snapshots: cloning a snapshot copies no record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// `layers.json` followed by `volatile-layers.json`.
    pub layers: Records<Layer>,
    /// `images.json`.
    pub images: Records<Image>,
    /// `containers.json` followed by `volatile-containers.json`.
    pub containers: Records<Container>,
    /// `mountpoints.json` entries whose layer exists.
    pub mounts: Vec<MountPoint>,
    /// What is wrong with the store's records: files or records that could
    /// not be used (they are not in the lists above) and contradictions
    /// between records. Listing such a store is fine; changing it is not.
    pub defects: Vec<Defect>,
}

/// One table's records read alone, for a caller that needs no other table
/// (the `images` and `containers` listings): the table's own defects and
/// those its records show without the others. Whether the layers they name
/// exist is a question for a [`Snapshot`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableRecords<R> {
    /// The sound records, in file order.
    pub records: Records<R>,
    /// What could not be used, or contradicts itself within the table.
    pub defects: Vec<Defect>,
}

/// A list of records shared between the store's cache and the snapshots
/// made from it. Reads like a `Vec` (`len`, `iter`, indexing, `for r in
/// &list`); [`Records::make_mut`] gives a caller its own copy to change.
#[derive(Debug, Clone, PartialEq)]
pub struct Records<T>(Arc<Vec<T>>);

impl<T> Default for Records<T> {
    fn default() -> Self {
        Records(Arc::new(Vec::new()))
    }
}

impl<T> std::ops::Deref for Records<T> {
    type Target = Vec<T>;
    fn deref(&self) -> &Vec<T> {
        &self.0
    }
}

impl<T> From<Vec<T>> for Records<T> {
    fn from(records: Vec<T>) -> Self {
        Records(Arc::new(records))
    }
}

impl<'a, T> IntoIterator for &'a Records<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<T: Clone> Records<T> {
    /// The list to change: copied first if anyone else shares it.
    pub fn make_mut(&mut self) -> &mut Vec<T> {
        Arc::make_mut(&mut self.0)
    }

    /// The list itself, copied only if anyone else shares it.
    pub fn into_vec(self) -> Vec<T> {
        Arc::try_unwrap(self.0).unwrap_or_else(|shared| (*shared).clone())
    }
}

/// Who depends on a layer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerUsers {
    /// Layers whose parent it is.
    pub child_layers: Vec<String>,
    /// Containers whose read-write layer it is.
    pub containers: Vec<String>,
    /// Images whose top layer it is.
    pub top_of_images: Vec<String>,
    /// Images that list it in `mapped-layers`.
    pub mapped_for_images: Vec<String>,
}

impl LayerUsers {
    /// Whether nothing uses the layer.
    pub fn is_empty(&self) -> bool {
        self.child_layers.is_empty()
            && self.containers.is_empty()
            && self.top_of_images.is_empty()
            && self.mapped_for_images.is_empty()
    }
}

/// Find a record the way containers/storage does: exact id, then exact
/// name, then unique id prefix.
pub fn lookup<'a, R: Record>(records: &'a [R], query: &str) -> Result<&'a R, StoreError> {
    let not_found = || StoreError::NotFound {
        kind: R::KIND,
        query: query.to_owned(),
    };
    if query.is_empty() {
        return Err(not_found());
    }
    if let Some(r) = records.iter().find(|r| r.id() == query) {
        return Ok(r);
    }
    if let Some(r) = records
        .iter()
        .find(|r| r.names().iter().any(|n| n == query))
    {
        return Ok(r);
    }
    let matches: Vec<&R> = records
        .iter()
        .filter(|r| r.id().starts_with(query))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(not_found()),
        many => Err(StoreError::Ambiguous {
            kind: R::KIND,
            query: query.to_owned(),
            matches: many.iter().map(|r| r.id().to_owned()).collect(),
        }),
    }
}

/// Check one file's worth of records: ids and names unique.
pub fn check_unique<R: Record>(path: &Path, records: &[R]) -> Result<(), StoreError> {
    let mut ids = crate::FastSet::default();
    let mut names: crate::FastMap<&str, &str> = crate::FastMap::default();
    for r in records {
        if !ids.insert(r.id()) {
            return Err(StoreError::DuplicateId {
                path: path.to_owned(),
                kind: R::KIND,
                id: r.id().to_owned(),
            });
        }
        for name in r.names() {
            if let Some(first) = names.insert(name, r.id()) {
                return Err(StoreError::DuplicateName {
                    path: path.to_owned(),
                    kind: R::KIND,
                    name: name.clone(),
                    first: first.to_owned(),
                    second: r.id().to_owned(),
                });
            }
        }
    }
    Ok(())
}

/// Check that every layer's parent is a layer of the same store.
pub fn check_parents(path: &Path, layers: &[Layer]) -> Result<(), StoreError> {
    let ids: crate::FastSet<&str> = layers.iter().map(|l| l.id.as_str()).collect();
    match layers
        .iter()
        .find(|l| !l.parent.is_empty() && !ids.contains(l.parent.as_str()))
    {
        Some(l) => Err(StoreError::MissingParent {
            path: path.to_owned(),
            id: l.id.clone(),
            parent: l.parent.clone(),
        }),
        None => Ok(()),
    }
}

impl Snapshot {
    /// `Ok` when the records can be trusted, else
    /// [`StoreError::Inconsistent`] naming every defect.
    pub fn check(&self) -> Result<(), StoreError> {
        if self.defects.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Inconsistent {
                defects: self.defects.clone(),
            })
        }
    }

    /// Indexes over the records, built in O(records), for callers that
    /// ask about many records: every answer of the methods below in O(1)
    /// or O(log records) instead of a scan.
    pub fn index(&self) -> Index<'_> {
        Index::new(self)
    }

    /// A layer by id, name or unique id prefix.
    pub fn layer(&self, query: &str) -> Result<&Layer, StoreError> {
        lookup(&self.layers, query)
    }

    /// An image by id, name or unique id prefix.
    pub fn image(&self, query: &str) -> Result<&Image, StoreError> {
        lookup(&self.images, query)
    }

    /// A container by id, name, read-write layer id, or unique id prefix.
    pub fn container(&self, query: &str) -> Result<&Container, StoreError> {
        match lookup(&self.containers, query) {
            Err(StoreError::NotFound { .. }) if !query.is_empty() => self
                .containers
                .iter()
                .find(|c| c.layer == query)
                .ok_or_else(|| StoreError::NotFound {
                    kind: Container::KIND,
                    query: query.to_owned(),
                }),
            other => other,
        }
    }

    /// The mount record of a layer, if it is recorded as mounted.
    pub fn mount_of(&self, layer_id: &str) -> Option<&MountPoint> {
        self.mounts.iter().find(|m| m.id == layer_id && m.count > 0)
    }

    /// A layer and its ancestors, nearest first.
    pub fn layer_chain(&self, layer_id: &str) -> Result<Vec<&Layer>, StoreError> {
        layer_chain(&self.layers, layer_id)
    }

    /// An image's layers from its top layer down to its base layer.
    pub fn image_layer_chain(&self, image: &Image) -> Result<Vec<&Layer>, StoreError> {
        self.layer_chain(&image.top_layer)
    }

    /// Who uses the layer `layer_id`.
    pub fn layer_users(&self, layer_id: &str) -> LayerUsers {
        let ids = |it: &mut dyn Iterator<Item = &str>| it.map(str::to_owned).collect();
        LayerUsers {
            child_layers: ids(&mut self
                .layers
                .iter()
                .filter(|l| l.parent == layer_id)
                .map(|l| l.id.as_str())),
            containers: ids(&mut self
                .containers
                .iter()
                .filter(|c| c.layer == layer_id)
                .map(|c| c.id.as_str())),
            top_of_images: ids(&mut self
                .images
                .iter()
                .filter(|i| i.top_layer == layer_id)
                .map(|i| i.id.as_str())),
            mapped_for_images: ids(&mut self
                .images
                .iter()
                .filter(|i| i.mapped_layers.iter().any(|m| m == layer_id))
                .map(|i| i.id.as_str())),
        }
    }
}

/// A layer of `layers` and its ancestors, nearest first; the first record
/// of an id wins, as in a lookup. A missing parent or a loop is an error.
pub(crate) fn layer_chain<'a>(
    layers: &'a [Layer],
    layer_id: &str,
) -> Result<Vec<&'a Layer>, StoreError> {
    let mut by_id: crate::FastMap<&str, &Layer> =
        crate::FastMap::with_capacity_and_hasher(layers.len(), Default::default());
    for l in layers {
        by_id.entry(l.id.as_str()).or_insert(l);
    }
    let mut chain: Vec<&Layer> = Vec::new();
    let mut next = Some(layer_id);
    while let Some(id) = next.filter(|id| !id.is_empty()) {
        let layer = by_id.get(id).copied().ok_or_else(|| StoreError::NotFound {
            kind: Layer::KIND,
            query: id.to_owned(),
        })?;
        if let Some(start) = chain.iter().position(|l| l.id == layer.id) {
            let mut ids: Vec<String> = chain[start..].iter().map(|l| l.id.clone()).collect();
            ids.push(layer.id.clone());
            return Err(StoreError::ParentCycle { chain: ids });
        }
        chain.push(layer);
        next = Some(layer.parent.as_str());
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(id: &str, parent: &str, names: &[&str]) -> Layer {
        Layer {
            id: id.into(),
            parent: parent.into(),
            names: names.iter().map(|s| s.to_string()).collect(),
            ..Layer::default()
        }
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            layers: vec![
                layer("aaa111", "", &["base"]),
                layer("aab222", "aaa111", &[]),
                layer("bbb333", "aaa111", &[]),
                layer("ccc444", "aab222", &[]),
            ]
            .into(),
            images: vec![Image {
                id: "img1".into(),
                names: vec!["localhost/x:latest".into()],
                top_layer: "aab222".into(),
                mapped_layers: vec!["bbb333".into()],
                ..Image::default()
            }]
            .into(),
            containers: vec![Container {
                id: "ctr1".into(),
                names: vec!["web".into()],
                image: "img1".into(),
                layer: "ccc444".into(),
                ..Container::default()
            }]
            .into(),
            mounts: vec![],
            defects: vec![],
        }
    }

    #[test]
    fn lookups_by_id_name_prefix_and_layer() {
        let s = snapshot();
        assert_eq!(s.layer("aaa111").unwrap().id, "aaa111");
        assert_eq!(s.layer("base").unwrap().id, "aaa111");
        assert_eq!(s.layer("bb").unwrap().id, "bbb333");
        assert!(
            matches!(s.layer("aa"), Err(StoreError::Ambiguous { matches, .. }) if matches.len() == 2)
        );
        assert!(matches!(s.layer("zz"), Err(StoreError::NotFound { .. })));
        assert!(matches!(s.layer(""), Err(StoreError::NotFound { .. })));
        assert_eq!(s.image("localhost/x:latest").unwrap().id, "img1");
        assert_eq!(s.container("web").unwrap().id, "ctr1");
        assert_eq!(s.container("ccc444").unwrap().id, "ctr1");
    }

    #[test]
    fn chains_and_users() {
        let s = snapshot();
        let chain: Vec<&str> = s
            .image_layer_chain(&s.images[0])
            .unwrap()
            .iter()
            .map(|l| l.id.as_str())
            .collect();
        assert_eq!(chain, ["aab222", "aaa111"]);
        let users = s.layer_users("aaa111");
        assert_eq!(users.child_layers, ["aab222", "bbb333"]);
        let users = s.layer_users("bbb333");
        assert_eq!(users.mapped_for_images, ["img1"]);
        assert!(s.layer_users("ccc444").child_layers.is_empty());
        assert_eq!(s.layer_users("ccc444").containers, ["ctr1"]);
        assert!(!s.layer_users("aab222").is_empty());
    }

    #[test]
    fn cycles_and_bad_records_are_reported() {
        let mut s = snapshot();
        s.layers.make_mut()[0].parent = "ccc444".into();
        assert!(matches!(
            s.layer_chain("ccc444"),
            Err(StoreError::ParentCycle { .. })
        ));
        let p = Path::new("layers.json");
        let layers = vec![layer("a", "", &["n"]), layer("b", "gone", &["n"])];
        assert!(matches!(
            check_unique(p, &layers),
            Err(StoreError::DuplicateName { first, second, .. }) if first == "a" && second == "b"
        ));
        assert!(matches!(
            check_parents(p, &layers),
            Err(StoreError::MissingParent { parent, .. }) if parent == "gone"
        ));
        let dup = vec![layer("a", "", &[]), layer("a", "", &[])];
        assert!(matches!(
            check_unique(p, &dup),
            Err(StoreError::DuplicateId { .. })
        ));
    }
}
