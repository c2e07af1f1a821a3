//! Kernel key quotas: the "Disk quota exceeded" that is not about disks.
//!
//! runc and crun join a new session keyring per container
//! (`KEYCTL_JOIN_SESSION_KEYRING`), charged to the uid that creates it: under
//! a user namespace the container root's host uid, with the small non-root
//! quota (`maxkeys` 200, `maxbytes` 20,000 by default). Keyrings that outlive
//! their containers fill it until starts fail with EDQUOT.
//!
//! ```text
//! /proc/key-users                 "<uid>: <usage> <nkeys>/<nikeys> <qnkeys>/<maxkeys> <qnbytes>/<maxbytes>"
//! /proc/sys/kernel/keys/          maxkeys maxbytes root_maxkeys root_maxbytes
//! containers.conf                 [containers] keyring = false  => podman passes --no-new-keyring
//! ```
//!
//! Checks: one `keyring.uid.<uid>` for root, for each container's mapped root
//! and for every uid at or above the warning threshold; `keyring.podman`
//! (containers.conf), `keyring.runtimes` (runc/crun and versions) and
//! `keyring.launcher` (whether the caller's launcher passes
//! `--no-new-keyring`).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use layerstore::idmap::to_host;
use layerstore::records::Container;
use serde_json::json;

use super::{quota_status, Area, Check, DoctorOptions, Status, FAIL_PERCENT, WARN_PERCENT};

/// `/proc/key-users`.
pub const KEY_USERS: &str = "/proc/key-users";
/// The directory of the key quota sysctls.
pub const KEYS_SYSCTL_DIR: &str = "/proc/sys/kernel/keys";

/// One line of `/proc/key-users`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyUser {
    /// The uid (in the initial user namespace).
    pub uid: u32,
    /// References to the uid's key-user record.
    pub usage: u32,
    /// Keys the uid owns.
    pub nkeys: u32,
    /// Of those, instantiated.
    pub nikeys: u32,
    /// Keys charged to the quota.
    pub qnkeys: u32,
    /// The uid's key quota (`maxkeys`, or `root_maxkeys` for root).
    pub maxkeys: u32,
    /// Bytes charged to the quota.
    pub qnbytes: u32,
    /// The uid's byte quota (`maxbytes`, or `root_maxbytes` for root).
    pub maxbytes: u32,
}

impl KeyUser {
    /// The worse of the key and byte usage.
    pub fn status(&self) -> Status {
        quota_status(self.qnkeys.into(), self.maxkeys.into())
            .max(quota_status(self.qnbytes.into(), self.maxbytes.into()))
    }
}

/// Parse `/proc/key-users` (`"%5d: %5d %d/%d %d/%d %d/%d"` per line, as
/// `proc_key_users_show` prints it). Lines that do not parse are skipped.
pub fn parse_key_users(text: &str) -> Vec<KeyUser> {
    text.lines().filter_map(parse_key_user).collect()
}

fn parse_key_user(line: &str) -> Option<KeyUser> {
    let (uid, rest) = line.trim().split_once(':')?;
    let mut fields = rest.split_whitespace();
    let usage = fields.next()?.parse().ok()?;
    let mut pair = || -> Option<(u32, u32)> {
        let (a, b) = fields.next()?.split_once('/')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    };
    let (nkeys, nikeys) = pair()?;
    let (qnkeys, maxkeys) = pair()?;
    let (qnbytes, maxbytes) = pair()?;
    Some(KeyUser {
        uid: uid.trim().parse().ok()?,
        usage,
        nkeys,
        nikeys,
        qnkeys,
        maxkeys,
        qnbytes,
        maxbytes,
    })
}

/// The key quota sysctls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyQuotas {
    /// `maxkeys` (non-root uids).
    pub maxkeys: u32,
    /// `maxbytes` (non-root uids).
    pub maxbytes: u32,
    /// `root_maxkeys`.
    pub root_maxkeys: u32,
    /// `root_maxbytes`.
    pub root_maxbytes: u32,
}

impl KeyQuotas {
    /// Read them from [`KEYS_SYSCTL_DIR`]; the kernel defaults (200, 20,000,
    /// 1,000,000, 25,000,000) for any that cannot be read.
    pub fn read() -> KeyQuotas {
        let get = |name: &str, default: u32| {
            fs::read_to_string(Path::new(KEYS_SYSCTL_DIR).join(name))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(default)
        };
        KeyQuotas {
            maxkeys: get("maxkeys", 200),
            maxbytes: get("maxbytes", 20_000),
            root_maxkeys: get("root_maxkeys", 1_000_000),
            root_maxbytes: get("root_maxbytes", 25_000_000),
        }
    }

