//! What confines a `layerstore run` container besides its namespaces and
//! mounts: its capabilities, chosen from containers.conf and the host the
//! way podman 4.3.1 chooses them.
//!
//! ```text
//! containers.conf [containers] default_capabilities  the bounding set (else spec::CAPABILITIES)
//! /proc/self/status CapBnd                           capabilities we lack are left out
//! ```
//!
//! containers.conf is read where podman reads it (`$CONTAINERS_CONF` alone
//! when set, else `/usr/share/containers/containers.conf`,
//! `/etc/containers/containers.conf`, `/etc/containers/containers.conf.d/*.conf`,
//! [`ConfEnv`]); a key set in a later file replaces an earlier one.
//! Capability names are podman's: any case, with or without `CAP_`; `ALL`
//! adds nothing there (as in podman, where it is not in the bounding set it
//! is intersected with).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use layerstore_overlay::doctor::keyring::{conf_d_files, ConfEnv};
use oci_spec::runtime::Capability;

use super::spec::CAPABILITIES;

/// The container's capabilities.
#[derive(Debug, Clone)]
pub(super) struct Confinement {
    /// The bounding set (and the effective one of a root process).
    pub(super) capabilities: Vec<Capability>,
}

/// What the containers.conf files set, with the file that set it last.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct ConfKeys {
    /// `[containers] default_capabilities`.
    pub(super) default_capabilities: Option<(Vec<String>, PathBuf)>,
}

/// Read containers.conf and the host, and choose.
pub(super) fn load() -> anyhow::Result<Confinement> {
    let env = ConfEnv::from_process();
    let keys = read_conf(&env.files(conf_d_files), env.containers_conf.as_deref())?;
    let capabilities = capabilities(&keys, bounding_set()?)?;
    Ok(Confinement { capabilities })
}

/// Fold the `[containers]` keys of `files` (later wins). A missing file is
/// skipped, except `$CONTAINERS_CONF` (`required`), as podman does.
pub(super) fn read_conf(files: &[PathBuf], required: Option<&Path>) -> anyhow::Result<ConfKeys> {
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
                    anyhow!(
                        "{}: [containers] default_capabilities must be a list of strings",
                        path.display()
                    )
                })?;
            keys.default_capabilities = Some((caps, path.clone()));
        }
    }
    Ok(keys)
}

/// The container's bounding set: containers.conf's list (else ours), less
/// what `bounding` (this process's) lacks, as podman intersects them.
pub(super) fn capabilities(keys: &ConfKeys, bounding: u64) -> anyhow::Result<Vec<Capability>> {
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
            .collect::<anyhow::Result<_>>()?,
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
pub(super) fn parse_capability(name: &str) -> anyhow::Result<Capability> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    serde_json::from_value(serde_json::Value::String(full.clone()))
        .map_err(|_| anyhow!("unknown capability {name:?} ({full})"))
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
fn bounding_set() -> anyhow::Result<u64> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .ok_or_else(|| anyhow!("/proc/self/status has no CapBnd line"))
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
    fn later_files_win() {
        let dir = tempfile::tempdir().unwrap();
        let a = conf(
            dir.path(),
            "a.conf",
            "[containers]\ndefault_capabilities = [\"CHOWN\"]\n",
        );
        let b = conf(
            dir.path(),
            "b.conf",
            "[containers]\ndefault_capabilities = [\"KILL\"]\n",
        );
        let c = conf(dir.path(), "c.conf", "[engine]\nruntime = \"runc\"\n");
        let missing = dir.path().join("missing.conf");
        let keys = read_conf(&[a, missing.clone(), b.clone(), c], None).unwrap();
        assert_eq!(
            keys,
            ConfKeys {
                default_capabilities: Some((vec!["KILL".into()], b)),
            }
        );
        // $CONTAINERS_CONF must exist.
        let err = read_conf(std::slice::from_ref(&missing), Some(&missing)).unwrap_err();
        assert!(format!("{err:#}").contains("missing.conf"), "{err:#}");
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
        ] {
            let p = conf(dir.path(), "bad.conf", text);
            let err = read_conf(std::slice::from_ref(&p), None).unwrap_err();
            let err = format!("{err:#}");
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
        let err = format!("{err:#}");
        assert!(
            err.contains("/etc/containers/containers.conf") && err.contains("\"FLY\""),
            "{err}"
        );
        // Not set: ours.
        assert_eq!(
            capabilities(&ConfKeys::default(), all).unwrap(),
            CAPABILITIES.to_vec()
        );
        // Every capability OCI knows has its number.
        for n in 0..=40u32 {
            let cap = CAPABILITY_NAMES[n as usize];
            let parsed = parse_capability(cap).unwrap();
            assert_eq!(cap_number(parsed), n, "{cap}");
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
}
