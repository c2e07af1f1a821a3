//! `layerstore run` in podman mode against the real podman 4.3.1, runc and
//! kernel: the container is podman's (ps, exec, logs, stop/start, rm), it
//! runs on the image's own layers for a non-contiguous mapping (no
//! template), with podman's seccomp profile and no session keyring, gc
//! releases its storage only once podman has no container on it, and bad
//! input changes nothing.

use std::fs;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use layerstore_test_support::{require_privileged, run_ok, PodmanStore};
use serde_json::Value;

mod scene;

use scene::{stderr, stdout, wait_for, Scene};
const TOOLS: &[&str] = &["podman", "runc", "busybox"];

/// Non-contiguous: uids 0-999 at 1000000, 1000-1009 at 1200000.
const MAPS: &[&str] = &[
    "--uidmap",
    "0:1000000:1000",
    "--uidmap",
    "1000:1200000:10",
    "--gidmap",
    "0:1000000:2000",
];

/// Keys and bytes charged to host uid `uid` (`/proc/key-users`): (keys,
/// bytes), zero when the uid has none.
fn keys_of(uid: u32) -> (u64, u64) {
    let text = fs::read_to_string("/proc/key-users").unwrap();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        if f.next() == Some(&format!("{uid}:")) {
            // usage, nkeys/nikeys, qnkeys/maxkeys, qnbytes/maxbytes
            let used = |field: Option<&str>| -> u64 {
                field
                    .and_then(|v| v.split('/').next())
                    .unwrap()
                    .parse()
                    .unwrap()
            };
            let (_usage, _inst) = (f.next(), f.next());
            let keys = used(f.next());
            let bytes = used(f.next());
            return (keys, bytes);
        }
    }
    (0, 0)
}

