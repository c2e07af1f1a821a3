//! Hostile layers: each is refused with the right `DiffError`, naming the
//! entry, and nothing outside the layer's `diff` is touched (a sentinel
//! directory next to it stays as it was). Entries are owned by the
//! current user, so these run unprivileged.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use layerstore_overlay::ocidiff::{
    apply_layer, verify_digest, ApplyOptions, DiffError, DiffReport, WhiteoutFormat,
};
use layerstore_overlay::tarsplit::TarSplitWriter;

/// A tar built entry by entry with raw names (the `tar` crate refuses
/// `..` and absolute names, which is exactly what we need to write).
struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    fn new() -> Tar {
        Tar(tar::Builder::new(Vec::new()))
    }

    fn entry(&mut self, kind: tar::EntryType, name: &[u8], link: &[u8], data: &[u8]) -> &mut Tar {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_link_name_literal(link).expect("link name");
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_uid(rustix::process::geteuid().as_raw().into());
        h.set_gid(rustix::process::getegid().as_raw().into());
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.0.append(&h, data).expect("append");
        self
    }

    fn file(&mut self, name: &str, data: &str) -> &mut Tar {
        self.entry(
            tar::EntryType::Regular,
            name.as_bytes(),
            b"",
            data.as_bytes(),
        )
    }

    fn dir(&mut self, name: &str) -> &mut Tar {
        self.entry(tar::EntryType::Directory, name.as_bytes(), b"", b"")
    }

    fn symlink(&mut self, name: &str, target: &str) -> &mut Tar {
        self.entry(
            tar::EntryType::Symlink,
            name.as_bytes(),
            target.as_bytes(),
            b"",
        )
    }

    fn hardlink(&mut self, name: &str, target: &str) -> &mut Tar {
        self.entry(
            tar::EntryType::Link,
            name.as_bytes(),
            target.as_bytes(),
            b"",
        )
    }

    fn bytes(&mut self) -> Vec<u8> {
        std::mem::replace(&mut self.0, tar::Builder::new(Vec::new()))
            .into_inner()
            .expect("tar")
    }
}

/// `<tmp>/diff` (empty) next to `<tmp>/sentinel/secret`.
struct Layer {
    tmp: tempfile::TempDir,
}

impl Layer {
    fn new() -> Layer {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::create_dir(tmp.path().join("diff")).expect("diff");
        fs::create_dir(tmp.path().join("sentinel")).expect("sentinel");
        fs::write(tmp.path().join("sentinel/secret"), "keep").expect("secret");
        Layer { tmp }
    }

    fn diff(&self) -> PathBuf {
        self.tmp.path().join("diff")
    }

    fn sentinel(&self) -> PathBuf {
        self.tmp.path().join("sentinel")
    }

    fn apply(&self, blob: &[u8], whiteout: WhiteoutFormat) -> Result<DiffReport, DiffError> {
        let mut split = TarSplitWriter::new(Vec::new());
        let opts = ApplyOptions {
            whiteout,
            ignore_chown_errors: false,
        };
        apply_layer(blob, &self.diff(), &mut split, &opts)
    }

    /// Everything but `diff` is as `new` left it.
    fn assert_outside_untouched(&self) {
        let mut outside = listing(self.tmp.path());
        outside.retain(|p| !p.starts_with("diff"));
        assert_eq!(
            outside,
            ["sentinel", "sentinel/secret"],
            "something was written outside diff"
        );
        assert_eq!(
            fs::read_to_string(self.sentinel().join("secret")).unwrap(),
            "keep"
        );
    }
}

