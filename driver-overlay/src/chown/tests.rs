//! Chown-by-maps on real temp trees. Real `chown` needs root, so these are
//! privileged tests (`--run-ignored all`).

use std::fs;
use std::os::unix::fs::{lchown, symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use layerstore::idmap::IdMappings;
use layerstore_test_support::require_privileged;

use super::*;

const NONCONTIG: &str = "0:200000:1000:1000:1000:1:1001:201001:64535";

fn maps(to_container: &str, to_host: &str) -> ChownMaps {
    ChownMaps {
        to_container: IdMappings::parse_same(to_container).unwrap(),
        to_host: IdMappings::parse_same(to_host).unwrap(),
        overflow: (65534, 65534),
    }
}

fn owner(p: &Path) -> (u32, u32) {
    let m = fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid())
}

fn file(root: &Path, rel: &str, ids: (u32, u32), mode: u32) -> std::path::PathBuf {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, rel).unwrap();
    lchown(&p, Some(ids.0), Some(ids.1)).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    p
}

fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 1024];
    let n = rustix::fs::lgetxattr(p, name, &mut buf[..]).ok()?;
    buf.truncate(n);
    Some(buf)
}

fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(p, name, value, rustix::fs::XattrFlags::empty()).unwrap();
}

fn tree() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("chown-test-")
        .tempdir()
        .unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[test]
#[ignore = "privileged: real chown needs root"]
fn owners_root_skipped_symlinks_not_followed() {
    require_privileged(&[]);
    let dir = tree();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    let outside = file(dir.path(), "outside", (0, 0), 0o644);
    file(&root, "etc/hostname", (0, 0), 0o644);
    file(&root, "home/user/hello", (1000, 1000), 0o644);
    file(&root, "opt/f", (1001, 5), 0o600);
    lchown(root.join("home/user"), Some(1000), Some(1000)).unwrap();
    symlink(&outside, root.join("escape")).unwrap();
    symlink("/", root.join("slash")).unwrap();
    lchown(root.join("slash"), Some(1001), Some(1001)).unwrap();

    let report = chown_by_maps(&root, &maps("", NONCONTIG)).unwrap();
    assert_eq!(owner(&root), (0, 0), "the root keeps its owner");
    assert_eq!(owner(&root.join("etc")), (200000, 200000));
    assert_eq!(owner(&root.join("etc/hostname")), (200000, 200000));
    assert_eq!(owner(&root.join("home/user")), (1000, 1000));
    assert_eq!(owner(&root.join("home/user/hello")), (1000, 1000));
    assert_eq!(owner(&root.join("opt/f")), (201001, 200005));
    assert_eq!(owner(&root.join("escape")), (200000, 200000));
    assert_eq!(owner(&root.join("slash")), (201001, 201001));
    assert_eq!(owner(&outside), (0, 0), "symlink target outside untouched");
    assert_eq!(owner(Path::new("/")), (0, 0));
    assert_eq!(report.entries, 9);
    // home/user and its file keep 1000:1000.
    assert_eq!(report.changed, 7);
}

#[test]
#[ignore = "privileged: real chown needs root"]
fn hard_links_stay_linked() {
    require_privileged(&[]);
    let dir = tree();
    let a = file(dir.path(), "a/first", (7, 7), 0o644);
    for other in ["a/second", "b/third", "c/d/fourth"] {
        fs::create_dir_all(dir.path().join(other).parent().unwrap()).unwrap();
        fs::hard_link(&a, dir.path().join(other)).unwrap();
    }
    let ino = fs::metadata(&a).unwrap().ino();
    let report = chown_by_maps(dir.path(), &maps("", "0:100000:65536")).unwrap();
    for p in ["a/first", "a/second", "b/third", "c/d/fourth"] {
        let m = fs::metadata(dir.path().join(p)).unwrap();
        assert_eq!((m.ino(), m.nlink()), (ino, 4), "{p}");
        assert_eq!((m.uid(), m.gid()), (100007, 100007), "{p}");
    }
    assert!(!dir.path().join("a/.layerstore-chown-relink").exists());
    assert_eq!(report.entries, 8);
}

#[test]
#[ignore = "privileged: real chown needs root"]
fn setuid_and_setgid_restored() {
    require_privileged(&[]);
    let dir = tree();
    let suid = file(dir.path(), "suid", (0, 0), 0o4755);
    let sgid = file(dir.path(), "sgid", (0, 1000), 0o2755);
    let both = file(dir.path(), "both", (5, 6), 0o6711);
    chown_by_maps(dir.path(), &maps("", "0:100000:65536")).unwrap();
    let mode = |p: &Path| fs::symlink_metadata(p).unwrap().mode() & 0o7777;
    assert_eq!((mode(&suid), owner(&suid)), (0o4755, (100000, 100000)));
    assert_eq!((mode(&sgid), owner(&sgid)), (0o2755, (100000, 101000)));
    assert_eq!((mode(&both), owner(&both)), (0o6711, (100005, 100006)));
}

