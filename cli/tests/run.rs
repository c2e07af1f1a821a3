//! `layerstore run` against the real runc, podman 4.3.1 and kernel: a new
//! mapping costs no layer and no inode, on idmapped mounts or with
//! `--nocache`; templates are shared with podman both ways; bad input fails
//! before anything is made, and what was made is removed.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use layerstore_test_support::images::{docker_archive, layer_tar};
use layerstore_test_support::{require_privileged, run_ok, PodmanStore};
use serde_json::Value;

const LAYERSTORE: &str = env!("CARGO_BIN_EXE_layerstore");
const TOOLS: &[&str] = &["podman", "containers-storage", "runc", "busybox"];

/// A busybox system with a user and a group besides root.
const BUSYBOX: &str = "
d bin 0755 0:0
F bin/busybox 0755 0:0 /bin/busybox
l bin/sh busybox
l bin/stat busybox
l bin/id busybox
l bin/cat busybox
l bin/ls busybox
l bin/sleep busybox
l bin/touch busybox
l bin/pwd busybox
l bin/true busybox
d etc 0755 0:0
f etc/passwd 0644 0:0 root:x:0:0:root:/root:/bin/sh\\nbob:x:1000:1000::/home/bob:/bin/sh\\n
f etc/group 0644 0:0 root:x:0:\\nstaff:x:50:\\nbob:x:1000:\\n
d home 0755 0:0
d home/bob 0750 1000:1000
d tmp 1777 0:0
";

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_owned()
}

/// `layerstore run ...` on `store`, output captured.
fn run(store: &PodmanStore, args: &[&str]) -> Output {
    store
        .layerstore(LAYERSTORE)
        .args(["run", "--direct"])
        .args(args)
        .output()
        .expect("starting layerstore")
}

/// A store with the busybox image imported by layerstore as `localhost/bb`.
fn busybox_store(store: PodmanStore) -> PodmanStore {
    store.import_layer_spec(LAYERSTORE, BUSYBOX, "bb");
    store
}

/// The names of the containers podman sees, its own and external ones.
fn podman_names(store: &PodmanStore) -> String {
    let out = run_ok(
        store
            .podman()
            .args(["ps", "--external", "-a", "--format", "{{.Names}}"]),
    );
    stdout(&out)
}

/// The ids of the store's layers, sorted.
fn layer_ids(store: &PodmanStore) -> Vec<String> {
    let out = run_ok(store.layerstore(LAYERSTORE).args(["layers", "--json"]));
    let v: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut ids: Vec<String> = v
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// The metadata files' bytes, to prove a failure changed nothing.
fn metadata(store: &PodmanStore) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    store.record_files()
}

/// The records in [`metadata`]'s files (an absent file holds none).
fn records(files: &[(PathBuf, Option<Vec<u8>>)]) -> Vec<Value> {
    files
        .iter()
        .map(|(_, bytes)| match bytes {
            Some(b) => serde_json::from_slice(b).unwrap(),
            None => Value::Array(vec![]),
        })
        .collect()
}

/// Mounts under the store (the private bind of the overlay home aside).
fn mounts_under(store: &PodmanStore) -> Vec<String> {
    store.mounts_below()
}

/// An executable script at `dir/name`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    let mut f = fs::File::create(&path).unwrap();
    writeln!(f, "#!/bin/sh\n{body}").unwrap();
    drop(f);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
