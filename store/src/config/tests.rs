//! Unit tests of `config`.

use super::paths::expand_vars;
use super::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

const SYSTEM: &str = r#"
[storage]
driver = "overlay"
runroot = "/run/sys"
graphroot = "/var/sys"
[storage.options]
pull_options = {enable_partial_images = "false"}
[storage.options.overlay]
mountopt = "nodev"
ignore_chown_errors = "true"
[storage.options.thinpool]
"#;

fn put(root: &Path, rel: &str, text: &str) -> PathBuf {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, text).unwrap();
    path
}

fn env(root: &Path, euid: u32, vars: &[(&str, &Path)]) -> Env {
    let vars = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()));
    Env {
        euid,
        vars: vars.collect(),
        root_prefix: root.to_path_buf(),
    }
}

fn ok(env: &Env) -> StoreOptions {
    resolve(env, &Overrides::default()).unwrap()
}

fn paths(list: &[&str]) -> Vec<PathBuf> {
    list.iter().map(PathBuf::from).collect()
}

/// A rootless environment whose runtime dir is `<root>/xdg-run`.
fn rootless(root: &Path, extra: &[(&str, &Path)]) -> Env {
    fs::create_dir_all(root.join("xdg-run")).unwrap();
    let mut e = env(root, 4242, extra);
    e.vars.insert(
        "XDG_RUNTIME_DIR".into(),
        root.join("xdg-run").to_str().unwrap().into(),
    );
    e.vars
        .insert("HOME".into(), root.join("home").to_str().unwrap().into());
    e
}

#[test]
fn rootful_defaults_without_a_file() {
    let root = tempfile::tempdir().unwrap();
    let o = ok(&env(root.path(), 0, &[]));
    assert_eq!(o.graph_root, Path::new(DEFAULT_GRAPH_ROOT));
    assert_eq!(o.run_root, Path::new(DEFAULT_RUN_ROOT));
    assert_eq!(
        (o.driver.as_str(), o.rootless, o.config_file),
        ("overlay", false, None)
    );
    assert!(o.driver_options.is_empty() && o.additional_image_stores.is_empty());
}

#[test]
fn etc_wins_over_usr_share() {
    let root = tempfile::tempdir().unwrap();
    put(root.path(), "usr/share/containers/storage.conf", SYSTEM);
    let o = ok(&env(root.path(), 0, &[]));
    assert_eq!(o.graph_root, Path::new("/var/sys"));
    assert_eq!(o.mount_options(), Some("nodev"));
    let etc = put(
        root.path(),
        "etc/containers/storage.conf",
        "[storage]\ngraphroot = \"/g\"",
    );
    let o = ok(&env(root.path(), 0, &[]));
    assert_eq!(
        (o.graph_root.as_path(), o.run_root.as_path()),
        (Path::new("/g"), Path::new(DEFAULT_RUN_ROOT))
    );
    assert_eq!((o.driver.as_str(), o.config_file), ("overlay", Some(etc)));
    assert!(o.driver_options.is_empty());
    // c/storage also prefers $XDG_CONFIG_HOME/containers/storage.conf for root.
    let xdg = put(
        root.path(),
        "cfg/containers/storage.conf",
        "[storage]\ngraphroot = \"/x\"",
    );
    let o = ok(&env(
        root.path(),
        0,
        &[("XDG_CONFIG_HOME", &root.path().join("cfg"))],
    ));
    assert_eq!(
        (o.graph_root, o.config_file),
        (PathBuf::from("/x"), Some(xdg))
    );
}

#[test]
fn containers_storage_conf_wins_and_must_exist() {
    let root = tempfile::tempdir().unwrap();
    put(root.path(), "etc/containers/storage.conf", SYSTEM);
    let mine = put(
        root.path(),
        "mine.conf",
        "[storage]\ngraphroot = \"/mine\"\nrunroot = \"/r\"",
    );
    let o = ok(&env(root.path(), 0, &[(STORAGE_CONF_ENV, &mine)]));
    assert_eq!(
        (o.graph_root, o.config_file),
        (PathBuf::from("/mine"), Some(mine))
    );
    let gone = root.path().join("gone.conf");
    let err = resolve(
        &env(root.path(), 0, &[(STORAGE_CONF_ENV, &gone)]),
        &Overrides::default(),
    );
    assert!(
        matches!(&err, Err(ConfigError::Missing { path }) if *path == gone),
        "{err:?}"
    );
    assert!(err.unwrap_err().to_string().contains("gone.conf"));
}

