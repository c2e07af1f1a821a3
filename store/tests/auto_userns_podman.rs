//! `--userns=auto` replayed against what podman 4.3.1 really chose
//! (`testdata/podman-4.3.1/auto-userns/`): for every `podman create` of a
//! scenario, in order, the allocator given the containers recorded before
//! it must choose the maps podman recorded (in the order containers/storage
//! v1.43 records them), or fail where podman failed for want of ids.

use std::path::{Path, PathBuf};

use layerstore::idmap::{containers_storage_order, format_id_map};
use layerstore::records::{decode_file, Container, Image, Layer};
use layerstore::userns::{
    allocate, needed_size, size_from_layers, AutoUserNs, AutoUserNsConfig, AutoUserNsError,
    Available, ImageNeeds, Owner,
};

fn fixture(rel: &str) -> PathBuf {
    layerstore_test_support::testdata(&format!("podman-4.3.1/auto-userns/{rel}"))
}

/// One `podman create` of `order.txt`: its arguments, and its index in
/// containers.json (`None`: it failed).
#[derive(Debug)]
struct Create {
    args: String,
    index: Option<usize>,
    failure: String,
}

fn creates(scenario: &str) -> Vec<Create> {
    let text = std::fs::read_to_string(fixture(&format!("{scenario}/order.txt"))).unwrap();
    let mut out: Vec<Create> = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(args) = line.strip_prefix("args:") {
            out.push(Create {
                args: args.trim().to_owned(),
                index: None,
                failure: String::new(),
            });
        } else if let Some(rest) = line.split("(containers.json index ").nth(1) {
            let n = rest.trim_end_matches(')').parse().unwrap();
            out.last_mut().unwrap().index = Some(n);
        } else if line.starts_with("stderr:") || line.starts_with("Error:") {
            out.last_mut().unwrap().failure.push_str(line);
        }
    }
    out
}

fn available(scenario: &str, owner: &str) -> Available {
    Available::read(&AutoUserNsConfig {
        owner: Owner {
            name: owner.to_owned(),
            uid: None,
        },
        subuid: fixture(&format!("{scenario}/subuid")),
        subgid: fixture(&format!("{scenario}/subgid")),
        ..AutoUserNsConfig::default()
    })
    .unwrap()
}

fn containers(scenario: &str) -> Vec<Container> {
    let bytes = std::fs::read(fixture(&format!("{scenario}/containers.json"))).unwrap();
    decode_file(&bytes).unwrap()
}

fn replay(scenario: &str, owner: &str) -> usize {
    let recorded = containers(scenario);
    let avail = available(scenario, owner);
    let mut checked = 0;
    let mut made = 0;
    for create in creates(scenario) {
        let Some(mode) = create
            .args
            .split_whitespace()
            .find_map(|a| a.strip_prefix("--userns="))
        else {
            // Explicit maps: only in the way of later ones.
            made += usize::from(create.index.is_some());
            continue;
        };
        let auto = AutoUserNs::parse(mode).unwrap().unwrap();
        let used = recorded[..made]
            .iter()
            .map(|c| (c.uidmap.as_slice(), c.gidmap.as_slice()));
        match create.index {
            Some(i) => {
                assert_eq!(i, made, "{scenario}: {}", create.args);
                let want = &recorded[i];
                // The size podman's rules gave (v1.43 sizes images from
                // /etc/passwd without the + 1; see the userns module docs).
                let size = auto
                    .size
                    .unwrap_or_else(|| want.uidmap.iter().map(|m| m.size).sum());
                let got = allocate(size, &auto, &avail, used).unwrap();
                let (uids, gids) = containers_storage_order(&got.uids, &got.gids);
                assert_eq!(
                    (format_id_map(&uids), format_id_map(&gids)),
                    (format_id_map(&want.uidmap), format_id_map(&want.gidmap)),
                    "{scenario}: {}",
                    create.args
                );
                made += 1;
                checked += 1;
            }
            // (Failures for a missing `containers` entry ran with other
            // files: see the missing-entry test.)
            None if create
                .failure
                .contains("could not find enough available IDs")
                && !create.failure.contains("Cannot find mappings") =>
            {
                let Some(size) = auto.size else {
                    continue;
                };
                let e = allocate(size, &auto, &avail, used).unwrap_err();
                assert!(
                    matches!(e, AutoUserNsError::Exhausted(_)),
                    "{scenario}: {}: {e}",
                    create.args
                );
                checked += 1;
            }
            None => {}
        }
    }
    checked
}

#[test]
fn podman_4_3_1_choices_replay_in_order() {
    assert_eq!(replay("scenario1", "containers"), 9);
    // Two ranges listed in reverse order, a different gid range: a
    // non-contiguous map, then exhaustion, then an exact fit.
    assert_eq!(replay("scenario2", "containers"), 5);
    assert_eq!(replay("scenario3/max100000", "containers"), 2);
    assert_eq!(replay("scenario3/min2000-max60000", "containers"), 3);
    assert_eq!(replay("scenario3/otheruser", "otheruser"), 3);
}

fn image_chain_size(scenario: &str, name: &str) -> u32 {
    let dir = fixture(scenario);
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let layers: Vec<Layer> = decode_file(&read("layers.json")).unwrap();
    let images: Vec<Image> = decode_file(&read("images.json")).unwrap();
    let image = images
        .iter()
        .find(|i| i.names.iter().any(|n| n == name))
        .unwrap();
    let mut chain = Vec::new();
    let mut next = image.top_layer.as_str();
    while !next.is_empty() {
        let l = layers.iter().find(|l| l.id == next).unwrap();
        chain.push(l);
        next = &l.parent;
    }
    size_from_layers(chain)
}

#[test]
fn a_file_owned_by_uid_70000_sizes_the_namespace_as_podman_does() {
    // The image's files: uid 70000, gid 70001 (podman: 70002).
    let size = image_chain_size("scenario1", "localhost/autons-big:latest");
    assert_eq!(size, 70002);
    let auto = AutoUserNs::default();
    let needs = Some(ImageNeeds {
        files: size,
        users: 1500,
    });
    let e = needed_size(&auto, &AutoUserNsConfig::default(), needs)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("70002 ids (a file of the image is owned by id 70001)"),
        "{e}"
    );
    let roomy = AutoUserNsConfig {
        max_size: 100_000,
        ..AutoUserNsConfig::default()
    };
    assert_eq!(needed_size(&auto, &roomy, needs).unwrap(), 70002);
    // And podman chose 0:300000:70002 for it in that store.
    let first = &containers("scenario3/max100000")[0];
    assert_eq!(format_id_map(&first.uidmap), "0:300000:70002");
}

#[test]
fn fixtures_are_where_the_readme_says() {
    let readme = std::fs::read_to_string(fixture("README.md")).unwrap();
    assert!(readme.contains("4.3.1"));
    assert!(Path::new(&fixture("scenario1/containers.json")).exists());
}
