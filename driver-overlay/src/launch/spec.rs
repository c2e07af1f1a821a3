//! The OCI runtime config (`config.json`) of a `layerstore run` container,
//! confining it at least as podman 4.3.1 confines the same container.
//!
//! ```text
//! process   argv, env, cwd, user; capabilities (bounding; effective for root)
//!           from confinement; rlimits never above the caller's
//! linux     namespaces, id maps, cgroups path; seccomp from confinement;
//!           masked and read-only paths: podman's lists
//! mounts    /proc, /dev (nosuid, noexec), /dev/pts, /dev/shm, /dev/mqueue,
//!           /sys (+ /sys/fs/cgroup), and the bundle's etc files bound over
//!           /etc/hosts, /etc/hostname, /etc/resolv.conf
//! ```

use std::path::{Path, PathBuf};

use layerstore::idmap::IdMap;
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxIdMappingBuilder, LinuxNamespace,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxSeccomp, Mount, MountBuilder,
    PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec, SpecBuilder,
    UserBuilder,
};

use super::Network;

/// The image's environment with `--env` values replacing same-named ones,
/// and a default PATH if none is set.
pub fn merged_env(image: &[String], given: &[String]) -> Vec<String> {
    let key = |kv: &str| kv.split_once('=').map_or(kv, |(k, _)| k).to_owned();
    let mut env: Vec<String> = Vec::new();
    for kv in image.iter().chain(given) {
        let k = key(kv);
        env.retain(|e| key(e) != k);
        env.push(kv.clone());
    }
    if !env.iter().any(|e| key(e) == "PATH") {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
        );
    }
    if !env.iter().any(|e| key(e) == "container") {
        env.push("container=layerstore".to_owned());
    }
    env
}

/// What goes into the OCI config.
pub struct SpecInput<'a> {
    pub rootfs: &'a Path,
    pub hostname: &'a str,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub uidmap: &'a [IdMap],
    pub gidmap: &'a [IdMap],
    pub network: Network,
    pub cgroups_path: String,
    /// The bounding set (and a root process's effective set).
    pub capabilities: &'a [Capability],
    /// The seccomp filter (`None`: unconfined).
    pub seccomp: Option<LinuxSeccomp>,
    /// The bundle directory, where [`super::etc_files`] are bound from.
    pub bundle: &'a Path,
}

/// The capabilities when containers.conf names none: those Debian's
/// containers-common sets in `/usr/share/containers/containers.conf`, which
/// podman then uses (its built-in list, used when no file sets one, adds
/// CAP_AUDIT_WRITE, CAP_MKNOD and CAP_NET_RAW).
pub const CAPABILITIES: [Capability; 11] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::NetBindService,
    Capability::Setfcap,
    Capability::Setgid,
    Capability::Setpcap,
    Capability::Setuid,
    Capability::SysChroot,
];

