//! `ocidiff::apply_layer` on well-formed layers: what lands in `diff`
//! (owners, modes, times, xattrs, links, devices, whiteouts, opaque
//! directories, odd names), the digests and sizes for every compression,
//! the tar-split that rebuilds the exact tar, and the same result as
//! containers-storage (v1.43) applying the same blob.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use layerstore_overlay::ocidiff::{
    apply_layer, ApplyOptions, Compression, DiffReport, WhiteoutFormat,
};
use layerstore_overlay::tarsplit::{self, TarSplitWriter};
use layerstore_test_support::{require_privileged, run_ok, PodmanStore};

const OVERLAY: WhiteoutFormat = WhiteoutFormat::Overlay { user_xattr: false };
const T: u64 = 1_700_000_000;
/// A v2 `security.capability` granting CAP_NET_BIND_SERVICE, effective.
const CAP: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

fn long_name(n: usize) -> String {
    format!("long/{}", "n".repeat(n - 5))
}

/// Builds tars entry by entry with raw names and explicit metadata.
struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    fn new() -> Tar {
        Tar(tar::Builder::new(Vec::new()))
    }

    fn add(
        &mut self,
        kind: tar::EntryType,
        name: &[u8],
        mode: u32,
        owner: (u64, u64),
        link: &[u8],
        data: &[u8],
    ) -> &mut Tar {
        self.add_dev(kind, name, mode, owner, link, data, (0, 0))
    }

    #[allow(clippy::too_many_arguments)]
    fn add_dev(
        &mut self,
        kind: tar::EntryType,
        name: &[u8],
        mode: u32,
        owner: (u64, u64),
        link: &[u8],
        data: &[u8],
        dev: (u32, u32),
    ) -> &mut Tar {
        let mut h = tar::Header::new_gnu();
        h.set_device_major(dev.0).unwrap();
        h.set_device_minor(dev.1).unwrap();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(owner.0);
        h.set_gid(owner.1);
        h.set_mtime(T);
        h.set_size(data.len() as u64);
        if !link.is_empty() {
            h.set_link_name_literal(link).expect("short link name");
        }
        if name.len() <= 100 {
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            h.set_cksum();
            self.0.append(&h, data).expect("append");
        } else {
            // GNU `L` long-name entry.
            self.0
                .append_data(&mut h, OsStr::from_bytes(name), data)
                .expect("append long");
        }
        self
    }

    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Tar {
        self.0
            .append_pax_extensions(records.iter().map(|(k, v)| (*k, *v)))
            .expect("pax");
        self
    }

    fn bytes(&mut self) -> Vec<u8> {
        std::mem::replace(&mut self.0, tar::Builder::new(Vec::new()))
            .into_inner()
            .expect("tar")
    }
}

/// Every kind of entry a layer can hold.
fn rich_tar() -> Vec<u8> {
    use tar::EntryType::*;
    let mut t = Tar::new();
    t.add(Directory, b"./", 0o700, (1234, 1234), b"", b"") // the root: ignored, but in uidset
        .add(Directory, b"etc/", 0o755, (0, 0), b"", b"")
        .pax(&[("mtime", b"1700000000.123456789")])
        .add(Regular, b"etc/hostname", 0o644, (0, 0), b"", b"box\n")
        .add(Regular, b"etc/.wh.gone", 0o644, (77, 77), b"", b"")
        .add(Directory, b"bin/", 0o755, (0, 0), b"", b"")
        .pax(&[
            ("SCHILY.xattr.security.capability", &CAP),
            ("SCHILY.xattr.user.note", b"hi"),
        ])
        .add(Regular, b"bin/su", 0o4755, (0, 0), b"", b"#!/bin/true\n")
        .add(Symlink, b"bin/sh", 0o777, (0, 0), b"su", b"")
        .add(Link, b"bin/su-hard", 0o4755, (0, 0), b"bin/su", b"")
        .add(Directory, b"home/user/", 0o700, (1000, 1000), b"", b"")
        .add(
            Regular,
            b"home/user/file",
            0o600,
            (1000, 1000),
            b"",
            b"secret",
        )
        .add(Directory, b"shared/", 0o2775, (0, 100), b"", b"")
        .add_dev(Char, b"dev/null", 0o666, (0, 0), b"", b"", (1, 3))
        .add_dev(Block, b"dev/sda", 0o660, (0, 6), b"", b"", (8, 0))
        .add(Fifo, b"run/fifo", 0o600, (0, 0), b"", b"")
        .add(Directory, b"opt/", 0o755, (0, 0), b"", b"")
        .add(Regular, b"opt/.wh..wh..opq", 0o644, (0, 0), b"", b"")
        .add(Regular, b"caf\xe9", 0o644, (0, 0), b"", b"latin-1 name")
        .add(
            Regular,
            long_name(150).as_bytes(),
            0o644,
            (0, 0),
            b"",
            b"gnu long name",
        )
        .pax(&[("path", long_name(230).as_bytes())])
        .add(
            Regular,
            b"pax-short-name",
            0o644,
            (0, 0),
            b"",
            b"pax long name",
        )
        .pax(&[("linkpath", "t".repeat(300).as_bytes())])
        .add(Symlink, b"long/link", 0o777, (0, 0), b"x", b"");
    t.bytes()
}

