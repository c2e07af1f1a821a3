//! Writing a generated store: the skeleton, the three record files
//! (streamed, one record encoded at a time) and, on a few threads, one
//! directory tree per layer. Everything inside the graphroot is made
//! relative to opened directories (`mkdirat`, `openat`, `symlinkat`,
//! `fchownat` without following symlinks).

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::thread;

use layerstore::gojson::GoWriter;
use layerstore::ops::big_data_file_name;
use layerstore::records::Record;
use rustix::fs::{chownat, mkdirat, openat, symlinkat, AtFlags, Gid, Mode, OFlags, Uid};

use super::plan::{self, ImagePlan, Kind, LayerPlan};
use super::{Generated, Shape};

/// Threads making layer directories: syscall-bound, so a few more than
/// cores keep the disk busy.
const MAX_THREADS: usize = 8;

/// Attach the path an operation was about to `err`.
fn at(path: impl AsRef<Path>) -> impl FnOnce(io::Error) -> io::Error {
    move |err| io::Error::new(err.kind(), format!("{}: {err}", path.as_ref().display()))
}

fn mkdir(path: &Path, mode: u32) -> io::Result<()> {
    fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .map_err(at(path))
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    openat(rustix::fs::CWD, path, flags, Mode::empty()).map_err(|e| at(path)(e.into()))
}

/// Create `name` in `dir` (which must not have it) holding `data`.
fn write_at(dir: BorrowedFd<'_>, name: &str, data: &[u8], mode: u32) -> io::Result<()> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = openat(dir, name, flags, Mode::from_raw_mode(mode))?;
    File::from(fd).write_all(data)
}

/// The store's directories and empty lock files.
fn skeleton(graph: &Path, run: &Path) -> io::Result<()> {
    mkdir(graph, 0o700)?;
    mkdir(run, 0o700)?;
    mkdir(&run.join("overlay-layers"), 0o700)?;
    for dir in [
        "overlay",
        "overlay-layers",
        "overlay-images",
        "overlay-containers",
        "mounts",
        "tmp",
    ] {
        mkdir(&graph.join(dir), 0o700)?;
    }
    mkdir(&graph.join("overlay/l"), 0o755)?;
    for (file, data) in [
        ("storage.lock", ""),
        ("userns.lock", ""),
        ("overlay-layers/layers.lock", ""),
        ("overlay-images/images.lock", ""),
        ("overlay-containers/containers.lock", ""),
        ("overlay/.has-mount-program", "false"),
    ] {
        let mode = if file.ends_with(".lock") {
            0o644
        } else {
            0o600
        };
        let path = graph.join(file);
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .and_then(|mut f| f.write_all(data.as_bytes()))
            .map_err(at(&path))?;
    }
    Ok(())
}

/// A JSON array file written one Go-encoded record at a time.
struct ArrayFile {
    path: PathBuf,
    out: BufWriter<File>,
    empty: bool,
}

impl ArrayFile {
    fn create(path: PathBuf) -> io::Result<ArrayFile> {
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            // The permissions containers/storage gives its record files.
            .mode(0o600)
            .open(&path)
            .map_err(at(&path))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(b"[").map_err(at(&path))?;
        Ok(ArrayFile {
            path,
            out,
            empty: true,
        })
    }

    fn push<R: Record>(&mut self, record: &R) -> io::Result<()> {
        let mut w = GoWriter::new();
        record.encode(&mut w);
        if !self.empty {
            self.out.write_all(b",").map_err(at(&self.path))?;
        }
        self.empty = false;
        self.out.write_all(&w.into_bytes()).map_err(at(&self.path))
    }

    /// Close the array; the file's size.
    fn finish(mut self) -> io::Result<u64> {
        self.out.write_all(b"]").map_err(at(&self.path))?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| at(&self.path)(e.into_error()))?;
        Ok(file.metadata().map_err(at(&self.path))?.len())
    }
}

/// The three record files, the images' big data and the containers'
/// directories; returns the size of `layers.json`.
fn records_and_data(graph: &Path, shape: &Shape) -> io::Result<u64> {
    let mut layers = ArrayFile::create(graph.join("overlay-layers/layers.json"))?;
    let mut images = ArrayFile::create(graph.join("overlay-images/images.json"))?;
    let mut containers = ArrayFile::create(graph.join("overlay-containers/containers.json"))?;
    for i in 0..shape.images {
        let plan = plan::image(shape, i);
        for l in &plan.layers {
            layers.push(&l.record)?;
        }
        images.push(&plan.image)?;
        big_data(graph, &plan)?;
        for c in &plan.containers {
            containers.push(c)?;
            let dir = graph.join("overlay-containers").join(&c.id);
            mkdir(&dir, 0o700)?;
            mkdir(&dir.join("userdata"), 0o700)?;
        }
    }
    containers.finish()?;
    images.finish()?;
    layers.finish()
}

