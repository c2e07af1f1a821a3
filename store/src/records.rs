//! The records of a containers/storage store, with the exact JSON keys and
//! field order of containers/storage (v1.43 and current upstream).
//!
//! ```text
//! <graphroot>/overlay-layers/layers.json            [Layer]
//! <graphroot>/overlay-layers/volatile-layers.json   [Layer]       (upstream >= 1.45)
//! <graphroot>/overlay-images/images.json            [Image]
//! <graphroot>/overlay-containers/containers.json    [Container]
//! <graphroot>/overlay-containers/volatile-containers.json [Container] (upstream)
//! <runroot>/overlay-layers/mountpoints.json         [MountPoint]
//! ```
//!
//! Decoding keeps keys this version does not know in `extra`, and encoding
//! writes them back after the known fields. Encoding follows Go's
//! `encoding/json` (see [`crate::gojson`]), so a file podman wrote loads and
//! saves to the same bytes.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::gojson::{null_as_default, GoTime, GoWriter};
use crate::idmap::IdMap;

mod stream;

/// The layer flag containers/storage sets while a layer is being created or
/// deleted; a read-write process that finds it deletes the layer.
pub const FLAG_INCOMPLETE: &str = "incomplete";

/// A layer record (`layers.go:Layer`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Layer {
    /// Layer id (64 hex digits when generated).
    #[serde(deserialize_with = "null_as_default")]
    pub id: String,
    /// Names, unique across layers.
    #[serde(deserialize_with = "null_as_default")]
    pub names: Vec<String>,
    /// The layer this one is stacked on ("" for a base layer).
    #[serde(deserialize_with = "null_as_default")]
    pub parent: String,
    /// Opaque caller metadata.
    #[serde(deserialize_with = "null_as_default")]
    pub metadata: String,
    /// SELinux mount label.
    #[serde(deserialize_with = "null_as_default")]
    pub mountlabel: String,
    /// Creation time.
    pub created: GoTime,
    /// Digest of the blob the layer was populated from.
    #[serde(
        rename = "compressed-diff-digest",
        deserialize_with = "null_as_default"
    )]
    pub compressed_diff_digest: String,
    /// Size of that blob.
    #[serde(rename = "compressed-size", deserialize_with = "null_as_default")]
    pub compressed_size: i64,
    /// Digest of the uncompressed diff (the DiffID).
    #[serde(rename = "diff-digest", deserialize_with = "null_as_default")]
    pub diff_digest: String,
    /// Digest of the table of contents of a partial pull (upstream only).
    #[serde(rename = "toc-digest", deserialize_with = "null_as_default")]
    pub toc_digest: String,
    /// Size of the uncompressed diff.
    #[serde(rename = "diff-size", deserialize_with = "null_as_default")]
    pub diff_size: i64,
    /// Compression of the blob (0 none, 1 bzip2, 2 gzip, 3 xz, 4 zstd).
    #[serde(deserialize_with = "null_as_default")]
    pub compression: i64,
    /// Container-side uids found in the diff's tar headers.
    #[serde(deserialize_with = "null_as_default")]
    pub uidset: Vec<u32>,
    /// Container-side gids found in the diff's tar headers.
    #[serde(deserialize_with = "null_as_default")]
    pub gidset: Vec<u32>,
    /// Flags (only `incomplete` is known).
    #[serde(deserialize_with = "null_as_default")]
    pub flags: BTreeMap<String, Value>,
    /// Ownership mapping of the layer's files (empty: host).
    #[serde(deserialize_with = "null_as_default")]
    pub uidmap: Vec<IdMap>,
    /// Ownership mapping of the layer's files (empty: host).
    #[serde(deserialize_with = "null_as_default")]
    pub gidmap: Vec<IdMap>,
    /// Keys of the layer's big-data items.
    #[serde(rename = "big-data-names", deserialize_with = "null_as_default")]
    pub big_data_names: Vec<String>,
    /// Keys this version does not know, kept and written back.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// Whether the record lives in `volatile-layers.json` (not a JSON key).
    #[serde(skip)]
    pub volatile: bool,
}

