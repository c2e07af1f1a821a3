//! Storage configuration: which `storage.conf` applies, what it says, and
//! podman's global storage flags on top of it.
//!
//! This module owns the answer to "which store, with which driver options". It
//! finds the file containers/storage v1.43 would read, parses the parts of its
//! TOML that we use, applies c/storage's rootless rules and podman's override
//! semantics, and returns a [`StoreOptions`]. It never opens a store.
//!
//! ```text
//! system file (first that exists):
//!   $CONTAINERS_STORAGE_CONF                  must exist when set
//!   $XDG_CONFIG_HOME/containers/storage.conf  (c/storage checks it for root too)
//!   /etc/containers/storage.conf
//!   /usr/share/containers/storage.conf
//! rootless, per-user file ($CONTAINERS_STORAGE_CONF, else
//!   $XDG_CONFIG_HOME/containers/storage.conf, else ~/.config/containers/storage.conf):
//!   present -> it replaces the system file; graphroot/runroot it lacks
//!              fall back to its rootless_storage_path / the rootless defaults
//!   absent  -> from the system file only: a rootless-capable driver (else "vfs"),
//!              only its ignore_chown_errors option, rootless_storage_path;
//!              never its graphroot/runroot
//! ```
//!
//! Rootless defaults: graphroot `$XDG_DATA_HOME/containers/storage` (or
//! `~/.local/share/...`), runroot `<runtime dir>/containers`, where the runtime
//! dir is `$XDG_RUNTIME_DIR`, else `$TMPDIR/containers-user-<uid>` (created 0700
//! if absent, as c/storage does), else `$HOME/rundir`. Graphroot and runroot
//! values get c/storage's `$UID` and `$VAR` expansion; `STORAGE_DRIVER` and
//! `STORAGE_OPTS` are honoured as c/storage honours them.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::userns::{AutoUserNsConfig, Owner};
use file::{exists, normalise_driver, option_key, read_settings};
use paths::{absolute, clean, expand_env_path, require_absolute, resolve_symlinks};
use rootless::rootless_settings;

mod file;
mod paths;
mod rootless;

const STORAGE_CONF_ENV: &str = "CONTAINERS_STORAGE_CONF";
const DEFAULT_GRAPH_ROOT: &str = "/var/lib/containers/storage";
const DEFAULT_RUN_ROOT: &str = "/run/containers/storage";

/// podman's global storage flags. Each one given replaces what the
/// configuration says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--root`: the graphroot. Like podman, also drops the configured driver
    /// options. A relative path is taken relative to the current directory.
    pub root: Option<PathBuf>,
    /// `--runroot`: the runroot. A relative path is taken relative to the
    /// current directory.
    pub runroot: Option<PathBuf>,
    /// `--storage-driver`: the driver. Like podman, also drops the configured
    /// driver options.
    pub storage_driver: Option<String>,
    /// `--storage-opt KEY=VALUE`, repeatable. When non-empty it replaces the
    /// driver options; a single empty string clears them.
    pub storage_opts: Vec<String>,
}

/// The resolved options of the store to open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreOptions {
    /// Where layers, images and containers live (absolute).
    pub graph_root: PathBuf,
    /// Where run-time state (mount counts) lives (absolute).
    pub run_root: PathBuf,
    /// The storage driver, with `overlay2` normalised to `overlay`. Other
    /// drivers are passed through; the store rejects them.
    pub driver: String,
    /// Driver options as c/storage flattens them, e.g. `overlay.mountopt=nodev`.
    pub driver_options: Vec<String>,
    /// `transient_store` (newer c/storage): volatile records live in the runroot.
    pub transient_store: bool,
    /// `imagestore` (newer c/storage): a separate image store, if configured.
    pub image_store: Option<PathBuf>,
    /// Read-only image stores, from the `imagestore` driver options.
    pub additional_image_stores: Vec<PathBuf>,
    /// Whether the rootless rules applied.
    pub rootless: bool,
    /// The `storage.conf` the settings came from; `None` when none existed.
    pub config_file: Option<PathBuf>,
    /// `--userns=auto`: whose subordinate ids, the size limits
    /// (`[storage.options]` `root-auto-userns-user`, `auto-userns-min-size`,
    /// `auto-userns-max-size`) and the subordinate id files.
    pub auto_userns: AutoUserNsConfig,
}

