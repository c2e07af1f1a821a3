//! Host checks for the failures that hit busy container hosts with messages
//! that mislead: typed [`Check`]s, each `ok | warn | fail` with what was seen,
//! why it matters and the fix. `layerstore doctor` only renders a [`Report`];
//! an engine can call [`diagnose`] itself.
//!
//! | area | module | what it reads |
//! |---|---|---|
//! | keyring | [`keyring`] | `/proc/key-users`, `/proc/sys/kernel/keys/*`, every containers.conf podman reads, runc/crun on PATH |
//! | inodes | [`inodes`] | `statvfs` of the graphroot; the `diff`/`diffN` trees of templates and image top layers |
//! | idmap | [`idmap`] | the real probe (scratch dir, removed), its cache, `/sys/module/overlay/parameters/metacopy`, `.has-mount-program` |
//! | kernel | [`kernel`] | `uname` release, `/proc/version`, `/proc/self/mountinfo` |
//! | store | [`consistency`] | records vs layer directories vs `l/` links vs tar-split files |
//! | run | [`userns`] | `/etc/subuid`, `/etc/subgid` against the containers' recorded maps |
//!
//! Read-only: nothing here writes to the store. The idmap probe makes and
//! removes a scratch directory under `<graphroot>/overlay/` (as podman's
//! probe does) and does not write the probe cache; when the driver home does
//! not exist yet it probes under the temp dir instead, so it creates nothing.
//! Records are read under the store's shared locks ([`Store::snapshot`]);
//! directories are listed without a lock, so a store that is changing while
//! it is checked can show a transient mismatch.

pub mod consistency;
pub mod idmap;
pub mod inodes;
pub mod kernel;
pub mod keyring;
pub mod userns;

use layerstore::records::Container;
use layerstore::Store;
use serde::Serialize;
use serde_json::Value;

use crate::layout::OverlayDriver;

/// A check's verdict. Ordered: `Ok < Warn < Fail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Nothing to do.
    Ok,
    /// Works now, but will fail or cost something; worth fixing.
    Warn,
    /// Broken now, or about to be.
    Fail,
}

impl Status {
    /// `ok`, `warn` or `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// Which group a check belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Area {
    /// Kernel key quotas, podman's keyring setting, OCI runtimes.
    Keyring,
    /// Inode headroom of the graphroot's filesystem.
    Inodes,
    /// Idmapped mounts, overlay features, the path `run` takes.
    Idmap,
    /// Kernel versions with known bugs.
    Kernel,
    /// The store's records against its directories.
    Store,
    /// What `layerstore run` hands podman needs on the host: the OCI hook,
    /// the boot unit (checked by the CLI).
    Run,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Check {
    /// Stable name, e.g. `keyring.uid.0`, `idmap.run-path`.
    pub id: String,
    /// The group.
    pub area: Area,
    /// The verdict.
    pub status: Status,
    /// What was seen, in one line.
    pub seen: String,
    /// Why it matters (for warn and fail: what will go wrong).
    pub why: String,
    /// What to do about it, when there is something to do.
    pub fix: Option<String>,
    /// Machine-readable facts behind `seen` (a JSON object).
    pub facts: Value,
}

impl Check {
    /// A check with `status`, `seen` and `why`; no fix, no facts.
    pub fn new(
        id: impl Into<String>,
        area: Area,
        status: Status,
        seen: impl Into<String>,
        why: impl Into<String>,
    ) -> Check {
        Check {
            id: id.into(),
            area,
            status,
            seen: seen.into(),
            why: why.into(),
            fix: None,
            facts: Value::Object(Default::default()),
        }
    }

    /// With a fix.
    pub fn fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }

    /// With machine-readable facts (a JSON object).
    pub fn facts(mut self, facts: Value) -> Check {
        self.facts = facts;
        self
    }
}

/// Every check's result, in a stable order (keyring, inodes, idmap, kernel,
/// store).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// The checks.
    pub checks: Vec<Check>,
}

impl Report {
    /// The worst status of any check (`Ok` for no checks).
    pub fn worst(&self) -> Status {
        self.checks
            .iter()
            .map(|c| c.status)
            .max()
            .unwrap_or(Status::Ok)
    }

    /// The check named `id`.
    pub fn check(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }
}

