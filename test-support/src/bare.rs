//! A bare store for bad-input tests: the metadata directories of an empty
//! overlay store under a temp dir, no host `storage.conf`, and a
//! `layerstore` command pointed at it; [`file_tree`] to prove that a failed
//! command changed nothing on disk.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// An empty store skeleton under a temp dir (removed on drop).
#[derive(Debug)]
pub struct BareStore {
    /// The temp dir: `graph/`, `run/` and `no-storage.conf` below it.
    pub dir: tempfile::TempDir,
    bin: PathBuf,
}

impl BareStore {
    /// The skeleton, for the `layerstore` binary at `bin` (tests pass
    /// `env!("CARGO_BIN_EXE_layerstore")`).
    pub fn new(bin: &str) -> BareStore {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        for d in [
            "graph/overlay-layers",
            "graph/overlay-images",
            "graph/overlay-containers",
            "run/overlay-layers",
        ] {
            fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        // No host storage.conf: an empty configuration, flags decide.
        fs::write(dir.path().join("no-storage.conf"), "").unwrap();
        BareStore {
            dir,
            bin: bin.into(),
        }
    }

    /// The graphroot.
    pub fn graph(&self) -> PathBuf {
        self.dir.path().join("graph")
    }

    /// Write `content` to `rel` below the temp dir (parents created).
    pub fn write(&self, rel: &str, content: &[u8]) -> PathBuf {
        let p = self.dir.path().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        p
    }

    /// `layerstore --root G --runroot R ARGS`, without the host's config.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--root")
            .arg(self.graph())
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .args(args)
            .env(
                "CONTAINERS_STORAGE_CONF",
                self.dir.path().join("no-storage.conf"),
            )
            .env_remove("RUST_BACKTRACE");
        cmd
    }
}

/// Files larger than this are compared by size and mtime in [`file_tree`].
const BIG_FILE: u64 = 64 << 20;

/// Every file and directory below `dir` with its mode and content.
pub fn file_tree(dir: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            let meta = fs::symlink_metadata(&p).unwrap();
            let content = if meta.is_file() && meta.len() > BIG_FILE {
                // A huge (sparse) file: its size and mtime stand for it.
                format!("{} bytes, mtime {:?}", meta.len(), meta.modified().ok()).into_bytes()
            } else if meta.is_file() {
                fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            if meta.is_dir() {
                stack.push(p.clone());
            }
            out.insert(p, (meta.mode(), content));
        }
    }
    out
}