pub fn build_spec(input: &SpecInput<'_>) -> super::Result<Spec> {
    let caps: std::collections::HashSet<Capability> = input.capabilities.iter().copied().collect();
    let root_caps = if input.uid == 0 {
        caps.clone()
    } else {
        Default::default()
    };
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(root_caps.clone())
        .permitted(root_caps)
        .inheritable(std::collections::HashSet::new())
        .ambient(std::collections::HashSet::new())
        .build()?;
    // Never more than the caller has: runc would fail to raise a hard limit
    // without CAP_SYS_RESOURCE, and a lower one is all we may ask for.
    let mut rlimits = Vec::new();
    for (resource, typ) in [
        (
            rustix::process::Resource::Nofile,
            PosixRlimitType::RlimitNofile,
        ),
        (
            rustix::process::Resource::Nproc,
            PosixRlimitType::RlimitNproc,
        ),
    ] {
        let current = rustix::process::getrlimit(resource);
        let hard = current.maximum.unwrap_or(u64::MAX);
        let soft = current.current.unwrap_or(hard);
        rlimits.push(
            PosixRlimitBuilder::default()
                .typ(typ)
                .hard(hard)
                .soft(soft)
                .build()?,
        );
    }
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(input.argv.clone())
        .env(input.env.clone())
        .cwd(input.cwd.clone())
        .user(
            UserBuilder::default()
                .uid(input.uid)
                .gid(input.gid)
                .build()?,
        )
        .capabilities(capabilities)
        .rlimits(rlimits)
        .no_new_privileges(false)
        .build()?;
    let mapped = !input.uidmap.is_empty();
    let mut namespaces: Vec<LinuxNamespace> = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
    ]
    .into_iter()
    .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
    .collect::<Result<_, _>>()?;
    if input.network == Network::None {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .build()?,
        );
    }
    let to_oci = |maps: &[IdMap]| -> super::Result<Vec<_>> {
        maps.iter()
            .map(|m| {
                Ok(LinuxIdMappingBuilder::default()
                    .container_id(m.container_id)
                    .host_id(m.host_id)
                    .size(m.size)
                    .build()?)
            })
            .collect()
    };
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces.clone())
        .cgroups_path(PathBuf::from(&input.cgroups_path))
        .masked_paths(default_masked_paths())
        .readonly_paths(default_readonly_paths());
    if let Some(seccomp) = &input.seccomp {
        linux = linux.seccomp(seccomp.clone());
    }
    if mapped {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::User)
                .build()?,
        );
        linux = linux
            .namespaces(namespaces)
            .uid_mappings(to_oci(input.uidmap)?)
            .gid_mappings(to_oci(input.gidmap)?);
    }
    let spec = SpecBuilder::default()
        .version("1.0.2-dev")
        .root(
            RootBuilder::default()
                .path(input.rootfs)
                .readonly(false)
                .build()?,
        )
        .hostname(input.hostname)
        .process(process)
        .mounts(mounts(input)?)
        .linux(linux.build()?)
        .build()?;
    Ok(spec)
}

