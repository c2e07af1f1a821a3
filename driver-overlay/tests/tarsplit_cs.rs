//! The tarsplit module against the real containers-storage (v1.43, as under
//! podman 4.3.1): for tars imported with `containers-storage import-layer`,
//! we read the `<id>.tar-split.gz` Go wrote, write the very same bytes
//! (uncompressed) from our own disassembly, reassemble the tar from the
//! layer's `diff`, and containers-storage reassembles the tar from a
//! tar-split we wrote. Privileged: the store is root's.

use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use layerstore_overlay::tarsplit::{self, Crc64, Entry, TarSplitWriter};
use layerstore_test_support::images::sha256;
use layerstore_test_support::{require_privileged, run_ok, PodmanStore};

#[path = "../src/tarsplit/testtar.rs"]
mod testtar;

use testtar::{append_file, append_special, disassemble, sample_tar, write_tarsplit, Piece};

/// The tar the module's brief asks for: a long name, a non-ASCII name, a
/// symlink, a hard link, an empty file and a 1 MiB file.
fn basic_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    append_special(&mut b, tar::EntryType::Directory, "etc/", None);
    append_file(&mut b, tar::Header::new_ustar(), b"etc/hello", b"hello\n");
    let long = format!("etc/{}/{}", "l".repeat(70), "n".repeat(60));
    append_file(
        &mut b,
        tar::Header::new_gnu(),
        long.as_bytes(),
        b"long name",
    );
    append_file(
        &mut b,
        tar::Header::new_gnu(),
        "etc/grüße ✓.txt".as_bytes(),
        b"utf8",
    );
    append_special(&mut b, tar::EntryType::Symlink, "etc/link", Some("hello"));
    append_special(&mut b, tar::EntryType::Link, "etc/hard", Some("etc/hello"));
    append_file(&mut b, tar::Header::new_ustar(), b"etc/empty", b"");
    let big: Vec<u8> = (0..1u32 << 20).map(|i| (i % 253) as u8).collect();
    append_file(&mut b, tar::Header::new_ustar(), b"big", &big);
    b.into_inner().unwrap()
}

/// A small tar padded to a 10240-byte record, as GNU tar writes them: the
/// bytes after the end-of-archive blocks come in one read.
fn record_padded_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    append_file(&mut b, tar::Header::new_ustar(), b"a", b"a");
    append_file(&mut b, tar::Header::new_gnu(), b"b", b"bb");
    let mut tar = b.into_inner().unwrap();
    tar.resize(10240, 0);
    tar
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn import(store: &PodmanStore, label: &str, tar: &[u8]) -> String {
    let path = store.graph.with_file_name(format!("{label}.tar"));
    fs::write(&path, tar).unwrap();
    store.cs_import_layer(&path)
}

/// Open a member under a layer's `diff`, as the overlay DiffGetter does.
fn opener(diff: &Path) -> impl FnMut(&[u8]) -> std::io::Result<Box<dyn Read>> + '_ {
    |name| {
        Ok(Box::new(fs::File::open(
            diff.join(std::ffi::OsStr::from_bytes(name)),
        )?) as _)
    }
}

/// (1) Go's entries name the tar's members, with sizes and CRCs that match
/// the files containers-storage extracted.
fn check_entries(label: &str, go: &[u8], tar: &[u8], diff: &Path) {
    let entries = tarsplit::read_entries(go).unwrap();
    let names: Vec<Vec<u8>> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::File { name, .. } => Some(name.clone()),
            Entry::Segment(_) => None,
        })
        .collect();
    let want: Vec<Vec<u8>> = disassemble(tar)
        .unwrap()
        .into_iter()
        .filter_map(|p| match p {
            Piece::Member { name, .. } => Some(name),
            _ => None,
        })
        .collect();
    assert_eq!(names, want, "{label}: file entries");
    for entry in &entries {
        if let Entry::File {
            name,
            size: size @ 1..,
            crc,
        } = entry
        {
            let content = fs::read(diff.join(std::ffi::OsStr::from_bytes(name))).unwrap();
            assert_eq!(content.len() as u64, *size, "{label}: size of {name:?}");
            assert_eq!(
                *crc,
                Some(Crc64::checksum(&content)),
                "{label}: CRC of {name:?}"
            );
        }
    }
}

/// (2) Our encoding of the same tar is Go's, line for line.
fn check_same_json(label: &str, go: &[u8], ours: &[u8]) {
    let (go, ours) = (gunzip(go), gunzip(ours));
    let go_lines: Vec<&[u8]> = go.split_inclusive(|&b| b == b'\n').collect();
    let our_lines: Vec<&[u8]> = ours.split_inclusive(|&b| b == b'\n').collect();
    for (i, (g, o)) in go_lines.iter().zip(&our_lines).enumerate() {
        assert!(
            g == o,
            "{label}: line {} differs:\n  go:   {}\n  ours: {}",
            i + 1,
            String::from_utf8_lossy(g),
            String::from_utf8_lossy(o)
        );
    }
    assert_eq!(
        go_lines.len(),
        our_lines.len(),
        "{label}: number of entries"
    );
    assert_eq!(go, ours);
}