/// Replacements, whiteouts below whiteouts, a global header, links to
/// symlinks, xattrs on objects that cannot be opened, odd times and ids.
fn edge_tar() -> Vec<u8> {
    use tar::EntryType::*;
    let mut t = Tar::new();
    t.0.append_pax_extensions([("comment", &b"made by a test"[..])])
        .unwrap();
    let mut tar = t.bytes();
    // Turn that `x` header into a global `g` one.
    tar[156] = b'g';
    let h = tar::Header::from_byte_slice(&tar[..512]).clone();
    let mut h = h;
    h.set_cksum();
    tar[..512].copy_from_slice(h.as_bytes());
    tar.truncate(tar.len() - 1024);
    let mut t = Tar::new();
    t.add(Regular, b"a", 0o644, (0, 0), b"", b"first")
        .add(Regular, b"/a", 0o640, (0, 0), b"", b"second")
        .add(Directory, b"d/", 0o755, (0, 0), b"", b"")
        .add(Regular, b"d/x", 0o644, (0, 0), b"", b"x")
        .add(Regular, b"/d", 0o600, (0, 0), b"", b"d is a file now")
        .add(Regular, b".wh.foo", 0o644, (0, 0), b"", b"")
        .add(Regular, b"foo/.wh.bar", 0o644, (0, 0), b"", b"")
        .pax(&[("SCHILY.xattr.trusted.link", b"on a symlink")])
        .add(Symlink, b"s", 0o777, (5, 5), b"a", b"")
        .add(Link, b"hs", 0o777, (6, 6), b"s", b"")
        .pax(&[("SCHILY.xattr.trusted.dev", b"on a device")])
        .add_dev(Char, b"zero", 0o666, (0, 0), b"", b"", (1, 5))
        .pax(&[
            ("uid", b"3000000"),
            ("atime", b"1800000000.5"),
            ("mtime", b"-100"),
        ])
        .add(Regular, b"ancient", 0o644, (0, 0), b"", b"old")
        .pax(&[("atime", b"1600000000")])
        .add(Regular, b"early-atime", 0o644, (0, 0), b"", b"x")
        .add(Regular, b"legacy-dir/", 0o755, (0, 0), b"", b"");
    let mut rest = t.bytes();
    // A V7-style `\0` type: a directory by its trailing slash.
    let at = rest.len() - 1024 - 512;
    rest[at + 156] = 0;
    let mut h = tar::Header::from_byte_slice(&rest[at..at + 512]).clone();
    h.set_cksum();
    rest[at..at + 512].copy_from_slice(h.as_bytes());
    tar.extend_from_slice(&rest);
    tar
}

fn apply(blob: &[u8], diff: &Path, whiteout: WhiteoutFormat) -> (DiffReport, Vec<u8>) {
    let mut split = TarSplitWriter::new(Vec::new());
    let opts = ApplyOptions {
        whiteout,
        ignore_chown_errors: false,
    };
    let report = apply_layer(blob, diff, &mut split, &opts).expect("apply_layer");
    (report, split.finish().expect("tar-split"))
}

fn new_diff(tmp: &Path, name: &str) -> PathBuf {
    let diff = tmp.join(name);
    fs::create_dir(&diff).unwrap();
    diff
}

fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    rustix::fs::lgetxattr(p, name, &mut buf)
        .ok()
        .map(|n| buf[..n].to_vec())
}

fn mtime(p: &Path) -> (i64, i64) {
    let m = fs::symlink_metadata(p).unwrap();
    (m.mtime(), m.mtime_nsec())
}

