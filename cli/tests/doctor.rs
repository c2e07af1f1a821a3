//! `layerstore doctor` end to end on this machine: templates of a podman
//! store under inodes, the run path matching what `create --uidmap` does
//! (idmapped: no new layer; `idmapped-lower-dir-false`: a template), the
//! store left unchanged, and a lowered key quota turning the keyring check
//! to warn and fail.

use std::fs;
use std::process::{Command, Output};

use layerstore_test_support::images::tree_listing;
use layerstore_test_support::{require_privileged, run_ok, PodmanStore};
use serde_json::Value;

const LAYERSTORE: &str = env!("CARGO_BIN_EXE_layerstore");

const BUSYBOX: &str = "
d bin 0755 0:0
F bin/busybox 0755 0:0 /bin/busybox
l bin/sh busybox
d etc 0755 0:0
f etc/passwd 0644 0:0 root:x:0:0:root:/root:/bin/sh\\n
d tmp 1777 0:0
";

/// `layerstore doctor --json` on `store`: the exit code and the report.
fn doctor(store: &PodmanStore) -> (i32, Value) {
    let out = store
        .layerstore(LAYERSTORE)
        .args(["doctor", "--json"])
        .output()
        .expect("starting layerstore");
    let code = out.status.code().expect("exit code");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json printed no JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, report)
}

fn check<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {report:#}"))
}

/// The exit code matches the worst status.
fn assert_exit_code(code: i32, report: &Value) {
    let worst = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| match c["status"].as_str().unwrap() {
            "ok" => 0,
            "warn" => 1,
            "fail" => 2,
            other => panic!("status {other}"),
        })
        .max()
        .unwrap();
    assert_eq!(code, worst, "{report:#}");
    assert_eq!(report["exit_code"], worst);
}

