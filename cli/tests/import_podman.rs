//! Images layerstore imports are podman's images: listed, run, saved with
//! the same layer digests; images podman imports mount in layerstore with
//! the same contents; the same tar gives the same DiffID and layer tree.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use layerstore_test_support::images::{docker_archive, layer_tar, sha256, tree_listing};
use layerstore_test_support::{require_privileged, run_ok, PodmanStore};
use serde_json::Value;

const LAYERSTORE: &str = env!("CARGO_BIN_EXE_layerstore");
const TOOLS: &[&str] = &["podman", "containers-storage", "runc", "busybox"];

/// Layer 1: a small busybox system with every kind of entry.
const BASE: &str = "
d bin 0755 0:0
F bin/busybox 0755 0:0 /bin/busybox
l bin/sh busybox
l bin/stat busybox
l bin/cat busybox
l bin/ls busybox
l bin/id busybox
d etc 0755 0:0
f etc/passwd 0644 0:0 root:x:0:0:root:/root:/bin/sh
f etc/gone 0644 0:0 deleted by layer 2
f etc/kept 0644 0:0 kept
d home 0755 0:0
d home/user 0750 1000:1000
f home/user/note 0640 1000:1000 hello
f usr-suid 4755 0:0 setuid
h hardlink usr-suid 4755
x home/user/note user.note=layered
# cap_net_raw+ep, a v2 file capability (chown clears it; it must survive)
x usr-suid security.capability=hex:0100000200200000000000000000000000000000
p fifo 0600 0:0
c null 0666 0:0 1 3
d opaque 0755 0:0
f opaque/old 0644 0:0 hidden by layer 2
d a-very-long-directory-name-that-goes-on-and-on-and-on-well-past-the-ustar-limit 0755 0:0
f a-very-long-directory-name-that-goes-on-and-on-and-on-well-past-the-ustar-limit/and-a-long-file-name-too 0644 0:0 long
";

/// Layer 2: deletes a file, makes a dir opaque, adds a file.
const TOP: &str = "
w etc/gone
o opaque
d opaque 0755 0:0
f opaque/new 0644 0:0 new
f etc/added 0600 1000:1000 added
";

fn layerstore(store: &PodmanStore, args: &[&str]) -> Output {
    run_ok(store.layerstore(LAYERSTORE).args(args))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

fn rich_archive(dir: &Path) -> (PathBuf, Vec<Vec<u8>>) {
    let layers = vec![layer_tar(BASE), layer_tar(TOP)];
    let path = dir.join("rich.tar");
    docker_archive(&path, &layers, "localhost/rich:1");
    (path, layers)
}

#[test]
#[ignore = "privileged: needs root, podman, containers-storage and runc"]
fn an_imported_image_is_podmans_image() {
    require_privileged(TOOLS);
    let store = PodmanStore::empty();
    let work = tempfile::tempdir().unwrap();
    let (archive, layers) = rich_archive(work.path());
    let src = format!("docker-archive:{}", archive.display());
    let id = stdout(&layerstore(&store, &["import", "--quiet", &src]));

    // podman lists it under its tag.
    let images: Value = serde_json::from_str(&stdout(&run_ok(
        store.podman().args(["images", "--format", "json"]),
    )))
    .unwrap();
    let listed = images.as_array().unwrap();
    assert!(listed.iter().any(|i| i["Id"] == id.as_str()), "{images}");

    // podman runs it: contents, owners, modes, hardlinks, whiteouts.
    let script = "stat -c '%n %u:%g %a %i' /home/user/note /usr-suid /hardlink /etc/added; \
                  ls /etc; ls /opaque; cat /home/user/note; echo; \
                  stat -c '%n %F %t:%T' /null /fifo; ls /a-very-long*/";
    let out = stdout(&run_ok(store.podman().args([
        "run",
        "--rm",
        "--pull=never",
        "localhost/rich:1",
        "sh",
        "-c",
        script,
    ])));
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("/home/user/note 1000:1000 640"),
        "{out}"
    );
    assert!(lines[1].starts_with("/usr-suid 0:0 4755"), "{out}");
    let inode = |l: &str| l.rsplit(' ').next().unwrap().to_owned();
    assert_eq!(
        inode(lines[1]),
        inode(lines[2]),
        "hard link keeps one inode: {out}"
    );
    assert!(lines[3].starts_with("/etc/added 1000:1000 600"), "{out}");
    for present in ["added", "kept", "passwd"] {
        assert!(lines.contains(&present), "etc/{present} missing: {out}");
    }
    assert!(
        !lines.contains(&"gone"),
        "etc/gone must be hidden by the whiteout: {out}"
    );
    assert!(out.contains("new\nhello"), "opaque dir hides old: {out}");
    assert!(!out.contains("old"), "{out}");
    assert!(out.contains("/null character special file 1:3"), "{out}");
    assert!(out.contains("/fifo fifo"), "{out}");
    assert!(out.contains("and-a-long-file-name-too"), "{out}");

    // xattrs, seen through podman's own mount of the image.
    let mnt = stdout(&run_ok(store.podman().args([
        "image",
        "mount",
        "localhost/rich:1",
    ])));
    let note =
        layerstore_test_support::images::list_xattrs(&Path::new(&mnt).join("home/user/note"));
    assert!(
        note.iter().any(|x| x == "user.note=\"layered\""),
        "{note:?}"
    );
    let cap = layerstore_test_support::images::list_xattrs(&Path::new(&mnt).join("usr-suid"));
    assert!(
        cap.iter().any(|x| x.starts_with("security.capability=")),
        "{cap:?}"
    );
    run_ok(
        store
            .podman()
            .args(["image", "unmount", "localhost/rich:1"]),
    );

    // podman save reproduces the source layers byte for byte (tar-split).
    let saved = work.path().join("saved.tar");
    run_ok(
        store
            .podman()
            .args(["save", "--format", "docker-archive", "-o"])
            .arg(&saved)
            .arg("localhost/rich:1"),
    );
    let digests = archive_layer_digests(&saved, work.path());
    let want: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    assert_eq!(digests, want);
}

