use std::path::{Path, PathBuf};

use super::*;

fn m(container_id: u32, host_id: u32, size: u32) -> IdMap {
    IdMap {
        container_id,
        host_id,
        size,
    }
}

fn set(ranges: &[(u64, u64)]) -> IdSet {
    IdSet::from_ranges(ranges.iter().map(|&(a, b)| a..b))
}

fn available(uids: &[(u64, u64)], gids: &[(u64, u64)]) -> Available {
    Available {
        uids: set(uids),
        gids: set(gids),
        owner: "containers".into(),
        subuid: "/etc/subuid".into(),
        subgid: "/etc/subgid".into(),
        rootless: false,
    }
}

#[test]
fn id_sets_merge_subtract_and_zip() {
    let s = set(&[(10, 20), (20, 25), (5, 7), (30, 40), (35, 36)]);
    assert_eq!(s.ranges(), &[5..7, 10..25, 30..40]);
    assert_eq!(s.len(), 2 + 15 + 10);
    let cut = set(&[(0, 6), (12, 13), (24, 31), (39, 100)]);
    assert_eq!(s.subtract(&cut).ranges(), &[6..7, 10..12, 13..24, 31..39]);
    assert_eq!(
        s.intersect(&cut).ranges(),
        &[5..6, 12..13, 24..25, 30..31, 39..40]
    );
    assert_eq!(s.subtract(&IdSet::default()), s);
    assert!(IdSet::default().subtract(&s).is_empty());
    assert_eq!(s.lowest(4).unwrap().ranges(), &[5..7, 10..12]);
    assert_eq!(s.lowest(27).unwrap(), s);
    assert!(s.lowest(28).is_none());
    let zipped = set(&[(100, 102), (200, 210)]).zip(&set(&[(0, 5), (7, 9)]));
    assert_eq!(zipped, [m(0, 100, 2), m(2, 200, 3), m(7, 203, 2)]);
    assert_eq!(s.to_string(), "5-6, 10-24, 30-39");
    assert_eq!(set(&[(4, 5)]).to_string(), "4");
    assert_eq!(IdSet::default().to_string(), "none");
}

#[test]
fn the_whole_id_space_fits() {
    let s = set(&[(2147483647, 4294967296)]);
    assert_eq!(s.len(), 2147483649);
    let maps = s.lowest(65536).unwrap().zip(&set(&[(0, 65536)]));
    assert_eq!(maps, [m(0, 2147483647, 65536)]);
}

#[test]
fn auto_options_parse_as_podman_does() {
    assert_eq!(AutoUserNs::parse("host").unwrap(), None);
    assert_eq!(AutoUserNs::parse("").unwrap(), None);
    assert_eq!(AutoUserNs::parse("autox").unwrap(), None);
    assert_eq!(
        AutoUserNs::parse("auto").unwrap(),
        Some(AutoUserNs::default())
    );
    let a = AutoUserNs::parse("auto:size=5000,uidmapping=500:2000000:10,gidmapping=0:7:1:1:8:2")
        .unwrap()
        .unwrap();
    assert_eq!(a.size, Some(5000));
    assert_eq!(a.extra_uids, [m(500, 2000000, 10)]);
    assert_eq!(a.extra_gids, [m(0, 7, 1), m(1, 8, 2)]);
    assert_eq!(
        AutoUserNs::parse("auto:uidmapping=1:2:3,uidmapping=9:9:1")
            .unwrap()
            .unwrap()
            .extra_uids,
        [m(1, 2, 3), m(9, 9, 1)]
    );
    assert_eq!(
        AutoUserNs::parse("auto:size=0").unwrap().unwrap().size,
        None
    );
    for (bad, says) in [
        ("auto:", "invalid option \"\""),
        ("auto:size", "invalid option \"size\""),
        ("auto:size=-1", "size=\"-1\" is not a number"),
        ("auto:size=4294967296", "is not a number"),
        ("auto:bogus=1", "unknown option \"bogus\""),
        ("auto:uidmapping=1:2", "uidmapping=1:2"),
        ("auto:size=10,", "invalid option \"\""),
        ("auto:size=+5", "size=\"+5\" is not a number"),
        ("auto:uidmapping=0:4294967295:2", "runs past id 4294967295"),
        ("auto:gidmapping=0:1:5,gidmapping=2:9:1", "overlap"),
    ] {
        let e = crate::error_chain(&AutoUserNs::parse(bad).unwrap_err());
        assert!(e.contains(says), "{bad}: {e}");
        assert!(e.starts_with(&format!("--userns={bad}")), "{bad}: {e}");
    }
}