fn layers(store: &PodmanStore) -> Vec<Value> {
    let out = run_ok(store.layerstore(LAYERSTORE).args(["layers", "--json"]));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `layerstore create --uidmap` with a new mapping of `image`: the layers
/// it added (the container's own layer, plus a template if one was made).
fn create_mapped(store: &PodmanStore, image: &str) -> Vec<Value> {
    let before: Vec<String> = layers(store)
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .collect();
    run_ok(store.layerstore(LAYERSTORE).args([
        "create",
        "--uidmap",
        "0:1000000:65536",
        "--uidmap",
        "70000:1070000:1",
        "--gidmap",
        "0:1000000:65537",
        image,
    ]));
    layers(store)
        .into_iter()
        .filter(|l| !before.contains(&l["id"].as_str().unwrap().to_owned()))
        .collect()
}

/// The store's tree (graphroot and runroot), for before/after comparisons.
fn store_tree(store: &PodmanStore) -> Vec<String> {
    let mut tree = Vec::new();
    for (name, dir) in [("graph", &store.graph), ("run", &store.run)] {
        if dir.exists() {
            tree.extend(tree_listing(dir).into_iter().map(|l| format!("{name}/{l}")));
        } else {
            tree.push(format!("{name} missing"));
        }
    }
    tree
}

#[test]
#[ignore = "privileged: builds a podman store with templates, runs the idmap probe"]
fn doctor_on_a_store_with_templates_and_idmapped_lower_dir_false() {
    require_privileged(&["podman", "containers-storage", "runc", "busybox"]);
    let store = PodmanStore::build();
    let before = store_tree(&store);
    let (code, report) = doctor(&store);
    assert_eq!(store_tree(&store), before, "doctor changed the store");
    assert_exit_code(code, &report);

    // The three mapped containers' templates (contig, noncontig, layered-mapped).
    let templates = check(&report, "inodes.templates");
    assert_eq!(templates["status"], "ok");
    assert_eq!(templates["facts"]["count"], 3, "{templates:#}");
    let held = templates["facts"]["inodes"].as_u64().unwrap();
    assert!(held >= 3 * 10, "templates hold {held} inodes");
    assert!(templates["seen"]
        .as_str()
        .unwrap()
        .contains("3 mapped template(s)"));
    let headroom = check(&report, "inodes.headroom");
    assert!(
        headroom["facts"]["largest_top_layer_entries"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(headroom["facts"]["templates_that_fit"].as_u64().unwrap() > 0);
    // The container roots' key quotas are checked.
    for uid in [100000, 200000, 300000] {
        let c = check(&report, &format!("keyring.uid.{uid}"));
        assert!(
            c["seen"].as_str().unwrap().contains("mapped root of"),
            "{c:#}"
        );
    }

    // The kernel can, but the cache says no: podman and run copy.
    let probe = check(&report, "idmap.probe");
    assert_eq!(probe["facts"]["probe"], true, "{probe:#}");
    assert_eq!(probe["facts"]["cache"], false);
    assert_eq!(probe["status"], "warn");
    let path = check(&report, "idmap.run-path");
    assert_eq!(path["facts"]["new_mapping"], "template", "{path:#}");
    assert_eq!(path["facts"]["no_cache"], "on-disk");
    assert_eq!(path["status"], "warn");
    // The store is consistent.
    for id in ["store.records", "store.links", "store.tar-split"] {
        assert_eq!(
            check(&report, id)["status"],
            "ok",
            "{:#}",
            check(&report, id)
        );
    }

    // And create does what doctor said: a template besides the container's layer.
    let added = create_mapped(&store, "localhost/base");
    assert_eq!(added.len(), 2, "{added:#?}");
    assert!(
        added
            .iter()
            .any(|l| l.get("uidmap").is_some_and(|m| !m.is_null())),
        "no template among {added:#?}"
    );
}

#[test]
#[ignore = "privileged: imports an image, runs the idmap probe"]
fn doctor_says_idmapped_on_a_normal_store_and_create_agrees() {
    require_privileged(&["busybox"]);
    let store = PodmanStore::empty();
    store.import_layer_spec(LAYERSTORE, BUSYBOX, "bb");
    let before = store_tree(&store);
    let (code, report) = doctor(&store);
    assert_eq!(store_tree(&store), before, "doctor changed the store");
    assert!(
        !store.run.join("overlay/idmapped-lower-dir-true").exists(),
        "doctor wrote the probe cache"
    );
    assert_exit_code(code, &report);
    let path = check(&report, "idmap.run-path");
    assert_eq!(path["facts"]["new_mapping"], "idmapped", "{path:#}");
    assert_eq!(path["status"], "ok");
    assert_eq!(check(&report, "idmap.probe")["status"], "ok");
    assert_eq!(check(&report, "inodes.templates")["facts"]["count"], 0);

    // create: only the container's own layer, no template.
    let added = create_mapped(&store, "bb");
    assert_eq!(added.len(), 1, "{added:#?}");
    assert!(
        added[0].get("uidmap").is_none_or(|m| m.is_null()),
        "{added:#?}"
    );
    // After create the cache exists and doctor still agrees.
    let (_, report) = doctor(&store);
    assert_eq!(
        check(&report, "idmap.run-path")["facts"]["new_mapping"],
        "idmapped"
    );
}

#[test]
#[ignore = "privileged: runs the idmap probe on a missing store"]
fn doctor_creates_nothing_for_a_missing_store() {
    require_privileged(&[]);
    let store = PodmanStore::empty();
    let (code, report) = doctor(&store);
    assert_exit_code(code, &report);
    assert!(!store.graph.exists() && !store.run.exists());
    assert_eq!(
        check(&report, "inodes.free")["facts"]["total"]
            .as_u64()
            .map(|t| t > 0),
        Some(true)
    );
}

/// `keyctl` as `uid`.
fn keyctl_as(uid: u32, args: &[&str]) -> Output {
    Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .arg("keyctl")
        .args(args)
        .output()
        .expect("starting setpriv keyctl")
}

/// Restores `/proc/sys/kernel/keys/maxkeys` and removes the test uid's keys
/// when dropped (also when the test fails).
struct QuotaGuard {
    maxkeys: String,
    uid: u32,
}

const MAXKEYS: &str = "/proc/sys/kernel/keys/maxkeys";

impl Drop for QuotaGuard {
    fn drop(&mut self) {
        if let Err(e) = fs::write(MAXKEYS, &self.maxkeys) {
            eprintln!("restoring {MAXKEYS} to {}: {e}", self.maxkeys.trim());
        }
        let _ = keyctl_as(self.uid, &["clear", "@u"]);
    }
}

/// `qnkeys` of `uid` in /proc/key-users.
fn keys_of(uid: u32) -> u32 {
    let text = fs::read_to_string("/proc/key-users").unwrap();
    text.lines()
        .find_map(|l| {
            let (u, rest) = l.trim().split_once(':')?;
            (u.trim().parse::<u32>().ok()? == uid).then(|| {
                let quota = rest.split_whitespace().nth(2)?;
                quota.split_once('/')?.0.parse().ok()
            })?
        })
        .unwrap_or(0)
}

fn set_maxkeys(n: u32) {
    fs::write(MAXKEYS, n.to_string()).unwrap();
}

#[test]
#[ignore = "privileged: lowers the host's key quota for seconds (restored by a guard)"]
fn a_lowered_key_quota_turns_the_keyring_check_to_warn_and_fail() {
    require_privileged(&["keyctl", "setpriv"]);
    let store = PodmanStore::empty();
    let uid = 3_900_000 + std::process::id() % 10_000;
    let guard = QuotaGuard {
        maxkeys: fs::read_to_string(MAXKEYS).unwrap(),
        uid,
    };
    for i in 0..20 {
        let out = keyctl_as(
            uid,
            &["add", "user", &format!("doctor-test-{i}"), "x", "@u"],
        );
        assert!(out.status.success(), "keyctl add: {out:?}");
    }
    let used = keys_of(uid);
    assert!(used >= 20, "uid {uid} holds {used} keys");
    let id = format!("keyring.uid.{uid}");

    // Below the threshold the uid is not even listed.
    let (_, report) = doctor(&store);
    assert!(report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["id"] != id.as_str()));

    // 80% of the quota: warn, exit >= 1.
    set_maxkeys(used * 100 / 80);
    let (code, report) = doctor(&store);
    let c = check(&report, &id);
    assert_eq!(c["status"], "warn", "{c:#}");
    assert!(code >= 1);
    assert!(c["fix"].as_str().unwrap().contains("--no-new-keyring"));

    // Full: fail, exit 2.
    set_maxkeys(used);
    let (code, report) = doctor(&store);
    drop(guard);
    let c = check(&report, &id);
    assert_eq!(c["status"], "fail", "{c:#}");
    assert_eq!(c["facts"]["keys"].as_u64(), Some(u64::from(used)));
    assert_eq!(code, 2);
    assert!(c["why"].as_str().unwrap().contains("Disk quota exceeded"));
    assert_ne!(
        fs::read_to_string(MAXKEYS).unwrap().trim(),
        used.to_string(),
        "the guard restored maxkeys"
    );
}

#[test]
#[ignore = "privileged: needs root (a store, podman on PATH)"]
fn run_checks_find_the_oci_hook_in_podmans_hooks_directory() {
    require_privileged(&["podman"]);
    let store = PodmanStore::empty();
    let hooks = tempfile::tempdir().unwrap();
    let conf = store.private_conf(hooks.path());
    let status = |store: &PodmanStore| {
        let out = store
            .layerstore(LAYERSTORE)
            .env("CONTAINERS_CONF", &conf)
            .args(["doctor", "--json", "--no-probe"])
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let hook = check(&report, "run.oci-hook").clone();
        assert_exit_code(out.status.code().unwrap(), &report);
        hook
    };
    let missing = status(&store);
    assert_eq!(missing["status"], "warn", "{missing}");
    assert!(missing["fix"]
        .as_str()
        .unwrap()
        .contains("oci-hook --print-config"));
    let printed = run_ok(Command::new(LAYERSTORE).args(["oci-hook", "--print-config"]));
    fs::write(hooks.path().join("layerstore.json"), printed.stdout).unwrap();
    let found = status(&store);
    assert_eq!(found["status"], "ok", "{found}");
    assert!(found["seen"]
        .as_str()
        .unwrap()
        .contains(&hooks.path().display().to_string()));
}