#[test]
#[ignore = "privileged: real podman 4.3.1, runc, overlay and idmapped mounts"]
fn podman_owns_the_container_on_a_noncontiguous_mapping_without_a_template() {
    require_privileged(TOOLS);
    // Driver options (Debian's storage.conf has this one) travel to the
    // hook in an annotation, which podman reads as a comma-separated list.
    let mut store = PodmanStore::empty();
    store.storage_opts = vec!["overlay.mountopt=nodev".to_owned()];
    let scene = Scene::new(store);
    let before = scene.state();
    let layers_before = scene.layers().len();
    let host = tempfile::tempdir().unwrap();
    fs::write(host.path().join("note"), "from-the-volume\n").unwrap();
    fs::set_permissions(
        host.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let volume = format!("{}:/data:ro", host.path().display());
    let keys_before = keys_of(1_000_000);

    let mut args = vec!["-d", "--name", "lsp1", "--user", "1005:5"];
    args.extend(MAPS);
    args.extend(["-v", &volume, "bb", "sh", "-c"]);
    let script = "cat /data/note; grep Seccomp: /proc/self/status; stat -c 'owner=%u:%g' /bin/busybox; exec sleep 1000";
    args.push(script);
    let out = scene.run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let podman_id = stdout(&out);
    assert_eq!(
        podman_id.len(),
        64,
        "podman run -d prints the id: {podman_id}"
    );

    // podman's container: ps, exec, logs, inspect.
    let names = stdout(&run_ok(scene.podman().args([
        "ps",
        "--format",
        "{{.Names}}",
    ])));
    assert!(names.lines().any(|n| n == "lsp1"), "{names}");
    let id = stdout(&run_ok(scene.podman().args(["exec", "lsp1", "id", "-u"])));
    assert_eq!(id, "1005");
    // The files podman makes are the container root's, as in podman's own
    // containers (the hook gives them: podman --rootfs records no maps).
    let owners = stdout(&run_ok(scene.podman().args([
        "exec",
        "lsp1",
        "sh",
        "-c",
        "for f in /etc/hosts /etc/hostname /etc/resolv.conf /run/.containerenv /etc/mtab; do \
         [ -e $f ] || [ -L $f ] && stat -c '%n %u:%g' $f; done",
    ])));
    for f in [
        "/etc/hosts 0:0",
        "/etc/hostname 0:0",
        "/run/.containerenv 0:0",
        "/etc/mtab 0:0",
    ] {
        assert!(owners.lines().any(|l| l == f), "{f}: {owners}");
    }
    assert!(owners.lines().all(|l| l.ends_with(" 0:0")), "{owners}");
    let uid_map = stdout(&run_ok(scene.podman().args([
        "exec",
        "lsp1",
        "cat",
        "/proc/self/uid_map",
    ])));
    let extents: Vec<Vec<&str>> = uid_map
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        extents,
        [["0", "1000000", "1000"], ["1000", "1200000", "10"]]
    );
    wait_for("the container's output", || {
        stdout(&run_ok(scene.podman().args(["logs", "lsp1"]))).contains("owner=")
    });
    let logs = stdout(&run_ok(scene.podman().args(["logs", "lsp1"])));
    assert!(logs.contains("from-the-volume"), "{logs}");
    assert!(
        logs.contains("Seccomp:\t2"),
        "podman's seccomp profile: {logs}"
    );
    assert!(
        logs.contains("owner=0:0"),
        "the image's files are root's inside: {logs}"
    );
    let label = stdout(&run_ok(scene.podman().args([
        "inspect",
        "lsp1",
        "--format",
        "{{index .Config.Labels \"io.layerstore.storage-container\"}}",
    ])));
    let storage = scene.storage_containers();
    assert_eq!(storage.len(), 1);
    assert_eq!(
        storage[0]["id"].as_str().unwrap(),
        label,
        "the label names the storage container"
    );
    assert!(
        storage[0]["metadata"]
            .as_str()
            .unwrap()
            .contains(&podman_id),
        "the storage container records podman's container"
    );

    // No template: two new layers, both container layers without maps (ours
    // on the image's top layer, and the empty one podman makes for any
    // --rootfs container); the image gained no mapped layer.
    let layers = scene.layers();
    assert_eq!(layers.len(), layers_before + 2, "{layers:#?}");
    let image_top = scene.records("overlay-images/images.json")[0]["layer"].clone();
    let ours = layers
        .iter()
        .find(|l| l["id"] == storage[0]["layer"])
        .unwrap();
    assert_eq!(
        ours["parent"], image_top,
        "stacked on the image's own top layer"
    );
    for l in &layers {
        assert!(
            l.get("uidmap").is_none() && l.get("gidmap").is_none(),
            "no mapped layer: {l}"
        );
    }
    assert!(scene.records("overlay-images/images.json")[0]
        .get("mapped-layers")
        .is_none());

    // No new session keyring per container: a second container, and the
    // control (--keyring, podman's default) that shows the count can grow.
    let mut second = vec!["-d", "--name", "lsp2"];
    second.extend(MAPS);
    second.extend(["bb", "sleep", "1000"]);
    assert!(scene.run(&second).status.success());
    assert_eq!(
        keys_of(1_000_000),
        keys_before,
        "no keyring for the mapped root"
    );
    let mut control = vec!["-d", "--keyring", "--name", "lsp3"];
    control.extend(MAPS);
    control.extend(["bb", "sleep", "1000"]);
    let out = scene.run(&control);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        keys_of(1_000_000).0 > keys_before.0,
        "the control made a keyring"
    );
    run_ok(scene.podman().args(["rm", "-f", "-t", "0", "lsp2", "lsp3"]));

    // stop + start; gc keeps the storage of a stopped container.
    run_ok(scene.podman().args(["stop", "-t", "0", "lsp1"]));
    let report = scene.gc();
    assert_eq!(scene.storage_containers().len(), 1, "gc kept it: {report}");
    let skipped = report["skipped"].to_string();
    assert!(
        skipped.contains(&format!("podman container {podman_id} uses it")),
        "{skipped}"
    );
    run_ok(scene.podman().args(["start", "lsp1"]));
    assert_eq!(
        stdout(&run_ok(scene.podman().args(["exec", "lsp1", "id", "-u"]))),
        "1005"
    );

    // As after a reboot: the mount is gone, the mount point empty. The
    // hook stops the start with what to do; `layerstore remount` (the boot
    // unit's command) makes it work again.
    run_ok(scene.podman().args(["stop", "-t", "0", "lsp1"]));
    let sid = label.as_str();
    let refused = scene.layerstore().args(["umount", sid]).output().unwrap();
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains(&format!("podman rm {podman_id}")),
        "{}",
        stderr(&refused)
    );
    run_ok(scene.layerstore().args(["umount", "--force", sid]));
    assert!(scene.mounts().is_empty(), "{:?}", scene.mounts());
    let merged = scene
        .store
        .graph
        .join("overlay")
        .join(storage[0]["layer"].as_str().unwrap())
        .join("merged");
    fs::create_dir_all(&merged).unwrap();
    let refused = scene.podman().args(["start", "lsp1"]).output().unwrap();
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("run-layerstore-remount"),
        "{}",
        stderr(&refused)
    );
    let remounted = run_ok(scene.layerstore().arg("remount"));
    assert_eq!(stdout(&remounted), sid);
    run_ok(scene.podman().args(["start", "lsp1"]));
    assert_eq!(
        stdout(&run_ok(scene.podman().args(["exec", "lsp1", "id", "-u"]))),
        "1005"
    );
    assert_eq!(
        stdout(&run_ok(scene.podman().args([
            "exec",
            "lsp1",
            "cat",
            "/data/note"
        ]))),
        "from-the-volume"
    );

    // podman rm, then gc: the store as before.
    run_ok(scene.podman().args(["rm", "-f", "-t", "0", "lsp1"]));
    let report = scene.gc();
    assert!(scene.storage_containers().is_empty(), "{report}");
    assert!(scene.mounts().is_empty(), "{:?}", scene.mounts());
    assert_eq!(scene.state(), before, "the store as before: {report}");
}

