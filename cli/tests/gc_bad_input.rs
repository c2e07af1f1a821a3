//! `layerstore gc` on broken stores and with bad arguments: a clear error
//! naming the file or argument, exit 1 (2 for usage), and nothing on disk
//! changed — not even debris that would otherwise be collected.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use layerstore_test_support::bare::{file_tree, BareStore};

const LAYERSTORE: &str = env!("CARGO_BIN_EXE_layerstore");
const STRAY: &str = "5eed000000000000000000000000000000000000000000000000000000000001";

/// A bare store with one sound layer (record, directory, link) and one
/// piece of debris: a layer directory and tar-split no record names, old
/// enough for any --min-age.
struct Fixture(BareStore);

/// The sound layer's id.
const KEPT: &str = "aaaa000000000000000000000000000000000000000000000000000000000001";

impl std::ops::Deref for Fixture {
    type Target = BareStore;
    fn deref(&self) -> &BareStore {
        &self.0
    }
}

impl Fixture {
    fn new() -> Fixture {
        let bare = BareStore::new(LAYERSTORE);
        bare.write(
            "graph/overlay-layers/layers.json",
            format!(r#"[{{"id":"{KEPT}","created":"2026-11-22T14:07:39.8Z"}}]"#).as_bytes(),
        );
        fs::create_dir_all(bare.graph().join(format!("overlay/{KEPT}/diff"))).unwrap();
        fs::create_dir_all(bare.graph().join("overlay/l")).unwrap();
        bare.write(
            &format!("graph/overlay/{KEPT}/link"),
            b"KEPTLINKKEPTLINKKEPTLINKKE",
        );
        std::os::unix::fs::symlink(
            format!("../{KEPT}/diff"),
            bare.graph().join("overlay/l/KEPTLINKKEPTLINKKEPTLINKKE"),
        )
        .unwrap();
        fs::create_dir_all(bare.graph().join(format!("overlay/{STRAY}/diff"))).unwrap();
        bare.write(&format!("graph/overlay-layers/{STRAY}.tar-split.gz"), b"x");
        Fixture(bare)
    }

    fn gc(&self, args: &[&str]) -> std::process::Output {
        let min_age: &[&str] = if args.iter().any(|a| a.starts_with("--min-age")) {
            &[]
        } else {
            &["--min-age", "0"]
        };
        self.command(&["gc"])
            .args(args)
            .args(min_age)
            .output()
            .unwrap()
    }

    /// Run gc, expect exit 1 and an unchanged store; return stderr.
    fn fails(&self, args: &[&str]) -> String {
        let before = file_tree(self.dir.path());
        let out = self.gc(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(
            file_tree(self.dir.path()),
            before,
            "the store changed on disk"
        );
        stderr
    }
}

/// Every path below `dir` with its mode and (for files) content.

#[test]
fn gc_refuses_broken_json_and_names_the_file() {
    for (file, content) in [
        ("graph/overlay-layers/layers.json", &b"[{\"id\":\"a\""[..]),
        ("graph/overlay-images/images.json", b"{not json"),
        ("graph/overlay-containers/containers.json", b"[{\"id\":7}]"),
        (
            "run/overlay-layers/mountpoints.json",
            b"[{\"id\":\"x\",\"count\":\"two\"}]",
        ),
    ] {
        let fx = Fixture::new();
        fx.write(file, content);
        for args in [&[][..], &["--dry-run"], &["--json"]] {
            let err = fx.fails(args);
            let name = file.rsplit('/').next().unwrap();
            assert!(err.contains(name), "{file} {args:?}: {err}");
        }
    }
}

#[test]
fn gc_refuses_a_layer_with_a_missing_parent() {
    let fx = Fixture::new();
    fx.write(
        "graph/overlay-layers/layers.json",
        br#"[{"id":"child","parent":"gone"}]"#,
    );
    let err = fx.fails(&[]);
    assert!(err.contains("child") && err.contains("gone"), "{err}");
}

#[test]
fn gc_bad_arguments_are_usage_errors() {
    let fx = Fixture::new();
    for bad in ["5x", "soon", "-3m"] {
        let before = file_tree(fx.dir.path());
        let out = fx.gc(&[&format!("--min-age={bad}")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("--min-age"), "{stderr}");
        assert_eq!(file_tree(fx.dir.path()), before);
    }
}

#[test]
fn gc_on_a_broken_store_still_writes_failure_metrics() {
    let fx = Fixture::new();
    fx.write("graph/overlay-images/images.json", b"][");
    let metrics = tempfile::tempdir().unwrap();
    let path = metrics.path().join("layerstore-gc.prom");
    let err = fx.fails(&["--metrics-file", path.to_str().unwrap()]);
    assert!(err.contains("images.json"), "{err}");
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains("layerstore_gc_success 0\n"), "{text}");
}

#[test]
fn gc_collects_debris_of_a_sound_store() {
    // The control: the same fixture without damage loses its debris.
    let fx = Fixture::new();
    let out = fx.gc(&["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<&str> = report["done"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["layer-dir", "tar-split"]);
    assert!(!fx.dir.path().join("graph/overlay").join(STRAY).exists());
    // A second gc finds nothing; with --min-age 1h young debris stays.
    let out = fx.gc(&["--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["done"].as_array().unwrap().len(), 0);
    let fx = Fixture::new();
    let out = fx.gc(&["--json", "--min-age", "1h"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["done"].as_array().unwrap().len(), 0);
    assert_eq!(report["skipped"].as_array().unwrap().len(), 2);
}

#[test]
fn gc_dry_run_measures_only_with_size() {
    let fx = Fixture::new();
    fx.write(&format!("graph/overlay/{STRAY}/diff/data"), &[7u8; 10_000]);
    let before = file_tree(fx.dir.path());
    let report = |args: &[&str]| -> serde_json::Value {
        let out = fx.gc(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let plain = report(&["--dry-run", "--json"]);
    assert!(
        plain["bytes_freed"].is_null() && plain["inodes_freed"].is_null(),
        "{plain:#}"
    );
    let dir = &plain["done"][0];
    assert_eq!(dir["kind"], "layer-dir", "{plain:#}");
    assert!(
        dir["bytes"].is_null() && dir["inodes"].is_null(),
        "{plain:#}"
    );
    let sized = report(&["--dry-run", "--size", "--json"]);
    assert_eq!(sized["done"][0]["kind"], "layer-dir");
    // The directory, diff/ and the file; the tar-split is one more.
    assert_eq!(sized["done"][0]["inodes"], 3, "{sized:#}");
    assert!(
        sized["done"][0]["bytes"].as_u64().unwrap() >= 10_000,
        "{sized:#}"
    );
    assert_eq!(sized["inodes_freed"], 4, "{sized:#}");
    // The table: no size invented, and the summary says how to get one.
    let out = fx.gc(&["--dry-run"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("would remove 0 layers (not measured: --size"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            cells.first() == Some(&"layer-dir") && cells[cells.len() - 2..] == ["-", "-"]
        }),
        "{text}"
    );
    let out = fx.gc(&["--dry-run", "--size"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("would remove 0 layers, "), "{text}");
    assert!(text.contains(", 4 inodes (2 actions in all)"), "{text}");
    assert_eq!(
        file_tree(fx.dir.path()),
        before,
        "a dry run changed the store"
    );
    // A real run measures what it frees, with or without --size.
    let real = report(&["--json"]);
    assert_eq!(real["inodes_freed"], sized["inodes_freed"], "{real:#}");
    assert_eq!(real["bytes_freed"], sized["bytes_freed"], "{real:#}");
}

const LAYER: &str = "1a7e000000000000000000000000000000000000000000000000000000000001";
const RUN_LAYER: &str = "2a7e000000000000000000000000000000000000000000000000000000000002";
const PODMAN_LAYER: &str = "3a7e000000000000000000000000000000000000000000000000000000000003";

/// A layer directory as the overlay driver lays it out, with its `link`
/// file, and (if `with_link`) its `l/` symlink.
fn layer_dir(fx: &Fixture, id: &str, link: &str, with_link: bool) {
    let home = fx.dir.path().join("graph/overlay");
    fs::create_dir_all(home.join(id).join("diff")).unwrap();
    fs::create_dir_all(home.join("l")).unwrap();
    fs::write(home.join(id).join("link"), link).unwrap();
    if with_link {
        std::os::unix::fs::symlink(format!("../{id}/diff"), home.join("l").join(link)).unwrap();
    }
}

#[test]
fn gc_repairs_a_missing_link_instead_of_deleting() {
    let fx = Fixture::new();
    fx.write(
        "graph/overlay-layers/layers.json",
        format!(r#"[{{"id":"{LAYER}"}}]"#).as_bytes(),
    );
    layer_dir(&fx, LAYER, "ABCDEFGHIJKLMNOPQRSTUVWXYZ", false);
    let out = fx.gc(&["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["done"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["kind"] == "repair-link" && d["id"] == LAYER),
        "{report:#}"
    );
    let link = fx
        .dir
        .path()
        .join("graph/overlay/l/ABCDEFGHIJKLMNOPQRSTUVWXYZ");
    assert_eq!(
        fs::read_link(link).unwrap(),
        PathBuf::from(format!("../{LAYER}/diff"))
    );
    assert!(fx.dir.path().join("graph/overlay").join(LAYER).is_dir());
}

#[test]
fn gc_repairs_a_lost_link_file_whether_or_not_anything_is_removable() {
    // With debris the link files are looked at in the same pass as the
    // lower files; without, on their own: both find the lost one.
    for debris in [true, false] {
        let fx = Fixture::new();
        if !debris {
            fs::remove_dir_all(fx.graph().join("overlay").join(STRAY)).unwrap();
            fs::remove_file(
                fx.graph()
                    .join(format!("overlay-layers/{STRAY}.tar-split.gz")),
            )
            .unwrap();
        }
        fx.write(
            "graph/overlay-layers/layers.json",
            format!(r#"[{{"id":"{KEPT}"}},{{"id":"{LAYER}"}}]"#).as_bytes(),
        );
        layer_dir(&fx, LAYER, "LOSTLINKFILELOSTLINKFILELO", true);
        fs::remove_file(fx.graph().join("overlay").join(LAYER).join("link")).unwrap();
        let out = fx.gc(&["--dry-run", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut done: Vec<(String, String)> = report["done"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                let id = d["id"].as_str().unwrap_or_default().to_owned();
                (d["kind"].as_str().unwrap().to_owned(), id)
            })
            .collect();
        done.sort();
        let mut expected = vec![("repair-link".to_owned(), LAYER.to_owned())];
        if debris {
            expected.insert(0, ("layer-dir".to_owned(), STRAY.to_owned()));
            expected.push(("tar-split".to_owned(), STRAY.to_owned()));
        }
        assert_eq!(done, expected, "debris {debris}: {report:#}");
    }
}

#[test]
fn gc_removes_dead_layerstore_run_containers_but_never_podmans() {
    let fx = Fixture::new();
    // A process that existed and is gone: its pid, with a start time it
    // never had.
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let ours = "c0ffee0000000000000000000000000000000000000000000000000000000001";
    let podmans = "c0ffee0000000000000000000000000000000000000000000000000000000002";
    // Every mark a run leaves: the run marker, the create mark, and the
    // layer's flag naming the container.
    let marker = format!(
        r#"{{\"layerstore-run\":{{\"pid\":{pid},\"start-time\":1}},\"layerstore\":{{\"version\":\"0.1.0\"}}}}"#
    );
    fx.write(
        "graph/overlay-layers/layers.json",
        format!(
            r#"[{{"id":"{RUN_LAYER}","flags":{{"layerstore-container":"{ours}"}}}},{{"id":"{PODMAN_LAYER}"}}]"#
        )
        .as_bytes(),
    );
    fx.write(
        "graph/overlay-containers/containers.json",
        format!(
            r#"[{{"id":"{ours}","image":"","layer":"{RUN_LAYER}","metadata":"{marker}"}},{{"id":"{podmans}","image":"","layer":"{PODMAN_LAYER}","metadata":"{{\"name\":\"web\"}}"}}]"#
        )
        .as_bytes(),
    );
    layer_dir(&fx, RUN_LAYER, "RUNLAYERRUNLAYERRUNLAYER22", true);
    layer_dir(&fx, PODMAN_LAYER, "PODMANPODMANPODMANPODMAN33", true);
    fs::create_dir_all(
        fx.dir
            .path()
            .join("graph/overlay-containers")
            .join(ours)
            .join("userdata"),
    )
    .unwrap();
    let out = fx.gc(&["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["layers_removed"], 1, "{report:#}");
    assert_eq!(report["done"][0]["kind"], "run-container");
    assert_eq!(report["done"][0]["id"], ours);
    let containers = fs::read_to_string(
        fx.dir
            .path()
            .join("graph/overlay-containers/containers.json"),
    )
    .unwrap();
    assert!(
        !containers.contains(ours) && containers.contains(podmans),
        "{containers}"
    );
    let layers =
        fs::read_to_string(fx.dir.path().join("graph/overlay-layers/layers.json")).unwrap();
    assert!(
        !layers.contains(RUN_LAYER) && layers.contains(PODMAN_LAYER),
        "{layers}"
    );
    assert!(!fx.dir.path().join("graph/overlay").join(RUN_LAYER).exists());
    assert!(!fx
        .dir
        .path()
        .join("graph/overlay/l/RUNLAYERRUNLAYERRUNLAYER22")
        .exists());
    assert!(!fx
        .dir
        .path()
        .join("graph/overlay-containers")
        .join(ours)
        .exists());
    assert!(fx
        .dir
        .path()
        .join("graph/overlay")
        .join(PODMAN_LAYER)
        .is_dir());
}

#[test]
fn gc_while_another_gc_runs_exits_3_and_does_nothing() {
    let fx = Fixture::new();
    let graph = fx.dir.path().join("graph");
    let held = layerstore::gc::GcLock::try_acquire(&graph)
        .unwrap()
        .expect("the lock is free");
    let metrics = fx.dir.path().join("gc.prom");
    let before = file_tree(fx.dir.path());
    let out = fx.gc(&["--metrics-file", metrics.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("another gc is running"), "{stderr}");
    assert_eq!(
        file_tree(fx.dir.path()),
        before,
        "a busy gc changed something"
    );
    // A second lock in this process is refused too; released, gc runs.
    assert!(layerstore::gc::GcLock::try_acquire(&graph)
        .unwrap()
        .is_none());
    drop(held);
    assert!(fx.gc(&[]).status.success());
    assert!(!graph.join("overlay").join(STRAY).exists());
}

/// A user made for one test and removed again (with its processes) when
/// dropped, also when the test fails.
struct TempUser(&'static str);

impl TempUser {
    fn make(name: &'static str) -> TempUser {
        let _ = Command::new("userdel").arg(name).status();
        let ok = Command::new("useradd")
            .args(["-M", "-s", "/bin/sh", name])
            .status()
            .unwrap();
        assert!(ok.success(), "useradd {name}");
        TempUser(name)
    }
}

impl Drop for TempUser {
    fn drop(&mut self) {
        let _ = Command::new("pkill").args(["-KILL", "-u", self.0]).status();
        let _ = Command::new("userdel").arg(self.0).status();
    }
}

#[test]
#[ignore = "privileged: creates a user"]
fn gc_as_a_user_on_a_store_podman_cannot_open_exits_1_not_125() {
    layerstore_test_support::require_privileged(&["podman", "useradd", "userdel", "runuser"]);
    let fx = Fixture::new();
    let user = TempUser::make("lsnogc");
    let xdg = tempfile::tempdir().unwrap();
    std::process::Command::new("chown")
        .arg(user.0)
        .arg(xdg.path())
        .status()
        .unwrap();
    // The store is root's (0700): neither the user nor its podman may read it.
    let graph = fx.graph();
    let run = fx.dir.path().join("run");
    let before = file_tree(fx.dir.path());
    let out = Command::new("runuser")
        .args(["-u", user.0, "--", "env", "-i"])
        .arg("PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .arg(format!("HOME={}", xdg.path().display()))
        .arg(format!("XDG_RUNTIME_DIR={}", xdg.path().display()))
        .arg("CONTAINERS_STORAGE_CONF=/dev/null")
        .arg(LAYERSTORE)
        .arg("--root")
        .arg(&graph)
        .arg("--runroot")
        .arg(&run)
        .args(["gc", "--min-age", "0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error: "), "{stderr}");
    assert!(stderr.contains("unshare"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(file_tree(fx.dir.path()), before);
}
