//! Unit tests: `classify` from tables, header parsing, and the stream
//! reader (every byte accounted for, hostile streams refused).

use super::classify::{classify, normalize, raw_base, Action, Meta, RelPath, Skip};
use super::error::DiffError;
use super::header::{self, Header, Timestamp};
use super::stream::{self, ContentSource, TarStream};
use super::{Compression, WhiteoutFormat};

const OVERLAY: WhiteoutFormat = WhiteoutFormat::Overlay { user_xattr: false };

fn rel(s: &str) -> RelPath {
    RelPath(
        s.split('/')
            .filter(|c| !c.is_empty())
            .map(|c| c.as_bytes().to_vec())
            .collect(),
    )
}

fn hdr(typeflag: u8, name: &str) -> Header {
    Header {
        typeflag,
        name: name.as_bytes().to_vec(),
        mode: 0o644,
        uid: 1,
        gid: 2,
        ..Header::default()
    }
}

fn meta() -> Meta {
    Meta {
        uid: 1,
        gid: 2,
        mode: 0o644,
        ..Meta::default()
    }
}

#[test]
fn normalize_table() {
    let ok: &[(&str, Option<&str>)] = &[
        ("etc/passwd", Some("etc/passwd")),
        ("./etc/passwd", Some("etc/passwd")),
        ("/etc/passwd", Some("etc/passwd")),
        ("etc//x/./y/", Some("etc/x/y")),
        ("a/../b", Some("b")),
        ("/../../etc", Some("etc")),
        ("./", None),
        (".", None),
        ("/", None),
        ("a/..", None),
    ];
    for (raw, want) in ok {
        let got = normalize(raw.as_bytes()).unwrap_or_else(|e| panic!("{raw}: {e}"));
        assert_eq!(got, want.map(rel), "{raw}");
    }
    for raw in ["", "..", "../x", "a/../../x", "./../x"] {
        assert!(
            normalize(raw.as_bytes()).is_err(),
            "{raw:?} must be refused"
        );
    }
    assert!(normalize(&vec![b'a'; 4096]).is_err());
    assert!(normalize(&vec![b'a'; 4095]).is_ok());
    assert_eq!(
        normalize(b"caf\xe9/x").unwrap(),
        Some(RelPath(vec![b"caf\xe9".to_vec(), b"x".to_vec()]))
    );
}

#[test]
fn raw_base_like_go_path_base() {
    for (raw, want) in [
        ("a/b", "b"),
        ("a/.wh.b/", ".wh.b"),
        ("b", "b"),
        ("/", ""),
        ("", ""),
    ] {
        assert_eq!(raw_base(raw.as_bytes()), want.as_bytes(), "{raw}");
    }
}

#[test]
fn classify_table() {
    let mut link = hdr(b'1', "bin/sh");
    link.link_name = b"/bin/busybox".to_vec();
    let mut sym = hdr(b'2', "lib");
    sym.link_name = b"../../usr/lib".to_vec();
    let mut dev = hdr(b'3', "dev/null");
    (dev.dev_major, dev.dev_minor) = (1, 3);
    let mut suid = hdr(b'0', "bin/su");
    suid.mode = 0o104755;
    let cases: Vec<(Header, WhiteoutFormat, Action)> = vec![
        (
            hdr(b'0', "./etc/hosts"),
            OVERLAY,
            Action::File {
                path: rel("etc/hosts"),
                meta: meta(),
            },
        ),
        (
            hdr(b'5', "etc/"),
            OVERLAY,
            Action::Dir {
                path: rel("etc"),
                meta: meta(),
            },
        ),
        (hdr(b'5', "./"), OVERLAY, Action::Skip(Skip::Root)),
        (hdr(b'0', "/"), OVERLAY, Action::Skip(Skip::Root)),
        (
            hdr(b'g', "pax_global_header"),
            OVERLAY,
            Action::Skip(Skip::GlobalHeader),
        ),
        (
            link,
            OVERLAY,
            Action::Hardlink {
                path: rel("bin/sh"),
                target: rel("bin/busybox"),
                meta: meta(),
            },
        ),
        // Symlink targets are data: kept as they are, even pointing up.
        (
            sym,
            OVERLAY,
            Action::Symlink {
                path: rel("lib"),
                target: b"../../usr/lib".to_vec(),
                meta: meta(),
            },
        ),
        (
            dev,
            OVERLAY,
            Action::CharDev {
                path: rel("dev/null"),
                major: 1,
                minor: 3,
                meta: meta(),
            },
        ),
        (
            hdr(b'6', "run/fifo"),
            OVERLAY,
            Action::Fifo {
                path: rel("run/fifo"),
                meta: meta(),
            },
        ),
        (
            suid,
            OVERLAY,
            Action::File {
                path: rel("bin/su"),
                meta: Meta {
                    mode: 0o4755,
                    ..meta()
                },
            },
        ),
        (
            hdr(b'0', "etc/.wh.gone"),
            OVERLAY,
            Action::Whiteout {
                path: rel("etc/gone"),
                uid: 1,
                gid: 2,
            },
        ),
        (
            hdr(b'0', ".wh.top"),
            OVERLAY,
            Action::Whiteout {
                path: rel("top"),
                uid: 1,
                gid: 2,
            },
        ),
        (
            hdr(b'0', "d/.wh..wh..opq"),
            OVERLAY,
            Action::Opaque { dir: rel("d") },
        ),
        (
            hdr(b'0', ".wh..wh..opq"),
            OVERLAY,
            Action::Opaque {
                dir: RelPath::default(),
            },
        ),
        (
            hdr(b'0', "etc/.wh.gone"),
            WhiteoutFormat::Aufs,
            Action::File {
                path: rel("etc/.wh.gone"),
                meta: meta(),
            },
        ),
    ];
    for (h, format, want) in cases {
        let got = classify(&h, &format).unwrap_or_else(|e| panic!("{:?}: {e}", h.name));
        assert_eq!(got, want, "{}", String::from_utf8_lossy(&h.name));
    }
}

