//! `layerstore import` from OCI layouts and archives (gzip and zstd layers),
//! and hostile or broken input: each fails with a clear error and leaves no
//! layer record, no layer directory and no tar-split file behind.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

use layerstore_test_support::images::{docker_archive, layer_tar, sha256};
use layerstore_test_support::{require_privileged, run_ok, PodmanStore};
use serde_json::{json, Value};

const LAYERSTORE: &str = env!("CARGO_BIN_EXE_layerstore");
const TOOLS: &[&str] = &["podman", "containers-storage", "runc", "busybox"];

const BASE: &str = "
d bin 0755 0:0
F bin/busybox 0755 0:0 /bin/busybox
l bin/sh busybox
l bin/cat busybox
d etc 0755 0:0
f etc/release 0644 0:0 base
";
const TOP: &str = "
f etc/release 0644 0:0 top
";

fn layerstore(store: &PodmanStore, args: &[&str]) -> Output {
    store.layerstore(LAYERSTORE).args(args).output().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// An OCI layout with a gzip base layer and a zstd top layer; returns the
/// image id (config digest hex).
fn oci_layout(dir: &Path, blob_override: Option<(usize, Vec<u8>)>) -> String {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| -> String {
        let d = sha256(data);
        fs::write(blobs.join(&d[7..]), data).unwrap();
        d
    };
    let tars = [layer_tar(BASE), layer_tar(TOP)];
    let blobs_data = [
        gzip(&tars[0]),
        zstd::encode_all(tars[1].as_slice(), 3).unwrap(),
    ];
    let mut layers = Vec::new();
    for (i, b) in blobs_data.iter().enumerate() {
        let digest = put(b);
        if let Some((n, bytes)) = &blob_override {
            if *n == i {
                fs::write(blobs.join(&digest[7..]), bytes).unwrap();
            }
        }
        let mt = if i == 0 {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        } else {
            "application/vnd.oci.image.layer.v1.tar+zstd"
        };
        layers.push(json!({"mediaType": mt, "digest": digest, "size": b.len()}));
    }
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256(&tars[0]), sha256(&tars[1])]},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = put(&config);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": layers,
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let manifest_digest = put(&manifest);
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
            "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "v1"}}],
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    config_digest[7..].to_owned()
}

/// Nothing of any layer is left: no records, no layer dirs, no tar-split.
fn assert_no_layers(store: &PodmanStore) {
    let out = layerstore(store, &["layers", "--json"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    let leftovers: Vec<String> = ["overlay", "overlay-layers"]
        .iter()
        .filter_map(|d| fs::read_dir(store.graph.join(d)).ok())
        .flatten()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| {
            !matches!(
                n.as_str(),
                "l" | ".has-mount-program" | "layers.json" | "layers.lock"
            )
        })
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    if let Ok(links) = fs::read_dir(store.graph.join("overlay/l")) {
        assert_eq!(links.count(), 0, "l/ links left behind");
    }
}

fn fails_cleanly(store: &PodmanStore, source: &str, want: &[&str]) {
    let out = layerstore(store, &["import", "--quiet", source, "bad:1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{source}: {err}");
    for w in want {
        assert!(err.contains(w), "{source}: expected {w:?} in: {err}");
    }
    assert_no_layers(store);
}

#[test]
#[ignore = "privileged: needs root, podman, containers-storage and runc"]
fn oci_layouts_and_archives_import_and_run() {
    require_privileged(TOOLS);
    let store = PodmanStore::empty();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let id = oci_layout(&layout, None);
    let out = layerstore(
        &store,
        &[
            "import",
            "--json",
            &format!("oci:{}:v1", layout.display()),
            "oci-dir",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["image_id"], id.as_str());
    assert_eq!(report["names"][0], "localhost/oci-dir:latest");
    let run = run_ok(store.podman().args([
        "run",
        "--rm",
        "--pull=never",
        "localhost/oci-dir",
        "cat",
        "/etc/release",
    ]));
    assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), "top");
    let layers: Value =
        serde_json::from_slice(&layerstore(&store, &["layers", "--json"]).stdout).unwrap();
    let compression: Vec<i64> = layers
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["compression"].as_i64().unwrap_or(0))
        .collect();
    assert_eq!(
        compression,
        [2, 4],
        "gzip and zstd recorded as containers/storage numbers them"
    );

    // The same image from an oci-archive: the layers and the image are reused.
    let archive = work.path().join("layout.tar");
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&layout)
            .arg("-cf")
            .arg(&archive)
            .arg("."),
    );
    let out = layerstore(
        &store,
        &[
            "import",
            "--json",
            &format!("oci-archive:{}", archive.display()),
            "again",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["image_reused"], true);
    assert!(report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["reused"] == true));
    let names = report["names"].as_array().unwrap();
    assert!(
        names.contains(&json!("localhost/again:latest"))
            && names.contains(&json!("localhost/oci-dir:latest"))
    );
}

