//! Unit tests of the layout module (no privilege needed); `privileged`
//! forces each fallback mount method on a real kernel.

mod privileged;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use layerstore::config::StoreOptions;
use rustix::mount::MountFlags;

use super::links::{generate_link_name, is_valid_link_name, link_name_from_bytes, LINK_LEN};
use super::mount::{parse_options, push_escaped};
use super::mountinfo::{decode_octal_escapes, parse_mount_points};
use super::*;

fn options(dir: &Path) -> StoreOptions {
    StoreOptions {
        graph_root: dir.join("graph"),
        run_root: dir.join("run"),
        driver: "overlay".into(),
        ..Default::default()
    }
}

fn driver(dir: &Path) -> OverlayDriver {
    OverlayDriver::new(&options(dir)).unwrap()
}

fn me() -> (u32, u32) {
    (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    )
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn read(path: impl AsRef<Path>) -> String {
    fs::read_to_string(path).unwrap()
}

/// base <- child <- grand, made by `create_layer`.
fn chain(d: &OverlayDriver) {
    d.create_layer(&lid("base"), None, me()).unwrap();
    d.create_layer(&lid("child"), Some(&lid("base")), me())
        .unwrap();
    d.create_layer(&lid("grand"), Some(&lid("child")), me())
        .unwrap();
}

fn link_entries(d: &OverlayDriver) -> usize {
    fs::read_dir(d.home().join("l")).unwrap().count()
}

#[test]
fn layer_ids_are_single_safe_components() {
    let long = "a".repeat(243);
    for good in ["abc", "my-layer_1.2", &"f".repeat(64), &"a".repeat(242)] {
        assert!(validate_id(good).is_ok(), "{good:?} should be valid");
    }
    for bad in [
        "",
        ".",
        "..",
        ".hidden",
        "a/b",
        "/abs",
        "a:b",
        "a,b",
        "a\\b",
        "a\nb",
        "a\0b",
        "l",
        "staging",
        "tempdirs",
        "backingFsBlockDev",
        &long,
    ] {
        assert!(
            matches!(validate_id(bad), Err(LayoutError::InvalidLayerId { .. })),
            "{bad:?} should be refused"
        );
    }
}

#[test]
fn link_names_are_26_base32_chars_like_go() {
    let counting: [u8; 17] = std::array::from_fn(|i| i as u8);
    assert_eq!(
        link_name_from_bytes(&counting),
        "AAAQEAYEAUDAOCAJBIFQYDIOB4"
    );
    assert_eq!(link_name_from_bytes(&[0xff; 17]), "7".repeat(26));
    let a = generate_link_name().unwrap();
    let b = generate_link_name().unwrap();
    for name in [&a, &b] {
        assert_eq!(name.len(), LINK_LEN);
        assert!(name
            .bytes()
            .all(|c| c.is_ascii_uppercase() || (b'2'..=b'7').contains(&c)));
    }
    assert_ne!(a, b);
    assert!(is_valid_link_name(&a));
    for bad in ["", ".", "..", "a/b", "a:b", "a,b"] {
        assert!(!is_valid_link_name(bad));
    }
}

#[test]
fn create_makes_the_c_storage_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let d = driver(tmp.path());
    chain(&d);
    let home = d.home();
    assert_eq!(mode(home), 0o700);
    assert_eq!(mode(&home.join("l")), 0o755);
    assert_eq!(read(home.join(".has-mount-program")), "false");

    let base = home.join("base");
    let mut entries: Vec<_> = fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    entries.sort();
    assert_eq!(entries, ["diff", "empty", "link", "merged", "work"]);
    for (name, want) in [
        ("", 0o700),
        ("diff", 0o555),
        ("empty", 0o700),
        ("link", 0o644),
    ] {
        assert_eq!(mode(&base.join(name)), want, "{name}");
    }
    for name in ["work", "merged"] {
        assert_eq!(mode(&base.join(name)), 0o700, "{name}");
    }

    let grand = home.join("grand");
    let mut entries: Vec<_> = fs::read_dir(&grand)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        ["diff", "link", "lower", "lower-layers", "merged", "work"]
    );
    assert_eq!(mode(&grand.join("lower")), 0o644);
    assert_eq!(mode(&grand.join("lower-layers")), 0o644);

    let link = |id: &str| read(home.join(id).join("link"));
    for id in ["base", "child", "grand"] {
        let name = link(id);
        assert_eq!(name.len(), LINK_LEN, "no newline, 26 chars");
        let target = fs::read_link(home.join("l").join(&name)).unwrap();
        assert_eq!(target, Path::new("..").join(id).join("diff"));
    }
    assert_eq!(
        read(grand.join("lower")),
        format!("l/{}:l/{}", link("child"), link("base"))
    );
    assert_eq!(read(grand.join("lower-layers")), "child:base");
    assert_eq!(read(home.join("child/lower-layers")), "base");
    for id in ["base", "child", "grand"] {
        let meta = fs::metadata(home.join(id).join("diff")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), me());
    }
    assert_eq!(d.list_layers().unwrap(), ["base", "child", "grand"]);
    assert!(d.layer_exists(&lid("child")));
    assert!(!d.layer_exists(&lid("nope")));
    assert_eq!(d.diff_path(&lid("child")), home.join("child/diff"));
}

