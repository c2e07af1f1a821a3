//! Helpers shared by layerstore's tests.
//!
//! Privileged tests (root, real mounts, real podman) are marked
//! `#[ignore = "privileged: ..."]`, so an ordinary `cargo test` reports them
//! as ignored with the reason. `scripts/test.sh` runs them when it is root or
//! when `LAYERSTORE_REQUIRE_PRIVILEGED=1`; once running, a test calls
//! [`require_privileged`], which fails loudly if the machine cannot run it.
//! A privileged test therefore never passes without having run.
//!
//! [`PodmanStore`] builds a private store with the real podman
//! (`testdata/make-podman-store.sh`) under a temp dir and tears it down,
//! mounts included, when dropped, also when the test panics.

pub mod bare;
pub mod hostile;
pub mod images;
pub mod proclocks;
pub mod rootless;
pub mod subid;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support lives in the workspace")
        .to_path_buf()
}

/// A file under `testdata/`.
pub fn testdata(rel: &str) -> PathBuf {
    workspace_root().join("testdata").join(rel)
}

/// Fail the running test unless we are root and every program in `tools`
/// is on PATH. Call it first in every privileged test.
pub fn require_privileged(tools: &[&str]) {
    if !rustix::process::geteuid().is_root() {
        panic!("this privileged test needs root (run it as root, or leave it ignored)");
    }
    for tool in tools {
        if which(tool).is_none() {
            panic!(
                "this privileged test needs `{tool}` on PATH (scripts/install-deps.sh installs it)"
            );
        }
    }
}

