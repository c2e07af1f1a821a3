//! Mount targets for a root filesystem whose files keep their on-disk
//! owners (`--nocache` where idmapped mounts are impossible).
//!
//! The runtime creates a missing mount target as the container's root,
//! which there is a host id that owns none of the image's directories: the
//! start fails with EACCES on `/etc/hostname`, `/proc`, a volume's
//! destination. So before podman runs, what podman always mounts (and
//! every `-v`, `--mount` and `--tmpfs` destination) is created where it is
//! missing, empty, owned by root like the image's files; nothing that
//! exists is touched, and nothing is created through a symlink.

use std::path::{Component, Path, PathBuf};

use layerstore::confined::Dir;
use rustix::fs::OFlags;

use super::podman_flags::RunLine;

/// Directories podman mounts on.
const DIRS: &[&str] = &["proc", "sys", "dev", "run", "tmp", "etc"];
/// Files podman bind-mounts onto.
const FILES: &[&str] = &[
    "etc/hostname",
    "etc/hosts",
    "etc/resolv.conf",
    "run/.containerenv",
];

/// A destination inside the rootfs as a relative path (`None`: not an
/// absolute path, or one that climbs).
fn relative(dest: &str) -> Option<PathBuf> {
    let p = Path::new(dest);
    if !p.is_absolute() {
        return None;
    }
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// The caller's volumes and `--mount`s in order: (source, destination);
/// no source for an anonymous volume. With `overlays`, also the `:O`
/// overlay volumes.
fn binds(line: &RunLine, overlays: bool) -> Vec<(Option<&str>, &str)> {
    let mut out = Vec::new();
    for v in line.values("volume") {
        let parts: Vec<&str> = v.split(':').collect();
        let overlay = parts.get(2).is_some_and(|o| o.split(',').any(|o| o == "O"));
        match parts.as_slice() {
            _ if overlay && !overlays => {}
            [dest] => out.push((None, *dest)),
            [src, dest, ..] => out.push((Some(*src), *dest)),
            [] => {}
        }
    }
    for m in line.values("mount") {
        let mut dest = None;
        let mut src = None;
        for kv in m.split(',') {
            match kv.split_once('=') {
                Some(("destination" | "dst" | "target", d)) => dest = Some(d),
                Some(("source" | "src", s)) => src = Some(s),
                _ => {}
            }
        }
        out.extend(dest.map(|d| (src, d)));
    }
    out
}

/// The destinations of the caller's volumes, mounts and tmpfs, with
/// whether the source is a file.
pub(super) fn volume_targets(line: &RunLine) -> Vec<(PathBuf, bool)> {
    let mut out = Vec::new();
    for (src, dest) in binds(line, true) {
        let file = src.is_some_and(|s| s.starts_with('/') && Path::new(s).is_file());
        out.extend(relative(dest).map(|d| (d, file)));
    }
    for t in line.values("tmpfs") {
        let dest = t.split(':').next().unwrap_or_default();
        out.extend(relative(dest).map(|d| (d, false)));
    }
    out
}

/// The host files that stand for the container's /etc/passwd and
/// /etc/group when the caller mounts them (or /etc) from the host, as
/// podman's `getUserOverrides` finds them for `--userns=auto` sizing:
/// bind sources that are paths (`/...`, `./...`, made absolute), not named
/// volumes; destinations cleaned as podman cleans them; `:O` overlay
/// volumes aside (podman adds them to the spec only later).
pub(super) fn user_file_overrides(line: &RunLine) -> (Option<PathBuf>, Option<PathBuf>) {
    let (mut passwd, mut group) = (None, None);
    for (src, dest) in binds(line, false) {
        let Some(src) = src.filter(|s| s.starts_with('/') || s.starts_with('.')) else {
            continue;
        };
        let Ok(src) = std::path::absolute(src) else {
            continue;
        };
        let dest = clean_absolute(dest);
        if dest == Path::new("/etc/passwd") {
            passwd = Some(src);
        } else if dest == Path::new("/etc/group") {
            group = Some(src);
        } else if dest == Path::new("/etc") {
            passwd.get_or_insert_with(|| src.join("passwd"));
            group.get_or_insert_with(|| src.join("group"));
        }
    }
    (passwd, group)
}

/// `path` cleaned lexically as Go's `path.Clean` does for an absolute path.
fn clean_absolute(path: &str) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// The bytes of a host file the caller mounts over /etc/passwd or
/// /etc/group, read before any lock is taken: opened without blocking
/// (a FIFO or a device is no file), a regular file only, at most 16 MiB;
/// `None` when it is not one or cannot be read (podman then sizes
/// without it).
pub(super) fn read_user_file(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .ok()?;
    let st = rustix::fs::fstat(&fd).ok()?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return None;
    }
    // An empty file has nothing to read; /proc's files say 0 and are never
    // read (reading /proc/kmsg would take the kernel's messages).
    if st.st_size == 0 {
        return Some(Vec::new());
    }
    let mut bytes = Vec::new();
    std::fs::File::from(fd)
        .take(layerstore::ops::USER_FILE_LIMIT)
        .read_to_end(&mut bytes)
        .ok()?;
    Some(bytes)
}