#[test]
fn child_diff_takes_the_parents_diff_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let d = driver(tmp.path());
    d.create_layer(&lid("base"), None, me()).unwrap();
    fs::set_permissions(
        d.home().join("base/diff"),
        fs::Permissions::from_mode(0o751),
    )
    .unwrap();
    d.create_layer(&lid("child"), Some(&lid("base")), me())
        .unwrap();
    assert_eq!(mode(&d.home().join("child/diff")), 0o751);
}

#[test]
fn create_refuses_bad_input_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let d = driver(tmp.path());
    d.create_layer(&lid("base"), None, me()).unwrap();
    let links = link_entries(&d);

    let err = d.create_layer(&lid("base"), None, me()).unwrap_err();
    assert!(
        matches!(err, LayoutError::LayerExists { ref id, .. } if id == "base"),
        "{err}"
    );
    assert!(
        d.home().join("base/empty").is_dir(),
        "existing layer untouched"
    );

    let err = d
        .create_layer(&lid("x"), Some(&lid("missing")), me())
        .unwrap_err();
    assert!(matches!(err, LayoutError::ParentNotFound { .. }), "{err}");
    // Hostile ids cannot even be made: the driver only takes LayerIds.
    for bad in ["../base", "a:b", "l"] {
        assert!(
            matches!(parse_id(bad), Err(LayoutError::InvalidLayerId { .. })),
            "{bad}"
        );
    }

    fs::remove_file(d.home().join("base/link")).unwrap();
    let err = d
        .create_layer(&lid("x"), Some(&lid("base")), me())
        .unwrap_err();
    assert!(matches!(err, LayoutError::ParentNotFound { ref path, .. } if path.ends_with("link")));

    assert_eq!(d.list_layers().unwrap(), ["base"]);
    assert_eq!(link_entries(&d), links);
}

#[test]
fn failed_create_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let d = driver(tmp.path());
    d.create_layer(&lid("base"), None, me()).unwrap();
    // Make the l/ symlink fail after diff/ was created.
    fs::remove_dir_all(d.home().join("l")).unwrap();
    fs::write(d.home().join("l"), "not a dir").unwrap();
    let err = d
        .create_layer(&lid("child"), Some(&lid("base")), me())
        .unwrap_err();
    assert!(matches!(err, LayoutError::Io { .. }), "{err}");
    assert!(!d.home().join("child").exists());
}

