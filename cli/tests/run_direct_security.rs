//! The direct launcher (`layerstore run`, which writes the OCI bundle and
//! runs runc itself) confines a container at least as podman 4.3.1 does,
//! checked side by side with the real podman and runc on private stores:
//! podman's seccomp profile (the same `linux.seccomp` in both configs,
//! `Seccomp: 2` and a blocked system call failing with EPERM inside), the
//! same masked and read-only paths in both containers' mountinfo, /dev
//! nosuid and noexec, generated /etc/hosts, /etc/hostname and
//! /etc/resolv.conf, containers.conf's `default_capabilities`, and a
//! broken profile refused with nothing left in the store.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use layerstore_test_support::{require_privileged, run_ok, testdata, PodmanStore};
use serde_json::Value;

const LAYERSTORE: &str = env!("CARGO_BIN_EXE_layerstore");
const TOOLS: &[&str] = &["podman", "containers-storage", "runc", "busybox"];

/// A busybox system whose own /etc/hosts must not show through.
fn busybox() -> String {
    layerstore_test_support::images::busybox_system(
        &["sh", "cat", "cp", "grep", "hostname", "id", "true", "unshare"],
        &[
        "f etc/passwd 0644 0:0 root:x:0:0:root:/root:/bin/sh\\nbob:x:1000:1000::/home/bob:/bin/sh\\n",
        "f etc/group 0644 0:0 root:x:0:\\nbob:x:1000:\\n",
        "f etc/hosts 0644 0:0 10.9.9.9 image-only\\n",
        ],
    )
}

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
        Scene::with(extra, false)
    }

    /// [`Scene::new`]; `on_disk_owners`: the store never idmaps lower
    /// layers, so that `--nocache` runs see the image's files with their
    /// on-disk owners (root's are nobody's, and the container's root cannot
    /// write /etc).
    fn with(extra: &str, on_disk_owners: bool) -> Scene {
        let store = PodmanStore::empty();
        if on_disk_owners {
            store.force_templates();
        }
        store.import_layer_spec(LAYERSTORE, &busybox(), "bb");
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
        .args(["run", "--direct"])
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

/// The only container directory under the runroot (the bundle of the one
/// run without `--rm`).
fn only_bundle(store: &PodmanStore) -> PathBuf {
    let dirs: Vec<PathBuf> = fs::read_dir(store.run.join("overlay-containers"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].join("userdata")
}

fn json_file(path: &Path) -> Value {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap()
}

/// containers.conf lines giving both tools the same capabilities (podman's
/// built-in list, used when CONTAINERS_CONF names a file without one, has
/// three more than Debian's, which layerstore falls back on).
const DEBIAN_CAPS: &str = r#"default_capabilities = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"]"#;

#[test]
#[ignore = "privileged: needs root, overlay mounts, runc and podman"]
fn seccomp_filter_is_podmans() {
    require_privileged(TOOLS);
    let scene = Scene::new(DEBIAN_CAPS);

    // The config's filter is the one podman writes for the same profile
    // and capabilities, with and without a user namespace.
    for maps in [&[][..], &MAPS[..]] {
        let podman_id = stdout(&run_ok(
            scene
                .podman()
                .arg("create")
                .args(maps)
                .args(["localhost/bb", "true"]),
        ));
        run_ok(scene.podman().args(["init", &podman_id]));
        let podman_config = json_file(
            &scene
                .store
                .graph
                .join("overlay-containers")
                .join(&podman_id)
                .join("userdata/config.json"),
        );
        run_ok(scene.podman().args(["rm", "-f", &podman_id]));
        ok(
            direct_run(&scene, &[maps, &["bb", "true"]].concat()),
            "kept run",
        );
        let bundle = only_bundle(&scene.store);
        let ours = json_file(&bundle.join("config.json"));
        let rules = podman_config["linux"]["seccomp"]["syscalls"].as_array();
        assert!(rules.is_some_and(|r| r.len() > 10), "{podman_config:#}");
        assert_eq!(
            ours["linux"]["seccomp"], podman_config["linux"]["seccomp"],
            "maps {maps:?}"
        );
        let caps = |c: &Value| -> BTreeSet<String> {
            c["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(caps(&ours), caps(&podman_config));
        run_ok(
            scene
                .store
                .layerstore(LAYERSTORE)
                .args(["gc", "--min-age", "0s"]),
        );
        assert!(!bundle.exists(), "gc left {}", bundle.display());
    }

    // The filter is on inside.
    let status = ok(
        direct_run(
            &scene,
            &["--rm", "bb", "grep", "^Seccomp:", "/proc/self/status"],
        ),
        "status",
    );
    assert_eq!(
        status.split_whitespace().collect::<Vec<_>>(),
        ["Seccomp:", "2"]
    );

    // A system call the profile blocks with EPERM for our capabilities:
    // sethostname(2) without CAP_SYS_ADMIN in the bounding set. busybox has
    // no tool that makes an arbitrary system call, so it is made where the
    // kernel itself would allow it: in a user and UTS namespace of the
    // container's own (`unshare -r -u`, whose root holds CAP_SYS_ADMIN
    // there; creating a user namespace needs no capability and the profile
    // allows unshare). Only the filter can then refuse it, as the
    // unconfined control run shows: the same command succeeds.
    let sethostname = [
        "bb",
        "unshare",
        "-r",
        "-u",
        "sh",
        "-c",
        "hostname other && hostname",
    ];
    for maps in [&[][..], &MAPS[..]] {
        let args = [&["--rm"][..], maps, &sethostname].concat();
        for (who, out) in [
            ("layerstore", direct_run(&scene, &args)),
            (
                "podman",
                podman_run(
                    &scene,
                    &[maps, &["localhost/bb"], &sethostname[1..]].concat(),
                ),
            ),
        ] {
            assert_eq!(
                out.status.code(),
                Some(1),
                "{who} {maps:?}: {}",
                stdout(&out)
            );
            assert!(
                stderr(&out).contains("sethostname: Operation not permitted"),
                "{who} {maps:?}: {}",
                stderr(&out)
            );
        }
    }
    scene.set_conf(&format!("{DEBIAN_CAPS}\nseccomp_profile = \"unconfined\""));
    let out = direct_run(&scene, &[&["--rm"][..], &sethostname].concat());
    assert_eq!(ok(out, "unconfined control"), "other");
    let status = ok(
        direct_run(
            &scene,
            &["--rm", "bb", "grep", "^Seccomp:", "/proc/self/status"],
        ),
        "unconfined status",
    );
    assert_eq!(
        status.split_whitespace().collect::<Vec<_>>(),
        ["Seccomp:", "0"]
    );
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

/// The nameservers of a resolv.conf text.
fn nameservers(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .map(|s| s.trim().to_owned())
        .collect()
}

#[test]
#[ignore = "privileged: needs root, overlay mounts and runc"]
fn etc_files_are_generated() {
    require_privileged(TOOLS);
    let scene = Scene::new("");
    let host_hosts = fs::read_to_string("/etc/hosts").unwrap_or_default();
    let host_resolv = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let show = "hostname; echo ==; cat /etc/hostname; echo ==; cat /etc/hosts; echo ==; \
                cat /etc/resolv.conf";
    for (maps, network, user) in [
        (&[][..], "none", "0"),
        (&MAPS[..], "none", "1000"),
        (&MAPS[..], "host", "0"),
    ] {
        let net = format!("--network={network}");
        let out = ok(
            direct_run(
                &scene,
                &[
                    &["--rm", net.as_str(), "--user", user][..],
                    maps,
                    &["bb", "sh", "-c", show],
                ]
                .concat(),
            ),
            "show",
        );
        let parts: Vec<&str> = out.split("==\n").collect();
        let [hostname, hostname_file, hosts, resolv] = parts[..] else {
            panic!("{out}");
        };
        let hostname = hostname.trim();
        assert_eq!(hostname.len(), 12, "{hostname}");
        assert!(
            hostname.bytes().all(|b| b.is_ascii_hexdigit()),
            "{hostname}"
        );
        assert_eq!(hostname_file.trim(), hostname);
        // localhost, the host's entries, the container's hostname; not the
        // image's own file.
        let lines: Vec<Vec<&str>> = hosts
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert!(
            lines.iter().any(|l| l[..] == ["127.0.0.1", "localhost"]),
            "{hosts}"
        );
        assert!(
            lines.iter().any(|l| l[..] == ["127.0.0.1", hostname]),
            "{hosts}"
        );
        for entry in host_hosts
            .lines()
            .map(|l| l.split('#').next().unwrap_or_default())
        {
            let fields: Vec<&str> = entry.split_whitespace().collect();
            if fields.len() >= 2 {
                assert!(lines.contains(&fields), "{entry:?} missing from\n{hosts}");
            }
        }
        assert!(!hosts.contains("image-only"), "{hosts}");
        // resolv.conf: the host's nameservers; with a network namespace of
        // its own, none the container cannot reach (loopback, IPv6).
        let ours = nameservers(resolv);
        let expected: Vec<String> = nameservers(&host_resolv)
            .into_iter()
            .filter(|ns| network == "host" || !(ns.starts_with("127.") || ns.contains(':')))
            .collect();
        if expected.is_empty() {
            assert_eq!(ours, ["8.8.8.8", "8.8.4.4"], "{resolv}");
        } else {
            assert_eq!(ours, expected, "{resolv}");
        }
    }
    // With on-disk owners the image's /etc is not the container root's to
    // write: the mount points it lacks (hostname, resolv.conf) are made
    // for the runtime.
    let on_disk = Scene::with("", true);
    let args = [
        &["--rm", "--nocache"][..],
        &MAPS[..],
        &["bb", "sh", "-c", show],
    ]
    .concat();
    let out = ok(direct_run(&on_disk, &args), "on-disk owners");
    let hostname = out.lines().next().unwrap_or_default();
    assert!(out.contains(&format!("127.0.0.1\t{hostname}")), "{out}");
    // The files live in the bundle beside config.json, owned by the
    // container's root, and the config binds them.
    ok(
        direct_run(&scene, &[&MAPS[..], &["bb", "true"]].concat()),
        "kept run",
    );
    let bundle = only_bundle(&scene.store);
    let config = json_file(&bundle.join("config.json"));
    use std::os::unix::fs::MetadataExt;
    for (name, dest) in [
        ("hosts", "/etc/hosts"),
        ("hostname", "/etc/hostname"),
        ("resolv.conf", "/etc/resolv.conf"),
    ] {
        let file = bundle.join(name);
        let meta = fs::symlink_metadata(&file).unwrap();
        assert!(meta.is_file(), "{}", file.display());
        assert_eq!(
            (meta.uid(), meta.gid()),
            (400_000, 400_000),
            "{}",
            file.display()
        );
        assert_eq!(meta.mode() & 0o7777, 0o644, "{}", file.display());
        let mount = config["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == dest)
            .unwrap_or_else(|| panic!("no mount at {dest}"));
        assert_eq!(mount["source"], file.to_str().unwrap());
        assert_eq!(mount["type"], "bind");
    }
}

/// CapEff and CapBnd inside, as numbers.
fn caps_inside(scene: &Scene, maps: &[&str]) -> Result<(u64, u64), String> {
    let out = direct_run(
        scene,
        &[
            &["--rm"][..],
            maps,
            &["bb", "grep", "^Cap", "/proc/self/status"],
        ]
        .concat(),
    );
    if !out.status.success() {
        return Err(stderr(&out));
    }
    let text = stdout(&out);
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|h| u64::from_str_radix(h.trim(), 16).unwrap())
            .unwrap_or_else(|| panic!("{key} in {text}"))
    };
    Ok((get("CapEff:"), get("CapBnd:")))
}

#[test]
#[ignore = "privileged: needs root, overlay mounts and runc"]
fn default_capabilities_come_from_containers_conf() {
    require_privileged(TOOLS);
    let scene = Scene::new("");
    // Not set: Debian's list (what podman runs with when it reads
    // /usr/share/containers/containers.conf).
    let debian = [0, 1, 3, 4, 5, 6, 7, 8, 10, 18, 31]
        .iter()
        .fold(0u64, |m, b| m | 1 << b);
    assert_eq!(caps_inside(&scene, &[]), Ok((debian, debian)));
    // Set: any case, with or without CAP_ (CHOWN 0, KILL 5, NET_RAW 13).
    scene.set_conf(r#"default_capabilities = ["chown", "CAP_KILL", "Net_Raw"]"#);
    let three = 1 | 1 << 5 | 1 << 13;
    for maps in [&[][..], &MAPS[..]] {
        assert_eq!(caps_inside(&scene, maps), Ok((three, three)), "{maps:?}");
    }
    // podman agrees.
    let podman = ok(
        podman_run(
            &scene,
            &["localhost/bb", "grep", "^CapEff", "/proc/self/status"],
        ),
        "podman",
    );
    assert_eq!(podman.split_whitespace().nth(1), Some("0000000000002021"));
    // A name podman does not know: an error naming the file, nothing made.
    scene.set_conf(r#"default_capabilities = ["CHOWN", "CAP_FLY"]"#);
    let err = caps_inside(&scene, &[]).unwrap_err();
    assert!(
        err.contains(scene.conf.to_str().unwrap()) && err.contains("CAP_FLY"),
        "{err}"
    );
    let leftovers: Vec<_> = fs::read_dir(scene.store.run.join("overlay-containers"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
#[ignore = "privileged: needs root, overlay mounts and runc"]
fn a_broken_seccomp_profile_is_refused() {
    require_privileged(TOOLS);
    let scene = Scene::new("");
    // One run first, so that every record file exists.
    ok(direct_run(&scene, &["--rm", "bb", "true"]), "first run");
    let before = scene.store.record_files();
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.json");
    fs::write(
        &garbage,
        "{\"defaultAction\": \"SCMP_ACT_ERRNO\", \"syscalls\": [",
    )
    .unwrap();
    let unknown = dir.path().join("unknown-action.json");
    fs::write(&unknown, "{\"defaultAction\": \"SCMP_ACT_SOMETIMES\"}").unwrap();
    let missing = dir.path().join("missing.json");
    for profile in [&missing, &garbage, &unknown] {
        scene.set_conf(&format!("seccomp_profile = \"{}\"", profile.display()));
        let out = direct_run(&scene, &["--rm", "bb", "true"]);
        assert_eq!(
            out.status.code(),
            Some(125),
            "{}: {}",
            profile.display(),
            stderr(&out)
        );
        assert!(
            stderr(&out).contains(&format!("seccomp profile {}", profile.display())),
            "{}",
            stderr(&out)
        );
        // The profile is read when the bundle is written, after the
        // container was made: it is removed again, and the record files
        // are as they were, byte for byte.
        assert_eq!(scene.store.record_files(), before, "{}", profile.display());
        let leftovers: Vec<_> = fs::read_dir(scene.store.run.join("overlay-containers"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
    // With no profile named, the default one is used again.
    scene.set_conf("");
    ok(
        direct_run(&scene, &["--rm", "bb", "true"]),
        "default profile",
    );
}
