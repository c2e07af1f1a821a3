//! `layerstore gc` against the real podman 4.3.1 on the Debian minbase
//! image: templates podman makes are collected down to the inode, podman
//! keeps working (also while gc runs beside it, and after gc is killed at
//! random points), and what podman still uses is kept.
//!
//! Every store here has `idmapped-lower-dir-false`, so podman makes a
//! template copy for every mapping, and `metacopy=on`, which keeps each
//! copy at one new inode per file (as without it) but makes podman's copy
//! 10x faster, so the tests fit CI. The graphroot is a loop-mounted ext4 of
//! its own, so used inodes are exact.

use std::collections::BTreeSet;
use std::fs;
use std::process::{Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use layerstore_test_support::{debian_rootfs, require_privileged, run_ok, PodmanStore};
use serde_json::Value;

const LAYERSTORE: &str = env!("CARGO_BIN_EXE_layerstore");
const TOOLS: &[&str] = &["podman", "containers-storage", "runc", "mkfs.ext4"];
const IMAGE: &str = "localhost/debian:gc";
/// Entries of the Debian image: each template holds about this many inodes.
const IMAGE_INODES: u64 = 6_700;

/// A store on its own filesystem holding the Debian image, warmed up (one
/// plain and one mapped run, then a gc) so that podman's own bookkeeping
/// files exist before the baseline is taken.
fn debian_store() -> PodmanStore {
    let mut store = PodmanStore::on_small_fs(12 * 1024);
    store.storage_opts = vec!["overlay.mountopt=nodev,metacopy=on".into()];
    store.force_templates();
    let tar = debian_rootfs();
    run_ok(store.podman().args(["import", "-q"]).arg(&tar).arg(IMAGE));
    run_plain(&store);
    run_mapped(&store, 0);
    // podman makes <graphroot>/secrets/secrets.lock on first use of its
    // secrets manager (`exec`, `rm -f`): not ours to count.
    podman(&store, &["secret", "ls"]);
    gc(&store, &[]);
    store
}

fn podman(store: &PodmanStore, args: &[&str]) -> Output {
    run_ok(store.podman().args(args))
}

fn run_plain(store: &PodmanStore) {
    podman(store, &["run", "--rm", IMAGE, "/bin/true"]);
}

/// `--uidmap/--gidmap 0:<range n>:65536`: a distinct mapping per `n`.
fn map_args(n: u32) -> [String; 4] {
    let map = format!("0:{}:65536", 100_000 + n * 65_536);
    ["--uidmap".into(), map.clone(), "--gidmap".into(), map]
}

fn run_mapped(store: &PodmanStore, n: u32) {
    run_ok(
        store
            .podman()
            .args(["run", "--rm"])
            .args(map_args(n))
            .args([IMAGE, "/bin/true"]),
    );
}

/// `layerstore gc --min-age 0 --json ARGS`: the report.
fn gc(store: &PodmanStore, args: &[&str]) -> Value {
    let out = run_ok(
        store
            .layerstore(LAYERSTORE)
            .args(["gc", "--json", "--min-age", "0"])
            .args(args),
    );
    serde_json::from_slice(&out.stdout).expect("gc --json prints JSON")
}

/// (kind, id) of every action of a report.
fn actions(report: &Value) -> BTreeSet<(String, String)> {
    report["done"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let id = ["id", "name", "path", "layer"]
                .iter()
                .find_map(|k| d[*k].as_str());
            (
                d["kind"].as_str().unwrap().to_owned(),
                id.unwrap().to_owned(),
            )
        })
        .collect()
}

fn count(report: &Value, kind: &str) -> usize {
    actions(report).iter().filter(|(k, _)| k == kind).count()
}

fn read_json(path: std::path::PathBuf) -> Vec<Value> {
    match fs::read(&path) {
        Ok(bytes) if !bytes.is_empty() => {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        }
        _ => Vec::new(),
    }
}

/// The ids in `layers.json`, and the `mapped-layers` of every image.
fn layers_and_mapped(store: &PodmanStore) -> (BTreeSet<String>, Vec<String>) {
    let layers = read_json(store.graph.join("overlay-layers/layers.json"))
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .collect();
    let mapped = read_json(store.graph.join("overlay-images/images.json"))
        .iter()
        .flat_map(|i| i["mapped-layers"].as_array().cloned().unwrap_or_default())
        .map(|m| m.as_str().unwrap().to_owned())
        .collect();
    (layers, mapped)
}