#[test]
fn classify_keeps_xattrs_but_selinux() {
    let mut h = hdr(b'0', "f");
    h.xattrs = vec![
        (b"security.capability".to_vec(), vec![1, 0, 0, 2]),
        (
            b"security.selinux".to_vec(),
            b"system_u:object_r:bin_t:s0".to_vec(),
        ),
        (b"user.x".to_vec(), b"y".to_vec()),
    ];
    let Action::File { meta, .. } = classify(&h, &OVERLAY).unwrap() else {
        panic!("not a file")
    };
    let names: Vec<&[u8]> = meta.xattrs.iter().map(|(n, _)| n.as_slice()).collect();
    assert_eq!(names, [&b"security.capability"[..], b"user.x"]);
}

#[test]
fn classify_refusals() {
    let mut escaping_link = hdr(b'1', "x");
    escaping_link.link_name = b"../../etc/shadow".to_vec();
    let mut root_link = hdr(b'1', "x");
    root_link.link_name = b"./".to_vec();
    let mut big_uid = hdr(b'0', "x");
    big_uid.uid = 1 << 32;
    let mut neg_dev = hdr(b'4', "x");
    neg_dev.dev_major = -1;
    let mut sparse = hdr(b'0', "x");
    sparse.sparse = true;
    let cases: Vec<(Header, &str)> = vec![
        (hdr(b'0', "../evil"), "InvalidPath"),
        (hdr(b'0', "a/../../evil"), "InvalidPath"),
        (hdr(b'0', ""), "InvalidPath"),
        (hdr(b'0', "a/.wh."), "InvalidPath"),
        (hdr(b'0', "a/.wh.."), "InvalidPath"),
        (escaping_link, "HardlinkTarget"),
        (root_link, "HardlinkTarget"),
        (hdr(b'2', "empty-symlink"), "BadEntry"),
        (big_uid, "BadEntry"),
        (neg_dev, "BadEntry"),
        (sparse, "BadEntry"),
        (hdr(b'S', "sparse"), "UnsupportedType"),
        (hdr(b'7', "contiguous"), "UnsupportedType"),
        (hdr(b'V', "volume"), "UnsupportedType"),
    ];
    for (h, want) in cases {
        let err = classify(&h, &OVERLAY).expect_err(&String::from_utf8_lossy(&h.name));
        assert!(
            format!("{err:?}").starts_with(want),
            "{:?}: {err:?}",
            h.name
        );
        assert!(
            err.to_string().contains(&*String::from_utf8_lossy(&h.name)),
            "{err} names the entry"
        );
    }
}

#[test]
fn header_numbers() {
    let mut h = tar::Header::new_gnu();
    h.set_path("f").unwrap();
    h.set_size(0);
    h.set_mode(0o4755);
    h.set_uid(1 << 40); // base-256
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    let parsed = header::parse_block(h.as_bytes()).unwrap();
    assert_eq!(
        (parsed.uid, parsed.mode, parsed.mtime.sec),
        (1 << 40, 0o4755, 1_700_000_000)
    );
    let mut bad = *h.as_bytes();
    bad[0] ^= 1;
    assert!(header::parse_block(&bad).unwrap_err().contains("checksum"));
}