impl Layer {
    /// Whether the layer carries the `incomplete` flag.
    pub fn is_incomplete(&self) -> bool {
        matches!(self.flags.get(FLAG_INCOMPLETE), Some(Value::Bool(true)))
    }

    /// Whether the layer's files are stored with a non-host mapping, as a
    /// mapped template copy of an image's top layer is.
    pub fn is_mapped(&self) -> bool {
        !self.uidmap.is_empty() || !self.gidmap.is_empty()
    }
}

/// An image record (`images.go:Image`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Image {
    /// Image id.
    #[serde(deserialize_with = "null_as_default")]
    pub id: String,
    /// Explicit digest.
    #[serde(deserialize_with = "null_as_default")]
    pub digest: String,
    /// Names (references), unique across images.
    #[serde(deserialize_with = "null_as_default")]
    pub names: Vec<String>,
    /// Names the image had, newest first.
    #[serde(rename = "names-history", deserialize_with = "null_as_default")]
    pub names_history: Vec<String>,
    /// The top layer.
    #[serde(rename = "layer", deserialize_with = "null_as_default")]
    pub top_layer: String,
    /// Ids of ID-mapped copies of the top layer, in creation order.
    #[serde(rename = "mapped-layers", deserialize_with = "null_as_default")]
    pub mapped_layers: Vec<String>,
    /// Opaque caller metadata.
    #[serde(deserialize_with = "null_as_default")]
    pub metadata: String,
    /// Keys of big-data items (manifest, config, signatures), in insertion order.
    #[serde(rename = "big-data-names", deserialize_with = "null_as_default")]
    pub big_data_names: Vec<String>,
    /// Sizes of the big-data items.
    #[serde(rename = "big-data-sizes", deserialize_with = "null_as_default")]
    pub big_data_sizes: BTreeMap<String, i64>,
    /// Digests of the big-data items.
    #[serde(rename = "big-data-digests", deserialize_with = "null_as_default")]
    pub big_data_digests: BTreeMap<String, String>,
    /// Creation time.
    pub created: GoTime,
    /// Flags.
    #[serde(deserialize_with = "null_as_default")]
    pub flags: BTreeMap<String, Value>,
    /// Keys this version does not know, kept and written back.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A container record (`containers.go:Container`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Container {
    /// Container id.
    #[serde(deserialize_with = "null_as_default")]
    pub id: String,
    /// Names, unique across containers.
    #[serde(deserialize_with = "null_as_default")]
    pub names: Vec<String>,
    /// The image id (always written, may be empty).
    #[serde(rename = "image", deserialize_with = "null_as_default")]
    pub image: String,
    /// The container's read-write layer (always written).
    #[serde(rename = "layer", deserialize_with = "null_as_default")]
    pub layer: String,
    /// Opaque caller metadata (podman: JSON with image-name, name, created-at).
    #[serde(deserialize_with = "null_as_default")]
    pub metadata: String,
    /// Keys of big-data items.
    #[serde(rename = "big-data-names", deserialize_with = "null_as_default")]
    pub big_data_names: Vec<String>,
    /// Sizes of the big-data items.
    #[serde(rename = "big-data-sizes", deserialize_with = "null_as_default")]
    pub big_data_sizes: BTreeMap<String, i64>,
    /// Digests of the big-data items.
    #[serde(rename = "big-data-digests", deserialize_with = "null_as_default")]
    pub big_data_digests: BTreeMap<String, String>,
    /// Creation time.
    pub created: GoTime,
    /// The uid mapping the container runs with (empty: host).
    #[serde(deserialize_with = "null_as_default")]
    pub uidmap: Vec<IdMap>,
    /// The gid mapping the container runs with (empty: host).
    #[serde(deserialize_with = "null_as_default")]
    pub gidmap: Vec<IdMap>,
    /// Flags: `MountLabel`, `ProcessLabel`, `MountOpts`, `Volatile`.
    #[serde(deserialize_with = "null_as_default")]
    pub flags: BTreeMap<String, Value>,
    /// Keys this version does not know, kept and written back.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// Whether the record lives in `volatile-containers.json` (not a JSON key).
    #[serde(skip)]
    pub volatile: bool,
}

