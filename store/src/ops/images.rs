//! Creating, naming and deleting images as containers/storage does:
//! names move from the image that had them, every added name goes to the
//! front of `names-history`, big data is stored under
//! `overlay-images/<id>/` with containers/storage's file names, and
//! deleting an image removes its mapped copies and then every layer of its
//! chain that nothing else uses.

use super::{big_data_file_name, sha256_digest};
use crate::driver::Driver;
use crate::error::StoreError;
use crate::gojson::GoTime;
use crate::id::{ImageId, LayerId};
use crate::records::{Image, Layer};
use crate::snapshot::{check_parents, lookup};
use crate::Store;

/// One big-data item of an image (manifest, config, signatures).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BigData {
    /// The key (`manifest`, `sha256:<config digest>`, ...).
    pub key: String,
    /// The bytes.
    pub data: Vec<u8>,
    /// The digest to record; `None`: sha256 of the bytes.
    pub digest: Option<String>,
}

/// What a new image should be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewImage {
    /// The id (for OCI and Docker images: the config digest's hex).
    pub id: String,
    /// Names (references such as `localhost/name:tag`).
    pub names: Vec<String>,
    /// The top layer (id, name or unique prefix); empty for no layers.
    pub top_layer: String,
    /// The manifest digest.
    pub digest: String,
    /// Opaque caller metadata.
    pub metadata: String,
    /// Creation time; `None`: now.
    pub created: Option<GoTime>,
    /// Big-data items, in the order they are recorded.
    pub big_data: Vec<BigData>,
}

impl Store {
    /// Create an image on an existing top layer. Refused, with nothing
    /// written, when the store's records cannot be trusted.
    ///
    /// # Locking
    /// Shared `layers.lock`, then exclusive `images.lock`, then shared
    /// `containers.lock`.
    pub fn create_image(&self, new: NewImage) -> Result<Image, StoreError> {
        let image_id = ImageId::parse(&new.id)?;
        let layers = self.layers.read_shared()?;
        let mut images = self.images.begin(|_, _| Ok(()))?;
        let containers = self.containers.read_shared()?;
        self.check_held(&layers, None, &images, &containers)?;
        let top_layer = match new.top_layer.as_str() {
            "" => String::new(),
            q => lookup::<Layer>(&layers.records, q)?.id.clone(),
        };
        if images.records.iter().any(|i| i.id == new.id) {
            return Err(StoreError::Exists {
                kind: "image",
                id: new.id,
            });
        }
        let mut image = Image {
            id: new.id.clone(),
            digest: new.digest,
            top_layer,
            metadata: new.metadata,
            created: new.created.unwrap_or_else(GoTime::now),
            ..Image::default()
        };
        if let Err(e) = self.write_big_data(&image_id, &mut image, &new.big_data) {
            let _ = self.remove_image_dir(&image_id);
            return Err(e);
        }
        images.records.push(image);
        add_names(&mut images.records, &new.id, &new.names);
        if let Err(e) = images.save() {
            let _ = self.remove_image_dir(&image_id);
            return Err(e);
        }
        Ok(images
            .records
            .iter()
            .find(|i| i.id == new.id)
            .cloned()
            .unwrap_or_default())
    }

    /// Add names to an image, taking them from any image that has them.
    /// Refused when `images.json` has defects.
    ///
    /// # Locking
    /// Exclusive `images.lock`.
    pub fn add_image_names(&self, query: &str, names: &[String]) -> Result<Image, StoreError> {
        self.modify_images(|images| {
            let id = lookup(images, query)?.id.clone();
            add_names(images, &id, names);
            Ok(images
                .iter()
                .find(|i| i.id == id)
                .cloned()
                .unwrap_or_default())
        })
    }

    fn write_big_data(
        &self,
        id: &ImageId,
        image: &mut Image,
        items: &[BigData],
    ) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        let files: Vec<(String, &[u8])> = items
            .iter()
            .map(|i| (big_data_file_name(&i.key), i.data.as_slice()))
            .collect();
        self.write_image_big_data(id, &files)?;
        for item in items {
            let digest = item
                .digest
                .clone()
                .unwrap_or_else(|| sha256_digest(&item.data));
            if !image.big_data_names.contains(&item.key) {
                image.big_data_names.push(item.key.clone());
            }
            image
                .big_data_sizes
                .insert(item.key.clone(), item.data.len() as i64);
            image.big_data_digests.insert(item.key.clone(), digest);
        }
        Ok(())
    }

    /// Delete an image no container uses, with its mapped copies and every
    /// layer of its chain that no other image, container or layer uses.
    /// Returns the ids of the removed layers. Refused, with nothing
    /// written, when the store's records cannot be trusted.
    ///
    /// # Locking
    /// Exclusive `layers.lock`; shared `mountpoints.lock` (nested);
    /// exclusive `images.lock`; shared `containers.lock`.
    pub fn delete_image(
        &self,
        driver: &dyn Driver,
        query: &str,
    ) -> Result<Vec<String>, StoreError> {
        let mut layers = self.layers.begin(check_parents)?;
        let mounts = self.mounts.read_shared()?;
        let mut images = self.images.begin(|_, _| Ok(()))?;
        let containers = self.containers.read_shared()?;
        self.check_held(&layers, Some(&mounts), &images, &containers)?;
        let containers = containers.records;
        let image = lookup(&images.records, query)?.clone();
        let image_id = ImageId::parse(&image.id)?;
        if let Some(c) = containers.iter().find(|c| c.image == image.id) {
            return Err(StoreError::InUse {
                kind: "image",
                id: image.id,
                reason: format!("container {} uses it", c.id),
            });
        }
        let doomed = layers_to_remove(&image, &layers.records, &images.records, &containers)
            .iter()
            .map(|id| LayerId::parse(id))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(l) = doomed.iter().find(|l| driver.is_mounted(l)) {
            return Err(StoreError::InUse {
                kind: "image",
                id: image.id,
                reason: format!(
                    "its layer {l} is mounted at {}",
                    driver.mount_point(l).display()
                ),
            });
        }
        images.records.retain(|i| i.id != image.id);
        images.save()?;
        self.remove_image_dir(&image_id)?;
        self.remove_layers(&mut layers, driver, &doomed)?;
        Ok(doomed.into_iter().map(LayerId::into_string).collect())
    }
}

