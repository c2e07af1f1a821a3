//! `OverlayDriver::read_stack_file`: one file of a layer stack's merged
//! view, read without mounting anything. Each stack is made by
//! `create_layer` and its layers applied from the fixture text form
//! (`layer_tar`) with `ocidiff::apply_layer`, as an import fills them:
//! with AUFS whiteouts (`.wh.` files kept; no privilege needed) and, as
//! root, with native ones (`c 0 0`, `trusted.overlay.opaque`, or
//! `user.overlay.opaque` rootless), where the kernel's own overlay mount
//! of the same stack must show the same bytes.
//!
//! Every stack has `HOST SECRET` files planted around its layers (the temp
//! dir, the graphroot, the home, each layer directory): no read may ever
//! return one.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use layerstore::config::StoreOptions;
use layerstore::driver::Driver;
use layerstore::LayerId;
use layerstore_overlay::layout::{
    MountRequest, OverlayDriver, StackReadError, MAX_COMPONENTS, MAX_SYMLINKS,
};
use layerstore_overlay::ocidiff::{apply_layer, ApplyOptions, WhiteoutFormat};
use layerstore_overlay::tarsplit::TarSplitWriter;
use layerstore_test_support::images::layer_tar;
use layerstore_test_support::require_privileged;
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

const AUFS: WhiteoutFormat = WhiteoutFormat::Aufs;
const NATIVE: WhiteoutFormat = WhiteoutFormat::Overlay { user_xattr: false };
const ROOTLESS: WhiteoutFormat = WhiteoutFormat::Overlay { user_xattr: true };
const SECRET: &str = "HOST SECRET";
const LIMIT: u64 = 1 << 20;

/// A stack of layers in a store of its own.
struct Stack {
    tmp: tempfile::TempDir,
    driver: OverlayDriver,
    /// Top first, as `read_stack_file` takes it.
    chain: Vec<LayerId>,
}

impl Stack {
    /// Layers from fixture text, base first.
    fn build(layers: &[&str], whiteout: WhiteoutFormat) -> Stack {
        let tmp = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            graph_root: tmp.path().join("graph"),
            run_root: tmp.path().join("run"),
            driver: "overlay".into(),
            // Mounts (the kernel comparison) go on `merged` alone.
            driver_options: vec!["overlay.skip_mount_home=true".into()],
            ..StoreOptions::default()
        };
        let driver = OverlayDriver::new(&options).unwrap();
        let me = (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );
        let mut ids: Vec<LayerId> = Vec::new();
        for (i, spec) in layers.iter().enumerate() {
            let id = LayerId::parse(&format!("layer-{i}")).unwrap();
            driver.create_layer(&id, ids.last(), me).unwrap();
            let opts = ApplyOptions {
                whiteout,
                ignore_chown_errors: !rustix::process::geteuid().is_root(),
            };
            // `diff` is 0555: without this, only root writes into it.
            let diff = driver.diff_path(&id);
            fs::set_permissions(&diff, fs::Permissions::from_mode(0o755)).unwrap();
            let mut split = TarSplitWriter::new(Vec::new());
            apply_layer(&layer_tar(spec)[..], &diff, &mut split, &opts)
                .unwrap_or_else(|e| panic!("layer {i}: {e}"));
            fs::write(driver.home().join(id.as_str()).join("host-marker"), SECRET).unwrap();
            ids.push(id);
        }
        for dir in [tmp.path(), &options.graph_root, driver.home()] {
            fs::write(dir.join("host-marker"), SECRET).unwrap();
        }
        ids.reverse();
        Stack {
            tmp,
            driver,
            chain: ids,
        }
    }

    /// `diff` of layer `i` (0: the base).
    fn diff(&self, i: usize) -> PathBuf {
        self.driver.diff_path(&self.chain[self.chain.len() - 1 - i])
    }

    fn try_read(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>, StackReadError> {
        let got = self.driver.read_stack_file(&self.chain, path, limit);
        if let Ok(Some(bytes)) = &got {
            assert!(
                !bytes.starts_with(SECRET.as_bytes()),
                "{path}: read a host file"
            );
        }
        got
    }

    fn read(&self, path: &str) -> Option<String> {
        let bytes = self
            .try_read(path, LIMIT)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        bytes.map(|b| String::from_utf8(b).unwrap())
    }

    /// What the kernel shows at `path` in a read-only overlay mount of the
    /// stack, resolved in its root (`RESOLVE_IN_ROOT`).
    fn kernel_read(&self, path: &str) -> Option<String> {
        let top = &self.chain[0];
        let request = MountRequest {
            read_only: true,
            ..MountRequest::default()
        };
        let merged = self.driver.mount(top, &request).unwrap();
        let _unmount = Unmount(&self.driver, top);
        let root =
            rustix::fs::open(&merged, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let path = if path.is_empty() { "." } else { path };
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC;
        match rustix::fs::openat2(&root, path, flags, Mode::empty(), ResolveFlags::IN_ROOT) {
            Ok(fd) => {
                let regular = FileType::from_raw_mode(rustix::fs::fstat(&fd).unwrap().st_mode)
                    == FileType::RegularFile;
                regular.then(|| std::io::read_to_string(fs::File::from(fd)).unwrap())
            }
            // Missing, a loop, through a file; a device on a nodev mount.
            Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR | Errno::ACCESS) => None,
            Err(e) => panic!("{path} in the kernel's mount: {e}"),
        }
    }
}

