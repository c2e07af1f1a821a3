//! c/storage's rootless rules: which file a rootless user's settings come
//! from, what they inherit from the system file, and the rootless default
//! graphroot and runtime directory.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::file::{exists, normalise_driver, read_settings};
use super::paths::expand_env_path;
use super::{ConfigError, Env, Settings, STORAGE_CONF_ENV};

/// Drivers c/storage lets a rootless user inherit from the system file.
const ROOTLESS_DRIVERS: [&str; 4] = ["btrfs", "overlay", "overlay2", "vfs"];

pub(super) fn rootless_settings(
    env: &Env,
    uid: u32,
    system: Option<(PathBuf, Settings)>,
) -> Result<(Settings, Option<PathBuf>), ConfigError> {
    let (system_path, system) = system.unzip();
    let base = rootless_base(env, uid, &system.unwrap_or_default())?;
    let user_path = user_file(env)?;
    if !exists(&user_path)? {
        return Ok((base, system_path));
    }
    let mut s = read_settings(env, &user_path)?;
    if s.run_root.as_os_str().is_empty() {
        s.run_root = base.run_root;
    }
    if s.graph_root.as_os_str().is_empty() {
        s.graph_root = if s.rootless_storage_path.is_empty() {
            base.graph_root
        } else {
            PathBuf::from(&s.rootless_storage_path)
        };
    }
    Ok((s, Some(user_path)))
}

/// c/storage's `getRootlessStorageOpts`: what a rootless user takes from the
/// system file when there is no per-user file.
fn rootless_base(env: &Env, uid: u32, system: &Settings) -> Result<Settings, ConfigError> {
    let run_root = rootless_runtime_dir(env, uid)?.join("containers");
    let graph_root = if system.rootless_storage_path.is_empty() {
        data_home(env)?.join("containers/storage")
    } else {
        expand_env_path(Path::new(&system.rootless_storage_path), uid, env)
    };
    let mut driver = String::new();
    if ROOTLESS_DRIVERS.contains(&system.driver.as_str()) {
        driver.clone_from(&system.driver);
    }
    if let Some(d) = env.var("STORAGE_DRIVER") {
        driver = d.to_owned();
    }
    let driver = normalise_driver(&driver);
    let mut driver_options: Vec<String> = Vec::new();
    if driver == "overlay" {
        let chown = system
            .driver_options
            .iter()
            .find(|o| o.contains("ignore_chown_errors"));
        driver_options.extend(chown.cloned());
    }
    if let Some(extra) = env.var("STORAGE_OPTS") {
        driver_options.extend(extra.split(',').map(String::from));
    }
    let driver = if driver.is_empty() {
        "vfs".to_owned()
    } else {
        driver
    };
    Ok(Settings {
        driver,
        graph_root,
        run_root,
        driver_options,
        ..Settings::default()
    })
}

/// c/storage's rootless runtime directory, without the `containers` suffix.
fn rootless_runtime_dir(env: &Env, uid: u32) -> Result<PathBuf, ConfigError> {
    if let Some(dir) = env.var("XDG_RUNTIME_DIR").filter(|d| Path::new(d).exists()) {
        return Ok(dir.into());
    }
    // c/storage compares /proc/1/comm, newline included, with "systemd", so in
    // practice /run/user/<uid> is only tried when /proc/1/comm is unreadable.
    let comm = fs::read(env.root_prefix.join("proc/1/comm"));
    if comm.as_deref().map_or(true, |c| c == b"systemd") {
        let dir = env.root_prefix.join(format!("run/user/{uid}"));
        if owned_private(&dir, env.euid) {
            return Ok(dir);
        }
    }
    let tmp = env
        .var("TMPDIR")
        .map_or_else(|| env.root_prefix.join("tmp"), PathBuf::from);
    let dir = tmp.join(format!("containers-user-{uid}"));
    match fs::symlink_metadata(&dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(dir),
                Err(e) => tracing::warn!(dir = %dir.display(), "cannot create runtime dir: {e}"),
            }
        }
        _ if owned_private(&dir, env.euid) => return Ok(dir),
        _ => {}
    }
    let home = env.var("HOME").ok_or(ConfigError::NoHome {
        what: "rootless runtime directory",
        var: "XDG_RUNTIME_DIR",
    })?;
    Ok(Path::new(home).join("rundir"))
}

/// A directory owned by `uid`, with `rwx` for the owner and no group/other `rw`.
fn owned_private(dir: &Path, uid: u32) -> bool {
    fs::symlink_metadata(dir)
        .is_ok_and(|m| m.uid() == uid && m.mode() & 0o700 == 0o700 && m.mode() & 0o066 == 0)
}

fn data_home(env: &Env) -> Result<PathBuf, ConfigError> {
    if let Some(dir) = env.var("XDG_DATA_HOME") {
        return Ok(dir.into());
    }
    let home = env.var("HOME").ok_or(ConfigError::NoHome {
        what: "rootless graphroot",
        var: "XDG_DATA_HOME",
    })?;
    Ok(Path::new(home).join(".local/share"))
}

/// The per-user `storage.conf` a rootless user's settings come from.
fn user_file(env: &Env) -> Result<PathBuf, ConfigError> {
    if let Some(path) = env.var(STORAGE_CONF_ENV) {
        return Ok(path.into());
    }
    if let Some(dir) = env.var("XDG_CONFIG_HOME") {
        return Ok(Path::new(dir).join("containers/storage.conf"));
    }
    let home = env.var("HOME").ok_or(ConfigError::NoHome {
        what: "per-user storage.conf",
        var: "XDG_CONFIG_HOME",
    })?;
    Ok(Path::new(home).join(".config/containers/storage.conf"))
}
