use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::process::Command;

use super::*;

fn tree() -> (tempfile::TempDir, Dir) {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("store/a/b")).unwrap();
    fs::write(tmp.path().join("store/a/b/f"), b"x").unwrap();
    fs::create_dir_all(tmp.path().join("victim")).unwrap();
    fs::write(tmp.path().join("victim/precious"), b"keep").unwrap();
    let dir = Dir::open(&tmp.path().join("store")).unwrap();
    (tmp, dir)
}

#[test]
fn reads_refuse_fifos_without_blocking_and_files_beyond_the_limit() {
    let (tmp, dir) = tree();
    let fifo = tmp.path().join("store/a/fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        FileType::Fifo,
        Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let err = dir.read("a/fifo").unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
    assert!(dir.read_opt("a/fifo").is_err());
    // A sparse file far larger than memory is refused by its size.
    let big = fs::File::create(tmp.path().join("store/a/big")).unwrap();
    big.set_len(1 << 42).unwrap();
    let err = dir.read("a/big").unwrap_err();
    assert!(err.to_string().contains("more than"), "{err}");
    big.set_len(11).unwrap();
    assert_eq!(dir.read_limited("a/big", 11).unwrap().len(), 11);
    assert!(dir.read_limited("a/big", 10).is_err());
    assert_eq!(dir.read_opt_limited("a/none", 10).unwrap(), None);
}

/// `levels` nested directories named `name` below `dir` (made as a
/// container would: each level relative to the last, far beyond PATH_MAX),
/// with a file every 500 levels.
fn deep_tree(dir: &Path, name: &str, levels: usize) {
    let mut fd = rustix::fs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
    for level in 0..levels {
        rustix::fs::mkdirat(&fd, name, Mode::from_raw_mode(0o755)).unwrap();
        if level % 500 == 0 {
            let file = rustix::fs::openat(
                &fd,
                "f",
                OFlags::CREATE | OFlags::WRONLY,
                Mode::from_raw_mode(0o644),
            )
            .unwrap();
            drop(file);
        }
        fd = rustix::fs::openat(&fd, name, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
            .unwrap();
    }
    // The bottom is read-only, as a container may leave it.
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o500)).unwrap();
}

/// Runs `f` with at most 48 descriptors (restored after, also on failure).
fn with_few_descriptors(f: impl FnOnce()) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    struct Restore(Rlimit);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = setrlimit(Resource::Nofile, self.0);
        }
    }
    let limit = getrlimit(Resource::Nofile);
    let _restore = Restore(limit);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(48),
            maximum: limit.maximum,
        },
    )
    .unwrap();
    f();
}

#[test]
fn remove_tree_takes_a_tree_deeper_than_descriptors_and_paths_allow() {
    // 2,000 levels of 200-character names: 400 kB of path.
    let (tmp, dir) = tree();
    deep_tree(&tmp.path().join("store/a"), &"d".repeat(200), 2000);
    with_few_descriptors(|| assert!(dir.remove_tree("a").unwrap()));
    assert!(!tmp.path().join("store/a").exists());
    assert_eq!(
        fs::read(tmp.path().join("victim/precious")).unwrap(),
        b"keep"
    );
}

#[test]
fn walk_tree_measures_a_tree_deeper_than_the_stack_and_descriptors_allow() {
    // 30,000 levels: a recursive walk overflows the stack on the way.
    let (tmp, dir) = tree();
    fs::create_dir(tmp.path().join("store/deep")).unwrap();
    deep_tree(&tmp.path().join("store/deep"), "d", 30_000);
    let mut dirs = 0;
    let mut files = 0;
    with_few_descriptors(|| {
        assert!(dir
            .walk_tree("deep", &mut |m| if m.is_dir() {
                dirs += 1
            } else {
                files += 1
            })
            .unwrap());
    });
    assert_eq!((dirs, files), (30_001, 60));
    assert!(!dir.walk_tree("missing", &mut |_| {}).unwrap());
    assert!(dir.remove_tree("deep").unwrap());
}

#[test]
fn paths_must_be_plain_and_relative() {
    let (_tmp, dir) = tree();
    for bad in ["", "/etc", "../victim", "a/../../victim", "./a"] {
        let err = dir.open_dir(bad).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad}: {err}");
        assert!(dir.remove_tree(bad).is_err(), "{bad}");
    }
    assert!(dir.open_dir("a/b").is_ok());
    // An inner "." is dropped by Path itself: the same directory.
    assert!(dir.open_dir("a/./b").is_ok());
}