/// Unmounts on drop, so a failed assertion leaves nothing mounted.
struct Unmount<'a>(&'a OverlayDriver, &'a LayerId);

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        let _ = self.0.unmount(self.1);
    }
}

const BASE: &str = "d etc 0755 0:0
    f etc/passwd 0644 0:0 base-passwd
    f etc/group 0644 0:0 base-group";
const ETC: &str = "d etc 0755 0:0";

/// One lookup in a stack: the layers (base first), the path, the bytes.
struct Case {
    name: &'static str,
    layers: &'static [&'static str],
    path: &'static str,
    want: Option<&'static str>,
}

const fn case(
    name: &'static str,
    layers: &'static [&'static str],
    path: &'static str,
    want: Option<&'static str>,
) -> Case {
    Case {
        name,
        layers,
        path,
        want,
    }
}

const USR_ETC: &str = "d usr 0755 0:0
    d usr/etc 0755 0:0
    f usr/etc/passwd 0644 0:0 usr-passwd";

const DELETE: &str = "d etc 0755 0:0\nw etc/passwd";
const AGAIN: &str = "d etc 0755 0:0\nf etc/passwd 0644 0:0 again";
const TOP_GROUP: &str = "d etc 0755 0:0\nf etc/group 0644 0:0 top-group";
const OPAQUE_GROUP: &str = "d etc 0755 0:0\no etc\nf etc/group 0644 0:0 top-group";
const ETC_FILE: &str = "f etc 0644 0:0 not-a-dir";
const USR_GROUP: &str = "d usr 0755 0:0\nd usr/etc 0755 0:0\nf usr/etc/group 0644 0:0 usr-group";