#[test]
fn lower_chain_from_lower_layers_with_diffn() {
    let tmp = tempfile::tempdir().unwrap();
    let d = driver(tmp.path());
    chain(&d);
    let home = d.home().to_owned();
    for extra in [
        "base/diff1",
        "child/diff1",
        "child/diff2",
        "grand/diff1",
        "grand/diff3",
    ] {
        fs::create_dir(home.join(extra)).unwrap();
    }
    assert_eq!(d.lower_layer_ids(&lid("grand")).unwrap(), ["child", "base"]);
    let want: Vec<PathBuf> = [
        "grand/diff1",
        "child/diff",
        "child/diff1",
        "child/diff2",
        "base/diff",
        "base/diff1",
    ]
    .iter()
    .map(|p| home.join(p))
    .collect();
    assert_eq!(d.lower_dirs(&lid("grand")).unwrap(), want);
    assert_eq!(
        d.lower_dirs(&lid("base")).unwrap(),
        [home.join("base/diff1")]
    );
    fs::remove_dir(home.join("base/diff1")).unwrap();
    assert_eq!(
        d.lower_dirs(&lid("base")).unwrap(),
        [home.join("base/empty")]
    );
    assert!(d.lower_layer_ids(&lid("base")).unwrap().is_empty());
}

#[test]
fn lower_chain_from_lower_file_only() {
    let tmp = tempfile::tempdir().unwrap();
    let d = driver(tmp.path());
    chain(&d);
    let home = d.home().to_owned();
    for id in ["child", "grand"] {
        fs::remove_file(home.join(id).join("lower-layers")).unwrap();
    }
    assert_eq!(d.lower_layer_ids(&lid("grand")).unwrap(), ["child", "base"]);
    assert_eq!(
        d.lower_dirs(&lid("grand")).unwrap(),
        [home.join("child/diff"), home.join("base/diff")]
    );
    // A child of a layer without lower-layers still gets the full id chain.
    d.create_layer(&lid("great"), Some(&lid("grand")), me())
        .unwrap();
    assert_eq!(read(home.join("great/lower-layers")), "grand:child:base");

    // A lost l/ link is found again through the layers' link files.
    let base_link = read(home.join("base/link"));
    fs::remove_file(home.join("l").join(&base_link)).unwrap();
    assert_eq!(d.lower_layer_ids(&lid("grand")).unwrap(), ["child", "base"]);
    // With the link file gone too, the entry resolves to nothing.
    fs::remove_file(home.join("base/link")).unwrap();
    let err = d.lower_layer_ids(&lid("grand")).unwrap_err();
    assert!(
        matches!(err, LayoutError::LowerLinkMissing { ref link, .. } if *link == format!("l/{base_link}")),
        "{err}"
    );
}

#[test]
fn malformed_lower_files_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let d = driver(tmp.path());
    chain(&d);
    let home = d.home().to_owned();
    fs::write(home.join("grand/lower-layers"), "child:../etc").unwrap();
    let err = d.lower_dirs(&lid("grand")).unwrap_err();
    assert!(matches!(err, LayoutError::BadLowerEntry { ref entry, .. } if entry == "../etc"));
    fs::remove_file(home.join("grand/lower-layers")).unwrap();
    fs::write(home.join("grand/lower"), "/etc/passwd").unwrap();
    let err = d.lower_dirs(&lid("grand")).unwrap_err();
    assert!(matches!(err, LayoutError::BadLowerEntry { .. }), "{err}");
    // A malformed lower is refused even beside a lower-layers file.
    fs::write(home.join("grand/lower-layers"), "child:base").unwrap();
    let err = d.lower_dirs(&lid("grand")).unwrap_err();
    assert!(matches!(err, LayoutError::BadLowerEntry { .. }), "{err}");
    fs::remove_file(home.join("grand/lower")).unwrap();
    fs::write(home.join("grand/lower-layers"), "gone").unwrap();
    let err = d.lower_dirs(&lid("grand")).unwrap_err();
    assert!(matches!(err, LayoutError::LowerNotFound { ref lower, .. } if lower == "gone"));
}

