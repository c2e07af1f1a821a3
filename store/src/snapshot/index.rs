//! Indexes over a [`Snapshot`], built once in O(records) so that a command
//! asking a question per record (a listing, gc's plan) stays linear in the
//! store's size instead of scanning every table for every record.

use std::collections::HashMap;

use crate::error::StoreError;
use crate::records::{Container, Image, Layer, MountPoint, Record};

use super::{LayerUsers, Snapshot};

/// One table's records by id, by name, and sorted ids for prefixes.
#[derive(Debug)]
struct Table<'a, R> {
    records: &'a [R],
    by_id: HashMap<&'a str, usize>,
    by_name: HashMap<&'a str, usize>,
    /// Indices into `records`, sorted by id.
    sorted: Vec<usize>,
}

impl<'a, R: Record> Table<'a, R> {
    fn new(records: &'a [R]) -> Self {
        let mut by_id = HashMap::with_capacity(records.len());
        let mut by_name = HashMap::new();
        for (i, r) in records.iter().enumerate() {
            // The first record wins, as a scan in file order finds it.
            by_id.entry(r.id()).or_insert(i);
            for n in r.names() {
                by_name.entry(n.as_str()).or_insert(i);
            }
        }
        let mut sorted: Vec<usize> = (0..records.len()).collect();
        sorted.sort_unstable_by(|&a, &b| records[a].id().cmp(records[b].id()));
        Table {
            records,
            by_id,
            by_name,
            sorted,
        }
    }

    fn by_id(&self, id: &str) -> Option<&'a R> {
        self.by_id.get(id).map(|&i| &self.records[i])
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
        if let Some(&i) = self.by_name.get(query) {
            return Ok(&self.records[i]);
        }
        let start = self
            .sorted
            .partition_point(|&i| self.records[i].id() < query);
        let matches: Vec<&'a R> = self.sorted[start..]
            .iter()
            .map(|&i| &self.records[i])
            .take_while(|r| r.id().starts_with(query))
            .collect();
        match matches.as_slice() {
            [one] => Ok(one),
            [] => Err(not_found()),
            _ => {
                // In file order, as the scan reports them.
                let mut ids: Vec<(usize, String)> = self.sorted[start..start + matches.len()]
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
/// each O(1) or O(log records) once built ([`Snapshot::index`], O(records)).
/// Answers are the same as the [`Snapshot`] methods of the same names, in
/// the same order.
#[derive(Debug)]
pub struct Index<'a> {
    snap: &'a Snapshot,
    layers: Table<'a, Layer>,
    images: Table<'a, Image>,
    containers: Table<'a, Container>,
    /// Containers by read-write layer id (first in file order wins).
    container_of_layer: HashMap<&'a str, usize>,
    children: HashMap<&'a str, Vec<&'a str>>,
    layer_containers: HashMap<&'a str, Vec<&'a str>>,
    tops: HashMap<&'a str, Vec<&'a str>>,
    mapped: HashMap<&'a str, Vec<&'a str>>,
    image_containers: HashMap<&'a str, Vec<&'a str>>,
    mounts: HashMap<&'a str, &'a MountPoint>,
}

fn push<'a>(map: &mut HashMap<&'a str, Vec<&'a str>>, key: &'a str, value: &'a str) {
    map.entry(key).or_default().push(value);
}

impl<'a> Index<'a> {
    pub(super) fn new(snap: &'a Snapshot) -> Self {
        let mut children = HashMap::new();
        for l in &snap.layers {
            push(&mut children, &l.parent, &l.id);
        }
        let mut layer_containers = HashMap::new();
        let mut image_containers = HashMap::new();
        let mut container_of_layer = HashMap::new();
        for (i, c) in snap.containers.iter().enumerate() {
            push(&mut layer_containers, &c.layer, &c.id);
            push(&mut image_containers, &c.image, &c.id);
            container_of_layer.entry(c.layer.as_str()).or_insert(i);
        }
        let mut tops = HashMap::new();
        let mut mapped = HashMap::new();
        let mut listed = std::collections::HashSet::new();
        for i in &snap.images {
            push(&mut tops, &i.top_layer, &i.id);
            // An image that lists a layer twice is one user of it.
            listed.clear();
            for m in &i.mapped_layers {
                if listed.insert(m.as_str()) {
                    push(&mut mapped, m, &i.id);
                }
            }
        }
        let mut mounts = HashMap::new();
        for m in snap.mounts.iter().filter(|m| m.count > 0) {
            mounts.entry(m.id.as_str()).or_insert(m);
        }
        Index {
            snap,
            layers: Table::new(&snap.layers),
            images: Table::new(&snap.images),
            containers: Table::new(&snap.containers),
            container_of_layer,
            children,
            layer_containers,
            tops,
            mapped,
            image_containers,
            mounts,
        }
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
        self.mounts.get(layer_id).copied()
    }

    /// Layers whose parent is `layer_id`, in file order.
    pub fn children(&self, layer_id: &str) -> &[&'a str] {
        self.children.get(layer_id).map_or(&[], Vec::as_slice)
    }

    /// Containers made from image `image_id`, in file order.
    pub fn containers_of_image(&self, image_id: &str) -> &[&'a str] {
        self.image_containers
            .get(image_id)
            .map_or(&[], Vec::as_slice)
    }

    /// Whether some image lists `layer_id` in its `mapped-layers`.
    pub fn is_mapped_copy(&self, layer_id: &str) -> bool {
        self.mapped.contains_key(layer_id)
    }

    /// Who uses the layer `layer_id`.
    pub fn layer_users(&self, layer_id: &str) -> LayerUsers {
        let get = |m: &HashMap<&'a str, Vec<&'a str>>| -> Vec<String> {
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
            containers: get(&self.layer_containers),
            top_of_images: get(&self.tops),
            mapped_for_images: get(&self.mapped),
        }
    }

    /// A layer and its ancestors, nearest first.
    pub fn layer_chain(&self, layer_id: &str) -> Result<Vec<&'a Layer>, StoreError> {
        let mut chain: Vec<&'a Layer> = Vec::new();
        let mut seen = std::collections::HashSet::new();
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