/// The cases every whiteout format must agree on (and the kernel with the
/// native ones).
#[rustfmt::skip]
const CASES: &[Case] = &[
    case("in the base only", &[BASE, "d usr 0755 0:0"], "etc/passwd", Some("base-passwd")),
    case("replaced above", &[BASE, "d etc 0755 0:0\nf etc/passwd 0644 0:0 top"], "etc/passwd", Some("top")),
    case("replaced in the middle", &[BASE, "d etc 0755 0:0\nf etc/passwd 0644 0:0 mid", ETC], "etc/passwd", Some("mid")),
    case("deleted above", &[BASE, DELETE], "etc/passwd", None),
    case("its sibling stays", &[BASE, DELETE], "etc/group", Some("base-group")),
    case("deleted, added again", &[BASE, DELETE, AGAIN], "etc/passwd", Some("again")),
    case("its directory deleted", &[BASE, "w etc"], "etc/passwd", None),
    case("the whiteout marker is no entry", &[BASE, DELETE], "etc/.wh.passwd", None),
    case("opaque directory hides below", &[BASE, OPAQUE_GROUP], "etc/passwd", None),
    case("opaque directory keeps its own", &[BASE, OPAQUE_GROUP], "etc/group", Some("top-group")),
    case("opaque hides only below", &[BASE, "d etc 0755 0:0\no etc", "d etc 0755 0:0\nf etc/passwd 0644 0:0 top"], "etc/passwd", Some("top")),
    case("a file hides a lower directory", &[BASE, ETC_FILE, TOP_GROUP], "etc/passwd", None),
    case("the directory above it stays", &[BASE, ETC_FILE, TOP_GROUP], "etc/group", Some("top-group")),
    case("etc links to another layer's dir", &[BASE, USR_ETC, "l etc /usr/etc"], "etc/passwd", Some("usr-passwd")),
    case("etc links relatively", &[BASE, USR_ETC, "l etc usr/etc"], "etc/passwd", Some("usr-passwd")),
    case("the link's target is merged", &[USR_ETC, USR_GROUP, "l etc /usr/etc"], "etc/passwd", Some("usr-passwd")),
    case("passwd links up and over", &[USR_ETC, "d etc 0755 0:0\nl etc/passwd ../usr/./etc//passwd"], "etc/passwd", Some("usr-passwd")),
    case("passwd links absolutely", &[USR_ETC, "d etc 0755 0:0\nl etc/passwd /usr/etc/passwd"], "etc/passwd", Some("usr-passwd")),
    case("dot-dot goes back to the merged dir", &["d a 0755 0:0\nf a/c 0644 0:0 lower-c", "d a 0755 0:0\nd a/b 0755 0:0"], "a/b/../c", Some("lower-c")),
    case("absolute escape: the image's own", &[BASE, "d etc 0755 0:0\nf etc/shadow 0600 0:0 image-shadow\nl etc/passwd /../../../../etc/shadow"], "etc/passwd", Some("image-shadow")),
    case("absolute escape: not the host's", &[BASE, "d etc 0755 0:0\nl etc/passwd /../../../../etc/shadow"], "etc/passwd", None),
    case("etc links above the root", &[BASE, "l etc ../../../../..\nf host-marker 0644 0:0 image-marker"], "etc/host-marker", Some("image-marker")),
    case("dot-dot stays at the root", &[BASE], "../../../etc/../etc/passwd", Some("base-passwd")),
    case("a link loop", &[BASE, "d etc 0755 0:0\nl etc/passwd group\nl etc/group passwd"], "etc/passwd", None),
    case("a link to itself", &[BASE, "d etc 0755 0:0\nl etc/passwd passwd"], "etc/passwd", None),
    case("a dangling link", &[BASE, "d etc 0755 0:0\nl etc/passwd /nowhere/passwd"], "etc/passwd", None),
    case("a link through a file", &[BASE, "d etc 0755 0:0\nl etc/passwd /etc/group/passwd"], "etc/passwd", None),
    case("a directory", &[BASE, "d etc 0755 0:0\nd etc/passwd 0755 0:0"], "etc/passwd", None),
    case("a fifo", &[BASE, "d etc 0755 0:0\np etc/passwd 0600 0:0"], "etc/passwd", None),
    case("a file used as a directory", &[BASE], "etc/passwd/x", None),
    case("the root", &[BASE], "", None),
];

fn check_cases(whiteout: WhiteoutFormat, extra: &[Case], kernel: bool) {
    for c in CASES.iter().chain(extra) {
        let stack = Stack::build(c.layers, whiteout);
        let got = stack.read(c.path);
        assert_eq!(
            got.as_deref(),
            c.want,
            "{} ({whiteout:?}): {}",
            c.name,
            c.path
        );
        if kernel {
            let seen = stack.kernel_read(c.path);
            assert_eq!(got, seen, "{}: the kernel's mount shows otherwise", c.name);
        }
    }
}

#[test]
fn aufs_whiteouts_merge_as_overlayfs_does() {
    check_cases(AUFS, &[], false);
}

/// Native whiteouts need `mknod` and `trusted.*` xattrs; the kernel's
/// overlay mount is the reference.
#[test]
#[ignore = "privileged: needs root for c 0 0 whiteouts, trusted.overlay xattrs and overlay mounts"]
fn native_whiteouts_merge_as_the_kernel_does() {
    require_privileged(&[]);
    let device = [case(
        "a device",
        &[BASE, "d etc 0755 0:0\nc etc/passwd 0666 0:0 1 3"],
        "etc/passwd",
        None,
    )];
    check_cases(NATIVE, &device, true);
}

#[test]
#[ignore = "privileged: needs root for c 0 0 whiteouts"]
fn rootless_user_xattr_opaque_dirs_are_honoured() {
    require_privileged(&[]);
    check_cases(ROOTLESS, &[], false);
}

