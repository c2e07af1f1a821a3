//! Indexes over a [`Snapshot`], built once in O(records) so that a command
//! asking a question per record (a listing, gc's plan) stays linear in the
//! store's size instead of scanning every table for every record.

use std::sync::OnceLock;

use crate::error::StoreError;
use crate::records::{Container, Image, Layer, MountPoint, Record};

use super::{LayerUsers, Snapshot};

/// One table's records by id, by name, and sorted ids for prefixes; each
/// map built when first asked for.
#[derive(Debug)]
struct Table<'a, R> {
    records: &'a [R],
    by_id: OnceLock<crate::FastMap<&'a str, usize>>,
    by_name: OnceLock<crate::FastMap<&'a str, usize>>,
    /// Indices into `records`, sorted by id.
    sorted: OnceLock<Vec<usize>>,
}

impl<'a, R: Record> Table<'a, R> {
    fn new(records: &'a [R]) -> Self {
        Table {
            records,
            by_id: OnceLock::new(),
            by_name: OnceLock::new(),
            sorted: OnceLock::new(),
        }
    }

    fn by_id(&self, id: &str) -> Option<&'a R> {
        let records = self.records;
        let map = self.by_id.get_or_init(|| {
            let mut by_id =
                crate::FastMap::with_capacity_and_hasher(records.len(), Default::default());
            for (i, r) in records.iter().enumerate() {
                // The first record wins, as a scan in file order finds it.
                by_id.entry(r.id()).or_insert(i);
            }
            by_id
        });
        map.get(id).map(|&i| &records[i])
    }

    fn by_name(&self, name: &str) -> Option<&'a R> {
        let records = self.records;
        let map = self.by_name.get_or_init(|| {
            let mut by_name = crate::FastMap::default();
            for (i, r) in records.iter().enumerate() {
                for n in r.names() {
                    by_name.entry(n.as_str()).or_insert(i);
                }
            }
            by_name
        });
        map.get(name).map(|&i| &records[i])
    }

    fn sorted(&self) -> &[usize] {
        let records = self.records;
        self.sorted.get_or_init(|| {
            let mut sorted: Vec<usize> = (0..records.len()).collect();
            sorted.sort_unstable_by(|&a, &b| records[a].id().cmp(records[b].id()));
            sorted
        })
    }

    /// As [`super::lookup`]: exact id, then exact name, then unique id
    /// prefix; O(log records) for a prefix.
    fn lookup(&self, query: &str) -> Result<&'a R, StoreError> {
        let not_found = || StoreError::NotFound {
            kind: R::KIND,
            query: query.to_owned(),
        };
        if query.is_empty() {
            return Err(not_found());
        }
        if let Some(r) = self.by_id(query) {
            return Ok(r);
        }
        if let Some(r) = self.by_name(query) {
            return Ok(r);
        }
        let sorted = self.sorted();
        let start = sorted.partition_point(|&i| self.records[i].id() < query);
        let matches: Vec<&'a R> = sorted[start..]
            .iter()
            .map(|&i| &self.records[i])
            .take_while(|r| r.id().starts_with(query))
            .collect();
        match matches.as_slice() {
            [one] => Ok(one),
            [] => Err(not_found()),
            _ => {
                // In file order, as the scan reports them.
                let mut ids: Vec<(usize, String)> = sorted[start..start + matches.len()]
                    .iter()
                    .map(|&i| (i, self.records[i].id().to_owned()))
                    .collect();
                ids.sort_unstable_by_key(|(i, _)| *i);
                Err(StoreError::Ambiguous {
                    kind: R::KIND,
                    query: query.to_owned(),
                    matches: ids.into_iter().map(|(_, id)| id).collect(),
                })
            }
        }
    }
}

/// Lookups and "who uses it" answers for every record of a [`Snapshot`],
/// each O(1) or O(log records) once built ([`Snapshot::index`]; each map
/// is built in O(records) when a question first needs it). Answers are the
/// same as the [`Snapshot`] methods of the same names, in the same order.
#[derive(Debug)]
pub struct Index<'a> {
    snap: &'a Snapshot,
    layers: Table<'a, Layer>,
    images: Table<'a, Image>,
    containers: Table<'a, Container>,
    users: OnceLock<Users<'a>>,
    mapped: OnceLock<crate::FastMap<&'a str, Vec<&'a str>>>,
    mounts: OnceLock<crate::FastMap<&'a str, &'a MountPoint>>,
}

/// Who refers to a layer or an image, by id, each list in file order.
#[derive(Debug, Default)]
struct Users<'a> {
    /// Containers by read-write layer id (first in file order wins).
    container_of_layer: crate::FastMap<&'a str, usize>,
    children: crate::FastMap<&'a str, Vec<&'a str>>,
    layer_containers: crate::FastMap<&'a str, Vec<&'a str>>,
    tops: crate::FastMap<&'a str, Vec<&'a str>>,
    image_containers: crate::FastMap<&'a str, Vec<&'a str>>,
}

fn push<'a>(map: &mut crate::FastMap<&'a str, Vec<&'a str>>, key: &'a str, value: &'a str) {
    map.entry(key).or_default().push(value);
}

impl<'a> Index<'a> {
    pub(super) fn new(snap: &'a Snapshot) -> Self {
        Index {
            snap,
            layers: Table::new(&snap.layers),
            images: Table::new(&snap.images),
            containers: Table::new(&snap.containers),
            users: OnceLock::new(),
            mapped: OnceLock::new(),
            mounts: OnceLock::new(),
        }
    }