fn big_data(graph: &Path, plan: &ImagePlan) -> io::Result<()> {
    let dir = graph.join("overlay-images").join(&plan.image.id);
    mkdir(&dir, 0o700)?;
    let fd = open_dir(&dir)?;
    for (key, data) in &plan.big_data {
        let name = big_data_file_name(key);
        write_at(fd.as_fd(), &name, data, 0o600).map_err(at(dir.join(&name)))?;
    }
    Ok(())
}

/// What the overlay driver leaves in a layer's directory: directories in
/// creation order, with their modes.
fn layer_dirs(kind: Kind) -> &'static [(&'static str, u32)] {
    match kind {
        Kind::Base => &[
            ("diff", 0o555),
            ("work", 0o700),
            ("merged", 0o700),
            ("empty", 0o700),
        ],
        Kind::Top => &[("diff", 0o555), ("work", 0o700), ("merged", 0o700)],
        // UpdateLayerIDMap moved the chowned copy-up to diff1, made a new
        // diff and work with diff's mode, and unmounted (no merged).
        Kind::Mapped => &[("diff", 0o555), ("diff1", 0o555), ("work", 0o555)],
        // Ran and stopped: merged is gone, the kernel left work/work.
        Kind::Container => &[("diff", 0o555), ("work", 0o700)],
    }
}

/// One layer's directory, files and `l/` link.
fn layer_tree(
    home: BorrowedFd<'_>,
    links: BorrowedFd<'_>,
    l: &LayerPlan,
    chown: bool,
) -> io::Result<()> {
    let id = l.record.id.as_str();
    mkdirat(home, id, Mode::from_raw_mode(0o700))?;
    let dir = openat(
        home,
        id,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let dirs = layer_dirs(l.kind);
    for (name, mode) in dirs {
        mkdirat(&dir, *name, Mode::from_raw_mode(*mode))?;
    }
    write_at(dir.as_fd(), "link", l.link.as_bytes(), 0o644)?;
    if !l.lowers.is_empty() {
        let lower: Vec<String> = l.lowers.iter().map(|n| format!("l/{n}")).collect();
        write_at(dir.as_fd(), "lower", lower.join(":").as_bytes(), 0o644)?;
    }
    symlinkat(format!("../{id}/diff"), links, l.link.as_str())?;
    if chown && l.owner != 0 {
        let (uid, gid) = (Some(Uid::from_raw(l.owner)), Some(Gid::from_raw(l.owner)));
        chownat(home, id, uid, gid, AtFlags::SYMLINK_NOFOLLOW)?;
        for (name, _) in dirs {
            chownat(&dir, *name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)?;
        }
    }
    if l.kind == Kind::Container {
        mkdirat(&dir, "work/work", Mode::empty())?;
    }
    Ok(())
}

/// The layer trees of images `first`, `first + step`, ...
fn layer_trees(
    graph: &Path,
    shape: &Shape,
    first: usize,
    step: usize,
    chown: bool,
) -> io::Result<()> {
    let home = open_dir(&graph.join("overlay"))?;
    let links = open_dir(&graph.join("overlay/l"))?;
    for i in (first..shape.images).step_by(step) {
        for l in plan::image(shape, i).layers {
            layer_tree(home.as_fd(), links.as_fd(), &l, chown)
                .map_err(|e| at(graph.join("overlay").join(&l.record.id))(e))?;
        }
    }
    Ok(())
}

pub(super) fn write(root: &Path, shape: &Shape) -> io::Result<Generated> {
    let graph = root.join("graph");
    let run = root.join("run");
    fs::create_dir_all(root).map_err(at(root))?;
    skeleton(&graph, &run)?;
    let chown = rustix::process::geteuid().is_root();
    let threads = thread::available_parallelism()
        .map_or(2, |n| n.get() * 2)
        .min(MAX_THREADS)
        .min(shape.images.max(1));
    let layers_json_bytes = thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let graph = &graph;
                s.spawn(move || layer_trees(graph, shape, t, threads, chown))
            })
            .collect();
        let written = records_and_data(&graph, shape);
        for w in workers {
            w.join().expect("a layer-tree thread panicked")?;
        }
        written
    })?;
    Ok(Generated {
        graph,
        run,
        layers: shape.layers(),
        images: shape.images,
        containers: shape.containers(),
        image_name: plan::image_name(0),
        container_name: (shape.containers_per_image > 0).then(|| plan::container_name(0, 0)),
        layers_json_bytes,
        chowned: chown,
    })
}
