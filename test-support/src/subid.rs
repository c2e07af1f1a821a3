//! Tests that need `/etc/subuid` and `/etc/subgid` entries (podman's
//! `--userns=auto` reads only those files): [`SubIds::set`] gives the
//! owners it names (and `containers`) exactly the lines given, keeping every
//! other owner's lines (a rootless test of another user may be running), for
//! the life of the guard, and restores both files byte for byte on drop,
//! also when the test fails. One test at a time holds them (an exclusive lock on
//! [`LOCK`], across processes); a backup kept under `/run` while they are
//! changed lets the next test restore them if a run was killed.

use std::fs;
use std::path::{Path, PathBuf};

/// The lock every test that changes the files holds.
pub const LOCK: &str = "/run/layerstore-test-subid.lock";
/// The originals while they are changed.
const BACKUP: &str = "/run/layerstore-test-subid.backup";
const FILES: [&str; 2] = ["/etc/subuid", "/etc/subgid"];

/// `/etc/subuid` and `/etc/subgid` replaced until drop.
#[derive(Debug)]
pub struct SubIds {
    _lock: fs::File,
}

fn backup_of(file: &str) -> PathBuf {
    Path::new(BACKUP).join(Path::new(file).file_name().unwrap())
}

/// Put the originals back from the backup, if there is one.
fn restore() {
    if !Path::new(BACKUP).join("complete").exists() {
        let _ = fs::remove_dir_all(BACKUP);
        return;
    }
    for file in FILES {
        match fs::read(backup_of(file)) {
            Ok(bytes) => fs::write(file, bytes).expect("restoring a subordinate id file"),
            Err(_) => {
                let _ = fs::remove_file(file);
            }
        }
    }
    fs::remove_dir_all(BACKUP).expect("removing the subordinate id backup");
}

impl SubIds {
    /// Give the owners named in `subuid` and `subgid`, and `containers`,
    /// exactly these lines.
    pub fn set(subuid: &str, subgid: &str) -> SubIds {
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK)
            .expect("opening the subordinate id test lock");
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .expect("locking the subordinate id test lock");
        // A killed run left its changes: undo them first.
        restore();
        fs::create_dir_all(BACKUP).unwrap();
        for file in FILES {
            if let Ok(bytes) = fs::read(file) {
                fs::write(backup_of(file), bytes).unwrap();
            }
        }
        fs::write(Path::new(BACKUP).join("complete"), "").unwrap();
        let owner = |line: &str| line.split(':').next().unwrap_or_default().to_owned();
        let mut ours: Vec<String> = subuid.lines().chain(subgid.lines()).map(owner).collect();
        ours.push("containers".to_owned());
        for (file, text) in FILES.iter().zip([subuid, subgid]) {
            let kept: String = fs::read_to_string(file)
                .unwrap_or_default()
                .lines()
                .filter(|l| !ours.contains(&owner(l)))
                .map(|l| format!("{l}\n"))
                .collect();
            fs::write(file, kept + text).expect("writing a subordinate id file");
        }
        SubIds { _lock: lock }
    }
}

impl Drop for SubIds {
    fn drop(&mut self) {
        restore();
    }
}