#[test]
#[ignore = "privileged: needs root"]
fn rich_layer_overlay() {
    require_privileged(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let diff = new_diff(tmp.path(), "diff");
    fs::set_permissions(&diff, fs::Permissions::from_mode(0o751)).unwrap();
    let tar = rich_tar();
    let (report, _) = apply(&tar, &diff, OVERLAY);
    let md = |p: &str| fs::symlink_metadata(diff.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let owner_mode = |p: &str| {
        let m = md(p);
        (m.uid(), m.gid(), m.mode() & 0o7777)
    };

    assert_eq!(owner_mode("etc"), (0, 0, 0o755));
    assert_eq!(fs::read(diff.join("etc/hostname")).unwrap(), b"box\n");
    assert_eq!(mtime(&diff.join("etc/hostname")), (T as i64, 123_456_789));
    // Directory times are set after their children are written.
    assert_eq!(mtime(&diff.join("etc")), (T as i64, 0));
    assert_eq!(mtime(&diff.join("bin")), (T as i64, 0));

    // Whiteout: c--------- 0,0, owned by the header's ids.
    let wh = md("etc/gone");
    assert!(wh.file_type().is_char_device());
    assert_eq!(
        (wh.rdev(), wh.mode(), wh.uid(), wh.gid()),
        (0, 0o020000, 77, 77)
    );
    assert!(!diff.join("etc/.wh.gone").exists());

    assert_eq!(
        owner_mode("bin/su"),
        (0, 0, 0o4755),
        "setuid survives the chown"
    );
    assert_eq!(
        xattr(&diff.join("bin/su"), "security.capability").as_deref(),
        Some(&CAP[..])
    );
    assert_eq!(
        xattr(&diff.join("bin/su"), "user.note").as_deref(),
        Some(&b"hi"[..])
    );
    assert_eq!(md("bin/su-hard").ino(), md("bin/su").ino());
    assert_eq!(md("bin/su").nlink(), 2);
    assert_eq!(fs::read_link(diff.join("bin/sh")).unwrap(), Path::new("su"));

    assert_eq!(owner_mode("home/user"), (1000, 1000, 0o700));
    assert_eq!(owner_mode("home/user/file"), (1000, 1000, 0o600));
    assert_eq!(owner_mode("shared"), (0, 100, 0o2775));
    // Missing parents are made like containers/storage does: 0755, root.
    assert_eq!(owner_mode("home"), (0, 0, 0o755));
    assert_eq!(owner_mode("dev"), (0, 0, 0o755));

    assert!(md("dev/null").file_type().is_char_device());
    assert_eq!(
        (md("dev/null").rdev(), owner_mode("dev/null")),
        (rustix::fs::makedev(1, 3), (0, 0, 0o666))
    );
    assert!(md("dev/sda").file_type().is_block_device());
    assert_eq!(
        (md("dev/sda").rdev(), owner_mode("dev/sda")),
        (rustix::fs::makedev(8, 0), (0, 6, 0o660))
    );
    assert!(md("run/fifo").file_type().is_fifo());

    assert_eq!(
        xattr(&diff.join("opt"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(!diff.join("opt/.wh..wh..opq").exists());

    assert_eq!(
        fs::read(diff.join(OsStr::from_bytes(b"caf\xe9"))).unwrap(),
        b"latin-1 name"
    );
    assert_eq!(
        fs::read(diff.join(long_name(150))).unwrap(),
        b"gnu long name"
    );
    assert_eq!(
        fs::read(diff.join(long_name(230))).unwrap(),
        b"pax long name"
    );
    assert_eq!(
        fs::read_link(diff.join("long/link")).unwrap(),
        Path::new(&"t".repeat(300))
    );

    // The root entry is ignored (containers/storage skips "."), but its
    // ids count, like every header but the `.wh.` ones.
    assert_eq!(fs::metadata(&diff).unwrap().mode() & 0o7777, 0o751);
    assert_eq!(report.uidset, [0, 1000, 1234]);
    assert_eq!(report.gidset, [0, 6, 100, 1000, 1234]);
    assert_eq!(report.entries, 20);
    assert_eq!(report.compression, Compression::None);
    assert_eq!(
        (report.diff_size, report.compressed_size),
        (tar.len() as i64, tar.len() as i64)
    );
    assert_eq!(report.diff_digest, report.compressed_digest);
}

#[test]
#[ignore = "privileged: needs root"]
fn rich_layer_aufs() {
    require_privileged(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let diff = new_diff(tmp.path(), "diff");
    apply(&rich_tar(), &diff, WhiteoutFormat::Aufs);
    let wh = fs::symlink_metadata(diff.join("etc/.wh.gone")).unwrap();
    assert!(wh.is_file());
    assert_eq!((wh.uid(), wh.mode() & 0o7777), (77, 0o644));
    assert!(fs::symlink_metadata(diff.join("etc/gone")).is_err());
    assert!(diff.join("opt/.wh..wh..opq").is_file());
    assert_eq!(xattr(&diff.join("opt"), "trusted.overlay.opaque"), None);
}

/// Entries owned by the current user: runs unprivileged.
fn own_tar() -> Vec<u8> {
    use tar::EntryType::*;
    let me = (
        u64::from(rustix::process::geteuid().as_raw()),
        u64::from(rustix::process::getegid().as_raw()),
    );
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    Tar::new()
        .add(Directory, b"d/", 0o755, me, b"", b"")
        .add(Regular, b"d/big", 0o644, me, b"", &big)
        .add(Regular, b"d/.wh..wh..opq", 0o644, me, b"", b"")
        .add(Symlink, b"d/link", 0o777, me, b"big", b"")
        .add(Regular, b"empty", 0o600, me, b"", b"")
        .bytes()
}

#[test]
fn rootless_opaque_uses_user_xattr() {
    let tmp = tempfile::tempdir().unwrap();
    let diff = new_diff(tmp.path(), "diff");
    apply(
        &own_tar(),
        &diff,
        WhiteoutFormat::Overlay { user_xattr: true },
    );
    assert_eq!(
        xattr(&diff.join("d"), "user.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(xattr(&diff.join("d"), "trusted.overlay.opaque"), None);
}

fn sha256sum(p: &Path) -> String {
    let out = run_ok(Command::new("sha256sum").arg(p));
    format!(
        "sha256:{}",
        String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
    )
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

#[test]
fn compressions_give_the_same_diff() {
    let tmp = tempfile::tempdir().unwrap();
    let mut tar = own_tar();
    // Bytes after the end-of-archive blocks belong to the DiffID too.
    tar.extend_from_slice(&[0u8; 4096]);
    tar.extend_from_slice(b"trailing bytes");
    let (a, b) = tar.split_at(1000);
    let blobs: Vec<(&str, Vec<u8>, Compression)> = vec![
        ("plain", tar.clone(), Compression::None),
        ("gzip", gzip(&tar), Compression::Gzip),
        (
            "gzip-members",
            [gzip(a), gzip(b)].concat(),
            Compression::Gzip,
        ),
        (
            "zstd",
            zstd::encode_all(&tar[..], 3).unwrap(),
            Compression::Zstd,
        ),
    ];
    let tar_file = tmp.path().join("layer.tar");
    fs::write(&tar_file, &tar).unwrap();
    let diff_id = sha256sum(&tar_file);
    let mut seen = BTreeMap::new();
    for (name, blob, compression) in blobs {
        let blob_file = tmp.path().join(format!("{name}.blob"));
        fs::write(&blob_file, &blob).unwrap();
        let diff = new_diff(tmp.path(), name);
        let (report, _) = apply(&blob, &diff, OVERLAY);
        assert_eq!(report.compression, compression, "{name}");
        assert_eq!(report.diff_digest, diff_id, "{name}");
        assert_eq!(report.diff_size, tar.len() as i64, "{name}");
        assert_eq!(report.compressed_digest, sha256sum(&blob_file), "{name}");
        assert_eq!(report.compressed_size, blob.len() as i64, "{name}");
        assert_eq!(fs::read(diff.join("d/big")).unwrap().len(), 300_000);
        seen.insert(report.compressed_digest, name);
    }
    assert_eq!(seen.len(), 4, "compressed digests differ");
}

/// Rebuild the tar from the tar-split and the layer's files.
fn reassemble(split: &[u8], diff: &Path) -> Vec<u8> {
    let diff = diff.to_owned();
    let open = move |name: &[u8]| -> std::io::Result<Box<dyn Read>> {
        let rel = OsStr::from_bytes(name.strip_prefix(b"/").unwrap_or(name));
        Ok(Box::new(fs::File::open(diff.join(rel))?))
    };
    let mut out = Vec::new();
    tarsplit::reassemble(split, open, &mut out).expect("reassemble");
    out
}

#[test]
fn tar_split_rebuilds_the_exact_tar() {
    let tmp = tempfile::tempdir().unwrap();
    let mut tar = own_tar();
    tar.extend_from_slice(&vec![0u8; 3 << 20]); // > 1 MiB after the end
    tar.extend_from_slice(b"tail");
    let diff = new_diff(tmp.path(), "diff");
    let (_, split) = apply(&zstd::encode_all(&tar[..], 1).unwrap(), &diff, OVERLAY);
    assert!(reassemble(&split, &diff) == tar, "reassembled tar differs");
    // Segments after the end are at most 1 MiB, then the empty segment
    // tar-split < 0.11.4 ends with.
    let entries = tarsplit::read_entries(&split[..]).unwrap();
    let last: Vec<usize> = entries[entries.len() - 5..]
        .iter()
        .map(|e| match e {
            tarsplit::Entry::Segment(raw) => raw.len(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(last, [1 << 20, 1 << 20, 1 << 20, 4, 0]);
}

/// One line per object below `root`: type, mode, owner, content digest or
/// target or rdev, xattrs, hard-link group, and mtime when it came from a
/// header (every header here says `T` or earlier; directories made for
/// missing parents and whiteouts get "now").
fn listing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut first_of_inode = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut children: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        children.sort();
        for p in children {
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let ft = m.file_type();
            let what = if ft.is_symlink() {
                format!("-> {}", fs::read_link(&p).unwrap().display())
            } else if ft.is_file() {
                let first = first_of_inode.entry(m.ino()).or_insert_with(|| rel.clone());
                let data = fs::read(&p).unwrap();
                format!("{} bytes {:x} link-of {first}", data.len(), crc(&data))
            } else if ft.is_dir() {
                stack.push(p.clone());
                String::new()
            } else {
                format!("rdev {:x}", m.rdev())
            };
            let header_time = m.mtime() <= T as i64;
            let time = if header_time {
                format!("{}.{:09}", m.mtime(), m.mtime_nsec())
            } else {
                "now".into()
            };
            let xattrs = layerstore_test_support::images::list_xattrs(&p);
            out.push(format!(
                "{rel} {:o} {}:{} {what} {time} [{}]",
                m.mode(),
                m.uid(),
                m.gid(),
                xattrs.join(",")
            ));
        }
    }
    out.sort();
    out
}

fn crc(data: &[u8]) -> u64 {
    let mut c = tarsplit::Crc64::new();
    c.update(data);
    c.value()
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
#[ignore = "privileged: needs root and containers-storage"]
fn same_as_containers_storage() {
    require_privileged(&["containers-storage"]);
    let mut rich = rich_tar();
    rich.extend_from_slice(&[0u8; 5120]); // record-padded, like GNU tar's
    for (name, tar) in [("rich", rich), ("edge", edge_tar())] {
        compare_with_containers_storage(name, &gzip(&tar));
    }
}

/// Import `blob` with containers-storage and apply it ourselves: the same
/// files, the same layer record values, the same tar-split.
fn compare_with_containers_storage(name: &str, blob: &[u8]) {
    let store = PodmanStore::empty();
    let tmp = tempfile::tempdir().unwrap();
    let blob_file = tmp.path().join("layer.tar.gz");
    fs::write(&blob_file, blob).unwrap();
    let id = store.cs_import_layer(&blob_file);

    let diff = new_diff(tmp.path(), "diff");
    let (report, split) = apply(blob, &diff, OVERLAY);

    let theirs = listing(&store.graph.join("overlay").join(&id).join("diff"));
    assert_eq!(listing(&diff), theirs, "{name}");

    let layers: serde_json::Value =
        serde_json::from_slice(&fs::read(store.graph.join("overlay-layers/layers.json")).unwrap())
            .unwrap();
    let record = &layers[0];
    assert_eq!(
        record["compressed-diff-digest"], report.compressed_digest,
        "{name}"
    );
    assert_eq!(record["compressed-size"], report.compressed_size, "{name}");
    assert_eq!(record["diff-digest"], report.diff_digest, "{name}");
    assert_eq!(record["diff-size"], report.diff_size, "{name}");
    assert_eq!(record["compression"], report.compression.as_cs(), "{name}");
    assert_eq!(record["uidset"], serde_json::json!(report.uidset), "{name}");
    assert_eq!(record["gidset"], serde_json::json!(report.gidset), "{name}");

    // The very same tar-split entries, byte for byte once uncompressed.
    let go_split = fs::read(
        store
            .graph
            .join(format!("overlay-layers/{id}.tar-split.gz")),
    )
    .unwrap();
    assert!(
        gunzip(&go_split) == gunzip(&split),
        "{name}: tar-split differs from containers-storage's"
    );
}
