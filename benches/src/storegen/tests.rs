use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;

use layerstore::config::StoreOptions;
use layerstore::records::encode_file;
use layerstore::Store;
use layerstore_overlay::layout::is_link_name;

use super::*;

#[test]
fn from_layers_makes_exactly_that_many_records() {
    // (layers, images, mapped per image, extra, containers per image)
    let table = [
        (2, 1, 0, 0, 0),
        (3, 1, 0, 0, 1),
        (20, 1, 16, 0, 2),
        (200, 1, 196, 0, 2),
        (201, 2, 96, 1, 2),
        (1_000, 5, 196, 0, 2),
        (1_000_000, 5_000, 196, 0, 2),
        (1_234_567, 6_173, 195, 6_140, 2),
    ];
    for (layers, images, mapped, extra, containers) in table {
        let shape = Shape::from_layers(layers);
        assert_eq!(
            (
                shape.images,
                shape.mapped_per_image,
                shape.extra_mapped,
                shape.containers_per_image
            ),
            (images, mapped, extra, containers),
            "{layers}"
        );
        assert_eq!(shape.layers(), layers);
        let per_image: usize = (0..shape.images).map(|i| shape.image_layers(i)).sum();
        assert_eq!(per_image, layers);
    }
    assert_eq!(Shape::default().layers(), LAYERS_PER_IMAGE);
}