    fn users(&self) -> &Users<'a> {
        let snap = self.snap;
        self.users.get_or_init(|| {
            let mut u = Users::default();
            for l in snap.layers.iter() {
                push(&mut u.children, &l.parent, &l.id);
            }
            for (i, c) in snap.containers.iter().enumerate() {
                push(&mut u.layer_containers, &c.layer, &c.id);
                push(&mut u.image_containers, &c.image, &c.id);
                u.container_of_layer.entry(c.layer.as_str()).or_insert(i);
            }
            for i in snap.images.iter() {
                push(&mut u.tops, &i.top_layer, &i.id);
            }
            u
        })
    }

    fn mapped(&self) -> &crate::FastMap<&'a str, Vec<&'a str>> {
        let snap = self.snap;
        self.mapped.get_or_init(|| {
            let mut mapped = crate::FastMap::default();
            let mut listed = crate::FastSet::default();
            for i in snap.images.iter() {
                // An image that lists a layer twice is one user of it.
                listed.clear();
                for m in &i.mapped_layers {
                    if listed.insert(m.as_str()) {
                        push(&mut mapped, m, &i.id);
                    }
                }
            }
            mapped
        })
    }

    /// The snapshot indexed.
    pub fn snapshot(&self) -> &'a Snapshot {
        self.snap
    }

    /// A layer by id, name or unique id prefix.
    pub fn layer(&self, query: &str) -> Result<&'a Layer, StoreError> {
        self.layers.lookup(query)
    }

    /// A layer by exact id.
    pub fn layer_by_id(&self, id: &str) -> Option<&'a Layer> {
        self.layers.by_id(id)
    }

    /// An image by id, name or unique id prefix.
    pub fn image(&self, query: &str) -> Result<&'a Image, StoreError> {
        self.images.lookup(query)
    }

    /// An image by exact id.
    pub fn image_by_id(&self, id: &str) -> Option<&'a Image> {
        self.images.by_id(id)
    }

    /// A container by id, name, read-write layer id, or unique id prefix.
    pub fn container(&self, query: &str) -> Result<&'a Container, StoreError> {
        match self.containers.lookup(query) {
            Err(StoreError::NotFound { .. }) if !query.is_empty() => self
                .users()
                .container_of_layer
                .get(query)
                .map(|&i| &self.snap.containers[i])
                .ok_or_else(|| StoreError::NotFound {
                    kind: Container::KIND,
                    query: query.to_owned(),
                }),
            other => other,
        }
    }

    /// A container by exact id.
    pub fn container_by_id(&self, id: &str) -> Option<&'a Container> {
        self.containers.by_id(id)
    }

    /// The mount record of a layer, if it is recorded as mounted.
    pub fn mount_of(&self, layer_id: &str) -> Option<&'a MountPoint> {
        let snap = self.snap;
        self.mounts
            .get_or_init(|| {
                let mut mounts = crate::FastMap::default();
                for m in snap.mounts.iter().filter(|m| m.count > 0) {
                    mounts.entry(m.id.as_str()).or_insert(m);
                }
                mounts
            })
            .get(layer_id)
            .copied()
    }

    /// Layers whose parent is `layer_id`, in file order.
    pub fn children(&self, layer_id: &str) -> &[&'a str] {
        self.users()
            .children
            .get(layer_id)
            .map_or(&[], Vec::as_slice)
    }

    /// Containers made from image `image_id`, in file order.
    pub fn containers_of_image(&self, image_id: &str) -> &[&'a str] {
        self.users()
            .image_containers
            .get(image_id)
            .map_or(&[], Vec::as_slice)
    }

    /// Whether some image lists `layer_id` in its `mapped-layers`.
    pub fn is_mapped_copy(&self, layer_id: &str) -> bool {
        self.mapped().contains_key(layer_id)
    }

    /// Who uses the layer `layer_id`.
    pub fn layer_users(&self, layer_id: &str) -> LayerUsers {
        let get = |m: &crate::FastMap<&'a str, Vec<&'a str>>| -> Vec<String> {
            m.get(layer_id)
                .map(|v| v.iter().map(|s| (*s).to_owned()).collect())
                .unwrap_or_default()
        };
        LayerUsers {
            child_layers: self
                .children(layer_id)
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            containers: get(&self.users().layer_containers),
            top_of_images: get(&self.users().tops),
            mapped_for_images: get(self.mapped()),
        }
    }

    /// A layer and its ancestors, nearest first.
    pub fn layer_chain(&self, layer_id: &str) -> Result<Vec<&'a Layer>, StoreError> {
        let mut chain: Vec<&'a Layer> = Vec::new();
        let mut seen = crate::FastSet::default();
        let mut next = layer_id;
        while !next.is_empty() {
            let layer = self.layer_by_id(next).ok_or_else(|| StoreError::NotFound {
                kind: Layer::KIND,
                query: next.to_owned(),
            })?;
            if !seen.insert(layer.id.as_str()) {
                let start = chain.iter().position(|l| l.id == layer.id).unwrap_or(0);
                let mut ids: Vec<String> = chain[start..].iter().map(|l| l.id.clone()).collect();
                ids.push(layer.id.clone());
                return Err(StoreError::ParentCycle { chain: ids });
            }
            chain.push(layer);
            next = &layer.parent;
        }
        Ok(chain)
    }
}

#[cfg(test)]
mod tests;