/// What the caller knows that this crate cannot (the CLI's launcher).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct DoctorOptions {
    /// Whether the caller's container launcher passes `--no-new-keyring` to
    /// the runtime by default (`layerstore run` does; `None`: no launcher).
    pub launcher_no_new_keyring: Option<bool>,
    /// The launcher's name, for messages (`layerstore run`).
    pub launcher_name: Option<String>,
    /// Run the real idmap probe (needs root; default true via [`DoctorOptions::new`]).
    pub probe: bool,
}

impl DoctorOptions {
    /// Probe, no launcher.
    pub fn new() -> DoctorOptions {
        DoctorOptions {
            probe: true,
            ..Default::default()
        }
    }

    /// With a launcher that does (or does not) pass `--no-new-keyring`.
    pub fn launcher(mut self, name: impl Into<String>, no_new_keyring: bool) -> DoctorOptions {
        self.launcher_name = Some(name.into());
        self.launcher_no_new_keyring = Some(no_new_keyring);
        self
    }
}

/// Run every check against `store` and its `driver` and this host.
/// Never changes the store (see the module docs).
pub fn diagnose(store: &Store, driver: &OverlayDriver, options: &DoctorOptions) -> Report {
    let snapshot = store.snapshot();
    let mut checks = Vec::new();
    let containers: &[Container] = match &snapshot {
        Ok(s) => &s.containers,
        Err(_) => &[],
    };
    checks.extend(keyring::checks(containers, options));
    let idmap = idmap::checks(store, driver, options);
    match &snapshot {
        Ok(s) => checks.extend(inodes::checks(store, driver, s, &idmap.run_path)),
        Err(e) => checks.push(unreadable(Area::Inodes, "inodes.store", e)),
    }
    checks.extend(idmap.checks);
    checks.extend(kernel::checks(store.options()));
    match &snapshot {
        Ok(s) => checks.extend(consistency::checks(store, driver, s)),
        Err(e) => checks.push(unreadable(Area::Store, "store.records", e)),
    }
    let recorded = snapshot.as_ref().ok().map(|s| &s.containers[..]);
    checks.extend(userns::checks(&store.options().auto_userns, recorded));
    Report { checks }
}

/// A failed check for records that cannot be read.
fn unreadable(area: Area, id: &str, e: &dyn std::error::Error) -> Check {
    Check::new(
        id,
        area,
        Status::Fail,
        format!("cannot read the store's records: {}", error_chain(e)),
        "podman cannot read them either",
    )
    .fix("look at the file the message names; restore it from podman's view or a backup")
}

/// `path`, or its nearest ancestor that exists.
pub(crate) fn existing_ancestor(path: &std::path::Path) -> std::path::PathBuf {
    path.ancestors()
        .find(|p| p.exists())
        .unwrap_or(path)
        .to_path_buf()
}

/// `e: source: source...` in one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    layerstore::error_chain(e)
}

/// The status for `used` of `max` at the keyring thresholds (warn at
/// [`WARN_PERCENT`], fail at [`FAIL_PERCENT`]); a zero `max` is unlimited.
pub fn quota_status(used: u64, max: u64) -> Status {
    if max == 0 {
        Status::Ok
    } else if used * 100 >= max * FAIL_PERCENT {
        Status::Fail
    } else if used * 100 >= max * WARN_PERCENT {
        Status::Warn
    } else {
        Status::Ok
    }
}

/// Usage (percent of a quota) from which a check warns.
pub const WARN_PERCENT: u64 = 70;
/// Usage (percent of a quota) from which a check fails.
pub const FAIL_PERCENT: u64 = 95;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        assert_eq!(quota_status(0, 200), Status::Ok);
        assert_eq!(quota_status(139, 200), Status::Ok);
        assert_eq!(quota_status(140, 200), Status::Warn);
        assert_eq!(quota_status(189, 200), Status::Warn);
        assert_eq!(quota_status(190, 200), Status::Fail);
        assert_eq!(quota_status(250, 200), Status::Fail);
        assert_eq!(quota_status(5, 0), Status::Ok);
    }

    #[test]
    fn worst_status() {
        let mut r = Report::default();
        assert_eq!(r.worst(), Status::Ok);
        r.checks
            .push(Check::new("a", Area::Store, Status::Warn, "", ""));
        r.checks
            .push(Check::new("b", Area::Store, Status::Ok, "", ""));
        assert_eq!(r.worst(), Status::Warn);
        r.checks
            .push(Check::new("c", Area::Store, Status::Fail, "", ""));
        assert_eq!(r.worst(), Status::Fail);
        assert_eq!(r.check("b").unwrap().status, Status::Ok);
    }
}
