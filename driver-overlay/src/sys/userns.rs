//! [`user_namespace`]: a user-namespace fd with given uid/gid maps.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use layerstore::idmap::{format_id_map, format_proc_map, validate, IdMap, IdMapError};
use rustix::fs::{openat, Mode, OFlags, CWD};

use super::IdmapError;

/// `struct clone_args` up to `tls` (`CLONE_ARGS_SIZE_VER0`, 64 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
}

/// A user namespace whose uid and gid maps are `uids` and `gids`, as an
/// `O_RDONLY` fd of `/proc/<pid>/ns/user` (what `mount_setattr`'s
/// `userns_fd` wants). See the [module docs](super) for how.
///
/// Both maps must be non-empty and pass [`validate`]; nothing is created
/// otherwise. Needs `CAP_SETUID`/`CAP_SETGID` over the host ids (root).
pub fn user_namespace(uids: &[IdMap], gids: &[IdMap]) -> Result<OwnedFd, IdmapError> {
    check_map("uid", uids)?;
    check_map("gid", gids)?;
    let names = || (format_id_map(uids), format_id_map(gids));
    let mut child = Child::spawn().map_err(|source| {
        let (uids, gids) = names();
        IdmapError::Spawn { uids, gids, source }
    })?;
    let fail = |action: String, source: io::Error| {
        let (uids, gids) = names();
        IdmapError::Namespace {
            uids,
            gids,
            action,
            source,
        }
    };
    let proc_path = format!("/proc/{}", child.pid);
    let proc_dir = openat(
        CWD,
        &proc_path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail(format!("open {proc_path}"), e.into()))?;
    // The child cannot exit on its own, and we have not reaped it: if the
    // pidfd still reports it alive now, `proc_dir` is our child's.
    child
        .check_alive()
        .map_err(|e| fail(format!("check that child {} is alive", child.pid), e))?;
    for (file, map) in [("uid_map", uids), ("gid_map", gids)] {
        write_map(&proc_dir, file, map)
            .map_err(|e| fail(format!("write {proc_path}/{file}"), e))?;
    }
    let ns = openat(
        &proc_dir,
        "ns/user",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail(format!("open {proc_path}/ns/user"), e.into()))?;
    child
        .finish()
        .map_err(|e| fail(format!("reap child {}", child.pid), e))?;
    Ok(ns)
}

fn check_map(kind: &'static str, map: &[IdMap]) -> Result<(), IdmapError> {
    let invalid = |source| IdmapError::InvalidMap {
        kind,
        map: format_id_map(map),
        source,
    };
    if map.is_empty() {
        return Err(invalid(IdMapError::Empty));
    }
    validate(map).map_err(invalid)
}

/// The whole map in one `write`: the kernel accepts a map only once, and
/// only from a single write starting at offset 0.
fn write_map(proc_dir: &OwnedFd, file: &str, map: &[IdMap]) -> io::Result<()> {
    let text = format_proc_map(map);
    let fd = openat(
        proc_dir,
        file,
        OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let written = rustix::io::write(&fd, text.as_bytes())?;
    if written != text.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write: {written} of {} bytes", text.len()),
        ));
    }
    Ok(())
}

/// The child holding the new user namespace. Dropping it kills and reaps it.
struct Child {
    pid: libc::pid_t,
    pidfd: OwnedFd,
    /// Our end of the pipe the child blocks on; closing it lets it exit.
    release: Option<OwnedFd>,
    reaped: bool,
}

impl Child {
    /// `clone3({CLONE_NEWUSER | CLONE_PIDFD, exit_signal: SIGCHLD})`.
    fn spawn() -> io::Result<Child> {
        let (read_end, write_end) = pipe()?;
        let mut pidfd: libc::c_int = -1;
        let args = CloneArgs {
            flags: (libc::CLONE_NEWUSER | libc::CLONE_PIDFD) as u64,
            pidfd: std::ptr::addr_of_mut!(pidfd) as u64,
            exit_signal: libc::SIGCHLD as u64,
            ..CloneArgs::default()
        };
        let (read_raw, write_raw) = (read_end.as_raw_fd(), write_end.as_raw_fd());
        // SAFETY: `args` is a valid, initialised `struct clone_args` of the
        // size passed, and `args.pidfd` points to a live c_int. Without
        // CLONE_VM the child gets a copy-on-write copy of our memory and
        // stack, like fork(2). The child (ret == 0) only makes
        // async-signal-safe system calls on fds it inherited and never
        // returns from this block, so no lock or allocator state another
        // thread held at clone time is touched (errno is plain thread-local
        // memory of the cloned thread).
        let ret = unsafe {
            let ret = libc::syscall(
                libc::SYS_clone3,
                std::ptr::addr_of!(args),
                std::mem::size_of::<CloneArgs>(),
            );
            if ret == 0 {
                libc::close(write_raw);
                let mut byte = 0u8;
                while libc::read(read_raw, std::ptr::addr_of_mut!(byte).cast(), 1) < 0
                    && *libc::__errno_location() == libc::EINTR
                {}
                libc::_exit(0);
            }
            ret
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        drop(read_end);
        // SAFETY: clone3 succeeded with CLONE_PIDFD, so the kernel stored a
        // new pidfd that nothing else owns in `pidfd`.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        Ok(Child {
            pid: ret as libc::pid_t,
            pidfd,
            release: Some(write_end),
            reaped: false,
        })
    }

    /// `pidfd_send_signal(pidfd, 0)`: fails with `ESRCH` once the child is
    /// gone.
    fn check_alive(&self) -> io::Result<()> {
        self.signal(0)
    }

    /// `int pidfd_send_signal(int pidfd, int sig, siginfo_t *info, unsigned int flags);`
    /// (<https://man7.org/linux/man-pages/man2/pidfd_send_signal.2.html>).
    fn signal(&self, sig: libc::c_int) -> io::Result<()> {
        // SAFETY: a valid pidfd, a null siginfo (the kernel fills one in)
        // and no flags.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0u32,
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Release, kill and reap the child (`waitid(P_PIDFD, ..., WEXITED)`).
    fn finish(&mut self) -> io::Result<()> {
        if self.reaped {
            return Ok(());
        }
        self.release = None;
        // Closing the pipe alone lets it exit; SIGKILL in case another
        // process inherited the write end.
        let _ = self.signal(libc::SIGKILL);
        loop {
            // SAFETY: all-zero bytes are a valid siginfo_t (plain data).
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: a valid pidfd and a live siginfo_t to fill in.
            let ret = unsafe {
                libc::waitid(
                    libc::P_PIDFD,
                    self.pidfd.as_raw_fd() as libc::id_t,
                    &mut info,
                    libc::WEXITED,
                )
            };
            if ret == 0 {
                self.reaped = true;
                return Ok(());
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                // Someone else reaped it: it is gone either way.
                Some(libc::ECHILD) => {
                    self.reaped = true;
                    return Ok(());
                }
                _ => return Err(err),
            }
        }
    }
}

/// `int pipe2(int pipefd[2], int flags);` with `O_CLOEXEC`
/// (<https://man7.org/linux/man-pages/man2/pipe2.2.html>): `(read, write)`.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds: [libc::c_int; 2] = [-1; 2];
    // SAFETY: `fds` is a live array of two c_ints for the kernel to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded: both are new fds that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            tracing::warn!(pid = self.pid, error = %e, "could not reap user-namespace child");
        }
    }
}