/// Create the missing ones of `rel`'s components as directories, and `rel`
/// itself as a file when `file`; stop at anything that is not a directory.
fn create(root: &Dir, rel: &Path, file: bool) -> std::io::Result<()> {
    let parts: Vec<_> = rel.components().collect();
    let mut sofar = PathBuf::new();
    for (i, part) in parts.iter().enumerate() {
        sofar.push(part);
        let last = i + 1 == parts.len();
        match root.stat(&sofar)? {
            Some(m) if m.is_dir() => continue,
            Some(_) => return Ok(()),
            None if last && file => {
                root.open_file(
                    &sofar,
                    OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY,
                    0o644,
                )?;
            }
            None => {
                root.create_dir(&sofar, 0o755)?;
            }
        }
    }
    Ok(())
}

/// The image's working directory `workdir`, made where it is missing
/// (with its missing parents, mode 0755, owned by `owner`: the host ids of
/// the container's root), as podman makes an image's WorkingDir for its
/// own containers. layerstore passes it to podman as `--workdir`, which
/// podman only checks.
pub(super) fn make_workdir(rootfs: &Path, workdir: &str, owner: (u32, u32)) -> anyhow::Result<()> {
    use anyhow::Context;
    let Some(rel) = relative(workdir) else {
        return Ok(());
    };
    let root = Dir::open(rootfs).with_context(|| format!("opening {}", rootfs.display()))?;
    let mut sofar = PathBuf::new();
    for part in rel.components() {
        sofar.push(part);
        match root.stat(&sofar) {
            Ok(Some(m)) if m.is_dir() => continue,
            // Something else there, or a symlink on the way: podman's
            // check decides.
            Ok(Some(_)) | Err(_) => return Ok(()),
            Ok(None) => {
                root.create_dir(&sofar, 0o755).with_context(|| {
                    format!(
                        "creating the working directory {}",
                        root.display(&sofar).display()
                    )
                })?;
                let (parent, name) = match sofar.parent().filter(|p| !p.as_os_str().is_empty()) {
                    Some(p) => (
                        Some(root.open_dir(p)?),
                        sofar.file_name().unwrap_or_default(),
                    ),
                    None => (None, sofar.as_os_str()),
                };
                let base = parent.as_ref().map_or(root.fd(), Dir::fd);
                rustix::fs::chownat(
                    base,
                    name,
                    Some(rustix::fs::Uid::from_raw(owner.0)),
                    Some(rustix::fs::Gid::from_raw(owner.1)),
                    rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                )
                .with_context(|| {
                    format!(
                        "giving {} to the container's root",
                        root.display(&sofar).display()
                    )
                })?;
            }
        }
    }
    Ok(())
}