/// `user.overlay.opaque` set by hand (no privilege: the directory is ours).
#[test]
fn user_xattr_opaque_needs_no_privilege() {
    let stack = Stack::build(
        &[BASE, "d etc 0755 0:0\nf etc/group 0644 0:0 top-group"],
        AUFS,
    );
    let etc = stack.diff(1).join("etc");
    rustix::fs::setxattr(
        &etc,
        "user.overlay.opaque",
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap_or_else(|e| panic!("{} holds no user xattrs: {e}", etc.display()));
    assert_eq!(stack.read("etc/passwd"), None);
    assert_eq!(stack.read("etc/group").as_deref(), Some("top-group"));
    rustix::fs::setxattr(
        &etc,
        "user.overlay.opaque",
        b"n",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    assert_eq!(stack.read("etc/passwd").as_deref(), Some("base-passwd"));
}

/// `etc/passwd -> ../../<n times>/host-marker` reaches, on the host, each
/// directory around the layer that holds a `HOST SECRET`; in the image it
/// is `/host-marker`.
#[test]
fn relative_escapes_stay_in_the_image() {
    for n in 1..=8 {
        let link = format!(
            "d etc 0755 0:0\nl etc/passwd {}host-marker",
            "../".repeat(n)
        );
        let stack = Stack::build(&[BASE, &link], AUFS);
        assert_eq!(stack.read("etc/passwd"), None, "{n} levels up");
        let own = format!("{link}\nf host-marker 0644 0:0 image-marker");
        let stack = Stack::build(&[BASE, &own], AUFS);
        assert_eq!(
            stack.read("etc/passwd").as_deref(),
            Some("image-marker"),
            "{n} up"
        );
    }
}

/// A chain of `n` links `l0 -> l1 -> .. -> etc/passwd`.
fn links(n: usize) -> String {
    let mut spec = String::new();
    for i in 0..n {
        let next = if i + 1 == n {
            "etc/passwd".to_owned()
        } else {
            format!("l{}", i + 1)
        };
        spec.push_str(&format!("l l{i} {next}\n"));
    }
    spec
}

#[test]
fn at_most_forty_links_are_followed() {
    let ok = links(MAX_SYMLINKS);
    let stack = Stack::build(&[BASE, &ok], AUFS);
    assert_eq!(stack.read("l0").as_deref(), Some("base-passwd"));
    let too_many = links(MAX_SYMLINKS + 1);
    let stack = Stack::build(&[BASE, &too_many], AUFS);
    assert_eq!(stack.read("l0"), None);
}

#[test]
fn a_walk_of_too_many_components_is_taken_as_missing() {
    // Links that expand to thousands of `a/..` steps: each would be a look
    // into every layer, under the store's locks. Taken as missing.
    let mut spec = String::from("d a 0755 0:0\n");
    for i in 0..MAX_SYMLINKS {
        let next = if i + 1 == MAX_SYMLINKS {
            "etc/passwd".to_owned()
        } else {
            format!("l{}", i + 1)
        };
        spec.push_str(&format!("l l{i} {}{next}\n", "a/../".repeat(100)));
    }
    let stack = Stack::build(&[BASE, &spec], AUFS);
    assert_eq!(stack.read("l0"), None);
    // Within the budget the same shape resolves.
    let short = format!(
        "d a 0755 0:0\nl l0 {}etc/passwd",
        "a/../".repeat(MAX_COMPONENTS / 2 - 2)
    );
    let stack = Stack::build(&[BASE, &short], AUFS);
    assert_eq!(stack.read("l0").as_deref(), Some("base-passwd"));
}

#[test]
#[ignore = "privileged: needs root for overlay mounts"]
fn the_link_limit_is_the_kernels() {
    require_privileged(&[]);
    for n in [MAX_SYMLINKS, MAX_SYMLINKS + 1] {
        let spec = links(n);
        let stack = Stack::build(&[BASE, &spec], NATIVE);
        assert_eq!(stack.read("l0"), stack.kernel_read("l0"), "{n} links");
    }
}

#[test]
fn non_utf8_names_are_bytes() {
    let stack = Stack::build(&[BASE, ETC, ETC], AUFS);
    let name = |b: &[u8]| OsStr::from_bytes(b).to_owned();
    let dir = stack.diff(0).join(name(b"d\xff"));
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join(name(b"f\xfe")), "odd-passwd").unwrap();
    fs::write(dir.join(name(b"g\xfe")), "odd-group").unwrap();
    // The middle layer deletes one of them, AUFS style.
    fs::create_dir(stack.diff(1).join(name(b"d\xff"))).unwrap();
    fs::write(
        stack.diff(1).join(name(b"d\xff")).join(name(b".wh.g\xfe")),
        "",
    )
    .unwrap();
    let top = stack.diff(2).join("etc");
    std::os::unix::fs::symlink(name(b"/d\xff/f\xfe"), top.join("passwd")).unwrap();
    std::os::unix::fs::symlink(name(b"../d\xff/g\xfe"), top.join("group")).unwrap();
    assert_eq!(stack.read("etc/passwd").as_deref(), Some("odd-passwd"));
    assert_eq!(stack.read("etc/group"), None);
}

#[test]
fn more_than_the_limit_is_an_error_naming_layer_and_file() {
    let stack = Stack::build(
        &[BASE, "d etc 0755 0:0\nf etc/passwd 0644 0:0 0123456789"],
        AUFS,
    );
    let got = stack.try_read("etc/passwd", 10).unwrap();
    assert_eq!(got.as_deref(), Some(&b"0123456789"[..]));
    let err = stack.try_read("etc/passwd", 9).unwrap_err();
    assert!(
        matches!(err, StackReadError::TooBig { limit: 9, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("layer-1") && msg.contains("etc/passwd"),
        "{msg}"
    );
    // Through a link, too: the layer is the one that holds the bytes.
    let link = Stack::build(&[BASE, "d etc 0755 0:0\nl etc/group passwd"], AUFS);
    let msg = link.try_read("etc/group", 3).unwrap_err().to_string();
    assert!(
        msg.contains("layer-0") && msg.contains("etc/passwd"),
        "{msg}"
    );
}

#[test]
fn a_layer_without_its_diff_is_an_error_naming_it() {
    let stack = Stack::build(&[BASE, ETC, ETC], AUFS);
    fs::remove_dir_all(stack.diff(1)).unwrap();
    let msg = stack.try_read("etc/passwd", LIMIT).unwrap_err().to_string();
    assert!(msg.contains("layer-1"), "{msg}");
    let stack = Stack::build(&[BASE, ETC], AUFS);
    fs::remove_dir_all(stack.driver.home().join("layer-0")).unwrap();
    let msg = stack.try_read("etc/passwd", LIMIT).unwrap_err().to_string();
    assert!(msg.contains("layer-0"), "{msg}");
}

/// A `diff` (or a layer directory) that is a symlink to a host directory
/// is never followed.
#[test]
fn a_diff_that_is_a_symlink_is_refused() {
    let stack = Stack::build(&[BASE, ETC], AUFS);
    let host = stack.tmp.path().join("host");
    fs::create_dir_all(host.join("etc")).unwrap();
    fs::write(host.join("etc/passwd"), SECRET).unwrap();
    let diff = stack.diff(1);
    fs::remove_dir_all(&diff).unwrap();
    std::os::unix::fs::symlink(&host, &diff).unwrap();
    let err = stack.try_read("etc/passwd", LIMIT).unwrap_err();
    assert!(err.to_string().contains("layer-1"), "{err}");
    let layer = stack.driver.home().join("layer-1");
    fs::remove_file(&diff).unwrap();
    fs::rename(&layer, stack.tmp.path().join("moved")).unwrap();
    std::os::unix::fs::symlink(stack.tmp.path().join("moved"), &layer).unwrap();
    assert!(stack.try_read("etc/passwd", LIMIT).is_err());
}

#[test]
fn an_empty_chain_has_no_files_and_nul_is_refused() {
    let stack = Stack::build(&[BASE], AUFS);
    assert_eq!(
        stack
            .driver
            .read_stack_file(&[], "etc/passwd", LIMIT)
            .unwrap(),
        None
    );
    let err = stack.try_read("etc/pass\0wd", LIMIT).unwrap_err();
    assert!(matches!(err, StackReadError::InvalidPath { .. }), "{err:?}");
}

/// The store reaches it through its `Driver`.
#[test]
fn the_driver_trait_reads_the_same() {
    let stack = Stack::build(
        &[BASE, "d etc 0755 0:0\nf etc/group 0644 0:0 top-group"],
        AUFS,
    );
    let driver: &dyn Driver = &stack.driver;
    let got = driver
        .read_stack_file(&stack.chain, "etc/group", LIMIT)
        .unwrap();
    assert_eq!(got.as_deref(), Some(&b"top-group"[..]));
    let err = driver
        .read_stack_file(&stack.chain, "etc/group", 2)
        .unwrap_err();
    assert!(err.to_string().contains("etc/group"), "{err}");
}
