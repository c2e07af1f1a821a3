//! Our lock files against other processes: Python's `fcntl.lockf` (POSIX
//! record locks, like Go's) without privileges, and the real
//! `containers-storage` CLI (v1.43, Debian) on a private store, as root.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use layerstore::lockfile::{LockFile, LockMode, TOKEN_LEN};
use layerstore_test_support::{require_privileged, run_ok, PodmanStore};

/// Long enough that a blocked thread or process would have run by then.
const SETTLE: Duration = Duration::from_secs(1);
/// Generous bound for something that must happen.
const EVENTUALLY: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- python

const PY_HOLD: &str = "import fcntl,sys
f=open(sys.argv[1],'r+'); fcntl.lockf(f, fcntl.LOCK_EX); print('locked',flush=True)
sys.stdin.readline()";

const PY_PROBE: &str = "import fcntl,sys
out=[]
for name,fn,op in (('lockf-ex',fcntl.lockf,fcntl.LOCK_EX),('lockf-sh',fcntl.lockf,fcntl.LOCK_SH),('flock-ex',fcntl.flock,fcntl.LOCK_EX)):
    f=open(sys.argv[1],'r+')
    try:
        fn(f,op|fcntl.LOCK_NB); out.append(name+'=ok'); fn(f,fcntl.LOCK_UN)
    except OSError:
        out.append(name+'=busy')
    f.close()
print(' '.join(out))";

fn python(script: &str, path: &Path) -> Command {
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script]).arg(path);
    cmd
}