#[test]
fn initial_size_comes_from_the_user_flag() {
    for (user, size) in [
        ("4000:4001", 4002),
        ("4000", 4001),
        ("app", 0),
        ("app:70", 71),
        ("", 0),
        ("4294967295", u32::MAX),
    ] {
        assert_eq!(AutoUserNs::initial_size_for_user(user), size, "{user}");
    }
}

#[test]
fn image_size_from_layers_and_user_files() {
    let layer = |uids: &[u32], gids: &[u32]| Layer {
        uidset: uids.to_vec(),
        gidset: gids.to_vec(),
        ..Layer::default()
    };
    assert_eq!(
        size_from_layers([&layer(&[0, 1000], &[0]), &layer(&[70000], &[5])]),
        70001
    );
    assert_eq!(size_from_layers([&layer(&[], &[])]), 0);
    assert_eq!(size_from_layers([&layer(&[], &[u32::MAX])]), 0);
    assert_eq!(size_from_layers([&layer(&[u32::MAX - 1], &[])]), u32::MAX);
    let passwd = b"root:x:0:0:root:/root:/bin/sh\n daemon:x:1:1::/:/bin/false \n\
        app:x:1500:1600::/home/app:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n\
        broken:x:notanumber:12\nshort:x\n\nneg:x:-7:-9\n";
    assert_eq!(size_from_user_files(Some(passwd), None), 1601);
    let group =
        b"root:x:0:\napp:x:1500:app\nbigg:x:2500:\nnogroup:x:99999:\nnobody:x:65533:\nx:y:65534:\n";
    assert_eq!(size_from_user_files(None, Some(group)), 2501);
    assert_eq!(size_from_user_files(Some(passwd), Some(group)), 2501);
    // (uid_t)-1 and beyond are no ids: not counted.
    assert_eq!(
        size_from_user_files(Some(b"big:x:99999999999:0\n"), None),
        1
    );
    assert_eq!(size_from_user_files(Some(b"u:x:4294967295:7\n"), None), 8);
    assert_eq!(
        size_from_user_files(Some(b"u:x:4294967294:7\n"), None),
        u32::MAX
    );
    // One line of colons only: nothing is collected per field.
    let colons = vec![b':'; 1 << 20];
    assert_eq!(size_from_user_files(Some(&colons), Some(&colons)), 1);
    assert_eq!(size_from_user_files(Some(b"\xff\xfe:x:77:0\n"), None), 78);
    assert_eq!(size_from_user_files(None, None), 0);
}

fn files(n: u32) -> Option<ImageNeeds> {
    Some(ImageNeeds { files: n, users: 0 })
}

#[test]
fn too_big_says_what_needs_it() {
    let config = AutoUserNsConfig::default();
    let auto = AutoUserNs::default();
    let users = Some(ImageNeeds {
        files: 10,
        users: 70001,
    });
    let e = needed_size(&auto, &config, users).unwrap_err().to_string();
    assert!(
        e.contains("(the container's /etc/passwd or /etc/group names id 70000)"),
        "{e}"
    );
    let user = AutoUserNs {
        initial_size: 70001,
        ..AutoUserNs::default()
    };
    let e = needed_size(&user, &config, None).unwrap_err().to_string();
    assert!(e.contains("(the container's user needs id 70000)"), "{e}");
}