fn cap(revision: u32, rootid: Option<u32>) -> Vec<u8> {
    // CAP_NET_BIND_SERVICE (10) permitted, effective flag set.
    let mut v = (revision | 1).to_le_bytes().to_vec();
    v.extend_from_slice(&[0x00, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    if let Some(r) = rootid {
        v.extend_from_slice(&r.to_le_bytes());
    }
    v
}

#[test]
#[ignore = "privileged: real chown and security.capability need root"]
fn capabilities_restored_and_v3_rootid_mapped() {
    require_privileged(&[]);
    let dir = tree();
    let v2 = file(dir.path(), "v2", (0, 0), 0o755);
    set_xattr(&v2, "security.capability", &cap(0x0200_0000, None));
    let v3 = file(dir.path(), "v3", (100000, 100000), 0o755);
    set_xattr(&v3, "security.capability", &cap(0x0300_0000, Some(100000)));
    let setuid_cap = file(dir.path(), "both", (100000, 100000), 0o4755);
    set_xattr(
        &setuid_cap,
        "security.capability",
        &cap(0x0300_0000, Some(100000)),
    );

    // template mapped 0:100000 -> new map 0:200000
    let m = maps("0:100000:65536", "0:200000:65536");
    // v2 file owned 0:0 is tolerated (0:0 rule), becomes 200000.
    chown_by_maps(dir.path(), &m).unwrap();
    assert_eq!(owner(&v2), (200000, 200000));
    assert_eq!(
        xattr(&v2, "security.capability"),
        Some(cap(0x0200_0000, None))
    );
    assert_eq!(owner(&v3), (200000, 200000));
    assert_eq!(
        xattr(&v3, "security.capability"),
        Some(cap(0x0300_0000, Some(200000))),
        "v3 rootid follows the mapping"
    );
    assert_eq!(
        fs::symlink_metadata(&setuid_cap).unwrap().mode() & 0o7777,
        0o4755
    );
    assert_eq!(
        xattr(&setuid_cap, "security.capability"),
        Some(cap(0x0300_0000, Some(200000)))
    );
}

fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

#[test]
#[ignore = "privileged: real chown needs root"]
fn posix_acls_mapped() {
    require_privileged(&[]);
    let dir = tree();
    let u = u32::MAX;
    let f = file(dir.path(), "d/f", (0, 0), 0o640);
    set_xattr(
        &f,
        "system.posix_acl_access",
        &acl(&[
            (1, 6, u),
            (2, 6, 1001),
            (4, 4, u),
            (8, 4, 42),
            (16, 6, u),
            (32, 0, u),
        ]),
    );
    let d = dir.path().join("d");
    set_xattr(
        &d,
        "system.posix_acl_default",
        &acl(&[(1, 7, u), (2, 7, 1000), (4, 5, u), (16, 7, u), (32, 5, u)]),
    );
    let mode_before = fs::metadata(&f).unwrap().mode();
    chown_by_maps(dir.path(), &maps("", NONCONTIG)).unwrap();
    assert_eq!(owner(&f), (200000, 200000));
    assert_eq!(
        xattr(&f, "system.posix_acl_access"),
        Some(acl(&[
            (1, 6, u),
            (2, 6, 201001),
            (4, 4, u),
            (8, 4, 200042),
            (16, 6, u),
            (32, 0, u)
        ]))
    );
    assert_eq!(
        xattr(&d, "system.posix_acl_default"),
        Some(acl(&[
            (1, 7, u),
            (2, 7, 1000),
            (4, 5, u),
            (16, 7, u),
            (32, 5, u)
        ]))
    );
    // The mask entry (rw) set the group bits when the ACL was written.
    assert_eq!(fs::metadata(&f).unwrap().mode(), mode_before);
}

#[test]
#[ignore = "privileged: real chown needs root"]
fn unmappable_container_ids_overflow() {
    require_privileged(&[]);
    let dir = tree();
    let f = file(dir.path(), "f", (5000, 20), 0o644);
    chown_by_maps(dir.path(), &maps("", "0:100000:1000")).unwrap();
    assert_eq!(owner(&f), (65534, 100020));
}

#[test]
#[ignore = "privileged: real chown needs root"]
fn to_container_tolerates_0_0_and_rejects_the_rest() {
    require_privileged(&[]);
    let dir = tree();
    let zero = file(dir.path(), "zero", (0, 0), 0o644);
    let mapped = file(dir.path(), "mapped", (100001, 100001), 0o644);
    chown_by_maps(dir.path(), &maps("0:100000:65536", "0:300000:65536")).unwrap();
    assert_eq!(owner(&zero), (300000, 300000));
    assert_eq!(owner(&mapped), (300001, 300001));

    let bad = file(dir.path(), "sub/bad", (0, 5), 0o644);
    let err = chown_by_maps(dir.path(), &maps("0:300000:65536", "0:400000:65536")).unwrap_err();
    match &err {
        ChownError::UnmappedOwner { path, uid, gid } => {
            assert_eq!((path.as_path(), *uid, *gid), (Path::new("sub/bad"), 0, 5))
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("sub/bad"), "{err}");
    assert_eq!(owner(&bad), (0, 5));
}

#[test]
#[ignore = "privileged: real chown needs root"]
fn wide_and_deep_trees_with_few_workers() {
    require_privileged(&[]);
    let dir = tree();
    // 300 directories (more than the queue holds), each with 3 files, and
    // one chain 200 levels deep.
    for i in 0..300 {
        for j in 0..3 {
            file(dir.path(), &format!("w{i}/f{j}"), (1, 1), 0o644);
        }
    }
    let mut deep = dir.path().to_path_buf();
    for i in 0..200 {
        deep.push(format!("{i}"));
    }
    fs::create_dir_all(&deep).unwrap();
    for workers in [1, 3] {
        let m = if workers == 1 {
            maps("", "0:100000:65536")
        } else {
            maps("0:100000:65536", "0:200000:65536")
        };
        let fd = rustix::fs::openat(
            rustix::fs::CWD,
            dir.path(),
            rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        let report = chown_by_maps_fd(fd, dir.path(), &m, workers).unwrap();
        // to_container of the dirs made by create_dir_all (0:0) is tolerated
        assert_eq!(report.entries, 300 * 4 + 200);
        assert_eq!(report.changed, 300 * 4 + 200);
    }
    assert_eq!(owner(&dir.path().join("w299/f2")), (200001, 200001));
    assert_eq!(owner(&deep), (200000, 200000));
}