/// The process environment resolution depends on, made explicit for tests.
#[derive(Debug, Clone)]
pub struct Env {
    /// Effective user id.
    pub euid: u32,
    /// Environment variables (`CONTAINERS_STORAGE_CONF`, `XDG_CONFIG_HOME`,
    /// `XDG_DATA_HOME`, `XDG_RUNTIME_DIR`, `HOME`, `TMPDIR`, `STORAGE_DRIVER`,
    /// `STORAGE_OPTS`, podman's `_CONTAINERS_*`, and any `$VAR` a path expands).
    pub vars: HashMap<String, String>,
    /// Prefix for the fixed system paths (`/etc`, `/usr/share`, `/tmp`, `/run`,
    /// `/proc`): `/` normally, a temporary directory in tests.
    pub root_prefix: PathBuf,
}

/// Why the storage configuration could not be resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A configuration file exists but could not be read or examined.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A configuration file is not valid TOML, or a key we use has the wrong type.
    #[error("{}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's description, with line and column or the key.
        message: String,
    },
    /// `CONTAINERS_STORAGE_CONF` names a file that does not exist.
    #[error("CONTAINERS_STORAGE_CONF names {}, which does not exist", path.display())]
    Missing {
        /// The file named.
        path: PathBuf,
    },
    /// A path that must be absolute is not.
    #[error("{what} must be an absolute path, not {}", path.display())]
    NotAbsolute {
        /// Which setting: "graphroot", "runroot", "imagestore", "additional image store".
        what: &'static str,
        /// The offending value.
        path: PathBuf,
    },
    /// A `--storage-opt` is not `KEY=VALUE`.
    #[error("--storage-opt {opt:?} is not of the form KEY=VALUE")]
    BadStorageOpt {
        /// The option as given.
        opt: String,
    },
    /// A rootless default needs `$HOME` (or the XDG variable) and neither is set.
    #[error("cannot determine the {what}: neither {var} nor HOME is set")]
    NoHome {
        /// What was being determined.
        what: &'static str,
        /// The XDG variable that would have answered.
        var: &'static str,
    },
    /// The current directory, needed to make a relative override absolute, is unknown.
    #[error("cannot make {} absolute: no current directory", path.display())]
    CurrentDir {
        /// The relative path given.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

impl Env {
    /// The environment of this process: its euid, its (UTF-8) variables, `/`.
    pub fn current() -> Env {
        let vars = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        Env {
            euid: rustix::process::geteuid().as_raw(),
            vars,
            root_prefix: PathBuf::from("/"),
        }
    }

    /// A variable's value, treating set-but-empty as unset (as c/storage mostly does).
    fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Whether c/storage's rootless rules apply, and the uid they use
    /// (podman's `IsRootless` and `GetRootlessUID`).
    fn identity(&self) -> (bool, u32) {
        let uid = match self.var("_CONTAINERS_ROOTLESS_UID") {
            Some(s) => s.parse().unwrap_or(0),
            None => self.euid,
        };
        let in_userns = self.var("_CONTAINERS_USERNS_CONFIGURED").is_some();
        ((self.euid != 0 || in_userns) && uid != 0, uid)
    }
}

impl StoreOptions {
    /// Resolve the options for this process: [`resolve`] with [`Env::current`],
    /// then, as c/storage does, symlinks in the configured graphroot and
    /// runroot are resolved (overrides are taken as given).
    pub fn load(overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut opts = resolve_config(&Env::current())?;
        opts.graph_root = resolve_symlinks(&opts.graph_root);
        opts.run_root = resolve_symlinks(&opts.run_root);
        let opts = finish(apply_overrides(opts, overrides)?)?;
        tracing::debug!(config_file = ?opts.config_file, graph_root = ?opts.graph_root,
            run_root = ?opts.run_root, driver = %opts.driver, "storage options resolved");
        Ok(opts)
    }

    /// The value of driver option `key` (`overlay.<key>`, `overlay2.<key>`,
    /// `.<key>` or `<key>`, case-insensitive). The last one wins, as in the
    /// overlay driver.
    pub fn driver_option(&self, key: &str) -> Option<&str> {
        let key = key.to_ascii_lowercase();
        self.driver_options.iter().rev().find_map(|opt| {
            let (k, v) = opt.split_once('=')?;
            (option_key(k) == key).then_some(v.trim())
        })
    }

    /// The FUSE program that mounts layers instead of the kernel, if configured.
    pub fn mount_program(&self) -> Option<PathBuf> {
        self.driver_option("mount_program")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    }

    /// Extra overlay mount options (`mountopt`, e.g. `nodev,metacopy=on`).
    pub fn mount_options(&self) -> Option<&str> {
        self.driver_option("mountopt").filter(|o| !o.is_empty())
    }
}

/// Resolve the store options from `env` and `overrides`, as podman 4 with
/// containers/storage v1.43 would (see the module docs). Reads configuration
/// files under `env.root_prefix` and the paths `env.vars` name, and may create
/// the per-user runtime directory in the temporary directory, as c/storage does.
pub fn resolve(env: &Env, overrides: &Overrides) -> Result<StoreOptions, ConfigError> {
    finish(apply_overrides(resolve_config(env)?, overrides)?)
}

/// What one layer of configuration says, with c/storage's "empty is unset".
#[derive(Debug, Default)]
struct Settings {
    driver: String,
    graph_root: PathBuf,
    run_root: PathBuf,
    rootless_storage_path: String,
    driver_options: Vec<String>,
    transient_store: bool,
    image_store: String,
    auto_userns: AutoSettings,
}

/// storage.conf's `--userns=auto` keys; 0 and "" are unset.
#[derive(Debug, Default, Clone)]
struct AutoSettings {
    user: String,
    min_size: u32,
    max_size: u32,
}

/// The configuration alone, before overrides and validation.
fn resolve_config(env: &Env) -> Result<StoreOptions, ConfigError> {
    let (rootless, uid) = env.identity();
    let system = system_file(env)?;
    let (s, config_file) = if rootless {
        rootless_settings(env, uid, system)?
    } else {
        rootful_settings(system)
    };
    let driver = if s.driver.is_empty() {
        "overlay".to_owned()
    } else {
        s.driver
    };
    Ok(StoreOptions {
        graph_root: expand_env_path(&s.graph_root, uid, env),
        run_root: expand_env_path(&s.run_root, uid, env),
        driver,
        driver_options: s.driver_options,
        transient_store: s.transient_store,
        image_store: (!s.image_store.is_empty()).then(|| clean(Path::new(&s.image_store))),
        additional_image_stores: Vec::new(),
        auto_userns: auto_userns_config(env, rootless, uid, &s.auto_userns, &config_file),
        rootless,
        config_file,
    })
}

/// c/storage's `--userns=auto` sources: root uses `root-auto-userns-user`
/// (default `containers`); rootless, the caller (`$USER`, else the name of
/// its uid in `/etc/passwd`), whose ranges may also be listed by uid.
fn auto_userns_config(
    env: &Env,
    rootless: bool,
    uid: u32,
    s: &AutoSettings,
    config_file: &Option<PathBuf>,
) -> AutoUserNsConfig {
    let owner = if rootless {
        let name = env
            .var("USER")
            .map(str::to_owned)
            .or_else(|| user_name(&env.root_prefix.join("etc/passwd"), uid))
            .unwrap_or_else(|| uid.to_string());
        Owner {
            name,
            uid: Some(uid),
        }
    } else {
        Owner {
            name: if s.user.is_empty() {
                crate::userns::DEFAULT_ROOT_USER.to_owned()
            } else {
                s.user.clone()
            },
            uid: None,
        }
    };
    let or = |v: u32, default: u32| if v == 0 { default } else { v };
    AutoUserNsConfig {
        owner,
        rootless,
        min_size: or(s.min_size, crate::userns::DEFAULT_MIN_SIZE),
        max_size: or(s.max_size, crate::userns::DEFAULT_MAX_SIZE),
        subuid: env.root_prefix.join("etc/subuid"),
        subgid: env.root_prefix.join("etc/subgid"),
        config_file: config_file.clone().filter(|_| s.max_size != 0),
    }
}

/// The name of `uid` in a passwd file, if listed.
fn user_name(passwd: &Path, uid: u32) -> Option<String> {
    let text = std::fs::read_to_string(passwd).ok()?;
    text.lines().find_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        (f.nth(1)? == uid.to_string()).then(|| name.to_owned())
    })
}

