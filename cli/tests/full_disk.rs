//! An import that does not fit the filesystem: a clear error, the space
//! back, the records as they were, and podman still works on the store
//! (it can even make its database and import another image).

use std::fs;
use std::io::Read;

use layerstore_test_support::hostile::{read_records, BUSYBOX};
use layerstore_test_support::images::layer_tar;
use layerstore_test_support::{require_privileged, run_ok, PodmanStore};

const LAYERSTORE: &str = env!("CARGO_BIN_EXE_layerstore");

/// Free bytes (for root) of the filesystem holding `path`.
fn free(path: &std::path::Path) -> u64 {
    let st = rustix::fs::statvfs(path).unwrap();
    st.f_bfree * st.f_frsize
}

/// A tar of `files` files of `size` random (incompressible) bytes.
fn big_tar(files: usize, size: usize) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut random = fs::File::open("/dev/urandom").unwrap();
    for i in 0..files {
        let mut data = vec![0u8; size];
        random.read_exact(&mut data).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(size as u64);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, format!("blob{i}"), data.as_slice())
            .unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
#[ignore = "privileged: a loop-mounted filesystem, real podman"]
fn an_import_that_fills_the_disk_gives_the_space_back() {
    require_privileged(&["podman", "runc", "mkfs.ext4"]);
    let store = PodmanStore::on_small_fs(48);
    let work = tempfile::tempdir().unwrap();
    let small = work.path().join("busybox.tar");
    fs::write(&small, layer_tar(BUSYBOX)).unwrap();
    run_ok(
        store
            .layerstore(LAYERSTORE)
            .args(["import", "--quiet"])
            .arg(&small)
            .arg("bb"),
    );
    // Enough records that rewriting them needs more blocks than a failed
    // layer's tar-split frees: only removing its data makes room.
    for i in 0..120 {
        let tar = work.path().join(format!("small{i}.tar"));
        fs::write(&tar, layer_tar(&format!("f file{i} 0644 0:0 {i}"))).unwrap();
        run_ok(
            store
                .layerstore(LAYERSTORE)
                .args(["import", "--quiet"])
                .arg(&tar)
                .arg(format!("small{i}")),
        );
    }
    let layers_json = store.graph.join("overlay-layers/layers.json");
    let before_records = read_records(&layers_json);
    let before_free = free(&store.graph);
    let big = work.path().join("big.tar");
    fs::write(&big, big_tar(6, 10 << 20)).unwrap();

    let out = store
        .layerstore(LAYERSTORE)
        .args(["import", "--quiet"])
        .arg(&big)
        .arg("big")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // The space is back (give or take the metadata files' own blocks) and
    // the records are the ones before: no incomplete layer stayed.
    let after_free = free(&store.graph);
    assert!(
        after_free + (256 << 10) >= before_free,
        "{before_free} bytes were free before, {after_free} after"
    );
    assert_eq!(read_records(&layers_json), before_records);
    let dry =
        run_ok(
            store
                .layerstore(LAYERSTORE)
                .args(["gc", "--dry-run", "--json", "--min-age", "0"]),
        );
    let dry: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(dry["done"], serde_json::json!([]), "{dry:#}");

    // podman makes its database on this filesystem, imports, runs.
    run_ok(
        store
            .podman()
            .args(["import", "--quiet"])
            .arg(&small)
            .arg("localhost/again"),
    );
    run_ok(
        store
            .podman()
            .args(["run", "--rm", "--pull=never", "localhost/bb", "true"]),
    );
}
