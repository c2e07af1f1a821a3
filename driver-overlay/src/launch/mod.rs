//! Launching a container on a prepared root filesystem with an OCI runtime
//! (runc or crun), never less confined than podman confines the same
//! container: what `layerstore run --direct` does, for engines too.
//!
//! ```text
//! confinement::load()        containers.conf capabilities, the seccomp profile
//! Engine::prepare            the storage container, mounted (crate::engine)
//! Launch::run                <runroot>/overlay-containers/<id>/userdata/
//!                                config.json, hosts, hostname, resolv.conf
//!                            <runtime> --root <runroot>/layerstore-runtime run --detach ...
//!                            wait for the init as its subreaper, signals forwarded
//! Launch::cleanup            runtime state, cgroups, unmount, (--rm) the container
//! reap_dead_runs             what a killed launcher left (gc runs it)
//! ```
//!
//! The OCI config holds podman's default capabilities (or
//! containers.conf's), podman's seccomp profile translated as
//! containers/common does, podman 4.3.1's masked and
//! read-only paths, `/dev` nosuid and noexec, and generated `/etc/hosts`,
//! `/etc/hostname`, `/etc/resolv.conf`.
//!
//! ```no_run
//! use layerstore::config::{Overrides, StoreOptions};
//! use layerstore_overlay::engine::{Engine, RootfsOptions};
//! use layerstore_overlay::launch::{confinement, resolve_runtime, Launch, LaunchRequest, Network};
//!
//! let engine = Engine::open(StoreOptions::load(&Overrides::default())?)?;
//! let confinement = confinement::load()?;
//! let rootfs = engine.prepare("localhost/debian:latest", &RootfsOptions::default())?;
//! let mut launch = Launch::new(&engine, rootfs, resolve_runtime(None)?, confinement, true);
//! let request = LaunchRequest {
//!     argv: vec!["/bin/true".into()],
//!     env: vec!["PATH=/usr/bin:/bin".into()],
//!     cwd: "/".into(),
//!     user: None,
//!     network: Network::None,
//!     keyring: false,
//! };
//! let code = launch.run(&request);
//! launch.cleanup()?;
//! println!("exit code {}", code?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod confinement;
mod etc_files;
mod reap;
mod runtime;
mod seccomp;
mod signals;
mod spec;
pub mod user;

use std::fmt::Display;

pub use reap::{reap_dead_runs, state_root};
pub use runtime::{
    resolve_runtime, runtime_keyring_args, Launch, LaunchRequest, RuntimeFailure,
    EXIT_CANNOT_INVOKE, EXIT_NOT_FOUND, EXIT_RUN_FAILURE,
};
pub use signals::Forwarder;
pub use spec::merged_env;

use layerstore::StoreError;

use crate::engine::EngineError;

/// The container's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// A new network namespace with only a loopback device.
    None,
    /// The host's network namespace.
    Host,
}

/// Errors of launching.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Preparing or releasing the root filesystem failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The OCI runtime could not run the container.
    #[error(transparent)]
    Runtime(#[from] RuntimeFailure),
    /// A system call or file operation failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A JSON document (a seccomp profile, the runtime's log) is bad.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A containers.conf is not TOML.
    #[error(transparent)]
    Toml(#[from] toml::de::Error),
    /// The OCI config could not be built.
    #[error(transparent)]
    Spec(#[from] oci_spec::OciSpecError),
    /// A flag, a file or a value that is not acceptable; the message names
    /// it.
    #[error("{message}")]
    Invalid {
        /// What is wrong, naming the thing.
        message: String,
    },
    /// What was being done when `source` failed.
    #[error("{what}")]
    Context {
        /// What was being done, naming the thing.
        what: String,
        /// Why it failed.
        #[source]
        source: Box<LaunchError>,
    },
}

impl From<std::string::FromUtf8Error> for LaunchError {
    fn from(e: std::string::FromUtf8Error) -> LaunchError {
        LaunchError::invalid(e.to_string())
    }
}

impl From<rustix::io::Errno> for LaunchError {
    fn from(e: rustix::io::Errno) -> LaunchError {
        LaunchError::Io(e.into())
    }
}

impl LaunchError {
    /// An [`LaunchError::Invalid`] with `message`.
    pub fn invalid(message: impl Into<String>) -> LaunchError {
        LaunchError::Invalid {
            message: message.into(),
        }
    }

    /// The runtime failure at the root of this error, if it is one.
    pub fn runtime_failure(&self) -> Option<&RuntimeFailure> {
        match self {
            LaunchError::Runtime(f) => Some(f),
            LaunchError::Context { source, .. } => source.runtime_failure(),
            _ => None,
        }
    }
}

/// `e` and its sources, joined with ": " (as anyhow's `{:#}` shows them).
#[cfg(test)]
pub(crate) use layerstore::error_chain as chain;

/// Results of launching.
pub type Result<T, E = LaunchError> = std::result::Result<T, E>;

/// What was being done, added to an error (or a missing value).
pub trait Context<T> {
    /// Wrap the error with `what`.
    fn context<C: Display>(self, what: C) -> Result<T>;
    /// Wrap the error with what `what` returns.
    fn with_context<C: Display, F: FnOnce() -> C>(self, what: F) -> Result<T>;
}

impl<T, E: Into<LaunchError>> Context<T> for std::result::Result<T, E> {
    fn context<C: Display>(self, what: C) -> Result<T> {
        self.map_err(|e| LaunchError::Context {
            what: what.to_string(),
            source: Box::new(e.into()),
        })
    }

    fn with_context<C: Display, F: FnOnce() -> C>(self, what: F) -> Result<T> {
        self.map_err(|e| LaunchError::Context {
            what: what().to_string(),
            source: Box::new(e.into()),
        })
    }
}

impl<T> Context<T> for Option<T> {
    fn context<C: Display>(self, what: C) -> Result<T> {
        self.ok_or_else(|| LaunchError::invalid(what.to_string()))
    }

    fn with_context<C: Display, F: FnOnce() -> C>(self, what: F) -> Result<T> {
        self.ok_or_else(|| LaunchError::invalid(what().to_string()))
    }
}

/// An [`LaunchError::Invalid`] from a format string.
macro_rules! invalid {
    ($($arg:tt)*) => {
        $crate::launch::LaunchError::invalid(format!($($arg)*))
    };
}

/// Return an [`LaunchError::Invalid`] from a format string.
macro_rules! refuse {
    ($($arg:tt)*) => {
        return Err($crate::launch::LaunchError::invalid(format!($($arg)*)))
    };
}

pub(crate) use {invalid, refuse};
