//! `--userns=auto` against the real podman 4.3.1, runc and kernel: host
//! ids from the `containers` entries of /etc/subuid and /etc/subgid
//! (replaced for each test and restored), sized from the image, never
//! overlapping another container's, layerstore's and podman's allocating
//! side by side; no template for any of them; exhaustion and a missing
//! entry are clear errors that change nothing.

use std::collections::BTreeSet;
use std::fs;
use std::process::{Command, Output, Stdio};

use layerstore_test_support::subid::SubIds;
use layerstore_test_support::{require_privileged, run_ok, PodmanStore};
use serde_json::Value;

mod scene;

use scene::{stderr, stdout, Scene, LAYERSTORE};

const TOOLS: &[&str] = &["podman", "runc", "busybox"];

/// Removes every podman container of the scene when the test ends.
struct Containers<'a>(&'a Scene);

impl Drop for Containers<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .podman()
            .args(["rm", "--all", "--force", "--time", "0"])
            .output();
    }
}

/// (container, host, size) triples of a /proc uid_map or gid_map.
type Extents = Vec<(u64, u64, u64)>;

fn proc_map(text: &str) -> Extents {
    text.lines()
        .map(|l| {
            let f: Vec<u64> = l.split_whitespace().map(|n| n.parse().unwrap()).collect();
            (f[0], f[1], f[2])
        })
        .collect()
}

/// The uid_map and gid_map of podman container `id`'s process.
fn maps_of(scene: &Scene, id: &str) -> (Extents, Extents) {
    let pid = stdout(&run_ok(scene.podman().args([
        "inspect",
        "--format",
        "{{.State.Pid}}",
        id,
    ])));
    let read = |f: &str| proc_map(&fs::read_to_string(format!("/proc/{pid}/{f}")).unwrap());
    (read("uid_map"), read("gid_map"))
}

/// Every host id of `maps` lies in `[lo, hi)`; and no id is in `seen`
/// already (then it is added).
fn claim(maps: &[(u64, u64, u64)], lo: u64, hi: u64, seen: &mut BTreeSet<(u64, u64)>, who: &str) {
    for &(_, host, size) in maps {
        assert!(
            host >= lo && host + size <= hi,
            "{who}: {maps:?} outside {lo}..{hi}"
        );
        let (start, end) = (host, host + size);
        for &(s, e) in seen.iter() {
            assert!(
                end <= s || start >= e,
                "{who}: {start}..{end} overlaps {s}..{e}"
            );
        }
        seen.insert((start, end));
    }
}

/// `layerstore doctor`'s `userns.auto` check.
fn doctor_userns(scene: &Scene) -> Value {
    let out = scene
        .layerstore()
        .args(["doctor", "--json", "--no-probe"])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "userns.auto")
        .cloned()
        .unwrap()
}

fn no_templates(scene: &Scene) {
    for image in scene.records("overlay-images/images.json") {
        assert!(
            image.get("mapped-layers").is_none(),
            "a template was made: {image}"
        );
    }
}

#[test]
#[ignore = "privileged: edits /etc/subuid and /etc/subgid; real podman 4.3.1, runc, idmapped mounts"]
fn twenty_layerstore_and_five_podman_allocations_in_parallel_are_disjoint() {
    require_privileged(TOOLS);
    const LO: u64 = 500_000_000;
    const HI: u64 = LO + 300_000;
    let _ids = SubIds::set(
        &format!("containers:{LO}:300000\n"),
        &format!("containers:{LO}:300000\n"),
    );
    let scene = Scene::new(PodmanStore::empty());
    let _containers = Containers(&scene);
    let outputs: Vec<(String, Output)> = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for i in 0..25 {
            let scene = &scene;
            handles.push(s.spawn(move || {
                let mut cmd = if i % 5 == 4 {
                    // podman 4.3.1 sizes an automatic namespace from the
                    // image while holding layers.lock and then takes
                    // storage.lock, the reverse of its own mount path: two
                    // podman processes can deadlock (fixed upstream, see
                    // docs/userns.md). With size=N it skips that step.
                    let mut c = scene.podman();
                    c.args(["run", "--pull=never", "--userns=auto:size=1024"]);
                    c
                } else {
                    let mut c = scene.layerstore();
                    c.args(["run", "--userns=auto"]);
                    c
                };
                cmd.args(["-d", "bb", "sleep", "600"]).stdin(Stdio::null());
                let who = if i % 5 == 4 { "podman" } else { "layerstore" };
                (format!("{who} run #{i}"), cmd.output().unwrap())
            }));
        }
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ids = Vec::new();
    for (who, out) in &outputs {
        assert!(out.status.success(), "{who}: {}", stderr(out));
        ids.push((who.clone(), stdout(out)));
    }
    assert_eq!(ids.len(), 25);
    let (mut uids, mut gids) = (BTreeSet::new(), BTreeSet::new());
    for (who, id) in &ids {
        let (u, g) = maps_of(&scene, id);
        assert!(!u.is_empty() && !g.is_empty(), "{who}: no user namespace");
        claim(&u, LO, HI, &mut uids, who);
        claim(&g, LO, HI, &mut gids, who);
    }
    no_templates(&scene);
    // podman sees layerstore's maps too: its next choice avoids all 25.
    let next = run_ok(scene.podman().args([
        "run",
        "-d",
        "--pull=never",
        "--userns=auto",
        "bb",
        "sleep",
        "600",
    ]));
    let (u, _) = maps_of(&scene, &stdout(&next));
    claim(&u, LO, HI, &mut uids, "podman run after all");
}

