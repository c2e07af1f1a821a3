//! Signals for the container's init while the launcher waits for it.

use std::io;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use rustix::process::{Pid, Signal, WaitOptions};

use super::Context;

/// Forwards signals to a process (the container's init, or podman) until
/// stopped. Installed before that process exists, so that a signal that
/// comes meanwhile is not lost (nor kills us): it is delivered once the
/// pid is known ([`Forwarder::target`]). Ignored signals are caught and
/// dropped.
pub struct Forwarder {
    handle: signal_hook::iterator::Handle,
    thread: Option<std::thread::JoinHandle<()>>,
    target: Arc<AtomicI32>,
    pending: Arc<std::sync::Mutex<Vec<i32>>>,
}

impl Forwarder {
    /// Catch `forwarded` (to be sent on) and `ignored` (dropped).
    pub fn install(forwarded: &[i32], ignored: &[i32]) -> super::Result<Forwarder> {
        let mut signals = signal_hook::iterator::Signals::new(forwarded.iter().chain(ignored))
            .context("installing signal handlers")?;
        let handle = signals.handle();
        let target = Arc::new(AtomicI32::new(0));
        let pending = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (to, queue) = (target.clone(), pending.clone());
        let ignored = ignored.to_vec();
        let thread = std::thread::spawn(move || {
            for sig in signals.forever() {
                if ignored.contains(&sig) {
                    continue;
                }
                let mut queue = queue.lock().unwrap_or_else(|p| p.into_inner());
                match Pid::from_raw(to.load(Ordering::SeqCst)) {
                    Some(pid) => {
                        if let Some(signal) = Signal::from_named_raw(sig) {
                            tracing::debug!(
                                sig,
                                pid = pid.as_raw_nonzero().get(),
                                "forwarding a signal"
                            );
                            let _ = rustix::process::kill_process(pid, signal);
                        }
                    }
                    None => queue.push(sig),
                }
            }
        });
        Ok(Forwarder {
            handle,
            thread: Some(thread),
            target,
            pending,
        })
    }

    /// Stop catching; the signals' default actions apply again.
    pub fn stop(mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// From now on, signals go to `pid`; those that came before go now.
    pub fn target(&self, pid: Pid) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        self.target
            .store(pid.as_raw_nonzero().get(), Ordering::SeqCst);
        for sig in pending.drain(..) {
            if let Some(signal) = Signal::from_named_raw(sig) {
                let _ = rustix::process::kill_process(pid, signal);
            }
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP, for the container's init (as PID 1 it
/// only reacts to signals it handles, as under podman).
pub(crate) fn forward_signals() -> super::Result<Forwarder> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    Forwarder::install(&[SIGINT, SIGTERM, SIGHUP], &[])
}

/// Wait for the container's init; its exit code, or 128 + the signal.
pub fn wait_exit_code(pid: Pid) -> super::Result<u8> {
    loop {
        match rustix::process::waitpid(Some(pid), WaitOptions::empty()) {
            Ok(Some((_, status))) => {
                if let Some(code) = status.exit_status() {
                    return Ok(code as u8);
                }
                if let Some(sig) = status.terminating_signal() {
                    return Ok(128u8.wrapping_add(sig as u8));
                }
            }
            Ok(None) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(io::Error::from(e)).context("waiting for the container"),
        }
    }
}
