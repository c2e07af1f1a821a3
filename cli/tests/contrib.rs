//! The files in `contrib/` that a host installs: the OCI hook's
//! configuration is what `layerstore oci-hook --print-config` prints for
//! /usr/bin/layerstore, and the boot unit is one systemd accepts.

use std::process::Command;

use layerstore_test_support::{require_privileged, run_ok, workspace_root};
use serde_json::Value;

const LAYERSTORE: &str = env!("CARGO_BIN_EXE_layerstore");

#[test]
fn the_hook_config_in_contrib_is_the_printed_one() {
    let printed = run_ok(Command::new(LAYERSTORE).args(["oci-hook", "--print-config"]));
    let mut printed: Value = serde_json::from_slice(&printed.stdout).unwrap();
    printed["hook"]["path"] = Value::String("/usr/bin/layerstore".into());
    let file = std::fs::read(workspace_root().join("contrib/oci-hooks.d/layerstore.json")).unwrap();
    let file: Value = serde_json::from_slice(&file).unwrap();
    assert_eq!(file, printed);
}

#[test]
#[ignore = "needs systemd-analyze (scripts/install-deps.sh installs systemd)"]
fn the_boot_unit_verifies() {
    require_privileged(&["systemd-analyze"]);
    let unit = std::fs::read_to_string(
        workspace_root().join("contrib/systemd/layerstore-remount.service"),
    )
    .unwrap();
    assert!(
        unit.contains("ExecStart=/usr/bin/layerstore remount"),
        "{unit}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("layerstore-remount.service");
    std::fs::write(&path, unit.replace("/usr/bin/layerstore", LAYERSTORE)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // Units it names that this machine lacks (podman's) are not errors of ours.
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("layerstore-remount"))
        .filter(|l| !l.contains("podman"))
        .collect();
    assert!(out.status.success() && ours.is_empty(), "{err}");
}