/// A `mountpoints.json` entry (`layers.go:layerMountPoint`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct MountPoint {
    /// The mounted layer's id.
    #[serde(deserialize_with = "null_as_default")]
    pub id: String,
    /// Where it is mounted (`<graphroot>/overlay/<id>/merged`).
    #[serde(deserialize_with = "null_as_default")]
    pub path: String,
    /// How many users hold the mount.
    #[serde(deserialize_with = "null_as_default")]
    pub count: i64,
    /// Keys this version does not know, kept and written back.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A record type stored as a JSON array in one of the store's files.
pub trait Record: for<'de> Deserialize<'de> {
    /// What the records are called in messages ("layer", "image", ...).
    const KIND: &'static str;
    /// The record's id.
    fn id(&self) -> &str;
    /// The record's names (empty for mount points).
    fn names(&self) -> &[String];
    /// Append the record in Go's encoding.
    fn encode(&self, w: &mut GoWriter);
    /// Whether the record belongs in the table's volatile file.
    fn is_volatile(&self) -> bool {
        false
    }
    /// Note which file the record was read from (ignored where a table has
    /// no volatile file).
    fn set_volatile(&mut self, _volatile: bool) {}
}

fn id_maps(w: &mut GoWriter, key: &str, maps: &[IdMap]) {
    if maps.is_empty() {
        return;
    }
    w.key(key);
    w.begin_array();
    for m in maps {
        w.element();
        w.begin_object();
        w.int_field("container_id", i64::from(m.container_id));
        w.int_field("host_id", i64::from(m.host_id));
        w.int_field("size", i64::from(m.size));
        w.end_object();
    }
    w.end_array();
}

impl Record for Layer {
    fn is_volatile(&self) -> bool {
        self.volatile
    }
    fn set_volatile(&mut self, volatile: bool) {
        self.volatile = volatile;
    }
    const KIND: &'static str = "layer";
    fn id(&self) -> &str {
        &self.id
    }
    fn names(&self) -> &[String] {
        &self.names
    }
    fn encode(&self, w: &mut GoWriter) {
        w.begin_object();
        w.str_field("id", &self.id);
        w.strs_omitempty("names", &self.names);
        w.str_omitempty("parent", &self.parent);
        w.str_omitempty("metadata", &self.metadata);
        w.str_omitempty("mountlabel", &self.mountlabel);
        w.time_field("created", &self.created);
        w.str_omitempty("compressed-diff-digest", &self.compressed_diff_digest);
        w.int_omitempty("compressed-size", self.compressed_size);
        w.str_omitempty("diff-digest", &self.diff_digest);
        w.str_omitempty("toc-digest", &self.toc_digest);
        w.int_omitempty("diff-size", self.diff_size);
        w.int_omitempty("compression", self.compression);
        w.u32s_omitempty("uidset", &self.uidset);
        w.u32s_omitempty("gidset", &self.gidset);
        w.any_map_omitempty("flags", &self.flags);
        id_maps(w, "uidmap", &self.uidmap);
        id_maps(w, "gidmap", &self.gidmap);
        w.strs_omitempty("big-data-names", &self.big_data_names);
        w.extra_fields(&self.extra);
        w.end_object();
    }
}

impl Record for Image {
    const KIND: &'static str = "image";
    fn id(&self) -> &str {
        &self.id
    }
    fn names(&self) -> &[String] {
        &self.names
    }
    fn encode(&self, w: &mut GoWriter) {
        w.begin_object();
        w.str_field("id", &self.id);
        w.str_omitempty("digest", &self.digest);
        w.strs_omitempty("names", &self.names);
        w.strs_omitempty("names-history", &self.names_history);
        w.str_omitempty("layer", &self.top_layer);
        w.strs_omitempty("mapped-layers", &self.mapped_layers);
        w.str_omitempty("metadata", &self.metadata);
        w.strs_omitempty("big-data-names", &self.big_data_names);
        w.int_map_omitempty("big-data-sizes", &self.big_data_sizes);
        w.str_map_omitempty("big-data-digests", &self.big_data_digests);
        w.time_field("created", &self.created);
        w.any_map_omitempty("flags", &self.flags);
        w.extra_fields(&self.extra);
        w.end_object();
    }
}

