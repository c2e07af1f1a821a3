//! The direct launcher (`layerstore run`, which writes the OCI bundle and
//! runs runc itself) confines a container at least as podman 4.3.1 does,
//! checked side by side with the real podman and runc on private stores:
//! the same masked and read-only paths in both containers' mountinfo, and
//! /dev nosuid and noexec.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use layerstore_test_support::{require_privileged, testdata, PodmanStore};

const LAYERSTORE: &str = env!("CARGO_BIN_EXE_layerstore");
const TOOLS: &[&str] = &["podman", "containers-storage", "runc", "busybox"];

/// A busybox system whose own /etc/hosts must not show through.
const BUSYBOX: &str = "
d bin 0755 0:0
F bin/busybox 0755 0:0 /bin/busybox
l bin/sh busybox
l bin/cat busybox
l bin/cp busybox
l bin/grep busybox
l bin/hostname busybox
l bin/id busybox
l bin/true busybox
l bin/unshare busybox
d etc 0755 0:0
f etc/passwd 0644 0:0 root:x:0:0:root:/root:/bin/sh\\nbob:x:1000:1000::/home/bob:/bin/sh\\n
f etc/group 0644 0:0 root:x:0:\\nbob:x:1000:\\n
f etc/hosts 0644 0:0 10.9.9.9 image-only\\n
d tmp 1777 0:0
";

/// The map both tools get in the rounds with a user namespace.
const MAPS: [&str; 4] = ["--uidmap", "0:400000:65536", "--gidmap", "0:400000:65536"];

/// A private store with the busybox image (imported by layerstore as
/// `localhost/bb`) and a containers.conf of its own, which both podman and
/// layerstore read (`CONTAINERS_CONF`).
struct Scene {
    store: PodmanStore,
    conf: PathBuf,
}

impl Scene {
    /// The test containers.conf with `extra` lines in its `[containers]`.
    fn new(extra: &str) -> Scene {
        let store = PodmanStore::empty();
        store.import_layer_spec(LAYERSTORE, BUSYBOX, "bb");
        let conf = store.graph.parent().unwrap().join("containers.conf");
        let scene = Scene { store, conf };
        scene.set_conf(extra);
        scene
    }

    /// Rewrite the containers.conf with other `extra` lines.
    fn set_conf(&self, extra: &str) {
        let base = fs::read_to_string(testdata("containers.conf")).unwrap();
        assert!(base.contains("[containers]\n"));
        let text = base.replacen("[containers]\n", &format!("[containers]\n{extra}\n"), 1);
        fs::write(&self.conf, text).unwrap();
    }

    fn podman(&self) -> std::process::Command {
        let mut cmd = self.store.podman();
        cmd.env("CONTAINERS_CONF", &self.conf);
        cmd
    }
}

/// The one way these tests start the direct launcher: `layerstore run
/// ARGS` on the scene's store, with its containers.conf.
fn direct_run(scene: &Scene, args: &[&str]) -> Output {
    scene
        .store
        .layerstore(LAYERSTORE)
        .env("CONTAINERS_CONF", &scene.conf)
        .arg("run")
        .args(args)
        .output()
        .expect("starting layerstore")
}

/// `podman run --rm ARGS`, output captured.
fn podman_run(scene: &Scene, args: &[&str]) -> Output {
    scene
        .podman()
        .args(["run", "--rm"])
        .args(args)
        .output()
        .expect("starting podman")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_owned()
}

/// The output of a run that must succeed.
fn ok(o: Output, what: &str) -> String {
    assert!(o.status.success(), "{what}: {}\n{}", o.status, stderr(&o));
    stdout(&o)
}

/// One line of /proc/self/mountinfo.
struct MountLine {
    root: String,
    point: String,
    options: Vec<String>,
    fstype: String,
}

fn mountinfo(text: &str) -> Vec<MountLine> {
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            Some(MountLine {
                root: f.get(3)?.to_string(),
                point: f.get(4)?.to_string(),
                options: f.get(5)?.split(',').map(str::to_owned).collect(),
                fstype: right.split(' ').next()?.to_owned(),
            })
        })
        .collect()
}