fn check_case(store: &PodmanStore, label: &str, tar: &[u8]) {
    let id = import(store, label, tar);
    let ts_path = store
        .graph
        .join("overlay-layers")
        .join(format!("{id}{}", tarsplit::FILE_SUFFIX));
    let diff = store.graph.join("overlay").join(&id).join("diff");
    let go = fs::read(&ts_path).unwrap();

    check_entries(label, &go, tar, &diff);
    check_same_json(label, &go, &write_tarsplit(tar, true));

    // (3) Go's tar-split plus the layer's files give back the tar.
    let mut out = Vec::new();
    let n = tarsplit::reassemble(go.as_slice(), opener(&diff), &mut out).unwrap();
    assert_eq!(n, tar.len() as u64, "{label}: reassembled size");
    assert!(out == tar, "{label}: reassembled tar differs");

    // (4) containers-storage reassembles the tar from our tar-split, in the
    // newer tar-split style (no final empty segment).
    fs::write(&ts_path, write_tarsplit(tar, false)).unwrap();
    let out = run_ok(store.containers_storage().args(["diff", "-u", &id])).stdout;
    assert_eq!(
        sha256(&out),
        sha256(tar),
        "{label}: containers-storage diff"
    );
}

#[test]
#[ignore = "privileged: needs root and containers-storage"]
fn tar_split_matches_containers_storage() {
    require_privileged(&["containers-storage"]);
    let store = PodmanStore::empty();
    check_case(&store, "basic", &basic_tar());
    check_case(&store, "sample", &sample_tar(&[]));
    check_case(&store, "record-padded", &record_padded_tar());
}

#[test]
#[ignore = "privileged: needs root and containers-storage"]
fn containers_storage_rejects_a_corrupt_tar_split_like_we_do() {
    require_privileged(&["containers-storage"]);
    let store = PodmanStore::empty();
    let tar = basic_tar();
    let id = import(&store, "corrupt", &tar);
    let ts_path = store
        .graph
        .join("overlay-layers")
        .join(format!("{id}{}", tarsplit::FILE_SUFFIX));
    let diff = store.graph.join("overlay").join(&id).join("diff");
    // Same size, other content: only the CRC can tell.
    fs::write(diff.join("etc/hello"), b"HELLO\n").unwrap();
    let go = fs::read(&ts_path).unwrap();
    let err = tarsplit::reassemble(go.as_slice(), opener(&diff), std::io::sink()).unwrap_err();
    assert!(
        matches!(&err, tarsplit::TarSplitError::CrcMismatch { name } if name == b"etc/hello"),
        "{err:?}"
    );
    let out = store
        .containers_storage()
        .args(["diff", "-u", &id])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("file integrity checksum failed"),
        "containers-storage diff should fail its checksum: {stderr}"
    );
    // A tar-split of one segment holding the whole tar needs no files.
    let mut w = TarSplitWriter::new(Vec::new());
    w.segment(&tar).unwrap();
    fs::write(&ts_path, w.finish().unwrap()).unwrap();
    let out = run_ok(store.containers_storage().args(["diff", "-u", &id])).stdout;
    assert_eq!(sha256(&out), sha256(&tar));
}

#[test]
#[ignore = "privileged: needs root and containers-storage"]
fn duplicate_paths_are_refused_like_containers_storage() {
    require_privileged(&["containers-storage"]);
    let store = PodmanStore::empty();
    let mut b = tar::Builder::new(Vec::new());
    append_file(&mut b, tar::Header::new_ustar(), b"a", b"1");
    // The tar crate drops a leading "./": spell it in the header by hand.
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..3].copy_from_slice(b"./a");
    h.set_mode(0o644);
    h.set_size(1);
    h.set_cksum();
    b.append(&h, &b"2"[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let path = store.graph.with_file_name("dup.tar");
    fs::write(&path, &tar).unwrap();
    let out = store
        .containers_storage()
        .args(["import-layer", "-f"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("duplicates of file paths not supported"),
        "import-layer should refuse the duplicate: {stderr}"
    );
    let mut w = TarSplitWriter::new(Vec::new());
    let mut refused = Vec::new();
    for piece in disassemble(&tar).unwrap() {
        if let Piece::Member { name, .. } = piece {
            if let Err(e) = w.file(&name, 1, Some([0; 8])) {
                refused.push(e);
            }
        }
    }
    assert!(
        matches!(&refused[..], [tarsplit::TarSplitError::DuplicatePath { name }] if name == b"./a"),
        "{refused:?}"
    );
}
