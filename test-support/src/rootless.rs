//! Running rootless podman and layerstore as a test user: a clean
//! environment as rootless podman wants it, and the end of every process
//! the user left (rootless podman leaves a pause process per user
//! namespace), also when the test fails.

use std::path::Path;
use std::process::Command;

/// Ends every process of `user` on drop, each by its pid.
#[derive(Debug)]
pub struct Reaper(pub &'static str);

impl Drop for Reaper {
    fn drop(&mut self) {
        let Ok(out) = Command::new("ps")
            .args(["-u", self.0, "-o", "pid="])
            .output()
        else {
            return;
        };
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
}

/// `cmd` (its program, arguments and the variables set on it) run as
/// `user` through `runuser`, with only `PATH`, `HOME=home`, `USER` and
/// `XDG_RUNTIME_DIR=xdg` from outside.
pub fn as_user(user: &str, home: &Path, xdg: &Path, cmd: &Command) -> Command {
    let mut out = Command::new("runuser");
    out.args([
        "-u",
        user,
        "--",
        "env",
        "-i",
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
    ])
    .arg(format!("HOME={}", home.display()))
    .arg(format!("USER={user}"))
    .arg(format!("XDG_RUNTIME_DIR={}", xdg.display()));
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            out.arg(format!("{}={}", k.to_string_lossy(), v.to_string_lossy()));
        }
    }
    out.arg(cmd.get_program()).args(cmd.get_args());
    out
}