#[test]
fn pax_records_by_length() {
    // A binary value containing '\n' and '=' must survive.
    let value = b"a\nb=c";
    let mut data = b"31 SCHILY.xattr.user.bin=".to_vec();
    data.extend_from_slice(value);
    data.push(b'\n');
    assert_eq!(data.len(), 31);
    let recs = header::parse_pax(&data).unwrap();
    assert_eq!(
        recs,
        vec![(b"SCHILY.xattr.user.bin".to_vec(), value.to_vec())]
    );
    assert!(header::parse_pax(b"99 path=x\n").is_err());
    assert!(header::parse_pax(b"12 path=\0x\n").is_err());
}

#[test]
fn pax_times() {
    let t = |s: &str| header::parse_pax_time(s.as_bytes());
    assert_eq!(
        t("1700000000.5"),
        Some(Timestamp {
            sec: 1_700_000_000,
            nsec: 500_000_000
        })
    );
    assert_eq!(t("1.0000000019"), Some(Timestamp { sec: 1, nsec: 1 }));
    assert_eq!(
        t("-1.5"),
        Some(Timestamp {
            sec: -2,
            nsec: 500_000_000
        })
    );
    assert_eq!(t("12"), Some(Timestamp::from_secs(12)));
    assert_eq!(t("1.x"), None);
}

#[test]
fn libarchive_xattrs() {
    let mut h = hdr(b'0', "f");
    let ext = header::Extensions {
        pax: vec![
            (b"LIBARCHIVE.xattr.user.a%3Db".to_vec(), b"aGk=".to_vec()),
            (b"LIBARCHIVE.xattr.user.s".to_vec(), b"Ym9vbQ==".to_vec()),
            (b"SCHILY.xattr.user.s".to_vec(), b"schily".to_vec()),
        ],
        ..Default::default()
    };
    header::merge(&mut h, ext).unwrap();
    assert_eq!(
        h.xattrs,
        vec![
            (b"user.s".to_vec(), b"schily".to_vec()),
            (b"user.a=b".to_vec(), b"hi".to_vec())
        ]
    );
}

#[test]
fn compression_magic() {
    assert_eq!(
        stream::detect(&[0x1f, 0x8b, 0x08, 0]).unwrap(),
        Compression::Gzip
    );
    assert_eq!(
        stream::detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]).unwrap(),
        Compression::Zstd
    );
    assert_eq!(stream::detect(b"etc/passwd").unwrap(), Compression::None);
    assert_eq!(stream::detect(b"").unwrap(), Compression::None);
    for (magic, name) in [
        (&b"BZh91AY"[..], "bzip2"),
        (&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00][..], "xz"),
    ] {
        let err = stream::detect(magic).unwrap_err();
        assert!(
            matches!(err, DiffError::UnsupportedCompression { format } if format == name),
            "{err:?}"
        );
        assert!(err.to_string().contains("unsupported compression"));
    }
    assert_eq!(
        (
            Compression::None.as_cs(),
            Compression::Gzip.as_cs(),
            Compression::Zstd.as_cs()
        ),
        (0, 2, 4)
    );
}

/// Everything the stream reader hands out, in order.
#[derive(Default)]
struct Seen {
    names: Vec<Vec<u8>>,
    /// Segments and contents concatenated: must rebuild the input.
    rebuilt: Vec<u8>,
    contents: Vec<Vec<u8>>,
    digest: String,
    size: u64,
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Seen {{ {} entries, {} bytes }}",
            self.names.len(),
            self.size
        )
    }
}

fn read_all(tar: &[u8]) -> Result<Seen, DiffError> {
    let mut s = TarStream::new(tar, true);
    let mut seen = Seen::default();
    while let Some(e) = s.next_entry()? {
        seen.rebuilt.extend_from_slice(&e.raw);
        seen.names.push(e.header.name.clone());
        let mut data = Vec::new();
        let mut content = s.content();
        content.copy_to(&mut |c| {
            data.extend_from_slice(c);
            Ok(())
        })?;
        content.finish()?;
        assert_eq!(data.len() as u64, e.content_len);
        seen.rebuilt.extend_from_slice(&data);
        seen.contents.push(data);
    }
    let mut tail = Vec::new();
    let (digest, size) = s.finish(|seg| {
        tail.extend_from_slice(seg);
        Ok(())
    })?;
    (seen.digest, seen.size) = (digest.expect("hashed"), size);
    seen.rebuilt.extend_from_slice(&tail);
    Ok(seen)
}

