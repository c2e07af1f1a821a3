//! Unit tests of the lock files: same handle per path, token layout,
//! change detection, in-process exclusion.

use super::*;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

/// Long enough that a blocked thread would certainly have run by then.
const SETTLE: Duration = Duration::from_millis(500);
/// Generous bound for something that must happen.
const EVENTUALLY: Duration = Duration::from_secs(30);

fn new_lock(dir: &tempfile::TempDir, name: &str) -> Arc<LockFile> {
    LockFile::open(&dir.path().join(name), LockMode::ReadWrite).unwrap()
}

/// Overwrites the start of `path` from another process (a second fd in
/// ours would drop our POSIX locks).
fn foreign_write(path: &Path, bytes: &str) {
    let status = Command::new("sh")
        .args([
            "-c",
            "printf %s \"$1\" | dd of=\"$2\" conv=notrunc status=none",
            "sh",
        ])
        .args([bytes, path.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn same_instance_for_equivalent_paths() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::os::unix::fs::symlink(dir.path(), dir.path().join("link")).unwrap();
    let a = new_lock(&dir, "x.lock");
    for other in ["./x.lock", "sub/../x.lock", "link/x.lock"] {
        let b = LockFile::open(&dir.path().join(other), LockMode::ReadWrite).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "{other}");
    }
    let err = LockFile::open(&dir.path().join("x.lock"), LockMode::ReadOnly).unwrap_err();
    assert!(matches!(
        err,
        LockError::ModeMismatch {
            existing: LockMode::ReadWrite,
            ..
        }
    ));
    drop(a);
    let again = new_lock(&dir, "x.lock");
    drop(again.write().unwrap());
}

#[test]
fn open_creates_file_and_parents() {
    let dir = tempfile::tempdir().unwrap();
    let lock = new_lock(&dir, "a/b/layers.lock");
    let meta = std::fs::metadata(lock.path()).unwrap();
    assert_eq!(meta.len(), 0);
    let parent = std::fs::metadata(dir.path().join("a/b")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&parent.permissions()) & 0o777,
        0o700
    );
}

#[test]
fn token_layout() {
    let dir = tempfile::tempdir().unwrap();
    let lock = new_lock(&dir, "t.lock");
    let guard = lock.write().unwrap();
    assert_eq!(guard.token().unwrap(), None);
    guard.record_write().unwrap();
    let first = guard.token().unwrap().unwrap();
    assert_eq!(
        std::fs::metadata(lock.path()).unwrap().len(),
        TOKEN_LEN as u64
    );
    assert_eq!(first[16..20], std::process::id().to_le_bytes());
    let nanos = u64::from_le_bytes(first[0..8].try_into().unwrap());
    assert!(nanos > 1_600_000_000 * 1_000_000_000, "unix nanos: {nanos}");
    guard.record_write().unwrap();
    let second = guard.token().unwrap().unwrap();
    let counter = |t: &[u8; TOKEN_LEN]| u64::from_le_bytes(t[8..16].try_into().unwrap());
    assert!(counter(&second) > counter(&first));
    assert_ne!(first[20..], second[20..]);
}

#[test]
fn modified_semantics() {
    let dir = tempfile::tempdir().unwrap();
    let lock = new_lock(&dir, "m.lock");
    {
        let guard = lock.read().unwrap();
        assert!(guard.modified().unwrap(), "first look after open");
        assert!(!guard.modified().unwrap(), "empty file, seen empty");
    }
    foreign_write(lock.path(), &"1".repeat(TOKEN_LEN));
    {
        let guard = lock.write().unwrap();
        assert!(guard.modified().unwrap(), "another process wrote");
        assert!(!guard.modified().unwrap());
        guard.record_write().unwrap();
        assert!(!guard.modified().unwrap(), "our own write is not foreign");
    }
    foreign_write(lock.path(), &"2".repeat(TOKEN_LEN));
    let guard = lock.read().unwrap();
    assert_eq!(guard.token().unwrap(), Some([b'2'; TOKEN_LEN]));
    assert!(guard.modified().unwrap());
}

#[test]
fn odd_size_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("odd.lock");
    std::fs::write(&path, b"0123456789").unwrap();
    let err = LockFile::open(&path, LockMode::ReadWrite).unwrap_err();
    assert!(
        matches!(err, LockError::OddSize { size: 10, .. }),
        "{err:?}"
    );

    let lock = new_lock(&dir, "grows.lock");
    foreign_write(lock.path(), &"3".repeat(TOKEN_LEN + 6));
    let err = lock.read().unwrap().modified().unwrap_err();
    assert!(
        matches!(err, LockError::OddSize { size: 70, .. }),
        "{err:?}"
    );
}

#[test]
fn read_only_lock_refuses_write() {
    let dir = tempfile::tempdir().unwrap();
    let lock = LockFile::open(&dir.path().join("ro.lock"), LockMode::ReadOnly).unwrap();
    assert!(matches!(lock.write(), Err(LockError::ReadOnly { .. })));
    assert!(matches!(lock.try_write(), Err(LockError::ReadOnly { .. })));
    let guard = lock.read().unwrap();
    assert!(guard.modified().unwrap());
}