/// What podman and containers-storage must agree on after any gc: every
/// `mapped-layers` entry names a layer (podman 4.3.1's `rmi` leaks the
/// image's layers otherwise), and `containers-storage layers` lists what
/// layers.json has.
fn assert_consistent(store: &PodmanStore) {
    let out = podman(store, &["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(IMAGE));
    let out = run_ok(store.containers_storage().args(["layers", "--json"]));
    let cs: BTreeSet<String> = serde_json::from_slice::<Vec<Value>>(&out.stdout)
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .collect();
    let (layers, mapped) = layers_and_mapped(store);
    assert_eq!(
        cs, layers,
        "containers-storage layers disagrees with layers.json"
    );
    for m in mapped {
        assert!(layers.contains(&m), "mapped-layers names missing layer {m}");
    }
}

#[test]
#[ignore = "privileged: needs root, loop mounts, podman 4.3.1, containers-storage and runc"]
fn gc_reclaims_thirty_podman_templates_and_podman_keeps_working() {
    require_privileged(TOOLS);
    let store = debian_store();
    let baseline = store.used_inodes();
    let started = Instant::now();
    for n in 1..=30 {
        run_mapped(&store, n);
    }
    eprintln!("30 mapped podman runs: {:?}", started.elapsed());
    let grown = store.used_inodes() - baseline;
    assert!(
        grown >= 30 * IMAGE_INODES,
        "30 templates added only {grown} inodes"
    );

    let dry = gc(&store, &["--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(count(&dry, "mapped-layer"), 30, "{dry:#}");
    // Without --size nothing is measured, and the report says so.
    assert!(dry["inodes_freed"].is_null(), "{dry:#}");
    assert!(dry["done"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["bytes"].is_null() && d["inodes"].is_null()));
    let measured = gc(&store, &["--dry-run", "--size"]);
    assert_eq!(
        actions(&measured),
        actions(&dry),
        "--size planned otherwise"
    );
    assert_eq!(
        store.used_inodes() - baseline,
        grown,
        "--dry-run changed the store"
    );

    let metrics = store
        .graph
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("gc.prom");
    let started = Instant::now();
    let real = gc(&store, &["--metrics-file", metrics.to_str().unwrap()]);
    eprintln!("gc of 30 templates: {:?}", started.elapsed());
    assert_eq!(
        actions(&dry),
        actions(&real),
        "--dry-run reported something else"
    );
    assert_eq!(real["layers_removed"], 30);
    assert_eq!(store.used_inodes(), baseline, "used inodes did not return");
    let freed = real["inodes_freed"].as_u64().unwrap();
    assert!(
        freed >= 30 * IMAGE_INODES && freed <= grown,
        "freed {freed} of {grown}"
    );
    assert_eq!(
        measured["inodes_freed"], real["inodes_freed"],
        "--dry-run --size measured otherwise than the run freed"
    );
    assert_eq!(measured["bytes_freed"], real["bytes_freed"]);
    let text = fs::read_to_string(&metrics).unwrap();
    assert!(text.contains("layerstore_gc_layers_removed 30\n"), "{text}");
    assert!(text.contains(&format!("layerstore_gc_inodes_freed {freed}\n")));
    assert_consistent(&store);

    // podman runs the image with and without mappings, old and new ones.
    run_plain(&store);
    run_mapped(&store, 5);
    run_mapped(&store, 1000);
    // The template of a stopped, not removed, container stays. No /dev/shm
    // mount (--ipc=none): a mount namespace another test makes meanwhile
    // copies that mount, and podman's rm then fails on it with EBUSY.
    run_ok(
        store
            .podman()
            .args(["run", "--ipc=none", "--name", "stopped"])
            .args(map_args(2000))
            .args([IMAGE, "/bin/true"]),
    );
    let report = gc(&store, &[]);
    assert_eq!(count(&report, "mapped-layer"), 2, "{report:#}");
    let kept = report["skipped"].as_array().unwrap();
    assert!(
        kept.iter().any(|s| s["kind"] == "mapped-layer"
            && s["reason"].as_str().unwrap().contains("stacked on it")),
        "{report:#}"
    );
    assert_eq!(layers_and_mapped(&store).1.len(), 1);
    podman(&store, &["start", "--attach", "stopped"]);
    assert_consistent(&store);
    // Once the container is gone its template goes; then podman can still
    // remove the image (no dangling mapped-layers entry).
    podman(&store, &["rm", "stopped"]);
    let report = gc(&store, &[]);
    assert_eq!(count(&report, "mapped-layer"), 1, "{report:#}");
    assert_eq!(store.used_inodes(), baseline);
    podman(&store, &["rmi", IMAGE]);
    let out = run_ok(store.containers_storage().args(["layers", "--json"]));
    assert_eq!(
        serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap(),
        Vec::<Value>::new()
    );
}

#[test]
#[ignore = "privileged: needs root, loop mounts, podman 4.3.1, containers-storage and runc"]
fn gc_in_a_loop_beside_podman_in_a_loop() {
    require_privileged(TOOLS);
    let store = debian_store();
    let baseline = store.used_inodes();
    run_ok(
        store
            .podman()
            .args(["run", "-d", "--name", "long"])
            .args(map_args(7))
            .args([IMAGE, "sleep", "600"]),
    );
    let deadline = Instant::now() + Duration::from_secs(25);
    let removed = thread::scope(|s| {
        let collector = s.spawn(|| {
            let mut removed = 0;
            let mut runs = 0;
            while Instant::now() < deadline {
                removed += gc(&store, &[])["layers_removed"].as_u64().unwrap();
                runs += 1;
            }
            eprintln!("{runs} gc runs removed {removed} layers");
            removed
        });
        let mut i = 0u32;
        while Instant::now() < deadline {
            match i % 4 {
                0 => run_plain(&store),
                1 => run_mapped(&store, 100 + i),   // new mapping
                _ => run_mapped(&store, 1 + i % 2), // repeated mappings
            }
            i += 1;
        }
        eprintln!("{i} podman runs");
        collector.join().unwrap()
    });
    assert!(removed > 0, "gc never collected anything while podman ran");
    // The running container still has its layer and template.
    podman(&store, &["exec", "long", "/bin/true"]);
    let out = podman(&store, &["exec", "long", "cat", "/etc/debian_version"]);
    assert!(!out.stdout.is_empty());
    assert_consistent(&store);
    podman(&store, &["rm", "--force", "--time", "0", "long"]);
    gc(&store, &[]);
    assert_eq!(store.used_inodes(), baseline);
    run_mapped(&store, 7);
}

/// A small xorshift generator: random kill points, reproducible from the
/// seed printed on failure.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Nothing a killed gc left is stuck: a dry run now plans to remove every
/// layer except the image's own, and keeps nothing back.
fn assert_next_gc_finishes(store: &PodmanStore) {
    let dry = gc(store, &["--dry-run"]);
    let (layers, _) = layers_and_mapped(store);
    let top: BTreeSet<String> = read_json(store.graph.join("overlay-images/images.json"))
        .iter()
        .map(|i| i["layer"].as_str().unwrap().to_owned())
        .collect();
    let planned: BTreeSet<String> = actions(&dry)
        .into_iter()
        .filter(|(k, _)| k == "mapped-layer" || k == "incomplete-layer")
        .map(|(_, id)| id)
        .collect();
    let expected: BTreeSet<String> = layers.difference(&top).cloned().collect();
    assert_eq!(planned, expected, "left for a later gc: {dry:#}");
    assert_eq!(dry["skipped"], serde_json::json!([]), "{dry:#}");
}

#[test]
#[ignore = "privileged: needs root, loop mounts, podman 4.3.1, containers-storage and runc"]
fn gc_killed_at_random_points_leaves_a_store_podman_accepts() {
    require_privileged(TOOLS);
    let store = debian_store();
    let baseline = store.used_inodes();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill-point seed {seed}");
    let mut rng = Rng(seed);
    let mut next_map = 1;
    let mut kills = 0;
    while kills < 20 {
        if layers_and_mapped(&store).1.len() < 4 {
            for _ in 0..8 {
                run_mapped(&store, next_map);
                next_map += 1;
            }
        }
        let mut child = store
            .layerstore(LAYERSTORE)
            .args(["gc", "--min-age", "0"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        thread::sleep(Duration::from_millis(5 + rng.below(300)));
        if child.try_wait().unwrap().is_some() {
            continue; // finished before the kill: make more work
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        assert_next_gc_finishes(&store);
        assert_consistent(&store);
        run_plain(&store);
        if kills % 5 == 0 {
            run_mapped(&store, 1); // a mapping that may or may not still have a template
        }
    }
    let report = gc(&store, &[]);
    eprintln!("final gc: {} layers", report["layers_removed"]);
    assert!(layers_and_mapped(&store).1.is_empty());
    assert_eq!(
        store.used_inodes(),
        baseline,
        "the next gc did not finish the job"
    );
    assert_consistent(&store);
    run_mapped(&store, 3);
    run_plain(&store);
}

/// The ordinary user the rootless test runs podman and layerstore as.
const USER: &str = "lsgc";

#[test]
#[ignore = "privileged: needs root (to create a user and a loop mount), uidmap, rootless podman 4.3.1"]
fn gc_rootless_collects_a_users_templates() {
    require_privileged(&["podman", "runuser", "useradd", "newuidmap", "mkfs.ext4"]);
    // The user's own subordinate ids, held for the whole test: useradd
    // gives none where /etc/subuid does not exist yet, and the rootless
    // --userns=auto test changes the files while it runs (the guard's lock
    // keeps the two apart).
    let _ids = layerstore_test_support::subid::SubIds::set(
        &format!("{USER}:100000:65536\n"),
        &format!("{USER}:100000:65536\n"),
    );
    if std::process::Command::new("id")
        .arg(USER)
        .output()
        .unwrap()
        .status
        .code()
        != Some(0)
    {
        run_ok(std::process::Command::new("useradd").args(["-m", USER]));
    }
    let _reaper = layerstore_test_support::rootless::Reaper(USER);
    let store = PodmanStore::on_small_fs(4 * 1024);
    let base = store.run.parent().unwrap().to_path_buf();
    let xdg = base.join("xdg");
    for (dir, mode) in [(&base, "755"), (&store.run, "700"), (&xdg, "700")] {
        fs::create_dir_all(dir).unwrap();
        run_ok(std::process::Command::new("chmod").arg(mode).arg(dir));
    }
    run_ok(
        std::process::Command::new("chown")
            .arg("-R")
            .arg(format!("{USER}:"))
            .args([
                &store.run,
                &xdg,
                &store.graph.parent().unwrap().to_path_buf(),
            ]),
    );
    let home = std::path::PathBuf::from(format!("/home/{USER}"));
    let user = |cmd: std::process::Command| {
        layerstore_test_support::rootless::as_user(USER, &home, &xdg, &cmd)
    };
    run_ok(&mut user({
        let mut c = std::process::Command::new("mkdir");
        c.arg("-p").arg(store.run.join("overlay"));
        c
    }));
    run_ok(&mut user({
        let mut c = std::process::Command::new("touch");
        c.arg(store.run.join("overlay/idmapped-lower-dir-false"));
        c
    }));
    let podman = |args: &[&str]| {
        let mut c = store.podman();
        c.args(args);
        run_ok(&mut user(c))
    };
    let run_mapped = |k: u32| {
        let map = format!("0:{k}:1000");
        podman(&[
            "run",
            "--rm",
            "--uidmap",
            &map,
            "--gidmap",
            &map,
            IMAGE,
            "/bin/true",
        ]);
    };
    let gc = |args: &[&str]| -> Value {
        let mut c = store.layerstore(LAYERSTORE);
        c.args(["gc", "--json", "--min-age", "0"]).args(args);
        serde_json::from_slice(&run_ok(&mut user(c)).stdout).unwrap()
    };
    // The image, fed on stdin (root's cache is not readable by the user).
    let mut import = store.podman();
    import.args(["import", "-q", "-", IMAGE]);
    let tar = fs::File::open(debian_rootfs()).unwrap();
    run_ok(user(import).stdin(tar));
    podman(&["run", "--rm", IMAGE, "/bin/true"]);
    run_mapped(1);
    podman(&["secret", "ls"]);
    gc(&[]);
    let baseline = store.used_inodes();
    for k in 2..=4 {
        run_mapped(k);
    }
    assert!(store.used_inodes() - baseline >= 3 * IMAGE_INODES);
    let dry = gc(&["--dry-run"]);
    let real = gc(&[]);
    assert_eq!(actions(&dry), actions(&real));
    assert_eq!(count(&real, "mapped-layer"), 3, "{real:#}");
    assert_eq!(store.used_inodes(), baseline);
    // Everything gc left or made belongs to the user.
    let lock = store.graph.join(layerstore::gc::GC_LOCK_FILE);
    let uid = std::os::unix::fs::MetadataExt::uid(&fs::metadata(&lock).unwrap());
    let user_uid =
        String::from_utf8(run_ok(std::process::Command::new("id").args(["-u", USER])).stdout)
            .unwrap();
    assert_eq!(uid.to_string(), user_uid.trim());
    podman(&["run", "--rm", IMAGE, "/bin/true"]);
    run_mapped(2);
    let out = podman(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(IMAGE));
}