#[test]
fn rootless_defaults_with_xdg_vars() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let e = rootless(
        r,
        &[
            ("XDG_DATA_HOME", &r.join("data")),
            ("XDG_CONFIG_HOME", &r.join("cfg")),
        ],
    );
    let o = ok(&e);
    assert_eq!(o.graph_root, r.join("data/containers/storage"));
    assert_eq!(o.run_root, r.join("xdg-run/containers"));
    // No file at all: c/storage gives a rootless user "vfs".
    assert_eq!(
        (o.driver.as_str(), o.rootless, o.config_file),
        ("vfs", true, None)
    );
    let user = put(
        r,
        "cfg/containers/storage.conf",
        "[storage]\ndriver = \"overlay\"",
    );
    let o = ok(&e);
    assert_eq!((o.driver.as_str(), o.config_file), ("overlay", Some(user)));
    assert_eq!(o.graph_root, r.join("data/containers/storage"));
}

#[test]
fn rootless_defaults_without_xdg_vars() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    fs::create_dir_all(r.join("tmp")).unwrap();
    let me = rustix::process::geteuid().as_raw().to_string();
    // As inside `podman unshare`: rootless uid 4242, owner checks against our euid.
    let mut e = env(
        r,
        0,
        &[
            ("HOME", &r.join("home")),
            ("_CONTAINERS_USERNS_CONFIGURED", Path::new("1")),
        ],
    );
    e.vars
        .insert("_CONTAINERS_ROOTLESS_UID".into(), "4242".into());
    e.euid = me.parse().unwrap();
    let o = ok(&e);
    let tmp = r.join("tmp/containers-user-4242");
    assert_eq!(o.run_root, tmp.join("containers"));
    assert_eq!(fs::metadata(&tmp).unwrap().mode() & 0o777, 0o700);
    assert_eq!(o.graph_root, r.join("home/.local/share/containers/storage"));
    assert_eq!(
        ok(&e).run_root,
        tmp.join("containers"),
        "an existing own dir is reused"
    );
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(ok(&e).run_root, r.join("home/rundir/containers"));
    e.vars.remove("HOME");
    let err = resolve(&e, &Overrides::default()).unwrap_err();
    assert!(matches!(err, ConfigError::NoHome { .. }), "{err}");
}

#[test]
fn rootless_takes_driver_but_not_roots_from_the_system_file() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let sys = put(r, "etc/containers/storage.conf", SYSTEM);
    let o = ok(&rootless(r, &[]));
    assert_eq!(o.graph_root, r.join("home/.local/share/containers/storage"));
    assert_eq!(o.run_root, r.join("xdg-run/containers"));
    assert_eq!((o.driver.as_str(), o.config_file), ("overlay", Some(sys)));
    assert_eq!(
        o.driver_options,
        ["overlay.ignore_chown_errors=true"],
        "mountopt is not inherited"
    );
}

#[test]
fn rootless_storage_path_expansion() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let text =
        "[storage]\ndriver = \"btrfs\"\nrootless_storage_path = \"$HOME/st/$UID/${USER}/x/../y\"";
    put(r, "usr/share/containers/storage.conf", text);
    let mut e = rootless(r, &[]);
    e.vars.insert("USER".into(), "ann".into());
    assert_eq!(ok(&e).graph_root, r.join("home/st/4242/ann/y"));
    assert_eq!(ok(&e).driver, "btrfs");
    // A per-user file without graphroot uses its own rootless_storage_path.
    let user = "[storage]\nrootless_storage_path = \"/srv/$USER\"\nrunroot = \"/run/$UID\"";
    put(r, "home/.config/containers/storage.conf", user);
    let o = ok(&e);
    assert_eq!(
        (o.graph_root, o.run_root),
        (PathBuf::from("/srv/ann"), PathBuf::from("/run/4242"))
    );
}

