//! What confines a `layerstore run` container besides its namespaces and
//! mounts: its capabilities and its seccomp filter, chosen from
//! containers.conf and the host the way podman 4.3.1 chooses them.
//!
//! ```text
//! containers.conf [containers] default_capabilities  the bounding set (else spec::CAPABILITIES)
//! containers.conf [containers] seccomp_profile       a profile, or "unconfined" for none
//! /etc/containers/seccomp.json                       else, when it exists
//! /usr/share/containers/seccomp.json                 else (containers-common); none: an error
//! /proc/self/status CapBnd                           capabilities we lack are left out
//! /proc/sys/kernel/osrelease                         the kernel `minKernel` compares with
//! ```
//!
//! containers.conf is read where podman reads it (`$CONTAINERS_CONF` alone
//! when set, else `/usr/share/containers/containers.conf`,
//! `/etc/containers/containers.conf`, `/etc/containers/containers.conf.d/*.conf`,
//! [`ConfEnv`]); a key set in a later file replaces an earlier one.
//! Capability names are podman's: any case, with or without `CAP_`; `ALL`
//! adds nothing there (podman keeps it in the list, and it drops out when
//! the list is intersected with the bounding set). Unlike podman, there is
//! no built-in profile to fall back on: a missing profile is an error,
//! never a container without a filter.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{invalid, refuse, Context};
use crate::doctor::keyring::{conf_d_files, ConfEnv};
use oci_spec::runtime::{Capability, LinuxSeccomp};

use super::seccomp::{native_arch, translate, Host, KernelVersion, Profile};
use super::spec::CAPABILITIES;

/// The profile podman uses when `/etc/containers/seccomp.json` does not
/// exist (containers/common's `SeccompDefaultPath`).
pub const DEFAULT_PROFILE: &str = "/usr/share/containers/seccomp.json";
/// The profile that replaces [`DEFAULT_PROFILE`] when it exists
/// (`SeccompOverridePath`).
pub const OVERRIDE_PROFILE: &str = "/etc/containers/seccomp.json";
/// A profile larger than this is refused (the default is 20 KB).
const MAX_PROFILE: u64 = 16 << 20;

/// The container's capabilities and seccomp filter.
#[derive(Debug, Clone)]
pub struct Confinement {
    /// The bounding set (and the effective one of a root process).
    pub capabilities: Vec<Capability>,
    /// `None` only when containers.conf says `seccomp_profile = "unconfined"`
    /// (or the profile is empty, which podman takes for the same).
    pub seccomp: Option<LinuxSeccomp>,
}

/// What the containers.conf files set, with the file that set it last.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConfKeys {
    /// `[containers] default_capabilities`.
    pub default_capabilities: Option<(Vec<String>, PathBuf)>,
    /// `[containers] seccomp_profile` (an empty string is unset, as in podman).
    pub seccomp_profile: Option<(String, PathBuf)>,
}

/// Read containers.conf and the host, and choose.
pub fn load() -> super::Result<Confinement> {
    let env = ConfEnv::from_process();
    let keys = read_conf(&env.files(conf_d_files), env.containers_conf.as_deref())?;
    let capabilities = capabilities(&keys, bounding_set()?)?;
    let seccomp = match profile_choice(&keys, |p| p.exists()) {
        ProfileChoice::Unconfined => None,
        ProfileChoice::File { path, set_by } => {
            load_profile(&path, set_by.as_deref(), &capabilities)?
        }
        ProfileChoice::Missing => refuse!(
            "no seccomp profile: neither {OVERRIDE_PROFILE} nor {DEFAULT_PROFILE} exists \
             (containers-common ships the latter; podman falls back to a built-in copy, \
             layerstore does not); install it, or name a profile with [containers] \
             seccomp_profile in containers.conf (\"unconfined\" for none)"
        ),
    };
    Ok(Confinement {
        capabilities,
        seccomp,
    })
}