#[test]
fn symlinks_are_never_followed() {
    let (tmp, dir) = tree();
    let victim = tmp.path().join("victim");
    symlink(&victim, tmp.path().join("store/link")).unwrap();
    symlink("../../victim", tmp.path().join("store/a/rel")).unwrap();
    for rel in ["link", "link/precious", "a/rel", "a/rel/precious"] {
        assert!(dir.open_dir(rel).is_err(), "{rel}");
        assert!(dir.read(rel).is_err(), "{rel}");
    }
    assert!(dir.read("link/precious").is_err());
    // Removing a symlink removes the link, not its target's content.
    assert!(dir.remove_tree("link").unwrap());
    assert!(dir.remove_tree("a").unwrap());
    assert_eq!(fs::read(victim.join("precious")).unwrap(), b"keep");
    assert!(!tmp.path().join("store/a").exists());
    // A write through a symlinked directory is refused.
    symlink(&victim, tmp.path().join("store/meta")).unwrap();
    assert!(dir.write_atomic("meta/layers.json", b"[]", true).is_err());
    assert!(!victim.join("layers.json").exists());
    // A symlinked file is replaced, not written through.
    symlink(
        victim.join("precious"),
        tmp.path().join("store/images.json"),
    )
    .unwrap();
    dir.write_atomic("images.json", b"[]", true).unwrap();
    assert_eq!(fs::read(victim.join("precious")).unwrap(), b"keep");
    assert_eq!(
        fs::read(tmp.path().join("store/images.json")).unwrap(),
        b"[]"
    );
}

#[test]
fn remove_tree_handles_read_only_dirs_and_missing_paths() {
    let (tmp, dir) = tree();
    fs::set_permissions(
        tmp.path().join("store/a/b"),
        fs::Permissions::from_mode(0o555),
    )
    .unwrap();
    assert!(dir.remove_tree("a").unwrap());
    assert!(!dir.remove_tree("a").unwrap());
    assert!(!dir.remove_tree("nope/deeper").unwrap());
    assert!(!dir.remove_file("nope").unwrap());
    assert!(dir.stat("nope").unwrap().is_none());
}

#[test]
fn stat_read_link_entries_and_rename() {
    let (tmp, dir) = tree();
    symlink("../x/diff", tmp.path().join("store/l")).unwrap();
    assert_eq!(
        dir.read_link("l").unwrap().unwrap(),
        PathBuf::from("../x/diff")
    );
    assert!(dir.stat("l").unwrap().unwrap().is_symlink());
    assert!(dir.stat("a").unwrap().unwrap().is_dir());
    let mut names: Vec<String> = dir
        .entries()
        .unwrap()
        .into_iter()
        .map(|e| e.name.to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "l"]);
    dir.rename("a/b/f", "a/g").unwrap();
    assert_eq!(dir.read("a/g").unwrap(), b"x");
    assert!(dir.create_dir("a/new", 0o700).unwrap());
    assert!(!dir.create_dir("a/new", 0o700).unwrap());
    assert!(dir.create_dir("a/g", 0o700).is_err());
    let deep = dir.create_dir_all("p/q/r", 0o700).unwrap();
    assert!(deep.path().ends_with("p/q/r"));
}

#[test]
#[ignore = "privileged: mounts a tmpfs inside the tree"]
fn privileged_remove_tree_never_crosses_a_mount() {
    layerstore_test_support::require_privileged(&["mount", "umount"]);
    let (tmp, dir) = tree();
    let mnt = tmp.path().join("store/a/b/mnt");
    fs::create_dir(&mnt).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(ok.success());
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    fs::write(mnt.join("on-the-mount"), b"keep").unwrap();
    // A bind mount of a directory of the same filesystem too.
    let bind = tmp.path().join("store/a/bind");
    fs::create_dir(&bind).unwrap();
    let ok = Command::new("mount")
        .arg("--bind")
        .arg(tmp.path().join("victim"))
        .arg(&bind)
        .status()
        .unwrap();
    assert!(ok.success());
    let _guard2 = Unmount(bind.clone());
    let err = dir.remove_tree("a").unwrap_err();
    assert!(err.to_string().contains("mount point"), "{err}");
    assert_eq!(fs::read(mnt.join("on-the-mount")).unwrap(), b"keep");
    assert_eq!(
        fs::read(tmp.path().join("victim/precious")).unwrap(),
        b"keep"
    );
    // The mount point itself is refused too.
    assert!(dir.remove_tree("a/bind").is_err());
    assert!(dir.remove_tree("a/b/mnt").is_err());
    // Below a mount point: an entry of the bind mount (the victim's own
    // file), and the mount as a directory whose contents go.
    assert!(dir.remove_tree("a/bind/precious").is_err());
    assert!(dir.remove_file("a/bind/precious").is_err());
    assert!(dir.open_dir_same_mount("a/bind").is_err());
    assert!(dir.open_dir_same_mount("a/b").unwrap().is_some());
    assert_eq!(
        fs::read(tmp.path().join("victim/precious")).unwrap(),
        b"keep"
    );
}
