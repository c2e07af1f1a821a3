//! Unit tests of `idmap`.

use super::*;
use IdMapError::*;

const fn m(container_id: u32, host_id: u32, size: u32) -> IdMap {
    IdMap {
        container_id,
        host_id,
        size,
    }
}

/// Parses a map in podman syntax; `""` is the empty (host) map.
fn p(s: &str) -> Vec<IdMap> {
    if s.is_empty() {
        vec![]
    } else {
        parse_id_map(s).unwrap()
    }
}

#[test]
fn json_keys_in_go_order() {
    let json = serde_json::to_string(&m(0, 100000, 65536)).unwrap();
    assert_eq!(json, r#"{"container_id":0,"host_id":100000,"size":65536}"#);
    let back: Vec<IdMap> = serde_json::from_str(&format!("[{json}]")).unwrap();
    assert_eq!(back, vec![m(0, 100000, 65536)]);
}

#[test]
fn parse_good() {
    let cases: &[(&str, &[IdMap])] = &[
        ("0:100000:65536", &[m(0, 100000, 65536)]),
        (
            "0:1000:1:1:100000:65536",
            &[m(0, 1000, 1), m(1, 100000, 65536)],
        ),
        ("4294967295:0:1", &[m(4294967295, 0, 1)]),
        ("007:08:09", &[m(7, 8, 9)]),
        ("0:0:0", &[m(0, 0, 0)]), // syntax only: validate rejects size 0
    ];
    for (text, want) in cases {
        assert_eq!(parse_id_map(text).unwrap(), *want, "{text}");
    }
}

#[test]
fn parse_bad() {
    let cases: &[(&str, usize, &str, &str)] = &[
        ("x:1:1", 1, "x", "not a decimal number"),
        ("0:-1:1", 2, "-1", "negative"),
        ("0:1", 1, "0:1", "incomplete triple"),
        ("0", 1, "0", "incomplete triple"),
        ("0:1:2:3", 4, "3", "incomplete triple"),
        ("0:1:2:", 4, "", "empty field"),
        (":0:1:2", 1, "", "empty field"),
        ("0::1", 2, "", "empty field"),
        ("0:4294967296:1", 2, "4294967296", "larger than"),
        ("+0:1:1", 1, "+0", "not a decimal number"),
        (" 0:1:1", 1, " 0", "not a decimal number"),
        ("-:1:1", 1, "-", "not a decimal number"),
        ("0:1:1,1:2:1", 3, "1,1", "not a decimal number"),
    ];
    for &(input, position, text, reason) in cases {
        let err = parse_id_map(input).unwrap_err();
        let Syntax {
            input: i,
            position: n,
            text: t,
            reason: r,
        } = &err
        else {
            panic!("{input}: {err:?}");
        };
        assert_eq!((i.as_str(), *n, t.as_str()), (input, position, text));
        assert!(r.contains(reason), "{input}: {r}");
        assert!(err.to_string().contains(&format!("{text:?}")), "{err}");
    }
    assert_eq!(parse_id_map(""), Err(Empty));
}

#[test]
fn format_round_trips() {
    for text in [
        "0:100000:65536",
        "0:1000:1:1:100000:65536",
        "4294967295:0:1",
    ] {
        assert_eq!(format_id_map(&p(text)), text);
    }
    assert_eq!(m(1, 2, 3).to_string(), "1:2:3");
    assert_eq!(format_id_map(&[]), "");
    let proc_text = format_proc_map(&p("0:1000:1:1:100000:65536"));
    assert_eq!(proc_text, "0 1000 1\n1 100000 65536\n");
}

#[test]
fn validate_table() {
    let max = u32::MAX;
    let overflow = |extent, side| Err(Overflow { extent, side });
    let overlap = |side, first, second| {
        Err(Overlap {
            side,
            first,
            second,
        })
    };
    let cases = [
        ("", Ok(())),
        ("0:100000:65536", Ok(())),
        ("0:0:4294967295", Ok(())),
        ("1:0:4294967295:0:4294967295:1", Ok(())), // ends exactly at 2^32
        ("0:200000:1000:1000:1000:1:1001:201001:64535", Ok(())),
        (
            "0:1:1:5:1000:0",
            Err(ZeroSize {
                extent: m(5, 1000, 0),
            }),
        ),
        ("4294967295:0:2", overflow(m(max, 0, 2), "container")),
        ("0:2:4294967295", overflow(m(0, 2, max), "host")),
        (
            "0:9:10:20:0:1:9:30:10",
            overlap("container", m(0, 9, 10), m(9, 30, 10)),
        ),
        ("0:5:1:0:6:1", overlap("container", m(0, 5, 1), m(0, 6, 1))),
        (
            "0:100:65536:70000:150:1",
            overlap("host", m(0, 100, 65536), m(70000, 150, 1)),
        ),
        (
            "70000:150:1:0:100:65536",
            overlap("host", m(70000, 150, 1), m(0, 100, 65536)),
        ),
    ];
    for (text, want) in cases {
        assert_eq!(validate(&p(text)), want, "{text}");
    }
}

#[test]
fn extent_count_limit() {
    let maps: Vec<IdMap> = (0..340).map(|i| m(i, 1000 + i, 1)).collect();
    assert!(format_proc_map(&maps).len() < MAX_PROC_MAP_BYTES);
    assert_eq!(validate(&maps), Ok(()));
    let more = [maps, vec![m(340, 1340, 1)]].concat();
    assert_eq!(
        validate(&more),
        Err(TooManyExtents {
            count: 341,
            max: 340
        })
    );
}

#[test]
fn page_limit_with_long_host_ids() {
    // 170 lines of 24 bytes ("1000000000 3000000000 1\n") = 4080 bytes.
    let base: Vec<IdMap> = (0..170)
        .map(|i| m(1_000_000_000 + i, 3_000_000_000 + i, 1))
        .collect();
    assert_eq!(format_proc_map(&base).len(), 4080);
    let fits = [base.clone(), vec![m(0, 2_000_000_000, 1)]].concat(); // + 15 bytes
    assert_eq!(format_proc_map(&fits).len(), 4095);
    assert_eq!(validate(&fits), Ok(()));
    let too_long = [base, vec![m(10, 2_000_000_000, 1)]].concat(); // + 16 bytes
    assert_eq!(
        validate(&too_long),
        Err(TooLong {
            bytes: 4096,
            max: 4096
        })
    );
}

#[test]
fn error_messages() {
    let overlap = validate(&p("0:100000:65536:70000:100500:1")).unwrap_err();
    let want = "uid/gid map extents 0:100000:65536 and 70000:100500:1 overlap on the host side";
    assert_eq!(overlap.to_string(), want);
    let err = parse_id_map("0:x:1").unwrap_err().to_string();
    assert_eq!(
        err,
        r#"invalid uid/gid map "0:x:1": field 2 "x": not a decimal number"#
    );
    let unmapped = root_pair(&[], &p("1:1:5")).unwrap_err().to_string();
    assert_eq!(unmapped, "container gid 0 is not mapped to any host gid");
}

#[test]
fn translate_edges() {
    let maps = p("0:100000:1000:1000:5000:1:4294967290:0:6");
    let max = u32::MAX;
    let to_host_cases = [
        (0, Some(100000)),
        (999, Some(100999)),
        (1000, Some(5000)),
        (1001, None),
    ];
    for (id, want) in
        to_host_cases
            .into_iter()
            .chain([(max - 6, None), (max - 5, Some(0)), (max, Some(5))])
    {
        assert_eq!(to_host(id, &maps), want, "to_host({id})");
    }
    let to_container_cases = [
        (100000, Some(0)),
        (100999, Some(999)),
        (99999, None),
        (101000, None),
    ];
    for (id, want) in
        to_container_cases
            .into_iter()
            .chain([(5000, Some(1000)), (5, Some(max)), (6, None)])
    {
        assert_eq!(to_container(id, &maps), want, "to_container({id})");
    }
    assert_eq!(to_host(123, &[]), Some(123));
    assert_eq!(to_container(max, &[]), Some(max));
    // First extent wins (unvalidated overlap); an overflowing target never matches.
    assert_eq!(to_host(1, &p("0:10:5:0:20:5")), Some(11));
    assert_eq!(to_host(1, &p("0:4294967295:2")), None);
}

#[test]
fn root_pairs() {
    let range = "0:100000:65536";
    let cases = [
        ("", "", Ok((0, 0))),
        (range, range, Ok((100000, 100000))),
        ("5:1000:1", range, Ok((1000, 100000))), // single size-1 extent: any container id
        ("1:1:5:0:1000:1", "", Ok((1000, 0))),
        ("1:1000:2", "", Err(Unmapped { kind: "uid", id: 0 })),
        (range, "1:1:5", Err(Unmapped { kind: "gid", id: 0 })),
    ];
    for (uids, gids, want) in cases {
        assert_eq!(root_pair(&p(uids), &p(gids)), want, "{uids} / {gids}");
    }
}

#[test]
fn to_host_overflow_keeps_go_quirk() {
    let maps = |uids, gids| IdMappings {
        uids: p(uids),
        gids: p(gids),
    };
    let range = maps("0:100000:65536", "0:100000:65536");
    let split = maps("0:1000:1:1:100000:65536", "0:1000:1:1:100000:65536");
    let no_root = maps("1:100:10", "0:500:10");
    let cases = [
        (&range, (0, 0), (100000, 100000)),
        (&range, (1000, 5), (101000, 100005)),
        (&range, (70000, 70000), (65534, 65533)),
        // Quirk: unmapped container id equal to the host root id stays as is.
        (&range, (100000, 100000), (100000, 100000)),
        // Quirk: mapped id 1000 (really 100999) becomes the host root 1000.
        (&split, (1000, 1000), (1000, 1000)),
        (&split, (2, 3), (100001, 100002)),
        // No root pair: translate everything.
        (&no_root, (0, 0), (65534, 500)),
        (&no_root, (1, 9), (100, 509)),
        (&IdMappings::default(), (7, 8), (7, 8)),
    ];
    for (maps, pair, want) in cases {
        let got = to_host_overflow(pair, maps, (65534, 65533));
        assert_eq!(got, want, "{pair:?}");
    }
}

#[test]
fn overflow_ids_from_proc() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let cases = [
        (file("good", "1234\n"), 1234),
        (file("bad", "nobody\n"), DEFAULT_OVERFLOW_ID),
        (dir.path().join("missing"), DEFAULT_OVERFLOW_ID),
    ];
    for (path, want) in cases {
        assert_eq!(read_overflow(&path), want, "{}", path.display());
    }
    let proc = |name| read_overflow(&Path::new("/proc/sys/kernel").join(name));
    assert_eq!(
        (overflow_uid(), overflow_gid()),
        (proc("overflowuid"), proc("overflowgid"))
    );
}