#[ignore = "privileged: needs root, overlay mounts and runc"]
fn bad_input_fails_first_and_leaves_nothing() {
    require_privileged(TOOLS);
    let store = busybox_store(PodmanStore::empty());
    let dir = tempfile::tempdir().unwrap();
    let many: Vec<String> = (0..341u32)
        .map(|i| format!("--uidmap={}:{}:1", i, 100000 + 2 * i))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    // A runtime that fails the way Debian's crun fails on this host.
    let failing = script(
        dir.path(),
        "crun",
        r#"log=""; while [ $# -gt 0 ]; do [ "$1" = --log ] && log=$2; shift; done
[ -n "$log" ] && echo '{"level":"error","msg":"cgroups in hybrid mode not supported"}' >> "$log"
echo "crun: cgroups in hybrid mode not supported" >&2; exit 1"#,
    );
    let failing = failing.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str, u8)> = vec![
        (
            vec!["--uidmap", "0:100000:abc", "bb", "true"],
            "--uidmap 0:100000:abc",
            125,
        ),
        (
            vec![
                "--uidmap",
                "0:100000:65536",
                "--uidmap",
                "100:300000:10",
                "bb",
                "true",
            ],
            "overlap",
            125,
        ),
        (
            vec!["--uidmap", "1:100000:65536", "bb", "true"],
            "container root",
            125,
        ),
        ([many.clone(), vec!["bb", "true"]].concat(), "340", 125),
        (
            vec![
                "--uidmap",
                "0:200000:65536",
                "--user",
                "70000",
                "bb",
                "true",
            ],
            "uid 70000 is outside",
            125,
        ),
        (vec!["--env", "NOEQUALS", "bb", "true"], "--env", 125),
        (vec!["--workdir", "rel", "bb", "true"], "--workdir", 125),
        (
            vec!["localhost/nope", "true"],
            "image localhost/nope is not in the store",
            125,
        ),
        (
            vec!["--runtime", "/nonexistent/runc", "bb", "true"],
            "/nonexistent/runc",
            125,
        ),
        (
            vec!["--runtime", "no-such-runtime", "bb", "true"],
            "not found in PATH",
            125,
        ),
        (vec!["bb"], "no command given", 125),
        (
            vec!["--user", "nobody", "bb", "true"],
            "no user \"nobody\"",
            125,
        ),
        (
            vec!["--runtime", failing, "bb", "true"],
            "OCI runtime crun failed to run container",
            125,
        ),
        (
            vec![
                "--runtime",
                failing,
                "--uidmap",
                "0:200000:65536",
                "--nocache",
                "bb",
                "true",
            ],
            "cgroups in hybrid mode not supported",
            125,
        ),
        (
            vec!["bb", "/no/such/command"],
            "no such file or directory",
            127,
        ),
    ];
    let before = metadata(&store);
    // Failures found after the container was made: it is removed again, so
    // the records are as before, though files may have been rewritten.
    let late = ["--user nobody", "--runtime", "/no/such/command"];
    for (args, message, code) in cases {
        let out = run(&store, &args);
        assert_eq!(
            out.status.code(),
            Some(i32::from(code)),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains(message),
            "{args:?}: expected {message:?} in:\n{}",
            stderr(&out)
        );
        let joined = args.join(" ");
        if late.iter().any(|l| joined.contains(l))
            && !joined.contains("/nonexistent")
            && !joined.contains("no-such")
        {
            assert_eq!(
                records(&metadata(&store)),
                records(&before),
                "{args:?} left records"
            );
        } else {
            assert_eq!(metadata(&store), before, "{args:?} changed the store");
        }
        assert_eq!(
            mounts_under(&store),
            Vec::<String>::new(),
            "{args:?} left mounts"
        );
        let leftovers: Vec<_> = fs::read_dir(store.run.join("overlay-containers"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(leftovers.is_empty(), "{args:?} left {leftovers:?}");
    }
    // Debian's crun, where installed, fails on this host's cgroups: a clear
    // error and nothing left, the same as the stand-in above.
    if let Some(crun) = layerstore_test_support::which("crun") {
        let out = run(&store, &["--runtime", crun.to_str().unwrap(), "bb", "true"]);
        if !out.status.success() {
            assert!(
                stderr(&out).contains("OCI runtime crun failed"),
                "{}",
                stderr(&out)
            );
            assert_eq!(records(&metadata(&store)), records(&before));
        }
    }
}

#[test]
#[ignore = "privileged: needs root, overlay mounts and runc"]
fn runs_like_podman_run() {
    require_privileged(TOOLS);
    let store = busybox_store(PodmanStore::empty());
    let layers = layer_ids(&store);

    // The command's exit code, environment, working directory, user names.
    let out = run(
        &store,
        &[
            "--rm",
            "--env",
            "GREETING=hi",
            "--workdir",
            "/home",
            "--user",
            "bob:staff",
            "bb",
            "sh",
            "-c",
            "echo $GREETING $(pwd) $(id -u):$(id -g); exit 7",
        ],
    );
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hi /home 1000:50");

    // Never more than the caller's limits (podman's defaults would fail here).
    let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let out = run(&store, &["--rm", "bb", "sh", "-c", "ulimit -n; ulimit -Hn"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let expect = |v: Option<u64>| v.map_or("unlimited".to_owned(), |n| n.to_string());
    assert_eq!(
        stdout(&out),
        format!("{}\n{}", expect(nofile.current), expect(nofile.maximum))
    );

    // --no-new-keyring unless --keyring: seen by a runtime wrapper.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("argv");
    let wrapper = script(
        dir.path(),
        "runc-wrapper",
        &format!("echo \"$@\" >> {}\nexec runc \"$@\"", log.display()),
    );
    let wrapper = wrapper.to_str().unwrap();
    let out = run(&store, &["--rm", "--runtime", wrapper, "bb", "true"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(
        &store,
        &["--rm", "--keyring", "--runtime", wrapper, "bb", "true"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let argv = fs::read_to_string(&log).unwrap();
    let creates: Vec<&str> = argv
        .lines()
        .filter(|l| l.contains(" run --detach "))
        .collect();
    assert_eq!(creates.len(), 2, "{argv}");
    assert!(creates[0].contains("--no-new-keyring"), "{}", creates[0]);
    assert!(!creates[1].contains("--no-new-keyring"), "{}", creates[1]);

    // The network: none has only loopback; host (with a user namespace too)
    // sees the host's devices.
    let host_nics = fs::read_dir("/sys/class/net").unwrap().count();
    let out = run(&store, &["--rm", "bb", "ls", "/sys/class/net"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "lo");
    let out = run(
        &store,
        &[
            "--rm",
            "--network",
            "host",
            "--uidmap",
            "0:800000:65536",
            "bb",
            "ls",
            "/sys/class/net",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), host_nics);

    // An archive is imported on first use and reused after.
    let archive = dir.path().join("bb-archive.tar");
    docker_archive(
        &archive,
        &[layer_tar(BUSYBOX)],
        "localhost/from-archive:latest",
    );
    let source = format!("docker-archive:{}", archive.display());
    let mut after_first = Vec::new();
    for round in 0..2 {
        let out = run(&store, &["--rm", &source, "cat", "/etc/group"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).contains("staff:x:50:"), "{}", stdout(&out));
        if round == 0 {
            after_first = layer_ids(&store);
            assert_eq!(after_first.len(), layers.len() + 1, "one imported layer");
        }
    }
    assert_eq!(
        layer_ids(&store),
        after_first,
        "the second run imported again"
    );
    let images = stdout(&run_ok(store.podman().args([
        "images",
        "--format",
        "{{.Repository}}",
    ])));
    assert!(images.contains("localhost/from-archive"), "{images}");
    let layers = after_first;

    // Without --rm the container stays, stopped, in podman's view too.
    let out = run(&store, &["--name", "kept", "bb", "true"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ps = podman_names(&store);
    assert!(
        ps.lines().any(|n| n == "kept"),
        "podman ps --external: {ps}"
    );
    assert_eq!(mounts_under(&store), Vec::<String>::new());
    // Its `run` process is gone: `layerstore gc` collects it and its layer,
    // and leaves podman's own containers alone.
    run_ok(
        store
            .podman()
            .args(["create", "--name", "podmans", "localhost/bb", "true"]),
    );
    let gc = run_ok(
        store
            .layerstore(LAYERSTORE)
            .args(["gc", "--min-age", "0s", "--json"]),
    );
    let report: Value = serde_json::from_slice(&gc.stdout).unwrap();
    let kinds: Vec<&str> = report["done"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"run-container"), "{report:#}");
    let ps = podman_names(&store);
    assert_eq!(ps, "podmans", "gc removed the wrong containers");
    run_ok(store.podman().args(["rm", "podmans"]));
    assert_eq!(layer_ids(&store), layers);

    // While it runs podman lists it; SIGTERM and SIGINT reach the
    // container, the exit code says so, and everything is cleaned up.
    for (signal, code) in [
        (rustix::process::Signal::TERM, 42),
        (rustix::process::Signal::INT, 43),
    ] {
        signal_reaches_the_container(&store, signal, code);
        assert_eq!(layer_ids(&store), layers);
        assert_eq!(mounts_under(&store), Vec::<String>::new());
        let ps = stdout(&run_ok(store.podman().args([
            "ps",
            "--external",
            "-a",
            "-q",
        ])));
        assert!(ps.is_empty(), "{ps}");
    }
}

/// `layerstore run --rm` of a command that exits `code` on `signal`: listed
/// by podman while it runs; `signal` sent to layerstore reaches it.
fn signal_reaches_the_container(store: &PodmanStore, signal: rustix::process::Signal, code: i32) {
    // If the run dies before the container (the test fails), the container's
    // init is reparented and runs on: killed by its tag when this returns.
    let tag = format!("signal-test-{}-{code}", std::process::id());
    let _guard = KillTagged(tag.clone());
    let mut child = store
        .layerstore(LAYERSTORE)
        .args([
            "run", "--direct", "--rm", "--name", "sleeper", "bb", "sh", "-c",
        ])
        // As PID 1 it only reacts to signals it handles (as under podman).
        .arg(format!(
            ": {tag}; trap 'exit 42' TERM; trap 'exit 43' INT; echo ready; while true; do sleep 0.1; done"
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = std::io::BufReader::new(child.stdout.take().unwrap());
    let start = Instant::now();
    loop {
        let ps = podman_names(store);
        let running = fs::read_dir(store.run.join("layerstore-runtime"))
            .map(|d| d.count() > 0)
            .unwrap_or(false);
        if ps.lines().any(|n| n == "sleeper") && running {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never listed: {ps}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut line = String::new();
    std::io::BufRead::read_line(&mut ready, &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    rustix::process::kill_process(rustix::process::Pid::from_child(&child), signal).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(code),
        "{signal:?} reached the container"
    );
    assert!(start.elapsed() < Duration::from_secs(30));
}

/// Kills, when dropped, every process whose command line holds the tag.
struct KillTagged(String);

impl Drop for KillTagged {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", &self.0])
            .status();
    }
}

/// `--uidmap 0:B:65536 --uidmap 70000:B+70000:1 --gidmap 0:B:65537`.
fn noncontig(base: u32) -> Vec<String> {
    vec![
        "--uidmap".into(),
        format!("0:{base}:65536"),
        "--uidmap".into(),
        format!("70000:{}:1", base + 70000),
        "--gidmap".into(),
        format!("0:{base}:65537"),
    ]
}

/// The Debian minbase rootfs tar (built once and cached).
fn debian_tar() -> PathBuf {
    let out = run_ok(
        Command::new("bash")
            .arg(layerstore_test_support::workspace_root().join("scripts/bench/debian-rootfs.sh")),
    );
    PathBuf::from(stdout(&out))
}

/// A tmpfs store with the Debian image imported by podman as
/// `localhost/debian`; `no_idmap` pre-creates `idmapped-lower-dir-false`.
fn debian_store(no_idmap: bool) -> PodmanStore {
    let store = PodmanStore::on_tmpfs("3g");
    if no_idmap {
        fs::create_dir_all(store.run.join("overlay")).unwrap();
        fs::write(store.run.join("overlay/idmapped-lower-dir-false"), "").unwrap();
    }
    run_ok(
        store
            .podman()
            .arg("import")
            .arg(debian_tar())
            .arg("localhost/debian"),
    );
    store
}

/// 20 runs, each with a new non-contiguous mapping: ownership right inside,
/// no layer and no inode left behind.
fn twenty_runs(store: &PodmanStore, nocache: bool, owner: &str) {
    let run_one = |i: u32| {
        let mut args = vec!["--rm".to_owned()];
        if nocache {
            args.push("--nocache".into());
        }
        args.extend(noncontig(1_000_000 + i * 200_000));
        args.extend(
            [
                "--user",
                "70000:0",
                "localhost/debian",
                "sh",
                "-c",
                "stat -c %u:%g /etc/passwd; id -u",
            ]
            .map(str::to_owned),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(store, &args)
    };
    // One warm-up run: the runtime's state directory stays.
    let out = run_one(0);
    assert!(out.status.success(), "{}", stderr(&out));
    let layers = layer_ids(store);
    let inodes = store.used_inodes();
    for i in 1..=20 {
        let out = run_one(i);
        assert!(out.status.success(), "run {i}: {}", stderr(&out));
        assert_eq!(stdout(&out), format!("{owner}\n70000"), "run {i}");
    }
    assert_eq!(layer_ids(store), layers, "a layer was added or lost");
    assert_eq!(store.used_inodes(), inodes, "inodes were not given back");
    assert_eq!(mounts_under(store), Vec::<String>::new());
    // podman still lists and runs the image, with and without a mapping.
    let images = stdout(&run_ok(store.podman().args([
        "images",
        "--format",
        "{{.Repository}}",
    ])));
    assert!(images.contains("localhost/debian"), "{images}");
    let out = run_ok(store.podman().args([
        "run",
        "--rm",
        "localhost/debian",
        "stat",
        "-c",
        "%u",
        "/etc/passwd",
    ]));
    assert_eq!(stdout(&out), "0");
}

#[test]
#[ignore = "privileged: needs root, idmapped mounts, runc, podman and debootstrap"]
fn twenty_mappings_on_idmapped_mounts_cost_nothing() {
    require_privileged(&["podman", "runc", "debootstrap"]);
    let store = debian_store(false);
    twenty_runs(&store, false, "0:0");
}

#[test]
#[ignore = "privileged: needs root, overlay mounts, runc, podman and debootstrap"]
fn nocache_without_idmapped_lowers_costs_nothing() {
    require_privileged(&["podman", "runc", "debootstrap"]);
    let store = debian_store(true);
    // Files keep their on-disk owners: root's files are nobody's inside.
    twenty_runs(&store, true, "65534:65534");
}

/// The image's mapped-layers.
fn mapped_layers(store: &PodmanStore, image: &str) -> Vec<String> {
    let out = run_ok(store.layerstore(LAYERSTORE).args(["images", "--json"]));
    let v: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let img = v
        .iter()
        .find(|i| i["names"].as_array().unwrap().iter().any(|n| n == image))
        .unwrap();
    img["mapped-layers"]
        .as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

#[test]
#[ignore = "privileged: needs root, overlay mounts, runc and podman"]
fn templates_are_shared_with_podman_both_ways() {
    require_privileged(TOOLS);
    let store = PodmanStore::empty();
    fs::create_dir_all(store.run.join("overlay")).unwrap();
    fs::write(store.run.join("overlay/idmapped-lower-dir-false"), "").unwrap();
    let store = busybox_store(store);
    let stat = [
        "localhost/bb",
        "stat",
        "-c",
        "%u:%g",
        "/etc/passwd",
        "/home/bob",
    ];

    let podman_stat = |maps: &[String]| {
        let out = run_ok(store.podman().args(["run", "--rm"]).args(maps).args(stat));
        stdout(&out)
    };
    let layerstore_stat = |maps: &[String]| {
        let args: Vec<&str> = ["--rm"]
            .into_iter()
            .chain(maps.iter().map(String::as_str))
            .chain(stat)
            .collect();
        let out = run(&store, &args);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };

    // podman makes the template for map A; layerstore reuses it.
    let a = noncontig(400_000);
    assert_eq!(podman_stat(&a), "0:0\n1000:1000");
    assert_eq!(mapped_layers(&store, "localhost/bb:latest").len(), 1);
    let layers = layer_ids(&store);
    assert_eq!(layerstore_stat(&a), "0:0\n1000:1000");
    assert_eq!(
        layer_ids(&store),
        layers,
        "layerstore made a second template"
    );

    // layerstore makes the template for map B (its fallback); podman reuses it.
    let b = noncontig(600_000);
    assert_eq!(layerstore_stat(&b), "0:0\n1000:1000");
    let mapped = mapped_layers(&store, "localhost/bb:latest");
    assert_eq!(mapped.len(), 2, "{mapped:?}");
    let layers = layer_ids(&store);
    assert_eq!(podman_stat(&b), "0:0\n1000:1000");
    assert_eq!(
        layer_ids(&store),
        layers,
        "podman did not reuse layerstore's template"
    );
    // containers-storage reads the template's record with map B.
    let out = run_ok(store.containers_storage().args(["layers", "--json"]));
    let cs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let record = cs
        .iter()
        .find(|l| l["id"] == mapped[1].as_str())
        .expect("listed");
    assert_eq!(record["uidmap"][0]["host_id"], 600_000, "{record}");
    assert_eq!(record["uidmap"][1]["host_id"], 670_000, "{record}");
}

/// Runroot directories the runtime trusts (its state, the bundle) made by
/// another user, or writable by others: run refuses before the runtime
/// sees them, naming the directory; nothing of the run stays.
#[test]
#[ignore = "privileged: needs root, overlay mounts and runc"]
fn runtime_directories_others_can_write_are_refused() {
    use std::os::unix::fs::chown;
    require_privileged(TOOLS);
    let store = busybox_store(PodmanStore::empty());
    let states = store.run.join("layerstore-runtime");
    let before = layer_ids(&store);
    for (owner, mode) in [(65534, 0o755), (0, 0o777)] {
        fs::create_dir_all(&states).unwrap();
        chown(&states, Some(owner), Some(owner)).unwrap();
        fs::set_permissions(&states, fs::Permissions::from_mode(mode)).unwrap();
        let out = run(&store, &["--rm", "bb", "true"]);
        assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("layerstore-runtime") && err.contains("writable by it alone"),
            "{err}"
        );
        assert_eq!(fs::read_dir(&states).unwrap().count(), 0);
        assert_eq!(layer_ids(&store), before, "the refused run left a layer");
        fs::remove_dir(&states).unwrap();
    }
    // Owned by root and private: runs.
    let out = run(&store, &["--rm", "bb", "true"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