    /// The quota line of a uid with no keys at all.
    pub fn unused(&self, uid: u32) -> KeyUser {
        let (maxkeys, maxbytes) = if uid == 0 {
            (self.root_maxkeys, self.root_maxbytes)
        } else {
            (self.maxkeys, self.maxbytes)
        };
        KeyUser {
            uid,
            usage: 0,
            nkeys: 0,
            nikeys: 0,
            qnkeys: 0,
            maxkeys,
            qnbytes: 0,
            maxbytes,
        }
    }
}

/// Every keyring check.
pub fn checks(containers: &[Container], options: &DoctorOptions) -> Vec<Check> {
    let mut checks = match fs::read_to_string(KEY_USERS) {
        Ok(text) => quota_checks(&parse_key_users(&text), &KeyQuotas::read(), containers),
        Err(e) => vec![Check::new(
            "keyring.quota",
            Area::Keyring,
            Status::Warn,
            format!("cannot read {KEY_USERS}: {e}"),
            "key quota usage cannot be checked (a kernel without CONFIG_KEYS has no keyrings to exhaust)",
        )],
    };
    checks.push(podman_check(
        &read_containers_conf(&ConfEnv::from_process()),
    ));
    checks.push(runtimes_check(&find_runtimes()));
    if let Some(check) = launcher_check(options) {
        checks.push(check);
    }
    checks
}

/// The host uids of the containers' mapped roots, with the containers'
/// names (or short ids).
pub fn container_roots(containers: &[Container]) -> BTreeMap<u32, Vec<String>> {
    let mut roots: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for c in containers {
        if c.uidmap.is_empty() {
            continue;
        }
        if let Some(uid) = to_host(0, &c.uidmap) {
            let name = c
                .names
                .first()
                .cloned()
                .unwrap_or_else(|| c.id.chars().take(12).collect());
            roots.entry(uid).or_default().push(name);
        }
    }
    roots
}

/// `keyring.uid.<uid>` checks: root, the containers' mapped roots, and every
/// uid at or above the warning threshold. Pure.
pub fn quota_checks(users: &[KeyUser], quotas: &KeyQuotas, containers: &[Container]) -> Vec<Check> {
    let roots = container_roots(containers);
    let mut uids: Vec<u32> = vec![0];
    uids.extend(roots.keys());
    uids.extend(
        users
            .iter()
            .filter(|u| u.status() != Status::Ok)
            .map(|u| u.uid),
    );
    uids.sort_unstable();
    uids.dedup();
    uids.into_iter()
        .map(|uid| {
            let user = users
                .iter()
                .find(|u| u.uid == uid)
                .copied()
                .unwrap_or_else(|| quotas.unused(uid));
            uid_check(&user, roots.get(&uid).map(Vec::as_slice).unwrap_or(&[]))
        })
        .collect()
}

fn uid_check(u: &KeyUser, containers: &[String]) -> Check {
    let status = u.status();
    let role = if !containers.is_empty() {
        format!(" (mapped root of {})", containers.join(", "))
    } else if u.uid == 0 {
        " (root)".to_owned()
    } else {
        String::new()
    };
    let seen = format!(
        "uid {}{role}: {}/{} keys, {}/{} bytes",
        u.uid, u.qnkeys, u.maxkeys, u.qnbytes, u.maxbytes
    );
    let sysctls = if u.uid == 0 {
        "kernel.keys.root_maxkeys / root_maxbytes"
    } else {
        "kernel.keys.maxkeys / maxbytes"
    };
    let why = match status {
        Status::Ok => format!("below {WARN_PERCENT}% of the per-uid key quota"),
        _ => format!(
            "at {}% of the per-uid key quota (warn {WARN_PERCENT}%, fail {FAIL_PERCENT}%): when it is full, container starts for this uid fail with \"Disk quota exceeded\" (EDQUOT) from crun/runc joining a session keyring, which is not about disk space",
            percent(u)
        ),
    };
    let mut check = Check::new(
        format!("keyring.uid.{}", u.uid),
        Area::Keyring,
        status,
        seen,
        why,
    )
    .facts(json!({
        "uid": u.uid,
        "keys": u.qnkeys,
        "max_keys": u.maxkeys,
        "bytes": u.qnbytes,
        "max_bytes": u.maxbytes,
        "containers": containers,
    }));
    if status != Status::Ok {
        check = check.fix(format!(
            "run containers with --no-new-keyring (podman: [containers] keyring = false in containers.conf; layerstore run does it by default); raise {sysctls} (sysctl -w); leftover keyrings of uid {uid} are listed by `keyctl show` / `cat /proc/keys` as root and go away with `keyctl unlink` or when their last reference is dropped",
            uid = u.uid
        ));
    }
    check
}