#[test]
fn overlay_options_are_flattened() {
    let root = tempfile::tempdir().unwrap();
    let text = r#"[storage]
driver = "overlay"
[storage.options]
additionalimagestores = ["/ro/a", "/ro/b"]
mountopt = "nodev"
size = "10G"
force_mask = 0o700
[storage.options.overlay]
mountopt = "nodev,metacopy=on"
mount_program = "/usr/bin/fuse-overlayfs"
skip_mount_home = "true"
"#;
    put(root.path(), "etc/containers/storage.conf", text);
    let o = ok(&env(root.path(), 0, &[]));
    let want = [
        "overlay.imagestore=/ro/a",
        "overlay.imagestore=/ro/b",
        "overlay.size=10G",
        "overlay.force_mask=700",
        "overlay.mountopt=nodev",
        "overlay.mount_program=/usr/bin/fuse-overlayfs",
        "overlay.mountopt=nodev,metacopy=on",
        "overlay.size=10G",
        "overlay.skip_mount_home=true",
        "overlay.force_mask=700",
    ];
    assert_eq!(o.driver_options, want);
    assert_eq!(o.mount_options(), Some("nodev,metacopy=on"));
    assert_eq!(
        o.mount_program(),
        Some(PathBuf::from("/usr/bin/fuse-overlayfs"))
    );
    assert_eq!(
        (o.driver_option("SIZE"), o.driver_option("inodes")),
        (Some("10G"), None)
    );
    assert_eq!(o.additional_image_stores, paths(&["/ro/a", "/ro/b"]));
}

#[test]
fn overrides_take_precedence() {
    let root = tempfile::tempdir().unwrap();
    put(root.path(), "etc/containers/storage.conf", SYSTEM);
    let e = env(root.path(), 0, &[]);
    let run = Overrides {
        runroot: Some("/r2".into()),
        ..Overrides::default()
    };
    let o = resolve(&e, &run).unwrap();
    assert_eq!(
        (o.graph_root.as_path(), o.run_root.as_path()),
        (Path::new("/var/sys"), Path::new("/r2"))
    );
    assert_eq!(
        o.mount_options(),
        Some("nodev"),
        "--runroot keeps the options"
    );
    // podman: --root and --storage-driver drop the configured driver options.
    let root_flag = Overrides {
        root: Some("/g2".into()),
        ..Overrides::default()
    };
    let o = resolve(&e, &root_flag).unwrap();
    assert_eq!(
        (o.graph_root.as_path(), o.driver_options.len()),
        (Path::new("/g2"), 0)
    );
    let driver = Overrides {
        storage_driver: Some("vfs".into()),
        ..Overrides::default()
    };
    let o = resolve(&e, &driver).unwrap();
    assert_eq!((o.driver.as_str(), o.driver_options.len()), ("vfs", 0));
}

#[test]
fn storage_opts_replace_the_options() {
    let root = tempfile::tempdir().unwrap();
    put(root.path(), "etc/containers/storage.conf", SYSTEM);
    let e = env(root.path(), 0, &[]);
    let with = |opts: &[&str]| Overrides {
        root: Some("/g".into()),
        storage_opts: opts.iter().map(|s| s.to_string()).collect(),
        ..Overrides::default()
    };
    let o = resolve(
        &e,
        &with(&[
            "overlay.mountopt=nodev,metacopy=on",
            "overlay.imagestore=/ro",
        ]),
    )
    .unwrap();
    assert_eq!(
        o.driver_options,
        [
            "overlay.mountopt=nodev,metacopy=on",
            "overlay.imagestore=/ro"
        ]
    );
    assert_eq!(o.additional_image_stores, paths(&["/ro"]));
    let o = resolve(
        &e,
        &Overrides {
            storage_opts: vec![String::new()],
            ..Overrides::default()
        },
    );
    assert!(
        o.unwrap().driver_options.is_empty(),
        "a single empty --storage-opt clears"
    );
    let err = resolve(&e, &with(&["overlay.mountopt"])).unwrap_err();
    assert!(matches!(&err, ConfigError::BadStorageOpt { opt } if opt == "overlay.mountopt"));
    let err = resolve(&e, &with(&["overlay.imagestore=rel/dir"])).unwrap_err();
    assert!(matches!(
        err,
        ConfigError::NotAbsolute {
            what: "additional image store",
            ..
        }
    ));
}

