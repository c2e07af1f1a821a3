//! The image metadata around the imported layers: the config's DiffIDs,
//! a config and manifest for sources that have none (a bare tarball gets
//! an OCI config and manifest as `podman import` makes them; a docker
//! archive gets a Docker schema 2 manifest as containers/image makes for
//! it), and the image record with config and manifest as big data.

use layerstore::gojson::GoTime;
use layerstore::ops::{BigData, NewImage};
use layerstore::records::Layer;
use layerstore::Store;
use serde_json::{json, Value};
use sha2::Digest;

use super::source::ImageParts;
use super::{ImportError, ImportedLayer};

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The config's `rootfs.diff_ids`, checked against the number of layers.
pub(crate) fn config_diff_ids(
    config: Option<&[u8]>,
    layers: usize,
) -> Result<Option<Vec<String>>, ImportError> {
    let Some(bytes) = config else { return Ok(None) };
    let bad = |reason: String| ImportError::Malformed {
        source_name: "image config".into(),
        reason,
    };
    let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    let ids: Vec<String> = v
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no rootfs.diff_ids".into()))?
        .iter()
        .map(|d| {
            d.as_str()
                .map(str::to_owned)
                .ok_or_else(|| bad("a DiffID is not a string".into()))
        })
        .collect::<Result<_, _>>()?;
    if ids.len() != layers {
        return Err(bad(format!("{} DiffIDs for {layers} layers", ids.len())));
    }
    if let Some(bad_id) = ids.iter().find(|d| !is_sha256(d)) {
        return Err(bad(format!("DiffID {bad_id:?} is not a sha256 digest")));
    }
    Ok(Some(ids))
}

fn is_sha256(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// An OCI config for a bare tarball's single layer.
fn tarball_config(layers: &[(ImportedLayer, Layer)]) -> Vec<u8> {
    let now = GoTime::now().to_go_string();
    let diff_ids: Vec<&str> = layers.iter().map(|(l, _)| l.diff_digest.as_str()).collect();
    let config = json!({
        "created": now,
        "architecture": go_arch(),
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": now, "created_by": "layerstore import", "comment": "imported from tarball"}],
    });
    serde_json::to_vec(&config).unwrap_or_default()
}

fn layer_media_type(docker: bool, layer: &Layer) -> &'static str {
    match (docker, layer.compression) {
        (true, 2) => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        (true, 4) => "application/vnd.docker.image.rootfs.diff.tar.zstd",
        (true, _) => "application/vnd.docker.image.rootfs.diff.tar",
        (false, 2) => "application/vnd.oci.image.layer.v1.tar+gzip",
        (false, 4) => "application/vnd.oci.image.layer.v1.tar+zstd",
        (false, _) => "application/vnd.oci.image.layer.v1.tar",
    }
}

/// A manifest for `config` and the imported layers: Docker schema 2 when
/// `docker`, else OCI.
fn manifest(docker: bool, config: &[u8], layers: &[(ImportedLayer, Layer)]) -> Vec<u8> {
    let layers: Vec<Value> = layers
        .iter()
        .map(|(_, l)| {
            json!({
                "mediaType": layer_media_type(docker, l),
                "size": l.compressed_size,
                "digest": l.compressed_diff_digest,
            })
        })
        .collect();
    let (mt, config_mt) = if docker {
        (
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.container.image.v1+json",
        )
    } else {
        (
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.config.v1+json",
        )
    };
    let m = json!({
        "schemaVersion": 2,
        "mediaType": mt,
        "config": {"mediaType": config_mt, "size": config.len(), "digest": format!("sha256:{}", sha256_hex(config))},
        "layers": layers,
    });
    serde_json::to_vec(&m).unwrap_or_default()
}

/// Create the image record (or add names to the image if the store has
/// it already). Returns the image id, its names and whether it existed.
pub(crate) fn commit_image(
    store: &Store,
    parts: &ImageParts,
    layers: &[(ImportedLayer, Layer)],
    names: Vec<String>,
) -> Result<(String, Vec<String>, bool), ImportError> {
    let config = parts
        .config
        .clone()
        .unwrap_or_else(|| tarball_config(layers));
    let manifest = parts
        .manifest
        .clone()
        .unwrap_or_else(|| manifest(parts.config.is_some(), &config, layers));
    let id = sha256_hex(&config);
    let manifest_digest = format!("sha256:{}", sha256_hex(&manifest));
    if store.snapshot()?.images.iter().any(|i| i.id == id) {
        let image = store.add_image_names(&id, &names)?;
        return Ok((id, image.names, true));
    }
    let created = serde_json::from_slice::<Value>(&config)
        .ok()
        .and_then(|v| {
            v.get("created")
                .and_then(Value::as_str)
                .and_then(|t| GoTime::parse(t).ok())
        })
        .map(|t| GoTime(t.0.with_timezone(&chrono::Utc).fixed_offset()));
    let metadata = json!({"signatures-sizes": {manifest_digest.as_str(): []}}).to_string();
    let new = NewImage {
        id: id.clone(),
        names,
        top_layer: layers.last().map(|(l, _)| l.id.clone()).unwrap_or_default(),
        digest: manifest_digest.clone(),
        metadata,
        created,
        big_data: vec![
            BigData {
                key: format!("sha256:{id}"),
                data: config,
                digest: None,
            },
            BigData {
                key: format!("manifest-{manifest_digest}"),
                data: manifest.clone(),
                digest: Some(manifest_digest.clone()),
            },
            BigData {
                key: "manifest".into(),
                data: manifest,
                digest: Some(manifest_digest),
            },
        ],
    };
    let image = store.create_image(new)?;
    Ok((id, image.names, false))
}