fn percent(u: &KeyUser) -> u64 {
    let p = |used: u32, max: u32| {
        if max == 0 {
            0
        } else {
            u64::from(used) * 100 / u64::from(max)
        }
    };
    p(u.qnkeys, u.maxkeys).max(p(u.qnbytes, u.maxbytes))
}

/// Where podman 4.3 (containers/common v0.50) looks for containers.conf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfEnv {
    /// `$CONTAINERS_CONF`: when set, podman reads this file alone.
    pub containers_conf: Option<PathBuf>,
    /// Whether podman runs as root (otherwise the user's files are read too).
    pub root: bool,
    /// `$XDG_CONFIG_HOME`.
    pub xdg_config_home: Option<PathBuf>,
    /// `$HOME`.
    pub home: Option<PathBuf>,
}

impl ConfEnv {
    /// This process's environment.
    pub fn from_process() -> ConfEnv {
        let var = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        ConfEnv {
            containers_conf: var("CONTAINERS_CONF"),
            root: rustix::process::geteuid().is_root(),
            xdg_config_home: var("XDG_CONFIG_HOME"),
            home: var("HOME"),
        }
    }

    /// The files podman reads, lowest precedence first; `list_dir` lists a
    /// `containers.conf.d` directory (sorted `*.conf` files, empty when
    /// missing). `CONTAINERS_CONF` replaces all of them.
    pub fn files(&self, list_dir: impl Fn(&Path) -> Vec<PathBuf>) -> Vec<PathBuf> {
        if let Some(path) = &self.containers_conf {
            return vec![path.clone()];
        }
        let mut files = vec![
            PathBuf::from("/usr/share/containers/containers.conf"),
            PathBuf::from("/etc/containers/containers.conf"),
        ];
        files.extend(list_dir(Path::new("/etc/containers/containers.conf.d")));
        if !self.root {
            let config = self
                .xdg_config_home
                .clone()
                .or_else(|| self.home.as_ref().map(|h| h.join(".config")));
            if let Some(config) = config {
                files.push(config.join("containers/containers.conf"));
                files.extend(list_dir(&config.join("containers/containers.conf.d")));
            }
        }
        files
    }
}

/// The sorted `*.conf` files of a directory (none when it is missing).
pub fn conf_d_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension() == Some(OsStr::new("conf")))
        .collect();
    files.sort();
    files
}

/// `[containers] keyring` of one containers.conf text: `Some(value)` when
/// set, `None` when not.
pub fn keyring_setting(text: &str) -> Result<Option<bool>, toml::de::Error> {
    let value: toml::Table = toml::from_str(text)?;
    Ok(value
        .get("containers")
        .and_then(|c| c.get("keyring"))
        .and_then(toml::Value::as_bool))
}

/// What podman's containers.conf files say about keyrings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyringConf {
    /// The effective value (podman's default is `true`).
    pub keyring: bool,
    /// The file that set it last, if any did.
    pub set_by: Option<PathBuf>,
    /// The files that exist and were read, in order.
    pub read: Vec<PathBuf>,
    /// Files that could not be parsed, with the parser's message.
    pub errors: Vec<(PathBuf, String)>,
}

/// Read every containers.conf `env` names and fold their `keyring` settings
/// (later files win, as podman merges them).
pub fn read_containers_conf(env: &ConfEnv) -> KeyringConf {
    let mut conf = KeyringConf {
        keyring: true,
        ..Default::default()
    };
    for path in env.files(conf_d_files) {
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        conf.read.push(path.clone());
        match keyring_setting(&text) {
            Ok(Some(value)) => {
                conf.keyring = value;
                conf.set_by = Some(path);
            }
            Ok(None) => {}
            Err(e) => conf.errors.push((path, e.message().to_owned())),
        }
    }
    conf
}

