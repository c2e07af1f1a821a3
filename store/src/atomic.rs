//! Atomic replacement of metadata files: this module owns the one way the
//! crate writes a metadata file (`layers.json`, `images.json`,
//! `containers.json`, `mountpoints.json`, ...), the way containers/storage's
//! `pkg/ioutils.AtomicWriteFile` does it:
//!
//! ```text
//! <dir>/.tmp-<name><random digits>   written, fdatasync'ed, chmod 0600
//! <dir>/<name>                        replaced by rename(2)
//! ```
//!
//! A reader (podman included) sees either the old or the new file, never a
//! half-written one. Unlike containers/storage we also fsync the directory
//! when syncing, so the rename itself survives a crash.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

/// How many temp names to try before giving up with `EEXIST`.
const TEMP_ATTEMPTS: usize = 100;

/// Replaces `path` with a file holding `data`, mode 0600, atomically.
///
/// The temp file is created next to `path` as `.tmp-<basename><digits>`
/// (`O_EXCL`). With `sync` the data is `fdatasync`ed before the rename and the
/// directory `fsync`ed after it; volatile files (`volatile-*.json`) pass
/// `false`, as containers/storage's `NoSync` does. On failure the temp file is
/// removed and `path` is left as it was.
pub fn write_atomic(path: &Path, data: &[u8], sync: bool) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let dir_path = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = rustix::fs::open(
        dir_path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    write_atomic_at(dir.as_fd(), name, data, sync)
}

/// [`write_atomic`] of file `name` in the open directory `dir` (inside a
/// store: reached through [`crate::confined::Dir`], never through a
/// symlink). A symlink at `name` is replaced, not followed.
pub fn write_atomic_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    data: &[u8],
    sync: bool,
) -> io::Result<()> {
    if name.is_empty() || name.as_encoded_bytes().contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a file name"),
        ));
    }
    let mut prefix = b".tmp-".to_vec();
    prefix.extend_from_slice(name.as_encoded_bytes());
    let (tmp_name, file) = create_temp(dir, &prefix)?;
    let res = fill_and_rename(dir, file, &tmp_name, name.as_encoded_bytes(), data, sync);
    if res.is_err() {
        // Gone already if the rename happened and only the directory fsync failed.
        let _ = rustix::fs::unlinkat(dir, tmp_name.as_slice(), AtFlags::empty());
    }
    res
}

/// Creates `<prefix><random digits>` in `dir` with `O_EXCL`, mode 0600.
fn create_temp(dir: BorrowedFd<'_>, prefix: &[u8]) -> io::Result<(Vec<u8>, File)> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    for _ in 0..TEMP_ATTEMPTS {
        let mut tmp_name = prefix.to_vec();
        tmp_name.extend_from_slice(random_u32()?.to_string().as_bytes());
        match rustix::fs::openat(dir, tmp_name.as_slice(), flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => return Ok((tmp_name, File::from(fd))),
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Errno::EXIST.into())
}

/// Writes `data`, syncs, chmods 0600 and renames the temp file over `name`.
fn fill_and_rename(
    dir: BorrowedFd<'_>,
    mut file: File,
    tmp_name: &[u8],
    name: &[u8],
    data: &[u8],
    sync: bool,
) -> io::Result<()> {
    file.write_all(data)?;
    if sync {
        file.sync_data()?;
    }
    rustix::fs::fchmod(&file, Mode::from_raw_mode(0o600))?;
    drop(file);
    rustix::fs::renameat(dir, tmp_name, dir, name)?;
    if sync {
        rustix::fs::fsync(dir)?;
    }
    Ok(())
}

fn random_u32() -> io::Result<u32> {
    let mut buf = [0u8; 4];
    // Requests of up to 256 bytes are never short nor interrupted.
    rustix::rand::getrandom(&mut buf, rustix::rand::GetRandomFlags::empty())?;
    Ok(u32::from_ne_bytes(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_content_with_mode_0600_and_no_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("layers.json");
        std::fs::write(&target, b"[old content, longer than the new]").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        for sync in [true, false] {
            write_atomic(&target, b"[]", sync).unwrap();
            assert_eq!(std::fs::read(&target).unwrap(), b"[]");
            let mode = std::fs::metadata(&target).unwrap().permissions().mode();
            assert_eq!(mode & 0o7777, 0o600);
            assert_eq!(entries(dir.path()), ["layers.json"]);
        }
    }

    #[test]
    fn creates_missing_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("images.json");
        write_atomic(&target, b"[{\"id\":\"x\"}]", true).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"[{\"id\":\"x\"}]");
        assert_eq!(entries(dir.path()), ["images.json"]);
    }

    #[test]
    fn missing_directory_fails_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("nope").join("layers.json");
        let err = write_atomic(&target, b"[]", true).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn failed_rename_leaves_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("containers.json");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("keep"), b"precious").unwrap();
        assert!(write_atomic(&target, b"[]", true).is_err());
        assert_eq!(std::fs::read(target.join("keep")).unwrap(), b"precious");
        assert_eq!(entries(dir.path()), ["containers.json"]);
    }

    #[test]
    fn temp_name_follows_containers_storage() {
        let dir = tempfile::tempdir().unwrap();
        let fd = rustix::fs::open(
            dir.path(),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        let (name, _file) = create_temp(fd.as_fd(), b".tmp-layers.json").unwrap();
        let name = String::from_utf8(name).unwrap();
        let digits = name.strip_prefix(".tmp-layers.json").unwrap();
        assert!(
            !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()),
            "{name}"
        );
        let mode = std::fs::metadata(dir.path().join(&name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
