//! The parser against podman's own splitting of command lines.
use super::*;

fn p(args: &str) -> Result<RunLine, UsageError> {
    parse(&args.split(' ').map(str::to_owned).collect::<Vec<_>>())
}

#[test]
fn flags_image_and_command_as_podman_splits_them() {
    let line = p("-it --rm -e A=1 -eB=2 --env=C=3 --name n -h box img sh -c -x --rm").unwrap();
    assert_eq!(line.image, "img");
    assert_eq!(line.command, ["sh", "-c", "-x", "--rm"]);
    assert_eq!(line.values("env"), ["A=1", "B=2", "C=3"]);
    assert!(line.is_set("interactive") && line.is_set("tty") && line.is_set("rm"));
    assert_eq!(line.last("hostname"), Some("box"));
    assert_eq!(line.last("name"), Some("n"));
    assert_eq!(
        line.podman_args(&[]),
        [
            "--interactive=true",
            "--tty=true",
            "--rm=true",
            "--env=A=1",
            "--env=B=2",
            "--env=C=3",
            "--name=n",
            "--hostname=box"
        ]
    );
}

#[test]
fn combined_shorts_end_with_a_value_and_booleans_take_false() {
    let line = p("-dte K=V --rm=false --nocache -u=5 img").unwrap();
    assert!(line.is_set("detach") && line.is_set("tty"));
    assert_eq!(line.values("env"), ["K=V"]);
    assert!(!line.is_set("rm") && line.given("rm"));
    assert_eq!(line.last("user"), Some("5"));
    assert!(line.is_set("nocache"));
    assert!(!line.podman_args(&[]).iter().any(|a| a.contains("nocache")));
}

#[test]
fn double_dash_ends_the_flags() {
    let line = p("--rm -- -img- cmd").unwrap();
    assert_eq!(
        (line.image.as_str(), line.command.clone()),
        ("-img-", vec!["cmd".to_owned()])
    );
    let line = p("--rm").unwrap();
    assert_eq!(line.image, "");
}

#[test]
fn podmans_messages_for_what_it_refuses() {
    assert_eq!(p("--bogus img").unwrap_err().0, "unknown flag: --bogus");
    assert_eq!(
        p("-itZ img").unwrap_err().0,
        "unknown shorthand flag: 'Z' in -itZ"
    );
    assert_eq!(p("--name").unwrap_err().0, "flag needs an argument: --name");
    assert_eq!(p("-e").unwrap_err().0, "flag needs an argument: 'e' in -e");
    assert!(p("--rm=maybe img")
        .unwrap_err()
        .0
        .contains("invalid argument \"maybe\""));
}

#[test]
fn an_equals_sign_alone_is_a_shorthands_value_as_in_pflag() {
    let line = p("-u= img cmd").unwrap();
    assert_eq!((line.last("user"), line.image.as_str()), (Some("="), "img"));
    assert_eq!(p("-u=5 img").unwrap().last("user"), Some("5"));
    assert_eq!(
        p("-d= img").unwrap_err().0,
        "unknown shorthand flag: '=' in -d="
    );
    assert!(!p("-d=false img").unwrap().is_set("detach"));
}

#[test]
fn podmans_old_flag_names_are_its_flags() {
    let line = p("--net=none --purge --dns-opt x --override-arch arm64 img").unwrap();
    assert_eq!(line.last("network"), Some("none"));
    assert!(line.is_set("rm"));
    assert_eq!(line.last("dns-option"), Some("x"));
    assert_eq!(line.last("arch"), Some("arm64"));
    assert_eq!(line.image, "img");
    assert!(line.podman_args(&[]).contains(&"--rm=true".to_owned()));
}

#[test]
fn global_flags_after_run_are_known() {
    let line = p("--root /g --storage-opt a=b --runtime crun img").unwrap();
    assert_eq!(line.last("root"), Some("/g"));
    assert_eq!(line.values("storage-opt"), ["a=b"]);
    assert_eq!(line.last("runtime"), Some("crun"));
}

#[test]
fn lists_split_as_podman_splits_them() {
    let line = p("--uidmap 0:1:1,5:6:1 --uidmap 9:9:1 img").unwrap();
    assert_eq!(line.list_values("uidmap"), ["0:1:1", "5:6:1", "9:9:1"]);
    assert_eq!(csv_record(r#""a,b",c"#), ["a,b", "c"]);
    for v in [
        "plain",
        "a,b",
        r#"say "x""#,
        "two\nlines",
        " lead",
        "[\"j\",\"s\"]",
    ] {
        assert_eq!(csv_record(&csv_field(v)), [v], "{v:?}");
    }
}

#[test]
fn every_shorthand_is_unique() {
    let mut seen = std::collections::HashSet::new();
    for (name, s, _) in FLAGS {
        assert!(seen.insert(format!("--{name}")), "--{name} twice");
        if let Some(c) = s {
            assert!(seen.insert(format!("-{c}")), "-{c} twice");
        }
    }
}
