//! The scene of the podman-mode tests: a private store with a busybox
//! image, its own containers.conf and layerstore's OCI hook, and helpers
//! to look at it.

#![allow(dead_code)]

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use layerstore_test_support::{run_ok, PodmanStore};
use serde_json::Value;

pub const LAYERSTORE: &str = env!("CARGO_BIN_EXE_layerstore");

/// A busybox system: root, a user bob (1005:5), the group tty (5).
pub fn busybox() -> String {
    layerstore_test_support::images::busybox_system(
        &["sh", "stat", "id", "cat", "ls", "grep", "sleep", "true"],
        &[
            "f etc/passwd 0644 0:0 root:x:0:0:root:/root:/bin/sh\\nbob:x:1005:5::/:/bin/sh\\n",
            "f etc/group 0644 0:0 root:x:0:\\ntty:x:5:\\n",
        ],
    )
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_owned()
}

/// A store with the busybox image, its private containers.conf and a hooks
/// directory holding layerstore's hook.
pub struct Scene {
    pub store: PodmanStore,
    pub conf: PathBuf,
    _hooks: tempfile::TempDir,
}

impl Scene {
    pub fn new(store: PodmanStore) -> Scene {
        let hooks = tempfile::tempdir().unwrap();
        let conf = store.private_conf(hooks.path());
        let hook = run_ok(Command::new(LAYERSTORE).args(["oci-hook", "--print-config"]));
        fs::write(hooks.path().join("layerstore.json"), hook.stdout).unwrap();
        store.import_layer_spec(LAYERSTORE, &busybox(), "bb");
        Scene {
            store,
            conf,
            _hooks: hooks,
        }
    }

    pub fn podman(&self) -> Command {
        let mut cmd = self.store.podman();
        cmd.env("CONTAINERS_CONF", &self.conf);
        cmd
    }

    pub fn layerstore(&self) -> Command {
        let mut cmd = self.store.layerstore(LAYERSTORE);
        cmd.env("CONTAINERS_CONF", &self.conf);
        cmd
    }

    /// `layerstore run ARGS`, output captured.
    pub fn run(&self, args: &[&str]) -> Output {
        self.layerstore()
            .arg("run")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("starting layerstore")
    }

    pub fn records(&self, file: &str) -> Vec<Value> {
        match fs::read(self.store.graph.join(file)) {
            Ok(b) => serde_json::from_slice(&b).unwrap(),
            Err(_) => Vec::new(),
        }
    }

    pub fn layers(&self) -> Vec<Value> {
        self.records("overlay-layers/layers.json")
    }

    pub fn containers(&self) -> Vec<Value> {
        self.records("overlay-containers/containers.json")
    }

    /// The containers layerstore made (its create mark in the metadata).
    pub fn storage_containers(&self) -> Vec<Value> {
        self.containers()
            .into_iter()
            .filter(|c| {
                c["metadata"]
                    .as_str()
                    .is_some_and(|m| m.contains("\"layerstore-podman\""))
            })
            .collect()
    }

    /// What must be as before once every container is gone: the record
    /// files and the layer directories and links (podman's own database
    /// and layerstore's runtime shim aside).
    pub fn state(&self) -> (Vec<Value>, Vec<String>) {
        let mut dirs: Vec<String> = fs::read_dir(self.store.graph.join("overlay"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        dirs.sort();
        let mut links: Vec<String> = fs::read_dir(self.store.graph.join("overlay/l"))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        links.sort();
        dirs.extend(links);
        (
            vec![
                Value::Array(self.layers()),
                Value::Array(self.records("overlay-images/images.json")),
                Value::Array(self.containers()),
            ],
            dirs,
        )
    }

    pub fn mounts(&self) -> Vec<String> {
        self.store.mounts_below()
    }

    pub fn gc(&self) -> Value {
        let out = run_ok(self.layerstore().args(["gc", "--json", "--min-age", "0"]));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

pub fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..200 {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}
