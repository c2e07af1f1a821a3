use super::*;

use super::v as V;

#[test]
fn release_strings_with_distribution_suffixes() {
    let cases = [
        ("6.1.0-18-amd64", Some(V(6, 1, 0))),
        ("5.14.0-362.8.1.el9_3.x86_64", Some(V(5, 14, 0))),
        ("6.18.44-fc-v669", Some(V(6, 18, 44))),
        ("5.15.0-91-generic", Some(V(5, 15, 0))),
        ("6.6.8-200.fc39.x86_64", Some(V(6, 6, 8))),
        ("6.8-rc1", Some(V(6, 8, 0))),
        ("4.19.0+", Some(V(4, 19, 0))),
        ("6.10.3-arch1-1\n", Some(V(6, 10, 3))),
        ("garbage", None),
        ("6", None),
    ];
    for (release, expected) in cases {
        assert_eq!(parse_release(release), expected, "{release:?}");
    }
}

#[test]
fn debian_names_its_real_version_in_proc_version() {
    let proc_version = "Linux version 6.1.0-18-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)";
    // The first "Debian " is gcc's; the kernel's comes last.
    assert_eq!(debian_upstream(proc_version), Some(V(6, 1, 76)));
    assert_eq!(
        effective_version("6.1.0-18-amd64", proc_version),
        Some(V(6, 1, 76))
    );
    let other = "Linux version 6.18.44-fc-v669 (builder@sandboxing) (gcc (GCC) 15.3.0) #1 SMP";
    assert_eq!(
        effective_version("6.18.44-fc-v669", other),
        Some(V(6, 18, 44))
    );
}

#[test]
fn backports_count_only_within_their_series() {
    let fuse = known_issues()
        .into_iter()
        .find(|i| i.id == "kernel.fuse-submount")
        .unwrap();
    assert!(!fuse.affects(V(5, 4, 0)));
    assert!(fuse.affects(V(5, 10, 200)));
    assert!(fuse.affects(V(5, 15, 145)));
    assert!(!fuse.affects(V(5, 15, 146)));
    assert!(fuse.affects(V(6, 1, 69)));
    assert!(!fuse.affects(V(6, 1, 70)));
    assert!(fuse.affects(V(6, 6, 7)));
    assert!(!fuse.affects(V(6, 6, 8)));
    assert!(!fuse.affects(V(6, 7, 0)));
}

fn entry(point: &str, fs_type: &str) -> MountEntry {
    MountEntry {
        mount_point: point.into(),
        fs_type: fs_type.into(),
        source: "x".into(),
    }
}

#[test]
fn mountinfo_lines_with_fs_types() {
    let table = b"22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:40 / /run/kata\\040shared rw,nosuid - virtiofs kataShared rw
31 22 0:41 / /mnt/sshfs rw - fuse.sshfs user@host: rw,user_id=0
40 22 0:50 / /tmp/t rw shared:5 master:2 - tmpfs tmpfs rw,size=10g
bad line
";
    let mounts = mountinfo::parse_mounts(table);
    assert_eq!(mounts.len(), 4);
    assert_eq!(mounts[1].mount_point, Path::new("/run/kata shared"));
    assert_eq!(mounts[1].fs_type, "virtiofs");
    assert_eq!(mounts[1].source, "kataShared");
    assert_eq!(mounts[2].fs_type, "fuse.sshfs");
    assert_eq!(mounts[3].fs_type, "tmpfs");
    assert!(is_fuse("virtiofs") && is_fuse("fuse.sshfs") && is_fuse("fuse") && !is_fuse("ext4"));
}

#[test]
fn store_filesystems_from_the_holding_mounts() {
    let mounts = [
        entry("/", "ext4"),
        entry("/run/kata shared", "virtiofs"),
        entry("/var/lib/containers/storage/overlay/abc/merged", "overlay"),
        entry("/tmp/t", "tmpfs"),
    ];
    let fs = store_filesystems(
        &mounts,
        Path::new("/var/lib/containers/storage"),
        Path::new("/run/containers/storage"),
    );
    assert_eq!(
        fs.mounts,
        vec![
            ("/var/lib/containers/storage".into(), "ext4".into()),
            ("/run/containers/storage".into(), "ext4".into()),
            (
                "/var/lib/containers/storage/overlay/abc/merged".into(),
                "overlay".into()
            ),
        ]
    );
    assert!(!fs.on_fuse() && !fs.graphroot_on_tmpfs());
    let kata = store_filesystems(
        &mounts,
        Path::new("/run/kata shared/g"),
        Path::new("/tmp/t/r"),
    );
    assert!(kata.on_fuse());
    let tmp = store_filesystems(&mounts, Path::new("/tmp/t/g"), Path::new("/tmp/t/r"));
    assert!(tmp.graphroot_on_tmpfs() && !tmp.on_fuse());
}

fn status_of(checks: &[Check], id: &str) -> Status {
    checks.iter().find(|c| c.id == id).unwrap().status
}

#[test]
fn version_table_as_warnings() {
    let ext4 = StoreFilesystems {
        mounts: vec![("/g".into(), "ext4".into())],
    };
    let virtiofs = StoreFilesystems {
        mounts: vec![("/g".into(), "virtiofs".into())],
    };
    // Current kernel: nothing to warn about.
    let checks = version_checks("6.18.44-fc-v669", "", &ext4);
    assert!(checks.iter().all(|c| c.status == Status::Ok), "{checks:#?}");
    // Debian 12's 6.1.0-18 is 6.1.76: the FUSE fix is backported.
    let deb = "Linux version 6.1.0-18-amd64 ... Debian 6.1.76-1 (2024-02-01)";
    let checks = version_checks("6.1.0-18-amd64", deb, &virtiofs);
    assert_eq!(status_of(&checks, "kernel.fuse-submount"), Status::Ok);
    assert_eq!(status_of(&checks, "kernel.idmapped-fuse"), Status::Warn);
    // An older 6.1 on virtiofs: the Kata EBADF bug, naming the fixed versions.
    let checks = version_checks("6.1.62", "", &virtiofs);
    let fuse = checks
        .iter()
        .find(|c| c.id == "kernel.fuse-submount")
        .unwrap();
    assert_eq!(fuse.status, Status::Warn);
    assert!(fuse.fix.as_deref().unwrap().contains("6.1.70"));
    assert!(fuse.seen.contains("fixed in 6.7.0"), "{}", fuse.seen);
    // ... but not on ext4.
    let checks = version_checks("6.1.62", "", &ext4);
    assert_eq!(status_of(&checks, "kernel.fuse-submount"), Status::Ok);
    // RHEL 9: 5.14 predates overlay on idmapped lowers.
    let checks = version_checks("5.14.0-362.8.1.el9_3.x86_64", "", &ext4);
    assert_eq!(
        status_of(&checks, "kernel.overlay-idmapped-lowers"),
        Status::Warn
    );
    assert_eq!(status_of(&checks, "kernel.idmapped-mounts"), Status::Ok);
    assert_eq!(
        status_of(&checks, "kernel.overlay-copyup-uid"),
        Status::Warn
    );
    // 6.16: the open_tree_attr window.
    let checks = version_checks("6.16.2-arch1", "", &ext4);
    assert_eq!(status_of(&checks, "kernel.open-tree-attr"), Status::Warn);
    // Unparsable release: one warning, no table.
    let checks = version_checks("???", "", &ext4);
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].status, Status::Warn);
}