#[test]
fn records_are_deterministic_and_unique() {
    let shape = Shape::from_layers(1_000);
    let (layers, images, containers) = records(&shape);
    assert_eq!(
        records(&shape),
        (layers.clone(), images.clone(), containers.clone())
    );
    assert_eq!(
        (layers.len(), images.len(), containers.len()),
        (1_000, 5, 10)
    );

    let ids: HashSet<&str> = layers.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(ids.len(), layers.len());
    for l in &layers {
        assert!(l.id.len() == 64 && l.id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(l.parent.is_empty() || ids.contains(l.parent.as_str()));
    }
    let links: HashSet<String> = (0..shape.images)
        .flat_map(|i| plan::image(&shape, i).layers)
        .map(|l| l.link)
        .collect();
    assert_eq!(links.len(), layers.len());
    assert!(links.iter().all(|l| l.len() == 26 && is_link_name(l)));

    for image in &images {
        assert_eq!(image.mapped_layers.len(), 196);
        assert!(image.digest.starts_with("sha256:"));
        for m in &image.mapped_layers {
            let copy = layers.iter().find(|l| &l.id == m).unwrap();
            let top = layers.iter().find(|l| l.id == image.top_layer).unwrap();
            assert_eq!(copy.parent, top.parent);
            assert_eq!(copy.diff_digest, top.diff_digest);
            assert_eq!(copy.compressed_diff_digest, top.compressed_diff_digest);
            assert!(copy.is_mapped());
        }
    }
    // Container 0 of an image stacks on its top layer, container 1 on its
    // first mapped copy with that copy's mapping.
    let layer = |id: &str| layers.iter().find(|l| l.id == id).unwrap();
    assert_eq!(layer(&containers[0].layer).parent, images[0].top_layer);
    assert!(containers[0].uidmap.is_empty());
    assert_eq!(
        layer(&containers[1].layer).parent,
        images[0].mapped_layers[0]
    );
    assert_eq!(containers[1].uidmap, plan::mapping(0));
}

fn open(g: &Generated) -> Store {
    let options = StoreOptions {
        graph_root: g.graph.clone(),
        run_root: g.run.clone(),
        driver: "overlay".into(),
        ..StoreOptions::default()
    };
    Store::open(options).unwrap()
}

#[test]
fn generated_store_opens_without_defects() {
    let dir = tempfile::tempdir().unwrap();
    let shape = Shape::from_layers(20);
    let g = generate(dir.path(), &shape).unwrap();
    assert_eq!((g.layers, g.images, g.containers), (20, 1, 2));
    assert_eq!(g.image_name, "localhost/img0:latest");

    let snap = open(&g).snapshot().unwrap();
    assert!(snap.defects.is_empty(), "{:?}", snap.defects);
    assert_eq!(
        (snap.layers.len(), snap.images.len(), snap.containers.len()),
        (20, 1, 2)
    );
    let (layers, images, containers) = records(&shape);
    assert_eq!(snap.layers, layers.clone().into());
    assert_eq!(snap.images, images.clone().into());
    assert_eq!(snap.containers, containers.clone().into());
    snap.check().unwrap();
    assert_eq!(snap.image_layer_chain(&snap.images[0]).unwrap().len(), 2);
    assert!(snap.images[0].names.contains(&g.image_name));
    let name = g.container_name.as_ref().unwrap();
    assert!(snap.containers.iter().any(|c| c.names.contains(name)));

    // Byte for byte what containers/storage's encoder writes.
    let json = fs::read(g.graph.join("overlay-layers/layers.json")).unwrap();
    assert_eq!(json, encode_file(&layers));
    assert_eq!(g.layers_json_bytes, json.len() as u64);
    assert_eq!(
        fs::read(g.graph.join("overlay-images/images.json")).unwrap(),
        encode_file(&images)
    );

    // Every layer has its directory, link and l/ entry; every lower entry
    // resolves to a layer's diff.
    let home = g.graph.join("overlay");
    for l in &layers {
        let link = fs::read_to_string(home.join(&l.id).join("link")).unwrap();
        assert_eq!(
            fs::read_link(home.join("l").join(&link)).unwrap(),
            Path::new("..").join(&l.id).join("diff")
        );
        match fs::read_to_string(home.join(&l.id).join("lower")) {
            Ok(lower) => {
                assert!(!l.parent.is_empty());
                for entry in lower.split(':') {
                    assert!(home.join(entry).is_dir(), "{}: {entry}", l.id);
                }
            }
            Err(_) => assert!(l.parent.is_empty() && home.join(&l.id).join("empty").is_dir()),
        }
    }
    for c in &containers {
        assert!(g
            .graph
            .join("overlay-containers")
            .join(&c.id)
            .join("userdata")
            .is_dir());
    }
    // A second run into the same directory refuses.
    assert!(generate(dir.path(), &shape).is_err());
}

/// As root, a mapped copy and the container layer on it belong to the
/// copy's mapping, as containers/storage leaves them; the rest to root.
#[test]
#[ignore = "privileged: layer directories are chowned to their mappings"]
fn generated_layers_belong_to_their_mappings() {
    layerstore_test_support::require_privileged(&[]);
    let dir = tempfile::tempdir().unwrap();
    let g = generate(dir.path(), &Shape::from_layers(20)).unwrap();
    assert!(g.chowned);
    let home = g.graph.join("overlay");
    let (layers, _, _) = records(&Shape::from_layers(20));
    for l in &layers {
        let uid = fs::metadata(home.join(&l.id)).unwrap().uid();
        assert_eq!(uid, l.uidmap.first().map_or(0, |m| m.host_id), "{}", l.id);
    }
}

/// containers-storage v1.43 itself reads a generated store as its own: its
/// listings print the generated records byte for byte. It leaves the
/// overlay home bind-mounted onto itself, undone here, also on failure.
#[test]
#[ignore = "privileged: containers-storage opens (and bind-mounts) the store as root"]
fn containers_storage_reads_a_generated_store_as_its_own() {
    layerstore_test_support::require_privileged(&["containers-storage"]);
    let dir = tempfile::tempdir().unwrap();
    let g = generate(dir.path(), &Shape::from_layers(20)).unwrap();
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _home = Unmount(g.graph.join("overlay"));
    let cs = |args: &[&str]| {
        let out = layerstore_test_support::run_ok(
            std::process::Command::new("containers-storage")
                .arg("-g")
                .arg(&g.graph)
                .arg("-R")
                .arg(&g.run)
                .args(["-s", "overlay"])
                .args(args),
        );
        out.stdout
    };
    let listed = [
        ("layers", "overlay-layers/layers.json"),
        ("images", "overlay-images/images.json"),
        ("containers", "overlay-containers/containers.json"),
    ]
    .map(|(what, file)| {
        let mut expected = fs::read(g.graph.join(file)).unwrap();
        expected.push(b'\n');
        (cs(&[what, "--json"]), expected)
    });
    for (got, expected) in listed {
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&expected)
        );
    }
}
