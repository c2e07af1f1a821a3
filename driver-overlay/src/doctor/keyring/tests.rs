use super::*;
use layerstore::records::Container;

/// Captured on this kind of machine (uid 0 and 1001), plus a full uid.
const KEY_USERS_FIXTURE: &str = "    0:     9 8/8 3/1000000 48/25000000
 1001:     2 2/2 2/200 28/20000
100000:   201 200/200 200/200 13000/20000
not a line
";

#[test]
fn parses_key_users_lines() {
    let users = parse_key_users(KEY_USERS_FIXTURE);
    assert_eq!(users.len(), 3);
    assert_eq!(
        users[0],
        KeyUser {
            uid: 0,
            usage: 9,
            nkeys: 8,
            nikeys: 8,
            qnkeys: 3,
            maxkeys: 1_000_000,
            qnbytes: 48,
            maxbytes: 25_000_000
        }
    );
    assert_eq!(users[1].uid, 1001);
    assert_eq!(users[1].status(), Status::Ok);
    assert_eq!(users[2].uid, 100000);
    assert_eq!(users[2].status(), Status::Fail);
    // Bytes alone can warn.
    let bytes = parse_key_users("5: 1 1/1 1/200 15000/20000");
    assert_eq!(bytes[0].status(), Status::Warn);
}

fn container(name: &str, uidmap: &str) -> Container {
    Container {
        id: format!("{name}-id"),
        names: vec![name.to_owned()],
        uidmap: layerstore::idmap::parse_id_map(uidmap).unwrap_or_default(),
        ..Default::default()
    }
}

#[test]
fn quota_checks_cover_root_container_roots_and_full_uids() {
    let users = parse_key_users(KEY_USERS_FIXTURE);
    let quotas = KeyQuotas {
        maxkeys: 200,
        maxbytes: 20_000,
        root_maxkeys: 1_000_000,
        root_maxbytes: 25_000_000,
    };
    let containers = [
        container("contig", "0:300000:65536"),
        container("plain", ""),
    ];
    let checks = quota_checks(&users, &quotas, &containers);
    let ids: Vec<&str> = checks.iter().map(|c| c.id.as_str()).collect();
    // 1001 is below the threshold and no container's root: not listed.
    assert_eq!(
        ids,
        ["keyring.uid.0", "keyring.uid.100000", "keyring.uid.300000"]
    );
    assert_eq!(checks[0].status, Status::Ok);
    assert_eq!(checks[1].status, Status::Fail);
    assert!(
        checks[1].why.contains("Disk quota exceeded"),
        "{}",
        checks[1].why
    );
    assert!(checks[1]
        .fix
        .as_deref()
        .unwrap()
        .contains("--no-new-keyring"));
    // A container root without keys: 0 of the non-root quota.
    assert_eq!(checks[2].status, Status::Ok);
    assert_eq!(checks[2].facts["max_keys"], 200);
    assert_eq!(checks[2].facts["containers"][0], "contig");
    assert!(checks[2].seen.contains("mapped root of contig"));
}

#[test]
fn keyring_setting_variants() {
    let cases: &[(&str, Option<bool>)] = &[
        ("", None),
        ("[containers]\nkeyring = false\n", Some(false)),
        ("[containers]\nkeyring=true", Some(true)),
        ("# comment\n[engine]\nkeyring = false\n", None),
        (
            "[containers]\nnetns = \"none\"\n[engine]\nruntime = \"runc\"\n",
            None,
        ),
        (
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\"]\nkeyring = false # no leaks\n",
            Some(false),
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(keyring_setting(text).unwrap(), *expected, "{text:?}");
    }
    assert!(keyring_setting("[containers\nkeyring = false").is_err());
}

#[test]
fn containers_conf_files_in_podman_order() {
    let list = |dir: &Path| vec![dir.join("10-a.conf"), dir.join("20-b.conf")];
    let root = ConfEnv {
        root: true,
        home: Some("/root".into()),
        ..Default::default()
    };
    assert_eq!(
        root.files(list),
        [
            "/usr/share/containers/containers.conf",
            "/etc/containers/containers.conf",
            "/etc/containers/containers.conf.d/10-a.conf",
            "/etc/containers/containers.conf.d/20-b.conf",
        ]
        .map(PathBuf::from)
    );
    let user = ConfEnv {
        root: false,
        home: Some("/home/u".into()),
        ..Default::default()
    };
    let files = user.files(|_| Vec::new());
    assert_eq!(
        files.last().unwrap(),
        Path::new("/home/u/.config/containers/containers.conf")
    );
    let xdg = ConfEnv {
        root: false,
        xdg_config_home: Some("/x".into()),
        home: Some("/home/u".into()),
        ..Default::default()
    };
    let files = xdg.files(list);
    assert_eq!(
        files[files.len() - 3],
        Path::new("/x/containers/containers.conf")
    );
    assert_eq!(
        files.last().unwrap(),
        Path::new("/x/containers/containers.conf.d/20-b.conf")
    );
    // CONTAINERS_CONF: that file alone, as podman 4.3 reads it.
    let env = ConfEnv {
        containers_conf: Some("/tmp/c.conf".into()),
        root: true,
        ..Default::default()
    };
    assert_eq!(env.files(list), [PathBuf::from("/tmp/c.conf")]);
}

#[test]
fn later_files_win_and_bad_files_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("containers.conf");
    fs::write(&conf, "[containers]\nkeyring = false\n").unwrap();
    let env = ConfEnv {
        containers_conf: Some(conf.clone()),
        root: true,
        ..Default::default()
    };
    let got = read_containers_conf(&env);
    assert!(!got.keyring);
    assert_eq!(got.set_by.as_deref(), Some(conf.as_path()));
    assert_eq!(podman_check(&got).status, Status::Ok);

    fs::write(&conf, "[containers]\nnetns = \"none\"\n").unwrap();
    let got = read_containers_conf(&env);
    assert!(
        got.keyring,
        "podman's default is a new keyring per container"
    );
    let check = podman_check(&got);
    assert_eq!(check.status, Status::Warn);
    assert!(check.fix.unwrap().contains("keyring = false"));

    fs::write(&conf, "[containers\n").unwrap();
    let check = podman_check(&read_containers_conf(&env));
    assert_eq!(check.status, Status::Warn);
    assert!(check.seen.contains("does not parse"), "{}", check.seen);
}

#[test]
fn conf_d_lists_conf_files_sorted() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["20-b.conf", "10-a.conf", "README", "x.conf.bak"] {
        fs::write(tmp.path().join(name), "").unwrap();
    }
    let files = conf_d_files(tmp.path());
    let names: Vec<_> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["10-a.conf", "20-b.conf"]);
    assert!(conf_d_files(&tmp.path().join("missing")).is_empty());
}

#[test]
fn launcher_and_runtimes() {
    assert!(launcher_check(&DoctorOptions::new()).is_none());
    let ok = launcher_check(&DoctorOptions::new().launcher("layerstore run", true)).unwrap();
    assert_eq!(ok.status, Status::Ok);
    let warn = launcher_check(&DoctorOptions::new().launcher("x", false)).unwrap();
    assert_eq!(warn.status, Status::Warn);
    assert_eq!(runtimes_check(&[]).status, Status::Warn);
    let runc = Runtime {
        name: "runc".into(),
        path: "/usr/bin/runc".into(),
        version: Some("runc version 1.1.5+ds1".into()),
    };
    let check = runtimes_check(&[runc]);
    assert_eq!(check.status, Status::Ok);
    assert!(check.seen.contains("runc version 1.1.5"));
}