impl Record for Container {
    fn is_volatile(&self) -> bool {
        self.volatile
    }
    fn set_volatile(&mut self, volatile: bool) {
        self.volatile = volatile;
    }
    const KIND: &'static str = "container";
    fn id(&self) -> &str {
        &self.id
    }
    fn names(&self) -> &[String] {
        &self.names
    }
    fn encode(&self, w: &mut GoWriter) {
        w.begin_object();
        w.str_field("id", &self.id);
        w.strs_omitempty("names", &self.names);
        w.str_field("image", &self.image);
        w.str_field("layer", &self.layer);
        w.str_omitempty("metadata", &self.metadata);
        w.strs_omitempty("big-data-names", &self.big_data_names);
        w.int_map_omitempty("big-data-sizes", &self.big_data_sizes);
        w.str_map_omitempty("big-data-digests", &self.big_data_digests);
        w.time_field("created", &self.created);
        id_maps(w, "uidmap", &self.uidmap);
        id_maps(w, "gidmap", &self.gidmap);
        w.any_map_omitempty("flags", &self.flags);
        w.extra_fields(&self.extra);
        w.end_object();
    }
}

impl Record for MountPoint {
    const KIND: &'static str = "mount point";
    fn id(&self) -> &str {
        &self.id
    }
    fn names(&self) -> &[String] {
        &[]
    }
    fn encode(&self, w: &mut GoWriter) {
        w.begin_object();
        w.str_field("id", &self.id);
        w.str_field("path", &self.path);
        w.int_field("count", self.count);
        w.extra_fields(&self.extra);
        w.end_object();
    }
}

/// Encode a whole file's records as containers/storage writes them
/// (compact JSON array, `[]` when empty, no trailing newline).
pub fn encode_file<R: Record>(records: &[R]) -> Vec<u8> {
    encode_records(records)
}

/// [`encode_file`] of records given by reference (a table's main or
/// volatile share, without copying them).
pub fn encode_records<'a, R: Record + 'a>(records: impl IntoIterator<Item = &'a R>) -> Vec<u8> {
    let mut w = GoWriter::new();
    w.begin_array();
    for r in records {
        w.element();
        r.encode(&mut w);
    }
    w.end_array();
    w.into_bytes()
}

/// Why a metadata file's bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Index of the offending record, when the array itself parsed.
    pub index: Option<usize>,
    /// Id of the offending record, when it had a readable one.
    pub id: Option<String>,
    /// serde_json's description, with line and column.
    pub message: String,
}

/// Decode a whole file's records. An empty (or whitespace-only) file is an
/// empty list, as containers/storage treats it. The first bad record fails
/// the whole file; [`decode_records`] keeps the others.
pub fn decode_file<R: Record>(bytes: &[u8]) -> Result<Vec<R>, DecodeError> {
    decode_records(bytes)?.into_iter().collect()
}

/// Decode a file's records one by one: `Err` for the whole file when it is
/// not a JSON array, else one result per element, so that one bad record
/// does not hide the rest.
pub fn decode_records<R: Record>(bytes: &[u8]) -> Result<Vec<Result<R, DecodeError>>, DecodeError> {
    match decode_records_from::<R>(bytes) {
        Ok(decoded) => decoded,
        // A slice never fails to read.
        Err(e) => Err(DecodeError {
            index: None,
            id: None,
            message: e.to_string(),
        }),
    }
}

/// [`decode_records`] of a file read as it is parsed: one element's bytes
/// at a time are held besides the records, never the whole file (a 500 MB
/// `layers.json` is not read into memory first). The array is split into
/// its elements by a scan that follows strings and nesting, and each
/// element is decoded from its own bytes. `Err` is a failure to read;
/// `Ok(Err(..))` a file that is not a JSON array.
pub fn decode_records_from<R: Record>(
    reader: impl std::io::Read,
) -> std::io::Result<Result<Vec<Result<R, DecodeError>>, DecodeError>> {
    let mut out = Vec::new();
    Ok(decode_records_each(reader, |_, r| out.push(r))?.map(|()| out))
}