#[test]
#[ignore = "privileged: needs root, podman, containers-storage and runc"]
fn broken_and_hostile_sources_leave_nothing_behind() {
    require_privileged(TOOLS);
    let store = PodmanStore::empty();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();

    // A layer blob that does not match the manifest's digest (second layer:
    // the first is imported, then removed again).
    let layout = w.join("tampered");
    oci_layout(
        &layout,
        Some((
            1,
            zstd::encode_all(layer_tar("f etc/evil 0644 0:0 x").as_slice(), 3).unwrap(),
        )),
    );
    fails_cleanly(
        &store,
        &format!("oci:{}", layout.display()),
        &["layer 2", "the blob digest", "the image says"],
    );

    // A tar that climbs out of its layer.
    let escape = w.join("escape.tar");
    fs::write(&escape, tar_with_raw_name(b"../../escaped")).unwrap();
    fails_cleanly(
        &store,
        escape.to_str().unwrap(),
        &["../../escaped", "outside the layer"],
    );
    assert!(!w.join("escaped").exists());

    // A symlink, then a file written through it.
    let through = w.join("through.tar");
    fs::write(
        &through,
        layer_tar("l link /tmp\nf link/planted 0644 0:0 x"),
    )
    .unwrap();
    fails_cleanly(
        &store,
        through.to_str().unwrap(),
        &["link/planted", "symlink"],
    );
    assert!(!Path::new("/tmp/planted").exists());

    // A hard link to a file that comes later.
    let later = w.join("later.tar");
    fs::write(&later, layer_tar("h early later 0644\nf later 0644 0:0 x")).unwrap();
    fails_cleanly(&store, later.to_str().unwrap(), &["early"]);

    // Duplicate entries, truncated streams, garbage, unsupported compression.
    let dup = w.join("dup.tar");
    fs::write(&dup, layer_tar("f a 0644 0:0 1\nf a 0644 0:0 2")).unwrap();
    fails_cleanly(&store, dup.to_str().unwrap(), &["\"a\""]);
    let truncated = w.join("truncated.tar");
    let full = layer_tar(BASE);
    fs::write(&truncated, &full[..full.len() / 2]).unwrap();
    fails_cleanly(&store, truncated.to_str().unwrap(), &["truncated"]);
    let garbage = w.join("garbage.tar");
    fs::write(&garbage, vec![0x5a; 4096]).unwrap();
    fails_cleanly(&store, garbage.to_str().unwrap(), &["garbage.tar"]);
    let xz = w.join("layer.tar.xz");
    fs::write(&xz, b"\xfd7zXZ\x00 not really").unwrap();
    fails_cleanly(&store, xz.to_str().unwrap(), &["xz"]);

    // A docker archive whose manifest names a missing layer, a config whose
    // DiffIDs do not match, and a source that does not exist.
    let good = w.join("good.tar");
    docker_archive(&good, &[layer_tar(BASE)], "x:1");
    let missing = w.join("missing.tar");
    rewrite_member(&good, &missing, "manifest.json", |m| {
        m.replace("/layer.tar", "/gone.tar")
    });
    fails_cleanly(
        &store,
        &format!("docker-archive:{}", missing.display()),
        &["gone.tar", "missing"],
    );
    let wrong = w.join("wrong-diffid.tar");
    docker_archive(&wrong, &[layer_tar(BASE)], "x:1");
    let wrong2 = w.join("wrong-diffid2.tar");
    let bogus = format!("sha256:{}", "0".repeat(64));
    rewrite_member(&wrong, &wrong2, ".json", |c| {
        let v: Value = serde_json::from_str(c).unwrap();
        let real = v["rootfs"]["diff_ids"][0].as_str().unwrap().to_owned();
        c.replace(&real, &bogus)
    });
    fails_cleanly(
        &store,
        &format!("docker-archive:{}", wrong2.display()),
        &["the DiffID", &bogus],
    );
    fails_cleanly(&store, &format!("oci:{}/nope", w.display()), &["nope"]);
    // After all that the store still takes a good image.
    let out = layerstore(
        &store,
        &[
            "import",
            "--quiet",
            &format!("docker-archive:{}", good.display()),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let images = run_ok(
        store
            .podman()
            .args(["images", "--format", "{{.Repository}}:{{.Tag}}"]),
    );
    assert!(String::from_utf8_lossy(&images.stdout).contains("docker.io/library/x:1"));
}

/// A one-entry tar whose name is written as given (no normalisation).
fn tar_with_raw_name(name: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_mode(0o644);
    h.set_size(1);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.push(b'x');
    out.resize(1024, 0);
    out.extend_from_slice(&[0; 1024]);
    out
}

/// Copy a tar archive, changing the (text) member whose name ends with
/// `suffix` (the image config for ".json"; layers are never changed).
fn rewrite_member(from: &Path, to: &Path, suffix: &str, change: impl Fn(&str) -> String) {
    let mut input = tar::Archive::new(fs::File::open(from).unwrap());
    let mut out = tar::Builder::new(fs::File::create(to).unwrap());
    for entry in input.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        let wanted = if suffix == "manifest.json" {
            name == "manifest.json"
        } else {
            name.ends_with(suffix) && name != "manifest.json" && !name.ends_with("layer.tar")
        };
        if wanted {
            data = change(&String::from_utf8(data).unwrap()).into_bytes();
        }
        let mut h = entry.header().clone();
        h.set_size(data.len() as u64);
        out.append_data(&mut h, &name, data.as_slice()).unwrap();
    }
    out.into_inner().unwrap().flush().unwrap();
}