#[test]
fn size_rules() {
    let config = AutoUserNsConfig::default();
    let auto = AutoUserNs::default();
    assert_eq!(needed_size(&auto, &config, None).unwrap(), 1024);
    assert_eq!(needed_size(&auto, &config, files(2501)).unwrap(), 2501);
    assert_eq!(needed_size(&auto, &config, files(65536)).unwrap(), 65536);
    let e = needed_size(&auto, &config, files(70002))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("70002") && e.contains("auto-userns-max-size (65536)"),
        "{e}"
    );
    let sized = AutoUserNs {
        size: Some(100_000),
        ..AutoUserNs::default()
    };
    assert_eq!(needed_size(&sized, &config, files(70002)).unwrap(), 100_000);
    let user = AutoUserNs {
        initial_size: 4002,
        ..AutoUserNs::default()
    };
    assert_eq!(needed_size(&user, &config, files(2501)).unwrap(), 4002);
    let small = AutoUserNsConfig {
        min_size: 0,
        max_size: 0,
        config_file: Some("/etc/containers/storage.conf".into()),
        ..AutoUserNsConfig::default()
    };
    assert_eq!(needed_size(&auto, &small, None).unwrap(), 1);
    assert_eq!(
        needed_size(&auto, &small, files(u32::MAX)).unwrap(),
        u32::MAX
    );
    let limited = AutoUserNsConfig {
        max_size: 60000,
        config_file: Some("/etc/containers/storage.conf".into()),
        ..AutoUserNsConfig::default()
    };
    let e = needed_size(&auto, &limited, files(70002))
        .unwrap_err()
        .to_string();
    assert!(e.contains("in /etc/containers/storage.conf"), "{e}");
}

#[test]
fn allocation_takes_the_lowest_free_ids() {
    let avail = available(&[(300000, 500000)], &[(300000, 500000)]);
    let auto = AutoUserNs::default();
    let first = allocate(70002, &auto, &avail, []).unwrap();
    assert_eq!(first.uids, [m(0, 300000, 70002)]);
    assert_eq!(first.gids, [m(0, 300000, 70002)]);
    let used = [(first.uids.as_slice(), first.gids.as_slice())];
    let second = allocate(2501, &auto, &avail, used).unwrap();
    assert_eq!(second.uids, [m(0, 370002, 2501)]);
    // Maps outside the ranges are in nobody's way; a hole left by a
    // removed container is reused first.
    let outside = [m(0, 600000, 1000)];
    let later = [m(0, 301000, 5000)];
    let used = [
        (outside.as_slice(), outside.as_slice()),
        (later.as_slice(), later.as_slice()),
    ];
    let third = allocate(1500, &auto, &avail, used).unwrap();
    assert_eq!(third.uids, [m(0, 300000, 1000), m(1000, 306000, 500)]);
}

#[test]
fn several_ranges_give_a_non_contiguous_map() {
    // subuid lists the ranges in any order; subgid differs.
    let avail = available(&[(900000, 1000000), (300000, 303000)], &[(400000, 450000)]);
    let auto = AutoUserNs {
        size: Some(2048),
        ..AutoUserNs::default()
    };
    let a = allocate(2048, &auto, &avail, []).unwrap();
    assert_eq!(a.uids, [m(0, 300000, 2048)]);
    let used = [(a.uids.as_slice(), a.gids.as_slice())];
    let b = allocate(2048, &auto, &avail, used).unwrap();
    assert_eq!(b.uids, [m(0, 302048, 952), m(952, 900000, 1096)]);
    assert_eq!(b.gids, [m(0, 402048, 2048)]);
    assert!(!crate::idmap::is_contiguous(&b.uids));
}

#[test]
fn extra_mappings_are_kept_out_of_the_automatic_part() {
    let avail = available(&[(300000, 500000)], &[(300000, 500000)]);
    let auto = AutoUserNs {
        size: Some(3000),
        extra_uids: vec![m(500, 2000000, 10)],
        extra_gids: vec![m(0, 300000, 1)],
        ..AutoUserNs::default()
    };
    let a = allocate(3000, &auto, &avail, []).unwrap();
    assert_eq!(
        a.uids,
        [m(0, 300000, 500), m(510, 300500, 2490), m(500, 2000000, 10)]
    );
    // The extra gid 300000 is in use: the automatic part starts above it.
    assert_eq!(a.gids, [m(1, 300001, 2999), m(0, 300000, 1)]);
}