/// Which non-blocking locks another process can take right now.
fn probe(path: &Path) -> String {
    let out = python(PY_PROBE, path).output().expect("python3 is needed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Starts Python holding `F_WRLCK`; it lets go when its stdin closes.
fn python_holding(path: &Path) -> (Child, ChildStdin) {
    let mut child = python(PY_HOLD, path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 is needed");
    let mut line = String::new();
    let stdout = child.stdout.take().unwrap();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "locked");
    let stdin = child.stdin.take().unwrap();
    (child, stdin)
}

/// A thread blocking in `write()`; reports on the channel once it got in.
fn spawn_writer(lock: &Arc<LockFile>) -> (std::thread::JoinHandle<()>, mpsc::Receiver<()>) {
    let (tx, rx) = mpsc::channel();
    let lock = Arc::clone(lock);
    let thread = std::thread::spawn(move || {
        let guard = lock.write().unwrap();
        let _ = tx.send(());
        drop(guard);
    });
    (thread, rx)
}

#[test]
fn python_lockf_excludes_us() {
    let dir = tempfile::tempdir().unwrap();
    let lock = LockFile::open(&dir.path().join("py.lock"), LockMode::ReadWrite).unwrap();
    let (mut child, stdin) = python_holding(lock.path());
    assert!(lock.try_write().unwrap().is_none());
    assert!(lock.try_read().unwrap().is_none());
    let (thread, got_in) = spawn_writer(&lock);
    assert!(
        got_in.recv_timeout(SETTLE).is_err(),
        "write() returned while python held"
    );
    assert!(child.try_wait().unwrap().is_none(), "python left too early");
    drop(stdin);
    assert!(child.wait().unwrap().success());
    got_in
        .recv_timeout(EVENTUALLY)
        .expect("write() returns once python exited");
    thread.join().unwrap();
}

#[test]
fn we_exclude_python_lockf_but_not_flock() {
    let dir = tempfile::tempdir().unwrap();
    let lock = LockFile::open(&dir.path().join("probe.lock"), LockMode::ReadWrite).unwrap();
    assert_eq!(probe(lock.path()), "lockf-ex=ok lockf-sh=ok flock-ex=ok");
    {
        let _w = lock.write().unwrap();
        // flock(2) does not see POSIX locks: that is why we use fcntl.
        assert_eq!(
            probe(lock.path()),
            "lockf-ex=busy lockf-sh=busy flock-ex=ok"
        );
    }
    {
        let _r = lock.read().unwrap();
        assert_eq!(probe(lock.path()), "lockf-ex=busy lockf-sh=ok flock-ex=ok");
    }
    assert_eq!(probe(lock.path()), "lockf-ex=ok lockf-sh=ok flock-ex=ok");
}

// ------------------------------------------------------ containers-storage

/// A fresh store that containers-storage has initialised; unmounted and
/// removed on drop.
fn new_store() -> PodmanStore {
    let store = PodmanStore::empty();
    run_ok(store.containers_storage().arg("layers"));
    store
}

fn layers_lock(store: &PodmanStore) -> PathBuf {
    store.graph.join("overlay-layers/layers.lock")
}

/// A child that is killed if the test ends (or panics) while it runs.
struct Running(Child);

impl Running {
    fn spawn(cmd: &mut Command) -> Running {
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        Running(child)
    }

    fn still_running(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }

    /// Waits up to `limit`, then asserts that it exited 0.
    fn expect_success_within(&mut self, limit: Duration) {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                break status;
            }
            assert!(
                start.elapsed() < limit,
                "child still running after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let drain = |pipe: Option<&mut dyn Read>| {
            let mut text = String::new();
            pipe.map(|p| p.read_to_string(&mut text));
            text
        };
        let stdout = drain(self.0.stdout.as_mut().map(|p| p as &mut dyn Read));
        let stderr = drain(self.0.stderr.as_mut().map(|p| p as &mut dyn Read));
        assert!(
            status.success(),
            "{status}\nstdout: {stdout}\nstderr: {stderr}"
        );
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.still_running() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

#[test]
#[ignore = "privileged: needs root and containers-storage"]
fn containers_storage_waits_for_our_write_lock() {
    require_privileged(&["containers-storage"]);
    let store = new_store();
    let lock = LockFile::open(&layers_lock(&store), LockMode::ReadWrite).unwrap();
    let guard = lock.write().unwrap();
    let mut layers = Running::spawn(store.containers_storage().arg("layers"));
    std::thread::sleep(SETTLE);
    assert!(
        layers.still_running(),
        "`layers` ran while we held layers.lock"
    );
    drop(guard);
    layers.expect_success_within(EVENTUALLY);
}

#[test]
#[ignore = "privileged: needs root and containers-storage"]
fn we_wait_while_containers_storage_imports_a_layer() {
    require_privileged(&["containers-storage"]);
    let store = new_store();
    let lock = LockFile::open(&layers_lock(&store), LockMode::ReadWrite).unwrap();
    {
        let guard = lock.read().unwrap();
        guard.modified().unwrap();
        assert!(!guard.modified().unwrap());
    }
    let fifo = store.run.with_file_name("layer.fifo");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    let mut import = Running::spawn(
        store
            .containers_storage()
            .arg("import-layer")
            .arg("-f")
            .arg(&fifo),
    );
    let mut tar = open_fifo_for_writing(&fifo, &mut import);
    tar.write_all(&tar_header("hello", 10)).unwrap();
    tar.flush().unwrap();
    wait_for_posix_write_lock(import.0.id(), &layers_lock(&store));

    assert!(lock.try_write().unwrap().is_none());
    let (thread, got_in) = spawn_writer(&lock);
    assert!(
        got_in.recv_timeout(SETTLE).is_err(),
        "we got layers.lock during import"
    );
    assert!(import.still_running());

    tar.write_all(b"0123456789").unwrap();
    tar.write_all(&[0u8; 512 - 10 + 1024]).unwrap();
    drop(tar);
    import.expect_success_within(EVENTUALLY);
    got_in
        .recv_timeout(EVENTUALLY)
        .expect("write() returns after the import");
    thread.join().unwrap();

    let guard = lock.read().unwrap();
    assert!(
        guard.modified().unwrap(),
        "containers-storage wrote a new token"
    );
    drop(guard);
    let listed = run_ok(store.containers_storage().arg("layers"));
    assert_eq!(String::from_utf8_lossy(&listed.stdout).lines().count(), 1);
}

#[test]
#[ignore = "privileged: needs root and containers-storage"]
fn containers_storage_accepts_our_token() {
    require_privileged(&["containers-storage"]);
    let store = new_store();
    let lock = LockFile::open(&layers_lock(&store), LockMode::ReadWrite).unwrap();
    {
        let guard = lock.write().unwrap();
        let before = guard.token().unwrap();
        guard.record_write().unwrap();
        let after = guard.token().unwrap().expect("64 bytes after record_write");
        assert_ne!(before, Some(after));
        assert_eq!(after[16..20], std::process::id().to_le_bytes());
        assert_eq!(
            std::fs::metadata(lock.path()).unwrap().len(),
            TOKEN_LEN as u64
        );
    }
    run_ok(store.containers_storage().arg("layers"));
}

/// Opens the fifo once `child` has opened it for reading (never blocks for
/// good if the child dies first).
fn open_fifo_for_writing(fifo: &Path, child: &mut Running) -> std::fs::File {
    use rustix::fs::OFlags;
    let start = Instant::now();
    loop {
        let flags = OFlags::WRONLY | OFlags::NONBLOCK | OFlags::CLOEXEC;
        match rustix::fs::open(fifo, flags, rustix::fs::Mode::empty()) {
            Ok(fd) => {
                rustix::fs::fcntl_setfl(fd.as_fd(), OFlags::empty()).unwrap();
                return std::fs::File::from(fd);
            }
            Err(rustix::io::Errno::NXIO) => {}
            Err(e) => panic!("opening {}: {e}", fifo.display()),
        }
        assert!(
            child.still_running(),
            "import-layer exited before reading the fifo"
        );
        assert!(
            start.elapsed() < EVENTUALLY,
            "import-layer never opened the fifo"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A ustar header for a regular file `name` of `size` bytes, mode 0644, root.
fn tar_header(name: &str, size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    let mut put = |at: usize, bytes: &[u8]| h[at..at + bytes.len()].copy_from_slice(bytes);
    put(0, name.as_bytes());
    put(100, b"0000644\0");
    put(108, b"0000000\0");
    put(116, b"0000000\0");
    put(124, format!("{size:011o}\0").as_bytes());
    put(136, b"00000000000\0");
    put(148, b"        ");
    put(156, b"0");
    put(257, b"ustar\0");
    put(263, b"00");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// Polls `/proc/locks` until `pid` holds a POSIX write lock on `path`.
fn wait_for_posix_write_lock(pid: u32, path: &Path) {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(path).unwrap().ino();
    let start = Instant::now();
    loop {
        let held = layerstore_test_support::proclocks::holds_posix_write_lock(pid, path);
        if held {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "containers-storage (pid {pid}) took no POSIX write lock on {} (inode {ino}) \
             within 20 s; /proc/locks:\n{:#?}",
            path.display(),
            layerstore_test_support::proclocks::proc_locks()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