#[test]
fn chains_deeper_than_500_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = driver(tmp.path());
    d.create_layer(&lid("top"), None, me()).unwrap();
    let ids: Vec<String> = (0..MAX_LOWER_LAYERS).map(|i| format!("l{i:03}")).collect();
    for id in &ids {
        fs::create_dir_all(d.home().join(id).join("diff")).unwrap();
    }
    fs::write(d.home().join("top/lower-layers"), ids.join(":")).unwrap();
    assert_eq!(d.lower_dirs(&lid("top")).unwrap().len(), MAX_LOWER_LAYERS);
    let err = d
        .create_layer(&lid("child"), Some(&lid("top")), me())
        .unwrap_err();
    assert!(
        matches!(
            err,
            LayoutError::ChainTooDeep {
                depth: 501,
                max: 500,
                ..
            }
        ),
        "{err}"
    );
    assert!(!d.home().join("child").exists());

    fs::write(
        d.home().join("top/lower-layers"),
        format!("{}:l000", ids.join(":")),
    )
    .unwrap();
    let err = d.lower_dirs(&lid("top")).unwrap_err();
    assert!(
        matches!(err, LayoutError::ChainTooDeep { depth: 501, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("maximum of 500"), "{err}");
}

#[test]
fn list_layers_skips_what_is_not_a_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let d = driver(tmp.path());
    assert!(d.list_layers().unwrap().is_empty(), "no home yet");
    let home = d.home().to_owned();
    for dir in ["l", "staging", "tempdirs", ".hidden", "b", "a"] {
        fs::create_dir_all(home.join(dir)).unwrap();
    }
    for file in [".has-mount-program", "backingFsBlockDev", "notadir"] {
        fs::write(home.join(file), "").unwrap();
    }
    std::os::unix::fs::symlink("a", home.join("alink")).unwrap();
    assert_eq!(d.list_layers().unwrap(), ["a", "b"]);
}

#[test]
fn repair_link_recreates_what_was_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let d = driver(tmp.path());
    chain(&d);
    let home = d.home().to_owned();
    let name = read(home.join("child/link"));
    assert!(!d.repair_link(&lid("child")).unwrap(), "nothing to repair");

    fs::remove_file(home.join("l").join(&name)).unwrap();
    assert!(d.repair_link(&lid("child")).unwrap());
    assert_eq!(
        fs::read_link(home.join("l").join(&name)).unwrap(),
        Path::new("../child/diff")
    );

    fs::remove_file(home.join("child/link")).unwrap();
    assert!(d.repair_link(&lid("child")).unwrap());
    assert_eq!(
        read(home.join("child/link")),
        name,
        "rewritten from the symlink"
    );
    assert_eq!(mode(&home.join("child/link")), 0o644);

    fs::remove_file(home.join("child/link")).unwrap();
    fs::remove_file(home.join("l").join(&name)).unwrap();
    assert!(d.repair_link(&lid("child")).unwrap());
    let fresh = read(home.join("child/link"));
    assert_eq!(fresh.len(), LINK_LEN);
    assert_eq!(
        fs::read_link(home.join("l").join(&fresh)).unwrap(),
        Path::new("../child/diff")
    );

    // A link file naming another layer's symlink is a conflict, not a repair.
    fs::write(home.join("grand/link"), read(home.join("base/link"))).unwrap();
    let err = d.repair_link(&lid("grand")).unwrap_err();
    assert!(matches!(err, LayoutError::LinkConflict { .. }), "{err}");
    let err = d.repair_link(&lid("missing")).unwrap_err();
    assert!(matches!(err, LayoutError::LayerNotFound { .. }), "{err}");
}