/// [`decode_records_from`] handing each element's position and result to
/// `each`, in order, as it is decoded: a caller that keeps only the sound
/// records never holds a second list of all of them. After an
/// `Ok(Err(..))` (not a JSON array) the elements already handed over are
/// to be dropped.
pub fn decode_records_each<R: Record>(
    reader: impl std::io::Read,
    mut each: impl FnMut(usize, Result<R, DecodeError>),
) -> std::io::Result<Result<(), DecodeError>> {
    let mut elements = stream::Elements::new(std::io::BufReader::with_capacity(1 << 16, reader));
    let mut element = Vec::new();
    let mut index = 0;
    loop {
        match elements.next(&mut element)? {
            Ok(true) => {
                each(index, decode_one::<R>(index, &element));
                index += 1;
            }
            Ok(false) => return Ok(Ok(())),
            Err(message) => {
                return Ok(Err(DecodeError {
                    index: None,
                    id: None,
                    message,
                }))
            }
        }
    }
}

/// One record from its JSON text: straight into `R`, else (a record the
/// fast path refuses) as a tree of values, which takes a repeated key's
/// last value as Go does, and else says which field is bad.
fn decode_one<R: Record>(index: usize, text: &[u8]) -> Result<R, DecodeError> {
    serde_json::from_slice::<R>(text).or_else(|_| {
        let v: Value = serde_json::from_slice(text).unwrap_or(Value::Null);
        R::deserialize(&v).map_err(|e| {
            let message = e.to_string();
            DecodeError {
                index: Some(index),
                id: v.get("id").and_then(Value::as_str).map(str::to_owned),
                message: match first_bad_field::<R>(&v) {
                    Some(key) if !message.contains(&format!("`{key}`")) => {
                        format!("field {key:?}: {message}")
                    }
                    _ => message,
                },
            }
        })
    })
}