/// podman 4.3.1's masked paths (`BlockAccessToKernelFilesystems` in
/// `pkg/specgen/generate/config_linux.go`), and `/sys/devices/virtual/powercap`
/// (masked by later podman and runc against the RAPL energy side channel,
/// CVE-2020-8694). The runtime skips those the host lacks.
pub fn default_masked_paths() -> Vec<String> {
    [
        "/proc/acpi",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/sys/firmware",
        "/sys/fs/selinux",
        "/sys/dev/block",
        "/sys/devices/virtual/powercap",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// podman 4.3.1's read-only paths (the same function).
pub fn default_readonly_paths() -> Vec<String> {
    [
        "/proc/asound",
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sys",
        "/proc/sysrq-trigger",
    ]
    .map(str::to_owned)
    .to_vec()
}

pub fn mounts(input: &SpecInput<'_>) -> super::Result<Vec<Mount>> {
    let mount = |dest: &str, typ: &str, source: &str, options: &[&str]| -> super::Result<Mount> {
        Ok(MountBuilder::default()
            .destination(dest)
            .typ(typ)
            .source(source)
            .options(options.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
            .build()?)
    };
    let mapped = !input.uidmap.is_empty();
    // gid=5 (tty) only when the container can see gid 5.
    let tty_mapped = !mapped || layerstore::idmap::to_host(5, input.gidmap).is_some();
    let mut pts = vec![
        "nosuid",
        "noexec",
        "newinstance",
        "ptmxmode=0666",
        "mode=0620",
    ];
    if tty_mapped {
        pts.push("gid=5");
    }
    let mut list = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "noexec", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount("/dev/pts", "devpts", "devpts", &pts)?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
    ];
    if mapped && input.network == Network::Host {
        // sysfs cannot be mounted in a user namespace that does not own the
        // network namespace: bind the host's, read-only.
        list.push(mount(
            "/sys",
            "bind",
            "/sys",
            &["rbind", "nosuid", "noexec", "nodev", "ro"],
        )?);
    } else {
        list.push(mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?);
        list.push(mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        )?);
    }
    // As podman binds its userdata files (`bindOptions`), and nothing on
    // them runs or is a device.
    for (name, dest) in super::etc_files::FILES {
        list.push(
            MountBuilder::default()
                .destination(dest)
                .typ("bind")
                .source(input.bundle.join(name))
                .options(
                    ["bind", "rprivate", "nosuid", "nodev", "noexec"]
                        .map(str::to_owned)
                        .to_vec(),
                )
                .build()?,
        );
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_merges_like_podman() {
        let env = merged_env(
            &["PATH=/bin".into(), "A=1".into()],
            &["A=2".into(), "B=3".into()],
        );
        assert_eq!(env, ["PATH=/bin", "A=2", "B=3", "container=layerstore"]);
        assert!(merged_env(&[], &[])[0].starts_with("PATH=/usr/local/sbin"));
    }

    #[test]
    fn spec_has_the_maps_and_no_higher_limits() {
        let maps =
            layerstore::idmap::parse_id_map("0:200000:1000:1000:1000:1:1001:201001:64535").unwrap();
        let gids = layerstore::idmap::parse_id_map("0:200000:65536").unwrap();
        let spec = build_spec(&SpecInput {
            rootfs: Path::new("/r"),
            hostname: "abc",
            argv: vec!["/bin/true".into()],
            env: vec![],
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            uidmap: &maps,
            gidmap: &gids,
            network: Network::None,
            cgroups_path: "/layerstore/x".into(),
            capabilities: &CAPABILITIES,
            seccomp: None,
            bundle: Path::new("/run/b"),
        })
        .unwrap();
        let v = serde_json::to_value(&spec).unwrap();
        assert_eq!(v["linux"]["uidMappings"].as_array().unwrap().len(), 3);
        assert_eq!(v["linux"]["uidMappings"][1]["hostID"], 1000);
        let nss: Vec<&str> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert!(nss.contains(&"user") && nss.contains(&"network"), "{nss:?}");
        let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        let limits = v["process"]["rlimits"].as_array().unwrap();
        let n = limits
            .iter()
            .find(|l| l["type"] == "RLIMIT_NOFILE")
            .unwrap();
        assert_eq!(n["hard"].as_u64(), Some(nofile.maximum.unwrap_or(u64::MAX)));
    }

    #[test]
    fn spec_confines_like_podman() {
        let seccomp = oci_spec::runtime::LinuxSeccompBuilder::default()
            .default_action(oci_spec::runtime::LinuxSeccompAction::ScmpActErrno)
            .build()
            .unwrap();
        let spec = build_spec(&SpecInput {
            rootfs: Path::new("/r"),
            hostname: "abc",
            argv: vec!["/bin/true".into()],
            env: vec![],
            cwd: "/".into(),
            uid: 1000,
            gid: 1000,
            uidmap: &[],
            gidmap: &[],
            network: Network::None,
            cgroups_path: "/layerstore/x".into(),
            capabilities: &[Capability::Chown, Capability::Kill],
            seccomp: Some(seccomp),
            bundle: Path::new("/run/b"),
        })
        .unwrap();
        let v = serde_json::to_value(&spec).unwrap();
        assert_eq!(v["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        let caps = &v["process"]["capabilities"];
        assert_eq!(caps["bounding"].as_array().unwrap().len(), 2);
        assert_eq!(caps["effective"].as_array().map(Vec::len), Some(0));
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_owned())
                .collect()
        };
        let masked = strings(&v["linux"]["maskedPaths"]);
        assert!(masked.contains(&"/sys/dev/block".to_owned()), "{masked:?}");
        assert!(
            !masked.contains(&"/proc/asound".to_owned()),
            "read-only, not masked"
        );
        let mounts = v["mounts"].as_array().unwrap();
        let at = |dest: &str| mounts.iter().find(|m| m["destination"] == dest).unwrap();
        assert!(strings(&at("/dev")["options"]).contains(&"noexec".to_owned()));
        for (name, dest) in super::super::etc_files::FILES {
            assert_eq!(at(dest)["source"], format!("/run/b/{name}"));
        }
    }
}
