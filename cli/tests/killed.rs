//! `kill -9` of `run`, `create`, `mount` and `rm` at random instants, 20
//! each, on a real podman 4.3.1 store: after one `layerstore gc` the store
//! is clean (no leftover mount, container, layer, `incomplete` flag or temp
//! file; nothing left for a later gc) and podman lists and runs the image.
//! Kill points are random but reproducible: the seed is printed.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use layerstore_test_support::hostile::{read_records, Scene};
use layerstore_test_support::{require_privileged, run_ok};
use serde_json::Value;

const LAYERSTORE: &str = env!("CARGO_BIN_EXE_layerstore");
const TOOLS: &[&str] = &["podman", "runc", "containers-storage", "pgrep"];
const KILLS: usize = 20;

/// A small xorshift generator, seeded from the clock (printed).
struct Rng(u64);

impl Rng {
    fn seeded(what: &str) -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        eprintln!("{what}: kill-point seed {seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn ok(cmd: &mut Command) -> Output {
    run_ok(cmd)
}

/// How long the command takes when not killed (the median of three).
fn duration_of(
    scene: &Scene,
    args: &dyn Fn(&Scene) -> Vec<String>,
    undo: &dyn Fn(&Scene),
) -> Duration {
    let mut times: Vec<Duration> = (0..3)
        .map(|_| {
            let args = args(scene);
            let started = Instant::now();
            ok(scene.store.layerstore(LAYERSTORE).args(&args));
            let took = started.elapsed();
            undo(scene);
            took
        })
        .collect();
    times.sort();
    times[1]
}

/// Start `args` in a process group of its own, SIGKILL its leader after
/// `delay`, then wait until the runtimes it started are done. Whether the
/// command had finished by then.
fn kill_after(scene: &Scene, args: &[&str], delay: Duration) -> bool {
    let mut child = scene
        .store
        .layerstore(LAYERSTORE)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    thread::sleep(delay);
    let finished = child.try_wait().unwrap().is_some();
    if !finished {
        child.kill().unwrap(); // SIGKILL
    }
    child.wait().unwrap();
    // A runtime command the killed run had started finishes on its own.
    let pgid = child.id().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let out = Command::new("pgrep")
            .args(["-g", &pgid, "-x", "runc"])
            .output()
            .unwrap();
        if out.stdout.is_empty() {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    finished
}

fn gc(scene: &Scene, args: &[&str]) -> Value {
    let out = ok(scene
        .store
        .layerstore(LAYERSTORE)
        .args(["--log-level", "info", "gc", "--json", "--min-age", "0"])
        .args(args));
    // What gc logged (kills, reaps, warnings): shown when a check fails.
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn ids(path: &Path, key: &str) -> BTreeSet<String> {
    read_records(path)
        .iter()
        .map(|r| r[key].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Mount points at or below the overlay home, except the home's own bind
/// mount.
fn mounts(scene: &Scene) -> BTreeSet<String> {
    let home = fs::canonicalize(scene.store.graph.join("overlay")).unwrap();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(&home) && Path::new(p) != home)
        .map(str::to_owned)
        .collect()
}

/// `layerstore info` finds no defect.
fn assert_trusted(scene: &Scene, what: &str) {
    let info = scene
        .store
        .layerstore(LAYERSTORE)
        .arg("info")
        .output()
        .unwrap();
    assert!(
        info.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&info.stderr)
    );
}

/// The store after one gc: trustworthy, nothing left to collect, nothing
/// half-made, every mount recorded, podman working; `layers` are the
/// layers there must be beside the containers' own.
fn assert_clean(scene: &Scene, layers: &BTreeSet<String>, what: &str) {
    assert_trusted(scene, what);
    let dry = gc(scene, &["--dry-run"]);
    assert_eq!(
        dry["done"],
        serde_json::json!([]),
        "{what}: left for a later gc: {dry:#}"
    );
    let layer_records = read_records(&scene.layers_json());
    assert!(
        !layer_records
            .iter()
            .any(|l| l["flags"]["incomplete"] == Value::Bool(true)),
        "{what}: an incomplete layer stayed; {dry:#}"
    );
    // The scene's layers, and every layer a container stands on.
    let parent: std::collections::HashMap<String, String> = layer_records
        .iter()
        .map(|l| {
            let id = l["id"].as_str().unwrap_or_default().to_owned();
            (id, l["parent"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    let mut expected = layers.clone();
    for mut l in ids(&scene.containers_json(), "layer") {
        while !l.is_empty() && expected.insert(l.clone()) {
            l = parent.get(&l).cloned().unwrap_or_default();
        }
    }
    assert_eq!(ids(&scene.layers_json(), "id"), expected, "{what}: layers");
    for (root, dir) in [
        (&scene.store.graph, "overlay-layers"),
        (&scene.store.graph, "overlay-images"),
        (&scene.store.graph, "overlay-containers"),
        (&scene.store.run, "overlay-layers"),
    ] {
        for e in fs::read_dir(root.join(dir)).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                !name.starts_with(".tmp-"),
                "{what}: temp file {name} in {dir}"
            );
        }
    }
    let recorded: BTreeSet<String> =
        read_records(&scene.store.run.join("overlay-layers/mountpoints.json"))
            .iter()
            .filter(|m| m["count"].as_i64().unwrap_or(0) > 0)
            .map(|m| m["path"].as_str().unwrap_or_default().to_owned())
            .collect();
    for m in mounts(scene) {
        assert!(
            recorded.contains(&m),
            "{what}: {m} is mounted but not recorded"
        );
    }
    let state = scene.store.run.join("layerstore-runtime");
    let containers = ids(&scene.containers_json(), "id");
    for e in fs::read_dir(&state).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.path().is_dir() && name.len() == 64 {
            assert!(
                containers.contains(&name),
                "{what}: runtime state of {name} stayed"
            );
        }
    }
    let images = ok(scene
        .store
        .podman()
        .args(["images", "--format", "{{.Repository}}"]));
    assert!(
        String::from_utf8_lossy(&images.stdout).contains("localhost/base"),
        "{what}"
    );
    ok(scene
        .store
        .podman()
        .args(["run", "--rm", "--pull=never", "localhost/base", "true"]));
}

/// A fresh scene, and its layers that are not a container's own.
fn scene_and_base_layers() -> (Scene, BTreeSet<String>) {
    let scene = Scene::build(LAYERSTORE);
    let base_layers = ids(&scene.layers_json(), "id")
        .difference(&ids(&scene.containers_json(), "layer"))
        .cloned()
        .collect();
    (scene, base_layers)
}

/// Kill `args` 20 times at random points of its usual duration; after each
/// kill one gc, then the checks, then `reset` for the next round.
fn killed(what: &str, args: &dyn Fn(&Scene) -> Vec<String>, reset: &dyn Fn(&Scene)) {
    require_privileged(TOOLS);
    let (scene, base_layers) = scene_and_base_layers();
    let usual = duration_of(&scene, args, reset);
    eprintln!("{what}: usually {usual:?}");
    let mut rng = Rng::seeded(what);
    let span = (usual.as_micros() as u64 * 12 / 10).max(1_000);
    for round in 0..KILLS {
        let a = args(&scene);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let delay = Duration::from_micros(rng.below(span));
        let finished = kill_after(&scene, &a, delay);
        let label = format!("{what} round {round} (killed after {delay:?}, finished: {finished})");
        let report = gc(&scene, &[]);
        eprintln!(
            "{label}: gc did {}",
            report["done"].as_array().map_or(0, Vec::len)
        );
        assert_clean(&scene, &base_layers, &label);
        reset(&scene);
    }
}

/// Remove every container but podman's two and `ls1`, and unmount `ls1`.
fn back_to_the_scene(scene: &Scene) {
    for c in read_records(&scene.containers_json()) {
        let name = c["names"][0].as_str().unwrap_or_default().to_owned();
        if !["pod1", "pod2", "ls1"].contains(&name.as_str()) {
            let id = c["id"].as_str().unwrap().to_owned();
            let _ = scene
                .store
                .layerstore(LAYERSTORE)
                .args(["umount", "--force", &id])
                .output();
            ok(scene.store.layerstore(LAYERSTORE).args(["rm", &id]));
        }
    }
    let _ = scene
        .store
        .layerstore(LAYERSTORE)
        .args(["umount", "--force", "ls1"])
        .output();
}

#[test]
#[ignore = "privileged: real podman store, runc, mounts"]
fn killed_run_leaves_nothing_after_gc() {
    killed(
        "run",
        &|_| {
            [
                "run",
                "--direct",
                "--uidmap",
                "0:200000:65536",
                "localhost/base",
                "true",
            ]
            .map(String::from)
            .to_vec()
        },
        &back_to_the_scene,
    );
}

#[test]
#[ignore = "privileged: real podman store, mounts"]
fn killed_create_leaves_nothing_half_made() {
    killed(
        "create",
        &|_| {
            ["create", "--uidmap", "0:300000:65536", "localhost/base"]
                .map(String::from)
                .to_vec()
        },
        &back_to_the_scene,
    );
}

#[test]
#[ignore = "privileged: real podman store, mounts"]
fn killed_mount_leaves_no_unrecorded_mount() {
    killed(
        "mount",
        &|_| ["mount", "ls1"].map(String::from).to_vec(),
        &back_to_the_scene,
    );
}

#[test]
#[ignore = "privileged: real podman store, mounts"]
fn killed_rm_leaves_nothing_half_removed() {
    killed(
        "rm",
        &|s| {
            let out = ok(s.store.layerstore(LAYERSTORE).args([
                "create",
                "--uidmap",
                "0:400000:65536",
                "localhost/base",
            ]));
            let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            vec!["rm".into(), id]
        },
        &back_to_the_scene,
    );
}

/// Clears the immutable attribute again when dropped (also on failure).
struct Immutable(std::path::PathBuf);

impl Immutable {
    fn set(path: &Path) -> Immutable {
        ok(Command::new("chattr").arg("+i").arg(path));
        Immutable(path.to_owned())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
        // Moved into the trash by a removal: cleared there too, or the
        // store could not be removed after a failed test.
        if let Some(home) = self
            .0
            .ancestors()
            .find(|a| a.file_name().is_some_and(|n| n == "overlay"))
        {
            let _ = Command::new("chattr")
                .args(["-R", "-i"])
                .arg(home.join(".layerstore-trash"))
                .stderr(Stdio::null())
                .status();
        }
    }
}

#[test]
#[ignore = "privileged: real podman store, chattr"]
fn a_gc_that_fails_half_way_is_finished_by_the_next() {
    require_privileged(&["podman", "runc", "chattr"]);
    let scene = Scene::build(LAYERSTORE);
    // pod2 gone, its template is an orphan; its directory cannot be moved.
    ok(scene.store.podman().args(["rm", "pod2"]));
    let template = scene.layer_dir(&scene.template);
    let guard = Immutable::set(&template);
    let out = scene
        .store
        .layerstore(LAYERSTORE)
        .args(["gc", "--min-age", "0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&scene.template), "{stderr}");
    // The records are as before for that layer (not flagged incomplete:
    // podman would try to delete it, and fail the same way), the store is
    // trustworthy, and podman works.
    let records = read_records(&scene.layers_json());
    let t = records
        .iter()
        .find(|l| l["id"] == scene.template.as_str())
        .expect("kept");
    assert_ne!(t["flags"]["incomplete"], Value::Bool(true), "{t}");
    assert_trusted(&scene, "after the failed gc");
    ok(scene
        .store
        .podman()
        .args(["run", "--rm", "--pull=never", "localhost/base", "true"]));
    // Once the cause is gone, the next gc finishes the job.
    drop(guard);
    let report = gc(&scene, &[]);
    assert!(
        report["done"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["id"] == scene.template.as_str()),
        "{report:#}"
    );
    assert!(!template.exists());
    let dry = gc(&scene, &["--dry-run"]);
    assert_eq!(dry["done"], serde_json::json!([]), "{dry:#}");
    ok(scene
        .store
        .podman()
        .args(["run", "--rm", "--pull=never", "localhost/base", "true"]));
}

#[test]
#[ignore = "privileged: real podman store, chattr"]
fn files_that_cannot_be_deleted_wait_in_the_trash() {
    require_privileged(&["podman", "runc", "chattr"]);
    let scene = Scene::build(LAYERSTORE);
    ok(scene.store.podman().args(["rm", "pod2"]));
    // A file of the copy podman made (diff1/etc/passwd).
    let rel = Path::new("diff1/etc/passwd");
    let stuck = scene.layer_dir(&scene.template).join(rel);
    assert!(stuck.is_file(), "{}", stuck.display());
    let guard = Immutable::set(&stuck);
    // The layer goes (its record and its place in the store); the file
    // that cannot be deleted waits in the trash.
    let report = gc(&scene, &[]);
    assert!(
        report["done"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["id"] == scene.template.as_str()),
        "{report:#}"
    );
    assert!(!scene.layer_dir(&scene.template).exists());
    let trash = scene.store.graph.join("overlay/.layerstore-trash");
    let entries: Vec<_> = fs::read_dir(&trash)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.ends_with("link") && !p.ends_with("diff"))
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    // podman's repair of lost links reads every home directory's `link`
    // file: with the trash there, it still works.
    let l = scene.store.graph.join("overlay/l");
    let base_link = fs::read_to_string(scene.layer_dir(&scene.base_layer).join("link")).unwrap();
    fs::remove_file(l.join(base_link.trim())).unwrap();
    ok(scene
        .store
        .podman()
        .args(["run", "--rm", "--pull=never", "localhost/base", "true"]));
    assert!(
        l.join(base_link.trim()).is_symlink(),
        "podman repaired the link"
    );
    let dry = gc(&scene, &["--dry-run"]);
    assert_eq!(dry["done"][0]["kind"], "trash", "{dry:#}");
    // Released, the next gc empties the trash.
    let _ = Command::new("chattr")
        .arg("-i")
        .arg(entries[0].join(rel))
        .status();
    drop(guard);
    let report = gc(&scene, &[]);
    assert_eq!(report["done"][0]["kind"], "trash", "{report:#}");
    assert!(!trash.exists(), "an empty trash is removed");
    assert!(
        l.join("LAYERSTORETRASHLAYERSTORET")
            .symlink_metadata()
            .is_err(),
        "the trash's link goes with it"
    );
    let dry = gc(&scene, &["--dry-run"]);
    assert_eq!(dry["done"], serde_json::json!([]), "{dry:#}");
}

/// Pids of the processes whose command line contains `pattern`.
fn pids_of(pattern: &str) -> Vec<String> {
    let out = Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Kills what still runs `busybox sleep <tag>` when dropped, so that a
/// failing test leaves no container process behind.
struct Sleepers(String);

impl Drop for Sleepers {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", &format!("busybox sleep {}", self.0)])
            .status();
    }
}

/// Starts `layerstore run --name <name>` of two `busybox sleep <tag>`
/// processes, kills the run (SIGKILL) once both run, and returns the
/// container's id: its processes outlive the run.
fn killed_run(scene: &Scene, name: &str, tag: &str) -> String {
    let script = format!("/bin/busybox sleep {tag} & exec /bin/busybox sleep {tag}");
    let mut run = scene
        .store
        .layerstore(LAYERSTORE)
        .args([
            "run",
            "--direct",
            "--name",
            name,
            "--uidmap",
            "0:300000:65536",
            "localhost/base",
            "/bin/sh",
            "-c",
            &script,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while pids_of(&format!("busybox sleep {tag}")).len() < 2 {
        assert!(Instant::now() < deadline, "the container never started");
        assert!(run.try_wait().unwrap().is_none(), "run ended early");
        thread::sleep(Duration::from_millis(50));
    }
    run.kill().unwrap(); // SIGKILL
    run.wait().unwrap();
    thread::sleep(Duration::from_millis(200));
    let left = pids_of(&format!("busybox sleep {tag}"));
    assert_eq!(left.len(), 2, "the container's processes outlive the run");
    let record = read_records(&scene.containers_json())
        .into_iter()
        .find(|c| c["names"][0] == name)
        .unwrap();
    record["id"].as_str().unwrap().to_owned()
}

/// A run killed while its container runs leaves the container's processes
/// running; gc kills them (found by cgroup and root, no runtime program is
/// run), removes the runtime's state and the cgroups, then the storage.
#[test]
#[ignore = "privileged: real podman store, runc, mounts, cgroups"]
fn a_killed_runs_processes_are_ended_by_gc() {
    require_privileged(TOOLS);
    let (scene, base_layers) = scene_and_base_layers();
    // Unique arguments, so that pgrep finds this test's processes only.
    let tag = format!("{}", 600_000 + std::process::id() % 100_000);
    let _sleepers = Sleepers(tag.clone());
    let id = killed_run(&scene, "doomed", &tag);
    let cgroups: Vec<_> = fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|e| e.path().join("layerstore").join(&id))
        .chain([Path::new("/sys/fs/cgroup/layerstore").join(&id)])
        .filter(|p| p.exists())
        .collect();
    assert!(!cgroups.is_empty(), "runc made no cgroup for {id}");
    assert!(scene
        .store
        .run
        .join("layerstore-runtime")
        .join(&id)
        .exists());

    // A dry run changes nothing and says why the container stays.
    let dry = gc(&scene, &["--dry-run"]);
    let kept = dry["skipped"].as_array().unwrap();
    assert!(
        kept.iter().any(|s| s["id"] == id.as_str()
            && s["reason"].as_str().unwrap().contains("still runs in it")),
        "{dry:#}"
    );
    assert_eq!(pids_of(&format!("busybox sleep {tag}")).len(), 2);

    let report = gc(&scene, &[]);
    assert!(
        report["done"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "run-container" && a["id"] == id.as_str()),
        "{report:#}"
    );
    assert_eq!(
        pids_of(&format!("busybox sleep {tag}")),
        Vec::<String>::new()
    );
    for c in &cgroups {
        assert!(!c.exists(), "cgroup {} stayed", c.display());
    }
    assert!(!scene
        .store
        .run
        .join("layerstore-runtime")
        .join(&id)
        .exists());
    assert_clean(&scene, &base_layers, "after the killed run");
}

/// Runtime state no container record names (a runtime that failed
/// half-way): gc removes it without running anything, and leaves what is
/// not a container's (names that are no id, a symlink's target).
#[test]
#[ignore = "privileged: real podman store"]
fn runtime_state_without_a_container_is_removed() {
    require_privileged(TOOLS);
    let (scene, _) = scene_and_base_layers();
    let states = scene.store.run.join("layerstore-runtime");
    let stale = "5ca1e".repeat(12) + "0000";
    fs::create_dir_all(states.join(&stale)).unwrap();
    fs::write(states.join(&stale).join("state.json"), b"{}").unwrap();
    fs::create_dir_all(states.join("notes")).unwrap();
    let linked = "11".repeat(32);
    std::os::unix::fs::symlink(&scene.victim, states.join(&linked)).unwrap();
    let victim = scene.victim_state();
    let dry = gc(&scene, &["--dry-run"]);
    assert!(
        states.join(&stale).exists(),
        "a dry run changes nothing: {dry:#}"
    );
    gc(&scene, &[]);
    assert!(!states.join(&stale).exists());
    assert!(states.join("notes").is_dir());
    assert_eq!(scene.victim_state(), victim);
    assert!(scene.victim.join("precious").exists());
}

/// Marks written into podman's records: a running podman container that
/// claims every mark of a dead run keeps its processes (they are not in
/// layerstore's cgroup) and its storage; a stopped one with only a run
/// marker is not a candidate at all, and podman starts it after gc.
#[test]
#[ignore = "privileged: real podman store, runc"]
fn podman_containers_with_forged_run_marks_survive_gc() {
    use layerstore_test_support::hostile::edit;
    require_privileged(TOOLS);
    let (scene, _) = scene_and_base_layers();
    let tag = format!("{}", 700_000 + std::process::id() % 100_000);
    let _sleepers = Sleepers(tag.clone());
    ok(scene.store.podman().args([
        "run",
        "-d",
        "--pull=never",
        "--name",
        "busy",
        "localhost/base",
        "/bin/busybox",
        "sleep",
        &tag,
    ]));
    let record = |name: &str| {
        read_records(&scene.containers_json())
            .into_iter()
            .find(|c| c["names"][0] == name)
            .unwrap()
    };
    let busy = record("busy");
    let (busy_id, busy_layer) = (
        busy["id"].as_str().unwrap().to_owned(),
        busy["layer"].as_str().unwrap().to_owned(),
    );
    let pod1 = scene.podmans.0.clone();
    let forged = |everything: bool| {
        let mut marks = serde_json::json!({
            "layerstore-run": {"pid": 2_147_483_646u32, "start-time": 1},
        });
        if everything {
            marks["layerstore"] = serde_json::json!({"version": "0.1.0"});
        }
        marks
    };
    edit(&scene.containers_json(), |cs| {
        for c in cs.iter_mut() {
            let everything = c["id"] == busy_id.as_str();
            if everything || c["id"] == pod1.as_str() {
                let mut meta: Value =
                    serde_json::from_str(c["metadata"].as_str().unwrap_or("{}")).unwrap();
                for (k, v) in forged(everything).as_object().unwrap() {
                    meta[k] = v.clone();
                }
                c["metadata"] = Value::String(meta.to_string());
            }
        }
    });
    edit(&scene.layers_json(), |ls| {
        for l in ls.iter_mut().filter(|l| l["id"] == busy_layer.as_str()) {
            l["flags"]["layerstore-container"] = Value::String(busy_id.clone());
        }
    });
    let report = gc(&scene, &[]);
    assert!(
        !report["done"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == busy_id.as_str() || a["id"] == pod1.as_str()),
        "{report:#}"
    );
    assert_eq!(
        pids_of(&format!("busybox sleep {tag}")).len(),
        1,
        "podman's process was killed"
    );
    assert!(ids(&scene.containers_json(), "id").contains(&busy_id));
    assert!(scene.layer_dir(&busy_layer).is_dir());
    ok(scene.store.podman().args(["start", "--attach", "pod1"]));
    ok(scene
        .store
        .podman()
        .args(["rm", "--force", "--time", "0", "busy"]));
}

/// A hung FUSE filesystem mounted on a layer's `merged`: gc (which looks
/// at whether and what is mounted there, under the store's locks) still
/// finishes, so podman is never left waiting on the locks.
#[test]
#[ignore = "privileged: real podman store, fuse-overlayfs"]
fn a_hung_fuse_mount_on_a_layer_does_not_hang_gc() {
    require_privileged(&["podman", "runc", "fuse-overlayfs", "pgrep"]);
    let (scene, _) = scene_and_base_layers();
    let tmp = tempfile::tempdir().unwrap();
    let [lower, upper, work] = ["lower", "upper", "work"].map(|d| {
        let p = tmp.path().join(d);
        fs::create_dir(&p).unwrap();
        p
    });
    let merged = scene.layer_dir(&scene.ours.1).join("merged");
    layerstore_test_support::mount_fuse_overlay(&lower, &upper, &work, &merged);
    struct Thaw {
        server: Option<String>,
        mnt: std::path::PathBuf,
    }
    impl Drop for Thaw {
        fn drop(&mut self) {
            if let Some(pid) = &self.server {
                let _ = Command::new("kill").args(["-CONT", pid]).status();
                let _ = Command::new("kill").args(["-TERM", pid]).status();
            }
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }
    let mut thaw = Thaw {
        server: None,
        mnt: merged.clone(),
    };
    let out =
        ok(Command::new("pgrep").args(["-f", &format!("fuse-overlayfs.*{}", merged.display())]));
    let server = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("the fuse-overlayfs server")
        .to_owned();
    thaw.server = Some(server.clone());
    ok(Command::new("kill").args(["-STOP", &server]));
    for args in [
        &["gc", "--dry-run", "--min-age", "0"][..],
        &["gc", "--min-age", "0"],
    ] {
        let mut child = scene
            .store
            .layerstore(LAYERSTORE)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let stack =
                    fs::read_to_string(format!("/proc/{}/stack", child.id())).unwrap_or_default();
                let gdb = Command::new("gdb")
                    .args([
                        "-p",
                        &child.id().to_string(),
                        "-batch",
                        "-ex",
                        "thread apply all bt",
                    ])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "layerstore {} hangs on the frozen FUSE mount:\n{stack}\n{gdb}",
                    args.join(" ")
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
    drop(thaw);
}

/// Two stores share the host's cgroup tree: a container in store B that
/// forges every mark of a dead run under the id of a container running
/// from store A (its layer mounted in B) makes gc on B kill nothing of A's
/// (A's processes are not rooted in B's mount) and keep B's container.
#[test]
#[ignore = "privileged: two real podman stores, runc, mounts, cgroups"]
fn gc_never_kills_another_stores_run_with_the_same_id() {
    use layerstore_test_support::hostile::edit;
    require_privileged(TOOLS);
    let (a, _) = scene_and_base_layers();
    let (b, _) = scene_and_base_layers();
    let tag = format!("{}", 800_000 + std::process::id() % 100_000);
    let _sleepers = Sleepers(tag.clone());
    let id = killed_run(&a, "running", &tag);

    let out =
        ok(b.store
            .layerstore(LAYERSTORE)
            .args(["create", "--name", "forger", "localhost/base"]));
    let own = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    ok(b.store.layerstore(LAYERSTORE).args(["mount", "forger"]));
    let layer = read_records(&b.containers_json())
        .into_iter()
        .find(|c| c["names"][0] == "forger")
        .unwrap()["layer"]
        .as_str()
        .unwrap()
        .to_owned();
    edit(&b.containers_json(), |cs| {
        for c in cs.iter_mut().filter(|c| c["names"][0] == "forger") {
            c["id"] = Value::String(id.clone());
            let mut meta: Value =
                serde_json::from_str(c["metadata"].as_str().unwrap_or("{}")).unwrap();
            meta["layerstore-run"] = serde_json::json!({"pid": 2_147_483_646u32, "start-time": 1});
            c["metadata"] = Value::String(meta.to_string());
        }
    });
    edit(&b.layers_json(), |ls| {
        for l in ls.iter_mut().filter(|l| l["id"] == layer.as_str()) {
            l["flags"]["layerstore-container"] = Value::String(id.clone());
        }
    });
    assert_ne!(own, id);

    let report = gc(&b, &[]);
    assert_eq!(
        pids_of(&format!("busybox sleep {tag}")).len(),
        2,
        "gc on B killed A's container: {report:#}"
    );
    assert!(
        !report["done"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["id"] == id.as_str()),
        "{report:#}"
    );
    assert!(b.layer_dir(&layer).is_dir(), "B's container layer stays");

    // A's own gc ends A's run; then nothing runs in B's forged container
    // and B's gc removes it as the dead run it claims to be.
    gc(&a, &[]);
    assert_eq!(
        pids_of(&format!("busybox sleep {tag}")),
        Vec::<String>::new()
    );
    gc(&b, &[]);
    assert!(
        !b.layer_dir(&layer).exists(),
        "{:#}",
        gc(&b, &["--dry-run"])
    );
}