#[test]
fn remove_layer_removes_dir_and_own_link_only() {
    let tmp = tempfile::tempdir().unwrap();
    let d = driver(tmp.path());
    chain(&d);
    let home = d.home().to_owned();
    let links = link_entries(&d);
    d.remove_layer(&lid("grand")).unwrap();
    assert!(!home.join("grand").exists());
    assert_eq!(link_entries(&d), links - 1);
    d.remove_layer(&lid("grand")).unwrap();

    // child's link file names base's symlink: base's symlink stays (and so
    // does child's own, which no link file names any more).
    let base_link = read(home.join("base/link"));
    fs::write(home.join("child/link"), &base_link).unwrap();
    d.remove_layer(&lid("child")).unwrap();
    assert_eq!(link_entries(&d), links - 1);
    assert_eq!(
        fs::read_link(home.join("l").join(base_link)).unwrap(),
        Path::new("../base/diff")
    );
    assert_eq!(d.list_layers().unwrap(), ["base"]);
}

#[test]
fn a_half_made_or_half_removed_layer_loses_its_l_link_too() {
    // A create killed after making `l/<name>` but before or while writing
    // the `link` file.
    for broken in [None, Some(""), Some("../../x")] {
        let tmp = tempfile::tempdir().unwrap();
        let d = driver(tmp.path());
        chain(&d);
        let home = d.home().to_owned();
        let links = link_entries(&d);
        match broken {
            None => fs::remove_file(home.join("grand/link")).unwrap(),
            Some(content) => fs::write(home.join("grand/link"), content).unwrap(),
        }
        d.remove_layer(&lid("grand")).unwrap();
        assert!(!home.join("grand").exists());
        assert_eq!(link_entries(&d), links - 1, "{broken:?}");
    }
    // A removal killed after the directory went, before its link did.
    let tmp = tempfile::tempdir().unwrap();
    let d = driver(tmp.path());
    chain(&d);
    let home = d.home().to_owned();
    let links = link_entries(&d);
    fs::remove_dir_all(home.join("grand")).unwrap();
    assert_eq!(link_entries(&d), links);
    d.remove_layer(&lid("grand")).unwrap();
    assert_eq!(link_entries(&d), links - 1);
}