/// The cached Debian bookworm minbase rootfs tarball (about 6,800
/// entries), built by `scripts/bench/debian-rootfs.sh` on first use.
pub fn debian_rootfs() -> PathBuf {
    let out =
        run_ok(Command::new("bash").arg(workspace_root().join("scripts/bench/debian-rootfs.sh")));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Find a program on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Mount a fuse-overlayfs of `lower` (with `upper` and `work` beside it)
/// at `at`, attribute caching off (every stat asks the server); panics if
/// the mount fails. Unmounting is the caller's.
pub fn mount_fuse_overlay(lower: &Path, upper: &Path, work: &Path, at: &Path) {
    run_ok(
        Command::new("fuse-overlayfs")
            .arg("-o")
            .arg(format!(
                "lowerdir={},upperdir={},workdir={},timeout=0",
                lower.display(),
                upper.display(),
                work.display()
            ))
            .arg(at),
    );
}

/// Run a command; panic with its output if it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A private podman store under a temp dir, built by
/// `testdata/make-podman-store.sh` and removed (unmounted first) on drop.
#[derive(Debug)]
pub struct PodmanStore {
    /// Owns the temp dir.
    _dir: tempfile::TempDir,
    /// The graphroot.
    pub graph: PathBuf,
    /// The runroot.
    pub run: PathBuf,
    /// `--storage-opt` values given to podman, containers-storage and
    /// layerstore alike (empty: the configured defaults).
    pub storage_opts: Vec<String>,
    /// A filesystem mounted for this store alone ([`PodmanStore::on_tmpfs`],
    /// [`PodmanStore::on_small_fs`]), unmounted on drop.
    dedicated_fs: Option<PathBuf>,
}

impl PodmanStore {
    /// Build the standard fixture store (images, mapped templates,
    /// containers with and without maps, one mounted container).
    pub fn build() -> PodmanStore {
        let store = PodmanStore::empty();
        run_ok(
            Command::new("bash")
                .arg(testdata("make-podman-store.sh"))
                .arg(&store.graph)
                .arg(&store.run),
        );
        store
    }

    /// An empty store location (nothing created yet).
    pub fn empty() -> PodmanStore {
        let dir = tempfile::Builder::new()
            .prefix("layerstore-test-")
            .tempdir()
            .expect("creating a temp dir");
        let graph = dir.path().join("graph");
        let run = dir.path().join("run");
        PodmanStore {
            _dir: dir,
            graph,
            run,
            storage_opts: Vec::new(),
            dedicated_fs: None,
        }
    }

    /// An empty store whose graphroot is on its own loop-mounted ext4
    /// filesystem of `size_mib` MiB (sparse), so that the filesystem's used
    /// inodes ([`PodmanStore::used_inodes`]) count exactly what the store
    /// holds. The runroot stays outside it. Needs root.
    pub fn on_small_fs(size_mib: u64) -> PodmanStore {
        let mut store = PodmanStore::empty();
        let base = store.graph.parent().unwrap().to_path_buf();
        let image = base.join("fs.img");
        let mnt = base.join("fs");
        std::fs::create_dir_all(&mnt).unwrap();
        let file = std::fs::File::create(&image).unwrap();
        file.set_len(size_mib << 20).unwrap();
        run_ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image));
        run_ok(
            Command::new("mount")
                .args(["-o", "loop"])
                .arg(&image)
                .arg(&mnt),
        );
        store.dedicated_fs = Some(mnt.clone());
        store.graph = mnt.join("graph");
        store
    }

    /// An empty store location (graphroot and runroot) on a tmpfs of its own
    /// (`size`, e.g. "2g"), so that [`used_inodes`](Self::used_inodes)
    /// counts this store alone. Needs root.
    pub fn on_tmpfs(size: &str) -> PodmanStore {
        let mut store = PodmanStore::empty();
        let fs = store.graph.parent().unwrap().join("fs");
        std::fs::create_dir(&fs).expect("creating the tmpfs mount point");
        run_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o"])
                .arg(format!("size={size},mode=0755"))
                .arg("layerstore-test")
                .arg(&fs),
        );
        store.graph = fs.join("graph");
        store.run = fs.join("run");
        store.dedicated_fs = Some(fs);
        store
    }

    /// Make containers/storage v1.43 believe the kernel cannot idmap
    /// overlay lower layers, so that every container with a non-host
    /// mapping gets a mapped *template copy* of its image's top layer (as
    /// on old kernels and for rootless users). Call before the first use.
    pub fn force_templates(&self) {
        let dir = self.run.join("overlay");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("idmapped-lower-dir-false"), "").unwrap();
    }

    /// Used inodes of the filesystem holding the graphroot.
    pub fn used_inodes(&self) -> u64 {
        let path = self.dedicated_fs.as_deref().unwrap_or(&self.graph);
        let st = rustix::fs::statvfs(path).expect("statvfs");
        st.f_files - st.f_ffree
    }

    /// A containers.conf for this store alone, next to it: the test one
    /// (`testdata/containers.conf`) plus `log_driver = "k8s-file"` (for
    /// `podman logs` without journald), this store's `tmp_dir` (what
    /// [`PodmanStore::podman`] passes as `--tmpdir`, for the commands that
    /// `layerstore run` starts podman with) and `hooks_dir`. Point
    /// `CONTAINERS_CONF` at it for both podman and layerstore.
    pub fn private_conf(&self, hooks_dir: &Path) -> PathBuf {
        let base = std::fs::read_to_string(testdata("containers.conf"))
            .expect("reading the test containers.conf");
        let mut text = base.replacen(
            "[containers]\n",
            "[containers]\nlog_driver = \"k8s-file\"\n",
            1,
        );
        assert!(
            text.trim_end().ends_with("lock_type = \"file\""),
            "the test containers.conf must end in [engine]"
        );
        text.push_str(&format!(
            "tmp_dir = \"{}\"\nhooks_dir = [\"{}\"]\n",
            self.run.join("libpod-tmp").display(),
            hooks_dir.display()
        ));
        let path = self.graph.parent().unwrap().join("containers.conf");
        std::fs::write(&path, text).expect("writing the private containers.conf");
        path
    }

    /// The store's record files and their bytes (`None`: absent), to prove
    /// that a refused command changed nothing.
    pub fn record_files(&self) -> Vec<(PathBuf, Option<Vec<u8>>)> {
        [
            self.graph.join("overlay-layers/layers.json"),
            self.graph.join("overlay-images/images.json"),
            self.graph.join("overlay-containers/containers.json"),
            self.run.join("overlay-layers/mountpoints.json"),
        ]
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).ok();
            (p, bytes)
        })
        .collect()
    }

    /// The mount points below the graphroot and the runroot
    /// (`/proc/self/mountinfo`), the private bind of the overlay home aside.
    pub fn mounts_below(&self) -> Vec<String> {
        let home = self.graph.join("overlay");
        std::fs::read_to_string("/proc/self/mountinfo")
            .expect("reading /proc/self/mountinfo")
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
            .filter(|m| {
                let p = Path::new(m);
                (p.starts_with(&self.graph) || p.starts_with(&self.run)) && p != home
            })
            .collect()
    }

    /// `podman` with this store's flags and the test containers.conf.
    pub fn podman(&self) -> Command {
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", testdata("containers.conf"))
            .arg("--root")
            .arg(&self.graph)
            .arg("--runroot")
            .arg(&self.run)
            .args(["--storage-driver", "overlay"])
            // Keep podman's runtime state (and its file locks) per store.
            .arg("--tmpdir")
            .arg(self.run.join("libpod-tmp"));
        for opt in &self.storage_opts {
            cmd.arg("--storage-opt").arg(opt);
        }
        cmd
    }

    /// `layerstore import` (binary `bin`) of a one-layer image built from
    /// the text form of [`images::layer_tar`], named `name`.
    pub fn import_layer_spec(&self, bin: &str, spec: &str, name: &str) {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let tar = dir.path().join("layer.tar");
        std::fs::write(&tar, images::layer_tar(spec)).expect("writing the layer tar");
        run_ok(
            self.layerstore(bin)
                .args(["import", "--quiet"])
                .arg(&tar)
                .arg(name),
        );
    }

    /// `containers-storage` with this store's flags.
    pub fn containers_storage(&self) -> Command {
        let mut cmd = Command::new("containers-storage");
        cmd.arg("-g")
            .arg(&self.graph)
            .arg("-R")
            .arg(&self.run)
            .args(["-s", "overlay"]);
        for opt in &self.storage_opts {
            cmd.arg(format!("--storage-opt={opt}"));
        }
        cmd
    }

    /// `containers-storage import-layer -f TAR`: the new layer's id.
    pub fn cs_import_layer(&self, tar: &Path) -> String {
        let out = run_ok(
            self.containers_storage()
                .args(["import-layer", "-f"])
                .arg(tar),
        );
        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert_eq!(id.len(), 64, "import-layer printed {id:?}");
        id
    }

    /// The `layerstore` binary at `bin` (tests pass
    /// `env!("CARGO_BIN_EXE_layerstore")`) with this store's flags.
    pub fn layerstore(&self, bin: &str) -> Command {
        let mut cmd = Command::new(bin);
        cmd.arg("--root")
            .arg(&self.graph)
            .arg("--runroot")
            .arg(&self.run)
            .args(["--storage-driver", "overlay"]);
        for opt in &self.storage_opts {
            cmd.arg("--storage-opt").arg(opt);
        }
        cmd
    }
}

impl Drop for PodmanStore {
    fn drop(&mut self) {
        if !self.graph.exists() && !self.run.exists() && self.dedicated_fs.is_none() {
            return;
        }
        let status = Command::new("bash")
            .arg(testdata("cleanup-store.sh"))
            .arg(&self.graph)
            .arg(&self.run)
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "warning: cleaning up {} failed: {status:?}",
                self.graph.display()
            );
        }
        if let Some(mnt) = &self.dedicated_fs {
            let ok = Command::new("umount").arg(mnt).status();
            if !matches!(ok, Ok(s) if s.success()) {
                let _ = Command::new("umount").arg("-l").arg(mnt).status();
            }
        }
    }
}