#[test]
fn overlay2_is_normalised() {
    let root = tempfile::tempdir().unwrap();
    let text = "[storage]\ndriver = \"overlay2\"\n[storage.options]\nmountopt = \"nodev\"";
    put(root.path(), "etc/containers/storage.conf", text);
    let e = env(root.path(), 0, &[]);
    let o = ok(&e);
    assert_eq!(o.driver, "overlay");
    // c/storage prefixes generic keys with the driver as written.
    assert_eq!(
        o.driver_options,
        ["overlay2.mountopt=nodev", "overlay.mountopt=nodev"]
    );
    assert_eq!(o.mount_options(), Some("nodev"));
    let flag = Overrides {
        storage_driver: Some("overlay2".into()),
        ..Overrides::default()
    };
    assert_eq!(resolve(&e, &flag).unwrap().driver, "overlay");
}

#[test]
fn storage_driver_and_storage_opts_env() {
    let root = tempfile::tempdir().unwrap();
    put(root.path(), "etc/containers/storage.conf", SYSTEM);
    let mut e = env(root.path(), 0, &[]);
    e.vars.insert("STORAGE_DRIVER".into(), "vfs".into());
    e.vars
        .insert("STORAGE_OPTS".into(), "vfs.ignore_chown_errors=true".into());
    let o = ok(&e);
    assert_eq!(
        (o.driver.as_str(), o.driver_options.as_slice()),
        (
            "vfs",
            ["vfs.ignore_chown_errors=true".to_owned()].as_slice()
        )
    );
}

#[test]
fn malformed_toml_names_the_file_and_line() {
    let root = tempfile::tempdir().unwrap();
    let path = put(
        root.path(),
        "etc/containers/storage.conf",
        "[storage]\ndriver = \"overlay\n",
    );
    let err = resolve(&env(root.path(), 0, &[]), &Overrides::default()).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(&err, ConfigError::Parse { path: p, .. } if *p == path),
        "{text}"
    );
    assert!(
        text.starts_with(path.to_str().unwrap()) && text.contains("line 2"),
        "{text}"
    );
}

