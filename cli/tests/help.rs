//! `--help` works for every command, and usage errors exit 2.

use std::process::Command;

const LAYERSTORE: &str = env!("CARGO_BIN_EXE_layerstore");

#[test]
fn help_everywhere() {
    for args in [
        &["--help"][..],
        &["info", "--help"],
        &["layers", "--help"],
        &["images", "--help"],
        &["containers", "--help"],
    ] {
        let out = Command::new(LAYERSTORE).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("Usage: layerstore"), "{args:?}: {text}");
        assert!(text.contains("--root"), "{args:?}: global flags shown");
    }
}

#[test]
fn usage_errors_exit_2() {
    for args in [&["frobnicate"][..], &["layers", "--bogus"], &[]] {
        let out = Command::new(LAYERSTORE).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn run_speaks_podmans_command_line() {
    // Its own help, exit 0, before anything else.
    let out = Command::new(LAYERSTORE)
        .args(["run", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("Usage: layerstore [GLOBAL FLAGS] run"),
        "{text}"
    );
    assert!(
        text.contains("--nocache") && text.contains("--direct"),
        "{text}"
    );
    let out = Command::new(LAYERSTORE)
        .args(["run", "--direct", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8(out.stdout).unwrap().contains("--runtime"));
    // A flag podman does not know: podman's message and exit code, before
    // any store is opened (there is none at this root).
    let dir = tempfile::tempdir().unwrap();
    for (args, expect) in [
        (
            &["run", "--bogus", "img"][..],
            "Error: unknown flag: --bogus",
        ),
        (
            &["run", "-itZ", "img"],
            "Error: unknown shorthand flag: 'Z' in -itZ",
        ),
        (&["run", "--name"], "Error: flag needs an argument: --name"),
        (&["run", "--direct", "--bogus", "img"], "--bogus"),
    ] {
        let out = Command::new(LAYERSTORE)
            .arg("--root")
            .arg(dir.path().join("g"))
            .arg("--runroot")
            .arg(dir.path().join("r"))
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {err}");
        assert!(err.contains(expect), "{args:?}: {err}");
    }
    assert!(!dir.path().join("g").exists(), "nothing was made");
}