/// Fold the `[containers]` keys of `files` (later wins). A missing file is
/// skipped, except `$CONTAINERS_CONF` (`required`), as podman does.
pub fn read_conf(files: &[PathBuf], required: Option<&Path>) -> super::Result<ConfKeys> {
    let mut keys = ConfKeys::default();
    for path in files {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound && Some(path.as_path()) != required => {
                continue
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let table: toml::Table = toml::from_str(&text)
            .with_context(|| format!("{} is not valid TOML", path.display()))?;
        let Some(containers) = table.get("containers") else {
            continue;
        };
        if let Some(v) = containers.get("default_capabilities") {
            let caps = v
                .as_array()
                .and_then(|a| a.iter().map(|c| c.as_str().map(str::to_owned)).collect())
                .ok_or_else(|| {
                    invalid!(
                        "{}: [containers] default_capabilities must be a list of strings",
                        path.display()
                    )
                })?;
            keys.default_capabilities = Some((caps, path.clone()));
        }
        if let Some(v) = containers.get("seccomp_profile") {
            let profile = v.as_str().ok_or_else(|| {
                invalid!(
                    "{}: [containers] seccomp_profile must be a string",
                    path.display()
                )
            })?;
            keys.seccomp_profile =
                (!profile.is_empty()).then(|| (profile.to_owned(), path.clone()));
        }
    }
    Ok(keys)
}

/// The container's bounding set: containers.conf's list (else ours), less
/// what `bounding` (this process's) lacks, as podman intersects them.
pub fn capabilities(keys: &ConfKeys, bounding: u64) -> super::Result<Vec<Capability>> {
    let wanted: Vec<Capability> = match &keys.default_capabilities {
        None => CAPABILITIES.to_vec(),
        Some((names, file)) => names
            .iter()
            .filter(|n| !n.eq_ignore_ascii_case("ALL"))
            .map(|n| {
                parse_capability(n).with_context(|| {
                    format!("{}: [containers] default_capabilities", file.display())
                })
            })
            .collect::<super::Result<_>>()?,
    };
    let mut caps: Vec<Capability> = Vec::new();
    for cap in wanted {
        if bounding & (1u64 << cap_number(cap)) != 0 && !caps.contains(&cap) {
            caps.push(cap);
        }
    }
    Ok(caps)
}

/// A capability as podman accepts it: `net_raw`, `NET_RAW`, `CAP_NET_RAW`.
pub fn parse_capability(name: &str) -> super::Result<Capability> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    serde_json::from_value(serde_json::Value::String(full.clone()))
        .map_err(|_| invalid!("unknown capability {name:?} ({full})"))
}

/// A capability's OCI name (`CAP_CHOWN`).
pub fn cap_name(cap: Capability) -> String {
    match serde_json::to_value(cap) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{cap:?}"),
    }
}

/// The capability's number (`linux/capability.h`).
fn cap_number(cap: Capability) -> u32 {
    use Capability as C;
    match cap {
        C::Chown => 0,
        C::DacOverride => 1,
        C::DacReadSearch => 2,
        C::Fowner => 3,
        C::Fsetid => 4,
        C::Kill => 5,
        C::Setgid => 6,
        C::Setuid => 7,
        C::Setpcap => 8,
        C::LinuxImmutable => 9,
        C::NetBindService => 10,
        C::NetBroadcast => 11,
        C::NetAdmin => 12,
        C::NetRaw => 13,
        C::IpcLock => 14,
        C::IpcOwner => 15,
        C::SysModule => 16,
        C::SysRawio => 17,
        C::SysChroot => 18,
        C::SysPtrace => 19,
        C::SysPacct => 20,
        C::SysAdmin => 21,
        C::SysBoot => 22,
        C::SysNice => 23,
        C::SysResource => 24,
        C::SysTime => 25,
        C::SysTtyConfig => 26,
        C::Mknod => 27,
        C::Lease => 28,
        C::AuditWrite => 29,
        C::AuditControl => 30,
        C::Setfcap => 31,
        C::MacOverride => 32,
        C::MacAdmin => 33,
        C::Syslog => 34,
        C::WakeAlarm => 35,
        C::BlockSuspend => 36,
        C::AuditRead => 37,
        C::Perfmon => 38,
        C::Bpf => 39,
        C::CheckpointRestore => 40,
    }
}

/// This process's bounding set (`CapBnd` of `/proc/self/status`).
fn bounding_set() -> super::Result<u64> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .ok_or_else(|| invalid!("/proc/self/status has no CapBnd line"))
}

