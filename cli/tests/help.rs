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
