//! Bad stores and bad arguments: each gives a clear error that names the
//! file and record, exits 1, never panics, and leaves the store's files
//! exactly as they were.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use layerstore_test_support::bare::{file_tree, BareStore};

const LAYERSTORE: &str = env!("CARGO_BIN_EXE_layerstore");
const LAYER_A: &str = "aaaa000000000000000000000000000000000000000000000000000000000001";
const LAYER_B: &str = "bbbb000000000000000000000000000000000000000000000000000000000002";

/// The bad-input fixture: a bare store.
type Fixture = BareStore;

/// Run `layerstore` on the fixture, expect failure, return stderr; check
/// that nothing below the fixture changed.
fn fails(fx: &Fixture, args: &[&str]) -> String {
    let before = file_tree(fx.dir.path());
    let out: Output = fx.command(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "exit status; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Listings name each defect on its own `warning:` line, then fail;
    // writers refuse with one error listing every defect below it.
    let errors = stderr.lines().filter(|l| l.starts_with("error: ")).count();
    assert_eq!(errors, 1, "{stderr}");
    assert!(
        stderr.lines().all(|l| l.starts_with("warning: ")
            || l.starts_with("error: ")
            || l.starts_with("  - ")),
        "{stderr}"
    );
    assert_eq!(
        file_tree(fx.dir.path()),
        before,
        "the store changed on disk"
    );
    stderr
}

fn layer_json(id: &str, parent: &str, names: &[&str]) -> String {
    let names: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    format!(
        r#"{{"id":"{id}","names":[{}],"parent":"{parent}","created":"2026-11-22T14:07:39.8Z"}}"#,
        names.join(",")
    )
}

#[test]
fn truncated_json_names_the_file() {
    let fx = Fixture::new(LAYERSTORE);
    fx.write(
        "graph/overlay-layers/layers.json",
        br#"[{"id":"aaaa","created":"2026-"#,
    );
    let err = fails(&fx, &["layers"]);
    assert!(err.contains("overlay-layers/layers.json"), "{err}");
    assert!(err.contains("EOF"), "{err}");
}

#[test]
fn wrong_field_type_names_the_record() {
    let fx = Fixture::new(LAYERSTORE);
    let json = format!(
        r#"[{},{{"id":"{LAYER_B}","names":5}}]"#,
        layer_json(LAYER_A, "", &[])
    );
    fx.write("graph/overlay-layers/layers.json", json.as_bytes());
    let err = fails(&fx, &["layers", "--json"]);
    assert!(err.contains(&format!("record 1 (id {LAYER_B})")), "{err}");
    assert!(err.contains("layers.json"), "{err}");
}

#[test]
fn invalid_json_in_images_and_containers() {
    for (file, cmd) in [
        ("graph/overlay-images/images.json", "images"),
        ("graph/overlay-containers/containers.json", "containers"),
        ("run/overlay-layers/mountpoints.json", "info"),
    ] {
        let fx = Fixture::new(LAYERSTORE);
        fx.write(file, b"{not json");
        let err = fails(&fx, &[cmd]);
        assert!(err.contains(file.rsplit('/').next().unwrap()), "{err}");
    }
}

/// `images` and `containers` read only their own table, as
/// containers-storage does: a broken layers.json does not stop them, and
/// the listings that need the layers (`images --size`, `info`) still
/// refuse it. A defect in their own table they report.
#[test]
fn one_table_listings_read_only_their_table() {
    let fx = Fixture::new(LAYERSTORE);
    fx.write("graph/overlay-layers/layers.json", b"{not json");
    fx.write(
        "graph/overlay-images/images.json",
        format!(
            r#"[{{"id":"img1","names":["localhost/one"],"layer":"{LAYER_A}","created":"2026-11-22T14:07:39Z"}}]"#
        )
        .as_bytes(),
    );
    fx.write(
        "graph/overlay-containers/containers.json",
        format!(
            r#"[{{"id":"ctr1","names":["c1"],"image":"img1","layer":"{LAYER_B}","created":"2026-11-22T14:07:39Z"}}]"#
        )
        .as_bytes(),
    );
    for (args, shows) in [
        (&["images"][..], "localhost/one"),
        (&["images", "--json"][..], "localhost/one"),
        (&["containers"][..], "c1"),
        (&["containers", "--json"][..], "c1"),
    ] {
        let out = fx.command(args).output().unwrap();
        let said = format!(
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(0), "{said}");
        assert!(said.contains(shows), "{said}");
    }
    let out = fx.command(&["images"]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(!table.contains("SIZE"), "{table}");
    for args in [&["images", "--size"][..], &["info"][..]] {
        let err = fails(&fx, args);
        assert!(err.contains("layers.json"), "{args:?}: {err}");
    }
    // The table's own defect: two containers on one layer.
    fx.write(
        "graph/overlay-containers/containers.json",
        format!(
            r#"[{{"id":"ctr1","image":"img1","layer":"{LAYER_B}","created":"2026-11-22T14:07:39Z"}},{{"id":"ctr2","image":"img1","layer":"{LAYER_B}","created":"2026-11-22T14:07:39Z"}}]"#
        )
        .as_bytes(),
    );
    let err = fails(&fx, &["containers"]);
    assert!(err.contains("ctr1") && err.contains("ctr2"), "{err}");
}

#[test]
fn lock_file_of_odd_size() {
    let fx = Fixture::new(LAYERSTORE);
    fx.write("graph/overlay-layers/layers.json", b"[]");
    fx.write("graph/overlay-layers/layers.lock", b"0123456789");
    let err = fails(&fx, &["layers"]);
    assert!(err.contains("layers.lock"), "{err}");
    assert!(err.contains("10"), "{err}");
}

#[test]
fn missing_parent_names_layer_and_parent() {
    let fx = Fixture::new(LAYERSTORE);
    let json = format!("[{}]", layer_json(LAYER_B, LAYER_A, &[]));
    fx.write("graph/overlay-layers/layers.json", json.as_bytes());
    let err = fails(&fx, &["layers"]);
    assert!(err.contains(LAYER_B) && err.contains(LAYER_A), "{err}");
    assert!(err.contains("not in the store"), "{err}");
}

#[test]
fn duplicate_names_name_both_records() {
    let fx = Fixture::new(LAYERSTORE);
    let json = format!(
        "[{},{}]",
        layer_json(LAYER_A, "", &["shared"]),
        layer_json(LAYER_B, "", &["shared"])
    );
    fx.write("graph/overlay-layers/layers.json", json.as_bytes());
    let err = fails(&fx, &["layers"]);
    assert!(
        err.contains("\"shared\"") && err.contains(LAYER_A) && err.contains(LAYER_B),
        "{err}"
    );
}

#[test]
fn duplicate_ids_are_refused() {
    let fx = Fixture::new(LAYERSTORE);
    let json = r#"[{"id":"img1","created":"2026-11-22T14:07:39Z"},{"id":"img1","created":"2026-11-22T14:07:39Z"}]"#;
    fx.write("graph/overlay-images/images.json", json.as_bytes());
    let err = fails(&fx, &["images"]);
    assert!(err.contains("img1") && err.contains("twice"), "{err}");
}

#[test]
fn store_of_another_driver() {
    let fx = Fixture::new(LAYERSTORE);
    fs::remove_dir(fx.graph().join("overlay-layers")).unwrap();
    fx.write("graph/vfs-layers/layers.json", b"[]");
    let err = fails(&fx, &["layers"]);
    assert!(
        err.contains("\"vfs\"") && err.contains("vfs-layers"),
        "{err}"
    );
}

#[test]
fn unsupported_driver_and_bad_storage_opt() {
    let fx = Fixture::new(LAYERSTORE);
    let err = fails(&fx, &["--storage-driver", "vfs", "layers"]);
    assert!(err.contains("\"vfs\"") && err.contains("overlay"), "{err}");
    let err = fails(&fx, &["--storage-opt", "nonsense", "layers"]);
    assert!(err.contains("nonsense"), "{err}");
}

#[test]
fn unreadable_directory_is_named() {
    let fx = Fixture::new(LAYERSTORE);
    fx.write("graph/overlay-layers/layers.json", b"[]");
    let graph = fx.graph();
    fs::set_permissions(&graph, fs::Permissions::from_mode(0o000)).unwrap();
    let err = if rustix::process::geteuid().is_root() {
        // Root reads everything: drop to nobody for this run.
        let before = file_tree(fx.dir.path());
        let out = fx
            .command(&["layers"])
            .env("HOME", "/nonexistent")
            .uid_gid_nobody()
            .output()
            .unwrap();
        assert_eq!(file_tree(fx.dir.path()), before);
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).into_owned()
    } else {
        fails(&fx, &["layers"])
    };
    fs::set_permissions(&graph, fs::Permissions::from_mode(0o700)).unwrap();
    assert!(err.contains("ermission denied"), "{err}");
    assert!(err.contains(&graph.display().to_string()), "{err}");
}

trait AsNobody {
    fn uid_gid_nobody(&mut self) -> &mut Self;
}

impl AsNobody for Command {
    fn uid_gid_nobody(&mut self) -> &mut Self {
        use std::os::unix::process::CommandExt;
        self.uid(65534).gid(65534)
    }
}

#[test]
fn empty_and_missing_store_lists_nothing_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("empty.conf"), "").unwrap();
    let out = Command::new(LAYERSTORE)
        .arg("--root")
        .arg(dir.path().join("nonexistent/graph"))
        .arg("--runroot")
        .arg(dir.path().join("nonexistent/run"))
        .args(["layers", "--json"])
        .env("CONTAINERS_STORAGE_CONF", dir.path().join("empty.conf"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"[]\n");
    assert!(!dir.path().join("nonexistent").exists());
}

