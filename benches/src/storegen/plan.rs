//! The records of one generated image, as pure functions of the shape and
//! the image's index: ids, link names, times, sizes, big data. Both the
//! in-memory [`super::records`] and the on-disk [`super::generate`] are
//! built from [`image`], so they agree record for record.
//!
//! Ids follow containers/image where it matters for lookups: a base
//! layer's id is the hex of its diff digest, a child's is
//! `sha256(<parent id>+<diff hex>)`, an image's id is the digest of its
//! config; every other id (mapped copies, containers, their layers) is the
//! sha256 of a counter, so all of them look like random hex.

use chrono::DateTime;
use layerstore::gojson::GoTime;
use layerstore::idmap::IdMap;
use layerstore::records::{Container, Image, Layer};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::Shape;

/// `compression` of a gzip-compressed blob (`archive.Gzip`).
const GZIP: i64 = 2;
/// 2024-01-01T00:00:00Z: the first record's `created`.
const EPOCH_SECS: i64 = 1_704_067_200;
/// Time between two consecutive layer records (not a round number, so
/// that the fractions Go trims vary).
const STEP_NS: i64 = 1_234_567_891;
/// The first host id of the mapped copies' mappings.
const FIRST_HOST_ID: u32 = 100_000;
/// Ids per mapping.
const MAP_SIZE: u32 = 65_536;
/// Distinct mappings before they repeat (keeps host ids within u32).
const MAPPINGS: usize = 60_000;
/// sha256 of nothing: the digest of an empty signature item.
const EMPTY_DIGEST: &str =
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Which part of an image a layer record is; it decides what the overlay
/// driver keeps in the layer's directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The image's base layer (no parent).
    Base,
    /// The image's top layer (parent: base).
    Top,
    /// A mapped copy of the top layer (record parent: base; driver
    /// parent: the top layer it was copied from).
    Mapped,
    /// A container's read-write layer.
    Container,
}

/// One layer record and what the overlay driver keeps for it.
#[derive(Debug, Clone)]
pub(crate) struct LayerPlan {
    pub record: Layer,
    pub kind: Kind,
    /// The `link` file's content and the layer's `l/` name.
    pub link: String,
    /// Link names of the layers below, nearest first, as the `lower` file
    /// lists them (`l/<name>:...`); empty for a base layer.
    pub lowers: Vec<String>,
    /// Host uid and gid of the layer's root (0, or the first host id of the
    /// layer's mapping): the owner of the layer's directories.
    pub owner: u32,
}

/// An image, its layers, its containers and its big-data items.
#[derive(Debug, Clone)]
pub(crate) struct ImagePlan {
    pub layers: Vec<LayerPlan>,
    pub image: Image,
    /// Big-data items of the image, by key, in `big-data-names` order.
    pub big_data: Vec<(String, Vec<u8>)>,
    pub containers: Vec<Container>,
}