#[test]
fn wrong_type_names_the_file_and_key() {
    let root = tempfile::tempdir().unwrap();
    let path = put(
        root.path(),
        "etc/containers/storage.conf",
        "[storage.options]\nadditionalimagestores = \"/x\"\n",
    );
    let text = resolve(&env(root.path(), 0, &[]), &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(text.contains(path.to_str().unwrap()), "{text}");
    assert!(
        text.contains("storage.options.additionalimagestores"),
        "{text}"
    );
}

#[test]
fn keys_match_case_insensitively_and_unknown_keys_are_ignored() {
    let root = tempfile::tempdir().unwrap();
    let text = "[storage]\nDriver = \"overlay\"\nGraphRoot = \"/G\"\nfuture_key = 3\n[storage.options.overlay]\nMountOpt = \"nodev\"";
    put(root.path(), "etc/containers/storage.conf", text);
    let o = ok(&env(root.path(), 0, &[]));
    assert_eq!(
        (o.graph_root.as_path(), o.mount_options()),
        (Path::new("/G"), Some("nodev"))
    );
}

#[test]
fn relative_paths() {
    let root = tempfile::tempdir().unwrap();
    let e = env(root.path(), 0, &[]);
    let flags = Overrides {
        root: Some("a/./b/../st".into()),
        runroot: Some("run".into()),
        ..Overrides::default()
    };
    let o = resolve(&e, &flags).unwrap();
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(
        (o.graph_root, o.run_root),
        (cwd.join("a/st"), cwd.join("run"))
    );
    put(
        root.path(),
        "etc/containers/storage.conf",
        "[storage]\ngraphroot = \"rel\"",
    );
    let err = resolve(&e, &Overrides::default()).unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::NotAbsolute {
                what: "graphroot",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn go_expansion_and_clean() {
    let env = |n: &str| {
        if n == "A" {
            "x".to_owned()
        } else {
            String::new()
        }
    };
    let cases = [
        ("$A/${A}b", "x/xb"),
        ("$", "$"),
        ("a$", "a$"),
        ("${}z", "z"),
        ("$%", "$%"),
        ("$B.", "."),
    ];
    for (input, want) in cases {
        assert_eq!(expand_vars(input, env), want, "{input}");
    }
    for (input, want) in [
        ("/a//b/./../c/", "/a/c"),
        ("/../x", "/x"),
        ("../a/../..", "../.."),
        ("", "."),
    ] {
        assert_eq!(clean(Path::new(input)), Path::new(want), "{input}");
    }
}

#[test]
fn this_machines_usr_share_storage_conf_parses() {
    let path = Path::new("/usr/share/containers/storage.conf");
    if !path.exists() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    put(
        root.path(),
        "usr/share/containers/storage.conf",
        &fs::read_to_string(path).unwrap(),
    );
    let o = ok(&env(root.path(), 0, &[]));
    assert!(o.graph_root.is_absolute() && o.run_root.is_absolute());
    assert!(!o.driver.is_empty());
}

#[test]
fn auto_userns_keys_and_owner() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let defaults = ok(&env(root, 0, &[])).auto_userns;
    assert_eq!(defaults.owner.name, "containers");
    assert_eq!((defaults.min_size, defaults.max_size), (1024, 65536));
    assert_eq!(defaults.subuid, root.join("etc/subuid"));
    assert_eq!(defaults.subgid, root.join("etc/subgid"));
    assert!(!defaults.rootless);
    let conf = put(
        root,
        "etc/containers/storage.conf",
        "[storage]\ndriver = \"overlay\"\n[storage.options]\nroot-auto-userns-user = \"pool\"\n\
         Auto-Userns-Min-Size = 2000\nauto-userns-max-size = 60000\n",
    );
    let set = ok(&env(root, 0, &[])).auto_userns;
    assert_eq!(set.owner.name, "pool");
    assert_eq!((set.min_size, set.max_size), (2000, 60000));
    assert_eq!(set.config_file.as_deref(), Some(conf.as_path()));
    put(
        root,
        "etc/containers/storage.conf",
        "[storage.options]\nauto-userns-min-size = 10\n",
    );
    assert_eq!(ok(&env(root, 0, &[])).auto_userns.config_file, None);
    // Rootless: the caller, by $USER or by its uid's name; the system
    // file's keys do not apply without a user file (as in c/storage).
    put(
        root,
        "etc/passwd",
        "root:x:0:0::/root:/bin/sh\nalice:x:4242:4242::/home/alice:/bin/sh\n",
    );
    let r = ok(&rootless(root, &[])).auto_userns;
    assert_eq!(r.owner.name, "alice");
    assert_eq!(r.owner.uid, Some(4242));
    assert!(r.rootless);
    assert_eq!((r.min_size, r.max_size), (1024, 65536));
    let named = ok(&rootless(root, &[("USER", Path::new("bob"))])).auto_userns;
    assert_eq!(named.owner.name, "bob");
    let bad = put(
        root,
        "bad.conf",
        "[storage.options]\nauto-userns-max-size = \"big\"\n",
    );
    let e = resolve(
        &env(root, 0, &[("CONTAINERS_STORAGE_CONF", &bad)]),
        &Overrides::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("bad.conf") && e.contains("auto-userns-max-size"),
        "{e}"
    );
}