#[test]
#[ignore = "privileged: real podman 4.3.1, runc, overlay mounts"]
fn foreground_rm_passes_the_exit_code_and_leaves_nothing() {
    require_privileged(TOOLS);
    let scene = Scene::new(PodmanStore::empty());
    let before = scene.state();
    let mut args = vec!["--rm"];
    args.extend(MAPS);
    args.extend(["bb", "sh", "-c", "echo out; exit 7"]);
    let out = scene.run(&args);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(stdout(&out), "out");
    assert_eq!(scene.state(), before);
    assert!(scene.mounts().is_empty());
    // -d --rm: podman removes its container when it exits; gc then
    // releases the storage, and not before.
    let mut args = vec!["-d", "--rm", "--name", "brief"];
    args.extend(MAPS);
    args.extend(["bb", "sh", "-c", "sleep 1"]);
    let out = scene.run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(scene.storage_containers().len(), 1);
    let report = scene.gc();
    assert_eq!(
        scene.storage_containers().len(),
        1,
        "in use while it runs: {report}"
    );
    wait_for("podman to remove its container", || {
        stdout(&run_ok(scene.podman().args([
            "ps",
            "-a",
            "--format",
            "{{.Names}}",
        ])))
        .is_empty()
    });
    scene.gc();
    assert!(scene.storage_containers().is_empty());
    assert_eq!(scene.state(), before);
    // The image's config becomes podman's flags: its Cmd when none is given.
    let bare = scene.run(&["--rm", "bb"]);
    assert!(!bare.status.success(), "bb has no Cmd");
    assert!(
        stderr(&bare).contains("no command given"),
        "{}",
        stderr(&bare)
    );
    assert_eq!(scene.state(), before);
}

#[test]
#[ignore = "privileged: real podman 4.3.1, runc, overlay mounts"]
fn nocache_without_idmapped_lowers_runs_on_disk_owners_and_makes_no_layer() {
    require_privileged(TOOLS);
    let store = PodmanStore::empty();
    store.force_templates();
    let scene = Scene::new(store);
    let before = scene.state();
    let layers_before = scene.layers().len();
    let mut args = vec!["-d", "--nocache", "--name", "nc"];
    args.extend(MAPS);
    args.extend(["bb", "sleep", "1000"]);
    let out = scene.run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let owner = stdout(&run_ok(scene.podman().args([
        "exec",
        "nc",
        "stat",
        "-c",
        "%u:%g",
        "/bin/busybox",
    ])));
    assert_eq!(
        owner, "65534:65534",
        "on-disk owner (host root) is unmapped inside"
    );
    let layers = scene.layers();
    assert_eq!(
        layers.len(),
        layers_before + 2,
        "only the two container layers"
    );
    assert!(
        layers.iter().all(|l| l.get("uidmap").is_none()),
        "no template"
    );
    run_ok(scene.podman().args(["rm", "-f", "-t", "0", "nc"]));
    scene.gc();
    assert_eq!(scene.state(), before);
}