/// The first key of record `v` whose value alone makes decoding fail
/// (serde's messages for flattened structs do not name the field).
fn first_bad_field<R: Record>(v: &Value) -> Option<String> {
    for (key, value) in v.as_object()? {
        let mut single = Map::new();
        single.insert(key.clone(), value.clone());
        if R::deserialize(Value::Object(single)).is_err() {
            return Some(key.clone());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAYER: &str = r#"[{"id":"7748","names":["a"],"parent":"p","created":"2026-11-22T14:07:39.848479976Z","compressed-diff-digest":"sha256:a1","compressed-size":1996800,"diff-digest":"sha256:a1","diff-size":1996800,"uidset":[0,1000],"gidset":[0],"flags":{"incomplete":true},"uidmap":[{"container_id":531571,"host_id":531571,"size":1},{"container_id":0,"host_id":1065537,"size":65536}],"gidmap":[{"container_id":0,"host_id":1065537,"size":65536}],"big-data-names":["x"]}]"#;

    /// A reader handing out `n` bytes at a time (elements cross buffers).
    struct Trickle<'a>(&'a [u8], usize);

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn ids_streamed(input: &[u8], chunk: usize) -> Result<Vec<Result<String, usize>>, String> {
        let decoded = decode_records_from::<Layer>(Trickle(input, chunk)).unwrap();
        decoded
            .map(|records| {
                records
                    .into_iter()
                    .map(|r| r.map(|l| l.id).map_err(|e| e.index.unwrap()))
                    .collect()
            })
            .map_err(|e| e.message)
    }

    #[test]
    fn a_streamed_array_splits_where_json_does() {
        let tricky =
            br#" [ {"id":"a,]}\"[{","names":["x]","y,"]} ,{"id":"b","flags":{"k":[1,[2]]}},
            {"id":"c"}] "#;
        for chunk in [1, 2, 3, 7, 64, 1 << 16] {
            assert_eq!(
                ids_streamed(tricky, chunk),
                Ok(vec![
                    Ok("a,]}\"[{".to_owned()),
                    Ok("b".to_owned()),
                    Ok("c".to_owned())
                ]),
                "chunk {chunk}"
            );
            for blank in [&b""[..], b"  \n", b"[]", b" [ ] "] {
                assert_eq!(ids_streamed(blank, chunk), Ok(vec![]));
            }
            // One bad element is that record's defect; the others stay.
            assert_eq!(
                ids_streamed(br#"[{"id":"a"},{"id":7},{"id":"c"} x,{"id":"d"}]"#, chunk),
                Ok(vec![Ok("a".to_owned()), Err(1), Err(2), Ok("d".to_owned())])
            );
            // Not an array, or not one array: the whole file.
            for bad in [
                &br#"{"id":"a"}"#[..],
                br#"[{"id":"a"}"#,
                br#"[{"id":"a"},]"#,
                br#"[{"id":"a"}] x"#,
                br#"[{"id":"a"}][]"#,
                br#"[,{"id":"a"}]"#,
                br#"[{"id":"a"} {"id":"b"}"#,
                b"[\"unterminated",
            ] {
                assert!(
                    ids_streamed(bad, chunk).is_err(),
                    "{}",
                    String::from_utf8_lossy(bad)
                );
            }
        }
    }

    #[test]
    fn a_repeated_key_takes_its_last_value_as_in_go() {
        let d = decode_records::<Layer>(
            br#"[{"id":"a","id":"b","diff-size":1,"diff-size":2},{"id":7}]"#,
        )
        .unwrap();
        let first = d[0].as_ref().unwrap();
        assert_eq!((first.id.as_str(), first.diff_size), ("b", 2));
        let bad = d[1].as_ref().unwrap_err();
        assert_eq!(bad.index, Some(1));
        assert!(bad.message.contains("id"), "{}", bad.message);
    }

    #[test]
    fn layer_round_trips_byte_for_byte() {
        let layers: Vec<Layer> = decode_file(LAYER.as_bytes()).unwrap();
        assert!(layers[0].is_incomplete());
        assert!(layers[0].is_mapped());
        assert_eq!(encode_file(&layers), LAYER.as_bytes());
    }

    #[test]
    fn unknown_keys_survive_after_known_ones() {
        let input = r#"[{"id":"c","future":{"b":1,"a":2},"image":"","layer":"l","created":"2026-01-01T00:00:00Z","zeta":[1]}]"#;
        let ctrs: Vec<Container> = decode_file(input.as_bytes()).unwrap();
        assert_eq!(
            String::from_utf8(encode_file(&ctrs)).unwrap(),
            r#"[{"id":"c","image":"","layer":"l","created":"2026-01-01T00:00:00Z","future":{"a":2,"b":1},"zeta":[1]}]"#
        );
    }

    #[test]
    fn go_defaults_apply() {
        // Missing created becomes Go's zero time; container image/layer are
        // always written; empty slices and maps are omitted; null is absent.
        let input = r#"[{"id":"c","names":null,"flags":{},"uidmap":[]}]"#;
        let ctrs: Vec<Container> = decode_file(input.as_bytes()).unwrap();
        assert_eq!(
            String::from_utf8(encode_file(&ctrs)).unwrap(),
            r#"[{"id":"c","image":"","layer":"","created":"0001-01-01T00:00:00Z"}]"#
        );
        assert_eq!(encode_file::<Image>(&[]), b"[]");
        assert!(decode_file::<Image>(b"").unwrap().is_empty());
    }

    #[test]
    fn decode_errors_name_the_record() {
        let err = decode_file::<Layer>(br#"[{"id":"ok"},{"id":"bad","names":5}]"#).unwrap_err();
        assert_eq!(err.index, Some(1));
        assert_eq!(err.id.as_deref(), Some("bad"));
        let err = decode_file::<Layer>(br#"[{"id":"ok"},{"id":"#).unwrap_err();
        assert_eq!(err.index, None);
        assert!(err.message.contains("EOF"), "{}", err.message);
        let err = decode_file::<Image>(br#"{"id":"x"}"#).unwrap_err();
        assert!(err.message.contains("sequence"), "{}", err.message);
    }
}