/// c/storage's process-wide defaults file: the first that exists.
fn system_file(env: &Env) -> Result<Option<(PathBuf, Settings)>, ConfigError> {
    if let Some(path) = env.var(STORAGE_CONF_ENV).map(PathBuf::from) {
        if !exists(&path)? {
            return Err(ConfigError::Missing { path });
        }
        let settings = read_settings(env, &path)?;
        return Ok(Some((path, settings)));
    }
    let xdg = env
        .var("XDG_CONFIG_HOME")
        .map(|d| Path::new(d).join("containers/storage.conf"));
    let candidates = [
        xdg,
        Some(env.root_prefix.join("etc/containers/storage.conf")),
        Some(env.root_prefix.join("usr/share/containers/storage.conf")),
    ];
    for path in candidates.into_iter().flatten() {
        if exists(&path)? {
            let settings = read_settings(env, &path)?;
            return Ok(Some((path, settings)));
        }
    }
    Ok(None)
}

fn rootful_settings(system: Option<(PathBuf, Settings)>) -> (Settings, Option<PathBuf>) {
    let (path, mut s) = match system {
        Some((path, s)) => (Some(path), s),
        None => (None, Settings::default()),
    };
    // v1.43 fails when the file lacks them; newer c/storage uses the defaults.
    if s.run_root.as_os_str().is_empty() {
        s.run_root = DEFAULT_RUN_ROOT.into();
    }
    if s.graph_root.as_os_str().is_empty() {
        s.graph_root = DEFAULT_GRAPH_ROOT.into();
    }
    (s, path)
}