/// Which profile, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileChoice {
    /// `seccomp_profile = "unconfined"`.
    Unconfined,
    /// A profile file; `set_by` the containers.conf naming it.
    File {
        /// The profile.
        path: PathBuf,
        /// The containers.conf naming it, if one did.
        set_by: Option<PathBuf>,
    },
    /// Nothing names one and neither default exists.
    Missing,
}

/// podman's choice (libpod's `DefaultSeccompPath`): containers.conf's
/// `seccomp_profile`, else [`OVERRIDE_PROFILE`] if it exists, else
/// [`DEFAULT_PROFILE`] if it exists.
pub fn profile_choice(keys: &ConfKeys, exists: impl Fn(&Path) -> bool) -> ProfileChoice {
    match &keys.seccomp_profile {
        Some((p, _)) if p == "unconfined" => ProfileChoice::Unconfined,
        Some((p, conf)) => ProfileChoice::File {
            path: PathBuf::from(p),
            set_by: Some(conf.clone()),
        },
        None => [OVERRIDE_PROFILE, DEFAULT_PROFILE]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| exists(p))
            .map_or(ProfileChoice::Missing, |path| ProfileChoice::File {
                path,
                set_by: None,
            }),
    }
}

/// Read the profile at `path` and translate it for a container with
/// `capabilities` on this host.
fn load_profile(
    path: &Path,
    set_by: Option<&Path>,
    capabilities: &[Capability],
) -> super::Result<Option<LinuxSeccomp>> {
    let named = match set_by {
        Some(conf) => format!(
            "the seccomp profile {} (seccomp_profile in {})",
            path.display(),
            conf.display()
        ),
        None => format!("the seccomp profile {}", path.display()),
    };
    let bytes = read_limited(path).with_context(|| format!("reading {named}"))?;
    let profile: Profile =
        serde_json::from_slice(&bytes).with_context(|| format!("{named} is not a profile"))?;
    let host = Host {
        arch: native_arch(),
        bounding: capabilities
            .iter()
            .map(|c| cap_name(*c))
            .collect::<BTreeSet<_>>(),
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .and_then(|r| KernelVersion::parse(&r)),
    };
    translate(&profile, &host).with_context(|| named.clone())
}