#[test]
#[ignore = "privileged: edits /etc/subuid and /etc/subgid; real podman 4.3.1, runc, idmapped mounts"]
fn two_ranges_give_a_non_contiguous_map_that_runs_and_exhaustion_changes_nothing() {
    require_privileged(TOOLS);
    let _ids = SubIds::set(
        "containers:600100000:100000\ncontainers:600000000:600\n",
        "containers:600000000:100000\n",
    );
    let scene = Scene::new(PodmanStore::empty());
    let _containers = Containers(&scene);
    let layers_before = scene.layers().len();
    let out = scene.run(&["-d", "--userns=auto", "bb", "sleep", "600"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out);
    // The image needs 1024 ids (storage.conf's minimum): 600 from the
    // first range, 424 from the second.
    let (u, g) = maps_of(&scene, &id);
    assert_eq!(u, [(0, 600000000, 600), (600, 600100000, 424)]);
    assert_eq!(g, [(0, 600000000, 1024)]);
    let owner = run_ok(
        scene
            .podman()
            .args(["exec", &id, "stat", "-c", "%u:%g", "/bin/busybox"]),
    );
    assert_eq!(stdout(&owner), "0:0");
    no_templates(&scene);
    // Two layers: ours on the image's top layer and the empty one podman
    // makes for any --rootfs container; no mapped copy.
    assert_eq!(scene.layers().len(), layers_before + 2);

    let records = scene.store.record_files();
    let mounts = scene.mounts();
    let out = scene.run(&["--rm", "--userns=auto:size=200000", "bb", "true"]);
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    for part in [
        "needs 200000 uids",
        "/etc/subuid",
        "free: 600100424-600199999",
        "in use by containers: 600000000-600000599, 600100000-600100423",
    ] {
        assert!(err.contains(part), "{part}: {err}");
    }
    assert_eq!(
        scene.store.record_files(),
        records,
        "exhaustion wrote records"
    );
    assert_eq!(scene.mounts(), mounts);
    // The doctor counts what is left: not one more of 65,536 ids.
    let check = doctor_userns(&scene);
    assert_eq!(check["status"], "warn", "{check}");
    assert_eq!(check["facts"]["free_uids"], 100600 - 1024, "{check}");
}

#[test]
#[ignore = "privileged: edits /etc/subuid and /etc/subgid; real podman 4.3.1, runc"]
fn a_missing_containers_entry_names_the_file_and_the_fix() {
    require_privileged(TOOLS);
    let _ids = SubIds::set("someone:100000:65536\n", "containers:700000000:65536\n");
    let scene = Scene::new(PodmanStore::empty());
    let records = scene.store.record_files();
    let out = scene.run(&["--rm", "--userns=auto", "bb", "true"]);
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(
        err.contains("\"containers\" has no subordinate uids in /etc/subuid")
            && err.contains("containers:2147483647:2147483648"),
        "{err}"
    );
    let create = scene
        .layerstore()
        .args(["create", "--userns=auto", "bb"])
        .output()
        .unwrap();
    assert!(!create.status.success());
    assert!(
        stderr(&create).contains("/etc/subuid"),
        "{}",
        stderr(&create)
    );
    assert_eq!(scene.store.record_files(), records);
    // gids without uids: a mistake the doctor warns of, naming the file.
    let check = doctor_userns(&scene);
    assert_eq!(check["status"], "warn", "{check}");
    assert!(
        check["seen"]
            .as_str()
            .unwrap()
            .contains("no subordinate uids in /etc/subuid"),
        "{check}"
    );
}

#[test]
#[ignore = "privileged: edits /etc/subuid and /etc/subgid; runc, idmapped mounts"]
fn the_image_sizes_the_namespace_and_size_is_honoured() {
    require_privileged(TOOLS);
    let _ids = SubIds::set(
        "containers:800000000:400000\n",
        "containers:800000000:400000\n",
    );
    let scene = Scene::new(PodmanStore::empty());
    let big = layerstore_test_support::images::busybox_system(
        &["sh", "cat", "true"],
        &[
            "f etc/passwd 0644 0:0 root:x:0:0:root:/root:/bin/sh\\napp:x:1500:1500::/:/bin/sh\\n",
            "d data 0755 0:0",
            "f data/big 0644 70000:70001 x",
        ],
    );
    scene.store.import_layer_spec(LAYERSTORE, &big, "big");
    let create = |conf: Option<&std::path::Path>, args: &[&str]| -> Output {
        let mut cmd = scene.layerstore();
        if let Some(c) = conf {
            cmd.env("CONTAINERS_STORAGE_CONF", c);
        }
        cmd.args(["create", "--json"]).args(args).output().unwrap()
    };
    let size_of = |out: &Output| -> Vec<Value> {
        assert!(out.status.success(), "{}", stderr(out));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let c = if v.is_array() { v[0].clone() } else { v };
        c["uidmap"].as_array().unwrap().clone()
    };
    // Over the default auto-userns-max-size (65536): refused, named.
    let records = scene.store.record_files();
    let out = create(None, &["--userns=auto", "big"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("70002") && stderr(&out).contains("auto-userns-max-size (65536)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(scene.store.record_files(), records);
    // With a storage.conf that allows it: uid 70000 and gid 70001 fit.
    let conf = scene.store.graph.parent().unwrap().join("storage.conf");
    fs::write(
        &conf,
        "[storage]\ndriver = \"overlay\"\n[storage.options]\nauto-userns-max-size = 100000\n",
    )
    .unwrap();
    let maps = size_of(&create(Some(&conf), &["--userns=auto", "big"]));
    assert_eq!(maps.len(), 1);
    assert_eq!(maps[0]["size"], 70002);
    assert_eq!(maps[0]["host_id"], 800000000);
    // size=N is honoured, whatever the image needs, and comes next.
    let maps = size_of(&create(None, &["--userns=auto:size=3000", "big"]));
    assert_eq!(maps[0]["size"], 3000);
    assert_eq!(maps[0]["host_id"], 800070002);
    // The direct launcher allocates too, above both.
    let out = scene
        .layerstore()
        .args([
            "run",
            "--direct",
            "--rm",
            "--userns=auto",
            "bb",
            "cat",
            "/proc/self/uid_map",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(proc_map(&stdout(&out)), [(0, 800073002, 1024)]);
    // A bad option is refused before anything is made.
    let out = create(None, &["--userns=auto:bogus=1", "bb"]);
    assert!(
        stderr(&out).contains("unknown option \"bogus\""),
        "{}",
        stderr(&out)
    );
    let out = create(None, &["--userns=auto", "--uidmap", "0:1:1", "bb"]);
    assert!(
        stderr(&out).contains("mutually exclusive"),
        "{}",
        stderr(&out)
    );
}

/// The user the rootless test runs podman and layerstore as (its own: the
/// rootless gc test ends every process of its user).
const ROOTLESS_USER: &str = "lsauto";

#[test]
#[ignore = "privileged: creates a user, edits /etc/subuid and /etc/subgid; rootless podman 4.3.1"]
fn rootless_allocation_uses_the_callers_own_ranges_as_rootless_podman_sees_them() {
    require_privileged(&["podman", "runuser", "useradd", "newuidmap"]);
    // Two uid ranges (10,000 ids), one gid range: ids 1-10000 inside the
    // user's namespace, as rootless podman numbers them.
    let _ids = SubIds::set(
        &format!("{ROOTLESS_USER}:300000:5000\n{ROOTLESS_USER}:400000:5000\n"),
        &format!("{ROOTLESS_USER}:300000:10000\n"),
    );
    if !Command::new("id")
        .arg(ROOTLESS_USER)
        .output()
        .unwrap()
        .status
        .success()
    {
        // A system user: useradd gives it no subordinate ids of its own.
        run_ok(Command::new("useradd").args([
            "-r",
            "-M",
            "-s",
            "/usr/sbin/nologin",
            ROOTLESS_USER,
        ]));
    }
    let _reap = layerstore_test_support::rootless::Reaper(ROOTLESS_USER);
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let (home, xdg) = (base.join("home"), base.join("xdg"));
    run_ok(Command::new("chmod").arg("755").arg(base));
    for d in [&home, &xdg] {
        fs::create_dir(d).unwrap();
        run_ok(
            Command::new("chown")
                .arg(format!("{ROOTLESS_USER}:"))
                .arg(d),
        );
        run_ok(Command::new("chmod").arg("700").arg(d));
    }
    let tar = base.join("bb.tar");
    fs::write(
        &tar,
        layerstore_test_support::images::layer_tar(&scene::busybox()),
    )
    .unwrap();
    run_ok(Command::new("chmod").arg("644").arg(&tar));
    let user = |args: &[&str]| -> Output {
        let mut cmd = Command::new(args[0]);
        cmd.args(&args[1..]).env(
            "CONTAINERS_CONF",
            layerstore_test_support::testdata("containers.conf"),
        );
        layerstore_test_support::rootless::as_user(ROOTLESS_USER, &home, &xdg, &cmd)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let ok = |args: &[&str]| -> Output {
        let out = user(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        out
    };
    ok(&[
        "podman",
        "import",
        "-q",
        &tar.display().to_string(),
        "localhost/bb",
    ]);
    // layerstore runs where rootless podman runs: in the user's namespace.
    let create = |auto: &str| {
        user(&[
            "podman",
            "unshare",
            LAYERSTORE,
            "create",
            "--json",
            auto,
            "localhost/bb",
        ])
    };
    let first = create("--userns=auto");
    assert!(first.status.success(), "{}", stderr(&first));
    let record: Value = serde_json::from_slice(&first.stdout).unwrap();
    let record = if record.is_array() {
        record[0].clone()
    } else {
        record
    };
    assert_eq!(
        record["uidmap"],
        serde_json::json!([{"container_id": 0, "host_id": 1, "size": 1024}])
    );
    assert_eq!(record["gidmap"], record["uidmap"]);
    // Rootless podman's own --userns=auto sees it and takes the next ids.
    let podman_id = stdout(&ok(&[
        "podman",
        "create",
        "--userns=auto:size=1024",
        "localhost/bb",
        "true",
    ]));
    let containers: Vec<Value> = serde_json::from_slice(
        &fs::read(home.join(".local/share/containers/storage/overlay-containers/containers.json"))
            .unwrap(),
    )
    .unwrap();
    let podmans = containers
        .iter()
        .find(|c| c["id"] == podman_id.as_str())
        .unwrap();
    assert_eq!(
        podmans["uidmap"],
        serde_json::json!([{"container_id": 0, "host_id": 1025, "size": 1024}])
    );
    // 10,000 uids: 2,048 used, 7,952 left.
    let exhausted = create("--userns=auto:size=8000");
    assert!(!exhausted.status.success());
    let err = stderr(&exhausted);
    assert!(
        err.contains("needs 8000 uids")
            && err.contains("7952 of the 10000")
            && err.contains(ROOTLESS_USER),
        "{err}"
    );
    let last = create("--userns=auto:size=7952");
    assert!(last.status.success(), "{}", stderr(&last));
    let _ = user(&["podman", "system", "reset", "--force"]);
}

#[test]
#[ignore = "privileged: edits /etc/subuid and /etc/subgid; real podman 4.3.1, runc, idmapped mounts"]
fn a_passwd_mounted_from_the_host_sizes_the_namespace_as_in_podman() {
    require_privileged(TOOLS);
    let _ids = SubIds::set(
        "containers:900000000:400000\n",
        "containers:900000000:400000\n",
    );
    let scene = Scene::new(PodmanStore::empty());
    let _containers = Containers(&scene);
    let passwd = scene.store.graph.parent().unwrap().join("passwd");
    fs::write(
        &passwd,
        "root:x:0:0::/root:/bin/sh\nsvc:x:3000:3000::/:/bin/sh\n",
    )
    .unwrap();
    let volume = format!("{}:/etc/passwd:ro", passwd.display());
    let out = scene.run(&["-d", "--userns=auto", "-v", &volume, "bb", "sleep", "600"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (u, g) = maps_of(&scene, &stdout(&out));
    assert_eq!(u, [(0, 900000000, 3001)]);
    assert_eq!(g, [(0, 900000000, 3001)]);
    // Inside, the mounted file is the one the size came from.
    let inside = run_ok(
        scene
            .podman()
            .args(["exec", &stdout(&out), "cat", "/etc/passwd"]),
    );
    assert!(stdout(&inside).contains("svc:x:3000"));
}
