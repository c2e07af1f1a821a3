//! Every hostility of `test_support::hostile` on a real podman 4.3.1 store,
//! against every command that can reach it: the victim beside the store
//! survives, nothing a record names is deleted, the exit code is the
//! documented one, and a store whose records cannot be trusted is not
//! changed by a single byte.

use std::process::Output;

use layerstore_test_support::bare::file_tree;
use layerstore_test_support::hostile::{catalogue, Expect, Scene};
use layerstore_test_support::require_privileged;

const LAYERSTORE: &str = env!("CARGO_BIN_EXE_layerstore");

/// Each command, in an order that keeps destructive ones last, with the
/// exit code it must give on a store whose records cannot be trusted.
/// `ONE_TABLE`: a listing that reads only its own table, which may list
/// (0) when the defect is elsewhere, and must refuse (1) when its own file
/// is broken (not a regular file holding a JSON array; the defects of
/// records inside a sound file are `bad_input`'s tests).
const COMMANDS: &[(&[&str], i32)] = &[
    (&["info"], 1),
    (&["layers"], 1),
    (&["images", "--size"], 1),
    (&["images", "--json"], ONE_TABLE),
    (&["containers"], ONE_TABLE),
    (&["doctor", "--no-probe"], 2),
    (&["gc", "--dry-run", "--min-age", "0"], 1),
    (&["mount", "ls1"], 1),
    (&["umount", "ls1"], 1),
    (&["create", "localhost/base"], 1),
    (&["run", "--rm", "localhost/base", "true"], 125),
    (&["gc", "--min-age", "0"], 1),
    (&["rmi", "localhost/base"], 1),
    (&["rm", "ls1"], 1),
];

/// See [`COMMANDS`].
const ONE_TABLE: i32 = -1;

type Tree = std::collections::BTreeMap<std::path::PathBuf, (u32, Vec<u8>)>;

/// The graphroot as it was, naming what differs when it is not.
fn assert_unchanged(now: &Tree, before: &Tree, what: &str) {
    let differs: Vec<_> = now
        .keys()
        .chain(before.keys())
        .filter(|p| now.get(*p) != before.get(*p))
        .collect();
    assert!(
        differs.is_empty(),
        "the store changed on disk ({differs:?}); {what}"
    );
}

/// Whether `file` is missing, or a regular file holding a JSON array (never
/// opening anything else: a FIFO would block).
fn own_table_is_sound(file: &std::path::Path) -> bool {
    match file.symlink_metadata() {
        Err(_) => true,
        Ok(m) if !m.is_file() => false,
        Ok(_) => std::fs::read(file)
            .ok()
            .is_some_and(|b| serde_json::from_slice::<Vec<serde_json::Value>>(&b).is_ok()),
    }
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn code_is_zero(o: &Output) -> bool {
    o.status.code() == Some(0)
}

fn check(name: &str) {
    require_privileged(&["podman", "runc", "containers-storage"]);
    let h = catalogue()
        .into_iter()
        .find(|h| h.name == name)
        .expect("a hostility of the catalogue");
    let scene = Scene::build(LAYERSTORE);
    (h.apply)(&scene);
    let _disarm = Disarm(&scene);
    let victim = scene.victim_state();
    let graph_before = file_tree(&scene.store.graph);
    for (args, refused_code) in COMMANDS {
        // Debug logging: every log line is checked for raw control
        // characters too.
        let out = scene
            .store
            .layerstore(LAYERSTORE)
            .args(["--log-level", "debug"])
            .args(*args)
            .output()
            .unwrap();
        let what = format!("{}: layerstore {}: {}", h.name, args.join(" "), text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{what}");
        // What records and names hold never drives the terminal.
        assert!(
            !out.stdout
                .iter()
                .chain(&out.stderr)
                .any(|&b| b == 0x1b || b == 0x07),
            "raw control characters in the output; {what}"
        );
        // Whatever a mount shows is written to: it must be the store's.
        if args[0] == "mount" && code_is_zero(&out) {
            let point = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            let _ = std::fs::write(std::path::Path::new(&point).join("written-by-test"), b"x");
        }
        assert_eq!(scene.victim_state(), victim, "the victim changed; {what}");
        let code = out.status.code();
        assert!(
            matches!(code, Some(0..=3) | Some(125..=127)),
            "undocumented exit code; {what}"
        );
        match h.expect {
            Expect::Refused if *refused_code == ONE_TABLE && code == Some(0) => {
                let own = match args[0] {
                    "images" => scene.store.graph.join("overlay-images/images.json"),
                    _ => scene.store.graph.join("overlay-containers/containers.json"),
                };
                assert!(
                    own_table_is_sound(&own),
                    "{} is broken, yet the listing of its records succeeded; {what}",
                    own.display()
                );
                assert_unchanged(&file_tree(&scene.store.graph), &graph_before, &what);
            }
            Expect::Refused => {
                let refused_code = if *refused_code == ONE_TABLE {
                    1
                } else {
                    *refused_code
                };
                assert_eq!(code, Some(refused_code), "{what}");
                let said = format!("{stderr}{}", String::from_utf8_lossy(&out.stdout));
                assert!(
                    said.contains("cannot be trusted")
                        || said.contains("defect")
                        || said.contains("warning: "),
                    "the refusal names no defect; {what}"
                );
                assert_unchanged(&file_tree(&scene.store.graph), &graph_before, &what);
            }
            Expect::Contained => {
                for p in scene.named_paths() {
                    assert!(
                        p.symlink_metadata().is_ok(),
                        "{} is named by a record but gone; {what}",
                        p.display()
                    );
                }
            }
        }
    }
}

/// Disarms the scene however the check ends (podman cleans it up after).
struct Disarm<'a>(&'a Scene);

impl Drop for Disarm<'_> {
    fn drop(&mut self) {
        self.0.disarm();
    }
}