fn read_limited(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    fs::File::open(path)?
        .take(MAX_PROFILE + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_PROFILE {
        return Err(io::Error::other(format!("larger than {MAX_PROFILE} bytes")));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn later_files_win_key_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = conf(
            dir.path(),
            "a.conf",
            "[containers]\ndefault_capabilities = [\"CHOWN\"]\nseccomp_profile = \"/p/a.json\"\n",
        );
        let b = conf(
            dir.path(),
            "b.conf",
            "[containers]\nseccomp_profile = \"/p/b.json\"\n",
        );
        let c = conf(dir.path(), "c.conf", "[engine]\nruntime = \"runc\"\n");
        let missing = dir.path().join("missing.conf");
        let keys = read_conf(&[a.clone(), missing.clone(), b.clone(), c], None).unwrap();
        assert_eq!(
            keys,
            ConfKeys {
                default_capabilities: Some((vec!["CHOWN".into()], a.clone())),
                seccomp_profile: Some(("/p/b.json".into(), b)),
            }
        );
        // An empty profile is unset again (podman then uses its defaults).
        let empty = conf(
            dir.path(),
            "e.conf",
            "[containers]\nseccomp_profile = \"\"\n",
        );
        assert_eq!(read_conf(&[a, empty], None).unwrap().seccomp_profile, None);
        // $CONTAINERS_CONF must exist.
        let err = read_conf(std::slice::from_ref(&missing), Some(&missing)).unwrap_err();
        assert!(
            crate::launch::chain(&err).contains("missing.conf"),
            "{}",
            crate::launch::chain(&err)
        );
    }

    #[test]
    fn bad_containers_conf_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        for (text, message) in [
            ("[containers\n", "is not valid TOML"),
            (
                "[containers]\ndefault_capabilities = \"CHOWN\"\n",
                "default_capabilities must be a list of strings",
            ),
            (
                "[containers]\ndefault_capabilities = [\"CHOWN\", 3]\n",
                "default_capabilities must be a list of strings",
            ),
            (
                "[containers]\nseccomp_profile = 1\n",
                "seccomp_profile must be a string",
            ),
        ] {
            let p = conf(dir.path(), "bad.conf", text);
            let err = read_conf(std::slice::from_ref(&p), None).unwrap_err();
            let err = crate::launch::chain(&err);
            assert!(
                err.contains(&p.display().to_string()) && err.contains(message),
                "{err}"
            );
        }
    }

    #[test]
    fn capability_names_as_podman_takes_them() {
        let file = PathBuf::from("/etc/containers/containers.conf");
        let keys = |names: &[&str]| ConfKeys {
            default_capabilities: Some((
                names.iter().map(|n| (*n).to_owned()).collect(),
                file.clone(),
            )),
            seccomp_profile: None,
        };
        let all = u64::MAX;
        assert_eq!(
            capabilities(
                &keys(&["net_raw", "CAP_SYS_ADMIN", "Chown", "CHOWN", "all"]),
                all
            )
            .unwrap(),
            [Capability::NetRaw, Capability::SysAdmin, Capability::Chown]
        );
        // What this process lacks is left out (CAP_SYS_RESOURCE is bit 24).
        let without_resource = all & !(1 << 24);
        assert_eq!(
            capabilities(&keys(&["SYS_RESOURCE", "KILL"]), without_resource).unwrap(),
            [Capability::Kill]
        );
        let err = capabilities(&keys(&["CHOWN", "FLY"]), all).unwrap_err();
        let err = crate::launch::chain(&err);
        assert!(
            err.contains("/etc/containers/containers.conf") && err.contains("\"FLY\""),
            "{err}"
        );
        // Not set: ours.
        assert_eq!(
            capabilities(&ConfKeys::default(), all).unwrap(),
            CAPABILITIES.to_vec()
        );
        // Every capability OCI knows has its number, and the names round-trip.
        for n in 0..=40u32 {
            let cap = CAPABILITY_NAMES[n as usize];
            let parsed = parse_capability(cap).unwrap();
            assert_eq!(cap_number(parsed), n, "{cap}");
            assert_eq!(cap_name(parsed), format!("CAP_{cap}"));
        }
    }

    /// `linux/capability.h`, by number.
    const CAPABILITY_NAMES: [&str; 41] = [
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ];

    #[test]
    fn the_profile_is_chosen_as_podman_chooses_it() {
        let conf_file = PathBuf::from("/etc/containers/containers.conf");
        let set = |p: &str| ConfKeys {
            seccomp_profile: Some((p.to_owned(), conf_file.clone())),
            ..ConfKeys::default()
        };
        let both = |_: &Path| true;
        let only_default = |p: &Path| p == Path::new(DEFAULT_PROFILE);
        let none = |_: &Path| false;
        assert_eq!(
            profile_choice(&set("unconfined"), both),
            ProfileChoice::Unconfined
        );
        assert_eq!(
            profile_choice(&set("/x.json"), none),
            ProfileChoice::File {
                path: "/x.json".into(),
                set_by: Some(conf_file.clone())
            }
        );
        let unset = ConfKeys::default();
        assert_eq!(
            profile_choice(&unset, both),
            ProfileChoice::File {
                path: OVERRIDE_PROFILE.into(),
                set_by: None
            }
        );
        assert_eq!(
            profile_choice(&unset, only_default),
            ProfileChoice::File {
                path: DEFAULT_PROFILE.into(),
                set_by: None
            }
        );
        assert_eq!(profile_choice(&unset, none), ProfileChoice::Missing);
    }

    #[test]
    fn a_bad_profile_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let set_by = dir.path().join("containers.conf");
        let missing = dir.path().join("missing.json");
        let garbage = conf(dir.path(), "garbage.json", "{\"defaultAction\": ");
        let wrong = conf(
            dir.path(),
            "wrong.json",
            "{\"defaultAction\": \"SCMP_ACT_NEVER\"}",
        );
        for path in [&missing, &garbage, &wrong] {
            let err = load_profile(path, Some(&set_by), CAPABILITIES.as_slice()).unwrap_err();
            let err = crate::launch::chain(&err);
            assert!(
                err.contains(&path.display().to_string())
                    && err.contains(&set_by.display().to_string()),
                "{err}"
            );
        }
    }
}