/// The sha256 of `text` as 64 lowercase hex digits.
fn sha_hex(text: &[u8]) -> String {
    hex(&Sha256::digest(text))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// A random-looking id for the `n`th thing of kind `tag` in image `image`.
fn counter_id(tag: &str, image: usize, n: usize) -> String {
    sha_hex(format!("layerstore-storegen/{tag}/{image}/{n}").as_bytes())
}

/// A 26-character base32 name (`A-Z2-7`), as the overlay driver's
/// `generateID(26)` makes them, derived from the layer id.
fn link_name(layer_id: &str) -> String {
    const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = Sha256::digest(format!("link/{layer_id}").as_bytes());
    // 26 characters of 5 bits: the first 130 bits of the digest.
    let bits = u128::from_be_bytes(digest[..16].try_into().expect("16 bytes"));
    let mut out = String::with_capacity(26);
    for i in 0..25 {
        out.push(BASE32[((bits >> (123 - 5 * i)) & 31) as usize] as char);
    }
    out.push(BASE32[usize::from(digest[16] >> 3)] as char);
    out
}

/// `created` of the `seq`th record of the store.
fn created(seq: usize, extra_ns: i64) -> GoTime {
    let ns = seq as i64 * STEP_NS + extra_ns;
    let time =
        DateTime::from_timestamp(EPOCH_SECS + ns / 1_000_000_000, (ns % 1_000_000_000) as u32)
            .expect("a time in the 21st century");
    GoTime(time.fixed_offset())
}

/// The `m`th mapping a mapped copy is made for: root at
/// `100000 + m * 65536`, 65536 ids, the same for uids and gids.
pub(crate) fn mapping(m: usize) -> Vec<IdMap> {
    vec![IdMap {
        container_id: 0,
        host_id: FIRST_HOST_ID + (m % MAPPINGS) as u32 * MAP_SIZE,
        size: MAP_SIZE,
    }]
}

/// A size between `min` and `2 * min` picked by `seed`.
fn size(seed: &str, min: i64) -> i64 {
    let digest = Sha256::digest(seed.as_bytes());
    let n = i64::from(u32::from_be_bytes(digest[..4].try_into().expect("4 bytes")));
    min + n % min
}

/// An image layer as a pull leaves it: gzip blob digest and size, diff
/// digest and size, owners root only.
fn pulled_layer(id: String, parent: String, diff_hex: &str, seed: &str, seq: usize) -> Layer {
    let diff_size = size(&format!("{seed}/diff-size"), 8 << 20);
    Layer {
        id,
        parent,
        created: created(seq, 0),
        compressed_diff_digest: format!("sha256:{}", sha_hex(format!("{seed}/blob").as_bytes())),
        compressed_size: diff_size * 2 / 5,
        diff_digest: format!("sha256:{diff_hex}"),
        diff_size,
        compression: GZIP,
        uidset: vec![0],
        gidset: vec![0],
        ..Layer::default()
    }
}

/// The name of image `i`.
pub(crate) fn image_name(i: usize) -> String {
    format!("localhost/img{i}:latest")
}

/// The name of container `k` of image `i`.
pub(crate) fn container_name(i: usize, k: usize) -> String {
    format!("ctr{i}-{k}")
}

/// The OCI config and manifest of an image of `layers`.
fn config_and_manifest(layers: &[&Layer], created: &GoTime) -> (Vec<u8>, Vec<u8>) {
    let when = created.to_go_string();
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_digest.as_str()).collect();
    let history: Vec<Value> = (0..layers.len())
        .map(|n| json!({"created": when, "created_by": format!("/bin/sh -c #(nop) layer {n}")}))
        .collect();
    let config = json!({
        "created": when,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    })
    .to_string()
    .into_bytes();
    let blobs: Vec<Value> = layers
        .iter()
        .map(|l| {
            json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": l.compressed_diff_digest,
                "size": l.compressed_size,
            })
        })
        .collect();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{}", sha_hex(&config)),
            "size": config.len(),
        },
        "layers": blobs,
    })
    .to_string()
    .into_bytes();
    (config, manifest)
}

/// The big data podman 4.3.1 stores for a pulled image, in its order:
/// config (keyed by its digest), manifest (by digest and as `manifest`),
/// an empty signature list; with the image id (the config digest's hex)
/// and digest (the manifest's).
fn big_data(config: Vec<u8>, manifest: Vec<u8>) -> (Vec<(String, Vec<u8>)>, String, String) {
    let id = sha_hex(&config);
    let digest = format!("sha256:{}", sha_hex(&manifest));
    let items = vec![
        (format!("sha256:{id}"), config),
        (format!("manifest-{digest}"), manifest.clone()),
        ("manifest".to_string(), manifest),
        (
            format!("signature-{}", &digest["sha256:".len()..]),
            Vec::new(),
        ),
    ];
    (items, id, digest)
}

/// The image record podman 4.3.1 writes after a pull, with its big data.
fn image_record(
    i: usize,
    (id, digest): (String, String),
    top: &Layer,
    big_data: &[(String, Vec<u8>)],
    created: GoTime,
) -> Image {
    let mut image = Image {
        id,
        digest,
        names: vec![image_name(i)],
        names_history: vec![image_name(i)],
        top_layer: top.id.clone(),
        created,
        ..Image::default()
    };
    image.metadata = json!({"signatures-sizes": {image.digest.as_str(): []}}).to_string();
    for (key, data) in big_data {
        image.big_data_names.push(key.clone());
        image.big_data_sizes.insert(key.clone(), data.len() as i64);
        let digest = if data.is_empty() {
            EMPTY_DIGEST.to_string()
        } else {
            format!("sha256:{}", sha_hex(data))
        };
        image.big_data_digests.insert(key.clone(), digest);
    }
    image
}