#[test]
fn exhaustion_says_what_is_used_and_what_is_free() {
    let avail = available(&[(300000, 303000), (900000, 901000)], &[(300000, 400000)]);
    let used_map = [m(0, 300000, 2048), m(0, 900000, 500)];
    let used = [(used_map.as_slice(), used_map.as_slice())];
    let e = allocate(2048, &AutoUserNs::default(), &avail, used).unwrap_err();
    let AutoUserNsError::Exhausted(ref x) = e else {
        panic!("{e:?}");
    };
    let (kind, needed, free, in_use) = (x.kind, x.needed, &x.free, &x.in_use);
    assert_eq!((kind, needed), ("uid", 2048));
    assert_eq!(free.to_string(), "302048-302999, 900500-900999");
    assert_eq!(in_use.to_string(), "300000-302047, 900000-900499");
    let text = e.to_string();
    for part in [
        "needs 2048 uids",
        "only 1452 of the 4000",
        "\"containers\" in /etc/subuid",
        "add a range",
    ] {
        assert!(text.contains(part), "{part}: {text}");
    }
}

#[test]
fn subid_files_combine_lines_of_the_owner() {
    let text = "# comment\nother:1:2\ncontainers:900000:100000\n\n1000:5:5\ncontainers:300000:3000\nbroken line of another\n";
    let path = Path::new("/etc/subuid");
    let owner = Owner {
        name: "containers".into(),
        uid: None,
    };
    assert_eq!(
        subid::parse(text, path, &owner).unwrap().to_string(),
        "300000-302999, 900000-999999"
    );
    let by_uid = Owner {
        name: "alice".into(),
        uid: Some(1000),
    };
    assert_eq!(
        subid::parse(text, path, &by_uid).unwrap().to_string(),
        "5-9"
    );
    for bad in [
        "containers:x:5",
        "containers:1",
        "containers:1:2:3",
        "containers:4294967295:2",
    ] {
        let e = subid::parse(bad, path, &owner).unwrap_err().to_string();
        assert!(e.starts_with("/etc/subuid:1: "), "{e}");
    }
}

#[test]
fn available_ids_name_the_missing_file_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let config = AutoUserNsConfig {
        subuid: write("subuid", "containers:300000:65536\n"),
        subgid: write("subgid", "someone:1:2\n"),
        ..AutoUserNsConfig::default()
    };
    let e = Available::read(&config).unwrap_err().to_string();
    assert!(
        e.contains("no subordinate gids in") && e.contains("subgid"),
        "{e}"
    );
    assert!(e.contains("containers:2147483647:2147483648"), "{e}");
    let missing = AutoUserNsConfig {
        subuid: dir.path().join("nope"),
        ..config.clone()
    };
    assert!(Available::read(&missing)
        .unwrap_err()
        .to_string()
        .contains("no subordinate uids"));
    let rootless = AutoUserNsConfig {
        owner: Owner {
            name: "alice".into(),
            uid: Some(1000),
        },
        rootless: true,
        subuid: write("subuid2", "alice:100000:65536\n1000:300000:100\n"),
        subgid: write("subgid2", "alice:100000:65536\n"),
        ..config
    };
    let a = Available::read(&rootless).unwrap();
    assert_eq!(a.uids.to_string(), "1-65636");
    assert_eq!(a.gids.to_string(), "1-65536");
    let e = allocate(70000, &AutoUserNs::default(), &a, [])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("(as ids of the user's namespace, free: 1-65636"),
        "{e}"
    );
    // The advice for a rootless user is not root's range.
    let none = AutoUserNsConfig {
        subuid: write("subuid3", "bob:1:2\n"),
        ..rootless.clone()
    };
    let e = Available::read(&none).unwrap_err().to_string();
    assert!(e.contains("usermod --add-subuids START-END alice"), "{e}");
    assert!(!e.contains("2147483647"), "{e}");
    // Ranges past the last id are clipped, never wrapped.
    let huge = AutoUserNsConfig {
        subuid: write("subuid4", "alice:0:4294967295\nalice:4294967295:1\n"),
        ..rootless
    };
    let a = Available::read(&huge).unwrap();
    assert_eq!(a.uids.to_string(), "1-4294967295");
    // Free: 100-104 only (the last range ends at the last id).
    let used = [m(0, 1, 99), m(99, 105, 4294967191)];
    let used = [(&used[..], &used[..1])];
    let e = allocate(6, &AutoUserNs::default(), &a, used).unwrap_err();
    assert!(matches!(e, AutoUserNsError::Exhausted(_)), "{e}");
    let maps = allocate(5, &AutoUserNs::default(), &a, used).unwrap();
    assert_eq!(maps.uids, [m(0, 100, 5)]);
}