#[test]
fn contiguity() {
    let cases = [
        ("", true),
        ("0:0:0", true), // fewer than two extents: no check at all
        ("0:100000:1000:1000:101000:64536", true),
        ("1000:101000:64536:0:100000:1000", true), // unsorted
        ("0:110:10:10:100:10", true),              // host and container orders differ
        ("0:100:10:20:110:10", false),             // container gap
        ("0:100:10:10:200:10", false),             // host gap
        ("0:110:10:30:100:10", false),
        ("0:200000:1000:1000:1000:1:1001:201001:64535", false),
    ];
    for (text, want) in cases {
        let maps = p(text);
        assert_eq!(is_contiguous(&maps), want, "{text}");
        assert_eq!(maps, p(text), "input reordered: {text}");
    }
}

#[test]
fn containers_storage_order_matches_v1_43() {
    let observed = "0:200000:1000:1000:1000:1:1001:201001:64535";
    let crossed = "0:110:10:30:100:10";
    let both = "10:100:10:0:110:10";
    let cases = [
        // Observed store: uid fails on host side, left sorted by host id; gid untouched.
        (
            observed,
            observed,
            "1000:1000:1:0:200000:1000:1001:201001:64535",
            observed,
        ),
        // uid fails on container side, left sorted by container id; gid untouched.
        ("30:100:10:0:110:10", crossed, crossed, crossed),
        // Contiguous uid ends sorted by container id; gid fails on host side.
        (
            "1000:101000:64536:0:100000:1000",
            "0:100:10:20:300:10:10:200:10",
            "0:100000:1000:1000:101000:64536",
            "0:100:10:10:200:10:20:300:10",
        ),
        // Single-extent uid; gid fails on container side.
        ("0:5:1", "30:100:10:0:110:10", "0:5:1", crossed),
        // Host uid mapping; gid fails on host side.
        ("", "20:300:10:0:100:10", "", "0:100:10:20:300:10"),
        // Both contiguous, both sorted by container id.
        (both, both, "0:110:10:10:100:10", "0:110:10:10:100:10"),
    ];
    for (uids, gids, want_uids, want_gids) in cases {
        let got = containers_storage_order(&p(uids), &p(gids));
        assert_eq!(got, (p(want_uids), p(want_gids)), "{uids} / {gids}");
    }
}
