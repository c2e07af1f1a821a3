//! A seeded mutation test of the four JSON files of a store podman 4.3.1
//! made (`testdata/podman-4.3.1/store1`, laid out on disk with a directory,
//! link and tar-split per layer, plus some debris): thousands of byte and
//! id mutations, each planned by gc on the real overlay driver. No panic,
//! and no plan ever touches on disk more than the unmutated store's plan
//! does (its debris): a broken record makes gc refuse, never delete.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use layerstore::config::StoreOptions;
use layerstore::gc::GcOptions;
use layerstore::Store;
use layerstore_overlay::layout::OverlayDriver;
use layerstore_test_support::testdata;
use serde_json::Value;

/// How many mutations, and the most time they may take.
const MUTATIONS: usize = 3000;
const BUDGET: Duration = Duration::from_secs(120);

const FILES: [&str; 4] = [
    "graph/overlay-layers/layers.json",
    "graph/overlay-images/images.json",
    "graph/overlay-containers/containers.json",
    "run/overlay-layers/mountpoints.json",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn records(path: &Path) -> Vec<Value> {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

/// The fixture's records laid out as a store under `root`, with one
/// unrecorded layer (directory and tar-split) and a temp file as debris.
fn lay_out(root: &Path) {
    let src = testdata("podman-4.3.1/store1");
    for (from, to) in [
        ("graphroot/overlay-layers/layers.json", FILES[0]),
        ("graphroot/overlay-images/images.json", FILES[1]),
        ("graphroot/overlay-containers/containers.json", FILES[2]),
        ("runroot/overlay-layers/mountpoints.json", FILES[3]),
    ] {
        let to = root.join(to);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(src.join(from), to).unwrap();
    }
    let g = root.join("graph");
    fs::create_dir_all(g.join("overlay/l")).unwrap();
    let layers = records(&g.join("overlay-layers/layers.json"));
    // The driver's own record of what each layer stacks on, as
    // containers/storage writes it: the chain of parents.
    let parent = |id: &str| {
        layers
            .iter()
            .find(|l| l["id"] == id)
            .and_then(|l| l["parent"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let stray = "5eed".repeat(16);
    let ids = layers
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .chain([stray.clone()]);
    for (n, id) in ids.enumerate() {
        fs::create_dir_all(g.join("overlay").join(&id).join("diff")).unwrap();
        let link = format!("LINK{n:022}");
        fs::write(g.join("overlay").join(&id).join("link"), &link).unwrap();
        std::os::unix::fs::symlink(format!("../{id}/diff"), g.join("overlay/l").join(&link))
            .unwrap();
        fs::write(g.join(format!("overlay-layers/{id}.tar-split.gz")), b"ts").unwrap();
        let mut chain = Vec::new();
        let mut p = parent(&id);
        while !p.is_empty() {
            chain.push(p.clone());
            p = parent(&p);
        }
        if !chain.is_empty() {
            fs::write(
                g.join("overlay").join(&id).join("lower-layers"),
                chain.join(":"),
            )
            .unwrap();
        }
    }
    for i in records(&g.join("overlay-images/images.json")) {
        fs::create_dir_all(g.join("overlay-images").join(i["id"].as_str().unwrap())).unwrap();
    }
    for c in records(&g.join("overlay-containers/containers.json")) {
        fs::create_dir_all(g.join("overlay-containers").join(c["id"].as_str().unwrap())).unwrap();
    }
    fs::write(g.join("overlay-layers/.tmp-layers.json4242"), b"[").unwrap();
}

/// What a plan would do on disk: (kind, subject) of every action that
/// removes or changes files or mounts.
fn disk_actions(
    store: &Store,
    driver: &OverlayDriver,
) -> Result<BTreeSet<(String, String)>, String> {
    let options = GcOptions {
        dry_run: true,
        ..GcOptions::default()
    };
    let plan = store.gc_plan(driver, &options).map_err(|e| e.to_string())?;
    Ok(plan
        .actions
        .iter()
        .filter(|a| {
            !matches!(
                a.kind(),
                "stale-mount" | "dangling-mapped-entry" | "repair-link"
            )
        })
        .map(|a| (a.kind().to_owned(), a.subject().to_owned()))
        .collect())
}

/// One mutation of `bytes`.
fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) -> String {
    const ALPHABET: &[u8] = b"{}[]\",:0123456789abcdef./ -tn";
    let at = rng.below(bytes.len());
    match rng.below(7) {
        0 => {
            let b = ALPHABET[rng.below(ALPHABET.len())];
            bytes[at] = b;
            format!("byte {at} := {:?}", b as char)
        }
        1 => {
            bytes.remove(at);
            format!("byte {at} removed")
        }
        2 => {
            let b = ALPHABET[rng.below(ALPHABET.len())];
            bytes.insert(at, b);
            format!("{:?} inserted at {at}", b as char)
        }
        3 => {
            bytes.truncate(at);
            format!("truncated at {at}")
        }
        4 => {
            let len = rng.below(64).min(bytes.len() - at);
            let chunk: Vec<u8> = bytes[at..at + len].to_vec();
            let to = rng.below(bytes.len());
            bytes.splice(to..to, chunk);
            format!("{len} bytes from {at} copied to {to}")
        }
        _ => {
            // Id surgery: a 64-hex id loses a digit, or becomes a path.
            let text = String::from_utf8_lossy(bytes).into_owned();
            let ids: Vec<usize> = text
                .match_indices('"')
                .map(|(i, _)| i + 1)
                .filter(|&i| {
                    text.len() >= i + 65
                        && text[i..i + 64].bytes().all(|b| b.is_ascii_hexdigit())
                        && text.as_bytes()[i + 64] == b'"'
                })
                .collect();
            if ids.is_empty() {
                return "no id to cut".into();
            }
            let start = ids[rng.below(ids.len())];
            let replacement = match rng.below(4) {
                0 => text[start..start + 63].to_owned(),
                1 => "..".to_owned(),
                2 => format!("../../{}", &text[start..start + 8]),
                _ => format!("/{}", &text[start..start + 64]),
            };
            let out = format!("{}{}{}", &text[..start], replacement, &text[start + 64..]);
            *bytes = out.into_bytes();
            format!("id at {start} := {replacement:?}")
        }
    }
}

#[test]
fn no_mutation_of_the_records_makes_gc_plan_more_than_its_debris() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    lay_out(root);
    let options = StoreOptions {
        graph_root: root.join("graph"),
        run_root: root.join("run"),
        driver: "overlay".into(),
        ..StoreOptions::default()
    };
    let driver = OverlayDriver::new(&options).unwrap();
    let store = Store::open(options).unwrap();
    let baseline = disk_actions(&store, &driver).expect("the fixture is sound");
    let stray = "5eed".repeat(16);
    assert!(
        baseline.contains(&("layer-dir".into(), stray.clone())),
        "{baseline:?}"
    );
    assert!(baseline.contains(&("tar-split".into(), stray)));

    // LAYERSTORE_MUTATION_SEED=N replays the run a failure names.
    let seed = match std::env::var("LAYERSTORE_MUTATION_SEED") {
        Ok(s) => {
            s.parse::<u64>()
                .expect("LAYERSTORE_MUTATION_SEED: a number")
                | 1
        }
        Err(_) => {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        }
    };
    eprintln!("mutation seed {seed} (LAYERSTORE_MUTATION_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let originals: Vec<Vec<u8>> = FILES
        .iter()
        .map(|f| fs::read(root.join(f)).unwrap())
        .collect();
    let started = Instant::now();
    let (mut refused, mut planned) = (0, 0);
    for n in 0..MUTATIONS {
        if started.elapsed() > BUDGET {
            eprintln!("time budget reached after {n} mutations");
            break;
        }
        let file = [0, 0, 0, 1, 1, 2, 3][rng.below(7)];
        let mut bytes = originals[file].clone();
        let what = mutate(&mut rng, &mut bytes);
        let path = root.join(FILES[file]);
        fs::write(&path, &bytes).unwrap();
        // A fresh store each time: nothing cached from the last mutation.
        let store = Store::open(StoreOptions {
            graph_root: root.join("graph"),
            run_root: root.join("run"),
            driver: "overlay".into(),
            ..StoreOptions::default()
        })
        .unwrap();
        match disk_actions(&store, &driver) {
            Err(_) => refused += 1,
            Ok(actions) => {
                planned += 1;
                let extra: Vec<_> = actions.difference(&baseline).collect();
                assert!(
                    extra.is_empty(),
                    "seed {seed}, mutation {n} of {}: {what}: gc would also {extra:?}\n{}",
                    FILES[file],
                    String::from_utf8_lossy(&bytes)
                );
            }
        }
        fs::write(&path, &originals[file]).unwrap();
    }
    eprintln!("{refused} mutations refused, {planned} planned within the debris");
    assert!(refused > 100, "the mutations should mostly break the store");
}

/// A layer whose `lower` file stacks it on the unrecorded directory while
/// its `lower-layers` does not (podman 4.3.1 mounts by `lower`, later
/// versions by `lower-layers`): gc keeps the directory.
#[test]
fn a_directory_only_the_lower_file_stacks_on_stays() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    lay_out(root);
    let g = root.join("graph");
    let layers = records(&g.join("overlay-layers/layers.json"));
    let stray = "5eed".repeat(16);
    let child = layers
        .iter()
        .find(|l| l["parent"].is_string())
        .expect("the fixture has a layer with a parent");
    let child_id = child["id"].as_str().unwrap();
    let stray_link = fs::read_to_string(g.join("overlay").join(&stray).join("link")).unwrap();
    fs::write(
        g.join("overlay").join(child_id).join("lower"),
        format!("l/{stray_link}"),
    )
    .unwrap();
    let options = StoreOptions {
        graph_root: g.clone(),
        run_root: root.join("run"),
        driver: "overlay".into(),
        ..StoreOptions::default()
    };
    let driver = OverlayDriver::new(&options).unwrap();
    let store = Store::open(options).unwrap();
    let plan = store
        .gc_plan(
            &driver,
            &GcOptions {
                dry_run: true,
                ..GcOptions::default()
            },
        )
        .unwrap();
    assert!(
        !plan.actions.iter().any(|a| a.subject() == stray),
        "{:?}",
        plan.actions
    );
    assert!(
        plan.skipped
            .iter()
            .filter(|s| s.id == stray && s.reason.contains(child_id))
            .count()
            == 2, // its directory and its tar-split
        "{:?}",
        plan.skipped
    );
    // The mount refuses the layer whose two files disagree.
    let err = driver
        .lower_layer_ids(&layerstore::LayerId::parse(child_id).unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("disagree"), "{err}");
}