#[test]
fn new_reads_the_store_configuration() {
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = options(tmp.path());
    let d = OverlayDriver::new(&opts).unwrap();
    assert!(!d.whiteout_is_aufs());
    assert_eq!(d.default_mount_options(), ["nodev"]);
    assert_eq!(d.home(), tmp.path().join("graph/overlay"));
    assert_eq!(d.runhome(), tmp.path().join("run/overlay"));
    assert!(!d.home().exists(), "new() creates nothing");

    fs::create_dir_all(d.home()).unwrap();
    fs::write(d.home().join(".has-mount-program"), "true").unwrap();
    assert!(OverlayDriver::new(&opts).unwrap().whiteout_is_aufs());
    fs::write(d.home().join(".has-mount-program"), "maybe").unwrap();
    let err = OverlayDriver::new(&opts).unwrap_err();
    assert!(
        matches!(err, LayoutError::BadMountProgramFlag { .. }),
        "{err}"
    );
    fs::write(d.home().join(".has-mount-program"), "false\n").unwrap();

    opts.driver_options = vec!["overlay.mountopt=nodev,metacopy=on".into()];
    let d = OverlayDriver::new(&opts).unwrap();
    assert_eq!(d.default_mount_options(), ["nodev", "metacopy=on"]);

    opts.driver_options = vec!["overlay.skip_mount_home=perhaps".into()];
    let err = OverlayDriver::new(&opts).unwrap_err();
    assert!(matches!(err, LayoutError::BadDriverOption { .. }), "{err}");

    opts.driver_options = vec!["overlay.mount_program=/usr/bin/fuse-overlayfs".into()];
    let err = OverlayDriver::new(&opts).unwrap_err();
    assert!(
        matches!(err, LayoutError::MountProgramUnsupported { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("not supported yet"), "{err}");
}

#[test]
fn mount_refuses_aufs_stores_and_bad_options() {
    let tmp = tempfile::tempdir().unwrap();
    let d = driver(tmp.path());
    d.create_layer(&lid("base"), None, me()).unwrap();
    let req = MountRequest {
        options: vec!["bind".into()],
        ..Default::default()
    };
    let err = d.mount(&lid("base"), &req).unwrap_err();
    assert!(matches!(err, LayoutError::InvalidMountOption { ref option, .. } if option == "bind"));
    let err = d.mount(&lid("nope"), &MountRequest::default()).unwrap_err();
    assert!(matches!(err, LayoutError::LayerNotFound { .. }), "{err}");

    fs::write(d.home().join(".has-mount-program"), "true").unwrap();
    let aufs = driver(tmp.path());
    let err = aufs
        .mount(&lid("base"), &MountRequest::default())
        .unwrap_err();
    assert!(
        matches!(err, LayoutError::MountProgramRequired { .. }),
        "{err}"
    );
}

#[test]
fn options_split_into_flags_and_overlay_options() {
    let opts: Vec<String> = [
        "nodev",
        "nosuid",
        "ro",
        "metacopy=on",
        "volatile",
        "defaults",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let parsed = parse_options("x", &opts).unwrap();
    assert_eq!(
        parsed.flags,
        MountFlags::NODEV | MountFlags::NOSUID | MountFlags::RDONLY
    );
    assert!(parsed.read_only);
    assert_eq!(parsed.fs_options, ["metacopy=on", "volatile"]);
    let parsed = parse_options("x", &["nodev".into(), "dev".into()]).unwrap();
    assert!(parsed.flags.is_empty());
    for bad in ["rbind", "shared", "remount", "mand"] {
        assert!(parse_options("x", &[bad.into()]).is_err(), "{bad}");
    }
}

#[test]
fn mount_paths_are_escaped_for_overlayfs() {
    let mut data = Vec::new();
    push_escaped(&mut data, Path::new("/a:b,c\\d/e"));
    assert_eq!(data, b"/a\\:b\\,c\\\\d/e");
}

#[test]
fn mountinfo_mount_points_are_decoded() {
    assert_eq!(
        decode_octal_escapes(b"/a\\040b\\011c\\012d\\134e"),
        b"/a b\tc\nd\\e"
    );
    assert_eq!(decode_octal_escapes(b"/trailing\\04"), b"/trailing\\04");
    assert_eq!(decode_octal_escapes(b"/bad\\999"), b"/bad\\999");
    let table = b"22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
        42 27 254:0 /tmp/g/overlay /tmp/my\\040store/overlay rw - ext4 /dev/vda rw\n";
    assert_eq!(
        parse_mount_points(table),
        [
            PathBuf::from("/proc"),
            PathBuf::from("/tmp/my store/overlay")
        ]
    );
    assert!(is_mounted(Path::new("/proc")));
    assert!(!is_mounted(Path::new("/proc/self")));
    assert!(!is_mounted(Path::new("/does/not/exist")));
}

/// A layer id for a test.
fn lid(id: &str) -> layerstore::LayerId {
    layerstore::LayerId::parse(id).unwrap()
}

#[test]
fn an_empty_lower_layers_file_falls_back_to_lower() {
    // What a create killed between creating the file and writing it leaves.
    let tmp = tempfile::tempdir().unwrap();
    let d = driver(tmp.path());
    chain(&d);
    fs::write(d.home().join("grand/lower-layers"), "").unwrap();
    let ids: Vec<String> = d
        .lower_layer_ids(&lid("grand"))
        .unwrap()
        .into_iter()
        .map(|l| l.to_string())
        .collect();
    assert_eq!(ids, ["child", "base"]);
}

#[test]
fn lower_files_that_disagree_refuse_a_mount_and_both_count_for_gc() {
    let tmp = tempfile::tempdir().unwrap();
    let d = driver(tmp.path());
    chain(&d);
    let home = d.home().to_owned();
    d.create_layer(&lid("other"), None, me()).unwrap();
    // lower-layers lies: it names `other`, while lower names child and base.
    fs::write(home.join("grand/lower-layers"), "other").unwrap();
    let err = d.lower_layer_ids(&lid("grand")).unwrap_err();
    assert!(
        matches!(err, LayoutError::LowerFilesDisagree { .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("grand") && msg.contains("other") && msg.contains("child:base"),
        "{msg}"
    );
    assert!(d.lower_dirs(&lid("grand")).is_err());
    assert_eq!(
        d.stacked_layer_ids(&lid("grand")).unwrap(),
        ["other", "child", "base"]
    );
    // An empty lower (v1.43 mounts no lower layer) disagrees with a
    // lower-layers that names some.
    let lower = read(home.join("grand/lower"));
    fs::write(home.join("grand/lower-layers"), "child:base").unwrap();
    fs::write(home.join("grand/lower"), "").unwrap();
    assert!(matches!(
        d.lower_layer_ids(&lid("grand")),
        Err(LayoutError::LowerFilesDisagree { .. })
    ));
    fs::write(home.join("grand/lower"), lower).unwrap();
    fs::write(home.join("grand/lower-layers"), "other").unwrap();
    // Agreeing files, or a lower whose links are lost: lower-layers decides.
    fs::write(home.join("grand/lower-layers"), "child:base").unwrap();
    assert_eq!(d.lower_layer_ids(&lid("grand")).unwrap(), ["child", "base"]);
    let base_link = read(home.join("base/link"));
    fs::remove_file(home.join("l").join(&base_link)).unwrap();
    fs::remove_file(home.join("base/link")).unwrap();
    assert_eq!(d.lower_layer_ids(&lid("grand")).unwrap(), ["child", "base"]);
    // gc cannot tell what the lost link named: an error, not a guess.
    assert!(d.stacked_layer_ids(&lid("grand")).is_err());
}

#[test]
fn links_with_odd_names_can_be_removed_as_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let d = driver(tmp.path());
    chain(&d);
    let l = d.home().join("l");
    for odd in ["A:B", "x,y", "esc\u{1b}[2J"] {
        std::os::unix::fs::symlink("../gone/diff", l.join(odd)).unwrap();
        assert!(d.links().unwrap().iter().any(|e| e.name == odd));
        assert!(d.link_mtime(odd).is_some());
        d.remove_link(odd).unwrap();
        assert!(l.join(odd).symlink_metadata().is_err(), "{odd:?}");
    }
    for bad in ["", ".", "..", "../base"] {
        assert!(d.remove_link(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn a_broken_trash_is_replaced_not_obeyed() {
    // The trash a symlink to the victim; then its diff a file and its link
    // file a symlink to the victim: each layer removal still works, and
    // the victim is untouched.
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim");
    fs::create_dir(&victim).unwrap();
    fs::write(victim.join("precious"), b"keep").unwrap();
    let d = driver(tmp.path());
    chain(&d);
    let trash = d.home().join(".layerstore-trash");
    std::os::unix::fs::symlink(&victim, &trash).unwrap();
    d.remove_layer(&lid("grand")).unwrap();
    assert!(!d.home().join("grand").exists());
    fs::create_dir(&trash).unwrap();
    fs::write(trash.join("diff"), b"not a directory").unwrap();
    std::os::unix::fs::symlink(victim.join("precious"), trash.join("link")).unwrap();
    d.remove_layer(&lid("child")).unwrap();
    assert!(!d.home().join("child").exists());
    assert!(!trash.exists(), "an empty trash goes");
    assert_eq!(fs::read(victim.join("precious")).unwrap(), b"keep");
    assert_eq!(fs::read_dir(&victim).unwrap().count(), 1);
}