/// What masks or protects paths in /proc and /sys: each mount below them
/// (cgroups aside, whose layout is the cgroup manager's) as "point fstype
/// root ro|rw". A masked file is /dev/null bound over it (root `/null`), a
/// masked directory an empty read-only tmpfs, a read-only path a read-only
/// bind of itself.
fn confinement_mounts(text: &str) -> BTreeSet<String> {
    mountinfo(text)
        .into_iter()
        .filter(|m| m.point.starts_with("/proc/") || m.point.starts_with("/sys/"))
        .filter(|m| !Path::new(&m.point).starts_with("/sys/fs/cgroup"))
        .map(|m| {
            let ro = if m.options.iter().any(|o| o == "ro") {
                "ro"
            } else {
                "rw"
            };
            format!("{} {} {} {ro}", m.point, m.fstype, m.root)
        })
        .collect()
}

#[test]
#[ignore = "privileged: needs root, overlay mounts, runc and podman"]
fn masked_and_read_only_paths_are_podmans() {
    require_privileged(TOOLS);
    let scene = Scene::new("");
    let mountinfo = ["cat", "/proc/self/mountinfo"];
    for (maps, network) in [(&[][..], "none"), (&MAPS[..], "none"), (&MAPS[..], "host")] {
        let net = format!("--network={network}");
        let ours = ok(
            direct_run(
                &scene,
                &[&["--rm", &net][..], maps, &["bb"], &mountinfo].concat(),
            ),
            "layerstore",
        );
        let podmans = ok(
            podman_run(
                &scene,
                &[&[net.as_str()][..], maps, &["localhost/bb"], &mountinfo].concat(),
            ),
            "podman",
        );
        let (ours, podmans) = (confinement_mounts(&ours), confinement_mounts(&podmans));
        // Beyond podman 4.3.1: /sys/devices/virtual/powercap (later
        // podman's list) when the host has it.
        let extra: BTreeSet<String> = ours
            .iter()
            .filter(|m| m.starts_with("/sys/devices/virtual/powercap "))
            .cloned()
            .collect();
        if Path::new("/sys/devices/virtual/powercap").exists() {
            assert_eq!(extra.len(), 1, "{ours:#?}");
        }
        let ours: BTreeSet<String> = ours.difference(&extra).cloned().collect();
        assert!(podmans.len() >= 6, "{podmans:#?}");
        assert_eq!(ours, podmans, "maps {maps:?}, network {network}");
        // What the host has of podman's lists is covered (e.g. /sys/dev/block,
        // which the launcher used to leave readable).
        for (path, kind) in [
            ("/sys/dev/block", "tmpfs / ro"),
            ("/sys/firmware", "tmpfs / ro"),
            ("/proc/keys", "/null"),
            ("/proc/timer_list", "/null"),
            ("/proc/sys", "proc /sys ro"),
            ("/proc/sysrq-trigger", "proc /sysrq-trigger ro"),
        ] {
            if Path::new(path).exists() {
                assert!(
                    ours.iter()
                        .any(|m| m.starts_with(&format!("{path} ")) && m.contains(kind)),
                    "{path} ({kind}) in {ours:#?}"
                );
            }
        }
    }
}

#[test]
#[ignore = "privileged: needs root, overlay mounts, runc and podman"]
fn dev_is_nosuid_and_noexec() {
    require_privileged(TOOLS);
    let scene = Scene::new("");
    for maps in [&[][..], &MAPS[..]] {
        let text = ok(
            direct_run(
                &scene,
                &[&["--rm"][..], maps, &["bb", "cat", "/proc/self/mountinfo"]].concat(),
            ),
            "mountinfo",
        );
        let dev = mountinfo(&text)
            .into_iter()
            .find(|m| m.point == "/dev")
            .expect("a /dev mount");
        for option in ["nosuid", "noexec"] {
            assert!(dev.options.iter().any(|o| o == option), "{:?}", dev.options);
        }
        // A program copied there cannot be run (126, as from a shell).
        let out = direct_run(
            &scene,
            &[
                &["--rm"][..],
                maps,
                &["bb", "sh", "-c", "cp /bin/busybox /dev/bb && /dev/bb true"],
            ]
            .concat(),
        );
        assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("Permission denied"),
            "{}",
            stderr(&out)
        );
    }
}