/// Image `i` of `shape`: its base and top layers, mapped copies, container
/// layers and containers, in the order `layers.json` lists them.
pub(crate) fn image(shape: &Shape, i: usize) -> ImagePlan {
    let mut seq = shape.layers_before(i);
    let seed = |what: &str| format!("layerstore-storegen/{i}/{what}");

    let base_hex = sha_hex(seed("base/diff").as_bytes());
    let base = pulled_layer(
        base_hex.clone(),
        String::new(),
        &base_hex,
        &seed("base"),
        seq,
    );
    let top_hex = sha_hex(seed("top/diff").as_bytes());
    let top_id = sha_hex(format!("{}+{top_hex}", base.id).as_bytes());
    let top = pulled_layer(top_id, base.id.clone(), &top_hex, &seed("top"), seq + 1);
    seq += 2;

    let image_created = created(seq - 1, 1_000_000);
    let (config, manifest) = config_and_manifest(&[&base, &top], &image_created);
    let (big_data, id, digest) = big_data(config, manifest);
    let mut image = image_record(i, (id, digest), &top, &big_data, image_created);

    let base_link = link_name(&base.id);
    let top_link = link_name(&top.id);
    let mut layers = vec![
        LayerPlan {
            link: base_link.clone(),
            lowers: Vec::new(),
            kind: Kind::Base,
            owner: 0,
            record: base,
        },
        LayerPlan {
            link: top_link.clone(),
            lowers: vec![base_link.clone()],
            kind: Kind::Top,
            owner: 0,
            record: top.clone(),
        },
    ];

    for m in 0..shape.mapped_copies(i) {
        let maps = mapping(m);
        let record = Layer {
            id: counter_id("mapped", i, m),
            created: created(seq, 0),
            uidmap: maps.clone(),
            gidmap: maps.clone(),
            ..top.clone()
        };
        seq += 1;
        image.mapped_layers.push(record.id.clone());
        layers.push(LayerPlan {
            link: link_name(&record.id),
            // The driver made the copy as a child of the top layer.
            lowers: vec![top_link.clone(), base_link.clone()],
            kind: Kind::Mapped,
            owner: maps[0].host_id,
            record,
        });
    }

    let mut containers = Vec::new();
    for k in 0..shape.containers_per_image {
        // Every other container runs with a mapping, on a mapped copy.
        let mapped = image.mapped_layers.len();
        let on = if k % 2 == 0 || mapped == 0 {
            1
        } else {
            2 + (k / 2) % mapped
        };
        let (below, maps) = (&layers[on], layers[on].record.uidmap.clone());
        let name = container_name(i, k);
        let record = Layer {
            id: counter_id("container-layer", i, k),
            names: vec![format!("{name}-layer")],
            parent: below.record.id.clone(),
            created: created(seq, 0),
            uidmap: maps.clone(),
            gidmap: maps.clone(),
            ..Layer::default()
        };
        let created_at = created(seq, 2_000_000);
        seq += 1;
        let mut lowers = vec![below.link.clone()];
        lowers.extend(below.lowers.iter().cloned());
        let metadata = json!({
            "image-name": image_name(i),
            "image-id": image.id,
            "name": name,
            "created-at": created_at.0.timestamp(),
        })
        .to_string();
        containers.push(Container {
            id: counter_id("container", i, k),
            names: vec![name],
            image: image.id.clone(),
            layer: record.id.clone(),
            metadata,
            created: created_at,
            uidmap: maps.clone(),
            gidmap: maps.clone(),
            flags: [("MountLabel", ""), ("ProcessLabel", "")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), Value::from(v)))
                .collect(),
            ..Container::default()
        });
        layers.push(LayerPlan {
            link: link_name(&record.id),
            lowers,
            kind: Kind::Container,
            owner: maps.first().map_or(0, |m| m.host_id),
            record,
        });
    }
    ImagePlan {
        layers,
        image,
        big_data,
        containers,
    }
}