/// The sha256 of each layer tar in a docker archive, bottom first.
fn archive_layer_digests(archive: &Path, work: &Path) -> Vec<String> {
    let dir = work.join("unpacked");
    fs::create_dir_all(&dir).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xf")
            .arg(archive)
            .arg("-C")
            .arg(&dir),
    );
    let manifest: Value =
        serde_json::from_slice(&fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| sha256(&fs::read(dir.join(l.as_str().unwrap())).unwrap()))
        .collect()
}

#[test]
#[ignore = "privileged: needs root, podman, containers-storage and runc"]
fn a_podman_image_mounts_in_layerstore_with_the_same_contents() {
    require_privileged(TOOLS);
    let store = PodmanStore::empty();
    let work = tempfile::tempdir().unwrap();
    let (archive, _) = rich_archive(work.path());
    run_ok(store.podman().args(["load", "-i"]).arg(&archive));
    let image = stdout(&run_ok(store.podman().args([
        "images",
        "-q",
        "--no-trunc",
        "localhost/rich:1",
    ])));
    let image = image.trim_start_matches("sha256:").to_owned();

    let ctr = stdout(&layerstore(&store, &["create", "--name", "viewer", &image]));
    let ours = stdout(&layerstore(&store, &["mount", &ctr]));
    let theirs = stdout(&run_ok(store.podman().args([
        "image",
        "mount",
        "localhost/rich:1",
    ])));
    assert_eq!(
        tree_listing(Path::new(&ours)),
        tree_listing(Path::new(&theirs))
    );
    // podman sees our container while it exists.
    let ps = stdout(&run_ok(store.podman().args([
        "ps",
        "-a",
        "--external",
        "--format",
        "{{.ID}} {{.Names}}",
    ])));
    assert!(ps.contains("viewer"), "{ps}");
    layerstore(&store, &["umount", &ctr]);
    assert!(!Path::new(&ours).join("etc").exists(), "unmounted");
    run_ok(
        store
            .podman()
            .args(["image", "unmount", "localhost/rich:1"]),
    );
    layerstore(&store, &["rm", "viewer"]);
    let ps = stdout(&run_ok(store.podman().args([
        "ps",
        "-a",
        "--external",
        "--format",
        "{{.Names}}",
    ])));
    assert!(!ps.contains("viewer"), "{ps}");
}

#[test]
#[ignore = "privileged: needs root, podman, containers-storage and runc"]
fn the_same_tar_gives_the_same_layer_in_both_tools() {
    require_privileged(TOOLS);
    let store = PodmanStore::empty();
    let work = tempfile::tempdir().unwrap();
    let tarball = work.path().join("rootfs.tar");
    fs::write(&tarball, layer_tar(BASE)).unwrap();
    run_ok(
        store
            .podman()
            .args(["import"])
            .arg(&tarball)
            .arg("localhost/by-podman:1"),
    );
    layerstore(
        &store,
        &[
            "import",
            "--quiet",
            tarball.to_str().unwrap(),
            "by-layerstore:1",
        ],
    );
    let layers: Value =
        serde_json::from_str(&stdout(&layerstore(&store, &["layers", "--json"]))).unwrap();
    let layers = layers.as_array().unwrap();
    assert_eq!(layers.len(), 2, "{layers:?}");
    assert_eq!(layers[0]["diff-digest"], layers[1]["diff-digest"]);
    assert_eq!(layers[0]["diff-digest"], sha256(&layer_tar(BASE)).as_str());
    for key in ["diff-size", "compressed-diff-digest", "uidset", "gidset"] {
        assert_eq!(layers[0][key], layers[1][key], "{key}");
    }
    let diff = |l: &Value| {
        store
            .graph
            .join("overlay")
            .join(l["id"].as_str().unwrap())
            .join("diff")
    };
    assert_eq!(
        tree_listing(&diff(&layers[0])),
        tree_listing(&diff(&layers[1]))
    );
    // Both images are podman's: it runs ours.
    let out = stdout(&run_ok(store.podman().args([
        "run",
        "--rm",
        "--pull=never",
        "localhost/by-layerstore:1",
        "cat",
        "/etc/kept",
    ])));
    assert_eq!(out, "kept");
    // And removing it with layerstore leaves podman's image intact.
    layerstore(&store, &["rmi", "localhost/by-layerstore:1"]);
    let left: Value =
        serde_json::from_str(&stdout(&layerstore(&store, &["layers", "--json"]))).unwrap();
    assert_eq!(left.as_array().unwrap().len(), 1);
    run_ok(store.podman().args([
        "run",
        "--rm",
        "--pull=never",
        "localhost/by-podman:1",
        "cat",
        "/etc/kept",
    ]));
}