/// Move `names` to image `id`: drop them from every other image and push
/// each to the front of `id`'s `names-history`.
fn add_names(images: &mut [Image], id: &str, names: &[String]) {
    for other in images.iter_mut().filter(|i| i.id != id) {
        other.names.retain(|n| !names.contains(n));
    }
    if let Some(image) = images.iter_mut().find(|i| i.id == id) {
        for name in names {
            if !image.names.contains(name) {
                image.names.push(name.clone());
            }
            image.names_history.retain(|n| n != name);
            image.names_history.insert(0, name.clone());
        }
    }
}

/// The layers deleting `image` removes, in containers/storage's order:
/// its mapped copies first, then its chain from the top down while each
/// layer is not a container's, not another image's top or mapped layer,
/// and has no children other than layers already slated.
fn layers_to_remove(
    image: &Image,
    layers: &[Layer],
    images: &[Image],
    containers: &[crate::records::Container],
) -> Vec<String> {
    use std::collections::{HashMap, HashSet};
    let others: HashSet<&str> = images
        .iter()
        .filter(|i| i.id != image.id)
        .flat_map(|i| std::iter::once(&i.top_layer).chain(&i.mapped_layers))
        .map(String::as_str)
        .collect();
    let by_id: HashMap<&str, &Layer> = layers.iter().map(|l| (l.id.as_str(), l)).collect();
    let mut doomed: Vec<String> = Vec::new();
    let mut slated: HashSet<&str> = HashSet::new();
    // A copy listed twice is removed once.
    for m in &image.mapped_layers {
        if by_id.contains_key(m.as_str()) && slated.insert(m.as_str()) {
            doomed.push(m.clone());
        }
    }
    let in_containers: HashSet<&str> = containers.iter().map(|c| c.layer.as_str()).collect();
    let mut children: HashMap<&str, Vec<&str>> = HashMap::new();
    for l in layers {
        children
            .entry(l.parent.as_str())
            .or_default()
            .push(l.id.as_str());
    }
    let mut next = image.top_layer.as_str();
    while !next.is_empty() {
        let Some(layer) = by_id.get(next).copied() else {
            break;
        };
        let used = in_containers.contains(layer.id.as_str()) || others.contains(layer.id.as_str());
        let foreign_child = children
            .get(layer.id.as_str())
            .is_some_and(|c| c.iter().any(|child| !slated.contains(child)));
        if used || foreign_child {
            break;
        }
        doomed.push(layer.id.clone());
        slated.insert(layer.id.as_str());
        next = layer.parent.as_str();
    }
    doomed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Container;

    fn layer(id: &str, parent: &str) -> Layer {
        Layer {
            id: id.into(),
            parent: parent.into(),
            ..Layer::default()
        }
    }

    fn image(id: &str, top: &str, mapped: &[&str]) -> Image {
        Image {
            id: id.into(),
            top_layer: top.into(),
            mapped_layers: mapped.iter().map(|s| s.to_string()).collect(),
            ..Image::default()
        }
    }

    #[test]
    fn deletion_order_follows_containers_storage() {
        // base <- mid <- top (image a) ; base <- m (mapped copy of top for a)
        // base <- other (image b)
        let layers = vec![
            layer("base", ""),
            layer("mid", "base"),
            layer("top", "mid"),
            layer("m", "mid"),
            layer("other", "base"),
        ];
        let images = vec![image("a", "top", &["m"]), image("b", "other", &[])];
        let doomed = layers_to_remove(&images[0], &layers, &images, &[]);
        // The mapped copy first; base stays (image b's chain uses it).
        assert_eq!(doomed, ["m", "top", "mid"]);
        // A container on the mapped copy keeps mid (and m is still listed:
        // c/storage deletes mapped layers first; the container check is the
        // caller's, which refuses the image while containers use it).
        let ctr = Container {
            id: "c".into(),
            layer: "cl".into(),
            ..Container::default()
        };
        let mut with_child = layers.clone();
        with_child.push(layer("cl", "top"));
        let doomed = layers_to_remove(&images[0], &with_child, &images, &[ctr]);
        assert_eq!(doomed, ["m"]);
        // A top layer shared with another image is kept.
        let images = vec![image("a", "top", &[]), image("b", "top", &[])];
        assert!(layers_to_remove(&images[0], &layers, &images, &[]).is_empty());
    }

    #[test]
    fn names_move_and_history_grows() {
        let mut images = vec![image("a", "", &[]), image("b", "", &[])];
        images[1].names = vec!["x:1".into()];
        add_names(&mut images, "a", &["x:1".into(), "y:2".into()]);
        assert_eq!(images[0].names, ["x:1", "y:2"]);
        assert_eq!(images[0].names_history, ["y:2", "x:1"]);
        assert!(images[1].names.is_empty());
    }
}