/// Create what the runtime would fail to create in `rootfs`.
pub(super) fn precreate(rootfs: &Path, line: &RunLine) -> anyhow::Result<()> {
    use anyhow::Context;
    let root = Dir::open(rootfs).with_context(|| format!("opening {}", rootfs.display()))?;
    let fixed = DIRS
        .iter()
        .map(|d| (PathBuf::from(d), false))
        .chain(FILES.iter().map(|f| (PathBuf::from(f), true)));
    for (rel, file) in fixed.chain(volume_targets(line)) {
        // A symlink on the way (ELOOP from the confined walk) is left to
        // the runtime, as anything else that exists.
        match create(&root, &rel, file) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {}
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("creating mount target {}", root.display(&rel).display())
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: &str) -> RunLine {
        super::super::podman_flags::parse(&s.split(' ').map(str::to_owned).collect::<Vec<_>>())
            .unwrap()
    }

    #[test]
    fn user_files_are_read_without_blocking_or_taking_from_proc() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert_eq!(
            read_user_file(&fifo),
            None,
            "a FIFO is no file (and no wait)"
        );
        assert_eq!(read_user_file(dir.path()), None);
        assert_eq!(read_user_file(&dir.path().join("none")), None);
        assert_eq!(
            read_user_file(Path::new("/proc/self/status")),
            Some(Vec::new())
        );
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "svc:x:3000:3000::/:/bin/sh\n").unwrap();
        assert_eq!(
            read_user_file(&pw).unwrap(),
            b"svc:x:3000:3000::/:/bin/sh\n"
        );
    }

    #[test]
    fn user_files_from_the_host_stand_for_the_images() {
        let o = |s: &str| user_file_overrides(&line(s));
        assert_eq!(o("img"), (None, None));
        assert_eq!(
            o("-v /h/pw:/etc/passwd:ro --mount type=bind,src=/h/etc,dst=/etc/ img"),
            (Some("/h/pw".into()), Some("/h/etc/group".into()))
        );
        assert_eq!(
            o("-v /h/etc:/etc -v /h/g:/etc//group img"),
            (Some("/h/etc/passwd".into()), Some("/h/g".into()))
        );
        assert_eq!(o("-v named:/etc/passwd -v /etc/passwd img"), (None, None));
        assert_eq!(o("-v /h/pw:/etc/passwd:O img"), (None, None));
        let here = std::env::current_dir().unwrap();
        assert_eq!(
            o("-v ./pw:/etc/../etc/passwd img"),
            (Some(here.join("pw")), None)
        );
    }

    #[test]
    fn destinations_of_volumes_mounts_and_tmpfs() {
        let l = line("-v /etc/hostname:/x/f:ro -v /srv:/data -v /anon --mount type=bind,src=/srv,dst=/m --tmpfs /t:size=1m -v rel:../../up img");
        let t = volume_targets(&l);
        assert_eq!(
            t,
            [
                (PathBuf::from("x/f"), true),
                (PathBuf::from("data"), false),
                (PathBuf::from("anon"), false),
                (PathBuf::from("m"), false),
                (PathBuf::from("t"), false),
            ]
        );
    }

    #[test]
    fn the_workdir_is_made_with_its_parents_and_never_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        let me = (
            rustix::process::getuid().as_raw(),
            rustix::process::getgid().as_raw(),
        );
        make_workdir(r, "/srv/app/data", me).unwrap();
        assert!(r.join("srv/app/data").is_dir());
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), r.join("link")).unwrap();
        make_workdir(r, "/link/sub", me).unwrap();
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        make_workdir(r, "relative", me).unwrap();
        assert!(!r.join("relative").exists());
    }

    #[test]
    fn only_what_is_missing_and_never_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir(r.join("etc")).unwrap();
        std::fs::write(r.join("etc/hosts"), "kept").unwrap();
        std::os::unix::fs::symlink("/tmp", r.join("run")).unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), r.join("data")).unwrap();
        precreate(r, &line("-v /srv:/data/sub img")).unwrap();
        assert_eq!(
            std::fs::read_to_string(r.join("etc/hosts")).unwrap(),
            "kept"
        );
        assert!(r.join("etc/hostname").is_file() && r.join("proc").is_dir());
        assert!(std::fs::symlink_metadata(r.join("run"))
            .unwrap()
            .is_symlink());
        assert_eq!(
            std::fs::read_dir(outside.path()).unwrap().count(),
            0,
            "nothing made through the symlink"
        );
    }
}