#[test]
fn writer_blocks_reader_thread() {
    let dir = tempfile::tempdir().unwrap();
    let lock = new_lock(&dir, "w.lock");
    let guard = lock.write().unwrap();
    let (tx, rx) = mpsc::channel();
    let other = Arc::clone(&lock);
    let thread = std::thread::spawn(move || {
        let g = other.read().unwrap();
        tx.send(()).unwrap();
        drop(g);
    });
    assert!(
        rx.recv_timeout(SETTLE).is_err(),
        "reader got in beside a writer"
    );
    assert!(lock.try_read().unwrap().is_none());
    drop(guard);
    rx.recv_timeout(EVENTUALLY)
        .expect("reader acquires after the writer left");
    thread.join().unwrap();
}

#[test]
fn readers_share_and_block_writer_thread() {
    let dir = tempfile::tempdir().unwrap();
    let lock = new_lock(&dir, "r.lock");
    let first = lock.read().unwrap();
    std::thread::scope(|s| {
        s.spawn(|| assert!(lock.try_read().unwrap().is_some()))
            .join()
            .unwrap();
    });
    let (tx, rx) = mpsc::channel();
    let other = Arc::clone(&lock);
    let thread = std::thread::spawn(move || {
        let g = other.write().unwrap();
        tx.send(()).unwrap();
        drop(g);
    });
    assert!(
        rx.recv_timeout(SETTLE).is_err(),
        "writer got in beside a reader"
    );
    drop(first);
    rx.recv_timeout(EVENTUALLY)
        .expect("writer acquires after the reader left");
    thread.join().unwrap();
}

#[test]
fn try_write_none_while_another_thread_holds() {
    let dir = tempfile::tempdir().unwrap();
    let lock = new_lock(&dir, "tw.lock");
    let (held_tx, held_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let other = Arc::clone(&lock);
    let thread = std::thread::spawn(move || {
        let g = other.write().unwrap();
        held_tx.send(()).unwrap();
        let _ = release_rx.recv();
        drop(g);
    });
    held_rx.recv_timeout(EVENTUALLY).unwrap();
    assert!(lock.try_write().unwrap().is_none());
    assert!(lock.try_read().unwrap().is_none());
    release_tx.send(()).unwrap();
    thread.join().unwrap();
    assert!(lock.try_write().unwrap().is_some());
}

/// Whether /proc/locks lists a POSIX write lock of ours on `path`.
fn we_hold_posix_write_lock(path: &Path) -> bool {
    layerstore_test_support::proclocks::holds_posix_write_lock(std::process::id(), path)
}

/// Smoke test of the registry under churn: no deadlock, and the lock we
/// take is really held (the close-before-reopen handshake in `open` and
/// `Drop` is what keeps an old instance's close from dropping it).
#[test]
fn concurrent_open_drop_and_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("race.lock");
    std::thread::scope(|s| {
        for locker in [true, true, false, false] {
            let path = &path;
            s.spawn(move || {
                for _ in 0..300 {
                    let lock = LockFile::open(path, LockMode::ReadWrite).unwrap();
                    if locker {
                        let _guard = lock.write().unwrap();
                        assert!(we_hold_posix_write_lock(path));
                    }
                }
            });
        }
    });
}

#[test]
fn lock_kind_order() {
    use LockKind::*;
    let kinds = [Storage, Userns, Layers, Mountpoints, Images, Containers];
    assert!(kinds.windows(2).all(|w| w[0].order() < w[1].order()));
    assert_eq!(Layers.file_name(), "layers.lock");
}

#[test]
fn a_symlinked_lock_file_is_refused_and_its_target_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::os::unix::fs::symlink(&victim, dir.path().join("layers.lock")).unwrap();
    let err = LockFile::open(&dir.path().join("layers.lock"), LockMode::ReadWrite).unwrap_err();
    assert!(matches!(err, LockError::Open { .. }), "{err:?}");
    let msg = format!("{:#}", anyhow_like(&err));
    assert!(msg.contains("symlink"), "{msg}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    std::fs::create_dir(dir.path().join("dir.lock")).unwrap();
    let err = LockFile::open(&dir.path().join("dir.lock"), LockMode::ReadWrite).unwrap_err();
    assert!(matches!(err, LockError::Open { .. }), "{err:?}");
}

#[test]
fn a_hard_linked_lock_file_is_refused_and_its_other_name_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"").unwrap();
    std::fs::hard_link(&victim, dir.path().join("layers.lock")).unwrap();
    for mode in [LockMode::ReadWrite, LockMode::ReadOnly] {
        let err = LockFile::open(&dir.path().join("layers.lock"), mode).unwrap_err();
        let msg = anyhow_like(&err);
        assert!(
            msg.contains("layers.lock") && msg.contains("hard links"),
            "{msg}"
        );
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"");
}

#[test]
fn a_fifo_in_place_of_a_lock_file_is_refused_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("images.lock");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    for mode in [LockMode::ReadOnly, LockMode::ReadWrite] {
        let err = LockFile::open(&fifo, mode).unwrap_err();
        assert!(anyhow_like(&err).contains("not a regular file"), "{err:?}");
    }
}

#[test]
fn a_lock_file_opened_for_locking_is_blocking_again() {
    let dir = tempfile::tempdir().unwrap();
    let lock = new_lock(&dir, "x.lock");
    let flags = rustix::fs::fcntl_getfl(lock.fd.as_ref().unwrap()).unwrap();
    assert!(!flags.contains(OFlags::NONBLOCK));
}

/// The error and its sources on one line.
fn anyhow_like(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
