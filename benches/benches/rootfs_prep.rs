//! Rootfs preparation for a container with a *new* uid/gid mapping, the two
//! ways layerstore can do it, on the same image layer:
//!
//! * `idmapped`: a user-namespace fd for the mapping + a detached idmapped
//!   mount of the overlay home + the overlay mount of the container layer on
//!   it + unmount (`OverlayDriver::mount` with maps, then `unmount`). Must be
//!   flat in the tree size (target: under 5 ms).
//! * `template`: the compatibility fallback, a template made as
//!   containers/storage makes it: a driver-level child of the image layer,
//!   `update_layer_id_map` (mount, chown-by-maps over the merged tree, which
//!   copies every entry up, unmount, `diff` -> `diff1`), then removed again.
//!
//! Inputs: single-layer images of 1k, 10k and 100k synthetic entries, and the
//! Debian minbase rootfs when `scripts/bench/debian-rootfs.sh` has cached it
//! (`$LAYERSTORE_CACHE` or `~/.cache/layerstore/debian-minbase.tar`).
//! Each store sits on a tmpfs of its own, so that the numbers are the
//! kernel's and ours, not the shared disk's write-back (removing a 100k-entry
//! template from ext4 alone can take 10 s there). Needs root; otherwise it
//! says why and measures nothing.
//! `cargo bench -p layerstore-benches --bench rootfs_prep`.

// criterion_group! and criterion_main! generate undocumented items.
#![allow(missing_docs)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use layerstore::config::StoreOptions;
use layerstore::idmap::{IdMap, IdMappings};
use layerstore_overlay::layout::{MountRequest, OverlayDriver};

const IMAGE: &str = "1000000000000000000000000000000000000000000000000000000000000001";
const CTR: &str = "2000000000000000000000000000000000000000000000000000000000000002";
const TEMPLATE: &str = "3000000000000000000000000000000000000000000000000000000000000003";

/// What the image layer holds.
#[derive(Debug, Clone, Copy)]
enum Input {
    Synthetic(usize),
    Debian,
}

impl Input {
    fn label(self) -> String {
        match self {
            Input::Synthetic(n) => format!("{n} entries"),
            Input::Debian => "debian-minbase".to_owned(),
        }
    }
}

fn debian_tar() -> Option<PathBuf> {
    let cache = std::env::var_os("LAYERSTORE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/layerstore")))?;
    Some(cache.join("debian-minbase.tar")).filter(|p| p.exists())
}

/// A store in `root` whose image layer holds `input`, plus an empty
/// container layer on it.
fn store(root: &Path, input: Input) -> OverlayDriver {
    let driver = OverlayDriver::new(&StoreOptions {
        graph_root: root.join("graph"),
        run_root: root.join("run"),
        driver: "overlay".into(),
        ..Default::default()
    })
    .unwrap();
    fs::create_dir_all(driver.home()).unwrap();
    driver.create_layer(&lid(IMAGE), None, (0, 0)).unwrap();
    let diff = driver.diff_path(&lid(IMAGE));
    match input {
        Input::Synthetic(entries) => {
            let dirs = entries.div_ceil(101);
            let mut made = 0;
            'outer: for d in 0..dirs {
                let dir = diff.join(format!("d{d}"));
                fs::create_dir(&dir).unwrap();
                made += 1;
                for f in 0..100 {
                    if made >= entries {
                        break 'outer;
                    }
                    fs::write(dir.join(format!("f{f}")), b"x").unwrap();
                    made += 1;
                }
            }
        }
        Input::Debian => {
            let tar = debian_tar().expect("checked before");
            let status = Command::new("tar")
                .args(["--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf"])
                .arg(&tar)
                .arg("-C")
                .arg(&diff)
                .status()
                .unwrap();
            assert!(status.success(), "unpacking {}", tar.display());
        }
    }
    driver
        .create_layer(&lid(CTR), Some(&lid(IMAGE)), (0, 0))
        .unwrap();
    driver
}

/// A different non-contiguous mapping each time: container ids 0..65536 at
/// a moving base, plus uid 70000 mapped alone.
fn maps(k: u32) -> IdMappings {
    let base = 100_000 + (k % 2048) * 131_072;
    let m = |container_id, host_id, size| IdMap {
        container_id,
        host_id,
        size,
    };
    IdMappings {
        uids: vec![m(0, base, 65_536), m(70_000, base + 70_000, 1)],
        gids: vec![m(0, base, 65_537)],
    }
}

fn bench(c: &mut Criterion) {
    if !rustix::process::geteuid().is_root() {
        eprintln!("rootfs_prep: skipped: user namespaces with arbitrary maps, idmapped mounts and chown need root");
        return;
    }
    let mut inputs = vec![
        Input::Synthetic(1_000),
        Input::Synthetic(10_000),
        Input::Synthetic(100_000),
    ];
    match debian_tar() {
        Some(_) => inputs.push(Input::Debian),
        None => {
            eprintln!("rootfs_prep: no cached Debian rootfs; run scripts/bench/debian-rootfs.sh")
        }
    }
    let mut group = c.benchmark_group("rootfs preparation for a new mapping");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    for input in inputs {
        let tmp = tempfile::tempdir().unwrap();
        let fs = Tmpfs::mount(tmp.path());
        let driver = store(&fs.0, input);
        let mut k = 0u32;
        group.bench_with_input(
            BenchmarkId::new("idmapped", input.label()),
            &input,
            |b, _| {
                b.iter(|| {
                    k = k.wrapping_add(1);
                    let m = maps(k);
                    let request = MountRequest {
                        uidmap: m.uids,
                        gidmap: m.gids,
                        ..Default::default()
                    };
                    let merged = driver.mount(&lid(CTR), &request).unwrap();
                    std::hint::black_box(&merged);
                    driver.unmount(&lid(CTR)).unwrap();
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("template", input.label()),
            &input,
            |b, _| {
                b.iter(|| {
                    k = k.wrapping_add(1);
                    let to_host = maps(k);
                    let root = (to_host.uids[0].host_id, to_host.gids[0].host_id);
                    driver
                        .create_layer(&lid(TEMPLATE), Some(&lid(IMAGE)), root)
                        .unwrap();
                    let report = driver
                        .update_layer_id_map(&lid(TEMPLATE), &IdMappings::default(), &to_host, None)
                        .unwrap();
                    std::hint::black_box(report);
                    driver.remove_layer(&lid(TEMPLATE)).unwrap();
                })
            },
        );
        let _ = rustix::mount::unmount(driver.home(), rustix::mount::UnmountFlags::DETACH);
    }
    group.finish();
}

/// A tmpfs at `<dir>/fs`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path) -> Tmpfs {
        let at = dir.join("fs");
        fs::create_dir(&at).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8g,mode=0755", "rootfs-prep"])
            .arg(&at)
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs at {}", at.display());
        Tmpfs(at)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

/// A layer id for a benchmark.
fn lid(id: &str) -> layerstore::LayerId {
    layerstore::LayerId::parse(id).unwrap()
}