fn sample_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(5);
    let long = format!("{}/file", "d".repeat(150));
    b.append_data(&mut h.clone(), &long, &b"hello"[..]).unwrap();
    b.append_pax_extensions([("SCHILY.xattr.user.k", &b"v"[..])])
        .unwrap();
    h.set_size(700);
    b.append_data(&mut h, "pax-file", &[7u8; 700][..]).unwrap();
    b.into_inner().unwrap()
}

#[test]
fn stream_accounts_for_every_byte() {
    let mut tar = sample_tar();
    tar.extend_from_slice(b"trailing garbage after the end blocks");
    let seen = read_all(&tar).unwrap();
    assert_eq!(seen.rebuilt, tar);
    assert_eq!(
        seen.names[0],
        format!("{}/file", "d".repeat(150)).into_bytes()
    );
    assert_eq!(seen.names[1], b"pax-file");
    assert_eq!(seen.contents[1], vec![7u8; 700]);
    assert_eq!(seen.size, tar.len() as u64);
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    sha2::Digest::update(&mut hasher, &tar);
    let hex: String = sha2::Digest::finalize(hasher)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(seen.digest, format!("sha256:{hex}"));
}

#[test]
fn stream_ends_like_go() {
    let tar = sample_tar();
    let body = tar.len() - 1024;
    // One zero block, or none at all, ends the archive too.
    for end in [body, body + 512] {
        let seen = read_all(&tar[..end]).unwrap();
        assert_eq!(seen.names.len(), 2);
        assert_eq!(seen.rebuilt, &tar[..end]);
    }
    assert_eq!(read_all(b"").unwrap().names.len(), 0);
}

#[test]
fn stream_refusals() {
    let tar = sample_tar();
    let truncated_header = &tar[..1024 + 100];
    let truncated_content = &tar[..tar.len() - 1024 - 512 - 300];
    let err = read_all(truncated_header).unwrap_err();
    assert!(matches!(err, DiffError::Truncated { .. }), "{err:?}");
    let err = read_all(truncated_content).unwrap_err();
    assert!(
        matches!(err, DiffError::Truncated { what: "the content", entry: Some(ref e) } if e == "pax-file"),
        "{err:?}"
    );
    assert!(err.to_string().contains("pax-file"));

    let mut bad_sum = tar.clone();
    bad_sum[2048 + 5] ^= 0x20; // inside the PAX header's name
    let err = read_all(&bad_sum).unwrap_err();
    assert!(
        matches!(err, DiffError::BadHeader { reason, .. } if reason.contains("checksum")),
        "{err:?}"
    );

    let garbage = vec![0x42u8; 4096];
    assert!(matches!(
        read_all(&garbage).unwrap_err(),
        DiffError::BadHeader { offset: 0, .. }
    ));

    let mut zero_then_data = tar[..tar.len() - 1024].to_vec();
    zero_then_data.extend_from_slice(&[0u8; 512]);
    zero_then_data.extend_from_slice(&tar[..512]);
    assert!(matches!(
        read_all(&zero_then_data).unwrap_err(),
        DiffError::BadHeader { .. }
    ));
}

#[test]
fn oversized_extension_refused() {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_path("pax").unwrap();
    h.set_size(2 << 20);
    h.set_cksum();
    let mut data = h.as_bytes().to_vec();
    data.resize(512 + (2 << 20), b'x');
    let err = read_all(&data).unwrap_err();
    assert!(
        matches!(err, DiffError::BadHeader { offset: 0, .. }),
        "{err:?}"
    );
}

#[test]
fn global_header_is_an_entry() {
    let mut b = tar::Builder::new(Vec::new());
    let mut g = tar::Header::new_ustar();
    g.set_entry_type(tar::EntryType::XGlobalHeader);
    let rec = b"21 comment=hello pax\n";
    g.set_size(rec.len() as u64);
    b.append_data(&mut g, "pax_global_header", &rec[..])
        .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_size(0);
    b.append_data(&mut h, "f", &b""[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let seen = read_all(&tar).unwrap();
    assert_eq!(seen.names, [&b"pax_global_header"[..], b"f"]);
    assert_eq!(
        seen.contents[0], b"",
        "the records are raw bytes, not content"
    );
    assert_eq!(seen.rebuilt, tar);
}

#[test]
fn hashing_reader_counts() {
    let mut r = stream::Hashing::new(&b"abc"[..], true);
    std::io::copy(&mut r, &mut std::io::sink()).unwrap();
    let (digest, n) = r.finish();
    assert_eq!(n, 3);
    let abc = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    assert_eq!(digest.as_deref(), Some(abc));
    let mut r = stream::Hashing::new(&b"abc"[..], false);
    std::io::copy(&mut r, &mut std::io::sink()).unwrap();
    assert_eq!(r.finish(), (None, 3));
}