macro_rules! hostile_tests {
    ($($test:ident: $name:literal,)*) => {
        $(
            #[test]
            #[ignore = "privileged: real podman stores, mounts"]
            fn $test() {
                check($name);
            }
        )*

        #[test]
        fn every_hostility_has_a_test() {
            let mut tested = vec![$($name),*];
            let mut all: Vec<&str> = catalogue().iter().map(|h| h.name).collect();
            tested.sort();
            all.sort();
            assert_eq!(tested, all);
        }
    };
}

hostile_tests! {
    empty_layers_json: "layers.json is empty (0 bytes)",
    empty_array_layers_json: "layers.json is []",
    missing_layers_json: "layers.json is missing",
    digit_dropped_from_a_layer_id: "a hex digit dropped from the image's top layer id",
    traversal_layer_id: "a layer id ../../victim (container layer, consistently)",
    dotdot_layer_id: "a layer id .. (container layer, consistently)",
    absolute_container_id: "an absolute container id",
    traversal_container_id: "a container id ../../victim",
    traversal_image_id: "an image id ../victim",
    hostile_mapped_entries: "mapped-layers entries ../../victim and .hidden",
    self_parent: "a layer that is its own parent",
    parent_cycle: "a two-layer parent cycle",
    truncated_images_json: "images.json truncated",
    wrong_field_type: "a container record with a field of the wrong type",
    container_layer_gone: "a container whose layer is gone",
    hostile_mount_record: "a mount record with id ../../victim and path /",
    merged_symlink: "our container's merged is a symlink to the victim",
    diff_symlink: "our container's diff is a symlink to the victim",
    lower_files_climb_out: "lower files that climb out of the store",
    link_file_climbs_out: "a link file that climbs out of the store",
    l_link_to_the_victim: "an l/ link to the victim",
    container_dir_symlink: "our container's data directory is a symlink to the victim",
    layers_lock_symlink: "layers.lock is a symlink to a victim file",
    containers_dir_symlink: "the overlay-containers directory is a symlink to the victim",
    tar_split_symlink: "a template's tar-split is a symlink to a victim file",
    layers_lock_hard_link: "layers.lock is a hard link to a victim file",
    images_json_fifo: "images.json is a FIFO",
    sparse_layers_json: "layers.json is a sparse 1 TiB file",
    runtime_state_dir_symlink: "the runroot's layerstore-runtime is a symlink to the victim",
    run_containers_dir_symlink: "the runroot's overlay-containers is a symlink to the victim",
    forged_runtime_state: "a dead run's forged runtime state names a hook",
    escapes_on_disk: "names with terminal escapes on disk",
    escape_in_a_record: "container records whose layer is a terminal escape",
}

#[test]
#[ignore = "privileged: a real podman store"]
fn podmans_containers_are_podmans() {
    require_privileged(&["podman", "runc"]);
    let scene = Scene::build(LAYERSTORE);
    let before = file_tree(&scene.store.graph);
    let out = scene
        .store
        .layerstore(LAYERSTORE)
        .args(["rm", "pod1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not created by layerstore"), "{stderr}");
    assert!(stderr.contains("podman rm"), "{stderr}");
    assert!(
        file_tree(&scene.store.graph) == before,
        "a refused rm changed the store"
    );
    layerstore_test_support::run_ok(scene.store.podman().args(["start", "--attach", "pod1"]));
    // An image containers use is refused too, naming one of them.
    let out = scene
        .store
        .layerstore(LAYERSTORE)
        .args(["rmi", "localhost/base"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("uses it"), "{stderr}");
    // layerstore's own goes; --force takes podman's storage too.
    layerstore_test_support::run_ok(scene.store.layerstore(LAYERSTORE).args(["rm", "ls1"]));
    layerstore_test_support::run_ok(
        scene
            .store
            .layerstore(LAYERSTORE)
            .args(["rm", "--force", "pod1"]),
    );
    assert!(!scene.layer_dir(&scene.podmans.1).exists());
    let ids: Vec<String> = layerstore_test_support::hostile::read_records(&scene.containers_json())
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        !ids.contains(&scene.podmans.0) && !ids.contains(&scene.ours.0),
        "{ids:?}"
    );
    layerstore_test_support::run_ok(scene.store.podman().args(["rm", "--force", "pod1"]));
}