/// podman's global flags on top of the configuration.
fn apply_overrides(mut opts: StoreOptions, o: &Overrides) -> Result<StoreOptions, ConfigError> {
    if let Some(root) = &o.root {
        opts.graph_root = absolute(root)?;
        opts.driver_options.clear();
    }
    if let Some(run) = &o.runroot {
        opts.run_root = absolute(run)?;
    }
    if let Some(driver) = &o.storage_driver {
        if !driver.is_empty() {
            opts.driver = normalise_driver(driver);
        }
        opts.driver_options.clear();
    }
    if o.storage_opts.len() == 1 && o.storage_opts[0].is_empty() {
        opts.driver_options.clear();
    } else if !o.storage_opts.is_empty() {
        if let Some(bad) = o.storage_opts.iter().find(|s| !s.contains('=')) {
            return Err(ConfigError::BadStorageOpt { opt: bad.clone() });
        }
        opts.driver_options.clone_from(&o.storage_opts);
    }
    Ok(opts)
}

/// Validate paths and derive the additional image stores.
fn finish(mut opts: StoreOptions) -> Result<StoreOptions, ConfigError> {
    require_absolute("graphroot", &opts.graph_root)?;
    require_absolute("runroot", &opts.run_root)?;
    if let Some(store) = &opts.image_store {
        require_absolute("imagestore", store)?;
    }
    let mut stores = Vec::new();
    for (key, value) in opts.driver_options.iter().filter_map(|o| o.split_once('=')) {
        if !matches!(
            option_key(key).as_str(),
            "imagestore" | "additionalimagestore"
        ) {
            continue;
        }
        for store in value.trim().split(',').filter(|s| !s.is_empty()) {
            let store = clean(Path::new(store));
            require_absolute("additional image store", &store)?;
            stores.push(store);
        }
    }
    opts.additional_image_stores = stores;
    Ok(opts)
}

#[cfg(test)]
mod tests;