/// `keyring.podman`.
pub fn podman_check(conf: &KeyringConf) -> Check {
    let files = if conf.read.is_empty() {
        "no containers.conf found".to_owned()
    } else {
        format!(
            "read {}",
            conf.read
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let source = match &conf.set_by {
        Some(p) => format!("set in {}", p.display()),
        None => "podman's default".to_owned(),
    };
    let facts = json!({
        "keyring": conf.keyring,
        "set_by": conf.set_by,
        "files": conf.read,
        "errors": conf.errors.iter().map(|(p, e)| json!({"file": p, "error": e})).collect::<Vec<_>>(),
    });
    if !conf.errors.is_empty() {
        let (path, e) = &conf.errors[0];
        return Check::new(
            "keyring.podman",
            Area::Keyring,
            Status::Warn,
            format!("{} does not parse: {e}", path.display()),
            "podman refuses to start with a containers.conf it cannot parse",
        )
        .fix(format!("fix the TOML syntax of {}", path.display()))
        .facts(facts);
    }
    if conf.keyring {
        Check::new(
            "keyring.podman",
            Area::Keyring,
            Status::Warn,
            format!("podman: [containers] keyring = true ({source}; {files})"),
            "podman makes its runtime create a new session keyring per container, charged to the container root's host uid; leftovers fill the per-uid key quota until starts fail with \"Disk quota exceeded\"",
        )
        .fix("set `keyring = false` in the [containers] table of /etc/containers/containers.conf (or a file in /etc/containers/containers.conf.d/); podman then passes --no-new-keyring")
        .facts(facts)
    } else {
        Check::new(
            "keyring.podman",
            Area::Keyring,
            Status::Ok,
            format!("podman: [containers] keyring = false ({source}; {files})"),
            "podman passes --no-new-keyring: containers share the caller's session keyring",
        )
        .facts(facts)
    }
}

/// An OCI runtime found on PATH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    /// `runc` or `crun`.
    pub name: String,
    /// Where.
    pub path: PathBuf,
    /// The first line of `<path> --version` (None if it did not run).
    pub version: Option<String>,
}

/// runc and crun on PATH, with their versions.
pub fn find_runtimes() -> Vec<Runtime> {
    let dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    ["runc", "crun"]
        .into_iter()
        .filter_map(|name| {
            let path = dirs.iter().map(|d| d.join(name)).find(|p| {
                fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })?;
            let version = Command::new(&path)
                .arg("--version")
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .next()
                        .map(|l| l.trim().to_owned())
                });
            Some(Runtime {
                name: name.to_owned(),
                path,
                version,
            })
        })
        .collect()
}

/// `keyring.runtimes`.
pub fn runtimes_check(runtimes: &[Runtime]) -> Check {
    let facts = json!({
        "runtimes": runtimes.iter().map(|r| json!({
            "name": r.name, "path": r.path, "version": r.version,
        })).collect::<Vec<_>>(),
    });
    if runtimes.is_empty() {
        return Check::new(
            "keyring.runtimes",
            Area::Keyring,
            Status::Warn,
            "neither runc nor crun is on PATH",
            "containers cannot be started here (layerstore run needs one)",
        )
        .fix("install runc (Debian: apt-get install runc)")
        .facts(facts);
    }
    let seen = runtimes
        .iter()
        .map(|r| {
            format!(
                "{} ({})",
                r.path.display(),
                r.version.as_deref().unwrap_or("version unknown")
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    Check::new(
        "keyring.runtimes",
        Area::Keyring,
        Status::Ok,
        seen,
        "both create a session keyring per container unless given --no-new-keyring",
    )
    .facts(facts)
}

/// `keyring.launcher`, when the caller told us about its launcher.
pub fn launcher_check(options: &DoctorOptions) -> Option<Check> {
    let passes = options.launcher_no_new_keyring?;
    let name = options.launcher_name.as_deref().unwrap_or("the launcher");
    let facts = json!({ "launcher": name, "no_new_keyring": passes });
    Some(if passes {
        Check::new(
            "keyring.launcher",
            Area::Keyring,
            Status::Ok,
            format!("{name} passes --no-new-keyring to the runtime (unless --keyring)"),
            "its containers add no session keyrings to the key quota",
        )
        .facts(facts)
    } else {
        Check::new(
            "keyring.launcher",
            Area::Keyring,
            Status::Warn,
            format!("{name} lets the runtime create a session keyring per container"),
            "each container charges a keyring to its root's host uid",
        )
        .fix("pass --no-new-keyring to runc/crun create")
        .facts(facts)
    })
}

#[cfg(test)]
mod tests;