#[test]
#[ignore = "privileged: real podman 4.3.1, overlay mounts"]
fn bad_input_exits_125_and_changes_nothing() {
    require_privileged(TOOLS);
    let scene = Scene::new(PodmanStore::empty());
    let before = scene.state();
    let check = |args: &[&str], expect: &str| {
        let out = scene.run(args);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(expect), "{args:?}: {}", stderr(&out));
        assert_eq!(scene.state(), before, "{args:?}");
        assert!(scene.mounts().is_empty(), "{args:?}");
    };
    check(&["--bogus", "bb", "true"], "Error: unknown flag: --bogus");
    check(&["-Z", "bb", "true"], "unknown shorthand flag: 'Z' in -Z");
    check(&["--rootfs", "/", "true"], "--rootfs");
    check(&["--userns=auto", "bb", "true"], "--userns=auto");
    check(
        &["localhost/nosuch:1", "true"],
        "image localhost/nosuch:1 is not in the store",
    );
    check(
        &["--uidmap", "0:1:1", "--uidmap", "0:5:1", "bb", "true"],
        "--uidmap",
    );
    check(
        &["--user", "70000", "--uidmap", "0:100000:1000", "bb", "true"],
        "uid 70000",
    );
    // podman missing: the message names the direct mode.
    let out = scene
        .layerstore()
        .env("PATH", "/nonexistent")
        .args(["run", "bb", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("layerstore run --direct"),
        "{}",
        stderr(&out)
    );
    assert_eq!(scene.state(), before);
    // A name podman already uses: podman's own message, and our storage
    // container is released.
    run_ok(
        scene
            .podman()
            .args(["create", "--name", "taken", "--rootfs", "/", "true"]),
    );
    let with_taken = scene.state();
    let out = scene.run(&["--name", "taken", "bb", "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("taken"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("in use"),
        "podman's message: {}",
        stderr(&out)
    );
    assert_eq!(scene.state(), with_taken);
    assert!(scene.mounts().is_empty());
    run_ok(scene.podman().args(["rm", "taken"]));
}

#[test]
#[ignore = "privileged: real podman 4.3.1, runc, overlay mounts"]
fn a_killed_run_is_reclaimed_by_gc_once_podman_has_no_container_on_it() {
    require_privileged(TOOLS);
    let scene = Scene::new(PodmanStore::empty());
    let before = scene.state();
    for (i, delay_ms) in [0u64, 20, 40, 60, 90, 120, 160, 220, 300, 450]
        .into_iter()
        .enumerate()
    {
        let name = format!("killed{i}");
        let mut child = scene
            .layerstore()
            .arg("run")
            .args(["-d", "--name", &name])
            .args(MAPS)
            .args(["bb", "sleep", "1000"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        // podman, if it was started, finishes on its own.
        wait_for("podman run to finish", || {
            !fs::read_dir("/proc").unwrap().any(|e| {
                let p = e.unwrap().path().join("cmdline");
                fs::read(p).is_ok_and(|c| {
                    c.split(|b| *b == 0)
                        .any(|a| a == format!("--name={name}").as_bytes())
                })
            })
        });
        // gc never releases what a podman container uses.
        let report = scene.gc();
        let used: Vec<String> = stdout(&run_ok(scene.podman().args([
            "ps",
            "-a",
            "--format",
            "{{index .Labels \"io.layerstore.storage-container\"}}",
        ])))
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
        let kept: Vec<String> = scene
            .storage_containers()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect();
        for u in &used {
            assert!(
                kept.contains(u),
                "kill at {delay_ms} ms: gc released {u}, which podman uses"
            );
        }
        assert_eq!(
            kept.len(),
            used.len(),
            "kill at {delay_ms} ms: gc left {kept:?}, podman uses {used:?}: {report}"
        );
    }
    run_ok(scene.podman().args(["rm", "-a", "-f", "-t", "0"]));
    scene.gc();
    assert!(scene.mounts().is_empty(), "{:?}", scene.mounts());
    assert_eq!(scene.state(), before);
}

#[test]
#[ignore = "privileged: real podman 4.3.1 (podman build), runc, overlay mounts"]
fn the_images_config_becomes_podmans_flags_below_the_callers() {
    require_privileged(TOOLS);
    let scene = Scene::new(PodmanStore::empty());
    let ctx = tempfile::tempdir().unwrap();
    fs::write(
        ctx.path().join("Containerfile"),
        "FROM localhost/bb\n\
         ENV FROM_IMAGE=img KEEP=image-value\n\
         LABEL org.example.from=image org.example.kept=image\n\
         WORKDIR /srv/app\n\
         USER 1005:5\n\
         STOPSIGNAL SIGUSR1\n\
         ENTRYPOINT [\"/bin/sh\", \"-c\"]\n\
         CMD [\"echo image-cmd $FROM_IMAGE $KEEP $container; pwd; id -u\"]\n",
    )
    .unwrap();
    run_ok(
        scene
            .podman()
            .args(["build", "-q", "-t", "localhost/cfg"])
            .arg(ctx.path()),
    );

    // Nothing given: the image's entrypoint, cmd, env, workdir (made, as
    // podman makes an image's), user.
    let mut args = vec!["--rm"];
    args.extend(MAPS);
    args.push("localhost/cfg");
    let out = scene.run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "image-cmd img image-value podman\n/srv/app\n1005"
    );

    // The caller's win: --env-file over the image's Env, --env over both,
    // a command replaces the image's Cmd (the entrypoint stays), --workdir
    // and --user replace the image's.
    let env_file = ctx.path().join("env");
    fs::write(&env_file, "KEEP=from-env-file\nFROM_IMAGE=from-env-file\n").unwrap();
    let env_file = env_file.display().to_string();
    let mut args = vec![
        "--rm",
        "--env-file",
        &env_file,
        "-e",
        "FROM_IMAGE=from-flag",
        "-w",
        "/",
        "-u",
        "0",
    ];
    args.extend(MAPS);
    args.extend(["localhost/cfg", "echo $FROM_IMAGE $KEEP; pwd; id -u"]);
    let out = scene.run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "from-flag from-env-file\n/\n0");

    // Labels and the stop signal, as podman records them; a caller's label
    // wins over the image's.
    let mut args = vec!["-d", "--name", "cfgd", "--label", "org.example.kept=caller"];
    args.extend(MAPS);
    args.extend(["localhost/cfg", "exec sleep 1000"]);
    let out = scene.run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let inspect = |f: &str| {
        stdout(&run_ok(
            scene.podman().args(["inspect", "cfgd", "--format", f]),
        ))
    };
    assert_eq!(
        inspect("{{index .Config.Labels \"org.example.from\"}}"),
        "image"
    );
    assert_eq!(
        inspect("{{index .Config.Labels \"org.example.kept\"}}"),
        "caller"
    );
    assert_eq!(inspect("{{.Config.StopSignal}}"), "10", "SIGUSR1");
    run_ok(scene.podman().args(["restart", "-t", "0", "cfgd"]));
    assert_eq!(
        stdout(&run_ok(scene.podman().args(["exec", "cfgd", "id", "-u"]))),
        "1005"
    );
    run_ok(scene.podman().args(["rm", "-f", "-t", "0", "cfgd"]));
    scene.gc();
    assert!(scene.storage_containers().is_empty());
}

#[test]
#[ignore = "privileged: real podman 4.3.1, runc, overlay mounts"]
fn a_foreground_run_killed_under_podman_keeps_its_storage_while_podmans_container_exists() {
    require_privileged(TOOLS);
    let scene = Scene::new(PodmanStore::empty());
    // A gc whose podman lists none of this store's containers (another
    // libpod namespace in its containers.conf): only the store can tell.
    let conf = fs::read_to_string(&scene.conf).unwrap();
    let blind = scene.conf.with_file_name("containers-blind.conf");
    fs::write(
        &blind,
        conf.replacen("[engine]\n", "[engine]\nnamespace = \"elsewhere\"\n", 1),
    )
    .unwrap();
    let blind_gc = || {
        let out = run_ok(scene.layerstore().env("CONTAINERS_CONF", &blind).args([
            "gc",
            "--json",
            "--min-age",
            "0",
        ]));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let caller_cid = scene.store.graph.with_file_name("caller.cid");
    let caller_cid = caller_cid.display().to_string();
    for (name, extra) in [
        ("fgkilled", vec![]),
        ("fgkilledcid", vec!["--cidfile", caller_cid.as_str()]),
    ] {
        let mut child = scene
            .layerstore()
            .arg("run")
            .args(["--name", name])
            .args(&extra)
            .args(MAPS)
            .args(["bb", "sleep", "2"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // podman made its container; layerstore dies before it could note
        // which (the OOM killer, a kill -9), podman goes on.
        wait_for("podman's container", || {
            stdout(&run_ok(scene.podman().args([
                "ps",
                "-aq",
                "-f",
                &format!("name={name}"),
            ])))
            .len()
                == 12
        });
        let _ = child.kill();
        let _ = child.wait();
        wait_for("the container to exit", || {
            stdout(&run_ok(scene.podman().args([
                "inspect",
                name,
                "--format",
                "{{.State.Status}}",
            ]))) == "exited"
        });
        let report = blind_gc();
        assert_eq!(scene.storage_containers().len(), 1, "{name}: {report}");
        run_ok(scene.podman().args(["start", name]));
        run_ok(scene.podman().args(["rm", "-f", "-t", "0", name]));
        let report = blind_gc();
        assert!(scene.storage_containers().is_empty(), "{name}: {report}");
    }
    // A cidfile podman does not write (`--cidfile=`): podman is asked, and
    // the storage stays under the container it made.
    let mut args = vec!["-d", "--name", "nocid", "--cidfile="];
    args.extend(MAPS);
    args.extend(["bb", "sleep", "1000"]);
    let out = scene.run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(scene.storage_containers().len(), 1);
    run_ok(scene.podman().args(["exec", "nocid", "true"]));
    run_ok(scene.podman().args(["rm", "-f", "-t", "0", "nocid"]));
    scene.gc();
    assert!(scene.storage_containers().is_empty());
    assert!(scene.mounts().is_empty(), "{:?}", scene.mounts());
}

#[test]
#[ignore = "privileged: real podman 4.3.1, runc, overlay mounts"]
fn sigterm_to_layerstore_reaches_the_container_through_podman() {
    require_privileged(TOOLS);
    let scene = Scene::new(PodmanStore::empty());
    let mut args = vec!["--rm", "--name", "trapper"];
    args.extend(MAPS);
    args.extend([
        "bb",
        "sh",
        "-c",
        "trap 'exit 42' TERM; echo ready; while true; do sleep 0.1; done",
    ]);
    let mut child = scene
        .layerstore()
        .arg("run")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    // The container can print before podman has recorded it as running;
    // until then podman's signal proxy cannot kill it and re-raises the
    // signal on itself (podman 4.3.1 alone does the same). Wait for the
    // state podman's proxy needs.
    wait_for("podman to record trapper as running", || {
        let state = scene
            .podman()
            .args([
                "container",
                "inspect",
                "--format",
                "{{.State.Status}}",
                "trapper",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&state.stdout).trim() == "running"
    });
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    // Whatever happened, nothing of the container stays running.
    let _ = scene
        .podman()
        .args(["rm", "-f", "-t", "0", "trapper"])
        .output();
    assert_eq!(
        status.code(),
        Some(42),
        "SIGTERM reached the container's trap"
    );
    assert!(
        scene.storage_containers().is_empty(),
        "--rm released the storage"
    );
    assert!(scene.mounts().is_empty());
}

#[test]
#[ignore = "privileged: real podman 4.3.1, runc, overlay mounts"]
fn the_callers_runtime_is_the_one_the_shim_runs() {
    require_privileged(TOOLS);
    let scene = Scene::new(PodmanStore::empty());
    let runc = layerstore_test_support::which("runc").unwrap();
    let runtime = runc.display().to_string();
    let mut args = vec!["-d", "--name", "rt", "--runtime", &runtime];
    args.extend(MAPS);
    args.extend(["bb", "sleep", "1000"]);
    let out = scene.run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let recorded = stdout(&run_ok(scene.podman().args([
        "inspect",
        "rt",
        "--format",
        "{{.OCIRuntime}}",
    ])));
    let shim = PathBuf::from(&recorded);
    assert!(
        shim.starts_with(scene.store.graph.join("layerstore/oci-runtimes")),
        "podman runs the shim: {recorded}"
    );
    assert_eq!(shim.file_name(), runc.file_name(), "named as the runtime");
    assert_eq!(fs::read_link(shim.with_file_name("target")).unwrap(), runc);
    run_ok(scene.podman().args(["rm", "-f", "-t", "0", "rt"]));
}