fn listing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).expect("read_dir") {
            let p = e.expect("entry").path();
            out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

const OVERLAY: WhiteoutFormat = WhiteoutFormat::Overlay { user_xattr: false };

/// Apply `blob` into a fresh layer: the error, with outside untouched.
fn refused(blob: &[u8]) -> (DiffError, Layer) {
    let layer = Layer::new();
    let err = layer
        .apply(blob, OVERLAY)
        .expect_err("the layer must be refused");
    layer.assert_outside_untouched();
    (err, layer)
}

#[test]
fn dotdot_escapes_are_invalid_paths() {
    for name in ["../evil", "a/../../evil", "./../sentinel/secret"] {
        let (err, _) = refused(&Tar::new().file("ok", "x").file(name, "pwned").bytes());
        assert!(
            matches!(&err, DiffError::InvalidPath { entry, .. } if entry == name),
            "{name}: {err:?}"
        );
        assert!(err.to_string().contains(name), "{err}");
    }
}

#[test]
fn absolute_names_are_made_relative_like_go() {
    let layer = Layer::new();
    layer
        .apply(
            &Tar::new()
                .file("/abs/file", "a")
                .file("/../../up", "b")
                .bytes(),
            OVERLAY,
        )
        .expect("apply");
    assert_eq!(
        fs::read_to_string(layer.diff().join("abs/file")).unwrap(),
        "a"
    );
    assert_eq!(fs::read_to_string(layer.diff().join("up")).unwrap(), "b");
    layer.assert_outside_untouched();
}

#[test]
fn writes_through_a_symlink_are_refused() {
    let layer = Layer::new();
    let abs = layer.sentinel().to_string_lossy().into_owned();
    for target in ["../sentinel", abs.as_str(), "/", "."] {
        let blob = Tar::new()
            .symlink("link", target)
            .file("link/pwned", "x")
            .bytes();
        let (err, _) = refused(&blob);
        let ok = matches!(&err, DiffError::SymlinkInPath { entry, component } if entry == "link/pwned" && component == "link");
        assert!(ok, "{target}: {err:?}");
        assert!(err.to_string().contains("symlink"), "{err}");
    }
    // Deeper, and for directories and whiteouts too.
    let blob = Tar::new()
        .dir("a")
        .symlink("a/b", "../../sentinel")
        .dir("a/b/c")
        .bytes();
    assert!(
        matches!(refused(&blob).0, DiffError::SymlinkInPath { component, .. } if component == "a/b")
    );
    let blob = Tar::new()
        .symlink("w", "../sentinel")
        .file("w/.wh.secret", "")
        .bytes();
    assert!(matches!(refused(&blob).0, DiffError::SymlinkInPath { .. }));
    let blob = Tar::new()
        .symlink("o", "../sentinel")
        .file("o/.wh..wh..opq", "")
        .bytes();
    assert!(matches!(refused(&blob).0, DiffError::SymlinkInPath { .. }));
}

#[test]
fn dir_replaced_by_symlink_then_written_through() {
    // Spelled `/d`: the same path as `d` here, but not a duplicate for
    // tar-split (Go's `filepath.Clean` keeps the leading slash).
    let blob = Tar::new()
        .dir("d")
        .file("d/x", "1")
        .symlink("/d", "../sentinel")
        .file("d/secret", "pwned")
        .bytes();
    let (err, layer) = refused(&blob);
    assert!(
        matches!(&err, DiffError::SymlinkInPath { entry, .. } if entry == "d/secret"),
        "{err:?}"
    );
    // The directory was replaced (Go's rule: remove, then create).
    assert_eq!(
        fs::read_link(layer.diff().join("d")).unwrap(),
        Path::new("../sentinel")
    );
}

#[test]
fn bad_hard_links() {
    let cases: &[(&[u8], &str)] = &[
        (
            &Tar::new().hardlink("h", "../sentinel/secret").bytes(),
            "leads outside",
        ),
        (
            &Tar::new().hardlink("h", "/etc/passwd").bytes(),
            "does not exist",
        ),
        (
            &Tar::new().hardlink("h", "later").file("later", "x").bytes(),
            "does not exist",
        ),
        (
            &Tar::new().dir("d").hardlink("h", "d").bytes(),
            "is a directory",
        ),
        (
            &Tar::new()
                .symlink("s", "../sentinel")
                .hardlink("h", "s/secret")
                .bytes(),
            "symlink",
        ),
        (
            &Tar::new().file("f", "x").hardlink("h", "f/x").bytes(),
            "not a directory",
        ),
        (&Tar::new().hardlink("h", "h").bytes(), "does not exist"),
    ];
    for (blob, reason_has) in cases {
        let (err, _) = refused(blob);
        let DiffError::HardlinkTarget { entry, reason, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(entry, "h");
        assert!(reason.contains(reason_has), "{err}");
    }
}

#[test]
fn duplicate_entries_are_refused() {
    let (err, _) = refused(&Tar::new().file("f", "1").file("./f", "2").bytes());
    assert!(
        matches!(&err, DiffError::DuplicatePath { entry } if entry == "./f"),
        "{err:?}"
    );
}

#[test]
fn whiteout_of_an_entry_of_the_same_layer() {
    let (err, _) = refused(&Tar::new().file("a", "x").file(".wh.a", "").bytes());
    assert!(
        matches!(&err, DiffError::WhiteoutConflict { entry, target } if entry == ".wh.a" && target == "a"),
        "{err:?}"
    );
}

#[test]
fn truncated_streams() {
    let tar = Tar::new()
        .file("first", "x")
        .file("big", &"y".repeat(3000))
        .bytes();
    for (cut, what) in [
        (512 + 512 + 100, "a header"),
        (512 * 4 + 10, "the content"),
        (700, "the padding after a file"),
    ] {
        let (err, _) = refused(&tar[..cut]);
        assert!(
            matches!(&err, DiffError::Truncated { what: w, .. } if *w == what),
            "{cut}: {err:?}"
        );
        assert!(err.to_string().contains("truncated"));
    }
    // A compressed stream cut short.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let (err, _) = refused(&gz[..gz.len() / 2]);
    assert!(
        matches!(err, DiffError::Truncated { .. } | DiffError::Read { .. }),
        "{err:?}"
    );
}

#[test]
fn wrong_compression() {
    let (err, _) = refused(&[0x5a; 2048]);
    assert!(
        matches!(err, DiffError::BadHeader { offset: 0, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("invalid tar header"), "{err}");
    let (err, _) = refused(b"BZh91AY&SY garbage that claims to be bzip2");
    assert!(
        matches!(err, DiffError::UnsupportedCompression { format: "bzip2" }),
        "{err:?}"
    );
    let (err, _) = refused(&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 1, 2, 3]);
    assert!(
        matches!(err, DiffError::UnsupportedCompression { format: "xz" }),
        "{err:?}"
    );
    // gzip magic, broken deflate data.
    let (err, _) = refused(&[0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0xff, 0xde, 0xad]);
    assert!(
        matches!(err, DiffError::Read { .. } | DiffError::Truncated { .. }),
        "{err:?}"
    );
}

#[test]
fn bad_header_checksum() {
    let mut tar = Tar::new().file("a", "x").file("b", "y").bytes();
    tar[1024 + 1] = b'X'; // the name of "b" without fixing the checksum
    let (err, _) = refused(&tar);
    assert!(
        matches!(err, DiffError::BadHeader { offset: 1024, reason } if reason.contains("checksum")),
        "{err:?}"
    );
}

#[test]
fn unexpected_digest() {
    let layer = Layer::new();
    let report = layer
        .apply(&Tar::new().file("a", "x").bytes(), OVERLAY)
        .expect("apply");
    verify_digest(&report, &report.compressed_digest).expect("same digest");
    let wrong = format!("sha256:{}", "0".repeat(64));
    let err = verify_digest(&report, &wrong).unwrap_err();
    assert!(
        matches!(&err, DiffError::DigestMismatch { expected, found } if *expected == wrong && *found == report.compressed_digest)
    );
    assert!(err.to_string().contains(&wrong));
}

#[test]
fn diff_must_exist() {
    let layer = Layer::new();
    let mut split = TarSplitWriter::new(Vec::new());
    let opts = ApplyOptions {
        whiteout: OVERLAY,
        ignore_chown_errors: false,
    };
    let err = apply_layer(&b""[..], &layer.diff().join("missing"), &mut split, &opts).unwrap_err();
    assert!(matches!(err, DiffError::OpenDiff { .. }), "{err:?}");
}
