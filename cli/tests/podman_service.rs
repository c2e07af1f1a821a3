//! A containers/storage process that keeps running (podman's API service)
//! sees what layerstore saves, because layerstore writes a new last-writer
//! token with every save. The control case shows the test can fail: the same
//! change written without a new token stays invisible to that process.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use layerstore::atomic::write_atomic;
use layerstore::config::StoreOptions;
use layerstore::records::{encode_file, Image};
use layerstore::Store;
use layerstore_test_support::{require_privileged, PodmanStore};
use serde_json::Value;

/// `podman system service` on a unix socket, killed on drop.
struct Service {
    child: Child,
    socket: PathBuf,
}

impl Service {
    fn start(store: &PodmanStore) -> Service {
        let socket = store.run.join("podman.sock");
        let child = store
            .podman()
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting podman system service");
        let started = Instant::now();
        while UnixStream::connect(&socket).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "podman service did not listen"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Service { child, socket }
    }

    /// Image names as the running service reports them.
    fn image_names(&self) -> Vec<String> {
        let mut conn = UnixStream::connect(&self.socket).unwrap();
        conn.write_all(b"GET /v4.0.0/libpod/images/json HTTP/1.0\r\nHost: d\r\n\r\n")
            .unwrap();
        let mut response = Vec::new();
        conn.read_to_end(&mut response).unwrap();
        let text = String::from_utf8(response).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{head}"
        );
        let images: Value = serde_json::from_str(body).unwrap();
        let mut names: Vec<String> = images
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|i| i["Names"].as_array().cloned().unwrap_or_default())
            .map(|n| n.as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn open(store: &PodmanStore) -> Store {
    Store::open(StoreOptions {
        graph_root: store.graph.clone(),
        run_root: store.run.clone(),
        driver: "overlay".into(),
        ..StoreOptions::default()
    })
    .unwrap()
}

fn add_name(images: &mut [Image], name: &str) {
    let base = images
        .iter_mut()
        .find(|i| i.names.iter().any(|n| n == "localhost/base:latest"))
        .expect("the fixture's base image");
    base.names.push(name.to_owned());
}

#[test]
#[ignore = "privileged: needs root, podman, containers-storage and runc"]
fn a_running_podman_sees_layerstore_saves() {
    require_privileged(&["podman", "containers-storage", "runc", "busybox"]);
    let store = PodmanStore::build();
    let service = Service::start(&store);
    let before = service.image_names();
    assert!(
        before.contains(&"localhost/base:latest".to_owned()),
        "{before:?}"
    );

    // Control: the change written without a new token is not noticed.
    let images_json: &Path = &store.graph.join("overlay-images/images.json");
    let ls = open(&store);
    let mut images = ls.snapshot().unwrap().images.to_vec();
    add_name(&mut images, "localhost/unannounced:1");
    write_atomic(images_json, &encode_file(&images), true).unwrap();
    assert_eq!(
        service.image_names(),
        before,
        "podman reloaded without a token change"
    );

    // layerstore's save (under images.lock, new token) is seen at once.
    ls.modify_images(|images| {
        add_name(images, "localhost/announced:1");
        Ok(())
    })
    .unwrap();
    let after = service.image_names();
    assert!(
        after.contains(&"localhost/announced:1".to_owned()),
        "{after:?}"
    );
    // The save re-read images.json under the lock, so the control edit is
    // kept too: nothing another writer wrote is lost.
    assert!(
        after.contains(&"localhost/unannounced:1".to_owned()),
        "{after:?}"
    );
}