#[test]
fn a_parent_cycle_is_named_with_its_chain() {
    let fx = Fixture::new(LAYERSTORE);
    let json = format!(
        "[{},{}]",
        layer_json(LAYER_A, LAYER_B, &[]),
        layer_json(LAYER_B, LAYER_A, &[])
    );
    fx.write("graph/overlay-layers/layers.json", json.as_bytes());
    let err = fails(&fx, &["layers"]);
    assert!(
        err.contains(&format!("{LAYER_A} -> {LAYER_B} -> {LAYER_A}")),
        "{err}"
    );
    for writer in [
        &["create", "x"][..],
        &["gc", "--min-age", "0"],
        &["rm", "x"],
        &["rmi", "x"],
    ] {
        let err = fails(&fx, writer);
        assert!(err.contains(" -> "), "{writer:?}: {err}");
    }
}

#[test]
fn control_characters_in_records_never_reach_the_terminal() {
    let fx = Fixture::new(LAYERSTORE);
    // Two layers share a name with an escape sequence and a newline: the
    // listing shows both, the duplicate-name warning quotes the name.
    let evil = serde_json::to_string("x\u{1b}]0;owned\u{7}\u{1b}[2J\ny").unwrap();
    let layer = |id: &str, name: &str| {
        format!(r#"{{"id":"{id}","names":[{name}],"created":"2026-11-22T14:07:39.8Z"}}"#)
    };
    let json = format!(
        "[{},{}]",
        layer(LAYER_A, &evil),
        layer(LAYER_B, "\"plain\"")
    );
    fx.write("graph/overlay-layers/layers.json", json.as_bytes());
    let out = fx.command(&["layers"]).output().unwrap();
    let all = [out.stdout.clone(), out.stderr.clone()].concat();
    let text = String::from_utf8_lossy(&all);
    assert!(text.contains("plain"), "{text}");
    assert!(!all.iter().any(|&b| b == 0x1b || b == 0x07), "{text}");
    assert!(text.contains("\\u{1b}"), "{text}");
    let json = format!("[{},{}]", layer(LAYER_A, &evil), layer(LAYER_B, &evil));
    fx.write("graph/overlay-layers/layers.json", json.as_bytes());
    let err = fails(&fx, &["layers"]);
    assert!(!err.contains('\u{1b}') && err.contains("\\u{1b}"), "{err}");
}
